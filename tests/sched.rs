//! The encrypted CNN: plans compiled from models compute the plaintext reference's logits, and
//! the encrypted run through a server `Session` decrypts to them (CPU and GPU backends, word for
//! word equal, whatever the chunking).

use cryptodl::ckks::*;
use cryptodl::nn::activation::{ActFn, Polynomial};
use cryptodl::nn::model::{Activation, Layer, Model, Normalization};
use cryptodl::nn::reference;
use cryptodl::sched::{self, Device, Plan, PlanError, Session, Step};
use ndarray::{Array1, Array2, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::gpu;

fn poly2() -> Layer {
    Layer::Act(Activation::Poly {
        coeffs: Polynomial::new(vec![0.375, 0.5, 0.1171875]),
    })
}

fn conv(
    rng: &mut ChaCha8Rng,
    o: usize,
    i: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Layer {
    Layer::Conv2d {
        weight: Array4::from_shape_fn((o, i, k, k), |_| rng.random_range(-0.5..0.5)),
        bias: Array1::from_shape_fn(o, |_| rng.random_range(-0.2..0.2)),
        stride,
        padding,
    }
}

fn dense(rng: &mut ChaCha8Rng, o: usize, i: usize) -> Layer {
    Layer::Dense {
        weight: Array2::from_shape_fn((o, i), |_| rng.random_range(-0.3..0.3)),
        bias: Array1::from_shape_fn(o, |_| rng.random_range(-0.2..0.2)),
    }
}

fn model(name: &str, input: [usize; 3], layers: Vec<Layer>) -> Model {
    Model {
        name: name.into(),
        input,
        normalization: Normalization {
            mean: vec![0.0; input[0]],
            std: vec![1.0; input[0]],
        },
        layers,
        training: serde_json::Value::Null,
    }
}

fn inputs(rng: &mut ChaCha8Rng, count: usize, size: usize) -> Vec<Vec<f64>> {
    (0..count)
        .map(|_| (0..size).map(|_| rng.random_range(-1.5..1.5)).collect())
        .collect()
}

#[test]
fn plans_compute_the_reference_logits_in_plaintext() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // conv -> act -> pool -> conv -> act (affine) -> flatten -> dense -> act -> dense
    let deep = model(
        "deep",
        [2, 8, 8],
        vec![
            conv(&mut rng, 3, 2, 3, 1, 1),
            poly2(),
            Layer::SumPool {
                kernel: 2,
                stride: 2,
            },
            conv(&mut rng, 4, 3, 3, 2, 0),
            Layer::Act(Activation::Poly {
                coeffs: Polynomial::new(vec![0.1, -0.4]),
            }),
            Layer::Flatten,
            dense(&mut rng, 5, 4),
            poly2(),
            dense(&mut rng, 3, 5),
        ],
    );
    let plan = Plan::compile(&deep).unwrap();
    // linear, square, linear (pool + conv + affine act + flatten + dense composed), square, linear
    assert_eq!(plan.depth(), 5);
    assert!(matches!(plan.steps[1], Step::Square));
    assert_eq!((plan.inputs, plan.outputs), (128, 3));
    for x in inputs(&mut rng, 20, 128) {
        let want = reference::forward(&deep, &x).unwrap();
        let got = plan.eval_plain(&x);
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "plan != reference by {err}");
    }
}

