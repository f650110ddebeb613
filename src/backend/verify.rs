//! Runs every kernel on random inputs on the CPU and the GPU backend and counts mismatching words.

use super::cpu::CpuBackend;
use super::gpu::{GpuBackend, GpuRuntime};
use super::{digit_ranges, Backend, LinearWeights, Result, RnsContext, Shape, SwitchKey};
use cryptodl_kernels::primes::ntt_primes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Prime bit size of every verify preset (primes < 2^30).
pub const PRIME_BITS: u32 = 30;

/// A verification preset: ring degree, `Q` limbs, special primes, digit size, ciphertext count.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyCase {
    /// Ring degree.
    pub n: usize,
    /// Limbs of `Q`.
    pub q_limbs: usize,
    /// Special primes `P`.
    pub p_limbs: usize,
    /// Limbs per key-switching digit.
    pub alpha: usize,
    /// Ciphertexts in the tensor.
    pub count: usize,
    /// The primes (`Q` then `P`); `None` generates `q_limbs + p_limbs` primes of
    /// [`PRIME_BITS`] bits.
    pub primes: Option<Vec<u32>>,
    /// Coefficients per GPU NTT tile; `None`: the backend's choice for the adapter.
    pub ntt_tile: Option<u32>,
}

impl VerifyCase {
    /// The named presets (30-bit primes, within the 128-bit table for log2(QP)):
    /// `n1024`, `n4096`, `n8192` (5 + 2 primes = 210 bits <= 218),
    /// `n16384` (12 + 2 = 420 <= 438), `n32768` (27 + 2 = 870 <= 881).
    pub fn preset(name: &str) -> Option<Self> {
        let (n, q_limbs, p_limbs, alpha, count) = match name {
            "n1024" => (1024, 3, 1, 1, 3),
            "n4096" => (4096, 3, 1, 2, 3),
            "n8192" => (8192, 5, 2, 2, 3),
            "n16384" => (16384, 12, 2, 4, 2),
            "n32768" => (32768, 27, 2, 9, 1),
            _ => return None,
        };
        Some(Self {
            n,
            q_limbs,
            p_limbs,
            alpha,
            count,
            primes: None,
            ntt_tile: None,
        })
    }

    /// Names accepted by [`Self::preset`].
    pub const PRESETS: [&'static str; 5] = ["n1024", "n4096", "n8192", "n16384", "n32768"];
}

/// One row of a verification report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelReport {
    /// Kernel (WGSL entry point or composite operation).
    pub kernel: String,
    /// Ring degree.
    pub n: usize,
    /// Limbs per polynomial of the input.
    pub limbs: usize,
    /// Polynomials (or ciphertexts, for ciphertext kernels) in the input tensor.
    pub count: usize,
    /// Output words that differ between the CPU and the GPU.
    pub mismatches: usize,
}

