//! Element-wise kernels on limb-major tensors `[poly][limb][coeff]` (CPU twins of
//! `shaders/elementwise.wgsl`).
//!
//! Every function takes `n` (coefficients per limb) and `moduli` (one per limb); chunk `c` of `n`
//! words uses `moduli[c % moduli.len()]`. Inputs and outputs are canonical residues in `[0, q)`.
//! They are layout-agnostic (coefficient or NTT form), except where stated.

use crate::modarith::{mul_shoup, Modulus};

#[inline]
fn limbs<'a>(
    a: &'a mut [u32],
    n: usize,
    moduli: &'a [Modulus],
) -> impl Iterator<Item = (&'a mut [u32], &'a Modulus)> {
    a.chunks_exact_mut(n).zip(moduli.iter().cycle())
}

/// `a += b`.
pub fn add(a: &mut [u32], b: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(a.len(), b.len());
    for ((x, m), y) in limbs(a, n, moduli).zip(b.chunks_exact(n)) {
        let q = m.value();
        for (x, &y) in x.iter_mut().zip(y) {
            let s = *x + y;
            *x = if s >= q { s - q } else { s };
        }
    }
}

/// `a -= b`.
pub fn sub(a: &mut [u32], b: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(a.len(), b.len());
    for ((x, m), y) in limbs(a, n, moduli).zip(b.chunks_exact(n)) {
        let q = m.value();
        for (x, &y) in x.iter_mut().zip(y) {
            let s = *x + q - y;
            *x = if s >= q { s - q } else { s };
        }
    }
}

/// `a = -a`.
pub fn neg(a: &mut [u32], n: usize, moduli: &[Modulus]) {
    for (x, m) in limbs(a, n, moduli) {
        let q = m.value();
        for x in x.iter_mut() {
            *x = if *x == 0 { 0 } else { q - *x };
        }
    }
}

/// `a *= s_l` with one scalar `s_l < q_l` per limb (Shoup products; no plaintext polynomial).
pub fn mul_scalar(a: &mut [u32], scalars: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(scalars.len(), moduli.len());
    let shoup: Vec<u32> = scalars
        .iter()
        .zip(moduli)
        .map(|(&s, m)| m.shoup(s))
        .collect();
    for (c, x) in a.chunks_exact_mut(n).enumerate() {
        let l = c % moduli.len();
        let (q, s, ss) = (moduli[l].value(), scalars[l], shoup[l]);
        for x in x.iter_mut() {
            *x = mul_shoup(*x, s, ss, q);
        }
    }
}

/// `acc += a * s_l` with one scalar `s_l < q_l` per limb (Shoup products). CPU twin of
/// `ew_mul_scalar_acc`: the backends use it on the first limbs of a wider `acc` (the `P (c0, c1)`
/// term of a fused relinearize-and-rescale).
pub fn mul_scalar_acc(acc: &mut [u32], a: &[u32], scalars: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(scalars.len(), moduli.len());
    assert_eq!(acc.len(), a.len());
    for (c, (z, x)) in acc.chunks_exact_mut(n).zip(a.chunks_exact(n)).enumerate() {
        let l = c % moduli.len();
        let (q, s) = (moduli[l].value(), scalars[l]);
        let ss = moduli[l].shoup(s);
        for (z, &x) in z.iter_mut().zip(x) {
            let v = *z + mul_shoup(x, s, ss, q);
            *z = if v >= q { v - q } else { v };
        }
    }
}

/// `a += s_l` on every coefficient of every limb. In NTT form this adds the constant polynomial
/// `s` (a constant's NTT is the constant in every slot).
pub fn add_scalar(a: &mut [u32], scalars: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(scalars.len(), moduli.len());
    for (c, x) in a.chunks_exact_mut(n).enumerate() {
        let l = c % moduli.len();
        let (q, s) = (moduli[l].value(), scalars[l]);
        for x in x.iter_mut() {
            let v = *x + s;
            *x = if v >= q { v - q } else { v };
        }
    }
}

/// `a *= b` coefficient-wise (a polynomial product when both are in NTT form).
pub fn mul(a: &mut [u32], b: &[u32], n: usize, moduli: &[Modulus]) {
    assert_eq!(a.len(), b.len());
    for ((x, m), y) in limbs(a, n, moduli).zip(b.chunks_exact(n)) {
        for (x, &y) in x.iter_mut().zip(y) {
            *x = m.mul(*x, y);
        }
    }
}

/// `acc += a * b` coefficient-wise.
pub fn mul_acc(acc: &mut [u32], a: &[u32], b: &[u32], n: usize, moduli: &[Modulus]) {
    assert!(acc.len() == a.len() && a.len() == b.len());
    for (((z, m), x), y) in limbs(acc, n, moduli)
        .zip(a.chunks_exact(n))
        .zip(b.chunks_exact(n))
    {
        for ((z, &x), &y) in z.iter_mut().zip(x).zip(y) {
            *z = m.reduce_u64(*z as u64 + x as u64 * y as u64);
        }
    }
}

