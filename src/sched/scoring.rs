//! Scoring a job's batches from files, by any number of workers on shared storage: a batch is
//! claimed under its lock, checked against the manifest, scored, and its logits written
//! atomically; a batch another worker finished is skipped; a damaged result is reported (and
//! scored again only when asked); and the state of every batch, for `cryptodl status`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::ckks::serialize::{
    load_ciphertexts, load_evaluation_keys, save_ciphertexts, Content, FileError,
};
use crate::ckks::{CkksError, Context, EvaluationKeys, Parameters};
use crate::io::{list_temps, lock_is_held, try_lock, write_advice, FileLock, OutputError, ReadSet};
use crate::nn::model::{Model, ModelError};

use super::job::{batch_file, logits_file, JobError, JobPacking, Manifest, MANIFEST};
use super::keys::{self, KeysError};
use super::latency::LatencyPlan;
use super::plan::{Plan, PlanError};
use super::session::Session;

/// Why a batch could not be scored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// A file does not belong to the job.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The evaluation failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// The evaluation keys could not be read.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// An output would replace an input.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A worker's log could not be written.
    #[error("cannot write the worker log under {}: {error}{}", .path.display(), write_advice(.error))]
    Log {
        /// The output directory.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// The model could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model does not fit the job's parameters.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The evaluation keys are for other parameters than the job.
    #[error(
        "{} are for {key}, but the job was encrypted for {job}; use the keys of the job's `keygen`",
        .path.display()
    )]
    OtherParameters {
        /// The evaluation keys.
        path: PathBuf,
        /// Their preset.
        key: String,
        /// The job's preset.
        job: String,
    },
    /// The evaluation keys lack a rotation the job's latency packing needs.
    #[error(
        "{} hold no Galois key for rotation {rotation}, which this job's latency packing needs \
         (`cryptodl plan --model M --packing latency` lists them); make the keys with \
         `cryptodl keygen --model M --packing latency`",
        .path.display()
    )]
    MissingRotation {
        /// The evaluation keys.
        path: PathBuf,
        /// The rotation.
        rotation: i64,
    },
    /// The job packs another number of ciphertexts per image than the model needs.
    #[error(
        "{}: the job packs {packed} ciphertexts per image, model `{model}` needs {needed} in \
         latency packing",
        .path.display()
    )]
    LatencyInputs {
        /// The manifest.
        path: PathBuf,
        /// Ciphertexts per image in the job.
        packed: usize,
        /// The model's name.
        model: String,
        /// Ciphertexts per image the model needs.
        needed: usize,
    },
    /// The operating system refused (a lock, the output directory).
    #[error("{}: {error}{}", .path.display(), write_advice(.error))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// The output directory holds another job's logits.
    #[error("{} holds the logits of another job ({found}, not {expected}); choose an empty --out", .path.display())]
    OtherJob {
        /// The output directory.
        path: PathBuf,
        /// The job it holds.
        found: String,
        /// This job.
        expected: String,
    },
    /// Logits of this job's batch are damaged on disk (after they were written).
    #[error(
        "the logits of batch {batch} are damaged: {reason}; `cryptodl status` lists every \
         damaged batch, and `cryptodl score --rescore-corrupt` scores them again"
    )]
    Damaged {
        /// The logits file.
        path: PathBuf,
        /// Its batch.
        batch: usize,
        /// What is wrong with it (naming the file).
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ScoreError + '_ {
    move |error| ScoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What scoring one batch did.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Scored now; `rescored` when it replaced damaged logits.
    Scored {
        /// Images in the batch.
        images: usize,
        /// Seconds of scoring (reading and writing excluded).
        seconds: f64,
        /// It replaced damaged logits.
        rescored: bool,
    },
    /// Its logits of this job were there already.
    Done,
    /// Another worker holds its lock.
    Busy,
}

