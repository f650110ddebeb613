//! RNS bases: CRT reconstruction (to centered `f64`) and fast base conversion.

use crate::modarith::{mul_shoup, Modulus};
use crate::KernelError;

/// Little-endian multi-word unsigned integer used for CRT reconstruction.
type Words = Vec<u64>;

fn words_mul_small(a: &[u64], b: u64) -> Words {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u128;
    for &w in a {
        let t = w as u128 * b as u128 + carry;
        out.push(t as u64);
        carry = t >> 64;
    }
    out.push(carry as u64);
    while out.len() > 1 && *out.last().unwrap() == 0 {
        out.pop();
    }
    out
}

/// `acc += a * b` where `acc` is wide enough (len >= a.len() + 1).
#[inline]
fn words_mul_add(acc: &mut [u64], a: &[u64], b: u64) {
    let mut carry = 0u128;
    for (i, &w) in a.iter().enumerate() {
        let t = acc[i] as u128 + w as u128 * b as u128 + carry;
        acc[i] = t as u64;
        carry = t >> 64;
    }
    let mut i = a.len();
    while carry != 0 && i < acc.len() {
        let t = acc[i] as u128 + carry;
        acc[i] = t as u64;
        carry = t >> 64;
        i += 1;
    }
}

fn words_ge(a: &[u64], b: &[u64]) -> bool {
    for i in (0..a.len().max(b.len())).rev() {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` (requires a >= b).
fn words_sub(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (i, ai) in a.iter_mut().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        let (d1, o1) = ai.overflowing_sub(y);
        let (d2, o2) = d1.overflowing_sub(borrow);
        *ai = d2;
        borrow = u64::from(o1 || o2);
    }
}

fn words_to_f64(a: &[u64]) -> f64 {
    a.iter()
        .rev()
        .fold(0.0, |acc, &w| acc * 18_446_744_073_709_551_616.0 + w as f64)
}

/// An RNS basis `{q_0, ..., q_{k-1}}` of pairwise distinct primes with CRT constants.
#[derive(Clone, Debug)]
pub struct RnsBasis {
    moduli: Vec<Modulus>,
    /// `Q = prod q_i`.
    product: Words,
    /// `Q / q_i`.
    q_hat: Vec<Words>,
    /// `(Q / q_i)^-1 mod q_i` and Shoup companions.
    q_hat_inv: Vec<u32>,
    q_hat_inv_shoup: Vec<u32>,
    /// Garner: `(q_0 ... q_{i-1})^-1 mod q_i`.
    garner_inv: Vec<u32>,
}

impl RnsBasis {
    /// Builds a basis from distinct primes below `2^30`.
    pub fn new(primes: &[u32]) -> Result<Self, KernelError> {
        if primes.is_empty() {
            return Err(KernelError::EmptyBasis);
        }
        let moduli = primes
            .iter()
            .map(|&q| Modulus::new(q))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, &a) in primes.iter().enumerate() {
            if primes[..i].contains(&a) {
                return Err(KernelError::DuplicateModulus { q: a });
            }
        }
        let mut product: Words = vec![1];
        for &q in primes {
            product = words_mul_small(&product, q as u64);
        }
        let mut q_hat = Vec::with_capacity(primes.len());
        let mut q_hat_inv = Vec::with_capacity(primes.len());
        for (i, m) in moduli.iter().enumerate() {
            let mut h: Words = vec![1];
            let mut h_mod = 1u32;
            for (j, &qj) in primes.iter().enumerate() {
                if j != i {
                    h = words_mul_small(&h, qj as u64);
                    h_mod = m.mul(h_mod, qj % m.value());
                }
            }
            q_hat.push(h);
            q_hat_inv.push(
                m.inv(h_mod)
                    .ok_or(KernelError::DuplicateModulus { q: m.value() })?,
            );
        }
        let q_hat_inv_shoup = q_hat_inv
            .iter()
            .zip(&moduli)
            .map(|(&w, m)| m.shoup(w))
            .collect();
        let garner_inv = moduli
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let prefix = primes[..i]
                    .iter()
                    .fold(1u32, |acc, &q| m.mul(acc, q % m.value()));
                m.inv(prefix).unwrap_or(0)
            })
            .collect();
        Ok(Self {
            moduli,
            product,
            q_hat,
            q_hat_inv,
            q_hat_inv_shoup,
            garner_inv,
        })
    }

    /// The moduli of this basis.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// Number of moduli.
    pub fn len(&self) -> usize {
        self.moduli.len()
    }

    /// Always false: a basis holds at least one modulus.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `log2(Q)`.
    pub fn log2_product(&self) -> f64 {
        self.moduli.iter().map(|m| (m.value() as f64).log2()).sum()
    }

    /// `(Q / q_i)^-1 mod q_i`.
    pub fn q_hat_inv(&self) -> &[u32] {
        &self.q_hat_inv
    }

    /// Reconstructs the integer with the given residues (one per modulus), lifted to the centered
    /// range `(-Q/2, Q/2]`, as the nearest `f64`. Allocation-free for up to 60 moduli.
    pub fn compose_centered_f64(&self, residues: &[u32]) -> f64 {
        assert_eq!(residues.len(), self.moduli.len(), "one residue per modulus");
        if self.moduli.len() == 1 {
            let q = self.moduli[0].value();
            let r = residues[0];
            return if r > q / 2 {
                r as f64 - q as f64
            } else {
                r as f64
            };
        }
        const MAX_WORDS: usize = 32;
        let words = self.product.len() + 1;
        assert!(words <= MAX_WORDS, "basis too large for CRT reconstruction");
        let mut acc = [0u64; MAX_WORDS];
        let acc = &mut acc[..words];
        // x = sum_i y_i * (Q/q_i) = X + k*Q with k = floor(sum_i y_i / q_i) (< number of moduli).
        let mut frac = 0.0f64;
        for (i, m) in self.moduli.iter().enumerate() {
            let y = mul_shoup(
                residues[i],
                self.q_hat_inv[i],
                self.q_hat_inv_shoup[i],
                m.value(),
            );
            words_mul_add(acc, &self.q_hat[i], y as u64);
            frac += y as f64 / m.value() as f64;
        }
        // Subtract k*Q once (k from the f64 estimate), then fix a possible off-by-one.
        let k = frac.floor() as u64;
        if k > 0 {
            let mut kq = [0u64; MAX_WORDS];
            words_mul_add(&mut kq[..words], &self.product, k);
            if words_ge(acc, &kq[..words]) {
                words_sub(acc, &kq[..words]);
            } else {
                // the estimate was one too high
                words_sub(&mut kq[..words], &self.product);
                words_sub(acc, &kq[..words]);
            }
        }
        while words_ge(acc, &self.product) {
            words_sub(acc, &self.product);
        }
        // Centered: x > Q/2  <=>  x > Q - x.
        let mut neg = [0u64; MAX_WORDS];
        neg[..self.product.len()].copy_from_slice(&self.product);
        let neg = &mut neg[..words];
        words_sub(neg, acc);
        if words_ge(neg, acc) {
            words_to_f64(acc)
        } else {
            -words_to_f64(neg)
        }
    }
}

impl RnsBasis {
    /// Batched CRT reconstruction for decoding: `data` is `[len][n]` (coefficient form);
    /// `out[k]` becomes the centered integer of coefficient `k` times `factor`, as `f64`.
    ///
    /// Garner's algorithm with balanced digits `a_i` in `(-q_i/2, q_i/2]`: the integer is
    /// `sum_i a_i q_0...q_{i-1}`, exactly the centered representative, evaluated by Horner in
    /// `f64` (small values have zero high digits, so no cancellation). Cost per coefficient:
    /// `len (len - 1) / 2` modular multiplications.
    pub fn compose_centered_f64_batch(&self, data: &[u32], n: usize, factor: f64, out: &mut [f64]) {
        let len = self.moduli.len();
        assert_eq!(data.len(), len * n);
        assert_eq!(out.len(), n);
        const MAX: usize = 64;
        assert!(len <= MAX, "at most {MAX} moduli");
        // q_j mod q_i, for the Horner evaluations of the partial sums.
        let qmod: Vec<Vec<u32>> = self
            .moduli
            .iter()
            .map(|m| {
                self.moduli
                    .iter()
                    .map(|qj| m.reduce_u64(qj.value() as u64))
                    .collect()
            })
            .collect();
        let mut digits = [0i64; MAX];
        let (m0, m1) = (&self.moduli[0], self.moduli.get(1));
        for (k, o) in out.iter_mut().enumerate() {
            // Fast path: the two-limb balanced value x01 (exact in i64, |x01| < 2^59). If it has
            // the right residue modulo every other prime, it is the centered representative.
            let r0 = data[k];
            let a0 = if r0 > m0.value() / 2 {
                r0 as i64 - m0.value() as i64
            } else {
                r0 as i64
            };
            if let Some(m1) = m1 {
                let q1 = m1.value();
                let a0m = if a0 >= 0 {
                    m1.reduce_u64(a0 as u64)
                } else {
                    m1.neg(m1.reduce_u64(a0.unsigned_abs()))
                };
                let t = m1.mul(m1.sub(data[n + k], a0m), self.garner_inv[1]);
                let a1 = if t > q1 / 2 {
                    t as i64 - q1 as i64
                } else {
                    t as i64
                };
                let x = a0 + a1 * m0.value() as i64;
                let fits = self.moduli[2..].iter().enumerate().all(|(i, m)| {
                    let r = if x >= 0 {
                        m.reduce_u64(x as u64)
                    } else {
                        m.neg(m.reduce_u64(x.unsigned_abs()))
                    };
                    r == data[(i + 2) * n + k]
                });
                if fits {
                    *o = x as f64 * factor;
                    continue;
                }
            } else {
                *o = a0 as f64 * factor;
                continue;
            }
            for (i, m) in self.moduli.iter().enumerate() {
                let q = m.value();
                // S = sum_{j<i} a_j * (q_0...q_{j-1}) mod q_i, by Horner from the top digit.
                let mut s = 0u32;
                for j in (0..i).rev() {
                    let a = digits[j];
                    let a = if a >= 0 {
                        m.reduce_u64(a as u64)
                    } else {
                        m.neg(m.reduce_u64(a.unsigned_abs()))
                    };
                    s = m.add(m.mul(s, qmod[i][j]), a);
                }
                let t = m.mul(m.sub(data[i * n + k], s), self.garner_inv[i]);
                digits[i] = if t > q / 2 {
                    t as i64 - q as i64
                } else {
                    t as i64
                };
            }
            let mut f = 0.0f64;
            for j in (0..len).rev() {
                f = f * self.moduli[j].value() as f64 + digits[j] as f64;
            }
            *o = f * factor;
        }
    }
}

/// Fast (approximate, HPS/BEHZ-style) base conversion from basis `Q = {q_i}` to moduli `{p_j}`:
/// `y_i = x_i * (Q/q_i)^-1 mod q_i`, `out_j = sum_i y_i * (Q/q_i mod p_j) mod p_j`.
/// The result equals `x + u*Q` modulo each `p_j` for some `0 <= u < len(Q)`.
#[derive(Clone, Debug)]
pub struct BaseConverter {
    from: RnsBasis,
    to: Vec<Modulus>,
    /// `[j][i]`: `(Q / q_i) mod p_j`.
    q_hat_mod_p: Vec<Vec<u32>>,
    /// `Q mod p_j` (for the exact conversion).
    q_mod_p: Vec<u32>,
    /// `floor(2^64 / q_i)`: fixed-point `1/q_i` for the exact conversion's overflow count.
    inv_q_fixed: Vec<u64>,
}

impl BaseConverter {
    /// Builds the converter from `from` to the moduli `to`.
    pub fn new(from: &RnsBasis, to: &[Modulus]) -> Self {
        let q_hat_mod_p = to
            .iter()
            .map(|p| {
                (0..from.len())
                    .map(|i| {
                        from.moduli
                            .iter()
                            .enumerate()
                            .filter(|&(k, _)| k != i)
                            .fold(1u32, |acc, (_, q)| p.mul(acc, q.value() % p.value()))
                    })
                    .collect()
            })
            .collect();
        let q_mod_p = to
            .iter()
            .map(|p| {
                from.moduli
                    .iter()
                    .fold(1u32, |acc, q| p.mul(acc, q.value() % p.value()))
            })
            .collect();
        let inv_q_fixed = from
            .moduli
            .iter()
            .map(|q| u64::MAX / q.value() as u64)
            .collect();
        Self {
            from: from.clone(),
            to: to.to_vec(),
            q_hat_mod_p,
            q_mod_p,
            inv_q_fixed,
        }
    }

    /// Exact base conversion: like [`Self::convert`], then subtracts `u * Q` where
    /// `u = floor(sum_i y_i * floor(2^64 / q_i) / 2^64)` (fixed point, no floating point, so GPU
    /// twins reproduce it bit for bit). The result is `x mod p_j` for `x` in `[0, Q)`, except with
    /// probability about `len(Q) * 2^-34` per coefficient, where it is off by exactly `Q`.
    /// The conversion inside `DivideRound::divide_round_convert` (twin of the
    /// `divide_round_convert` WGSL kernel).
    pub fn convert_exact(&self, input: &[u32], output: &mut [u32], n: usize, scratch: &mut [u32]) {
        self.convert(input, output, n, scratch);
        let k = self.from.len();
        if k == 1 {
            return; // y < q, so u = 0
        }
        // u = floor(sum_i y_i * f_i / 2^64) with f_i = floor(2^64 / q_i), in u64 lanes (the
        // compiler vectorises these loops): f_i = h_i 2^32 + l_i and y_i l_i = m_i 2^32 + r_i give
        // sum_i y_i f_i = A 2^32 + B with A = sum_i (y_i h_i + m_i) and B = sum_i r_i, each term
        // below 2^33 (y_i h_i < q_i 2^32 / q_i), so u = floor((A + floor(B / 2^32)) / 2^32)
        // exactly. The u of each coefficient overwrites its `y_0` (read for the last time).
        const TILE: usize = 256;
        let (mut a, mut b) = ([0u64; TILE], [0u64; TILE]);
        for t0 in (0..n).step_by(TILE) {
            let w = TILE.min(n - t0);
            let (a, b) = (&mut a[..w], &mut b[..w]);
            a.fill(0);
            b.fill(0);
            for (i, &f) in self.inv_q_fixed.iter().enumerate() {
                let (h, l) = (f >> 32, f & 0xffff_ffff);
                for ((a, b), &y) in a
                    .iter_mut()
                    .zip(b.iter_mut())
                    .zip(&scratch[i * n + t0..][..w])
                {
                    let y = y as u64;
                    let yl = y * l;
                    *a += y * h + (yl >> 32);
                    *b += yl & 0xffff_ffff;
                }
            }
            for ((u, &a), &b) in scratch[t0..t0 + w].iter_mut().zip(a.iter()).zip(b.iter()) {
                *u = ((a + (b >> 32)) >> 32) as u32;
            }
        }
        let u = &scratch[..n];
        for ((j, p), &c) in self.to.iter().enumerate().zip(&self.q_mod_p) {
            // u <= k < p, so u * (Q mod p) mod p is one Shoup product.
            let (q, cs) = (p.value(), p.shoup(c));
            for (o, &u) in output[j * n..(j + 1) * n].iter_mut().zip(u) {
                let t = mul_shoup(u, c, cs, q);
                *o = if *o >= t { *o - t } else { *o + q - t };
            }
        }
    }

    /// Source basis.
    pub fn from(&self) -> &RnsBasis {
        &self.from
    }

    /// Target moduli.
    pub fn to(&self) -> &[Modulus] {
        &self.to
    }

    /// `(Q / q_i) mod p_j`, indexed `[j][i]`.
    pub fn q_hat_mod_p(&self) -> &[Vec<u32>] {
        &self.q_hat_mod_p
    }

    /// `Q mod p_j` per target (the exact conversion subtracts `u * Q`).
    pub fn q_mod_p(&self) -> &[u32] {
        &self.q_mod_p
    }

    /// `floor(2^64 / q_i)` per source prime: the fixed-point `1/q_i` of the exact conversion's
    /// overflow count `u`.
    pub fn inv_q_fixed(&self) -> &[u64] {
        &self.inv_q_fixed
    }

    /// Converts `input` (`[from.len()][n]`, coefficient form, canonical residues) into `output`
    /// (`[to.len()][n]`, canonical residues). `scratch` must hold `from.len() * n` words.
    /// CPU twin of the `basis_convert` WGSL kernel.
    pub fn convert(&self, input: &[u32], output: &mut [u32], n: usize, scratch: &mut [u32]) {
        let k = self.from.len();
        assert_eq!(input.len(), k * n);
        assert_eq!(output.len(), self.to.len() * n);
        let y = &mut scratch[..k * n];
        for i in 0..k {
            let q = self.from.moduli[i].value();
            let (w, ws) = (self.from.q_hat_inv[i], self.from.q_hat_inv_shoup[i]);
            for (yv, &x) in y[i * n..(i + 1) * n]
                .iter_mut()
                .zip(&input[i * n..(i + 1) * n])
            {
                *yv = mul_shoup(x, w, ws, q);
            }
        }
        // Tiles of coefficients with the u64 accumulators on the stack; contiguous inner loops
        // (vectorisable): acc[k] += y_i[k] * c_ij, at most 16 products of 30-bit residues per u64
        // before a reduction. The first product initialises acc.
        const TILE: usize = 256;
        let mut acc = [0u64; TILE];
        if k == 1 {
            for (j, p) in self.to.iter().enumerate() {
                let c = self.q_hat_mod_p[j][0];
                let cs = p.shoup(c);
                for (o, &v) in output[j * n..(j + 1) * n].iter_mut().zip(&y[..n]) {
                    *o = mul_shoup(v, c, cs, p.value());
                }
            }
            return;
        }
        // Tiles outside, targets inside: a tile of every `y_i` stays in L1 while all targets
        // read it.
        for t0 in (0..n).step_by(TILE) {
            let w = TILE.min(n - t0);
            for (j, p) in self.to.iter().enumerate() {
                let acc = &mut acc[..w];
                let out = &mut output[j * n + t0..j * n + t0 + w];
                let consts = &self.q_hat_mod_p[j];
                for (c, chunk) in consts.chunks(16).enumerate() {
                    for (t, &cv) in chunk.iter().enumerate() {
                        let yi = &y[(c * 16 + t) * n + t0..][..w];
                        if t == 0 {
                            for (a, &v) in acc.iter_mut().zip(yi) {
                                *a = v as u64 * cv as u64;
                            }
                        } else {
                            for (a, &v) in acc.iter_mut().zip(yi) {
                                *a += v as u64 * cv as u64;
                            }
                        }
                    }
                    if c == 0 {
                        for (o, &a) in out.iter_mut().zip(acc.iter()) {
                            *o = p.reduce_u64(a);
                        }
                    } else {
                        for (o, &a) in out.iter_mut().zip(acc.iter()) {
                            *o = p.add(*o, p.reduce_u64(a));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use num_bigint::BigInt;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn compose_centered_matches_bigint(k in 1usize..6, x in any::<i128>()) {
            let primes = ntt_primes(30, 16, k, &[]).unwrap();
            let basis = RnsBasis::new(&primes).unwrap();
            let q: BigInt = primes.iter().map(|&p| BigInt::from(p)).product();
            let xb: BigInt = BigInt::from(x) % (&q / BigInt::from(2));
            let residues: Vec<u32> = primes.iter().map(|&p| {
                let pb = BigInt::from(p);
                u32::try_from(((&xb % &pb) + &pb) % &pb).unwrap()
            }).collect();
            let got = basis.compose_centered_f64(&residues);
            let want: f64 = xb.to_string().parse().unwrap();
            prop_assert!((got - want).abs() <= want.abs() * 1e-15, "{} vs {}", got, want);
            let mut batch = [0.0f64];
            basis.compose_centered_f64_batch(&residues, 1, 0.5, &mut batch);
            prop_assert!((batch[0] - want * 0.5).abs() <= want.abs() * 1e-14, "{} vs {}", batch[0], want);
        }

        #[test]
        fn batch_compose_of_small_values_is_exact(k in 1usize..8, xs in proptest::collection::vec(-(1i64 << 58)..(1i64 << 58), 1..9)) {
            let primes = ntt_primes(30, 16, k, &[]).unwrap();
            let basis = RnsBasis::new(&primes).unwrap();
            let n = xs.len();
            let data: Vec<u32> = primes.iter().flat_map(|&p| xs.iter().map(move |&x| x.rem_euclid(p as i64) as u32)).collect();
            let mut out = vec![0.0; n];
            basis.compose_centered_f64_batch(&data, n, 1.0, &mut out);
            let qb: BigInt = primes.iter().map(|&p| BigInt::from(p)).product();
            for (o, &x) in out.iter().zip(&xs) {
                // centered representative of x mod Q
                let xb = ((BigInt::from(x) % &qb) + &qb) % &qb;
                let c = if &xb * 2 > qb { xb - &qb } else { xb };
                let want: f64 = c.to_string().parse().unwrap();
                prop_assert_eq!(*o, want);
            }
        }

        #[test]
        fn fast_conversion_is_x_plus_small_multiple_of_q(k in 1usize..5, x in any::<u128>()) {
            let primes = ntt_primes(28, 16, k + 2, &[]).unwrap();
            let (qs, ps) = primes.split_at(k);
            let from = RnsBasis::new(qs).unwrap();
            let to: Vec<Modulus> = ps.iter().map(|&p| Modulus::new(p).unwrap()).collect();
            let conv = BaseConverter::new(&from, &to);
            let qb: BigInt = qs.iter().map(|&p| BigInt::from(p)).product();
            let xb = BigInt::from(x) % &qb;
            let input: Vec<u32> = qs.iter().map(|&q| u32::try_from(&xb % BigInt::from(q)).unwrap()).collect();
            let mut out = vec![0u32; 2];
            let mut scratch = vec![0u32; k];
            conv.convert(&input, &mut out, 1, &mut scratch);
            let ok = (0..k as u32).any(|u| {
                let v = &xb + BigInt::from(u) * &qb;
                ps.iter().zip(&out).all(|(&p, &o)| v.clone() % BigInt::from(p) == BigInt::from(o))
            });
            prop_assert!(ok);
            let mut exact = vec![0u32; 2];
            conv.convert_exact(&input, &mut exact, 1, &mut scratch);
            let want: Vec<u32> = ps.iter().map(|&p| u32::try_from(&xb % BigInt::from(p)).unwrap()).collect();
            prop_assert_eq!(exact, want);
        }
    }

    #[test]
    fn rejects_duplicates_and_empty() {
        assert!(matches!(RnsBasis::new(&[]), Err(KernelError::EmptyBasis)));
        assert!(matches!(
            RnsBasis::new(&[12_289, 12_289]),
            Err(KernelError::DuplicateModulus { q: 12_289 })
        ));
    }
}
