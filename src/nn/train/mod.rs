//! Training with candle on the CPU (convolutions as gather + GEMM), export to a folded [`Model`],
//! and candle's own forward pass of an exported model (cross-check of the f64 reference).

use super::activation::{ActFn, Polynomial};
use super::arch::{ActChoice, ArchError, ArchSpec, LayerSpec, Shape};
use super::dataset::Dataset;
use super::model::{Activation, Layer, Model, ModelError, Normalization, TrainedLayer};
use super::reference;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use ndarray::{Array1, Array2, Array4};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::time::Instant;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Bad architecture.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Folding / export failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The dataset does not fit the architecture.
    #[error("dataset: {0}")]
    Data(String),
    /// A training option out of its range.
    #[error("{0}")]
    Config(String),
    /// Loss became NaN or infinite.
    #[error("training diverged at epoch {epoch} (loss {loss}); try a lower --lr, a smaller --interval, or --act relu to check the setup")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// The loss.
        loss: f32,
    },
    /// candle error.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Training hyper-parameters.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay to 0).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    /// Seed of the weight init and the shuffling.
    pub seed: u64,
    /// Data augmentation: a random shift of up to `max_shift` pixels, a random horizontal flip
    /// (if `flip`), a random rotation of up to `max_rotate` degrees and scaling by up to
    /// `max_scale` (relative), drawn afresh for every image of every epoch.
    pub augment: bool,
    /// Largest shift (pixels, each direction) of the augmentation.
    pub max_shift: usize,
    /// Random horizontal flips (right for clothes and objects, wrong for digits).
    pub flip: bool,
    /// Largest rotation, in degrees each way (0 = none).
    pub max_rotate: f64,
    /// Largest relative change of size (0.1 = 90% to 110%; 0 = none).
    pub max_scale: f64,
    /// Dropout probability on the inputs of every dense layer while training (0 = off).
    pub dropout: f64,
    /// Label smoothing of the cross-entropy loss (0 = plain cross entropy).
    pub label_smoothing: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            clip: 5.0,
            seed: 1,
            augment: false,
            max_shift: 2,
            flip: true,
            max_rotate: 0.0,
            max_scale: 0.0,
            dropout: 0.0,
            label_smoothing: 0.0,
        }
    }
}

/// Per-epoch statistics.
#[derive(Clone, Debug, Serialize)]
pub struct EpochStats {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Test accuracy (candle forward, batch norm in inference mode).
    pub test_accuracy: f64,
    /// Wall time of the epoch (training only).
    pub seconds: f64,
}

mod check;
mod export;
mod net;

pub use check::{candle_forward, compare_logits};
pub use net::Net;
use net::*;

