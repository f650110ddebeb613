//! The CKKS `DeviceEvaluator` on batches of several ciphertexts gives exactly the ciphertexts of
//! the single-ciphertext `Evaluator` front, one at a time, word for word, on the CPU backend and
//! on the GPU backend (so batching changes nothing, and the GPU equals the CPU), for every
//! operation; the results decrypt to the right values; GPU results stay on the device.

use cryptodl::backend::cpu::CpuBackend;
use cryptodl::backend::gpu::GpuBackend;
use cryptodl::backend::Backend;
use cryptodl::ckks::*;
use std::sync::Arc;

mod common;
use common::gpu;

const STEPS: [i64; 3] = [1, 3, -2];

/// Client-side material: keys, three ciphertext batches and a plaintext.
struct Fixture {
    params: Parameters,
    ctx: Arc<Context>,
    sk: SecretKey,
    keys: EvaluationKeys,
    enc: Encoder,
    /// Two batches of `count` fresh ciphertexts at the top level, and one a level lower.
    a: Vec<Ciphertext>,
    b: Vec<Ciphertext>,
    low: Vec<Ciphertext>,
    pt: Plaintext,
    va: Vec<Vec<f64>>,
    vb: Vec<Vec<f64>>,
}

fn fixture(preset: &str, count: usize, seed: u64) -> Fixture {
    let params = Preset::by_name(preset).unwrap().parameters(true).unwrap();
    let ctx = Context::new(&params).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(seed));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &STEPS, true).unwrap();
    let enc = Encoder::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(seed + 1));
    let eval = Evaluator::new(ctx.clone());
    let top = params.max_level();
    let scale = params.default_scale();
    let slots = enc.slots();
    let values = |k: usize, m: usize| -> Vec<f64> {
        (0..slots)
            .map(|i| (((i * (k + 2)) % m) as f64 - m as f64 / 2.0) / m as f64)
            .collect()
    };
    let va: Vec<Vec<f64>> = (0..count).map(|k| values(k, 13)).collect();
    let vb: Vec<Vec<f64>> = (0..count).map(|k| values(k + 5, 7)).collect();
    let mut encrypt = |v: &[f64]| {
        encryptor
            .encrypt(&enc.encode(v, top, scale).unwrap(), &pk)
            .unwrap()
    };
    let a: Vec<Ciphertext> = va.iter().map(|v| encrypt(v)).collect();
    let b: Vec<Ciphertext> = vb.iter().map(|v| encrypt(v)).collect();
    let low = b
        .iter()
        .map(|c| {
            let mut c = eval.mul_const(c, 0.5, None).unwrap();
            eval.rescale_assign(&mut c).unwrap();
            c
        })
        .collect();
    let pt = enc.encode(&values(9, 11), top, scale).unwrap();
    Fixture {
        params,
        ctx,
        sk,
        keys,
        enc,
        a,
        b,
        low,
        pt,
        va,
        vb,
    }
}

