//! Bootstrapping (`circuits::Bootstrapper`) at a small insecure ring: a ciphertext brought down
//! to its base level comes back with levels to spend and the same slots within a precision
//! bound, it multiplies on correctly, the encapsulation keys survive a file round trip, a
//! missing key is refused, and the GPU gives the CPU's words (lavapipe in CI).

use cryptodl::backend::cpu::CpuBackend;
use cryptodl::backend::gpu::GpuBackend;
use cryptodl::backend::Backend;
use cryptodl::circuits::{BootstrapConfig, Bootstrapper, CircuitError};
use cryptodl::ckks::serialize::{evaluation_keys_from_bytes, evaluation_keys_to_bytes};
use cryptodl::ckks::*;
use num_complex::Complex64;
use std::sync::Arc;

mod common;
use common::gpu;

/// The toy preset's circuit: CoeffsToSlots and SlotsToCoeffs in 3 levels each, EvalMod in 8,
/// two primes per level (28 primes), base `Q_0 = q_0 q_1` (56 bits).
fn config() -> BootstrapConfig {
    BootstrapConfig::for_preset("toyboot1024").unwrap()
}

/// `toyboot1024`: N = 1024, a 30-bit `q_0`, 35 primes of 26 bits (`q_1`, one for ScaleDown, 28
/// for bootstrapping, 5 left), 4 special primes, message scale 2^46 = `Q_0 / 2^10` (insecure:
/// tests only).
fn params() -> Parameters {
    Preset::by_name("toyboot1024")
        .unwrap()
        .parameters(true)
        .unwrap()
}

struct Fixture {
    ctx: Arc<Context>,
    sk: SecretKey,
    keys: EvaluationKeys,
    enc: Encoder,
    ct: Ciphertext,
    z: Vec<Complex64>,
}

fn fixture() -> Fixture {
    let params = params();
    let ctx = Context::new(&params).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(11));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = config().keys(&mut kg, &sk, &params, &[]).unwrap();
    let enc = Encoder::new(ctx.clone());
    let z: Vec<Complex64> = (0..enc.slots())
        .map(|i| {
            let t = i as f64;
            Complex64::new((t * 0.7).sin(), (t * 0.3).cos() * 0.5)
        })
        .collect();
    // Encrypted at level 2, one level above the base: bootstrapping drops it.
    let pt = enc.encode_complex(&z, 2, params.default_scale()).unwrap();
    let ct = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(12))
        .encrypt(&pt, &pk)
        .unwrap();
    Fixture {
        ctx,
        sk,
        keys,
        enc,
        ct,
        z,
    }
}

/// Bootstraps the fixture's ciphertext on `backend`; returns it and its square (multiplied on
/// after bootstrapping).
fn bootstrap_on<B: Backend>(f: &Fixture, backend: B) -> (Ciphertext, Ciphertext) {
    let dev = DeviceEvaluator::new(f.ctx.clone(), backend).unwrap();
    // Keys trimmed to the levels the circuit uses them at: any key used higher would fail.
    let keys = dev
        .upload_keys_trimmed(f.keys.clone(), &config().key_levels(&f.ctx).unwrap())
        .unwrap();
    let boot = Bootstrapper::new(&dev, &keys, config()).unwrap();
    let x = dev.upload(std::slice::from_ref(&f.ct)).unwrap();
    let y = boot.bootstrap(&x).unwrap();
    let cost = boot.cost();
    assert_eq!(cost.primes, 28, "{cost:?}");
    assert_eq!(y.level(), f.ctx.params().max_level() - 28);
    assert_eq!(y.level(), cost.output_level);
    assert!(
        (y.scale() / f.ct.scale() - 1.0).abs() < 1e-12,
        "{}",
        y.scale()
    );
    let sq = dev.mul_relin_rescale(&y, &y, &keys).unwrap();
    (
        dev.download(&y).unwrap().remove(0),
        dev.download(&sq).unwrap().remove(0),
    )
}

fn decrypt(f: &Fixture, ct: &Ciphertext) -> Vec<Complex64> {
    f.enc
        .decode_complex(&Decryptor::new(f.ctx.clone()).decrypt(ct, &f.sk).unwrap())
}

