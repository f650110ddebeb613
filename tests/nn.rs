//! nn integration tests: training on tiny synthetic data, folding, reference == candle, model files.

use cryptodl::nn::activation::{ActFn, Polynomial};
use cryptodl::nn::arch::{ActChoice, ArchSpec};
use cryptodl::nn::dataset::Dataset;
use cryptodl::nn::fit::{fit_polynomial, FitMethod};
use cryptodl::nn::model::{Layer, Model};
use cryptodl::nn::reference;
use cryptodl::nn::train::{candle_forward, compare_logits, train, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

/// `n` images of shape `shape`; the label (0..4) is the brightest quadrant, with noise.
fn synthetic(n: usize, shape: [usize; 3], seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [c, h, w] = shape;
    let mut pixels = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label: u8 = rng.random_range(0..4);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let q = (if y >= h / 2 { 2 } else { 0 }) + (if x >= w / 2 { 1 } else { 0 });
                    let base: u8 = if q == label as usize { 150 } else { 60 };
                    let v = base as i32 + rng.random_range(-60..60) + (ch as i32) * 10;
                    pixels.push(v.clamp(0, 255) as u8);
                }
            }
        }
        labels.push(label);
    }
    Dataset {
        pixels,
        labels,
        shape,
    }
}

const SPEC: &str = r#"{"name": "tiny", "layers": [
  {"type": "conv2d", "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1},
  {"type": "avg_pool", "kernel": 2},
  {"type": "batch_norm"},
  {"type": "act"},
  {"type": "conv2d", "out_channels": 6, "kernel": 3, "stride": 2, "padding": 0},
  {"type": "batch_norm"},
  {"type": "act"},
  {"type": "avg_pool", "kernel": 2, "stride": 1},
  {"type": "flatten"},
  {"type": "dense", "out": 16},
  {"type": "batch_norm"},
  {"type": "std", "fn": "relu"},
  {"type": "dense", "out": 10}
]}"#;

fn cfg(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr: 5e-3,
        weight_decay: 0.0,
        clip: 5.0,
        seed,
        ..TrainConfig::default()
    }
}

fn poly2() -> ActChoice {
    ActChoice::Poly {
        poly: fit_polynomial(ActFn::Relu, 2, 4.0, FitMethod::Legendre),
        trainable: false,
    }
}

#[test]
fn tiny_poly_net_learns_and_folding_preserves_outputs() {
    let arch = ArchSpec::from_json(SPEC, "SPEC").unwrap();
    let tr = synthetic(400, [3, 12, 12], 1);
    let te = synthetic(200, [3, 12, 12], 2);
    let (model, rep) = train(
        &arch,
        &poly2(),
        "poly2",
        &tr,
        &te,
        &cfg(3, 7),
        false,
        |_| {},
    )
    .unwrap();
    // Learns the task (chance is 25%).
    assert!(rep.test_accuracy > 0.6, "accuracy {}", rep.test_accuracy);
    // The folded model (batch norm in the convs / dense, avg pools as sum pools with 1/k^2 in the
    // next conv and in the next polynomial) computes what candle computed with the unfolded
    // layers, in f32.
    assert_eq!(rep.argmax_agreement, 1.0);
    assert!(
        rep.max_logit_diff < 1e-3,
        "max logit diff {}",
        rep.max_logit_diff
    );
    // The pool before the second polynomial was folded into it: its x^2 coefficient is 1/16 of
    // the fit's (1/k^2 squared), and x coefficient 1/4 of it.
    let polys: Vec<&Polynomial> = model
        .layers
        .iter()
        .filter_map(|l| {
            if let Layer::Act(cryptodl::nn::Activation::Poly { coeffs }) = l {
                Some(coeffs)
            } else {
                None
            }
        })
        .collect();
    let base = fit_polynomial(ActFn::Relu, 2, 4.0, FitMethod::Legendre);
    assert_eq!(polys.len(), 2);
    assert!(
        (polys[0].coeffs[1] - base.coeffs[1] / 4.0).abs() < 1e-7,
        "{:?}",
        polys[0]
    );
    assert!(
        (polys[0].coeffs[2] - base.coeffs[2] / 16.0).abs() < 1e-7,
        "{:?}",
        polys[0]
    );
    assert!((polys[1].coeffs[2] - base.coeffs[2]).abs() < 1e-7);
    assert!(model.layers.iter().any(|l| matches!(
        l,
        Layer::SumPool {
            kernel: 2,
            stride: 1
        }
    )));
}