/// Runs every operation on the device evaluator and on the host evaluator; asserts the results
/// are equal word for word (with equal size, level and scale).
fn check_every_operation<B: Backend>(f: &Fixture, dev: &DeviceEvaluator<B>) {
    let host = Evaluator::new(f.ctx.clone());
    let hkeys = host.upload_keys(&f.keys).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let a = dev.upload(&f.a).unwrap();
    let b = dev.upload(&f.b).unwrap();
    let low = dev.upload(&f.low).unwrap();
    let pt = dev.upload_plaintext(&f.pt).unwrap();
    assert_eq!(dev.download(&a).unwrap(), f.a, "upload/download round trip");

    let name = dev.backend().name();
    let same = |what: &str, got: &DeviceCiphertext<B::Tensor>, want: Vec<Ciphertext>| {
        assert_eq!(
            dev.download(got).unwrap(),
            want,
            "{what} on {name} == host evaluator"
        );
    };
    let each = |op: &dyn Fn(&Ciphertext, &Ciphertext) -> Ciphertext| -> Vec<Ciphertext> {
        f.a.iter().zip(&f.b).map(|(x, y)| op(x, y)).collect()
    };
    let prod = dev.mul(&a, &b).unwrap();
    same("mul", &prod, each(&|x, y| host.mul(x, y).unwrap()));
    same(
        "add",
        &dev.add(&a, &b).unwrap(),
        each(&|x, y| host.add(x, y).unwrap()),
    );
    same(
        "sub",
        &dev.sub(&a, &b).unwrap(),
        each(&|x, y| host.sub(x, y).unwrap()),
    );
    // Operands of different sizes (at the product's scale): the extra component passes through
    // (negated for sub).
    let s = a.scale();
    let a_sq = dev.mul_const(&a, 1.0, Some(s)).unwrap();
    let sq = |x: &Ciphertext| host.mul_const(x, 1.0, Some(s)).unwrap();
    same(
        "add (size 3 + size 2)",
        &dev.add(&prod, &a_sq).unwrap(),
        each(&|x, y| host.add(&host.mul(x, y).unwrap(), &sq(x)).unwrap()),
    );
    same(
        "sub (size 2 - size 3)",
        &dev.sub(&a_sq, &prod).unwrap(),
        each(&|x, y| host.sub(&sq(x), &host.mul(x, y).unwrap()).unwrap()),
    );
    same(
        "negate",
        &dev.negate(&a).unwrap(),
        each(&|x, _| host.negate(x).unwrap()),
    );
    same(
        "add_plain",
        &dev.add_plain(&a, &pt).unwrap(),
        each(&|x, _| host.add_plain(x, &f.pt).unwrap()),
    );
    same(
        "mul_plain",
        &dev.mul_plain(&a, &pt).unwrap(),
        each(&|x, _| host.mul_plain(x, &f.pt).unwrap()),
    );
    same(
        "mul_const",
        &dev.mul_const(&a, -0.75, None).unwrap(),
        each(&|x, _| host.mul_const(x, -0.75, None).unwrap()),
    );
    same(
        "mul_const (explicit scale)",
        &dev.mul_const(&a, 3.0, Some(16.0)).unwrap(),
        each(&|x, _| host.mul_const(x, 3.0, Some(16.0)).unwrap()),
    );
    // A linear layer: a row with a zero weight, an empty row (bias only), a repeated input.
    let layer = LinearLayer {
        inputs: f.a.len(),
        rows: vec![
            vec![(0, 0.5), (2, -1.25), (1, 0.0)],
            vec![],
            vec![(1, 2.0), (1, 0.3), (0, -0.7)],
        ],
        bias: vec![0.1, -0.2, 0.0],
    };
    let cs = f.params.q()[a.level()] as f64;
    let host_linear: Vec<Ciphertext> = layer
        .rows
        .iter()
        .zip(&layer.bias)
        .map(|(row, &b)| {
            let mut acc = host.mul_const(&f.a[0], 0.0, Some(cs)).unwrap();
            for &(i, w) in row {
                host.add_assign(&mut acc, &host.mul_const(&f.a[i], w, Some(cs)).unwrap())
                    .unwrap();
            }
            host.add_const_assign(&mut acc, b).unwrap();
            acc
        })
        .collect();
    let lin = dev.linear(&a, &layer, None).unwrap();
    assert_eq!(lin.count(), 3);
    same("linear", &lin, host_linear.clone());
    // Encoded once, applied twice (a session's batches): the same ciphertexts each time.
    let encoded = dev
        .encode_linear(a.level(), a.scale(), &layer, None)
        .unwrap();
    assert_eq!(encoded.dims(), (f.a.len(), 3));
    for _ in 0..2 {
        same(
            "linear (encoded)",
            &dev.linear_encoded(&a, &encoded).unwrap(),
            host_linear.clone(),
        );
    }
    let mut acc = dev.linear_encoded(&a, &encoded).unwrap();
    dev.linear_acc_encoded(&mut acc, &a, &encoded).unwrap();
    assert_eq!(
        dev.download(&acc).unwrap(),
        dev.download(&dev.add(&lin, &lin).unwrap()).unwrap(),
        "linear_acc (encoded) == linear + linear"
    );
    assert_eq!(
        dev.download(&dev.linear_rescale_encoded(&a, &encoded).unwrap())
            .unwrap(),
        dev.download(&dev.rescale(&lin).unwrap()).unwrap(),
        "linear_rescale (encoded) == rescale(linear)"
    );
    same(
        "linear + rescale",
        &dev.rescale(&lin).unwrap(),
        host_linear
            .into_iter()
            .map(|mut c| {
                host.rescale_assign(&mut c).unwrap();
                c
            })
            .collect(),
    );
    same(
        "add_const",
        &dev.add_const(&a, 0.3).unwrap(),
        each(&|x, _| {
            let mut r = x.clone();
            host.add_const_assign(&mut r, 0.3).unwrap();
            r
        }),
    );
    same(
        "relinearize",
        &dev.relinearize(&prod, &keys).unwrap(),
        each(&|x, y| {
            let mut r = host.mul(x, y).unwrap();
            host.relinearize_assign(&mut r, &hkeys).unwrap();
            r
        }),
    );
    same(
        "rescale",
        &dev.rescale(&a).unwrap(),
        each(&|x, _| {
            let mut r = x.clone();
            host.rescale_assign(&mut r).unwrap();
            r
        }),
    );
    same(
        "rescale (size 3)",
        &dev.rescale(&prod).unwrap(),
        each(&|x, y| {
            let mut r = host.mul(x, y).unwrap();
            host.rescale_assign(&mut r).unwrap();
            r
        }),
    );
    let mrr = dev.mul_relin_rescale(&a, &b, &keys).unwrap();
    same(
        "mul_relin_rescale",
        &mrr,
        each(&|x, y| host.mul_relin_rescale(x, y, &hkeys).unwrap()),
    );
    same(
        "drop_levels",
        &dev.drop_levels(&a, 2).unwrap(),
        each(&|x, _| {
            let mut r = x.clone();
            host.drop_levels_assign(&mut r, 2).unwrap();
            r
        }),
    );
    for step in STEPS {
        same(
            &format!("rotate {step}"),
            &dev.rotate(&a, step, &keys).unwrap(),
            each(&|x, _| host.rotate(x, step, &hkeys).unwrap()),
        );
        same(
            &format!("rotate {step} one level down"),
            &dev.rotate(&low, step, &keys).unwrap(),
            f.low
                .iter()
                .map(|x| host.rotate(x, step, &hkeys).unwrap())
                .collect(),
        );
    }
    same(
        "conjugate",
        &dev.conjugate(&a, &keys).unwrap(),
        each(&|x, _| host.conjugate(x, &hkeys).unwrap()),
    );

    // A chain: rescale(-0.5 * (rotate(a * b, 1) + a * b)) — levels and scales tracked as on the
    // host.
    let sum = dev.add(&dev.rotate(&mrr, 1, &keys).unwrap(), &mrr).unwrap();
    let chain = dev
        .rescale(&dev.mul_const(&sum, -0.5, None).unwrap())
        .unwrap();
    let want: Vec<Ciphertext> =
        f.a.iter()
            .zip(&f.b)
            .map(|(x, y)| {
                let m = host.mul_relin_rescale(x, y, &hkeys).unwrap();
                let mut r = host.add(&host.rotate(&m, 1, &hkeys).unwrap(), &m).unwrap();
                host.mul_const_assign(&mut r, -0.5, None).unwrap();
                host.rescale_assign(&mut r).unwrap();
                r
            })
            .collect();
    same("a chain of operations", &chain, want);

    // The batch decrypts to the slot-wise products.
    let dec = Decryptor::new(f.ctx.clone());
    for (k, ct) in dev.download(&mrr).unwrap().iter().enumerate() {
        let got = f.enc.decode(&dec.decrypt(ct, &f.sk).unwrap());
        let err = got
            .iter()
            .zip(f.va[k].iter().zip(&f.vb[k]))
            .map(|(x, (p, q))| (x - p * q).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-2,
            "ciphertext {k} decrypts to a*b (max error {err})"
        );
    }
    // The linear layer decrypts to the weighted sums plus bias.
    for (j, ct) in dev
        .download(&dev.rescale(&lin).unwrap())
        .unwrap()
        .iter()
        .enumerate()
    {
        let got = f.enc.decode(&dec.decrypt(ct, &f.sk).unwrap());
        let row = &layer.rows[j];
        let err = (0..got.len())
            .map(|s| {
                let want: f64 =
                    layer.bias[j] + row.iter().map(|&(i, w)| w * f.va[i][s]).sum::<f64>();
                (got[s] - want).abs()
            })
            .fold(0.0, f64::max);
        assert!(err < 1e-2, "linear output {j} (max error {err})");
    }

    // Hoisted rotations (one decomposition for all steps), per-ciphertext plaintexts and the
    // batch sum: equal to the CPU backend's word for word, and decrypting to the rotated slots.
    let cpu = cpu_evaluator(f);
    let ckeys = cpu.upload_keys(&f.keys).unwrap();
    let steps = [0i64, 1, 3, -2];
    let hoisted = dev.rotate_hoisted(&a, &steps, &keys).unwrap();
    let cpu_hoisted = cpu
        .rotate_hoisted(&cpu.upload(&f.a).unwrap(), &steps, &ckeys)
        .unwrap();
    let slots = f.enc.slots();
    for ((&step, h), c) in steps.iter().zip(&hoisted).zip(&cpu_hoisted) {
        let got = dev.download(h).unwrap();
        assert_eq!(
            got,
            cpu.download(c).unwrap(),
            "rotate_hoisted {step} on {name} == cpu"
        );
        for (k, ct) in got.iter().enumerate() {
            let v = f.enc.decode(&dec.decrypt(ct, &f.sk).unwrap());
            let err = (0..slots)
                .map(|s| {
                    (v[s] - f.va[k][(s as i64 + step).rem_euclid(slots as i64) as usize]).abs()
                })
                .fold(0.0, f64::max);
            assert!(
                err < 1e-3,
                "rotate_hoisted {step}, ciphertext {k}: error {err}"
            );
        }
    }
    let pts: Vec<Plaintext> = (0..f.a.len())
        .map(|k| {
            let v: Vec<f64> = (0..slots).map(|s| ((s + 3 * k) % 5) as f64 - 2.0).collect();
            f.enc
                .encode(&v, a.level(), f.params.q()[a.level()] as f64)
                .unwrap()
        })
        .collect();
    let pb = dev.upload_plain_batch(&pts).unwrap();
    let dot = dev
        .rescale(&dev.sum(&dev.mul_plain_batch(&a, &pb).unwrap()).unwrap())
        .unwrap();
    let cdot = cpu
        .rescale(
            &cpu.sum(
                &cpu.mul_plain_batch(
                    &cpu.upload(&f.a).unwrap(),
                    &cpu.upload_plain_batch(&pts).unwrap(),
                )
                .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(dot.count(), 1);
    let got = dev.download(&dot).unwrap();
    assert_eq!(
        got,
        cpu.download(&cdot).unwrap(),
        "mul_plain_batch + sum on {name} == cpu"
    );
    let v = f.enc.decode(&dec.decrypt(&got[0], &f.sk).unwrap());
    let err = (0..slots)
        .map(|s| {
            let want: f64 = (0..f.a.len())
                .map(|k| (((s + 3 * k) % 5) as f64 - 2.0) * f.va[k][s])
                .sum();
            (v[s] - want).abs()
        })
        .fold(0.0, f64::max);
    assert!(err < 1e-2, "sum of plaintext products (max error {err})");

    // The BSGS pieces: the plaintext dot product over single ciphertexts (the same words as the
    // batch product and sum), and rotations summed before one division by P (and a prime).
    let singles: Vec<_> = (0..f.a.len())
        .map(|k| dev.slice(&a, k..k + 1).unwrap())
        .collect();
    let csingles: Vec<_> = (0..f.a.len())
        .map(|k| cpu.upload(&f.a[k..k + 1]).unwrap())
        .collect();
    let dotp = dev
        .mul_plain_sum(&singles.iter().collect::<Vec<_>>(), &pb)
        .unwrap();
    let cdotp = cpu
        .mul_plain_sum(
            &csingles.iter().collect::<Vec<_>>(),
            &cpu.upload_plain_batch(&pts).unwrap(),
        )
        .unwrap();
    let raw = dev.download(&dotp).unwrap();
    assert_eq!(
        raw,
        cpu.download(&cdotp).unwrap(),
        "mul_plain_sum on {name} == cpu"
    );
    assert_eq!(
        raw,
        dev.download(&dev.sum(&dev.mul_plain_batch(&a, &pb).unwrap()).unwrap())
            .unwrap(),
        "mul_plain_sum on {name} == mul_plain_batch + sum"
    );
    for (parts, primes) in [
        (vec![(0i64, 0usize), (1, 1), (-2, 2)], 0usize),
        (vec![(1, 0), (3, 1)], 0),
    ] {
        let dev_parts: Vec<(i64, _)> = parts.iter().map(|&(s, k)| (s, &singles[k])).collect();
        let cpu_parts: Vec<(i64, _)> = parts.iter().map(|&(s, k)| (s, &csingles[k])).collect();
        let r = dev.rotate_sum_rescale(&dev_parts, &keys, primes).unwrap();
        let got = dev.download(&r).unwrap();
        assert_eq!(
            got,
            cpu.download(&cpu.rotate_sum_rescale(&cpu_parts, &ckeys, primes).unwrap())
                .unwrap(),
            "rotate_sum_rescale {parts:?} on {name} == cpu"
        );
        let v = f.enc.decode(&dec.decrypt(&got[0], &f.sk).unwrap());
        let err = (0..slots)
            .map(|s| {
                let want: f64 = parts
                    .iter()
                    .map(|&(step, k)| f.va[k][(s as i64 + step).rem_euclid(slots as i64) as usize])
                    .sum();
                (v[s] - want).abs()
            })
            .fold(0.0, f64::max);
        assert!(err < 1e-3, "rotate_sum_rescale {parts:?}: error {err}");
    }
    // With the rescale: the dot product and its rotation by 1, divided by q_l with the key
    // switching's P, at the level below.
    let r = dev
        .rotate_sum_rescale(&[(0, &dotp), (1, &dotp)], &keys, 1)
        .unwrap();
    assert_eq!(r.level(), dotp.level() - 1);
    let v = f
        .enc
        .decode(&dec.decrypt(&dev.download(&r).unwrap()[0], &f.sk).unwrap());
    let dot_at = |s: usize| -> f64 {
        (0..f.a.len())
            .map(|k| (((s + 3 * k) % 5) as f64 - 2.0) * f.va[k][s])
            .sum()
    };
    let err = (0..slots)
        .map(|s| (v[s] - dot_at(s) - dot_at((s + 1) % slots)).abs())
        .fold(0.0, f64::max);
    assert!(
        err < 1e-2,
        "rotate_sum_rescale with a rescale (max error {err})"
    );
}

fn cpu_evaluator(f: &Fixture) -> DeviceEvaluator<CpuBackend> {
    let backend = CpuBackend::new(f.ctx.rns().clone());
    DeviceEvaluator::new(f.ctx.clone(), backend).unwrap()
}

#[test]
fn cpu_device_evaluator_equals_the_host_evaluator_on_every_operation() {
    let f = fixture("toy4096", 3, 21);
    check_every_operation(&f, &cpu_evaluator(&f));
}

#[test]
fn gpu_device_evaluator_equals_the_host_evaluator_on_every_operation() {
    let Some(rt) = gpu() else { return };
    let f = fixture("toy4096", 3, 31);
    let backend = GpuBackend::new(rt, f.ctx.rns().clone()).unwrap();
    check_every_operation(&f, &DeviceEvaluator::new(f.ctx.clone(), backend).unwrap());
}

#[test]
fn gpu_device_evaluator_at_the_n8192_preset() {
    let Some(rt) = gpu() else { return };
    let f = fixture("n8192", 2, 41);
    let host = Evaluator::new(f.ctx.clone());
    let hkeys = host.upload_keys(&f.keys).unwrap();
    let backend = GpuBackend::new(rt, f.ctx.rns().clone()).unwrap();
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let (a, b) = (dev.upload(&f.a).unwrap(), dev.upload(&f.b).unwrap());
    let out = dev
        .rotate(&dev.mul_relin_rescale(&a, &b, &keys).unwrap(), -2, &keys)
        .unwrap();
    let want: Vec<Ciphertext> =
        f.a.iter()
            .zip(&f.b)
            .map(|(x, y)| {
                let m = host.mul_relin_rescale(x, y, &hkeys).unwrap();
                host.rotate(&m, -2, &hkeys).unwrap()
            })
            .collect();
    assert_eq!(dev.download(&out).unwrap(), want);
}

#[test]
fn gpu_batches_stay_resident_and_dispatches_do_not_grow_with_the_batch() {
    let Some(rt) = gpu() else { return };
    let f = fixture("toy4096", 5, 51);
    let backend = GpuBackend::new(rt, f.ctx.rns().clone()).unwrap();
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let mut dispatches = Vec::new();
    for count in [1, 5] {
        let a = dev.upload(&f.a[..count]).unwrap();
        let b = dev.upload(&f.b[..count]).unwrap();
        let before = dev.backend().counters();
        let m = dev.mul_relin_rescale(&a, &b, &keys).unwrap();
        let r = dev.rotate(&m, 3, &keys).unwrap();
        let after = dev.backend().counters();
        assert_eq!(
            (after.uploads, after.downloads),
            (before.uploads, before.downloads),
            "mul_relin_rescale + rotate on resident tensors move no data"
        );
        dispatches.push(after.launches - before.launches);
        // Kernel timing with timestamp queries where the adapter has them.
        let rt = dev.backend().runtime();
        if rt.start_timing() {
            let m = dev.mul_relin_rescale(&a, &b, &keys).unwrap();
            let secs = rt.finish_timing().unwrap().expect("a timing was active");
            assert!(secs > 0.0 && secs < 600.0, "GPU time {secs} s");
            drop(m);
        } else {
            assert!(!rt.adapter().timestamp_queries);
        }
        assert_eq!(rt.finish_timing().unwrap(), None, "no timing active");
        assert_eq!(dev.download(&r).unwrap().len(), count);
    }
    assert_eq!(
        dispatches[0], dispatches[1],
        "a batch of 5 takes as many launches as a batch of 1"
    );
    eprintln!(
        "mul_relin_rescale + rotate: {} dispatches for any batch size",
        dispatches[0]
    );
}

#[test]
fn device_evaluator_errors_name_the_values() {
    let f = fixture("toy4096", 2, 61);
    let dev = cpu_evaluator(&f);
    let keys = dev.upload_keys(&f.keys).unwrap();
    let a = dev.upload(&f.a).unwrap();
    let one = dev.upload(&f.a[..1]).unwrap();
    let low = dev.upload(&f.low).unwrap();
    let msg = |e: CkksError| e.to_string();
    assert!(msg(dev.add(&a, &one).err().unwrap()).contains("2 vs 1"));
    assert!(msg(dev.mul(&a, &low).err().unwrap()).contains("different levels"));
    assert!(matches!(
        dev.rotate(&a, 5, &keys),
        Err(CkksError::MissingGaloisKey { step: 5, .. })
    ));
    assert!(matches!(dev.upload(&[]), Err(CkksError::EmptyBatch)));
    let mixed = [f.a[0].clone(), f.low[0].clone()];
    assert!(matches!(
        dev.upload(&mixed),
        Err(CkksError::LevelMismatch { .. })
    ));
    let prod = dev.mul(&a, &a).unwrap();
    assert!(matches!(
        dev.rotate(&prod, 1, &keys),
        Err(CkksError::NotRelinearized { size: 3 })
    ));
    let mut bottom = dev.drop_levels(&a, f.params.max_level()).unwrap();
    assert_eq!(bottom.level(), 0);
    assert!(matches!(
        dev.rescale(&bottom),
        Err(CkksError::OutOfLevels { .. })
    ));
    bottom = dev.drop_levels(&bottom, 0).unwrap();
    assert!(dev.drop_levels(&bottom, 1).is_err());
    // A backend built for other primes is refused with both sets named.
    let other = Preset::by_name("toy1024")
        .unwrap()
        .parameters(true)
        .unwrap();
    let wrong = CpuBackend::new(Context::new(&other).unwrap().rns().clone());
    let e = DeviceEvaluator::new(f.ctx.clone(), wrong).err().unwrap();
    assert!(e.to_string().contains("Context::rns"), "{e}");
    // Linear layers that do not fit their input.
    let layer = |inputs: usize, rows: Vec<Vec<(usize, f64)>>, bias: Vec<f64>| LinearLayer {
        inputs,
        rows,
        bias,
    };
    assert!(matches!(
        dev.linear(&a, &layer(3, vec![vec![(0, 1.0)]], vec![]), None),
        Err(CkksError::CountMismatch {
            left: 3,
            right: 2,
            ..
        })
    ));
    let e = dev
        .linear(&a, &layer(2, vec![vec![(2, 1.0)]], vec![]), None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("input index 2"), "{e}");
    assert!(dev.linear(&a, &layer(2, vec![], vec![]), None).is_err());
    assert!(dev
        .linear(&a, &layer(2, vec![vec![]], vec![1.0, 2.0]), None)
        .is_err());
    assert!(matches!(
        dev.linear(&a, &layer(2, vec![vec![(0, f64::NAN)]], vec![]), None),
        Err(CkksError::NonFiniteInput)
    ));
    // A layer encoded for other inputs (level, scale) is refused, not silently misapplied.
    let two = layer(2, vec![vec![(0, 1.0)]], vec![]);
    let for_low = dev
        .encode_linear(a.level() - 1, a.scale(), &two, None)
        .unwrap();
    assert!(matches!(
        dev.linear_encoded(&a, &for_low),
        Err(CkksError::LevelMismatch { .. })
    ));
    let other_scale = dev
        .encode_linear(a.level(), a.scale() * 2.0, &two, None)
        .unwrap();
    assert!(matches!(
        dev.linear_encoded(&a, &other_scale),
        Err(CkksError::ScaleMismatch { .. })
    ));
    assert!(matches!(
        dev.encode_linear(f.params.max_level() + 1, a.scale(), &two, None),
        Err(CkksError::LevelOutOfRange { .. })
    ));
    // No relinearization key.
    let no_relin = EvaluationKeys::default();
    let empty = dev.upload_keys(&no_relin).unwrap();
    assert!(matches!(
        dev.relinearize(&prod, &empty),
        Err(CkksError::MissingRelinKey)
    ));
}
