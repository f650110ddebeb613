//! Image datasets: IDX files (MNIST, Fashion-MNIST; raw or .gz) and CIFAR-10 binary batches.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file is not there.
    #[error("missing dataset file {path}: {hint}")]
    Missing {
        /// The file looked for (without / with .gz).
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file is truncated or not in the expected format.
    #[error("malformed dataset file {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Which dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DatasetKind {
    /// Fashion-MNIST (IDX, 28x28x1).
    FashionMnist,
    /// MNIST (IDX, 28x28x1).
    Mnist,
    /// CIFAR-10 binary version (32x32x3).
    Cifar10,
}

impl DatasetKind {
    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// Input shape (channels, height, width).
    pub fn shape(self) -> [usize; 3] {
        match self {
            DatasetKind::Cifar10 => [3, 32, 32],
            _ => [1, 28, 28],
        }
    }

    /// Default directory, if there is one.
    pub fn default_dir(self) -> Option<&'static str> {
        match self {
            DatasetKind::FashionMnist => Some(FASHION_MNIST_DEFAULT_DIR),
            _ => None,
        }
    }

    fn hint(self) -> String {
        match self {
            DatasetKind::FashionMnist => format!(
                "Fashion-MNIST is expected as train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
                 t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]; install it with \
                 `apt-get install dataset-fashion-mnist` (goes to {FASHION_MNIST_DEFAULT_DIR}) or pass \
                 --data-dir DIR"
            ),
            DatasetKind::Mnist => "MNIST is expected as train-images-idx3-ubyte[.gz], \
                 train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] \
                 in --data-dir DIR (download them from the MNIST site on a machine with internet access)"
                .into(),
            DatasetKind::Cifar10 => "CIFAR-10 is expected as the binary version (data_batch_1.bin .. \
                 data_batch_5.bin, test_batch.bin, from cifar-10-binary.tar.gz) in --data-dir DIR or \
                 DIR/cifar-10-batches-bin"
                .into(),
        }
    }

    fn dir(self, dir: Option<&Path>) -> Result<PathBuf, DatasetError> {
        match (dir, self.default_dir()) {
            (Some(d), _) => Ok(d.to_path_buf()),
            (None, Some(d)) => Ok(PathBuf::from(d)),
            (None, None) => Err(DatasetError::Missing {
                path: PathBuf::from("(no --data-dir given)"),
                hint: self.hint(),
            }),
        }
    }

    /// The directory this dataset's files are read from (`dir`, else the default one; for
    /// CIFAR-10 the `cifar-10-batches-bin` inside it when there is one), for the record of what
    /// a command reads; `None` without either.
    pub fn files_dir(self, dir: Option<&Path>) -> Option<PathBuf> {
        let dir = self.dir(dir).ok()?;
        Some(match self {
            DatasetKind::Cifar10 => cifar_dir(&dir),
            _ => dir,
        })
    }

    /// Loads only the test split from `dir` (or the default directory): commands that score
    /// or evaluate never need the training files.
    pub fn load_test(self, dir: Option<&Path>) -> Result<Dataset, DatasetError> {
        let dir = self.dir(dir)?;
        let hint = self.hint();
        match self {
            DatasetKind::Cifar10 => {
                let dir = cifar_dir(&dir);
                let (p, b) = read_maybe_gz(&dir.join("test_batch.bin"), &hint)?;
                let b = gunzip_if(&p, b)?;
                parse_cifar_batch(&p, &b)
            }
            _ => load_idx_pair(
                &dir.join("t10k-images-idx3-ubyte"),
                &dir.join("t10k-labels-idx1-ubyte"),
                &hint,
            ),
        }
    }

    /// Loads the train and test splits from `dir` (or the default directory).
    pub fn load(self, dir: Option<&Path>) -> Result<Splits, DatasetError> {
        let dir = self.dir(dir)?;
        match self {
            DatasetKind::Cifar10 => load_cifar10_dir(&dir, &self.hint()),
            _ => {
                let hint = self.hint();
                let train = load_idx_pair(
                    &dir.join("train-images-idx3-ubyte"),
                    &dir.join("train-labels-idx1-ubyte"),
                    &hint,
                )?;
                let test = load_idx_pair(
                    &dir.join("t10k-images-idx3-ubyte"),
                    &dir.join("t10k-labels-idx1-ubyte"),
                    &hint,
                )?;
                Ok(Splits { train, test })
            }
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            _ => Err(format!(
                "unknown dataset `{s}` (expected fashion-mnist, mnist or cifar10)"
            )),
        }
    }
}

