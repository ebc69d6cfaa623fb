//! Running commands with their command line shown, and the workspace root.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// A step heading, so long runs show where they are.
pub fn step(message: &str) {
    println!("\n==> {message}");
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with inherited output; fails with the command line when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("$ {line}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its output, whatever the exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    let line = describe(command);
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))
}

/// Runs `command` quietly; true when it ran and succeeded.
pub fn succeeds(command: &mut Command) -> bool {
    output(command).map(|o| o.status.success()).unwrap_or(false)
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
