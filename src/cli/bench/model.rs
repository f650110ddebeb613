//! `cryptodl bench model`: the server's work on whole encrypted batches of a model (or, with
//! latency packing, on single images), checked against the plaintext reference.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::counted::{print_counted, FamilyReport};
use super::parse_bytes;
use crate::backend::cost::{KernelCost, KernelCounts, Roofline};
use crate::backend::gpu::{GpuRuntime, RuntimeOptions};
use crate::ckks::{Ciphertext, Context, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters};
use crate::cli::latency::{parameters_for, report_latency, run_latency, Images};
use crate::cli::output::{bar, median, peak_rss_bytes, print_json, thread_pool};
use crate::cli::server::{open_gpu, resolve, BackendKind, Packing, ServerArgs};
use crate::cli::warn_insecure;
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::{self, Device, Plan, Session, StepStats};

/// Arguments of `cryptodl bench model`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  cryptodl bench model --backend cpu --threads 2
  cryptodl bench model --backend gpu --json                # times, and counted bytes / multiplies
  cryptodl bench model --backend gpu --in-flight 2         # also 2 batches in flight
  cryptodl bench model --backend gpu --counts-only --max-binding wgpu-max
                                                           # what a big GPU would dispatch
  cryptodl bench model --packing latency --batches 20      # milliseconds per image")]
