//! `cryptodl score` (server: a shard of a job's batches, on one or several devices, resumable,
//! shareable between workers on one output directory) and `cryptodl status` (done / missing /
//! running / damaged batches, and what each worker did).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::output::bar;
use super::output::print_json;
use super::server::ServerArgs;
use super::warn_insecure;
use crate::backend::gpu::{list_adapters, AdapterChoice, GpuRuntime};
use crate::ckks::Context;
use crate::sched::job::Manifest;
use crate::sched::scoring::{BatchState, JobFiles, JobScorer, ServerJob};
use crate::sched::shard::Shard;
use crate::sched::worker::{hostname, work, Queue, Tally, WorkerReport};
use crate::sched::worklog::{read_logs, summarize, WorkerSummary};
use crate::sched::{Device, Session};

/// The most workers `--devices` may start in one process.
const MAX_DEVICES: usize = 64;

/// Arguments of `cryptodl score`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Checks the evaluation keys, the model and every batch against the job's manifest, and refuses \
what belongs to another key set, model or job. Writes SCORED/logits-00000.cts ... (each \
atomically, under a per-batch lock), a copy of the manifest, and SCORED/logs/WORKER.jsonl \
(one JSON line per batch scored; `cryptodl status` sums them).

A re-run skips the batches of this job already scored, so an interrupted run resumes. Any \
number of workers, on one machine or many sharing the directory, may score one job at once: \
each batch is scored once. Split a job between N workers with --shard 1/N ... N/N (batch i \
goes to shard i mod N + 1), e.g. a Slurm job array or a Kubernetes Indexed Job \
(examples/slurm, examples/kubernetes).

Examples:
  cryptodl score --model m.safetensors --eval-keys keys/eval.keys --in enc --out scored
  cryptodl score ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT --backend auto
  cryptodl score ... --devices all          # one worker per GPU of this machine
  cryptodl score ... --devices cpu,gpu:1    # the CPU and adapter 1 of `cryptodl devices`")]
pub struct ScoreArgs {
    /// The model (polynomial activations of degree 2 or 3): the very one the job was encrypted for.
    #[arg(long)]
    model: PathBuf,
    /// The evaluation keys (`eval.keys` from `cryptodl keygen`); no secret key is needed.
    #[arg(long)]
    eval_keys: PathBuf,
    /// Directory written by `cryptodl encrypt`.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output directory for the client (created if missing); batches of this job already scored
    /// there are skipped, so a re-run resumes.
    #[arg(long)]
    out: PathBuf,
    /// Score only shard K of N (K from 1 to N): batch i belongs to shard i mod N + 1.
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    shard: Shard,
    /// One worker per device, sharing the shard's batches: `all` (every GPU adapter that is not
    /// a software rasterizer), or a comma list of `cpu`, `gpu` (the best adapter) and `gpu:N`
    /// (adapter N of `cryptodl devices`). Replaces --backend / --adapter.
    #[arg(long, value_name = "all|LIST", conflicts_with_all = ["backend", "adapter"])]
    devices: Option<String>,
    /// Batches in flight per device: that many workers share each device's session (keys
    /// uploaded once), so one's files are read, decoded and uploaded while the device computes
    /// another's. 2 keeps a GPU busy while the host does its part; each batch in flight holds
    /// its own device memory (`bench model` prints a batch's peak). Batch packing: in latency
    /// packing every operation still waits for the device.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    in_flight: u32,
    /// Score again the batches whose logits are damaged on disk (without it, `score` stops at
    /// the first one and says so; `cryptodl status` lists them).
    #[arg(long)]
    rescore_corrupt: bool,
    #[command(flatten)]
    server: ServerArgs,
    /// Accept files made with presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ScoreReport {
    job: String,
    model: String,
    preset: String,
    insecure: bool,
    shard: String,
    /// Batches in the whole job.
    batches: usize,
    /// Batches in this shard.
    shard_batches: usize,
    #[serde(flatten)]
    total: Tally,
    wall_s: f64,
    workers: Vec<WorkerReport>,
    out: PathBuf,
}

