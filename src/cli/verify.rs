//! `cryptodl verify`: every kernel on random inputs on the CPU and the GPU, compared word by word.

use super::server::{resolve, BackendKind};
use crate::backend::gpu::shaders::Arith;
use crate::backend::verify::{run_case, KernelReport, VerifyCase};
use crate::sched::Device;
use anyhow::{bail, Context};

/// Arguments of `cryptodl verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Backend to check against the CPU (`gpu`, or `auto`, which fails without a GPU).
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendKind,
    /// GPU adapter: `auto` (high-performance first) or a substring of its name
    /// (default: $CRYPTODL_ADAPTER, else auto).
    #[arg(long)]
    adapter: Option<String>,
    /// Preset(s) to run. CKKS presets (n8192, n16384, n32768, toy1024, toy4096; see `cryptodl
    /// params`) use their very primes; n1024 and n4096 are extra 30-bit test shapes.
    /// Default: n1024, n4096, n8192, n16384.
    #[arg(long)]
    preset: Vec<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct VerifyOutput {
    adapter: String,
    /// How the shaders build wide products: `int64` (native) or `portable` (16-bit halves).
    arith: Arith,
    /// Coefficients per NTT tile (one pass up to this degree).
    ntt_tile: u32,
    kernels: Vec<KernelReport>,
    total_mismatches: usize,
}

/// Runs `cryptodl verify`; an error (non-zero exit) on any mismatch.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if args.backend == BackendKind::Cpu {
        bail!("verify compares a GPU against the CPU twins: use --backend gpu");
    }
    let rt = match resolve(args.backend, args.adapter.as_deref())
        .context("verify needs a GPU adapter")?
    {
        Device::Gpu(rt) => rt,
        _ => bail!("no GPU to verify against the CPU twins (see the line above)"),
    };
    let presets = if args.preset.is_empty() {
        vec!["n1024", "n4096", "n8192", "n16384"]
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        args.preset.clone()
    };
    let mut kernels = Vec::new();
    for name in &presets {
        // A CKKS preset name verifies on that preset's very primes (Q then P, dnum as in
        // `cryptodl params`); the remaining names are the backend's own test shapes.
        let ckks = crate::ckks::Preset::by_name(name)
            .and_then(|p| p.parameters(true))
            .ok();
        let case = ckks.map(|p| VerifyCase {
            n: p.n(),
            q_limbs: p.q().len(),
            p_limbs: p.p().len(),
            alpha: p.digit_size(),
            count: match p.n() {
                ..=8192 => 3,
                16384 => 2,
                _ => 1,
            },
            primes: Some(p.q().iter().chain(p.p()).copied().collect()),
            ntt_tile: None,
        });
        let case = case.or_else(|| VerifyCase::preset(name)).with_context(|| {
            format!(
                "unknown preset {name:?}; choose from {}",
                VerifyCase::PRESETS.join(", ")
            )
        })?;
        kernels.extend(run_case(rt.clone(), &case, args.seed)?);
    }
    let out = VerifyOutput {
        adapter: rt.adapter().name.clone(),
        arith: rt.arith(),
        ntt_tile: rt.adapter().ntt_tile(),
        total_mismatches: kernels.iter().map(|k| k.mismatches).sum(),
        kernels,
    };
    if args.json {
        super::output::print_json(&out)?;
    } else {
        println!(
            "adapter: {} ({}); wide products: {}, NTT tile {} (set {}=portable for the 16-bit-halves arithmetic)",
            out.adapter,
            rt.adapter().backend,
            out.arith.name(),
            out.ntt_tile,
            crate::backend::gpu::ARITH_ENV
        );
        let w = out
            .kernels
            .iter()
            .map(|k| k.kernel.len())
            .max()
            .unwrap_or(6);
        println!(
            "{:<w$} {:>6} {:>6} {:>6} {:>11}",
            "kernel", "N", "limbs", "count", "mismatches"
        );
        for k in &out.kernels {
            println!(
                "{:<w$} {:>6} {:>6} {:>6} {:>11}",
                k.kernel, k.n, k.limbs, k.count, k.mismatches
            );
        }
        println!("total mismatches: {}", out.total_mismatches);
    }
    if out.total_mismatches > 0 {
        bail!(
            "{} words differ between the GPU and the CPU",
            out.total_mismatches
        );
    }
    Ok(())
}
