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

use super::output::bar;
use super::output::print_json;
use super::server::Packing;
use super::warn_insecure;
use crate::circuits::BootstrapConfig;
use crate::ckks::serialize::{
    load_evaluation_keys, load_public_key, load_secret_key, read_header, save_ciphertexts,
    save_evaluation_keys, save_public_key, save_secret_key, Content, FileError, JobId,
};
use crate::ckks::{
    Context, Encoder, Encryptor, KeyGenerator, Parameters, Preset, SecretKey, PRESETS,
};
use crate::io::{remove_stale_temps, try_lock, Artifact, ReadSet};
use crate::nn::dataset::DatasetKind;
use crate::nn::images::{self, Images, Resize};
use crate::nn::model::Model;
use crate::nn::reference;
use crate::sched::client::JobRecord;
use crate::sched::job::{batch_file, logits_file, Manifest, MANIFEST};
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
    check_key_dir(&args.out)?;
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
    let rotations = match (&model, latency) {
        (Some(m), true) => LatencyPlan::compile(&Plan::compile(m)?, &params)?.rotations(),
        _ => Vec::new(),
    };
    let ek = match &bootstrap {
        None => kg.evaluation_keys(&sk, &rotations, false)?,
        Some(c) => {
            let spinner = super::output::bar(0, "bootstrapping keys", args.json);
            let ek = c.keys(&mut kg, &sk, &params, &rotations)?;
            spinner.finish_and_clear();
            ek
        }
    };
    let rotations = ek.galois.len();
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
        rotations,
        bootstrap: bootstrap.is_some(),
        bootstrap_slots: bootstrap.as_ref().and_then(|c| c.slots),
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
    /// The key files beside the secret key checked against it (`public`, `evaluation`); empty
    /// when the secret key is not in the key directory.
    keys_checked: Vec<&'static str>,
    /// Files of an --input directory that are not images and were not read.
    ignored_files: Vec<String>,
    out: String,
}

/// How many entries of a directory the checks below look at, at most.
const SCAN_LIMIT: usize = 100_000;

/// Checks that `out` can be a job directory for the server, which gets all of it: not a file,
/// not the key directory `keys`, not inside it (the client's job records live there), not
/// above it, and holding no secret key anywhere (a renamed copy, a link to one).
fn check_job_dir(out: &Path, keys: &Path) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {} is a file; give a directory (created if missing)",
            out.display()
        );
    }
    let (o, k) = (
        crate::io::resolve_existing(out),
        crate::io::resolve_existing(keys),
    );
    let why = if k.starts_with(&o) {
        Some(format!(
            "holds (or is) the key directory {}",
            keys.display()
        ))
    } else if o.starts_with(&k) {
        Some(format!(
            "is inside the key directory {} (which holds the secret key and the client's job records)",
            keys.display()
        ))
    } else {
        crate::io::find_artifact(out, Artifact::SecretKey, SCAN_LIMIT)
            .with_context(|| format!("cannot read {}", out.display()))?
            .map(|p| format!("holds a secret key ({})", p.display()))
    };
    if let Some(why) = why {
        bail!(
            "--out {} {why}: the server gets this directory, and must never get the secret key; \
             choose a directory of its own (nothing was written)",
            out.display()
        );
    }
    Ok(())
}

/// Checks that keys may be written into `out`: not a job directory or one inside a job
/// directory (the server gets those), which a job's manifest marks.
fn check_key_dir(out: &Path) -> anyhow::Result<()> {
    let o = crate::io::resolve_existing(out);
    for dir in o.ancestors() {
        let m = dir.join(MANIFEST);
        if crate::io::artifact(&m).ok().flatten() == Some(Artifact::JobFile) {
            bail!(
                "--out {} is {} {} (its {MANIFEST}): the server gets that directory, and must \
                 never get the secret key; keep the keys in a directory of their own (nothing \
                 was written)",
                out.display(),
                if dir == o {
                    "the job directory"
                } else {
                    "inside the job directory"
                },
                dir.display()
            );
        }
    }
    Ok(())
}

