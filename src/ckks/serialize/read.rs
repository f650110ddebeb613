//! Reading: the CRC first, then the header and every field against the parameters, then the
//! payload (each residue below its prime); never a panic, never an allocation from an unchecked
//! header value.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use super::*;
use crate::ckks::{EncapsulationKeys, SwitchingKey};

/// A cursor over the bytes of a file.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize, part: &'static str) -> Result<&'a [u8], FileError> {
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
    pub(super) fn array<const K: usize>(
        &mut self,
        part: &'static str,
    ) -> Result<[u8; K], FileError> {
        let mut out = [0u8; K];
        out.copy_from_slice(self.take(K, part)?);
        Ok(out)
    }
    pub(super) fn u16(&mut self, part: &'static str) -> Result<u16, FileError> {
        Ok(u16::from_le_bytes(self.array(part)?))
    }
    pub(super) fn u32(&mut self, part: &'static str) -> Result<u32, FileError> {
        Ok(u32::from_le_bytes(self.array(part)?))
    }
    pub(super) fn u64(&mut self, part: &'static str) -> Result<u64, FileError> {
        Ok(u64::from_le_bytes(self.array(part)?))
    }
}

/// The magic bytes: the only field read before the CRC is checked.
pub(super) fn check_magic(r: &mut Reader<'_>) -> Result<(), FileError> {
    let path = r.path;
    let n = r.bytes.len().min(MAGIC.len());
    if r.bytes[..n] != MAGIC[..n] {
        return Err(FileError::NotCryptodl {
            path: path.to_path_buf(),
        });
    }
    r.take(MAGIC.len(), "magic bytes")?;
    Ok(())
}

