//! The homomorphic DFT of bootstrapping: CoeffsToSlots and SlotsToCoeffs as products of a few
//! sparse matrices (the encoder's special FFT with its butterfly stages merged, "level
//! collapsing"), each applied as a [`LinearTransform`].
//!
//! The encoder ([`Encoder`](crate::ckks::Encoder)) maps slots `z` (`n = N/2` of them) to the
//! coefficient vector `w_j = t_j + i t_{j+n}` by `w = bitrev(F^-1 z) / n`, `F^-1` being
//! `log2 n` butterfly stages, and back by `z = F bitrev(w)`. Bootstrapping never needs the
//! bit-reversal: CoeffsToSlots computes `F^-1 z / n` (the coefficients in **bit-reversed slot
//! order**), EvalMod acts slot by slot, and SlotsToCoeffs takes bit-reversed input, which is
//! what `F` wants. Each stage has three diagonals (`0`, `+h`, `-h` for half-width `h`), so `r`
//! merged stages have at most `2^(r+1) - 1`; `log2 n` stages in `levels` groups cost `levels`
//! levels and about `2 sqrt(2^(r+1))` rotations each by baby-step giant-step. A constant factor
//! (`1/n`, and whatever scale change the caller folds in) is spread evenly over the matrices.

use std::collections::BTreeMap;

use num_complex::Complex64;

use super::{CircuitError, LinearTransform};

/// Which direction of the DFT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DftKind {
    /// Slots to (bit-reversed) coefficients: `F^-1 / n`, the encoder's direction.
    CoeffsToSlots,
    /// (Bit-reversed) coefficients to slots: `F`, the decoder's direction.
    SlotsToCoeffs,
}

/// A factored homomorphic DFT: the matrices in the order they are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct HomomorphicDft {
    kind: DftKind,
    matrices: Vec<LinearTransform>,
}

type Diagonals = BTreeMap<usize, Vec<Complex64>>;

/// The butterfly stage of half-width `h` over `n` slots of the ring of degree `2n`, as diagonals.
fn stage(kind: DftKind, n: usize, h: usize) -> Diagonals {
    let m = 4 * n; // 2N
    let len = 2 * h;
    let lenq = len << 2;
    let zero = Complex64::new(0.0, 0.0);
    let one = Complex64::new(1.0, 0.0);
    let (mut d0, mut dp, mut dm) = (vec![zero; n], vec![zero; n], vec![zero; n]);
    let mut rot = 1usize; // 5^j mod 2N
    for j in 0..h {
        let e = match kind {
            DftKind::SlotsToCoeffs => (rot % lenq) * m / lenq,
            DftKind::CoeffsToSlots => (lenq - rot % lenq) * m / lenq,
        };
        let ksi = Complex64::from_polar(1.0, std::f64::consts::TAU * e as f64 / m as f64);
        for i in (0..n).step_by(len) {
            let (a, b) = (i + j, i + j + h);
            match kind {
                // out[a] = in[a] + ksi in[b]; out[b] = in[a] - ksi in[b].
                DftKind::SlotsToCoeffs => {
                    d0[a] = one;
                    dp[a] = ksi;
                    d0[b] = -ksi;
                    dm[b] = one;
                }
                // out[a] = in[a] + in[b]; out[b] = ksi (in[a] - in[b]).
                DftKind::CoeffsToSlots => {
                    d0[a] = one;
                    dp[a] = one;
                    d0[b] = -ksi;
                    dm[b] = ksi;
                }
            }
        }
        rot = rot * 5 % m;
    }
    let mut d = Diagonals::new();
    d.insert(0, d0);
    for (k, v) in [(h % n, dp), (n - h, dm)] {
        match d.get_mut(&k) {
            Some(acc) => acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            None => {
                d.insert(k, v);
            }
        }
    }
    d
}

/// `b * a` (a applied first), both as diagonals of `n x n` matrices:
/// `(b a)_{k+l}[j] += b_k[j] a_l[j + k]`.
fn product(b: &Diagonals, a: &Diagonals, n: usize) -> Diagonals {
    let mut c = Diagonals::new();
    for (&k, bk) in b {
        for (&l, al) in a {
            let acc = c
                .entry((k + l) % n)
                .or_insert_with(|| vec![Complex64::new(0.0, 0.0); n]);
            for j in 0..n {
                acc[j] += bk[j] * al[(j + k) % n];
            }
        }
    }
    c
}

