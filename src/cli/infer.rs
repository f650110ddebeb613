//! `cryptodl infer`: the encrypted CNN end to end — the client encrypts a batch of test images,
//! the server runs the model over the ciphertexts with evaluation keys only, the client decrypts
//! the logits and compares them with the plaintext reference.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::latency;
use super::output::{bar, print_json};
use super::server::{Packing, ServerArgs};
use crate::ckks::serialize::{
    load_ciphertexts, load_evaluation_keys, save_ciphertexts, save_evaluation_keys, Content, JobId,
};
use crate::ckks::{Context, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters};
use crate::nn::dataset::{Dataset, DatasetKind};
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::job::Manifest;
use crate::sched::{self, Plan, Session};

/// Arguments of `cryptodl infer`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  cryptodl train --arch cryptonets --act poly2 --epochs 15 --out cn.safetensors\n  cryptodl infer --model cn.safetensors                    # 4096 test images at n8192 on the CPU\n  cryptodl infer --model cn.safetensors --backend gpu --limit 256 --json\n\nBatch packing: slot s of every ciphertext holds test image s, and pixel i of every image lives in\nciphertext i, so one run scores up to N/2 images. Each convolution / dense layer (composed where\nthey meet) and each degree-2 activation costs one level, a degree-3 activation two; the model is refused, naming a preset\nthat fits, if the preset is too shallow."
)]
pub struct InferArgs {
    /// Model file written by `cryptodl train` (polynomial activations of degree 2 or 3).
    #[arg(long)]
    model: PathBuf,
    /// Dataset (default: the one the model was trained on).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CKKS parameter preset (see `cryptodl params`; default: the smallest 128-bit preset deep
    /// enough for the model, and said).
    #[arg(long)]
    preset: Option<String>,
    /// Score the first N test images, in batches of N/2 (default: one batch; `--limit 10000` scores
    /// the whole Fashion-MNIST test set in 3 batches at n8192; at least 1).
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Batch packing (up to N/2 images per run: throughput) or latency packing (each image
    /// across a few ciphertexts, scored on its own: latency; default limit 100 images).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    #[command(flatten)]
    server: ServerArgs,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a report.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub(super) struct Timings {
    keygen_s: f64,
    encrypt_s: f64,
    server_s: f64,
    decrypt_s: f64,
}

/// What an encrypted scoring job measured.
#[derive(Serialize)]
pub(super) struct InferReport {
    model: String,
    dataset: String,
    preset: String,
    insecure: bool,
    backend: String,
    samples: usize,
    batches: usize,
    ciphertexts_in: usize,
    max_ciphertexts: usize,
    levels_used: usize,
    encrypted_accuracy: f64,
    reference_accuracy: f64,
    argmax_agreement: f64,
    /// Images whose encrypted argmax differs from the reference's beyond a near-tie
    /// ([`reference::TIE`]).
    disagreements_beyond_ties: usize,
    max_logit_error: f64,
    timings: Timings,
    predictions_per_hour_server: f64,
}

/// One encrypted scoring job: everything [`execute`] needs.
pub(super) struct Job<'a> {
    /// The model.
    pub model: &'a Model,
    /// CKKS parameters.
    pub params: Parameters,
    /// The images to score (at most one batch: N/2) with their labels.
    pub test: &'a Dataset,
    /// Dataset name (for the report).
    pub dataset: &'a str,
    /// Where the server runs.
    pub server: &'a ServerArgs,
    /// If set, the client and the server exchange keys and ciphertexts through files here
    /// (evaluation keys, input and output ciphertexts), as separate machines would.
    pub exchange_dir: Option<&'a Path>,
    /// No progress bars or notes on stderr.
    pub quiet: bool,
}

/// Runs a job: client keys and encryption, server evaluation (evaluation keys only), client
/// decryption and comparison with the plaintext reference.
pub(super) fn execute(job: &Job<'_>) -> anyhow::Result<InferReport> {
    let (model, params, test) = (job.model, &job.params, job.test);
    let plan = Plan::compile(model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let slots = params.slots();
    if test.is_empty() {
        anyhow::bail!("no images to classify");
    }
    plan.check_inputs(params, test.len(), |i| {
        reference::normalize(model, test.image(i))
    })?;
    let batches = test.len().div_ceil(slots);
    let quiet = job.quiet;
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    super::warn_insecure(params, quiet);
    say(format!(
        "{}: {} levels ({} for the layers + 1 of headroom) of {} at {} (inputs encrypted at level {}); {} images in {batches} batch(es) of up to {slots}; {} ciphertexts in, at most {} per layer",
        model.name,
        plan.levels_needed(),
        plan.depth(),
        params.max_level(),
        params.name(),
        plan.input_level(),
        test.len(),
        plan.inputs,
        plan.max_width()
    ));

    // Client: keys (relinearization only: batch packing needs no rotations).
    let ctx = Context::new(params)?;
    let t = Instant::now();
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false)?;
    let keygen_s = t.elapsed().as_secs_f64();
    // Client -> server: the evaluation keys (through a file if asked).
    let keys = match job.exchange_dir {
        Some(dir) => {
            let kp = dir.join("eval.keys");
            save_evaluation_keys(&kp, params, &keys)?;
            load_evaluation_keys(&kp, &ctx)?
        }
        None => keys,
    };
    // The job's identity, as `encrypt` would write it: files exchanged are labelled and checked.
    let batch_sizes: Vec<usize> = (0..batches)
        .map(|b| slots.min(test.len() - b * slots))
        .collect();
    let manifest = Manifest::new(
        JobId::random(),
        pk.key_set,
        params,
        model,
        &plan,
        batch_sizes,
    );
    manifest.check_key_set(Path::new("eval.keys"), keys.key_set)?;
    // Server: one session (backend, uploaded evaluation keys) for every batch.
    let session = Session::new(job.server.device()?, ctx.clone(), &keys)?;
    drop(keys);
    let backend = session.backend_name();
    let enc = Encoder::new(ctx.clone());
    let decryptor = Decryptor::new(ctx.clone());
    let (mut encrypt_s, mut server_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let (mut correct, mut ref_correct, mut agree, mut worst) = (0usize, 0usize, 0usize, 0.0f64);
    let mut beyond = 0usize;
    for batch in 0..batches {
        let range = batch * slots..((batch + 1) * slots).min(test.len());
        let samples: Vec<Vec<f64>> = range
            .clone()
            .map(|i| reference::normalize(model, test.image(i)))
            .collect();

        // Client: encryption.
        let t = Instant::now();
        let b = bar(plan.inputs, "client: encrypt", quiet);
        let cts = sched::encrypt_batch(
            &plan,
            &enc,
            |_| Encryptor::new(ctx.clone()),
            &pk,
            &samples,
            || b.inc(1),
        )?;
        b.finish_and_clear();
        encrypt_s += t.elapsed().as_secs_f64();
        let cts = match job.exchange_dir {
            Some(dir) => {
                let cp = dir.join(format!("input-{batch}.cts"));
                save_ciphertexts(
                    &cp,
                    params,
                    &manifest.label(batch, Content::InputBatch),
                    &cts,
                )?;
                drop(cts);
                say(format!(
                    "client: batch {}/{batches}: {} ciphertexts written to {}",
                    batch + 1,
                    plan.inputs,
                    cp.display()
                ));
                let (cts, label) = load_ciphertexts(&cp, &ctx)?;
                manifest.check_batch(params, &cp, batch, Content::InputBatch, &label, &cts)?;
                cts
            }
            None => cts,
        };

        // Server: evaluation keys and ciphertexts only.
        let t = Instant::now();
        let b = bar(plan.steps.len(), "server: steps", quiet);
        let out = session.score_with(&plan, &cts, |_| b.inc(1))?.logits;
        b.finish_and_clear();
        server_s += t.elapsed().as_secs_f64();
        drop(cts);
        let out = match job.exchange_dir {
            Some(dir) => {
                let op = dir.join(format!("logits-{batch}.cts"));
                save_ciphertexts(&op, params, &manifest.label(batch, Content::Logits), &out)?;
                let (out, label) = load_ciphertexts(&op, &ctx)?;
                manifest.check_batch(params, &op, batch, Content::Logits, &label, &out)?;
                out
            }
            None => out,
        };

        // Client: decrypt and compare with the plaintext reference.
        let t = Instant::now();
        let logits = sched::decrypt_logits(&decryptor, &enc, &sk, &out, samples.len())?;
        decrypt_s += t.elapsed().as_secs_f64();
        for (i, (x, got)) in range.zip(samples.iter().zip(&logits)) {
            let want = reference::forward(model, x)?;
            let label = test.labels[i] as usize;
            let (g, w) = (reference::argmax(got), reference::argmax(&want));
            correct += usize::from(g == label);
            ref_correct += usize::from(w == label);
            agree += usize::from(g == w);
            beyond += usize::from(!reference::agrees(&want, got));
            for (a, b) in want.iter().zip(got) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    let n = test.len() as f64;
    Ok(InferReport {
        model: model.name.clone(),
        dataset: job.dataset.to_string(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        backend,
        samples: test.len(),
        batches,
        ciphertexts_in: plan.inputs,
        max_ciphertexts: plan.max_width(),
        levels_used: plan.depth(),
        encrypted_accuracy: correct as f64 / n,
        reference_accuracy: ref_correct as f64 / n,
        argmax_agreement: agree as f64 / n,
        disagreements_beyond_ties: beyond,
        max_logit_error: worst,
        timings: Timings {
            keygen_s,
            encrypt_s,
            server_s,
            decrypt_s,
        },
        predictions_per_hour_server: n / server_s * 3600.0,
    })
}

/// Prints a report as text.
pub(super) fn print_report(report: &InferReport) {
    if report.insecure {
        println!("WARNING: INSECURE parameters (preset {})", report.preset);
    }
    println!(
        "{} on {} encrypted {} test images ({}, server on {}):",
        report.model, report.samples, report.dataset, report.preset, report.backend
    );
    println!(
        "  accuracy {:.2}% encrypted vs {:.2}% plaintext reference; same prediction on {:.2}% of images ({} differ beyond a near-tie); max |logit error| {:.2e}",
        100.0 * report.encrypted_accuracy,
        100.0 * report.reference_accuracy,
        100.0 * report.argmax_agreement,
        report.disagreements_beyond_ties,
        report.max_logit_error
    );
    let t = &report.timings;
    println!(
        "  keygen {:.1} s, encrypt {:.1} s (client); server {:.1} s ({:.0} predictions/hour for a batch of {}); decrypt {:.2} s (client)",
        t.keygen_s,
        t.encrypt_s,
        t.server_s,
        report.predictions_per_hour_server,
        report.samples,
        t.decrypt_s
    );
}

/// Runs `cryptodl infer`.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let params = super::latency::parameters_for(
        &Plan::compile(&model)?,
        args.preset.as_deref(),
        args.packing == Packing::Latency,
        args.insecure,
        args.json,
    )?;
    if args.packing == Packing::Latency {
        super::warn_insecure(&params, args.json);
        let limit = args
            .limit
            .map_or(100, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let (kind, test) =
            super::eval::test_set(&model, args.dataset, args.data_dir.as_deref(), Some(limit))?;
        let images = latency::Images::dataset(&model, kind.name(), &test);
        return latency::score_and_report(
            &model,
            &params,
            args.server.device()?,
            &images,
            args.json,
        );
    }
    let limit = args
        .limit
        .map_or(params.slots(), |l| usize::try_from(l).unwrap_or(usize::MAX));
    let (kind, test) =
        super::eval::test_set(&model, args.dataset, args.data_dir.as_deref(), Some(limit))?;
    let report = execute(&Job {
        model: &model,
        params,
        test: &test,
        dataset: kind.name(),
        server: &args.server,
        exchange_dir: None,
        quiet: args.json,
    })?;
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}
