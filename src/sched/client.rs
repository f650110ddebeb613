//! The client's side of a job on disk: its record of the job (`KEYS/jobs/JOB.json`, never sent
//! to the server: where the images came from, their names and labels, and the manifest it
//! wrote) and the decryption of a scored job, which trusts nothing the server sent beyond what
//! the secret key and that record can confirm.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::job::{logits_file, JobError, JobPacking, Manifest};
use super::keys::{self, check_key_material, KeysError, SECRET_KEY};
use crate::ckks::serialize::{load_ciphertexts, load_secret_key, Content, FileError};
use crate::ckks::{Ciphertext, CkksError, Context, Decryptor, Encoder, Parameters, SecretKey};
use crate::nn::dataset::DatasetKind;

/// The largest job record read (1 GiB).
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// A decrypted value beyond `1 / IMPLAUSIBLE_FRACTION` of what its level holds
/// (`Q_l / (2 scale)`) is not a result of the plan: [`super::Plan::check_magnitudes`] keeps
/// every value 16 times below that bound, and a ciphertext that was not computed under this
/// secret key decrypts to values spread over the whole modulus.
const IMPLAUSIBLE_FRACTION: f64 = 4.0;

/// Why a scored job could not be decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A file does not belong to the job.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Decryption failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// The key directory could not be read, or its files do not belong together.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The secret key is for other parameters than the job.
    #[error("the secret key {} is for {key}, the logits for {job}", .path.display())]
    OtherParameters {
        /// The secret key.
        path: PathBuf,
        /// Its preset.
        key: String,
        /// The job's preset.
        job: String,
    },
    /// The record is missing, damaged or of another job.
    #[error("{}: {reason}", .path.display())]
    Record {
        /// The record.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A batch has no logits yet.
    #[error(
        "{} is missing: batch {batch} is not scored yet; run `cryptodl score` again (it resumes)",
        .path.display()
    )]
    NotScored {
        /// The logits file.
        path: PathBuf,
        /// Its batch.
        batch: usize,
    },
    /// Logits that decrypt to values no plan produces.
    #[error(
        "{}: {beyond} of {total} decrypted values lie beyond {limit:.3e} (the largest reaches \
         {largest:.3e}), where a result of this job cannot be: the plan keeps every value 16 \
         times below {bound:.3e}, the wrap-around of level {level}. They were not computed with \
         this key set's evaluation keys (keys of another `keygen` relabelled with this key \
         set's id, or damaged behind a recomputed checksum): score the job again with the \
         eval.keys `keygen` wrote beside this secret key. Nothing was written",
        .path.display()
    )]
    Implausible {
        /// The logits file.
        path: PathBuf,
        /// Values beyond the limit.
        beyond: usize,
        /// Values checked.
        total: usize,
        /// The largest magnitude found.
        largest: f64,
        /// The limit (`bound / 4`).
        limit: f64,
        /// `Q_l / (2 scale)`.
        bound: f64,
        /// The logits' level.
        level: usize,
    },
}

/// What the client keeps of a job beside its keys (`KEYS/jobs/JOB.json`, never sent to the
/// server): where the images came from, their names and labels, in job order, and the checksum
/// of the manifest it wrote, so that `decrypt` takes only that job's manifest back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job: String,
    /// Where the images came from (a path, or `KIND test split`).
    pub input: String,
    /// The dataset whose test split the images are; `None` for the user's own files.
    #[serde(default)]
    pub dataset: Option<DatasetKind>,
    /// One name per image.
    pub names: Vec<String>,
    /// One label per image, when known.
    pub labels: Option<Vec<u8>>,
    /// The checksum of the manifest `encrypt` wrote (absent in records of older builds).
    #[serde(default)]
    pub manifest_checksum: Option<String>,
}

impl JobRecord {
    /// Where the record of `job` lives under the key directory `keys`.
    pub fn path(keys: &Path, job: &str) -> PathBuf {
        keys.join("jobs").join(format!("{job}.json"))
    }

    /// Writes the record atomically under `keys/jobs/` (a directory of cryptodl's own, never
    /// reached through a link).
    pub fn write(&self, keys: &Path) -> Result<PathBuf, ClientError> {
        let path = Self::path(keys, &self.job);
        let bad = |e: std::io::Error| ClientError::Record {
            path: path.clone(),
            reason: format!("cannot write: {e}{}", crate::io::write_advice(&e)),
        };
        crate::io::create_own_dir(&keys.join("jobs")).map_err(bad)?;
        let text = serde_json::to_vec(self).map_err(|e| bad(std::io::Error::other(e)))?;
        crate::io::write_bytes_atomic(&path, &text).map_err(bad)?;
        Ok(path)
    }

