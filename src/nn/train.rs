//! Training with candle on the CPU (convolutions as gather + GEMM), export to a folded [`Model`],
//! and candle's own forward pass of an exported model (cross-check of the f64 reference).

use super::activation::{ActFn, Polynomial};
use super::arch::{ActChoice, ArchError, ArchSpec, LayerSpec, Shape};
use super::dataset::Dataset;
use super::model::{Activation, Layer, Model, ModelError, Normalization, TrainedLayer};
use super::reference;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use ndarray::{Array1, Array2, Array4};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::time::Instant;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Bad architecture.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Folding / export failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The dataset does not fit the architecture.
    #[error("dataset: {0}")]
    Data(String),
    /// Loss became NaN or infinite.
    #[error("training diverged at epoch {epoch} (loss {loss}); try a lower --lr, a smaller --interval, or --act relu to check the setup")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// The loss.
        loss: f32,
    },
    /// candle error.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Training hyper-parameters.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay to 0).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    /// Seed of the weight init and the shuffling.
    pub seed: u64,
    /// Data augmentation: random horizontal flip and a random shift of up to `max_shift` pixels.
    pub augment: bool,
    /// Largest shift (pixels, each direction) of the augmentation.
    pub max_shift: usize,
    /// Dropout probability on the inputs of every dense layer while training (0 = off).
    pub dropout: f64,
    /// Label smoothing of the cross-entropy loss (0 = plain cross entropy).
    pub label_smoothing: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            clip: 5.0,
            seed: 1,
            augment: false,
            max_shift: 2,
            dropout: 0.0,
            label_smoothing: 0.0,
        }
    }
}

/// Per-epoch statistics.
#[derive(Clone, Debug, Serialize)]
pub struct EpochStats {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Test accuracy (candle forward, batch norm in inference mode).
    pub test_accuracy: f64,
    /// Wall time of the epoch (training only).
    pub seconds: f64,
}

/// Data layout of an activation tensor `[batch, n]`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Input images: channel-major.
    Chw { c: usize, h: usize, w: usize },
    /// Conv / pool outputs: position-major (`(y*w + x)*c + ch`).
    Hwc { c: usize, h: usize, w: usize },
    /// Flat features; `from` is the map layout they were flattened from.
    Flat {
        n: usize,
        from: Option<(bool, usize, usize, usize)>,
    },
}

impl Layout {
    fn numel(&self) -> usize {
        match *self {
            Layout::Chw { c, h, w } | Layout::Hwc { c, h, w } => c * h * w,
            Layout::Flat { n, .. } => n,
        }
    }
    fn maps(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Layout::Chw { c, h, w } | Layout::Hwc { c, h, w } => Some((c, h, w)),
            _ => None,
        }
    }
    fn index(&self, ch: usize, y: usize, x: usize) -> usize {
        match *self {
            Layout::Chw { h, w, .. } => (ch * h + y) * w + x,
            Layout::Hwc { c, w, .. } => (y * w + x) * c + ch,
            Layout::Flat { .. } => ch,
        }
    }
    /// Channels for batch norm: maps -> c (values per channel interleaved as HWC), flat -> n.
    fn bn_channels(&self) -> usize {
        match *self {
            Layout::Hwc { c, .. } | Layout::Chw { c, .. } => c,
            Layout::Flat { n, .. } => n,
        }
    }
}

enum NetAct {
    Std(ActFn),
    Poly { coeffs: Tensor },
}

enum NetLayer {
    Conv {
        w: Var,
        b: Var,
        idx: Tensor,
        positions: usize,
        ckk: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        in_c: usize,
    },
    Pool {
        idx: Tensor,
        positions: usize,
        kk: usize,
        c: usize,
        k: usize,
        stride: usize,
    },
    Dense {
        w: Var,
        b: Var,
        in_layout: Layout,
    },
    Flatten,
    BatchNorm {
        gamma: Var,
        beta: Var,
        mean: Vec<f32>,
        var: Vec<f32>,
        channels: usize,
    },
    Act(NetAct),
}

