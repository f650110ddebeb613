//! Writing: the header, the kind-specific fields and the payload of each object, through a
//! CRC-32 writer; atomic files.

use std::io::{self, Write};
use std::path::Path;

use super::*;

/// A writer that feeds everything it writes into a CRC-32.
pub(super) struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
    pub(super) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
    pub(super) fn u16(&mut self, v: u16) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub(super) fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub(super) fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub(super) fn words(&mut self, words: &[u32]) -> io::Result<()> {
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
    pub(super) fn finish(mut self) -> io::Result<W> {
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        Ok(self.inner)
    }
}

pub(super) fn write_common<W: Write>(
    w: &mut CrcWriter<W>,
    kind: ObjectKind,
    params: &Parameters,
    key_set: KeySetId,
) -> io::Result<()> {
    w.put(&MAGIC)?;
    w.u16(FORMAT_VERSION)?;
    w.u16(kind.code())?;
    w.u64(params.fingerprint())?;
    w.u32(params.log_n())?;
    w.put(&key_set.0)
}

/// `L + 1 + |P|`: limbs of a key.
pub(super) fn key_limbs(params: &Parameters) -> usize {
    params.q().len() + params.p().len()
}

pub(super) fn as_u32(v: usize) -> u32 {
    // Every header value written is checked to be small (payload cap) or comes from the parameters.
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) fn check_scale(path: &Path, scale: f64) -> Result<(), FileError> {
    if scale.is_finite() && scale >= 1.0 {
        Ok(())
    } else {
        Err(FileError::InvalidScale {
            path: path.to_path_buf(),
            scale,
        })
    }
}

pub(super) fn check_payload(path: &Path, bytes: u128) -> Result<(), FileError> {
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

pub(super) fn check_len(
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
pub(super) struct TensorShape {
    size: usize,
    level: usize,
    scale: f64,
}

pub(super) fn check_ciphertexts(
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

pub(super) fn write_ciphertexts<W: Write>(
    w: W,
    kind: ObjectKind,
    params: &Parameters,
    label: &CiphertextLabel,
    shape: &TensorShape,
    cts: &[Ciphertext],
) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, kind, params, label.key_set)?;
    w.u32(as_u32(cts.len()))?;
    w.u32(as_u32(shape.size))?;
    w.u32(as_u32(shape.level))?;
    w.u32(0)?;
    w.u64(shape.scale.to_bits())?;
    w.u32(label.content.code())?;
    w.u32(label.batch)?;
    w.u32(label.images)?;
    w.u32(0)?;
    w.put(&label.job.0)?;
    w.put(&label.model)?;
    for ct in cts {
        w.words(&ct.data)?;
    }
    w.finish()
}

pub(super) fn check_public_key(
    path: &Path,
    params: &Parameters,
    pk: &PublicKey,
) -> Result<(), FileError> {
    let words = 2 * key_limbs(params) * params.n();
    check_len(path, || "the public key".into(), words, pk.data.len())
}

pub(super) fn write_public_key<W: Write>(
    w: W,
    params: &Parameters,
    pk: &PublicKey,
) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, ObjectKind::PublicKey, params, pk.key_set)?;
    w.u32(as_u32(key_limbs(params)))?;
    w.u32(2)?;
    w.words(&pk.data)?;
    w.finish()
}

pub(super) fn switching_key_words(params: &Parameters) -> usize {
    params.dnum() * 2 * key_limbs(params) * params.n()
}

/// Words of the encapsulation key `s -> s'`: one digit over `q_0 .. q_base` and `special`
/// special primes.
pub(super) fn encapsulation_key_words(params: &Parameters, base: usize, special: usize) -> usize {
    2 * (base + 1 + special) * params.n()
}

pub(super) fn check_evaluation_keys(
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
    if let Some(e) = &keys.encapsulation {
        if e.base >= params.max_level() || e.special == 0 || e.special > params.p().len() {
            return Err(FileError::InvalidField {
                path: path.to_path_buf(),
                field: "encapsulation_base",
                found: e.base as u64,
                expected: format!(
                    "a base level below {} with 1..={} special primes (got {})",
                    params.max_level(),
                    params.p().len(),
                    e.special
                ),
            });
        }
        check_len(
            path,
            || "the encapsulation key s -> s'".into(),
            encapsulation_key_words(params, e.base, e.special),
            e.to_sparse.data.len(),
        )?;
        check_len(
            path,
            || "the encapsulation key s' -> s".into(),
            words,
            e.from_sparse.data.len(),
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

pub(super) fn write_evaluation_keys<W: Write>(
    w: W,
    params: &Parameters,
    keys: &EvaluationKeys,
) -> io::Result<W> {
    let mut w = CrcWriter::new(w);
    write_common(&mut w, ObjectKind::EvaluationKeys, params, keys.key_set)?;
    w.u32(as_u32(params.dnum()))?;
    w.u32(as_u32(key_limbs(params)))?;
    // Flags: bit 0 relinearization key, bit 1 encapsulation keys.
    w.u32(u32::from(keys.relin.is_some()) | (u32::from(keys.encapsulation.is_some()) << 1))?;
    w.u32(as_u32(keys.galois.len()))?;
    for &g in keys.galois.keys() {
        w.u64(g as u64)?;
    }
    if let Some(e) = &keys.encapsulation {
        w.u32(as_u32(e.base))?;
        w.u32(as_u32(e.special))?;
    }
    if let Some(relin) = &keys.relin {
        w.words(&relin.data)?;
    }
    for key in keys.galois.values() {
        w.words(&key.data)?;
    }
    if let Some(e) = &keys.encapsulation {
        w.words(&e.to_sparse.data)?;
        w.words(&e.from_sparse.data)?;
    }
    w.finish()
}

pub(super) fn ciphertext_bytes_len(shape: &TensorShape, count: usize, n: usize) -> usize {
    CIPHERTEXT_HEADER_LEN + count * shape.size * (shape.level + 1) * n * 4 + CRC_LEN
}

pub(super) fn mem() -> &'static Path {
    Path::new(MEMORY)
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes a file atomically (see [`crate::io::write_atomic`]); errors name the file.
pub(super) fn write_atomic(
    path: &Path,
    secret: bool,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    crate::io::write_atomic(path, secret, body).map_err(|error| FileError::Io {
        path: path.to_path_buf(),
        error,
    })
}