/// The devices `--devices` names (at least one).
fn parse_devices(list: &str) -> anyhow::Result<Vec<Device>> {
    let list = list.trim();
    if list.eq_ignore_ascii_case("all") {
        let hardware: Vec<usize> = list_adapters()
            .iter()
            .enumerate()
            .filter(|(_, a)| a.device_type != "Cpu")
            .map(|(i, _)| i)
            .collect();
        if hardware.is_empty() {
            bail!(
                "--devices all: no GPU adapter other than software rasterizers (`cryptodl devices` \
                 lists them); name devices with --devices cpu or gpu:N"
            );
        }
        return hardware
            .into_iter()
            .map(|i| {
                Ok(Device::Gpu(Arc::new(GpuRuntime::new(
                    &AdapterChoice::Index(i),
                )?)))
            })
            .collect();
    }
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().any(|s| s.is_empty()) || items.len() > MAX_DEVICES {
        bail!("--devices {list:?}: give `all` or a comma list of 1 to {MAX_DEVICES} devices (cpu, gpu, gpu:N)");
    }
    items
        .into_iter()
        .map(|item| {
            let lower = item.to_ascii_lowercase();
            Ok(match lower.as_str() {
                "cpu" => Device::Cpu,
                "gpu" => Device::Gpu(
                    GpuRuntime::open(&AdapterChoice::from_env())
                        .context("--devices gpu needs a GPU adapter (see `cryptodl devices`)")?,
                ),
                _ => {
                    let index = lower
                        .strip_prefix("gpu:")
                        .and_then(|n| n.parse::<usize>().ok())
                        .with_context(|| {
                            format!(
                                "--devices: `{item}` is not a device; use cpu, gpu, gpu:N (N from \
                                 `cryptodl devices`) or all"
                            )
                        })?;
                    Device::Gpu(Arc::new(GpuRuntime::new(&AdapterChoice::Index(index))?))
                }
            })
        })
        .collect()
}

