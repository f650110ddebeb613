//! ONNX import (issue 12): a model PyTorch exported, and one using every supported op, give the
//! logits ONNX Runtime gives (fixtures committed beside the models: tests need no Python), run
//! encrypted like the reference, and every bad file is a clear error naming the node or file.

use std::path::{Path, PathBuf};

use cryptodl::nn::onnx::proto::{
    attribute_proto, tensor_proto, tensor_shape_proto, type_proto, AttributeProto, ModelProto,
    NodeProto, TensorProto, ValueInfoProto,
};
use cryptodl::nn::onnx::{import, import_bytes, ImportOptions, OnnxError};
use cryptodl::nn::reference;
use prost::Message;

mod common;
use common::job::{cryptodl, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// The pixels and ONNX Runtime's logits stored beside a fixture.
fn expected(name: &str) -> (Vec<Vec<u8>>, Vec<Vec<f64>>) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap();
    let rows = |k: &str| v[k].as_array().unwrap().clone();
    let pixels = rows("pixels")
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap() as u8)
                .collect()
        })
        .collect();
    let logits = rows("logits")
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect()
        })
        .collect();
    (pixels, logits)
}

/// The imported model's f64 logits against ONNX Runtime's: relative error (max |diff| over max
/// |logit|) per image.
fn worst_relative_error(onnx: &str, json: &str) -> f64 {
    let m = import(&fixture(onnx), &ImportOptions::default())
        .unwrap()
        .model;
    let (pixels, logits) = expected(json);
    let mut worst = 0.0f64;
    for (p, want) in pixels.iter().zip(&logits) {
        let got = reference::forward(&m, &reference::normalize(&m, p)).unwrap();
        let scale = want.iter().fold(1.0f64, |a, x| a.max(x.abs()));
        let diff = got
            .iter()
            .zip(want)
            .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
        worst = worst.max(diff / scale);
        assert_eq!(reference::argmax(&got), reference::argmax(want));
    }
    worst
}

