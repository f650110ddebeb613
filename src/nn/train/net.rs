//! The trainable network: layers built from an [`ArchSpec`], batch norm, activations, dropout,
//! and the forward pass (convolutions as gather + GEMM).

use super::*;

/// Data layout of an activation tensor `[batch, n]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Layout {
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
    pub(super) fn numel(&self) -> usize {
        match *self {
            Layout::Chw { c, h, w } | Layout::Hwc { c, h, w } => c * h * w,
            Layout::Flat { n, .. } => n,
        }
    }
    pub(super) fn maps(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Layout::Chw { c, h, w } | Layout::Hwc { c, h, w } => Some((c, h, w)),
            _ => None,
        }
    }
    pub(super) fn index(&self, ch: usize, y: usize, x: usize) -> usize {
        match *self {
            Layout::Chw { h, w, .. } => (ch * h + y) * w + x,
            Layout::Hwc { c, w, .. } => (y * w + x) * c + ch,
            Layout::Flat { .. } => ch,
        }
    }
    /// Channels for batch norm: maps -> c (values per channel interleaved as HWC), flat -> n.
    pub(super) fn bn_channels(&self) -> usize {
        match *self {
            Layout::Hwc { c, .. } | Layout::Chw { c, .. } => c,
            Layout::Flat { n, .. } => n,
        }
    }
}

pub(super) enum NetAct {
    Std(ActFn),
    Poly { coeffs: Tensor },
}

pub(super) enum NetLayer {
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
    pub(super) arch: ArchSpec,
    pub(super) act: ActChoice,
    pub(super) input: [usize; 3],
    pub(super) layers: Vec<NetLayer>,
    pub(super) vars: Vec<Var>,
    pub(super) device: Device,
    /// Training-time dropout before dense layers: probability and the seeded mask generator.
    pub(super) dropout: Option<(f64, ChaCha20Rng)>,
}

pub(super) const BN_EPS: f64 = 1e-5;
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
    /// The activation choice.
    pub fn act(&self) -> &ActChoice {
        &self.act
    }
}
