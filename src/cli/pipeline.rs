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

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::infer::bar;
use super::output::print_json;
use super::server::Packing;
use super::warn_insecure;
use crate::ckks::serialize::{
    load_ciphertexts, load_public_key, load_secret_key, read_header, save_ciphertexts,
    save_evaluation_keys, save_public_key, save_secret_key, Content, FileError, JobId,
};
use crate::ckks::{
    Context, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters, Preset, PRESETS,
};
use crate::io::{remove_stale_temps, try_lock};
use crate::nn::dataset::DatasetKind;
use crate::nn::images::{self, Images, Resize};
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::job::{batch_file, logits_file, JobPacking, Manifest, MANIFEST};
use crate::sched::latency::LatencyPlan;
use crate::sched::{self, Plan};

const SECRET_KEY: &str = "secret.key";
const PUBLIC_KEY: &str = "public.key";
const EVAL_KEYS: &str = "eval.keys";

/// The parameters a key or ciphertext file was made with (found by the fingerprint of its
/// checksum-verified header).
pub(super) fn parameters_of(path: &Path, insecure: bool) -> anyhow::Result<Parameters> {
    let header = read_header(path)?;
    for p in PRESETS {
        let params = p.parameters(true)?;
        if params.fingerprint() == header.fingerprint {
            return Ok(p.parameters(insecure)?);
        }
    }
    bail!(
        "{} was made with parameters that are not a preset (fingerprint {:016x}); files from a newer or custom build cannot be read here",
        path.display(),
        header.fingerprint
    )
}

/// Takes the lock that keeps two runs of `what` out of one directory.
fn lock_dir(dir: &Path, what: &str) -> anyhow::Result<crate::io::FileLock> {
    let path = dir.join(format!(".cryptodl-{what}.lock"));
    try_lock(&path)
        .with_context(|| format!("cannot lock {}", path.display()))?
        .with_context(|| {
            format!(
                "another `cryptodl {what}` is writing to {}; wait for it or choose another directory",
                dir.display()
            )
        })
}

/// Arguments of `cryptodl keygen`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/secret.key (keep it: only `decrypt` needs it), DIR/public.key (for \
`encrypt`) and DIR/eval.keys (send it to the server with the ciphertexts): all three or none. \
Every file carries the key set's id (a hash of the secret), and every batch and logits file made \
with these keys carries it too, so files of different key sets are never mixed up."
)]
pub struct KeygenArgs {
    /// Parameter preset (see `cryptodl params`); it must be deep enough for the model.
    #[arg(long, default_value = "n8192")]
    preset: String,
    /// Latency packing: also make the Galois keys of exactly the rotations the model needs
    /// there (`cryptodl plan --packing latency` lists them).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    /// With --packing latency: the model (default: the embedded demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (created if missing; existing keys are not overwritten).
    #[arg(long)]
    out: PathBuf,
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
    /// Galois keys in the evaluation keys (latency packing).
    rotations: usize,
    eval_keys_bytes: u64,
}

