//! Compiles an exported [`Model`] into an HE plan for batch packing: a list of linear steps
//! (convolutions, pools, flattens and dense layers, composed where they meet, with activation
//! coefficients folded in) and squarings, one level each.
//!
//! A degree-2 activation `p(x) = c0 + c1 x + c2 x^2` is rewritten as `c2 (x + s)^2 + t` with
//! `s = c1 / (2 c2)` and `t = c0 - c1^2 / (4 c2)`: the shift `s` goes into the bias of the linear
//! step before it, the square is one ciphertext multiplication, and `c2` and `t` go into the
//! weights and bias of the linear step after it. So every activation costs exactly one level and
//! every linear step one level (integer weights at scale `q_l`, then a rescale). A degree-3
//! activation is evaluated as `(c3 x + c2) x^2 + (c1 x + c0)` in two levels.

use crate::ckks::{LinearLayer, Preset, PRESETS};
use crate::nn::arch::Shape;
use crate::nn::model::{Activation, Layer, Model};

/// Why a model cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The model itself is inconsistent.
    #[error(transparent)]
    Model(#[from] crate::nn::model::ModelError),
    /// A linear step with more terms than the plan may hold.
    #[error(
        "layer {index} of model `{model}`: its linear step would hold up to {terms} weights \
         ({rows} outputs reading up to {fan_in} inputs each), over the limit of {limit}; the \
         model is far larger than what runs encrypted"
    )]
    TooLarge {
        /// Model name.
        model: String,
        /// Layer index in the model.
        index: usize,
        /// Outputs of the composed step.
        rows: usize,
        /// Inputs each output reads, at most.
        fan_in: usize,
        /// `rows * fan_in`.
        terms: u128,
        /// [`MAX_PLAN_TERMS`].
        limit: usize,
    },
    /// An activation the encrypted path cannot compute.
    #[error("layer {index}: {reason}")]
    Activation {
        /// Layer index in the model.
        index: usize,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Values that would not fit the modulus of their level (they would wrap around and decrypt
    /// to garbage).
    #[error(
        "step {step} ({kind}) of model `{model}`: on input {input} (of those checked, in order) values reach {value:.3e}, but at level {level} of {preset} a value must stay below {limit:.3e} (the modulus over the scale, with a margin of 2^{margin_bits}); the weights or the inputs are too large for CKKS: check the model's weights and input normalisation, or leave that input out"
    )]
    Overflow {
        /// Model name.
        model: String,
        /// Step index in the plan.
        step: usize,
        /// `linear`, `square` or `cubic`.
        kind: &'static str,
        /// The input (its index among those checked) that reaches it.
        input: usize,
        /// The largest magnitude it reaches there.
        value: f64,
        /// The level the value lives at.
        level: usize,
        /// The largest magnitude the level holds, with the margin.
        limit: f64,
        /// Preset name.
        preset: String,
        /// Safety margin, in bits.
        margin_bits: u32,
    },
    /// A layer latency packing cannot lay out (too many values for the slots).
    #[error("step {step} of model `{model}` in latency packing: {reason}")]
    Packing {
        /// Model name.
        model: String,
        /// Step index in the plan.
        step: usize,
        /// What is wrong and what to do.
        reason: String,
    },
    /// More levels than the parameters have.
    #[error(
        "model `{model}` needs {depth} levels plus 1 of headroom for the logits, but preset {preset} has {available}; {advice}"
    )]
    TooDeep {
        /// Model name.
        model: String,
        /// Levels the plan consumes.
        depth: usize,
        /// The preset.
        preset: String,
        /// Its levels (`max_level`).
        available: usize,
        /// Which preset would fit.
        advice: String,
    },
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A linear layer over the current batch (then a rescale): one level.
    Linear(LinearLayer),
    /// Every ciphertext squared (multiply, relinearize, rescale): one level.
    Square,
    /// `c0 + c1 x + c2 x^2 + c3 x^3` on every ciphertext, as `(c3 x + c2) x^2 + (c1 x + c0)`:
    /// two levels.
    Cubic([f64; 4]),
}