/// A trainable network built from an [`ArchSpec`].
pub struct Net {
    arch: ArchSpec,
    act: ActChoice,
    input: [usize; 3],
    layers: Vec<NetLayer>,
    vars: Vec<Var>,
    device: Device,
    /// Training-time dropout before dense layers: probability and the seeded mask generator.
    dropout: Option<(f64, ChaCha20Rng)>,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

fn randn(rng: &mut ChaCha20Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

impl Net {
    /// Builds the network (deterministic init from `seed`) for inputs of shape (c, h, w).
    pub fn new(
        arch: &ArchSpec,
        act: &ActChoice,
        input: [usize; 3],
        seed: u64,
    ) -> Result<Net, TrainError> {
        let shapes = arch.shapes(input)?;
        let device = Device::Cpu;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut layout = Layout::Chw {
            c: input[0],
            h: input[1],
            w: input[2],
        };
        let mut layers = Vec::new();
        let mut vars = Vec::new();
        let n_layers = arch.layers.len();
        for (li, l) in arch.layers.iter().enumerate() {
            let is_last_linear = !arch.layers[li + 1..]
                .iter()
                .any(|l| matches!(l, LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. }));
            let layer = match l {
                LayerSpec::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let (c, h, w) = layout
                        .maps()
                        .ok_or_else(|| TrainError::Data("conv on flat input".into()))?;
                    let Shape::Maps { h: oh, w: ow, .. } = shapes[li] else {
                        unreachable!("checked by shapes")
                    };
                    let k = *kernel;
                    let pad_index = layout.numel() as u32;
                    let mut idx = Vec::with_capacity(oh * ow * c * k * k);
                    for y in 0..oh {
                        for x in 0..ow {
                            for ch in 0..c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (y * stride + ky) as isize - *padding as isize;
                                        let ix = (x * stride + kx) as isize - *padding as isize;
                                        idx.push(
                                            if iy < 0
                                                || ix < 0
                                                || iy >= h as isize
                                                || ix >= w as isize
                                            {
                                                pad_index
                                            } else {
                                                layout.index(ch, iy as usize, ix as usize) as u32
                                            },
                                        );
                                    }
                                }
                            }
                        }
                    }
                    let ckk = c * k * k;
                    let std = (2.0 / ckk as f64).sqrt();
                    let wv = Var::from_vec(
                        randn(&mut rng, ckk * out_channels, std),
                        (ckk, *out_channels),
                        &device,
                    )?;
                    let bv = Var::zeros(*out_channels, DType::F32, &device)?;
                    vars.push(wv.clone());
                    vars.push(bv.clone());
                    layout = Layout::Hwc {
                        c: *out_channels,
                        h: oh,
                        w: ow,
                    };
                    NetLayer::Conv {
                        w: wv,
                        b: bv,
                        idx: Tensor::from_vec(idx, oh * ow * ckk, &device)?,
                        positions: oh * ow,
                        ckk,
                        out_c: *out_channels,
                        k,
                        stride: *stride,
                        padding: *padding,
                        in_c: c,
                    }
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    let (c, _, _) = layout
                        .maps()
                        .ok_or_else(|| TrainError::Data("pool on flat input".into()))?;
                    let Shape::Maps { h: oh, w: ow, .. } = shapes[li] else {
                        unreachable!("checked by shapes")
                    };
                    let (k, s) = (*kernel, stride.unwrap_or(*kernel));
                    let mut idx = Vec::new();
                    for y in 0..oh {
                        for x in 0..ow {
                            for ky in 0..k {
                                for kx in 0..k {
                                    for ch in 0..c {
                                        idx.push(layout.index(ch, y * s + ky, x * s + kx) as u32);
                                    }
                                }
                            }
                        }
                    }
                    layout = Layout::Hwc { c, h: oh, w: ow };
                    let n = idx.len();
                    NetLayer::Pool {
                        idx: Tensor::from_vec(idx, n, &device)?,
                        positions: oh * ow,
                        kk: k * k,
                        c,
                        k,
                        stride: s,
                    }
                }
                LayerSpec::Dense { out } => {
                    let n = layout.numel();
                    let std = if is_last_linear {
                        (1.0 / n as f64).sqrt()
                    } else {
                        (2.0 / n as f64).sqrt()
                    };
                    let wv = Var::from_vec(randn(&mut rng, n * out, std), (n, *out), &device)?;
                    let bv = Var::zeros(*out, DType::F32, &device)?;
                    vars.push(wv.clone());
                    vars.push(bv.clone());
                    let in_layout = layout;
                    layout = Layout::Flat {
                        n: *out,
                        from: None,
                    };
                    NetLayer::Dense {
                        w: wv,
                        b: bv,
                        in_layout,
                    }
                }
                LayerSpec::Flatten => {
                    let from = match layout {
                        Layout::Chw { c, h, w } => Some((true, c, h, w)),
                        Layout::Hwc { c, h, w } => Some((false, c, h, w)),
                        Layout::Flat { from, .. } => from,
                    };
                    layout = Layout::Flat {
                        n: layout.numel(),
                        from,
                    };
                    NetLayer::Flatten
                }
                LayerSpec::BatchNorm => {
                    let channels = layout.bn_channels();
                    let gamma = Var::ones(channels, DType::F32, &device)?;
                    let beta = Var::zeros(channels, DType::F32, &device)?;
                    vars.push(gamma.clone());
                    vars.push(beta.clone());
                    NetLayer::BatchNorm {
                        gamma,
                        beta,
                        mean: vec![0.0; channels],
                        var: vec![1.0; channels],
                        channels,
                    }
                }
                LayerSpec::Act => NetLayer::Act(Self::make_act(act, &device, &mut vars)?),
                LayerSpec::Std { func } => NetLayer::Act(NetAct::Std(*func)),
                LayerSpec::Poly { coeffs, trainable } => NetLayer::Act(Self::make_act(
                    &ActChoice::Poly {
                        poly: Polynomial::new(coeffs.clone()),
                        trainable: *trainable,
                    },
                    &device,
                    &mut vars,
                )?),
            };
            layers.push(layer);
        }
        debug_assert_eq!(layers.len(), n_layers);
        Ok(Net {
            arch: arch.clone(),
            act: act.clone(),
            input,
            layers,
            vars,
            device,
            dropout: None,
        })
    }

    fn make_act(
        act: &ActChoice,
        device: &Device,
        vars: &mut Vec<Var>,
    ) -> Result<NetAct, TrainError> {
        Ok(match act {
            ActChoice::Std { func } => NetAct::Std(*func),
            ActChoice::Poly { poly, trainable } => {
                let c: Vec<f32> = poly.coeffs.iter().map(|&c| c as f32).collect();
                let n = c.len();
                if *trainable {
                    let v = Var::from_vec(c, n, device)?;
                    vars.push(v.clone());
                    NetAct::Poly {
                        coeffs: v.as_tensor().clone(),
                    }
                } else {
                    NetAct::Poly {
                        coeffs: Tensor::from_vec(c, n, device)?,
                    }
                }
            }
        })
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Forward pass on `[batch, c*h*w]` normalised inputs (CHW order); `train` uses batch
    /// statistics in batch norm and updates the running statistics.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        let mut x = x.clone();
        let b = x.dim(0)?;
        for l in self.layers.iter_mut() {
            x = match l {
                NetLayer::Conv {
                    w,
                    b: bias,
                    idx,
                    positions,
                    ckk,
                    out_c,
                    ..
                } => {
                    let zeros = Tensor::zeros((b, 1), x.dtype(), &self.device)?;
                    let xp = Tensor::cat(&[&x, &zeros], 1)?;
                    let cols = xp.index_select(idx, 1)?.reshape((b * *positions, *ckk))?;
                    cols.matmul(w.as_tensor())?
                        .broadcast_add(bias.as_tensor())?
                        .reshape((b, *positions * *out_c))?
                }
                NetLayer::Pool {
                    idx,
                    positions,
                    kk,
                    c,
                    ..
                } => {
                    let g = x.index_select(idx, 1)?.reshape((b, *positions, *kk, *c))?;
                    (g.sum(2)? / (*kk as f64))?.reshape((b, *positions * *c))?
                }
                NetLayer::Dense { w, b: bias, .. } => {
                    let x = match (&mut self.dropout, train) {
                        (Some((p, rng)), true) => {
                            let keep = 1.0 - *p;
                            let mask: Vec<f32> = (0..x.elem_count())
                                .map(|_| {
                                    if rng.random::<f64>() < keep {
                                        (1.0 / keep) as f32
                                    } else {
                                        0.0
                                    }
                                })
                                .collect();
                            (x.clone() * Tensor::from_vec(mask, x.shape(), &self.device)?)?
                        }
                        _ => x,
                    };
                    x.matmul(w.as_tensor())?.broadcast_add(bias.as_tensor())?
                }
                NetLayer::Flatten => x,
                NetLayer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    channels,
                } => {
                    let n = x.dim(1)?;
                    let rows = b * n / *channels;
                    let x2 = x.reshape((rows, *channels))?;
                    let (m, v) = if train {
                        let m = x2.mean_keepdim(0)?;
                        let d = x2.broadcast_sub(&m)?;
                        let v = d.sqr()?.mean_keepdim(0)?;
                        let mv: Vec<f32> = m.flatten_all()?.to_vec1()?;
                        let vv: Vec<f32> = v.flatten_all()?.to_vec1()?;
                        let unbias = rows as f32 / (rows.max(2) - 1) as f32;
                        for i in 0..*channels {
                            mean[i] = (1.0 - BN_MOMENTUM) * mean[i] + BN_MOMENTUM * mv[i];
                            var[i] = (1.0 - BN_MOMENTUM) * var[i] + BN_MOMENTUM * vv[i] * unbias;
                        }
                        (m, v)
                    } else {
                        (
                            Tensor::from_slice(mean, (1, *channels), &self.device)?,
                            Tensor::from_slice(var, (1, *channels), &self.device)?,
                        )
                    };
                    let xhat = x2
                        .broadcast_sub(&m)?
                        .broadcast_div(&(v + BN_EPS)?.sqrt()?)?;
                    xhat.broadcast_mul(gamma.as_tensor())?
                        .broadcast_add(beta.as_tensor())?
                        .reshape((b, n))?
                }
                NetLayer::Act(a) => match a {
                    NetAct::Std(ActFn::Relu) => x.relu()?,
                    NetAct::Std(ActFn::Sigmoid) => candle_nn::ops::sigmoid(&x)?,
                    NetAct::Std(ActFn::Tanh) => x.tanh()?,
                    NetAct::Std(ActFn::Gelu) => x.gelu_erf()?,
                    NetAct::Std(ActFn::Silu) => x.silu()?,
                    NetAct::Poly { coeffs, .. } => {
                        let n = coeffs.dim(0)?;
                        let mut acc = coeffs.get(0)?.broadcast_as(x.shape())?;
                        let mut pow = x.clone();
                        for k in 1..n {
                            if k > 1 {
                                pow = (&pow * &x)?;
                            }
                            acc = (acc + pow.broadcast_mul(&coeffs.get(k)?)?)?;
                        }
                        acc
                    }
                },
            };
        }
        Ok(x)
    }

    /// Exports the trained network as a folded [`Model`].
    pub fn export(
        &self,
        normalization: Normalization,
        training: serde_json::Value,
    ) -> Result<Model, TrainError> {
        let to64 = |t: &Tensor| -> Result<Vec<f64>, TrainError> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let mut trained = Vec::new();
        for l in &self.layers {
            trained.push(match l {
                NetLayer::Conv {
                    w,
                    b,
                    out_c,
                    k,
                    stride,
                    padding,
                    in_c,
                    ckk,
                    ..
                } => {
                    let wv = to64(w.as_tensor())?;
                    let mut weight = Array4::<f64>::zeros((*out_c, *in_c, *k, *k));
                    for r in 0..*ckk {
                        let (ch, ky, kx) = (r / (k * k), (r / k) % k, r % k);
                        for o in 0..*out_c {
                            weight[[o, ch, ky, kx]] = wv[r * out_c + o];
                        }
                    }
                    TrainedLayer::Conv2d {
                        weight,
                        bias: Array1::from(to64(b.as_tensor())?),
                        stride: *stride,
                        padding: *padding,
                    }
                }
                NetLayer::Pool { k, stride, .. } => TrainedLayer::AvgPool {
                    kernel: *k,
                    stride: *stride,
                },
                NetLayer::Dense { w, b, in_layout } => {
                    let wv = to64(w.as_tensor())?;
                    let (n, o) = w.as_tensor().dims2()?;
                    let mut weight = Array2::<f64>::zeros((o, n));
                    // Map each training feature index to its CHW flatten index.
                    let perm: Vec<usize> = match *in_layout {
                        Layout::Flat {
                            from: Some((chw, c, h, w)),
                            ..
                        } => {
                            let src = if chw {
                                Layout::Chw { c, h, w }
                            } else {
                                Layout::Hwc { c, h, w }
                            };
                            let mut p = vec![0; n];
                            for ch in 0..c {
                                for y in 0..h {
                                    for x in 0..w {
                                        p[src.index(ch, y, x)] = (ch * h + y) * w + x;
                                    }
                                }
                            }
                            p
                        }
                        _ => (0..n).collect(),
                    };
                    for (j, &pj) in perm.iter().enumerate() {
                        for oi in 0..o {
                            weight[[oi, pj]] = wv[j * o + oi];
                        }
                    }
                    TrainedLayer::Dense {
                        weight,
                        bias: Array1::from(to64(b.as_tensor())?),
                    }
                }
                NetLayer::Flatten => TrainedLayer::Flatten,
                NetLayer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    ..
                } => TrainedLayer::BatchNorm {
                    gamma: Array1::from(to64(gamma.as_tensor())?),
                    beta: Array1::from(to64(beta.as_tensor())?),
                    mean: mean.iter().map(|&v| v as f64).collect(),
                    var: var.iter().map(|&v| v as f64).collect(),
                    eps: BN_EPS,
                },
                NetLayer::Act(NetAct::Std(f)) => TrainedLayer::Act(Activation::Std { func: *f }),
                NetLayer::Act(NetAct::Poly { coeffs, .. }) => TrainedLayer::Act(Activation::Poly {
                    coeffs: Polynomial::new(to64(coeffs)?),
                }),
            });
        }
        Ok(Model::fold(
            &self.arch.name,
            self.input,
            normalization,
            trained,
            training,
        )?)
    }

    /// The activation choice.
    pub fn act(&self) -> &ActChoice {
        &self.act
    }
}

