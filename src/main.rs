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
    #[cfg(not(target_env = "msvc"))]
    if matches!(cli.command, consentd::cli::Command::Serve) {
        serving_decay();
    }
    match consentd::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon answers many small requests: giving each freed page back at once (`madvise`, and the
/// TLB shootdowns and page faults that follow) cost about a tenth of a check's time. It gives them back
/// after a second instead, from jemalloc's background thread; the command line keeps the at-once
/// return, so an import's peak memory stays what is in use.
#[cfg(not(target_env = "msvc"))]
fn serving_decay() {
    use std::ffi::{c_char, c_void};
    fn set<T>(name: &[u8], mut value: T) {
        // SAFETY: a NUL-terminated option name and a value of the type jemalloc documents for it.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr() as *const c_char,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut value as *mut T as *mut c_void,
                std::mem::size_of::<T>(),
            );
        }
    }
    for name in [
        &b"arenas.dirty_decay_ms\0"[..],
        b"arenas.muzzy_decay_ms\0",
        b"arena.4096.dirty_decay_ms\0",
        b"arena.4096.muzzy_decay_ms\0",
    ] {
        set::<isize>(name, 1000);
    }
    set::<bool>(b"background_thread\0", true);
}
