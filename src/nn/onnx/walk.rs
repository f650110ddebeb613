//! The walk over an ONNX graph: each node's output becomes a layer of the chain, a polynomial of
//! the current flow, or a constant; what cannot be mapped is refused naming the node.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array1, Array2, Array4, Axis};

use super::poly::ChanPoly;
use super::proto::{self, NodeProto};
use super::tensor::{self, Const};
use super::{OnnxError, SUPPORTED_OPS};
use crate::nn::activation::Polynomial;
use crate::nn::model::{Activation, TrainedLayer};

/// The shape of the flow: maps or a vector.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cur {
    Maps { c: usize, h: usize, w: usize },
    Vector(usize),
}

impl Cur {
    pub(super) fn channels(&self) -> usize {
        match *self {
            Cur::Maps { c, .. } => c,
            Cur::Vector(n) => n,
        }
    }
    fn dims(&self) -> Vec<usize> {
        match *self {
            Cur::Maps { c, h, w } => vec![1, c, h, w],
            Cur::Vector(n) => vec![1, n],
        }
    }
}

pub(super) fn input_shape(
    input: &proto::ValueInfoProto,
    given: Option<[usize; 3]>,
) -> Result<Cur, String> {
    let dims: Vec<Option<usize>> = input
        .r#type
        .as_ref()
        .and_then(|t| match &t.value {
            Some(proto::type_proto::Value::TensorType(tt)) => tt.shape.as_ref(),
            _ => None,
        })
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                        Some(v as usize)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let shown = |d: &[Option<usize>]| {
        d.iter()
            .map(|x| x.map_or("?".to_string(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(" x ")
    };
    let graph: Option<[usize; 3]> = match dims.as_slice() {
        [_, Some(c), Some(h), Some(w)] => Some([*c, *h, *w]),
        [_, Some(h), Some(w)] => Some([1, *h, *w]),
        _ => None,
    };
    match (graph, given, dims.as_slice()) {
        (Some(g), Some(s), _) if g != s => Err(format!(
            "--input-shape {} does not match the graph's input {} (batch x C x H x W)",
            s.map(|x| x.to_string()).join(","),
            shown(&dims)
        )),
        (Some([c, h, w]), _, _) => Ok(Cur::Maps { c, h, w }),
        (None, Some([c, h, w]), [_, f]) => match f {
            Some(f) if *f != c * h * w => Err(format!(
                "--input-shape {c},{h},{w} has {} values, the graph's input {}",
                c * h * w,
                shown(&dims)
            )),
            _ => Ok(Cur::Vector(c * h * w)),
        },
        (None, Some([c, h, w]), _) => Ok(Cur::Maps { c, h, w }),
        (None, None, _) => Err(format!(
            "the graph's input is {} (batch first); pass --input-shape C,H,W",
            if dims.is_empty() {
                "of unknown shape".to_string()
            } else {
                shown(&dims)
            }
        )),
    }
}

/// What a tensor is, symbolically.
#[derive(Clone, Debug)]
pub(super) enum Val {
    /// The output of the layers so far, at a generation.
    Flow(usize),
    /// A polynomial of that output.
    Poly(usize, ChanPoly),
    /// A constant.
    Const(Const),
}

pub(super) struct Walker<'a> {
    pub(super) dir: Option<&'a Path>,
    /// The default-domain opset (checked to be one this build implements).
    pub(super) opset: i64,
    /// The external data files read, resolved.
    pub(super) files: Vec<std::path::PathBuf>,
    pub(super) inits: HashMap<&'a str, &'a proto::TensorProto>,
    /// How many nodes read each tensor (the graph's output counts as one).
    pub(super) uses: HashMap<&'a str, usize>,
    pub(super) values: HashMap<String, Val>,
    pub(super) trained: Vec<TrainedLayer>,
    /// The current flow's generation: bumped by every layer emitted and every affine map
    /// folded into the last layer (older flows are then stale).
    pub(super) cur: usize,
    pub(super) shape: Cur,
    /// An affine map applied to the input before any layer (folded into the normalisation).
    pub(super) input_affine: Option<(Vec<f64>, Vec<f64>)>,
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i())
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f())
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

impl Walker<'_> {
    pub(super) fn get(&mut self, name: &str) -> Option<Val> {
        if let Some(v) = self.values.get(name) {
            return Some(v.clone());
        }
        let t = *self.inits.get(name)?;
        let c = tensor::decode(t, self.dir, &mut self.files).ok()?;
        self.values.insert(name.to_string(), Val::Const(c.clone()));
        Some(Val::Const(c))
    }

    pub(super) fn node(&mut self, index: usize, node: &NodeProto) -> Result<(), OnnxError> {
        let op = node.op_type().to_string();
        let label = if node.name().is_empty() {
            format!("#{index}")
        } else {
            node.name().to_string()
        };
        let fail = |reason: String| OnnxError::Node {
            node: label.clone(),
            op: op.clone(),
            reason,
        };
        if !node.domain().is_empty() && node.domain() != "ai.onnx" {
            return Err(OnnxError::Unsupported {
                node: label.clone(),
                op: op.clone(),
                advice: format!(
                    "ops of the domain {} are not supported; cryptodl maps {SUPPORTED_OPS}",
                    node.domain()
                ),
            });
        }
        // Initializers are decoded here so that their errors name the tensor.
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            if !self.values.contains_key(name.as_str()) {
                if let Some(t) = self.inits.get(name.as_str()) {
                    let c = tensor::decode(t, self.dir, &mut self.files)?;
                    self.values.insert(name.clone(), Val::Const(c));
                }
            }
        }
        let input = |w: &mut Self, k: usize| -> Result<Val, OnnxError> {
            let name = node
                .input
                .get(k)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| fail(format!("input {k} is missing")))?;
            w.get(name)
                .ok_or_else(|| fail(format!("input {name} is not defined before this node (not a chain, or not in topological order)")))
        };
        let konst = |w: &mut Self, k: usize, what: &str| -> Result<Const, OnnxError> {
            match input(w, k)? {
                Val::Const(c) => Ok(c),
                _ => Err(fail(format!("its {what} (input {k}) must be a constant"))),
            }
        };
        let out = node
            .output
            .first()
            .cloned()
            .ok_or_else(|| fail("no output".into()))?;
        let result = match op.as_str() {
            "Constant" => {
                let mut v = None;
                for a in &node.attribute {
                    if let Some(c) = tensor::from_attribute(a, self.dir, &mut self.files)? {
                        v = Some(c);
                    }
                }
                Val::Const(v.ok_or_else(|| fail("no value attribute cryptodl reads".into()))?)
            }
            "Identity" => input(self, 0)?,
            "Dropout" => {
                if let Some(Val::Const(t)) = node.input.get(2).and_then(|n| self.get(n)) {
                    if t.as_scalar() != Some(0.0) {
                        return Err(fail(
                            "training_mode must be false (export in eval mode)".into(),
                        ));
                    }
                }
                input(self, 0)?
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Neg" => {
                match self.affine_of_const(&op, node) {
                    Some((x, affine)) => match self.fold_now(node, &x, &affine) {
                        Some(v) => v,
                        None => self.elementwise(&op, node, &fail)?,
                    },
                    None => self.elementwise(&op, node, &fail)?,
                }
            }
            "BatchNormalization" => {
                if attr_i(node, "training_mode", 0) != 0 {
                    return Err(fail("training_mode must be 0 (export in eval mode)".into()));
                }
                if self.opset < 9 && attr_i(node, "spatial", 1) != 1 {
                    return Err(fail(
                        "spatial = 0 (statistics per element, opsets 7 and 8) is not supported; export with spatial = 1".into(),
                    ));
                }
                let x = input(self, 0)?;
                let eps = attr_f(node, "epsilon", 1e-5) as f64;
                let [scale, bias, mean, var] = [1, 2, 3, 4].map(|k| konst(self, k, "statistic"));
                let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
                if eps < 0.0 {
                    return Err(fail(format!("epsilon {eps} is negative")));
                }
                if let Some((i, v)) = var
                    .values
                    .iter()
                    .enumerate()
                    .find(|&(_, &v)| v < 0.0 || v + eps <= 0.0)
                {
                    return Err(fail(format!(
                        "the variance of channel {i} is {v} with epsilon {eps}: a variance is \
                         positive (or zero with a positive epsilon); the statistics are damaged"
                    )));
                }
                let c = self.shape.channels();
                if [&scale, &bias, &mean, &var]
                    .iter()
                    .any(|t| t.values.len() != c)
                {
                    return Err(fail(format!(
                        "its statistics have {} values, the input has {c} channels",
                        scale.values.len()
                    )));
                }
                let a: Vec<f64> = (0..c)
                    .map(|i| scale.values[i] / (var.values[i] + eps).sqrt())
                    .collect();
                let b: Vec<f64> = (0..c)
                    .map(|i| bias.values[i] - mean.values[i] * a[i])
                    .collect();
                if a.iter().chain(&b).any(|v| !v.is_finite()) {
                    return Err(fail(
                        "its folded scale and shift overflow (statistics too large or variance too small)".into(),
                    ));
                }
                let affine = ChanPoly(vec![b, a]);
                match self.fold_now(node, &x, &affine) {
                    Some(v) => v,
                    None => self.apply(x, &affine, &fail)?,
                }
            }
            "Conv" => {
                let x = input(self, 0)?;
                self.consume(x, &fail)?;
                let wt = konst(self, 1, "weight")?;
                let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                    Some(_) => Some(konst(self, 2, "bias")?),
                    None => None,
                };
                self.conv(node, wt, bias, &fail)?
            }
            "Gemm" | "MatMul" => {
                let x = input(self, 0)?;
                self.consume(x, &fail)?;
                let b = konst(self, 1, "weight")?;
                let c = match (op.as_str(), node.input.get(2).filter(|n| !n.is_empty())) {
                    ("Gemm", Some(_)) => Some(konst(self, 2, "bias")?),
                    _ => None,
                };
                self.dense(&op, node, b, c, &fail)?
            }
            "AveragePool" | "GlobalAveragePool" => {
                let x = input(self, 0)?;
                self.consume(x, &fail)?;
                let Cur::Maps { c, h, w } = self.shape else {
                    return Err(fail("its input is not a feature map".into()));
                };
                let (k, s) = if op == "GlobalAveragePool" {
                    if h != w {
                        return Err(fail(format!(
                            "global pooling of a {h} x {w} map: cryptodl pools square windows"
                        )));
                    }
                    (h, h)
                } else {
                    if attr_i(node, "ceil_mode", 0) != 0 {
                        return Err(fail("ceil_mode must be 0".into()));
                    }
                    if attr(node, "auto_pad")
                        .is_some_and(|a| !matches!(a.s(), b"" | b"NOTSET" | b"VALID"))
                    {
                        return Err(fail(
                            "auto_pad SAME_UPPER / SAME_LOWER pads the window; padded average pools are not supported".into(),
                        ));
                    }
                    if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
                        return Err(fail("dilated pools are not supported".into()));
                    }
                    if attr_ints(node, "pads").is_some_and(|p| p.iter().any(|&x| x != 0)) {
                        return Err(fail("padded average pools are not supported (padding changes the divisor at the edges)".into()));
                    }
                    let ks = attr_ints(node, "kernel_shape").unwrap_or_default();
                    let st = attr_ints(node, "strides").unwrap_or_else(|| vec![1; ks.len()]);
                    match (ks.as_slice(), st.as_slice()) {
                        ([a, b], [s, t]) if a == b && s == t && *a > 0 && *s > 0 => {
                            (*a as usize, *s as usize)
                        }
                        _ => {
                            return Err(fail(format!(
                                "kernel {ks:?} / strides {st:?}: cryptodl pools square windows with equal strides"
                            )))
                        }
                    }
                };
                if k > h || k > w {
                    return Err(fail(format!("a {k} x {k} window on a {h} x {w} map")));
                }
                self.emit(TrainedLayer::AvgPool {
                    kernel: k,
                    stride: s,
                });
                self.shape = Cur::Maps {
                    c,
                    h: (h - k) / s + 1,
                    w: (w - k) / s + 1,
                };
                Val::Flow(self.cur)
            }
            "Flatten" | "Reshape" => {
                let x = input(self, 0)?;
                // Axis 1, or the same axis counted from the end (opset 11: -3 of N x C x H x W).
                let rank = self.shape.dims().len() as i64;
                let axis = attr_i(node, "axis", 1);
                if op == "Flatten" && axis != 1 && axis + rank != 1 {
                    return Err(fail("axis must be 1 (keep the batch dimension)".into()));
                }
                if op == "Reshape" {
                    let shape = konst(self, 1, "shape")?;
                    if attr_i(node, "allowzero", 0) != 0 && shape.values.contains(&0.0) {
                        return Err(fail(
                            "allowzero = 1 with a 0 in the shape makes a dimension of size 0"
                                .into(),
                        ));
                    }
                    let n = self.shape.dims().iter().product::<usize>();
                    let ok = match shape.values.as_slice() {
                        [b, f] => {
                            (*b == 0.0 || *b == -1.0 || *b == 1.0) && (*f == -1.0 || *f == n as f64)
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(OnnxError::Unsupported {
                            node: label.clone(),
                            op: op.clone(),
                            advice: format!(
                                "a reshape to {:?}: only flattening to (batch, features) is supported (use nn.Flatten or x.flatten(1))",
                                shape.values.iter().map(|&v| v as i64).collect::<Vec<_>>()
                            ),
                        });
                    }
                }
                self.consume(x, &fail)?;
                if let Cur::Maps { c, h, w } = self.shape {
                    self.emit(TrainedLayer::Flatten);
                    self.shape = Cur::Vector(c * h * w);
                }
                Val::Flow(self.cur)
            }
            _ => return Err(unsupported(&op, &label)),
        };
        self.values.insert(out, result);
        Ok(())
    }

    fn emit(&mut self, layer: TrainedLayer) {
        self.trained.push(layer);
        self.cur += 1;
    }

    /// The linear layer at hand takes `x`: it must be the current flow, or a polynomial of it,
    /// which becomes an activation (degree 2 or 3) or folds into the layer before (degree 1).
    fn consume(&mut self, x: Val, fail: &dyn Fn(String) -> OnnxError) -> Result<(), OnnxError> {
        match x {
            Val::Flow(f) if f == self.cur => Ok(()),
            Val::Poly(f, p) if f == self.cur => match p.degree() {
                0 => Err(fail("its input is a constant".into())),
                1 => self.fold_affine(&p, "this node"),
                2 | 3 => {
                    let coeffs = p.uniform().ok_or_else(|| {
                        fail("its input is a polynomial with different coefficients per channel; cryptodl activations are the same in every channel".into())
                    })?;
                    self.emit(TrainedLayer::Act(Activation::Poly {
                        coeffs: Polynomial::new(coeffs),
                    }));
                    Ok(())
                }
                d => Err(fail(format!(
                    "its input is a polynomial of degree {d}; cryptodl runs activations of degree 2 or 3"
                ))),
            },
            Val::Const(_) => Err(fail("its data input is a constant".into())),
            Val::Flow(_) | Val::Poly(..) => Err(fail(
                "its input is an earlier tensor than the last layer's (a skip connection or branch); cryptodl imports chains".into(),
            )),
        }
    }

    /// `x + c`, `x - c`, `x * c`, `x / c` (c a scalar or per-channel constant, x the flow) as
    /// `(x, affine)`.
    fn affine_of_const(&mut self, op: &str, node: &NodeProto) -> Option<(Val, ChanPoly)> {
        let a = self.get(node.input.first()?)?;
        let b = self.get(node.input.get(1)?)?;
        let (x, c, x_first) = match (a, b) {
            (x @ Val::Flow(_), Val::Const(c)) => (x, c, true),
            (Val::Const(c), x @ Val::Flow(_)) => (x, c, false),
            _ => return None,
        };
        let v = self.channel_values(&c)?;
        let affine = match (op, x_first) {
            ("Add", _) => ChanPoly(vec![v, vec![1.0]]),
            ("Sub", true) => ChanPoly(vec![v.iter().map(|x| -x).collect(), vec![1.0]]),
            ("Mul", _) => ChanPoly(vec![vec![0.0], v]),
            ("Div", true) if v.iter().all(|&x| x != 0.0) => {
                ChanPoly(vec![vec![0.0], v.iter().map(|x| 1.0 / x).collect()])
            }
            _ => return None,
        };
        Some((x, affine))
    }

    /// Folds the affine map of `node` into the layer before right away when its input is the
    /// current flow, read by this node alone, straight out of a conv or dense layer (batch
    /// norm, a bias add, a scale). A flow read by several nodes (`x * x`) is left symbolic.
    fn fold_now(&mut self, node: &NodeProto, x: &Val, affine: &ChanPoly) -> Option<Val> {
        let name = node
            .input
            .iter()
            .find(|n| matches!(self.values.get(n.as_str()), Some(Val::Flow(_))))?;
        let single = self.uses.get(name.as_str()) == Some(&1);
        let linear = matches!(
            self.trained.last(),
            Some(TrainedLayer::Conv2d { .. } | TrainedLayer::Dense { .. })
        );
        match x {
            Val::Flow(f) if *f == self.cur && single && linear => {
                self.fold_affine(affine, node.name()).ok()?;
                self.cur += 1;
                Some(Val::Flow(self.cur))
            }
            _ => None,
        }
    }

    /// Folds `a x + b` (per channel) into the layer before, or into the input normalisation.
    pub(super) fn fold_affine(&mut self, p: &ChanPoly, at: &str) -> Result<(), OnnxError> {
        let (b, a) = (p.0[0].clone(), p.0.get(1).cloned().unwrap_or(vec![0.0]));
        let at_ch = |v: &[f64], i: usize| v[i.min(v.len() - 1)];
        match self.trained.last_mut() {
            None => {
                self.input_affine = Some((a, b));
                Ok(())
            }
            Some(TrainedLayer::Conv2d { weight, bias, .. }) => {
                for (o, mut wo) in weight.axis_iter_mut(Axis(0)).enumerate() {
                    wo *= at_ch(&a, o);
                    bias[o] = at_ch(&a, o) * bias[o] + at_ch(&b, o);
                }
                Ok(())
            }
            Some(TrainedLayer::Dense { weight, bias }) => {
                for (o, mut wo) in weight.axis_iter_mut(Axis(0)).enumerate() {
                    wo *= at_ch(&a, o);
                    bias[o] = at_ch(&a, o) * bias[o] + at_ch(&b, o);
                }
                Ok(())
            }
            Some(_) => {
                // Through a pool or a flatten only a uniform scale passes (no offset).
                if a.iter().all(|&x| x == a[0]) && b.iter().all(|&x| x == 0.0) && a[0] > 0.0 {
                    let s = a[0];
                    for l in self.trained.iter_mut().rev() {
                        match l {
                            TrainedLayer::Conv2d { weight, bias, .. } => {
                                *weight *= s;
                                *bias *= s;
                                return Ok(());
                            }
                            TrainedLayer::Dense { weight, bias } => {
                                *weight *= s;
                                *bias *= s;
                                return Ok(());
                            }
                            TrainedLayer::AvgPool { .. } | TrainedLayer::Flatten => {}
                            _ => break,
                        }
                    }
                }
                Err(OnnxError::Node {
                    node: at.to_string(),
                    op: "affine".into(),
                    reason: "an affine map (scale, shift, batch norm) after a pool, a flatten or an activation cannot be folded; put it right after a Conv or Gemm".into(),
                })
            }
        }
    }

    /// A per-channel view of a constant against the flow's shape (numpy broadcasting): one
    /// value, or one per channel.
    fn channel_values(&self, c: &Const) -> Option<Vec<f64>> {
        if c.values.len() == 1 {
            return Some(c.values.clone());
        }
        let flow = self.shape.dims();
        if c.dims.len() > flow.len() {
            return None;
        }
        let offset = flow.len() - c.dims.len();
        let channel_axis = 1;
        for (k, &d) in c.dims.iter().enumerate() {
            let axis = k + offset;
            if axis == channel_axis {
                if d != flow[axis] && d != 1 {
                    return None;
                }
            } else if d != 1 {
                return None;
            }
        }
        Some(c.values.clone())
    }

    fn as_poly(
        &self,
        v: &Val,
        fail: &dyn Fn(String) -> OnnxError,
    ) -> Result<(Option<usize>, ChanPoly), OnnxError> {
        match v {
            Val::Flow(f) => Ok((Some(*f), ChanPoly::identity())),
            Val::Poly(f, p) => Ok((Some(*f), p.clone())),
            Val::Const(c) => {
                let vals = self.channel_values(c).ok_or_else(|| {
                    fail(format!(
                        "a constant of shape {:?} against a tensor of shape {:?}: only scalars and per-channel constants are supported",
                        c.dims,
                        self.shape.dims()
                    ))
                })?;
                Ok((None, ChanPoly::constant(vals)))
            }
        }
    }

    /// Applies the polynomial `p` to `x` (`p(x)`), for per-channel affine ops.
    fn apply(
        &self,
        x: Val,
        p: &ChanPoly,
        fail: &dyn Fn(String) -> OnnxError,
    ) -> Result<Val, OnnxError> {
        let (f, px) = self.as_poly(&x, fail)?;
        let f = f.ok_or_else(|| fail("its data input is a constant".into()))?;
        // p(px) = sum p_k px^k
        let mut out = ChanPoly::constant(vec![0.0]);
        let mut power = ChanPoly::constant(vec![1.0]);
        for coeff in &p.0 {
            out = out.add(&power.mul(&ChanPoly::constant(coeff.clone())), 1.0);
            power = power.mul(&px);
        }
        Ok(Val::Poly(f, out))
    }

    fn elementwise(
        &mut self,
        op: &str,
        node: &NodeProto,
        fail: &dyn Fn(String) -> OnnxError,
    ) -> Result<Val, OnnxError> {
        let arity = if op == "Neg" { 1 } else { 2 };
        let mut vals = Vec::new();
        for k in 0..arity {
            let name = node
                .input
                .get(k)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| fail(format!("input {k} is missing")))?;
            vals.push(
                self.get(name)
                    .ok_or_else(|| fail(format!("input {name} is not defined before this node")))?,
            );
        }
        // Constants only: fold scalars.
        if vals.iter().all(|v| matches!(v, Val::Const(_))) {
            let s: Vec<f64> = vals
                .iter()
                .map(|v| match v {
                    Val::Const(c) => c.as_scalar(),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    fail("arithmetic on constant tensors: only scalars are folded".into())
                })?;
            let r = match op {
                "Add" => s[0] + s[1],
                "Sub" => s[0] - s[1],
                "Mul" => s[0] * s[1],
                "Div" => s[0] / s[1],
                "Pow" => s[0].powf(s[1]),
                _ => -s[0],
            };
            if !r.is_finite() {
                return Err(fail(format!(
                    "folding {op} of the constants {s:?} gives {r}: not a finite number"
                )));
            }
            return Ok(Val::Const(Const::scalar(r)));
        }
        if op == "Pow" {
            let Val::Const(e) = &vals[1] else {
                return Err(fail("the exponent must be a constant".into()));
            };
            let e = e
                .as_scalar()
                .filter(|e| e.fract() == 0.0 && (1.0..=3.0).contains(e))
                .ok_or_else(|| {
                    fail(
                        "the exponent must be 1, 2 or 3 (a polynomial activation of degree 2 or 3)"
                            .into(),
                    )
                })?;
            let (f, p) = self.as_poly(&vals[0], fail)?;
            let mut r = p.clone();
            for _ in 1..e as usize {
                r = r.mul(&p);
            }
            return Ok(Val::Poly(f.expect("not all constants"), r));
        }
        let polys: Vec<(Option<usize>, ChanPoly)> = vals
            .iter()
            .map(|v| self.as_poly(v, fail))
            .collect::<Result<_, _>>()?;
        let flows: Vec<usize> = polys.iter().filter_map(|(f, _)| *f).collect();
        let f = flows[0];
        if flows.iter().any(|&g| g != f) || f != self.cur {
            return Err(fail(
                "it combines tensors from different layers (a skip connection or branch); cryptodl imports chains".into(),
            ));
        }
        let p = match op {
            "Neg" => polys[0].1.mul(&ChanPoly::constant(vec![-1.0])),
            "Add" => polys[0].1.add(&polys[1].1, 1.0),
            "Sub" => polys[0].1.add(&polys[1].1, -1.0),
            "Mul" => polys[0].1.mul(&polys[1].1),
            _ => {
                // Div: by a non-zero constant only.
                let (None, d) = &polys[1] else {
                    return Err(fail("division by a tensor is not a polynomial".into()));
                };
                if d.0[0].contains(&0.0) {
                    return Err(fail("division by zero".into()));
                }
                let inv = ChanPoly::constant(d.0[0].iter().map(|x| 1.0 / x).collect());
                polys[0].1.mul(&inv)
            }
        };
        if p.degree() > 6 {
            return Err(fail(format!(
                "the polynomial reaches degree {}; cryptodl runs activations of degree 2 or 3",
                p.degree()
            )));
        }
        if p.0.iter().flatten().any(|c| !c.is_finite()) {
            return Err(fail(
                "its coefficients overflow (constants too large): not a finite polynomial".into(),
            ));
        }
        Ok(Val::Poly(f, p))
    }

    fn conv(
        &mut self,
        node: &NodeProto,
        wt: Const,
        bias: Option<Const>,
        fail: &dyn Fn(String) -> OnnxError,
    ) -> Result<Val, OnnxError> {
        let Cur::Maps { c, h, w } = self.shape else {
            return Err(fail("its input is not a feature map".into()));
        };
        if attr_i(node, "group", 1) != 1 {
            return Err(fail(
                "grouped or depthwise convolutions are not supported (group must be 1)".into(),
            ));
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(fail("dilated convolutions are not supported".into()));
        }
        let valid = attr(node, "auto_pad").is_some_and(|a| a.s() == b"VALID");
        if valid && attr(node, "pads").is_some() {
            return Err(fail(
                "auto_pad VALID with explicit pads: ONNX allows one or the other".into(),
            ));
        }
        if !valid && attr(node, "auto_pad").is_some_and(|a| !a.s().is_empty() && a.s() != b"NOTSET")
        {
            return Err(fail(
                "auto_pad SAME_UPPER / SAME_LOWER is not supported; export explicit pads (padding=N in PyTorch)".into(),
            ));
        }
        let [o, i, kh, kw] = match wt.dims.as_slice() {
            [o, i, kh, kw] => [*o, *i, *kh, *kw],
            d => {
                return Err(fail(format!(
                    "a weight of shape {d:?} (expected out x in x k x k)"
                )))
            }
        };
        if kh != kw {
            return Err(fail(format!(
                "a {kh} x {kw} kernel: cryptodl convolves square kernels"
            )));
        }
        if let Some(ks) = attr_ints(node, "kernel_shape") {
            if ks != [kh as i64, kw as i64] {
                return Err(fail(format!(
                    "kernel_shape {ks:?} does not match the weight's {kh} x {kw}"
                )));
            }
        }
        if i != c {
            return Err(fail(format!(
                "the weight takes {i} input channels, the input has {c}"
            )));
        }
        let strides = attr_ints(node, "strides").unwrap_or(vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or(vec![0, 0, 0, 0]);
        let s = match strides.as_slice() {
            [a, b] if a == b && *a > 0 => *a as usize,
            _ => {
                return Err(fail(format!(
                    "strides {strides:?}: cryptodl uses equal strides"
                )))
            }
        };
        let p = match pads.as_slice() {
            [a, b, cc, d] if a == b && b == cc && cc == d && *a >= 0 => *a as usize,
            _ => {
                return Err(fail(format!(
                    "pads {pads:?}: cryptodl pads every side equally"
                )))
            }
        };
        if h + 2 * p < kh || w + 2 * p < kw {
            return Err(fail(format!(
                "a {kh} x {kw} kernel on a {h} x {w} map padded by {p}"
            )));
        }
        let bias = match bias {
            Some(b) if b.values.len() == o => b.values,
            Some(b) => {
                return Err(fail(format!(
                    "a bias of {} values for {o} outputs",
                    b.values.len()
                )))
            }
            None => vec![0.0; o],
        };
        let weight =
            Array4::from_shape_vec((o, i, kh, kw), wt.values).map_err(|e| fail(e.to_string()))?;
        self.emit(TrainedLayer::Conv2d {
            weight,
            bias: Array1::from(bias),
            stride: s,
            padding: p,
        });
        self.shape = Cur::Maps {
            c: o,
            h: (h + 2 * p - kh) / s + 1,
            w: (w + 2 * p - kw) / s + 1,
        };
        Ok(Val::Flow(self.cur))
    }

    fn dense(
        &mut self,
        op: &str,
        node: &NodeProto,
        b: Const,
        c: Option<Const>,
        fail: &dyn Fn(String) -> OnnxError,
    ) -> Result<Val, OnnxError> {
        let n = match self.shape {
            Cur::Vector(n) => n,
            Cur::Maps { .. } => {
                return Err(fail(
                    "its input is a feature map; flatten it first (nn.Flatten)".into(),
                ))
            }
        };
        let (rows, cols) = match b.dims.as_slice() {
            [r, k] => (*r, *k),
            d => return Err(fail(format!("a weight of shape {d:?} (expected 2-D)"))),
        };
        let (trans_b, alpha, beta) = if op == "Gemm" {
            if attr_i(node, "transA", 0) != 0 {
                return Err(fail("transA must be 0".into()));
            }
            (
                attr_i(node, "transB", 0) != 0,
                attr_f(node, "alpha", 1.0) as f64,
                attr_f(node, "beta", 1.0) as f64,
            )
        } else {
            (false, 1.0, 1.0)
        };
        let b = Array2::from_shape_vec((rows, cols), b.values).map_err(|e| fail(e.to_string()))?;
        // Our weights are [out, in].
        let weight = if trans_b { b } else { b.t().to_owned() } * alpha;
        let (out, inp) = weight.dim();
        if inp != n {
            return Err(fail(format!(
                "the weight takes {inp} inputs, the input has {n}"
            )));
        }
        let bias = match c {
            None => Array1::zeros(out),
            Some(c) if c.values.len() == out => Array1::from(c.values) * beta,
            Some(c) if c.values.len() == 1 => Array1::from_elem(out, c.values[0] * beta),
            Some(c) => {
                return Err(fail(format!(
                    "a bias of {} values for {out} outputs",
                    c.values.len()
                )))
            }
        };
        self.emit(TrainedLayer::Dense { weight, bias });
        self.shape = Cur::Vector(out);
        Ok(Val::Flow(self.cur))
    }
}

