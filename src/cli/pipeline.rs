//! `cryptodl keygen` / `encrypt` / `score` / `decrypt`: batch scoring of an encrypted dataset as
//! separate client and server steps that exchange files.
//!
//! * client `keygen --out KEYS`: `KEYS/secret.key` (stays with the client), `KEYS/public.key`,
//!   `KEYS/eval.keys` (the only key the server gets: relinearization);
//! * client `encrypt --model M --keys KEYS --out ENC`: the test images in batches of N/2,
//!   `ENC/batch-00000.cts`, ... and `ENC/manifest.json` (model, preset, images per batch);
//! * server `score --model M --eval-keys KEYS/eval.keys --in ENC --out SCORED`: one
//!   `SCORED/logits-00000.cts` per batch, each written atomically; a re-run skips the batches
//!   already scored, so an interrupted run resumes;
//! * client `decrypt --keys KEYS --in SCORED`: the predicted class of every image (and the
//!   accuracy against the dataset's labels).
//!
//! Every file names its parameters by fingerprint, so no step needs `--preset` after `keygen`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::infer::bar;
use super::output::print_json;
use super::server::ServerArgs;
use crate::ckks::serialize::{
    load_ciphertexts, load_evaluation_keys, load_public_key, load_secret_key, read_header,
    save_ciphertexts, save_evaluation_keys, save_public_key, save_secret_key,
};
use crate::ckks::{
    Context, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters, Preset, PRESETS,
};
use crate::io::write_bytes_atomic;
use crate::nn::dataset::DatasetKind;
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::{self, Plan, Session};

const SECRET_KEY: &str = "secret.key";
const PUBLIC_KEY: &str = "public.key";
const EVAL_KEYS: &str = "eval.keys";
const MANIFEST: &str = "manifest.json";

fn batch_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("batch-{i:05}.cts"))
}

fn logits_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("logits-{i:05}.cts"))
}

/// What `encrypt` sends along with the ciphertexts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Manifest {
    /// Model name (the server must score with the same model).
    model: String,
    /// Parameter preset.
    preset: String,
    /// Images in each batch.
    batches: Vec<usize>,
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: is {} the output directory of `cryptodl encrypt` (or `score`)?",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid manifest", path.display()))
}

fn write_manifest(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(m)?;
    write_bytes_atomic(&dir.join(MANIFEST), text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))
}

/// The parameters a key or ciphertext file was made with (found by its fingerprint).
fn parameters_of(path: &Path, insecure: bool) -> anyhow::Result<Parameters> {
    let header = read_header(path)?;
    for p in PRESETS {
        let params = p.parameters(true)?;
        if params.fingerprint() == header.fingerprint {
            return Ok(p.parameters(insecure)?);
        }
    }
    anyhow::bail!(
        "{} was made with parameters that are not a preset (fingerprint {:016x}); files from a newer or custom build cannot be read here",
        path.display(),
        header.fingerprint
    )
}

/// Arguments of `cryptodl keygen`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/secret.key (keep it: only `decrypt` needs it), DIR/public.key (for \
`encrypt`) and DIR/eval.keys (send it to the server with the ciphertexts)."
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
}

/// Runs `cryptodl keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let params = Preset::by_name(&args.preset)?.parameters(args.insecure)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let sk_path = args.out.join(SECRET_KEY);
    if sk_path.exists() {
        anyhow::bail!(
            "{} exists; remove it or choose another --out (keys are never overwritten)",
            sk_path.display()
        );
    }
    let ctx = Context::new(&params)?;
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    save_public_key(args.out.join(PUBLIC_KEY), &params, &kg.public_key(&sk))?;
    save_evaluation_keys(
        args.out.join(EVAL_KEYS),
        &params,
        &kg.evaluation_keys(&sk, &[], false)?,
    )?;
    save_secret_key(&sk_path, &params, &sk)?;
    if params.is_insecure() {
        println!("WARNING: preset {} is INSECURE", params.name());
    }
    println!(
        "keys for {} written to {} (send only {} to the server)",
        params.name(),
        args.out.display(),
        EVAL_KEYS
    );
    Ok(())
}

/// Arguments of `cryptodl encrypt`.
#[derive(clap::Args, Debug)]
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
    /// Encrypt the first N test images (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory for the server (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Accept key files made with presets below 128-bit security.
    #[arg(long)]
    insecure: bool,
}

/// Runs `cryptodl encrypt`.
pub fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let pk_path = args.keys.join(PUBLIC_KEY);
    let params = parameters_of(&pk_path, args.insecure)?;
    let plan = Plan::compile(&model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let ctx = Context::new(&params)?;
    let pk = load_public_key(&pk_path, &ctx)?;
    let (_, test) =
        super::eval::test_set(&model, args.dataset, args.data_dir.as_deref(), args.limit)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let enc = Encoder::new(ctx.clone());
    let slots = params.slots();
    let batches: Vec<usize> = (0..test.len())
        .step_by(slots)
        .map(|s| slots.min(test.len() - s))
        .collect();
    let b = bar(batches.len() * plan.inputs, "encrypt", false);
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
        save_ciphertexts(batch_file(&args.out, i), &params, &cts)?;
    }
    b.finish_and_clear();
    write_manifest(
        &args.out,
        &Manifest {
            model: model.name.clone(),
            preset: params.name().to_string(),
            batches: batches.clone(),
        },
    )?;
    println!(
        "{} images encrypted in {} batch(es) of {} ciphertexts ({}) into {}",
        test.len(),
        batches.len(),
        plan.inputs,
        params.name(),
        args.out.display()
    );
    Ok(())
}