/// Where a batch stands, for `cryptodl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchState {
    /// Its logits are there, of this job, and intact.
    Done,
    /// No logits yet.
    Missing,
    /// A worker holds its lock now.
    Running,
    /// Its logits are damaged (`score --rescore-corrupt` scores it again).
    Damaged {
        /// What is wrong.
        reason: String,
    },
    /// The file holds logits of another job, batch or model.
    Foreign {
        /// What differs.
        reason: String,
    },
}

/// The files of one job: its manifest and parameters, the encrypted batches and the output.
#[derive(Clone, Copy)]
pub struct JobFiles<'a> {
    /// The manifest (of `input`).
    pub manifest: &'a Manifest,
    /// Its parameters.
    pub params: &'a Parameters,
    /// Their context.
    pub ctx: &'a Context,
    /// The directory `cryptodl encrypt` wrote.
    pub input: &'a Path,
    /// The output directory (the logits).
    pub out: &'a Path,
}

/// What a logits file holds.
enum Found {
    Missing,
    Done,
    Damaged(FileError),
    Foreign(JobError),
}

fn lock_path(out: &Path, batch: usize) -> PathBuf {
    out.join(format!(".{}.lock", logits_file(batch)))
}

/// Removes a batch's lock file, then lets the lock go. Safe once the batch's logits exist: a
/// worker that takes the lock (on this file or a new one) finds them and skips the batch.
fn release(lock: FileLock, path: &Path) {
    let _ = std::fs::remove_file(path);
    drop(lock);
}

impl JobFiles<'_> {
    /// The logits file of batch `i`.
    pub fn logits_path(&self, i: usize) -> PathBuf {
        self.out.join(logits_file(i))
    }

    /// What the logits file of batch `i` holds (not looking at locks).
    fn examine(&self, i: usize) -> Found {
        let path = self.logits_path(i);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Found::Missing,
            _ => {}
        }
        match load_ciphertexts(&path, self.ctx) {
            Err(e) => Found::Damaged(e),
            Ok((logits, label)) => match self.manifest.check_batch(
                self.params,
                &path,
                i,
                Content::Logits,
                &label,
                &logits,
            ) {
                Ok(()) => Found::Done,
                Err(e) => Found::Foreign(e),
            },
        }
    }

    /// Where batch `i` stands. A free lock is taken for an instant to tell a running worker
    /// from a killed one; a worker that tries it in that instant comes back to it.
    pub fn state(&self, i: usize) -> BatchState {
        if let Ok(Some(true)) = lock_is_held(&lock_path(self.out, i)) {
            return BatchState::Running;
        }
        match self.examine(i) {
            Found::Missing => BatchState::Missing,
            Found::Done => BatchState::Done,
            Found::Damaged(e) => BatchState::Damaged {
                reason: e.to_string(),
            },
            Found::Foreign(e) => BatchState::Foreign {
                reason: e.to_string(),
            },
        }
    }

    /// Makes the output directory this job's: creates it, and writes the manifest there, or
    /// checks the one there is of this job.
    pub fn prepare_out(&self) -> Result<(), ScoreError> {
        std::fs::create_dir_all(self.out).map_err(io_error(self.out))?;
        match Manifest::read(self.out, true) {
            Ok((existing, _)) if existing.job != self.manifest.job => Err(ScoreError::OtherJob {
                path: self.out.to_path_buf(),
                found: existing.job,
                expected: self.manifest.job.clone(),
            }),
            Ok(_) => Ok(()),
            Err(_) if !self.out.join(MANIFEST).exists() => Ok(self.manifest.write(self.out)?),
            Err(e) => Err(e.into()),
        }
    }
}

/// A job opened by the server: its manifest, the model checked to be the one it was encrypted
/// for, and the plan of its packing. [`ServerJob::open`] also returns the evaluation keys,
/// checked to be of its key set (and, in latency packing, to hold every rotation the plan
/// needs), for the sessions to upload: the job does not keep them.
#[non_exhaustive]
pub struct ServerJob {
    /// The manifest of the job directory.
    pub manifest: Manifest,
    /// Its parameters.
    pub params: Parameters,
    /// Their context.
    pub ctx: std::sync::Arc<Context>,
    /// The model.
    pub model: Model,
    /// Its plan.
    pub plan: Plan,
    /// Its latency-packing plan, for a job in latency packing.
    pub latency: Option<LatencyPlan>,
    /// The job directory (`cryptodl encrypt`'s).
    pub input: PathBuf,
}

