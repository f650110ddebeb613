//! What every command shares below it (so the command modules import each other in one
//! direction only): JSON printing, progress bars, medians, the worker pool, peak memory.

use anyhow::Context as _;
use serde::Serialize;
use std::io::Write;

/// Prints `value` as pretty JSON on stdout. A closed pipe (`cryptodl ... --json | head`) ends
/// the output quietly instead of panicking.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A progress bar over `len` items (hidden when `quiet`).
pub(crate) fn bar(len: usize, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} ({{elapsed}}<{{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

/// The median (upper middle for an even count) of `v`; `v` must not be empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A rayon pool of `threads` workers (default: every core); returns it and its size.
pub(crate) fn thread_pool(threads: Option<u32>) -> anyhow::Result<(rayon::ThreadPool, usize)> {
    let threads = threads.map_or_else(
        || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        },
        |t| t as usize,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("could not start the worker threads")?;
    Ok((pool, threads))
}

/// Peak resident set of this process, from `/proc/self/status` (Linux).
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident set [`peak_rss_bytes`] reports to the current one (Linux: writing
/// `5` to `/proc/self/clear_refs`), so the next reading is the peak of what follows; elsewhere
/// nothing.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
