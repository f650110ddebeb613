//! Homomorphic circuits (`circuits`): the Chebyshev polynomial evaluator decrypts to the
//! polynomial within a noise bound at the predicted level and scale, the result multiplies on
//! correctly, a polynomial deeper than the input is refused, double-prime scaling keeps a 2^52
//! scale, EvalMod removes integer parts; the GPU gives the CPU's words (lavapipe in CI).

use cryptodl::backend::cpu::CpuBackend;
use cryptodl::backend::gpu::GpuBackend;
use cryptodl::backend::Backend;
use cryptodl::circuits::{Chebyshev, CircuitError, EvalMod, PolynomialEvaluator};
use cryptodl::ckks::*;
use cryptodl_kernels::primes::ntt_primes;
use std::sync::Arc;

mod common;
use common::gpu;

/// N = 4096 with `levels` 26-bit primes over a 30-bit base prime and scale 2^`log_scale`
/// (insecure: tests only).
fn params(levels: usize, log_scale: u32) -> Parameters {
    let n = 4096;
    let mut q = ntt_primes(30, n, 1, &[]).unwrap();
    q.extend(ntt_primes(26, n, levels, &q).unwrap());
    let p = ntt_primes(30, n, 2, &q).unwrap();
    Parameters::new("toy-poly", 12, q, p, log_scale, true).unwrap()
}

struct Fixture {
    ctx: Arc<Context>,
    sk: SecretKey,
    pk: PublicKey,
    keys: EvaluationKeys,
    enc: Encoder,
    cts: Vec<Ciphertext>,
    xs: Vec<Vec<f64>>,
}

/// Two ciphertexts of values spread over [lo, hi), at the top level.
fn fixture(lo: f64, hi: f64) -> Fixture {
    fixture_with(lo, hi, params(10, 26))
}

fn fixture_with(lo: f64, hi: f64, params: Parameters) -> Fixture {
    let ctx = Context::new(&params).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(7));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false).unwrap();
    let enc = Encoder::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(8));
    let slots = enc.slots();
    let xs: Vec<Vec<f64>> = (0..2)
        .map(|k| {
            (0..slots)
                .map(|i| lo + (hi - lo) * (((i * 37 + k * 11) % slots) as f64 / slots as f64))
                .collect()
        })
        .collect();
    let cts = xs
        .iter()
        .map(|x| {
            encryptor
                .encrypt(
                    &enc.encode(x, params.max_level(), params.default_scale())
                        .unwrap(),
                    &pk,
                )
                .unwrap()
        })
        .collect();
    Fixture {
        ctx,
        sk,
        pk,
        keys,
        enc,
        cts,
        xs,
    }
}

fn decrypt(f: &Fixture, cts: &[Ciphertext]) -> Vec<Vec<f64>> {
    let dec = Decryptor::new(f.ctx.clone());
    cts.iter()
        .map(|c| f.enc.decode(&dec.decrypt(c, &f.sk).unwrap()))
        .collect()
}

/// Evaluates `p` on the fixture's batch on `backend`, checking the level and scale predicted.
fn evaluate<B: Backend>(f: &Fixture, backend: B, p: &Chebyshev) -> Vec<Ciphertext> {
    evaluate_by(f, backend, p, 1)
}

/// [`evaluate`] with `primes` primes per level.
fn evaluate_by<B: Backend>(
    f: &Fixture,
    backend: B,
    p: &Chebyshev,
    primes: usize,
) -> Vec<Ciphertext> {
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let x = dev.upload(&f.cts).unwrap();
    let pe = PolynomialEvaluator::new(&dev, &keys)
        .with_primes_per_level(primes)
        .unwrap();
    let scale = f.ctx.params().default_scale();
    let y = pe.evaluate(&x, p, scale).unwrap();
    let cost = p.cost();
    assert_eq!(y.level(), x.level() - primes * cost.levels, "{cost:?}");
    assert!((y.scale() / scale - 1.0).abs() < 1e-9, "{}", y.scale());
    dev.download(&y).unwrap()
}

fn max_error(got: &[Vec<f64>], want: impl Fn(usize, usize) -> f64) -> f64 {
    let mut worst = 0.0f64;
    for (k, row) in got.iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            worst = worst.max((v - want(k, i)).abs());
        }
    }
    worst
}

