//! Pure modular / RNS / NTT arithmetic for cryptodl, and the CPU twin of every WGSL kernel.
//!
//! Nothing here knows about CKKS, GPUs or files. Every kernel function works on flat limb-major
//! tensors `[poly][limb][coeff]` of canonical `u32` residues modulo primes `q < 2^30`.

pub mod automorphism;
pub mod elementwise;
pub mod keyswitch;
pub mod linear;
pub mod modarith;
pub mod ntt;
pub mod primes;
pub mod rescale;
pub mod rns;

/// Errors from building moduli, primes, tables and bases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The modulus is outside `[2, 2^30)`.
    #[error(
        "modulus {q} is outside [2, 2^30): residues must leave room for lazy reduction in u32"
    )]
    ModulusOutOfRange { q: u32 },
    /// The ring degree is not a power of two (or is below 2).
    #[error("ring degree {n} is not a power of two >= 2")]
    DegreeNotPowerOfTwo { n: usize },
    /// A prime bit size outside what u32 residues support.
    #[error("prime size {bits} bits is outside 2..=30")]
    PrimeBitsOutOfRange { bits: u32 },
    /// Not enough NTT-friendly primes of the requested size.
    #[error("fewer than {count} primes of {bits} bits are 1 mod 2N for N = {n}")]
    NotEnoughPrimes { bits: u32, n: usize, count: usize },
    /// The modulus is not prime.
    #[error("{q} is not prime")]
    NotPrime { q: u32 },
    /// The prime does not support a negacyclic NTT of this size.
    #[error("{q} is not 1 mod 2N for N = {n}, so it has no primitive 2N-th root of unity")]
    NotNttFriendly { q: u32, n: usize },
    /// An RNS basis was given no moduli.
    #[error("an RNS basis needs at least one modulus")]
    EmptyBasis,
    /// A modulus appears twice in an RNS basis.
    #[error("modulus {q} appears twice in an RNS basis")]
    DuplicateModulus { q: u32 },
}
