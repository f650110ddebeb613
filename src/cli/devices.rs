//! `cryptodl devices`: list every GPU adapter, numbered as `--devices gpu:N` takes them, with the
//! limits that matter to the kernels.

use crate::backend::gpu::list_adapters;

/// Arguments of `cryptodl devices`.
#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `cryptodl devices`.
pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let adapters = list_adapters();
    if args.json {
        return super::output::print_json(&adapters);
    }
    if adapters.is_empty() {
        println!("no GPU adapter found (Vulkan, Metal, DX12); `--backend auto` will use the CPU");
        return Ok(());
    }
    println!(
        "{:>3}  {:<40} {:<8} {:<14} {:>14} {:>12} {:>11} {:>10} {:>6} {:>8}  driver",
        "#",
        "name",
        "backend",
        "type",
        "storage bind",
        "wg storage",
        "invocations",
        "timestamps",
        "int64",
        "ntt tile"
    );
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "{i:>3}  {:<40} {:<8} {:<14} {:>14} {:>12} {:>11} {:>10} {:>6} {:>8}  {}",
            a.name,
            a.backend,
            a.device_type,
            a.max_storage_binding,
            a.max_workgroup_storage,
            a.max_invocations,
            if a.timestamp_queries { "yes" } else { "no" },
            if a.shader_int64 { "yes" } else { "no" },
            a.ntt_tile(),
            a.driver
        );
    }
    Ok(())
}
