//! Project tasks: `cargo xtask setup | build-ebpf | test | demo | bench | k8s | image`.

mod bench;
mod command;
mod demo;
mod ebpf;
mod image;
mod k8s;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// xdp-ingress project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install everything the project needs (Debian packages, rust-src,
    /// bpf-linker), skipping what is present. Needs root.
    Setup(SetupArgs),
    /// Build the XDP object (target/bpfel-unknown-none/release/ingress-ebpf),
    /// which the daemon embeds.
    BuildEbpf(ebpf::BuildEbpfArgs),
    /// Set up if needed (`setup`, and `setup --k8s` for the cluster
    /// tests), build, and run every test (unit, kernel, end-to-end),
    /// rustfmt --check and clippy -D warnings.
    Test(test::TestArgs),
    /// Build, start xdp-ingress on the edge of a lab of network namespaces,
    /// send traffic through it and show what the XDP program counted.
    Demo(demo::DemoArgs),
    /// Benchmark xdp-ingress against what it replaces, in the lab, with
    /// the same client, backends and CPU budget (`bench l7`).
    Bench(bench::BenchArgs),
    /// The Kubernetes control plane the tests run against (`k8s path | up |
    /// down`).
    K8s(k8s::K8sArgs),
    /// Build the container image xdp-ingress:<version>: the daemon linked
    /// statically (musl) in a FROM scratch image, with podman.
    Image(image::ImageArgs),
}

#[derive(Debug, clap::Args)]
struct SetupArgs {
    /// Instead, build kube-apiserver, kubectl, kube-controller-manager,
    /// kube-scheduler (Kubernetes v1.37.2), etcd (v3.6.16) and kwok (v0.8.0)
    /// from their Go modules with the installed Go toolchain, into a
    /// versioned directory outside the work tree (`cargo xtask k8s path`),
    /// skipping what is built.
    #[arg(long)]
    k8s: bool,
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::Setup(args) if args.k8s => k8s::setup(),
        Task::Setup(_) => setup::run(),
        Task::BuildEbpf(args) => ebpf::build(&args),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::K8s(args) => k8s::run(&args),
        Task::Image(args) => image::run(&args),
    };
    if let Err(error) = result {
        eprintln!("\nerror: {error:#}");
        std::process::exit(1);
    }
}