/// A set of images (u8 pixels, channel-major CHW per image) with labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All pixels, image after image, each `c*h*w` bytes in CHW order.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// (channels, height, width).
    pub shape: [usize; 3],
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// The first `n` images (or all).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            pixels: self.pixels[..n * self.image_size()].to_vec(),
            labels: self.labels[..n].to_vec(),
            shape: self.shape,
        }
    }
}

/// Train and test splits.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}

/// Reads `path`, or `path.gz` if `path` does not exist (still compressed: gzip is detected by
/// its magic bytes where it is decoded, [`gunzip_if`] and [`read_idx`]).
fn read_maybe_gz(path: &Path, hint: &str) -> Result<(PathBuf, Vec<u8>), DatasetError> {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let chosen = if path.exists() {
        path.to_path_buf()
    } else if gz.exists() {
        gz
    } else {
        return Err(DatasetError::Missing {
            path: path.to_path_buf(),
            hint: hint.to_string(),
        });
    };
    let io = |error| DatasetError::Io {
        path: chosen.clone(),
        error,
    };
    // A regular file only (a FIFO would block the read forever), of a bounded size.
    let f = crate::io::open_regular(&chosen)
        .map_err(io)?
        .ok_or_else(|| DatasetError::Malformed {
            path: chosen.clone(),
            reason: "not a regular file".into(),
        })?;
    let mut raw = Vec::new();
    f.take(MAX_GUNZIP_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_GUNZIP_BYTES {
        return Err(DatasetError::Malformed {
            path: chosen.clone(),
            reason: format!("more than {MAX_GUNZIP_BYTES} bytes"),
        });
    }
    Ok((chosen, raw))
}

/// The largest decompressed gzip data read, and the most data an IDX header may declare
/// (2 GiB, checked before decompressing it): a bomb is an error, not an abort.
pub const MAX_GUNZIP_BYTES: u64 = 2 << 30;

/// `raw` decompressed if it is gzip data (magic `1f 8b`), else as is.
pub fn gunzip_if(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DatasetError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(MAX_GUNZIP_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!("bad gzip data: {e}"),
        })?;
    if out.len() as u64 > MAX_GUNZIP_BYTES {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!("decompresses to more than {MAX_GUNZIP_BYTES} bytes"),
        });
    }
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The dimensions of an IDX header (`header` holds its first 4 bytes, then `4 n` for n
/// dimensions), checked: the unsigned-byte magic, 1 to 4 dimensions.
fn idx_magic(path: &Path, head: &[u8]) -> Result<usize, DatasetError> {
    let bad = |reason: String| DatasetError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if head.len() < 4 {
        return Err(bad(format!(
            "{} bytes, too short for an IDX header",
            head.len()
        )));
    }
    if head[0] != 0 || head[1] != 0 || head[2] != 0x08 {
        return Err(bad(format!(
            "magic {:02x}{:02x}{:02x}{:02x} is not an unsigned-byte IDX file (expected 0000 08 0n)",
            head[0], head[1], head[2], head[3]
        )));
    }
    let nd = head[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(bad(format!("{nd} dimensions (an IDX file has 1 to 4)")));
    }
    Ok(nd)
}

/// The dimensions in `dims` (big-endian u32s) and the bytes of data they declare, at most
/// `max_bytes`.
fn idx_dims(path: &Path, dims: &[u8], max_bytes: u64) -> Result<(Vec<usize>, usize), DatasetError> {
    let dims: Vec<usize> = (0..dims.len() / 4)
        .map(|i| be_u32(dims, 4 * i) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&n| n <= max_bytes)
        .ok_or_else(|| DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "its header declares {dims:?}, over the limit of {max_bytes} bytes of data; split it"
            ),
        })?;
    Ok((dims, n as usize))
}

/// Parses an IDX file of unsigned bytes; returns (dims, data). The data must be exactly what
/// the header declares, at most `max_bytes`; the header is removed in place (no copy).
pub fn parse_idx(
    path: &Path,
    mut bytes: Vec<u8>,
    max_bytes: u64,
) -> Result<(Vec<usize>, Vec<u8>), DatasetError> {
    let nd = idx_magic(path, &bytes)?;
    if bytes.len() < 4 + 4 * nd {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: "the header is truncated".into(),
        });
    }
    let (dims, n) = idx_dims(path, &bytes[4..4 + 4 * nd], max_bytes)?;
    let body = bytes.len() - 4 - 4 * nd;
    if body != n {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "header says {dims:?} = {n} bytes of data but the file has {body} (truncated or corrupt?)"
            ),
        });
    }
    bytes.drain(..4 + 4 * nd);
    Ok((dims, bytes))
}