/// Mean and minimum bits of precision (`-log2 |error|`) over the slots.
fn bits(got: &[Complex64], want: impl Fn(usize) -> Complex64) -> (f64, f64) {
    let errs: Vec<f64> = got
        .iter()
        .enumerate()
        .map(|(i, g)| -(g - want(i)).norm().max(1e-30).log2())
        .collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    (mean, errs.iter().copied().fold(f64::INFINITY, f64::min))
}

#[test]
fn bootstrapping_restores_levels_and_the_slots_multiply_on() {
    let f = fixture();
    let (y, sq) = bootstrap_on(&f, CpuBackend::new(f.ctx.rns().clone()));
    let (mean, min) = bits(&decrypt(&f, &y), |i| f.z[i]);
    eprintln!(
        "toy bootstrapping (N = 1024, Q_0 / scale = 2^10): {mean:.1} bits mean, {min:.1} min"
    );
    // Measured 23.8 bits mean, 22.2 minimum (the sine's error at Q_0 / scale = 2^10 is about
    // 2^-18 relative on the coefficients); a broken step gives garbage, not a bit less.
    assert!(
        mean > 20.0 && min > 18.0,
        "{mean:.1} bits mean, {min:.1} min"
    );
    let (mean, min) = bits(&decrypt(&f, &sq), |i| f.z[i] * f.z[i]);
    assert!(
        mean > 19.0 && min > 17.0,
        "square: {mean:.1} bits mean, {min:.1} min"
    );
}

#[test]
fn encapsulation_keys_survive_a_file_round_trip_and_are_required() {
    let f = fixture();
    let params = f.ctx.params();
    let bytes = evaluation_keys_to_bytes(params, &f.keys).unwrap();
    let back = evaluation_keys_from_bytes(&bytes, &f.ctx).unwrap();
    assert!(back == f.keys, "keys changed in the round trip");
    let e = back.encapsulation.as_ref().unwrap();
    // The key s -> s' lives on q_0 and the special primes that cover it (two 30-bit ones here).
    assert_eq!((e.base, e.special), (1, 2));
    let mut without = f.keys.clone();
    without.encapsulation = None;
    let dev = DeviceEvaluator::new(f.ctx.clone(), CpuBackend::new(f.ctx.rns().clone())).unwrap();
    let keys = dev.upload_keys(&without).unwrap();
    let err = Bootstrapper::new(&dev, &keys, config()).err().unwrap();
    assert!(
        matches!(err, CircuitError::Ckks(CkksError::MissingEncapsulationKeys)),
        "{err}"
    );
    // A circuit deeper than the parameters is refused, naming what it needs.
    let deep = BootstrapConfig {
        coeffs_to_slots_levels: 9,
        ..config()
    };
    let err = deep.cost(params).unwrap_err();
    assert!(matches!(err, CircuitError::OutOfLevels { .. }), "{err}");
}

#[test]
fn gpu_bootstrapping_equals_the_cpu_word_for_word() {
    let Some(rt) = gpu() else { return };
    let f = fixture();
    let cpu = bootstrap_on(&f, CpuBackend::new(f.ctx.rns().clone()));
    let on_gpu = bootstrap_on(&f, GpuBackend::new(rt, f.ctx.rns().clone()).unwrap());
    assert!(cpu == on_gpu, "GPU and CPU bootstrapping differ");
}