/// The most weights one composed linear step may hold (2^26, 1 GiB of sparse terms): checked
/// from the layers' shapes before anything is composed, so a crafted model is refused with its
/// size instead of exhausting memory.
pub const MAX_PLAN_TERMS: usize = 1 << 26;

/// Safety margin of [`Plan::check_magnitudes`], in bits (a factor of 16 above the largest
/// value seen on the calibration inputs).
pub const MARGIN_BITS: u32 = 4;

impl Step {
    /// `linear`, `square` or `cubic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Linear(_) => "linear",
            Step::Square => "square",
            Step::Cubic(_) => "cubic",
        }
    }

    /// The step in plaintext f64.
    pub fn eval_plain(&self, x: &[f64]) -> Vec<f64> {
        match self {
            Step::Linear(l) => l
                .rows
                .iter()
                .enumerate()
                .map(|(j, row)| {
                    l.bias.get(j).copied().unwrap_or(0.0)
                        + row.iter().map(|&(i, w)| w * x[i]).sum::<f64>()
                })
                .collect(),
            Step::Square => x.iter().map(|v| v * v).collect(),
            Step::Cubic(c) => x
                .iter()
                .map(|v| (c[3] * v + c[2]) * v * v + (c[1] * v + c[0]))
                .collect(),
        }
    }

    /// Levels the step consumes.
    pub fn levels(&self) -> usize {
        match self {
            Step::Linear(_) | Step::Square => 1,
            Step::Cubic(_) => 2,
        }
    }
}

/// An HE plan: what the server runs on a batch of `inputs` ciphertexts (one per input value,
/// slot `s` of every ciphertext holding sample `s`) to get `outputs` ciphertexts of logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Model name.
    pub model: String,
    /// Ciphertexts in (input values, CHW order).
    pub inputs: usize,
    /// Ciphertexts out (classes).
    pub outputs: usize,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// A pending affine map from the current encrypted values to the model's values.
struct Affine {
    rows: Vec<Vec<(usize, f64)>>,
    bias: Vec<f64>,
}

impl Affine {
    fn identity(n: usize) -> Self {
        Affine {
            rows: (0..n).map(|i| vec![(i, 1.0)]).collect(),
            bias: vec![0.0; n],
        }
    }