/// Per-channel mean and standard deviation of pixel / 255.
pub fn normalization_of(data: &Dataset) -> Normalization {
    let [c, h, w] = data.shape;
    let plane = h * w;
    let mut mean = vec![0.0f64; c];
    let mut sq = vec![0.0f64; c];
    for i in 0..data.len() {
        let img = data.image(i);
        for ch in 0..c {
            for &p in &img[ch * plane..(ch + 1) * plane] {
                let v = p as f64 / 255.0;
                mean[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (data.len() * plane).max(1) as f64;
    let std = (0..c)
        .map(|ch| ((sq[ch] / n - (mean[ch] / n).powi(2)).max(1e-12)).sqrt())
        .collect();
    Normalization {
        mean: mean.iter().map(|m| m / n).collect(),
        std,
    }
}

fn normalized_f32(data: &Dataset, norm: &Normalization) -> Vec<f32> {
    let [_, h, w] = data.shape;
    let plane = h * w;
    let size = data.image_size();
    data.pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let ch = (i % size) / plane;
            ((p as f64 / 255.0 - norm.mean[ch]) / norm.std[ch]) as f32
        })
        .collect()
}

/// Result of [`train`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Architecture name.
    pub arch: String,
    /// Activation description (`relu`, `poly2`, ...).
    pub act: String,
    /// Epochs.
    pub epochs: usize,
    /// Test accuracy of candle's forward pass after the last epoch.
    pub test_accuracy: f64,
    /// Test accuracy of the f64 reference on the exported (folded) model.
    pub reference_accuracy: f64,
    /// Fraction of test samples where the reference and candle agree on the argmax.
    pub argmax_agreement: f64,
    /// Max |logit difference| between the reference and candle.
    pub max_logit_diff: f64,
    /// Training wall time (excluding per-epoch evaluation).
    pub train_seconds: f64,
    /// Trainable scalars.
    pub params: usize,
    /// Largest layer in values (= ciphertexts in batch packing).
    pub max_layer_values: usize,
    /// Per epoch.
    pub history: Vec<EpochStats>,
    /// The activations of the exported model (after training, if trainable).
    pub activations: Vec<Activation>,
}

/// Candle logits of the network on `x_all` (normalised, `n x size`), in batches.
fn net_logits(net: &mut Net, x_all: &[f32], size: usize) -> Result<Vec<Vec<f32>>, TrainError> {
    let n = x_all.len() / size;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let x = Tensor::from_slice(
            &x_all[start * size..end * size],
            (end - start, size),
            &net.device,
        )?;
        let l = net.forward(&x, false)?;
        out.extend(l.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Trains `arch` with `act` on `train`, reports test accuracy on `test` each epoch, exports the
/// folded model and checks the f64 reference against candle on the test set. `label` names the
/// activation in the report (e.g. `poly2`); `progress` shows indicatif bars.
#[allow(clippy::too_many_arguments)]
pub fn train(
    arch: &ArchSpec,
    act: &ActChoice,
    label: &str,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    progress: bool,
    mut log: impl FnMut(&EpochStats),
) -> Result<(Model, TrainReport), TrainError> {
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::Data("empty train or test set".into()));
    }
    if train.shape != test.shape {
        return Err(TrainError::Data(format!(
            "train shape {:?} != test shape {:?}",
            train.shape, test.shape
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(TrainError::Config(
            "epochs and batch size must be positive".into(),
        ));
    }
    let input = arch.input.unwrap_or(train.shape);
    if input != train.shape {
        return Err(TrainError::Data(format!(
            "architecture expects input {input:?}, dataset has {:?}",
            train.shape
        )));
    }
    let ok = |v: f64, min_excluded: bool| v.is_finite() && (v > 0.0 || (!min_excluded && v == 0.0));
    if !(ok(cfg.lr, true) && ok(cfg.weight_decay, false) && ok(cfg.clip, false)) {
        return Err(TrainError::Config(format!(
            "the learning rate ({}) must be a positive number, the weight decay ({}) and the \
             gradient clip ({}) finite numbers >= 0",
            cfg.lr, cfg.weight_decay, cfg.clip
        )));
    }
    if !(0.0..=45.0).contains(&cfg.max_rotate) || !(0.0..0.5).contains(&cfg.max_scale) {
        return Err(TrainError::Config(format!(
            "the rotation ({} degrees) must lie in [0, 45] and the scale change ({}) in [0, 0.5)",
            cfg.max_rotate, cfg.max_scale
        )));
    }
    if !(0.0..1.0).contains(&cfg.dropout) || !(0.0..1.0).contains(&cfg.label_smoothing) {
        return Err(TrainError::Config(format!(
            "dropout ({}) and label smoothing ({}) must lie in [0, 1)",
            cfg.dropout, cfg.label_smoothing
        )));
    }
    // The logits must cover every label (a smaller last layer would fail deep in the loss).
    let shapes = arch.shapes(input)?;
    let outputs = shapes.last().map_or(0, crate::nn::arch::Shape::numel);
    let classes = train
        .labels
        .iter()
        .chain(&test.labels)
        .map(|&l| usize::from(l) + 1)
        .max()
        .unwrap_or(0);
    if outputs < classes.max(2) {
        return Err(TrainError::Data(format!(
            "the last dense layer has {outputs} output(s), but the labels run from 0 to {}: it \
             needs one output per class ({} here)",
            classes.saturating_sub(1),
            classes.max(2)
        )));
    }
    let mut net = Net::new(arch, act, input, cfg.seed)?;
    if cfg.dropout > 0.0 {
        net.dropout = Some((
            cfg.dropout,
            ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x0d20_f0a7),
        ));
    }
    let norm = normalization_of(train);
    let size = train.image_size();
    let xtr = normalized_f32(train, &norm);
    let xte = normalized_f32(test, &norm);
    // Value of a black pixel per channel (what shifted-in borders get).
    let fill: Vec<f32> = (0..input[0])
        .map(|c| (-norm.mean[c] / norm.std[c]) as f32)
        .collect();
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(net.vars.clone(), params)?;
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x005e_ed0f_da7a);
    let n = train.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total_steps = (steps_per_epoch * cfg.epochs) as f64;
    let mut step = 0usize;
    let mut history = Vec::new();
    let mut train_seconds = 0.0;
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let bar = if progress {
            let b = indicatif::ProgressBar::new(steps_per_epoch as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "epoch {epoch}/{} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}<{{eta}})",
                    cfg.epochs
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut loss_sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            let mut xb = Vec::with_capacity(chunk.len() * size);
            let mut yb = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let img = &xtr[i * size..(i + 1) * size];
                if cfg.augment {
                    let flip = cfg.flip && rng.random::<bool>();
                    let m = cfg.max_shift as i32;
                    let dy = rng.random_range(-m..=m);
                    let dx = rng.random_range(-m..=m);
                    if cfg.max_rotate > 0.0 || cfg.max_scale > 0.0 {
                        let angle = if cfg.max_rotate > 0.0 {
                            rng.random_range(-cfg.max_rotate..=cfg.max_rotate)
                                .to_radians()
                        } else {
                            0.0
                        };
                        let zoom = if cfg.max_scale > 0.0 {
                            1.0 + rng.random_range(-cfg.max_scale..=cfg.max_scale)
                        } else {
                            1.0
                        };
                        let t = Affine {
                            flip,
                            angle,
                            zoom,
                            dy: dy as f64,
                            dx: dx as f64,
                        };
                        affine_into(&mut xb, img, train.shape, &fill, &t);
                    } else {
                        augment_into(&mut xb, img, train.shape, &fill, flip, dy, dx);
                    }
                } else {
                    xb.extend_from_slice(img);
                }
                yb.push(train.labels[i] as u32);
            }
            let x = Tensor::from_vec(xb, (chunk.len(), size), &net.device)?;
            let y = Tensor::from_vec(yb, chunk.len(), &net.device)?;
            let logits = net.forward(&x, true)?;
            let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            if cfg.label_smoothing > 0.0 {
                // (1 - e) * CE + e * mean over classes of -log p (uniform target).
                let uniform = candle_nn::ops::log_softmax(&logits, 1)?
                    .mean(1)?
                    .mean(0)?
                    .neg()?;
                let e = cfg.label_smoothing;
                loss = ((loss * (1.0 - e))? + (uniform * e)?)?;
            }
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(TrainError::Diverged { epoch, loss: lv });
            }
            loss_sum += lv as f64 * chunk.len() as f64;
            let mut grads = loss.backward()?;
            if cfg.clip > 0.0 {
                let mut sq = 0.0f64;
                for v in &net.vars {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                    }
                }
                let norm = sq.sqrt();
                if norm > cfg.clip {
                    let s = cfg.clip / norm;
                    for v in &net.vars {
                        if let Some(g) = grads.remove(v.as_tensor()) {
                            grads.insert(v.as_tensor(), (g * s)?);
                        }
                    }
                }
            }
            let lr =
                0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * step as f64 / total_steps).cos());
            opt.set_learning_rate(lr);
            opt.step(&grads)?;
            step += 1;
            bar.inc(1);
            bar.set_message(format!("loss {lv:.4}"));
        }
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        train_seconds += secs;
        let logits = net_logits(&mut net, &xte, size)?;
        let acc = accuracy_f32(&logits, &test.labels);
        let st = EpochStats {
            epoch,
            train_loss: loss_sum / n as f64,
            test_accuracy: acc,
            seconds: secs,
        };
        log(&st);
        history.push(st);
    }
    let cand = net_logits(&mut net, &xte, size)?;
    let test_accuracy = accuracy_f32(&cand, &test.labels);
    let info = serde_json::json!({
        "act": label,
        "activation_choice": act,
        "epochs": cfg.epochs,
        "config": cfg,
        "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
    });
    let model = net.export(norm, info)?;
    let rep = reference::evaluate(&model, test)?;
    let (agree, max_diff) = compare_logits(&rep.logits, &cand);
    let activations = model
        .layers
        .iter()
        .filter_map(|l| {
            if let Layer::Act(a) = l {
                Some(a.clone())
            } else {
                None
            }
        })
        .collect();
    let report = TrainReport {
        arch: arch.name.clone(),
        act: label.to_string(),
        epochs: cfg.epochs,
        test_accuracy,
        reference_accuracy: rep.accuracy,
        argmax_agreement: agree,
        max_logit_diff: max_diff,
        train_seconds,
        params: net.num_params(),
        max_layer_values: model.max_values(),
        history,
        activations,
    };
    Ok((model, report))
}

