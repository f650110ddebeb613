//! Sparse linear layer over a batch of RNS polynomials (CPU twin of `linear` in
//! `shaders/linear.wgsl`): the weighted sums of ciphertexts that convolutions and dense layers
//! become in batch packing.
//!
//! Layouts (all canonical residues, limb-major):
//! * `x`: the input batch `[inputs][comps][limbs][n]` (e.g. `comps = 2` ciphertext components);
//! * the weights, one sparse row per output in CSR form: `row_ptr` (`outputs + 1` offsets into
//!   the `nnz` entries), `cols` (input index of each entry) and `values` `[limbs][nnz]` (the
//!   integer weight of each entry reduced modulo each limb's prime);
//! * `bias`: `[outputs][limbs]`, added to component 0 only (a plaintext constant);
//! * `out`: `[outputs][comps][limbs][n]` with
//!   `out[j][k][l][c] = (k == 0 ? bias[j][l] : 0) + sum_{e in row j} values[l][e] * x[cols[e]][k][l][c] mod q_l`.
//!
//! The result is the exact sum modulo `q_l`, so the CPU (lazy `u64` sums) and the GPU (Shoup
//! products, modular adds) agree bit for bit. Layout-agnostic: coefficient or NTT form.

use crate::modarith::Modulus;

/// Dimensions of a [`linear`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Input polynomials groups (ciphertexts) in the batch.
    pub inputs: usize,
    /// Output groups.
    pub outputs: usize,
    /// Components per group.
    pub comps: usize,
    /// Limbs per component.
    pub limbs: usize,
    /// Coefficients per limb.
    pub n: usize,
}

/// Sparse weights in CSR form (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct SparseRows<'a> {
    /// `outputs + 1` offsets into the entries; non-decreasing, starting at 0.
    pub row_ptr: &'a [u32],
    /// Input index of each entry.
    pub cols: &'a [u32],
    /// `[limbs][nnz]` weight residues.
    pub values: &'a [u32],
    /// `[outputs][limbs]` residues added to component 0.
    pub bias: &'a [u32],
}

/// Products summed in `u64` before a reduction (`15 (2^30)^2 + 2^30 < 2^64`).
const LAZY_TERMS: usize = 15;

/// Computes the whole layer (see the module docs). `moduli[l]` is limb `l`'s prime.
pub fn linear(
    out: &mut [u32],
    x: &[u32],
    w: SparseRows<'_>,
    shape: LinearShape,
    moduli: &[Modulus],
) {
    let poly = shape.limbs * shape.n;
    assert_eq!(out.len(), shape.outputs * shape.comps * poly);
    let mut acc = vec![0u64; shape.n];
    for (p, o) in out.chunks_exact_mut(poly).enumerate() {
        linear_poly(
            o,
            p / shape.comps,
            p % shape.comps,
            x,
            w,
            shape,
            moduli,
            &mut acc,
        );
    }
}

/// One output polynomial of [`linear`]: output `j`, component `comp`, all limbs (`out` is
/// `[limbs][n]`). `acc` is scratch of at least `n` words.
#[allow(clippy::too_many_arguments)]
pub fn linear_poly(
    out: &mut [u32],
    j: usize,
    comp: usize,
    x: &[u32],
    w: SparseRows<'_>,
    shape: LinearShape,
    moduli: &[Modulus],
    acc: &mut [u64],
) {
    let LinearShape {
        inputs,
        outputs,
        comps,
        limbs,
        n,
    } = shape;
    let nnz = w.cols.len();
    assert_eq!(moduli.len(), limbs);
    assert_eq!(w.row_ptr.len(), outputs + 1);
    assert_eq!(w.values.len(), limbs * nnz);
    assert_eq!(w.bias.len(), outputs * limbs);
    assert_eq!(x.len(), inputs * comps * limbs * n);
    assert_eq!(out.len(), limbs * n);
    let row = w.row_ptr[j] as usize..w.row_ptr[j + 1] as usize;
    let acc = &mut acc[..n];
    for (l, m) in moduli.iter().enumerate() {
        let b = if comp == 0 { w.bias[j * limbs + l] } else { 0 };
        acc.fill(u64::from(b));
        let mut terms = 0;
        for e in row.clone() {
            let wv = u64::from(w.values[l * nnz + e]);
            if wv == 0 {
                continue;
            }
            if terms == LAZY_TERMS {
                for a in acc.iter_mut() {
                    *a = u64::from(m.reduce_u64(*a));
                }
                terms = 0;
            }
            let i = w.cols[e] as usize;
            let xi = &x[((i * comps + comp) * limbs + l) * n..][..n];
            for (a, &v) in acc.iter_mut().zip(xi) {
                *a += wv * u64::from(v);
            }
            terms += 1;
        }
        for (o, &a) in out[l * n..(l + 1) * n].iter_mut().zip(acc.iter()) {
            *o = m.reduce_u64(a);
        }
    }
}

