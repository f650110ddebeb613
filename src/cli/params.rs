//! `cryptodl params`: list the parameter presets.

/// Arguments of `cryptodl params`.
#[derive(clap::Args, Debug)]
pub struct ParamsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `cryptodl params`.
pub fn run(_args: ParamsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
