//! Architecture specs (what is trained): layer list, named architectures, JSON specs, shapes.

use super::activation::{ActFn, Polynomial};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Why an architecture is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// Neither a named architecture nor a readable JSON spec.
    #[error("unknown architecture `{name}`: use cryptonets, hcnn, cryptodl, mnist, or a path to a JSON spec ({reason})")]
    Unknown {
        /// What was asked for.
        name: String,
        /// Why the file (if any) was not usable.
        reason: String,
    },
    /// The JSON spec does not parse.
    #[error("bad architecture spec {path}: {reason}. Example: {{\"name\":\"tiny\",\"layers\":[{{\"type\":\"conv2d\",\"out_channels\":4,\"kernel\":5,\"stride\":2}},{{\"type\":\"batch_norm\"}},{{\"type\":\"act\"}},{{\"type\":\"flatten\"}},{{\"type\":\"dense\",\"out\":10}}]}}")]
    Spec {
        /// The spec file.
        path: String,
        /// Parser message.
        reason: String,
    },
    /// Shapes do not work out.
    #[error("layer {index} ({layer}) of `{arch}`: {reason}")]
    Shape {
        /// Architecture name.
        arch: String,
        /// Layer index.
        index: usize,
        /// Layer kind.
        layer: String,
        /// What is wrong.
        reason: String,
    },
}

/// One layer of an architecture spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LayerSpec {
    /// 2-D convolution (zero padding on every side).
    Conv2d {
        /// Output maps.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side.
        #[serde(default)]
        padding: usize,
    },
    /// Average pooling (exported as a sum pool, 1/k^2 folded into the next layer).
    AvgPool {
        /// Square window.
        kernel: usize,
        /// Stride (defaults to the window).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Fully connected layer (input must be flat: put a `flatten` first).
    Dense {
        /// Output features.
        out: usize,
    },
    /// CHW -> flat vector.
    Flatten,
    /// Batch normalisation over channels (features after a dense layer); must follow a conv2d or
    /// dense layer (optionally through avg_pool); folded into it at export.
    BatchNorm,
    /// The network's activation, chosen at training time (`--act`).
    Act,
    /// A fixed standard activation.
    Std {
        /// Which.
        #[serde(rename = "fn")]
        func: ActFn,
    },
    /// A fixed polynomial activation.
    Poly {
        /// Coefficients from degree 0 up.
        coeffs: Vec<f64>,
        /// Train the coefficients (initialised from `coeffs`).
        #[serde(default)]
        trainable: bool,
    },
}

fn one() -> usize {
    1
}

impl LayerSpec {
    /// Short kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::AvgPool { .. } => "avg_pool",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Flatten => "flatten",
            LayerSpec::BatchNorm => "batch_norm",
            LayerSpec::Act => "act",
            LayerSpec::Std { .. } => "std",
            LayerSpec::Poly { .. } => "poly",
        }
    }
}

/// The activation put in place of every `act` layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActChoice {
    /// A standard function (the non-private baseline).
    Std {
        /// Which.
        #[serde(rename = "fn")]
        func: ActFn,
    },
    /// A polynomial.
    Poly {
        /// The polynomial (initial value if trainable).
        poly: Polynomial,
        /// Whether its coefficients are trained.
        trainable: bool,
    },
}

/// A shape: (channels, height, width) for maps, or a flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Shape {
    /// Feature maps.
    Maps {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// Flat vector.
    Flat(usize),
}

impl Shape {
    /// Number of values (= ciphertexts in batch packing).
    pub fn numel(&self) -> usize {
        match *self {
            Shape::Maps { c, h, w } => c * h * w,
            Shape::Flat(n) => n,
        }
    }
}

/// An architecture: name, input shape (c, h, w), layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// Name.
    pub name: String,
    /// Input (channels, height, width); defaults to the dataset's.
    #[serde(default)]
    pub input: Option<[usize; 3]>,
    /// Layers.
    pub layers: Vec<LayerSpec>,
}

/// The most values one layer may hold (its input included): 2^22, four million ciphertexts in
/// batch packing, far beyond what a server holds, so a model declaring more (a crafted file, a
/// wrong shape) is refused with its size before anything is allocated for it.
pub const MAX_LAYER_VALUES: usize = 1 << 22;

