//! Exported models: the HE-ready layer list (folded batch norm, sum pools, fixed polynomials) and
//! its `.safetensors` file format.
//!
//! File format: tensors `layers.{i}.weight` / `layers.{i}.bias` (F64, little endian; conv weights
//! `[out, in, k, k]`, dense weights `[out, in]` with inputs in CHW flatten order) and metadata key
//! `cryptodl.model` holding [`ModelMeta`] as JSON (architecture, activation polynomials, input
//! normalisation, training summary).

use super::activation::{ActFn, Polynomial};
use super::arch::{Geometry, Shape};
use ndarray::{Array1, Array2, Array4, Axis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Metadata key of the model description.
pub const META_KEY: &str = "cryptodl.model";

/// The largest model file [`Model::load`] reads (1 GiB), checked before reading.
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// The largest magnitude the input normalisation may give a pixel in [0, 1] (a model whose
/// `(p - mean) / std` exceeds it has a near-zero std or a wrong mean).
pub const MAX_NORMALIZED_INPUT: f64 = 1e4;

/// The model embedded in the binary, which `cryptodl demo` and `cryptodl bench model` use by
/// default: `cryptodl train --arch cryptonets --act poly2 --augment --shift 1 --label-smoothing
/// 0.1 --weight-decay 0.05 --epochs 20 --seed 1` (89.71% on the Fashion-MNIST test set in
/// plaintext; see `models/README.md`).
pub const DEMO_MODEL: &[u8] = include_bytes!("../../models/cryptonets-poly2.safetensors");
/// The MNIST model embedded for `cryptodl demo --dataset mnist` (`models/README.md` gives its
/// recipe and accuracy on held-out MNIST).
pub const MNIST_MODEL: &[u8] = include_bytes!("../../models/mnist-poly2.safetensors");
/// Format version written in the metadata.
pub const FORMAT_VERSION: u32 = 1;

/// Why a model could not be built, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a cryptodl model.
    #[error("{path} is not a usable cryptodl model: {reason} (train one with `cryptodl train ... --out MODEL.safetensors`)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Layers cannot be folded or do not fit together.
    #[error("layer {index}: {reason}")]
    Layer {
        /// Layer index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// An activation of an exported model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Activation {
    /// Standard function (non-private baseline only: not computable under CKKS).
    Std {
        /// Which.
        #[serde(rename = "fn")]
        func: ActFn,
    },
    /// Polynomial `c0 + c1 x + c2 x^2 + ...`, evaluated per element.
    Poly {
        /// Coefficients from degree 0 up.
        coeffs: Polynomial,
    },
}

impl Activation {
    /// Applies the activation to one value (polynomials in the order of [`Polynomial::eval`]).
    pub fn eval(&self, x: f64) -> f64 {
        match self {
            Activation::Std { func } => func.eval(x),
            Activation::Poly { coeffs } => coeffs.eval(x),
        }
    }
}

/// Input normalisation: `x = (pixel / 255 - mean[c]) / std[c]`, applied by the client before
/// encryption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean (of pixel / 255).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
}

/// One layer of an exported (HE-ready) model.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Layer {
    /// `out[o, y, x] = (sum over (c, ky, kx) of w[o, c, ky, kx] * in[c, s*y + ky - p, s*x + kx - p]) + b[o]`
    /// with zeros outside the input.
    Conv2d {
        /// `[out, in, k, k]`.
        weight: Array4<f64>,
        /// `[out]`.
        bias: Array1<f64>,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Sum (not average) over `kernel x kernel` windows: the 1/k^2 is already in the next layer.
    SumPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `out[o] = (sum over i of w[o, i] * in[i]) + b[o]`.
    Dense {
        /// `[out, in]`.
        weight: Array2<f64>,
        /// `[out]`.
        bias: Array1<f64>,
    },
    /// CHW maps -> vector (index `c*h*w + y*w + x`).
    Flatten,
    /// Element-wise activation.
    Act(Activation),
}

