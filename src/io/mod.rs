//! File input and output for the whole crate: every file cryptodl writes (keys, ciphertexts,
//! models, manifests, plots) appears complete or not at all; temporaries of killed runs are
//! found and removed by name; advisory locks keep concurrent writers of one file apart; the
//! files cryptodl creates inside its directories (locks, logs) are never reached through a
//! symbolic link; and [`paths`] holds the rule of where an output may go.

pub mod paths;

pub use paths::{
    artifact, confined, find_artifact, resolve_existing, Artifact, ConfineError, OutputError,
    ReadSet,
};

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// What marks the temporary files [`write_atomic`] creates next to their destination:
/// `.<file name>.cryptodl-<random>.tmp`.
pub const TEMP_MARK: &str = ".cryptodl-";

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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TEMP_MARK}"))
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

/// Whether `name` is a temporary of [`write_atomic`] for the file `target` (for any file with
/// `None`).
pub fn is_temp_of(name: &str, target: Option<&str>) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    if !name.ends_with(".tmp") {
        return false;
    }
    match target {
        Some(t) => rest
            .strip_prefix(t)
            .is_some_and(|r| r.starts_with(TEMP_MARK)),
        None => rest.contains(TEMP_MARK),
    }
}

/// Removes the temporaries a killed run of [`write_atomic`] left in `dir` for the file `target`
/// (or for every file, with `None`); returns how many. Call it only while no other process can
/// be writing them (holding the target's or the directory's [`FileLock`]).
pub fn remove_stale_temps(dir: &Path, target: Option<&str>) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if is_temp_of(&name.to_string_lossy(), target) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The temporaries of [`write_atomic`] in `dir`, each with the name of the file it was for, in
/// one listing of the directory (for a worker that removes a target's stale temporaries once it
/// holds the target's lock, without listing a large shared directory per file).
pub fn list_temps(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut temps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_of(&name, None) && entry.file_type()?.is_file() {
            if let Some(at) = name.rfind(TEMP_MARK) {
                temps.push((name[1..at].to_string(), entry.path()));
            }
        }
    }
    Ok(temps)
}

/// What to do about a failed write, for error messages: `"; ..."` or empty.
pub fn write_advice(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
            "; the output directory must be writable (a read-only mount or missing permissions)"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; free some space (nothing was left half-written) and run again"
        }
        _ => "",
    }
}

/// An exclusive advisory lock on a file, held until dropped; the operating system releases it
/// if the process dies, so a killed run never leaves a stale lock.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Opens `path` with `options` without following a symbolic link in its last component: a link
/// planted where cryptodl creates a file of its own (a lock, a log) is an error that says so,
/// instead of a file created wherever the link points. On Unix the file is opened non-blocking
/// too (this sets the options' custom flags), so a FIFO never makes the open wait.
pub fn open_no_follow(options: &mut std::fs::OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc_nofollow() | libc_nonblock());
    }
    #[cfg(not(unix))]
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(link_refused(path));
    }
    match options.open(path) {
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc_eloop()) => Err(link_refused(path)),
        other => other,
    }
}

fn link_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; cryptodl never follows links where it creates its own files: remove it",
            path.display()
        ),
    )
}

/// Creates the directory `dir` (and its parents) for cryptodl's own files, refusing a
/// symbolic link in its place (which would carry them out of the directory the user named).
pub fn create_own_dir(dir: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(link_refused(dir));
    }
    std::fs::create_dir_all(dir)
}

/// Takes the lock of `path` (creating the file, never through a symbolic link) if no other
/// process holds it; `Ok(None)` if one does.
pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
    let file = open_no_follow(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
        path,
    )?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file; remove it", path.display()),
        ));
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether another process holds the lock of `path` (`None` if there is no such lock file).
/// Never creates the file; a free lock is taken and released at once.
pub fn lock_is_held(path: &Path) -> io::Result<Option<bool>> {
    let file = match open_no_follow(std::fs::OpenOptions::new().read(true), path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(false)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Some(true)),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Opens `path` for reading if it is a regular file; `Ok(None)` for anything else (a directory,
/// a FIFO, a device). On Unix the file is opened non-blocking, so opening a FIFO never waits for
/// a writer; reads of a regular file are unaffected.
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc_nonblock());
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    Ok(Some(file))
}

#[cfg(all(unix, target_os = "linux"))]
fn libc_nonblock() -> i32 {
    libc::O_NONBLOCK
}

#[cfg(all(unix, not(target_os = "linux")))]
fn libc_nonblock() -> i32 {
    0o4 // O_NONBLOCK on the BSDs and macOS
}

#[cfg(all(unix, target_os = "linux"))]
fn libc_nofollow() -> i32 {
    libc::O_NOFOLLOW
}

#[cfg(all(unix, target_os = "linux"))]
fn libc_eloop() -> i32 {
    libc::ELOOP
}

#[cfg(all(unix, not(target_os = "linux")))]
fn libc_nofollow() -> i32 {
    0x100 // O_NOFOLLOW on the BSDs and macOS
}

#[cfg(all(unix, not(target_os = "linux")))]
fn libc_eloop() -> i32 {
    62 // ELOOP on the BSDs and macOS
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
        // A killed run's temporary is recognised and removed; other files are kept.
        let stale = dir.path().join(format!(".out.bin{TEMP_MARK}abc123.tmp"));
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(dir.path().join(".other.tmp"), b"not ours").unwrap();
        assert!(is_temp_of(".out.bin.cryptodl-x.tmp", Some("out.bin")));
        assert!(!is_temp_of(".out.bin.cryptodl-x.tmp", Some("out.bi")));
        assert_eq!(
            list_temps(dir.path()).unwrap(),
            vec![("out.bin".to_string(), stale.clone())]
        );
        assert_eq!(remove_stale_temps(dir.path(), Some("other")).unwrap(), 0);
        assert_eq!(remove_stale_temps(dir.path(), Some("out.bin")).unwrap(), 1);
        assert!(!stale.exists());
        assert!(dir.path().join(".other.tmp").exists());
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

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = try_lock(&p).unwrap().expect("free");
        assert!(try_lock(&p).unwrap().is_none(), "held by another handle");
        assert_eq!(lock_is_held(&p).unwrap(), Some(true));
        drop(held);
        assert_eq!(lock_is_held(&p).unwrap(), Some(false));
        assert_eq!(lock_is_held(&dir.path().join("none.lock")).unwrap(), None);
        assert!(!dir.path().join("none.lock").exists(), "never created");
        assert!(try_lock(&p).unwrap().is_some());
    }
}

#[cfg(all(test, target_os = "linux"))]
mod open_tests {
    use super::*;

    #[test]
    fn a_fifo_or_a_directory_is_not_opened_for_reading() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_regular(dir.path()).unwrap().is_none());
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_regular(&fifo).unwrap().is_none(), "returns at once");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).unwrap().is_some());
    }
}
