//! The `partnergate` binary: parse the command line and hand it to the
//! library. Everything else lives in `partnergate::cli`.

use clap::Parser;

/// mimalloc: the sidecar allocates on request threads and frees on the
/// decision-log writer thread; glibc's arenas contend on that pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = partnergate::cli::Cli::parse();
    // Cedar recurses over policies: run every command on a thread with the
    // stack the nesting limit is sized for (the main thread's is fixed).
    let code = partnergate::prescan::with_policy_stack(|| {
        partnergate::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr())
    });
    std::process::ExitCode::from(code)
}
