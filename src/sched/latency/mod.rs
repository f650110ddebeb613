//! Latency packing: one image across the slots of a few ciphertexts, so that one image costs
//! milliseconds instead of a whole batch. Compiles a batch [`Plan`] (linear steps as sparse
//! matrices, elementwise activations) into packed operations, with every layout, level and
//! rotation known before anything is encrypted.
//!
//! Layouts: a vector `v` of `n` values lives in one ciphertext, *periodic* with period `p` (the
//! power of two at or above `n`): slot `s` holds `v[s mod p]` (0 past `n`), so a rotation by `r`
//! rotates every period cyclically.
//!
//! * The first linear step is computed from a client-side gather (im2col) when its rows have at
//!   most [`GATHER_MAX`] entries: ciphertext `k` holds, in slot `s`, the input value of the
//!   `k`-th entry of row `s mod p`; the server multiplies each by its weights (per slot) and
//!   sums: no rotation.
//! * Every other linear step `y = W x + b` (m x n) uses the generalized diagonals of `W` over
//!   the padded sizes `m_p`, `n_p`: `y' = sum_k diag_k * rot(x, k)` with
//!   `diag_k[j] = W[j mod m_p, (j + k) mod n_p]` for `k < min(m_p, n_p)`, evaluated
//!   baby-step giant-step (`k = g n1 + b`: the baby rotations of `x` hoisted, one giant rotation
//!   per `g`), then, when `m_p < n_p`, folded by rotations of `m_p, 2 m_p, .. n_p / 2` (the sum
//!   of every `m_p`-th slot). Zero diagonals cost nothing.
//! * Activations act slot-wise, as in batch packing (their coefficients folded the same way).

pub mod run;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::plan::{Plan, PlanError, Step};
use crate::ckks::{
    Ciphertext, CkksError, Decryptor, Encoder, Encryptor, LinearLayer, Parameters, PublicKey,
    SecretKey,
};

/// Rows of at most this many entries make a first step the client gathers (im2col).
pub const GATHER_MAX: usize = 64;

/// How the client packs one image.
#[derive(Clone, Debug, PartialEq)]
pub enum InputPacking {
    /// Ciphertext `k` holds, in slot `s`, input `columns[k][s mod period]` (0 for `None`).
    Gather {
        /// The first step's output period.
        period: usize,
        /// `[k][row]`: the input index of the `k`-th entry of each row.
        columns: Vec<Vec<Option<usize>>>,
    },
    /// One ciphertext: the input vector in every period.
    Periodic {
        /// Its period.
        period: usize,
    },
}

/// A linear step by generalized diagonals, baby-step giant-step.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagonal {
    /// Input values `n`.
    pub inputs: usize,
    /// Output values `m`.
    pub outputs: usize,
    /// `n_p`, `m_p`: the periods of the input and of the output.
    pub n_pad: usize,
    /// See `n_pad`.
    pub m_pad: usize,
    /// Baby steps per giant step.
    pub n1: usize,
    /// The baby rotations (`b`, 0 included when used), ascending.
    pub baby: Vec<usize>,
    /// Per giant step `g` (ascending), the plaintext of each baby step in [`Self::baby`] order:
    /// `diag_{g n1 + b}` rotated right by `g n1`, over one period (`None`: a zero diagonal).
    pub giants: Vec<(usize, Vec<Option<Vec<f64>>>)>,
    /// Rotations that fold `n_p / m_p` partial sums (empty when `m_p >= n_p`).
    pub fold: Vec<usize>,
    /// Bias over one output period.
    pub bias: Vec<f64>,
    /// The period of the diagonals: `max(n_p, m_p)`.
    pub period: usize,
}