#[test]
fn trimmed_keys_rotate_like_whole_ones_and_refuse_higher_levels() {
    let f = fixture();
    let dev = DeviceEvaluator::new(f.ctx.clone(), CpuBackend::new(f.ctx.rns().clone())).unwrap();
    let steps = [1i64, 2];
    let g1 = f.ctx.galois_element(1);
    let mut levels = KeyLevels::default();
    levels.galois.insert(g1, 10); // one key trimmed, the other whole, in one hoisted batch
    let whole = dev.upload_keys(&f.keys).unwrap();
    let trimmed = dev.upload_keys_trimmed(f.keys.clone(), &levels).unwrap();
    let enc = Encoder::new(f.ctx.clone());
    let x: Vec<f64> = (0..enc.slots()).map(|i| i as f64 / 512.0).collect();
    let pk = KeyGenerator::with_sampler(f.ctx.clone(), Sampler::from_seed_insecure(11))
        .public_key(&f.sk);
    let ct = Encryptor::with_sampler(f.ctx.clone(), Sampler::from_seed_insecure(3))
        .encrypt(&enc.encode(&x, 10, 2f64.powi(30)).unwrap(), &pk)
        .unwrap();
    let ct = dev.upload(&[ct]).unwrap();
    let a = dev.rotate_hoisted(&ct, &steps, &whole).unwrap();
    let b = dev.rotate_hoisted(&ct, &steps, &trimmed).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert!(dev.download(a).unwrap() == dev.download(b).unwrap());
    }
    // Above its level the trimmed key is refused, not misused.
    let high = dev
        .mod_raise(&dev.drop_levels(&ct, 9).unwrap(), 12)
        .unwrap();
    assert!(dev.rotate(&high, 1, &trimmed).is_err());
    assert!(dev.rotate(&high, 1, &whole).is_ok());
}

/// Sparse packing: 64 slots repeated 8 times over the ring's 512. The sum over the copies
/// keeps the plaintext in `X^8`, both halves share one EvalMod, and the slots come back
/// repeated, within the bound; the GPU gives the CPU's words. Slot counts that are not a
/// power of two up to N/2 are refused.
#[test]
fn sparse_bootstrapping_restores_the_repeated_slots_on_both_backends() {
    let params = params();
    let ctx = Context::new(&params).unwrap();
    let sparse = BootstrapConfig {
        slots: Some(64),
        ..config()
    };
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(21));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = sparse.keys(&mut kg, &sk, &params, &[]).unwrap();
    let enc = Encoder::new(ctx.clone());
    let z: Vec<Complex64> = (0..enc.slots())
        .map(|i| {
            let t = (i % 64) as f64;
            Complex64::new((t * 0.7).sin(), (t * 0.3).cos() * 0.5)
        })
        .collect();
    let pt = enc.encode_complex(&z, 2, params.default_scale()).unwrap();
    let ct = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(22))
        .encrypt(&pt, &pk)
        .unwrap();
    let boot_on = |cpu: bool| -> Option<Ciphertext> {
        fn go<B: Backend>(
            ctx: &Arc<Context>,
            keys: &EvaluationKeys,
            config: &BootstrapConfig,
            ct: &Ciphertext,
            backend: B,
        ) -> Ciphertext {
            let dev = DeviceEvaluator::new(ctx.clone(), backend).unwrap();
            let keys = dev
                .upload_keys_trimmed(keys.clone(), &config.key_levels(ctx).unwrap())
                .unwrap();
            let boot = Bootstrapper::new(&dev, &keys, config.clone()).unwrap();
            let y = boot
                .bootstrap(&dev.upload(std::slice::from_ref(ct)).unwrap())
                .unwrap();
            assert_eq!(y.level(), boot.cost().output_level);
            dev.download(&y).unwrap().remove(0)
        }
        if cpu {
            Some(go(
                &ctx,
                &keys,
                &sparse,
                &ct,
                CpuBackend::new(ctx.rns().clone()),
            ))
        } else {
            let rt = gpu()?;
            Some(go(
                &ctx,
                &keys,
                &sparse,
                &ct,
                GpuBackend::new(rt, ctx.rns().clone()).unwrap(),
            ))
        }
    };
    let y = boot_on(true).unwrap();
    let got = enc.decode_complex(&Decryptor::new(ctx.clone()).decrypt(&y, &sk).unwrap());
    let (mean, min) = bits(&got, |i| z[i]);
    eprintln!("sparse toy bootstrapping (64 slots): {mean:.1} bits mean, {min:.1} min");
    // Measured 23.5 bits mean, 21.7 minimum over all 512 slots (the copies included).
    assert!(
        mean > 20.0 && min > 18.0,
        "{mean:.1} bits mean, {min:.1} min"
    );
    if let Some(g) = boot_on(false) {
        assert!(g == y, "GPU and CPU sparse bootstrapping differ");
    }
    for bad in [3, 1, 1024] {
        let c = BootstrapConfig {
            slots: Some(bad),
            ..config()
        };
        let err = c.cost(&params).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{bad}: {err}");
    }
}
