//! Versioned binary files for keys and ciphertexts.
//!
//! Every object (secret key, public key, evaluation keys, one ciphertext, a tensor of
//! ciphertexts) is stored as one self-describing file: a fixed header, kind-specific header
//! fields, a payload of raw little-endian words, and a CRC-32 trailer. The `*_to_bytes` /
//! `*_from_bytes` functions work in memory; `save_*` / `load_*` wrap them with files.
//!
//! # Byte layout (format version 1)
//!
//! All integers are little-endian. Offsets are in bytes.
//!
//! | offset | size | field                                                                  |
//! |-------:|-----:|------------------------------------------------------------------------|
//! | 0      | 8    | magic `b"CRYPTODL"`                                                    |
//! | 8      | 2    | format version, u16 (= 1)                                              |
//! | 10     | 2    | object kind, u16: 1 secret key, 2 public key, 3 evaluation keys, 4 ciphertext, 5 ciphertext tensor |
//! | 12     | 8    | parameter fingerprint, u64 ([`Parameters::fingerprint`]: N and every prime, in order) |
//! | 20     | 4    | `log2(N)`, u32                                                         |
//! | 24     | ...  | kind-specific fields (below)                                           |
//! | H      | ...  | payload                                                                |
//! | end-4  | 4    | CRC-32 (IEEE, as `crc32fast` / zlib compute it) of every byte before it |
//!
//! Kind-specific fields and payload, with `N` the ring degree, `L` the top level, `|P|` the
//! number of special primes, `K = L + 1 + |P|` and `dnum` the number of key-switching digits:
//!
//! | kind | fields at offset 24 | payload |
//! |------|---------------------|---------|
//! | 1 secret key | `n` u32 (= N), reserved u32 (= 0); H = 32 | `N` bytes: the ternary coefficients as i8 (`0xFF`, `0x00`, `0x01`) |
//! | 2 public key | `limbs` u32 (= K), `components` u32 (= 2); H = 32 | `2 * K * N` u32, `[component][limb][coeff]`, NTT form, limbs `q_0..q_L, p_0..` |
//! | 3 evaluation keys | `dnum` u32, `limbs` u32 (= K), `has_relin` u32 (0 or 1), `galois_count` u32 (= G), then G Galois elements u64, odd, in `3..2N`, strictly increasing; H = 40 + 8 G | the relinearization key if `has_relin`, then the Galois keys in header order; each key is `dnum * 2 * K * N` u32, `[digit][component][limb][coeff]`, NTT form |
//! | 4 ciphertext, 5 ciphertext tensor | `count` u32 (kind 4: = 1), `size` u32 (components, 2 or 3), `level` u32 (`<= L`), reserved u32 (= 0), `scale` f64 (IEEE-754 bits as u64, finite and `>= 1`); H = 48 | `count * size * (level + 1) * N` u32, `[ciphertext][component][limb][coeff]`, NTT form, limbs `q_0..q_level` |
//!
//! All ciphertexts of one file share size, level and scale. Every residue is below its prime.
//!
//! # Loading
//!
//! Loading never panics and never allocates from an unchecked header value: it checks the magic,
//! the format version, the CRC, the object kind, the parameter fingerprint against the
//! [`Context`] the object will be used with, every header field, that the payload length the
//! header describes is at most [`MAX_PAYLOAD_BYTES`] and equals what the file holds, and that
//! every residue is below its prime. Each failure is its own [`FileError`] variant. When the CRC
//! does not match, the error is [`FileError::ChecksumMismatch`] (or [`FileError::Truncated`] when
//! an intact-looking header describes more bytes than the file holds), since no header field of a
//! corrupted file can be trusted.
//!
//! # Secrets
//!
//! The secret key has its own kind and its own functions; [`EvaluationKeys`] holds only
//! switching keys (public RLWE samples), so an evaluation-key file cannot contain secret material
//! by construction. Buffers holding secret-key bytes are zeroized when dropped
//! ([`secret_key_to_bytes`] returns a [`Zeroizing`] buffer), secret-key files are written with
//! mode 0600 on Unix (other files 0644).
//!
//! Writes are atomic: the file is written to a temporary file in the same directory, synced, then
//! renamed over the destination.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Ciphertext, Context, EvaluationKeys, Parameters, PublicKey, SecretKey, SwitchingKey};

/// The first 8 bytes of every cryptodl file.
pub const MAGIC: [u8; 8] = *b"CRYPTODL";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 1;
/// The largest payload a file may describe (16 GiB); larger headers are refused before any
/// allocation.
pub const MAX_PAYLOAD_BYTES: u64 = 16 << 30;

/// Bytes of the header common to every kind.
const COMMON_HEADER_LEN: usize = 24;
/// Bytes of the CRC trailer.
const CRC_LEN: usize = 4;
/// Upper bound of any header (evaluation keys with one Galois key per odd element mod 2^17).
const MAX_HEADER_BYTES: u64 = 40 + 8 * (1 << 16);
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
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
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
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A writer that feeds everything it writes into a CRC-32.
struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
    fn u16(&mut self, v: u16) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn words(&mut self, words: &[u32]) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        for chunk in words.chunks(buf.len() / 4) {
            for (dst, w) in buf.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            self.put(&buf[..4 * chunk.len()])?;
        }
        Ok(())
    }
    /// Writes the CRC trailer and returns the inner writer.
    fn finish(mut self) -> io::Result<W> {
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        Ok(self.inner)
    }
}

fn write_common<W: Write>(
    w: &mut CrcWriter<W>,
    kind: ObjectKind,
    params: &Parameters,
) -> io::Result<()> {
    w.put(&MAGIC)?;
    w.u16(FORMAT_VERSION)?;
    w.u16(kind.code())?;
    w.u64(params.fingerprint())?;
    w.u32(params.log_n())
}

/// `L + 1 + |P|`: limbs of a key.
fn key_limbs(params: &Parameters) -> usize {
    params.q().len() + params.p().len()
}

fn as_u32(v: usize) -> u32 {
    // Every header value written is checked to be small (payload cap) or comes from the parameters.
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn check_scale(path: &Path, scale: f64) -> Result<(), FileError> {
    if scale.is_finite() && scale >= 1.0 {
        Ok(())
    } else {
        Err(FileError::InvalidScale {
            path: path.to_path_buf(),
            scale,
        })
    }
}

fn check_payload(path: &Path, bytes: u128) -> Result<(), FileError> {
    if bytes > MAX_PAYLOAD_BYTES as u128 {
        Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes,
            limit: MAX_PAYLOAD_BYTES,
        })
    } else {
        Ok(())
    }
}

fn check_len(
    path: &Path,
    what: impl FnOnce() -> String,
    expected: usize,
    found: usize,
) -> Result<(), FileError> {
    if expected == found {
        Ok(())
    } else {
        Err(FileError::ShapeMismatch {
            path: path.to_path_buf(),
            what: what(),
            expected: expected as u64,
            found: found as u64,
        })
    }
}