/// Per-channel mean and standard deviation of pixel / 255.
pub fn normalization_of(data: &Dataset) -> Normalization {
    let [c, h, w] = data.shape;
    let plane = h * w;
    let mut mean = vec![0.0f64; c];
    let mut sq = vec![0.0f64; c];
    for i in 0..data.len() {
        let img = data.image(i);
        for ch in 0..c {
            for &p in &img[ch * plane..(ch + 1) * plane] {
                let v = p as f64 / 255.0;
                mean[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (data.len() * plane).max(1) as f64;
    let std = (0..c)
        .map(|ch| ((sq[ch] / n - (mean[ch] / n).powi(2)).max(1e-12)).sqrt())
        .collect();
    Normalization {
        mean: mean.iter().map(|m| m / n).collect(),
        std,
    }
}

fn normalized_f32(data: &Dataset, norm: &Normalization) -> Vec<f32> {
    let [_, h, w] = data.shape;
    let plane = h * w;
    let size = data.image_size();
    data.pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let ch = (i % size) / plane;
            ((p as f64 / 255.0 - norm.mean[ch]) / norm.std[ch]) as f32
        })
        .collect()
}

/// Result of [`train`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Architecture name.
    pub arch: String,
    /// Activation description (`relu`, `poly2`, ...).
    pub act: String,
    /// Epochs.
    pub epochs: usize,
    /// Test accuracy of candle's forward pass after the last epoch.
    pub test_accuracy: f64,
    /// Test accuracy of the f64 reference on the exported (folded) model.
    pub reference_accuracy: f64,
    /// Fraction of test samples where the reference and candle agree on the argmax.
    pub argmax_agreement: f64,
    /// Max |logit difference| between the reference and candle.
    pub max_logit_diff: f64,
    /// Training wall time (excluding per-epoch evaluation).
    pub train_seconds: f64,
    /// Trainable scalars.
    pub params: usize,
    /// Largest layer in values (= ciphertexts in batch packing).
    pub max_layer_values: usize,
    /// Per epoch.
    pub history: Vec<EpochStats>,
    /// The activations of the exported model (after training, if trainable).
    pub activations: Vec<Activation>,
}

/// Candle logits of the network on `x_all` (normalised, `n x size`), in batches.
fn net_logits(net: &mut Net, x_all: &[f32], size: usize) -> Result<Vec<Vec<f32>>, TrainError> {
    let n = x_all.len() / size;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let x = Tensor::from_slice(
            &x_all[start * size..end * size],
            (end - start, size),
            &net.device,
        )?;
        let l = net.forward(&x, false)?;
        out.extend(l.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Trains `arch` with `act` on `train`, reports test accuracy on `test` each epoch, exports the
/// folded model and checks the f64 reference against candle on the test set. `label` names the
/// activation in the report (e.g. `poly2`); `progress` shows indicatif bars.
#[allow(clippy::too_many_arguments)]
pub fn train(
    arch: &ArchSpec,
    act: &ActChoice,
    label: &str,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    progress: bool,
    mut log: impl FnMut(&EpochStats),
) -> Result<(Model, TrainReport), TrainError> {
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::Data("empty train or test set".into()));
    }
    if train.shape != test.shape {
        return Err(TrainError::Data(format!(
            "train shape {:?} != test shape {:?}",
            train.shape, test.shape
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(TrainError::Data(
            "epochs and batch size must be positive".into(),
        ));
    }
    let input = arch.input.unwrap_or(train.shape);
    if input != train.shape {
        return Err(TrainError::Data(format!(
            "architecture expects input {input:?}, dataset has {:?}",
            train.shape
        )));
    }
    if !(0.0..1.0).contains(&cfg.dropout) || !(0.0..1.0).contains(&cfg.label_smoothing) {
        return Err(TrainError::Data(format!(
            "dropout ({}) and label smoothing ({}) must lie in [0, 1)",
            cfg.dropout, cfg.label_smoothing
        )));
    }
    let mut net = Net::new(arch, act, input, cfg.seed)?;
    if cfg.dropout > 0.0 {
        net.dropout = Some((
            cfg.dropout,
            ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x0d20_f0a7),
        ));
    }
    let norm = normalization_of(train);
    let size = train.image_size();
    let xtr = normalized_f32(train, &norm);
    let xte = normalized_f32(test, &norm);
    // Value of a black pixel per channel (what shifted-in borders get).
    let fill: Vec<f32> = (0..input[0])
        .map(|c| (-norm.mean[c] / norm.std[c]) as f32)
        .collect();
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(net.vars.clone(), params)?;
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x005e_ed0f_da7a);
    let n = train.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total_steps = (steps_per_epoch * cfg.epochs) as f64;
    let mut step = 0usize;
    let mut history = Vec::new();
    let mut train_seconds = 0.0;
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let bar = if progress {
            let b = indicatif::ProgressBar::new(steps_per_epoch as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "epoch {epoch}/{} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}<{{eta}})",
                    cfg.epochs
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut loss_sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            let mut xb = Vec::with_capacity(chunk.len() * size);
            let mut yb = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let img = &xtr[i * size..(i + 1) * size];
                if cfg.augment {
                    let flip = rng.random::<bool>();
                    let m = cfg.max_shift as i32;
                    let dy = rng.random_range(-m..=m);
                    let dx = rng.random_range(-m..=m);
                    augment_into(&mut xb, img, train.shape, &fill, flip, dy, dx);
                } else {
                    xb.extend_from_slice(img);
                }
                yb.push(train.labels[i] as u32);
            }
            let x = Tensor::from_vec(xb, (chunk.len(), size), &net.device)?;
            let y = Tensor::from_vec(yb, chunk.len(), &net.device)?;
            let logits = net.forward(&x, true)?;
            let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            if cfg.label_smoothing > 0.0 {
                // (1 - e) * CE + e * mean over classes of -log p (uniform target).
                let uniform = candle_nn::ops::log_softmax(&logits, 1)?
                    .mean(1)?
                    .mean(0)?
                    .neg()?;
                let e = cfg.label_smoothing;
                loss = ((loss * (1.0 - e))? + (uniform * e)?)?;
            }
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(TrainError::Diverged { epoch, loss: lv });
            }
            loss_sum += lv as f64 * chunk.len() as f64;
            let mut grads = loss.backward()?;
            if cfg.clip > 0.0 {
                let mut sq = 0.0f64;
                for v in &net.vars {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                    }
                }
                let norm = sq.sqrt();
                if norm > cfg.clip {
                    let s = cfg.clip / norm;
                    for v in &net.vars {
                        if let Some(g) = grads.remove(v.as_tensor()) {
                            grads.insert(v.as_tensor(), (g * s)?);
                        }
                    }
                }
            }
            let lr =
                0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * step as f64 / total_steps).cos());
            opt.set_learning_rate(lr);
            opt.step(&grads)?;
            step += 1;
            bar.inc(1);
            bar.set_message(format!("loss {lv:.4}"));
        }
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        train_seconds += secs;
        let logits = net_logits(&mut net, &xte, size)?;
        let acc = accuracy_f32(&logits, &test.labels);
        let st = EpochStats {
            epoch,
            train_loss: loss_sum / n as f64,
            test_accuracy: acc,
            seconds: secs,
        };
        log(&st);
        history.push(st);
    }
    let cand = net_logits(&mut net, &xte, size)?;
    let test_accuracy = accuracy_f32(&cand, &test.labels);
    let info = serde_json::json!({
        "act": label,
        "activation_choice": act,
        "epochs": cfg.epochs,
        "config": cfg,
        "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
    });
    let model = net.export(norm, info)?;
    let rep = reference::evaluate(&model, test)?;
    let (agree, max_diff) = compare_logits(&rep.logits, &cand);
    let activations = model
        .layers
        .iter()
        .filter_map(|l| {
            if let Layer::Act(a) = l {
                Some(a.clone())
            } else {
                None
            }
        })
        .collect();
    let report = TrainReport {
        arch: arch.name.clone(),
        act: label.to_string(),
        epochs: cfg.epochs,
        test_accuracy,
        reference_accuracy: rep.accuracy,
        argmax_agreement: agree,
        max_logit_diff: max_diff,
        train_seconds,
        params: net.num_params(),
        max_layer_values: model.max_values(),
        history,
        activations,
    };
    Ok((model, report))
}