    /// `self` followed by the layer `(rows, bias)` over its outputs.
    fn then(self, rows: Vec<Vec<(usize, f64)>>, bias: Vec<f64>) -> Self {
        let mut acc: Vec<f64> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        let out_rows = rows
            .iter()
            .map(|row| {
                for &(i, w) in row {
                    for &(k, v) in &self.rows[i] {
                        if k >= acc.len() {
                            acc.resize(k + 1, 0.0);
                        }
                        if acc[k] == 0.0 {
                            touched.push(k);
                        }
                        acc[k] += w * v;
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                let r: Vec<(usize, f64)> = touched
                    .drain(..)
                    .map(|k| (k, std::mem::take(&mut acc[k])))
                    .filter(|&(_, v)| v != 0.0)
                    .collect();
                r
            })
            .collect();
        let out_bias = rows
            .iter()
            .zip(bias)
            .map(|(row, b)| b + row.iter().map(|&(i, w)| w * self.bias[i]).sum::<f64>())
            .collect();
        Affine {
            rows: out_rows,
            bias: out_bias,
        }
    }

    /// Applies `y = a x + c` to every output.
    fn scale_shift(mut self, a: f64, c: f64) -> Self {
        for row in &mut self.rows {
            for e in row.iter_mut() {
                e.1 *= a;
            }
        }
        for b in &mut self.bias {
            *b = a * *b + c;
        }
        self
    }

    fn into_layer(self, inputs: usize) -> LinearLayer {
        LinearLayer {
            inputs,
            rows: self.rows,
            bias: self.bias,
        }
    }
}

/// The rows of a convolution from CHW maps of `h x w` to maps of `oh x ow`.
fn conv_rows(
    weight: &ndarray::Array4<f64>,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    stride: usize,
    padding: usize,
) -> Vec<Vec<(usize, f64)>> {
    let (o, ic, k, _) = weight.dim();
    let mut rows = Vec::with_capacity(o * oh * ow);
    for oc in 0..o {
        for y in 0..oh {
            for x in 0..ow {
                let mut row = Vec::new();
                for c in 0..ic {
                    for ky in 0..k {
                        let iy = (y * stride + ky) as isize - padding as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (x * stride + kx) as isize - padding as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let v = weight[[oc, c, ky, kx]];
                            if v != 0.0 {
                                row.push(((c * h + iy as usize) * w + ix as usize, v));
                            }
                        }
                    }
                }
                rows.push(row);
            }
        }
    }
    rows
}

impl Plan {
    /// Compiles `model` (polynomial activations of degree at most 2).
    pub fn compile(model: &Model) -> Result<Plan, PlanError> {
        // The shape of every layer's input and output, from the model's one shape rule.
        let shapes = model.shapes()?;
        let [c0, h0, w0] = model.input;
        let inputs = c0 * h0 * w0;
        let maps = |s: &Shape| match *s {
            Shape::Maps { c, h, w } => (c, h, w),
            Shape::Flat(n) => (n, 1, 1),
        };
        let input_of = |index: usize| {
            if index == 0 {
                (c0, h0, w0)
            } else {
                maps(&shapes[index - 1])
            }
        };
        let mut steps = Vec::new();
        // Encrypted values so far, and the affine map from them to the model's current values.
        let mut width = inputs;
        let mut pending = Affine::identity(inputs);
        // At most how many encrypted values each pending row reads, and the budget of a layer
        // composed onto it (`rows` outputs each reading `reads` of the layer's inputs).
        let mut fan_in = 1usize;
        let budget = |index: usize, rows: usize, reads: usize, fan_in: &mut usize, width: usize| {
            let fan = fan_in.saturating_mul(reads).min(width);
            let terms = rows as u128 * fan.max(reads) as u128;
            if terms > MAX_PLAN_TERMS as u128 {
                return Err(PlanError::TooLarge {
                    model: model.name.clone(),
                    index,
                    rows,
                    fan_in: fan.max(reads),
                    terms,
                    limit: MAX_PLAN_TERMS,
                });
            }
            *fan_in = fan;
            Ok(())
        };
        for (index, layer) in model.layers.iter().enumerate() {
            match layer {
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let (_, h, w) = input_of(index);
                    let (o, oh, ow) = maps(&shapes[index]);
                    let (_, ic, k, _) = weight.dim();
                    budget(index, o * oh * ow, ic * k * k, &mut fan_in, width)?;
                    let rows = conv_rows(weight, (h, w), (oh, ow), *stride, *padding);
                    let b = (0..o * oh * ow).map(|r| bias[r / (oh * ow)]).collect();
                    pending = pending.then(rows, b);
                }
                Layer::SumPool { kernel, stride } => {
                    let (k, s) = (*kernel, *stride);
                    let (c, h, w) = input_of(index);
                    let (_, oh, ow) = maps(&shapes[index]);
                    budget(index, c * oh * ow, k * k, &mut fan_in, width)?;
                    let mut rows = Vec::with_capacity(c * oh * ow);
                    for cc in 0..c {
                        for y in 0..oh {
                            for x in 0..ow {
                                rows.push(
                                    (0..k * k)
                                        .map(|t| ((cc * h + y * s + t / k) * w + x * s + t % k, 1.0))
                                        .collect(),
                                );
                            }
                        }
                    }
                    pending = pending.then(rows, vec![0.0; c * oh * ow]);
                }
                Layer::Flatten => {}
                Layer::Dense { weight, bias } => {
                    let (o, i) = weight.dim();
                    budget(index, o, i, &mut fan_in, width)?;
                    let rows = weight
                        .outer_iter()
                        .map(|r| {
                            r.iter()
                                .enumerate()
                                .filter(|(_, &v)| v != 0.0)
                                .map(|(i, &v)| (i, v))
                                .collect()
                        })
                        .collect();
                    pending = pending.then(rows, bias.to_vec());
                }
                Layer::Act(Activation::Poly { coeffs }) => {
                    let p = &coeffs.coeffs;
                    let k = |i: usize| p.get(i).copied().unwrap_or(0.0);
                    if p.iter().skip(4).any(|&v| v != 0.0) {
                        return Err(PlanError::Activation {
                            index,
                            reason: format!(
                                "polynomial {coeffs} has degree {} but the encrypted path evaluates degree 3 at most; train with --act poly2 or poly3",
                                coeffs.degree()
                            ),
                        });
                    }
                    if k(3) != 0.0 {
                        // Degree 3: two levels on the layer as it is (no folding).
                        let layer = pending.into_layer(width);
                        width = layer.rows.len();
                        steps.push(Step::Linear(layer));
                        steps.push(Step::Cubic([k(0), k(1), k(2), k(3)]));
                        pending = Affine::identity(width);
                        fan_in = 1;
                    } else if k(2) == 0.0 {
                        // Affine activation: nothing to square.
                        pending = pending.scale_shift(k(1), k(0));
                    } else {
                        let (a, shift) = (k(2), k(1) / (2.0 * k(2)));
                        let t = k(0) - k(1) * k(1) / (4.0 * k(2));
                        let layer = pending.scale_shift(1.0, shift).into_layer(width);
                        width = layer.rows.len();
                        steps.push(Step::Linear(layer));
                        steps.push(Step::Square);
                        pending = Affine::identity(width).scale_shift(a, t);
                        fan_in = 1;
                    }
                }
                Layer::Act(Activation::Std { func }) => {
                    return Err(PlanError::Activation {
                        index,
                        reason: format!(
                            "{func} cannot be computed on CKKS ciphertexts; train the model with a polynomial activation (--act poly2)"
                        ),
                    })
                }
                #[allow(unreachable_patterns)]
                other => {
                    return Err(PlanError::Activation {
                        index,
                        reason: format!("layer {other:?} is not supported by the encrypted path"),
                    })
                }
            }
        }
        let last = pending.into_layer(width);
        let outputs = last.rows.len();
        steps.push(Step::Linear(last));
        Ok(Plan {
            model: model.name.clone(),
            inputs,
            outputs,
            steps,
        })
    }