/// Reads an IDX file from its bytes `raw`, gzip-compressed or not: for gzip, the header is
/// decompressed first and the data it declares checked against `max_bytes` before the rest is
/// decompressed (a small bomb declaring gigabytes is refused with its size), then exactly that
/// data, then the end of the stream with its checksum.
pub fn read_idx(
    path: &Path,
    raw: Vec<u8>,
    max_bytes: u64,
) -> Result<(Vec<usize>, Vec<u8>), DatasetError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse_idx(path, raw, max_bytes);
    }
    let gz = |e: std::io::Error| DatasetError::Malformed {
        path: path.to_path_buf(),
        reason: format!("bad or truncated gzip data: {e}"),
    };
    let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]);
    let mut head = [0u8; 4];
    dec.read_exact(&mut head).map_err(gz)?;
    let nd = idx_magic(path, &head)?;
    let mut dims = vec![0u8; 4 * nd];
    dec.read_exact(&mut dims).map_err(gz)?;
    let (dims, n) = idx_dims(path, &dims, max_bytes)?;
    let mut body = Vec::with_capacity(n);
    (&mut dec)
        .take(n as u64)
        .read_to_end(&mut body)
        .map_err(gz)?;
    let mut more = [0u8; 1];
    let extra = dec.read(&mut more).map_err(gz)?;
    if body.len() != n || extra != 0 {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "header says {dims:?} = {n} bytes of data but the file has {} (truncated or corrupt?)",
                if extra != 0 {
                    "more".to_string()
                } else {
                    body.len().to_string()
                }
            ),
        });
    }
    Ok((dims, body))
}

/// Loads an IDX image file (n x h x w) and its label file (n).
pub fn load_idx_pair(images: &Path, labels: &Path, hint: &str) -> Result<Dataset, DatasetError> {
    let (ip, ib) = read_maybe_gz(images, hint)?;
    let (lp, lb) = read_maybe_gz(labels, hint)?;
    let (idims, pixels) = read_idx(&ip, ib, MAX_GUNZIP_BYTES)?;
    let (ldims, labels) = read_idx(&lp, lb, MAX_GUNZIP_BYTES)?;
    if idims.len() != 3 {
        return Err(DatasetError::Malformed {
            path: ip,
            reason: format!("expected 3 dimensions (n, rows, cols), got {idims:?}"),
        });
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(DatasetError::Malformed {
            path: lp,
            reason: format!("labels {ldims:?} do not match {} images", idims[0]),
        });
    }
    if let Some(&l) = labels.iter().find(|&&l| l > 9) {
        return Err(DatasetError::Malformed {
            path: lp,
            reason: format!("label {l} is not in 0..=9"),
        });
    }
    Ok(Dataset {
        pixels,
        labels,
        shape: [1, idims[1], idims[2]],
    })
}

