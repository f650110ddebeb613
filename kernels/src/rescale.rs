//! Exact divide-and-round by a product of primes, in NTT form (the GPU composes it from NTTs,
//! `divide_round_convert` in `shaders/rns.wgsl` and an element-wise pass): CKKS rescaling (drop the last prime) and the key-switching mod-down
//! (drop the special primes `P`) are the same operation.
//!
//! Given `x` over `K ∪ D` in NTT form, returns `round(x / D)` over `K` in NTT form (SEAL's
//! `divide_and_round_q_last`, generalised to several dropped primes through an exact base
//! conversion, so the rounding error stays below 1/2 and does not get multiplied by the secret):
//! 1. inverse NTT of the `D` limbs; add `floor(D/2)` (rounding instead of flooring);
//! 2. exact base conversion `D -> K` of that, subtract `floor(D/2) mod k_i`, forward NTT;
//! 3. `out_i = (x_i - t_i) * D^-1 mod k_i`.

use crate::modarith::{mul_shoup, Modulus};
use crate::ntt::NttTable;
use crate::rns::{BaseConverter, RnsBasis};
use crate::KernelError;

/// Precomputed constants for dividing by `D = prod(drop)` and rounding, keeping `keep`.
#[derive(Clone, Debug)]
pub struct DivideRound {
    drop: RnsBasis,
    keep: Vec<Modulus>,
    conv: BaseConverter,
    half_mod_drop: Vec<u32>,
    half_mod_keep: Vec<u32>,
    d_inv_mod_keep: Vec<u32>,
    d_inv_mod_keep_shoup: Vec<u32>,
}

/// `floor(D/2) mod m` for odd `D` given `D mod m`: `(D - 1)/2 = (D mod m - 1) * 2^-1`.
fn half_mod(d_mod_m: u32, m: &Modulus) -> u32 {
    let inv2 = m.inv(2).expect("odd modulus");
    m.mul(m.sub(d_mod_m, 1 % m.value()), inv2)
}

impl DivideRound {
    /// Precomputes the constants for dividing by the primes `drop` and keeping the primes `keep`.
    pub fn new(drop: &[u32], keep: &[u32]) -> Result<Self, KernelError> {
        let drop_basis = RnsBasis::new(drop)?;
        let keep: Vec<Modulus> = keep
            .iter()
            .map(|&q| Modulus::new(q))
            .collect::<Result<_, _>>()?;
        let d_mod = |m: &Modulus| drop.iter().fold(1u32, |a, &d| m.mul(a, d % m.value()));
        let half_mod_drop = drop_basis.moduli().iter().map(|m| half_mod(0, m)).collect();
        let half_mod_keep: Vec<u32> = keep.iter().map(|m| half_mod(d_mod(m), m)).collect();
        let mut d_inv = Vec::with_capacity(keep.len());
        for m in &keep {
            d_inv.push(
                m.inv(d_mod(m))
                    .ok_or(KernelError::DuplicateModulus { q: m.value() })?,
            );
        }
        let d_inv_shoup = d_inv.iter().zip(&keep).map(|(&w, m)| m.shoup(w)).collect();
        Ok(Self {
            conv: BaseConverter::new(&drop_basis, &keep),
            drop: drop_basis,
            keep,
            half_mod_drop,
            half_mod_keep,
            d_inv_mod_keep: d_inv,
            d_inv_mod_keep_shoup: d_inv_shoup,
        })
    }

    /// Number of kept limbs.
    pub fn keep_len(&self) -> usize {
        self.keep.len()
    }

    /// Number of dropped limbs.
    pub fn drop_len(&self) -> usize {
        self.drop.len()
    }

    /// `floor(D/2) mod d_i` per dropped prime (added before the conversion, so it rounds).
    pub fn half_mod_drop(&self) -> &[u32] {
        &self.half_mod_drop
    }

    /// `floor(D/2) mod k_i` per kept prime (subtracted after the conversion).
    pub fn half_mod_keep(&self) -> &[u32] {
        &self.half_mod_keep
    }

    /// `D^-1 mod k_i` per kept prime.
    pub fn d_inv_mod_keep(&self) -> &[u32] {
        &self.d_inv_mod_keep
    }

    /// The exact base conversion from the dropped primes to the kept ones.
    pub fn converter(&self) -> &BaseConverter {
        &self.conv
    }

    /// Scratch words needed by [`Self::apply`] for degree `n`.
    pub fn scratch_len(&self, n: usize) -> usize {
        (self.keep.len() + self.drop.len()) * n
    }

    /// The middle of [`Self::apply`], in coefficient form: `drop_coeffs` (`[drop][n]`, the
    /// dropped limbs of `x`) plus `floor(D/2)`, converted exactly to the kept limbs, minus
    /// `floor(D/2)`, into `out` (`[keep][n]`); `drop_coeffs` is consumed. `scratch` holds
    /// `drop * n` words. CPU twin of the `divide_round_convert` WGSL kernel.
    pub fn divide_round_convert(
        &self,
        drop_coeffs: &mut [u32],
        out: &mut [u32],
        n: usize,
        scratch: &mut [u32],
    ) {
        for ((limb, &h), m) in drop_coeffs
            .chunks_exact_mut(n)
            .zip(&self.half_mod_drop)
            .zip(self.drop.moduli())
        {
            for v in limb.iter_mut() {
                *v = m.add(*v, h);
            }
        }
        self.conv.convert_exact(drop_coeffs, out, n, scratch);
        for ((limb, &h), m) in out
            .chunks_exact_mut(n)
            .zip(&self.half_mod_keep)
            .zip(&self.keep)
        {
            for v in limb.iter_mut() {
                *v = m.sub(*v, h);
            }
        }
    }