/// Size, level and scale shared by the ciphertexts to save.
struct TensorShape {
    size: usize,
    level: usize,
    scale: f64,
}

fn check_ciphertexts(
    path: &Path,
    params: &Parameters,
    cts: &[Ciphertext],
) -> Result<TensorShape, FileError> {
    let Some(first) = cts.first() else {
        return Ok(TensorShape {
            size: 2,
            level: params.max_level(),
            scale: params.default_scale(),
        });
    };
    let shape = TensorShape {
        size: first.size,
        level: first.level,
        scale: first.scale,
    };
    if !(2..=MAX_COMPONENTS as usize).contains(&shape.size) {
        return Err(FileError::InvalidField {
            path: path.to_path_buf(),
            field: "size",
            found: shape.size as u64,
            expected: format!("2..={MAX_COMPONENTS}"),
        });
    }
    if shape.level > params.max_level() {
        return Err(FileError::LevelOutOfRange {
            path: path.to_path_buf(),
            level: shape.level as u64,
            max: params.max_level(),
        });
    }
    check_scale(path, shape.scale)?;
    let words = shape.size * (shape.level + 1) * params.n();
    check_payload(path, cts.len() as u128 * words as u128 * 4)?;
    for (i, ct) in cts.iter().enumerate() {
        let mismatch = |field, expected: String, found: String| FileError::InconsistentTensor {
            path: path.to_path_buf(),
            index: i,
            field,
            expected,
            found,
        };
        if ct.size != shape.size {
            return Err(mismatch(
                "size",
                shape.size.to_string(),
                ct.size.to_string(),
            ));
        }
        if ct.level != shape.level {
            return Err(mismatch(
                "level",
                shape.level.to_string(),
                ct.level.to_string(),
            ));
        }
        if ct.scale.to_bits() != shape.scale.to_bits() {
            return Err(mismatch(
                "scale",
                shape.scale.to_string(),
                ct.scale.to_string(),
            ));
        }
        check_len(path, || format!("ciphertext {i}"), words, ct.data.len())?;
    }
    Ok(shape)
}

fn write_ciphertexts<W: Write>(
    w: W,
    kind: ObjectKind,
    params: &Parameters,
    shape: &TensorShape,
    cts: &[Ciphertext],
) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, kind, params)?;
    w.u32(as_u32(cts.len()))?;
    w.u32(as_u32(shape.size))?;
    w.u32(as_u32(shape.level))?;
    w.u32(0)?;
    w.u64(shape.scale.to_bits())?;
    for ct in cts {
        w.words(&ct.data)?;
    }
    w.finish()
}

fn check_public_key(path: &Path, params: &Parameters, pk: &PublicKey) -> Result<(), FileError> {
    let words = 2 * key_limbs(params) * params.n();
    check_len(path, || "the public key".into(), words, pk.data.len())
}

fn write_public_key<W: Write>(w: W, params: &Parameters, pk: &PublicKey) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, ObjectKind::PublicKey, params)?;
    w.u32(as_u32(key_limbs(params)))?;
    w.u32(2)?;
    w.words(&pk.data)?;
    w.finish()
}

fn switching_key_words(params: &Parameters) -> usize {
    params.dnum() * 2 * key_limbs(params) * params.n()
}

fn check_evaluation_keys(
    path: &Path,
    params: &Parameters,
    keys: &EvaluationKeys,
) -> Result<(), FileError> {
    let words = switching_key_words(params);
    if let Some(relin) = &keys.relin {
        check_len(
            path,
            || "the relinearization key".into(),
            words,
            relin.data.len(),
        )?;
    }
    let two_n = 2 * params.n() as u64;
    for (i, (&g, key)) in keys.galois.iter().enumerate() {
        if g % 2 == 0 || g < 3 || g as u64 >= two_n {
            return Err(FileError::InvalidGaloisElement {
                path: path.to_path_buf(),
                index: i as u64,
                element: g as u64,
                two_n,
            });
        }
        check_len(
            path,
            || format!("the Galois key of element {g}"),
            words,
            key.data.len(),
        )?;
    }
    Ok(())
}

fn write_evaluation_keys<W: Write>(
    w: W,
    params: &Parameters,
    keys: &EvaluationKeys,
) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, ObjectKind::EvaluationKeys, params)?;
    w.u32(as_u32(params.dnum()))?;
    w.u32(as_u32(key_limbs(params)))?;
    w.u32(u32::from(keys.relin.is_some()))?;
    w.u32(as_u32(keys.galois.len()))?;
    for &g in keys.galois.keys() {
        w.u64(g as u64)?;
    }
    if let Some(relin) = &keys.relin {
        w.words(&relin.data)?;
    }
    for key in keys.galois.values() {
        w.words(&key.data)?;
    }
    w.finish()
}

fn ciphertext_bytes_len(shape: &TensorShape, count: usize, n: usize) -> usize {
    48 + count * shape.size * (shape.level + 1) * n * 4 + CRC_LEN
}

fn mem() -> &'static Path {
    Path::new(MEMORY)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file atomically: a temporary file in the same directory, synced, then renamed.