/// Checks `(c, h, w)` against [`MAX_LAYER_VALUES`] (and for zeros), without overflow.
pub fn check_size(c: usize, h: usize, w: usize) -> Result<Shape, String> {
    if c == 0 || h == 0 || w == 0 {
        return Err(format!("a {c} x {h} x {w} shape has a zero dimension"));
    }
    match c.checked_mul(h).and_then(|x| x.checked_mul(w)) {
        Some(n) if n <= MAX_LAYER_VALUES => Ok(Shape::Maps { c, h, w }),
        _ => Err(format!(
            "a {c} x {h} x {w} layer holds {} values, over the limit of {MAX_LAYER_VALUES} per layer",
            (c as u128) * (h as u128) * (w as u128)
        )),
    }
}

/// Conv output size.
pub fn conv_out(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    let padded = p.checked_mul(2)?.checked_add(n)?;
    if s == 0 || k == 0 || padded < k {
        None
    } else {
        Some((padded - k) / s + 1)
    }
}

/// What a layer does to the shape of its input: the one shape rule that the training spec
/// ([`ArchSpec::shapes`]), the exported model ([`super::model::Model::shapes`]) and the HE
/// planner all use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Geometry {
    /// A convolution to `out_channels` maps (square kernel).
    Conv {
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// A pooling window (same channels).
    Pool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// A dense layer to `out` values (flat input).
    Dense {
        /// Outputs.
        out: usize,
    },
    /// Maps flattened to a vector (CHW order).
    Flatten,
    /// Shape unchanged (activations, batch norm).
    Same,
}

impl Shape {
    /// The output shape of a layer of geometry `g` on this input, or why it does not fit.
    pub fn after(self, g: Geometry) -> Result<Shape, String> {
        match (g, self) {
            (
                Geometry::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                },
                Shape::Maps { h, w, .. },
            ) => {
                if out_channels == 0 || kernel == 0 {
                    return Err("out_channels and kernel must be positive".into());
                }
                match (
                    conv_out(h, kernel, stride, padding),
                    conv_out(w, kernel, stride, padding),
                ) {
                    (Some(oh), Some(ow)) => check_size(out_channels, oh, ow),
                    _ => Err(format!(
                        "kernel {kernel} (stride {stride}, padding {padding}) does not fit a {h}x{w} input"
                    )),
                }
            }
            (Geometry::Pool { kernel, stride }, Shape::Maps { c, h, w }) => {
                match (
                    conv_out(h, kernel, stride, 0),
                    conv_out(w, kernel, stride, 0),
                ) {
                    (Some(oh), Some(ow)) if kernel > 0 => Ok(Shape::Maps { c, h: oh, w: ow }),
                    _ => Err(format!(
                        "window {kernel} stride {stride} does not fit {h}x{w}"
                    )),
                }
            }
            (Geometry::Dense { out }, Shape::Flat(_)) => {
                if out == 0 {
                    return Err("out must be positive".into());
                }
                if out > MAX_LAYER_VALUES {
                    return Err(format!(
                        "{out} outputs, over the limit of {MAX_LAYER_VALUES} per layer"
                    ));
                }
                Ok(Shape::Flat(out))
            }
            (Geometry::Dense { .. }, Shape::Maps { .. }) => {
                Err("input is feature maps: put a {\"type\":\"flatten\"} layer before dense".into())
            }
            (Geometry::Flatten, s) => Ok(Shape::Flat(s.numel())),
            (Geometry::Same, s) => Ok(s),
            (Geometry::Conv { .. } | Geometry::Pool { .. }, Shape::Flat(_)) => {
                Err("input is flat; conv2d / avg_pool need feature maps".into())
            }
        }
    }
}

