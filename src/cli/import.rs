//! `cryptodl import`: an ONNX model (from PyTorch and others) to a cryptodl model file.

use std::path::PathBuf;

use serde::Serialize;

use super::output::print_json;
use crate::ckks::PRESETS;
use crate::io::ReadSet;
use crate::nn::model::Model;
use crate::nn::onnx::{import, ImportOptions};
use crate::sched::Plan;

/// Arguments of `cryptodl import`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Maps Conv, Gemm, MatMul + Add, AveragePool / GlobalAveragePool, Flatten / Reshape, \
BatchNormalization (folded into the layer before), Identity, Dropout and polynomial activations \
written as arithmetic on the previous tensor (x * x, a * x^2 + b * x + c, Pow(x, 3), ...) to a \
cryptodl model. Anything else is refused with the node's name and what to use instead (e.g. \
`Relu at node /act1: replace it by a polynomial before export`); so is a graph that is not a \
chain (two inputs, skip connections).

The input normalisation (per channel, of pixel / 255, as in the training transform) comes from \
--mean / --std, or from the model's metadata cryptodl.mean / cryptodl.std (the PyTorch example \
writes them). Weights stored as external data (MODEL.onnx.data, what recent PyTorch writes) are \
read from beside the model.

Example (examples/pytorch/train_export.py trains and exports one):
  cryptodl import cryptonets.onnx --out cryptonets.safetensors
  cryptodl import mlp.onnx --input-shape 1,28,28 --mean 0.286 --std 0.353 --out mlp.safetensors

Supported ops: Conv, Gemm, MatMul, Add, Sub, Mul, Div, Neg, Pow, BatchNormalization, \
AveragePool, GlobalAveragePool, Flatten, Reshape, Identity, Dropout, Constant.")]
pub struct ImportArgs {
    /// The ONNX model.
    onnx: PathBuf,
    /// The cryptodl model to write (.safetensors; written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Input channels, height and width, for a graph whose input is flat or has symbolic sizes:
    /// `1,28,28` (or `1 28 28`).
    #[arg(long, value_name = "C,H,W", value_delimiter = ',', num_args = 1..=3)]
    input_shape: Option<Vec<usize>>,
    /// Per-channel mean of pixel / 255 the model was trained with (one value, or one per channel).
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        requires = "std"
    )]
    mean: Option<Vec<f64>>,
    /// Per-channel standard deviation (one value, or one per channel).
    #[arg(long, value_delimiter = ',', requires = "mean")]
    std: Option<Vec<f64>>,
    /// The model's name (default: the metadata cryptodl.name, else the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ImportReport {
    model: String,
    out: String,
    producer: String,
    opset: i64,
    nodes: usize,
    input: [usize; 3],
    normalization_from: &'static str,
    mean: Vec<f64>,
    std: Vec<f64>,
    layers: Vec<String>,
    digest: String,
    levels_needed: usize,
    /// The smallest 128-bit preset deep enough to run it encrypted.
    preset: Option<String>,
}

/// One line per layer.
fn describe(model: &Model) -> Vec<String> {
    model
        .meta()
        .layers
        .iter()
        .map(|l| serde_json::to_string(l).unwrap_or_default())
        .collect()
}

/// Runs `cryptodl import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let input_shape = match args.input_shape.as_deref() {
        None => None,
        Some(&[c, h, w]) => Some([c, h, w]),
        Some(v) => anyhow::bail!(
            "--input-shape takes 3 sizes, C,H,W (e.g. --input-shape 1,28,28); {} given",
            v.len()
        ),
    };
    if input_shape.is_some_and(|s| s.contains(&0)) {
        anyhow::bail!("--input-shape: every size must be at least 1");
    }
    // --out never replaces the model being imported (nor its external data, checked again
    // once the import has read it), a key or a job file.
    let mut reads = ReadSet::new();
    reads.file(&args.onnx, "the ONNX model");
    reads.check_model_output(&args.out, "--out")?;
    let opts = ImportOptions {
        input_shape,
        mean: args.mean.clone(),
        std: args.std.clone(),
        name: args.name.clone(),
    };
    let imported = import(&args.onnx, &opts)?;
    for f in &imported.external_files {
        reads.file(f, "the ONNX model's external data");
    }
    reads.check_model_output(&args.out, "--out")?;
    let model = imported.model;
    let plan = Plan::compile(&model)?;
    let preset = PRESETS
        .iter()
        .find(|p| p.secure && p.q_bits.len() > plan.levels_needed())
        .map(|p| p.name.to_string());
    model.save(&args.out)?;
    let report = ImportReport {
        model: model.name.clone(),
        out: args.out.display().to_string(),
        producer: imported.producer,
        opset: imported.opset,
        nodes: imported.nodes,
        input: model.input,
        normalization_from: imported.normalization_from,
        mean: model.normalization.mean.clone(),
        std: model.normalization.std.clone(),
        layers: describe(&model),
        digest: hex::encode(model.digest()),
        levels_needed: plan.levels_needed(),
        preset,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "imported {} ({} nodes, {}, opset {}) into {}: {} layers, input {}x{}x{}, normalisation from {}",
        report.model,
        report.nodes,
        report.producer,
        report.opset,
        report.out,
        report.layers.len(),
        report.input[0],
        report.input[1],
        report.input[2],
        report.normalization_from
    );
    for l in &report.layers {
        println!("  {l}");
    }
    match &report.preset {
        Some(p) => println!(
            "{} levels: runs encrypted at --preset {p} (`cryptodl eval --model {}` checks it in plaintext)",
            report.levels_needed, report.out
        ),
        None => println!(
            "{} levels: deeper than every preset; use fewer activations",
            report.levels_needed
        ),
    }
    Ok(())
}