/// The files of the key directory `keys` a client command reads, for its outputs' check.
fn key_files(reads: &mut ReadSet, keys: &Path) {
    reads
        .file(keys.join(SECRET_KEY), "the secret key of --keys")
        .file(keys.join(PUBLIC_KEY), "the public key of --keys")
        .file(keys.join(EVAL_KEYS), "the evaluation keys of --keys");
}

/// Checks the key material beside the secret key `sk` in `keys` (the public key, the
/// evaluation keys) against it: files of another `keygen` relabelled with this key set's id
/// are refused before they are used. Returns which were checked.
fn check_key_material(
    keys: &Path,
    ctx: &std::sync::Arc<Context>,
    sk: &SecretKey,
) -> anyhow::Result<Vec<&'static str>> {
    let mut checked = Vec::new();
    let pk_path = keys.join(PUBLIC_KEY);
    if pk_path.exists() {
        let pk = load_public_key(&pk_path, ctx)?;
        pk.check_against(ctx, sk)
            .with_context(|| pk_path.display().to_string())?;
        checked.push("public");
    }
    let ek_path = keys.join(EVAL_KEYS);
    if ek_path.exists() {
        let ek = load_evaluation_keys(&ek_path, ctx)?;
        ek.check_against(ctx, sk)
            .with_context(|| ek_path.display().to_string())?;
        checked.push("evaluation");
    }
    Ok(checked)
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
    let pk_path = args.keys.join(PUBLIC_KEY);
    let params = parameters_of(&pk_path, args.insecure)?;
    warn_insecure(&params, args.json);
    let plan = Plan::compile(&model)?;
    plan.check_depth(params.name(), params.max_level())?;
    let ctx = Context::new(&params)?;
    let pk = load_public_key(&pk_path, &ctx)?;
    // The client holds the secret key: the public key it encrypts with, and the evaluation
    // keys the server will get, must be made from it (a relabelled key would encrypt for
    // someone else, or make the server compute noise).
    let sk_path = args.keys.join(SECRET_KEY);
    let keys_checked = if sk_path.exists() {
        let sk = load_secret_key(&sk_path, &ctx)?;
        if sk.key_set() != pk.key_set {
            bail!(
                "{} is of key set {}, {} of key set {}: use the files of one `keygen`",
                pk_path.display(),
                pk.key_set,
                sk_path.display(),
                sk.key_set()
            );
        }
        check_key_material(&args.keys, &ctx, &sk)?
    } else {
        Vec::new()
    };
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
    if test.is_empty() {
        bail!("no images to encrypt");
    }
    if let (Some(labels), Some(p)) = (&test.labels, &args.labels) {
        let classes = model.num_classes();
        if let Some((i, &y)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &y)| usize::from(y) >= classes)
        {
            bail!(
                "{}: label {y} (image {i}) is not a class of model `{}`, which has {classes} \
                 (0 to {}); give the labels of these images",
                p.display(),
                model.name,
                classes - 1
            );
        }
    }
    // Every image, before anything is written: one that overflows would decrypt to garbage.
    plan.check_inputs(&params, test.len(), |k| test.normalized(&model, k))
        .with_context(|| format!("checking the {} images of {source}", test.len()))?;
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
    // Every file this run writes, checked before the first is written.
    for i in 0..batches.len() {
        reads.check_output(&args.out.join(batch_file(i)), "--out")?;
    }
    reads.check_output(&args.out.join(MANIFEST), "--out")?;
    reads.check_output(&JobRecord::path(&args.keys, &manifest.job), "--keys")?;
    // The record's directory is made now, so that a refusal comes before any batch is written.
    let jobs = args.keys.join("jobs");
    crate::io::create_own_dir(&jobs)
        .with_context(|| format!("cannot create {}", jobs.display()))?;
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
    let record = JobRecord {
        job: manifest.job.clone(),
        input: source.clone(),
        dataset,
        names: test.names.clone(),
        labels: test.labels.clone(),
        manifest_checksum: Some(manifest.checksum.clone()),
    };
    let sources_path = record.write(&args.keys)?;
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
        keys_checked,
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
    let keys_checked = check_key_material(&args.keys, &ctx, &sk)?;
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
