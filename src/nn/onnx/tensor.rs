//! ONNX constant tensors (initializers, `Constant` nodes) as f64 values with their shape, from
//! every storage ONNX allows: typed fields, raw little-endian bytes, or external data files.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::proto::{tensor_proto::DataType, AttributeProto, TensorProto};
use super::OnnxError;

/// The largest tensor read (256 M values).
pub const MAX_TENSOR_VALUES: usize = 1 << 28;

/// A constant: its dimensions and values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f64>,
}

impl Const {
    /// A scalar.
    pub fn scalar(v: f64) -> Self {
        Const {
            dims: Vec::new(),
            values: vec![v],
        }
    }

    /// The value of a one-element constant.
    pub fn as_scalar(&self) -> Option<f64> {
        (self.values.len() == 1).then(|| self.values[0])
    }

    /// The dimensions without leading and trailing 1s (a per-channel vector `[1, C, 1, 1]` is
    /// `[C]`).
    pub fn squeezed(&self) -> Vec<usize> {
        let first = self.dims.iter().position(|&d| d != 1);
        let last = self.dims.iter().rposition(|&d| d != 1);
        match (first, last) {
            (Some(a), Some(b)) => self.dims[a..=b].to_vec(),
            _ => Vec::new(),
        }
    }
}

fn tensor_error(name: &str, reason: impl Into<String>) -> OnnxError {
    OnnxError::Tensor {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Reads the external data of `t` (`location`, `offset`, `length`) from a file beside the model
/// in `dir`: the location must be a relative path that stays inside `dir` once every symbolic
/// link is resolved ([`crate::io::confined`]). The resolved file is added to `files`.
fn external_bytes(
    t: &TensorProto,
    dir: Option<&Path>,
    need: usize,
    files: &mut Vec<PathBuf>,
) -> Result<Vec<u8>, OnnxError> {
    let name = t.name();
    let mut location = None;
    let (mut offset, mut length) = (0u64, None);
    let mut seen = std::collections::HashSet::new();
    for e in &t.external_data {
        if !seen.insert(e.key()) {
            return Err(tensor_error(
                name,
                format!("external data key {:?} is given twice", e.key()),
            ));
        }
        match e.key() {
            "location" => location = Some(e.value().to_string()),
            "offset" => {
                offset = e
                    .value()
                    .parse()
                    .map_err(|_| tensor_error(name, "bad external offset"))?
            }
            "length" => {
                length = Some(
                    e.value()
                        .parse::<u64>()
                        .map_err(|_| tensor_error(name, "bad external length"))?,
                )
            }
            "checksum" => {}
            other => {
                return Err(tensor_error(
                    name,
                    format!("unknown external data key {other:?}"),
                ))
            }
        }
    }
    let location =
        location.ok_or_else(|| tensor_error(name, "external data without a location"))?;
    let dir = dir.ok_or_else(|| {
        tensor_error(
            name,
            "external data, but the model was not read from a file",
        )
    })?;
    let path = crate::io::confined(dir, &location)
        .map_err(|e| tensor_error(name, format!("external data location: {e}")))?;
    let length = length.unwrap_or(need as u64);
    if length != need as u64 {
        return Err(tensor_error(
            name,
            format!("external data holds {length} bytes, its shape needs {need}"),
        ));
    }
    let io = |error| OnnxError::Io {
        path: path.clone(),
        error,
    };
    let mut f = crate::io::open_regular(&path)
        .map_err(io)?
        .ok_or_else(|| OnnxError::NotAFile { path: path.clone() })?;
    let size = f.metadata().map_err(io)?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(tensor_error(
            name,
            format!(
                "external data [{offset}, {offset} + {length}) lies past the end of {} ({size} bytes): the file is truncated or not this model's (keep MODEL.onnx and its .data file together)",
                path.display()
            ),
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; need];
    f.read_exact(&mut buf).map_err(io)?;
    if !files.contains(&path) {
        files.push(path);
    }
    Ok(buf)
}

/// Decodes a tensor to f64 (float, double, float16, bfloat16 and integer types); the external
/// data files it reads are added to `files`.
pub fn decode(
    t: &TensorProto,
    dir: Option<&Path>,
    files: &mut Vec<PathBuf>,
) -> Result<Const, OnnxError> {
    let name = t.name();
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| tensor_error(name, format!("dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_TENSOR_VALUES)
        .ok_or_else(|| tensor_error(name, format!("shape {dims:?} is too large")))?;
    let dtype = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
    let width = match dtype {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        other => {
            return Err(tensor_error(
                name,
                format!(
                    "element type {} is not a number cryptodl reads",
                    other.as_str_name()
                ),
            ))
        }
    };
    let external = t.data_location() == super::proto::tensor_proto::DataLocation::External;
    let raw: Option<Vec<u8>> = if external {
        Some(external_bytes(t, dir, count * width, files)?)
    } else {
        t.raw_data.clone()
    };
    let values: Vec<f64> = match raw {
        Some(bytes) => {
            if bytes.len() != count * width {
                return Err(tensor_error(
                    name,
                    format!(
                        "{} bytes of data for shape {dims:?} of {} ({} needed)",
                        bytes.len(),
                        dtype.as_str_name(),
                        count * width
                    ),
                ));
            }
            let w = |c: &[u8]| -> f64 {
                match dtype {
                    DataType::Float => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Double => f64::from_le_bytes(c.try_into().unwrap()),
                    DataType::Float16 => half::f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                    DataType::Bfloat16 => half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                    DataType::Int32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Uint32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Int64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Uint64 => u64::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Int16 => i16::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Uint16 => u16::from_le_bytes(c.try_into().unwrap()) as f64,
                    DataType::Int8 => c[0] as i8 as f64,
                    _ => c[0] as f64,
                }
            };
            bytes.chunks_exact(width).map(w).collect()
        }
        None => match dtype {
            DataType::Float => t.float_data.iter().map(|&v| v as f64).collect(),
            DataType::Double => t.double_data.clone(),
            DataType::Int64 => t.int64_data.iter().map(|&v| v as f64).collect(),
            DataType::Uint32 | DataType::Uint64 => {
                t.uint64_data.iter().map(|&v| v as f64).collect()
            }
            DataType::Float16 => t
                .int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f64())
                .collect(),
            DataType::Bfloat16 => t
                .int32_data
                .iter()
                .map(|&v| half::bf16::from_bits(v as u16).to_f64())
                .collect(),
            _ => t.int32_data.iter().map(|&v| v as f64).collect(),
        },
    };
    if values.len() != count {
        return Err(tensor_error(
            name,
            format!(
                "{} values for shape {dims:?} ({count} needed)",
                values.len()
            ),
        ));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(tensor_error(name, format!("holds {bad}")));
    }
    Ok(Const { dims, values })
}

/// The value of a `Constant` node's attribute (`value`, `value_float(s)`, `value_int(s)`); the
/// external data files it reads are added to `files`.
pub fn from_attribute(
    a: &AttributeProto,
    dir: Option<&Path>,
    files: &mut Vec<PathBuf>,
) -> Result<Option<Const>, OnnxError> {
    Ok(match a.name() {
        "value" => match &a.t {
            Some(t) => Some(decode(t, dir, files)?),
            None => None,
        },
        "value_float" => Some(Const::scalar(a.f() as f64)),
        "value_int" => Some(Const::scalar(a.i() as f64)),
        "value_floats" => Some(Const {
            dims: vec![a.floats.len()],
            values: a.floats.iter().map(|&v| v as f64).collect(),
        }),
        "value_ints" => Some(Const {
            dims: vec![a.ints.len()],
            values: a.ints.iter().map(|&v| v as f64).collect(),
        }),
        _ => None,
    })
}