/// Parses a CIFAR-10 binary batch (records of 1 label byte + 3072 CHW pixels).
pub fn parse_cifar_batch(path: &Path, bytes: &[u8]) -> Result<Dataset, DatasetError> {
    const REC: usize = 1 + 3072;
    if bytes.is_empty() || !bytes.len().is_multiple_of(REC) {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of 3073-byte CIFAR-10 records (truncated?)",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / REC;
    let mut pixels = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for r in bytes.chunks_exact(REC) {
        if r[0] > 9 {
            return Err(DatasetError::Malformed {
                path: path.to_path_buf(),
                reason: format!("label {} is not in 0..=9", r[0]),
            });
        }
        labels.push(r[0]);
        pixels.extend_from_slice(&r[1..]);
    }
    Ok(Dataset {
        pixels,
        labels,
        shape: [3, 32, 32],
    })
}

/// `dir/cifar-10-batches-bin` if it exists (the archive's layout), else `dir`.
fn cifar_dir(dir: &Path) -> PathBuf {
    if dir.join("cifar-10-batches-bin").is_dir() {
        dir.join("cifar-10-batches-bin")
    } else {
        dir.to_path_buf()
    }
}

fn load_cifar10_dir(dir: &Path, hint: &str) -> Result<Splits, DatasetError> {
    let dir = cifar_dir(dir);
    let mut train = Dataset {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape: [3, 32, 32],
    };
    for i in 1..=5 {
        let (p, b) = read_maybe_gz(&dir.join(format!("data_batch_{i}.bin")), hint)?;
        let b = gunzip_if(&p, b)?;
        let d = parse_cifar_batch(&p, &b)?;
        train.pixels.extend(d.pixels);
        train.labels.extend(d.labels);
    }
    let (p, b) = read_maybe_gz(&dir.join("test_batch.bin"), hint)?;
    let b = gunzip_if(&p, b)?;
    let test = parse_cifar_batch(&p, &b)?;
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn write_mnist(dir: &Path, compress: bool, n_train: u32) {
        let files = [
            (
                "train-images-idx3-ubyte",
                idx(&[n_train, 28, 28], &vec![7u8; n_train as usize * 784]),
            ),
            (
                "train-labels-idx1-ubyte",
                idx(
                    &[n_train],
                    &(0..n_train).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
                ),
            ),
            ("t10k-images-idx3-ubyte", idx(&[2, 28, 28], &[3u8; 2 * 784])),
            ("t10k-labels-idx1-ubyte", idx(&[2], &[4, 5])),
        ];
        for (name, bytes) in files {
            if compress {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn idx_raw_and_gz() {
        for compress in [false, true] {
            let d = tempfile::tempdir().unwrap();
            write_mnist(d.path(), compress, 5);
            let s = DatasetKind::Mnist.load(Some(d.path())).unwrap();
            assert_eq!(s.train.len(), 5);
            assert_eq!(s.train.labels, vec![0, 1, 2, 3, 4]);
            assert_eq!(s.train.shape, [1, 28, 28]);
            assert_eq!(s.test.labels, vec![4, 5]);
            assert!(s.test.image(1).iter().all(|&p| p == 3));
        }
        // The test split alone needs no training files.
        let d = tempfile::tempdir().unwrap();
        write_mnist(d.path(), false, 5);
        std::fs::remove_file(d.path().join("train-images-idx3-ubyte")).unwrap();
        std::fs::remove_file(d.path().join("train-labels-idx1-ubyte")).unwrap();
        assert!(DatasetKind::Mnist.load(Some(d.path())).is_err());
        let t = DatasetKind::Mnist.load_test(Some(d.path())).unwrap();
        assert_eq!(t.labels, vec![4, 5]);
    }

    #[test]
    fn idx_missing_and_truncated() {
        let d = tempfile::tempdir().unwrap();
        let e = DatasetKind::FashionMnist.load(Some(d.path())).unwrap_err();
        assert!(matches!(e, DatasetError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("dataset-fashion-mnist"), "{e}");
        assert!(DatasetKind::Mnist.load(None).is_err());
        write_mnist(d.path(), false, 5);
        let p = d.path().join("train-images-idx3-ubyte");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 10]).unwrap();
        let e = DatasetKind::Mnist.load(Some(d.path())).unwrap_err();
        assert!(matches!(e, DatasetError::Malformed { .. }), "{e}");
        // Truncated gzip.
        std::fs::remove_file(&p).unwrap();
        let g = gz(&b);
        std::fs::write(
            d.path().join("train-images-idx3-ubyte.gz"),
            &g[..g.len() / 2],
        )
        .unwrap();
        let e = DatasetKind::Mnist.load(Some(d.path())).unwrap_err();
        assert!(matches!(e, DatasetError::Malformed { .. }), "{e}");
        // Wrong magic.
        assert!(parse_idx(&p, vec![1, 2, 3, 4, 5], 1 << 20).is_err());
        assert!(parse_idx(&p, vec![0, 0, 8], 1 << 20).is_err());
        // A small gzip file declaring gigabytes is refused from its header.
        let mut bomb = vec![0, 0, 8, 3];
        for d in [100_000u32, 280, 280] {
            bomb.extend_from_slice(&d.to_be_bytes());
        }
        let e = read_idx(&p, gz(&bomb), 1 << 30).unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
    }

    #[test]
    fn cifar_batches() {
        let d = tempfile::tempdir().unwrap();
        let rec = |label: u8, v: u8| {
            let mut r = vec![label];
            r.extend(std::iter::repeat_n(v, 3072));
            r
        };
        for i in 1..=5u8 {
            let b: Vec<u8> = [rec(i, i), rec(9, 0)].concat();
            if i == 3 {
                std::fs::write(d.path().join(format!("data_batch_{i}.bin.gz")), gz(&b)).unwrap();
            } else {
                std::fs::write(d.path().join(format!("data_batch_{i}.bin")), b).unwrap();
            }
        }
        std::fs::write(d.path().join("test_batch.bin"), rec(2, 200)).unwrap();
        let s = DatasetKind::Cifar10.load(Some(d.path())).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.labels[4], 3);
        assert_eq!(s.train.shape, [3, 32, 32]);
        assert!(s.test.image(0).iter().all(|&p| p == 200));
        std::fs::write(d.path().join("test_batch.bin"), &rec(2, 200)[..3000]).unwrap();
        let e = DatasetKind::Cifar10.load(Some(d.path())).unwrap_err();
        assert!(matches!(e, DatasetError::Malformed { .. }), "{e}");
        std::fs::remove_file(d.path().join("data_batch_1.bin")).unwrap();
        let e = DatasetKind::Cifar10.load(Some(d.path())).unwrap_err();
        assert!(matches!(e, DatasetError::Missing { .. }), "{e}");
    }
}
