//! Versioned binary files for keys and ciphertexts.
//!
//! Every object (secret key, public key, evaluation keys, one ciphertext, a tensor of
//! ciphertexts) is stored as one self-describing file: a fixed header, kind-specific header
//! fields, a payload of raw little-endian words, and a CRC-32 trailer. The `*_to_bytes` /
//! `*_from_bytes` functions work in memory; `save_*` / `load_*` wrap them with files.
//!
//! # Byte layout (format version 2)
//!
//! All integers are little-endian. Offsets are in bytes.
//!
//! | offset | size | field                                                                  |
//! |-------:|-----:|------------------------------------------------------------------------|
//! | 0      | 8    | magic `b"CRYPTODL"`                                                    |
//! | 8      | 2    | format version, u16 (= 2)                                              |
//! | 10     | 2    | object kind, u16: 1 secret key, 2 public key, 3 evaluation keys, 4 ciphertext, 5 ciphertext tensor |
//! | 12     | 8    | parameter fingerprint, u64 ([`Parameters::fingerprint`]: N and every prime, in order) |
//! | 20     | 4    | `log2(N)`, u32                                                         |
//! | 24     | 16   | key-set id ([`KeySetId`]: of the keys, or of the keys the ciphertexts were encrypted or evaluated with; zero: none) |
//! | 40     | ...  | kind-specific fields (below)                                           |
//! | H      | ...  | payload                                                                |
//! | end-4  | 4    | CRC-32 (IEEE, as `crc32fast` / zlib compute it) of every byte before it |
//!
//! Kind-specific fields and payload, with `N` the ring degree, `L` the top level, `|P|` the
//! number of special primes, `K = L + 1 + |P|` and `dnum` the number of key-switching digits:
//!
//! | kind | fields at offset 40 | payload |
//! |------|---------------------|---------|
//! | 1 secret key | `n` u32 (= N), reserved u32 (= 0); H = 48 | `N` bytes: the ternary coefficients as i8 (`0xFF`, `0x00`, `0x01`); their hash must be the key-set id |
//! | 2 public key | `limbs` u32 (= K), `components` u32 (= 2); H = 48 | `2 * K * N` u32, `[component][limb][coeff]`, NTT form, limbs `q_0..q_L, p_0..` |
//! | 3 evaluation keys | `dnum` u32, `limbs` u32 (= K), `flags` u32 (bit 0: a relinearization key, bit 1: encapsulation keys; other bits 0), `galois_count` u32 (= G), then G Galois elements u64, odd, in `3..2N`, strictly increasing, then if flag 1 `base` u32 (`< L`) and `special` u32 (`1..=|P|`); H = 56 + 8 G (+ 8) | the relinearization key if flag 0, then the Galois keys in header order, then if flag 1 bootstrapping's encapsulation keys: `s -> s'` as `2 * (base + 1 + special) * N` u32 (`[component][limb][coeff]`, limbs `q_0..q_base, p_0..p_(special-1)`) and `s' -> s` as a full key; each key is `dnum * 2 * K * N` u32, `[digit][component][limb][coeff]`, NTT form |
//! | 4 ciphertext, 5 ciphertext tensor | `count` u32 (kind 4: = 1), `size` u32 (components, 2 or 3), `level` u32 (`<= L`), reserved u32 (= 0), `scale` f64 (IEEE-754 bits as u64, finite and `>= 1`), then the label ([`CiphertextLabel`]): `content` u32 (0 unlabelled, 1 input batch, 2 logits), `batch` u32, `images` u32, reserved u32 (= 0), job id (16 bytes), model digest (32 bytes); H = 128 | `count * size * (level + 1) * N` u32, `[ciphertext][component][limb][coeff]`, NTT form, limbs `q_0..q_level` |
//!
//! All ciphertexts of one file share size, level and scale. Every residue is below its prime.
//! Format version 1 (before key-set ids and labels) is refused with a message saying so.
//!
//! # Loading
//!
//! Loading never panics, never allocates from an unchecked header value and reads only regular
//! files, at most [`MAX_PAYLOAD_BYTES`] of payload. It checks the magic, then the CRC **before
//! interpreting any other byte**, then the format version, the object kind, the parameter
//! fingerprint against the [`Context`] the object will be used with, every header field, that
//! the payload length the header describes equals what the file holds, and that every residue is
//! below its prime. Each failure is its own [`FileError`] variant. When the CRC does not match,
//! the error is [`FileError::ChecksumMismatch`] (or [`FileError::Truncated`] when the file is
//! shorter than its header describes), since no field of a corrupted file can be trusted.
//!
//! # Secrets
//!
//! The secret key has its own kind and its own functions; [`EvaluationKeys`] holds only
//! switching keys (public RLWE samples), so an evaluation-key file cannot contain secret material
//! by construction. Buffers holding secret-key bytes are zeroized when dropped
//! ([`secret_key_to_bytes`] returns a [`Zeroizing`] buffer), secret-key files are written with
//! mode 0600 on Unix (other files 0644). A secret key whose coefficients do not hash to its
//! key-set id (forged, or damaged behind a recomputed CRC) is refused.
//!
//! Writes are atomic ([`crate::io::write_atomic`]): the file is written to a temporary file in the
//! same directory, synced, then renamed over the destination.