#[test]
fn reference_equals_candle_forward() {
    for (spec, shape) in [
        (SPEC.to_string(), [3, 12, 12]),
        // Dense directly on the (CHW) input, with a trainable cubic.
        (
            r#"{"name":"mlp","layers":[{"type":"flatten"},{"type":"dense","out":12},{"type":"batch_norm"},
               {"type":"poly","coeffs":[0.1,0.5,0.2,0.01],"trainable":true},{"type":"dense","out":4}]}"#
                .to_string(),
            [2, 5, 7],
        ),
    ] {
        let arch = ArchSpec::from_json(&spec, "spec").unwrap();
        let tr = synthetic(200, shape, 3);
        let te = synthetic(100, shape, 4);
        let (model, rep) = train(&arch, &poly2(), "poly2", &tr, &te, &cfg(1, 5), false, |_| {}).unwrap();
        let r = reference::evaluate(&model, &te).unwrap();
        let c = candle_forward(&model, &te).unwrap();
        let (agree, diff) = compare_logits(&r.logits, &c);
        assert_eq!(agree, 1.0);
        assert!(diff < 1e-9, "reference vs candle f64: {diff}");
        assert_eq!(r.accuracy, rep.reference_accuracy);
        assert_eq!(rep.argmax_agreement, 1.0, "{spec}");
        assert!(rep.max_logit_diff < 1e-3);
        // Activation ranges are reported, one per activation layer.
        let acts = model.layers.iter().filter(|l| matches!(l, Layer::Act(_))).count();
        assert_eq!(r.activation_ranges.len(), acts);
        assert!(r.activation_ranges.iter().all(|a| a.min <= a.max));
    }
}

#[test]
fn model_file_round_trip_and_determinism() {
    let arch = ArchSpec::from_json(SPEC, "SPEC").unwrap();
    let tr = synthetic(150, [1, 10, 10], 5);
    let te = synthetic(50, [1, 10, 10], 6);
    let act = ActChoice::Poly {
        poly: fit_polynomial(ActFn::Relu, 3, 4.0, FitMethod::Minimax),
        trainable: true,
    };
    // Augmentation, dropout and label smoothing all draw from the seed.
    let run = |seed: u64| {
        let cfg = TrainConfig {
            augment: true,
            dropout: 0.2,
            label_smoothing: 0.1,
            ..cfg(1, seed)
        };
        train(&arch, &act, "poly3", &tr, &te, &cfg, false, |_| {}).unwrap()
    };
    let ((m1, _), (m2, _), (m3, _)) = (run(11), run(11), run(12));
    let strip = |m: &Model| Model {
        training: serde_json::Value::Null,
        ..m.clone()
    };
    assert_eq!(strip(&m1), strip(&m2), "same seed, same model");
    assert_ne!(strip(&m1), strip(&m3), "different seed, different model");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    m1.save(&p).unwrap();
    let back = Model::load(&p).unwrap();
    assert_eq!(back, m1);
    let x = reference::normalize(&back, te.image(0));
    assert_eq!(
        reference::forward(&back, &x).unwrap(),
        reference::forward(&m1, &x).unwrap()
    );
    assert!(reference::forward(&back, &x[1..]).is_err());
    assert!(reference::evaluate(&back, &synthetic(3, [3, 10, 10], 1)).is_err());

    // Corrupt / truncated / foreign files are errors, not panics.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    assert!(Model::load(&p).is_err());
    std::fs::write(&p, b"not a model").unwrap();
    assert!(Model::load(&p).is_err());
    assert!(Model::load(&dir.path().join("missing.safetensors")).is_err());
    let plain = safetensors::serialize(
        Vec::<(String, safetensors::tensor::TensorView)>::new(),
        None,
    )
    .unwrap();
    std::fs::write(&p, plain).unwrap();
    let e = Model::load(&p).unwrap_err().to_string();
    assert!(e.contains("cryptodl.model"), "{e}");
}

