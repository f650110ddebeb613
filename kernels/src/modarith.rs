//! Modular arithmetic on u32 residues modulo primes below 2^30: Shoup and Barrett reduction.
//!
//! Every function here has an identical WGSL counterpart in `shaders/prelude.wgsl`; the GPU builds
//! the 32x32->64-bit products from 16-bit halves, the CPU uses native `u64` products. Both produce
//! the same residues because every kernel's final output is a canonical residue in `[0, q)`.

use crate::KernelError;

/// Largest supported modulus bit length: lazy butterflies keep values in `[0, 4q)`, which must fit
/// in a `u32`.
pub const MAX_MODULUS_BITS: u32 = 30;

/// A modulus `q < 2^30` with its Barrett constants.
///
/// Barrett reduction of a product `z < q^2`: with `k` the bit length of `q` and
/// `mu = floor(2^(2k) / q)` (so `mu < 2^(k+1) <= 2^31`), `qhat = ((z >> (k-1)) * mu) >> (k+1)`
/// underestimates `floor(z / q)` by at most 2, so `z - qhat*q` lies in `[0, 3q)` and two
/// conditional subtractions finish the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modulus {
    q: u32,
    k: u32,
    mu: u32,
    /// `floor(2^64 / q)`, for reducing arbitrary `u64` values (lazy sums of products).
    mu64: u64,
}

impl Modulus {
    /// Creates a modulus; `q` must satisfy `2 <= q < 2^30`.
    pub fn new(q: u32) -> Result<Self, KernelError> {
        if !(2..(1u32 << MAX_MODULUS_BITS)).contains(&q) {
            return Err(KernelError::ModulusOutOfRange { q });
        }
        let k = 32 - q.leading_zeros();
        let mu = ((1u64 << (2 * k)) / q as u64) as u32;
        let mu64 = (u64::MAX / q as u64) + u64::from(u64::MAX % q as u64 == q as u64 - 1);
        Ok(Self { q, k, mu, mu64 })
    }

    /// The modulus value.
    #[inline(always)]
    pub fn value(&self) -> u32 {
        self.q
    }

    /// Bit length `k` of `q` (Barrett shift parameter).
    #[inline(always)]
    pub fn bits(&self) -> u32 {
        self.k
    }

    /// Barrett constant `floor(2^(2k) / q)`.
    #[inline(always)]
    pub fn barrett_mu(&self) -> u32 {
        self.mu
    }

    /// Reduces `z < q^2` (for example a product of two residues) to `[0, q)`.
    #[inline(always)]
    pub fn reduce_product(&self, z: u64) -> u32 {
        debug_assert!(z < (self.q as u64) * (self.q as u64));
        let qhat = ((z >> (self.k - 1)) * self.mu as u64) >> (self.k + 1);
        let mut r = (z as u32).wrapping_sub((qhat as u32).wrapping_mul(self.q));
        if r >= self.q {
            r -= self.q;
        }
        if r >= self.q {
            r -= self.q;
        }
        r
    }

    /// Reduces any `u64` to `[0, q)` (64-bit Barrett: one 64x64->128 high product).
    #[inline(always)]
    pub fn reduce_u64(&self, z: u64) -> u32 {
        let qhat = ((z as u128 * self.mu64 as u128) >> 64) as u64;
        let mut r = z.wrapping_sub(qhat.wrapping_mul(self.q as u64));
        if r >= self.q as u64 {
            r -= self.q as u64;
        }
        r as u32
    }

    /// Reduces a signed integer to `[0, q)`.
    #[inline]
    pub fn reduce_i64(&self, z: i64) -> u32 {
        z.rem_euclid(self.q as i64) as u32
    }

    /// `(a + b) mod q` for `a, b < q`.
    #[inline(always)]
    pub fn add(&self, a: u32, b: u32) -> u32 {
        let s = a + b;
        if s >= self.q {
            s - self.q
        } else {
            s
        }
    }

    /// `(a - b) mod q` for `a, b < q`.
    #[inline(always)]
    pub fn sub(&self, a: u32, b: u32) -> u32 {
        if a >= b {
            a - b
        } else {
            a + self.q - b
        }
    }

    /// `-a mod q` for `a < q`.
    #[inline(always)]
    pub fn neg(&self, a: u32) -> u32 {
        if a == 0 {
            0
        } else {
            self.q - a
        }
    }

    /// `a * b mod q` for `a, b < q` (Barrett).
    #[inline(always)]
    pub fn mul(&self, a: u32, b: u32) -> u32 {
        self.reduce_product(a as u64 * b as u64)
    }