/// Coefficients per tile of [`linear_outputs`]: one output's accumulators for a tile (`TILE`
/// `u64`) stay in vector registers while its row is summed.
const TILE: usize = 32;

/// How many products of two residues below `q` can be added to an accumulator that is at most
/// the largest value [`fold`] leaves (`(2^32 - 1) (2^32 mod q) + 2^32 - 1`) before it may
/// overflow `u64`: at least 11 for 30-bit primes (16 for those just below 2^30), about 4000 for
/// 26-bit ones.
pub fn fold_period(q: u32) -> usize {
    let q = u128::from(q);
    let folded_max = (u128::from(u32::MAX)) * ((1u128 << 32) % q) + u128::from(u32::MAX);
    let product_max = (q - 1) * (q - 1);
    (((u128::from(u64::MAX) - folded_max) / product_max.max(1)) as usize).max(1)
}

/// Words of the packed input panel of [`linear_outputs`] (512 KiB: it stays in the L2 cache).
const PANEL_WORDS: usize = 1 << 17;

/// Consecutive outputs `j0 ..` of [`linear`] at once, equal to it word for word: `out` is their
/// `[outputs][comps][limbs][n]` slice (a whole number of outputs).
///
/// For each limb and component, the inputs the block's rows use are packed, a panel of
/// coefficients at a time, into one contiguous buffer that stays in cache (in the tensor they lie
/// `comps * limbs * n` words apart, a power-of-two multiple that maps them all to the same cache
/// sets). Then each output's row is summed over tiles of `TILE` coefficients in `TILE` `u64`
/// accumulators held in registers (products of 32-bit residues, one `vpmuludq` lane each),
/// folded every [`fold_period`] terms and reduced once per output word: one entry costs one
/// load of a cached input tile and no accumulator traffic. The fold is
/// `a = (a >> 32) (2^32 mod q) + (a mod 2^32)`: the same value modulo `q`, below `2^62 + 2^32`.
/// Explicit AVX-512 or AVX2 where the CPU has them (checked at run time), portable otherwise.
pub fn linear_outputs(
    out: &mut [u32],
    j0: usize,
    x: &[u32],
    w: SparseRows<'_>,
    shape: LinearShape,
    moduli: &[Modulus],
) {
    linear_outputs_isa(out, j0, x, w, shape, moduli, Isa::detect())
}

