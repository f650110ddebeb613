//! The files of one scoring job, bound together: the manifest and every batch and logits file
//! carry the job's random id, the key set, and the model's digest; each check names the file
//! and the two values that differ.
//!
//! * `cryptodl encrypt` draws a [`JobId`], writes one input batch per N/2 images (labelled
//!   [`Content::InputBatch`], with the batch's index and image count) and the [`Manifest`];
//! * `cryptodl score` checks the evaluation keys, the model and every batch against the
//!   manifest, and writes logits labelled [`Content::Logits`] with the same identity (a re-run
//!   skips only logits of this job and batch);
//! * `cryptodl decrypt` accepts only logits of its job and key set, one ciphertext per model
//!   output, at the level the plan ends at.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ckks::serialize::{CiphertextLabel, Content, FileError, JobId};
use crate::ckks::{Ciphertext, KeySetId, Parameters, Preset};
use crate::nn::model::Model;

use super::plan::Plan;

/// The manifest's file name in a job's directories.
pub const MANIFEST: &str = "manifest.json";

/// The file name of input batch `i` (`batch-00000.cts`, ...).
pub fn batch_file(i: usize) -> String {
    format!("batch-{i:05}.cts")
}

/// The file name of the logits of batch `i` (`logits-00000.cts`, ...).
pub fn logits_file(i: usize) -> String {
    format!("logits-{i:05}.cts")
}
/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 2;
/// The largest manifest read (1 MiB), checked before reading.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most batches a job may have.
pub const MAX_BATCHES: usize = 1 << 20;

/// Why the files of a job do not fit together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A key or ciphertext file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The manifest is missing, damaged or inconsistent.
    #[error("{}: {reason}", .path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file belongs to another job, key set, model or batch than the one at hand.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
}

/// A field of a file that differs from the reference (boxed in [`JobError::Mismatch`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("{}: {what} is {found}, but {reference} says {expected}{advice}", .path.display())]
pub struct Mismatch {
    /// The file.
    pub path: PathBuf,
    /// The field that differs.
    pub what: &'static str,
    /// What the reference says.
    pub expected: String,
    /// What the file holds.
    pub found: String,
    /// The reference (the manifest, the keys, the model).
    pub reference: String,
    /// What to do, with a leading separator (or empty).
    pub advice: &'static str,
}

/// The model a job was encrypted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Its name.
    pub name: String,
    /// [`Model::digest`], hex.
    pub digest: String,
    /// Input values (ciphertexts per batch).
    pub inputs: usize,
    /// Outputs (logit ciphertexts per batch).
    pub outputs: usize,
    /// Levels the plan consumes (the logits end `depth` levels below the input level).
    pub depth: usize,
}

/// What `encrypt` writes beside the batches, and `score` copies beside the logits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The job's random id, hex.
    pub job: String,
    /// The key set's id, hex.
    pub key_set: String,
    /// Parameter preset.
    pub preset: String,
    /// The parameters' fingerprint, hex.
    pub fingerprint: String,
    /// The preset is below 128-bit security (every output of the job says so).
    pub insecure: bool,
    /// The model.
    pub model: ModelRef,
    /// The level the inputs are encrypted at.
    pub input_level: usize,
    /// Images in each batch, in order.
    pub batches: Vec<usize>,
    /// How images are packed (absent: batch packing).
    #[serde(default, skip_serializing_if = "JobPacking::is_batch")]
    pub packing: JobPacking,
    /// SHA-256 (hex) of this JSON with `checksum` empty.
    pub checksum: String,
}

/// How a job's images are packed into ciphertexts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPacking {
    /// Image `s` in slot `s` of every ciphertext: a batch file holds one ciphertext per input
    /// value ([`ModelRef::inputs`]), a logits file one per class ([`ModelRef::outputs`]).
    #[default]
    Batch,
    /// Each image across [`ModelRef::inputs`] ciphertexts of its own
    /// ([`crate::sched::latency`]): a batch file holds those of each of its images in turn, a
    /// logits file one ciphertext per image.
    Latency,
}