mod read;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Ciphertext, Context, EvaluationKeys, KeySetId, Parameters, PublicKey, SecretKey};
use read::*;
use write::*;

/// The first 8 bytes of every cryptodl file.
pub const MAGIC: [u8; 8] = *b"CRYPTODL";
/// The format version this build writes (and the only one it reads).
pub const FORMAT_VERSION: u16 = 2;
/// The largest payload a file may describe (16 GiB); larger headers are refused before any
/// allocation.
pub const MAX_PAYLOAD_BYTES: u64 = 16 << 30;

/// Bytes of the header common to every kind.
const COMMON_HEADER_LEN: usize = 40;
/// Bytes of a ciphertext file's header (common, shape and label).
const CIPHERTEXT_HEADER_LEN: usize = 128;
/// Bytes of the CRC trailer.
const CRC_LEN: usize = 4;
/// Upper bound of any header (evaluation keys with one Galois key per odd element mod 2^17).
const MAX_HEADER_BYTES: u64 = 56 + 8 * (1 << 16);
/// Largest ciphertext size (components) accepted.
const MAX_COMPONENTS: u32 = 3;
/// Path shown in errors of the in-memory functions.
const MEMORY: &str = "<memory>";

/// The kind of object a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A secret key (kind 1).
    SecretKey,
    /// A public key (kind 2).
    PublicKey,
    /// Evaluation keys: relinearization and Galois keys (kind 3).
    EvaluationKeys,
    /// One ciphertext (kind 4).
    Ciphertext,
    /// Several ciphertexts of one size, level and scale (kind 5).
    CiphertextTensor,
}

impl ObjectKind {
    /// The kind's code in the header.
    pub fn code(self) -> u16 {
        match self {
            Self::SecretKey => 1,
            Self::PublicKey => 2,
            Self::EvaluationKeys => 3,
            Self::Ciphertext => 4,
            Self::CiphertextTensor => 5,
        }
    }

    /// The kind of a header code, if known.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::SecretKey,
            2 => Self::PublicKey,
            3 => Self::EvaluationKeys,
            4 => Self::Ciphertext,
            5 => Self::CiphertextTensor,
            _ => return None,
        })
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SecretKey => "a secret key",
            Self::PublicKey => "a public key",
            Self::EvaluationKeys => "evaluation keys",
            Self::Ciphertext => "a ciphertext",
            Self::CiphertextTensor => "a ciphertext tensor",
        })
    }
}