#[test]
fn relu_baseline_and_shape_errors() {
    let arch = ArchSpec::by_name("cryptonets").unwrap();
    let tr = synthetic(64, [1, 28, 28], 8);
    let te = synthetic(32, [1, 28, 28], 9);
    let (model, rep) = train(
        &arch,
        &ActChoice::Std { func: ActFn::Relu },
        "relu",
        &tr,
        &te,
        &cfg(1, 1),
        false,
        |_| {},
    )
    .unwrap();
    assert_eq!(rep.argmax_agreement, 1.0);
    assert_eq!(model.max_values(), 845);
    // The named nets fold to exactly the paper's layers: no batch norm left.
    assert_eq!(model.layers.len(), 6);
    // Dataset of the wrong shape for a JSON spec with a fixed input.
    let spec = ArchSpec::from_json(
        r#"{"name":"x","input":[3,32,32],"layers":[{"type":"flatten"},{"type":"dense","out":10}]}"#,
        "x",
    )
    .unwrap();
    assert!(train(
        &spec,
        &ActChoice::Std { func: ActFn::Relu },
        "relu",
        &tr,
        &te,
        &cfg(1, 1),
        false,
        |_| {}
    )
    .is_err());
    let wrong = synthetic(10, [3, 12, 12], 1);
    assert!(candle_forward(&model, &wrong).is_err());
}

#[test]
fn model_files_are_checked_for_damage_and_degenerate_models() {
    use cryptodl::nn::model::{Activation, Normalization, DEMO_MODEL};
    let path = std::path::Path::new("demo.safetensors");
    let good = Model::from_bytes(DEMO_MODEL, path).unwrap();
    // A flipped bit in the weights (safetensors has no checksum): caught by the stored digest.
    let data_start = DEMO_MODEL.len() - 8 * 1000;
    let mut damaged = DEMO_MODEL.to_vec();
    damaged[data_start] ^= 0x10;
    let e = Model::from_bytes(&damaged, path).unwrap_err().to_string();
    assert!(e.contains("do not match its digest"), "{e}");
    // Two models differing in one weight, one output row order, or the normalisation differ in
    // digest (what the job files record).
    let mut other = good.clone();
    if let Some(Layer::Dense { weight, .. }) = other.layers.last_mut() {
        weight.swap([0, 0], [1, 0]);
    }
    assert_ne!(other.digest(), good.digest());
    let mut renorm = good.clone();
    renorm.normalization.std[0] *= 1.5;
    assert_ne!(renorm.digest(), good.digest());
    // Degenerate models are refused at load, each with the reason.
    let dir = tempfile::tempdir().unwrap();
    let refuse = |m: &Model, what: &str| {
        let p = dir.path().join("m.safetensors");
        m.save(&p).unwrap();
        let e = Model::load(&p).unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    };
    let mut flat = good.clone();
    flat.layers = vec![Layer::Flatten];
    refuse(&flat, "must end with a dense layer");
    let mut one = good.clone();
    if let Some(Layer::Dense { weight, bias }) = one.layers.last_mut() {
        *weight = weight.slice(ndarray::s![..1, ..]).to_owned();
        *bias = bias.slice(ndarray::s![..1]).to_owned();
    }
    refuse(&one, "at least 2");
    let mut std0 = good.clone();
    std0.normalization = Normalization {
        mean: vec![0.5],
        std: vec![0.0],
    };
    refuse(&std0, "positive standard deviations");
    let mut empty = good.clone();
    for l in &mut empty.layers {
        if let Layer::Act(Activation::Poly { coeffs }) = l {
            *coeffs = Polynomial::new(vec![]);
        }
    }
    refuse(&empty, "finite coefficients");
    // Not a regular file, or too large: refused before reading.
    let e = Model::load(std::path::Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]
    /// Fuzzing of the model reader: the demo model with random bytes flipped or cut, and random
    /// bytes, are errors (or, for flips that leave it intact, the model), never a panic.
    #[test]
    fn damaged_model_files_are_errors_not_panics(
        flips in proptest::collection::vec((proptest::prelude::any::<u32>(), 1u8..=255), 0..4),
        cut in proptest::option::of(proptest::prelude::any::<u32>()),
        random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
    ) {
        use cryptodl::nn::model::DEMO_MODEL;
        let path = std::path::Path::new("fuzz.safetensors");
        let mut b = DEMO_MODEL.to_vec();
        for (at, x) in flips {
            let i = at as usize % b.len();
            b[i] ^= x;
        }
        if let Some(c) = cut {
            b.truncate(c as usize % b.len());
        }
        if let Ok(m) = Model::from_bytes(&b, path) {
            // Accepted only when what it computes is intact (the flips hit padding or the
            // training notes).
            let good = Model::from_bytes(DEMO_MODEL, path).unwrap();
            proptest::prop_assert_eq!(m.digest(), good.digest());
        }
        proptest::prop_assert!(Model::from_bytes(&random, path).is_err());
    }
}