impl JobPacking {
    /// Whether this is batch packing.
    pub fn is_batch(&self) -> bool {
        *self == JobPacking::Batch
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Manifest {
    /// The manifest of a new job.
    pub fn new(
        job: JobId,
        key_set: KeySetId,
        params: &Parameters,
        model: &Model,
        plan: &Plan,
        batches: Vec<usize>,
    ) -> Self {
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            job: job.to_string(),
            key_set: key_set.to_string(),
            preset: params.name().to_string(),
            fingerprint: format!("{:016x}", params.fingerprint()),
            insecure: params.is_insecure(),
            model: ModelRef {
                name: model.name.clone(),
                digest: hex::encode(model.digest()),
                inputs: plan.inputs,
                outputs: plan.outputs,
                depth: plan.depth(),
            },
            input_level: plan.input_level(),
            batches,
            packing: JobPacking::Batch,
            checksum: String::new(),
        };
        m.checksum = m.computed_checksum();
        m
    }

    /// The manifest of a job in latency packing: each image is `inputs` ciphertexts of its own.
    pub fn in_latency_packing(mut self, inputs: usize) -> Self {
        self.packing = JobPacking::Latency;
        self.model.inputs = inputs;
        self.checksum = self.computed_checksum();
        self
    }

    /// The checksum of the other fields (what `checksum` must hold).
    pub fn computed_checksum(&self) -> String {
        let unsigned = Manifest {
            checksum: String::new(),
            ..self.clone()
        };
        sha256_hex(
            serde_json::to_string(&unsigned)
                .expect("a manifest serializes")
                .as_bytes(),
        )
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        JobId::from_hex(&self.job).unwrap_or_default()
    }

    /// The key set's id.
    pub fn key_set_id(&self) -> KeySetId {
        KeySetId::from_hex(&self.key_set).unwrap_or_default()
    }

    /// The model's digest.
    pub fn model_digest(&self) -> [u8; 32] {
        let mut d = [0u8; 32];
        let _ = hex::decode_to_slice(&self.model.digest, &mut d);
        d
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), JobError> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        crate::io::write_bytes_atomic(&path, text.as_bytes()).map_err(|e| JobError::Manifest {
            path,
            reason: format!("cannot write: {e}{}", crate::io::write_advice(&e)),
        })
    }