/// Errors reading or writing key and ciphertext files. `path` is `<memory>` for the in-memory
/// functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The operating system refused a read or write.
    #[error("{}: {error}", .path.display())]
    Io {
        path: PathBuf,
        // Not named `source` (thiserror would make it the cause): the message already says it,
        // and `{:#}` would print it twice.
        error: io::Error,
    },
    /// The file does not start with the cryptodl magic bytes.
    #[error("{}: not a cryptodl file (it does not start with the CRYPTODL magic bytes)", .path.display())]
    NotCryptodl { path: PathBuf },
    /// The file was written by a newer format version.
    #[error("{}: written by a newer cryptodl (format v{found}, this build reads up to v{supported}), upgrade", .path.display())]
    NewerFormat {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    /// Format version 0 (never written by any cryptodl).
    #[error("{}: unknown format version {found} (corrupted header)", .path.display())]
    UnknownFormat { path: PathBuf, found: u16 },
    /// A file of an older format this build no longer reads.
    #[error("{}: written in format v{found} by an older cryptodl; this build reads v{supported} only (it binds files to their key set and job): run keygen and encrypt again", .path.display())]
    OlderFormat {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    /// Not a regular file (a directory, a FIFO, a device...).
    #[error("{}: not a regular file", .path.display())]
    NotAFile { path: PathBuf },
    /// A secret key whose coefficients do not hash to its key-set id.
    #[error("{}: the secret key does not match its key-set id (stored {stored}, its coefficients give {computed}): the file was forged or damaged", .path.display())]
    ForgedSecretKey {
        path: PathBuf,
        stored: KeySetId,
        computed: KeySetId,
    },
    /// An object-kind code no version defines.
    #[error("{}: unknown object kind {code} (corrupted header)", .path.display())]
    UnknownKind { path: PathBuf, code: u16 },
    /// The file holds another kind of object.
    #[error("{}: the file holds {found}, not {expected}", .path.display())]
    WrongKind {
        path: PathBuf,
        expected: ObjectKind,
        found: ObjectKind,
    },
    /// The object was made for other parameters.
    #[error("{}: made for different parameters (fingerprint {found:#018x}, expected {expected:#018x}): use the preset the keys were generated with", .path.display())]
    ParameterMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The file ends before the part the header announces.
    #[error("{}: truncated: the {part} needs {needed} bytes, only {available} are left", .path.display())]
    Truncated {
        path: PathBuf,
        part: &'static str,
        needed: u64,
        available: u64,
    },
    /// More bytes than the header describes.
    #[error("{}: {found} bytes, but the header describes {expected} (trailing data)", .path.display())]
    TrailingData {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The CRC trailer does not match the contents.
    #[error("{}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupted", .path.display())]
    ChecksumMismatch {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },
    /// A header field with a value these parameters (or the format) do not allow.
    #[error("{}: header field `{field}` is {found}, expected {expected}", .path.display())]
    InvalidField {
        path: PathBuf,
        field: &'static str,
        found: u64,
        expected: String,
    },
    /// A level above the parameters' top level.
    #[error("{}: level {level} is above the top level {max} of these parameters", .path.display())]
    LevelOutOfRange {
        path: PathBuf,
        level: u64,
        max: usize,
    },
    /// A scale that is not a finite number >= 1.
    #[error("{}: invalid scale {scale} (must be finite and >= 1)", .path.display())]
    InvalidScale { path: PathBuf, scale: f64 },
    /// The described payload is above [`MAX_PAYLOAD_BYTES`].
    #[error("{}: {size} bytes described, above the limit of {limit} bytes", .path.display())]
    TooLarge {
        path: PathBuf,
        size: u128,
        limit: u64,
    },
    /// A residue not below its prime.
    #[error("{}: corrupted data: residue {value} (payload word {index}) is not below its prime {modulus}", .path.display())]
    ResidueOutOfRange {
        path: PathBuf,
        index: u64,
        value: u32,
        modulus: u32,
    },
    /// A secret-key coefficient outside `{-1, 0, 1}`.
    #[error("{}: corrupted secret key: coefficient {index} is {value}, not -1, 0 or 1", .path.display())]
    InvalidSecretCoefficient {
        path: PathBuf,
        index: u64,
        value: i8,
    },
    /// A Galois element that is even, out of range, or out of order.
    #[error("{}: invalid Galois element {element} at position {index} (must be odd, in 3..{two_n}, strictly increasing)", .path.display())]
    InvalidGaloisElement {
        path: PathBuf,
        index: u64,
        element: u64,
        two_n: u64,
    },
    /// An object to save whose size does not match the parameters.
    #[error("{}: {what} has {found} residues, expected {expected} for these parameters", .path.display())]
    ShapeMismatch {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },
    /// Ciphertexts of one tensor that differ in size, level or scale.
    #[error("{}: ciphertext {index} has {field} {found} but ciphertext 0 has {expected}; all ciphertexts of one file must share size, level and scale", .path.display())]
    InconsistentTensor {
        path: PathBuf,
        index: usize,
        field: &'static str,
        expected: String,
        found: String,
    },
}

/// The common header of a file (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Format version.
    pub version: u16,
    /// What the file holds.
    pub kind: ObjectKind,
    /// [`Parameters::fingerprint`] of the parameters it was made with.
    pub fingerprint: u64,
    /// `log2(N)`.
    pub log_n: u32,
    /// The key set of the keys, or of the keys the ciphertexts belong to.
    pub key_set: KeySetId,
}

/// What a ciphertext file holds in a scoring job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Content {
    /// No job (e.g. a ciphertext saved on its own).
    #[default]
    Unlabelled,
    /// A batch of encrypted inputs (`cryptodl encrypt`).
    InputBatch,
    /// The logits of a batch (`cryptodl score`).
    Logits,
}

