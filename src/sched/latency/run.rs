//! Runs a [`LatencyPlan`] on one image's ciphertexts on any backend: the plaintexts of every
//! layer (diagonals, gathered weights) are encoded and uploaded once per session and plan; the
//! biases once per scale they meet.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::Backend;
use crate::ckks::{
    CkksError, DeviceCiphertext, DeviceEvaluator, DeviceKeys, DevicePlainBatch, DevicePlaintext,
    Encoder, Plaintext,
};

use super::super::run::run_step;
use super::{LatencyPlan, Op};

/// One operation's plaintexts on the backend.
enum Prepared<T> {
    Gather {
        weights: DevicePlainBatch<T>,
        bias: Vec<f64>,
    },
    Diagonal {
        baby: Vec<i64>,
        /// Per giant step: its rotation and the plaintexts of the baby steps it uses, with
        /// their positions in `baby`.
        giants: Vec<(i64, Vec<usize>, DevicePlainBatch<T>)>,
        fold: Vec<i64>,
        bias: Vec<f64>,
    },
    Elementwise,
}

/// A latency plan's plaintexts resident on a backend, built once and reused for every image.
pub struct PreparedPlan<T> {
    /// [`LatencyPlan::id`] of the plan they belong to.
    pub id: u64,
    ops: Vec<Prepared<T>>,
    /// Bias plaintexts by (operation, scale bits): the scale an operation meets is the same for
    /// every image, so each is encoded once.
    biases: Mutex<HashMap<(usize, u64), DevicePlaintext<T>>>,
}

fn tile(v: &[f64], slots: usize) -> Vec<f64> {
    (0..slots).map(|j| v[j % v.len()]).collect()
}

/// Encodes and uploads the plaintexts of `plan` (each at the level its operation runs at, at
/// scale `q_level`, so that the rescale after it restores the input's scale).
pub fn prepare<B: Backend>(
    eval: &DeviceEvaluator<B>,
    plan: &LatencyPlan,
) -> Result<PreparedPlan<B::Tensor>, CkksError> {
    let ctx = eval.context();
    let enc = Encoder::new(ctx.clone());
    let q = ctx.params().q().to_vec();
    let slots = plan.slots;
    let mut level = plan.input_level;
    let mut ops = Vec::with_capacity(plan.ops.len());
    let zero = vec![0.0; slots];
    for op in &plan.ops {
        let encode = |v: &[f64]| -> Result<Plaintext, CkksError> {
            enc.encode(&tile(v, slots), level, q[level] as f64)
        };
        ops.push(match op {
            Op::Gather { weights, bias, .. } => Prepared::Gather {
                weights: eval.upload_plain_batch(
                    &weights
                        .iter()
                        .map(|w| encode(w))
                        .collect::<Result<Vec<_>, _>>()?,
                )?,
                bias: bias.clone(),
            },
            Op::Diagonal(d) => {
                let giants = d
                    .giants
                    .iter()
                    .map(|(g, pts)| {
                        let used: Vec<usize> =
                            (0..pts.len()).filter(|&i| pts[i].is_some()).collect();
                        let encoded = used
                            .iter()
                            .map(|&i| encode(pts[i].as_deref().unwrap_or(&zero)))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(((g * d.n1) as i64, used, eval.upload_plain_batch(&encoded)?))
                    })
                    .collect::<Result<Vec<_>, CkksError>>()?;
                Prepared::Diagonal {
                    baby: d.baby.iter().map(|&b| b as i64).collect(),
                    giants,
                    fold: d.fold.iter().map(|&f| f as i64).collect(),
                    bias: d.bias.clone(),
                }
            }
            Op::Elementwise(_) => Prepared::Elementwise,
        });
        level -= op.levels();
    }
    Ok(PreparedPlan {
        id: plan.id,
        ops,
        biases: Mutex::new(HashMap::new()),
    })
}

/// Adds the bias of operation `index` (over one period) to `acc` at its scale, then rescales.
fn bias_rescale<B: Backend>(
    eval: &DeviceEvaluator<B>,
    prepared: &PreparedPlan<B::Tensor>,
    index: usize,
    bias: &[f64],
    acc: &DeviceCiphertext<B::Tensor>,
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    let key = (index, acc.scale().to_bits());
    let mut cache = prepared.biases.lock().unwrap_or_else(|p| p.into_inner());
    let pt = match cache.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let enc = Encoder::new(eval.context().clone());
            let pt = enc.encode(
                &tile(bias, eval.context().params().slots()),
                acc.level(),
                acc.scale(),
            )?;
            e.insert(eval.upload_plaintext(&pt)?)
        }
    };
    let with_bias = eval.add_plain(acc, pt)?;
    drop(cache);
    eval.rescale(&with_bias)
}

/// Runs operation `index` of `plan` on `x` (the image's input ciphertexts for the first one,
/// then one ciphertext).
pub fn run_op<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    plan: &LatencyPlan,
    prepared: &PreparedPlan<B::Tensor>,
    index: usize,
    x: DeviceCiphertext<B::Tensor>,
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    match (&plan.ops[index], &prepared.ops[index]) {
        (Op::Gather { .. }, Prepared::Gather { weights, bias }) => {
            let acc = eval.sum(&eval.mul_plain_batch(&x, weights)?)?;
            drop(x);
            bias_rescale(eval, prepared, index, bias, &acc)
        }
        (
            Op::Diagonal(_),
            Prepared::Diagonal {
                baby,
                giants,
                fold,
                bias,
            },
        ) => {
            let rotated = eval.rotate_hoisted(&x, baby, keys)?;
            drop(x);
            // Every baby rotation in one batch; a giant step that uses only some of them takes
            // its own.
            let all = eval.concat(&rotated)?;
            let mut acc: Option<DeviceCiphertext<B::Tensor>> = None;
            for (step, used, pts) in giants {
                let subset;
                let batch = if used.len() == rotated.len() {
                    &all
                } else {
                    let parts: Vec<DeviceCiphertext<B::Tensor>> = used
                        .iter()
                        .map(|&i| eval.drop_levels(&rotated[i], 0))
                        .collect::<Result<_, _>>()?;
                    subset = eval.concat(&parts)?;
                    &subset
                };
                let part = eval.sum(&eval.mul_plain_batch(batch, pts)?)?;
                let part = if *step == 0 {
                    part
                } else {
                    eval.rotate(&part, *step, keys)?
                };
                acc = Some(match acc {
                    None => part,
                    Some(a) => eval.add(&a, &part)?,
                });
            }
            drop((rotated, all));
            let mut acc = acc.ok_or(CkksError::EmptyBatch)?;
            for &f in fold {
                acc = eval.add(&acc, &eval.rotate(&acc, f, keys)?)?;
            }
            bias_rescale(eval, prepared, index, bias, &acc)
        }
        (Op::Elementwise(step), Prepared::Elementwise) => {
            let mut out = run_step(eval, keys, step, vec![x], 1, None)?;
            out.pop().ok_or(CkksError::EmptyBatch)
        }
        _ => Err(CkksError::InvalidLayer {
            reason: "the prepared plaintexts belong to another latency plan".into(),
        }),
    }
}
