use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    fixed_mmap_threshold();
    consentd::telemetry::init();
    let cli = consentd::cli::Cli::parse();
    match consentd::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc raises its mmap threshold to the largest block freed (up to 32 MiB). Past that,
/// sled's 512 KiB log buffers come out of the heap and leave it fragmented: about 20 MB more peak
/// memory in a long import. A fixed threshold keeps large blocks in mmap, handed back when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only tunes malloc; it runs first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}
