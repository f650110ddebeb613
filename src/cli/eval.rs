//! `cryptodl eval`: run a trained model in plaintext f64 exactly as the encrypted path computes it.

use crate::nn::dataset::DatasetKind;
use crate::nn::model::{Layer, Model};
use crate::nn::reference;
use crate::nn::train::{candle_forward, compare_logits};
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `cryptodl eval`.
///
/// Runs the f64 reference (folded batch norm, sum pools, the model's polynomials, the HE order of
/// operations) on the test split, prints the accuracy and, per activation layer, the range of its
/// inputs next to the polynomial's fit interval, and cross-checks against candle's own forward
/// pass of the same model.
///
/// Example: `cryptodl eval --model cn.safetensors`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  cryptodl eval --model cn.safetensors --json\n\nThe activation ranges tell whether the fit interval covered the inputs each activation saw; the\ncandle line cross-checks the f64 reference against an independent forward pass."
)]
pub struct EvalArgs {
    /// Model file written by `cryptodl train`.
    #[arg(long)]
    model: PathBuf,
    /// Dataset (default: the one the model was trained on, else fashion-mnist / cifar10 by shape).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Evaluate only the first N test images (at least 1).
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Skip the cross-check against candle's forward pass.
    #[arg(long)]
    no_candle: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct RangeOut {
    layer: usize,
    min: f64,
    max: f64,
    fit_interval: Option<f64>,
    covered: Option<bool>,
}

#[derive(Serialize)]
struct EvalOut {
    model: String,
    arch: String,
    dataset: String,
    samples: usize,
    accuracy: f64,
    max_layer_values: usize,
    activation_ranges: Vec<RangeOut>,
    candle_argmax_agreement: Option<f64>,
    candle_max_logit_diff: Option<f64>,
}

/// The dataset of `model`: `dataset` if given, else the one the model was trained on, else
/// fashion-mnist / cifar10 by input shape.
pub(super) fn dataset_of(
    model: &Model,
    dataset: Option<DatasetKind>,
) -> anyhow::Result<DatasetKind> {
    Ok(match dataset {
        Some(k) => k,
        None => match model.training.get("dataset").and_then(|v| v.as_str()) {
            Some(s) => s.parse().map_err(anyhow::Error::msg)?,
            None if model.input == [3, 32, 32] => DatasetKind::Cifar10,
            None => DatasetKind::FashionMnist,
        },
    })
}

/// The test split for `model` ([`dataset_of`]); the first `limit` images; checked against the
/// model's input shape.
pub(super) fn test_set(
    model: &Model,
    dataset: Option<DatasetKind>,
    data_dir: Option<&std::path::Path>,
    limit: Option<usize>,
) -> anyhow::Result<(DatasetKind, crate::nn::dataset::Dataset)> {
    let kind = dataset_of(model, dataset)?;
    let test = kind.load_test(data_dir)?;
    let test = match limit {
        Some(n) => test.take(n),
        None => test,
    };
    if test.shape != model.input {
        anyhow::bail!(
            "model expects inputs {:?} (c, h, w) but {kind} images are {:?}",
            model.input,
            test.shape
        );
    }
    Ok((kind, test))
}

/// Runs `cryptodl eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let limit = args.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let (kind, test) = test_set(&model, args.dataset, args.data_dir.as_deref(), limit)?;
    if test.is_empty() {
        anyhow::bail!("no test images to evaluate");
    }
    let rep = reference::evaluate(&model, &test)?;
    let interval = model
        .training
        .get("fit")
        .and_then(|f| f.get("interval"))
        .and_then(|v| v.as_f64());
    let ranges: Vec<RangeOut> = rep
        .activation_ranges
        .iter()
        .map(|r| {
            let poly = matches!(
                model.layers.get(r.layer),
                Some(Layer::Act(crate::nn::Activation::Poly { .. }))
            );
            let iv = if poly { interval } else { None };
            RangeOut {
                layer: r.layer,
                min: r.min,
                max: r.max,
                fit_interval: iv,
                covered: iv.map(|a| r.min >= -a && r.max <= a),
            }
        })
        .collect();
    let (agree, diff) = if args.no_candle {
        (None, None)
    } else {
        let c = candle_forward(&model, &test)?;
        let (a, d) = compare_logits(&rep.logits, &c);
        (Some(a), Some(d))
    };
    let out = EvalOut {
        model: args.model.display().to_string(),
        arch: model.name.clone(),
        dataset: kind.name().into(),
        samples: rep.samples,
        accuracy: rep.accuracy,
        max_layer_values: model.max_values(),
        activation_ranges: ranges,
        candle_argmax_agreement: agree,
        candle_max_logit_diff: diff,
    };
    if args.json {
        return super::output::print_json(&out);
    }
    println!(
        "{} ({}): f64 reference accuracy {:.2}% on {} {} test images",
        out.model,
        out.arch,
        100.0 * out.accuracy,
        out.samples,
        out.dataset
    );
    println!(
        "largest layer: {} values (= ciphertexts in batch packing)",
        out.max_layer_values
    );
    for r in &out.activation_ranges {
        let cov = match (r.fit_interval, r.covered) {
            (Some(a), Some(true)) => format!("inside the fit interval [-{a}, {a}]"),
            (Some(a), Some(false)) => format!(
                "beyond the fit interval [-{a}, {a}] (the model computes the polynomial itself, so this only \
                 matters for how far the polynomial departs from the function it replaced)"
            ),
            _ => String::new(),
        };
        println!(
            "activation at layer {:>2}: inputs in [{:.3}, {:.3}] {cov}",
            r.layer, r.min, r.max
        );
    }
    if let (Some(a), Some(d)) = (out.candle_argmax_agreement, out.candle_max_logit_diff) {
        println!("candle forward pass (f64): same argmax on {:.3}% of samples, max |logit difference| {d:.3e}", 100.0 * a);
    }
    Ok(())
}
