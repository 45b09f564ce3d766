//! Progress of long command-line work (`import`, `export`): a bar with the rate and the time left
//! (indicatif) on stderr, drawn only when stderr is a terminal and `--quiet` is not given. Reports and
//! exported data go to stdout as before; a script or a pipe sees no progress at all.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// What a bar counts.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Bytes of input read (imports).
    Bytes,
    /// Consents written (exports).
    Consents,
}

/// A bar for `total` units (`None`: not known, a spinner with the count and the rate), or a hidden one.
pub fn bar(total: Option<u64>, unit: Unit, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (count, rate) = match unit {
        Unit::Bytes => ("{bytes}", "{binary_bytes_per_sec}"),
        Unit::Consents => ("{human_pos} consents", "{rate}"),
    };
    let template = match (total, unit) {
        (Some(_), Unit::Bytes) => format!("{{bar:30}} {count} of {{total_bytes}}, {rate}, {{eta}} left"),
        (Some(_), Unit::Consents) => format!("{{bar:30}} {count} of {{human_len}}, {rate}, {{eta}} left"),
        (None, _) => format!("{{spinner}} {count}, {rate}, {{elapsed}}"),
    };
    let style = ProgressStyle::with_template(&template)
        .expect("a valid template")
        .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", s.per_sec());
        })
        .progress_chars("=> ");
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr_with_hz(4)),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4)),
    };
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}