/// `out = sum_i a[i] * b[i] mod q` coefficient-wise over one limb (NTT form; every slice as long
/// as `out`): products accumulate in `u64` tiles, at most 16 of them per reduction. The CPU's
/// fused plaintext dot product (the GPU composes it from a join, a product and a sum).
pub fn mul_sum_limb(out: &mut [u32], a: &[&[u32]], b: &[&[u32]], m: &Modulus) {
    assert_eq!(a.len(), b.len());
    const TILE: usize = 1024;
    let mut acc = [0u64; TILE];
    for t0 in (0..out.len()).step_by(TILE) {
        let w = TILE.min(out.len() - t0);
        let acc = &mut acc[..w];
        let o = &mut out[t0..t0 + w];
        for (c, (a16, b16)) in a.chunks(16).zip(b.chunks(16)).enumerate() {
            acc.fill(0);
            for (x, y) in a16.iter().zip(b16) {
                for ((s, &x), &y) in acc.iter_mut().zip(&x[t0..t0 + w]).zip(&y[t0..t0 + w]) {
                    *s += x as u64 * y as u64;
                }
            }
            if c == 0 {
                for (o, &s) in o.iter_mut().zip(acc.iter()) {
                    *o = m.reduce_u64(s);
                }
            } else {
                for (o, &s) in o.iter_mut().zip(acc.iter()) {
                    *o = m.add(*o, m.reduce_u64(s));
                }
            }
        }
        if a.is_empty() {
            o.fill(0);
        }
    }
}

/// Ciphertext tensor product in NTT form: `a = (a0, a1)`, `b = (b0, b1)`, each component
/// `[limbs][n]`; writes `out = (a0 b0, a0 b1 + a1 b0, a1 b1)` (`[3][limbs][n]`).
pub fn tensor(a: &[u32], b: &[u32], out: &mut [u32], n: usize, moduli: &[Modulus]) {
    let len = moduli.len() * n;
    assert!(a.len() == 2 * len && b.len() == 2 * len && out.len() == 3 * len);
    let (a0, a1) = a.split_at(len);
    let (b0, b1) = b.split_at(len);
    let (o0, rest) = out.split_at_mut(len);
    let (o1, o2) = rest.split_at_mut(len);
    for (l, m) in moduli.iter().enumerate() {
        let r = l * n..(l + 1) * n;
        for k in r {
            let (x0, x1, y0, y1) = (a0[k] as u64, a1[k] as u64, b0[k] as u64, b1[k] as u64);
            o0[k] = m.reduce_product(x0 * y0);
            o1[k] = m.reduce_u64(x0 * y1 + x1 * y0);
            o2[k] = m.reduce_product(x1 * y1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_agree_with_u64_reference() {
        let moduli = [
            Modulus::new(12_289).unwrap(),
            Modulus::new(998_244_353).unwrap(),
        ];
        let n = 4;
        let a: Vec<u32> = (0..16u32)
            .map(|i| (i * 7_777_777) % moduli[(i as usize / n) % 2].value())
            .collect();
        let b: Vec<u32> = (0..16u32)
            .map(|i| (i * 3_333_331 + 5) % moduli[(i as usize / n) % 2].value())
            .collect();
        let q = |i: usize| moduli[(i / n) % 2].value() as u64;
        let mut s = a.clone();
        add(&mut s, &b, n, &moduli);
        let mut d = a.clone();
        sub(&mut d, &b, n, &moduli);
        let mut p = a.clone();
        mul(&mut p, &b, n, &moduli);
        let mut acc = a.clone();
        mul_acc(&mut acc, &a, &b, n, &moduli);
        let mut ng = a.clone();
        neg(&mut ng, n, &moduli);
        let mut sc = a.clone();
        mul_scalar(&mut sc, &[5, 7], n, &moduli);
        for i in 0..16 {
            let (x, y, m) = (a[i] as u64, b[i] as u64, q(i));
            assert_eq!(s[i] as u64, (x + y) % m);
            assert_eq!(d[i] as u64, (x + m - y) % m);
            assert_eq!(p[i] as u64, x * y % m);
            assert_eq!(acc[i] as u64, (x + x * y) % m);
            assert_eq!(ng[i] as u64, (m - x) % m);
            assert_eq!(sc[i] as u64, x * [5, 7][(i / n) % 2] % m);
        }
        // tensor over two limbs: a = (a0, a1), b = (b0, b1), each [2][n]
        let len = 2 * n;
        let (a2, b2): (Vec<u32>, Vec<u32>) = ([&a[..], &a[..]].concat(), [&b[..], &b[..]].concat());
        let mut t = vec![0u32; 3 * len];
        tensor(&a2[..2 * len], &b2[..2 * len], &mut t, n, &moduli);
        for k in 0..len {
            let m = q(k);
            let (x0, x1, y0, y1) = (
                a2[k] as u64,
                a2[len + k] as u64,
                b2[k] as u64,
                b2[len + k] as u64,
            );
            assert_eq!(t[k] as u64, x0 * y0 % m);
            assert_eq!(t[len + k] as u64, (x0 * y1 + x1 * y0) % m);
            assert_eq!(t[2 * len + k] as u64, x1 * y1 % m);
        }
    }
}