/// Words that differ (a length difference counts every missing word).
pub fn mismatches(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

fn random_tensor(ctx: &RnsContext, rng: &mut ChaCha8Rng, shape: &Shape) -> Vec<u32> {
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

/// Runs every kernel of `case` on both backends (fresh random inputs from `seed`).
pub fn run_case(rt: Arc<GpuRuntime>, case: &VerifyCase, seed: u64) -> Result<Vec<KernelReport>> {
    let primes = match &case.primes {
        Some(p) => p.clone(),
        None => ntt_primes(PRIME_BITS, case.n, case.q_limbs + case.p_limbs, &[])?,
    };
    let ctx = RnsContext::new(case.n, &primes)?;
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt, ctx.clone())?;
    let gpu = match case.ntt_tile {
        Some(tile) => gpu.with_ntt_tile(tile)?,
        None => gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let q: Vec<usize> = (0..case.q_limbs).collect();
    let p: Vec<usize> = (case.q_limbs..case.q_limbs + case.p_limbs).collect();
    let qp: Vec<usize> = (0..case.q_limbs + case.p_limbs).collect();
    let count = case.count;
    let polys = 2 * count;
    let ct = Shape::ntt(polys, q.clone());
    // The same words read as coefficients, for the kernels that work in that form.
    let ct_coeff = Shape::coeff(polys, q.clone());
    let mut reports = Vec::new();
    let mut report = |kernel: &str, limbs: usize, count: usize, c: &[u32], g: &[u32]| {
        reports.push(KernelReport {
            kernel: kernel.to_string(),
            n: case.n,
            limbs,
            count,
            mismatches: mismatches(c, g),
        });
    };
    let a = random_tensor(&ctx, &mut rng, &ct);
    let b = random_tensor(&ctx, &mut rng, &ct);
    let acc = random_tensor(&ctx, &mut rng, &ct);
    let one = random_tensor(&ctx, &mut rng, &Shape::ntt(1, q.clone()));
    let scalars: Vec<u32> = q
        .iter()
        .map(|&m| rng.random_range(0..ctx.primes()[m]))
        .collect();

    // Unary and binary kernels: same code path on both backends.
    macro_rules! both {
        ($name:expr, $limbs:expr, $count:expr, |$be:ident| $body:expr) => {{
            let c = {
                let $be = &cpu;
                $body
            };
            let g = {
                let $be = &gpu;
                $body
            };
            report($name, $limbs, $count, &c, &g);
        }};
    }
    let l = case.q_limbs;
    both!("ntt_forward", l, polys, |be| {
        let mut t = be.upload(&a, ct_coeff.clone())?;
        be.ntt_forward(&mut t)?;
        be.download(&t)?
    });
    both!("ntt_inverse", l, polys, |be| {
        let mut t = be.upload(&a, ct.clone())?;
        be.ntt_inverse(&mut t)?;
        be.download(&t)?
    });
    both!("ew_add", l, polys, |be| {
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.download(&be.add(&x, &y)?)?
    });
    both!("ew_add (broadcast)", l, polys, |be| {
        let x = be.upload(&a, ct.clone())?;
        let y = be.upload(&one, Shape::ntt(1, q.clone()))?;
        be.download(&be.add(&x, &y)?)?
    });
    both!("ew_sub", l, polys, |be| {
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.download(&be.sub(&x, &y)?)?
    });
    both!("ew_negate", l, polys, |be| {
        let x = be.upload(&a, ct.clone())?;
        be.download(&be.negate(&x)?)?
    });
    both!("ew_mul", l, polys, |be| {
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.download(&be.mul(&x, &y)?)?
    });
    both!("ew_mul_scalar", l, polys, |be| {
        let x = be.upload(&a, ct.clone())?;
        be.download(&be.mul_scalar(&x, &scalars)?)?
    });
    both!("ew_add_scalar", l, polys, |be| {
        let x = be.upload(&a, ct.clone())?;
        be.download(&be.add_scalar(&x, &scalars)?)?
    });
    both!("ew_mac", l, polys, |be| {
        let mut s = be.upload(&acc, ct.clone())?;
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.mac(&mut s, &x, &y)?;
        be.download(&s)?
    });
    both!("ew_tensor", l, count, |be| {
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.download(&be.tensor(&x, &y)?)?
    });
    let g = 5usize.pow(3) % (2 * case.n);
    both!("automorphism_ntt", l, polys, |be| {
        let x = be.upload(&a, ct.clone())?;
        be.download(&be.automorphism_ntt(&x, g)?)?
    });
    both!("automorphism_coeff", l, polys, |be| {
        let x = be.upload(&a, ct_coeff.clone())?;
        be.download(&be.automorphism_coeff(&x, g)?)?
    });
    // A sparse layer over the ciphertexts: one dense row, rows with repeated columns and more
    // than 15 entries (the CPU's lazy-sum fold), an empty row, and zero weights.
    let outputs = count + 2;
    let mut row_ptr = vec![0u32];
    let mut cols = Vec::new();
    for j in 0..outputs {
        let len = match j {
            0 => count,
            1 => 0,
            _ => rng.random_range(1..=20),
        };
        for e in 0..len {
            cols.push(if j == 0 {
                e as u32
            } else {
                rng.random_range(0..count as u32)
            });
        }
        row_ptr.push(cols.len() as u32);
    }
    let nnz = cols.len();
    let weights = LinearWeights {
        inputs: count,
        values: q
            .iter()
            .flat_map(|&m| {
                let qm = ctx.primes()[m];
                (0..nnz)
                    .map(|e| {
                        if e % 7 == 3 {
                            0
                        } else {
                            rng.random_range(0..qm)
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        bias: (0..outputs)
            .flat_map(|_| {
                q.iter()
                    .map(|&m| rng.random_range(0..ctx.primes()[m]))
                    .collect::<Vec<_>>()
            })
            .collect(),
        row_ptr,
        cols,
    };
    both!("linear", l, count, |be| {
        let x = be.upload(&a, ct.clone())?;
        be.download(&be.linear(&x, 2, &weights)?)?
    });
    if case.q_limbs >= 2 {
        both!("linear + divide_round (linear_rescale)", l, count, |be| {
            let x = be.upload(&a, ct.clone())?;
            be.download(&be.linear_rescale(&x, 2, &weights)?)?
        });
    }
    both!("ew_copy (join_components)", l, count, |be| {
        let (x, y) = (be.upload(&a, ct.clone())?, be.upload(&b, ct.clone())?);
        be.download(&be.join_components(count, &[&x, &y])?)?
    });
    if case.q_limbs >= 2 {
        both!("ew_copy (truncate_limbs)", l, polys, |be| {
            let x = be.upload(&a, ct.clone())?;
            be.download(&be.truncate_limbs(&x, l - 1)?)?
        });
    }
    let digits = digit_ranges(case.q_limbs, case.alpha);
    both!("basis_convert (mod-up)", l, polys, |be| {
        let x = be.upload(&a, ct_coeff.clone())?;
        be.download(&be.basis_convert(&x, &digits, &qp)?)?
    });
    both!(
        "ntt_forward_block (mod-up fused: basis_convert_ntt)",
        l,
        polys,
        |be| {
            let x = be.upload(&a, ct_coeff.clone())?;
            be.download(&be.basis_convert_ntt(&x, &digits, &qp)?)?
        }
    );
    let dnum = digits.len();
    let ext_shape = Shape::ntt(polys * dnum, qp.clone());
    let ext = random_tensor(&ctx, &mut rng, &ext_shape);
    let key_shape = Shape::ntt(2 * dnum, qp.clone());
    let key = random_tensor(&ctx, &mut rng, &key_shape);
    both!("keyswitch_inner", qp.len(), polys, |be| {
        let d = be.upload(&ext, ext_shape.clone())?;
        let k = be.upload(&key, key_shape.clone())?;
        be.download(&be.keyswitch_inner(&d, dnum, &k, &qp)?)?
    });
    if case.q_limbs >= 2 {
        both!("divide_round (rescale)", l, polys, |be| {
            let x = be.upload(&a, ct.clone())?;
            be.download(&be.divide_round(&x, 1)?)?
        });
    }
    let full = Shape::ntt(polys, qp.clone());
    let x_qp = random_tensor(&ctx, &mut rng, &full);
    both!("divide_round (mod-down)", qp.len(), polys, |be| {
        let x = be.upload(&x_qp, full.clone())?;
        be.download(&be.divide_round(&x, case.p_limbs)?)?
    });
    both!(
        "ew_mul_scalar_acc (add_scaled_prefix)",
        qp.len(),
        polys,
        |be| {
            let mut s = be.upload(&x_qp, full.clone())?;
            let x = be.upload(&a, ct.clone())?;
            be.add_scaled_prefix(&mut s, &x, &scalars)?;
            be.download(&s)?
        }
    );
    both!("keyswitch_ext", l, polys, |be| {
        let d = be.upload(&a, ct.clone())?;
        let k = SwitchKey {
            key: be.upload(&key, key_shape.clone())?,
            dnum,
            alpha: case.alpha,
            special: p.clone(),
        };
        be.download(&be.keyswitch_ext(&d, &k)?)?
    });
    if case.q_limbs >= 2 {
        // Relinearize and rescale at once: count products of 3 components.
        let prod_shape = Shape::ntt(3 * count, q.clone());
        let prod = random_tensor(&ctx, &mut rng, &prod_shape);
        both!("relin_rescale", l, count, |be| {
            let x = be.upload(&prod, prod_shape.clone())?;
            let k = SwitchKey {
                key: be.upload(&key, key_shape.clone())?,
                dnum,
                alpha: case.alpha,
                special: p.clone(),
            };
            be.download(&be.relin_rescale(&x, &k)?)?
        });
    }
    both!("keyswitch", l, polys, |be| {
        let d = be.upload(&a, ct.clone())?;
        let k = SwitchKey {
            key: be.upload(&key, key_shape.clone())?,
            dnum,
            alpha: case.alpha,
            special: p.clone(),
        };
        be.download(&be.keyswitch(&d, &k)?)?
    });
    // A rotation's automorphism and key switch of 2-component ciphertexts (Galois element 5).
    both!("galois_switch (rotate)", l, count, |be| {
        let x = be.upload(&a, ct.clone())?;
        let k = SwitchKey {
            key: be.upload(&key, key_shape.clone())?,
            dnum,
            alpha: case.alpha,
            special: p.clone(),
        };
        be.download(&be.galois_switch(&x, 5, &k)?)?
    });
    if case.q_limbs >= 3 {
        // A lower level: fewer limbs and digits than the key was made for.
        let low: Vec<usize> = (0..case.q_limbs - 1).collect();
        let low_shape = Shape::ntt(polys, low.clone());
        let d_low = random_tensor(&ctx, &mut rng, &low_shape);
        both!("keyswitch (lower level)", low.len(), polys, |be| {
            let d = be.upload(&d_low, low_shape.clone())?;
            let k = SwitchKey {
                key: be.upload(&key, key_shape.clone())?,
                dnum,
                alpha: case.alpha,
                special: p.clone(),
            };
            be.download(&be.keyswitch(&d, &k)?)?
        });
    }
    Ok(reports)
}
