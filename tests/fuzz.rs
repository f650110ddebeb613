//! Structure-aware fuzzing of what users hand cryptodl (issue 22), bounded in time for CI: ONNX
//! models with one field changed, `.npy` headers written as numpy's Python literals with keys
//! duplicated, reordered or wrong, and PNG / JPEG files with bytes flipped, inserted, removed or
//! cut. Each property names its oracle: no panic anywhere; what the ONNX checker refuses is
//! refused; an accepted `.npy` is read exactly as numpy reads it; an accepted PNG has the
//! original pixels; a cut image is never accepted. Case counts: `CRYPTODL_FUZZ_CASES`
//! multiplies them (default 1); each test prints its cases, outcomes and time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cryptodl::nn::images::{self, Resize};
use cryptodl::nn::onnx::proto::{tensor_proto, type_proto, ModelProto};
use cryptodl::nn::onnx::{
    import_bytes, ImportOptions, MAX_IR_VERSION, MAX_OPSET, MIN_IR_VERSION, MIN_OPSET,
};
use cryptodl::nn::reference;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

fn cases(base: u32) -> u32 {
    let k: u32 = std::env::var("CRYPTODL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    base * k.max(1)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// One change to an ONNX model; indices are taken modulo what the model has.
#[derive(Clone, Debug)]
enum Edit {
    Opset(i64),
    IrVersion(i64),
    OpType(usize, &'static str),
    DropNode(usize),
    DuplicateNode(usize),
    SwapNodes(usize, usize),
    /// Node output renamed to the name of another tensor (graph input, initializer, output).
    OutputName(usize, usize),
    InputName(usize, usize, usize),
    AttrFloat(usize, usize, f32),
    AttrInt(usize, usize, i64),
    AttrInts(usize, usize, Vec<i64>),
    AttrType(usize, usize, i32),
    AttrName(usize, usize, &'static str),
    DuplicateAttr(usize, usize),
    DropAttr(usize, usize),
    InitDims(usize, Vec<i64>),
    InitType(usize, i32),
    InitValue(usize, usize, f32),
    InitTruncate(usize),
    DuplicateInit(usize, f32),
    InputDim(usize, i64),
    Meta(bool, &'static str),
    /// An external-data field of an initializer (`location`, `offset`, `length`) set.
    External(usize, &'static str, &'static str),
}

const LOCATIONS: &[&str] = &[
    "../onnx/pytorch-cryptonets.onnx.data",
    "/etc/passwd",
    "./pytorch-cryptonets.onnx.data",
    "pytorch-cryptonets.onnx",
    "every-op.onnx",
    "",
    "missing.data",
    "../../Cargo.toml",
    "pytorch-cryptonets.onnx.data",
];
const NUMBERS: &[&str] = &[
    "0",
    "4",
    "-1",
    "18446744073709551615",
    "x",
    "1e3",
    "999999999999",
];

const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Pow",
    "BatchNormalization",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Identity",
    "Dropout",
    "Constant",
    "Relu",
    "MaxPool",
    "Concat",
    "",
    "Softmax",
];
const ATTRS: &[&str] = &[
    "alpha",
    "beta",
    "epsilon",
    "strides",
    "pads",
    "kernel_shape",
    "group",
    "axis",
    "transA",
    "transB",
    "ceil_mode",
    "auto_pad",
    "dilations",
    "value",
    "foo",
];
const META: &[&str] = &[
    "0.5", "nan", "inf", "-1", "0", "1e-300", "0.1,0.2", "", "x", "1e308",
];

fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0),
        Just(-1.0),
        Just(1e30),
        Just(-1e-30),
        -4.0f32..4.0,
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(2i64),
        Just(1i64 << 31),
        -3i64..40,
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = || 0usize..64;
    prop_oneof![
        int().prop_map(Edit::Opset),
        int().prop_map(Edit::IrVersion),
        (i(), proptest::sample::select(OPS)).prop_map(|(n, o)| Edit::OpType(n, o)),
        i().prop_map(Edit::DropNode),
        i().prop_map(Edit::DuplicateNode),
        (i(), i()).prop_map(|(a, b)| Edit::SwapNodes(a, b)),
        (i(), i()).prop_map(|(a, b)| Edit::OutputName(a, b)),
        (i(), 0usize..4, i()).prop_map(|(a, b, c)| Edit::InputName(a, b, c)),
        (i(), i(), float()).prop_map(|(a, b, v)| Edit::AttrFloat(a, b, v)),
        (i(), i(), int()).prop_map(|(a, b, v)| Edit::AttrInt(a, b, v)),
        (i(), i(), proptest::collection::vec(int(), 0..5))
            .prop_map(|(a, b, v)| Edit::AttrInts(a, b, v)),
        (i(), i(), -1i32..16).prop_map(|(a, b, t)| Edit::AttrType(a, b, t)),
        (i(), i(), proptest::sample::select(ATTRS)).prop_map(|(a, b, n)| Edit::AttrName(a, b, n)),
        (i(), i()).prop_map(|(a, b)| Edit::DuplicateAttr(a, b)),
        (i(), i()).prop_map(|(a, b)| Edit::DropAttr(a, b)),
        (i(), proptest::collection::vec(int(), 0..5)).prop_map(|(a, d)| Edit::InitDims(a, d)),
        (i(), -1i32..25).prop_map(|(a, t)| Edit::InitType(a, t)),
        (i(), 0usize..1 << 16, float()).prop_map(|(a, k, v)| Edit::InitValue(a, k, v)),
        i().prop_map(Edit::InitTruncate),
        (i(), float()).prop_map(|(a, v)| Edit::DuplicateInit(a, v)),
        (0usize..4, int()).prop_map(|(d, v)| Edit::InputDim(d, v)),
        (any::<bool>(), proptest::sample::select(META)).prop_map(|(k, v)| Edit::Meta(k, v)),
        (i(), proptest::sample::select(LOCATIONS))
            .prop_map(|(t, l)| Edit::External(t, "location", l)),
        (
            i(),
            proptest::sample::select(&["offset", "length", "checksum", "bogus"][..]),
            proptest::sample::select(NUMBERS)
        )
            .prop_map(|(t, k, v)| Edit::External(t, k, v)),
    ]
}

/// Applies `e` to `m`; returns whether the ONNX checker (or the importer's version range)
/// must refuse the result.
fn apply(m: &mut ModelProto, e: &Edit) -> bool {
    let g = m.graph.as_mut().unwrap();
    let names: Vec<String> = g
        .input
        .iter()
        .map(|i| i.name().to_string())
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .chain(g.node.iter().flat_map(|n| n.output.clone()))
        .collect();
    let nn = g.node.len();
    let ni = g.initializer.len();
    match e {
        Edit::Opset(v) => {
            m.opset_import[0].version = Some(*v);
            !(MIN_OPSET..=MAX_OPSET).contains(v)
        }
        Edit::IrVersion(v) => {
            m.ir_version = Some(*v);
            !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(v)
        }
        Edit::OpType(n, op) => {
            g.node[n % nn].op_type = Some(op.to_string());
            false
        }
        Edit::DropNode(n) => {
            g.node.remove(n % nn);
            false
        }
        Edit::DuplicateNode(n) => {
            let copy = g.node[n % nn].clone();
            g.node.insert(n % nn, copy);
            true // its outputs are written twice
        }
        Edit::SwapNodes(a, b) => {
            g.node.swap(a % nn, b % nn);
            false
        }
        Edit::OutputName(n, to) => {
            let node = &mut g.node[n % nn];
            let to = &names[to % names.len()];
            let must = node.output[0] != *to;
            node.output[0] = to.clone();
            must
        }
        Edit::InputName(n, k, to) => {
            let node = &mut g.node[n % nn];
            let to = names[to % names.len()].clone();
            match node.input.get_mut(*k) {
                Some(i) => *i = to,
                None => node.input.push(to),
            }
            false
        }
        Edit::AttrFloat(n, a, v) => {
            let node = &mut g.node[n % nn];
            let mapped = OPS[..17].contains(&node.op_type());
            let Some(at) = (!node.attribute.is_empty()).then(|| a % node.attribute.len()) else {
                return false;
            };
            node.attribute[at].f = Some(*v);
            mapped && !v.is_finite()
        }
        Edit::AttrInt(n, a, v) => {
            let node = &mut g.node[n % nn];
            if !node.attribute.is_empty() {
                let at = a % node.attribute.len();
                node.attribute[at].i = Some(*v);
            }
            false
        }
        Edit::AttrInts(n, a, v) => {
            let node = &mut g.node[n % nn];
            if !node.attribute.is_empty() {
                let at = a % node.attribute.len();
                node.attribute[at].ints = v.clone();
            }
            false
        }
        Edit::AttrType(n, a, t) => {
            let node = &mut g.node[n % nn];
            if !node.attribute.is_empty() {
                let at = a % node.attribute.len();
                node.attribute[at].r#type = Some(*t);
            }
            false
        }
        Edit::AttrName(n, a, name) => {
            let node = &mut g.node[n % nn];
            if !node.attribute.is_empty() {
                let at = a % node.attribute.len();
                node.attribute[at].name = Some(name.to_string());
            }
            false
        }
        Edit::DuplicateAttr(n, a) => {
            let node = &mut g.node[n % nn];
            let mapped = OPS[..17].contains(&node.op_type());
            if node.attribute.is_empty() {
                return false;
            }
            let copy = node.attribute[a % node.attribute.len()].clone();
            node.attribute.push(copy);
            mapped
        }
        Edit::DropAttr(n, a) => {
            let node = &mut g.node[n % nn];
            if !node.attribute.is_empty() {
                let at = a % node.attribute.len();
                node.attribute.remove(at);
            }
            false
        }
        Edit::InitDims(t, d) => {
            g.initializer[t % ni].dims = d.clone();
            false
        }
        Edit::InitType(t, ty) => {
            g.initializer[t % ni].data_type = Some(*ty);
            false
        }
        Edit::InitValue(t, k, v) => {
            let t = &mut g.initializer[t % ni];
            let float = t.data_type() == tensor_proto::DataType::Float as i32;
            if let Some(raw) = &mut t.raw_data {
                if float && raw.len() >= 4 {
                    let at = (k % (raw.len() / 4)) * 4;
                    raw[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            } else if !t.float_data.is_empty() {
                let at = k % t.float_data.len();
                t.float_data[at] = *v;
            }
            false
        }
        Edit::InitTruncate(t) => {
            let t = &mut g.initializer[t % ni];
            if let Some(raw) = &mut t.raw_data {
                raw.pop();
            } else {
                t.float_data.pop();
            }
            false
        }
        Edit::DuplicateInit(t, v) => {
            let mut copy = g.initializer[t % ni].clone();
            copy.raw_data = None;
            copy.float_data = vec![*v];
            g.initializer.push(copy);
            true
        }
        Edit::InputDim(d, v) => {
            if let Some(type_proto::Value::TensorType(tt)) =
                &mut g.input[0].r#type.as_mut().unwrap().value
            {
                let dims = &mut tt.shape.as_mut().unwrap().dim;
                let at = d % dims.len();
                dims[at].value = Some(
                    cryptodl::nn::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(*v),
                );
            }
            false
        }
        Edit::External(t, key, v) => {
            let t = &mut g.initializer[t % ni];
            if let Some(e) = t.external_data.iter_mut().find(|e| e.key() == *key) {
                e.value = Some(v.to_string());
            } else if !t.external_data.is_empty() {
                t.external_data
                    .push(cryptodl::nn::onnx::proto::StringStringEntryProto {
                        key: Some(key.to_string()),
                        value: Some(v.to_string()),
                    });
            }
            false
        }
        Edit::Meta(mean, v) => {
            let key = if *mean {
                "cryptodl.mean"
            } else {
                "cryptodl.std"
            };
            for p in &mut m.metadata_props {
                if p.key() == key {
                    p.value = Some(v.to_string());
                }
            }
            false
        }
    }
}

/// ONNX models with one or two fields changed: never a panic; what the checker refuses is
/// refused; what is accepted is a valid model whose reference logits are finite numbers.
#[test]
fn onnx_models_with_a_field_changed() {
    let base: Vec<(ModelProto, Option<PathBuf>)> = [
        ("every-op.onnx", None),
        ("pytorch-cryptonets.onnx", Some(fixture(""))),
    ]
    .into_iter()
    .map(|(f, dir)| {
        let m = ModelProto::decode(std::fs::read(fixture(f)).unwrap().as_slice()).unwrap();
        (m, dir)
    })
    .collect();
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let t0 = Instant::now();
    let n = cases(10000);
    runner(n)
        .run(
            &(any::<bool>(), proptest::collection::vec(edit(), 1..3)),
            |(which, edits)| {
                let (m0, dir) = &base[usize::from(which)];
                let mut m = m0.clone();
                let mut must_refuse = false;
                for e in &edits {
                    must_refuse |= apply(&mut m, e);
                }
                // A second edit may undo what made the first invalid (drop the node it broke).
                must_refuse &= edits.len() == 1;
                let r = import_bytes(
                    &m.encode_to_vec(),
                    Path::new("fuzz.onnx"),
                    dir.as_deref(),
                    &ImportOptions::default(),
                );
                match r {
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(imp) => {
                        prop_assert!(!must_refuse, "accepted what the checker refuses: {edits:?}");
                        let root = std::fs::canonicalize(fixture("")).unwrap();
                        for f in &imp.external_files {
                            prop_assert!(f.starts_with(&root), "{edits:?} read {}", f.display());
                        }
                        imp.model.validate().unwrap();
                        let [c, h, w] = imp.model.input;
                        let x: Vec<f64> = (0..c * h * w).map(|i| (i % 7) as f64 / 7.0).collect();
                        if let Ok(l) = reference::forward(&imp.model, &x) {
                            prop_assert!(l.iter().all(|v| v.is_finite()), "{edits:?}: {l:?}");
                        }
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "ONNX fuzz: {n} models in {:.1} s: {} refused, {} accepted, 0 panics",
        t0.elapsed().as_secs_f64(),
        refused.into_inner(),
        accepted.into_inner()
    );
}

/// A `.npy` header entry: a key and a value, as written.
fn npy_entry() -> impl Strategy<Value = (&'static str, String)> {
    let descr = proptest::sample::select(
        &[
            "'|u1'",
            "'<u1'",
            "\"|u1\"",
            "'<f4'",
            "'>f4'",
            "'<f8'",
            "'>f8'",
            "'<i8'",
            "'<c8'",
            "'|b1'",
            "'<u2'",
            "'f4'",
            "[('a', '<f4')]",
        ][..],
    );
    let fortran = proptest::sample::select(&["False", "True", "0", "'False'"][..]);
    let shape = proptest::sample::select(
        &[
            "(2, 2, 3)",
            "(2, 1, 2, 3)",
            "(2,2,3,)",
            "( 2 , 2 , 3 )",
            "(1, 2, 3)",
            "(2, 3, 2)",
            "(12,)",
            "(2)",
            "(-2, 2, 3)",
            "()",
            "(0, 2, 3)",
            "(1_0, 2, 3)",
            "(2, 2, 3, 1)",
        ][..],
    );
    prop_oneof![
        4 => descr.prop_map(|v| ("descr", v.to_string())),
        4 => fortran.prop_map(|v| ("fortran_order", v.to_string())),
        4 => shape.prop_map(|v| ("shape", v.to_string())),
        1 => Just(("extra", "1".to_string())),
    ]
}

/// What numpy's `np.load` makes of a header's entries and its data: (shape, values in C order)
/// or `None` where numpy raises.
fn numpy_reads(entries: &[(&str, String)], data: &[u8]) -> Option<(Vec<usize>, Vec<f64>)> {
    // A dict literal: the last of duplicated keys wins.
    let get = |k: &str| {
        entries
            .iter()
            .rev()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.clone())
    };
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys != ["descr", "fortran_order", "shape"] {
        return None;
    }
    let fortran = match get("fortran_order")?.as_str() {
        "False" => false,
        "True" => true,
        _ => return None,
    };
    let shape_text = get("shape")?;
    let inner = shape_text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let parts: Vec<&str> = match parts.as_slice() {
        [""] => vec![],
        [one] => {
            let _ = one;
            return None; // `(2)` is an int, not a tuple
        }
        [rest @ .., ""] => rest.to_vec(),
        all => all.to_vec(),
    };
    let shape: Vec<i64> = parts
        .iter()
        .map(|p| p.replace('_', "").parse().ok())
        .collect::<Option<_>>()?;
    if shape.iter().any(|&d| d < 0) {
        return None;
    }
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let (width, big, kind) = match get("descr")?.trim_matches(['\'', '"']) {
        "|u1" | "<u1" => (1, false, 'u'),
        "<f4" => (4, false, 'f'),
        ">f4" => (4, true, 'f'),
        "<f8" => (8, false, 'f'),
        ">f8" => (8, true, 'f'),
        "<i8" => (8, false, 'i'),
        "<u2" => (2, false, 'u'),
        _ => return None, // complex, bool, structured, no byte order: not images here
    };
    let count: usize = shape.iter().product();
    if data.len() < count * width {
        return None;
    }
    let value = |c: &[u8]| -> f64 {
        let mut b = c.to_vec();
        if big {
            b.reverse();
        }
        match (kind, width) {
            ('u', 1) => b[0] as f64,
            ('u', 2) => u16::from_le_bytes([b[0], b[1]]) as f64,
            ('f', 4) => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            ('f', 8) => f64::from_le_bytes(b.try_into().unwrap()),
            _ => i64::from_le_bytes(b.try_into().unwrap()) as f64,
        }
    };
    let raw: Vec<f64> = data[..count * width].chunks(width).map(value).collect();
    let values = if fortran && shape.len() > 1 {
        // Reverse the axes: C order of the transposed array.
        let mut out = vec![0.0; count];
        for (c, v) in out.iter_mut().enumerate() {
            let mut rem = c;
            let mut idx = vec![0; shape.len()];
            for k in (0..shape.len()).rev() {
                idx[k] = rem % shape[k];
                rem /= shape[k];
            }
            let mut f = 0;
            for k in (0..shape.len()).rev() {
                f = f * shape[k] + idx[k];
            }
            *v = raw[f];
        }
        out
    } else {
        raw
    };
    Some((shape, values))
}

/// `.npy` files whose headers are Python literals with keys duplicated, missing, extra,
/// reordered, values of every kind, data exact, short or long: whatever cryptodl accepts, numpy
/// reads the same way (shape and every value); and a well-formed array is accepted.
#[test]
fn npy_headers_are_read_as_numpy_reads_them_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let t0 = Instant::now();
    let n = cases(10000);
    runner(n)
        .run(
            &(
                proptest::collection::vec(npy_entry(), 0..6),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..200),
                -2i32..3,
                any::<bool>(),
            ),
            |(mut entries, trailing_comma, seed, extra, canonical)| {
                if canonical {
                    // A well-formed header half the time, so acceptance is exercised.
                    entries = vec![
                        ("descr", "'|u1'".into()),
                        ("fortran_order", "False".into()),
                        ("shape", "(2, 2, 3)".into()),
                    ];
                }
                let mut header = String::from("{");
                for (k, v) in &entries {
                    header.push_str(&format!("'{k}': {v}, "));
                }
                if !trailing_comma && header.ends_with(", ") {
                    header.truncate(header.len() - 2);
                }
                header.push('}');
                let mut h = header.into_bytes();
                while !(10 + h.len() + 1).is_multiple_of(64) {
                    h.push(b' ');
                }
                h.push(b'\n');
                let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
                bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
                bytes.extend_from_slice(&h);
                // Data: values that are valid pixels for every dtype (floats in [0, 1]).
                let probe = numpy_reads(&entries, &[0u8; 4096]);
                let need = probe
                    .as_ref()
                    .map_or(12, |(s, _)| s.iter().product::<usize>());
                let descr = entries
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == "descr")
                    .map(|(_, v)| v.clone());
                let width = match descr.as_deref().map(|d| d.trim_matches(['\'', '"'])) {
                    Some("<f4" | ">f4") => 4,
                    Some("<f8" | ">f8" | "<i8") => 8,
                    Some("<u2") => 2,
                    _ => 1,
                };
                let big = descr.as_deref().is_some_and(|d| d.contains('>'));
                let mut data = Vec::new();
                for k in 0..need {
                    let s = f64::from(seed.get(k % seed.len().max(1)).copied().unwrap_or(7));
                    let mut b: Vec<u8> = match width {
                        4 => ((s / 255.0) as f32).to_le_bytes().to_vec(),
                        8 if descr.as_deref().is_some_and(|d| d.contains('i')) => {
                            (s as i64).to_le_bytes().to_vec()
                        }
                        8 => (s / 255.0).to_le_bytes().to_vec(),
                        2 => (s as u16).to_le_bytes().to_vec(),
                        _ => vec![s as u8],
                    };
                    if big {
                        b.reverse();
                    }
                    data.extend(b);
                }
                match extra {
                    e if e < 0 => {
                        data.truncate(data.len().saturating_sub(e.unsigned_abs() as usize));
                    }
                    e => data.extend(std::iter::repeat_n(9u8, e as usize)),
                }
                bytes.extend_from_slice(&data);
                std::fs::write(&path, &bytes).unwrap();
                let numpy = numpy_reads(&entries, &data);
                match images::load(&path, [1, 2, 3], Resize::Refuse, None) {
                    Ok(imgs) => {
                        let (shape, values) =
                            numpy.ok_or("cryptodl read a file numpy refuses").unwrap();
                        prop_assert_eq!(extra, 0, "trailing or missing bytes accepted");
                        prop_assert_eq!(imgs.len(), shape[0]);
                        let per: usize = 6;
                        for i in 0..imgs.len() {
                            let model = unit_model();
                            let got = imgs.normalized(&model, i);
                            for (k, g) in got.iter().enumerate() {
                                let want = values[i * per + k];
                                let want = if width == 1 { want / 255.0 } else { want };
                                prop_assert!((g - want).abs() < 1e-6, "{entries:?}: {g} vs {want}");
                            }
                        }
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        // Refusing a file numpy reads is allowed only where it is not
                        // canonical: a duplicate, a wrong length, or not images.
                        prop_assert!(!(canonical && extra == 0), "a canonical .npy was refused");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        ".npy fuzz: {n} files in {:.1} s: {} refused, {} accepted (each equal to numpy's reading), 0 panics",
        t0.elapsed().as_secs_f64(),
        refused.into_inner(),
        accepted.into_inner()
    );
}

/// A 1 x 2 x 3 model with mean 0 and std 1: `normalized` returns pixel / 255 (or the float).
fn unit_model() -> cryptodl::nn::model::Model {
    use cryptodl::nn::model::{Layer, Model, Normalization};
    Model {
        name: "unit".into(),
        input: [1, 2, 3],
        normalization: Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        },
        layers: vec![
            Layer::Flatten,
            Layer::Dense {
                weight: ndarray::Array2::zeros((2, 6)),
                bias: ndarray::Array1::zeros(2),
            },
        ],
        training: serde_json::json!({}),
    }
}

/// Sample images: grey, RGB and RGBA PNGs (one interlaced? the encoder writes none), a grey and
/// a colour JPEG, all 12 x 9.
fn sample_images() -> Vec<(&'static str, Vec<u8>)> {
    use image::{DynamicImage, ImageFormat};
    let grey = image::GrayImage::from_fn(12, 9, |x, y| image::Luma([(x * 19 + y * 5) as u8]));
    let rgb = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 90]));
    let rgba = image::RgbaImage::from_fn(12, 9, |x, y| image::Rgba([x as u8, y as u8, 7, 200]));
    let enc = |img: DynamicImage, f: ImageFormat| {
        let mut b = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut b), f).unwrap();
        b
    };
    vec![
        (
            "png",
            enc(DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png),
        ),
        (
            "png",
            enc(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        ),
        ("png", enc(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)),
        (
            "jpg",
            enc(DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg),
        ),
        ("jpg", enc(DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg)),
    ]
}

#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

/// PNG and JPEG files with a byte flipped, inserted or removed, or cut short: never a panic;
/// an accepted PNG has exactly the original pixels (CRCs and Adler-32 leave no other way); a
/// cut image is never accepted.
#[test]
fn damaged_png_and_jpeg_files() {
    let dir = tempfile::tempdir().unwrap();
    let samples = sample_images();
    let original: Vec<Vec<f64>> = samples
        .iter()
        .map(|(ext, b)| {
            let d = dir.path().join(format!("orig-{ext}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("x.{ext}")), b).unwrap();
            let imgs = images::load(&d, [3, 9, 12], Resize::Refuse, None).unwrap();
            imgs.normalized(&rgb_model(), 0)
        })
        .collect();
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let t0 = Instant::now();
    let n = cases(10000);
    let damage = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(a, x)| Damage::Flip(a, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Damage::Insert(a, x)),
        any::<usize>().prop_map(Damage::Remove),
        any::<usize>().prop_map(Damage::Cut),
    ];
    runner(n)
        .run(&(0..samples.len(), damage), |(which, d)| {
            let (ext, bytes) = &samples[which];
            let mut b = bytes.clone();
            match d {
                Damage::Flip(at, x) => {
                    let at = at % b.len();
                    b[at] ^= x;
                }
                Damage::Insert(at, x) => b.insert(at % (b.len() + 1), x),
                Damage::Remove(at) => {
                    b.remove(at % b.len());
                }
                Damage::Cut(at) => b.truncate(at % b.len()),
            }
            let sub = dir.path().join(format!("case-{ext}"));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("x.{ext}")), &b).unwrap();
            match images::load(&sub, [3, 9, 12], Resize::Refuse, None) {
                Ok(imgs) => {
                    prop_assert!(!matches!(d, Damage::Cut(_)), "a cut {ext} was accepted");
                    if *ext == "png" {
                        prop_assert_eq!(
                            &imgs.normalized(&rgb_model(), 0),
                            &original[which],
                            "a damaged PNG decoded to other pixels: {:?}",
                            d
                        );
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "PNG / JPEG fuzz: {n} damaged files in {:.1} s: {} refused, {} accepted (PNGs with their original pixels, no cut file), 0 panics",
        t0.elapsed().as_secs_f64(),
        refused.into_inner(),
        accepted.into_inner()
    );
}

/// A 3 x 9 x 12 model with mean 0 and std 1.
fn rgb_model() -> cryptodl::nn::model::Model {
    let mut m = unit_model();
    m.input = [3, 9, 12];
    m.normalization.mean = vec![0.0; 3];
    m.normalization.std = vec![1.0; 3];
    m.layers[1] = cryptodl::nn::model::Layer::Dense {
        weight: ndarray::Array2::zeros((2, 324)),
        bias: ndarray::Array1::zeros(2),
    };
    m
}
