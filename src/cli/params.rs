//! `cryptodl params`: list the parameter presets and their security.

use serde::Serialize;

use super::output::print_json;
use crate::circuits::BootstrapConfig;
use crate::ckks::PRESETS;

/// Arguments of `cryptodl params`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Secure presets meet the HomomorphicEncryption.org 128-bit table for \
ternary secrets (max log2(QP): N=8192 -> 218, 16384 -> 438, 32768 -> 881, 65536 -> 1772). \
`toy*` presets are insecure and only accepted with --insecure, for tests and quick experiments. \
bootstrap: for bootstrappable presets, the primes one bootstrap consumes / the primes it leaves \
to the network (see `cryptodl bench bootstrap`)."
)]
pub struct ParamsArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PresetRow {
    name: &'static str,
    n: usize,
    slots: usize,
    log_qp: f64,
    prime_bits: Vec<u32>,
    special_primes: usize,
    dnum: usize,
    depth: usize,
    log_scale: u32,
    security_bits: u32,
    secure: bool,
    /// Bootstrappable presets: primes the circuit consumes and primes left to the network
    /// after a bootstrap (`null` otherwise).
    bootstrap_primes: Option<usize>,
    primes_after_bootstrap: Option<usize>,
}

/// Runs `cryptodl params`.
pub fn run(args: ParamsArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for preset in PRESETS {
        let p = preset.parameters(true)?;
        let boot = BootstrapConfig::for_preset(preset.name);
        let boot_primes = boot
            .as_ref()
            .map(|c| c.cost(&p).map(|cost| cost.primes))
            .transpose()?;
        let after = boot.as_ref().map(|c| c.primes_left(&p)).transpose()?;
        rows.push(PresetRow {
            name: preset.name,
            n: p.n(),
            slots: p.slots(),
            log_qp: (p.log_qp() * 100.0).round() / 100.0,
            prime_bits: p.prime_bits(),
            special_primes: p.p().len(),
            dnum: p.dnum(),
            depth: p.max_level(),
            log_scale: p.log_scale(),
            security_bits: p.security_bits(),
            secure: !p.is_insecure(),
            bootstrap_primes: boot_primes,
            primes_after_bootstrap: after,
        });
    }
    if args.json {
        return print_json(&rows);
    }
    println!(
        "{:<11} {:>6} {:>6} {:>7} {:>5} {:>4} {:>5} {:>8} {:>9}  primes (bits: data | special)",
        "preset", "N", "slots", "log QP", "depth", "dnum", "scale", "security", "bootstrap"
    );
    for r in &rows {
        let data = r.prime_bits.len() - r.special_primes;
        let bits = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let boot = match (r.bootstrap_primes, r.primes_after_bootstrap) {
            (Some(b), Some(a)) => format!("{b}/{a}"),
            _ => "-".into(),
        };
        println!(
            "{:<11} {:>6} {:>6} {:>7.1} {:>5} {:>4} {:>5} {:>8} {:>9}  [{} | {}]",
            r.name,
            r.n,
            r.slots,
            r.log_qp,
            r.depth,
            r.dnum,
            format!("2^{}", r.log_scale),
            if r.secure {
                "128-bit".to_string()
            } else {
                "INSECURE".to_string()
            },
            boot,
            bits(&r.prime_bits[..data]),
            bits(&r.prime_bits[data..]),
        );
    }
    Ok(())
}