/// Appends `img` (CHW) flipped horizontally if `flip` and shifted by (dy, dx), borders `fill`.
fn augment_into(
    out: &mut Vec<f32>,
    img: &[f32],
    shape: [usize; 3],
    fill: &[f32],
    flip: bool,
    dy: i32,
    dx: i32,
) {
    let [c, h, w] = shape;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let sy = y as i32 - dy;
                let sx0 = x as i32 - dx;
                let v = if sy < 0 || sy >= h as i32 || sx0 < 0 || sx0 >= w as i32 {
                    fill[ch]
                } else {
                    let sx = if flip {
                        w - 1 - sx0 as usize
                    } else {
                        sx0 as usize
                    };
                    img[(ch * h + sy as usize) * w + sx]
                };
                out.push(v);
            }
        }
    }
}

fn accuracy_f32(logits: &[Vec<f32>], labels: &[u8]) -> f64 {
    let c = logits.iter().zip(labels).filter(|(l, &y)| {
        let v: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        reference::argmax(&v) == y as usize
    });
    c.count() as f64 / labels.len().max(1) as f64
}

/// Fraction of equal argmaxes and max |difference| between f64 reference logits and f32/f64
/// candle logits.
pub fn compare_logits<T: Copy + Into<f64>>(reference: &[Vec<f64>], other: &[Vec<T>]) -> (f64, f64) {
    let mut agree = 0;
    let mut max = 0.0f64;
    for (r, o) in reference.iter().zip(other) {
        let o: Vec<f64> = o.iter().map(|&x| x.into()).collect();
        if reference::argmax(r) == reference::argmax(&o) {
            agree += 1;
        }
        for (a, b) in r.iter().zip(&o) {
            max = max.max((a - b).abs());
        }
    }
    (agree as f64 / reference.len().max(1) as f64, max)
}