/// Runs `cryptodl score` (server side).
pub fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let (job, keys) = ServerJob::open(&args.input, &args.model, &args.eval_keys, args.insecure)?;
    let ServerJob {
        manifest,
        params,
        ctx,
        model,
        ..
    } = &job;
    warn_insecure(params, args.json);
    // The files this run writes (logits, under --out) never replace what it reads.
    job.check_outputs(
        &args.model,
        &args.eval_keys,
        &args.out,
        args.shard.batches(manifest.batches.len()),
    )?;
    let devices = match &args.devices {
        Some(list) => parse_devices(list)?,
        None => vec![args.server.device()?],
    };
    let scorer = JobScorer::new(job.files(&args.out), job.scoring(), args.rescore_corrupt)?
        .with_in_flight(args.in_flight > 1);
    let batches: Vec<usize> = args.shard.batches(manifest.batches.len()).collect();
    let bar = bar(batches.len(), "score: batches", args.json);
    let tick = || bar.inc(1);
    let queue = Queue::new(&batches, &tick);
    let host = hostname();
    let pid = std::process::id();
    // One session per device (its keys uploaded once), built in parallel; `--in-flight`
    // workers on each.
    let sessions: Vec<anyhow::Result<Session>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .map(|device| {
                let (keys, ctx) = (&keys, ctx.clone());
                s.spawn(move || Ok(Session::new(device, ctx, keys)?))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a session panicked")))
            })
            .collect()
    });
    let sessions = sessions.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    drop(keys);
    let in_flight = args.in_flight as usize;
    let results: Vec<anyhow::Result<WorkerReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .iter()
            .flat_map(|session| std::iter::repeat_n(session, in_flight))
            .enumerate()
            .map(|(k, session)| {
                let (scorer, queue) = (&scorer, &queue);
                let worker = format!("{host}-{pid}-{k}");
                let shard = args.shard.to_string();
                s.spawn(move || Ok(work(scorer, queue, session, worker, &shard)?))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut workers = Vec::new();
    for r in results {
        workers.push(r?);
    }
    let report = ScoreReport {
        job: manifest.job.clone(),
        model: model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        shard: args.shard.to_string(),
        batches: manifest.batches.len(),
        shard_batches: batches.len(),
        total: workers.iter().fold(Tally::default(), |t, w| t + w.tally),
        wall_s: t0.elapsed().as_secs_f64(),
        workers,
        out: args.out.clone(),
    };
    if args.json {
        return print_json(&report);
    }
    let devices: Vec<&str> = report.workers.iter().map(|w| w.device.as_str()).collect();
    println!(
        "scored {} batch(es) ({} images{}) of shard {} in {:.1} s on {}{}; {} already done{}; logits in {}",
        report.total.scored,
        report.total.images,
        if report.total.rescored > 0 {
            format!(", {} over damaged logits", report.total.rescored)
        } else {
            String::new()
        },
        report.shard,
        report.wall_s,
        devices.join(" + "),
        if report.insecure {
            " (INSECURE preset)"
        } else {
            ""
        },
        report.total.skipped,
        if report.total.busy > 0 {
            format!(", {} being scored by another worker", report.total.busy)
        } else {
            String::new()
        },
        args.out.display()
    );
    if report.workers.len() > 1 {
        for w in &report.workers {
            println!(
                "  {}: {} batch(es), {} images, {:.1} s scoring",
                w.device, w.tally.scored, w.tally.images, w.tally.server_s
            );
        }
    }
    Ok(())
}

/// Arguments of `cryptodl status`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Reads every logits file (checksum, job, batch, model, key set) and each worker's log. A batch \
is done, missing (run `score` again: it resumes), running (a worker holds its lock), damaged \
(`score --rescore-corrupt` scores it again) or foreign (logits of another job: move it away). \
The exit status is 0 whenever the report could be made; `complete` in --json says whether \
every batch is done.")]
pub struct StatusArgs {
    /// Directory written by `cryptodl encrypt` (its manifest).
    #[arg(long = "in")]
    input: PathBuf,
    /// The output directory of `cryptodl score`.
    #[arg(long)]
    out: PathBuf,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct BatchReport {
    batch: usize,
    #[serde(flatten)]
    state: BatchState,
}

#[derive(Serialize)]
struct StatusReport {
    job: String,
    model: String,
    preset: String,
    insecure: bool,
    batches: usize,
    done: usize,
    missing: usize,
    running: usize,
    damaged: usize,
    foreign: usize,
    complete: bool,
    /// Every batch that is not done.
    pending: Vec<BatchReport>,
    workers: Vec<WorkerSummary>,
    /// Log lines that could not be read (a worker killed mid-line).
    unreadable_log_lines: usize,
}

/// Runs `cryptodl status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (manifest, params) = Manifest::read(&args.input, true)?;
    if let Ok((existing, _)) = Manifest::read(&args.out, true) {
        if existing.job != manifest.job {
            bail!(
                "{} holds the logits of another job ({}, not {})",
                args.out.display(),
                existing.job,
                manifest.job
            );
        }
    }
    let ctx = Context::new(&params)?;
    let files = JobFiles {
        manifest: &manifest,
        params: &params,
        ctx: &ctx,
        input: &args.input,
        out: &args.out,
    };
    let b = bar(manifest.batches.len(), "status: batches", args.json);
    let mut pending = Vec::new();
    let mut done = 0;
    for batch in 0..manifest.batches.len() {
        b.inc(1);
        match files.state(batch) {
            BatchState::Done => done += 1,
            state => pending.push(BatchReport { batch, state }),
        }
    }
    b.finish_and_clear();
    let count = |f: fn(&BatchState) -> bool| pending.iter().filter(|p| f(&p.state)).count();
    let (records, unreadable) = read_logs(&args.out)
        .with_context(|| format!("cannot read the worker logs under {}", args.out.display()))?;
    let report = StatusReport {
        job: manifest.job.clone(),
        model: manifest.model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        batches: manifest.batches.len(),
        done,
        missing: count(|s| matches!(s, BatchState::Missing)),
        running: count(|s| matches!(s, BatchState::Running)),
        damaged: count(|s| matches!(s, BatchState::Damaged { .. })),
        foreign: count(|s| matches!(s, BatchState::Foreign { .. })),
        complete: pending.is_empty(),
        pending,
        workers: summarize(&records),
        unreadable_log_lines: unreadable,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "job {} ({} on {}{}): {} batch(es): {} done, {} missing, {} running, {} damaged, {} foreign",
        report.job,
        report.model,
        report.preset,
        if report.insecure { ", INSECURE" } else { "" },
        report.batches,
        report.done,
        report.missing,
        report.running,
        report.damaged,
        report.foreign
    );
    for p in &report.pending {
        match &p.state {
            BatchState::Damaged { reason } => println!("  batch {}: damaged: {reason}", p.batch),
            BatchState::Foreign { reason } => println!("  batch {}: foreign: {reason}", p.batch),
            BatchState::Running => println!("  batch {}: running", p.batch),
            _ => {}
        }
    }
    if report.missing > 0 {
        let list: Vec<String> = report
            .pending
            .iter()
            .filter(|p| p.state == BatchState::Missing)
            .map(|p| p.batch.to_string())
            .collect();
        let shown = list.len().min(20);
        println!(
            "  missing: {}{}",
            list[..shown].join(", "),
            if list.len() > shown { ", ..." } else { "" }
        );
    }
    if !report.workers.is_empty() {
        println!(
            "{:<32} {:<28} {:>7} {:>8} {:>9} {:>9} {:>10}  state",
            "worker", "device", "shard", "batches", "images", "scoring", "images/s"
        );
        for w in &report.workers {
            println!(
                "{:<32} {:<28} {:>7} {:>8} {:>9} {:>8.1}s {:>10.0}  {}",
                w.worker,
                w.device,
                w.shard,
                w.batches,
                w.images,
                w.scoring_seconds,
                w.images_per_second,
                match (&w.error, w.finished) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => "finished".to_string(),
                    (None, false) => "running or killed".to_string(),
                }
            );
        }
    }
    if report.unreadable_log_lines > 0 {
        println!(
            "({} log line(s) could not be read: cut by a killed worker)",
            report.unreadable_log_lines
        );
    }
    if report.complete {
        println!("complete: `cryptodl decrypt --in {}`", args.out.display());
    } else if report.damaged > 0 {
        println!("next: `cryptodl score ... --rescore-corrupt` scores the damaged batches again");
    } else if report.missing > 0 {
        println!("next: run `cryptodl score` again (it resumes)");
    }
    Ok(())
}