    /// The record of `manifest`'s job under `keys`, if the client has it; checked against the
    /// manifest (job, image count, the manifest's checksum).
    pub fn read(keys: &Path, manifest: &Manifest) -> Result<Option<JobRecord>, ClientError> {
        let path = Self::path(keys, &manifest.job);
        let bad = |reason: String| ClientError::Record {
            path: path.clone(),
            reason,
        };
        let f = match crate::io::open_regular(&path) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(bad("not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        };
        let mut text = Vec::new();
        f.take(MAX_RECORD_BYTES)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        let r: JobRecord = serde_json::from_slice(&text).map_err(|e| {
            bad(format!(
                "damaged ({e}); move it away to decrypt without image names"
            ))
        })?;
        let images: usize = manifest.batches.iter().sum();
        if r.job != manifest.job
            || r.names.len() != images
            || r.labels.as_ref().is_some_and(|l| l.len() != images)
        {
            return Err(bad(format!(
                "does not describe job {} of {images} images; move it away to decrypt without image names",
                manifest.job
            )));
        }
        if let Some(sum) = &r.manifest_checksum {
            if *sum != manifest.checksum {
                return Err(bad(format!(
                    "the manifest beside the logits is not the one `encrypt` wrote for job {} \
                     (checksum {}, recorded {sum}): it was edited after encryption; decrypt \
                     with the manifest `encrypt` wrote",
                    manifest.job, manifest.checksum
                )));
            }
        }
        Ok(Some(r))
    }

    /// The dataset the images are the test split of: the recorded one, or (records of older
    /// builds) the one `input` names.
    pub fn dataset(&self) -> Option<DatasetKind> {
        self.dataset.or_else(|| {
            self.input
                .strip_suffix(" test split")
                .and_then(|k| k.parse().ok())
        })
    }
}

/// The bound `Q_l / (2 scale)` of a ciphertext's level: no value it holds can exceed it.
fn wrap_bound(ctx: &Context, ct: &Ciphertext) -> f64 {
    let log_q: f64 = ctx.params().q()[..=ct.level()]
        .iter()
        .map(|&q| f64::from(q).log2())
        .sum();
    (log_q - 1.0 - ct.scale().log2()).exp2()
}

/// Checks that `values` (decrypted from `ct`, of the file `path`) are results a plan can
/// produce: every one below a quarter of [`wrap_bound`].
fn check_plausible(
    ctx: &Context,
    path: &Path,
    ct: &Ciphertext,
    values: &[f64],
) -> Result<(), ClientError> {
    let bound = wrap_bound(ctx, ct);
    let limit = bound / IMPLAUSIBLE_FRACTION;
    let beyond = values
        .iter()
        .filter(|v| !v.is_finite() || v.abs() > limit)
        .count();
    if beyond == 0 {
        return Ok(());
    }
    Err(ClientError::Implausible {
        path: path.to_path_buf(),
        beyond,
        total: values.len(),
        largest: values.iter().fold(0.0f64, |m, v| m.max(v.abs())),
        limit,
        bound,
        level: ct.level(),
    })
}

/// The secret key of the key directory `keys` for the job of `manifest` (at `params`): checked
/// to be of the job's parameters and key set, with the key files beside it checked against
/// it. Returns its context, the key, and which key files were checked (`public`,
/// `evaluation`).
pub fn open_secret_key(
    keys: &Path,
    manifest: &Manifest,
    params: &Parameters,
    insecure: bool,
) -> Result<(std::sync::Arc<Context>, SecretKey, Vec<&'static str>), ClientError> {
    let sk_path = keys.join(SECRET_KEY);
    let key_params = keys::parameters_of(&sk_path, insecure)?;
    if key_params.fingerprint() != params.fingerprint() {
        return Err(ClientError::OtherParameters {
            path: sk_path,
            key: key_params.name().to_string(),
            job: params.name().to_string(),
        });
    }
    let ctx = Context::new(params)?;
    let sk = load_secret_key(&sk_path, &ctx)?;
    manifest.check_key_set(&sk_path, sk.key_set())?;
    let checked = check_key_material(keys, &ctx, &sk)?;
    Ok((ctx, sk, checked))
}

/// Decrypts the logits of a scored job in `dir` (whose manifest is `manifest`) with `sk`: every
/// batch's file checked against the manifest (job, key set, model, batch, level), then
/// decrypted, and every logit checked to be a value the plan can produce. Returns one vector
/// of `manifest.model.outputs` logits per image, in job order; `progress` is called once per
/// batch.
pub fn decrypt_job(
    manifest: &Manifest,
    dir: &Path,
    ctx: &std::sync::Arc<Context>,
    sk: &SecretKey,
    mut progress: impl FnMut(),
) -> Result<Vec<Vec<f64>>, ClientError> {
    let params = ctx.params();
    let (enc, dec) = (Encoder::new(ctx.clone()), Decryptor::new(ctx.clone()));
    let outputs = manifest.model.outputs;
    let mut all = Vec::with_capacity(manifest.batches.iter().sum());
    for (i, &count) in manifest.batches.iter().enumerate() {
        let path = dir.join(logits_file(i));
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(ClientError::NotScored { path, batch: i });
        }
        let (logits, label) = load_ciphertexts(&path, ctx)?;
        manifest.check_batch(params, &path, i, Content::Logits, &label, &logits)?;
        match manifest.packing {
            JobPacking::Batch => {
                // Slot s of ciphertext k: logit k of image s.
                let mut per_class = Vec::with_capacity(logits.len());
                for ct in &logits {
                    let mut v = enc.decode(&dec.decrypt(ct, sk)?);
                    v.truncate(count);
                    check_plausible(ctx, &path, ct, &v)?;
                    per_class.push(v);
                }
                all.extend((0..count).map(|s| per_class.iter().map(|c| c[s]).collect()));
            }
            JobPacking::Latency => {
                // One ciphertext per image, its logits in the first slots.
                for ct in &logits {
                    let mut v = enc.decode(&dec.decrypt(ct, sk)?);
                    v.truncate(outputs);
                    check_plausible(ctx, &path, ct, &v)?;
                    all.push(v);
                }
            }
        }
        progress();
    }
    Ok(all)
}
