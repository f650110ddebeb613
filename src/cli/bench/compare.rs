//! `cryptodl bench compare`: one model on several backends, packings, thread counts and batches
//! in flight, in one process, every figure checked against the plaintext reference; one JSON
//! document with the machine and every measurement (what `bench report` draws).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{measure_batch, BatchBench};
use crate::backend::cost::Roofline;
use crate::backend::gpu::{list_adapters, AdapterSummary};
use crate::ckks::Parameters;
use crate::cli::latency::{parameters_for, run_latency, Images};
use crate::cli::output::{median, peak_rss_bytes, print_json, reset_peak_rss, thread_pool};
use crate::cli::server::{open_gpu, Packing};
use crate::cli::warn_insecure;
use crate::io::ReadSet;
use crate::nn::model::Model;
use crate::sched::{Device, Plan};

/// What marks a `bench compare` document (`bench report` refuses other JSON by it).
pub(super) const KIND: &str = "cryptodl bench compare";
/// Its layout version.
pub(super) const VERSION: u32 = 1;

/// Arguments of `cryptodl bench compare`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Every measurement runs the same model on random images (no dataset needed) through the \
server's evaluator, checks the decrypted logits against the plaintext reference, and goes into \
one JSON document with the machine (CPU, cores, memory, every GPU adapter with its driver and \
limits). The document is written atomically under benches/results/<machine>/ (or --out), where \
`cryptodl bench report` draws it. A measurement whose repeats spread more than --noisy around \
their median is flagged noisy; a software adapter (lavapipe) is labelled as software rendering \
everywhere: its times say nothing about GPU speed.