/// Runs `cryptodl keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let params = Preset::by_name(&args.preset)?.parameters(args.insecure)?;
    warn_insecure(&params, args.json);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let _lock = lock_dir(&args.out, "keygen")?;
    let files = [EVAL_KEYS, PUBLIC_KEY, SECRET_KEY];
    if let Some(f) = files.iter().find(|f| args.out.join(f).exists()) {
        bail!(
            "{} exists; remove the key files or choose another --out (keys are never overwritten)",
            args.out.join(f).display()
        );
    }
    for f in files {
        remove_stale_temps(&args.out, Some(f))
            .with_context(|| format!("cannot clean {}", args.out.display()))?;
    }
    let ctx = Context::new(&params)?;
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rotations = match args.packing {
        Packing::Batch => Vec::new(),
        Packing::Latency => {
            let model = match &args.model {
                Some(p) => Model::load(p)?,
                None => Model::demo()?,
            };
            LatencyPlan::compile(&Plan::compile(&model)?, &params)?.rotations()
        }
    };
    let ek = kg.evaluation_keys(&sk, &rotations, false)?;
    // All three or none: a failure removes what was written.
    let written: Result<(), FileError> = (|| {
        save_evaluation_keys(args.out.join(EVAL_KEYS), &params, &ek)?;
        save_public_key(args.out.join(PUBLIC_KEY), &params, &pk)?;
        save_secret_key(args.out.join(SECRET_KEY), &params, &sk)
    })();
    if let Err(e) = written {
        for f in files {
            let _ = std::fs::remove_file(args.out.join(f));
        }
        return Err(e).context("no keys were written");
    }
    let report = KeygenReport {
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        key_set: sk.key_set().to_string(),
        out: args.out.display().to_string(),
        files,
        rotations: rotations.len(),
        eval_keys_bytes: std::fs::metadata(args.out.join(EVAL_KEYS)).map_or(0, |m| m.len()),
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
        if report.rotations > 0 {
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

/// Images per batch file in latency packing.
const LATENCY_IMAGES_PER_FILE: usize = 16;

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
    out: String,
}

/// What the client keeps of a job beside its keys (`KEYS/jobs/JOB.json`, never sent to the
/// server): where the images came from, their names and labels, in job order.
#[derive(Serialize, serde::Deserialize)]
struct JobSources {
    job: String,
    input: String,
    names: Vec<String>,
    labels: Option<Vec<u8>>,
}

/// The largest job record read (1 GiB).
const MAX_SOURCES_BYTES: u64 = 1 << 30;

impl JobSources {
    fn path(keys: &Path, job: &str) -> PathBuf {
        keys.join("jobs").join(format!("{job}.json"))
    }

    fn write(&self, keys: &Path) -> anyhow::Result<PathBuf> {
        let path = Self::path(keys, &self.job);
        let dir = keys.join("jobs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_json::to_vec(self)?;
        crate::io::write_bytes_atomic(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The record of `job`, if the client has it.
    fn read(keys: &Path, job: &str, images: usize) -> anyhow::Result<Option<JobSources>> {
        use std::io::Read;
        let path = Self::path(keys, job);
        let f = match crate::io::open_regular(&path) {
            Ok(Some(f)) => f,
            Ok(None) => bail!("{} is not a regular file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
            }
        };
        let mut text = Vec::new();
        f.take(MAX_SOURCES_BYTES)
            .read_to_end(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let s: JobSources = serde_json::from_slice(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        if s.job != job
            || s.names.len() != images
            || s.labels.as_ref().is_some_and(|l| l.len() != images)
        {
            bail!(
                "{} does not describe job {job} of {images} images; move it away to decrypt without image names",
                path.display()
            );
        }
        Ok(Some(s))
    }
}

/// Runs `cryptodl encrypt`.
pub fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let pk_path = args.keys.join(PUBLIC_KEY);
    let params = parameters_of(&pk_path, args.insecure)?;
    warn_insecure(&params, args.json);
    let plan = Plan::compile(&model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let ctx = Context::new(&params)?;
    let pk = load_public_key(&pk_path, &ctx)?;
    let limit = args.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let (test, source) = match &args.input {
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
            )
        }
        None => {
            let (kind, test) =
                super::eval::test_set(&model, args.dataset, args.data_dir.as_deref(), limit)?;
            (
                Images::from_dataset(kind, &test),
                format!("{kind} test split"),
            )
        }
    };
    if test.is_empty() {
        bail!("no images to encrypt");
    }
    let calibration: Vec<Vec<f64>> = (0..test.len().min(256))
        .map(|k| test.normalized(&model, k))
        .collect();
    plan.check_magnitudes(&params, &calibration)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let _lock = lock_dir(&args.out, "encrypt")?;
    if args.out.join(MANIFEST).exists() {
        bail!(
            "{} already holds an encrypted job ({MANIFEST}); choose an empty --out",
            args.out.display()
        );
    }
    remove_stale_temps(&args.out, None)
        .with_context(|| format!("cannot clean {}", args.out.display()))?;
    let latency = match args.packing {
        Packing::Batch => None,
        Packing::Latency => Some(LatencyPlan::compile(&plan, &params)?),
    };
    let per_file = match latency {
        Some(_) => LATENCY_IMAGES_PER_FILE,
        None => params.slots(),
    };
    let batches: Vec<usize> = (0..test.len())
        .step_by(per_file)
        .map(|s| per_file.min(test.len() - s))
        .collect();
    let mut manifest = Manifest::new(
        JobId::random(),
        pk.key_set,
        &params,
        &model,
        &plan,
        batches.clone(),
    );
    if let Some(lp) = &latency {
        manifest = manifest.in_latency_packing(lp.input_ciphertexts());
    }
    let enc = Encoder::new(ctx.clone());
    let work = match latency {
        Some(_) => test.len(),
        None => batches.len() * plan.inputs,
    };
    let b = bar(work, "encrypt", args.json);
    let mut encryptor = Encryptor::new(ctx.clone());
    for (i, &count) in batches.iter().enumerate() {
        let samples: Vec<Vec<f64>> = (i * per_file..i * per_file + count)
            .map(|k| test.normalized(&model, k))
            .collect();
        let cts = match &latency {
            Some(lp) => {
                let mut cts = Vec::with_capacity(count * lp.input_ciphertexts());
                for x in &samples {
                    cts.extend(lp.encrypt_image(&enc, &mut encryptor, &pk, x)?);
                    b.inc(1);
                }
                cts
            }
            None => sched::encrypt_batch(
                &plan,
                &enc,
                |_| Encryptor::new(ctx.clone()),
                &pk,
                &samples,
                || b.inc(1),
            )?,
        };
        save_ciphertexts(
            args.out.join(batch_file(i)),
            &params,
            &manifest.label(i, Content::InputBatch),
            &cts,
        )?;
    }
    b.finish_and_clear();
    // The client's record of the job (never sent), then the manifest last: a directory with
    // one is complete.
    let sources = JobSources {
        job: manifest.job.clone(),
        input: source.clone(),
        names: test.names.clone(),
        labels: test.labels.clone(),
    };
    let sources_path = sources.write(&args.keys)?;
    manifest.write(&args.out)?;
    let report = EncryptReport {
        job: manifest.job.clone(),
        model: model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        key_set: manifest.key_set.clone(),
        images: test.len(),
        batches: batches.len(),
        packing: if latency.is_some() {
            "latency"
        } else {
            "batch"
        },
        ciphertexts_per_batch: match &latency {
            Some(lp) => lp.input_ciphertexts() * per_file,
            None => plan.inputs,
        },
        input_level: plan.input_level(),
        input: source,
        sources: sources_path.display().to_string(),
        out: args.out.display().to_string(),
    };
    if args.json {
        return print_json(&report);
    }
    let layout = match &latency {
        Some(lp) => format!(
            "in latency packing: {} ciphertexts per image, up to {per_file} images per batch",
            lp.input_ciphertexts()
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
    let sk_path = args.keys.join(SECRET_KEY);
    let key_params = parameters_of(&sk_path, args.insecure)?;
    if key_params.fingerprint() != params.fingerprint() {
        bail!(
            "the secret key {} is for {}, the logits for {}",
            sk_path.display(),
            key_params.name(),
            params.name()
        );
    }
    let ctx = Context::new(&params)?;
    let sk = load_secret_key(&sk_path, &ctx)?;
    manifest.check_key_set(&sk_path, sk.key_set())?;
    let total: usize = manifest.batches.iter().sum();
    let sources = JobSources::read(&args.keys, &manifest.job, total)?;
    let (enc, dec) = (Encoder::new(ctx.clone()), Decryptor::new(ctx.clone()));
    let mut predictions = Vec::new();
    let mut all_logits: Vec<Vec<f64>> = Vec::new();
    for (i, &count) in manifest.batches.iter().enumerate() {
        let path = args.input.join(logits_file(i));
        if !path.exists() {
            bail!(
                "{} is missing: batch {i} is not scored yet; run `cryptodl score` again (it resumes)",
                path.display()
            );
        }
        let (logits, label) = load_ciphertexts(&path, &ctx)?;
        manifest.check_batch(&params, &path, i, Content::Logits, &label, &logits)?;
        let decoded = match manifest.packing {
            JobPacking::Batch => sched::decrypt_logits(&dec, &enc, &sk, &logits, count)?,
            JobPacking::Latency => logits
                .iter()
                .map(|ct| {
                    let mut v = enc.decode(&dec.decrypt(ct, &sk)?);
                    v.truncate(manifest.model.outputs);
                    Ok(v)
                })
                .collect::<Result<Vec<_>, crate::ckks::CkksError>>()?,
        };
        for l in decoded {
            predictions.push(reference::argmax(&l));
            if args.out.is_some() {
                all_logits.push(l);
            }
        }
    }
    let labels: Option<Vec<u8>> = match args.dataset {
        Some(kind) => {
            let test = kind.load_test(args.data_dir.as_deref())?;
            if test.len() < predictions.len() {
                bail!("{kind} has only {} test labels", test.len());
            }
            Some(test.labels)
        }
        None => sources.as_ref().and_then(|s| s.labels.clone()),
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
            let source = sources.as_ref().map_or("", |s| s.names[i].as_str());
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