#[test]
fn a_degree_31_sigmoid_decrypts_to_the_polynomial_and_multiplies_on() {
    let f = fixture(-8.0, 8.0);
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let p = Chebyshev::interpolate(sigmoid, 31, -8.0, 8.0).unwrap();
    let cost = p.cost();
    // Degree 31 in 5 levels, plus one to map [-8, 8] to [-1, 1].
    assert_eq!(cost.levels, 6, "{cost:?}");
    let out = evaluate(&f, CpuBackend::new(f.ctx.rns().clone()), &p);
    let got = decrypt(&f, &out);
    let err = max_error(&got, |k, i| p.eval(f.xs[k][i]));
    let xin = decrypt(&f, &f.cts);
    eprintln!(
        "input error {:.2e}, against p(decrypted input) {:.2e}",
        max_error(&xin, |k, i| f.xs[k][i]),
        max_error(&got, |k, i| p.eval(xin[k][i]))
    );
    eprintln!(
        "degree 31 on [-8, 8]: {cost:?}, max error {err:.2e} ({:.1} bits); interpolation error {:.2e}",
        -err.log2(),
        max_error(&got, |k, i| sigmoid(f.xs[k][i]))
    );
    assert!(err < 1e-3, "max error {err}");

    // The result is an ordinary ciphertext: square it and decrypt.
    let dev = DeviceEvaluator::new(f.ctx.clone(), CpuBackend::new(f.ctx.rns().clone())).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let y = dev.upload(&out).unwrap();
    let sq = dev
        .download(&dev.mul_relin_rescale(&y, &y, &keys).unwrap())
        .unwrap();
    let got = decrypt(&f, &sq);
    let err = max_error(&got, |k, i| p.eval(f.xs[k][i]).powi(2));
    assert!(err < 2e-3, "squared: max error {err}");
}

#[test]
fn low_degrees_and_the_unit_interval() {
    let f = fixture(-1.0, 1.0);
    for coeffs in [
        vec![0.25],
        vec![0.0, 1.0],
        vec![0.1, -0.4, 0.3],
        vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ] {
        let p = Chebyshev::new(coeffs.clone(), -1.0, 1.0).unwrap();
        let out = evaluate(&f, CpuBackend::new(f.ctx.rns().clone()), &p);
        let got = decrypt(&f, &out);
        let err = max_error(&got, |k, i| p.eval(f.xs[k][i]));
        let xin = decrypt(&f, &f.cts);
        let eval_err = max_error(&got, |k, i| p.eval(xin[k][i]));
        eprintln!("{coeffs:?}: max error {err:.2e}, {eval_err:.2e} against p(decrypted input)");
        // At scale 2^26 the input carries about 6e-5 of noise, and each doubling of the power
        // basis multiplies the noise of the rescales before it by up to 4 (T_7: 3.4e-4 here).
        assert!(
            err < 2e-3 && eval_err < 1e-3,
            "{coeffs:?}: max error {err}, {eval_err}"
        );
    }
}

