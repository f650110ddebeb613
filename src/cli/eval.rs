//! `cryptodl eval` (placeholder until the nn issue lands).

/// Arguments of `cryptodl eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {}

/// Runs `cryptodl eval`.
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cryptodl eval` is not built yet")
}
