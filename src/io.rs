//! Atomic file output for the whole crate: every file cryptodl writes (keys, ciphertexts, models,
//! manifests, plots) appears complete or not at all.

use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Prefix of the temporary files [`write_atomic`] creates next to their destination.
pub const TEMP_PREFIX: &str = ".cryptodl-";

/// Writes `path` atomically: `body` writes a temporary file in the same directory, which is
/// synced to disk and renamed over `path`; the directory is synced too (on Unix), so the new
/// name survives a crash. On any error the temporary file is removed and `path` is untouched.
///
/// `body` writes through a buffer, except with `secret`, where it writes straight to the file
/// (no unzeroized buffer holds the bytes) and the file keeps mode 0600; other files get 0644.
pub fn write_atomic(
    path: &Path,
    secret: bool,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    if secret {
        body(tmp.as_file_mut())?;
    } else {
        let mut w = BufWriter::new(tmp.as_file_mut());
        body(&mut w)?;
        w.flush()?;
    }
    #[cfg(unix)]
    if !secret {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; non-secret files are meant to be shared.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: some file systems refuse to sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] of a byte string (not secret).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, false, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_bytes_atomic(&path, b"old").unwrap();
        let e = write_atomic(&path, false, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        write_bytes_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
        }
    }
}
