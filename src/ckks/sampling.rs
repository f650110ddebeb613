//! Randomness for keys and encryption: ChaCha20 seeded from the operating system.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use cryptodl_kernels::modarith::Modulus;

/// Standard deviation of the error distribution.
pub const SIGMA: f64 = 3.2;
/// Errors are rejected beyond `6 sigma` (as SEAL does).
pub const ERROR_BOUND: i64 = 19;

/// The CSPRNG used for every secret: ChaCha20, seeded from the OS unless a test seeds it.
pub struct Sampler {
    rng: ChaCha20Rng,
}

impl Sampler {
    /// A sampler seeded from the operating system's entropy source.
    pub fn from_os() -> Self {
        Self {
            rng: ChaCha20Rng::from_os_rng(),
        }
    }

    /// A deterministic sampler. **For tests and reproducible benchmarks only**: keys or
    /// ciphertexts made from a known seed are not secret.
    pub fn from_seed_insecure(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// `n` coefficients uniform in `{-1, 0, 1}`.
    pub fn ternary(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| {
                // rejection to get exactly 1/3 each
                loop {
                    let b = self.rng.next_u32() >> 30; // 0..4
                    if b < 3 {
                        return b as i8 - 1;
                    }
                }
            })
            .collect()
    }

    /// `n` coefficients with exactly `h` of them `+-1` (uniform positions and signs), the rest
    /// zero: the ephemeral sparse secret of bootstrapping's encapsulation.
    pub fn sparse_ternary(&mut self, n: usize, h: usize) -> Vec<i8> {
        let h = h.min(n);
        let mut out = vec![0i8; n];
        let mut placed = 0;
        while placed < h {
            let i = self.rng.random_range(0..n);
            if out[i] == 0 {
                out[i] = if self.rng.next_u32() & 1 == 0 { -1 } else { 1 };
                placed += 1;
            }
        }
        out
    }

    /// `n` coefficients from the rounded Gaussian of standard deviation [`SIGMA`], |x| <= 19.
    pub fn gaussian(&mut self, n: usize) -> Vec<i8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // Box-Muller: two samples per draw.
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = SIGMA * (-2.0 * u1.ln()).sqrt();
            for z in [
                r * (std::f64::consts::TAU * u2).cos(),
                r * (std::f64::consts::TAU * u2).sin(),
            ] {
                let v = z.round() as i64;
                if v.abs() <= ERROR_BOUND && out.len() < n {
                    out.push(v as i8);
                }
            }
        }
        out
    }

    /// Uniform residues: `[limbs][n]`, limb `l` uniform in `[0, q_l)` (so the polynomial is
    /// uniform modulo the product of the moduli).
    pub fn uniform(&mut self, moduli: &[Modulus], n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(moduli.len() * n);
        for m in moduli {
            let q = m.value();
            // rejection sampling on the smallest power of two above q
            let mask = u32::MAX >> q.leading_zeros();
            for _ in 0..n {
                loop {
                    let v = self.rng.next_u32() & mask;
                    if v < q {
                        out.push(v);
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Small signed coefficients as residues `[limbs][n]` (coefficient form).
/// [`small_to_rns`] into `out` (`[moduli][coeffs]` words).
pub(crate) fn small_to_rns_into(out: &mut [u32], coeffs: &[i8], moduli: &[Modulus]) {
    for (o, m) in out.chunks_exact_mut(coeffs.len()).zip(moduli) {
        let q = m.value();
        for (o, &c) in o.iter_mut().zip(coeffs) {
            *o = if c < 0 { q - (-c) as u32 } else { c as u32 };
        }
    }
}

pub(crate) fn small_to_rns(coeffs: &[i8], moduli: &[Modulus]) -> Vec<u32> {
    let mut out = Vec::with_capacity(moduli.len() * coeffs.len());
    for m in moduli {
        let q = m.value();
        out.extend(
            coeffs
                .iter()
                .map(|&c| if c < 0 { q - (-c) as u32 } else { c as u32 }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_the_right_moments() {
        let mut s = Sampler::from_seed_insecure(1);
        let t = s.ternary(30_000);
        let zeros = t.iter().filter(|&&x| x == 0).count() as f64 / 30_000.0;
        assert!((zeros - 1.0 / 3.0).abs() < 0.02, "{zeros}");
        let g = s.gaussian(30_000);
        let var = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 30_000.0;
        assert!((var.sqrt() - SIGMA).abs() < 0.1, "{}", var.sqrt());
        let m = [Modulus::new(12_289).unwrap()];
        let u = s.uniform(&m, 30_000);
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / 30_000.0;
        assert!(u.iter().all(|&x| x < 12_289) && (mean / 12_289.0 - 0.5).abs() < 0.01);
    }
}
