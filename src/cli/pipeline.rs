//! `cryptodl keygen` / `encrypt` / `decrypt`: the client's steps of batch scoring an encrypted
//! dataset; the server's (`score`, `status`) are in `score.rs`.
//!
//! * client `keygen --out KEYS`: `KEYS/secret.key` (stays with the client), `KEYS/public.key`,
//!   `KEYS/eval.keys` (the only key the server gets: relinearization), all three or none;
//! * client `encrypt --model M --keys KEYS --out ENC`: the test images in batches of N/2,
//!   `ENC/batch-00000.cts`, ... and `ENC/manifest.json`, bound to one random job id, the key
//!   set and the model's digest (`sched::job`);
//! * server `score --model M --eval-keys KEYS/eval.keys --in ENC --out SCORED`: one
//!   `SCORED/logits-00000.cts` per batch (`sched::scoring`);
//! * client `decrypt --keys KEYS --in SCORED`: the predicted class of every image (and the
//!   accuracy against the dataset's labels), from logits of its job and key set only.
//!
//! Every file names its parameters by fingerprint, so no step needs `--preset` after `keygen`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::output::bar;
use super::output::print_json;
use super::server::Packing;
use super::warn_insecure;
use crate::circuits::BootstrapConfig;
use crate::ckks::Preset;
use crate::io::ReadSet;
use crate::nn::dataset::DatasetKind;
use crate::nn::images::{self, Images, Resize};
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::client::JobRecord;
use crate::sched::encrypt::{check_job_dir, encrypt_job, EncryptJob, EncryptionKeys};
use crate::sched::job::{logits_file, Manifest, MANIFEST};
use crate::sched::keys::{self, key_files, EVAL_KEYS, KEY_FILES};
use crate::sched::latency::LatencyPlan;
use crate::sched::{self, Plan};

