use clap::Parser;
use std::process::ExitCode;

/// jemalloc, not the system allocator: in a long import glibc's malloc leaves freed memory scattered
/// between live blocks (sled's cache churns through nodes of all sizes), and its resident memory grew
/// by about 30 MB from a 1M-row import to a 10M-row one; with jemalloc handing freed pages back at
/// once, by about 8 MB (README, Speed).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: return freed pages to the system at once rather than after
/// ten seconds, so that peak memory is what is in use.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> = Some(&b"dirty_decay_ms:0,muzzy_decay_ms:0\0"[0]);

fn main() -> ExitCode {
    if let Err(e) = consentd::telemetry::init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = consentd::cli::Cli::parse();
    match consentd::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
