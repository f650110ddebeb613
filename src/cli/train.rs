//! `cryptodl train`: train a CNN with polynomial (or standard) activations and export the model.

use crate::nn::activation::{ActFn, Polynomial};
use crate::nn::arch::{ActChoice, ArchSpec};
use crate::nn::dataset::DatasetKind;
use crate::nn::fit::{fit_polynomial, FitMethod};
use crate::nn::train::{train, TrainConfig};
use std::path::PathBuf;

/// Arguments of `cryptodl train`.
///
/// Example (the CryptoNets net with a degree-2 least-squares fit of ReLU on [-4, 4]):
/// `cryptodl train --dataset fashion-mnist --arch cryptonets --act poly2 --epochs 10 --out cn.safetensors`
///
/// Named architectures put a batch norm before every activation (folded away at export);
/// `--arch FILE.json` takes a spec such as
/// `{"name":"tiny","layers":[{"type":"conv2d","out_channels":4,"kernel":5,"stride":2},
/// {"type":"batch_norm"},{"type":"act"},{"type":"avg_pool","kernel":2},{"type":"flatten"},
/// {"type":"dense","out":10}]}` where `act` layers take the `--act` activation.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  cryptodl train --arch cryptonets --act relu --epochs 15 --out cn-relu.safetensors\n  cryptodl train --arch cryptodl --act poly2 --fit minimax --interval 4 --epochs 12 --out cdl.safetensors\n  cryptodl train --arch my-net.json --act poly3 --trainable-coeffs --epochs 5 --out my.safetensors\n\nNamed architectures put a batch norm before every activation; it is folded into the preceding\nconv/dense layer at export. A JSON spec lists layers: conv2d {out_channels, kernel, stride, padding},\navg_pool {kernel, stride}, dense {out}, flatten, batch_norm, act (the --act activation),\nstd {fn}, poly {coeffs, trainable}."
)]
pub struct TrainArgs {
    /// fashion-mnist (default location: /usr/share/datasets/fashion-mnist), mnist or cifar10.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: DatasetKind,
    /// Directory holding the dataset files (IDX, raw or .gz; CIFAR-10 binary batches).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cryptonets, hcnn, cryptodl, mnist (the MNIST headline net), or a path to a JSON
    /// architecture spec.
    #[arg(long, default_value = "cryptonets")]
    arch: String,
    /// Activation: relu, sigmoid, tanh, gelu, silu (non-private baselines) or polyD (a degree-D
    /// polynomial fitted to --fit-fn with --fit on [-interval, interval]).
    #[arg(long, default_value = "poly2")]
    act: String,
    /// Fitting method for polyD: legendre, chebyshev, minimax or derivative.
    #[arg(long, default_value = "legendre")]
    fit: FitMethod,
    /// Half-width of the fitting interval for polyD (batch norm keeps activation inputs near
    /// N(0, 1), so a small interval gives a strongly non-linear polynomial there).
    #[arg(long, default_value_t = 4.0)]
    interval: f64,
    /// Function the polynomial approximates.
    #[arg(long, default_value = "relu")]
    fit_fn: ActFn,
    /// Train the polynomial coefficients too (initialised from the fit; one set per layer).
    #[arg(long)]
    trainable_coeffs: bool,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (AdamW with cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// AdamW (decoupled) weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Clip the global gradient norm to this value (0 turns clipping off).
    #[arg(long, default_value_t = 5.0)]
    clip: f64,
    /// Augment the training images, afresh every epoch: a random shift (--shift), a random
    /// horizontal flip (not for mnist: a flipped digit is another digit, or none), and with
    /// --rotate / --scale a small random rotation and change of size (regularises the larger
    /// nets; off by default).
    #[arg(long)]
    augment: bool,
    /// Largest random shift of --augment, in pixels each way.
    #[arg(long, default_value_t = 2)]
    shift: usize,
    /// Largest random rotation of --augment, in degrees each way (e.g. 10 for digits).
    #[arg(long, default_value_t = 0.0)]
    rotate: f64,
    /// Largest random change of size of --augment, relative (e.g. 0.1: 90% to 110%).
    #[arg(long, default_value_t = 0.0)]
    scale: f64,
    /// Flip images horizontally in --augment: `auto` (yes, except for mnist), `yes` or `no`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
    flip: String,
    /// Dropout probability on the inputs of every dense layer while training (0 = off; the
    /// exported model has no dropout, so the encrypted network is unchanged).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Label smoothing of the cross-entropy loss (0 = off; e.g. 0.1).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Seed for initialisation and shuffling (same seed, same model).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use only the first N training images (quick experiments).
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Output model file (.safetensors; written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses `--act`.
fn act_choice(args: &TrainArgs) -> anyhow::Result<(ActChoice, Option<Polynomial>)> {
    if let Some(d) = args.act.strip_prefix("poly") {
        let degree: usize = d.parse().map_err(|_| {
            anyhow::anyhow!(
                "--act {}: expected polyD with D a degree, e.g. poly2",
                args.act
            )
        })?;
        let fit = crate::nn::fit::fit(args.fit_fn, degree, args.interval, args.fit, 1.0)?;
        let poly = fit_polynomial(args.fit_fn, degree, args.interval, args.fit);
        debug_assert_eq!(poly.coeffs, fit.coefficients);
        Ok((
            ActChoice::Poly {
                poly: poly.clone(),
                trainable: args.trainable_coeffs,
            },
            Some(poly),
        ))
    } else {
        let func: ActFn = args
            .act
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--act: {e} or polyD"))?;
        Ok((ActChoice::Std { func }, None))
    }
}

/// Runs `cryptodl train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (act, poly) = act_choice(&args)?;
    let arch = ArchSpec::by_name(&args.arch)?;
    // --out is checked before training (minutes), against what the training reads.
    let mut reads = crate::io::ReadSet::new();
    reads.file(&args.arch, "--arch");
    if let Some(dir) = args.dataset.files_dir(args.data_dir.as_deref()) {
        reads.dir_files(dir, "a file of the dataset");
    }
    reads.check_model_output(&args.out, "--out")?;
    let splits = args.dataset.load(args.data_dir.as_deref())?;
    let tr = match args.limit_train {
        Some(n) => splits.train.take(n),
        None => splits.train,
    };
    let te = match args.limit_test {
        Some(n) => splits.test.take(n),
        None => splits.test,
    };
    let input = arch.input.unwrap_or(tr.shape);
    arch.shapes(input)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        clip: args.clip,
        seed: args.seed,
        augment: args.augment,
        max_shift: args.shift,
        flip: match args.flip.as_str() {
            "yes" => true,
            "no" => false,
            _ => args.dataset != DatasetKind::Mnist,
        },
        max_rotate: args.rotate,
        max_scale: args.scale,
        dropout: args.dropout,
        label_smoothing: args.label_smoothing,
    };
    if !args.json {
        eprintln!(
            "training {} with {}{} on {} ({} train / {} test images), {} epochs",
            arch.name,
            args.act,
            poly.as_ref()
                .map(|p| format!(
                    " = {} ({} fit of {} on [-{}, {}]{})",
                    p,
                    args.fit,
                    args.fit_fn,
                    args.interval,
                    args.interval,
                    if args.trainable_coeffs {
                        ", trainable"
                    } else {
                        ""
                    }
                ))
                .unwrap_or_default(),
            args.dataset,
            tr.len(),
            te.len(),
            args.epochs
        );
    }
    let progress = !args.json;
    let (mut model, report) = train(&arch, &act, &args.act, &tr, &te, &cfg, progress, |s| {
        eprintln!(
            "epoch {:>3}: train loss {:.4}  test accuracy {:.2}%  ({:.1} s)",
            s.epoch,
            s.train_loss,
            100.0 * s.test_accuracy,
            s.seconds
        );
    })?;
    if let serde_json::Value::Object(m) = &mut model.training {
        m.insert("dataset".into(), serde_json::json!(args.dataset.name()));
        if poly.is_some() {
            m.insert("fit".into(), serde_json::json!({"fn": args.fit_fn, "method": args.fit, "interval": args.interval}));
        }
        m.insert(
            "reference_accuracy".into(),
            serde_json::json!(report.reference_accuracy),
        );
    }
    model.save(&args.out)?;
    if args.json {
        return super::output::print_json(&report);
    }
    println!(
        "{} + {}: test accuracy {:.2}% (candle) / {:.2}% (f64 reference, folded model), argmax agreement {:.3}%, max logit diff {:.2e}",
        report.arch,
        report.act,
        100.0 * report.test_accuracy,
        100.0 * report.reference_accuracy,
        100.0 * report.argmax_agreement,
        report.max_logit_diff
    );
    println!(
        "{} trainable parameters, largest layer {} values, trained in {:.1} s; model written to {}",
        report.params,
        report.max_layer_values,
        report.train_seconds,
        args.out.display()
    );
    for (i, a) in report.activations.iter().enumerate() {
        if let crate::nn::model::Activation::Poly { coeffs } = a {
            println!("activation {i}: {coeffs}");
        }
    }
    Ok(())
}