/// The error for an op cryptodl does not map, with what to use instead.
fn unsupported(op: &str, node: &str) -> OnnxError {
    let advice = match op {
        "Relu" | "LeakyRelu" | "PRelu" | "Sigmoid" | "Tanh" | "Gelu" | "Elu" | "Selu" | "Celu"
        | "Softplus" | "HardSigmoid" | "HardSwish" | "Swish" | "Mish" | "Erf" | "Exp" => {
            "replace it by a polynomial before export (cryptodl approx --fn relu gives the coefficients; write it as c2 * x * x + c1 * x + c0)".to_string()
        }
        "MaxPool" | "GlobalMaxPool" => {
            "max is not a polynomial; use average pooling (nn.AvgPool2d)".to_string()
        }
        "Softmax" | "LogSoftmax" => {
            "leave it out of the exported model: the argmax of the logits is the same (apply it after decryption)".to_string()
        }
        "Concat" | "Split" | "Slice" | "Gather" | "Transpose" | "Shape" | "Unsqueeze"
        | "Squeeze" | "Expand" => format!(
            "tensor reshuffling is not supported; export a plain chain of layers (nn.Flatten for flattening). cryptodl maps {SUPPORTED_OPS}"
        ),
        _ => format!("not supported; cryptodl maps {SUPPORTED_OPS}"),
    };
    OnnxError::Unsupported {
        node: node.to_string(),
        op: op.to_string(),
        advice,
    }
}