impl Content {
    fn code(self) -> u32 {
        match self {
            Content::Unlabelled => 0,
            Content::InputBatch => 1,
            Content::Logits => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Content::Unlabelled,
            1 => Content::InputBatch,
            2 => Content::Logits,
            _ => return None,
        })
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Content::Unlabelled => "unlabelled ciphertexts",
            Content::InputBatch => "an encrypted input batch",
            Content::Logits => "logits",
        })
    }
}

/// The random identity of one scoring job (one `cryptodl encrypt`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A fresh random id (ChaCha20 seeded from the OS).
    pub fn random() -> Self {
        use rand::{RngCore, SeedableRng};
        let mut id = [0u8; 16];
        rand_chacha::ChaCha20Rng::from_os_rng().fill_bytes(&mut id);
        JobId(id)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(JobId(id))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// Where a ciphertext file belongs: its key set, and for the files of a scoring job, what it
/// holds, the job, the batch, the number of images and the digest of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CiphertextLabel {
    /// The key set the ciphertexts were encrypted (or evaluated) under.
    pub key_set: KeySetId,
    /// What the file holds.
    pub content: Content,
    /// The job.
    pub job: JobId,
    /// The batch's index in the job.
    pub batch: u32,
    /// Images in the batch (slots in use).
    pub images: u32,
    /// The model's digest (SHA-256 of its weights and metadata).
    pub model: [u8; 32],
}

impl CiphertextLabel {
    /// No job: ciphertexts of `key_set` saved on their own.
    pub fn unlabelled(key_set: KeySetId) -> Self {
        Self {
            key_set,
            ..Self::default()
        }
    }
}

/// The common header of a file held in `bytes` (magic, then the CRC over the whole file, then
/// version, kind, fingerprint, `log2(N)` and key set), e.g. to tell what a file holds and which
/// parameters it needs.
pub fn header_from_bytes(bytes: &[u8]) -> Result<FileHeader, FileError> {
    header_at(bytes, mem())
}

/// Reads the common header of a file after checking its checksum (see [`header_from_bytes`]; the
/// whole file is read, within the size limit).
pub fn read_header(path: impl AsRef<Path>) -> Result<FileHeader, FileError> {
    let path = path.as_ref();
    header_at(&read_file(path)?, path)
}

/// Serializes ciphertexts of one size, level and scale as a tensor (kind 5) with their label.
pub fn ciphertexts_to_bytes(
    params: &Parameters,
    label: &CiphertextLabel,
    cts: &[Ciphertext],
) -> Result<Vec<u8>, FileError> {
    let shape = check_ciphertexts(mem(), params, cts)?;
    let out = Vec::with_capacity(ciphertext_bytes_len(&shape, cts.len(), params.n()));
    write_ciphertexts(
        out,
        ObjectKind::CiphertextTensor,
        params,
        label,
        &shape,
        cts,
    )
    .map_err(io_error(mem()))
}

/// Deserializes a ciphertext tensor (kind 5; a single-ciphertext file, kind 4, loads as a tensor
/// of one) and checks it against `ctx`; returns the ciphertexts and their label.
pub fn ciphertexts_from_bytes(
    bytes: &[u8],
    ctx: &Context,
) -> Result<(Vec<Ciphertext>, CiphertextLabel), FileError> {
    decode_ciphertexts(bytes, mem(), ctx, &CT_KINDS)
}

const CT_KINDS: [ObjectKind; 2] = [ObjectKind::CiphertextTensor, ObjectKind::Ciphertext];