/// The format version (read after the CRC is checked).
pub(super) fn check_version(r: &mut Reader<'_>) -> Result<u16, FileError> {
    let path = r.path;
    let version = r.u16("format version")?;
    match version {
        0 => Err(FileError::UnknownFormat {
            path: path.to_path_buf(),
            found: version,
        }),
        v if v < FORMAT_VERSION => Err(FileError::OlderFormat {
            path: path.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        v if v > FORMAT_VERSION => Err(FileError::NewerFormat {
            path: path.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        v => Ok(v),
    }
}

/// The stored and the computed CRC of a file (`None` if it is too short to hold one).
fn crc_of(bytes: &[u8]) -> Option<(u32, u32)> {
    (bytes.len() >= MAGIC.len() + CRC_LEN).then(|| {
        let (body, tail) = bytes.split_at(bytes.len() - CRC_LEN);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(tail);
        (u32::from_le_bytes(stored), crc32fast::hash(body))
    })
}

/// Kind-specific header fields, validated against the parameters.
pub(super) enum Fields {
    Secret,
    Public,
    Evaluation {
        has_relin: bool,
        /// `(base, special)` of the encapsulation keys.
        encapsulation: Option<(usize, usize)>,
        galois: Vec<u64>,
    },
    Ciphertexts(CtFields),
}

#[derive(Clone, Copy)]
pub(super) struct CtFields {
    count: usize,
    size: usize,
    level: usize,
    scale: f64,
}

/// A parsed, validated header.
pub(super) struct Parsed {
    kind: ObjectKind,
    key_set: KeySetId,
    label: CiphertextLabel,
    fields: Fields,
    /// Offset of the payload.
    header_len: usize,
    /// Payload bytes the header describes (at most [`MAX_PAYLOAD_BYTES`]).
    payload_len: usize,
}

pub(super) fn field_err(
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

pub(super) fn expect_field(
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
pub(super) fn parse_header(
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
    let key_set = KeySetId(r.array("key-set id")?);
    let mut label = CiphertextLabel::unlabelled(key_set);
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
            let flags = r.u32("evaluation-key header")?;
            if flags > 3 {
                return Err(field_err(
                    path,
                    "flags",
                    flags.into(),
                    "0 to 3 (bit 0 relinearization, bit 1 encapsulation)",
                ));
            }
            let (has_relin, has_encapsulation) = (flags & 1 == 1, flags & 2 == 2);
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
            let encapsulation = if has_encapsulation {
                let base = r.u32("evaluation-key header")?;
                let special = r.u32("evaluation-key header")?;
                if base as usize >= params.max_level() {
                    return Err(field_err(
                        path,
                        "encapsulation_base",
                        base.into(),
                        format_args!("below the top level {}", params.max_level()),
                    ));
                }
                if special == 0 || special as usize > params.p().len() {
                    return Err(field_err(
                        path,
                        "encapsulation_special",
                        special.into(),
                        format_args!("1..={}", params.p().len()),
                    ));
                }
                Some((base as usize, special as usize))
            } else {
                None
            };
            let keys = count as u128 + u128::from(has_relin) + u128::from(has_encapsulation);
            let small = encapsulation.map_or(0, |(b, s)| encapsulation_key_words(params, b, s));
            let payload = (keys * switching_key_words(params) as u128 + small as u128) * 4;
            (
                Fields::Evaluation {
                    has_relin,
                    encapsulation,
                    galois,
                },
                payload,
            )
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
            let content = r.u32("ciphertext label")?;
            label.content = Content::from_code(content)
                .ok_or_else(|| field_err(path, "content", content.into(), "0, 1 or 2"))?;
            label.batch = r.u32("ciphertext label")?;
            label.images = r.u32("ciphertext label")?;
            expect_field(path, "reserved", r.u32("ciphertext label")?, 0)?;
            label.job = JobId(r.array("ciphertext label")?);
            label.model = r.array("ciphertext label")?;
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
        key_set,
        label,
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

/// Checks magic, CRC, version, header and length; returns the parsed header (the payload is
/// `bytes[header_len..header_len + payload_len]`). No field but the magic is interpreted before
/// the CRC matches.
pub(super) fn open(
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
    check_magic(&mut r)?;
    match crc_of(bytes) {
        Some((stored, computed)) if stored == computed => {}
        crc => {
            // A file shorter than its (tentatively read) header describes is truncated;
            // anything else with a wrong CRC is corrupted, whatever its fields say.
            let mut t = Reader {
                bytes,
                pos: r.pos,
                path,
            };
            let tentative = t
                .u16("format version")
                .and_then(|_| parse_header(&mut t, params, accept));
            match (tentative, crc) {
                (Err(e @ FileError::Truncated { .. }), _) | (Err(e), None) => return Err(e),
                (Ok(p), _) if bytes.len() < p.header_len + p.payload_len + CRC_LEN => {
                    return Err(FileError::Truncated {
                        path: path.to_path_buf(),
                        part: "payload and checksum",
                        needed: (p.payload_len + CRC_LEN) as u64,
                        available: bytes.len().saturating_sub(p.header_len) as u64,
                    })
                }
                (_, Some((stored, computed))) => {
                    return Err(FileError::ChecksumMismatch {
                        path: path.to_path_buf(),
                        stored,
                        computed,
                    })
                }
                (Ok(_), None) => unreachable!("a parsed header is longer than the CRC"),
            }
        }
    }
    check_version(&mut r)?;
    let parsed = parse_header(&mut r, params, accept)?;
    let expected = parsed.header_len as u64 + parsed.payload_len as u64 + CRC_LEN as u64;
    let found = bytes.len() as u64;
    if found != expected {
        // The CRC matched, so the header is as written: the file was cut or extended.
        return Err(if found < expected {
            FileError::Truncated {
                path: path.to_path_buf(),
                part: "payload and checksum",
                needed: expected - parsed.header_len as u64,
                available: found - parsed.header_len.min(bytes.len()) as u64,
            }
        } else {
            FileError::TrailingData {
                path: path.to_path_buf(),
                expected,
                found,
            }
        });
    }
    Ok(parsed)
}

/// Decodes little-endian residues, limb `i` (of `n` words) checked against `moduli[i % len]`.
/// `word_base` is the index of the first word in the payload (for error messages).
pub(super) fn decode_residues(
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

pub(super) fn wrong_kind(path: &Path, expected: ObjectKind, found: ObjectKind) -> FileError {
    FileError::WrongKind {
        path: path.to_path_buf(),
        expected,
        found,
    }
}

pub(super) fn qp_primes(params: &Parameters) -> Vec<u32> {
    params.q().iter().chain(params.p()).copied().collect()
}

pub(super) fn payload<'a>(bytes: &'a [u8], p: &Parsed) -> &'a [u8] {
    &bytes[p.header_len..p.header_len + p.payload_len]
}

pub(super) fn decode_ciphertexts(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
    accept: &[ObjectKind],
) -> Result<(Vec<Ciphertext>, CiphertextLabel), FileError> {
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
    Ok((out, parsed.label))
}

pub(super) fn decode_public_key(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
) -> Result<PublicKey, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, &[ObjectKind::PublicKey])?;
    let data = decode_residues(
        path,
        payload(bytes, &parsed),
        &qp_primes(params),
        params.n(),
        0,
    )?;
    Ok(PublicKey {
        data,
        key_set: parsed.key_set,
    })
}

pub(super) fn decode_evaluation_keys(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
) -> Result<EvaluationKeys, FileError> {
    let params = ctx.params();
    let parsed = open(bytes, path, params, &[ObjectKind::EvaluationKeys])?;
    let Fields::Evaluation {
        has_relin,
        encapsulation,
        galois,
    } = &parsed.fields
    else {
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
    let encapsulation = match *encapsulation {
        None => None,
        Some((base, special)) => {
            let small = encapsulation_key_words(params, base, special);
            let start = (galois.len() + usize::from(*has_relin)) * words * 4;
            let bytes = payload(bytes, &parsed);
            let chunk =
                bytes
                    .get(start..start + small * 4)
                    .ok_or_else(|| FileError::Truncated {
                        path: path.to_path_buf(),
                        part: "encapsulation key",
                        needed: small as u64 * 4,
                        available: bytes.len().saturating_sub(start) as u64,
                    })?;
            let q_len = params.q().len();
            let sub: Vec<_> = (0..=base)
                .chain(q_len..q_len + special)
                .map(|i| moduli[i])
                .collect();
            let to_sparse = SwitchingKey {
                data: decode_residues(path, chunk, &sub, n, 0)?,
            };
            let rest = &bytes[start + small * 4..];
            let from_sparse = SwitchingKey {
                data: decode_residues(
                    path,
                    rest.get(..words * 4).ok_or_else(|| FileError::Truncated {
                        path: path.to_path_buf(),
                        part: "encapsulation key",
                        needed: words as u64 * 4,
                        available: rest.len() as u64,
                    })?,
                    &moduli,
                    n,
                    0,
                )?,
            };
            Some(EncapsulationKeys {
                to_sparse,
                base,
                special,
                from_sparse,
            })
        }
    };
    Ok(EvaluationKeys {
        relin,
        galois: map,
        encapsulation,
        key_set: parsed.key_set,
    })
}

pub(super) fn decode_secret_key(
    bytes: &[u8],
    path: &Path,
    ctx: &Context,
) -> Result<SecretKey, FileError> {
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
    let computed = KeySetId::of_secret(&coeffs);
    if computed != parsed.key_set {
        return Err(FileError::ForgedSecretKey {
            path: path.to_path_buf(),
            stored: parsed.key_set,
            computed,
        });
    }
    Ok(SecretKey::from_coeffs(ctx, std::mem::take(&mut *coeffs)))
}

/// Reads a whole file; a file that does not start with the magic bytes is refused before it is
/// read whole. The buffer is zeroized on drop (it may hold a secret key).
pub(super) fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    // A FIFO or a device would block or never end: regular files only.
    let mut f = crate::io::open_regular(path)
        .map_err(io_error(path))?
        .ok_or_else(|| FileError::NotAFile {
            path: path.to_path_buf(),
        })?;
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

pub(super) fn header_at(bytes: &[u8], path: &Path) -> Result<FileHeader, FileError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    check_magic(&mut r)?;
    match crc_of(bytes) {
        Some((stored, computed)) if stored != computed => {
            return Err(FileError::ChecksumMismatch {
                path: path.to_path_buf(),
                stored,
                computed,
            })
        }
        None => {
            return Err(FileError::Truncated {
                path: path.to_path_buf(),
                part: "header and checksum",
                needed: (COMMON_HEADER_LEN + CRC_LEN) as u64,
                available: bytes.len() as u64,
            })
        }
        Some(_) => {}
    }
    let version = check_version(&mut r)?;
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
        key_set: KeySetId(r.array("key-set id")?),
    })
}