#[test]
fn plans_refuse_what_ckks_cannot_compute() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let with = |act: Layer| {
        model(
            "m",
            [1, 6, 6],
            vec![
                conv(&mut rng.clone(), 2, 1, 3, 1, 0),
                act,
                Layer::Flatten,
                dense(&mut rng.clone(), 2, 32),
            ],
        )
    };
    let e = Plan::compile(&with(Layer::Act(Activation::Std { func: ActFn::Relu }))).unwrap_err();
    assert!(e.to_string().contains("--act poly2"), "{e}");
    let quartic = Layer::Act(Activation::Poly {
        coeffs: Polynomial::new(vec![0.0, 0.5, 0.1, 0.01, 0.001]),
    });
    let e = Plan::compile(&with(quartic)).unwrap_err();
    assert!(matches!(e, PlanError::Activation { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("degree 3 at most"), "{e}");
    // A deep plan on a shallow preset names a preset that fits.
    let plan = Plan::compile(&with(poly2())).unwrap();
    assert_eq!(plan.levels_needed(), 4);
    assert!(plan.check_depth("toy4096", 5).is_ok());
    let e = plan.check_depth("toy1024", 3).unwrap_err();
    assert!(e.to_string().contains("--preset n8192"), "{e}");
    let _ = rng.random::<u8>();
}

/// Encrypts `samples`, scores them with one session on `device` (with `chunk` ciphertexts per
/// launch, if given), decrypts; returns the logits and the output ciphertexts.
fn encrypted_run(
    device: Device,
    plan: &Plan,
    samples: &[Vec<f64>],
    seed: u64,
    chunk: Option<usize>,
) -> (Vec<Vec<f64>>, Vec<Ciphertext>) {
    let params = Preset::by_name("toy4096")
        .unwrap()
        .parameters(true)
        .unwrap();
    plan.check_depth(params.name(), params.max_level()).unwrap();
    let ctx = Context::new(&params).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(seed));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false).unwrap();
    let enc = Encoder::new(ctx.clone());
    let make = |i: usize| {
        Encryptor::with_sampler(
            ctx.clone(),
            Sampler::from_seed_insecure(seed + 1 + i as u64),
        )
    };
    let cts = sched::encrypt_batch(plan, &enc, make, &pk, samples, || {}).unwrap();
    assert!(cts.iter().all(|c| c.level() == plan.input_level()));
    let mut session = Session::new(device, ctx.clone(), &keys).unwrap();
    if let Some(c) = chunk {
        session.set_chunk_size(c);
    }
    let mut steps = 0;
    let scored = session.score_with(plan, &cts, |_| steps += 1).unwrap();
    assert_eq!(steps, plan.steps.len());
    assert_eq!(scored.stats.steps.len(), plan.steps.len());
    let out = scored.logits;
    let logits =
        sched::decrypt_logits(&Decryptor::new(ctx), &enc, &sk, &out, samples.len()).unwrap();
    (logits, out)
}

fn small_cnn() -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    model(
        "small",
        [1, 8, 8],
        vec![
            conv(&mut rng, 3, 1, 3, 2, 1),
            poly2(),
            Layer::Flatten,
            dense(&mut rng, 4, 48),
        ],
    )
}

fn cubic_cnn() -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    model(
        "cubic",
        [1, 8, 8],
        vec![
            conv(&mut rng, 3, 1, 3, 2, 1),
            Layer::Act(Activation::Poly {
                coeffs: Polynomial::new(vec![0.2, 0.4, 0.15, -0.05]),
            }),
            Layer::Flatten,
            dense(&mut rng, 4, 48),
        ],
    )
}

#[test]
fn degree_3_activations_take_two_levels_and_match_the_reference() {
    let model = cubic_cnn();
    let plan = Plan::compile(&model).unwrap();
    assert!(matches!(plan.steps[1], Step::Cubic(_)));
    assert_eq!((plan.steps.len(), plan.depth()), (3, 4));
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let samples = inputs(&mut rng, 40, 64);
    for x in &samples {
        let want = reference::forward(&model, x).unwrap();
        let err = want
            .iter()
            .zip(plan.eval_plain(x))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "plan != reference by {err}");
    }
    let (logits, _) = encrypted_run(Device::Cpu, &plan, &samples, 11, None);
    check_against_reference(&model, &samples, &logits);
}

fn check_against_reference(model: &Model, samples: &[Vec<f64>], logits: &[Vec<f64>]) {
    let mut worst = 0.0f64;
    for (x, got) in samples.iter().zip(logits) {
        let want = reference::forward(model, x).unwrap();
        for (a, b) in want.iter().zip(got) {
            worst = worst.max((a - b).abs());
        }
        let margin = {
            let mut s = want.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() - 1] - s[s.len() - 2]
        };
        if margin > 1e-2 {
            assert_eq!(reference::argmax(&want), reference::argmax(got));
        }
    }
    assert!(
        worst < 1e-2,
        "encrypted logits differ from the reference by {worst}"
    );
}