/// `body` writes through a buffer, except for secrets, which go straight to the file so that no
/// unzeroized buffer holds them.
fn write_atomic(
    path: &Path,
    secret: bool,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    let err = |source: io::Error| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cryptodl-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    if secret {
        body(tmp.as_file_mut()).map_err(err)?;
    } else {
        let mut w = BufWriter::new(tmp.as_file_mut());
        body(&mut w).map_err(err)?;
        w.flush().map_err(err)?;
    }
    #[cfg(unix)]
    if !secret {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; non-secret objects are meant to be shared.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A cursor over the bytes of a file.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, part: &'static str) -> Result<&'a [u8], FileError> {
        let available = self.bytes.len() - self.pos;
        if n > available {
            return Err(FileError::Truncated {
                path: self.path.to_path_buf(),
                part,
                needed: n as u64,
                available: available as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn array<const K: usize>(&mut self, part: &'static str) -> Result<[u8; K], FileError> {
        let mut out = [0u8; K];
        out.copy_from_slice(self.take(K, part)?);
        Ok(out)
    }
    fn u16(&mut self, part: &'static str) -> Result<u16, FileError> {
        Ok(u16::from_le_bytes(self.array(part)?))
    }
    fn u32(&mut self, part: &'static str) -> Result<u32, FileError> {
        Ok(u32::from_le_bytes(self.array(part)?))
    }
    fn u64(&mut self, part: &'static str) -> Result<u64, FileError> {
        Ok(u64::from_le_bytes(self.array(part)?))
    }
}

/// Magic and version: the only fields read before the CRC is checked.
fn check_magic_and_version(r: &mut Reader<'_>) -> Result<u16, FileError> {
    let path = r.path;
    let n = r.bytes.len().min(MAGIC.len());
    if r.bytes[..n] != MAGIC[..n] {
        return Err(FileError::NotCryptodl {
            path: path.to_path_buf(),
        });
    }
    r.take(MAGIC.len(), "magic bytes")?;
    let version = r.u16("format version")?;
    if version == 0 {
        return Err(FileError::UnknownFormat {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if version > FORMAT_VERSION {
        return Err(FileError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Kind-specific header fields, validated against the parameters.
enum Fields {
    Secret,
    Public,
    Evaluation { has_relin: bool, galois: Vec<u64> },
    Ciphertexts(CtFields),
}

#[derive(Clone, Copy)]
struct CtFields {
    count: usize,
    size: usize,
    level: usize,
    scale: f64,
}

/// A parsed, validated header.
struct Parsed {
    kind: ObjectKind,
    fields: Fields,
    /// Offset of the payload.
    header_len: usize,
    /// Payload bytes the header describes (at most [`MAX_PAYLOAD_BYTES`]).
    payload_len: usize,
}

fn field_err(
    path: &Path,
    field: &'static str,
    found: u64,
    expected: impl fmt::Display,
) -> FileError {
    FileError::InvalidField {
        path: path.to_path_buf(),
        field,
        found,
        expected: expected.to_string(),
    }
}

fn expect_field(
    path: &Path,
    field: &'static str,
    found: u32,
    expected: usize,
) -> Result<(), FileError> {
    if found as usize == expected {
        Ok(())
    } else {
        Err(field_err(path, field, found.into(), expected))
    }
}

/// Parses and validates everything after magic and version.
fn parse_header(
    r: &mut Reader<'_>,
    params: &Parameters,
    accept: &[ObjectKind],
) -> Result<Parsed, FileError> {
    let path = r.path;
    let code = r.u16("object kind")?;
    let kind = ObjectKind::from_code(code).ok_or_else(|| FileError::UnknownKind {
        path: path.to_path_buf(),
        code,
    })?;
    if !accept.contains(&kind) {
        return Err(FileError::WrongKind {
            path: path.to_path_buf(),
            expected: accept[0],
            found: kind,
        });
    }
    let fingerprint = r.u64("parameter fingerprint")?;
    if fingerprint != params.fingerprint() {
        return Err(FileError::ParameterMismatch {
            path: path.to_path_buf(),
            expected: params.fingerprint(),
            found: fingerprint,
        });
    }
    let log_n = r.u32("log2(N)")?;
    if log_n != params.log_n() {
        return Err(field_err(path, "log_n", log_n.into(), params.log_n()));
    }
    let n = params.n() as u128;
    let limbs = key_limbs(params);
    let (fields, payload): (Fields, u128) = match kind {
        ObjectKind::SecretKey => {
            expect_field(path, "n", r.u32("secret-key header")?, params.n())?;
            expect_field(path, "reserved", r.u32("secret-key header")?, 0)?;
            (Fields::Secret, n)
        }
        ObjectKind::PublicKey => {
            expect_field(path, "limbs", r.u32("public-key header")?, limbs)?;
            expect_field(path, "components", r.u32("public-key header")?, 2)?;
            (Fields::Public, 2 * limbs as u128 * n * 4)
        }
        ObjectKind::EvaluationKeys => {
            expect_field(path, "dnum", r.u32("evaluation-key header")?, params.dnum())?;
            expect_field(path, "limbs", r.u32("evaluation-key header")?, limbs)?;
            let has_relin = match r.u32("evaluation-key header")? {
                0 => false,
                1 => true,
                v => return Err(field_err(path, "has_relin", v.into(), "0 or 1")),
            };
            let count = r.u32("evaluation-key header")?;
            // At most one key per odd element mod 2N (N of them).
            if count as usize > params.n() {
                return Err(field_err(
                    path,
                    "galois_count",
                    count.into(),
                    format_args!("at most {}", params.n()),
                ));
            }
            let raw = r.take(count as usize * 8, "Galois elements")?;
            let two_n = 2 * params.n() as u64;
            let mut galois = Vec::with_capacity(count as usize);
            for (i, b) in raw.chunks_exact(8).enumerate() {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let g = u64::from_le_bytes(a);
                if g % 2 == 0 || g < 3 || g >= two_n || galois.last().is_some_and(|&prev| g <= prev)
                {
                    return Err(FileError::InvalidGaloisElement {
                        path: path.to_path_buf(),
                        index: i as u64,
                        element: g,
                        two_n,
                    });
                }
                galois.push(g);
            }
            let keys = count as u128 + u128::from(has_relin);
            let payload = keys * switching_key_words(params) as u128 * 4;
            (Fields::Evaluation { has_relin, galois }, payload)
        }
        ObjectKind::Ciphertext | ObjectKind::CiphertextTensor => {
            let count = r.u32("ciphertext header")?;
            let size = r.u32("ciphertext header")?;
            let level = r.u32("ciphertext header")?;
            let reserved = r.u32("ciphertext header")?;
            let scale = f64::from_bits(r.u64("ciphertext header")?);
            if kind == ObjectKind::Ciphertext && count != 1 {
                return Err(field_err(path, "count", count.into(), 1));
            }
            if !(2..=MAX_COMPONENTS).contains(&size) {
                return Err(field_err(
                    path,
                    "size",
                    size.into(),
                    format_args!("2..={MAX_COMPONENTS}"),
                ));
            }
            if level as usize > params.max_level() {
                return Err(FileError::LevelOutOfRange {
                    path: path.to_path_buf(),
                    level: level.into(),
                    max: params.max_level(),
                });
            }
            expect_field(path, "reserved", reserved, 0)?;
            check_scale(path, scale)?;
            let payload = count as u128 * size as u128 * (level as u128 + 1) * n * 4;
            let fields = CtFields {
                count: count as usize,
                size: size as usize,
                level: level as usize,
                scale,
            };
            (Fields::Ciphertexts(fields), payload)
        }
    };
    check_payload(path, payload)?;
    Ok(Parsed {
        kind,
        fields,
        header_len: r.pos,
        // <= 16 GiB; a 32-bit target cannot hold it
        payload_len: usize::try_from(payload).map_err(|_| FileError::TooLarge {
            path: path.to_path_buf(),
            size: payload,
            limit: MAX_PAYLOAD_BYTES,
        })?,
    })
}

/// Checks magic, version, CRC, header and length; returns the parsed header (the payload is
/// `bytes[header_len..header_len + payload_len]`).
fn open(
    bytes: &[u8],
    path: &Path,
    params: &Parameters,
    accept: &[ObjectKind],
) -> Result<Parsed, FileError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    check_magic_and_version(&mut r)?;
    let crc = (bytes.len() >= r.pos + CRC_LEN).then(|| {
        let (body, tail) = bytes.split_at(bytes.len() - CRC_LEN);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(tail);
        (u32::from_le_bytes(stored), crc32fast::hash(body))
    });
    let crc_ok = crc.is_some_and(|(stored, computed)| stored == computed);
    let parsed = match parse_header(&mut r, params, accept) {
        Ok(p) => p,
        // A header cut short is a truncated file whatever the CRC says.
        Err(e @ FileError::Truncated { .. }) => return Err(e),
        Err(e) if crc_ok => return Err(e),
        Err(e) => {
            return Err(match crc {
                Some((stored, computed)) => FileError::ChecksumMismatch {
                    path: path.to_path_buf(),
                    stored,
                    computed,
                },
                None => e,
            })
        }
    };
    let expected = parsed.header_len as u64 + parsed.payload_len as u64 + CRC_LEN as u64;
    let found = bytes.len() as u64;
    if found < expected {
        return Err(FileError::Truncated {
            path: path.to_path_buf(),
            part: "payload and checksum",
            needed: expected - parsed.header_len as u64,
            available: found - parsed.header_len.min(bytes.len()) as u64,
        });
    }
    if let Some((stored, computed)) = crc.filter(|_| !crc_ok) {
        return Err(FileError::ChecksumMismatch {
            path: path.to_path_buf(),
            stored,
            computed,
        });
    }
    if found > expected {
        return Err(FileError::TrailingData {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(parsed)
}

/// Decodes little-endian residues, limb `i` (of `n` words) checked against `moduli[i % len]`.
/// `word_base` is the index of the first word in the payload (for error messages).
fn decode_residues(
    path: &Path,
    bytes: &[u8],
    moduli: &[u32],
    n: usize,
    word_base: usize,
) -> Result<Vec<u32>, FileError> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    for (limb, chunk) in bytes.chunks_exact(4 * n).enumerate() {
        let q = moduli[limb % moduli.len()];
        for (k, w) in chunk.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            if v >= q {
                return Err(FileError::ResidueOutOfRange {
                    path: path.to_path_buf(),
                    index: (word_base + limb * n + k) as u64,
                    value: v,
                    modulus: q,
                });
            }
            out.push(v);
        }
    }
    Ok(out)
}

fn wrong_kind(path: &Path, expected: ObjectKind, found: ObjectKind) -> FileError {
    FileError::WrongKind {
        path: path.to_path_buf(),
        expected,
        found,
    }
}

fn qp_primes(params: &Parameters) -> Vec<u32> {
    params.q().iter().chain(params.p()).copied().collect()
}

fn payload<'a>(bytes: &'a [u8], p: &Parsed) -> &'a [u8] {
    &bytes[p.header_len..p.header_len + p.payload_len]
}

fn decode_ciphertexts(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
    accept: &[ObjectKind],
) -> Result<Vec<Ciphertext>, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, accept)?;
    let Fields::Ciphertexts(f) = parsed.fields else {
        return Err(wrong_kind(path, accept[0], parsed.kind));
    };
    let n = params.n();
    let moduli = &params.q()[..=f.level];
    let words = f.size * (f.level + 1) * n;
    let body = payload(bytes, &parsed);
    // count * words * 4 == body.len(), checked by open()
    let mut out = Vec::with_capacity(f.count);
    for (i, chunk) in body.chunks_exact(words * 4).enumerate() {
        out.push(Ciphertext {
            data: decode_residues(path, chunk, moduli, n, i * words)?,
            size: f.size,
            level: f.level,
            scale: f.scale,
        });
    }
    Ok(out)
}

fn decode_public_key(bytes: &[u8], path: &Path, ctx: &Context) -> Result<PublicKey, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, &[ObjectKind::PublicKey])?;
    let data = decode_residues(
        path,
        payload(bytes, &parsed),
        &qp_primes(params),
        params.n(),
        0,
    )?;
    Ok(PublicKey { data })
}

fn decode_evaluation_keys(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
) -> Result<EvaluationKeys, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, &[ObjectKind::EvaluationKeys])?;
    let Fields::Evaluation { has_relin, galois } = &parsed.fields else {
        return Err(wrong_kind(path, ObjectKind::EvaluationKeys, parsed.kind));
    };
    let n = params.n();
    let moduli = qp_primes(params);
    let words = switching_key_words(params);
    let mut chunks = payload(bytes, &parsed).chunks_exact(words * 4).enumerate();
    let mut next = || -> Result<SwitchingKey, FileError> {
        let (i, chunk) = chunks.next().ok_or_else(|| FileError::Truncated {
            path: path.to_path_buf(),
            part: "switching keys",
            needed: words as u64 * 4,
            available: 0,
        })?;
        Ok(SwitchingKey {
            data: decode_residues(path, chunk, &moduli, n, i * words)?,
        })
    };
    let relin = if *has_relin { Some(next()?) } else { None };
    let mut map = BTreeMap::new();
    for &g in galois {
        // g < 2N <= 2^17, fits any usize
        map.insert(g as usize, next()?);
    }
    Ok(EvaluationKeys { relin, galois: map })
}

fn decode_secret_key(bytes: &[u8], path: &Path, ctx: &Context) -> Result<SecretKey, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, &[ObjectKind::SecretKey])?;
    let mut coeffs = Zeroizing::new(Vec::with_capacity(params.n()));
    for (i, &b) in payload(bytes, &parsed).iter().enumerate() {
        let c = b as i8;
        if !(-1..=1).contains(&c) {
            return Err(FileError::InvalidSecretCoefficient {
                path: path.to_path_buf(),
                index: i as u64,
                value: c,
            });
        }
        coeffs.push(c);
    }
    Ok(SecretKey::from_coeffs(ctx, std::mem::take(&mut *coeffs)))
}

/// Reads a whole file; a file that does not start with the magic bytes is refused before it is
/// read whole. The buffer is zeroized on drop (it may hold a secret key).
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let err = io_error(path);
    let mut f = File::open(path).map_err(err)?;
    let len = f.metadata().map_err(io_error(path))?.len();
    let limit = MAX_PAYLOAD_BYTES + MAX_HEADER_BYTES + CRC_LEN as u64;
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        size: len.into(),
        limit,
    };
    if len > limit {
        return Err(too_large());
    }
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let head = len.min(MAGIC.len());
    f.read_exact(&mut buf[..head]).map_err(io_error(path))?;
    if buf[..head] != MAGIC[..head] {
        return Err(FileError::NotCryptodl {
            path: path.to_path_buf(),
        });
    }
    f.read_exact(&mut buf[head..]).map_err(io_error(path))?;
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Public API