/// Writes ciphertexts of one size, level and scale, with their label, to a tensor file
/// (atomically).
pub fn save_ciphertexts(
    path: impl AsRef<Path>,
    params: &Parameters,
    label: &CiphertextLabel,
    cts: &[Ciphertext],
) -> Result<(), FileError> {
    let path = path.as_ref();
    let shape = check_ciphertexts(path, params, cts)?;
    write_atomic(path, false, |w| {
        write_ciphertexts(w, ObjectKind::CiphertextTensor, params, label, &shape, cts).map(drop)
    })
}

/// Loads a ciphertext tensor file (or a single-ciphertext file, as a tensor of one) with its
/// label.
pub fn load_ciphertexts(
    path: impl AsRef<Path>,
    ctx: &Context,
) -> Result<(Vec<Ciphertext>, CiphertextLabel), FileError> {
    let path = path.as_ref();
    decode_ciphertexts(&read_file(path)?, path, ctx, &CT_KINDS)
}

/// Serializes one ciphertext (kind 4) of the key set `key_set`.
pub fn ciphertext_to_bytes(
    params: &Parameters,
    key_set: KeySetId,
    ct: &Ciphertext,
) -> Result<Vec<u8>, FileError> {
    let cts = std::slice::from_ref(ct);
    let shape = check_ciphertexts(mem(), params, cts)?;
    let out = Vec::with_capacity(ciphertext_bytes_len(&shape, 1, params.n()));
    let label = CiphertextLabel::unlabelled(key_set);
    write_ciphertexts(out, ObjectKind::Ciphertext, params, &label, &shape, cts)
        .map_err(io_error(mem()))
}

fn single((mut cts, label): (Vec<Ciphertext>, CiphertextLabel)) -> (Ciphertext, KeySetId) {
    debug_assert_eq!(cts.len(), 1);
    (cts.swap_remove(0), label.key_set)
}

/// Deserializes one ciphertext (kind 4) and checks it against `ctx`; returns it with its key set.
pub fn ciphertext_from_bytes(
    bytes: &[u8],
    ctx: &Context,
) -> Result<(Ciphertext, KeySetId), FileError> {
    decode_ciphertexts(bytes, mem(), ctx, &[ObjectKind::Ciphertext]).map(single)
}

/// Writes one ciphertext of the key set `key_set` to a file (atomically).
pub fn save_ciphertext(
    path: impl AsRef<Path>,
    params: &Parameters,
    key_set: KeySetId,
    ct: &Ciphertext,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let cts = std::slice::from_ref(ct);
    let shape = check_ciphertexts(path, params, cts)?;
    let label = CiphertextLabel::unlabelled(key_set);
    write_atomic(path, false, |w| {
        write_ciphertexts(w, ObjectKind::Ciphertext, params, &label, &shape, cts).map(drop)
    })
}

/// Loads a single-ciphertext file; returns it with its key set.
pub fn load_ciphertext(
    path: impl AsRef<Path>,
    ctx: &Context,
) -> Result<(Ciphertext, KeySetId), FileError> {
    let path = path.as_ref();
    decode_ciphertexts(&read_file(path)?, path, ctx, &[ObjectKind::Ciphertext]).map(single)
}

/// Serializes a public key (kind 2).
pub fn public_key_to_bytes(params: &Parameters, pk: &PublicKey) -> Result<Vec<u8>, FileError> {
    check_public_key(mem(), params, pk)?;
    let out = Vec::with_capacity(COMMON_HEADER_LEN + 8 + 4 * pk.data.len() + CRC_LEN);
    write_public_key(out, params, pk).map_err(io_error(mem()))
}

/// Deserializes a public key and checks it against `ctx`.
pub fn public_key_from_bytes(bytes: &[u8], ctx: &Context) -> Result<PublicKey, FileError> {
    decode_public_key(bytes, mem(), ctx)
}

/// Writes a public key to a file (atomically).
pub fn save_public_key(
    path: impl AsRef<Path>,
    params: &Parameters,
    pk: &PublicKey,
) -> Result<(), FileError> {
    let path = path.as_ref();
    check_public_key(path, params, pk)?;
    write_atomic(path, false, |w| write_public_key(w, params, pk).map(drop))
}