pub struct ModelArgs {
    /// Model file (default: the embedded demo model, CryptoNets + degree-2 polynomials).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Parameter preset (see `cryptodl params`; default: the smallest 128-bit preset deep enough
    /// for the model, and said).
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    /// Worker threads on the host (rayon). Default: all cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Timed batches after the warm-up batch (the median is reported); in latency packing, the
    /// timed images.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batches: u32,
    /// Batch packing (a batch of N/2 random images: throughput) or latency packing (one image
    /// across a few ciphertexts, moved by rotations: latency per image).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    /// With `--backend gpu`: the device to predict the batch time for from the counted bytes
    /// and multiplies, as `GBps,Gmulps` (memory bandwidth in GB/s, u32 multiplies in G/s) or a
    /// GPU class (`rtx4090`: 1000 GB/s, 20,000 G multiplies/s).
    #[arg(long, default_value = "rtx4090", value_parser = Roofline::parse)]
    roofline: Roofline,
    /// With `--backend gpu`: count only. Every dispatch of one batch is recorded and counted
    /// (kernel, shape, bytes, multiplies) exactly as in a timed run, but nothing executes and
    /// no tensor memory is taken: seconds instead of minutes on a software adapter, and, with
    /// `--max-binding`, the counts of a GPU larger than the one present. Nothing is timed or
    /// checked; the report says so.
    #[arg(long, conflicts_with = "in_flight")]
    counts_only: bool,
    /// After the timed batches, score `--batches` batches in each of this many tasks at once on
    /// the worker threads (`--threads`, at least as many for them all to run together) through
    /// the one session (batches in flight: the device computes one while the host
    /// uploads and records another), and report that throughput too; their logits must equal
    /// the timed batches' word for word. Each batch in flight holds its own device memory.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    in_flight: u32,
    /// With `--backend gpu`: the largest storage binding (tensor) to use, in bytes (suffixes
    /// KiB, MiB, GiB) or `wgpu-max` (2 GiB - 1, what wgpu grants NVIDIA and AMD GPUs). Larger
    /// tensors mean fewer, larger launches. At most the adapter's own limit, except with
    /// `--counts-only`.
    #[arg(long, value_parser = parse_bytes)]
    max_binding: Option<u64>,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `cryptodl bench model`.
pub(super) fn run(args: ModelArgs) -> anyhow::Result<()> {
    let (pool, threads) = thread_pool(args.threads)?;
    if args.packing == Packing::Latency {
        let report = pool.install(|| -> anyhow::Result<_> {
            let model = match &args.model {
                Some(p) => Model::load(p)?,
                None => Model::demo()?,
            };
            let params = parameters_for(
                &Plan::compile(&model)?,
                args.preset.as_deref(),
                true,
                args.insecure,
                args.json,
            )?;
            warn_insecure(&params, args.json);
            let device = resolve(args.server.backend, args.server.adapter.as_deref())?;
            let images = Images::random(&model, args.batches as usize);
            run_latency(&model, &params, device, threads, &images, args.json)
        })?;
        return report_latency(&report, args.json);
    }
    let report = pool.install(|| bench_model(&args, threads, &pool))?;
    if args.counts_only {
        let counts = CountsReport::new(&report);
        if args.json {
            return print_json(&counts);
        }
        print_counts(&counts);
        return Ok(());
    }
    if args.json {
        return print_json(&report);
    }
    print_model(&report);
    Ok(())
}

/// One step of the plan in the report: counts of the last batch, `seconds` the median over the
/// timed batches.
#[derive(Serialize)]
struct LayerReport {
    #[serde(flatten)]
    stats: StepStats,
}

#[derive(Serialize)]
pub(super) struct ModelReport {
    model: String,
    preset: String,
    insecure: bool,
    backend: String,
    adapter: Option<String>,
    threads: usize,
    /// Images per batch (N/2 slots).
    batch_size: usize,
    /// Ciphertexts per batch, and the level they are encrypted at.
    ciphertexts_in: usize,
    input_level: usize,
    /// Ciphertexts per launch.
    chunk_size: usize,
    /// Timed batches (after one warm-up).
    batches: usize,
    /// Median server time of a batch (upload, every step, download).
    batch_seconds: f64,
    /// Every timed batch.
    batch_seconds_all: Vec<f64>,
    predictions_per_hour: f64,
    /// Peak tensor memory of the backend (device memory on a GPU).
    peak_memory_bytes: u64,
    /// Peak resident memory of the process (Linux `VmHWM`), where available.
    peak_rss_bytes: Option<u64>,
    /// Client side, not in the batch time: key generation, encryption of one batch.
    keygen_seconds: f64,
    encrypt_seconds: f64,
    /// Server, once per session: evaluation-key upload.
    key_upload_seconds: f64,
    upload_seconds: f64,
    download_seconds: f64,
    /// Tensor memory newly obtained from the system by the last batch (0: all reused).
    fresh_bytes: u64,
    /// Launches and transfers of the last batch.
    launches: u64,
    bytes_uploaded: u64,
    bytes_downloaded: u64,
    layers: Vec<LayerReport>,
    /// GPU backend: how the kernels were set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu: Option<GpuSetup>,
    /// With `--in-flight K` (K > 1): the throughput of K batches in flight (`bench compare`:
    /// one entry per count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    in_flight: Vec<InFlightReport>,
    /// GPU backend: counted cost of the last batch per kernel family, and the roofline
    /// prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    counted: Option<CountedReport>,
    /// The decrypted logits against the plaintext reference on the first samples.
    checked_samples: usize,
    argmax_agreement: f64,
    /// Samples whose encrypted argmax differs from the reference's beyond a near-tie
    /// ([`reference::TIE`]): random inputs make near-ties common.
    disagreements_beyond_ties: usize,
    max_logit_error: f64,
}

/// `bench model --in-flight K`: batches scored K at a time through one session.
#[derive(Serialize)]
struct InFlightReport {
    /// Batches in flight at once: `--in-flight`, or the worker threads if fewer.
    batches_in_flight: usize,
    /// Batches scored in all.
    batches: usize,
    /// Wall time of them all.
    seconds: f64,
    /// Images per hour at that wall time.
    predictions_per_hour: f64,
    /// Every batch's logits equal the timed batches' word for word.
    same_logits: bool,
    /// Peak tensor memory of the session with the batches in flight.
    peak_memory_bytes: u64,
}

/// Scores `per_thread` batches (of `images` images) in each of `threads` tasks at once on
/// `pool` through `session` ([`Session::score_in_flight`]); checks every result against `want`.
fn in_flight(
    session: &Session,
    plan: &Plan,
    (batch, images): (&[Ciphertext], usize),
    want: &[Ciphertext],
    (threads, per_thread): (usize, usize),
    pool: &rayon::ThreadPool,
    quiet: bool,
) -> anyhow::Result<InFlightReport> {
    let b = bar(threads * per_thread, "server: batches in flight", quiet);
    let t = Instant::now();
    // The batches run as tasks of the pool (whose threads their own parallel work shares):
    // the calling thread is one of the pool's, so it takes a batch too instead of idling.
    let results: Vec<Mutex<Option<anyhow::Result<bool>>>> =
        (0..threads).map(|_| Mutex::new(None)).collect();
    pool.scope(|s| {
        for slot in &results {
            let b = &b;
            s.spawn(move |_| {
                let run = || -> anyhow::Result<bool> {
                    let mut same = true;
                    for _ in 0..per_thread {
                        let scored = session.score_in_flight(plan, batch)?;
                        same &= scored.logits == want;
                        b.inc(1);
                    }
                    Ok(same)
                };
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(run());
            });
        }
    });
    let results = results.into_iter().map(|m| {
        m.into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| Err(anyhow::anyhow!("a batch in flight did not finish")))
    });
    let seconds = t.elapsed().as_secs_f64();
    b.finish_and_clear();
    let mut same_logits = true;
    for r in results {
        same_logits &= r?;
    }
    if !same_logits {
        anyhow::bail!(
            "batches scored in flight gave other logits than the same batch scored alone: a bug \
             in cryptodl (please report it with this command); score with --in-flight 1 meanwhile"
        );
    }
    let batches = threads * per_thread;
    Ok(InFlightReport {
        batches_in_flight: threads.min(pool.current_num_threads()),
        batches,
        seconds,
        predictions_per_hour: (batches * images) as f64 / seconds.max(f64::MIN_POSITIVE) * 3600.0,
        same_logits,
        peak_memory_bytes: session.memory().peak_bytes,
    })
}