#[test]
fn a_pytorch_model_gives_onnx_runtimes_logits() {
    let err = worst_relative_error(
        "pytorch-cryptonets.onnx",
        "pytorch-cryptonets.expected.json",
    );
    eprintln!("pytorch-cryptonets: worst relative logit error vs ONNX Runtime {err:.2e}");
    assert!(err < 1e-5, "{err}");
    let imported = import(
        &fixture("pytorch-cryptonets.onnx"),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(imported.normalization_from, "metadata");
    assert!(
        imported.producer.starts_with("pytorch"),
        "{}",
        imported.producer
    );
    assert_eq!(imported.model.training["dataset"], "fashion-mnist");
}

#[test]
fn every_supported_op_gives_onnx_runtimes_logits() {
    let err = worst_relative_error("every-op.onnx", "every-op.expected.json");
    eprintln!("every-op: worst relative logit error vs ONNX Runtime {err:.2e}");
    assert!(err < 1e-5, "{err}");
}

#[test]
fn an_imported_model_runs_encrypted_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pt.safetensors");
    let (ok, stdout, e) = cryptodl(&[
        "import",
        fixture("pytorch-cryptonets.onnx").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{e}");
    let r = json(&stdout);
    assert_eq!(r["preset"], "n8192", "{r}");
    let (ok, stdout, e) = cryptodl(&[
        "infer",
        "--model",
        out.to_str().unwrap(),
        "--limit",
        "64",
        "--json",
    ]);
    assert!(ok, "{e}");
    let r = json(&stdout);
    assert_eq!(r["disagreements_beyond_ties"], 0, "{r}");
    assert!(r["max_logit_error"].as_f64().unwrap() < 1e-2, "{r}");
}

/// The every-op model, decoded for editing.
fn every_op() -> ModelProto {
    ModelProto::decode(std::fs::read(fixture("every-op.onnx")).unwrap().as_slice()).unwrap()
}

fn import_edited(m: &ModelProto, opts: &ImportOptions) -> Result<(), OnnxError> {
    import_bytes(&m.encode_to_vec(), Path::new("edited.onnx"), None, opts).map(|_| ())
}

/// Imports `m` expecting an error holding each of `want`.
fn refused(m: &ModelProto, want: &[&str]) {
    let e = import_edited(m, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    for w in want {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
}

fn node_mut<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut cryptodl::nn::onnx::proto::NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name() == name)
        .unwrap()
}

#[test]
fn bad_onnx_models_are_clear_errors_naming_the_node() {
    let opts = ImportOptions::default();
    let check = refused;
    assert!(import_edited(&every_op(), &opts).is_ok());
    // An activation that is not a polynomial.
    let mut m = every_op();
    let n = node_mut(&mut m, "/act1/pow");
    n.op_type = Some("Relu".into());
    n.input.truncate(1);
    check(
        &m,
        &["Relu at node /act1/pow", "replace it by a polynomial"],
    );
    // Max pooling.
    let mut m = every_op();
    node_mut(&mut m, "/pool").op_type = Some("MaxPool".into());
    check(&m, &["MaxPool at node /pool", "average pooling"]);
    // A skip connection.
    let mut m = every_op();
    node_mut(&mut m, "/act2/add2").input[1] = "d".into();
    check(&m, &["/act2/add2", "skip connection"]);
    // A degree-4 activation.
    let mut m = every_op();
    node_mut(&mut m, "/act2/pow").input[1] = "eight".into();
    check(&m, &["/act2/pow", "exponent must be 1, 2 or 3"]);
    // Two inputs.
    let mut m = every_op();
    let mut second: ValueInfoProto = m.graph.as_ref().unwrap().input[0].clone();
    second.name = Some("mask".into());
    m.graph.as_mut().unwrap().input.push(second);
    check(&m, &["2 inputs (image, mask)"]);
    // No normalisation anywhere.
    let mut m = every_op();
    m.metadata_props.clear();
    check(&m, &["no input normalisation", "--mean"]);
    // A flat input needs --input-shape; a wrong one is refused.
    let mut m = every_op();
    if let Some(type_proto::Value::TensorType(t)) = &mut m.graph.as_mut().unwrap().input[0]
        .r#type
        .as_mut()
        .unwrap()
        .value
    {
        t.shape.as_mut().unwrap().dim.truncate(1);
        t.shape
            .as_mut()
            .unwrap()
            .dim
            .push(tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(784)),
                ..Default::default()
            });
    }
    check(&m, &["pass --input-shape C,H,W"]);
    let e = import(
        &fixture("every-op.onnx"),
        &ImportOptions {
            input_shape: Some([3, 32, 32]),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--input-shape 3,32,32 does not match the graph's input ? x 1 x 28 x 28"),
        "{e}"
    );
    // Not ONNX at all, or cut short.
    let bytes = std::fs::read(fixture("every-op.onnx")).unwrap();
    for bad in [
        &bytes[..bytes.len() / 2],
        b"not a protobuf at all".as_slice(),
    ] {
        let e = import_bytes(bad, Path::new("cut.onnx"), None, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.onnx: not an ONNX model"), "{e}");
    }
}

#[test]
fn external_weights_must_be_beside_the_model_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("pytorch-cryptonets.onnx");
    std::fs::copy(fixture("pytorch-cryptonets.onnx"), &onnx).unwrap();
    let e = import(&onnx, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pytorch-cryptonets.onnx.data") && e.contains("No such file"),
        "{e}"
    );
    let data = std::fs::read(fixture("pytorch-cryptonets.onnx.data")).unwrap();
    std::fs::write(
        dir.path().join("pytorch-cryptonets.onnx.data"),
        &data[..data.len() / 2],
    )
    .unwrap();
    let e = import(&onnx, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lies past the end")
            && e.contains("keep MODEL.onnx and its .data file together"),
        "{e}"
    );
    // The CLI writes nothing on an error.
    let out = dir.path().join("x.safetensors");
    let (ok, _, e) = cryptodl(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("lies past the end"), "{e}");
    assert!(!out.exists());
    // A FIFO or a directory is not read.
    let (ok, _, e) = cryptodl(&[
        "import",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("not a regular file"), "{e}");
}

/// An initializer of the every-op model, for editing.
fn init_mut<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name() == name)
        .unwrap()
}

fn attr_mut<'a>(m: &'a mut ModelProto, node: &str, name: &str) -> &'a mut AttributeProto {
    node_mut(m, node)
        .attribute
        .iter_mut()
        .find(|a| a.name() == name)
        .unwrap()
}

fn scalar(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(tensor_proto::DataType::Float as i32),
        float_data: vec![v],
        ..Default::default()
    }
}

