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
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::job::{batch_file, logits_file, Manifest, MANIFEST};
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
    let ek = kg.evaluation_keys(&sk, &[], false)?;
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
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "keys for {}{} (key set {}) written to {} (send only {} to the server)",
        report.preset,
        if report.insecure { ", INSECURE" } else { "" },
        report.key_set,
        report.out,
        EVAL_KEYS
    );
    Ok(())
}

/// Arguments of `cryptodl encrypt`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes ENC/batch-00000.cts ... (N/2 images each) and ENC/manifest.json, all bound to \
one new job id, the key set and the model's digest. The model's values are checked against the \
modulus on the first test images before anything is encrypted."
)]
pub struct EncryptArgs {
    /// The model (the client needs its input normalisation and size).
    #[arg(long)]
    model: PathBuf,
    /// Key directory written by `cryptodl keygen`.
    #[arg(long)]
    keys: PathBuf,
    /// Dataset whose test images are encrypted (default: the model's).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Encrypt the first N test images (default: all; at least 1).
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Output directory for the server (created if missing; must not hold another job).
    #[arg(long)]
    out: PathBuf,
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
    ciphertexts_per_batch: usize,
    input_level: usize,
    out: String,
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
    let (_, test) = super::eval::test_set(&model, args.dataset, args.data_dir.as_deref(), limit)?;
    if test.is_empty() {
        bail!("no test images to encrypt");
    }
    let calibration: Vec<Vec<f64>> = (0..test.len().min(256))
        .map(|k| reference::normalize(&model, test.image(k)))
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
    let slots = params.slots();
    let batches: Vec<usize> = (0..test.len())
        .step_by(slots)
        .map(|s| slots.min(test.len() - s))
        .collect();
    let manifest = Manifest::new(
        JobId::random(),
        pk.key_set,
        &params,
        &model,
        &plan,
        batches.clone(),
    );
    let enc = Encoder::new(ctx.clone());
    let b = bar(batches.len() * plan.inputs, "encrypt", args.json);
    for (i, &count) in batches.iter().enumerate() {
        let samples: Vec<Vec<f64>> = (i * slots..i * slots + count)
            .map(|k| reference::normalize(&model, test.image(k)))
            .collect();
        let cts = sched::encrypt_batch(
            &plan,
            &enc,
            |_| Encryptor::new(ctx.clone()),
            &pk,
            &samples,
            || b.inc(1),
        )?;
        save_ciphertexts(
            args.out.join(batch_file(i)),
            &params,
            &manifest.label(i, Content::InputBatch),
            &cts,
        )?;
    }
    b.finish_and_clear();
    // The manifest last: a directory with one is complete.
    manifest.write(&args.out)?;
    let report = EncryptReport {
        job: manifest.job.clone(),
        model: model.name.clone(),
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        key_set: manifest.key_set.clone(),
        images: test.len(),
        batches: batches.len(),
        ciphertexts_per_batch: plan.inputs,
        input_level: plan.input_level(),
        out: args.out.display().to_string(),
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} images encrypted in {} batch(es) of {} ciphertexts ({}{}, job {}) into {}",
        report.images,
        report.batches,
        report.ciphertexts_per_batch,
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
    /// Accept files made with presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
    /// Print JSON (`predictions`, and `accuracy` with `--dataset`) instead of a summary.
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
    let (enc, dec) = (Encoder::new(ctx.clone()), Decryptor::new(ctx.clone()));
    let mut predictions = Vec::new();
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
        for l in sched::decrypt_logits(&dec, &enc, &sk, &logits, count)? {
            predictions.push(reference::argmax(&l));
        }
    }
    let accuracy = match args.dataset {
        Some(kind) => {
            let test = kind.load_test(args.data_dir.as_deref())?;
            if test.len() < predictions.len() {
                bail!("{kind} has only {} test labels", test.len());
            }
            let ok = predictions
                .iter()
                .zip(&test.labels)
                .filter(|(&p, &y)| p == y as usize)
                .count();
            Some(ok as f64 / predictions.len().max(1) as f64)
        }
        None => None,
    };
    let report = DecryptReport {
        job: manifest.job.clone(),
        model: manifest.model.name.clone(),
        preset: manifest.preset.clone(),
        insecure: manifest.insecure,
        images: predictions.len(),
        predictions,
        accuracy,
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
    Ok(())
}