/// How the GPU kernels ran (or, counting only, would run).
#[derive(Clone, Serialize)]
struct GpuSetup {
    /// Wide products: `int64` (native) or `portable` (16-bit halves).
    arith: &'static str,
    /// Coefficients per NTT workgroup tile.
    ntt_tile: u32,
    /// The largest storage binding in force (the chunking follows from it), in bytes.
    max_binding_bytes: u64,
    /// Counting only: nothing executed.
    counts_only: bool,
}

impl GpuSetup {
    fn of(rt: &GpuRuntime) -> Self {
        GpuSetup {
            arith: rt.arith().name(),
            ntt_tile: rt.adapter().ntt_tile(),
            max_binding_bytes: rt.limits().max_storage_buffer_binding_size,
            counts_only: rt.counts_only(),
        }
    }
}

fn bench_model(
    args: &ModelArgs,
    threads: usize,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<ModelReport> {
    let model = match &args.model {
        Some(p) => Model::load(p)?,
        None => Model::demo()?,
    };
    let plan = Plan::compile(&model)?;
    let params: Parameters = parameters_for(
        &plan,
        args.preset.as_deref(),
        false,
        args.insecure,
        args.json,
    )?;
    plan.check_depth(params.name(), params.max_level())?;
    let device = if args.counts_only || args.max_binding.is_some() {
        if args.server.backend != BackendKind::Gpu {
            anyhow::bail!(
                "--counts-only and --max-binding count GPU dispatches: add `--backend gpu`"
            );
        }
        let options = RuntimeOptions {
            max_binding: args.max_binding,
            counts_only: args.counts_only,
            ..RuntimeOptions::from_env()
        };
        Device::Gpu(open_gpu(args.server.adapter.as_deref(), Some(&options))?)
    } else {
        resolve(args.server.backend, args.server.adapter.as_deref())?
    };
    warn_insecure(&params, args.json);
    let bench = BatchBench {
        model: &model,
        params: &params,
        batches: args.batches as usize,
        in_flight: &[args.in_flight as usize],
        roofline: &args.roofline,
        counts_only: args.counts_only,
        quiet: args.json,
    };
    measure_batch(&bench, device, threads, pool)
}

/// One batch-packing measurement: what `bench model` and `bench compare` time.
pub(super) struct BatchBench<'a> {
    pub model: &'a Model,
    pub params: &'a Parameters,
    /// Timed batches after the warm-up batch.
    pub batches: usize,
    /// After the timed batches, each count above 1 is measured as that many batches in flight.
    pub in_flight: &'a [usize],
    pub roofline: &'a Roofline,
    /// GPU: count the dispatches without executing them.
    pub counts_only: bool,
    /// No progress bars or lines on stderr.
    pub quiet: bool,
}