/// A random transform of the augmentation: flip, then rotate by `angle` (radians) and scale by
/// `zoom` about the centre, then shift by (`dy`, `dx`) pixels.
struct Affine {
    flip: bool,
    angle: f64,
    zoom: f64,
    dy: f64,
    dx: f64,
}

/// Appends `img` (CHW) transformed by `t`, sampled bilinearly (each output pixel mapped back
/// into the input); what falls outside takes the channel's `fill`.
fn affine_into(out: &mut Vec<f32>, img: &[f32], shape: [usize; 3], fill: &[f32], t: &Affine) {
    let [c, h, w] = shape;
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (sin, cos) = t.angle.sin_cos();
    for ch in 0..c {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        let at = |y: i64, x: i64| -> f64 {
            if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
                fill[ch] as f64
            } else {
                plane[y as usize * w + x as usize] as f64
            }
        };
        for y in 0..h {
            for x in 0..w {
                // Undo the shift, then the rotation and scale about the centre, then the flip.
                let (py, px) = (y as f64 - t.dy - cy, x as f64 - t.dx - cx);
                let sy = (cos * py - sin * px) / t.zoom + cy;
                let mut sx = (sin * py + cos * px) / t.zoom + cx;
                if t.flip {
                    sx = w as f64 - 1.0 - sx;
                }
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as i64, x0 as i64);
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out.push(v as f32);
            }
        }
    }
}