/// Issue 22, class 3: what the ONNX checker refuses, or what would mean something else, is
/// refused naming what is wrong; a model declaring more memory than any encrypted model uses is
/// refused with its size before anything is allocated.
#[test]
fn models_the_onnx_checker_refuses_are_refused() {
    let opts = ImportOptions::default();
    // Opsets this build does not implement.
    for v in [0, -3, 1, 6, 99] {
        let mut m = every_op();
        m.opset_import[0].version = Some(v);
        refused(&m, &[&format!("opset {v}"), "opsets 7 to 26"]);
    }
    let mut m = every_op();
    let again = m.opset_import[0].clone();
    m.opset_import.push(again);
    refused(&m, &["imported twice"]);
    let mut m = every_op();
    m.ir_version = Some(99);
    refused(&m, &["IR version 99"]);
    // An initializer defined twice (with other values), two nodes writing one tensor.
    let mut m = every_op();
    let mut twin = init_mut(&mut m, "half").clone();
    twin.float_data = vec![7.0];
    twin.raw_data = None;
    m.graph.as_mut().unwrap().initializer.push(twin);
    refused(&m, &["initializer half is defined twice"]);
    let mut m = every_op();
    node_mut(&mut m, "/act1/neg").output[0] = "b2".into();
    refused(&m, &["/act1/neg", "output b2 is already defined", "SSA"]);
    // A tensor used before the node that writes it.
    let mut m = every_op();
    m.graph.as_mut().unwrap().node.swap(0, 1);
    refused(&m, &["input c is not defined before this node"]);
    // Attributes: NaN and infinite Gemm alpha / beta, unknown, wrong type, twice.
    for (name, v) in [("alpha", f32::NAN), ("beta", f32::INFINITY)] {
        let mut m = every_op();
        attr_mut(&mut m, "/fc2", name).f = Some(v);
        refused(&m, &["/fc2", &format!("attribute {name} is"), "finite"]);
    }
    let mut m = every_op();
    attr_mut(&mut m, "/conv", "strides").name = Some("stride".into());
    refused(&m, &["/conv", "attribute stride is not one of Conv's"]);
    let mut m = every_op();
    let a = attr_mut(&mut m, "/conv", "strides");
    a.r#type = Some(attribute_proto::AttributeType::Floats as i32);
    a.floats = vec![2.0, 2.0];
    a.ints.clear();
    refused(&m, &["attribute strides must be INTS"]);
    let mut m = every_op();
    let pads = attr_mut(&mut m, "/conv", "pads").clone();
    node_mut(&mut m, "/conv").attribute.push(pads);
    refused(&m, &["attribute pads is given twice"]);
    // Batch norm outside its domain: a negative variance, a zero one with epsilon 0.
    let mut m = every_op();
    init_mut(&mut m, "bn1_var").float_data = vec![1.0, -0.5, 1.0, 1.0];
    init_mut(&mut m, "bn1_var").raw_data = None;
    refused(&m, &["/bn1", "variance of channel 1 is -0.5"]);
    let mut m = every_op();
    init_mut(&mut m, "bn1_var").float_data = vec![1.0, 0.0, 1.0, 1.0];
    init_mut(&mut m, "bn1_var").raw_data = None;
    attr_mut(&mut m, "/bn1", "epsilon").f = Some(0.0);
    refused(&m, &["/bn1", "variance of channel 1 is 0 with epsilon 0"]);
    // Constants whose folding overflows f64.
    let mut m = every_op();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(scalar("huge", 3e38));
    g.initializer.push(scalar("huge2", 3e38));
    let at = g.node.iter().position(|n| n.name() == "/act1/div").unwrap();
    g.node.insert(
        at,
        NodeProto {
            name: Some("/fold".into()),
            op_type: Some("Mul".into()),
            input: vec!["huge".into(), "huge2".into()],
            output: vec!["h2".into()],
            ..Default::default()
        },
    );
    g.node.insert(
        at + 1,
        NodeProto {
            name: Some("/fold2".into()),
            op_type: Some("Pow".into()),
            input: vec!["h2".into(), "h2".into()],
            output: vec!["h4".into()],
            ..Default::default()
        },
    );
    node_mut(&mut m, "/act1/div").input[1] = "h4".into();
    let e = import_edited(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("not a finite number"), "{e}");
    // A 300-byte model declaring a 65536 x 65536 input, and one declaring a huge tensor.
    let mut m = every_op();
    if let Some(type_proto::Value::TensorType(t)) = &mut m.graph.as_mut().unwrap().input[0]
        .r#type
        .as_mut()
        .unwrap()
        .value
    {
        for d in &mut t.shape.as_mut().unwrap().dim[2..] {
            d.value = Some(tensor_shape_proto::dimension::Value::DimValue(65536));
        }
    }
    refused(&m, &["1 x 65536 x 65536", "over the limit"]);
    let mut m = every_op();
    let t = init_mut(&mut m, "mm_w");
    t.dims = vec![1 << 20, 1 << 20];
    refused(&m, &["declare", "over the limit"]);
}