/// Times `b` on `device` (the caller's `pool` of `threads` workers runs it): keys and one batch
/// of random images (client side, not timed), a warm-up batch, the timed batches, the batches
/// in flight, and the check against the plaintext reference.
pub(super) fn measure_batch(
    b: &BatchBench<'_>,
    device: Device,
    threads: usize,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<ModelReport> {
    let (model, params) = (b.model, b.params);
    let plan = Plan::compile(model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let gpu = match &device {
        Device::Gpu(rt) => Some(GpuSetup::of(rt)),
        _ => None,
    };
    let quiet = b.quiet;
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let ctx = Context::new(params)?;
    let slots = params.slots();

    // Client: keys and one batch of random images.
    let t = Instant::now();
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false)?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let [c, h, w] = model.input;
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let samples: Vec<Vec<f64>> = (0..slots)
        .map(|_| {
            let pixels: Vec<u8> = (0..c * h * w).map(|_| rng.random()).collect();
            reference::normalize(model, &pixels)
        })
        .collect();
    plan.check_magnitudes(params, &samples[..samples.len().min(256)])?;
    say(format!(
        "bench model: {} at {} ({} levels used of {}; inputs at level {}), batches of {slots} random images",
        model.name,
        params.name(),
        plan.levels_needed(),
        params.max_level(),
        plan.input_level()
    ));
    let t = Instant::now();
    let enc = Encoder::new(ctx.clone());
    let enc_bar = bar(plan.inputs, "client: encrypt", quiet);
    let batch = sched::encrypt_batch(
        &plan,
        &enc,
        |_| Encryptor::new(ctx.clone()),
        &pk,
        &samples,
        || enc_bar.inc(1),
    )?;
    enc_bar.finish_and_clear();
    let encrypt_seconds = t.elapsed().as_secs_f64();

    // Server: one session, a warm-up batch, then the timed ones.
    let t = Instant::now();
    let session = Session::new(device, ctx.clone(), &keys)?;
    let key_upload_seconds = t.elapsed().as_secs_f64();
    drop(keys);
    // Counting only: every batch counts the same; a few give a median recording time.
    let total = if b.counts_only { 4 } else { b.batches + 1 };
    let steps = bar(total * plan.steps.len(), "server: steps", quiet);
    let mut runs = Vec::with_capacity(total);
    let mut logits = Vec::new();
    for i in 0..total {
        let scored = session.score_with(&plan, &batch, |_| steps.inc(1))?;
        if i + 1 == total {
            logits = scored.logits;
        }
        if i > 0 {
            runs.push(scored.stats);
        }
    }
    steps.finish_and_clear();
    let peak_memory_bytes = session.memory().peak_bytes;
    let in_flight = b
        .in_flight
        .iter()
        .filter(|&&k| k > 1)
        .map(|&k| {
            in_flight(
                &session,
                &plan,
                (&batch, slots),
                &logits,
                (k, b.batches),
                pool,
                quiet,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let last = runs.last().expect("at least one timed batch");
    let batch_seconds_all: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let batch_seconds = median(batch_seconds_all.clone());
    let layers = last
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| LayerReport {
            stats: StepStats {
                seconds: median(runs.iter().map(|r| r.steps[i].seconds).collect()),
                ..s.clone()
            },
        })
        .collect();

    // The answer must be right, not only fast: the first samples against the reference
    // (counting only, nothing was computed).
    let checked = if b.counts_only { 0 } else { slots.min(256) };
    let dec = Decryptor::new(ctx.clone());
    let got = sched::decrypt_logits(&dec, &enc, &sk, &logits, checked)?;
    let (mut agree, mut beyond, mut worst) = (0usize, 0usize, 0.0f64);
    for (x, g) in samples.iter().zip(&got) {
        let want = reference::forward(model, x)?;
        agree += usize::from(reference::argmax(&want) == reference::argmax(g));
        beyond += usize::from(!reference::agrees(&want, g));
        for (a, b) in want.iter().zip(g) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(ModelReport {
        model: model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        backend: session.kind().to_string(),
        adapter: session.adapter(),
        threads,
        batch_size: slots,
        ciphertexts_in: plan.inputs,
        input_level: plan.input_level(),
        chunk_size: session.chunk_size(&plan),
        batches: runs.len(),
        batch_seconds,
        batch_seconds_all,
        predictions_per_hour: slots as f64 / batch_seconds * 3600.0,
        peak_memory_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        keygen_seconds,
        encrypt_seconds,
        key_upload_seconds,
        upload_seconds: median(runs.iter().map(|r| r.upload_seconds).collect()),
        download_seconds: median(runs.iter().map(|r| r.download_seconds).collect()),
        fresh_bytes: last.fresh_bytes,
        launches: last.counters.launches,
        bytes_uploaded: last.counters.upload_bytes,
        bytes_downloaded: last.counters.download_bytes,
        counted: CountedReport::new(
            &last.counters.kernels,
            b.roofline,
            slots,
            last.counters.upload_bytes + last.counters.download_bytes,
        ),
        layers,
        gpu,
        in_flight,
        checked_samples: checked,
        argmax_agreement: agree as f64 / checked.max(1) as f64,
        disagreements_beyond_ties: beyond,
        max_logit_error: worst,
    })
}

fn print_model(r: &ModelReport) {
    if r.insecure {
        println!("WARNING: INSECURE parameters (preset {})", r.preset);
    }
    println!(
        "{} at {} on {}{} ({} threads): {:.3} s per batch of {} (median of {}), {:.0} predictions/hour",
        r.model,
        r.preset,
        r.backend,
        r.adapter
            .as_ref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        r.threads,
        r.batch_seconds,
        r.batch_size,
        r.batches,
        r.predictions_per_hour
    );
    println!(
        "  {} ciphertexts in at level {}, {} per launch; upload {:.3} s, download {:.3} s; peak tensor memory {:.2} GB ({:.2} GB new in the last batch){}",
        r.ciphertexts_in,
        r.input_level,
        r.chunk_size,
        r.upload_seconds,
        r.download_seconds,
        r.peak_memory_bytes as f64 / 1e9,
        r.fresh_bytes as f64 / 1e9,
        r.peak_rss_bytes
            .map(|b| format!(", process peak {:.2} GB", b as f64 / 1e9))
            .unwrap_or_default()
    );
    println!(
        "{:<5} {:<7} {:>8} {:>8} {:>6} {:>10} {:>9} {:>14} {:>16}",
        "step",
        "kind",
        "cts in",
        "cts out",
        "level",
        "median s",
        "launches",
        "bytes uploaded",
        "bytes downloaded"
    );
    for l in &r.layers {
        let s = &l.stats;
        println!(
            "{:<5} {:<7} {:>8} {:>8} {:>6} {:>10.3} {:>9} {:>14} {:>16}",
            s.step,
            s.kind,
            s.ciphertexts_in,
            s.ciphertexts_out,
            s.level_in,
            s.seconds,
            s.launches,
            s.bytes_uploaded,
            s.bytes_downloaded
        );
    }
    if let Some(c) = &r.counted {
        let steps = r.layers.iter().map(|l| {
            (
                format!("step {} {}", l.stats.step, l.stats.kind),
                l.stats.kernels.total(),
            )
        });
        print_counted_report(steps, c);
    }
    for f in &r.in_flight {
        println!(
            "  {} batches in flight: {} batches in {:.3} s, {:.0} predictions/hour, peak tensor memory {:.2} GB; logits {}",
            f.batches_in_flight,
            f.batches,
            f.seconds,
            f.predictions_per_hour,
            f.peak_memory_bytes as f64 / 1e9,
            if f.same_logits {
                "equal to the timed batches' word for word"
            } else {
                "DIFFER from the timed batches'"
            }
        );
    }
    println!(
        "  checked: {} samples, same prediction as the plaintext reference on {:.2}% ({} differ beyond a near-tie), max |logit error| {:.2e}",
        r.checked_samples,
        100.0 * r.argmax_agreement,
        r.disagreements_beyond_ties,
        r.max_logit_error
    );
}

/// One step's counts in a counts-only report.
#[derive(Serialize)]
struct StepCounts {
    step: usize,
    kind: &'static str,
    ciphertexts_in: usize,
    ciphertexts_out: usize,
    level_in: usize,
    launches: u64,
    bytes_uploaded: u64,
    bytes_downloaded: u64,
    kernels: KernelCounts,
}

/// `bench model --counts-only`: what one batch dispatches and moves, counted without executing.
#[derive(Serialize)]
struct CountsReport {
    /// Always true: nothing was executed, timed or checked.
    counts_only: bool,
    model: String,
    preset: String,
    insecure: bool,
    adapter: Option<String>,
    gpu: Option<GpuSetup>,
    batch_size: usize,
    ciphertexts_in: usize,
    input_level: usize,
    chunk_size: usize,
    /// Plan steps, and dispatches of the batch.
    steps: usize,
    launches: u64,
    bytes_uploaded: u64,
    bytes_downloaded: u64,
    /// The device memory the batch's tensors would take at most.
    peak_memory_bytes: u64,
    /// Host time to record one batch (upload calls and dispatch recording; the layers'
    /// encodings and kernel tables are made by the first batch and reused; median of the
    /// batches after it): what the host spends per batch on any GPU, a floor on the batch time
    /// unless it overlaps the device's work.
    record_seconds: f64,
    /// The time the host spent per step recording it.
    record_seconds_per_step: Vec<f64>,
    layers: Vec<StepCounts>,
    counted: Option<CountedReport>,
}

impl CountsReport {
    fn new(r: &ModelReport) -> Self {
        CountsReport {
            counts_only: true,
            model: r.model.clone(),
            preset: r.preset.clone(),
            insecure: r.insecure,
            adapter: r.adapter.clone(),
            gpu: r.gpu.clone(),
            batch_size: r.batch_size,
            ciphertexts_in: r.ciphertexts_in,
            input_level: r.input_level,
            chunk_size: r.chunk_size,
            steps: r.layers.len(),
            launches: r.launches,
            bytes_uploaded: r.bytes_uploaded,
            bytes_downloaded: r.bytes_downloaded,
            peak_memory_bytes: r.peak_memory_bytes,
            record_seconds: r.batch_seconds,
            record_seconds_per_step: r.layers.iter().map(|l| l.stats.seconds).collect(),
            layers: r
                .layers
                .iter()
                .map(|l| {
                    let s = &l.stats;
                    StepCounts {
                        step: s.step,
                        kind: s.kind,
                        ciphertexts_in: s.ciphertexts_in,
                        ciphertexts_out: s.ciphertexts_out,
                        level_in: s.level_in,
                        launches: s.launches,
                        bytes_uploaded: s.bytes_uploaded,
                        bytes_downloaded: s.bytes_downloaded,
                        kernels: s.kernels,
                    }
                })
                .collect(),
            counted: r.counted.clone(),
        }
    }
}

fn print_counts(r: &CountsReport) {
    if r.insecure {
        println!("WARNING: INSECURE parameters (preset {})", r.preset);
    }
    let setup = r
        .gpu
        .as_ref()
        .map(|g| {
            format!(
                "{} products, NTT tile {}, storage bindings of at most {} bytes",
                g.arith, g.ntt_tile, g.max_binding_bytes
            )
        })
        .unwrap_or_default();
    println!(
        "COUNTS ONLY (nothing executed, timed or checked): {} at {} on {} ({setup})",
        r.model,
        r.preset,
        r.adapter.as_deref().unwrap_or("?")
    );
    println!(
        "  a batch of {} images: {} ciphertexts in at level {}, {} per launch; {} dispatches for {} steps; host -> device {:.3} GB, device -> host {:.3} GB; peak tensor memory {:.2} GB; the host records it in {:.1} ms",
        r.batch_size,
        r.ciphertexts_in,
        r.input_level,
        r.chunk_size,
        r.launches,
        r.steps,
        r.bytes_uploaded as f64 / 1e9,
        r.bytes_downloaded as f64 / 1e9,
        r.peak_memory_bytes as f64 / 1e9,
        r.record_seconds * 1e3
    );
    if let Some(c) = &r.counted {
        let steps = r
            .layers
            .iter()
            .map(|l| (format!("step {} {}", l.step, l.kind), l.kernels.total()));
        print_counted_report(steps, c);
    }
}

/// The counted cost of a batch (GPU backend) and what it predicts on a roofline.
#[derive(Clone, Serialize)]
struct CountedReport {
    /// Per kernel family, then `total`.
    families: Vec<FamilyReport>,
    total: FamilyReport,
    roofline: Roofline,
    /// Predicted batch time from the counted bytes and multiplies, and at the floor.
    predicted_batch_seconds: f64,
    predicted_floor_batch_seconds: f64,
    predicted_predictions_per_hour: f64,
    predicted_floor_predictions_per_hour: f64,
    /// Host <-> device bytes of the batch: the input ciphertexts up, the logits down.
    host_bytes: u64,
}

impl CountedReport {
    fn new(k: &KernelCounts, roof: &Roofline, images: usize, host_bytes: u64) -> Option<Self> {
        if k.is_empty() {
            return None;
        }
        let (counted, floor) = k.roofline_seconds(roof);
        let per_hour = |s: f64| images as f64 / s.max(f64::MIN_POSITIVE) * 3600.0;
        Some(CountedReport {
            families: FamilyReport::families(k),
            total: FamilyReport::new("total", k.total()),
            roofline: roof.clone(),
            predicted_batch_seconds: counted,
            predicted_floor_batch_seconds: floor,
            predicted_predictions_per_hour: per_hour(counted),
            predicted_floor_predictions_per_hour: per_hour(floor),
            host_bytes,
        })
    }
}

/// Prints the counted table (one row per step, per family with work, then the batch) and the
/// roofline prediction.
fn print_counted_report(steps: impl Iterator<Item = (String, KernelCost)>, c: &CountedReport) {
    let mut rows: Vec<(String, KernelCost)> = steps.collect();
    rows.extend(
        c.families
            .iter()
            .filter(|f| f.cost != KernelCost::default())
            .map(|f| (f.family.to_string(), f.cost)),
    );
    rows.push(("batch".into(), c.total.cost));
    print_counted(&rows);
    println!(
        "  predicted on {} ({:.0} GB/s, {:.0} G u32 multiplies/s): {:.4} s per batch counted ({:.3e} predictions/hour), {:.4} s at the floor ({:.3e}/hour); host <-> device {:.3} GB",
        c.roofline.name,
        c.roofline.bytes_per_second / 1e9,
        c.roofline.mults_per_second / 1e9,
        c.predicted_batch_seconds,
        c.predicted_predictions_per_hour,
        c.predicted_floor_batch_seconds,
        c.predicted_floor_predictions_per_hour,
        c.host_bytes as f64 / 1e9
    );
}
