//! The `celgate` binary: parse the command line, run, exit with its code.
use clap::Parser;

/// mimalloc, not the system allocator: a proxied call makes ~150 allocations, and
/// glibc's malloc and free were a fifth of its instructions (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = celgate::cli::Cli::parse();
    // Not locked: `run` writes access-log lines from many threads.
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match celgate::cli::run(cli, &mut out, &mut err) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