impl ArchSpec {
    /// A named architecture (`cryptonets`, `hcnn`, `cryptodl`, `mnist`) or a JSON spec file.
    ///
    /// Batch norm is placed before every activation of the named architectures; it is folded into
    /// the preceding linear layer at export, so the encrypted network has exactly the paper's
    /// layers.
    pub fn by_name(name: &str) -> Result<ArchSpec, ArchError> {
        use LayerSpec::*;
        let conv = |o, k, s, p| Conv2d {
            out_channels: o,
            kernel: k,
            stride: s,
            padding: p,
        };
        let layers = match name {
            // CryptoNets (Gilad-Bachrach et al. 2016): 5x5 stride 2, 5 maps, 845 -> 100 -> 10.
            "cryptonets" => vec![
                conv(5, 5, 2, 1),
                BatchNorm,
                Act,
                Flatten,
                Dense { out: 100 },
                BatchNorm,
                Act,
                Dense { out: 10 },
            ],
            // GPU HCNN (Badawi et al.): 5x5 s2 5 maps -> act -> 5x5 s2 50 maps -> act -> dense 10.
            "hcnn" => vec![
                conv(5, 5, 2, 1),
                BatchNorm,
                Act,
                conv(50, 5, 2, 0),
                BatchNorm,
                Act,
                Flatten,
                Dense { out: 10 },
            ],
            // Deeper CryptoDL-style net: 3 activations, every layer <= 1,960 values (ciphertexts
            // in batch packing): 10x14x14 -> 40x7x7 -> 128 -> 10.
            "cryptodl" => vec![
                conv(10, 5, 2, 2),
                BatchNorm,
                Act,
                conv(40, 3, 2, 1),
                BatchNorm,
                Act,
                Flatten,
                Dense { out: 128 },
                BatchNorm,
                Act,
                Dense { out: 10 },
            ],
            // The MNIST headline net (99.5% and more on held-out MNIST): wider than `cryptodl`
            // at the same depth: 16x14x14 -> 64x7x7 -> 256 -> 10.
            "mnist" => vec![
                conv(16, 5, 2, 2),
                BatchNorm,
                Act,
                conv(64, 3, 2, 1),
                BatchNorm,
                Act,
                Flatten,
                Dense { out: 256 },
                BatchNorm,
                Act,
                Dense { out: 10 },
            ],
            other => {
                use std::io::Read;
                let p = Path::new(other);
                let unknown = |reason: String| ArchError::Unknown {
                    name: other.to_string(),
                    reason,
                };
                // A regular file of at most 1 MiB (a FIFO would block the read).
                let f = crate::io::open_regular(p)
                    .map_err(|e| unknown(e.to_string()))?
                    .ok_or_else(|| unknown("not a regular file".into()))?;
                let mut text = String::new();
                f.take(1 << 20)
                    .read_to_string(&mut text)
                    .map_err(|e| unknown(e.to_string()))?;
                return Self::from_json(&text, other);
            }
        };
        Ok(ArchSpec {
            name: name.to_string(),
            input: None,
            layers,
        })
    }

    /// Parses a JSON spec (`origin` names it in errors).
    pub fn from_json(text: &str, origin: &str) -> Result<ArchSpec, ArchError> {
        serde_json::from_str(text).map_err(|e| ArchError::Spec {
            path: origin.to_string(),
            reason: e.to_string(),
        })
    }

