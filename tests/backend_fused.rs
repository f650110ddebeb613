//! The CPU backend's fused key switching (per polynomial, in scratch) and plaintext dot product
//! (`mul_sum`) equal the composition of its primitives word for word (`backend::composed`, the
//! trait's default implementations and what the GPU runs); tensors carry their representation and operations on the wrong one are
//! refused; the CPU backend reuses its buffers and counts its launches.

use cryptodl::backend::cpu::CpuBackend;
use cryptodl::backend::{composed, Backend, BackendError, Form, RnsContext, Shape, SwitchKey};
use cryptodl_kernels::primes::ntt_primes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Case {
    ctx: RnsContext,
    q: Vec<usize>,
    special: Vec<usize>,
    dnum: usize,
    alpha: usize,
}

/// `q_limbs` data primes and `p_limbs` special ones (30-bit, as the presets' largest).
fn case(n: usize, q_limbs: usize, p_limbs: usize, alpha: usize) -> Case {
    let primes = ntt_primes(30, n, q_limbs + p_limbs, &[]).unwrap();
    Case {
        ctx: RnsContext::new(n, &primes).unwrap(),
        q: (0..q_limbs).collect(),
        special: (q_limbs..q_limbs + p_limbs).collect(),
        dnum: q_limbs.div_ceil(alpha),
        alpha,
    }
}

fn random(ctx: &RnsContext, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let n = ctx.n();
    let mut out = Vec::with_capacity(shape.words(n));
    for _ in 0..shape.polys {
        for &m in &shape.moduli {
            let q = ctx.primes()[m];
            out.extend((0..n).map(|_| rng.random_range(0..q)));
        }
    }
    out
}

fn key(
    cpu: &CpuBackend,
    c: &Case,
    rng: &mut ChaCha8Rng,
) -> SwitchKey<<CpuBackend as Backend>::Tensor> {
    let all: Vec<usize> = c.q.iter().chain(&c.special).copied().collect();
    let shape = Shape::ntt(2 * c.dnum, all);
    SwitchKey {
        key: cpu.upload(&random(&c.ctx, &shape, rng), shape).unwrap(),
        dnum: c.dnum,
        alpha: c.alpha,
        special: c.special.clone(),
    }
}

#[test]
fn fused_key_switching_equals_the_composed_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // One and several special primes; digits of one and of several limbs; full and partial
    // last digits; top level and lower levels (fewer digits than the key has); a batch of one
    // (parallel inside the polynomial) and of several.
    for (n, q_limbs, p_limbs, alpha) in [(1024, 5, 1, 1), (2048, 7, 2, 2), (1024, 6, 3, 3)] {
        let c = case(n, q_limbs, p_limbs, alpha);
        let cpu = CpuBackend::new(c.ctx.clone());
        let k = key(&cpu, &c, &mut rng);
        for limbs in [q_limbs, q_limbs - 1, 2] {
            for count in [1usize, 3] {
                let what = format!(
                    "n {n}, {limbs} of {q_limbs} limbs, |P| {p_limbs}, alpha {alpha}, {count} ct"
                );
                let map = c.q[..limbs].to_vec();
                let ct = Shape::ntt(2 * count, map.clone());
                let a = cpu
                    .upload(&random(&c.ctx, &ct, &mut rng), ct.clone())
                    .unwrap();
                let b = cpu
                    .upload(&random(&c.ctx, &ct, &mut rng), ct.clone())
                    .unwrap();
                let d = cpu.slice_components(&a, 2, 1..2).unwrap();
                assert_eq!(
                    cpu.keyswitch_ext(&d, &k).unwrap(),
                    composed::keyswitch_ext(&cpu, &d, &k).unwrap(),
                    "keyswitch_ext, {what}"
                );
                assert_eq!(
                    cpu.keyswitch(&d, &k).unwrap(),
                    composed::keyswitch(&cpu, &d, &k).unwrap(),
                    "keyswitch, {what}"
                );
                let prod = cpu.tensor(&a, &b).unwrap();
                let fused = cpu.relin_rescale(&prod, &k).unwrap();
                assert_eq!(
                    fused,
                    composed::relin_rescale(&cpu, &prod, &k).unwrap(),
                    "relin_rescale, {what}"
                );
                assert_eq!(cpu.shape(&fused).moduli, map[..limbs - 1].to_vec());
                assert_eq!(
                    cpu.mul_relin_rescale(&a, &b, &k).unwrap(),
                    fused,
                    "mul_relin_rescale, {what}"
                );
            }
        }
    }
}

#[test]
fn fused_linear_and_rescale_equals_linear_then_rescale() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let c = case(1024, 4, 1, 1);
    let cpu = CpuBackend::new(c.ctx.clone());
    let inputs = 40;
    let shape = Shape::ntt(2 * inputs, c.q.clone());
    let x = cpu
        .upload(&random(&c.ctx, &shape, &mut rng), shape.clone())
        .unwrap();
    // A dense row, an empty row, and many short rows (several blocks per thread).
    let outputs = 150;
    let mut row_ptr = vec![0u32];
    let mut cols = Vec::new();
    for j in 0..outputs {
        let len = match j {
            0 => inputs,
            1 => 0,
            _ => rng.random_range(1..=9),
        };
        cols.extend((0..len).map(|e| {
            if j == 0 {
                e as u32
            } else {
                rng.random_range(0..inputs as u32)
            }
        }));
        row_ptr.push(cols.len() as u32);
    }
    let nnz = cols.len();
    let w = cryptodl::backend::LinearWeights {
        inputs,
        values: c
            .q
            .iter()
            .flat_map(|&m| {
                let q = c.ctx.primes()[m];
                (0..nnz).map(|_| rng.random_range(0..q)).collect::<Vec<_>>()
            })
            .collect(),
        bias: (0..outputs * c.q.len())
            .map(|i| rng.random_range(0..c.ctx.primes()[i % c.q.len()]))
            .collect(),
        row_ptr,
        cols,
    };
    let fused = cpu.linear_rescale(&x, 2, &w).unwrap();
    let want = cpu
        .divide_round(&cpu.linear(&x, 2, &w).unwrap(), 1)
        .unwrap();
    assert_eq!(fused, want);
    assert_eq!(cpu.shape(&fused).polys, 2 * outputs);
    assert_eq!(cpu.shape(&fused).moduli, c.q[..3].to_vec());
}