/// Arguments of `cryptodl keygen`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/secret.key (keep it: only `decrypt` needs it), DIR/public.key (for \
`encrypt`) and DIR/eval.keys (send it to the server with the ciphertexts): all three or none. \
Every file carries the key set's id (a hash of the secret), and every batch and logits file made \
with these keys carries it too, so files of different key sets are never mixed up."
)]
pub struct KeygenArgs {
    /// Parameter preset (see `cryptodl params`; default: the smallest 128-bit preset deep enough
    /// for --model, and said; n8192 without a model).
    #[arg(long)]
    preset: Option<String>,
    /// Latency packing: also make the Galois keys of exactly the rotations the model needs
    /// there (`cryptodl plan --packing latency` lists them).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    /// The model the keys are for: picks the preset when --preset is not given, and in latency
    /// packing the rotations (default there: the embedded demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (created if missing; existing keys are not overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Also make the keys of bootstrapping (a bootstrappable preset: n65536, or toyboot1024
    /// with --insecure): the Galois keys of its CoeffsToSlots / SlotsToCoeffs rotations and of
    /// conjugation, and the sparse-secret encapsulation keys. At n65536 that is about 10 GB.
    #[arg(long)]
    bootstrap: bool,
    /// With --bootstrap: the keys of sparse-packing bootstrapping of this many slots (a power
    /// of two below N/2; its DFTs need fewer rotations). Default: full packing.
    #[arg(long, requires = "bootstrap")]
    bootstrap_slots: Option<usize>,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct KeygenReport {
    preset: String,
    insecure: bool,
    key_set: String,
    out: String,
    files: [&'static str; 3],
    /// Galois keys in the evaluation keys (latency packing, bootstrapping).
    rotations: usize,
    /// Whether the keys bootstrap.
    bootstrap: bool,
    /// The slots they bootstrap (`null`: full packing or no bootstrapping).
    bootstrap_slots: Option<usize>,
    eval_keys_bytes: u64,
}

/// Runs `cryptodl keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let latency = args.packing == Packing::Latency;
    let model = match (&args.model, latency) {
        (Some(p), _) => Some(Model::load(p)?),
        (None, true) => Some(Model::demo()?),
        (None, false) => None,
    };
    let params = match (&model, &args.preset) {
        (Some(m), preset) => super::latency::parameters_for(
            &Plan::compile(m)?,
            preset.as_deref(),
            latency,
            args.insecure,
            args.json,
        )?,
        (None, preset) => {
            Preset::by_name(preset.as_deref().unwrap_or("n8192"))?.parameters(args.insecure)?
        }
    };
    if let Some(m) = &model {
        Plan::compile(m)?.check_depth(params.name(), params.max_level())?;
    }
    let bootstrap = match (args.bootstrap, BootstrapConfig::for_preset(params.name())) {
        (false, _) => None,
        (true, Some(c)) => Some(match args.bootstrap_slots {
            None => c,
            Some(slots) => c
                .with_slots(slots, &params)
                .map_err(|e| anyhow::anyhow!("--bootstrap-slots {slots}: {e}"))?,
        }),
        (true, None) => bail!(
            "preset {} is not bootstrappable; use --preset n65536 (or toyboot1024 --insecure) with --bootstrap",
            params.name()
        ),
    };
    warn_insecure(&params, args.json);
    let rotations = match (&model, latency) {
        (Some(m), true) => LatencyPlan::compile(&Plan::compile(m)?, &params)?.rotations(),
        _ => Vec::new(),
    };
    let mut spinner = None;
    let made = keys::generate(
        &args.out,
        &params,
        &rotations,
        bootstrap.as_ref(),
        |started| match started {
            true => spinner = Some(bar(0, "bootstrapping keys", args.json)),
            false => spinner
                .take()
                .into_iter()
                .for_each(|s| s.finish_and_clear()),
        },
    )?;
    let report = KeygenReport {
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        key_set: made.key_set,
        out: args.out.display().to_string(),
        files: KEY_FILES,
        rotations: made.rotations,
        bootstrap: bootstrap.is_some(),
        bootstrap_slots: bootstrap.as_ref().and_then(|c| c.slots),
        eval_keys_bytes: made.eval_keys_bytes,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "keys for {}{} (key set {}) written to {} (send only {} to the server: {:.1} MB{})",
        report.preset,
        if report.insecure { ", INSECURE" } else { "" },
        report.key_set,
        report.out,
        EVAL_KEYS,
        report.eval_keys_bytes as f64 / (1 << 20) as f64,
        if report.bootstrap {
            format!(
                ", with the keys of bootstrapping ({} Galois keys)",
                report.rotations
            )
        } else if report.rotations > 0 {
            format!(
                ", with the {} rotations of latency packing",
                report.rotations
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Arguments of `cryptodl encrypt`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes ENC/batch-00000.cts ... (N/2 images each) and ENC/manifest.json, all bound to \
one new job id, the key set and the model's digest, and keeps the name (and label) of every image \
beside the keys, in KEYS/jobs/JOB.json: the server never sees them, `decrypt` writes them next to \
the predictions. Every image is read and checked (size, type) and the model's values are checked \
against the modulus before anything is written.

Examples:
  cryptodl encrypt --model m.safetensors --keys keys --out enc                # the test split
  cryptodl encrypt --model m.safetensors --keys keys --input photos/ --resize --out enc
  cryptodl encrypt --model m.safetensors --keys keys --input x.npy --labels y.npy --out enc"
)]
pub struct EncryptArgs {
    /// The model (the client needs its input normalisation and size).
    #[arg(long)]
    model: PathBuf,
    /// Key directory written by `cryptodl keygen`.
    #[arg(long)]
    keys: PathBuf,
    /// Your images instead of a dataset's test split: a .npy array (N x C x H x W, or N x H x W
    /// for one channel; uint8 pixels or float32/64 in [0, 1]), a directory of .png / .jpg
    /// files (sorted by name), or an IDX file.
    #[arg(long, conflicts_with_all = ["dataset", "data_dir"])]
    input: Option<PathBuf>,
    /// With --input: scale images of another size than the model's (bilinear) instead of
    /// refusing them.
    #[arg(long, requires = "input")]
    resize: bool,
    /// With --input: one label per image (a .npy of integers or an IDX label file), so that
    /// `decrypt` reports the accuracy.
    #[arg(long, requires = "input")]
    labels: Option<PathBuf>,
    /// Dataset whose test images are encrypted (default: the model's).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset files (only the test split is read).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Encrypt the first N images (default: all; at least 1).
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Output directory for the server (created if missing; must not hold another job).
    #[arg(long)]
    out: PathBuf,
    /// Batch packing (N/2 images per batch file) or latency packing (each image across a few
    /// ciphertexts of its own, 16 images per file; the keys need its rotations: `keygen
    /// --packing latency`).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    /// Accept key files made with presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EncryptReport {
    job: String,
    model: String,
    preset: String,
    insecure: bool,
    key_set: String,
    images: usize,
    batches: usize,
    /// `batch` or `latency`.
    packing: &'static str,
    /// At most (latency packing: per image times images per batch).
    ciphertexts_per_batch: usize,
    input_level: usize,
    /// Where the images came from.
    input: String,
    /// The client's record of image names and labels (beside the keys).
    sources: String,
    /// The key files beside the secret key checked against it (`public`, `evaluation`); empty
    /// when the secret key is not in the key directory.
    keys_checked: Vec<&'static str>,
    /// Files of an --input directory that are not images and were not read.
    ignored_files: Vec<String>,
    out: String,
}

/// Runs `cryptodl encrypt`.
pub fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    // Everything this command reads, so that none of its outputs replaces it.
    let mut reads = ReadSet::new();
    reads.file(&args.model, "--model");
    key_files(&mut reads, &args.keys);
    if let Some(p) = &args.input {
        reads.file(p, "--input").dir_files(p, "an image of --input");
    }
    if let Some(p) = &args.labels {
        reads.file(p, "--labels");
    }
    let model = Model::load(&args.model)?;
    let keys = EncryptionKeys::open(&args.keys, args.insecure)?;
    let params = &keys.params;
    warn_insecure(params, args.json);
    Plan::compile(&model)?.check_depth(params.name(), params.max_level())?;
    check_job_dir(&args.out, &args.keys)?;
    let limit = args.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let (test, source, dataset) = match &args.input {
        Some(path) => {
            let resize = if args.resize {
                Resize::Scale
            } else {
                Resize::Refuse
            };
            let images = images::load(path, model.input, resize, args.labels.as_deref())?;
            (
                images.take(limit.unwrap_or(usize::MAX)),
                path.display().to_string(),
                None,
            )
        }
        None => {
            let kind = super::eval::dataset_of(&model, args.dataset)?;
            if let Some(dir) = kind.files_dir(args.data_dir.as_deref()) {
                reads.dir_files(dir, "a file of the dataset");
            }
            let (kind, test) =
                super::eval::test_set(&model, Some(kind), args.data_dir.as_deref(), limit)?;
            (
                Images::from_dataset(kind, &test),
                format!("{kind} test split"),
                Some(kind),
            )
        }
    };
    let b = bar(0, "encrypt", args.json);
    let job = EncryptJob {
        model: &model,
        keys: &args.keys,
        opened: &keys,
        out: &args.out,
        images: &test,
        source: source.clone(),
        dataset,
        labels_file: args.labels.as_deref(),
        latency: args.packing == Packing::Latency,
    };
    let done = encrypt_job(&job, &reads, |n| b.set_length(n as u64), || b.inc(1))?;
    b.finish_and_clear();
    let report = EncryptReport {
        job: done.job,
        model: model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        key_set: done.key_set,
        images: done.images,
        batches: done.batches,
        packing: if done.latency_ciphertexts.is_some() {
            "latency"
        } else {
            "batch"
        },
        ciphertexts_per_batch: done.ciphertexts_per_batch,
        input_level: done.input_level,
        input: source,
        sources: done.record.display().to_string(),
        keys_checked: keys.checked.clone(),
        ignored_files: test.ignored.clone(),
        out: args.out.display().to_string(),
    };
    if args.json {
        return print_json(&report);
    }
    if !report.ignored_files.is_empty() {
        let shown = report.ignored_files.len().min(10);
        eprintln!(
            "note: {} file(s) of {} are not PNG / JPEG images and were not read: {}{}",
            report.ignored_files.len(),
            report.input,
            report.ignored_files[..shown].join(", "),
            if shown < report.ignored_files.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    let layout = match done.latency_ciphertexts {
        Some(per_image) => format!(
            "in latency packing: {per_image} ciphertexts per image, up to {} images per batch",
            done.images_per_batch
        ),
        None => format!("of {} ciphertexts", report.ciphertexts_per_batch),
    };
    println!(
        "{} images ({}) encrypted in {} batch(es) {} ({}{}, job {}) into {}",
        report.images,
        report.input,
        report.batches,
        layout,
        report.preset,
        if report.insecure { ", INSECURE" } else { "" },
        report.job,
        report.out
    );
    Ok(())
}

/// Arguments of `cryptodl decrypt`.
#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    /// Key directory written by `cryptodl keygen` (its secret key).
    #[arg(long)]
    keys: PathBuf,
    /// Directory written by `cryptodl score`.
    #[arg(long = "in")]
    input: PathBuf,
    /// Compare the predictions with this dataset's test labels (the images `encrypt` used).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write every prediction to this CSV file (atomically): index, source (the image's file
    /// name, from the record `encrypt` kept beside the keys), predicted class, label (when
    /// known) and the logits.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Accept files made with presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
    /// Print JSON (`predictions`, and `accuracy` when labels are known) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DecryptReport {
    job: String,
    model: String,
    preset: String,
    insecure: bool,
    images: usize,
    predictions: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    /// The key files beside the secret key checked against it (`public`, `evaluation`).
    keys_checked: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<String>,
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Runs `cryptodl decrypt` (client side).
pub fn decrypt(args: DecryptArgs) -> anyhow::Result<()> {
    let (manifest, params) = Manifest::read(&args.input, args.insecure)?;
    warn_insecure(&params, args.json);
    // Everything this command reads, so that --out replaces none of it (checked before any
    // work: a refusal writes nothing).
    let mut reads = ReadSet::new();
    key_files(&mut reads, &args.keys);
    reads
        .file(
            JobRecord::path(&args.keys, &manifest.job),
            "the job's record",
        )
        .file(args.input.join(MANIFEST), "the job's manifest");
    for i in 0..manifest.batches.len() {
        reads.file(args.input.join(logits_file(i)), "the logits of --in");
    }
    if let Some(kind) = args.dataset {
        if let Some(dir) = kind.files_dir(args.data_dir.as_deref()) {
            reads.dir_files(dir, "a file of the dataset");
        }
    }
    if let Some(out) = &args.out {
        reads.check_output(out, "--out")?;
    }
    let (ctx, sk, keys_checked) =
        sched::client::open_secret_key(&args.keys, &manifest, &params, args.insecure)?;
    let record = JobRecord::read(&args.keys, &manifest)?;
    let b = bar(manifest.batches.len(), "decrypt: batches", args.json);
    let all_logits = sched::client::decrypt_job(&manifest, &args.input, &ctx, &sk, || b.inc(1))?;
    b.finish_and_clear();
    let predictions: Vec<usize> = all_logits.iter().map(|l| reference::argmax(l)).collect();
    // Labels: the record's (the images encrypted, whatever their source); --dataset only
    // confirms that the job is that dataset's test split, with the same labels.
    let labels: Option<Vec<u8>> = match (args.dataset, &record) {
        (None, r) => r.as_ref().and_then(|r| r.labels.clone()),
        (Some(kind), None) => bail!(
            "--dataset {kind}: there is no record of job {} beside the keys ({}), so nothing \
             says which images were encrypted; accuracy against a dataset's labels needs it \
             (decrypt without --dataset for the predictions alone)",
            manifest.job,
            JobRecord::path(&args.keys, &manifest.job).display()
        ),
        (Some(kind), Some(r)) => {
            match r.dataset() {
                Some(k) if k == kind => {}
                Some(k) => bail!(
                    "--dataset {kind}: job {} encrypted the {k} test split; its accuracy is \
                     against {k}'s labels (drop --dataset: the record has them)",
                    manifest.job
                ),
                None => bail!(
                    "--dataset {kind}: job {} encrypted your own images ({}), not a test split, \
                     so {kind}'s labels are not theirs; give their labels at encryption \
                     (`encrypt --input ... --labels y.npy`) and decrypt without --dataset",
                    manifest.job,
                    r.input
                ),
            }
            let test = kind.load_test(args.data_dir.as_deref())?;
            if test.len() < predictions.len() {
                bail!("{kind} has only {} test labels", test.len());
            }
            if let Some(recorded) = &r.labels {
                if recorded[..] != test.labels[..predictions.len()] {
                    bail!(
                        "--dataset {kind}: the test labels read now differ from the ones of the \
                         images encrypted for job {} (another copy of the dataset, or \
                         --data-dir points elsewhere); drop --dataset to use the recorded ones",
                        manifest.job
                    );
                }
            }
            Some(test.labels[..predictions.len()].to_vec())
        }
    };
    let accuracy = labels.as_ref().map(|labels| {
        let ok = predictions
            .iter()
            .zip(labels)
            .filter(|(&p, &y)| p == y as usize)
            .count();
        ok as f64 / predictions.len().max(1) as f64
    });
    if let Some(out) = &args.out {
        let classes = all_logits.first().map_or(0, Vec::len);
        let mut csv = String::from("index,source,predicted,label");
        for k in 0..classes {
            csv.push_str(&format!(",logit_{k}"));
        }
        csv.push('\n');
        for (i, (p, l)) in predictions.iter().zip(&all_logits).enumerate() {
            let source = record.as_ref().map_or("", |s| s.names[i].as_str());
            let label = labels
                .as_ref()
                .and_then(|l| l.get(i))
                .map_or(String::new(), |y| y.to_string());
            csv.push_str(&format!("{i},{},{p},{label}", csv_field(source)));
            for v in l {
                csv.push_str(&format!(",{v}"));
            }
            csv.push('\n');
        }
        crate::io::write_bytes_atomic(out, csv.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let report = DecryptReport {
        job: manifest.job.clone(),
        model: manifest.model.name.clone(),
        preset: manifest.preset.clone(),
        insecure: manifest.insecure,
        images: predictions.len(),
        predictions,
        accuracy,
        keys_checked,
        out: args.out.as_ref().map(|p| p.display().to_string()),
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} predictions decrypted ({} on {}{}){}",
        report.images,
        report.model,
        report.preset,
        if report.insecure { ", INSECURE" } else { "" },
        report
            .accuracy
            .map(|a| format!("; accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default()
    );
    if let Some(out) = &report.out {
        println!("predictions per image in {out}");
    }
    Ok(())
}
