//! The validation pass before the walk: what `onnx.checker` refuses and what would change what a
//! graph means to the walk (versions this build was not written against, names defined twice,
//! tensors used before they are defined, attributes of the wrong type, unknown or out of their
//! domain), and the memory a graph declares, checked before anything is allocated.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use super::OnnxError;

/// The oldest default-domain opset whose semantics the walk implements (ONNX 1.2: the
/// broadcasting of today's Add / Mul / Gemm, BatchNormalization without `is_test`).
pub const MIN_OPSET: i64 = 7;
/// The newest opset this build was written against (ONNX 1.21): the ops it maps have not
/// changed meaning up to it; a later one may.
pub const MAX_OPSET: i64 = 26;
/// The oldest IR version with opset imports (ONNX 1.0).
pub const MIN_IR_VERSION: i64 = 3;
/// The newest IR version this build reads.
pub const MAX_IR_VERSION: i64 = 14;
/// The most values all constants of a graph may declare together (2^27: 1 GiB as f64; the
/// models cryptodl runs have a few million at most).
pub const MAX_CONSTANT_VALUES: u64 = 1 << 27;

/// The default-domain opset of `m`, checked: one import of it, within
/// [`MIN_OPSET`]..=[`MAX_OPSET`]; and the IR version within its range.
pub(super) fn opset(m: &ModelProto) -> Result<i64, String> {
    let ir = m.ir_version.unwrap_or(0);
    if !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(&ir) {
        return Err(format!(
            "IR version {ir}: this build reads IR versions {MIN_IR_VERSION} to {MAX_IR_VERSION} \
             (ONNX 1.0 to 1.21); export with an exporter of that range (torch.onnx.export \
             does)"
        ));
    }
    let default: Vec<i64> = m
        .opset_import
        .iter()
        .filter(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .collect();
    let mut domains = HashSet::new();
    for o in &m.opset_import {
        let d = if o.domain() == "ai.onnx" {
            ""
        } else {
            o.domain()
        };
        if !domains.insert(d) {
            return Err(format!(
                "the opset of domain {:?} is imported twice; an ONNX model imports each domain once",
                o.domain()
            ));
        }
    }
    match default.as_slice() {
        [] => Err("no opset of the default (ai.onnx) domain".into()),
        [v] if (MIN_OPSET..=MAX_OPSET).contains(v) => Ok(*v),
        [v] => Err(format!(
            "opset {v} of the default domain: this build implements the semantics of opsets \
             {MIN_OPSET} to {MAX_OPSET}; export with one of them (torch.onnx.export(..., \
             opset_version=17))"
        )),
        _ => unreachable!("one import per domain, checked above"),
    }
}

/// What an attribute of an op must be.
#[derive(Clone, Copy)]
enum Kind {
    Float,
    Int,
    Ints,
    String,
    Tensor,
    Floats,
}

impl Kind {
    fn ty(self) -> AttributeType {
        match self {
            Kind::Float => AttributeType::Float,
            Kind::Int => AttributeType::Int,
            Kind::Ints => AttributeType::Ints,
            Kind::String => AttributeType::String,
            Kind::Tensor => AttributeType::Tensor,
            Kind::Floats => AttributeType::Floats,
        }
    }
}

/// The attributes each mapped op may carry at `opset` (ONNX's schemas, the ones that exist at
/// that version), with their types.
fn schema(op: &str, opset: i64) -> Option<Vec<(&'static str, Kind)>> {
    use Kind::*;
    Some(match op {
        "Conv" => vec![
            ("auto_pad", String),
            ("dilations", Ints),
            ("group", Int),
            ("kernel_shape", Ints),
            ("pads", Ints),
            ("strides", Ints),
        ],
        "Gemm" => vec![
            ("alpha", Float),
            ("beta", Float),
            ("transA", Int),
            ("transB", Int),
        ],
        "BatchNormalization" => {
            let mut a = vec![("epsilon", Float), ("momentum", Float)];
            if opset < 9 {
                a.push(("spatial", Int));
            }
            if opset >= 14 {
                a.push(("training_mode", Int));
            }
            a
        }
        "AveragePool" => {
            let mut a = vec![
                ("auto_pad", String),
                ("count_include_pad", Int),
                ("kernel_shape", Ints),
                ("pads", Ints),
                ("strides", Ints),
            ];
            if opset >= 10 {
                a.push(("ceil_mode", Int));
            }
            if opset >= 19 {
                a.push(("dilations", Ints));
            }
            a
        }
        "Flatten" => vec![("axis", Int)],
        "Reshape" => {
            if opset >= 14 {
                vec![("allowzero", Int)]
            } else {
                vec![]
            }
        }
        "Dropout" => {
            if opset >= 12 {
                vec![("seed", Int)]
            } else {
                vec![("ratio", Float)]
            }
        }
        "Constant" => vec![
            ("value", Tensor),
            ("value_float", Float),
            ("value_floats", Floats),
            ("value_int", Int),
            ("value_ints", Ints),
        ],
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Neg" | "Pow" | "Identity"
        | "GlobalAveragePool" => vec![],
        _ => return None,
    })
}

/// Which field an attribute's value is in, by what it holds (an attribute without a `type`,
/// as writers before IR 2 made, is typed by its one populated field).
fn populated(a: &AttributeProto) -> Vec<AttributeType> {
    let mut kinds = Vec::new();
    if a.f.is_some() {
        kinds.push(AttributeType::Float);
    }
    if a.i.is_some() {
        kinds.push(AttributeType::Int);
    }
    if a.s.is_some() {
        kinds.push(AttributeType::String);
    }
    if a.t.is_some() {
        kinds.push(AttributeType::Tensor);
    }
    if a.g.is_some() {
        kinds.push(AttributeType::Graph);
    }
    if a.sparse_tensor.is_some() {
        kinds.push(AttributeType::SparseTensor);
    }
    if !a.floats.is_empty() {
        kinds.push(AttributeType::Floats);
    }
    if !a.ints.is_empty() {
        kinds.push(AttributeType::Ints);
    }
    if !a.strings.is_empty() {
        kinds.push(AttributeType::Strings);
    }
    if !a.tensors.is_empty() {
        kinds.push(AttributeType::Tensors);
    }
    if !a.graphs.is_empty() {
        kinds.push(AttributeType::Graphs);
    }
    kinds
}

/// Checks one node's attributes against its op's schema: each known to the op at this opset,
/// given once, of its type, and finite where it is a number.
fn attributes(
    node: &NodeProto,
    opset: i64,
    fail: &dyn Fn(String) -> OnnxError,
) -> Result<(), OnnxError> {
    let op = node.op_type();
    let Some(schema) = schema(op, opset) else {
        // Not a mapped op: the walk refuses it with advice.
        return Ok(());
    };
    let mut seen = HashSet::new();
    for a in &node.attribute {
        let name = a.name();
        if !seen.insert(name) {
            return Err(fail(format!("attribute {name} is given twice")));
        }
        if a.ref_attr_name.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(fail(format!(
                "attribute {name} refers to a function's attribute; only graphs of plain nodes are read"
            )));
        }
        let Some(&(_, kind)) = schema.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
            return Err(fail(format!(
                "attribute {name} is not one of {op}'s at opset {opset} ({}); the ONNX checker \
                 refuses it",
                if known.is_empty() {
                    "it has none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let want = kind.ty();
        let declared = a
            .r#type
            .and_then(|t| AttributeType::try_from(t).ok())
            .unwrap_or(AttributeType::Undefined);
        let fields = populated(a);
        if declared == want && fields.is_empty() && !matches!(kind, Kind::Ints | Kind::Floats) {
            return Err(fail(format!(
                "attribute {name} declares type {} but holds no value",
                want.as_str_name()
            )));
        }
        let typed = match declared {
            AttributeType::Undefined => fields.len() == 1 && fields[0] == want,
            t => {
                t == want
                    && fields.iter().all(|&f| f == want)
                    // An empty list is a list of no values.
                    && (!fields.is_empty() || matches!(want, AttributeType::Ints | AttributeType::Floats))
            }
        };
        if !typed {
            return Err(fail(format!(
                "attribute {name} must be {} (it is {})",
                want.as_str_name(),
                if declared == AttributeType::Undefined {
                    fields
                        .iter()
                        .map(|f| f.as_str_name())
                        .collect::<Vec<_>>()
                        .join(" + ")
                } else {
                    declared.as_str_name().to_string()
                }
            )));
        }
        if let Some(v) =
            a.f.filter(|_| want == AttributeType::Float)
                .into_iter()
                .chain(a.floats.iter().copied())
                .find(|v| !v.is_finite())
        {
            return Err(fail(format!(
                "attribute {name} is {v}; it must be a finite number"
            )));
        }
    }
    Ok(())
}

/// The number of values a tensor declares (its dims' product), checked: no negative dimension,
/// no overflow.
fn declared_values(t: &TensorProto) -> Result<u64, OnnxError> {
    t.dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| OnnxError::Tensor {
            name: t.name().to_string(),
            reason: format!("dimensions {:?}: negative or too large", t.dims),
        })
}

/// Checks a constant tensor's storage: one of the ways ONNX allows, not two; no segments.
fn tensor(t: &TensorProto) -> Result<u64, OnnxError> {
    let bad = |reason: String| OnnxError::Tensor {
        name: t.name().to_string(),
        reason,
    };
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not read".into()));
    }
    let external = t.data_location() == DataLocation::External;
    let typed = !t.float_data.is_empty()
        || !t.int32_data.is_empty()
        || !t.int64_data.is_empty()
        || !t.double_data.is_empty()
        || !t.uint64_data.is_empty()
        || !t.string_data.is_empty();
    let sources = usize::from(external) + usize::from(t.raw_data.is_some()) + usize::from(typed);
    if sources > 1 {
        return Err(bad(
            "its values are stored in more than one place (external data, raw_data, typed \
             fields); the ONNX checker refuses that"
                .into(),
        ));
    }
    if external == t.external_data.is_empty() {
        return Err(bad(
            "external_data entries and data_location disagree".into()
        ));
    }
    if DataType::try_from(t.data_type()).is_err() {
        return Err(bad(format!("unknown element type {}", t.data_type())));
    }
    declared_values(t)
}

/// The validation pass over `m`'s graph, at `opset`: returns nothing, or the first thing the
/// ONNX checker (or the walk's semantics) would refuse, naming it.
pub(super) fn graph(
    path: &Path,
    m: &ModelProto,
    g: &GraphProto,
    opset: i64,
) -> Result<(), OnnxError> {
    let graph_error = |reason: String| OnnxError::Graph {
        path: path.to_path_buf(),
        reason,
    };
    if !g.sparse_initializer.is_empty() {
        return Err(graph_error(
            "the graph has sparse initializers, which cryptodl does not read; store them dense"
                .into(),
        ));
    }
    if !m.functions.is_empty() {
        return Err(graph_error(
            "the model defines local functions; export a graph of plain ONNX ops".into(),
        ));
    }
    // Initializers: unique names, one storage each, a memory budget over all of them.
    let mut defined: HashSet<&str> = HashSet::new();
    let mut budget: u64 = 0;
    let mut inits: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &g.initializer {
        let name = t.name();
        if name.is_empty() {
            return Err(graph_error("an initializer has no name".into()));
        }
        if inits.insert(name, t).is_some() {
            return Err(graph_error(format!(
                "initializer {name} is defined twice; names in a graph are defined once (the \
                 ONNX checker refuses this)"
            )));
        }
        budget = budget.saturating_add(tensor(t)?);
        defined.insert(name);
    }
    // Graph inputs: unique; an input may share an initializer's name (its default value).
    let mut inputs = HashSet::new();
    for i in &g.input {
        if i.name().is_empty() || !inputs.insert(i.name()) {
            return Err(graph_error(format!(
                "graph input {:?} is unnamed or listed twice",
                i.name()
            )));
        }
        defined.insert(i.name());
    }
    // Nodes: in topological order, every output defined once (SSA).
    for (index, n) in g.node.iter().enumerate() {
        let label = if n.name().is_empty() {
            format!("#{index}")
        } else {
            n.name().to_string()
        };
        let fail = |reason: String| OnnxError::Node {
            node: label.clone(),
            op: n.op_type().to_string(),
            reason,
        };
        if n.op_type().is_empty() {
            return Err(fail("the node has no op_type".into()));
        }
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                return Err(fail(format!(
                    "input {i} is not defined before this node (a graph lists its nodes in \
                     topological order; the ONNX checker refuses this)"
                )));
            }
        }
        if n.output.is_empty() || n.output.iter().all(String::is_empty) {
            return Err(fail("the node has no output".into()));
        }
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if !defined.insert(o.as_str()) {
                return Err(fail(format!(
                    "output {o} is already defined (by a graph input, an initializer or another \
                     node); every tensor of a graph is written once (SSA), as the ONNX checker \
                     requires"
                )));
            }
        }
        attributes(n, opset, &fail)?;
        if n.op_type() == "Constant" && n.attribute.len() != 1 {
            return Err(fail(format!(
                "a Constant holds exactly one value attribute, this one has {}",
                n.attribute.len()
            )));
        }
        for a in &n.attribute {
            if let Some(t) = &a.t {
                budget = budget.saturating_add(tensor(t)?);
            }
            budget = budget.saturating_add(a.floats.len() as u64 + a.ints.len() as u64);
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            return Err(graph_error(format!(
                "the graph's output {} is not defined by any node",
                o.name()
            )));
        }
    }
    if budget > MAX_CONSTANT_VALUES {
        return Err(graph_error(format!(
            "its constants declare {budget} values, over the limit of {MAX_CONSTANT_VALUES} \
             (1 GiB as f64); the models cryptodl runs encrypted are far smaller"
        )));
    }
    Ok(())
}
