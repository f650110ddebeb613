//! Plaintext f64 reference forward pass, in the exact operation order of the encrypted path.
//!
//! Order of operations (what the HE scheduler must reproduce):
//! * input: `x = (pixel / 255 - mean[c]) / std[c]` (done by the client before encryption);
//! * conv2d: for each output `(o, y, x)`, `acc = 0; for c, ky, kx: acc += w * in` (zero padding
//!   contributes nothing), then `acc + b[o]`;
//! * sum pool: plain sum over the window, row-major;
//! * dense: `acc = 0; for i: acc += w[o, i] * in[i]`, then `acc + b[o]`;
//! * polynomial: `c0 + c1*x + c2*(x*x) + c3*((x*x)*x)`, see [`crate::nn::activation::Polynomial::eval`].

use super::dataset::Dataset;
use super::model::{Layer, Model, ModelError};
use rayon::prelude::*;
use serde::Serialize;

/// Range of the inputs seen by one activation layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ActRange {
    /// Layer index in the model.
    pub layer: usize,
    /// Smallest input.
    pub min: f64,
    /// Largest input.
    pub max: f64,
}

impl ActRange {
    fn merge(mut self, o: &ActRange) -> ActRange {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self
    }
}

/// Normalises raw pixels (CHW bytes) as the model expects.
pub fn normalize(model: &Model, pixels: &[u8]) -> Vec<f64> {
    normalize_with(model, |i| pixels[i] as f64 / 255.0)
}

/// [`normalize`] of an image given as values in [0, 1] (pixel / 255), CHW.
pub fn normalize_unit(model: &Model, values: &[f32]) -> Vec<f64> {
    normalize_with(model, |i| values[i] as f64)
}

fn normalize_with(model: &Model, unit: impl Fn(usize) -> f64) -> Vec<f64> {
    let [c, h, w] = model.input;
    let plane = h * w;
    (0..c * plane)
        .map(|i| {
            let ch = i / plane;
            (unit(i) - model.normalization.mean[ch]) / model.normalization.std[ch]
        })
        .collect()
}

/// Forward pass on one normalised input (CHW, `c*h*w` values); returns the logits and the range of
/// each activation's input. Errors if the model's layers do not fit together or `input` does not
/// have the model's input size.
pub fn forward_with_ranges(
    model: &Model,
    input: &[f64],
) -> Result<(Vec<f64>, Vec<ActRange>), ModelError> {
    model.shapes()?;
    let [c, h, w] = model.input;
    if input.len() != c * h * w {
        return Err(ModelError::Layer {
            index: 0,
            reason: format!(
                "input has {} values, the model expects {c}x{h}x{w}",
                input.len()
            ),
        });
    }
    Ok(forward_unchecked(model, input))
}

fn forward_unchecked(model: &Model, input: &[f64]) -> (Vec<f64>, Vec<ActRange>) {
    let [mut c, mut h, mut w] = model.input;
    let mut x = input.to_vec();
    let mut ranges = Vec::new();
    for (li, layer) in model.layers.iter().enumerate() {
        match layer {
            Layer::Conv2d {
                weight,
                bias,
                stride,
                padding,
            } => {
                let (o, ic, k, _) = weight.dim();
                let (s, p) = (*stride, *padding as isize);
                let oh = (h + 2 * *padding - k) / s + 1;
                let ow = (w + 2 * *padding - k) / s + 1;
                let mut out = vec![0.0; o * oh * ow];
                for oc in 0..o {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = 0.0;
                            for cc in 0..ic {
                                for ky in 0..k {
                                    let iy = (y * s + ky) as isize - p;
                                    if iy < 0 || iy >= h as isize {
                                        continue;
                                    }
                                    for kx in 0..k {
                                        let ix = (xx * s + kx) as isize - p;
                                        if ix < 0 || ix >= w as isize {
                                            continue;
                                        }
                                        acc += weight[[oc, cc, ky, kx]]
                                            * x[(cc * h + iy as usize) * w + ix as usize];
                                    }
                                }
                            }
                            out[(oc * oh + y) * ow + xx] = acc + bias[oc];
                        }
                    }
                }
                (c, h, w) = (o, oh, ow);
                x = out;
            }
            Layer::SumPool { kernel, stride } => {
                let (k, s) = (*kernel, *stride);
                let oh = (h - k) / s + 1;
                let ow = (w - k) / s + 1;
                let mut out = vec![0.0; c * oh * ow];
                for cc in 0..c {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = 0.0;
                            for ky in 0..k {
                                for kx in 0..k {
                                    acc += x[(cc * h + y * s + ky) * w + xx * s + kx];
                                }
                            }
                            out[(cc * oh + y) * ow + xx] = acc;
                        }
                    }
                }
                (h, w) = (oh, ow);
                x = out;
            }
            Layer::Flatten => {
                (c, h, w) = (c * h * w, 1, 1);
            }
            Layer::Dense { weight, bias } => {
                let (o, n) = weight.dim();
                let out: Vec<f64> = (0..o)
                    .map(|oi| {
                        let mut acc = 0.0;
                        for (i, xi) in x.iter().enumerate().take(n) {
                            acc += weight[[oi, i]] * xi;
                        }
                        acc + bias[oi]
                    })
                    .collect();
                (c, h, w) = (o, 1, 1);
                x = out;
            }
            Layer::Act(a) => {
                let mut r = ActRange {
                    layer: li,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                };
                for v in x.iter_mut() {
                    r.min = r.min.min(*v);
                    r.max = r.max.max(*v);
                    *v = a.eval(*v);
                }
                ranges.push(r);
            }
        }
    }
    (x, ranges)
}

