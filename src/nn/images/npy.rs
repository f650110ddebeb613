//! `.npy` files read exactly as numpy reads them, or refused: the header is parsed as the
//! Python dictionary literal it is (`numpy.lib.format`), with exactly the keys `descr`,
//! `fortran_order` and `shape`, each once (numpy would silently take the last of a duplicated
//! key); the dtype's byte order is honoured; the data must be exactly as long as the shape
//! says; Fortran-ordered arrays come back in C order.

use std::path::Path;

use super::{bad, ImagesError};

/// An element type of a `.npy` file: kind (`u`, `i`, `f`), width in bytes, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dtype {
    /// `u` (unsigned), `i` (signed) or `f` (IEEE float).
    pub kind: char,
    /// Bytes per element.
    pub width: usize,
    /// Big-endian storage (`>`).
    pub big_endian: bool,
}

impl Dtype {
    /// numpy's name for it (`uint8`, `float32`).
    pub fn name(&self) -> String {
        let kind = match self.kind {
            'u' => "uint",
            'i' => "int",
            _ => "float",
        };
        format!("{kind}{}", 8 * self.width)
    }

    fn parse(descr: &str) -> Option<Dtype> {
        let mut chars = descr.chars();
        let order = chars.next()?;
        let big_endian = match order {
            '<' | '|' | '=' => false,
            '>' => true,
            _ => return None,
        };
        let kind = chars.next()?;
        let width: usize = chars.as_str().parse().ok()?;
        let ok = match kind {
            'u' | 'i' => matches!(width, 1 | 2 | 4 | 8),
            'f' => matches!(width, 2 | 4 | 8),
            _ => false,
        };
        (ok && !(order == '|' && width != 1)).then_some(Dtype {
            kind,
            width,
            big_endian,
        })
    }

    fn value(&self, b: &[u8]) -> f64 {
        let mut le = [0u8; 8];
        le[..self.width].copy_from_slice(b);
        if self.big_endian {
            le[..self.width].reverse();
        }
        match (self.kind, self.width) {
            ('u', 1) => f64::from(le[0]),
            ('i', 1) => f64::from(le[0] as i8),
            ('u', 2) => f64::from(u16::from_le_bytes([le[0], le[1]])),
            ('i', 2) => f64::from(i16::from_le_bytes([le[0], le[1]])),
            ('u', 4) => f64::from(u32::from_le_bytes([le[0], le[1], le[2], le[3]])),
            ('i', 4) => f64::from(i32::from_le_bytes([le[0], le[1], le[2], le[3]])),
            ('u', 8) => u64::from_le_bytes(le) as f64,
            ('i', 8) => i64::from_le_bytes(le) as f64,
            ('f', 2) => half::f16::from_le_bytes([le[0], le[1]]).to_f64(),
            ('f', 4) => f64::from(f32::from_le_bytes([le[0], le[1], le[2], le[3]])),
            _ => f64::from_le_bytes(le),
        }
    }
}

/// A parsed `.npy` file: its header, and its data still as bytes (converted element by
/// element into what the caller keeps, never widened as a whole).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Npy<'a> {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: Dtype,
    /// Stored in Fortran (column-major) order.
    fortran: bool,
    /// The data, exactly `count * dtype.width` bytes.
    data: &'a [u8],
}

impl Npy<'_> {
    /// The number of values.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.width
    }

    /// Value `i` in C (row-major) order, whatever the file's order.
    pub fn get(&self, i: usize) -> f64 {
        let at = if self.fortran && self.shape.len() > 1 {
            // Element (i0, i1, ...) of a column-major array lies at i0 + d0 (i1 + d1 (...)).
            let mut rem = i;
            let mut index = vec![0; self.shape.len()];
            for k in (0..self.shape.len()).rev() {
                index[k] = rem % self.shape[k];
                rem /= self.shape[k];
            }
            let mut at = 0;
            for k in (0..self.shape.len()).rev() {
                at = at * self.shape[k] + index[k];
            }
            at
        } else {
            i
        };
        let w = self.dtype.width;
        self.dtype.value(&self.data[at * w..(at + 1) * w])
    }

    /// Every value in C order, as f64 (for small arrays: labels).
    pub fn values(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// A Python literal of a `.npy` header.
#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(i128),
    Tuple(Vec<Lit>),
    Other,
}

