//! Latency packing on the command line: `cryptodl plan` (what a model costs in either
//! packing), and the per-image scoring `infer` / `demo` / `bench model` run with
//! `--packing latency`.

use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::output::bar;
use super::output::median;
use super::output::print_json;
use super::server::Packing;
use crate::ckks::{Context, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters};
use crate::nn::dataset::Dataset;
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::latency::{LatencyPlan, OpCounts};
use crate::sched::{Device, Plan, Session, StepStats};

/// Arguments of `cryptodl plan`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Batch packing puts image s in slot s of every ciphertext (one ciphertext per input value): a \
batch of N/2 images costs what one costs. Latency packing puts one image across the slots of a \
few ciphertexts and moves values with rotations: one image costs milliseconds. This prints, for \
either, the levels, the ciphertexts per image or batch, and for latency packing every \
operation's rotations and multiplications, the rotations the evaluation keys must hold \
(`keygen --model M --packing latency` makes exactly those) and their size.

Examples:
  cryptodl plan --packing latency
  cryptodl plan --model cn.safetensors --preset n16384 --packing latency --json")]
pub struct PlanArgs {
    /// Model file (default: the embedded demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Parameter preset (default: the smallest 128-bit preset deep and wide enough).
    #[arg(long)]
    preset: Option<String>,
    /// Batch or latency packing.
    #[arg(long, value_enum, default_value = "latency")]
    packing: Packing,
    /// Accept presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PlanReport {
    model: String,
    preset: String,
    insecure: bool,
    packing: &'static str,
    slots: usize,
    levels_needed: usize,
    input_level: usize,
    /// Ciphertexts the client sends: per image (latency) or per batch of `slots` images.
    input_ciphertexts: usize,
    images_per_input: usize,
    ops: Vec<OpCounts>,
    rotations: Vec<i64>,
    galois_key_bytes: usize,
    /// Relinearization key plus every Galois key.
    evaluation_key_bytes: usize,
}

/// The parameters for `plan`: `preset` if given, else the smallest 128-bit preset that fits
/// (said on stderr unless `quiet`).
pub(super) fn parameters_for(
    plan: &Plan,
    preset: Option<&str>,
    latency: bool,
    insecure: bool,
    quiet: bool,
) -> anyhow::Result<Parameters> {
    let (params, chosen) = crate::sched::parameters_for(plan, preset, latency, insecure)?;
    if chosen && !quiet {
        eprintln!(
            "preset {}: the smallest 128-bit preset deep{} enough for model `{}` (--preset to choose)",
            params.name(),
            if latency { " and wide" } else { "" },
            plan.model
        );
    }
    Ok(params)
}

/// Runs `cryptodl plan`.
pub fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(p) => Model::load(p)?,
        None => Model::demo()?,
    };
    let plan = Plan::compile(&model)?;
    let latency = args.packing == Packing::Latency;
    let params = parameters_for(&plan, args.preset.as_deref(), latency, args.insecure, true)?;
    plan.check_depth(params.name(), params.max_level())?;
    let key = LatencyPlan::galois_key_bytes(&params);
    let report = if latency {
        let lp = LatencyPlan::compile(&plan, &params)?;
        let rotations = lp.rotations();
        PlanReport {
            model: model.name.clone(),
            preset: params.name().to_string(),
            insecure: params.is_insecure(),
            packing: "latency",
            slots: lp.slots,
            levels_needed: lp.levels_needed,
            input_level: lp.input_level,
            input_ciphertexts: lp.input_ciphertexts(),
            images_per_input: 1,
            ops: lp.counts(),
            galois_key_bytes: key,
            evaluation_key_bytes: key * (1 + rotations.len()),
            rotations,
        }
    } else {
        PlanReport {
            model: model.name.clone(),
            preset: params.name().to_string(),
            insecure: params.is_insecure(),
            packing: "batch",
            slots: params.slots(),
            levels_needed: plan.levels_needed(),
            input_level: plan.input_level(),
            input_ciphertexts: plan.inputs,
            images_per_input: params.slots(),
            ops: Vec::new(),
            galois_key_bytes: key,
            evaluation_key_bytes: key,
            rotations: Vec::new(),
        }
    };
    if args.json {
        return print_json(&report);
    }
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "{} in {} packing at {}{}: {} levels (inputs at level {}), {} ciphertext(s) in per {}",
        report.model,
        report.packing,
        report.preset,
        if report.insecure { " (INSECURE)" } else { "" },
        report.levels_needed,
        report.input_level,
        report.input_ciphertexts,
        if latency {
            "image".to_string()
        } else {
            format!("batch of {} images", report.images_per_input)
        }
    );
    if latency {
        println!(
            "{:<4} {:<9} {:>7} {:>7} {:>8} {:>9} {:>11} {:>12} {:>6}",
            "op",
            "kind",
            "in",
            "out",
            "hoisted",
            "rotations",
            "plain mults",
            "cipher mults",
            "levels"
        );
        for (i, o) in report.ops.iter().enumerate() {
            println!(
                "{:<4} {:<9} {:>7} {:>7} {:>8} {:>9} {:>11} {:>12} {:>6}",
                i,
                o.kind,
                o.inputs,
                o.outputs,
                o.hoisted_rotations,
                o.rotations,
                o.plain_mults,
                o.cipher_mults,
                o.levels
            );
        }
        println!(
            "rotations ({}): {:?}",
            report.rotations.len(),
            report.rotations
        );
    }
    println!(
        "evaluation keys: {:.1} MB ({} Galois key(s) of {:.1} MB + relinearization)",
        mb(report.evaluation_key_bytes),
        report.rotations.len(),
        mb(report.galois_key_bytes)
    );
    Ok(())
}