/// Logits for one normalised input (see [`forward_with_ranges`]).
pub fn forward(model: &Model, input: &[f64]) -> Result<Vec<f64>, ModelError> {
    Ok(forward_with_ranges(model, input)?.0)
}

/// Index of the largest value (first one on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Logits closer than this count as a tie: an encrypted argmax that picks either is right.
pub const TIE: f64 = 1e-3;

/// Whether `got` (decrypted logits) picks the class `want` (the reference's) picks, or one
/// within [`TIE`] of it: CKKS noise may break a near-tie either way.
pub fn agrees(want: &[f64], got: &[f64]) -> bool {
    let (w, g) = (argmax(want), argmax(got));
    w == g || want[g] >= want[w] - TIE
}

/// Result of running the reference on a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Samples.
    pub samples: usize,
    /// Correct predictions.
    pub correct: usize,
    /// correct / samples.
    pub accuracy: f64,
    /// Per activation layer, the input range seen.
    pub activation_ranges: Vec<ActRange>,
    /// Logits of every sample (row-major, samples x classes).
    #[serde(skip)]
    pub logits: Vec<Vec<f64>>,
}

/// Runs the reference on every image of `data` (in parallel); errors if the images do not have
/// the model's input shape or the model's layers do not fit together.
pub fn evaluate(model: &Model, data: &Dataset) -> Result<EvalReport, ModelError> {
    model.shapes()?;
    if data.shape != model.input {
        return Err(ModelError::Layer {
            index: 0,
            reason: format!(
                "the model expects {:?} (c, h, w) images, the dataset has {:?}",
                model.input, data.shape
            ),
        });
    }
    let outs: Vec<(Vec<f64>, Vec<ActRange>)> = (0..data.len())
        .into_par_iter()
        .map(|i| forward_unchecked(model, &normalize(model, data.image(i))))
        .collect();
    let mut ranges: Vec<ActRange> = Vec::new();
    let mut correct = 0;
    for (i, (l, r)) in outs.iter().enumerate() {
        if let Some(bad) = l.iter().find(|v| !v.is_finite()) {
            // An argmax over NaN or infinities would be an accuracy of nothing.
            return Err(ModelError::Layer {
                index: model.layers.len().saturating_sub(1),
                reason: format!(
                    "image {i} gives the logit {bad}: the model's values overflow f64 (weights or \
                     polynomial coefficients far too large); it computes nothing meaningful, in \
                     plaintext or encrypted"
                ),
            });
        }
        if argmax(l) == data.labels[i] as usize {
            correct += 1;
        }
        if ranges.is_empty() {
            ranges = r.clone();
        } else {
            ranges = ranges.iter().zip(r).map(|(a, b)| a.merge(b)).collect();
        }
    }
    let samples = data.len();
    Ok(EvalReport {
        samples,
        correct,
        accuracy: if samples == 0 {
            0.0
        } else {
            correct as f64 / samples as f64
        },
        activation_ranges: ranges,
        logits: outs.into_iter().map(|(l, _)| l).collect(),
    })
}
