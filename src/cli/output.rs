//! Shared output helpers: JSON printing.

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