    /// Levels the plan consumes.
    pub fn depth(&self) -> usize {
        self.steps.iter().map(Step::levels).sum()
    }

    /// Levels a preset needs for this plan: the depth plus one level of headroom, so the logits
    /// are decrypted above the last prime (whose 4 bits above the scale would bound them by 8).
    pub fn levels_needed(&self) -> usize {
        self.depth() + 1
    }

    /// The level the inputs are encrypted at: the lowest that leaves [`Self::levels_needed`]
    /// levels, so the server pays for no limb the plan does not use.
    pub fn input_level(&self) -> usize {
        self.levels_needed()
    }

    /// Checks that `max_level` levels of preset `preset` suffice.
    pub fn check_depth(&self, preset: &str, max_level: usize) -> Result<(), PlanError> {
        if self.levels_needed() <= max_level {
            return Ok(());
        }
        let fits: Vec<&Preset> = PRESETS
            .iter()
            .filter(|p| p.secure && p.q_bits.len() > self.levels_needed())
            .collect();
        let advice = match fits.first() {
            Some(p) => format!("use --preset {}", p.name),
            None => "no preset is deep enough; use fewer activations".to_string(),
        };
        Err(PlanError::TooDeep {
            model: self.model.clone(),
            depth: self.depth(),
            preset: preset.to_string(),
            available: max_level,
            advice,
        })
    }

