//! Runs a [`Plan`] over a chunked layer of ciphertexts on any backend: the steps of the server.

use crate::backend::Backend;
use crate::ckks::{
    Ciphertext, CkksError, DeviceCiphertext, DeviceEvaluator, DeviceKeys, LinearLayer, Parameters,
};

use super::plan::{Plan, Step};

/// Ciphertexts per launch for ciphertexts at `level` of `params` on `backend`: as many as keep
/// the largest intermediate tensor of a step within the backend's
/// [`Backend::max_tensor_words`]: the product of a squaring (`3 (level + 1) N` words per
/// ciphertext), or the key-switching digits where the backend materialises them
/// ([`Backend::keyswitch_words`]); at least 1.
pub fn chunk_size<B: Backend>(backend: &B, params: &Parameters, level: usize) -> usize {
    let limbs = level.min(params.max_level()) + 1;
    let product = 3 * limbs * params.n();
    let digits =
        backend.keyswitch_words(limbs, params.p().len(), limbs.div_ceil(params.digit_size()));
    let per_ct = product.max(digits);
    (backend.max_tensor_words() / per_ct.max(1)).max(1)
}

/// Uploads a layer's ciphertexts in chunks of at most `chunk`.
pub fn upload<B: Backend>(
    eval: &DeviceEvaluator<B>,
    cts: &[Ciphertext],
    chunk: usize,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    cts.chunks(chunk.max(1)).map(|c| eval.upload(c)).collect()
}

/// Downloads a chunked layer.
pub fn download<B: Backend>(
    eval: &DeviceEvaluator<B>,
    chunks: &[DeviceCiphertext<B::Tensor>],
) -> Result<Vec<Ciphertext>, CkksError> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(eval.download(c)?);
    }
    Ok(out)
}

/// A linear step over a chunked layer: per chunk of at most `chunk` outputs, the partial sums
/// over the input chunks (bias with the first), accumulated in place, then rescaled. The sum modulo each prime
/// is the same as in one launch, so the result does not depend on the chunking.
fn linear_chunked<B: Backend>(
    eval: &DeviceEvaluator<B>,
    x: &[DeviceCiphertext<B::Tensor>],
    layer: &LinearLayer,
    chunk: usize,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    let mut starts = Vec::with_capacity(x.len());
    let mut total = 0;
    for c in x {
        starts.push(total);
        total += c.count();
    }
    if total != layer.inputs {
        return Err(CkksError::CountMismatch {
            op: "linear",
            left: layer.inputs,
            right: total,
        });
    }
    if x.len() == 1 && layer.rows.len() <= chunk {
        return Ok(vec![eval.linear_rescale(&x[0], layer)?]);
    }
    let mut out = Vec::new();
    for (o0, rows) in (0..layer.rows.len())
        .step_by(chunk.max(1))
        .zip(layer.rows.chunks(chunk.max(1)))
    {
        let mut acc: Option<DeviceCiphertext<B::Tensor>> = None;
        for (k, (c, &a)) in x.iter().zip(&starts).enumerate() {
            let b = a + c.count();
            let sub: Vec<Vec<(usize, f64)>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .filter(|(i, _)| (a..b).contains(i))
                        .map(|&(i, w)| (i - a, w))
                        .collect()
                })
                .collect();
            if k > 0 && sub.iter().all(Vec::is_empty) {
                continue;
            }
            let bias = if k == 0 && !layer.bias.is_empty() {
                layer.bias[o0..o0 + rows.len()].to_vec()
            } else {
                Vec::new()
            };
            let part = LinearLayer {
                inputs: c.count(),
                rows: sub,
                bias,
            };
            match acc.as_mut() {
                None => acc = Some(eval.linear(c, &part, None)?),
                Some(s) => eval.linear_acc(s, c, &part)?,
            }
        }
        let sum = acc.ok_or(CkksError::EmptyBatch)?;
        out.push(eval.rescale(&sum)?);
    }
    Ok(out)
}

/// Ciphertexts per sub-chunk of a cubic step.
const CUBIC_SUBCHUNK: usize = 256;

/// `c0 + c1 x + c2 x^2 + c3 x^3` on every ciphertext of `x` (level `l`, scale `s`), as
/// `(c3 x + c2) x^2 + (c1 x + c0)`: the result is at level `l - 2`.
fn cubic<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    x: &DeviceCiphertext<B::Tensor>,
    c: &[f64; 4],
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    let q = eval.context().params().q();
    let l = x.level();
    if l < 2 {
        return Err(CkksError::OutOfLevels { op: "cubic" });
    }
    // a = c3 x + c2 at level l - 1, scale s (q_l / q_l, equal up to the f64 rounding).
    let mut a = eval.rescale(&eval.mul_const(x, c[3], None)?)?;
    a.set_scale(x.scale());
    let a = eval.add_const(&a, c[2])?;
    let x2 = eval.mul_relin_rescale(x, x, keys)?; // level l - 1, scale s^2 / q_l
    let r = eval.mul_relin_rescale(&a, &x2, keys)?; // level l - 2
    drop((a, x2));
    // c1 x at level l - 2 and r's scale: one constant multiplication, one level dropped, one
    // rescale by q_{l-1}.
    let target = r.scale();
    let cs = target * q[l - 1] as f64 / x.scale();
    let lin = eval.drop_levels(&eval.mul_const(x, c[1], Some(cs))?, 1)?;
    let mut lin = eval.rescale(&lin)?;
    lin.set_scale(target);
    eval.add_const(&eval.add(&r, &lin)?, c[0])
}

/// Runs step `step` of a plan on the layer `input` (chunks of at most `chunk` ciphertexts);
/// the input chunks are dropped as soon as they are used.
pub(crate) fn run_step<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    step: &Step,
    input: Vec<DeviceCiphertext<B::Tensor>>,
    chunk: usize,
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    match step {
        Step::Linear(layer) => linear_chunked(eval, &input, layer, chunk),
        Step::Square => input
            .into_iter()
            .map(|c| eval.mul_relin_rescale(&c, &c, keys))
            .collect(),
        // A cubic keeps several layer-sized intermediates alive: evaluate it on sub-chunks, so
        // memory is the layer in and out plus one sub-chunk's intermediates.
        Step::Cubic(coeffs) => input
            .into_iter()
            .map(|c| {
                if c.count() <= CUBIC_SUBCHUNK {
                    return cubic(eval, keys, &c, coeffs);
                }
                let parts = (0..c.count())
                    .step_by(CUBIC_SUBCHUNK)
                    .map(|s| {
                        let sub = eval.slice(&c, s..(s + CUBIC_SUBCHUNK).min(c.count()))?;
                        cubic(eval, keys, &sub, coeffs)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                drop(c);
                eval.concat(&parts)
            })
            .collect(),
    }
}

/// Server side: runs `plan` on the layer `x` (chunks of at most `chunk` ciphertexts, as from
/// [`upload`]) with evaluation keys only; returns the logits in chunks. Each layer is dropped as
/// soon as the next is computed. `progress(step)` is called after each step.
pub fn run<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    plan: &Plan,
    x: Vec<DeviceCiphertext<B::Tensor>>,
    chunk: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
    let count: usize = x.iter().map(|c| c.count()).sum();
    if count != plan.inputs {
        return Err(CkksError::CountMismatch {
            op: "run",
            left: plan.inputs,
            right: count,
        });
    }
    let mut cur = x;
    for (i, step) in plan.steps.iter().enumerate() {
        cur = run_step(eval, keys, step, cur, chunk)?;
        progress(i);
    }
    Ok(cur)
}