/// A parser of the Python literals numpy writes in headers (`ast.literal_eval` of a dict of
/// strings, booleans, integers and tuples).
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > 8 {
            return Err("nested too deeply".into());
        }
        self.skip_ws();
        match self.s.get(self.at) {
            Some(&q @ (b'\'' | b'"')) => {
                self.at += 1;
                let start = self.at;
                while let Some(&c) = self.s.get(self.at) {
                    if c == b'\\' {
                        return Err("escapes in strings are not read".into());
                    }
                    if c == q {
                        let text = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                        self.at += 1;
                        return Ok(Lit::Str(text));
                    }
                    self.at += 1;
                }
                Err("an unterminated string".into())
            }
            Some(b'(') | Some(b'[') => {
                let close = if self.s[self.at] == b'(' { b')' } else { b']' };
                let tuple = close == b')';
                self.at += 1;
                let mut items = Vec::new();
                let mut trailing_comma = false;
                loop {
                    if self.eat(close) {
                        break;
                    }
                    items.push(self.literal(depth + 1)?);
                    trailing_comma = self.eat(b',');
                    if !trailing_comma {
                        if self.eat(close) {
                            break;
                        }
                        return Err("a tuple or list without its closing bracket".into());
                    }
                }
                // `(3)` is the integer 3 in Python, not a tuple.
                if tuple && items.len() == 1 && !trailing_comma {
                    return Ok(items.pop().expect("one item"));
                }
                Ok(if tuple { Lit::Tuple(items) } else { Lit::Other })
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' => {
                let start = self.at;
                self.at += 1;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                let digits = text.trim_start_matches(['+', '-']);
                if digits.is_empty()
                    || !digits.bytes().all(|c| c.is_ascii_digit() || c == b'_')
                    || digits.starts_with('_')
                    || digits.ends_with('_')
                    || digits.contains("__")
                    || (digits.len() > 1
                        && digits.starts_with('0')
                        && digits.bytes().any(|c| c != b'0' && c != b'_'))
                    || text[..text.len() - digits.len()].len() > 1
                {
                    return Ok(Lit::Other);
                }
                let v: i128 = digits
                    .replace('_', "")
                    .parse()
                    .map_err(|_| "an integer out of range".to_string())?;
                Ok(Lit::Int(if text.starts_with('-') { -v } else { v }))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    self.at += 1;
                }
                Ok(match &self.s[start..self.at] {
                    b"True" => Lit::Bool(true),
                    b"False" => Lit::Bool(false),
                    _ => Lit::Other,
                })
            }
            Some(b'{') => Err("a dictionary inside the header".into()),
            _ => Err("not a Python literal".into()),
        }
    }

    /// The header's dictionary as (key, value) pairs in order, duplicates kept.
    fn dict(&mut self) -> Result<Vec<(String, Lit)>, String> {
        if !self.eat(b'{') {
            return Err("the header is not a Python dictionary".into());
        }
        let mut items = Vec::new();
        loop {
            if self.eat(b'}') {
                break;
            }
            let key = match self.literal(0)? {
                Lit::Str(k) => k,
                _ => return Err("a key that is not a string".into()),
            };
            if !self.eat(b':') {
                return Err(format!("no `:` after the key {key:?}"));
            }
            let value = self.literal(0)?;
            items.push((key, value));
            if !self.eat(b',') {
                if self.eat(b'}') {
                    break;
                }
                return Err("the dictionary is not closed".into());
            }
        }
        self.skip_ws();
        if self.at != self.s.len() {
            return Err("text after the dictionary".into());
        }
        Ok(items)
    }
}