/// Candle's own forward pass of an exported model in f64 (native NCHW `conv2d`, `avg_pool2d`
/// times k^2 for the sum pool, `matmul`), on every image of `data`: an implementation independent
/// of [`reference::forward`], used to cross-check it.
pub fn candle_forward(model: &Model, data: &Dataset) -> Result<Vec<Vec<f64>>, TrainError> {
    if data.shape != model.input {
        return Err(TrainError::Data(format!(
            "model expects {:?}, dataset has {:?}",
            model.input, data.shape
        )));
    }
    let dev = Device::Cpu;
    let [c, h, w] = model.input;
    let mut out = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(500) {
        let end = (start + 500).min(data.len());
        let mut xs = Vec::with_capacity((end - start) * c * h * w);
        for i in start..end {
            xs.extend(reference::normalize(model, data.image(i)));
        }
        let mut x = Tensor::from_vec(xs, (end - start, c, h, w), &dev)?;
        for l in &model.layers {
            x = match l {
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let wt = Tensor::from_slice(
                        weight
                            .as_slice()
                            .ok_or_else(|| TrainError::Data("non-contiguous weight".into()))?,
                        weight.dim(),
                        &dev,
                    )?;
                    let bt = Tensor::from_slice(
                        bias.as_slice().unwrap_or(&bias.to_vec()),
                        (1, bias.len(), 1, 1),
                        &dev,
                    )?;
                    x.conv2d(&wt, *padding, *stride, 1, 1)?.broadcast_add(&bt)?
                }
                Layer::SumPool { kernel, stride } => {
                    (x.avg_pool2d_with_stride((*kernel, *kernel), (*stride, *stride))?
                        * (kernel * kernel) as f64)?
                }
                Layer::Flatten => x.flatten_from(1)?,
                Layer::Dense { weight, bias } => {
                    let wt = Tensor::from_slice(
                        weight
                            .as_slice()
                            .ok_or_else(|| TrainError::Data("non-contiguous weight".into()))?,
                        weight.dim(),
                        &dev,
                    )?;
                    let bt = Tensor::from_slice(
                        bias.as_slice().unwrap_or(&bias.to_vec()),
                        bias.len(),
                        &dev,
                    )?;
                    x.matmul(&wt.t()?)?.broadcast_add(&bt)?
                }
                Layer::Act(Activation::Std { func }) => match func {
                    ActFn::Relu => x.relu()?,
                    ActFn::Sigmoid => candle_nn::ops::sigmoid(&x)?,
                    ActFn::Tanh => x.tanh()?,
                    ActFn::Gelu => x.gelu_erf()?,
                    ActFn::Silu => x.silu()?,
                },
                Layer::Act(Activation::Poly { coeffs }) => {
                    let mut acc = x.zeros_like()?;
                    let mut pow = x.ones_like()?;
                    for (k, &ck) in coeffs.coeffs.iter().enumerate() {
                        if k > 0 {
                            pow = (&pow * &x)?;
                        }
                        acc = (acc + (&pow * ck)?)?;
                    }
                    acc
                }
            };
        }
        out.extend(x.to_vec2::<f64>()?);
    }
    Ok(out)
}

/// Logits of the network's argmax on a batch (for tests).
pub fn predict(net: &mut Net, x: &[f32]) -> Result<Vec<Vec<f32>>, TrainError> {
    let size: usize = net.input.iter().product();
    net_logits(net, x, size)
}