#[test]
fn encrypted_inference_on_the_cpu_backend_matches_the_reference() {
    let model = small_cnn();
    let plan = Plan::compile(&model).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let samples = inputs(&mut rng, 50, 64);
    let (logits, out) = encrypted_run(Device::Cpu, &plan, &samples, 7, None);
    check_against_reference(&model, &samples, &logits);
    // Chunked launches (7 ciphertexts each: ragged chunks on 64 inputs and 48 hidden values)
    // give the same ciphertexts as one launch per step.
    let (_, chunked) = encrypted_run(Device::Cpu, &plan, &samples, 7, Some(7));
    assert_eq!(out, chunked);
}

#[test]
fn encrypted_inference_on_the_gpu_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let model = small_cnn();
    let plan = Plan::compile(&model).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let samples = inputs(&mut rng, 30, 64);
    let (cpu_logits, cpu_out) = encrypted_run(Device::Cpu, &plan, &samples, 9, None);
    let (gpu_logits, gpu_out) = encrypted_run(Device::Gpu(rt), &plan, &samples, 9, Some(16));
    assert_eq!(cpu_out, gpu_out, "same keys and inputs: same ciphertexts");
    assert_eq!(cpu_logits, gpu_logits);
    check_against_reference(&model, &samples, &gpu_logits);
}

#[test]
fn a_session_drops_extra_levels_and_refuses_too_few() {
    let model = small_cnn();
    let plan = Plan::compile(&model).unwrap();
    let params = Preset::by_name("toy4096")
        .unwrap()
        .parameters(true)
        .unwrap();
    let ctx = Context::new(&params).unwrap();
    assert!(
        plan.input_level() < params.max_level(),
        "the test needs spare levels"
    );
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(21));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false).unwrap();
    let enc = Encoder::new(ctx.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let samples = inputs(&mut rng, 8, 64);
    // Encrypted at the top level, as an older client would: the session drops the extra levels.
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(23));
    let top: Vec<Ciphertext> = (0..plan.inputs)
        .map(|i| {
            let column: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            let pt = enc
                .encode(&column, params.max_level(), params.default_scale())
                .unwrap();
            encryptor.encrypt(&pt, &pk).unwrap()
        })
        .collect();
    let session = Session::new(Device::Cpu, ctx.clone(), &keys).unwrap();
    let scored = session.score(&plan, &top).unwrap();
    assert_eq!(scored.stats.steps[0].level_in, plan.input_level());
    let logits =
        sched::decrypt_logits(&Decryptor::new(ctx.clone()), &enc, &sk, &scored.logits, 8).unwrap();
    check_against_reference(&model, &samples, &logits);
    // Too low: refused with both levels named.
    let eval = Evaluator::new(ctx.clone());
    let low: Vec<Ciphertext> = top
        .iter()
        .map(|c| {
            let mut c = c.clone();
            eval.drop_levels_assign(&mut c, params.max_level() - plan.input_level() + 1)
                .unwrap();
            c
        })
        .collect();
    match session.score(&plan, &low) {
        Err(CkksError::TooShallow { level, needed }) => {
            assert_eq!(
                (level, needed),
                (plan.input_level() - 1, plan.input_level())
            )
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("ciphertexts below the plan's level were scored"),
    }
    // The wrong number of ciphertexts is refused.
    assert!(matches!(
        session.score(&plan, &top[..10]),
        Err(CkksError::CountMismatch { .. })
    ));
}

#[test]
fn wide_cubic_layers_are_evaluated_in_sub_chunks_with_the_same_words() {
    // 300 values through a degree-3 activation: more than one cubic sub-chunk (256).
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let model = model(
        "wide-cubic",
        [1, 8, 8],
        vec![
            Layer::Flatten,
            dense(&mut rng, 300, 64),
            Layer::Act(Activation::Poly {
                coeffs: Polynomial::new(vec![0.2, 0.4, 0.15, -0.05]),
            }),
            dense(&mut rng, 3, 300),
        ],
    );
    let plan = Plan::compile(&model).unwrap();
    let samples = inputs(&mut rng, 6, 64);
    let (logits, sub_chunked) = encrypted_run(Device::Cpu, &plan, &samples, 33, None);
    check_against_reference(&model, &samples, &logits);
    // Chunks of 100 are never sub-chunked: the same ciphertexts.
    let (_, chunked) = encrypted_run(Device::Cpu, &plan, &samples, 33, Some(100));
    assert_eq!(sub_chunked, chunked);
}