/// Description of a layer in the file metadata (weights are tensors).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerMeta {
    /// See [`Layer::Conv2d`].
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
    },
    /// See [`Layer::SumPool`].
    SumPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// See [`Layer::Dense`].
    Dense {
        /// Inputs.
        in_features: usize,
        /// Outputs.
        out_features: usize,
    },
    /// See [`Layer::Flatten`].
    Flatten,
    /// See [`Layer::Act`].
    Act {
        /// The activation.
        activation: Activation,
    },
}

/// The JSON stored under [`META_KEY`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// Architecture name.
    pub name: String,
    /// Input (channels, height, width).
    pub input: [usize; 3],
    /// Input normalisation.
    pub normalization: Normalization,
    /// Layers.
    pub layers: Vec<LayerMeta>,
    /// Free-form training summary (activation, epochs, accuracy, ...).
    #[serde(default)]
    pub training: serde_json::Value,
    /// [`Model::digest`] in hex, written by [`Model::save`] and checked at load (safetensors has
    /// no checksum: this is what catches damaged weights). Older files have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A trained, folded model: what the plaintext reference and the HE scheduler run.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Architecture name.
    pub name: String,
    /// Input (channels, height, width).
    pub input: [usize; 3],
    /// Input normalisation.
    pub normalization: Normalization,
    /// Layers in order.
    pub layers: Vec<Layer>,
    /// Training summary.
    pub training: serde_json::Value,
}

/// A layer as trained, before folding (weights in the exported conventions, f64).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TrainedLayer {
    /// Convolution `[out, in, k, k]`.
    Conv2d {
        /// Weight.
        weight: Array4<f64>,
        /// Bias.
        bias: Array1<f64>,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
    },
    /// Average pool.
    AvgPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Dense `[out, in]` (CHW flatten order).
    Dense {
        /// Weight.
        weight: Array2<f64>,
        /// Bias.
        bias: Array1<f64>,
    },
    /// Flatten.
    Flatten,
    /// Batch norm in inference form: `gamma * (x - mean) / sqrt(var + eps) + beta`.
    BatchNorm {
        /// Scale.
        gamma: Array1<f64>,
        /// Shift.
        beta: Array1<f64>,
        /// Running mean.
        mean: Array1<f64>,
        /// Running variance.
        var: Array1<f64>,
        /// Epsilon.
        eps: f64,
    },
    /// Activation.
    Act(Activation),
}