/// Loads a public key file.
pub fn load_public_key(path: impl AsRef<Path>, ctx: &Context) -> Result<PublicKey, FileError> {
    let path = path.as_ref();
    decode_public_key(&read_file(path)?, path, ctx)
}

/// Serializes evaluation keys (kind 3). They hold no secret material.
pub fn evaluation_keys_to_bytes(
    params: &Parameters,
    keys: &EvaluationKeys,
) -> Result<Vec<u8>, FileError> {
    check_evaluation_keys(mem(), params, keys)?;
    let count = keys.galois.len()
        + usize::from(keys.relin.is_some())
        + usize::from(keys.encapsulation.is_some());
    let small = keys.encapsulation.as_ref().map_or(0, |e| {
        8 + 4 * encapsulation_key_words(params, e.base, e.special)
    });
    let len = COMMON_HEADER_LEN
        + 16
        + 8 * keys.galois.len()
        + 4 * count * switching_key_words(params)
        + small
        + CRC_LEN;
    write_evaluation_keys(Vec::with_capacity(len), params, keys).map_err(io_error(mem()))
}

/// Deserializes evaluation keys and checks them against `ctx`.
pub fn evaluation_keys_from_bytes(
    bytes: &[u8],
    ctx: &Context,
) -> Result<EvaluationKeys, FileError> {
    decode_evaluation_keys(bytes, mem(), ctx)
}

/// Writes evaluation keys to a file (atomically).
pub fn save_evaluation_keys(
    path: impl AsRef<Path>,
    params: &Parameters,
    keys: &EvaluationKeys,
) -> Result<(), FileError> {
    let path = path.as_ref();
    check_evaluation_keys(path, params, keys)?;
    write_atomic(path, false, |w| {
        write_evaluation_keys(w, params, keys).map(drop)
    })
}

/// Loads an evaluation-key file.
pub fn load_evaluation_keys(
    path: impl AsRef<Path>,
    ctx: &Context,
) -> Result<EvaluationKeys, FileError> {
    let path = path.as_ref();
    decode_evaluation_keys(&read_file(path)?, path, ctx)
}

fn secret_key_bytes(
    path: &Path,
    params: &Parameters,
    sk: &SecretKey,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let coeffs = sk.coeffs();
    check_len(path, || "the secret key".into(), params.n(), coeffs.len())?;
    // Exact capacity: the vector never reallocates, so no copy of the key is left behind.
    let mut out = Zeroizing::new(Vec::with_capacity(
        COMMON_HEADER_LEN + 8 + coeffs.len() + CRC_LEN,
    ));
    let res = (|| {
        let mut w = CrcWriter::new(&mut *out);
        write_common(&mut w, ObjectKind::SecretKey, params, sk.key_set())?;
        w.u32(as_u32(params.n()))?;
        w.u32(0)?;
        let mut buf = Zeroizing::new([0u8; 256]);
        for chunk in coeffs.chunks(buf.len()) {
            for (d, &c) in buf.iter_mut().zip(chunk) {
                *d = c as u8;
            }
            w.put(&buf[..chunk.len()])?;
        }
        w.finish().map(drop)
    })();
    res.map_err(io_error(path))?;
    Ok(out)
}

/// Serializes a secret key (kind 1: its ternary coefficients). The returned buffer is zeroized
/// on drop. Keep it apart from evaluation keys: it is the only thing that decrypts.
pub fn secret_key_to_bytes(
    params: &Parameters,
    sk: &SecretKey,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    secret_key_bytes(mem(), params, sk)
}

/// Deserializes a secret key and checks it against `ctx`.
pub fn secret_key_from_bytes(bytes: &[u8], ctx: &Context) -> Result<SecretKey, FileError> {
    decode_secret_key(bytes, mem(), ctx)
}

/// Writes a secret key to its own file (atomically; mode 0600 on Unix).
pub fn save_secret_key(
    path: impl AsRef<Path>,
    params: &Parameters,
    sk: &SecretKey,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let bytes = secret_key_bytes(path, params, sk)?;
    write_atomic(path, true, |w| w.write_all(&bytes))
}

/// Loads a secret-key file.
pub fn load_secret_key(path: impl AsRef<Path>, ctx: &Context) -> Result<SecretKey, FileError> {
    let path = path.as_ref();
    decode_secret_key(&read_file(path)?, path, ctx)
}
