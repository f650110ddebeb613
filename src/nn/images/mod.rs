//! Images to score, from a dataset's test split or from the user's files: a `.npy` array
//! (N x C x H x W or N x H x W, uint8 or float in [0, 1]), a directory of PNG / JPEG files, or
//! an IDX file; each image with the name of where it came from, values in [0, 1] in CHW order.

use std::io::Read;
use std::path::{Path, PathBuf};

mod decode;
mod npy;

pub use decode::MAX_PIXELS;

use super::dataset::{read_idx, Dataset, DatasetKind};
use super::model::Model;
use super::reference;

/// The largest input file read, and the most data an input array may declare (2 GiB, checked
/// against its header before it is converted or decompressed).
pub const MAX_INPUT_BYTES: u64 = 2 << 30;
/// The most values an input array may declare (2^31 bytes of uint8 pixels).
pub const MAX_INPUT_VALUES: usize = 1 << 31;
/// The most labels a label file may declare.
const MAX_LABELS: usize = 1 << 28;

/// Why images could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImagesError {
    /// The operating system refused.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// What the file holds does not fit; `reason` says what to do.
    #[error("{}: {reason}", .path.display())]
    Bad {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

fn bad(path: &Path, reason: impl Into<String>) -> ImagesError {
    ImagesError::Bad {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Image values, image after image, CHW: 8-bit pixels, or values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
enum Values {
    Pixels(Vec<u8>),
    Unit(Vec<f32>),
}

/// Images with their sources.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// (channels, height, width).
    pub shape: [usize; 3],
    values: Values,
    /// Where each image came from (a file name, `file.npy[i]`, `fashion-mnist test #i`).
    pub names: Vec<String>,
    /// Labels, when the source has them.
    pub labels: Option<Vec<u8>>,
    /// Files of an image directory that were not read (not images), by name.
    pub ignored: Vec<String>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Image `i` normalised for `model` (whose input must be [`Self::shape`]), exactly as the
    /// plaintext reference normalises dataset pixels.
    pub fn normalized(&self, model: &Model, i: usize) -> Vec<f64> {
        let n = self.shape.iter().product::<usize>();
        match &self.values {
            Values::Pixels(p) => reference::normalize(model, &p[i * n..(i + 1) * n]),
            Values::Unit(v) => reference::normalize_unit(model, &v[i * n..(i + 1) * n]),
        }
    }

    /// The first `n` images.
    pub fn take(mut self, n: usize) -> Images {
        let n = n.min(self.len());
        let k = n * self.shape.iter().product::<usize>();
        match &mut self.values {
            Values::Pixels(p) => p.truncate(k),
            Values::Unit(v) => v.truncate(k),
        }
        self.names.truncate(n);
        if let Some(l) = &mut self.labels {
            l.truncate(n);
        }
        self
    }

    /// A dataset's images, named `KIND test #i`.
    pub fn from_dataset(kind: DatasetKind, d: &Dataset) -> Images {
        Images {
            shape: d.shape,
            values: Values::Pixels(d.pixels.clone()),
            names: (0..d.len()).map(|i| format!("{kind} test #{i}")).collect(),
            labels: Some(d.labels.clone()),
            ignored: Vec::new(),
        }
    }
}

/// How [`load`] treats images of another size than the model's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resize {
    /// Refuse them (naming the file and both sizes).
    #[default]
    Refuse,
    /// Scale them (bilinear) to the model's size.
    Scale,
}

fn read_limited(path: &Path) -> Result<Vec<u8>, ImagesError> {
    let io = |error| ImagesError::Io {
        path: path.to_path_buf(),
        error,
    };
    let f = crate::io::open_regular(path)
        .map_err(io)?
        .ok_or_else(|| bad(path, "not a regular file"))?;
    let size = f.metadata().map_err(io)?.len();
    if size > MAX_INPUT_BYTES {
        return Err(bad(
            path,
            format!("{size} bytes, over the limit of {MAX_INPUT_BYTES}; split it"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(MAX_INPUT_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// Loads the images at `path` for a model whose input is `shape` (C, H, W): a `.npy` file, an
/// IDX file (`*-idx3-ubyte`, optionally `.gz`), or a directory of `.png` / `.jpg` / `.jpeg`
/// files (sorted by name; images of other formats are refused, other files listed in
/// [`Images::ignored`]). Colour images are converted to the model's
/// channel count (luma for 1, RGB for 3). `labels` (a `.npy` of integers or an IDX label file)
/// gives one label per image.
pub fn load(
    path: &Path,
    shape: [usize; 3],
    resize: Resize,
    labels: Option<&Path>,
) -> Result<Images, ImagesError> {
    let meta = std::fs::metadata(path).map_err(|error| ImagesError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let mut images = if meta.is_dir() {
        load_dir(path, shape, resize)?
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        load_npy(path, shape)?
    } else {
        load_idx(path, shape)?
    };
    if images.is_empty() {
        return Err(bad(path, "holds no images"));
    }
    if let Some(lp) = labels {
        let l = load_labels(lp)?;
        if l.len() != images.len() {
            return Err(bad(
                lp,
                format!(
                    "{} labels for {} images in {}",
                    l.len(),
                    images.len(),
                    path.display()
                ),
            ));
        }
        images.labels = Some(l);
    }
    Ok(images)
}

fn load_labels(path: &Path) -> Result<Vec<u8>, ImagesError> {
    let bytes = read_limited(path)?;
    let values: Vec<f64> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let a = npy::parse(path, &bytes, MAX_LABELS)?;
        if !matches!(a.shape.as_slice(), [_] | [_, 1]) {
            return Err(bad(
                path,
                format!("labels of shape {:?}; expected (N,) or (N, 1)", a.shape),
            ));
        }
        if a.dtype.kind == 'f' {
            return Err(bad(
                path,
                format!(
                    "labels of dtype {}; save class indices as integers",
                    a.dtype.name()
                ),
            ));
        }
        a.values()
    } else {
        let (dims, data) =
            read_idx(path, bytes, MAX_LABELS as u64).map_err(|e| bad(path, e.to_string()))?;
        if dims.len() != 1 {
            return Err(bad(
                path,
                format!("an IDX file of shape {dims:?}; labels have one dimension"),
            ));
        }
        data.iter().map(|&v| v as f64).collect()
    };
    values
        .iter()
        .map(|&v| {
            (v.fract() == 0.0 && (0.0..=255.0).contains(&v))
                .then_some(v as u8)
                .ok_or_else(|| bad(path, format!("label {v} is not a class index 0..255")))
        })
        .collect()
}

/// The number of images in an array of `dims` (N x C x H x W, or N x H x W for one channel)
/// for a model whose input is `shape`; any other layout is refused saying what to do.
fn batch_len(path: &Path, dims: &[usize], shape: [usize; 3]) -> Result<usize, ImagesError> {
    let [c, h, w] = shape;
    match dims {
        [n, cc, hh, ww] if [*cc, *hh, *ww] == shape => Ok(*n),
        [n, hh, ww] if c == 1 && [*hh, *ww] == [h, w] => Ok(*n),
        [_, hh, ww, cc] if [*cc, *hh, *ww] == shape => Err(bad(
            path,
            format!("an array of shape {dims:?} is channels-last; the model reads N x {c} x {h} x {w}: np.transpose(a, (0, 3, 1, 2))"),
        )),
        _ => Err(bad(
            path,
            format!("an array of shape {dims:?}; the model reads N x {c} x {h} x {w}{}", if c == 1 { format!(" or N x {h} x {w}") } else { String::new() }),
        )),
    }
}

/// A float pixel, which must be pixel / 255 in [0, 1].
fn unit_value(path: &Path, v: f64) -> Result<f32, ImagesError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(bad(
            path,
            format!("a float array must hold pixel / 255 in [0, 1] (as torchvision's ToTensor); it holds {v}: divide by 255, or save it as uint8"),
        ));
    }
    Ok(v as f32)
}

/// The values of an array in memory (numpy's, from the Python package).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum ArrayValues<'a> {
    /// 8-bit pixels (0..255).
    U8(&'a [u8]),
    /// Pixel / 255 in [0, 1].
    F32(&'a [f32]),
    /// Pixel / 255 in [0, 1].
    F64(&'a [f64]),
}

/// Images from an array in memory of `dims` (row-major) for a model whose input is `shape`,
/// checked as a `.npy` file of them is (layout, range); named `{name}[i]`.
pub fn from_array(
    name: &str,
    dims: &[usize],
    values: ArrayValues<'_>,
    shape: [usize; 3],
) -> Result<Images, ImagesError> {
    let path = Path::new(name);
    let n = batch_len(path, dims, shape)?;
    let len = match values {
        ArrayValues::U8(v) => v.len(),
        ArrayValues::F32(v) => v.len(),
        ArrayValues::F64(v) => v.len(),
    };
    if len != dims.iter().product::<usize>() {
        return Err(bad(
            path,
            format!("{len} values for an array of shape {dims:?}"),
        ));
    }
    if n == 0 {
        return Err(bad(path, "holds no images"));
    }
    let values = match values {
        ArrayValues::U8(v) => Values::Pixels(v.to_vec()),
        ArrayValues::F32(v) => Values::Unit(
            v.iter()
                .map(|&x| unit_value(path, f64::from(x)))
                .collect::<Result<_, _>>()?,
        ),
        ArrayValues::F64(v) => Values::Unit(
            v.iter()
                .map(|&x| unit_value(path, x))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(indexed(path, shape, values, n))
}

fn load_npy(path: &Path, shape: [usize; 3]) -> Result<Images, ImagesError> {
    let bytes = read_limited(path)?;
    let a = npy::parse(path, &bytes, MAX_INPUT_VALUES)?;
    let (dims, dtype) = (a.shape.clone(), a.dtype);
    let float = match (dtype.kind, dtype.width) {
        ('u', 1) => false,
        ('f', 4 | 8) => true,
        _ => {
            return Err(bad(
                path,
                format!(
                    "dtype {}: images must be uint8 (0..255) or float32 / float64 (0..1)",
                    dtype.name()
                ),
            ))
        }
    };
    let n = batch_len(path, &dims, shape)?;
    // Converted value by value into what is kept (no widened copy of the whole array).
    let values = if float {
        let mut unit = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            unit.push(unit_value(path, a.get(i))?);
        }
        Values::Unit(unit)
    } else {
        Values::Pixels((0..a.len()).map(|i| a.get(i) as u8).collect())
    };
    drop(bytes);
    Ok(indexed(path, shape, values, n))
}

/// A file name as text, losslessly and unambiguously: bytes that are not UTF-8 are written
/// `\xNN` and a backslash `\\` (a lossy conversion would give two names the same
/// replacement characters, and an unescaped backslash could spell an escape).
fn file_name(path: &Path) -> String {
    let Some(name) = path.file_name() else {
        return String::new();
    };
    let mut out = String::new();
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The grey levels of `img` as PIL's `convert("L")` and torchvision's `Grayscale` compute them
/// (ITU-R 601-2 luma, `(19595 R + 38470 G + 7471 B + 2^15) >> 16`; alpha dropped), so that a
/// colour image gives a one-channel model what it was trained on.
fn grey(img: &image::DynamicImage) -> Vec<u8> {
    match img {
        image::DynamicImage::ImageLuma8(g) => g.as_raw().clone(),
        image::DynamicImage::ImageLumaA8(g) => g.pixels().map(|p| p.0[0]).collect(),
        _ => img
            .to_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8
            })
            .collect(),
    }
}

/// `n` images from one file, named `file[i]`.
fn indexed(path: &Path, shape: [usize; 3], values: Values, n: usize) -> Images {
    let name = file_name(path);
    Images {
        shape,
        values,
        names: (0..n).map(|i| format!("{name}[{i}]")).collect(),
        labels: None,
        ignored: Vec::new(),
    }
}

fn load_idx(path: &Path, shape: [usize; 3]) -> Result<Images, ImagesError> {
    let bytes = read_limited(path)?;
    let (dims, data) = read_idx(path, bytes, MAX_INPUT_BYTES).map_err(|e| {
        bad(
            path,
            format!("{e} (an input file is a .npy, an IDX file or a directory of images)"),
        )
    })?;
    let [c, h, w] = shape;
    let n = match dims.as_slice() {
        [n, hh, ww] if c == 1 && [*hh, *ww] == [h, w] => *n,
        [n, cc, hh, ww] if [*cc, *hh, *ww] == shape => *n,
        _ => {
            return Err(bad(
                path,
                format!("IDX images of shape {dims:?}; the model reads N x {c} x {h} x {w}"),
            ))
        }
    };
    Ok(indexed(path, shape, Values::Pixels(data), n))
}

fn load_dir(dir: &Path, shape: [usize; 3], resize: Resize) -> Result<Images, ImagesError> {
    let io = |error| ImagesError::Io {
        path: dir.to_path_buf(),
        error,
    };
    // PNG and JPEG files are read; an image of another format is refused (skipping it would
    // silently score fewer images than the directory holds); anything else is listed as
    // ignored in the report.
    let mut files: Vec<PathBuf> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" | "jpg" | "jpeg" => files.push(p),
            "jfif" | "jpe" | "bmp" | "gif" | "webp" | "tif" | "tiff" | "ppm" | "pgm" | "pbm"
            | "heic" | "avif" | "ico" => {
                return Err(bad(
                    &p,
                    format!(
                        "a .{ext} image: cryptodl reads PNG and JPEG (.png, .jpg, .jpeg); convert it, or move it out of the directory"
                    ),
                ))
            }
            _ => ignored.push(file_name(&p)),
        }
    }
    files.sort();
    ignored.sort();
    if files.is_empty() {
        return Err(bad(dir, "no .png, .jpg or .jpeg images in this directory"));
    }
    let [c, h, w] = shape;
    if c != 1 && c != 3 {
        return Err(bad(
            dir,
            format!("the model reads {c} channels; images have 1 (grey) or 3 (RGB)"),
        ));
    }
    let mut values = Vec::with_capacity(files.len() * c * h * w);
    let mut names = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = read_limited(f)?;
        let img = decode::decode(f, &bytes)?;
        let img = if (img.width() as usize, img.height() as usize) != (w, h) {
            match resize {
                Resize::Refuse => {
                    return Err(bad(
                        f,
                        format!(
                        "a {} x {} image; the model reads {w} x {h} (pass --resize to scale it)",
                        img.width(),
                        img.height()
                    ),
                    ))
                }
                Resize::Scale => {
                    img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
                }
            }
        } else {
            img
        };
        if c == 1 {
            values.extend(grey(&img));
        } else {
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            // HWC -> CHW
            for ch in 0..3 {
                values.extend((0..h * w).map(|i| raw[i * 3 + ch]));
            }
        }
        names.push(file_name(f));
    }
    Ok(Images {
        shape,
        values: Values::Pixels(values),
        names,
        labels: None,
        ignored,
    })
}