fn linear_outputs_isa(
    out: &mut [u32],
    j0: usize,
    x: &[u32],
    w: SparseRows<'_>,
    shape: LinearShape,
    moduli: &[Modulus],
    isa: Isa,
) {
    let LinearShape {
        inputs,
        outputs,
        comps,
        limbs,
        n,
    } = shape;
    let nnz = w.cols.len();
    let per_out = comps * limbs * n;
    assert_eq!(out.len() % per_out.max(1), 0);
    let block = out.len() / per_out.max(1);
    assert!(j0 + block <= outputs);
    assert_eq!(moduli.len(), limbs);
    assert_eq!(w.row_ptr.len(), outputs + 1);
    assert_eq!(w.values.len(), limbs * nnz);
    assert_eq!(w.bias.len(), outputs * limbs);
    assert_eq!(x.len(), inputs * comps * limbs * n);
    assert!(w.cols.iter().all(|&c| (c as usize) < inputs));
    if block == 0 || n == 0 {
        return;
    }
    let entries = w.row_ptr[j0] as usize..w.row_ptr[j0 + block] as usize;
    // The inputs the block uses, and the panel width: a multiple of TILE (or all of n).
    let mut used: Vec<u32> = w.cols[entries].to_vec();
    used.sort_unstable();
    used.dedup();
    let span = if n <= TILE {
        n
    } else {
        ((PANEL_WORDS / inputs.max(1)) / TILE * TILE).clamp(TILE, n)
    };
    let mut panel = vec![0u32; inputs * span];
    let mut acc = [0u64; TILE];
    for (l, m) in moduli.iter().enumerate() {
        let period = fold_period(m.value());
        let r32 = (1u64 << 32) % u64::from(m.value());
        let values = &w.values[l * nnz..(l + 1) * nnz];
        for comp in 0..comps {
            for p0 in (0..n).step_by(span) {
                let pw = span.min(n - p0);
                for &i in &used {
                    let i = i as usize;
                    let src = ((i * comps + comp) * limbs + l) * n + p0;
                    panel[i * span..i * span + pw].copy_from_slice(&x[src..src + pw]);
                }
                for b in 0..block {
                    let j = j0 + b;
                    let row = w.row_ptr[j] as usize..w.row_ptr[j + 1] as usize;
                    let (cols, vals) = (&w.cols[row.clone()], &values[row]);
                    let bias = u64::from(if comp == 0 { w.bias[j * limbs + l] } else { 0 });
                    let o = &mut out[b * per_out + (comp * limbs + l) * n + p0..][..pw];
                    let tile = Tile {
                        panel: &panel,
                        span,
                        cols,
                        values: vals,
                        bias,
                        period,
                        r32,
                    };
                    for t0 in (0..pw).step_by(TILE) {
                        let width = TILE.min(pw - t0);
                        if width == TILE {
                            tile.full(isa, t0, &mut acc);
                        } else {
                            tile.partial(t0, width, &mut acc);
                        }
                        for (o, &a) in o[t0..t0 + width].iter_mut().zip(&acc) {
                            *o = m.reduce_u64(a);
                        }
                    }
                }
            }
        }
    }
}

/// The vector instructions the CPU offers (checked once per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    /// Every variant this CPU can run (for tests).
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

/// One output row over a packed panel: `acc[k] = bias + sum_e values[e] * panel[cols[e] * span
/// + t0 + k]`, folded every `period` terms (exact modulo the limb's prime, below `2^64`).
struct Tile<'a> {
    panel: &'a [u32],
    span: usize,
    cols: &'a [u32],
    values: &'a [u32],
    bias: u64,
    period: usize,
    r32: u64,
}