    /// `a^e mod q`.
    pub fn pow(&self, mut a: u32, mut e: u64) -> u32 {
        let mut r = 1 % self.q;
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, a);
            }
            a = self.mul(a, a);
            e >>= 1;
        }
        r
    }

    /// Multiplicative inverse of `a` modulo the (prime) modulus, or `None` if `a = 0 mod q`.
    pub fn inv(&self, a: u32) -> Option<u32> {
        let a = a % self.q;
        if a == 0 {
            return None;
        }
        // Extended Euclid (works for any modulus coprime with a).
        let (mut t, mut new_t) = (0i64, 1i64);
        let (mut r, mut new_r) = (self.q as i64, a as i64);
        while new_r != 0 {
            let quo = r / new_r;
            (t, new_t) = (new_t, t - quo * new_t);
            (r, new_r) = (new_r, r - quo * new_r);
        }
        (r == 1).then(|| self.reduce_i64(t))
    }

    /// Shoup companion of the constant `w < q`: `floor(w * 2^32 / q)`.
    #[inline]
    pub fn shoup(&self, w: u32) -> u32 {
        shoup_precompute(w, self.q)
    }
}

/// Shoup companion `floor(w * 2^32 / q)` of a constant `w < q`.
#[inline]
pub fn shoup_precompute(w: u32, q: u32) -> u32 {
    debug_assert!(w < q);
    (((w as u64) << 32) / q as u64) as u32
}

/// Shoup multiplication by a constant, lazy: returns `x * w mod q` in `[0, 2q)` for any `x < 2^32`
/// and `w < q`, with `w_shoup = floor(w * 2^32 / q)`.
#[inline(always)]
pub fn mul_shoup_lazy(x: u32, w: u32, w_shoup: u32, q: u32) -> u32 {
    let qhat = ((x as u64 * w_shoup as u64) >> 32) as u32;
    x.wrapping_mul(w).wrapping_sub(qhat.wrapping_mul(q))
}

/// Shoup multiplication by a constant, returning the canonical residue in `[0, q)`.
#[inline(always)]
pub fn mul_shoup(x: u32, w: u32, w_shoup: u32, q: u32) -> u32 {
    let r = mul_shoup_lazy(x, w, w_shoup, q);
    if r >= q {
        r - q
    } else {
        r
    }
}

/// Brings a value in `[0, 2q)` into `[0, q)`.
#[inline(always)]
pub fn reduce_2q(x: u32, q: u32) -> u32 {
    if x >= q {
        x - q
    } else {
        x
    }
}

/// Brings a value in `[0, 4q)` into `[0, q)`.
#[inline(always)]
pub fn reduce_4q(x: u32, q: u32) -> u32 {
    reduce_2q(reduce_2q_of(x, 2 * q), q)
}

#[inline(always)]
fn reduce_2q_of(x: u32, two_q: u32) -> u32 {
    if x >= two_q {
        x - two_q
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRIMES: [u32; 3] = [1_073_741_789, 998_244_353, 12_289];

    proptest! {
        #[test]
        fn barrett_matches_remainder(a in 0u32.., b in 0u32.., idx in 0usize..3) {
            let m = Modulus::new(PRIMES[idx]).unwrap();
            let (a, b) = (a % m.value(), b % m.value());
            prop_assert_eq!(m.mul(a, b) as u64, a as u64 * b as u64 % m.value() as u64);
        }

        #[test]
        fn shoup_matches_remainder(x in 0u32.., w in 0u32.., idx in 0usize..3) {
            let q = PRIMES[idx];
            let w = w % q;
            let ws = shoup_precompute(w, q);
            let lazy = mul_shoup_lazy(x, w, ws, q);
            prop_assert!(lazy < 2 * q);
            prop_assert_eq!(mul_shoup(x, w, ws, q) as u64, x as u64 * w as u64 % q as u64);
        }

        #[test]
        fn reduce_u64_matches_remainder(z in any::<u64>(), idx in 0usize..3) {
            let m = Modulus::new(PRIMES[idx]).unwrap();
            prop_assert_eq!(m.reduce_u64(z) as u64, z % m.value() as u64);
        }

        #[test]
        fn inverse_is_inverse(a in 1u32.., idx in 0usize..3) {
            let m = Modulus::new(PRIMES[idx]).unwrap();
            let a = a % m.value();
            prop_assume!(a != 0);
            prop_assert_eq!(m.mul(a, m.inv(a).unwrap()), 1);
        }
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(Modulus::new(1 << 30).is_err());
        assert!(Modulus::new(1).is_err());
        assert!(Modulus::new((1 << 30) - 35).is_ok());
    }

    #[test]
    fn add_sub_neg_edges() {
        let m = Modulus::new(12_289).unwrap();
        assert_eq!(m.add(12_288, 12_288), 12_287);
        assert_eq!(m.sub(0, 1), 12_288);
        assert_eq!(m.neg(0), 0);
        assert_eq!(m.neg(1), 12_288);
        assert_eq!(m.pow(3, 12_288), 1);
    }
}