/// Reads the common header of a file (magic, version, kind, fingerprint, `log2(N)`) without
/// checking the rest, e.g. to tell what a file holds.
pub fn header_from_bytes(bytes: &[u8]) -> Result<FileHeader, FileError> {
    header_at(bytes, mem())
}

fn header_at(bytes: &[u8], path: &Path) -> Result<FileHeader, FileError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    let version = check_magic_and_version(&mut r)?;
    let code = r.u16("object kind")?;
    let kind = ObjectKind::from_code(code).ok_or_else(|| FileError::UnknownKind {
        path: path.to_path_buf(),
        code,
    })?;
    Ok(FileHeader {
        version,
        kind,
        fingerprint: r.u64("parameter fingerprint")?,
        log_n: r.u32("log2(N)")?,
    })
}

/// Reads the common header of a file (see [`header_from_bytes`]); only its first bytes are read.
pub fn read_header(path: impl AsRef<Path>) -> Result<FileHeader, FileError> {
    let path = path.as_ref();
    let f = File::open(path).map_err(io_error(path))?;
    let mut head = Vec::with_capacity(COMMON_HEADER_LEN);
    f.take(COMMON_HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_error(path))?;
    header_at(&head, path)
}

/// Serializes ciphertexts of one size, level and scale as a tensor (kind 5).
pub fn ciphertexts_to_bytes(params: &Parameters, cts: &[Ciphertext]) -> Result<Vec<u8>, FileError> {
    let shape = check_ciphertexts(mem(), params, cts)?;
    let out = Vec::with_capacity(ciphertext_bytes_len(&shape, cts.len(), params.n()));
    write_ciphertexts(out, ObjectKind::CiphertextTensor, params, &shape, cts)
        .map_err(io_error(mem()))
}

