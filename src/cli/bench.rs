//! `cryptodl bench`: time CKKS primitives.

/// `cryptodl bench` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Median time of each CKKS primitive.
    Ops,
}

/// Runs `cryptodl bench`.
pub fn run(_cmd: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
