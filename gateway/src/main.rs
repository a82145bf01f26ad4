//! The `celgate` binary: parse the command line, run, exit with its code.
use clap::Parser;

/// mimalloc, not the system allocator: a proxied call makes ~150 allocations, and
/// glibc's malloc and free were a fifth of its instructions (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_arena_eager_commit` (its `mimalloc.h` enum; the Rust
/// bindings' constants predate v3).
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Memory is committed as pages are used, not a whole arena up front: on Linux
/// mimalloc's default (commit eagerly where the OS overcommits) doubled the
/// gateway's resident memory, 18 to 35 MB under load, for no measured speed.
/// The option is read when the first arena is made, at the process's first
/// allocation, before `main`: so it is set by an ELF constructor, which runs
/// before the Rust runtime allocates anything.
#[cfg(target_os = "linux")]
extern "C" fn commit_memory_on_demand() {
    // SAFETY: sets one of mimalloc's integer options; any value is valid and the
    // call has no other effect.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_MEMORY_ON_DEMAND: extern "C" fn() = commit_memory_on_demand;

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
