//! `cryptodl approx` (placeholder until the nn issue lands).

/// Arguments of `cryptodl approx`.
#[derive(clap::Args, Debug)]
pub struct ApproxArgs {}

/// Runs `cryptodl approx`.
pub fn run(_args: ApproxArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cryptodl approx` is not built yet")
}
