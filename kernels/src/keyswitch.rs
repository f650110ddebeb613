//! Key-switching inner product (CPU twin of `keyswitch_inner` in `shaders/keyswitch.wgsl`).
//!
//! After mod-up, the `dnum` digits of the polynomial being switched live over the active limbs
//! (`Q_l` then `P`) in NTT form: `digits` is `[dnum][limbs][n]`. The switching key holds, for each
//! digit, the pair `(b_j, a_j)` over all key limbs: `key` is `[dnum][2][key_limbs][n]`, and
//! `limb_map[l]` is the key limb matching active limb `l`. Output `out` is `[2][limbs][n]`:
//! `out_c = sum_j digit_j * key_{j,c}`, canonical.

use crate::modarith::Modulus;

/// Computes the key-switching inner product described in the module docs. Products are summed
/// lazily in `u64` (at most 16 products of 30-bit residues per reduction).
pub fn keyswitch_inner(
    digits: &[u32],
    key: &[u32],
    limb_map: &[usize],
    moduli: &[Modulus],
    n: usize,
    out: &mut [u32],
) {
    let limbs = moduli.len();
    assert_eq!(limb_map.len(), limbs);
    assert_eq!(digits.len() % (limbs * n), 0);
    let dnum = digits.len() / (limbs * n);
    let key_limbs = key.len() / (dnum * 2 * n);
    assert_eq!(key.len(), dnum * 2 * key_limbs * n);
    assert_eq!(out.len(), 2 * limbs * n);
    let (out0, out1) = out.split_at_mut(limbs * n);
    let mut acc = vec![0u64; n];
    let shape = InnerShape {
        dnum,
        limbs,
        key_limbs,
        n,
    };
    for (l, m) in moduli.iter().enumerate() {
        let (o0, o1) = (&mut out0[l * n..(l + 1) * n], &mut out1[l * n..(l + 1) * n]);
        keyswitch_inner_limb(digits, key, shape, l, limb_map[l], m, o0, o1, &mut acc);
    }
}

/// Dimensions of the key-switching inner product.
#[derive(Clone, Copy, Debug)]
pub struct InnerShape {
    /// Number of digits.
    pub dnum: usize,
    /// Active limbs of the digits (`Q_l ++ P`).
    pub limbs: usize,
    /// Limbs of the key (`Q ++ P`).
    pub key_limbs: usize,
    /// Coefficients per limb.
    pub n: usize,
}

/// One limb of [`keyswitch_inner`]: active limb `l` (key limb `key_l`) of both output components.
/// `acc` is scratch of at least `n` words.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn keyswitch_inner_limb(
    digits: &[u32],
    key: &[u32],
    shape: InnerShape,
    l: usize,
    key_l: usize,
    m: &Modulus,
    out0: &mut [u32],
    out1: &mut [u32],
    acc: &mut [u64],
) {
    let InnerShape {
        dnum,
        limbs,
        key_limbs,
        n,
    } = shape;
    let acc = &mut acc[..n];
    // Contiguous loops over coefficients (vectorisable); at most 16 products per u64.
    for (c, o) in [out0, out1].into_iter().enumerate() {
        for chunk_start in (0..dnum).step_by(16) {
            acc.iter_mut().for_each(|a| *a = 0);
            for j in chunk_start..(chunk_start + 16).min(dnum) {
                let d = &digits[(j * limbs + l) * n..(j * limbs + l + 1) * n];
                let kv = &key[((j * 2 + c) * key_limbs + key_l) * n
                    ..((j * 2 + c) * key_limbs + key_l + 1) * n];
                for ((a, &x), &y) in acc.iter_mut().zip(d).zip(kv) {
                    *a += x as u64 * y as u64;
                }
            }
            if chunk_start == 0 {
                for (o, &a) in o.iter_mut().zip(acc.iter()) {
                    *o = m.reduce_u64(a);
                }
            } else {
                for (o, &a) in o.iter_mut().zip(acc.iter()) {
                    *o = m.add(*o, m.reduce_u64(a));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_sum() {
        let moduli = [
            Modulus::new(1_073_741_789).unwrap(),
            Modulus::new(998_244_353).unwrap(),
        ];
        let (n, dnum, key_limbs) = (4, 19, 3);
        let limb_map = [2usize, 0];
        let digits: Vec<u32> = (0..dnum * 2 * n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) % 998_244_353)
            .collect();
        let key: Vec<u32> = (0..dnum * 2 * key_limbs * n)
            .map(|i| (i as u32).wrapping_mul(40_503) % 998_244_353)
            .collect();
        let mut out = vec![0; 2 * 2 * n];
        keyswitch_inner(&digits, &key, &limb_map, &moduli, n, &mut out);
        for c in 0..2 {
            for l in 0..2 {
                let q = moduli[l].value() as u128;
                for k in 0..n {
                    let mut s = 0u128;
                    for j in 0..dnum {
                        s += digits[(j * 2 + l) * n + k] as u128
                            * key[((j * 2 + c) * key_limbs + limb_map[l]) * n + k] as u128;
                    }
                    assert_eq!(out[(c * 2 + l) * n + k] as u128, s % q);
                }
            }
        }
    }
}