/// One operation in a latency report: its counts and its median time.
#[derive(Serialize)]
pub(super) struct OpReport {
    #[serde(flatten)]
    counts: OpCounts,
    seconds: f64,
    launches: u64,
}

/// What latency packing measured on a set of images.
#[derive(Serialize)]
pub(super) struct LatencyReport {
    model: String,
    dataset: String,
    preset: String,
    insecure: bool,
    packing: &'static str,
    backend: String,
    adapter: Option<String>,
    threads: usize,
    samples: usize,
    input_ciphertexts: usize,
    rotations: usize,
    /// What the client sends once: relinearization and Galois keys.
    evaluation_key_bytes: usize,
    /// Median server time of one image (upload, every operation, download).
    latency_seconds: f64,
    latency_seconds_all: Vec<f64>,
    images_per_hour: f64,
    /// Server, once per session and model: key upload, plaintext encoding and upload.
    key_upload_seconds: f64,
    prepare_seconds: f64,
    /// Client, per image (median).
    encrypt_seconds: f64,
    decrypt_seconds: f64,
    ops: Vec<OpReport>,
    encrypted_accuracy: Option<f64>,
    reference_accuracy: Option<f64>,
    argmax_agreement: f64,
    disagreements_beyond_ties: usize,
    max_logit_error: f64,
    peak_memory_bytes: u64,
}

/// Images to score one by one: normalised inputs and, for a dataset, their labels.
pub(super) struct Images {
    pub name: String,
    pub inputs: Vec<Vec<f64>>,
    pub labels: Option<Vec<u8>>,
}

impl Images {
    /// The first images of a dataset.
    pub fn dataset(model: &Model, name: &str, d: &Dataset) -> Self {
        Images {
            name: name.to_string(),
            inputs: (0..d.len())
                .map(|i| reference::normalize(model, d.image(i)))
                .collect(),
            labels: Some(d.labels.clone()),
        }
    }

    /// `n` random images (uniform pixels).
    pub fn random(model: &Model, n: usize) -> Self {
        let [c, h, w] = model.input;
        let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
        Images {
            name: "random".into(),
            inputs: (0..n)
                .map(|_| {
                    let p: Vec<u8> = (0..c * h * w).map(|_| rng.random()).collect();
                    reference::normalize(model, &p)
                })
                .collect(),
            labels: None,
        }
    }
}

