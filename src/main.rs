use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
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