/// Deserializes a ciphertext tensor (kind 5; a single-ciphertext file, kind 4, loads as a tensor
/// of one) and checks it against `ctx`.
pub fn ciphertexts_from_bytes(bytes: &[u8], ctx: &Context) -> Result<Vec<Ciphertext>, FileError> {
    decode_ciphertexts(bytes, mem(), ctx, &CT_KINDS)
}

const CT_KINDS: [ObjectKind; 2] = [ObjectKind::CiphertextTensor, ObjectKind::Ciphertext];

/// Writes ciphertexts of one size, level and scale to a tensor file (atomically).
pub fn save_ciphertexts(
    path: impl AsRef<Path>,
    params: &Parameters,
    cts: &[Ciphertext],
) -> Result<(), FileError> {
    let path = path.as_ref();
    let shape = check_ciphertexts(path, params, cts)?;
    write_atomic(path, false, |w| {
        write_ciphertexts(w, ObjectKind::CiphertextTensor, params, &shape, cts).map(drop)
    })
}

/// Loads a ciphertext tensor file (or a single-ciphertext file, as a tensor of one).
pub fn load_ciphertexts(
    path: impl AsRef<Path>,
    ctx: &Context,
) -> Result<Vec<Ciphertext>, FileError> {
    let path = path.as_ref();
    decode_ciphertexts(&read_file(path)?, path, ctx, &CT_KINDS)
}

/// Serializes one ciphertext (kind 4).
pub fn ciphertext_to_bytes(params: &Parameters, ct: &Ciphertext) -> Result<Vec<u8>, FileError> {
    let cts = std::slice::from_ref(ct);
    let shape = check_ciphertexts(mem(), params, cts)?;
    let out = Vec::with_capacity(ciphertext_bytes_len(&shape, 1, params.n()));
    write_ciphertexts(out, ObjectKind::Ciphertext, params, &shape, cts).map_err(io_error(mem()))
}

fn single(mut cts: Vec<Ciphertext>) -> Ciphertext {
    debug_assert_eq!(cts.len(), 1);
    cts.swap_remove(0)
}

/// Deserializes one ciphertext (kind 4) and checks it against `ctx`.
pub fn ciphertext_from_bytes(bytes: &[u8], ctx: &Context) -> Result<Ciphertext, FileError> {
    decode_ciphertexts(bytes, mem(), ctx, &[ObjectKind::Ciphertext]).map(single)
}

/// Writes one ciphertext to a file (atomically).
pub fn save_ciphertext(
    path: impl AsRef<Path>,
    params: &Parameters,
    ct: &Ciphertext,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let cts = std::slice::from_ref(ct);
    let shape = check_ciphertexts(path, params, cts)?;
    write_atomic(path, false, |w| {
        write_ciphertexts(w, ObjectKind::Ciphertext, params, &shape, cts).map(drop)
    })
}

/// Loads a single-ciphertext file.
pub fn load_ciphertext(path: impl AsRef<Path>, ctx: &Context) -> Result<Ciphertext, FileError> {
    let path = path.as_ref();
    decode_ciphertexts(&read_file(path)?, path, ctx, &[ObjectKind::Ciphertext]).map(single)
}

