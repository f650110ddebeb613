//! The encrypted CNN: compiles a model into an HE plan ([`plan`]) and runs it over batches of
//! ciphertexts on any backend (batch packing: slot `s` of every ciphertext holds sample `s`, and
//! input value `i` of every sample lives in ciphertext `i`).

pub mod plan;

pub use plan::{Plan, PlanError, Step};

use crate::backend::Backend;
use crate::ckks::{
    Ciphertext, CkksError, Decryptor, DeviceCiphertext, DeviceEvaluator, DeviceKeys, Encoder,
    Encryptor, PublicKey, SecretKey,
};

/// Client side: encrypts `samples` (each a normalised input of `plan.inputs` values, at most the
/// slot count of them) as `plan.inputs` ciphertexts at the top level and default scale.
pub fn encrypt_batch(
    plan: &Plan,
    encoder: &Encoder,
    encryptor: &mut Encryptor,
    pk: &PublicKey,
    samples: &[Vec<f64>],
    mut progress: impl FnMut(),
) -> Result<Vec<Ciphertext>, CkksError> {
    let params = encoder.context().params();
    if samples.len() > params.slots() {
        return Err(CkksError::TooManySlots {
            given: samples.len(),
            slots: params.slots(),
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
        .map(|i| {
            let column: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            let pt = encoder.encode(&column, params.max_level(), params.default_scale())?;
            let ct = encryptor.encrypt(&pt, pk);
            progress();
            ct
        })
        .collect()
}

/// Server side: runs `plan` on the batch `x` (evaluation keys only). `progress(step)` is called
/// after each step.
pub fn run<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    plan: &Plan,
    x: &DeviceCiphertext<B::Tensor>,
    mut progress: impl FnMut(usize),
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    if x.count() != plan.inputs {
        return Err(CkksError::CountMismatch {
            op: "run",
            left: plan.inputs,
            right: x.count(),
        });
    }
    let mut cur: Option<DeviceCiphertext<B::Tensor>> = None;
    for (i, step) in plan.steps.iter().enumerate() {
        let input = cur.as_ref().unwrap_or(x);
        let next = match step {
            Step::Linear(layer) => eval.rescale(&eval.linear(input, layer, None)?)?,
            Step::Square => eval.mul_relin_rescale(input, input, keys)?,
        };
        cur = Some(next);
        progress(i);
    }
    cur.ok_or(CkksError::EmptyBatch)
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
