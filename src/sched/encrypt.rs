//! The client's encryption of a job: images into a job directory for the server (batch files
//! and the manifest), and the client's record of them beside its keys.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::client::{ClientError, JobRecord};
use super::job::{batch_file, JobError, Manifest, MANIFEST};
use super::keys::{self, check_key_material, KeysError, PUBLIC_KEY, SECRET_KEY};
use super::latency::LatencyPlan;
use super::plan::{Plan, PlanError};
use crate::ckks::serialize::{
    load_public_key, load_secret_key, save_ciphertexts, Content, FileError, JobId,
};
use crate::ckks::{CkksError, Context, Encoder, Encryptor, Parameters, PublicKey};
use crate::io::{remove_stale_temps, write_advice, Artifact, OutputError, ReadSet};
use crate::nn::dataset::DatasetKind;
use crate::nn::images::Images;
use crate::nn::model::Model;

/// Images per batch file in latency packing.
pub const LATENCY_IMAGES_PER_FILE: usize = 16;

/// How many entries of a directory the job-directory check looks at, at most.
const SCAN_LIMIT: usize = 100_000;

/// Why a job could not be encrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The keys could not be read or do not belong together.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Encryption failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// The model does not fit the keys' parameters.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The manifest could not be written.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The client's record could not be written.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An output would replace an input.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The public and secret keys are of different key sets.
    #[error(
        "{} is of key set {pk_set}, {} of key set {sk_set}: use the files of one `keygen`",
        .public.display(),
        .secret.display()
    )]
    KeySets {
        /// The public key.
        public: PathBuf,
        /// Its key set.
        pk_set: String,
        /// The secret key.
        secret: PathBuf,
        /// Its key set.
        sk_set: String,
    },
    /// The job directory is a file.
    #[error("--out {} is a file; give a directory (created if missing)", .out.display())]
    OutIsFile {
        /// The job directory asked for.
        out: PathBuf,
    },
    /// The job directory would hand the server the secret key.
    #[error(
        "--out {} {why}: the server gets this directory, and must never get the secret key; \
         choose a directory of its own (nothing was written)",
        .out.display()
    )]
    HoldsSecrets {
        /// The job directory asked for.
        out: PathBuf,
        /// What it holds or where it is.
        why: String,
    },
    /// The job directory already holds a job.
    #[error("{} already holds an encrypted job ({MANIFEST}); choose an empty --out", .out.display())]
    AlreadyAJob {
        /// The job directory.
        out: PathBuf,
    },
    /// Nothing to encrypt.
    #[error("no images to encrypt")]
    NoImages,
    /// A label is not a class of the model.
    #[error(
        "{}: label {label} (image {index}) is not a class of model `{model}`, which has \
         {classes} (0 to {}); give the labels of these images",
        .labels.display(),
        .classes - 1
    )]
    Label {
        /// The labels file.
        labels: PathBuf,
        /// The label.
        label: u8,
        /// Its image.
        index: usize,
        /// The model's name.
        model: String,
        /// The model's classes.
        classes: usize,
    },
    /// An image's values would overflow the modulus somewhere in the plan.
    #[error("checking the {count} images of {from}: {error}")]
    Inputs {
        /// Images checked.
        count: usize,
        /// Where they came from.
        from: String,
        /// What the check found.
        error: Box<PlanError>,
    },
    /// The operating system refused (creating or reading a directory).
    #[error("cannot {what} {}: {error}{}", .path.display(), write_advice(.error))]
    Io {
        /// What was being done (`create`, `read`, `clean`).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
}

/// The client's keys for encryption, read from a key directory and checked: the public key,
/// and, where the secret key is beside it, the public and evaluation keys checked against it.
#[non_exhaustive]
pub struct EncryptionKeys {
    /// The parameters the keys were made with.
    pub params: Parameters,
    /// Their context.
    pub ctx: Arc<Context>,
    /// The public key.
    pub pk: PublicKey,
    /// The key files checked against the secret key (`public`, `evaluation`); empty when the
    /// secret key is not in the directory.
    pub checked: Vec<&'static str>,
}

