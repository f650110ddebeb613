//! `cryptodl train` (placeholder until the nn issue lands).

/// Arguments of `cryptodl train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {}

/// Runs `cryptodl train`.
pub fn run(_args: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cryptodl train` is not built yet")
}