impl Tile<'_> {
    /// A full tile of `TILE` coefficients starting at `t0`.
    fn full(&self, isa: Isa, t0: usize, acc: &mut [u64; TILE]) {
        assert!(t0 + TILE <= self.span);
        assert!(self
            .cols
            .iter()
            .all(|&c| (c as usize + 1) * self.span <= self.panel.len()));
        match isa {
            // SAFETY: the CPU has the feature (Isa::detect), and every load stays inside the
            // panel: column c's tile is panel[c * span + t0 ..][..TILE] with t0 + TILE <= span
            // and (c + 1) * span <= panel.len() (both asserted above).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { simd::tile_avx512(self, t0, acc) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { simd::tile_avx2(self, t0, acc) },
            Isa::Portable => self.partial(t0, TILE, acc),
        }
    }

    /// The first `width` coefficients of a tile, portable code.
    fn partial(&self, t0: usize, width: usize, acc: &mut [u64; TILE]) {
        let acc = &mut acc[..width];
        acc.fill(self.bias);
        let mut terms = 0;
        for (&c, &v) in self.cols.iter().zip(self.values) {
            if terms == self.period {
                for a in acc.iter_mut() {
                    *a = (*a >> 32) * self.r32 + (*a & 0xFFFF_FFFF);
                }
                terms = 0;
            }
            let wv = u64::from(v);
            let base = c as usize * self.span + t0;
            for (a, &x) in acc.iter_mut().zip(&self.panel[base..base + width]) {
                *a += wv * u64::from(x);
            }
            terms += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The row sum of [`Tile::full`] with explicit AVX2 / AVX-512 intrinsics: 32 `u64`
    //! accumulators in 8 (or 4) registers, one `vpmuludq` per 4 (or 8) products.

    use super::{Tile, TILE};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX2; `t0 + TILE <= tile.span` and every column's tile is inside the panel.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(tile: &Tile<'_>, t0: usize, out: &mut [u64; TILE]) {
        let mut acc = [_mm256_set1_epi64x(tile.bias as i64); TILE / 4];
        let r = _mm256_set1_epi64x(tile.r32 as i64);
        let mask = _mm256_set1_epi64x(0xFFFF_FFFF);
        let panel = tile.panel.as_ptr();
        let mut terms = 0;
        for (&c, &v) in tile.cols.iter().zip(tile.values) {
            if terms == tile.period {
                for a in acc.iter_mut() {
                    let hi = _mm256_srli_epi64::<32>(*a);
                    *a = _mm256_add_epi64(_mm256_mul_epu32(hi, r), _mm256_and_si256(*a, mask));
                }
                terms = 0;
            }
            let p = panel.add(c as usize * tile.span + t0);
            let wv = _mm256_set1_epi64x(i64::from(v));
            for (k, a) in acc.iter_mut().enumerate() {
                let x = _mm256_cvtepu32_epi64(_mm_loadu_si128(p.add(4 * k).cast()));
                *a = _mm256_add_epi64(*a, _mm256_mul_epu32(x, wv));
            }
            terms += 1;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(out.as_mut_ptr().add(4 * k).cast(), *a);
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; `t0 + TILE <= tile.span` and every column's tile is inside the
    /// panel.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(tile: &Tile<'_>, t0: usize, out: &mut [u64; TILE]) {
        let mut acc = [_mm512_set1_epi64(tile.bias as i64); TILE / 8];
        let r = _mm512_set1_epi64(tile.r32 as i64);
        let mask = _mm512_set1_epi64(0xFFFF_FFFF);
        let panel = tile.panel.as_ptr();
        let mut terms = 0;
        for (&c, &v) in tile.cols.iter().zip(tile.values) {
            if terms == tile.period {
                for a in acc.iter_mut() {
                    let hi = _mm512_srli_epi64::<32>(*a);
                    *a = _mm512_add_epi64(_mm512_mul_epu32(hi, r), _mm512_and_si512(*a, mask));
                }
                terms = 0;
            }
            let p = panel.add(c as usize * tile.span + t0);
            let wv = _mm512_set1_epi64(i64::from(v));
            for (k, a) in acc.iter_mut().enumerate() {
                let x = _mm512_cvtepu32_epi64(_mm256_loadu_si256(p.add(8 * k).cast()));
                *a = _mm512_add_epi64(*a, _mm512_mul_epu32(x, wv));
            }
            terms += 1;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_si512(out.as_mut_ptr().add(8 * k).cast(), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;

    #[test]
    fn matches_the_schoolbook_sum_with_many_terms() {
        let n = 8;
        let primes = ntt_primes(30, n, 2, &[]).unwrap();
        let moduli: Vec<Modulus> = primes.iter().map(|&q| Modulus::new(q).unwrap()).collect();
        let shape = LinearShape {
            inputs: 40,
            outputs: 3,
            comps: 2,
            limbs: 2,
            n,
        };
        let x: Vec<u32> = (0..shape.inputs * shape.comps * shape.limbs * n)
            .map(|i| {
                let l = (i / n) % shape.limbs;
                (i as u32).wrapping_mul(2_654_435_761) % primes[l]
            })
            .collect();
        // row 0: every input (more terms than one lazy run), row 1: empty, row 2: two entries.
        let mut cols: Vec<u32> = (0..40).collect();
        cols.extend([7, 3]);
        let row_ptr = [0u32, 40, 40, 42];
        let nnz = cols.len();
        let values: Vec<u32> = (0..shape.limbs * nnz)
            .map(|i| (primes[i / nnz] - 1 - i as u32 * 977) % primes[i / nnz])
            .collect();
        let bias: Vec<u32> = (0..shape.outputs * shape.limbs)
            .map(|i| i as u32 * 5)
            .collect();
        let w = SparseRows {
            row_ptr: &row_ptr,
            cols: &cols,
            values: &values,
            bias: &bias,
        };
        let mut out = vec![0u32; shape.outputs * shape.comps * shape.limbs * n];
        linear(&mut out, &x, w, shape, &moduli);
        // Blocks of 2 outputs (a dense row next to an empty one, then a short row) and of all 3.
        let per_out = shape.comps * shape.limbs * n;
        for block in [1, 2, 3] {
            let mut blocked = vec![0u32; out.len()];
            for (k, o) in blocked.chunks_mut(block * per_out).enumerate() {
                linear_outputs(o, k * block, &x, w, shape, &moduli);
            }
            assert_eq!(blocked, out, "blocks of {block}");
        }
        for j in 0..3 {
            for k in 0..2 {
                for l in 0..2 {
                    let q = u128::from(primes[l]);
                    for c in 0..n {
                        let mut s: u128 = if k == 0 { bias[j * 2 + l].into() } else { 0 };
                        for e in row_ptr[j] as usize..row_ptr[j + 1] as usize {
                            let i = cols[e] as usize;
                            s += u128::from(values[l * nnz + e])
                                * u128::from(x[((i * 2 + k) * 2 + l) * n + c]);
                        }
                        assert_eq!(
                            u128::from(out[((j * 2 + k) * 2 + l) * n + c]),
                            s % q,
                            "output {j} component {k} limb {l} coefficient {c}"
                        );
                    }
                }
            }
        }
    }

    /// `linear_outputs` equals a u128 schoolbook sum on worst-case residues (every weight and
    /// input `q - 1`, so the lazy sums sit at their bound and the folds must happen), for
    /// 30-bit and 26-bit primes, full tiles and a partial one, long and empty rows.
    #[test]
    fn tiled_kernel_is_exact_at_the_overflow_bound() {
        for (bits, n) in [(30u32, 64usize), (26, 96), (30, 40)] {
            let primes = ntt_primes(bits, 64, 2, &[]).unwrap();
            let moduli: Vec<Modulus> = primes.iter().map(|&q| Modulus::new(q).unwrap()).collect();
            let inputs = 300;
            let shape = LinearShape {
                inputs,
                outputs: 4,
                comps: 2,
                limbs: 2,
                n,
            };
            // Half the inputs at q - 1 (worst case), half pseudo-random.
            let x: Vec<u32> = (0..inputs * 2 * 2 * n)
                .map(|i| {
                    let q = primes[(i / n) % 2];
                    if (i / (4 * n)) % 2 == 0 {
                        q - 1
                    } else {
                        (i as u32).wrapping_mul(2_654_435_761) % q
                    }
                })
                .collect();
            // Rows: all 300 inputs, empty, 13 entries (just past a fold period), one entry.
            let mut cols: Vec<u32> = (0..300).collect();
            cols.extend((0..13).map(|i| i * 7));
            cols.push(299);
            let row_ptr = [0u32, 300, 300, 313, 314];
            let nnz = cols.len();
            let values: Vec<u32> = (0..2 * nnz)
                .map(|i| {
                    let q = primes[i / nnz];
                    if i % 3 == 0 {
                        q - 1
                    } else {
                        (i as u32).wrapping_mul(40_503) % q
                    }
                })
                .collect();
            let bias: Vec<u32> = (0..8).map(|i| primes[i % 2] - 1 - i as u32).collect();
            let w = SparseRows {
                row_ptr: &row_ptr,
                cols: &cols,
                values: &values,
                bias: &bias,
            };
            let mut reference = vec![0u32; 4 * 2 * 2 * n];
            linear(&mut reference, &x, w, shape, &moduli);
            let mut fast = vec![0u32; reference.len()];
            for isa in Isa::available() {
                fast.fill(0);
                linear_outputs_isa(&mut fast, 0, &x, w, shape, &moduli, isa);
                assert_eq!(fast, reference, "{isa:?}, {bits}-bit primes, n = {n}");
            }
            for j in 0..4 {
                for k in 0..2 {
                    for l in 0..2 {
                        let q = u128::from(primes[l]);
                        for c in 0..n {
                            let mut sum: u128 = if k == 0 { bias[j * 2 + l].into() } else { 0 };
                            for e in row_ptr[j] as usize..row_ptr[j + 1] as usize {
                                let i = cols[e] as usize;
                                sum += u128::from(values[l * nnz + e])
                                    * u128::from(x[((i * 2 + k) * 2 + l) * n + c]);
                            }
                            assert_eq!(
                                u128::from(fast[((j * 2 + k) * 2 + l) * n + c]),
                                sum % q,
                                "{bits} bits: output {j} component {k} limb {l} coefficient {c}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fold_periods_keep_sums_below_two_to_the_64() {
        assert!(fold_period((1 << 30) - 35) >= 11);
        assert!(fold_period((1 << 26) - 5) > 2000);
        for q in [12_289u32, (1 << 26) - 5, (1 << 30) - 35] {
            let q128 = u128::from(q);
            let folded = u128::from(u32::MAX) * ((1u128 << 32) % q128) + u128::from(u32::MAX);
            let worst = folded + fold_period(q) as u128 * (q128 - 1) * (q128 - 1);
            assert!(worst <= u128::from(u64::MAX), "q = {q}");
        }
    }
}