    /// `keep_part` (`[keep][n]`, NTT form) becomes `round(x / D)` (NTT form); `drop_part`
    /// (`[drop][n]`, NTT form) is consumed. `scratch` holds [`Self::scratch_len`] words.
    pub fn apply(
        &self,
        keep_part: &mut [u32],
        drop_part: &mut [u32],
        keep_tables: &[&NttTable],
        drop_tables: &[&NttTable],
        n: usize,
        scratch: &mut [u32],
    ) {
        assert_eq!(keep_part.len(), self.keep.len() * n);
        assert_eq!(drop_part.len(), self.drop.len() * n);
        for (limb, t) in drop_part.chunks_exact_mut(n).zip(drop_tables) {
            t.inverse(limb);
        }
        let (conv_out, conv_scratch) = scratch.split_at_mut(self.keep.len() * n);
        self.divide_round_convert(drop_part, conv_out, n, conv_scratch);
        for (i, (tmp, x)) in conv_out
            .chunks_exact_mut(n)
            .zip(keep_part.chunks_exact_mut(n))
            .enumerate()
        {
            let q = self.keep[i].value();
            keep_tables[i].forward(tmp);
            let (w, ws) = (self.d_inv_mod_keep[i], self.d_inv_mod_keep_shoup[i]);
            for (x, &t) in x.iter_mut().zip(tmp.iter()) {
                *x = mul_shoup(*x + q - t, w, ws, q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use num_bigint::BigInt;

    fn to_big(residues: &[u32], primes: &[u32]) -> BigInt {
        // CRT by brute force accumulation (small test sizes).
        let q: BigInt = primes.iter().map(|&p| BigInt::from(p)).product();
        let mut x = BigInt::from(0);
        for (i, &p) in primes.iter().enumerate() {
            let pb = BigInt::from(p);
            let qi = &q / &pb;
            let inv = (qi.clone() % &pb).modpow(&(BigInt::from(p) - 2), &pb);
            x += BigInt::from(residues[i]) * qi * inv;
        }
        let r = x % &q;
        if &r * 2 > q {
            r - q
        } else {
            r
        }
    }

    #[test]
    fn divides_and_rounds_exactly_for_one_and_two_dropped_primes() {
        let n = 16;
        for drop_count in [1usize, 2] {
            let primes = ntt_primes(28, n, 3 + drop_count, &[]).unwrap();
            let (keep, drop) = primes.split_at(3);
            let dr = DivideRound::new(drop, keep).unwrap();
            let kt: Vec<NttTable> = keep.iter().map(|&q| NttTable::new(q, n).unwrap()).collect();
            let dt: Vec<NttTable> = drop.iter().map(|&q| NttTable::new(q, n).unwrap()).collect();
            let (kr, dr_t): (Vec<&NttTable>, Vec<&NttTable>) =
                (kt.iter().collect(), dt.iter().collect());
            // Coefficient-form random values over K ∪ D.
            let coeffs: Vec<u32> = (0..(3 + drop_count) * n)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) % primes[i / n])
                .collect();
            let mut keep_part = coeffs[..3 * n].to_vec();
            let mut drop_part = coeffs[3 * n..].to_vec();
            for (l, t) in kt.iter().enumerate() {
                t.forward(&mut keep_part[l * n..(l + 1) * n]);
            }
            for (l, t) in dt.iter().enumerate() {
                t.forward(&mut drop_part[l * n..(l + 1) * n]);
            }
            let mut scratch = vec![0; dr.scratch_len(n)];
            dr.apply(&mut keep_part, &mut drop_part, &kr, &dr_t, n, &mut scratch);
            for (l, t) in kt.iter().enumerate() {
                t.inverse(&mut keep_part[l * n..(l + 1) * n]);
            }
            let d: BigInt = drop.iter().map(|&p| BigInt::from(p)).product();
            for k in 0..n {
                let all: Vec<u32> = (0..primes.len()).map(|l| coeffs[l * n + k]).collect();
                let x = to_big(&all, &primes);
                let got = to_big(
                    &(0..3).map(|l| keep_part[l * n + k]).collect::<Vec<_>>(),
                    keep,
                );
                let want = {
                    let twice = &x * 2 + &d;
                    let den = &d * 2;
                    let q = &twice / &den;
                    if (&twice % &den) < BigInt::from(0) {
                        q - 1
                    } else {
                        q
                    }
                };
                let diff = &got - &want;
                let tol = BigInt::from(drop_count as i64 - 1);
                assert!(
                    diff >= -tol.clone() && diff <= tol,
                    "k={k} drop={drop_count} got {got} want {want}"
                );
            }
        }
    }
}
