//! Negacyclic number-theoretic transform over `Z_q[X]/(X^N + 1)` with lazy (Harvey) butterflies.
//!
//! Conventions (shared with `shaders/ntt.wgsl`, which uploads these very tables):
//! * `psi` is the smallest primitive `2N`-th root of unity mod `q`.
//! * Forward ([`NttTable::forward`], Cooley-Tukey): input in natural coefficient order with values
//!   in `[0, 4q)` (canonical `[0, q)` in practice); output in **bit-reversed order**, canonical
//!   `[0, q)`: `out[bitrev(i)] = sum_k a_k * psi^((2i+1) k)`, i.e. slot `j` holds the evaluation at
//!   `psi^(2 bitrev(j) + 1)`.
//! * Inverse ([`NttTable::inverse`], Gentleman-Sande): input in bit-reversed order with values in
//!   `[0, 2q)`; output in natural order, canonical `[0, q)`, including the factor `N^-1`.
//! * Twiddles: `psi_rev[i] = psi^bitrev(i)` and `psi_inv_rev[i] = psi^-bitrev(i)` (log2 N bits),
//!   each with its Shoup companion `floor(w * 2^32 / q)`. Stage `m` (m = 1, 2, 4, ...) of the forward
//!   transform uses `psi_rev[m + i]` for butterfly group `i`.
//! * Cost per butterfly: one Shoup product (one 32x32->64 high product, two low products), two
//!   additions, one conditional subtraction.

use crate::modarith::{mul_shoup_lazy, Modulus};
use crate::primes::minimal_primitive_root;
use crate::KernelError;

/// Reverses the low `bits` bits of `i`.
#[inline]
pub fn bit_reverse(i: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        i.reverse_bits() >> (usize::BITS - bits)
    }
}

/// Precomputed twiddle tables for one prime and one ring degree.
#[derive(Clone, Debug)]
pub struct NttTable {
    n: usize,
    modulus: Modulus,
    psi: u32,
    psi_rev: Vec<u32>,
    psi_rev_shoup: Vec<u32>,
    psi_inv_rev: Vec<u32>,
    psi_inv_rev_shoup: Vec<u32>,
    n_inv: u32,
    n_inv_shoup: u32,
    /// `psi_inv_rev[1] * N^-1`: the last inverse stage folds in the `N^-1` scaling.
    last_inv: u32,
    last_inv_shoup: u32,
}

impl NttTable {
    /// Builds the tables for the NTT-friendly prime `q` and power-of-two degree `n >= 2`.
    pub fn new(q: u32, n: usize) -> Result<Self, KernelError> {
        if !n.is_power_of_two() || n < 2 {
            return Err(KernelError::DegreeNotPowerOfTwo { n });
        }
        let modulus = Modulus::new(q)?;
        let psi = minimal_primitive_root(q, n)?;
        let psi_inv = modulus.inv(psi).expect("root of unity is invertible");
        let bits = n.trailing_zeros();
        let mut pows = vec![1u32; n];
        let mut inv_pows = vec![1u32; n];
        for i in 1..n {
            pows[i] = modulus.mul(pows[i - 1], psi);
            inv_pows[i] = modulus.mul(inv_pows[i - 1], psi_inv);
        }
        let psi_rev: Vec<u32> = (0..n).map(|i| pows[bit_reverse(i, bits)]).collect();
        let psi_inv_rev: Vec<u32> = (0..n).map(|i| inv_pows[bit_reverse(i, bits)]).collect();
        let shoup = |v: &[u32]| v.iter().map(|&w| modulus.shoup(w)).collect::<Vec<_>>();
        let n_inv = modulus
            .inv(n as u32 % q)
            .ok_or(KernelError::NotNttFriendly { q, n })?;
        let last_inv = modulus.mul(psi_inv_rev[1], n_inv);
        Ok(Self {
            n,
            modulus,
            psi,
            psi_rev_shoup: shoup(&psi_rev),
            psi_inv_rev_shoup: shoup(&psi_inv_rev),
            psi_rev,
            psi_inv_rev,
            n_inv,
            n_inv_shoup: modulus.shoup(n_inv),
            last_inv,
            last_inv_shoup: modulus.shoup(last_inv),
        })
    }

    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// The prime modulus.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }
    /// The prime `q`.
    pub fn q(&self) -> u32 {
        self.modulus.value()
    }
    /// The primitive `2N`-th root of unity used.
    pub fn psi(&self) -> u32 {
        self.psi
    }
    /// `psi^bitrev(i)`, `i < N`.
    pub fn psi_rev(&self) -> &[u32] {
        &self.psi_rev
    }
    /// Shoup companions of [`Self::psi_rev`].
    pub fn psi_rev_shoup(&self) -> &[u32] {
        &self.psi_rev_shoup
    }
    /// `psi^-bitrev(i)`, `i < N`.
    pub fn psi_inv_rev(&self) -> &[u32] {
        &self.psi_inv_rev
    }
    /// Shoup companions of [`Self::psi_inv_rev`].
    pub fn psi_inv_rev_shoup(&self) -> &[u32] {
        &self.psi_inv_rev_shoup
    }
    /// `N^-1 mod q`.
    pub fn n_inv(&self) -> u32 {
        self.n_inv
    }
    /// Shoup companion of [`Self::n_inv`].
    pub fn n_inv_shoup(&self) -> u32 {
        self.n_inv_shoup
    }
    /// `psi_inv_rev[1] * N^-1 mod q` (twiddle of the last inverse stage with the scaling folded in).
    pub fn last_inv(&self) -> u32 {
        self.last_inv
    }
    /// Shoup companion of [`Self::last_inv`].
    pub fn last_inv_shoup(&self) -> u32 {
        self.last_inv_shoup
    }

