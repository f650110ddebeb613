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

/// Consecutive outputs `j0 ..` of [`linear`] at once: `out` is their `[outputs][comps][limbs][n]`
/// slice (a whole number of outputs). The entries of all rows are visited position by position,
/// so an input that several rows share (every input, in a dense layer) is read from memory once
/// per block rather than once per output. Equal to [`linear_poly`] for each output. `acc` is
/// scratch (resized as needed).
pub fn linear_block(
    out: &mut [u32],
    j0: usize,
    x: &[u32],
    w: SparseRows<'_>,
    shape: LinearShape,
    moduli: &[Modulus],
    acc: &mut Vec<u64>,
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
    assert_eq!(out.len() % per_out, 0);
    let block = out.len() / per_out;
    assert!(j0 + block <= outputs);
    assert_eq!(moduli.len(), limbs);
    assert_eq!(w.row_ptr.len(), outputs + 1);
    assert_eq!(w.values.len(), limbs * nnz);
    assert_eq!(w.bias.len(), outputs * limbs);
    assert_eq!(x.len(), inputs * comps * limbs * n);
    acc.resize(block * n, 0);
    let start = |b: usize| w.row_ptr[j0 + b] as usize;
    let len = |b: usize| w.row_ptr[j0 + b + 1] as usize - start(b);
    let longest = (0..block).map(len).max().unwrap_or(0);
    let mut terms = vec![0usize; block];
    for comp in 0..comps {
        for (l, m) in moduli.iter().enumerate() {
            for b in 0..block {
                let bias = if comp == 0 {
                    w.bias[(j0 + b) * limbs + l]
                } else {
                    0
                };
                acc[b * n..(b + 1) * n].fill(u64::from(bias));
            }
            terms.fill(0);
            for t in 0..longest {
                for b in 0..block {
                    if t >= len(b) {
                        continue;
                    }
                    let e = start(b) + t;
                    let wv = u64::from(w.values[l * nnz + e]);
                    if wv == 0 {
                        continue;
                    }
                    let a = &mut acc[b * n..(b + 1) * n];
                    if terms[b] == LAZY_TERMS {
                        for v in a.iter_mut() {
                            *v = u64::from(m.reduce_u64(*v));
                        }
                        terms[b] = 0;
                    }
                    let i = w.cols[e] as usize;
                    let xi = &x[((i * comps + comp) * limbs + l) * n..][..n];
                    for (v, &y) in a.iter_mut().zip(xi) {
                        *v += wv * u64::from(y);
                    }
                    terms[b] += 1;
                }
            }
            for b in 0..block {
                let o = &mut out[b * per_out + (comp * limbs + l) * n..][..n];
                for (o, &a) in o.iter_mut().zip(&acc[b * n..(b + 1) * n]) {
                    *o = m.reduce_u64(a);
                }
            }
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
            let mut acc = Vec::new();
            for (k, o) in blocked.chunks_mut(block * per_out).enumerate() {
                linear_block(o, k * block, &x, w, shape, &moduli, &mut acc);
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
}