/// Appends `img` (CHW) flipped horizontally if `flip` and shifted by (dy, dx), borders `fill`.
fn augment_into(
    out: &mut Vec<f32>,
    img: &[f32],
    shape: [usize; 3],
    fill: &[f32],
    flip: bool,
    dy: i32,
    dx: i32,
) {
    let [c, h, w] = shape;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let sy = y as i32 - dy;
                let sx0 = x as i32 - dx;
                let v = if sy < 0 || sy >= h as i32 || sx0 < 0 || sx0 >= w as i32 {
                    fill[ch]
                } else {
                    let sx = if flip {
                        w - 1 - sx0 as usize
                    } else {
                        sx0 as usize
                    };
                    img[(ch * h + sy as usize) * w + sx]
                };
                out.push(v);
            }
        }
    }
}

fn accuracy_f32(logits: &[Vec<f32>], labels: &[u8]) -> f64 {
    let c = logits.iter().zip(labels).filter(|(l, &y)| {
        let v: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        reference::argmax(&v) == y as usize
    });
    c.count() as f64 / labels.len().max(1) as f64
}

/// Logits of the network's argmax on a batch (for tests).
pub fn predict(net: &mut Net, x: &[f32]) -> Result<Vec<Vec<f32>>, TrainError> {
    let size: usize = net.input.iter().product();
    net_logits(net, x, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 x 5 x 5 image whose pixel (y, x) is 10 y + x.
    fn ramp() -> Vec<f32> {
        (0..25).map(|i| (10 * (i / 5) + i % 5) as f32).collect()
    }

    #[test]
    fn the_affine_augmentation_moves_pixels_where_it_says() {
        let img = ramp();
        let t = |flip, degrees: f64, zoom, dy, dx| Affine {
            flip,
            angle: degrees.to_radians(),
            zoom,
            dy,
            dx,
        };
        let run = |a: &Affine| {
            let mut out = Vec::new();
            affine_into(&mut out, &img, [1, 5, 5], &[-1.0], a);
            out
        };
        // The identity, and a whole-pixel shift equal to the plain shift (borders filled).
        assert_eq!(run(&t(false, 0.0, 1.0, 0.0, 0.0)), img);
        let mut shifted = Vec::new();
        augment_into(&mut shifted, &img, [1, 5, 5], &[-1.0], false, 1, -2);
        assert_eq!(run(&t(false, 0.0, 1.0, 1.0, -2.0)), shifted);
        // A flip mirrors the columns.
        let mut flipped = Vec::new();
        augment_into(&mut flipped, &img, [1, 5, 5], &[-1.0], true, 0, 0);
        assert_eq!(run(&t(true, 0.0, 1.0, 0.0, 0.0)), flipped);
        // A quarter turn about the centre moves the top row to a side column.
        let r = run(&t(false, 90.0, 1.0, 0.0, 0.0));
        let col: Vec<f32> = (0..5).map(|y| r[y * 5 + 4]).collect();
        let row: Vec<f32> = (0..5).map(|x| img[x]).collect();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(
            close(&col, &row) || close(&col, &row.iter().rev().copied().collect::<Vec<_>>()),
            "{r:?}"
        );
        // Zooming in keeps the centre.
        assert!((run(&t(false, 0.0, 1.2, 0.0, 0.0))[12] - img[12]).abs() < 1e-4);
    }
}