#[test]
fn fused_plaintext_dot_product_equals_join_product_and_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let c = case(1024, 3, 1, 1);
    let cpu = CpuBackend::new(c.ctx.clone());
    let shape = Shape::ntt(2, c.q.clone());
    // 1 part, a few, and more than the 16 products one u64 accumulator takes.
    for count in [1usize, 5, 37] {
        let parts: Vec<_> = (0..count)
            .map(|_| {
                cpu.upload(&random(&c.ctx, &shape, &mut rng), shape.clone())
                    .unwrap()
            })
            .collect();
        let refs: Vec<_> = parts.iter().collect();
        let pshape = Shape::ntt(2 * count, c.q.clone());
        let plains = cpu
            .upload(&random(&c.ctx, &pshape, &mut rng), pshape)
            .unwrap();
        let fused = cpu.mul_sum(&refs, &plains).unwrap();
        assert_eq!(
            fused,
            composed::mul_sum(&cpu, &refs, &plains).unwrap(),
            "{count} parts"
        );
        assert_eq!(cpu.shape(&fused), &shape);
    }
    // Mismatched plaintexts are refused.
    let one = cpu
        .upload(&random(&c.ctx, &shape, &mut rng), shape.clone())
        .unwrap();
    let err = cpu.mul_sum(&[&one, &one], &one).unwrap_err();
    assert!(
        matches!(err, BackendError::Shape { op: "mul_sum", .. }),
        "{err}"
    );
}

#[test]
fn operations_refuse_the_wrong_representation() {
    let c = case(1024, 3, 1, 1);
    let cpu = CpuBackend::new(c.ctx.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let coeff = Shape::coeff(2, c.q.clone());
    let mut x = cpu
        .upload(&random(&c.ctx, &coeff, &mut rng), coeff)
        .unwrap();
    let wrong = |r: Result<_, BackendError>, op: &str, expected: Form| match r {
        Err(BackendError::Representation {
            op: o,
            expected: e,
            found,
        }) => {
            assert_eq!((o, e), (op, expected));
            assert_ne!(found, expected);
        }
        Err(other) => panic!("{op}: wrong error {other}"),
        Ok(_) => panic!("{op} accepted the wrong representation"),
    };
    // Coefficient form: no product, no inverse NTT, no division, no NTT-form automorphism.
    wrong(cpu.mul(&x, &x).map(drop), "mul", Form::Ntt);
    wrong(cpu.tensor(&x, &x).map(drop), "tensor", Form::Ntt);
    wrong(cpu.ntt_inverse(&mut x), "ntt_inverse", Form::Ntt);
    wrong(cpu.divide_round(&x, 1).map(drop), "divide_round", Form::Ntt);
    wrong(
        cpu.automorphism_ntt(&x, 3).map(drop),
        "automorphism_ntt",
        Form::Ntt,
    );
    // NTT form: no base conversion, no forward NTT, no coefficient automorphism.
    cpu.ntt_forward(&mut x).unwrap();
    assert_eq!(cpu.shape(&x).form, Form::Ntt);
    wrong(
        cpu.basis_convert(&x, std::slice::from_ref(&(0..3)), &c.special)
            .map(drop),
        "basis_convert",
        Form::Coeff,
    );
    wrong(cpu.ntt_forward(&mut x), "ntt_forward", Form::Coeff);
    wrong(
        cpu.automorphism_coeff(&x, 3).map(drop),
        "automorphism_coeff",
        Form::Coeff,
    );
    // Mixed forms do not add.
    let mut y = cpu.duplicate(&x).unwrap();
    cpu.ntt_inverse(&mut y).unwrap();
    let e = cpu.add(&x, &y).unwrap_err();
    assert!(e.to_string().contains("form"), "{e}");
}

#[test]
fn the_cpu_backend_reuses_buffers_and_counts_launches() {
    let c = case(1024, 3, 1, 1);
    let cpu = CpuBackend::new(c.ctx.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shape = Shape::ntt(64, c.q.clone());
    let data = random(&c.ctx, &shape, &mut rng);
    let x = cpu.upload(&data, shape.clone()).unwrap();
    let before = cpu.counters();
    assert_eq!(before.uploads, 1);
    assert_eq!(before.upload_bytes, data.len() as u64 * 4);
    let y = cpu.add(&x, &x).unwrap();
    drop(y);
    let fresh = cpu.memory().fresh_bytes;
    // The same shape again: the freed buffer is reused, nothing new is allocated.
    for _ in 0..5 {
        drop(cpu.add(&x, &x).unwrap());
    }
    assert_eq!(cpu.memory().fresh_bytes, fresh);
    let after = cpu.counters();
    assert_eq!(after.launches - before.launches, 6);
    assert_eq!(cpu.download(&x).unwrap(), data);
    assert_eq!(cpu.counters().download_bytes, data.len() as u64 * 4);
    let m = cpu.memory();
    assert_eq!(m.live_bytes, data.len() as u64 * 4);
    assert!(m.peak_bytes >= 2 * data.len() as u64 * 4);
}