/// Scores `images` one by one in latency packing on `device`, after one warm-up image (not
/// timed, not counted): client keys with exactly the plan's rotations, encryption per image,
/// the server with evaluation keys only, decryption and comparison with the reference.
pub(super) fn run_latency(
    model: &Model,
    params: &Parameters,
    device: Device,
    threads: usize,
    images: &Images,
    quiet: bool,
) -> anyhow::Result<LatencyReport> {
    let plan = Plan::compile(model)?;
    let lp = LatencyPlan::compile(&plan, params)?;
    plan.check_magnitudes(params, &images.inputs)?;
    let ctx = Context::new(params)?;
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rotations = lp.rotations();
    let keys = kg.evaluation_keys(&sk, &rotations, false)?;
    let t = Instant::now();
    let session = Session::new(device, ctx.clone(), &keys)?;
    let key_upload_seconds = t.elapsed().as_secs_f64();
    drop(keys);
    let t = Instant::now();
    session.prepare_latency(&lp)?;
    let prepare_seconds = t.elapsed().as_secs_f64();
    let enc = Encoder::new(ctx.clone());
    let dec = Decryptor::new(ctx.clone());
    let mut encryptor = Encryptor::new(ctx.clone());
    // Warm-up: the first image faults in the memory the others reuse.
    let warm = lp.encrypt_image(&enc, &mut encryptor, &pk, &images.inputs[0])?;
    session.score_latency(&lp, &warm)?;
    let b = bar(images.inputs.len(), "latency: images", quiet);
    let (mut enc_s, mut dec_s, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_op: Vec<Vec<StepStats>> = vec![Vec::new(); lp.ops.len()];
    let (mut agree, mut beyond, mut worst) = (0usize, 0usize, 0.0f64);
    let (mut correct, mut ref_correct) = (0usize, 0usize);
    for (i, x) in images.inputs.iter().enumerate() {
        let t = Instant::now();
        let cts = lp.encrypt_image(&enc, &mut encryptor, &pk, x)?;
        enc_s.push(t.elapsed().as_secs_f64());
        let scored = session.score_latency(&lp, &cts)?;
        lat.push(scored.stats.seconds);
        for (k, s) in scored.stats.steps.into_iter().enumerate() {
            per_op[k].push(s);
        }
        let t = Instant::now();
        let got = lp.decrypt_logits(&dec, &enc, &sk, &scored.logits)?;
        dec_s.push(t.elapsed().as_secs_f64());
        let want = reference::forward(model, x)?;
        let (g, w) = (reference::argmax(&got), reference::argmax(&want));
        agree += usize::from(g == w);
        beyond += usize::from(!reference::agrees(&want, &got));
        if let Some(l) = &images.labels {
            correct += usize::from(g == l[i] as usize);
            ref_correct += usize::from(w == l[i] as usize);
        }
        for (a, b) in want.iter().zip(&got) {
            worst = worst.max((a - b).abs());
        }
        b.inc(1);
    }
    b.finish_and_clear();
    let n = images.inputs.len();
    let counts = lp.counts();
    let ops = counts
        .into_iter()
        .zip(per_op)
        .map(|(c, stats)| OpReport {
            counts: c,
            seconds: median(stats.iter().map(|s| s.seconds).collect()),
            launches: stats.last().map_or(0, |s| s.launches),
        })
        .collect();
    let latency_seconds = median(lat.clone());
    let key = LatencyPlan::galois_key_bytes(params);
    Ok(LatencyReport {
        model: model.name.clone(),
        dataset: images.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        packing: "latency",
        backend: session.kind().to_string(),
        adapter: session.adapter(),
        threads,
        samples: n,
        input_ciphertexts: lp.input_ciphertexts(),
        rotations: rotations.len(),
        evaluation_key_bytes: key * (1 + rotations.len()),
        latency_seconds,
        latency_seconds_all: lat,
        images_per_hour: 3600.0 / latency_seconds,
        key_upload_seconds,
        prepare_seconds,
        encrypt_seconds: median(enc_s),
        decrypt_seconds: median(dec_s),
        ops,
        encrypted_accuracy: images.labels.as_ref().map(|_| correct as f64 / n as f64),
        reference_accuracy: images
            .labels
            .as_ref()
            .map(|_| ref_correct as f64 / n as f64),
        argmax_agreement: agree as f64 / n as f64,
        disagreements_beyond_ties: beyond,
        max_logit_error: worst,
        peak_memory_bytes: session.memory().peak_bytes,
    })
}

/// The human-readable latency report.
/// Scores `images` one at a time on this thread pool and prints the report (`demo`, `infer`).
pub(super) fn score_and_report(
    model: &Model,
    params: &Parameters,
    device: Device,
    images: &Images,
    json: bool,
) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let report = run_latency(model, params, device, threads, images, json)?;
    report_latency(&report, json)
}

/// Prints `report` as JSON or as a table.
pub(super) fn report_latency(report: &LatencyReport, json: bool) -> anyhow::Result<()> {
    if json {
        return super::output::print_json(report);
    }
    print_latency(report);
    Ok(())
}

fn print_latency(r: &LatencyReport) {
    println!(
        "{} in latency packing at {}{} on {}{} ({} thread(s)): {} image(s) of {}",
        r.model,
        r.preset,
        if r.insecure { " (INSECURE)" } else { "" },
        r.backend,
        r.adapter
            .as_ref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        r.threads,
        r.samples,
        r.dataset
    );
    println!(
        "  latency per image: {:.1} ms median (server: upload, {} operations, download); {:.0} images/hour",
        1e3 * r.latency_seconds,
        r.ops.len(),
        r.images_per_hour
    );
    println!(
        "  client: {} ciphertexts per image, encrypt {:.1} ms, decrypt {:.2} ms; evaluation keys {:.1} MB ({} rotations)",
        r.input_ciphertexts,
        1e3 * r.encrypt_seconds,
        1e3 * r.decrypt_seconds,
        r.evaluation_key_bytes as f64 / (1 << 20) as f64,
        r.rotations
    );
    println!(
        "{:<4} {:<9} {:>6} {:>6} {:>8} {:>9} {:>11} {:>12} {:>10}",
        "op", "kind", "in", "out", "hoisted", "rotations", "plain mults", "cipher mults", "ms"
    );
    for (i, o) in r.ops.iter().enumerate() {
        let c = &o.counts;
        println!(
            "{:<4} {:<9} {:>6} {:>6} {:>8} {:>9} {:>11} {:>12} {:>10.2}",
            i,
            c.kind,
            c.inputs,
            c.outputs,
            c.hoisted_rotations,
            c.rotations,
            c.plain_mults,
            c.cipher_mults,
            1e3 * o.seconds
        );
    }
    if let (Some(e), Some(p)) = (r.encrypted_accuracy, r.reference_accuracy) {
        println!(
            "  accuracy {:.2}% encrypted vs {:.2}% plaintext reference",
            100.0 * e,
            100.0 * p
        );
    }
    println!(
        "  same prediction as the plaintext reference on {:.2}% ({} differ beyond a near-tie); max |logit error| {:.2e}",
        100.0 * r.argmax_agreement,
        r.disagreements_beyond_ties,
        r.max_logit_error
    );
}