    /// Runs the plan in plaintext f64 on one input (for checking the compilation against
    /// [`crate::nn::reference::forward`]).
    pub fn eval_plain(&self, input: &[f64]) -> Vec<f64> {
        let mut x = input.to_vec();
        for step in &self.steps {
            x = step.eval_plain(&x);
        }
        x
    }

    /// Checks that every value the plan computes on the inputs `input(0..count)` (normalised
    /// samples) fits the modulus of its level with a margin of 2^[`MARGIN_BITS`]: at level `l`
    /// a value `v` is held as `v * scale` modulo `Q_l`, so `|v|` must stay below
    /// `Q_l / (2 scale)` (and the products before each rescale, `Q_{l+1} / (2 scale q_{l+1})`,
    /// the same bound). Every input is checked (in parallel, a chunk at a time), since one
    /// image that overflows decrypts to garbage; the error names the first that does. Call
    /// after [`Self::check_depth`].
    pub fn check_inputs(
        &self,
        params: &crate::ckks::Parameters,
        count: usize,
        input: impl Fn(usize) -> Vec<f64> + Sync,
    ) -> Result<(), PlanError> {
        use rayon::prelude::*;
        // log2 Q_l for every level.
        let log_q: Vec<f64> = params
            .q()
            .iter()
            .scan(0.0, |acc, &q| {
                *acc += (q as f64).log2();
                Some(*acc)
            })
            .collect();
        let limit = |level: usize| {
            (log_q[level] - 1.0 - f64::from(params.log_scale()) - f64::from(MARGIN_BITS)).exp2()
        };
        let too_deep = || PlanError::TooDeep {
            model: self.model.clone(),
            depth: self.depth(),
            preset: params.name().to_string(),
            available: params.max_level(),
            advice: "use a preset with more levels".into(),
        };
        if self.input_level() > params.max_level() || self.input_level() < self.depth() {
            return Err(too_deep());
        }
        // The first step and value at which input `k` exceeds its level's bound.
        let check_one = |k: usize| -> Option<PlanError> {
            let mut x = input(k);
            let mut level = self.input_level();
            for (index, step) in self.steps.iter().enumerate() {
                let out = level - step.levels();
                let mut worst = 0.0f64;
                if let Step::Cubic(_) = step {
                    // x^2 lives one level down, before the product with (c3 x + c2).
                    let sq = x.iter().fold(0.0f64, |m, v| m.max(v * v));
                    if sq > limit(level - 1) {
                        worst = sq * limit(out) / limit(level - 1);
                    }
                }
                x = step.eval_plain(&x);
                worst = x.iter().fold(worst, |m, v| m.max(v.abs()));
                if !worst.is_finite() || worst > limit(out) {
                    return Some(PlanError::Overflow {
                        model: self.model.clone(),
                        step: index,
                        kind: step.kind(),
                        input: k,
                        value: worst,
                        level: out,
                        limit: limit(out),
                        preset: params.name().to_string(),
                        margin_bits: MARGIN_BITS,
                    });
                }
                level = out;
            }
            None
        };
        const CHUNK: usize = 1024;
        for start in (0..count).step_by(CHUNK) {
            let end = (start + CHUNK).min(count);
            if let Some(e) = (start..end).into_par_iter().find_map_first(check_one) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// [`Self::check_inputs`] of the given inputs.
    pub fn check_magnitudes(
        &self,
        params: &crate::ckks::Parameters,
        inputs: &[Vec<f64>],
    ) -> Result<(), PlanError> {
        self.check_inputs(params, inputs.len(), |k| inputs[k].clone())
    }

    /// Largest number of ciphertexts any step produces.
    pub fn max_width(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Linear(l) => l.rows.len(),
                Step::Square | Step::Cubic(_) => 0,
            })
            .max()
            .unwrap_or(0)
            .max(self.inputs)
    }
}