#[test]
fn a_polynomial_deeper_than_the_input_is_refused() {
    let f = fixture(-1.0, 1.0);
    let dev = DeviceEvaluator::new(f.ctx.clone(), CpuBackend::new(f.ctx.rns().clone())).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let x = dev.drop_levels(&dev.upload(&f.cts).unwrap(), 6).unwrap();
    let p = Chebyshev::new(vec![0.5; 32], -1.0, 1.0).unwrap();
    let Err(err) = PolynomialEvaluator::new(&dev, &keys).evaluate(&x, &p, 1e6) else {
        panic!("a degree-31 polynomial at level 4 was evaluated");
    };
    assert!(
        matches!(
            err,
            CircuitError::OutOfLevels {
                needed: 5,
                level: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("needs 5 levels"), "{err}");
}

#[test]
fn gpu_polynomial_evaluation_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let f = fixture(-4.0, 4.0);
    let p = Chebyshev::interpolate(|x| x.tanh(), 15, -4.0, 4.0).unwrap();
    let cpu = evaluate(&f, CpuBackend::new(f.ctx.rns().clone()), &p);
    let gpu = evaluate(&f, GpuBackend::new(rt, f.ctx.rns().clone()).unwrap(), &p);
    assert!(cpu == gpu, "GPU and CPU ciphertexts differ");
    let err = max_error(&decrypt(&f, &gpu), |k, i| p.eval(f.xs[k][i]));
    assert!(err < 1e-3, "max error {err}");
    // Double-prime scaling (two primes per level, scale 2^52) too.
    let f = fixture_with(-4.0, 4.0, params(12, 52));
    let cpu = evaluate_by(&f, CpuBackend::new(f.ctx.rns().clone()), &p, 2);
    let rt = common::gpu().unwrap();
    let on_gpu = evaluate_by(&f, GpuBackend::new(rt, f.ctx.rns().clone()).unwrap(), &p, 2);
    assert!(
        cpu == on_gpu,
        "GPU and CPU ciphertexts differ at two primes per level"
    );
    let err = max_error(&decrypt(&f, &on_gpu), |k, i| p.eval(f.xs[k][i]));
    assert!(err < 1e-8, "max error {err}");
}

/// Double-prime scaling: every level divides by two 26-bit primes, so the scale is 2^52 and the
/// same degree-31 polynomial comes out with about 20 more bits than at 2^26 (issue 17: a large
/// scale on 32-bit words).
#[test]
fn double_prime_scaling_keeps_a_2_52_scale_through_the_polynomial() {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let p = Chebyshev::interpolate(sigmoid, 31, -8.0, 8.0).unwrap();
    let mut bits = Vec::new();
    for (primes, levels, log_scale) in [(1, 10, 26), (2, 14, 52)] {
        let f = fixture_with(-8.0, 8.0, params(levels, log_scale));
        let out = evaluate_by(&f, CpuBackend::new(f.ctx.rns().clone()), &p, primes);
        let got = decrypt(&f, &out);
        let xin = decrypt(&f, &f.cts);
        let err = max_error(&got, |k, i| p.eval(xin[k][i]));
        eprintln!(
            "scale 2^{log_scale}, {primes} prime(s) per level: input error {:.2e}, evaluation error {err:.2e} ({:.1} bits)",
            max_error(&xin, |k, i| f.xs[k][i]),
            -err.log2()
        );
        bits.push(-err.log2());
    }
    assert!(bits[0] > 11.0 && bits[1] > 30.0, "{bits:?}");
}

#[test]
fn rescale_by_one_prime_is_rescale_and_by_two_divides_by_both() {
    let f = fixture(-1.0, 1.0);
    let dev = DeviceEvaluator::new(f.ctx.clone(), CpuBackend::new(f.ctx.rns().clone())).unwrap();
    let x = dev.upload(&f.cts).unwrap();
    let one = dev.rescale_by(&x, 1).unwrap();
    let want = dev.rescale(&x).unwrap();
    assert!(dev.download(&one).unwrap() == dev.download(&want).unwrap());
    assert_eq!((one.level(), one.scale()), (want.level(), want.scale()));
    let q = f.ctx.params().q();
    let top = x.level();
    let qq = q[top] as f64 * q[top - 1] as f64;
    let y = dev
        .rescale_by(&dev.mul_const(&x, 1.0, Some(qq)).unwrap(), 2)
        .unwrap();
    assert_eq!(y.level(), top - 2);
    assert!((y.scale() / x.scale() - 1.0).abs() < 1e-12);
    let err = max_error(&decrypt(&f, &dev.download(&y).unwrap()), |k, i| f.xs[k][i]);
    assert!(err < 1e-3, "{err}");
    assert!(dev
        .rescale_by(&dev.drop_levels(&x, top - 1).unwrap(), 2)
        .is_err());
}

/// Values `I + e` with integer parts `|I| <= 10` and `|e| <= 2^-8`, as after CoeffsToSlots.
fn near_integers(slots: usize, k: usize) -> Vec<f64> {
    (0..slots)
        .map(|i| {
            let int = ((i * 7 + k * 3) % 21) as f64 - 10.0;
            let e = (((i * 13 + k) % 1000) as f64 / 1000.0 - 0.5) / 128.0;
            int + e
        })
        .collect()
}

/// Encrypts [`near_integers`] and runs EvalMod on `backend` with 2 primes per level.
fn eval_mod_on<B: Backend>(f: &Fixture, backend: B, m: &EvalMod) -> Vec<Ciphertext> {
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    let keys = dev.upload_keys(&f.keys).unwrap();
    let x = dev.upload(&f.cts).unwrap();
    let pe = PolynomialEvaluator::new(&dev, &keys)
        .with_primes_per_level(2)
        .unwrap();
    let scale = f.ctx.params().default_scale();
    let y = m.evaluate(&pe, &x, scale).unwrap();
    assert_eq!(y.level(), x.level() - 2 * m.cost().levels);
    assert!((y.scale() / scale - 1.0).abs() < 1e-9, "{}", y.scale());
    dev.download(&y).unwrap()
}

/// A fixture whose slots hold [`near_integers`].
fn near_integer_fixture(levels: usize) -> Fixture {
    let mut f = fixture_with(-10.0, 10.0, params(levels, 52));
    let params = f.ctx.params().clone();
    let mut encryptor = Encryptor::with_sampler(f.ctx.clone(), Sampler::from_seed_insecure(9));
    f.xs = (0..2).map(|k| near_integers(f.enc.slots(), k)).collect();
    f.cts =
        f.xs.iter()
            .map(|x| {
                let pt = f
                    .enc
                    .encode(x, params.max_level(), params.default_scale())
                    .unwrap();
                encryptor.encrypt(&pt, &f.pk).unwrap()
            })
            .collect();
    f
}

#[test]
fn eval_mod_removes_the_integer_part() {
    let m = EvalMod::new(12.0, 30, 3).unwrap();
    let cost = m.cost();
    // Degree 30 on [-12, 12]: 5 levels and the interval map, then 3 double angles.
    assert_eq!(cost.levels, 9, "{cost:?}");
    let f = near_integer_fixture(20);
    let out = eval_mod_on(&f, CpuBackend::new(f.ctx.rns().clone()), &m);
    let got = decrypt(&f, &out);
    let xin = decrypt(&f, &f.cts);
    let two_pi = 2.0 * std::f64::consts::PI;
    // Against the circuit's own f64 value, and against 2 pi (x - round(x)).
    let err = max_error(&got, |k, i| m.eval(xin[k][i]));
    let modular = max_error(&got, |k, i| two_pi * (xin[k][i] - xin[k][i].round()));
    let sine = max_error(&got, |k, i| (two_pi * xin[k][i]).sin());
    eprintln!(
        "EvalMod {cost:?} at 2^52: {err:.2e} from the circuit in f64 ({:.1} bits), {sine:.2e} from sin(2 pi x), {modular:.2e} from 2 pi (x - round x)",
        -err.log2()
    );
    assert!(err < 1e-7, "{err}");
    // sin(2 pi e) - 2 pi e is at most (2 pi 2^-8)^3 / 6 = 2.2e-6 for |e| <= 2^-8.
    assert!(modular < 3e-6, "{modular}");
}

#[test]
fn gpu_eval_mod_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let m = EvalMod::new(12.0, 15, 2).unwrap();
    let f = near_integer_fixture(16);
    let cpu = eval_mod_on(&f, CpuBackend::new(f.ctx.rns().clone()), &m);
    let on_gpu = eval_mod_on(&f, GpuBackend::new(rt, f.ctx.rns().clone()).unwrap(), &m);
    assert!(cpu == on_gpu, "GPU and CPU EvalMod ciphertexts differ");
}