/// Parses a `.npy` file, refusing what numpy would refuse or read differently. `max_values`
/// bounds the array's size, checked against the shape before any allocation.
pub(crate) fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    max_values: usize,
) -> Result<Npy<'a>, ImagesError> {
    let not = |why: &str| {
        bad(
            path,
            format!("not a .npy file as numpy.save writes them ({why})"),
        )
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(not("no \\x93NUMPY magic"));
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(not(&format!("format version {v}"))),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .ok_or_else(|| not("the header is cut short"))?;
    let items = Parser { s: header, at: 0 }
        .dict()
        .map_err(|e| not(&format!("header: {e}")))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in items {
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => {
                return Err(not(&format!(
                    "the header has the key {other:?}; numpy's has exactly descr, fortran_order and shape"
                )))
            }
        };
        if slot.is_some() {
            return Err(bad(
                path,
                format!(
                    "its header gives {key:?} twice (numpy would silently take the last); re-save \
                     the array with numpy.save"
                ),
            ));
        }
        *slot = Some(value);
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(not("the header lacks one of descr, fortran_order, shape"));
    };
    let dtype = match &descr {
        Lit::Str(d) => Dtype::parse(d).ok_or_else(|| {
            bad(
                path,
                format!(
                    "dtype {d:?} is not read; save images as uint8 (0..255) or float32 / float64 \
                     (0..1), labels as integers"
                ),
            )
        })?,
        _ => {
            return Err(bad(
                path,
                "a structured dtype is not read; save a plain numeric array",
            ))
        }
    };
    let Lit::Bool(fortran) = fortran else {
        return Err(not("fortran_order is not True or False"));
    };
    let Lit::Tuple(dims) = shape else {
        return Err(not("shape is not a tuple"));
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Lit::Int(v) if *v >= 0 => usize::try_from(*v).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| not("shape holds something other than sizes"))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= max_values)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "its header declares shape {shape:?}, over the limit of {max_values} values"
                ),
            )
        })?;
    let data = &bytes[start + len..];
    let need = count * dtype.width;
    if data.len() != need {
        return Err(bad(
            path,
            format!(
                "its header says shape {shape:?} of {} ({need} bytes of data), but the file holds \
                 {} after the header: {}",
                dtype.name(),
                data.len(),
                if data.len() < need {
                    "truncated"
                } else {
                    "bytes beyond the array (not a file numpy.save wrote)"
                }
            ),
        ));
    }
    Ok(Npy {
        shape,
        dtype,
        fortran,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.as_bytes().to_vec();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(b' ');
        }
        h.push(b'\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(&h);
        b.extend_from_slice(data);
        b
    }

    /// The shape and values of a file with `header` and `data`.
    #[derive(Debug)]
    struct Read {
        shape: Vec<usize>,
        values: Vec<f64>,
    }

    fn read(header: &str, data: &[u8]) -> Result<Read, String> {
        let bytes = file(header, data);
        let a = parse(Path::new("x.npy"), &bytes, 1 << 20).map_err(|e| e.to_string())?;
        Ok(Read {
            shape: a.shape.clone(),
            values: a.values(),
        })
    }

    #[test]
    fn headers_are_read_as_numpy_reads_them() {
        let a = read(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }",
            &[1, 2, 3, 4, 5, 6],
        )
        .unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Fortran order comes back in C order; keys in any order, double quotes.
        let a = read(
            "{\"shape\": (2, 3), \"fortran_order\": True, \"descr\": \"|u1\"}",
            &[1, 4, 2, 5, 3, 6],
        )
        .unwrap();
        assert_eq!(a.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Big-endian data is honoured.
        let a = read(
            "{'descr': '>i4', 'fortran_order': False, 'shape': (1,)}",
            &[0, 0, 1, 2],
        )
        .unwrap();
        assert_eq!(a.values, vec![258.0]);
        // A scalar and an empty array.
        assert_eq!(
            read(
                "{'descr': '<f8', 'fortran_order': False, 'shape': ()}",
                &1.5f64.to_le_bytes()
            )
            .unwrap()
            .values,
            vec![1.5]
        );
        assert!(read(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 3)}",
            &[]
        )
        .unwrap()
        .values
        .is_empty());
    }

    #[test]
    fn what_numpy_refuses_or_reads_differently_is_refused() {
        let u8s = [0u8; 6];
        for (header, want) in [
            (
                "{'descr': '<f4', 'descr': '|u1', 'fortran_order': False, 'shape': (6,)}",
                "\"descr\" twice",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (6,), 'shape': (2, 3)}",
                "\"shape\" twice",
            ),
            ("{'descr': '|u1', 'fortran_order': False}", "lacks one of"),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (6,), 'extra': 1}",
                "\"extra\"",
            ),
            (
                "{'descr': '|u1', 'fortran_order': 0, 'shape': (6,)}",
                "fortran_order",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (6)}",
                "not a tuple",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (-6,)}",
                "other than sizes",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (3,)}",
                "bytes beyond",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (7,)}",
                "truncated",
            ),
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (6,)}",
                "is not read",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}",
                "structured",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (6,)} junk",
                "after the dictionary",
            ),
            ("['descr', '|u1']", "not a Python dictionary"),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (1 << 40,)}",
                "header",
            ),
            (
                "{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999, 99999999999)}",
                "over the limit",
            ),
        ] {
            let e = read(header, &u8s).unwrap_err();
            assert!(e.contains(want), "{header}: `{want}` not in {e}");
        }
    }
}