impl HomomorphicDft {
    /// The DFT for ring degree `ring_n` (`ring_n / 2` slots), its stages merged into `levels`
    /// matrices (each one level), multiplied by `factor` (spread over the matrices).
    pub fn new(
        kind: DftKind,
        ring_n: usize,
        levels: usize,
        factor: Complex64,
    ) -> Result<Self, CircuitError> {
        let bad = |reason: String| CircuitError::InvalidPolynomial { reason };
        if !ring_n.is_power_of_two() || ring_n < 4 {
            return Err(bad(format!(
                "ring degree {ring_n} is not a power of two >= 4"
            )));
        }
        let n = ring_n / 2;
        let stages = n.trailing_zeros() as usize;
        if levels == 0 || levels > stages {
            return Err(bad(format!(
                "a DFT of {n} slots has {stages} stages; {levels} levels must be in 1..={stages}"
            )));
        }
        if !(factor.re.is_finite() && factor.im.is_finite()) || factor == Complex64::new(0.0, 0.0) {
            return Err(bad(format!(
                "DFT factor {factor} must be finite and non-zero"
            )));
        }
        // Half-widths in the order applied.
        let halves: Vec<usize> = match kind {
            DftKind::CoeffsToSlots => (0..stages).rev().map(|e| 1 << e).collect(),
            DftKind::SlotsToCoeffs => (0..stages).map(|e| 1 << e).collect(),
        };
        // Split evenly, the larger groups last (CoeffsToSlots runs its first group at the top
        // level, where a rotation costs most; SlotsToCoeffs its last at the bottom).
        let mut matrices = Vec::with_capacity(levels);
        let mut start = 0;
        for g in 0..levels {
            let size = stages / levels + usize::from(g >= levels - stages % levels);
            let mut m: Option<Diagonals> = None;
            for &h in &halves[start..start + size] {
                let s = stage(kind, n, h);
                m = Some(match m {
                    None => s,
                    Some(prev) => product(&s, &prev, n),
                });
            }
            start += size;
            let mut m = m.expect("every group has a stage");
            // The factor's magnitude spread evenly (each product of r stages grows by 2^r, and
            // 1/n shrinks it back), its phase on the first matrix.
            let mut f = Complex64::new(factor.norm().powf(1.0 / levels as f64), 0.0);
            if g == 0 {
                f *= factor / factor.norm();
            }
            m.values_mut()
                .for_each(|d| d.iter_mut().for_each(|v| *v *= f));
            matrices.push(LinearTransform::from_diagonals(n, m)?);
        }
        Ok(Self { kind, matrices })
    }

    /// CoeffsToSlots for ring degree `ring_n`: `factor * F^-1 / n` in `levels` levels.
    pub fn coeffs_to_slots(
        ring_n: usize,
        levels: usize,
        factor: Complex64,
    ) -> Result<Self, CircuitError> {
        let n = (ring_n / 2).max(1) as f64;
        Self::new(DftKind::CoeffsToSlots, ring_n, levels, factor / n)
    }

    /// SlotsToCoeffs for ring degree `ring_n`: `factor * F` in `levels` levels.
    pub fn slots_to_coeffs(
        ring_n: usize,
        levels: usize,
        factor: Complex64,
    ) -> Result<Self, CircuitError> {
        Self::new(DftKind::SlotsToCoeffs, ring_n, levels, factor)
    }