impl EncryptionKeys {
    /// Opens the key directory `keys` (`keygen`'s); presets below 128-bit security need
    /// `insecure`.
    pub fn open(keys: &Path, insecure: bool) -> Result<Self, EncryptError> {
        let pk_path = keys.join(PUBLIC_KEY);
        let params = keys::parameters_of(&pk_path, insecure)?;
        let ctx = Context::new(&params)?;
        let pk = load_public_key(&pk_path, &ctx)?;
        // The client holds the secret key: the public key it encrypts with, and the
        // evaluation keys the server will get, must be made from it (a relabelled key would
        // encrypt for someone else, or make the server compute noise).
        let sk_path = keys.join(SECRET_KEY);
        let checked = if sk_path.exists() {
            let sk = load_secret_key(&sk_path, &ctx)?;
            if sk.key_set() != pk.key_set {
                return Err(EncryptError::KeySets {
                    public: pk_path,
                    pk_set: pk.key_set.to_string(),
                    secret: sk_path,
                    sk_set: sk.key_set().to_string(),
                });
            }
            check_key_material(keys, &ctx, &sk)?
        } else {
            Vec::new()
        };
        Ok(EncryptionKeys {
            params,
            ctx,
            pk,
            checked,
        })
    }
}

/// Checks that `out` can be a job directory for the server, which gets all of it: not a file,
/// not the key directory `keys`, not inside it (the client's job records live there), not
/// above it, and holding no secret key anywhere (a renamed copy, a link to one).
pub fn check_job_dir(out: &Path, keys: &Path) -> Result<(), EncryptError> {
    if out.exists() && !out.is_dir() {
        return Err(EncryptError::OutIsFile {
            out: out.to_path_buf(),
        });
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
            .map_err(|error| EncryptError::Io {
                what: "read",
                path: out.to_path_buf(),
                error,
            })?
            .map(|p| format!("holds a secret key ({})", p.display()))
    };
    match why {
        Some(why) => Err(EncryptError::HoldsSecrets {
            out: out.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

/// A job to encrypt: `images` for `model` under the keys in `keys`, into the job directory
/// `out`.
pub struct EncryptJob<'a> {
    /// The model (its input normalisation and size; its plan's depth and input level).
    pub model: &'a Model,
    /// The key directory (the job's record is kept there, in `jobs/`).
    pub keys: &'a Path,
    /// The keys, opened.
    pub opened: &'a EncryptionKeys,
    /// The job directory for the server (created if missing; must not hold another job).
    pub out: &'a Path,
    /// The images, in job order.
    pub images: &'a Images,
    /// Where they came from (kept in the record, shown by `decrypt`).
    pub source: String,
    /// The dataset they are the test split of, if any.
    pub dataset: Option<DatasetKind>,
    /// The file their labels came from (checked to be classes of the model), if any.
    pub labels_file: Option<&'a Path>,
    /// Latency packing (each image across a few ciphertexts of its own, 16 images per file)
    /// instead of batch packing (N/2 images per file).
    pub latency: bool,
}

/// What [`encrypt_job`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EncryptedJob {
    /// The new job's id.
    pub job: String,
    /// The key set the job is bound to.
    pub key_set: String,
    /// Images encrypted.
    pub images: usize,
    /// Batch files written.
    pub batches: usize,
    /// Ciphertexts per batch file, at most.
    pub ciphertexts_per_batch: usize,
    /// Images per batch file, at most.
    pub images_per_batch: usize,
    /// Ciphertexts per image in latency packing (`None`: batch packing).
    pub latency_ciphertexts: Option<usize>,
    /// The level the inputs are encrypted at.
    pub input_level: usize,
    /// The client's record of image names and labels (beside the keys).
    pub record: PathBuf,
}

/// Encrypts `job` into its job directory: every image and label checked first, then the batch
/// files, the client's record, and the manifest last (a directory with one is complete).
/// `reads` are the command's inputs, which none of the files written may replace;
/// `started(work)` is called once with the number of `tick`s to come (one per ciphertext of
/// a batch, or per image in latency packing).
pub fn encrypt_job(
    job: &EncryptJob<'_>,
    reads: &ReadSet,
    started: impl FnOnce(usize),
    tick: impl Fn() + Sync,
) -> Result<EncryptedJob, EncryptError> {
    let EncryptionKeys {
        params, ctx, pk, ..
    } = job.opened;
    let (model, images, out) = (job.model, job.images, job.out);
    let plan = Plan::compile(model)?;
    plan.check_depth(params.name(), params.max_level())?;
    if images.is_empty() {
        return Err(EncryptError::NoImages);
    }
    if let (Some(labels), Some(p)) = (&images.labels, job.labels_file) {
        let classes = model.num_classes();
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &y)| usize::from(y) >= classes)
        {
            return Err(EncryptError::Label {
                labels: p.to_path_buf(),
                label,
                index,
                model: model.name.clone(),
                classes,
            });
        }
    }
    // Every image, before anything is written: one that overflows would decrypt to garbage.
    plan.check_inputs(params, images.len(), |k| images.normalized(model, k))
        .map_err(|error| EncryptError::Inputs {
            count: images.len(),
            from: job.source.clone(),
            error: Box::new(error),
        })?;
    std::fs::create_dir_all(out).map_err(|error| EncryptError::Io {
        what: "create",
        path: out.to_path_buf(),
        error,
    })?;
    let _lock = keys::lock_dir(out, "encrypt")?;
    if out.join(MANIFEST).exists() {
        return Err(EncryptError::AlreadyAJob {
            out: out.to_path_buf(),
        });
    }
    remove_stale_temps(out, None).map_err(|error| EncryptError::Io {
        what: "clean",
        path: out.to_path_buf(),
        error,
    })?;
    let latency = match job.latency {
        false => None,
        true => Some(LatencyPlan::compile(&plan, params)?),
    };
    let per_file = match latency {
        Some(_) => LATENCY_IMAGES_PER_FILE,
        None => params.slots(),
    };
    let batches: Vec<usize> = (0..images.len())
        .step_by(per_file)
        .map(|s| per_file.min(images.len() - s))
        .collect();
    let mut manifest = Manifest::new(
        JobId::random(),
        pk.key_set,
        params,
        model,
        &plan,
        batches.clone(),
    );
    if let Some(lp) = &latency {
        manifest = manifest.in_latency_packing(lp.input_ciphertexts());
    }
    // Every file this run writes, checked before the first is written.
    for i in 0..batches.len() {
        reads.check_output(&out.join(batch_file(i)), "--out")?;
    }
    reads.check_output(&out.join(MANIFEST), "--out")?;
    reads.check_output(&JobRecord::path(job.keys, &manifest.job), "--keys")?;
    // The record's directory is made now, so that a refusal comes before any batch is written.
    let jobs = job.keys.join("jobs");
    crate::io::create_own_dir(&jobs).map_err(|error| EncryptError::Io {
        what: "create",
        path: jobs.clone(),
        error,
    })?;
    let enc = Encoder::new(ctx.clone());
    started(match latency {
        Some(_) => images.len(),
        None => batches.len() * plan.inputs,
    });
    let mut encryptor = Encryptor::new(ctx.clone());
    for (i, &count) in batches.iter().enumerate() {
        let samples: Vec<Vec<f64>> = (i * per_file..i * per_file + count)
            .map(|k| images.normalized(model, k))
            .collect();
        let cts = match &latency {
            Some(lp) => {
                let mut cts = Vec::with_capacity(count * lp.input_ciphertexts());
                for x in &samples {
                    cts.extend(lp.encrypt_image(&enc, &mut encryptor, pk, x)?);
                    tick();
                }
                cts
            }
            None => super::encrypt_batch(
                &plan,
                &enc,
                |_| Encryptor::new(ctx.clone()),
                pk,
                &samples,
                &tick,
            )?,
        };
        save_ciphertexts(
            out.join(batch_file(i)),
            params,
            &manifest.label(i, Content::InputBatch),
            &cts,
        )?;
    }
    // The client's record of the job (never sent), then the manifest last: a directory with
    // one is complete.
    let record = JobRecord {
        job: manifest.job.clone(),
        input: job.source.clone(),
        dataset: job.dataset,
        names: images.names.clone(),
        labels: images.labels.clone(),
        manifest_checksum: Some(manifest.checksum.clone()),
    };
    let record = record.write(job.keys)?;
    manifest.write(out)?;
    Ok(EncryptedJob {
        job: manifest.job.clone(),
        key_set: manifest.key_set.clone(),
        images: images.len(),
        batches: batches.len(),
        ciphertexts_per_batch: match &latency {
            Some(lp) => lp.input_ciphertexts() * per_file,
            None => plan.inputs,
        },
        images_per_batch: per_file,
        latency_ciphertexts: latency.as_ref().map(LatencyPlan::input_ciphertexts),
        input_level: plan.input_level(),
        record,
    })
}