/// One packed operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The first linear step on gathered inputs: `sum_k ct_k * weights[k] + bias`, then a
    /// rescale.
    Gather {
        /// `[k][slot of one period]`.
        weights: Vec<Vec<f64>>,
        /// Over one period.
        bias: Vec<f64>,
        /// The output period.
        period: usize,
    },
    /// A linear step by diagonals, then a rescale.
    Diagonal(Diagonal),
    /// An elementwise step of the batch plan (square, cubic).
    Elementwise(Step),
}

impl Op {
    /// `gather`, `diagonal`, `square` or `cubic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Gather { .. } => "gather",
            Op::Diagonal(_) => "diagonal",
            Op::Elementwise(s) => s.kind(),
        }
    }

    /// Levels the operation consumes.
    pub fn levels(&self) -> usize {
        match self {
            Op::Gather { .. } | Op::Diagonal(_) => 1,
            Op::Elementwise(s) => s.levels(),
        }
    }

    /// The rotations it performs, by step, in order (hoisted baby steps first).
    pub fn rotations(&self) -> Vec<usize> {
        match self {
            Op::Diagonal(d) => d
                .baby
                .iter()
                .copied()
                .filter(|&b| b != 0)
                .chain(d.giants.iter().map(|(g, _)| g * d.n1).filter(|&r| r != 0))
                .chain(d.fold.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What each packed operation costs, counted from the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// The operation's kind.
    pub kind: &'static str,
    /// Values in and out.
    pub inputs: usize,
    /// See `inputs`.
    pub outputs: usize,
    /// Hoisted (baby-step) rotations: one shared decomposition.
    pub hoisted_rotations: usize,
    /// Other rotations (giant steps, folds).
    pub rotations: usize,
    /// Plaintext-ciphertext multiplications (one per non-zero diagonal or gathered input).
    pub plain_mults: usize,
    /// Ciphertext-ciphertext multiplications (with relinearization).
    pub cipher_mults: usize,
    /// Levels consumed.
    pub levels: usize,
}

/// A batch plan compiled for latency packing.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyPlan {
    /// Model name.
    pub model: String,
    /// Slots per ciphertext.
    pub slots: usize,
    /// How the client packs an image.
    pub input: InputPacking,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// The level the client encrypts at.
    pub input_level: usize,
    /// Levels needed (depth plus one of headroom, as in batch packing).
    pub levels_needed: usize,
    /// Logits per image.
    pub outputs: usize,
    /// A fingerprint of the operations (which prepared plaintexts belong to).
    pub id: u64,
}

/// The period of `n` values: the power of two at or above it.
fn period(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

fn too_wide(plan: &Plan, step: usize, values: usize, slots: usize) -> PlanError {
    let need = period(values);
    let fits = crate::ckks::PRESETS
        .iter()
        .filter(|p| p.secure && (1usize << (p.log_n - 1)) >= need)
        .min_by_key(|p| p.log_n)
        .map_or("no preset has that many slots".to_string(), |p| {
            format!("--preset {} has {} slots", p.name, 1usize << (p.log_n - 1))
        });
    PlanError::Packing {
        model: plan.model.clone(),
        step,
        reason: format!(
            "{values} values pad to {need} slots, but a ciphertext has {slots}; {fits} (if it has the depth), or use --packing batch"
        ),
    }
}

/// The diagonals of `layer` (m x n) and its bias, for input period `n_p` and output period
/// `m_p`: `diag_k[j] = W[j mod m_p, (j + k) mod n_p]` for `k < min(m_p, n_p)`, `j <
/// max(m_p, n_p)`.
fn diagonals(layer: &LinearLayer, n_pad: usize, m_pad: usize) -> BTreeMap<usize, Vec<f64>> {
    let per = n_pad.max(m_pad);
    let mut diags: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (i, row) in layer.rows.iter().enumerate() {
        for &(c, w) in row {
            if w == 0.0 {
                continue;
            }
            let d = (c + n_pad - i % n_pad) % n_pad;
            let (k, j) = if m_pad <= n_pad {
                (d % m_pad, i + m_pad * (d / m_pad))
            } else {
                (d, i)
            };
            diags.entry(k).or_insert_with(|| vec![0.0; per])[j] += w;
        }
    }
    diags
}

/// The baby-step size (a power of two) that minimises hoisted baby rotations (at half the cost
/// of a rotation) plus giant rotations for the diagonals `ks`.
fn best_n1(ks: &BTreeSet<usize>, d: usize) -> usize {
    let mut best = (f64::INFINITY, 1);
    let mut n1 = 1;
    while n1 <= d {
        let baby = ks
            .iter()
            .map(|k| k % n1)
            .filter(|&b| b != 0)
            .collect::<BTreeSet<_>>()
            .len();
        let giant = ks
            .iter()
            .map(|k| k / n1)
            .filter(|&g| g != 0)
            .collect::<BTreeSet<_>>()
            .len();
        let cost = 0.5 * baby as f64 + giant as f64;
        if cost < best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

fn diagonal(layer: &LinearLayer, n_pad: usize) -> Diagonal {
    let m = layer.rows.len();
    let m_pad = period(m);
    let per = n_pad.max(m_pad);
    let diags = diagonals(layer, n_pad, m_pad);
    let ks: BTreeSet<usize> = diags.keys().copied().collect();
    let n1 = best_n1(&ks, n_pad.min(m_pad));
    let baby: Vec<usize> = ks
        .iter()
        .map(|k| k % n1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut giants: BTreeMap<usize, Vec<Option<Vec<f64>>>> = BTreeMap::new();
    for (&k, diag) in &diags {
        let (g, b) = (k / n1, k % n1);
        let shift = g * n1;
        // rot(diag, -shift)[j] = diag[(j - shift) mod per]
        let rotated: Vec<f64> = (0..per)
            .map(|j| diag[(j + per - shift % per) % per])
            .collect();
        let slot = baby.iter().position(|&x| x == b).expect("b is a baby step");
        giants.entry(g).or_insert_with(|| vec![None; baby.len()])[slot] = Some(rotated);
    }
    let mut fold = Vec::new();
    let mut r = m_pad;
    while r < n_pad {
        fold.push(r);
        r *= 2;
    }
    let mut bias = vec![0.0; m_pad];
    for (i, &b) in layer.bias.iter().enumerate() {
        bias[i] = b;
    }
    Diagonal {
        inputs: layer.inputs,
        outputs: m,
        n_pad,
        m_pad,
        n1,
        baby,
        giants: giants.into_iter().collect(),
        fold,
        bias,
        period: per,
    }
}

fn fingerprint(ops: &[Op], input: &InputPacking) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut f = |v: &[f64]| {
        for x in v {
            x.to_bits().hash(&mut h);
        }
    };
    for op in ops {
        match op {
            Op::Gather { weights, bias, .. } => {
                weights.iter().for_each(|w| f(w));
                f(bias);
            }
            Op::Diagonal(d) => {
                for (_, ps) in &d.giants {
                    ps.iter().flatten().for_each(|p| f(p));
                }
                f(&d.bias);
            }
            Op::Elementwise(Step::Cubic(c)) => f(c),
            Op::Elementwise(_) => f(&[1.0]),
        }
    }
    if let InputPacking::Gather { columns, .. } = input {
        let flat: Vec<f64> = columns
            .iter()
            .flatten()
            .map(|c| c.map_or(-1.0, |c| c as f64))
            .collect();
        f(&flat);
    }
    h.finish()
}

impl LatencyPlan {
    /// Compiles `plan` for ciphertexts of `params`: every layout must fit the slots, and the
    /// plan must fit the levels (as in batch packing).
    pub fn compile(plan: &Plan, params: &Parameters) -> Result<Self, PlanError> {
        plan.check_depth(params.name(), params.max_level())?;
        let slots = params.slots();
        let mut ops = Vec::with_capacity(plan.steps.len());
        let mut input = None;
        let mut cur = plan.inputs;
        for (index, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Linear(layer) => {
                    let m = layer.rows.len();
                    let widest = layer.rows.iter().map(Vec::len).max().unwrap_or(0);
                    if period(m) > slots {
                        return Err(too_wide(plan, index, m, slots));
                    }
                    if index == 0 && widest <= GATHER_MAX {
                        let p = period(m);
                        let mut columns = vec![vec![None; m]; widest];
                        let mut weights = vec![vec![0.0; p]; widest];
                        for (j, row) in layer.rows.iter().enumerate() {
                            for (k, &(c, w)) in row.iter().enumerate() {
                                columns[k][j] = Some(c);
                                weights[k][j] = w;
                            }
                        }
                        let mut bias = vec![0.0; p];
                        bias[..layer.bias.len()].copy_from_slice(&layer.bias);
                        input = Some(InputPacking::Gather { period: p, columns });
                        ops.push(Op::Gather {
                            weights,
                            bias,
                            period: p,
                        });
                    } else {
                        let n = layer.inputs.max(cur);
                        if period(n) > slots {
                            return Err(too_wide(plan, index, n, slots));
                        }
                        if index == 0 {
                            input = Some(InputPacking::Periodic { period: period(n) });
                        }
                        ops.push(Op::Diagonal(diagonal(layer, period(n))));
                    }
                    cur = m;
                }
                s => {
                    if index == 0 {
                        if period(cur) > slots {
                            return Err(too_wide(plan, index, cur, slots));
                        }
                        input = Some(InputPacking::Periodic {
                            period: period(cur),
                        });
                    }
                    ops.push(Op::Elementwise(s.clone()));
                }
            }
        }
        let input = input.unwrap_or(InputPacking::Periodic {
            period: period(plan.inputs),
        });
        let id = fingerprint(&ops, &input);
        Ok(LatencyPlan {
            model: plan.model.clone(),
            slots,
            input,
            ops,
            input_level: plan.input_level(),
            levels_needed: plan.levels_needed(),
            outputs: plan.outputs,
            id,
        })
    }

    /// Every rotation step the server performs (the Galois keys the client must make).
    pub fn rotations(&self) -> Vec<i64> {
        let set: BTreeSet<usize> = self.ops.iter().flat_map(Op::rotations).collect();
        set.into_iter().map(|r| r as i64).collect()
    }

    /// Ciphertexts the client sends per image.
    pub fn input_ciphertexts(&self) -> usize {
        match &self.input {
            InputPacking::Gather { columns, .. } => columns.len(),
            InputPacking::Periodic { .. } => 1,
        }
    }

    /// The slot values of each input ciphertext for the normalised input `x`.
    pub fn pack(&self, x: &[f64]) -> Vec<Vec<f64>> {
        let s = self.slots;
        match &self.input {
            InputPacking::Gather { period, columns } => columns
                .iter()
                .map(|col| {
                    (0..s)
                        .map(|j| col.get(j % period).copied().flatten().map_or(0.0, |c| x[c]))
                        .collect()
                })
                .collect(),
            InputPacking::Periodic { period } => {
                vec![(0..s)
                    .map(|j| x.get(j % period).copied().unwrap_or(0.0))
                    .collect()]
            }
        }
    }

    /// Counts of every operation.
    pub fn counts(&self) -> Vec<OpCounts> {
        let mut cur = match &self.input {
            InputPacking::Gather { columns, .. } => columns.first().map_or(0, Vec::len),
            InputPacking::Periodic { period } => *period,
        };
        self.ops
            .iter()
            .map(|op| {
                let (inputs, outputs, plain, cipher) = match op {
                    Op::Gather { weights, .. } => {
                        let rows = cur;
                        (weights.len(), rows, weights.len(), 0)
                    }
                    Op::Diagonal(d) => {
                        let pm = d
                            .giants
                            .iter()
                            .map(|(_, p)| p.iter().flatten().count())
                            .sum();
                        (d.inputs, d.outputs, pm, 0)
                    }
                    Op::Elementwise(Step::Cubic(_)) => (cur, cur, 0, 2),
                    Op::Elementwise(_) => (cur, cur, 0, 1),
                };
                let hoisted = match op {
                    Op::Diagonal(d) => d.baby.iter().filter(|&&b| b != 0).count(),
                    _ => 0,
                };
                let rotations = op.rotations().len() - hoisted;
                cur = outputs;
                OpCounts {
                    kind: op.kind(),
                    inputs,
                    outputs,
                    hoisted_rotations: hoisted,
                    rotations,
                    plain_mults: plain,
                    cipher_mults: cipher,
                    levels: op.levels(),
                }
            })
            .collect()
    }

    /// The plan on plaintext slot vectors (exactly the packed computation, without noise):
    /// for tests of the layouts against the batch plan.
    pub fn eval_plain(&self, x: &[f64]) -> Vec<f64> {
        let s = self.slots;
        let rot = |v: &[f64], r: usize| -> Vec<f64> { (0..s).map(|j| v[(j + r) % s]).collect() };
        let tile = |v: &[f64]| -> Vec<f64> { (0..s).map(|j| v[j % v.len()]).collect() };
        let inputs = self.pack(x);
        let mut cur: Vec<f64> = Vec::new();
        for op in &self.ops {
            cur = match op {
                Op::Gather { weights, bias, .. } => {
                    let mut acc = tile(bias);
                    for (ct, w) in inputs.iter().zip(weights) {
                        let w = tile(w);
                        for j in 0..s {
                            acc[j] += ct[j] * w[j];
                        }
                    }
                    acc
                }
                Op::Diagonal(d) => {
                    let x = if cur.is_empty() {
                        inputs[0].clone()
                    } else {
                        cur.clone()
                    };
                    let mut acc = vec![0.0; s];
                    for (g, pts) in &d.giants {
                        let mut part = vec![0.0; s];
                        for (b, p) in d.baby.iter().zip(pts) {
                            if let Some(p) = p {
                                let (p, xr) = (tile(p), rot(&x, *b));
                                for j in 0..s {
                                    part[j] += p[j] * xr[j];
                                }
                            }
                        }
                        let part = rot(&part, g * d.n1);
                        for j in 0..s {
                            acc[j] += part[j];
                        }
                    }
                    for &f in &d.fold {
                        let r = rot(&acc, f);
                        for j in 0..s {
                            acc[j] += r[j];
                        }
                    }
                    let b = tile(&d.bias);
                    acc.iter().zip(b).map(|(a, b)| a + b).collect()
                }
                Op::Elementwise(step) => {
                    let x = if cur.is_empty() {
                        inputs[0].clone()
                    } else {
                        cur.clone()
                    };
                    step.eval_plain(&x)
                }
            };
        }
        cur.truncate(self.outputs);
        cur
    }

    /// Client side: encrypts the normalised input `x` of one image as the plan's input
    /// ciphertexts, at its input level and the default scale.
    pub fn encrypt_image(
        &self,
        encoder: &Encoder,
        encryptor: &mut Encryptor,
        pk: &PublicKey,
        x: &[f64],
    ) -> Result<Vec<Ciphertext>, CkksError> {
        let params = encoder.context().params();
        if self.input_level > params.max_level() {
            return Err(CkksError::TooShallow {
                level: params.max_level(),
                needed: self.input_level,
            });
        }
        self.pack(x)
            .iter()
            .map(|v| {
                let pt = encoder.encode(v, self.input_level, params.default_scale())?;
                encryptor.encrypt(&pt, pk)
            })
            .collect()
    }

    /// Client side: the logits of one image from the ciphertext [`Session::score_latency`]
    /// returned.
    ///
    /// [`Session::score_latency`]: super::Session::score_latency
    pub fn decrypt_logits(
        &self,
        decryptor: &Decryptor,
        encoder: &Encoder,
        sk: &SecretKey,
        logits: &[Ciphertext],
    ) -> Result<Vec<f64>, CkksError> {
        let ct = logits.first().ok_or(CkksError::EmptyBatch)?;
        let mut v = encoder.decode(&decryptor.decrypt(ct, sk)?);
        v.truncate(self.outputs);
        Ok(v)
    }

    /// Bytes of one Galois key of `params` (what each rotation costs the client to send).
    pub fn galois_key_bytes(params: &Parameters) -> usize {
        2 * params.dnum() * (params.max_level() + 1 + params.p().len()) * params.n() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::Preset;

    fn layer(m: usize, n: usize, seed: usize) -> LinearLayer {
        LinearLayer {
            inputs: n,
            rows: (0..m)
                .map(|i| {
                    (0..n)
                        .filter(|c| !(c * 7 + i * 3 + seed).is_multiple_of(5))
                        .map(|c| (c, (((c * 13 + i * 17 + seed) % 11) as f64 - 5.0) / 8.0))
                        .collect()
                })
                .collect(),
            bias: (0..m).map(|i| i as f64 / 10.0).collect(),
        }
    }

    #[test]
    fn packed_layouts_compute_the_batch_plan() {
        let params = Preset::by_name("toy4096")
            .unwrap()
            .parameters(true)
            .unwrap();
        // gathered first step (few entries per row), compressing and expanding diagonal steps
        let mut first = layer(30, 20, 1);
        for row in &mut first.rows {
            row.truncate(4);
        }
        for steps in [
            vec![
                Step::Linear(first.clone()),
                Step::Square,
                Step::Linear(layer(70, 30, 2)),
            ],
            vec![
                Step::Linear(layer(10, 100, 3)),
                Step::Square,
                Step::Linear(layer(3, 10, 4)),
            ],
            vec![Step::Linear(layer(100, 100, 6))],
        ] {
            let inputs = match &steps[0] {
                Step::Linear(l) => l.inputs,
                _ => unreachable!(),
            };
            let outputs = match steps.last().unwrap() {
                Step::Linear(l) => l.rows.len(),
                _ => unreachable!(),
            };
            let plan = Plan {
                model: "t".into(),
                inputs,
                outputs,
                steps,
            };
            let lp = LatencyPlan::compile(&plan, &params).unwrap();
            let x: Vec<f64> = (0..inputs)
                .map(|i| ((i * 5) % 9) as f64 / 9.0 - 0.4)
                .collect();
            let mut want = x.clone();
            for s in &plan.steps {
                want = s.eval_plain(&want);
            }
            let got = lp.eval_plain(&x);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
            }
            assert!(!lp.rotations().contains(&0));
        }
    }

    #[test]
    fn a_layer_wider_than_the_slots_names_a_preset_that_fits() {
        let params = Preset::by_name("toy4096")
            .unwrap()
            .parameters(true)
            .unwrap();
        for (inputs, steps) in [
            (10, vec![Step::Linear(layer(3000, 10, 1))]),
            (
                3000,
                vec![
                    Step::Linear(layer(10, 3000, 1)),
                    Step::Square,
                    Step::Linear(layer(3, 10, 2)),
                ],
            ),
        ] {
            let plan = Plan {
                model: "wide".into(),
                inputs,
                outputs: 3,
                steps,
            };
            let e = LatencyPlan::compile(&plan, &params)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("step 0")
                    && e.contains("4096 slots, but a ciphertext has 2048")
                    && e.contains("--preset n8192")
                    && e.contains("--packing batch"),
                "{e}"
            );
        }
    }

    #[test]
    fn baby_steps_balance_giant_steps() {
        let all: BTreeSet<usize> = (0..128).collect();
        assert_eq!(best_n1(&all, 128), 16);
        let few: BTreeSet<usize> = [0, 1, 2].into_iter().collect();
        assert_eq!(best_n1(&few, 128), 4);
    }
}
