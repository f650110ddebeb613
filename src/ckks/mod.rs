//! RNS-CKKS: parameters, encoder, keys, encryption, the evaluator (batched over any backend, with a
//! single-ciphertext front), precision, serialization.
//!
//! Ciphertexts are kept in NTT form, limb-major (`[component][limb][coeff]`). Key switching is
//! "hybrid" (SEAL-style digits of `|P|` primes, special primes `P`), shared by relinearization and
//! rotations.

mod ciphertext;
mod context;
mod device;
mod encoder;
mod encryptor;
mod evaluator;
mod keys;
mod params;
mod poly;
mod precision;
mod sampling;
pub mod serialize;

pub use ciphertext::{Ciphertext, Plaintext};
pub use context::Context;
pub use device::{
    DeviceCiphertext, DeviceEvaluator, DeviceKeys, DevicePlainBatch, DevicePlaintext,
    EncodedLinear, KeyLevels, LinearLayer,
};
pub use encoder::Encoder;
pub use encryptor::{Decryptor, Encryptor};
pub use evaluator::{Evaluator, HostKeys};
pub use keys::{
    encapsulation_special, EncapsulationKeys, EvaluationKeys, KeyGenerator, KeySetId, PublicKey,
    SecretKey, SwitchingKey,
};
pub use params::{max_log_qp_128, Parameters, Preset, PRESETS};
pub use precision::{precision_stats, PrecisionStats};
pub use sampling::Sampler;

use cryptodl_kernels::KernelError;

/// Errors from CKKS parameter handling and operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CkksError {
    /// A compute backend failed.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// Low-level arithmetic setup failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// No preset of that name.
    #[error("unknown parameter preset `{name}` (known: {known}); see `cryptodl params`")]
    UnknownPreset { name: String, known: String },
    /// Custom parameters are malformed.
    #[error("invalid parameters: {reason}")]
    InvalidParameters { reason: String },
    /// Parameters below 128-bit security without an explicit opt-in.
    #[error(
        "N = {n} with log2(QP) = {log_qp} bits is below 128-bit security (the HomomorphicEncryption.org table allows at most {max_log_qp} bits for this N); pass --insecure to use it anyway"
    )]
    Insecure {
        n: usize,
        log_qp: u32,
        max_log_qp: u32,
    },
    /// Operands at different levels.
    #[error(
        "{op}: operands are at different levels ({left} vs {right}); drop levels or rescale first"
    )]
    LevelMismatch {
        op: &'static str,
        left: usize,
        right: usize,
    },
    /// Batches of different sizes.
    #[error("{op}: batches hold different numbers of ciphertexts ({left} vs {right})")]
    CountMismatch {
        op: &'static str,
        left: usize,
        right: usize,
    },
    /// Ciphertexts with different numbers of components where equal ones are needed.
    #[error("{op}: ciphertexts have {left} and {right} components; relinearize first")]
    SizeMismatch {
        op: &'static str,
        left: usize,
        right: usize,
    },
    /// A linear layer that does not fit its input.
    #[error("invalid linear layer: {reason}")]
    InvalidLayer { reason: String },
    /// An empty batch.
    #[error("a batch needs at least one ciphertext")]
    EmptyBatch,
    /// Operands at different scales.
    #[error("{op}: operands have different scales (2^{:.3} vs 2^{:.3}); rescale or adjust the scale first", .left.log2(), .right.log2())]
    ScaleMismatch {
        op: &'static str,
        left: f64,
        right: f64,
    },
    /// No level left.
    #[error(
        "{op}: the ciphertext is at level 0, no prime left to drop; use parameters with more depth"
    )]
    OutOfLevels { op: &'static str },
    /// Ciphertexts below the level a computation starts from.
    #[error("the ciphertexts are at level {level}, but the computation needs level {needed}; encrypt them at that level or above (with parameters that have it)")]
    TooShallow { level: usize, needed: usize },
    /// A level above the parameters' top level.
    #[error("level {level} is above the top level {max} of these parameters")]
    LevelOutOfRange { level: usize, max: usize },
    /// A ciphertext of more than 2 components where 2 are needed.
    #[error("the ciphertext has {size} components; relinearize it first")]
    NotRelinearized { size: usize },
    /// Relinearization without a relinearization key.
    #[error("no relinearization key in the evaluation keys")]
    MissingRelinKey,
    /// Rotation without its Galois key.
    #[error("no Galois key for rotation step {step} (Galois element {galois}); generate keys with that rotation")]
    MissingGaloisKey { step: i64, galois: usize },
    /// Bootstrapping without the encapsulation keys.
    #[error("no encapsulation keys: bootstrapping needs them; generate the evaluation keys for bootstrapping (keygen --bootstrap)")]
    MissingEncapsulationKeys,
    /// A rotation that is the identity.
    #[error("rotation step {step} is a multiple of the slot count {slots}")]
    InvalidRotation { step: i64, slots: usize },
    /// More values than slots.
    #[error("{given} values do not fit in {slots} slots")]
    TooManySlots { given: usize, slots: usize },
    /// NaN or infinite input.
    #[error("input contains NaN or infinite values")]
    NonFiniteInput,
    /// A scale that is not a finite number >= 1.
    #[error("invalid scale {scale}")]
    InvalidScale { scale: f64 },
    /// An object whose size does not match the parameters.
    #[error("{what} has {found} residues, expected {expected} for these parameters")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// Key material that was not made from this secret key (relabelled with its key-set id):
    /// its RLWE samples do not decrypt to small noise under it.
    #[error(
        "{what} was not made from this secret key: it decrypts to noise of 2^{noise_bits} under \
         it, where a key of this key set shows at most 2^{limit_bits}; it comes from another \
         `keygen`, relabelled with this key set's id, or is damaged behind a recomputed \
         checksum. Use the key files `keygen` wrote with this secret key"
    )]
    ForeignKey {
        /// `the public key`, `the relinearization key`, `the Galois key of element 5`.
        what: String,
        /// log2 of the largest residual coefficient found.
        noise_bits: u32,
        /// log2 of the largest a genuine key may show.
        limit_bits: u32,
    },
}
