//! `cryptodl bench bootstrap`: time, levels, precision, keys and memory of one CKKS bootstrap
//! (and, with `--failures`, the worst case over many), on the CPU or a GPU; with
//! `--counts-only` on a GPU, the counted bytes and multiplies per kernel family and the time
//! they predict on a roofline.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::counted::FamilyReport;
use crate::backend::cost::Roofline;
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{GpuBackend, GpuRuntime, RuntimeOptions, WGPU_MAX_BINDING};
use crate::backend::Backend;
use crate::circuits::{BootstrapConfig, Bootstrapper};
use crate::ckks::{
    Context, Decryptor, DeviceEvaluator, Encoder, Encryptor, KeyGenerator, Parameters, Preset,
    Sampler, SecretKey,
};
use crate::cli::output::bar;
use crate::cli::output::print_json;
use crate::cli::output::{median, peak_rss_bytes, thread_pool};
use crate::cli::server::{open_gpu, BackendKind, ServerArgs};

/// Arguments of `cryptodl bench bootstrap`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Every bootstrap encrypts a fresh random message (real and imaginary parts uniform in [-1, 1] in
every slot) one level above the circuit's base, bootstraps it, decrypts and compares: precision
is -log2 |error| per slot (mean, minimum, and the error's percentiles).

Examples:
  cryptodl bench bootstrap --threads 2                       # n65536, full packing, CPU
  cryptodl bench bootstrap --threads 2 --slots 1024          # sparse packing: 2^10 slots
  cryptodl bench bootstrap --preset toyboot1024 --insecure    # seconds, for a quick look
  cryptodl bench bootstrap --backend gpu --counts-only --roofline h200
                                                             # counted cost, predicted time
  cryptodl bench bootstrap --preset toyboot1024 --insecure --failures 1000")]
pub struct BootstrapArgs {
    /// A bootstrappable preset (`n65536`; `toyboot1024` with --insecure).
    #[arg(long, default_value = "n65536")]
    preset: String,
    #[command(flatten)]
    server: ServerArgs,
    /// Worker threads on the host (rayon). Default: all cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Timed bootstraps after a warm-up one (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Message slots, a power of two (default: N/2, full packing). Fewer is sparse packing:
    /// the values repeat over the ciphertext's slots and the DFTs shrink to their size.
    #[arg(long)]
    slots: Option<usize>,
    /// log2 of the message's scale (default: the preset's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=60))]
    log_scale: Option<u32>,
    /// Also bootstrap this many fresh random messages and report the worst error and how many
    /// went beyond `--bound-bits` (the failure rate).
    #[arg(long, default_value_t = 0)]
    failures: u32,
    /// The precision bound of `--failures`: a bootstrap fails if any slot's error is above
    /// 2^-bound.
    #[arg(long, default_value_t = 15.0)]
    bound_bits: f64,
    /// With `--backend gpu`: count only (every dispatch recorded and counted, nothing executed;
    /// no precision, no time). With `--max-binding` unset, counts for wgpu's 2 GiB bindings.
    #[arg(long)]
    counts_only: bool,
    /// The roofline the counted bytes and multiplies are turned into a time on (`h200`,
    /// `rtx4090`, or `GBps,Gmulps`).
    #[arg(long, default_value = "h200", value_parser = Roofline::parse)]
    roofline: Roofline,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Precision of one or more bootstraps over every slot.
#[derive(Clone, Debug, Serialize)]
struct PrecisionReport {
    mean_bits: f64,
    min_bits: f64,
    /// |error| percentiles (50, 90, 99, 99.9, max).
    error_p50: f64,
    error_p90: f64,
    error_p99: f64,
    error_p999: f64,
    error_max: f64,
}

impl PrecisionReport {
    fn of(errors: &mut [f64]) -> Self {
        errors.sort_by(f64::total_cmp);
        let bits: Vec<f64> = errors.iter().map(|e| -e.max(1e-30).log2()).collect();
        let at = |q: f64| errors[((errors.len() - 1) as f64 * q).round() as usize];
        PrecisionReport {
            mean_bits: bits.iter().sum::<f64>() / bits.len() as f64,
            min_bits: -errors[errors.len() - 1].max(1e-30).log2(),
            error_p50: at(0.5),
            error_p90: at(0.9),
            error_p99: at(0.99),
            error_p999: at(0.999),
            error_max: errors[errors.len() - 1],
        }
    }
}

/// The worst case over many bootstraps.
#[derive(Clone, Debug, Serialize)]
struct FailureReport {
    bootstraps: u32,
    bound_bits: f64,
    /// Bootstraps with a slot beyond the bound.
    failures: u32,
    worst_min_bits: f64,
    worst_error: f64,
}

/// Counted cost of one bootstrap on the GPU backend.
#[derive(Clone, Serialize)]
struct CountedBootstrap {
    families: Vec<FamilyReport>,
    total: FamilyReport,
    roofline: Roofline,
    predicted_seconds: f64,
    predicted_floor_seconds: f64,
    max_binding_bytes: u64,
}

#[derive(Serialize)]
struct BootstrapReport {
    preset: String,
    insecure: bool,
    n: usize,
    slots: usize,
    backend: String,
    /// `software` for a CPU-emulated adapter (lavapipe): its times say nothing about GPUs.
    adapter_type: Option<String>,
    threads: usize,
    config: ConfigReport,
    /// The message's scale (log2) and the level it was encrypted at.
    log_scale: f64,
    input_level: usize,
    output_level: usize,
    /// Primes the circuit consumes (CoeffsToSlots, EvalMod, SlotsToCoeffs).
    primes_consumed: usize,
    /// Primes left to the network after a bootstrap (ScaleDown's one taken out).
    primes_left: usize,
    rotation_keys: usize,
    /// log2 of the modulus `Q_0 P'` the sparse-secret key `s -> s'` lives on.
    encapsulation_modulus_bits: f64,
    key_bytes: u64,
    keygen_seconds: f64,
    /// Median, minimum and maximum time of one bootstrap (seconds).
    median_seconds: Option<f64>,
    min_seconds: Option<f64>,
    max_seconds: Option<f64>,
    /// Median time of each step.
    stages: Vec<StageTime>,
    precision: Option<PrecisionReport>,
    /// The precision of the fresh (public-key) encryptions that went in: bootstrapping cannot
    /// do better.
    input_precision: Option<PrecisionReport>,
    failures: Option<FailureReport>,
    counted: Option<CountedBootstrap>,
    peak_rss_bytes: Option<u64>,
}

#[derive(Serialize)]
struct StageTime {
    stage: &'static str,
    median_seconds: f64,
}

#[derive(Serialize)]
struct ConfigReport {
    base_level: usize,
    coeffs_to_slots_levels: usize,
    eval_mod_levels: usize,
    slots_to_coeffs_levels: usize,
    primes_per_level: usize,
    k: f64,
    degree: usize,
    double_angles: usize,
    hamming_weight: usize,
    log_message_ratio: u32,
}

/// Runs `cryptodl bench bootstrap`.
pub fn run(args: BootstrapArgs) -> anyhow::Result<()> {
    let (pool, threads) = thread_pool(args.threads)?;
    let report = pool.install(|| bench(&args, threads))?;
    if args.json {
        return print_json(&report);
    }
    print(&report);
    Ok(())
}

fn bench(args: &BootstrapArgs, threads: usize) -> anyhow::Result<BootstrapReport> {
    let preset = Preset::by_name(&args.preset)?;
    let mut config = BootstrapConfig::for_preset(preset.name).with_context(|| {
        format!(
            "preset {} is not bootstrappable; use --preset n65536 (or toyboot1024 --insecure)",
            preset.name
        )
    })?;
    let params = preset.parameters(args.insecure)?;
    if let Some(slots) = args.slots {
        config = config
            .with_slots(slots, &params)
            .map_err(|e| anyhow::anyhow!("--slots {slots}: {e}"))?;
    }
    crate::cli::warn_insecure(&params, args.json);
    if args.counts_only && args.server.backend != BackendKind::Gpu {
        anyhow::bail!("--counts-only counts GPU dispatches: add --backend gpu");
    }
    let ctx = Context::new(&params)?;
    // The GPU runtime, or None for the CPU (asked for, or `auto` without a GPU).
    let rt: Option<Arc<GpuRuntime>> = match args.server.backend {
        BackendKind::Cpu => None,
        _ if args.counts_only => {
            let options = RuntimeOptions {
                max_binding: Some(WGPU_MAX_BINDING),
                counts_only: true,
                ..RuntimeOptions::from_env()
            };
            Some(open_gpu(args.server.adapter.as_deref(), Some(&options))?)
        }
        BackendKind::Gpu => Some(open_gpu(args.server.adapter.as_deref(), None)?),
        BackendKind::Auto => match open_gpu(args.server.adapter.as_deref(), None) {
            Ok(rt) => Some(rt),
            Err(e) => {
                eprintln!("no GPU ({e:#}); bootstrapping on the CPU");
                None
            }
        },
    };
    match rt {
        None => bench_on(
            args,
            threads,
            &config,
            &ctx,
            CpuBackend::new(ctx.rns().clone()),
            None,
        ),
        Some(rt) => {
            let be = GpuBackend::new(rt.clone(), ctx.rns().clone())?;
            bench_on(args, threads, &config, &ctx, be, Some(&rt))
        }
    }
}

/// A random message: real and imaginary parts uniform in [-1, 1].
fn message(rng: &mut impl Rng, slots: usize) -> Vec<Complex64> {
    (0..slots)
        .map(|_| Complex64::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect()
}

fn bench_on<B: Backend>(
    args: &BootstrapArgs,
    threads: usize,
    config: &BootstrapConfig,
    ctx: &Arc<Context>,
    backend: B,
    gpu: Option<&Arc<GpuRuntime>>,
) -> anyhow::Result<BootstrapReport> {
    let params: &Parameters = ctx.params();
    let cost = config.cost(params)?;
    let quiet = args.json;
    if !quiet {
        eprintln!(
            "{}: N = {}, {} slots; bootstrapping spends {} primes, {} rotation keys + conjugation + encapsulation",
            params.name(),
            params.n(),
            config.packing(params)?.0,
            cost.primes,
            cost.rotations.len()
        );
    }
    // Keys: generated, then uploaded one by one (each host copy freed once on the backend).
    let t = Instant::now();
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk: SecretKey = kg.secret_key();
    let pk = kg.public_key(&sk);
    let spinner = bar(0, "keygen", quiet);
    let keys = config.keys(&mut kg, &sk, params, &[])?;
    spinner.finish_and_clear();
    let keygen_seconds = t.elapsed().as_secs_f64();
    let words = |k: &crate::ckks::SwitchingKey| k.data.len() as u64 * 4;
    let key_bytes = keys.relin.as_ref().map_or(0, words)
        + keys.galois.values().map(words).sum::<u64>()
        + keys
            .encapsulation
            .as_ref()
            .map_or(0, |e| words(&e.to_sparse) + words(&e.from_sparse));
    let rotation_keys = keys.galois.len();
    let dev = DeviceEvaluator::new(ctx.clone(), backend)?;
    // Each key only as far up as the circuit uses it (SlotsToCoeffs' keys: the bottom limbs).
    let dkeys = dev.upload_keys_trimmed(keys, &config.key_levels(ctx)?)?;
    let boot = Bootstrapper::new(&dev, &dkeys, config.clone())?;

    let enc = Encoder::new(ctx.clone());
    let dec = Decryptor::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_os());
    let log_scale = args.log_scale.unwrap_or(params.log_scale());
    let scale = 2f64.powi(log_scale as i32);
    let input_level = config.base_level + 1;
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let (slots, copies) = config.packing(params)?;
    // One bootstrap of a fresh message: (seconds, per-slot errors, output level); the input's
    // own errors (fresh encryption) go to `input_errors`.
    let mut input_errors: Vec<f64> = Vec::new();
    let mut stage_times: Vec<Vec<(&'static str, f64)>> = Vec::new();
    let mut once = |rng: &mut rand_chacha::ChaCha20Rng| -> anyhow::Result<(f64, Vec<f64>, usize)> {
        // Sparse packing: the message's slots repeat over the ciphertext's.
        let z: Vec<Complex64> = message(rng, slots)
            .into_iter()
            .cycle()
            .take(slots * copies)
            .collect();
        let ct = encryptor.encrypt(&enc.encode_complex(&z, input_level, scale)?, &pk)?;
        if input_errors.len() < 4 * slots {
            let fresh = enc.decode_complex(&dec.decrypt(&ct, &sk)?);
            input_errors.extend(fresh.iter().zip(&z).map(|(g, w)| (g - w).norm()));
        }
        let x = dev.upload(std::slice::from_ref(&ct))?;
        let t = Instant::now();
        let mut last = t;
        let mut this: Vec<(&'static str, f64)> = Vec::new();
        let y = boot.bootstrap_staged(&x, x.scale(), &mut |name| {
            dev.backend()
                .synchronize()
                .map_err(crate::ckks::CkksError::from)?;
            let now = Instant::now();
            this.push((name, (now - last).as_secs_f64()));
            last = now;
            Ok(())
        })?;
        let secs = t.elapsed().as_secs_f64();
        stage_times.push(this);
        let level = y.level();
        if gpu.is_some_and(|rt| rt.counts_only()) {
            return Ok((secs, Vec::new(), level));
        }
        let out = dev.download(&y)?;
        let got = enc.decode_complex(&dec.decrypt(&out[0], &sk)?);
        Ok((
            secs,
            got.iter().zip(&z).map(|(g, w)| (g - w).norm()).collect(),
            level,
        ))
    };

    let counts_only = gpu.is_some_and(|rt| rt.counts_only());
    let (mut times, mut errors) = (Vec::new(), Vec::new());
    let mut counted = None;
    let output_level;
    if counts_only {
        let before = dev.backend().counters();
        let (_, _, level) = once(&mut rng)?;
        output_level = level;
        let k = dev.backend().counters().kernels - before.kernels;
        let roof = &args.roofline;
        let (pred, floor) = k.roofline_seconds(roof);
        counted = Some(CountedBootstrap {
            families: FamilyReport::families(&k),
            total: FamilyReport::new("total", k.total()),
            roofline: roof.clone(),
            predicted_seconds: pred,
            predicted_floor_seconds: floor,
            max_binding_bytes: gpu.map_or(0, |rt| rt.max_binding()),
        });
    } else {
        let b = bar(args.reps as usize + 1, "bootstraps", quiet);
        let (_, mut e, level) = once(&mut rng)?; // warm-up, its precision counted too
        b.inc(1);
        errors.append(&mut e);
        output_level = level;
        for _ in 0..args.reps {
            let (secs, mut e, _) = once(&mut rng)?;
            times.push(secs);
            errors.append(&mut e);
            b.inc(1);
        }
        b.finish_and_clear();
    }
    let failures = if args.failures > 0 && !counts_only {
        let b = bar(args.failures as usize, "failure-rate bootstraps", quiet);
        let bound = 2f64.powf(-args.bound_bits);
        let (mut failed, mut worst) = (0u32, 0f64);
        for _ in 0..args.failures {
            let (_, e, _) = once(&mut rng)?;
            let m = e.iter().copied().fold(0.0, f64::max);
            if m > bound {
                failed += 1;
            }
            worst = worst.max(m);
            b.inc(1);
        }
        b.finish_and_clear();
        Some(FailureReport {
            bootstraps: args.failures,
            bound_bits: args.bound_bits,
            failures: failed,
            worst_min_bits: -worst.max(1e-30).log2(),
            worst_error: worst,
        })
    } else {
        None
    };
    // Per stage, the median over the timed bootstraps (the warm-up's left out).
    let stages: Vec<StageTime> = match stage_times.get(1..) {
        Some(timed) if !timed.is_empty() && !counts_only => timed[0]
            .iter()
            .enumerate()
            .map(|(i, &(name, _))| StageTime {
                stage: name,
                median_seconds: median(timed.iter().map(|t| t[i].1).collect()),
            })
            .collect(),
        _ => Vec::new(),
    };
    let em_levels = cost.eval_mod_levels;
    Ok(BootstrapReport {
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        n: params.n(),
        slots,
        backend: match gpu {
            None => "cpu".into(),
            Some(rt) => format!("gpu: {}", rt.adapter().name),
        },
        adapter_type: gpu.map(|rt| {
            if rt.adapter().device_type.eq_ignore_ascii_case("cpu") {
                "software".to_string()
            } else {
                rt.adapter().device_type.clone()
            }
        }),
        threads,
        config: ConfigReport {
            base_level: config.base_level,
            coeffs_to_slots_levels: config.coeffs_to_slots_levels,
            eval_mod_levels: em_levels,
            slots_to_coeffs_levels: config.slots_to_coeffs_levels,
            primes_per_level: config.primes_per_level,
            k: config.k,
            degree: config.degree,
            double_angles: config.double_angles,
            hamming_weight: config.hamming_weight,
            log_message_ratio: config.log_message_ratio,
        },
        log_scale: log_scale as f64,
        input_level,
        output_level,
        primes_consumed: cost.primes,
        primes_left: config.primes_left(params)?,
        rotation_keys,
        encapsulation_modulus_bits: {
            let special = crate::ckks::encapsulation_special(params, config.base_level);
            params.q()[..=config.base_level]
                .iter()
                .chain(&params.p()[..special])
                .map(|&q| (q as f64).log2())
                .sum()
        },
        key_bytes,
        keygen_seconds,
        median_seconds: (!times.is_empty()).then(|| median(times.clone())),
        min_seconds: times.iter().copied().reduce(f64::min),
        max_seconds: times.iter().copied().reduce(f64::max),
        stages,
        precision: (!errors.is_empty()).then(|| PrecisionReport::of(&mut errors)),
        input_precision: (!input_errors.is_empty() && !counts_only)
            .then(|| PrecisionReport::of(&mut input_errors)),
        failures,
        counted,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

fn print(r: &BootstrapReport) {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "bootstrap | preset {}{} | N = {} | {} slots ({} packing) | {} | threads {}",
        r.preset,
        if r.insecure { " (INSECURE)" } else { "" },
        r.n,
        r.slots,
        if r.slots == r.n / 2 { "full" } else { "sparse" },
        r.backend,
        r.threads
    );
    if r.adapter_type.as_deref() == Some("software") {
        println!("software adapter (lavapipe): its times say nothing about GPU speed");
    }
    let c = &r.config;
    println!(
        "circuit: base level {}, CoeffsToSlots {} + EvalMod {} + SlotsToCoeffs {} levels x {} primes = {} primes; K = {}, degree {}, {} double angles, h = {}, message ratio 2^{}",
        c.base_level,
        c.coeffs_to_slots_levels,
        c.eval_mod_levels,
        c.slots_to_coeffs_levels,
        c.primes_per_level,
        r.primes_consumed,
        c.k,
        c.degree,
        c.double_angles,
        c.hamming_weight,
        c.log_message_ratio
    );
    println!(
        "levels: input {} (scale 2^{}), output {}; {} primes left to the network",
        r.input_level, r.log_scale, r.output_level, r.primes_left
    );
    println!(
        "sparse secret (h = {}) only inside encapsulation, its key on a {:.0}-bit modulus",
        c.hamming_weight, r.encapsulation_modulus_bits
    );
    println!(
        "keys: {} Galois keys (rotations and conjugation) + relinearization + encapsulation = {:.2} GiB, generated in {:.1} s",
        r.rotation_keys,
        gib(r.key_bytes),
        r.keygen_seconds
    );
    if let (Some(m), Some(lo), Some(hi)) = (r.median_seconds, r.min_seconds, r.max_seconds) {
        println!("time: median {m:.3} s (min {lo:.3}, max {hi:.3})");
        let parts: Vec<String> = r
            .stages
            .iter()
            .map(|s| format!("{} {:.3} s", s.stage, s.median_seconds))
            .collect();
        if !parts.is_empty() {
            println!("  by step (medians): {}", parts.join(", "));
        }
    }
    if let Some(p) = &r.precision {
        println!(
            "precision: {:.2} bits mean, {:.2} min; |error| p50 {:.2e}, p90 {:.2e}, p99 {:.2e}, p99.9 {:.2e}, max {:.2e}",
            p.mean_bits, p.min_bits, p.error_p50, p.error_p90, p.error_p99, p.error_p999, p.error_max
        );
    }
    if let Some(p) = &r.input_precision {
        println!(
            "input (fresh encryption): {:.2} bits mean, {:.2} min",
            p.mean_bits, p.min_bits
        );
    }
    if let Some(f) = &r.failures {
        println!(
            "failure rate: {} of {} bootstraps beyond 2^-{}; worst slot {:.2e} ({:.2} bits)",
            f.failures, f.bootstraps, f.bound_bits, f.worst_error, f.worst_min_bits
        );
    }
    if let Some(c) = &r.counted {
        super::counted::print_counted(
            &c.families
                .iter()
                .chain(std::iter::once(&c.total))
                .map(|f| (f.family.to_string(), f.cost))
                .collect::<Vec<_>>(),
        );
        println!(
            "predicted on {} ({:.0} GB/s, {:.0} G mults/s): {:.1} ms counted, {:.1} ms at the floor (bindings up to {} MiB)",
            c.roofline.name,
            c.roofline.bytes_per_second / 1e9,
            c.roofline.mults_per_second / 1e9,
            c.predicted_seconds * 1e3,
            c.predicted_floor_seconds * 1e3,
            c.max_binding_bytes >> 20
        );
    }
    if let Some(b) = r.peak_rss_bytes {
        println!("peak memory (RSS): {:.2} GiB", gib(b));
    }
}