/// A complex transformation with scattered diagonals (as a factor of a DFT has) on complex slots:
/// the encrypted result is the matrix product of the decrypted input, on both backends.
fn linear_transform_on<B: Backend>(backend: B) -> Vec<Ciphertext> {
    use cryptodl::circuits::LinearTransform;
    use num_complex::Complex64;
    let params = params(4, 26);
    let ctx = Context::new(&params).unwrap();
    let slots = params.slots();
    let diagonals: std::collections::BTreeMap<usize, Vec<Complex64>> =
        [0, 1, 2, 64, 65, 700, 1023, 2047]
            .into_iter()
            .map(|k| {
                let d = (0..slots)
                    .map(|j| {
                        Complex64::new(
                            ((j * 3 + k) % 7) as f64 / 7.0 - 0.5,
                            ((j + k) % 5) as f64 / 10.0,
                        )
                    })
                    .collect();
                (k, d)
            })
            .collect();
    let lt = LinearTransform::from_diagonals(slots, diagonals).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(3));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &lt.rotations(), false).unwrap();
    let enc = Encoder::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(4));
    let x: Vec<Complex64> = (0..slots)
        .map(|j| {
            Complex64::new(
                ((j * 11) % 13) as f64 / 13.0 - 0.5,
                ((j * 5) % 9) as f64 / 9.0 - 0.5,
            )
        })
        .collect();
    let top = params.max_level();
    let ct = encryptor
        .encrypt(
            &enc.encode_complex(&x, top, params.default_scale()).unwrap(),
            &pk,
        )
        .unwrap();
    let dev = DeviceEvaluator::new(ctx.clone(), backend).unwrap();
    let dkeys = dev.upload_keys(&keys).unwrap();
    let encoded = lt.encode(&dev, top, 1).unwrap();
    let y = encoded
        .apply(
            &dev,
            &dkeys,
            &dev.upload(&[ct.clone(), ct.clone()]).unwrap(),
        )
        .unwrap();
    assert_eq!((y.level(), y.count()), (top - 1, 2));
    assert!((y.scale() / params.default_scale() - 1.0).abs() < 1e-9);
    let out = dev.download(&y).unwrap();
    let dec = Decryptor::new(ctx.clone());
    let xin = enc.decode_complex(&dec.decrypt(&ct, &sk).unwrap());
    let want = lt.apply_plain(&xin);
    for c in &out {
        let got = enc.decode_complex(&dec.decrypt(c, &sk).unwrap());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).norm())
            .fold(0.0, f64::max);
        // One rotation at these toy parameters (digits of two primes, P of two 30-bit primes)
        // already carries 2.4e-4 of key-switching noise; a wrong diagonal or step gives O(1).
        assert!(err < 2e-3, "max error {err}");
    }
    assert!(lt
        .encode(&dev, top - 1, 1)
        .unwrap()
        .apply(&dev, &dkeys, &dev.upload(&[ct]).unwrap())
        .is_err());
    out
}

