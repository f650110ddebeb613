//! Galois automorphisms `X -> X^g` (g odd) of `Z_q[X]/(X^N + 1)` (CPU twin of
//! `shaders/automorphism.wgsl`).
//!
//! In NTT form (bit-reversed order, see [`crate::ntt`]) slot `j` holds the evaluation at
//! `psi^(2 bitrev(j) + 1)`, so the automorphism is a pure permutation of slots:
//! `out[j] = in[perm[j]]` with `2 bitrev(perm[j]) + 1 = (2 bitrev(j) + 1) * g mod 2N`.

use crate::modarith::Modulus;
use crate::ntt::bit_reverse;

/// The slot permutation of `X -> X^g` in bit-reversed NTT form: `out[j] = in[perm[j]]`.
pub fn galois_permutation_ntt(g: usize, n: usize) -> Vec<u32> {
    assert!(g % 2 == 1 && n.is_power_of_two());
    let bits = n.trailing_zeros();
    let two_n = 2 * n;
    (0..n)
        .map(|j| {
            let e = ((2 * bit_reverse(j, bits) + 1) * g) % two_n;
            bit_reverse((e - 1) / 2, bits) as u32
        })
        .collect()
}

/// Applies a slot permutation to every limb of a tensor in NTT form: `out[.., j] = input[.., perm[j]]`.
pub fn automorphism_ntt(input: &[u32], out: &mut [u32], perm: &[u32]) {
    let n = perm.len();
    assert_eq!(input.len(), out.len());
    for (o, i) in out.chunks_exact_mut(n).zip(input.chunks_exact(n)) {
        for (o, &p) in o.iter_mut().zip(perm) {
            *o = i[p as usize];
        }
    }
}

/// `X -> X^g` on every limb of a tensor in coefficient form: coefficient `k` moves to `k g mod 2N`,
/// negated when that index is `>= N`.
pub fn automorphism_coeff(input: &[u32], out: &mut [u32], g: usize, n: usize, moduli: &[Modulus]) {
    assert_eq!(input.len(), out.len());
    for (c, (o, i)) in out
        .chunks_exact_mut(n)
        .zip(input.chunks_exact(n))
        .enumerate()
    {
        let m = &moduli[c % moduli.len()];
        for (k, &v) in i.iter().enumerate() {
            let e = (k * g) % (2 * n);
            if e < n {
                o[e] = v;
            } else {
                o[e - n] = m.neg(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntt::NttTable;
    use crate::primes::ntt_primes;

    #[test]
    fn ntt_permutation_matches_coefficient_automorphism() {
        for n in [8usize, 64, 1024] {
            let q = ntt_primes(28, n, 1, &[]).unwrap()[0];
            let t = NttTable::new(q, n).unwrap();
            let m = [*t.modulus()];
            let a: Vec<u32> = (0..n as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761)) % q)
                .collect();
            for g in [3usize, 5, 25, 2 * n - 1] {
                let mut coeff = vec![0; n];
                automorphism_coeff(&a, &mut coeff, g, n, &m);
                t.forward(&mut coeff);
                let mut fa = a.clone();
                t.forward(&mut fa);
                let mut perm_out = vec![0; n];
                automorphism_ntt(&fa, &mut perm_out, &galois_permutation_ntt(g, n));
                assert_eq!(perm_out, coeff, "n={n} g={g}");
            }
        }
    }
}