impl ServerJob {
    /// Opens the job in `input` for scoring with the model file `model` and the evaluation keys
    /// `eval_keys`; presets below 128-bit security need `insecure`.
    pub fn open(
        input: &Path,
        model: &Path,
        eval_keys: &Path,
        insecure: bool,
    ) -> Result<(Self, EvaluationKeys), ScoreError> {
        let (manifest, params) = Manifest::read(input, insecure)?;
        let model_path = model;
        let model = Model::load(model_path)?;
        manifest.check_model(model_path, &model)?;
        let plan = Plan::compile(&model)?;
        plan.check_depth(params.name(), params.max_level())?;
        let key_params = keys::parameters_of(eval_keys, insecure)?;
        if key_params.fingerprint() != params.fingerprint() {
            return Err(ScoreError::OtherParameters {
                path: eval_keys.to_path_buf(),
                key: key_params.name().to_string(),
                job: params.name().to_string(),
            });
        }
        let ctx = Context::new(&params)?;
        let keys = load_evaluation_keys(eval_keys, &ctx)?;
        manifest.check_key_set(eval_keys, keys.key_set)?;
        let latency = match manifest.packing {
            JobPacking::Batch => None,
            JobPacking::Latency => {
                let lp = LatencyPlan::compile(&plan, &params)?;
                if let Some(rotation) = lp
                    .rotations()
                    .into_iter()
                    .find(|&r| !keys.galois.contains_key(&ctx.galois_element(r)))
                {
                    return Err(ScoreError::MissingRotation {
                        path: eval_keys.to_path_buf(),
                        rotation,
                    });
                }
                if manifest.model.inputs != lp.input_ciphertexts() {
                    return Err(ScoreError::LatencyInputs {
                        path: input.join(MANIFEST),
                        packed: manifest.model.inputs,
                        model: model.name.clone(),
                        needed: lp.input_ciphertexts(),
                    });
                }
                Some(lp)
            }
        };
        let job = ServerJob {
            manifest,
            params,
            ctx,
            model,
            plan,
            latency,
            input: input.to_path_buf(),
        };
        Ok((job, keys))
    }