    /// In-place forward negacyclic NTT of one polynomial (see the module docs for ordering).
    pub fn forward(&self, a: &mut [u32]) {
        assert_eq!(a.len(), self.n, "NTT input length must equal N");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { forward_avx2(self, a) };
            return;
        }
        forward_impl(self, a);
    }

    /// In-place inverse negacyclic NTT of one polynomial (see the module docs for ordering).
    pub fn inverse(&self, a: &mut [u32]) {
        assert_eq!(a.len(), self.n, "NTT input length must equal N");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { inverse_avx2(self, a) };
            return;
        }
        inverse_impl(self, a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn forward_avx2(t: &NttTable, a: &mut [u32]) {
    forward_impl(t, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn inverse_avx2(t: &NttTable, a: &mut [u32]) {
    inverse_impl(t, a)
}

/// Harvey Cooley-Tukey butterfly: `x, y` in `[0, 4q)` -> `(x + w y, x - w y)` in `[0, 4q)`.
#[inline(always)]
fn ct_butterfly(x: u32, y: u32, w: u32, ws: u32, q: u32) -> (u32, u32) {
    let two_q = 2 * q;
    let u = if x >= two_q { x - two_q } else { x };
    let v = mul_shoup_lazy(y, w, ws, q);
    (u + v, u + two_q - v)
}

/// A forward stage with `T <= 16` butterflies per twiddle: fixed-size blocks, no bounds checks
/// (the generic loop's vectorised body needs longer runs).
#[inline(always)]
fn forward_stage_small<const T: usize>(a: &mut [u32], w: &[u32], ws: &[u32], q: u32) {
    for ((block, &w), &ws) in a.chunks_exact_mut(2 * T).zip(w).zip(ws) {
        let (lo, hi) = block.split_at_mut(T);
        for j in 0..T {
            (lo[j], hi[j]) = ct_butterfly(lo[j], hi[j], w, ws, q);
        }
    }
}

#[inline(always)]
fn forward_impl(tab: &NttTable, a: &mut [u32]) {
    let n = tab.n;
    let q = tab.q();
    let two_q = 2 * q;
    let mut t = n;
    let mut m = 1;
    while m < n {
        t >>= 1;
        let (w, ws) = (&tab.psi_rev[m..2 * m], &tab.psi_rev_shoup[m..2 * m]);
        match t {
            1 => forward_stage_small::<1>(a, w, ws, q),
            2 => forward_stage_small::<2>(a, w, ws, q),
            4 => forward_stage_small::<4>(a, w, ws, q),
            8 => forward_stage_small::<8>(a, w, ws, q),
            16 => forward_stage_small::<16>(a, w, ws, q),
            _ => {
                for ((block, &w), &ws) in a.chunks_exact_mut(2 * t).zip(w).zip(ws) {
                    let (lo, hi) = block.split_at_mut(t);
                    for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                        (*x, *y) = ct_butterfly(*x, *y, w, ws, q);
                    }
                }
            }
        }
        m <<= 1;
    }
    for x in a.iter_mut() {
        let mut v = *x;
        if v >= two_q {
            v -= two_q;
        }
        if v >= q {
            v -= q;
        }
        *x = v;
    }
}

/// Harvey Gentleman-Sande butterfly: `x, y` in `[0, 2q)` -> `(x + y, (x - y) w)` in `[0, 2q)`.
#[inline(always)]
fn gs_butterfly(x: u32, y: u32, w: u32, ws: u32, q: u32) -> (u32, u32) {
    let two_q = 2 * q;
    let s = x + y;
    (
        if s >= two_q { s - two_q } else { s },
        mul_shoup_lazy(x + two_q - y, w, ws, q),
    )
}

/// An inverse stage with `T <= 16` butterflies per twiddle.
#[inline(always)]
fn inverse_stage_small<const T: usize>(a: &mut [u32], w: &[u32], ws: &[u32], q: u32) {
    for ((block, &w), &ws) in a.chunks_exact_mut(2 * T).zip(w).zip(ws) {
        let (lo, hi) = block.split_at_mut(T);
        for j in 0..T {
            (lo[j], hi[j]) = gs_butterfly(lo[j], hi[j], w, ws, q);
        }
    }
}

#[inline(always)]
fn inverse_impl(tab: &NttTable, a: &mut [u32]) {
    let n = tab.n;
    let q = tab.q();
    let two_q = 2 * q;
    let mut t = 1;
    let mut m = n;
    while m > 2 {
        let h = m >> 1;
        let (w, ws) = (&tab.psi_inv_rev[h..2 * h], &tab.psi_inv_rev_shoup[h..2 * h]);
        match t {
            1 => inverse_stage_small::<1>(a, w, ws, q),
            2 => inverse_stage_small::<2>(a, w, ws, q),
            4 => inverse_stage_small::<4>(a, w, ws, q),
            8 => inverse_stage_small::<8>(a, w, ws, q),
            16 => inverse_stage_small::<16>(a, w, ws, q),
            _ => {
                for ((block, &w), &ws) in a.chunks_exact_mut(2 * t).zip(w).zip(ws) {
                    let (lo, hi) = block.split_at_mut(t);
                    // fixed groups of 8 (t >= 32 is a multiple of 8): LLVM vectorises these
                    for (xs, ys) in lo.chunks_exact_mut(8).zip(hi.chunks_exact_mut(8)) {
                        for j in 0..8 {
                            (xs[j], ys[j]) = gs_butterfly(xs[j], ys[j], w, ws, q);
                        }
                    }
                }
            }
        }
        t <<= 1;
        m = h;
    }
    // Last stage (one group) with N^-1 folded into both outputs.
    let (lo, hi) = a.split_at_mut(n / 2);
    let (ni, nis, li, lis) = (tab.n_inv, tab.n_inv_shoup, tab.last_inv, tab.last_inv_shoup);
    for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
        let (u, v) = (*x, *y);
        let s = mul_shoup_lazy(u + v, ni, nis, q);
        let d = mul_shoup_lazy(u + two_q - v, li, lis, q);
        *x = if s >= q { s - q } else { s };
        *y = if d >= q { d - q } else { d };
    }
}

/// Forward NTT of a batch: `data` is `[count][tables.len()][n]` (limb-major), limb `l` of every
/// polynomial is transformed with `tables[l]`. CPU twin of the `ntt_forward` WGSL kernel.
pub fn ntt_forward(data: &mut [u32], n: usize, tables: &[NttTable]) {
    for (i, limb) in data.chunks_exact_mut(n).enumerate() {
        tables[i % tables.len()].forward(limb);
    }
}

/// Inverse NTT of a batch laid out as in [`ntt_forward`]. CPU twin of the `ntt_inverse` WGSL kernel.
pub fn ntt_inverse(data: &mut [u32], n: usize, tables: &[NttTable]) {
    for (i, limb) in data.chunks_exact_mut(n).enumerate() {
        tables[i % tables.len()].inverse(limb);
    }
}

/// Schoolbook negacyclic product `a * b mod (X^N + 1, q)` in coefficient form (reference, O(N^2)).
pub fn negacyclic_schoolbook(a: &[u32], b: &[u32], q: u32) -> Vec<u32> {
    let n = a.len();
    let m = Modulus::new(q).expect("valid modulus");
    let mut out = vec![0u32; n];
    for (i, &ai) in a.iter().enumerate() {
        for (j, &bj) in b.iter().enumerate() {
            let p = m.mul(ai, bj);
            let k = i + j;
            if k < n {
                out[k] = m.add(out[k], p);
            } else {
                out[k - n] = m.sub(out[k - n], p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use num_bigint::BigInt;
    use proptest::prelude::*;

    fn table(bits: u32, n: usize) -> NttTable {
        NttTable::new(ntt_primes(bits, n, 1, &[]).unwrap()[0], n).unwrap()
    }

    /// Big-integer reference: negacyclic product over Z, then reduced mod q.
    fn bigint_negacyclic(a: &[u32], b: &[u32], q: u32) -> Vec<u32> {
        let n = a.len();
        let mut acc = vec![BigInt::from(0); n];
        for i in 0..n {
            for j in 0..n {
                let p = BigInt::from(a[i]) * BigInt::from(b[j]);
                if i + j < n {
                    acc[i + j] += p;
                } else {
                    acc[i + j - n] -= p;
                }
            }
        }
        let qb = BigInt::from(q);
        acc.into_iter()
            .map(|v| {
                let r = ((v % &qb) + &qb) % &qb;
                u32::try_from(r).unwrap()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn inverse_undoes_forward(log_n in 1u32..12, bits in 20u32..31, seed in any::<u64>()) {
            let n = 1usize << log_n;
            prop_assume!(bits > log_n + 2);
            let t = table(bits, n);
            let q = t.q();
            let mut s = seed;
            let orig: Vec<u32> = (0..n).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) as u32) % q }).collect();
            let mut a = orig.clone();
            t.forward(&mut a);
            prop_assert!(a.iter().all(|&x| x < q));
            t.inverse(&mut a);
            prop_assert_eq!(a, orig);
        }

        #[test]
        fn ntt_product_is_negacyclic_product(log_n in 1u32..7, bits in 20u32..31,
                                             a in proptest::collection::vec(any::<u32>(), 64),
                                             b in proptest::collection::vec(any::<u32>(), 64)) {
            let n = 1usize << log_n;
            let t = table(bits, n);
            let q = t.q();
            let a: Vec<u32> = a[..n].iter().map(|x| x % q).collect();
            let b: Vec<u32> = b[..n].iter().map(|x| x % q).collect();
            let (mut fa, mut fb) = (a.clone(), b.clone());
            t.forward(&mut fa);
            t.forward(&mut fb);
            let m = t.modulus();
            let mut prod: Vec<u32> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            t.inverse(&mut prod);
            prop_assert_eq!(&prod, &bigint_negacyclic(&a, &b, q));
            prop_assert_eq!(&prod, &negacyclic_schoolbook(&a, &b, q));
        }
    }

    #[test]
    fn forward_is_evaluation_at_odd_powers_in_bit_reversed_order() {
        let n = 16;
        let t = table(20, n);
        let m = *t.modulus();
        let a: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 3) % t.q()).collect();
        let mut f = a.clone();
        t.forward(&mut f);
        for (j, &fj) in f.iter().enumerate() {
            let x = m.pow(t.psi(), 2 * bit_reverse(j, 4) as u64 + 1);
            let eval = a.iter().rev().fold(0u32, |acc, &c| m.add(m.mul(acc, x), c));
            assert_eq!(fj, eval, "slot {j}");
        }
    }

    #[test]
    fn known_answer_x_times_x() {
        // X * X^(N-1) = X^N = -1 in the negacyclic ring.
        let n = 8;
        let t = table(17, n);
        let q = t.q();
        let mut a = vec![0u32; n];
        a[1] = 1;
        let mut b = vec![0u32; n];
        b[n - 1] = 1;
        t.forward(&mut a);
        t.forward(&mut b);
        let mut p: Vec<u32> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| t.modulus().mul(x, y))
            .collect();
        t.inverse(&mut p);
        let mut expect = vec![0u32; n];
        expect[0] = q - 1;
        assert_eq!(p, expect);
    }

    #[test]
    fn batched_twins_use_per_limb_tables() {
        let n = 32;
        let primes = ntt_primes(25, n, 3, &[]).unwrap();
        let tables: Vec<NttTable> = primes
            .iter()
            .map(|&q| NttTable::new(q, n).unwrap())
            .collect();
        let count = 5;
        let orig: Vec<u32> = (0..count * 3 * n)
            .map(|i| (i as u32 * 2654435761) % primes[(i / n) % 3])
            .collect();
        let mut d = orig.clone();
        ntt_forward(&mut d, n, &tables);
        let mut single = orig[n..2 * n].to_vec();
        tables[1].forward(&mut single);
        assert_eq!(&d[n..2 * n], &single[..]);
        ntt_inverse(&mut d, n, &tables);
        assert_eq!(d, orig);
    }
}