    /// This DFT of `n` slots (`n < slots`) for sparse packing in a ciphertext of `slots`
    /// slots, whose `n` values repeat `slots / n` times (the plaintext is a polynomial in
    /// `X^(N / 2n)`). Every matrix is tiled over the slots, and the real and imaginary halves
    /// travel in one ciphertext of period `2n` (Lattigo's repacking): CoeffsToSlots' last matrix
    /// zeroes the upper `n` slots of each period (so `re + rot_n(im)` holds both halves), and
    /// SlotsToCoeffs' first matrix reads the period's halves as `lo + i hi` (so it takes that
    /// ciphertext as it is and gives back period `n`). Neither costs a level or a rotation
    /// key beyond the step `n` and the matrices' own.
    pub fn sparse(&self, slots: usize) -> Result<Self, CircuitError> {
        let n = self.matrices.first().map_or(0, |m| m.slots());
        if n == 0 || 2 * n > slots || !slots.is_multiple_of(2 * n) {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!(
                    "a sparse DFT of {n} slots needs at least {} slots, a multiple of {}, got {slots}",
                    2 * n,
                    2 * n
                ),
            });
        }
        let zero = Complex64::new(0.0, 0.0);
        let last = self.matrices.len() - 1;
        let matrices = self
            .matrices
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let period = match (self.kind, i) {
                    (DftKind::CoeffsToSlots, i) if i == last => {
                        // Rows of the upper half of each 2n period zeroed.
                        let d = m
                            .diagonals()
                            .iter()
                            .map(|(&k, d)| {
                                let v = (0..2 * n)
                                    .map(|s| if s < n { d[s] } else { zero })
                                    .collect();
                                (k, v)
                            })
                            .collect();
                        LinearTransform::from_diagonals(2 * n, d)?
                    }
                    (DftKind::SlotsToCoeffs, 0) => {
                        // y[s] = sum_k D_k[r] (x[c] + i x[c + n]), r = s mod n, c = (r + k) mod n,
                        // on a period of 2n: each diagonal feeds two.
                        let mut d: Diagonals = Diagonals::new();
                        let i1 = Complex64::new(0.0, 1.0);
                        for (&k, dk) in m.diagonals() {
                            for s in 0..2 * n {
                                let r = s % n;
                                let c = (r + k) % n;
                                for (col, f) in [(c, dk[r]), (c + n, dk[r] * i1)] {
                                    let off = (col + 2 * n - s) % (2 * n);
                                    d.entry(off).or_insert_with(|| vec![zero; 2 * n])[s] += f;
                                }
                            }
                        }
                        d.retain(|_, v| v.iter().any(|x| *x != zero));
                        LinearTransform::from_diagonals(2 * n, d)?
                    }
                    _ => m.clone(),
                };
                period.tiled(slots)
            })
            .collect::<Result<Vec<_>, CircuitError>>()?;
        Ok(Self {
            kind: self.kind,
            matrices,
        })
    }

    /// The direction.
    pub fn kind(&self) -> DftKind {
        self.kind
    }

    /// The factors, in the order they are applied (one level each).
    pub fn matrices(&self) -> &[LinearTransform] {
        &self.matrices
    }

    /// Every rotation the factors need (left steps, sorted, no zero).
    pub fn rotations(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self.matrices.iter().flat_map(|m| m.rotations()).collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// The DFT in f64 (the factors one after the other): the reference.
    pub fn apply_plain(&self, x: &[Complex64]) -> Vec<Complex64> {
        self.matrices
            .iter()
            .fold(x.to_vec(), |v, m| m.apply_plain(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::{Context, Encoder, Parameters};
    use cryptodl_kernels::primes::ntt_primes;

    fn bitrev(v: &[Complex64]) -> Vec<Complex64> {
        let bits = v.len().trailing_zeros();
        (0..v.len())
            .map(|i| v[cryptodl_kernels::ntt::bit_reverse(i, bits)])
            .collect()
    }

    /// The factored DFTs are the encoder's maps (up to the bit-reversal), in any number of
    /// levels.
    #[test]
    fn factors_multiply_to_the_encoders_special_fft() {
        let ring_n = 1024;
        let q = ntt_primes(30, ring_n, 2, &[]).unwrap();
        let p = ntt_primes(30, ring_n, 1, &q).unwrap();
        let params = Parameters::new("dft", 10, q, p, 20, true).unwrap();
        let ctx = Context::new(&params).unwrap();
        let enc = Encoder::new(ctx.clone());
        let n = ring_n / 2;
        let z: Vec<Complex64> = (0..n)
            .map(|i| Complex64::new((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos() / 2.0))
            .collect();
        // Coefficients of the encoding of z (scale 2^40 so rounding is negligible).
        let scale = 2f64.powi(40);
        let pt = enc.encode_complex(&z, 1, scale).unwrap();
        let mut coeffs = pt.data.clone();
        for (l, limb) in coeffs.chunks_mut(ring_n).enumerate() {
            ctx.q_tables()[l].inverse(limb);
        }
        let mut t = vec![0f64; ring_n];
        ctx.basis(1)
            .compose_centered_f64_batch(&coeffs, ring_n, 1.0 / scale, &mut t);
        let w: Vec<Complex64> = (0..n).map(|j| Complex64::new(t[j], t[j + n])).collect();
        for levels in [1, 3, 9] {
            let cts =
                HomomorphicDft::coeffs_to_slots(ring_n, levels, Complex64::new(1.0, 0.0)).unwrap();
            assert_eq!(cts.matrices().len(), levels);
            let got = bitrev(&cts.apply_plain(&z));
            let err = got
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).norm())
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "CoeffsToSlots in {levels} levels: error {err}");
            let stc =
                HomomorphicDft::slots_to_coeffs(ring_n, levels, Complex64::new(1.0, 0.0)).unwrap();
            let back = stc.apply_plain(&bitrev(&w));
            let err = back
                .iter()
                .zip(&z)
                .map(|(a, b)| (a - b).norm())
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "SlotsToCoeffs in {levels} levels: error {err}");
        }
        // Diagonal counts: r merged stages have at most 2^(r+1) - 1.
        let three = HomomorphicDft::slots_to_coeffs(ring_n, 3, Complex64::new(1.0, 0.0)).unwrap();
        assert!(three.rotations().len() < 3 * 2 * 15);
        assert!(HomomorphicDft::coeffs_to_slots(ring_n, 10, Complex64::new(1.0, 0.0)).is_err());
        assert!(HomomorphicDft::coeffs_to_slots(ring_n, 0, Complex64::new(1.0, 0.0)).is_err());
    }

    /// Sparse packing: `n` slots repeated over 512, CoeffsToSlots leaves the upper half of
    /// each period of 2n zero, `re + rot_n(im)` packs both halves, and SlotsToCoeffs takes
    /// that back to the repeated slots.
    #[test]
    fn sparse_dfts_pack_both_halves_in_one_period() {
        let (slots, n) = (512, 64);
        let one = Complex64::new(1.0, 0.0);
        let z: Vec<Complex64> = (0..n)
            .map(|i| Complex64::new((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos() / 2.0))
            .collect();
        let tiled: Vec<Complex64> = z.iter().cycle().take(slots).copied().collect();
        for levels in [1, 2, 3] {
            let dense = HomomorphicDft::coeffs_to_slots(2 * n, levels, one).unwrap();
            let w = dense.apply_plain(&z);
            let cts = dense.sparse(slots).unwrap();
            assert!(cts.matrices().iter().all(|m| m.slots() == slots));
            let got = cts.apply_plain(&tiled);
            for (s, g) in got.iter().enumerate() {
                let want = if s % (2 * n) < n {
                    w[s % n]
                } else {
                    Complex64::new(0.0, 0.0)
                };
                assert!(
                    (g - want).norm() < 1e-9,
                    "CoeffsToSlots slot {s}: {g} vs {want}"
                );
            }
            let v: Vec<Complex64> = (0..slots)
                .map(|s| Complex64::new(got[s].re + got[(s + n) % slots].im, 0.0))
                .collect();
            let stc = HomomorphicDft::slots_to_coeffs(2 * n, levels, one)
                .unwrap()
                .sparse(slots)
                .unwrap();
            let back = stc.apply_plain(&v);
            let err = back
                .iter()
                .zip(&tiled)
                .map(|(a, b)| (a - b).norm())
                .fold(0.0, f64::max);
            assert!(
                err < 1e-9,
                "sparse round trip in {levels} levels: error {err}"
            );
        }
        let dense = HomomorphicDft::coeffs_to_slots(2 * n, 2, one).unwrap();
        assert!(dense.sparse(n).is_err());
        assert!(dense.sparse(3 * n).is_err());
    }
}