/// Issue 22, class 2: external data is read only from inside the model's directory once every
/// link is resolved: a linked file or directory that leads out is refused, a link inside is
/// fine.
#[test]
fn external_data_through_links_that_lead_out_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (dir, outside) = (root.path().join("model"), root.path().join("elsewhere"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let onnx = dir.join("pytorch-cryptonets.onnx");
    std::fs::copy(fixture("pytorch-cryptonets.onnx"), &onnx).unwrap();
    let data = outside.join("weights.data");
    std::fs::copy(fixture("pytorch-cryptonets.onnx.data"), &data).unwrap();
    // A linked file.
    std::os::unix::fs::symlink(&data, dir.join("pytorch-cryptonets.onnx.data")).unwrap();
    let e = import(&onnx, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside") && e.contains("symbolic links"), "{e}");
    // A linked directory on the way (the location names a file in it).
    let bytes = std::fs::read(&onnx).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key() == "location" {
                e.value = Some("sub/weights.data".into());
            }
        }
    }
    std::fs::remove_file(dir.join("pytorch-cryptonets.onnx.data")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();
    std::fs::write(&onnx, m.encode_to_vec()).unwrap();
    let e = import(&onnx, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside"), "{e}");
    // A link that stays inside is followed.
    std::fs::remove_file(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(&data, dir.join("real.data")).unwrap();
    std::os::unix::fs::symlink(dir.join("real.data"), dir.join("sub/weights.data")).unwrap();
    let ok = import(&onnx, &ImportOptions::default()).unwrap();
    assert_eq!(ok.external_files.len(), 1);
    // The CLI: `--out` equal to the model it imports is refused, the model kept.
    let before = std::fs::read(&onnx).unwrap();
    let (ok, _, e) = cryptodl(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(
        !ok && e.contains("which this command reads (the ONNX model)"),
        "{e}"
    );
    assert_eq!(before, std::fs::read(&onnx).unwrap());
}

/// Issue 22, class 8: `--input-shape C,H,W` as the README writes it (and as three values).
#[test]
fn input_shape_is_taken_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let onnx = fixture("every-op.onnx");
    for shape in [&["1,28,28"][..], &["1", "28", "28"][..]] {
        let mut args = vec![
            "import",
            onnx.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.push("--input-shape");
        args.extend(shape);
        let (ok, _, e) = cryptodl(&args);
        assert!(ok, "{shape:?}: {e}");
    }
    let (ok, _, e) = cryptodl(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--input-shape",
        "28,28",
    ]);
    assert!(!ok && e.contains("--input-shape takes 3 sizes"), "{e}");
}

/// Found from outside: an AveragePool without `strides` strides by 1 (the ONNX default), not
/// by its kernel; and duplicated cryptodl metadata is refused, not resolved silently.
#[test]
fn onnx_defaults_and_duplicated_metadata_mean_what_onnx_says() {
    let opts = ImportOptions::default();
    let mut m = every_op();
    node_mut(&mut m, "/pool")
        .attribute
        .retain(|a| a.name() != "strides");
    // A 2 x 2 window striding by 1 over 4 x 28 x 28 maps leaves 4 x 27 x 27 = 2916 values,
    // which the next layer's 784-input weight does not take.
    let e = import_edited(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("2916"), "{e}");
    let mut m = every_op();
    let mean = m
        .metadata_props
        .iter()
        .find(|p| p.key() == "cryptodl.mean")
        .unwrap()
        .clone();
    let mut twice = mean.clone();
    twice.value = Some("0.9".into());
    m.metadata_props.push(twice);
    let e = import_edited(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("cryptodl.mean is given twice"), "{e}");
    // Unless the flags replace it.
    let flags = ImportOptions {
        mean: Some(vec![0.286]),
        std: Some(vec![0.353]),
        ..Default::default()
    };
    assert!(import_edited(&m, &flags).is_ok());
}
