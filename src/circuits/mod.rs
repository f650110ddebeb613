//! Homomorphic circuits built from the CKKS evaluator: polynomial evaluation (and, on top of it,
//! the blocks of bootstrapping and of deep networks), written once over any backend.
//!
//! Like Lattigo's `he/hefloat`, everything here is a client of
//! [`DeviceEvaluator`](crate::ckks::DeviceEvaluator) and never touches a backend directly, so a
//! circuit gives the same words on the CPU and on a GPU.

pub mod bootstrap;
pub mod dft;
pub mod eval_mod;
pub mod linear_transform;
pub mod polynomial;

pub use bootstrap::{BootstrapConfig, BootstrapCost, Bootstrapper};
pub use dft::{DftKind, HomomorphicDft};
pub use eval_mod::EvalMod;
pub use linear_transform::{EncodedTransform, LinearTransform};
pub use polynomial::{Chebyshev, PolynomialCost, PolynomialEvaluator};

use crate::ckks::CkksError;

/// Errors from homomorphic circuits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CircuitError {
    /// A CKKS operation failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// The input does not have the levels the circuit consumes.
    #[error("{circuit} needs {needed} levels but its input is at level {level}; encrypt higher, use a deeper preset, or a lower degree")]
    OutOfLevels {
        /// What was being evaluated.
        circuit: String,
        /// Levels the circuit consumes.
        needed: usize,
        /// The input's level.
        level: usize,
    },
    /// A polynomial that cannot be evaluated (no coefficients, a non-finite value, an empty
    /// interval).
    #[error("invalid polynomial: {reason}")]
    InvalidPolynomial {
        /// What is wrong with it.
        reason: String,
    },
}
