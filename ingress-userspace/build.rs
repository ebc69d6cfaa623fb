//! Embeds the XDP object built by `cargo xtask build-ebpf`: the daemon is one file.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=XDP_INGRESS_EBPF_OBJECT");
    let object = match env::var_os("XDP_INGRESS_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => default_object_path(),
    };
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        panic!(
            "\n\nThe XDP object {} is missing.\nBuild it first with:\n\n    cargo xtask build-ebpf\n\n(`cargo xtask setup` installs what that needs.)\n",
            object.display()
        );
    }
    println!(
        "cargo:rustc-env=XDP_INGRESS_EBPF_OBJECT={}",
        object.display()
    );
}

/// `<target dir>/bpfel-unknown-none/release/ingress-ebpf` (the object is always
/// optimised: the verifier rejects unoptimised BPF). The target directory is
/// CARGO_TARGET_DIR when set, else the one holding OUT_DIR
/// (`<target>[/<triple>]/<profile>/build/<pkg>/out`, marked by cargo's
/// CACHEDIR.TAG).
fn default_object_path() -> PathBuf {
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let workspace =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("..");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .or_else(|| {
            let tagged = |dir: &std::path::Path| dir.join("CACHEDIR.TAG").is_file();
            let innermost = out_dir.ancestors().find(|dir| tagged(dir))?;
            // With `--target`, cargo tags `<target>/<triple>` too: the
            // object lies in the target directory above it.
            Some(match innermost.parent() {
                Some(parent) if tagged(parent) => parent.to_path_buf(),
                _ => innermost.to_path_buf(),
            })
        })
        .unwrap_or_else(|| workspace.join("target"));
    target_dir
        .join("bpfel-unknown-none")
        .join("release")
        .join("ingress-ebpf")
}
