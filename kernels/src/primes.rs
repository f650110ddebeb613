//! NTT-friendly primes (`q < 2^30`, `q = 1 mod 2N`) and primitive roots of unity.

use crate::modarith::{Modulus, MAX_MODULUS_BITS};
use crate::KernelError;

/// Deterministic Miller-Rabin primality test for any `u64`.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const SMALL: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for p in SMALL {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let (mut d, mut s) = (n - 1, 0);
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mulmod = |a: u64, b: u64| (a as u128 * b as u128 % n as u128) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    'witness: for a in SMALL {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Returns `count` distinct primes of exactly `bits` bits with `q = 1 mod 2n`, largest first,
/// skipping those in `exclude` (like SEAL's `CoeffModulus::Create`).
pub fn ntt_primes(
    bits: u32,
    n: usize,
    count: usize,
    exclude: &[u32],
) -> Result<Vec<u32>, KernelError> {
    if !n.is_power_of_two() || n < 2 {
        return Err(KernelError::DegreeNotPowerOfTwo { n });
    }
    if !(2..=MAX_MODULUS_BITS).contains(&bits) {
        return Err(KernelError::PrimeBitsOutOfRange { bits });
    }
    let two_n = 2 * n as u64;
    let lower = 1u64 << (bits - 1);
    // Largest candidate below 2^bits that is 1 mod 2n.
    let mut c = ((1u64 << bits) - 1) / two_n * two_n + 1;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if c <= lower {
            return Err(KernelError::NotEnoughPrimes { bits, n, count });
        }
        if is_prime(c) && !exclude.contains(&(c as u32)) {
            out.push(c as u32);
        }
        c -= two_n;
    }
    Ok(out)
}

/// Checks that `q` is a prime below `2^30` with `q = 1 mod 2n`.
pub fn check_ntt_prime(q: u32, n: usize) -> Result<(), KernelError> {
    Modulus::new(q)?;
    if !is_prime(q as u64) {
        return Err(KernelError::NotPrime { q });
    }
    if !(q as u64 - 1).is_multiple_of(2 * n as u64) {
        return Err(KernelError::NotNttFriendly { q, n });
    }
    Ok(())
}

/// The smallest primitive `2n`-th root of unity modulo the NTT-friendly prime `q` (SEAL's choice).
pub fn minimal_primitive_root(q: u32, n: usize) -> Result<u32, KernelError> {
    check_ntt_prime(q, n)?;
    let m = Modulus::new(q)?;
    let two_n = 2 * n as u64;
    let cofactor = (q as u64 - 1) / two_n;
    // A 2n-th root g is primitive iff g^n = -1 (2n is a power of two).
    let mut root = None;
    for x in 2..q {
        let g = m.pow(x, cofactor);
        if m.pow(g, n as u64) == q - 1 {
            root = Some(g);
            break;
        }
    }
    let g = root.ok_or(KernelError::NotNttFriendly { q, n })?;
    // All primitive 2n-th roots are the odd powers of g; take the smallest.
    let g2 = m.mul(g, g);
    let (mut best, mut cur) = (g, g);
    for _ in 1..n {
        cur = m.mul(cur, g2);
        best = best.min(cur);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primality_known_values() {
        assert!(
            is_prime(2) && is_prime(12_289) && is_prime(998_244_353) && is_prime(1_073_741_789)
        );
        assert!(!is_prime(1) && !is_prime(561) && !is_prime(1_073_741_823));
        assert!(is_prime(18_446_744_073_709_551_557)); // largest 64-bit prime
    }

    #[test]
    fn primes_are_ntt_friendly_distinct_and_sized() {
        let ps = ntt_primes(26, 8192, 6, &[]).unwrap();
        assert_eq!(ps.len(), 6);
        for w in ps.windows(2) {
            assert!(w[0] > w[1]);
        }
        for &p in &ps {
            check_ntt_prime(p, 8192).unwrap();
            assert_eq!(32 - p.leading_zeros(), 26);
        }
        let more = ntt_primes(26, 8192, 2, &ps).unwrap();
        assert!(more.iter().all(|p| !ps.contains(p)));
    }

    #[test]
    fn known_answer_root() {
        // 12289 = 3 * 2^12 + 1; for n = 1024 SEAL-style minimal root.
        let psi = minimal_primitive_root(12_289, 1024).unwrap();
        let m = Modulus::new(12_289).unwrap();
        assert_eq!(m.pow(psi, 1024), 12_288);
        assert_eq!(m.pow(psi, 2048), 1);
        // no smaller primitive root exists
        for x in 2..psi {
            assert_ne!(m.pow(x, 1024), 12_288);
        }
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(
            check_ntt_prime(12_287, 1024),
            Err(KernelError::NotPrime { .. })
        ));
        assert!(matches!(
            check_ntt_prime(13, 1024),
            Err(KernelError::NotNttFriendly { .. })
        ));
        assert!(matches!(
            ntt_primes(31, 1024, 1, &[]),
            Err(KernelError::PrimeBitsOutOfRange { .. })
        ));
        assert!(matches!(
            ntt_primes(14, 4096, 5, &[]),
            Err(KernelError::NotEnoughPrimes { .. })
        ));
    }
}