#[test]
fn a_linear_transformation_multiplies_the_slots_by_the_matrix() {
    linear_transform_on(CpuBackend::new(
        Context::new(&params(4, 26)).unwrap().rns().clone(),
    ));
}

#[test]
fn gpu_linear_transformation_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let ctx = Context::new(&params(4, 26)).unwrap();
    let cpu = linear_transform_on(CpuBackend::new(ctx.rns().clone()));
    let on_gpu = linear_transform_on(GpuBackend::new(rt, ctx.rns().clone()).unwrap());
    assert!(cpu == on_gpu, "GPU and CPU transformations differ");
}

/// The level-0 ciphertexts `low` raised to `level` on `backend`.
fn mod_raise_on<B: Backend>(
    f: &Fixture,
    backend: B,
    low: &[Ciphertext],
    level: usize,
) -> Vec<Ciphertext> {
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    let raised = dev.mod_raise(&dev.upload(low).unwrap(), level).unwrap();
    dev.download(&raised).unwrap()
}

#[test]
fn gpu_mod_raise_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let f = fixture(-1.0, 1.0);
    let top = f.ctx.params().max_level();
    let eval = Evaluator::new(f.ctx.clone());
    let low: Vec<Ciphertext> = f
        .cts
        .iter()
        .map(|c| {
            let mut c = c.clone();
            eval.drop_levels_assign(&mut c, top).unwrap();
            c
        })
        .collect();
    let cpu = mod_raise_on(&f, CpuBackend::new(f.ctx.rns().clone()), &low, top);
    let on_gpu = mod_raise_on(
        &f,
        GpuBackend::new(rt, f.ctx.rns().clone()).unwrap(),
        &low,
        top,
    );
    assert_eq!(cpu[0].level(), top);
    assert!(cpu == on_gpu, "GPU and CPU ModRaise differ");
}