    /// Checks that the logits of `batches` written into `out` replace none of the files
    /// scoring reads (the model file `model`, the keys `eval_keys`, the manifest, every
    /// batch); logits of this job already there are fine (the scorer skips or rescores them).
    pub fn check_outputs(
        &self,
        model: &Path,
        eval_keys: &Path,
        out: &Path,
        batches: impl IntoIterator<Item = usize>,
    ) -> Result<(), ScoreError> {
        let mut reads = ReadSet::new();
        reads
            .file(model, "--model")
            .file(eval_keys, "--eval-keys")
            .file(self.input.join(MANIFEST), "the job's manifest");
        for i in 0..self.manifest.batches.len() {
            reads.file(self.input.join(batch_file(i)), "a batch of --in");
        }
        for i in batches {
            match reads.check_output(&out.join(logits_file(i)), "--out") {
                Ok(()) | Err(OutputError::Protected { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The job's files with the output directory `out`.
    pub fn files<'a>(&'a self, out: &'a Path) -> JobFiles<'a> {
        JobFiles {
            manifest: &self.manifest,
            params: &self.params,
            ctx: &self.ctx,
            input: &self.input,
            out,
        }
    }

    /// What each batch runs.
    pub fn scoring(&self) -> Scoring<'_> {
        match &self.latency {
            Some(lp) => Scoring::Latency(lp),
            None => Scoring::Batch(&self.plan),
        }
    }
}

/// What a scorer runs on each batch: the plan of the job's packing.
#[derive(Clone, Copy)]
pub enum Scoring<'a> {
    /// Batch packing.
    Batch(&'a Plan),
    /// Latency packing: each image of a batch file on its own.
    Latency(&'a LatencyPlan),
}

/// Scores batches of one job into its output directory; any number of scorers (threads,
/// processes, machines sharing the directory) may work on one job at once.
pub struct JobScorer<'a> {
    files: JobFiles<'a>,
    plan: Scoring<'a>,
    rescore_damaged: bool,
    /// Other batches are in flight on the same sessions ([`Session::score_in_flight`]).
    in_flight: bool,
    /// Temporaries found when the scorer started, by the file they were for.
    stale: Mutex<HashMap<String, Vec<PathBuf>>>,
}

impl<'a> JobScorer<'a> {
    /// A scorer of `files` with `plan` (the model the manifest names); `rescore_damaged` scores
    /// a batch again whose logits are damaged instead of stopping. Prepares the output
    /// directory ([`JobFiles::prepare_out`]) and lists the temporaries killed runs left there.
    pub fn new(
        files: JobFiles<'a>,
        plan: Scoring<'a>,
        rescore_damaged: bool,
    ) -> Result<Self, ScoreError> {
        files.prepare_out()?;
        let mut stale: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for (target, path) in list_temps(files.out).map_err(io_error(files.out))? {
            stale.entry(target).or_default().push(path);
        }
        Ok(Self {
            files,
            plan,
            rescore_damaged,
            in_flight: false,
            stale: Mutex::new(stale),
        })
    }

    /// With `true`, several workers score through each session at once: batches are scored
    /// with [`Session::score_in_flight`] (no synchronisation between steps; the same logits).
    pub fn with_in_flight(mut self, in_flight: bool) -> Self {
        self.in_flight = in_flight;
        self
    }

    /// The job's files.
    pub fn files(&self) -> &JobFiles<'a> {
        &self.files
    }

    /// Scores batch `i` with `session` unless it is done or another worker holds it.
    pub fn score_batch(&self, session: &Session, i: usize) -> Result<Outcome, ScoreError> {
        let f = &self.files;
        let name = logits_file(i);
        let out = f.out.join(&name);
        let lock_path = lock_path(f.out, i);
        let Some(lock) = try_lock(&lock_path).map_err(io_error(&lock_path))? else {
            return Ok(Outcome::Busy);
        };
        let rescored = match f.examine(i) {
            Found::Missing => false,
            Found::Done => {
                release(lock, &lock_path);
                return Ok(Outcome::Done);
            }
            Found::Damaged(_) if self.rescore_damaged => true,
            Found::Damaged(e) => {
                return Err(ScoreError::Damaged {
                    path: out,
                    batch: i,
                    reason: e.to_string(),
                })
            }
            // Another job's, batch's or model's logits: never overwritten.
            Found::Foreign(e) => return Err(e.into()),
        };
        // We hold the lock: the batch's temporaries are left over from killed runs.
        let stale = self
            .stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        for t in stale.into_iter().flatten() {
            match std::fs::remove_file(&t) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&t)(e)),
                _ => {}
            }
        }
        let path = f.input.join(batch_file(i));
        let (cts, label) = load_ciphertexts(&path, f.ctx)?;
        f.manifest
            .check_batch(f.params, &path, i, Content::InputBatch, &label, &cts)?;
        let t = Instant::now();
        let logits = match self.plan {
            Scoring::Batch(plan) if self.in_flight => session.score_in_flight(plan, &cts)?.logits,
            Scoring::Batch(plan) => session.score(plan, &cts)?.logits,
            Scoring::Latency(plan) => {
                let mut out = Vec::with_capacity(f.manifest.batches[i]);
                for image in cts.chunks(plan.input_ciphertexts()) {
                    out.extend(session.score_latency(plan, image)?.logits);
                }
                out
            }
        };
        drop(cts);
        let seconds = t.elapsed().as_secs_f64();
        save_ciphertexts(
            &out,
            f.params,
            &f.manifest.label(i, Content::Logits),
            &logits,
        )?;
        release(lock, &lock_path);
        Ok(Outcome::Scored {
            images: f.manifest.batches[i],
            seconds,
            rescored,
        })
    }
}