/// Models whose numbers came from float32 (trained coefficients, ONNX constants) load back
/// bit for bit, so their digest matches (found from outside: without exact float parsing, 11
/// of 30 models trained with `--trainable-coeffs` were refused as damaged by their own
/// loader); and a model without a digest is refused, since nothing else tells it was edited.
#[test]
fn models_round_trip_bit_for_bit_and_need_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut coeffs = vec![0.11241588741540909, 0.0009374999790452421];
    coeffs.extend((0..200).map(|_| rng.random::<f32>() as f64 * 3.0 - 1.5));
    for (i, c) in coeffs.chunks(3).enumerate() {
        let mut m = common::job::model(1, 0.35);
        let mut c = c.to_vec();
        c.resize(3, 0.25);
        m.layers[2] = Layer::Act(cryptodl::nn::model::Activation::Poly {
            coeffs: Polynomial::new(c.clone()),
        });
        let p = dir.path().join(format!("m{i}.safetensors"));
        m.save(&p).unwrap();
        let back = Model::load(&p).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(back.digest(), m.digest(), "{c:?}");
    }
    // The digest removed from the metadata.
    let p = dir.path().join("m0.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let mut h: serde_json::Value = serde_json::from_str(&header).unwrap();
    let meta = h["__metadata__"]["cryptodl.model"]
        .as_str()
        .unwrap()
        .to_string();
    let mut meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    meta.as_object_mut().unwrap().remove("digest");
    h["__metadata__"]["cryptodl.model"] = meta.to_string().into();
    let mut header = h.to_string().into_bytes();
    while header.len() < n {
        header.push(b' ');
    }
    let mut edited = (header.len() as u64).to_le_bytes().to_vec();
    edited.extend(header);
    edited.extend(&bytes[8 + n..]);
    std::fs::write(&p, edited).unwrap();
    let e = Model::load(&p).unwrap_err().to_string();
    assert!(e.contains("no digest"), "{e}");
}

/// Found from outside: numbers no fit or training means are refused, not printed as `inf` or
/// `NaN` with exit 0.
#[test]
fn nonsense_fit_and_training_numbers_are_refused() {
    use common::job::fails_with;
    for (flag, v) in [
        ("--interval", "1e-300"),
        ("--interval", "1e300"),
        ("--sigma", "0"),
        ("--sigma", "nan"),
    ] {
        fails_with(
            &["approx", "--fn", "relu", "--degree", "2", flag, v],
            &[flag.trim_start_matches('-')],
        );
    }
    let cfg = TrainConfig {
        clip: f64::NAN,
        ..cfg(1, 1)
    };
    let d = synthetic(8, [1, 8, 8], 1);
    let arch = ArchSpec::from_json(
        r#"{"name":"t","layers":[{"type":"flatten"},{"type":"dense","out":4}]}"#,
        "test",
    )
    .unwrap();
    let e = train(&arch, &poly2(), "poly2", &d, &d, &cfg, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("gradient clip (NaN)"), "{e}");
}

/// Found from outside: a last layer with fewer outputs than the dataset has classes is refused
/// naming both, before training, instead of failing inside the loss.
#[test]
fn the_last_layer_must_cover_every_class() {
    let d = synthetic(8, [1, 8, 8], 2);
    let arch = ArchSpec::from_json(
        r#"{"name":"t","layers":[{"type":"flatten"},{"type":"dense","out":2}]}"#,
        "test",
    )
    .unwrap();
    let e = train(&arch, &poly2(), "poly2", &d, &d, &cfg(1, 1), false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 output(s)") && e.contains("labels run from 0 to"),
        "{e}"
    );
}