/// Serializes a public key (kind 2).
pub fn public_key_to_bytes(params: &Parameters, pk: &PublicKey) -> Result<Vec<u8>, FileError> {
    check_public_key(mem(), params, pk)?;
    let out = Vec::with_capacity(32 + 4 * pk.data.len() + CRC_LEN);
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
    let count = keys.galois.len() + usize::from(keys.relin.is_some());
    let len = 40 + 8 * keys.galois.len() + 4 * count * switching_key_words(params) + CRC_LEN;
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
    let mut out = Zeroizing::new(Vec::with_capacity(32 + coeffs.len() + CRC_LEN));
    let res = (|| {
        let mut w = CrcWriter::new(&mut *out);
        write_common(&mut w, ObjectKind::SecretKey, params)?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ckks::{Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, Preset, Sampler};

    struct Fixture {
        ctx: Arc<Context>,
        sk: SecretKey,
        pk: PublicKey,
        keys: EvaluationKeys,
        cts: Vec<Ciphertext>,
        values: Vec<Vec<f64>>,
    }

    fn context(preset: &str) -> Arc<Context> {
        let params = Preset::by_name(preset).unwrap().parameters(true).unwrap();
        Context::new(&params).unwrap()
    }

    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let ctx = context("toy1024");
            let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(1));
            let sk = kg.secret_key();
            let pk = kg.public_key(&sk);
            let keys = kg.evaluation_keys(&sk, &[1, 2, -1], true).unwrap();
            let enc = Encoder::new(ctx.clone());
            let mut encryptor =
                Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(2));
            let params = ctx.params();
            let values: Vec<Vec<f64>> = (0..3).map(|i| values(10 + i, params.slots())).collect();
            let cts = values
                .iter()
                .map(|v| {
                    let pt = enc
                        .encode(v, params.max_level(), params.default_scale())
                        .unwrap();
                    encryptor.encrypt(&pt, &pk).unwrap()
                })
                .collect();
            Fixture {
                ctx,
                sk,
                pk,
                keys,
                cts,
                values,
            }
        })
    }

    fn decrypt(f: &Fixture, sk: &SecretKey, ct: &Ciphertext) -> Vec<f64> {
        let pt = Decryptor::new(f.ctx.clone()).decrypt(ct, sk).unwrap();
        Encoder::new(f.ctx.clone()).decode(&pt)
    }

    fn assert_close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
    }

    /// Rewrites the CRC trailer after a deliberate edit, so that the specific check fires.
    fn fix_crc(bytes: &mut [u8]) {
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }

    /// Loads `bytes` as every kind; every attempt must be an error.
    fn load_any(bytes: &[u8], ctx: &Context) -> [bool; 5] {
        [
            ciphertexts_from_bytes(bytes, ctx).is_err(),
            ciphertext_from_bytes(bytes, ctx).is_err(),
            public_key_from_bytes(bytes, ctx).is_err(),
            evaluation_keys_from_bytes(bytes, ctx).is_err(),
            secret_key_from_bytes(bytes, ctx).is_err(),
        ]
    }

    /// One serialized object of every kind.
    fn all_kinds(f: &Fixture) -> Vec<(ObjectKind, Vec<u8>)> {
        let p = f.ctx.params();
        vec![
            (
                ObjectKind::SecretKey,
                secret_key_to_bytes(p, &f.sk).unwrap().to_vec(),
            ),
            (
                ObjectKind::PublicKey,
                public_key_to_bytes(p, &f.pk).unwrap(),
            ),
            (
                ObjectKind::EvaluationKeys,
                evaluation_keys_to_bytes(p, &f.keys).unwrap(),
            ),
            (
                ObjectKind::Ciphertext,
                ciphertext_to_bytes(p, &f.cts[0]).unwrap(),
            ),
            (
                ObjectKind::CiphertextTensor,
                ciphertexts_to_bytes(p, &f.cts).unwrap(),
            ),
        ]
    }

    #[test]
    fn ciphertext_tensor_round_trip_decrypts() {
        let f = fixture();
        let p = f.ctx.params();
        let bytes = ciphertexts_to_bytes(p, &f.cts).unwrap();
        assert_eq!(&bytes[..8], b"CRYPTODL");
        assert_eq!(bytes.len(), 48 + 3 * 2 * 4 * 1024 * 4 + 4);
        let back = ciphertexts_from_bytes(&bytes, &f.ctx).unwrap();
        assert_eq!(back, f.cts);
        for (ct, v) in back.iter().zip(&f.values) {
            assert_close(&decrypt(f, &f.sk, ct), v);
        }
        // a single ciphertext, also loadable as a tensor of one
        let one = ciphertext_to_bytes(p, &f.cts[1]).unwrap();
        assert_eq!(ciphertext_from_bytes(&one, &f.ctx).unwrap(), f.cts[1]);
        assert_eq!(
            ciphertexts_from_bytes(&one, &f.ctx).unwrap(),
            vec![f.cts[1].clone()]
        );
        // an empty tensor
        let empty = ciphertexts_to_bytes(p, &[]).unwrap();
        assert!(ciphertexts_from_bytes(&empty, &f.ctx).unwrap().is_empty());
    }

    #[test]
    fn size3_and_lower_level_ciphertexts_round_trip() {
        let f = fixture();
        let p = f.ctx.params();
        let eval = Evaluator::new(f.ctx.clone());
        let prod = eval.mul(&f.cts[0], &f.cts[1]).unwrap();
        assert_eq!(prod.size(), 3);
        let back = ciphertext_from_bytes(&ciphertext_to_bytes(p, &prod).unwrap(), &f.ctx).unwrap();
        assert_eq!(back, prod);
        let want: Vec<f64> = f.values[0]
            .iter()
            .zip(&f.values[1])
            .map(|(a, b)| a * b)
            .collect();
        assert_close(&decrypt(f, &f.sk, &back), &want);

        let mut low = f.cts.clone();
        for ct in &mut low {
            eval.rescale_assign(ct).unwrap();
        }
        let back = ciphertexts_from_bytes(&ciphertexts_to_bytes(p, &low).unwrap(), &f.ctx).unwrap();
        assert_eq!(back, low);
        assert_eq!(back[0].level(), p.max_level() - 1);
    }

    #[test]
    fn key_files_round_trip() {
        let f = fixture();
        let p = f.ctx.params();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);

        save_secret_key(path("sk.bin"), p, &f.sk).unwrap();
        save_public_key(path("pk.bin"), p, &f.pk).unwrap();
        save_evaluation_keys(path("evk.bin"), p, &f.keys).unwrap();
        save_ciphertexts(path("cts.bin"), p, &f.cts).unwrap();
        save_ciphertext(path("ct.bin"), p, &f.cts[2]).unwrap();

        let sk = load_secret_key(path("sk.bin"), &f.ctx).unwrap();
        assert_eq!(sk.coeffs(), f.sk.coeffs());
        assert_eq!(sk.qp(), f.sk.qp());
        let pk = load_public_key(path("pk.bin"), &f.ctx).unwrap();
        assert_eq!(pk, f.pk);
        let keys = load_evaluation_keys(path("evk.bin"), &f.ctx).unwrap();
        assert_eq!(keys, f.keys);
        assert_eq!(keys.galois.len(), 4);
        let cts = load_ciphertexts(path("cts.bin"), &f.ctx).unwrap();
        assert_eq!(cts, f.cts);
        assert_eq!(load_ciphertext(path("ct.bin"), &f.ctx).unwrap(), f.cts[2]);

        // loaded keys work: encrypt with the loaded public key, decrypt with the loaded secret
        let enc = Encoder::new(f.ctx.clone());
        let pt = enc
            .encode(&f.values[0], p.max_level(), p.default_scale())
            .unwrap();
        let mut encryptor = Encryptor::with_sampler(f.ctx.clone(), Sampler::from_seed_insecure(3));
        let ct = encryptor.encrypt(&pt, &pk).unwrap();
        assert_close(&decrypt(f, &sk, &ct), &f.values[0]);
        // and rotate with the loaded Galois keys
        let eval = Evaluator::new(f.ctx.clone());
        let rot = eval
            .rotate(&cts[0], 1, &eval.upload_keys(&keys).unwrap())
            .unwrap();
        let got = decrypt(f, &sk, &rot);
        let slots = p.slots();
        let want: Vec<f64> = (0..slots).map(|i| f.values[0][(i + 1) % slots]).collect();
        assert_close(&got, &want);

        // headers, atomic writes (no temporary left behind), overwrite, permissions
        let h = read_header(path("evk.bin")).unwrap();
        assert_eq!(h.kind, ObjectKind::EvaluationKeys);
        assert_eq!(h.fingerprint, p.fingerprint());
        assert_eq!((h.version, h.log_n), (1, 10));
        save_ciphertexts(path("cts.bin"), p, &f.cts[..1]).unwrap();
        assert_eq!(load_ciphertexts(path("cts.bin"), &f.ctx).unwrap().len(), 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |n| std::fs::metadata(path(n)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("sk.bin"), 0o600);
            assert_eq!(mode("pk.bin"), 0o644);
        }
        // a missing file is an I/O error naming the path
        let e = load_public_key(path("missing.bin"), &f.ctx).unwrap_err();
        assert!(matches!(e, FileError::Io { .. }));
        assert!(e.to_string().contains("missing.bin"));
    }

    #[test]
    fn evaluation_keys_hold_no_secret() {
        // By construction: EvaluationKeys only has switching keys. Check no window of s (NTT
        // form) or of its coefficients appears in the file.
        let f = fixture();
        let bytes = evaluation_keys_to_bytes(f.ctx.params(), &f.keys).unwrap();
        let window =
            |words: &[u32]| -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
        let n = f.ctx.n();
        for limb in 0..f.sk.qp().len() / n {
            let w = window(&f.sk.qp()[limb * n..limb * n + 8]);
            assert!(!bytes.windows(w.len()).any(|x| x == w.as_slice()));
        }
        let coeffs: Vec<u8> = f.sk.coeffs()[..64].iter().map(|&c| c as u8).collect();
        assert!(!bytes.windows(64).any(|x| x == coeffs.as_slice()));
        assert_eq!(
            header_from_bytes(&bytes).unwrap().kind,
            ObjectKind::EvaluationKeys
        );
    }

    #[test]
    fn truncated_files_are_errors() {
        let f = fixture();
        for (kind, bytes) in all_kinds(f) {
            let len = bytes.len();
            let mut cuts: Vec<usize> = (0..len.min(600)).collect();
            cuts.extend((0..200).map(|i| i * len / 200));
            cuts.extend(len.saturating_sub(8)..len);
            for cut in cuts {
                let e = load_any(&bytes[..cut], &f.ctx);
                assert!(e.iter().all(|&x| x), "{kind:?} cut at {cut}");
            }
            // a real truncation of an intact header says so
            let e = ciphertexts_from_bytes(&bytes[..len - 100], &f.ctx);
            if kind == ObjectKind::CiphertextTensor {
                let e = e.unwrap_err();
                assert!(matches!(e, FileError::Truncated { .. }), "{e}");
                assert!(e.to_string().contains("truncated"));
            }
            // and trailing bytes are refused too
            let mut long = bytes.clone();
            long.extend_from_slice(&[0; 4]);
            assert!(load_any(&long, &f.ctx).iter().all(|&x| x));
        }
        assert!(matches!(
            ciphertexts_from_bytes(&[], &f.ctx),
            Err(FileError::Truncated { .. })
        ));
    }

    #[test]
    fn every_flipped_bit_of_a_secret_key_is_detected() {
        let f = fixture();
        let bytes = secret_key_to_bytes(f.ctx.params(), &f.sk).unwrap().to_vec();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(secret_key_from_bytes(&b, &f.ctx).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn flipped_bits_are_detected() {
        let f = fixture();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (kind, bytes) in all_kinds(f) {
            let len = bytes.len();
            // every bit of the header and trailer, random bits of the payload
            let mut bits: Vec<usize> = (0..8 * 64.min(len)).collect();
            bits.extend(8 * (len - 4)..8 * len);
            bits.extend((0..300).map(|_| rng.random_range(0..8 * len)));
            for bit in bits {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let e = load_any(&b, &f.ctx);
                assert!(e.iter().all(|&x| x), "{kind:?} bit {bit}");
            }
        }
        // payload corruption is a checksum error
        let mut b = ciphertext_to_bytes(f.ctx.params(), &f.cts[0]).unwrap();
        b[1000] ^= 4;
        let e = ciphertext_from_bytes(&b, &f.ctx).unwrap_err();
        assert!(matches!(e, FileError::ChecksumMismatch { .. }), "{e}");
        assert!(e.to_string().contains("corrupted"));
    }

    #[test]
    fn wrong_kind_names_what_the_file_holds() {
        let f = fixture();
        let sk = secret_key_to_bytes(f.ctx.params(), &f.sk).unwrap();
        let e = evaluation_keys_from_bytes(&sk, &f.ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::WrongKind {
                    expected: ObjectKind::EvaluationKeys,
                    found: ObjectKind::SecretKey,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("holds a secret key"), "{e}");
        for (kind, bytes) in all_kinds(f) {
            let ok = load_any(&bytes, &f.ctx);
            // exactly the loaders of its own kind succeed (a single ciphertext also loads as a tensor)
            let expect = match kind {
                ObjectKind::CiphertextTensor => [false, true, true, true, true],
                ObjectKind::Ciphertext => [false, false, true, true, true],
                ObjectKind::PublicKey => [true, true, false, true, true],
                ObjectKind::EvaluationKeys => [true, true, true, false, true],
                _ => [true, true, true, true, false],
            };
            assert_eq!(ok, expect, "{kind:?}");
        }
        let tensor = ciphertexts_to_bytes(f.ctx.params(), &f.cts).unwrap();
        assert!(matches!(
            ciphertext_from_bytes(&tensor, &f.ctx),
            Err(FileError::WrongKind { .. })
        ));
    }

    #[test]
    fn other_parameters_are_refused() {
        let f = fixture();
        let other = context("toy4096");
        for (kind, bytes) in all_kinds(f) {
            let e = load_any(&bytes, &other);
            assert!(e.iter().all(|&x| x), "{kind:?}");
        }
        let bytes = public_key_to_bytes(f.ctx.params(), &f.pk).unwrap();
        let e = public_key_from_bytes(&bytes, &other).unwrap_err();
        match &e {
            FileError::ParameterMismatch {
                expected, found, ..
            } => {
                assert_eq!(*expected, other.params().fingerprint());
                assert_eq!(*found, f.ctx.params().fingerprint());
            }
            e => panic!("{e}"),
        }
        assert!(
            e.to_string().contains("made for different parameters"),
            "{e}"
        );
        // saving an object of other parameters is refused too
        assert!(matches!(
            public_key_to_bytes(other.params(), &f.pk),
            Err(FileError::ShapeMismatch { .. })
        ));
        assert!(ciphertexts_to_bytes(other.params(), &f.cts).is_err());
        assert!(evaluation_keys_to_bytes(other.params(), &f.keys).is_err());
        assert!(secret_key_to_bytes(other.params(), &f.sk).is_err());
    }

    /// Byte offsets of the ciphertext header fields.
    const COUNT: usize = 24;
    const SIZE: usize = 28;
    const LEVEL: usize = 32;
    const SCALE: usize = 40;

    fn edited(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[at..at + value.len()].copy_from_slice(value);
        fix_crc(&mut b);
        b
    }

    #[test]
    fn header_checks_have_their_own_errors() {
        let f = fixture();
        let ctx = &f.ctx;
        let p = ctx.params();
        let bytes = ciphertexts_to_bytes(p, &f.cts).unwrap();

        // absurd counts: refused before allocating (too large), or as truncated
        let e = ciphertexts_from_bytes(&edited(&bytes, COUNT, &u32::MAX.to_le_bytes()), ctx)
            .unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        let e = ciphertexts_from_bytes(&edited(&bytes, COUNT, &1000u32.to_le_bytes()), ctx)
            .unwrap_err();
        assert!(matches!(e, FileError::Truncated { .. }), "{e}");
        // without fixing the CRC it is still an error
        let mut b = bytes.clone();
        b[COUNT..COUNT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ciphertexts_from_bytes(&b, ctx).is_err());

        let e =
            ciphertexts_from_bytes(&edited(&bytes, SIZE, &7u32.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InvalidField {
                    field: "size",
                    found: 7,
                    ..
                }
            ),
            "{e}"
        );
        let e =
            ciphertexts_from_bytes(&edited(&bytes, LEVEL, &9u32.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::LevelOutOfRange {
                    level: 9,
                    max: 3,
                    ..
                }
            ),
            "{e}"
        );
        for bad in [f64::NAN, f64::INFINITY, 0.5, -3.0] {
            let e =
                ciphertexts_from_bytes(&edited(&bytes, SCALE, &bad.to_bits().to_le_bytes()), ctx)
                    .unwrap_err();
            assert!(matches!(e, FileError::InvalidScale { .. }), "{e}");
        }
        // a residue not below its prime
        let q0 = p.q()[0];
        let e = ciphertexts_from_bytes(&edited(&bytes, 48 + 4 * 5, &q0.to_le_bytes()), ctx)
            .unwrap_err();
        assert!(
            matches!(e, FileError::ResidueOutOfRange { index: 5, value, modulus, .. } if value == q0 && modulus == q0),
            "{e}"
        );
        // in the second limb, checked against q_1
        let q1 = p.q()[1];
        let at = 48 + 4 * 1024;
        let e = ciphertexts_from_bytes(&edited(&bytes, at, &q1.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(e, FileError::ResidueOutOfRange { modulus, .. } if modulus == q1),
            "{e}"
        );

        // format version and magic
        let e = ciphertexts_from_bytes(&edited(&bytes, 8, &2u16.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("newer cryptodl (format v2"), "{e}");
        assert!(e.to_string().contains("upgrade"), "{e}");
        let e = ciphertexts_from_bytes(&edited(&bytes, 8, &0u16.to_le_bytes()), ctx).unwrap_err();
        assert!(matches!(e, FileError::UnknownFormat { .. }), "{e}");
        let e = ciphertexts_from_bytes(&edited(&bytes, 10, &77u16.to_le_bytes()), ctx).unwrap_err();
        assert!(matches!(e, FileError::UnknownKind { code: 77, .. }), "{e}");
        let e = ciphertexts_from_bytes(b"PK\x03\x04 this is a zip file", ctx).unwrap_err();
        assert!(matches!(e, FileError::NotCryptodl { .. }), "{e}");
        assert!(e.to_string().contains("not a cryptodl file"), "{e}");
        // a corrupted fingerprint with a valid CRC looks like other parameters; without, corruption
        let e = ciphertexts_from_bytes(&edited(&bytes, 12, &[0xAB]), ctx).unwrap_err();
        assert!(matches!(e, FileError::ParameterMismatch { .. }), "{e}");
        let mut b = bytes.clone();
        b[12] ^= 1;
        let e = ciphertexts_from_bytes(&b, ctx).unwrap_err();
        assert!(matches!(e, FileError::ChecksumMismatch { .. }), "{e}");

        // secret key: coefficients outside {-1, 0, 1}
        let sk = secret_key_to_bytes(p, &f.sk).unwrap();
        let e = secret_key_from_bytes(&edited(&sk, 32 + 10, &[2]), ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InvalidSecretCoefficient {
                    index: 10,
                    value: 2,
                    ..
                }
            ),
            "{e}"
        );

        // evaluation keys: Galois elements, counts, relin flag
        let evk = evaluation_keys_to_bytes(p, &f.keys).unwrap();
        let e =
            evaluation_keys_from_bytes(&edited(&evk, 40, &4u64.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(e, FileError::InvalidGaloisElement { element: 4, .. }),
            "{e}"
        );
        let e =
            evaluation_keys_from_bytes(&edited(&evk, 48, &3u64.to_le_bytes()), ctx).unwrap_err();
        assert!(matches!(e, FileError::InvalidGaloisElement { .. }), "{e}");
        let e = evaluation_keys_from_bytes(&edited(&evk, 36, &u32::MAX.to_le_bytes()), ctx)
            .unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InvalidField {
                    field: "galois_count",
                    ..
                }
            ),
            "{e}"
        );
        let e =
            evaluation_keys_from_bytes(&edited(&evk, 32, &2u32.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InvalidField {
                    field: "has_relin",
                    ..
                }
            ),
            "{e}"
        );
        let e =
            evaluation_keys_from_bytes(&edited(&evk, 24, &9u32.to_le_bytes()), ctx).unwrap_err();
        assert!(
            matches!(e, FileError::InvalidField { field: "dnum", .. }),
            "{e}"
        );
    }

    #[test]
    fn saving_checks_the_objects() {
        let f = fixture();
        let p = f.ctx.params();
        let mut cts = f.cts.clone();
        cts[2].set_scale(p.default_scale() * 2.0);
        let e = ciphertexts_to_bytes(p, &cts).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InconsistentTensor {
                    index: 2,
                    field: "scale",
                    ..
                }
            ),
            "{e}"
        );
        let mut cts = f.cts.clone();
        Evaluator::new(f.ctx.clone())
            .rescale_assign(&mut cts[1])
            .unwrap();
        let scale = cts[0].scale();
        cts[1].set_scale(scale);
        let e = ciphertexts_to_bytes(p, &cts).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::InconsistentTensor {
                    index: 1,
                    field: "level",
                    ..
                }
            ),
            "{e}"
        );
        let mut ct = f.cts[0].clone();
        ct.set_scale(f64::NAN);
        assert!(matches!(
            ciphertext_to_bytes(p, &ct),
            Err(FileError::InvalidScale { .. })
        ));
        // a failed save leaves nothing behind
        let dir = tempfile::tempdir().unwrap();
        assert!(save_ciphertext(dir.path().join("x.bin"), p, &ct).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // reading a non-cryptodl file
        let junk = dir.path().join("junk.bin");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let e = load_ciphertexts(&junk, &f.ctx).unwrap_err();
        assert!(matches!(e, FileError::NotCryptodl { .. }), "{e}");
        assert!(e.to_string().contains("junk.bin"), "{e}");
        assert!(matches!(
            read_header(&junk),
            Err(FileError::NotCryptodl { .. })
        ));
        // truncated files on disk
        let full = dir.path().join("full.bin");
        save_ciphertexts(&full, p, &f.cts).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("cut.bin");
        for len in [0, 5, 8, 30, 60, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let e = load_ciphertexts(&cut, &f.ctx).unwrap_err();
            assert!(matches!(e, FileError::Truncated { .. }), "{len}: {e}");
        }
        // a file above the size cap is refused before it is read (sparse file: no disk used)
        let huge = dir.path().join("huge.bin");
        let file = std::fs::File::create(&huge).unwrap();
        if file.set_len(MAX_PAYLOAD_BYTES + (1 << 20)).is_ok() {
            let e = load_evaluation_keys(&huge, &f.ctx).unwrap_err();
            assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn random_corruptions_are_errors(
            kind in 0usize..5,
            edits in proptest::collection::vec((any::<u64>(), 1u8..=255), 1..4),
            cut in proptest::option::of(any::<u64>()),
        ) {
            let f = fixture();
            let original = all_kinds(f).swap_remove(kind).1;
            let mut b = original.clone();
            for (at, x) in edits {
                let i = (at % b.len() as u64) as usize;
                b[i] ^= x;
            }
            if let Some(c) = cut {
                b.truncate((c % b.len() as u64) as usize);
            }
            // edits at one place may cancel out
            prop_assume!(b != original);
            prop_assert!(load_any(&b, &f.ctx).iter().all(|&x| x));
        }
    }
}
