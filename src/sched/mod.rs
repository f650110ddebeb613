//! The encrypted CNN: compiles a model into an HE plan ([`plan`]), runs it over batches of
//! ciphertexts on any backend ([`run`]) through the server engine ([`Session`]), and the
//! client's side: its key directory ([`keys`]), a job's encryption ([`encrypt`]) and
//! decryption ([`client`]), shared by every front end (batch packing: slot `s` of every
//! ciphertext holds sample `s`, and input value `i` of every sample lives in ciphertext `i`).

pub mod client;
pub mod encrypt;
pub mod job;
pub mod keys;
pub mod latency;
pub mod plan;
pub mod run;
pub mod scoring;
pub mod session;
pub mod shard;
pub mod worker;
pub mod worklog;

pub use plan::{Plan, PlanError, Step};

use crate::ckks::{Parameters, Preset, PRESETS};

/// The parameters a command runs `plan` at: the preset named (checked to be deep enough, and
/// wide enough in latency packing), or with `None` the smallest 128-bit preset that is. The
/// flag says whether it was chosen here (for the command to say so).
pub fn parameters_for(
    plan: &Plan,
    preset: Option<&str>,
    latency: bool,
    insecure: bool,
) -> Result<(Parameters, bool), crate::ckks::CkksError> {
    if let Some(name) = preset {
        return Ok((Preset::by_name(name)?.parameters(insecure)?, false));
    }
    for p in PRESETS.iter().filter(|p| p.secure) {
        let params = p.parameters(insecure)?;
        if plan.check_depth(params.name(), params.max_level()).is_err() {
            continue;
        }
        if !latency || latency::LatencyPlan::compile(plan, &params).is_ok() {
            return Ok((params, true));
        }
    }
    // None fits: the deepest, whose own check names what is wrong.
    let deepest = PRESETS.iter().rfind(|p| p.secure).expect("a secure preset");
    Ok((deepest.parameters(insecure)?, true))
}
pub use run::{chunk_size, download, run, upload};
pub use session::{BatchStats, Device, Scored, Session, StepStats};

use crate::ckks::{Ciphertext, CkksError, Decryptor, Encoder, Encryptor, PublicKey, SecretKey};
use rayon::prelude::*;

/// Client side: encrypts `samples` (each a normalised input of `plan.inputs` values, at most the
/// slot count of them) as `plan.inputs` ciphertexts at the plan's input level (the lowest level
/// its steps need: fewer limbs, less work for the server) and the default scale, in
/// parallel. `encryptor(i)` makes the encryptor of ciphertext `i` (`Encryptor::new`, seeded by
/// the OS, except in tests); `progress` is called once per ciphertext.
pub fn encrypt_batch(
    plan: &Plan,
    encoder: &Encoder,
    encryptor: impl Fn(usize) -> Encryptor + Sync,
    pk: &PublicKey,
    samples: &[Vec<f64>],
    progress: impl Fn() + Sync,
) -> Result<Vec<Ciphertext>, CkksError> {
    let params = encoder.context().params();
    if samples.len() > params.slots() {
        return Err(CkksError::TooManySlots {
            given: samples.len(),
            slots: params.slots(),
        });
    }
    let level = plan.input_level();
    if level > params.max_level() {
        return Err(CkksError::TooShallow {
            level: params.max_level(),
            needed: level,
        });
    }
    if let Some(s) = samples.iter().find(|s| s.len() != plan.inputs) {
        return Err(CkksError::ShapeMismatch {
            what: "input sample",
            expected: plan.inputs,
            found: s.len(),
        });
    }
    (0..plan.inputs)
        .into_par_iter()
        .map(|i| {
            let column: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            let pt = encoder.encode(&column, level, params.default_scale())?;
            let ct = encryptor(i).encrypt(&pt, pk);
            progress();
            ct
        })
        .collect()
}

/// Client side: decrypts the logits; returns one vector of `outputs` logits per sample (the
/// first `samples` slots).
pub fn decrypt_logits(
    decryptor: &Decryptor,
    encoder: &Encoder,
    sk: &SecretKey,
    logits: &[Ciphertext],
    samples: usize,
) -> Result<Vec<Vec<f64>>, CkksError> {
    let per_class = logits
        .iter()
        .map(|ct| Ok(encoder.decode(&decryptor.decrypt(ct, sk)?)))
        .collect::<Result<Vec<_>, CkksError>>()?;
    Ok((0..samples)
        .map(|s| per_class.iter().map(|c| c[s]).collect())
        .collect())
}