    /// Reads and checks `dir/manifest.json`: a regular file of at most [`MAX_MANIFEST_BYTES`],
    /// of this format, with a matching checksum, and every field in range for its preset (ids
    /// of 32 hex digits, the preset's fingerprint, 1 to [`MAX_BATCHES`] batches of 1 to N/2
    /// images, the input level within the preset). Returns it with the preset's parameters;
    /// `insecure` must be set for a preset below 128-bit security.
    pub fn read(dir: &Path, insecure: bool) -> Result<(Manifest, Parameters), JobError> {
        use std::io::Read;
        let path = dir.join(MANIFEST);
        let bad = |reason: String| JobError::Manifest {
            path: path.clone(),
            reason,
        };
        let f = crate::io::open_regular(&path)
            .map_err(|e| {
                bad(format!(
                    "cannot read it ({e}): is {} the output directory of `cryptodl encrypt` (or `score`)?",
                    dir.display()
                ))
            })?
            .ok_or_else(|| bad("not a regular file".into()))?;
        let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{} bytes, above the limit of {MAX_MANIFEST_BYTES}",
                meta.len()
            )));
        }
        let mut text = String::new();
        f.take(MAX_MANIFEST_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("not readable text: {e}")))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a cryptodl manifest of format {MANIFEST_FORMAT} ({e}); run `cryptodl encrypt` again"
            ))
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {}, this build reads {MANIFEST_FORMAT}",
                m.format
            )));
        }
        let computed = m.computed_checksum();
        if m.checksum != computed {
            return Err(bad(format!(
                "checksum mismatch (stored {}, computed {computed}): the manifest was edited or damaged",
                m.checksum
            )));
        }
        if JobId::from_hex(&m.job).is_none() || KeySetId::from_hex(&m.key_set).is_none() {
            return Err(bad("job and key_set must be 32 hex digits".into()));
        }
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(&m.model.digest, &mut digest).is_err() {
            return Err(bad("model.digest must be 64 hex digits".into()));
        }
        let params = Preset::by_name(&m.preset)
            .and_then(|p| p.parameters(insecure))
            .map_err(|e| bad(format!("preset: {e}")))?;
        if m.fingerprint != format!("{:016x}", params.fingerprint()) {
            return Err(bad(format!(
                "fingerprint {} is not preset {}'s ({:016x})",
                m.fingerprint,
                m.preset,
                params.fingerprint()
            )));
        }
        if m.insecure != params.is_insecure() {
            return Err(bad(format!(
                "insecure is {} but preset {} is {}",
                m.insecure,
                m.preset,
                if params.is_insecure() {
                    "insecure"
                } else {
                    "secure"
                }
            )));
        }
        if m.batches.is_empty() || m.batches.len() > MAX_BATCHES {
            return Err(bad(format!(
                "{} batches: a job has 1 to {MAX_BATCHES}",
                m.batches.len()
            )));
        }
        let slots = params.slots();
        if let Some((i, &c)) = m
            .batches
            .iter()
            .enumerate()
            .find(|&(_, &c)| c == 0 || c > slots)
        {
            return Err(bad(format!(
                "batch {i} holds {c} images: a batch holds 1 to {slots} at {}",
                m.preset
            )));
        }
        if m.input_level > params.max_level()
            || m.model.depth == 0
            || m.model.depth >= m.input_level
        {
            return Err(bad(format!(
                "input level {} and depth {} do not fit the {} levels of {} (the logits need a level of headroom)",
                m.input_level,
                m.model.depth,
                params.max_level(),
                m.preset
            )));
        }
        if m.model.inputs == 0 || m.model.outputs < 2 {
            return Err(bad(format!(
                "the model has {} inputs and {} outputs",
                m.model.inputs, m.model.outputs
            )));
        }
        Ok((m, params))
    }

    /// The label of batch `batch`'s file holding `content`.
    pub fn label(&self, batch: usize, content: Content) -> CiphertextLabel {
        CiphertextLabel {
            key_set: self.key_set_id(),
            content,
            job: self.job_id(),
            batch: batch as u32,
            images: self.batches[batch] as u32,
            model: self.model_digest(),
        }
    }

    fn mismatch(
        path: &Path,
        what: &'static str,
        expected: impl ToString,
        found: impl ToString,
        reference: &str,
        advice: &'static str,
    ) -> JobError {
        JobError::Mismatch(Box::new(Mismatch {
            path: path.to_path_buf(),
            what,
            expected: expected.to_string(),
            found: found.to_string(),
            reference: reference.to_string(),
            advice,
        }))
    }

    /// Checks that keys loaded from `path` belong to the job's key set.
    pub fn check_key_set(&self, path: &Path, key_set: KeySetId) -> Result<(), JobError> {
        if key_set != self.key_set_id() {
            return Err(Self::mismatch(
                path,
                "the key set",
                &self.key_set,
                key_set,
                "the job's manifest",
                "; use the keys of the `keygen` the batches were encrypted with",
            ));
        }
        Ok(())
    }

    /// Checks that `model` (loaded from `path`) is the one the job was encrypted for.
    pub fn check_model(&self, path: &Path, model: &Model) -> Result<(), JobError> {
        let digest = hex::encode(model.digest());
        if digest != self.model.digest {
            return Err(Self::mismatch(
                path,
                "the model's digest",
                format!("{} ({})", self.model.digest, self.model.name),
                format!("{digest} ({})", model.name),
                "the job's manifest",
                "; score with the very model the images were encrypted for (same weights and normalisation)",
            ));
        }
        Ok(())
    }

    /// Checks the label and the ciphertexts of batch `batch`'s file at `path` holding
    /// `content`: this job, this key set, this model, this batch and image count; input
    /// batches hold one ciphertext per model input at the input level or above, logits one per
    /// output at `logits_level`.
    pub fn check_batch(
        &self,
        params: &Parameters,
        path: &Path,
        batch: usize,
        content: Content,
        label: &CiphertextLabel,
        cts: &[Ciphertext],
    ) -> Result<(), JobError> {
        let logits_level = self.logits_level();
        let want = self.label(batch, content);
        let m = "the job's manifest";
        if label.content != content {
            return Err(Self::mismatch(
                path,
                "the content",
                content,
                label.content,
                "its file name",
                "",
            ));
        }
        if label.job != want.job {
            return Err(Self::mismatch(
                path,
                "the job",
                want.job,
                label.job,
                m,
                "; it belongs to another `cryptodl encrypt` (use an empty directory per job)",
            ));
        }
        if label.key_set != want.key_set {
            return Err(Self::mismatch(
                path,
                "the key set",
                want.key_set,
                label.key_set,
                m,
                "",
            ));
        }
        if label.model != want.model {
            return Err(Self::mismatch(
                path,
                "the model's digest",
                hex::encode(want.model),
                hex::encode(label.model),
                m,
                "",
            ));
        }
        if label.batch != want.batch {
            return Err(Self::mismatch(
                path,
                "the batch index",
                want.batch,
                label.batch,
                "its file name",
                "",
            ));
        }
        if label.images != want.images {
            return Err(Self::mismatch(
                path,
                "the image count",
                want.images,
                label.images,
                m,
                "",
            ));
        }
        let images = self.batches.get(batch).copied().unwrap_or(0);
        let (inputs, outputs) = match self.packing {
            JobPacking::Batch => (self.model.inputs, self.model.outputs),
            JobPacking::Latency => (self.model.inputs * images, images),
        };
        let (count, level_ok, level_want) = match content {
            Content::Logits => (
                outputs,
                cts.iter().all(|c| c.level() == logits_level),
                format!("{logits_level}"),
            ),
            _ => (
                inputs,
                cts.iter().all(|c| c.level() >= self.input_level),
                format!("{} or above", self.input_level),
            ),
        };
        if cts.len() != count {
            return Err(Self::mismatch(
                path,
                "the number of ciphertexts",
                count,
                cts.len(),
                m,
                "",
            ));
        }
        if !level_ok {
            let found = cts.first().map_or(0, Ciphertext::level);
            return Err(Self::mismatch(path, "the level", level_want, found, m, ""));
        }
        // Inputs are encrypted at the default scale; each rescale divides by a prime within a
        // bit of it, so the logits stay within a factor 2 of it.
        let default = params.default_scale();
        let scale_ok = |s: f64| match content {
            Content::InputBatch => s == default,
            _ => s >= default / 2.0 && s <= default * 2.0,
        };
        if let Some(bad) = cts.iter().map(Ciphertext::scale).find(|&s| !scale_ok(s)) {
            return Err(Self::mismatch(
                path,
                "the scale",
                format!("2^{}", params.log_scale()),
                format!("2^{:.2}", bad.log2()),
                "the job's preset",
                "",
            ));
        }
        Ok(())
    }

    /// The level the logits end at.
    pub fn logits_level(&self) -> usize {
        self.input_level.saturating_sub(self.model.depth)
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} ({} on {}, key set {}, {} batch(es))",
            self.job,
            self.model.name,
            self.preset,
            self.key_set,
            self.batches.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Fuzzing of the manifest reader: random bytes, and a valid manifest with random edits,
        /// are errors (or the valid manifest), never a panic.
        #[test]
        fn random_manifests_are_errors(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            valid in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let bytes = if valid {
                let mut b = VALID.as_bytes().to_vec();
                for (at, x) in edits {
                    let i = at as usize % b.len();
                    b[i] ^= x;
                }
                b
            } else {
                body
            };
            std::fs::write(dir.path().join(MANIFEST), &bytes).unwrap();
            // Never a panic; anything accepted has a checksum that binds its fields.
            if let Ok((m, _)) = Manifest::read(dir.path(), true) {
                prop_assert_eq!(&m.checksum, &m.computed_checksum());
            }
        }
    }

    const VALID: &str = r#"{
  "format": 2,
  "job": "07070707070707070707070707070707",
  "key_set": "01010101010101010101010101010101",
  "preset": "toy1024",
  "fingerprint": "0",
  "insecure": true,
  "model": {"name": "m", "digest": "0909090909090909090909090909090909090909090909090909090909090909", "inputs": 4, "outputs": 2, "depth": 2},
  "input_level": 3,
  "batches": [10],
  "checksum": ""
}"#;

    #[test]
    fn counts_are_range_checked_and_the_checksum_binds_them() {
        let params = Preset::by_name("toy1024")
            .unwrap()
            .parameters(true)
            .unwrap();
        let mut m: Manifest = serde_json::from_str(VALID).unwrap();
        m.job = "07".repeat(16);
        m.fingerprint = format!("{:016x}", params.fingerprint());
        let dir = tempfile::tempdir().unwrap();
        let write = |m: &Manifest| {
            std::fs::write(dir.path().join(MANIFEST), serde_json::to_string(m).unwrap()).unwrap()
        };
        let read = || Manifest::read(dir.path(), true).map(|(m, _)| m);
        m.checksum = m.computed_checksum();
        write(&m);
        assert_eq!(read().unwrap(), m);
        // Edited without the checksum: refused.
        let mut edited = m.clone();
        edited.batches = vec![11];
        write(&edited);
        let e = read().unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // Resealed, counts out of range are refused.
        for batches in [vec![], vec![0], vec![513], vec![10, 5000]] {
            let mut m = m.clone();
            m.batches = batches.clone();
            m.checksum = m.computed_checksum();
            write(&m);
            assert!(read().is_err(), "{batches:?}");
        }
        // An insecure preset needs the opt-in.
        write(&m);
        assert!(Manifest::read(dir.path(), false).is_err());
        // A count that does not fit a usize is a parse error, not a panic.
        std::fs::write(
            dir.path().join(MANIFEST),
            VALID.replace("[10]", "[18446744073709551616]"),
        )
        .unwrap();
        assert!(read().is_err());
    }
}