/// Arguments of `cryptodl score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The model (polynomial activations of degree 2 or 3).
    #[arg(long)]
    model: PathBuf,
    /// The evaluation keys (`eval.keys` from `cryptodl keygen`); no secret key is needed.
    #[arg(long)]
    eval_keys: PathBuf,
    /// Directory written by `cryptodl encrypt`.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output directory for the client (created if missing); batches already scored there are
    /// skipped, so a re-run resumes.
    #[arg(long)]
    out: PathBuf,
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
    model: String,
    preset: String,
    backend: String,
    batches: usize,
    scored: usize,
    skipped: usize,
    images: usize,
    server_s: f64,
}

fn score_batches(
    session: &Session,
    ctx: &std::sync::Arc<Context>,
    args: &ScoreArgs,
    plan: &Plan,
    manifest: &Manifest,
    report: &mut ScoreReport,
) -> anyhow::Result<()> {
    let b = bar(manifest.batches.len(), "score: batches", args.json);
    for (i, &count) in manifest.batches.iter().enumerate() {
        let out = logits_file(&args.out, i);
        // A batch whose logits file loads is done (files are written atomically).
        if out.exists() && load_ciphertexts(&out, ctx).is_ok() {
            report.skipped += 1;
            b.inc(1);
            continue;
        }
        let cts = load_ciphertexts(batch_file(&args.input, i), ctx)?;
        let t = Instant::now();
        let logits = session.score(plan, &cts)?.logits;
        drop(cts);
        report.server_s += t.elapsed().as_secs_f64();
        save_ciphertexts(&out, ctx.params(), &logits)?;
        report.scored += 1;
        report.images += count;
        b.inc(1);
    }
    b.finish_and_clear();
    Ok(())
}

/// Runs `cryptodl score` (server side).
pub fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let manifest = read_manifest(&args.input)?;
    if manifest.model != model.name {
        anyhow::bail!(
            "{} was encrypted for model `{}`, not `{}`",
            args.input.display(),
            manifest.model,
            model.name
        );
    }
    let params = parameters_of(&args.eval_keys, args.insecure)?;
    if params.name() != manifest.preset {
        anyhow::bail!(
            "the evaluation keys are for {} but the ciphertexts for {}; use the keys from the same `keygen`",
            params.name(),
            manifest.preset
        );
    }
    let plan = Plan::compile(&model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let ctx = Context::new(&params)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let session = Session::new(
        args.server.device()?,
        ctx.clone(),
        &load_evaluation_keys(&args.eval_keys, &ctx)?,
    )?;
    let mut report = ScoreReport {
        model: model.name.clone(),
        preset: params.name().to_string(),
        backend: session.backend_name(),
        batches: manifest.batches.len(),
        scored: 0,
        skipped: 0,
        images: 0,
        server_s: 0.0,
    };
    score_batches(&session, &ctx, &args, &plan, &manifest, &mut report)?;
    write_manifest(&args.out, &manifest)?;
    if args.json {
        return print_json(&report);
    }
    println!(
        "scored {} batch(es) ({} images) in {:.1} s on {}; {} already done; logits in {}",
        report.scored,
        report.images,
        report.server_s,
        report.backend,
        report.skipped,
        args.out.display()
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
    model: String,
    preset: String,
    images: usize,
    predictions: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
}

/// Runs `cryptodl decrypt` (client side).
pub fn decrypt(args: DecryptArgs) -> anyhow::Result<()> {
    let manifest = read_manifest(&args.input)?;
    let sk_path = args.keys.join(SECRET_KEY);
    let params = parameters_of(&sk_path, args.insecure)?;
    if params.name() != manifest.preset {
        anyhow::bail!(
            "the secret key is for {} but the logits for {}",
            params.name(),
            manifest.preset
        );
    }
    let ctx = Context::new(&params)?;
    let sk = load_secret_key(&sk_path, &ctx)?;
    let (enc, dec) = (Encoder::new(ctx.clone()), Decryptor::new(ctx.clone()));
    let mut predictions = Vec::new();
    for (i, &count) in manifest.batches.iter().enumerate() {
        let path = logits_file(&args.input, i);
        let logits = load_ciphertexts(&path, &ctx).with_context(|| {
            format!("batch {i} is not scored yet: run `cryptodl score` again (it resumes)")
        })?;
        for l in sched::decrypt_logits(&dec, &enc, &sk, &logits, count)? {
            predictions.push(reference::argmax(&l));
        }
    }
    let accuracy = match args.dataset {
        Some(kind) => {
            let test = kind.load(args.data_dir.as_deref())?.test;
            if test.len() < predictions.len() {
                anyhow::bail!("{kind} has only {} test labels", test.len());
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
        model: manifest.model.clone(),
        preset: manifest.preset.clone(),
        images: predictions.len(),
        predictions,
        accuracy,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} predictions decrypted ({} on {}){}",
        report.images,
        report.model,
        report.preset,
        report
            .accuracy
            .map(|a| format!("; accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default()
    );
    Ok(())
}