    /// Output shape of every layer for input (c, h, w); checks that the layers fit together.
    pub fn shapes(&self, input: [usize; 3]) -> Result<Vec<Shape>, ArchError> {
        let err = |i: usize, l: &LayerSpec, r: String| ArchError::Shape {
            arch: self.name.clone(),
            index: i,
            layer: l.kind().to_string(),
            reason: r,
        };
        let mut cur =
            check_size(input[0], input[1], input[2]).map_err(|reason| ArchError::Shape {
                arch: self.name.clone(),
                index: 0,
                layer: "input".into(),
                reason: format!("input shape {input:?}: {reason}"),
            })?;
        let mut out = Vec::new();
        let mut prev_linear = false;
        for (i, l) in self.layers.iter().enumerate() {
            let geometry = match *l {
                LayerSpec::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => Geometry::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                },
                LayerSpec::AvgPool { kernel, stride } => Geometry::Pool {
                    kernel,
                    stride: stride.unwrap_or(kernel),
                },
                LayerSpec::Dense { out } => Geometry::Dense { out },
                LayerSpec::Flatten => Geometry::Flatten,
                LayerSpec::BatchNorm => {
                    if !prev_linear {
                        return Err(err(i, l, "batch_norm must follow conv2d or dense (possibly through avg_pool) so it can be folded".into()));
                    }
                    Geometry::Same
                }
                LayerSpec::Poly { ref coeffs, .. } => {
                    if coeffs.is_empty() || coeffs.iter().any(|c| !c.is_finite()) {
                        return Err(err(
                            i,
                            l,
                            "coefficients must be finite and non-empty".into(),
                        ));
                    }
                    Geometry::Same
                }
                LayerSpec::Act | LayerSpec::Std { .. } => Geometry::Same,
            };
            cur = cur.after(geometry).map_err(|r| err(i, l, r))?;
            prev_linear = match l {
                LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. } => true,
                LayerSpec::AvgPool { .. } => prev_linear,
                _ => false,
            };
            out.push(cur);
        }
        match (cur, self.layers.last()) {
            (Shape::Flat(_), Some(LayerSpec::Dense { .. })) => Ok(out),
            _ => Err(ArchError::Shape {
                arch: self.name.clone(),
                index: self.layers.len().saturating_sub(1),
                layer: "output".into(),
                reason:
                    "the network must end with a dense layer (its outputs are the class logits)"
                        .into(),
            }),
        }
    }

    /// The largest number of values any layer outputs (= ciphertexts in batch packing).
    pub fn max_values(&self, input: [usize; 3]) -> Result<usize, ArchError> {
        Ok(self
            .shapes(input)?
            .iter()
            .map(Shape::numel)
            .max()
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_shapes() {
        let s = ArchSpec::by_name("cryptonets")
            .unwrap()
            .shapes([1, 28, 28])
            .unwrap();
        assert_eq!(s[0], Shape::Maps { c: 5, h: 13, w: 13 });
        assert_eq!(s[3], Shape::Flat(845));
        let h = ArchSpec::by_name("hcnn")
            .unwrap()
            .shapes([1, 28, 28])
            .unwrap();
        assert_eq!(h[3], Shape::Maps { c: 50, h: 5, w: 5 });
        let d = ArchSpec::by_name("cryptodl").unwrap();
        assert!(d.max_values([1, 28, 28]).unwrap() <= 2000);
        assert!(
            d.layers
                .iter()
                .filter(|l| matches!(l, LayerSpec::Act))
                .count()
                >= 3
        );
        for n in ["cryptonets", "hcnn", "cryptodl"] {
            ArchSpec::by_name(n).unwrap().shapes([3, 32, 32]).unwrap();
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(ArchSpec::by_name("/nonexistent.json").is_err());
        assert!(ArchSpec::from_json("{\"name\":1}", "x").is_err());
        let s = ArchSpec::from_json(r#"{"name":"t","layers":[{"type":"dense","out":10}]}"#, "x")
            .unwrap();
        assert!(s.shapes([1, 28, 28]).is_err());
        let s = ArchSpec::from_json(r#"{"name":"t","layers":[{"type":"conv2d","out_channels":2,"kernel":40},{"type":"flatten"},{"type":"dense","out":10}]}"#, "x").unwrap();
        assert!(s.shapes([1, 28, 28]).is_err());
        let s = ArchSpec::from_json(r#"{"name":"t","layers":[{"type":"flatten"},{"type":"batch_norm"},{"type":"dense","out":10}]}"#, "x").unwrap();
        assert!(s.shapes([1, 28, 28]).is_err());
        // Found from outside: a network that does not end with a dense layer trained and
        // wrote a model every later command refused.
        for layers in [
            r#"[{"type":"flatten"}]"#,
            r#"[{"type":"flatten"},{"type":"dense","out":10},{"type":"act"}]"#,
        ] {
            let s =
                ArchSpec::from_json(&format!(r#"{{"name":"t","layers":{layers}}}"#), "x").unwrap();
            let e = s.shapes([1, 28, 28]).unwrap_err().to_string();
            assert!(e.contains("must end with a dense layer"), "{layers}: {e}");
        }
    }
}