Examples:
  cryptodl bench compare                                   # cpu (1, 2, ... threads) and the GPU, both packings
  cryptodl bench compare --backends cpu --threads 1,2 --packing batch
  cryptodl bench compare --backends all --in-flight 1,2    # the CPU and every adapter
  cryptodl bench report benches/results/*/compare-*.json --out report/")]
pub struct CompareArgs {
    /// Model file (default: the embedded demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Parameter preset for both packings (default: the smallest 128-bit preset deep enough
    /// for batch packing, and deep and wide enough for latency packing).
    #[arg(long)]
    preset: Option<String>,
    /// Backends, comma-separated: `cpu`, `gpu` (the adapter `--adapter` names, else the most
    /// powerful) and `all` (the CPU and every adapter present).
    #[arg(long, value_delimiter = ',', default_value = "cpu,gpu")]
    backends: Vec<BackendChoice>,
    /// With `gpu`: the adapter (case-insensitive substring of its name; see `cryptodl devices`).
    #[arg(long)]
    adapter: Option<String>,
    /// Packings, comma-separated: batch (throughput), latency (one image at a time).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "batch,latency"
    )]
    packing: Vec<Packing>,
    /// CPU worker-thread counts, comma-separated (default: 1, 2, 4, ... and the cores present).
    /// GPU measurements use every core for the host.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Vec<u32>,
    /// Batch packing: batches in flight through the one session, comma-separated; each count
    /// above 1 is measured after the timed batches (throughput against images in flight).
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=8))]
    in_flight: Vec<u32>,
    /// Batch packing: timed batches per measurement (after one warm-up batch).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batches: u32,
    /// Latency packing: timed images per measurement (after one warm-up image).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    images: u32,
    /// A measurement is flagged noisy when (max - min) / median of its repeats is above this.
    #[arg(long, default_value_t = 0.10)]
    noisy: f64,
    /// The roofline the GPU's counted bytes and multiplies are turned into a time on
    /// (`GBps,Gmulps`, `rtx4090` or `h200`).
    #[arg(long, default_value = "h200", value_parser = Roofline::parse)]
    roofline: Roofline,
    /// Where to write the document (default: benches/results/<machine>/compare-<model>-<UTC
    /// time>.json under the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print the document on stdout instead of a table (it is written to the file either way).
    #[arg(long)]
    json: bool,
}

/// One entry of `--backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
    /// The CPU, at every `--threads` count.
    Cpu,
    /// One GPU adapter (`--adapter`, else the most powerful).
    Gpu,
    /// The CPU and every adapter present.
    All,
}

/// One GPU adapter of the machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A CPU rasterizer (lavapipe, WARP, SwiftShader): its times are not GPU speed.
    pub software: bool,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub shader_int64: bool,
    pub timestamp_queries: bool,
}

impl AdapterInfo {
    fn of(a: &AdapterSummary) -> Self {
        AdapterInfo {
            name: a.name.clone(),
            backend: a.backend.clone(),
            device_type: a.device_type.clone(),
            driver: a.driver.clone(),
            software: a.device_type.eq_ignore_ascii_case("cpu"),
            max_storage_binding: a.max_storage_binding,
            max_buffer_size: a.max_buffer_size,
            max_workgroup_storage: a.max_workgroup_storage,
            max_invocations: a.max_invocations,
            shader_int64: a.shader_int64,
            timestamp_queries: a.timestamp_queries,
        }
    }
}

/// The machine a document was measured on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Machine {
    /// Short name, also the results directory: `<cores>core-<first hardware GPU, else
    /// cpu-only or the software adapter>`.
    pub name: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub adapters: Vec<AdapterInfo>,
}

impl Machine {
    /// This machine, with every adapter the native backends list.
    fn this() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(
                || std::env::consts::ARCH.to_string(),
                |(_, v)| v.trim().to_string(),
            );
        let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        });
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|r| {
                let l = r.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
                Some(l["PRETTY_NAME=".len()..].trim_matches('"').to_string())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let adapters: Vec<AdapterInfo> = list_adapters().iter().map(AdapterInfo::of).collect();
        let gpu = adapters
            .iter()
            .find(|a| !a.software)
            .or(adapters.first())
            // The name before its parenthesised details: "llvmpipe (LLVM 15.0.6, 256 bits)".
            .map_or_else(
                || "cpu-only".to_string(),
                |a| slug(a.name.split(" (").next().unwrap_or(&a.name)),
            );
        Machine {
            name: format!("{cores}core-{gpu}"),
            cpu_model,
            cores,
            memory_bytes,
            os,
            adapters,
        }
    }
}

/// `s` in lower case with every run of other characters than letters and digits as one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    out.chars().take(40).collect::<String>()
}

/// The time of one step of the plan (batch packing) or operation (latency packing).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StepTime {
    pub name: String,
    /// Median over the repeats.
    pub seconds: f64,
}

/// Throughput with several batches in flight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct InFlightPoint {
    pub batches_in_flight: usize,
    pub images_per_hour: f64,
}

/// The GPU's counted cost of one batch, and its roofline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Counted {
    pub bytes: u64,
    pub mults: u64,
    pub floor_bytes: u64,
    pub floor_mults: u64,
    pub roofline: String,
    pub bytes_per_second: f64,
    pub mults_per_second: f64,
    /// The batch time the counts predict on the roofline, and at the floor.
    pub predicted_seconds: f64,
    pub predicted_floor_seconds: f64,
}

/// One measurement: a backend (and thread count) and a packing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Measurement {
    /// How reports name it: `cpu 2 threads`, `gpu <adapter>` (`(software)` for a CPU
    /// rasterizer).
    pub label: String,
    pub backend: String,
    pub adapter: Option<String>,
    /// A software adapter: its times say nothing about GPU speed.
    pub software: bool,
    pub threads: usize,
    /// `batch` or `latency`.
    pub packing: String,
    pub preset: String,
    /// Images one timed repeat scores (the batch size, or 1).
    pub images_per_repeat: usize,
    /// Every timed repeat (a batch, or an image), seconds.
    pub seconds_all: Vec<f64>,
    pub seconds_median: f64,
    pub seconds_min: f64,
    pub seconds_max: f64,
    /// (max - min) / median of the repeats.
    pub spread: f64,
    /// Spread above the document's `noisy_threshold`.
    pub noisy: bool,
    pub images_per_hour: f64,
    /// Batch packing: throughput with batches in flight (1 first: the timed batches).
    pub in_flight: Vec<InFlightPoint>,
    pub steps: Vec<StepTime>,
    /// Peak tensor memory of the backend, and of the process during this measurement.
    pub peak_memory_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    /// GPU, batch packing: the counted cost of a batch.
    pub counted: Option<Counted>,
    /// The check against the plaintext reference.
    pub checked_samples: usize,
    pub argmax_agreement: f64,
    pub disagreements_beyond_ties: usize,
    pub max_logit_error: f64,
    /// The full `bench model` report it was made from.
    pub detail: serde_json::Value,
}

/// A measurement that failed (the others are kept).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Failure {
    pub label: String,
    pub packing: String,
    pub error: String,
}

/// The document `bench compare` writes and `bench report` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct CompareDoc {
    /// Always [`KIND`].
    pub kind: String,
    pub version: u32,
    pub cryptodl_version: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    pub command: String,
    pub machine: Machine,
    pub model: String,
    pub insecure: bool,
    pub noisy_threshold: f64,
    pub measurements: Vec<Measurement>,
    #[serde(default)]
    pub failures: Vec<Failure>,
}

/// Where one measurement runs.
struct Target {
    label: String,
    /// `None`: the CPU.
    adapter: Option<AdapterInfo>,
    threads: usize,
}

/// Runs `cryptodl bench compare`.
pub(super) fn run(args: CompareArgs) -> anyhow::Result<()> {
    if !(args.noisy > 0.0 && args.noisy.is_finite()) {
        anyhow::bail!(
            "--noisy {} must be a positive fraction, e.g. 0.1 for 10%",
            args.noisy
        );
    }
    let model = match &args.model {
        Some(p) => Model::load(p)?,
        None => Model::demo()?,
    };
    let plan = Plan::compile(&model)?;
    let quiet = args.json;
    let params_of = |latency: bool| -> anyhow::Result<Parameters> {
        let p = parameters_for(&plan, args.preset.as_deref(), latency, args.insecure, quiet)?;
        plan.check_depth(p.name(), p.max_level())?;
        Ok(p)
    };
    let mut packings = args.packing.clone();
    packings.dedup();
    let params: Vec<(Packing, Parameters)> = packings
        .iter()
        .map(|&p| Ok((p, params_of(p == Packing::Latency)?)))
        .collect::<anyhow::Result<_>>()?;
    for (_, p) in &params {
        warn_insecure(p, quiet);
    }

    let machine = Machine::this();
    let targets = targets(&args, &machine)?;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => Path::new("benches/results")
            .join(&machine.name)
            .join(format!(
                "compare-{}-{}.json",
                slug(&model.name),
                stamp(now())
            ))
            .to_path_buf(),
    };
    let mut reads = ReadSet::new();
    if let Some(m) = &args.model {
        reads.file(m, "--model");
    }
    reads.check_output(&out, "--out")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {} for the results: {e} (choose another place with --out)",
                dir.display()
            )
        })?;
    }

    let mut in_flight: Vec<usize> = args.in_flight.iter().map(|&k| k as usize).collect();
    in_flight.sort_unstable();
    in_flight.dedup();
    let total = targets.len() * params.len();
    let mut doc = CompareDoc {
        kind: KIND.to_string(),
        version: VERSION,
        cryptodl_version: env!("CARGO_PKG_VERSION").to_string(),
        created: iso(now()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        model: model.name.clone(),
        insecure: params.iter().any(|(_, p)| p.is_insecure()),
        noisy_threshold: args.noisy,
        measurements: Vec::new(),
        failures: Vec::new(),
    };
    let mut i = 0;
    for (packing, p) in &params {
        for t in &targets {
            i += 1;
            let pack = packing_name(*packing);
            if !quiet {
                eprintln!(
                    "[{i}/{total}] {} packing on {} at {}{}",
                    pack,
                    t.label,
                    p.name(),
                    if t.adapter.as_ref().is_some_and(|a| a.software) {
                        " (software rendering: not GPU speed)"
                    } else {
                        ""
                    }
                );
            }
            match measure(&args, &model, p, *packing, t, &in_flight) {
                Ok(m) => {
                    if !quiet && m.disagreements_beyond_ties > 0 {
                        eprintln!(
                            "  WARNING: {} of {} samples predicted otherwise than the plaintext reference",
                            m.disagreements_beyond_ties, m.checked_samples
                        );
                    }
                    doc.measurements.push(m)
                }
                Err(e) => {
                    if !quiet {
                        eprintln!("  failed: {e:#}");
                    }
                    doc.failures.push(Failure {
                        label: t.label.clone(),
                        packing: pack.to_string(),
                        error: format!("{e:#}"),
                    });
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&doc)?;
    crate::io::write_bytes_atomic(&out, text.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e} ({})",
            out.display(),
            crate::io::write_advice(&e)
        )
    })?;
    if args.json {
        print_json(&doc)?;
    } else {
        print_compare(&doc);
        println!("written: {}", out.display());
    }
    if !doc.failures.is_empty() {
        anyhow::bail!(
            "{} of {total} measurements failed (the others are in {})",
            doc.failures.len(),
            out.display()
        );
    }
    Ok(())
}

fn packing_name(p: Packing) -> &'static str {
    match p {
        Packing::Batch => "batch",
        Packing::Latency => "latency",
    }
}

/// The CPU at every thread count, then the adapters `--backends` names.
fn targets(args: &CompareArgs, machine: &Machine) -> anyhow::Result<Vec<Target>> {
    let cores = machine.cores;
    let mut threads: Vec<usize> = if args.threads.is_empty() {
        let mut t: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
            .take_while(|&t| t < cores)
            .collect();
        t.push(cores);
        t
    } else {
        args.threads.iter().map(|&t| t as usize).collect()
    };
    threads.sort_unstable();
    threads.dedup();
    let has = |b: BackendChoice| args.backends.contains(&b);
    let mut out = Vec::new();
    if has(BackendChoice::Cpu) || has(BackendChoice::All) {
        for &t in &threads {
            out.push(Target {
                label: format!("cpu {t} thread{}", if t == 1 { "" } else { "s" }),
                adapter: None,
                threads: t,
            });
        }
    }
    let gpu = |a: &AdapterInfo| Target {
        label: format!(
            "gpu {}{}",
            a.name,
            if a.software { " (software)" } else { "" }
        ),
        adapter: Some(a.clone()),
        threads: cores,
    };
    if has(BackendChoice::All) {
        out.extend(machine.adapters.iter().map(gpu));
    } else if has(BackendChoice::Gpu) {
        // The adapter the runtime would choose, or the one `--adapter` names.
        let rt = open_gpu(args.adapter.as_deref(), None)?;
        let name = rt.adapter().name.clone();
        let a = machine
            .adapters
            .iter()
            .find(|a| a.name == name)
            .cloned()
            .unwrap_or_else(|| AdapterInfo::of(rt.adapter()));
        out.push(gpu(&a));
    }
    if out.is_empty() {
        anyhow::bail!("--backends names nothing to measure: give cpu, gpu or all");
    }
    Ok(out)
}

/// One measurement of `packing` on `t`, summarised from the `bench model` report.
fn measure(
    args: &CompareArgs,
    model: &Model,
    params: &Parameters,
    packing: Packing,
    t: &Target,
    in_flight: &[usize],
) -> anyhow::Result<Measurement> {
    let device = match &t.adapter {
        None => Device::Cpu,
        // The exact name: a substring could pick another adapter.
        Some(a) => Device::Gpu(open_gpu(Some(&a.name), None)?),
    };
    let (pool, threads) = thread_pool(Some(t.threads as u32))?;
    // More batches in flight than the pool has threads run one after another: no new point.
    let in_flight: Vec<usize> = in_flight
        .iter()
        .copied()
        .filter(|&k| k <= threads)
        .collect();
    let in_flight = &in_flight[..];
    reset_peak_rss();
    let quiet = args.json;
    let detail = match packing {
        Packing::Batch => {
            let b = BatchBench {
                model,
                params,
                batches: args.batches as usize,
                in_flight,
                roofline: &args.roofline,
                counts_only: false,
                quiet,
            };
            let r = pool.install(|| measure_batch(&b, device, threads, &pool))?;
            serde_json::to_value(&r)?
        }
        Packing::Latency => {
            let images = Images::random(model, args.images as usize);
            let r = pool.install(|| run_latency(model, params, device, threads, &images, quiet))?;
            serde_json::to_value(&r)?
        }
    };
    let peak_rss = peak_rss_bytes();
    summarise(args, t, packing, params, detail, peak_rss)
}

/// The fields of a `bench model` report a measurement reads (batch or latency packing).
#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    batch_seconds_all: Option<Vec<f64>>,
    #[serde(default)]
    latency_seconds_all: Option<Vec<f64>>,
    #[serde(default)]
    layers: Vec<DetailStep>,
    #[serde(default)]
    ops: Vec<DetailOp>,
    #[serde(default)]
    in_flight: Vec<DetailInFlight>,
    #[serde(default)]
    counted: Option<DetailCounted>,
    peak_memory_bytes: u64,
    #[serde(default)]
    checked_samples: Option<usize>,
    #[serde(default)]
    samples: Option<usize>,
    argmax_agreement: f64,
    disagreements_beyond_ties: usize,
    max_logit_error: f64,
}

#[derive(Deserialize)]
struct DetailStep {
    step: usize,
    kind: String,
    seconds: f64,
}

#[derive(Deserialize)]
struct DetailOp {
    kind: String,
    seconds: f64,
}

#[derive(Deserialize)]
struct DetailInFlight {
    batches_in_flight: usize,
    predictions_per_hour: f64,
}

#[derive(Deserialize)]
struct DetailCounted {
    total: DetailCost,
    predicted_batch_seconds: f64,
    predicted_floor_batch_seconds: f64,
}

#[derive(Deserialize)]
struct DetailCost {
    bytes: u64,
    mults: u64,
    floor_bytes: u64,
    floor_mults: u64,
}

fn summarise(
    args: &CompareArgs,
    t: &Target,
    packing: Packing,
    params: &Parameters,
    detail: serde_json::Value,
    peak_rss_bytes: Option<u64>,
) -> anyhow::Result<Measurement> {
    let d: Detail = serde_json::from_value(detail.clone())?;
    let (seconds_all, images_per_repeat, steps) = match packing {
        Packing::Batch => (
            d.batch_seconds_all.unwrap_or_default(),
            d.batch_size.unwrap_or(1),
            d.layers
                .iter()
                .map(|s| StepTime {
                    name: format!("{} {}", s.step, s.kind),
                    seconds: s.seconds,
                })
                .collect::<Vec<_>>(),
        ),
        Packing::Latency => (
            d.latency_seconds_all.unwrap_or_default(),
            1,
            d.ops
                .iter()
                .enumerate()
                .map(|(i, o)| StepTime {
                    name: format!("{i} {}", o.kind),
                    seconds: o.seconds,
                })
                .collect(),
        ),
    };
    anyhow::ensure!(!seconds_all.is_empty(), "the measurement timed nothing");
    let med = median(seconds_all.clone());
    let min = seconds_all.iter().copied().fold(f64::INFINITY, f64::min);
    let max = seconds_all.iter().copied().fold(0.0, f64::max);
    let spread = (max - min) / med.max(f64::MIN_POSITIVE);
    let images_per_hour = images_per_repeat as f64 / med.max(f64::MIN_POSITIVE) * 3600.0;
    let mut in_flight = Vec::new();
    if packing == Packing::Batch {
        in_flight.push(InFlightPoint {
            batches_in_flight: 1,
            images_per_hour,
        });
        in_flight.extend(d.in_flight.iter().map(|f| InFlightPoint {
            batches_in_flight: f.batches_in_flight,
            images_per_hour: f.predictions_per_hour,
        }));
    }
    let counted = d.counted.map(|c| Counted {
        bytes: c.total.bytes,
        mults: c.total.mults,
        floor_bytes: c.total.floor_bytes,
        floor_mults: c.total.floor_mults,
        roofline: args.roofline.name.clone(),
        bytes_per_second: args.roofline.bytes_per_second,
        mults_per_second: args.roofline.mults_per_second,
        predicted_seconds: c.predicted_batch_seconds,
        predicted_floor_seconds: c.predicted_floor_batch_seconds,
    });
    Ok(Measurement {
        label: t.label.clone(),
        backend: if t.adapter.is_some() { "gpu" } else { "cpu" }.to_string(),
        adapter: t.adapter.as_ref().map(|a| a.name.clone()),
        software: t.adapter.as_ref().is_some_and(|a| a.software),
        threads: t.threads,
        packing: packing_name(packing).to_string(),
        preset: params.name().to_string(),
        images_per_repeat,
        seconds_median: med,
        seconds_min: min,
        seconds_max: max,
        spread,
        noisy: spread > args.noisy,
        images_per_hour,
        in_flight,
        steps,
        peak_memory_bytes: d.peak_memory_bytes,
        peak_rss_bytes,
        counted,
        checked_samples: d.checked_samples.or(d.samples).unwrap_or(0),
        argmax_agreement: d.argmax_agreement,
        disagreements_beyond_ties: d.disagreements_beyond_ties,
        max_logit_error: d.max_logit_error,
        seconds_all,
        detail,
    })
}

fn print_compare(doc: &CompareDoc) {
    let m = &doc.machine;
    println!(
        "{} on {} ({}, {} cores{}){}",
        doc.model,
        m.name,
        m.cpu_model,
        m.cores,
        m.memory_bytes
            .map(|b| format!(", {:.0} GB", b as f64 / 1e9))
            .unwrap_or_default(),
        if doc.insecure {
            " INSECURE presets"
        } else {
            ""
        }
    );
    let w = doc
        .measurements
        .iter()
        .map(|x| x.label.len())
        .chain(std::iter::once(24))
        .max()
        .unwrap_or(24);
    println!(
        "{:<8} {:<w$} {:>8} {:>12} {:>12} {:>9} {:>14} {:>9} {:>8}",
        "packing",
        "on",
        "preset",
        "median s",
        "min..max s",
        "spread",
        "images/hour",
        "peak GB",
        "checked"
    );
    for x in &doc.measurements {
        println!(
            "{:<8} {:<w$} {:>8} {:>12.4} {:>12} {:>8.1}%{} {:>14.0} {:>9.2} {:>7.1}%",
            x.packing,
            x.label,
            x.preset,
            x.seconds_median,
            format!("{:.3}..{:.3}", x.seconds_min, x.seconds_max),
            100.0 * x.spread,
            if x.noisy { "!" } else { " " },
            x.images_per_hour,
            x.peak_memory_bytes as f64 / 1e9,
            100.0 * x.argmax_agreement
        );
        for f in x.in_flight.iter().skip(1) {
            println!(
                "{:<8} {:<w$} {:>8} {:>12} {:>12} {:>9} {:>14.0}",
                "",
                format!("  {} batches in flight", f.batches_in_flight),
                "",
                "",
                "",
                "",
                f.images_per_hour
            );
        }
    }
    if doc.measurements.iter().any(|x| x.noisy) {
        println!(
            "! noisy: the repeats spread more than {:.0}% around their median (a shared or busy machine); measure again before quoting",
            100.0 * doc.noisy_threshold
        );
    }
    if doc.measurements.iter().any(|x| x.software) {
        println!(
            "(software) adapters rasterize on the CPU (lavapipe): their times say nothing about GPU speed"
        );
    }
    for f in &doc.failures {
        println!("FAILED: {} packing on {}: {}", f.packing, f.label, f.error);
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(year, month, day, hour, minute, second)` of Unix time `t` (UTC; Howard Hinnant's
/// days-to-civil).
fn civil(t: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (t / 86_400) as i64;
    let secs = (t % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn iso(t: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `YYYYMMDD-HHMMSS` (file names).
fn stamp(t: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(stamp(1_796_490_061), "20261205-170101");
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("llvmpipe (LLVM 15.0.6, 256 bits)"),
            "llvmpipe-llvm-15-0-6-256-bits"
        );
        assert_eq!(slug("NVIDIA H200"), "nvidia-h200");
    }
}
