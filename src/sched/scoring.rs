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

use crate::ckks::serialize::{load_ciphertexts, save_ciphertexts, Content, FileError};
use crate::ckks::{CkksError, Context, Parameters};
use crate::io::{list_temps, lock_is_held, try_lock, write_advice, FileLock};

use super::job::{batch_file, logits_file, JobError, Manifest, MANIFEST};
use super::latency::LatencyPlan;
use super::plan::Plan;
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
