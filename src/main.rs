//! The `pcp` binary: parse arguments, set up logging and the runtime, run, map the result to an
//! exit code (0 success, 1 error, 130 interrupted). Errors are printed once, here, with their
//! causes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pcp::cli::{self, Cli};
use pcp::text::printable;
use pcp::Error;

/// Static (musl) builds allocate with mimalloc: musl's own allocator took nearly twice the CPU
/// per byte moved.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(target_env = "musl")]
fn tune_malloc() {
    extern "C" {
        fn mi_option_set(option: libc::c_int, value: libc::c_long);
    }
    /// `mi_option_arena_eager_commit` in mimalloc v3's `mimalloc.h` (libmimalloc-sys 0.1.49,
    /// pinned in Cargo.toml); the Rust bindings do not name it.
    const ARENA_EAGER_COMMIT: libc::c_int = 4;
    // Arenas committed as they are used, not whole: a mount reading 1 GiB peaked at 341-348 MiB
    // instead of 384-394 (glibc: 300), at the same speed.
    // SAFETY: sets one of mimalloc's options; no other thread exists yet.
    unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) };
}

/// glibc's malloc, set for pcp's buffers of 1 MiB and a little more (one per read in flight).
/// By default it moves its mmap threshold to the size last freed and gives the top of the heap
/// back past twice that, so such buffers kept being unmapped and faulted in again: 20,000 to
/// 60,000 page faults per GiB received on each side, against 4,000 to 8,000 with these fixed
/// limits (peak RSS the same).
///
/// One arena, grown 8 MiB at a time: a thread's own arena grows by exactly what each
/// allocation lacks, one `mprotect` at a time, and a mount filling its cache with 4 KiB blocks
/// made one or two per random read (13% of the mount's CPU on them). The main arena grows by
/// `M_TOP_PAD` instead. pcp's threads are few (one runtime worker), so they hardly meet on its
/// lock: warm random reads through the mount took 12% less CPU (155-166 against 164-189 us per
/// read in the mount) and 1 GiB receives moved as fast.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: mallopt only sets the allocator's parameters; called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TOP_PAD, 8 << 20);
    }
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), target_env = "musl")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    cli::init_logging(cli.verbose);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // One worker: a pcp process drives one connection's pipeline, and disk reads, hashing and
    // cached FUSE replies run on threads of their own. A second worker mostly adds a thread
    // wake-up per request (measured on 2 cores with both peers: random mount reads 290 vs
    // 220 us, mount sequential reads 257 vs 310 MB/s). TOKIO_WORKER_THREADS still overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(1);
    }
    let rt = match b.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(cli::run_until_interrupted(cli));
    rt.shutdown_timeout(Duration::from_millis(200));
    cli::json::end(&result);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            cli::tell("Interrupted.\n");
            ExitCode::from(130)
        }
        Err(e) => {
            // Errors carry names and reasons from the peer: escaped like every line pcp prints.
            // A cause is shown once: most messages already end with their cause's text.
            let mut shown = e.to_string();
            cli::tell(&format!("error: {}\n", printable(&shown)));
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let text = s.to_string();
                if !shown.contains(&text) {
                    cli::tell(&format!("  caused by: {}\n", printable(&text)));
                    shown.push_str(&text);
                }
                src = s.source();
            }
            ExitCode::from(1)
        }
    }
}