impl Model {
    /// Folds batch norms into the preceding conv / dense layer and average pools into sum pools
    /// whose 1/k^2 goes into the next linear layer (or the next polynomial's input scale).
    pub fn fold(
        name: &str,
        input: [usize; 3],
        normalization: Normalization,
        trained: Vec<TrainedLayer>,
        training: serde_json::Value,
    ) -> Result<Model, ModelError> {
        // Pass 1: batch norm.
        let mut v: Vec<TrainedLayer> = Vec::new();
        for (index, l) in trained.into_iter().enumerate() {
            let TrainedLayer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } = l
            else {
                v.push(l);
                continue;
            };
            let target = v
                .iter_mut()
                .rev()
                .find(|l| !matches!(l, TrainedLayer::AvgPool { .. }))
                .ok_or(ModelError::Layer {
                    index,
                    reason: "batch norm at the start".into(),
                })?;
            let g: Array1<f64> = &gamma / &(&var + eps).mapv(f64::sqrt);
            let (w_out, bias) = match target {
                TrainedLayer::Conv2d { weight, bias, .. } => (weight.len_of(Axis(0)), bias),
                TrainedLayer::Dense { weight, bias } => (weight.len_of(Axis(0)), bias),
                _ => {
                    return Err(ModelError::Layer {
                        index,
                        reason:
                            "batch norm must follow conv2d or dense (possibly through avg_pool)"
                                .into(),
                    })
                }
            };
            if g.len() != w_out || beta.len() != w_out || mean.len() != w_out {
                return Err(ModelError::Layer {
                    index,
                    reason: format!(
                        "batch norm has {} channels, the layer before has {w_out}",
                        g.len()
                    ),
                });
            }
            *bias = (&*bias - &mean) * &g + &beta;
            match target {
                TrainedLayer::Conv2d { weight, .. } => {
                    for (o, mut w) in weight.axis_iter_mut(Axis(0)).enumerate() {
                        w *= g[o];
                    }
                }
                TrainedLayer::Dense { weight, .. } => {
                    for (o, mut w) in weight.axis_iter_mut(Axis(0)).enumerate() {
                        w *= g[o];
                    }
                }
                _ => unreachable!("checked above"),
            }
        }
        // Pass 2: average pools.
        let mut layers = Vec::new();
        let mut s = 1.0f64;
        for (index, l) in v.into_iter().enumerate() {
            layers.push(match l {
                TrainedLayer::AvgPool { kernel, stride } => {
                    s /= (kernel * kernel) as f64;
                    Layer::SumPool { kernel, stride }
                }
                TrainedLayer::Conv2d { weight, bias, stride, padding } => {
                    let weight = weight * s;
                    s = 1.0;
                    Layer::Conv2d { weight, bias, stride, padding }
                }
                TrainedLayer::Dense { weight, bias } => {
                    let weight = weight * s;
                    s = 1.0;
                    Layer::Dense { weight, bias }
                }
                TrainedLayer::Flatten => Layer::Flatten,
                TrainedLayer::Act(Activation::Poly { coeffs }) => {
                    let c = coeffs.scale_input(s);
                    s = 1.0;
                    Layer::Act(Activation::Poly { coeffs: c })
                }
                // relu(s x) = s relu(x) for s > 0: the scale passes through.
                TrainedLayer::Act(a @ Activation::Std { func: ActFn::Relu }) => Layer::Act(a),
                TrainedLayer::Act(a) => {
                    if s != 1.0 {
                        return Err(ModelError::Layer {
                            index,
                            reason: "an average pool directly before sigmoid/tanh/gelu/silu cannot be folded; put a linear layer between".into(),
                        });
                    }
                    Layer::Act(a)
                }
                TrainedLayer::BatchNorm { .. } => unreachable!("removed in pass 1"),
            });
        }
        if s != 1.0 {
            return Err(ModelError::Layer {
                index: layers.len(),
                reason: "the network ends with a pool".into(),
            });
        }
        let m = Model {
            name: name.to_string(),
            input,
            normalization,
            layers,
            training,
        };
        m.shapes()?;
        Ok(m)
    }

    /// Output shape of every layer (and checks weight shapes against the input).
    pub fn shapes(&self) -> Result<Vec<Shape>, ModelError> {
        let [c, h, w] = self.input;
        let mut cur = crate::nn::arch::check_size(c, h, w).map_err(|reason| ModelError::Layer {
            index: 0,
            reason: format!("the input: {reason}"),
        })?;
        let mut out = Vec::new();
        for (index, l) in self.layers.iter().enumerate() {
            let bad = |reason: String| ModelError::Layer { index, reason };
            // Weights must fit the input; the shape rule is the one of the training spec.
            let geometry = match (l, cur) {
                (
                    Layer::Conv2d {
                        weight,
                        bias,
                        stride,
                        padding,
                    },
                    Shape::Maps { c, .. },
                ) => {
                    let (o, i, k, k2) = weight.dim();
                    if i != c || k != k2 || bias.len() != o {
                        return Err(bad(format!(
                            "conv weight {:?} / bias {} do not fit {c} input channels",
                            weight.dim(),
                            bias.len()
                        )));
                    }
                    Geometry::Conv {
                        out_channels: o,
                        kernel: k,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                (Layer::SumPool { kernel, stride }, _) => Geometry::Pool {
                    kernel: *kernel,
                    stride: *stride,
                },
                (Layer::Dense { weight, bias }, Shape::Flat(n)) => {
                    let (o, i) = weight.dim();
                    if i != n || bias.len() != o {
                        return Err(bad(format!(
                            "dense weight {:?} / bias {} do not fit {n} inputs",
                            weight.dim(),
                            bias.len()
                        )));
                    }
                    Geometry::Dense { out: o }
                }
                (Layer::Flatten, _) => Geometry::Flatten,
                (Layer::Act(_), _) => Geometry::Same,
                (_, s) => return Err(bad(format!("layer does not accept input of shape {s:?}"))),
            };
            cur = cur.after(geometry).map_err(bad)?;
            out.push(cur);
        }
        if !matches!(cur, Shape::Flat(_)) {
            return Err(ModelError::Layer {
                index: self.layers.len(),
                reason: "model output is not flat".into(),
            });
        }
        Ok(out)
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.shapes()
            .ok()
            .and_then(|s| s.last().map(Shape::numel))
            .unwrap_or(0)
    }

    /// The largest number of values any layer holds (ciphertexts in batch packing).
    pub fn max_values(&self) -> usize {
        self.shapes()
            .map(|s| s.iter().map(Shape::numel).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The metadata describing this model.
    pub fn meta(&self) -> ModelMeta {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Conv2d {
                    weight,
                    stride,
                    padding,
                    ..
                } => LayerMeta::Conv2d {
                    in_channels: weight.dim().1,
                    out_channels: weight.dim().0,
                    kernel: weight.dim().2,
                    stride: *stride,
                    padding: *padding,
                },
                Layer::SumPool { kernel, stride } => LayerMeta::SumPool {
                    kernel: *kernel,
                    stride: *stride,
                },
                Layer::Dense { weight, .. } => LayerMeta::Dense {
                    in_features: weight.dim().1,
                    out_features: weight.dim().0,
                },
                Layer::Flatten => LayerMeta::Flatten,
                Layer::Act(a) => LayerMeta::Act {
                    activation: a.clone(),
                },
            })
            .collect();
        ModelMeta {
            format: FORMAT_VERSION,
            name: self.name.clone(),
            input: self.input,
            normalization: self.normalization.clone(),
            layers,
            training: self.training.clone(),
            digest: Some(hex::encode(self.digest())),
        }
    }

    /// The model's identity: SHA-256 over a domain tag, its description (name, input,
    /// normalisation, layers with their activation polynomials; not the training summary) and
    /// every weight and bias, bit for bit. Two models compute the same function on encrypted
    /// inputs only if their digests are equal; a job's files record it.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"cryptodl model v1\0");
        let described = serde_json::json!({
            "name": self.name,
            "input": self.input,
            "normalization": self.normalization,
            "layers": self.layers.iter().map(|l| match l {
                Layer::Conv2d { weight, stride, padding, .. } => serde_json::json!(
                    ["conv2d", weight.shape(), stride, padding]),
                Layer::SumPool { kernel, stride } => serde_json::json!(["sum_pool", kernel, stride]),
                Layer::Dense { weight, .. } => serde_json::json!(["dense", weight.shape()]),
                Layer::Flatten => serde_json::json!(["flatten"]),
                Layer::Act(a) => serde_json::json!(["act", a]),
            }).collect::<Vec<_>>(),
        });
        h.update(described.to_string().as_bytes());
        for l in &self.layers {
            let (w, b): (Box<dyn Iterator<Item = &f64>>, &Array1<f64>) = match l {
                Layer::Conv2d { weight, bias, .. } => (Box::new(weight.iter()), bias),
                Layer::Dense { weight, bias } => (Box::new(weight.iter()), bias),
                _ => continue,
            };
            for v in w.chain(b.iter()) {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        h.finalize().into()
    }

    /// Checks what every use of a model relies on: a dense output layer of at least 2 classes,
    /// consistent shapes, a finite normalisation with positive standard deviations, and
    /// polynomial activations with finite coefficients.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |index: usize, reason: String| ModelError::Layer { index, reason };
        let n = &self.normalization;
        if n.mean.iter().any(|m| !m.is_finite())
            || n.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(bad(
                0,
                format!(
                    "input normalisation must be finite with positive standard deviations (mean {:?}, std {:?})",
                    n.mean, n.std
                ),
            ));
        }
        // A pixel p / 255 in [0, 1] becomes (p - mean) / std.
        if let Some((ch, (m, s))) = n
            .mean
            .iter()
            .zip(&n.std)
            .enumerate()
            .find(|(_, (m, s))| m.abs().max((1.0 - *m).abs()) / *s > MAX_NORMALIZED_INPUT)
        {
            return Err(bad(
                0,
                format!(
                    "input normalisation of channel {ch} (mean {m}, std {s}) maps pixels in [0, 1] to values up to {:.3e}, over the limit of {MAX_NORMALIZED_INPUT:e}: the std is near zero or the mean far off; use the mean and std of the training transform (of pixel / 255)",
                    m.abs().max((1.0 - *m).abs()) / *s
                ),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (weights, bias) = match l {
                Layer::Conv2d { weight, bias, .. } => (weight.as_slice_memory_order(), bias),
                Layer::Dense { weight, bias } => (weight.as_slice_memory_order(), bias),
                _ => (None, &ndarray::Array1::zeros(0)),
            };
            if weights.is_some_and(|w| w.iter().any(|v| !v.is_finite()))
                || bias.iter().any(|v| !v.is_finite())
            {
                return Err(bad(
                    i,
                    "weights and biases must be finite numbers (an overflow while folding, or a damaged file)".into(),
                ));
            }
            if let Layer::Act(Activation::Poly { coeffs }) = l {
                if coeffs.coeffs.is_empty() || coeffs.coeffs.iter().any(|c| !c.is_finite()) {
                    return Err(bad(
                        i,
                        format!("polynomial activation {coeffs} must have finite coefficients"),
                    ));
                }
            }
        }
        let last = self.layers.len().saturating_sub(1);
        if !matches!(self.layers.last(), Some(Layer::Dense { .. })) {
            return Err(bad(
                last,
                "the model must end with a dense layer (its outputs are the class logits)".into(),
            ));
        }
        let classes = self.num_classes();
        if classes < 2 {
            return Err(bad(
                last,
                format!("the model has {classes} output(s); a classifier needs at least 2"),
            ));
        }
        Ok(())
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let bytes = |it: &mut dyn Iterator<Item = &f64>| {
            it.flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        };
        for (i, l) in self.layers.iter().enumerate() {
            match l {
                Layer::Conv2d { weight, bias, .. } => {
                    bufs.push((
                        format!("layers.{i}.weight"),
                        weight.shape().to_vec(),
                        bytes(&mut weight.iter()),
                    ));
                    bufs.push((
                        format!("layers.{i}.bias"),
                        bias.shape().to_vec(),
                        bytes(&mut bias.iter()),
                    ));
                }
                Layer::Dense { weight, bias } => {
                    bufs.push((
                        format!("layers.{i}.weight"),
                        weight.shape().to_vec(),
                        bytes(&mut weight.iter()),
                    ));
                    bufs.push((
                        format!("layers.{i}.bias"),
                        bias.shape().to_vec(),
                        bytes(&mut bias.iter()),
                    ));
                }
                _ => {}
            }
        }
        let fmt = |e: String| ModelError::Format {
            path: PathBuf::from("(in memory)"),
            reason: e,
        };
        let views = bufs
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| fmt(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = serde_json::to_string(&self.meta()).map_err(|e| fmt(e.to_string()))?;
        let info = HashMap::from([(META_KEY.to_string(), meta)]);
        safetensors::serialize(views, Some(info)).map_err(|e| fmt(e.to_string()))
    }

    /// Writes the model atomically (temporary file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        crate::io::write_bytes_atomic(path, &bytes).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })
    }

    /// Reads a model written by [`Model::save`]: a regular file of at most [`MAX_MODEL_BYTES`],
    /// checked ([`Model::from_bytes`]).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        use std::io::Read;
        let io = |error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        };
        let fmt = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let f = crate::io::open_regular(path)
            .map_err(io)?
            .ok_or_else(|| fmt("not a regular file".into()))?;
        let meta = f.metadata().map_err(io)?;
        if meta.len() > MAX_MODEL_BYTES {
            return Err(fmt(format!(
                "{} bytes, above the limit of {MAX_MODEL_BYTES} bytes for a model",
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.take(MAX_MODEL_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(fmt(format!(
                "more than the limit of {MAX_MODEL_BYTES} bytes for a model"
            )));
        }
        Self::from_bytes(&bytes, path)
    }

    /// The embedded demo model ([`DEMO_MODEL`]).
    pub fn demo() -> Result<Model, ModelError> {
        Self::from_bytes(
            DEMO_MODEL,
            Path::new("(embedded) cryptonets-poly2.safetensors"),
        )
    }

    /// The model embedded for `kind`'s demo: the CryptoNets-size Fashion-MNIST one
    /// ([`Self::demo`]) or the MNIST headline one; `None` for a dataset without one.
    pub fn embedded(kind: crate::nn::dataset::DatasetKind) -> Option<Result<Model, ModelError>> {
        use crate::nn::dataset::DatasetKind;
        match kind {
            DatasetKind::FashionMnist => Some(Self::demo()),
            DatasetKind::Mnist => Some(Self::from_bytes(
                MNIST_MODEL,
                Path::new("(embedded) mnist-poly2.safetensors"),
            )),
            _ => None,
        }
    }

    /// Parses safetensors bytes (`path` names the source in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let fmt = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| fmt(format!("not a safetensors file ({e})")))?;
        let (_, md) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
        let json = md
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| fmt(format!("no `{META_KEY}` metadata")))?;
        let meta: ModelMeta =
            serde_json::from_str(json).map_err(|e| fmt(format!("bad metadata: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(fmt(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                meta.format
            )));
        }
        let tensor = |name: String, shape: &[usize]| -> Result<Vec<f64>, ModelError> {
            let t = st
                .tensor(&name)
                .map_err(|e| fmt(format!("tensor {name}: {e}")))?;
            if t.dtype() != safetensors::Dtype::F64 || t.shape() != shape {
                return Err(fmt(format!(
                    "tensor {name} is {:?} {:?}, expected F64 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let v: Vec<f64> = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(fmt(format!("tensor {name} has non-finite values")));
            }
            Ok(v)
        };
        let mut layers = Vec::new();
        for (i, l) in meta.layers.iter().enumerate() {
            layers.push(match l {
                LayerMeta::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let sh = [*out_channels, *in_channels, *kernel, *kernel];
                    let w = tensor(format!("layers.{i}.weight"), &sh)?;
                    let b = tensor(format!("layers.{i}.bias"), &[*out_channels])?;
                    Layer::Conv2d {
                        weight: Array4::from_shape_vec(sh, w).map_err(|e| fmt(e.to_string()))?,
                        bias: Array1::from(b),
                        stride: *stride,
                        padding: *padding,
                    }
                }
                LayerMeta::Dense {
                    in_features,
                    out_features,
                } => {
                    let sh = [*out_features, *in_features];
                    let w = tensor(format!("layers.{i}.weight"), &sh)?;
                    let b = tensor(format!("layers.{i}.bias"), &[*out_features])?;
                    Layer::Dense {
                        weight: Array2::from_shape_vec(sh, w).map_err(|e| fmt(e.to_string()))?,
                        bias: Array1::from(b),
                    }
                }
                LayerMeta::SumPool { kernel, stride } => Layer::SumPool {
                    kernel: *kernel,
                    stride: *stride,
                },
                LayerMeta::Flatten => Layer::Flatten,
                LayerMeta::Act { activation } => Layer::Act(activation.clone()),
            });
        }
        let c = meta.input[0];
        if meta.normalization.mean.len() != c || meta.normalization.std.len() != c {
            return Err(fmt(format!("normalisation must have {c} channel values")));
        }
        let m = Model {
            name: meta.name,
            input: meta.input,
            normalization: meta.normalization,
            layers,
            training: meta.training,
        };
        m.shapes().map_err(|e| fmt(e.to_string()))?;
        m.validate().map_err(|e| fmt(e.to_string()))?;
        // Every model this format writes carries its digest: without one, nothing tells an
        // edited file from a whole one.
        let Some(stored) = &meta.digest else {
            return Err(fmt(
                "no digest in its metadata: cryptodl writes one in every model, so the file was \
                 edited or made by something else; export it again with `cryptodl train` or \
                 `cryptodl import`"
                    .into(),
            ));
        };
        let computed = hex::encode(m.digest());
        if *stored != computed {
            return Err(fmt(format!(
                "its weights or description do not match its digest (stored {stored}, computed {computed}): the file is damaged"
            )));
        }
        Ok(m)
    }
}
