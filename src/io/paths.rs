//! Where a command may write, and where a path read from inside a file may lead: an output never
//! replaces a file the command reads, a key file or a job file ([`ReadSet::check_output`]); a
//! path named inside a file stays inside its directory once every link is resolved
//! ([`confined`]).

use std::fs::Metadata;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why an output path was refused. Nothing is written when it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output is (or leads to) a file the command reads.
    #[error(
        "{flag} {} is {}, which this command reads ({role}); an output never replaces an \
         input: choose another path (nothing was written)",
        .out.display(),
        shown_input(.out, .input)
    )]
    IsInput {
        /// The output's option (`--out`).
        flag: String,
        /// The output path as given.
        out: PathBuf,
        /// The input it is, as the command named it.
        input: PathBuf,
        /// What the input is to the command (`--keys`, `the secret key`).
        role: String,
    },
    /// The output is (or leads to) a key, ciphertext or job file of cryptodl.
    #[error(
        "{flag} {} holds {what}; cryptodl never replaces a key, an encrypted batch, logits or a \
         job's record with another output: choose another path (nothing was written)",
        .out.display()
    )]
    Protected {
        /// The output's option.
        flag: String,
        /// The output path as given.
        out: PathBuf,
        /// What the file holds (`a secret key`).
        what: &'static str,
    },
    /// The output is a directory, a FIFO or a device.
    #[error("{flag} {} is {what}, not a file: give a file name", .out.display())]
    NotAFile {
        /// The output's option.
        flag: String,
        /// The output path as given.
        out: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The output could not be examined.
    #[error("{flag} {}: {error}", .out.display())]
    Io {
        /// The output's option.
        flag: String,
        /// The output path as given.
        out: PathBuf,
        /// The cause.
        error: io::Error,
    },
}

fn shown_input(out: &Path, input: &Path) -> String {
    if out == input {
        "that very file".to_string()
    } else {
        format!("{} under another name", input.display())
    }
}

/// The identity of a file: device and inode on Unix (hard links and every spelling of a path
/// agree), the canonical path elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FileId {
    #[cfg(unix)]
    fn of(_path: &Path, meta: &Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId((meta.dev(), meta.ino())))
    }

    #[cfg(not(unix))]
    fn of(path: &Path, _meta: &Metadata) -> Option<FileId> {
        std::fs::canonicalize(path).ok().map(FileId)
    }
}

#[derive(Clone, Debug)]
struct ReadFile {
    path: PathBuf,
    role: String,
    id: FileId,
}

/// The files a command reads, so that none of its outputs replaces one
/// ([`ReadSet::check_output`]). Paths that do not exist are not recorded (nothing to lose).
#[derive(Clone, Debug, Default)]
pub struct ReadSet {
    files: Vec<ReadFile>,
}

impl ReadSet {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `path` (following links), read as `role` (`--model`, `the public key`), if it
    /// exists.
    pub fn file(&mut self, path: impl AsRef<Path>, role: &str) -> &mut Self {
        let path = path.as_ref();
        if let Ok(meta) = std::fs::metadata(path) {
            if let Some(id) = FileId::of(path, &meta) {
                self.files.push(ReadFile {
                    path: path.to_path_buf(),
                    role: role.to_string(),
                    id,
                });
            }
        }
        self
    }

    /// Records every file directly in `dir` (a dataset's directory, a directory of images), as
    /// `role`; nothing if `dir` is not a directory.
    pub fn dir_files(&mut self, dir: impl AsRef<Path>, role: &str) -> &mut Self {
        let dir = dir.as_ref();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                    self.file(&p, role);
                }
            }
        }
        self
    }

    /// Every file recorded, with its role.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.files
            .iter()
            .map(|f| (f.path.as_path(), f.role.as_str()))
    }

    /// The recorded file `path` is, if any (by identity, not spelling).
    fn find(&self, path: &Path, meta: &Metadata) -> Option<&ReadFile> {
        let id = FileId::of(path, meta)?;
        self.files.iter().find(|f| f.id == id)
    }

    /// Checks that a file may be written at `out` (named by the option `flag`): it is not a
    /// file of this set (under any name: a hard link, another spelling, a symbolic link to
    /// it), not a directory, FIFO or device, and holds no artifact of cryptodl
    /// ([`Artifact`]: a key, ciphertexts, a job's file, a model). A path that does not exist
    /// (or a dangling link) is free. Call it before any work, so that a refusal leaves nothing
    /// written.
    pub fn check_output(&self, out: &Path, flag: &str) -> Result<(), OutputError> {
        self.check(out, flag, None)
    }

    /// [`Self::check_output`] for a command that writes a model (`import`, `train`): an
    /// existing model that is not an input may be replaced by the new one.
    pub fn check_model_output(&self, out: &Path, flag: &str) -> Result<(), OutputError> {
        self.check(out, flag, Some(Artifact::Model))
    }

    fn check(&self, out: &Path, flag: &str, replaces: Option<Artifact>) -> Result<(), OutputError> {
        let io = |error| OutputError::Io {
            flag: flag.to_string(),
            out: out.to_path_buf(),
            error,
        };
        match std::fs::symlink_metadata(out) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        // What the path leads to (an atomic write replaces a link itself, but a link to an
        // input is refused all the same: the user meant the file).
        let target = match std::fs::metadata(out) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None, // a dangling link
            Err(e) => return Err(io(e)),
        };
        if let Some(f) = target.as_ref().and_then(|m| self.find(out, m)) {
            return Err(OutputError::IsInput {
                flag: flag.to_string(),
                out: out.to_path_buf(),
                input: f.path.clone(),
                role: f.role.clone(),
            });
        }
        let Some(meta) = target else {
            return Ok(());
        };
        let kind = meta.file_type();
        if !kind.is_file() {
            return Err(OutputError::NotAFile {
                flag: flag.to_string(),
                out: out.to_path_buf(),
                what: if kind.is_dir() {
                    "a directory"
                } else {
                    "a FIFO, a socket or a device"
                },
            });
        }
        match artifact(out).map_err(io)? {
            Some(a) if Some(a) != replaces => Err(OutputError::Protected {
                flag: flag.to_string(),
                out: out.to_path_buf(),
                what: a.description(),
            }),
            _ => Ok(()),
        }
    }
}

/// A file of cryptodl's that only its own kind of output may replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Artifact {
    /// A secret key.
    SecretKey,
    /// A public key.
    PublicKey,
    /// Evaluation keys.
    EvaluationKeys,
    /// Ciphertexts: an encrypted batch or logits.
    Ciphertexts,
    /// A job's manifest or the client's record of a job.
    JobFile,
    /// A cryptodl model (safetensors with cryptodl's metadata).
    Model,
}

impl Artifact {
    /// What it is, for messages (`a secret key`).
    pub fn description(self) -> &'static str {
        match self {
            Artifact::SecretKey => "a secret key",
            Artifact::PublicKey => "a public key",
            Artifact::EvaluationKeys => "evaluation keys",
            Artifact::Ciphertexts => "ciphertexts (an encrypted batch or logits)",
            Artifact::JobFile => "a job's manifest or the client's record of a job",
            Artifact::Model => "a cryptodl model",
        }
    }
}

/// Which cryptodl artifact `path` holds, by content: the `CRYPTODL` header of keys and
/// ciphertexts (kind at bytes 10..12), JSON naming a job id, or a safetensors header carrying
/// the `cryptodl.model` metadata; `None` for anything else.
pub fn artifact(path: &Path) -> io::Result<Option<Artifact>> {
    let Some(f) = super::open_regular(path)? else {
        return Ok(None);
    };
    let mut head = Vec::with_capacity(1 << 16);
    f.take(1 << 16).read_to_end(&mut head)?;
    if head.starts_with(b"CRYPTODL") && head.len() >= 12 {
        return Ok(Some(match u16::from_le_bytes([head[10], head[11]]) {
            1 => Artifact::SecretKey,
            2 => Artifact::PublicKey,
            3 => Artifact::EvaluationKeys,
            _ => Artifact::Ciphertexts,
        }));
    }
    if names_a_job(&head[..head.len().min(4096)]) {
        return Ok(Some(Artifact::JobFile));
    }
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    if head.len() > 8 && head[8] == b'{' {
        let body = &head[8..];
        if body
            .windows(b"\"cryptodl.model\"".len())
            .any(|w| w == b"\"cryptodl.model\"")
        {
            return Ok(Some(Artifact::Model));
        }
    }
    Ok(None)
}

/// `path` with its longest existing prefix resolved (symbolic links, `.` and `..`) and the rest
/// appended: where a file or directory not made yet will be.
pub fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The first file under `dir` (at any depth, symbolic links followed, each directory visited
/// once) that holds `kind`, looking at no more than `max_entries` entries; `None` if there is
/// none, or if `dir` does not exist. Links are followed because copying the directory
/// (`cp -rL`, `scp -r`, `tar -h`) follows them too.
pub fn find_artifact(
    dir: &Path,
    kind: Artifact,
    max_entries: usize,
) -> io::Result<Option<PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = std::collections::HashSet::new();
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        if let Ok(real) = std::fs::canonicalize(&d) {
            if !visited.insert(real) {
                continue;
            }
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound && d == dir => return Ok(None),
            Err(e) if d == dir => return Err(e),
            // Below the top, what cannot be read is passed over (it holds nothing this
            // process could hand on either).
            Err(_) => continue,
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return Ok(None);
            }
            let p = e.path();
            // What the entry is, through a link.
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && holds(&p, kind) {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

/// Whether `path` holds `kind`: keys and ciphertexts are told by their first 12 bytes (so that
/// scanning a large directory reads little), other kinds by [`artifact`].
fn holds(path: &Path, kind: Artifact) -> bool {
    let header_kind = match kind {
        Artifact::SecretKey => 1,
        Artifact::PublicKey => 2,
        Artifact::EvaluationKeys => 3,
        Artifact::Ciphertexts => 0,
        _ => return artifact(path).ok().flatten() == Some(kind),
    };
    let Ok(Some(f)) = super::open_regular(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(12);
    if f.take(12).read_to_end(&mut head).is_err()
        || head.len() < 12
        || !head.starts_with(b"CRYPTODL")
    {
        return false;
    }
    let code = u16::from_le_bytes([head[10], head[11]]);
    match header_kind {
        0 => code > 3,
        k => code == k,
    }
}

/// Whether `head` is the start of a JSON object with a `"job": "<32 hex digits>"` member (a
/// manifest, a job record).
fn names_a_job(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    if !text.trim_start().starts_with('{') {
        return false;
    }
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("\"job\"") {
        rest = &rest[at + 5..];
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = value.trim_start().strip_prefix('"') else {
            continue;
        };
        if value.len() > 32
            && value.as_bytes()[32] == b'"'
            && value[..32].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return true;
        }
    }
    false
}

/// Why a path named inside a file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// The path is absolute or climbs out (`..`).
    #[error("{name:?} must be a relative path inside {} (no `..`, not absolute)", .dir.display())]
    NotRelative {
        /// The path as written in the file.
        name: String,
        /// The directory it must stay in.
        dir: PathBuf,
    },
    /// Once links are resolved, the path leads out of the directory.
    #[error(
        "{name:?} leads to {}, outside {} once its symbolic links are resolved; keep the file \
         itself (not a link to it) beside the one that names it",
        .resolved.display(),
        .dir.display()
    )]
    Escapes {
        /// The path as written in the file.
        name: String,
        /// The directory it must stay in.
        dir: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
    },
    /// The path or the directory could not be resolved (missing, unreadable).
    #[error("{}: {error}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
}

/// Resolves `name` (a path written inside a file, such as ONNX external data) against `dir`
/// and checks that, with every symbolic link of `dir` and of `name` resolved, it lies inside
/// `dir` (itself resolved): a link in the directory that leads elsewhere is refused like an
/// absolute path. Returns the resolved path, which the caller opens.
pub fn confined(dir: &Path, name: &str) -> Result<PathBuf, ConfineError> {
    use std::path::Component;
    let rel = Path::new(name);
    if name.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ConfineError::NotRelative {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let root = std::fs::canonicalize(dir).map_err(|error| ConfineError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let joined = dir.join(rel);
    let resolved = std::fs::canonicalize(&joined).map_err(|error| ConfineError::Io {
        path: joined.clone(),
        error,
    })?;
    if resolved == root || !resolved.starts_with(&root) {
        // `.` (the directory itself) or a link leading out.
        return Err(ConfineError::Escapes {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            resolved,
        });
    }
    Ok(resolved)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A directory `d` with `a/`, `a/b/`, files `a/f` and `a/b/g`, a link `l -> a` and a hard
    /// link `h` of `a/f`.
    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/f"), b"input").unwrap();
        std::fs::write(d.path().join("a/b/g"), b"other").unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("l")).unwrap();
        std::fs::hard_link(d.path().join("a/f"), d.path().join("h")).unwrap();
        d
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any spelling of the input `a/f` (detours through `.`, `..`, the link `l`, the hard
        /// link `h`) is refused as an output; any spelling of `a/b/g`, which is not read, is
        /// free.
        #[test]
        fn every_spelling_of_an_input_is_refused(steps in proptest::collection::vec(0u8..4, 0..6), via in 0u8..3, target in any::<bool>()) {
            let d = tree();
            let mut reads = ReadSet::new();
            reads.file(d.path().join("a/f"), "--in");
            let mut p = d.path().join(match via { 0 => "a", 1 => "l", _ => "a/b/.." });
            for s in steps {
                p = match s {
                    0 => p.join("."),
                    1 => p.join("b").join(".."),
                    2 => p.join("..").join("a"),
                    _ => p,
                };
            }
            let out = if target { p.join("f") } else { p.join("b/g") };
            let r = reads.check_output(&out, "--out");
            if target {
                prop_assert!(matches!(r, Err(OutputError::IsInput { .. })), "{}: {:?}", out.display(), r);
            } else {
                prop_assert!(r.is_ok(), "{}: {:?}", out.display(), r);
            }
            let hard = reads.check_output(&d.path().join("h"), "--out");
            prop_assert!(matches!(hard, Err(OutputError::IsInput { .. })), "the hard link: {:?}", hard);
        }
    }

    #[test]
    fn key_and_job_files_are_protected_and_directories_are_not_files() {
        let d = tempfile::tempdir().unwrap();
        let reads = ReadSet::new();
        let key = d.path().join("k");
        let mut b = b"CRYPTODL\x02\x00\x01\x00".to_vec();
        b.extend([0u8; 40]);
        std::fs::write(&key, &b).unwrap();
        assert!(matches!(
            reads.check_output(&key, "--out"),
            Err(OutputError::Protected {
                what: "a secret key",
                ..
            })
        ));
        // A model may be replaced by a model only.
        let model = d.path().join("m.safetensors");
        let mut st = 30u64.to_le_bytes().to_vec();
        st.extend_from_slice(br#"{"__metadata__":{"cryptodl.model":"{}"}}"#);
        std::fs::write(&model, &st).unwrap();
        assert!(matches!(
            reads.check_output(&model, "--out"),
            Err(OutputError::Protected {
                what: "a cryptodl model",
                ..
            })
        ));
        assert!(reads.check_model_output(&model, "--out").is_ok());
        let job = d.path().join("manifest.json");
        std::fs::write(
            &job,
            format!("{{\n  \"format\": 3,\n  \"job\": \"{}\"}}", "ab".repeat(16)),
        )
        .unwrap();
        assert!(matches!(
            reads.check_output(&job, "--out"),
            Err(OutputError::Protected { .. })
        ));
        std::fs::write(&job, "{\"job\": \"not hex\"}").unwrap();
        assert!(reads.check_output(&job, "--out").is_ok());
        assert!(matches!(
            reads.check_output(d.path(), "--out"),
            Err(OutputError::NotAFile {
                what: "a directory",
                ..
            })
        ));
        // A dangling link is free: the write replaces the link.
        std::os::unix::fs::symlink(d.path().join("nowhere"), d.path().join("dangling")).unwrap();
        assert!(reads
            .check_output(&d.path().join("dangling"), "--out")
            .is_ok());
    }

    #[test]
    fn confined_paths_stay_inside_once_links_are_resolved() {
        let d = tree();
        let a = d.path().join("a");
        assert!(confined(&a, "f").is_ok());
        assert!(confined(&a, "b/g").is_ok());
        assert!(confined(&a, "./f").is_ok());
        assert!(
            confined(&a, ".").is_err(),
            "the directory itself is no file in it"
        );
        for bad in ["../h", "/etc/passwd", "", "b/../f"] {
            assert!(
                matches!(confined(&a, bad), Err(ConfineError::NotRelative { .. })),
                "{bad}"
            );
        }
        // A link inside `a` that leads out, and one that stays in.
        std::os::unix::fs::symlink(d.path().join("h"), a.join("out")).unwrap();
        std::os::unix::fs::symlink(a.join("f"), a.join("in")).unwrap();
        assert!(matches!(
            confined(&a, "out"),
            Err(ConfineError::Escapes { .. })
        ));
        assert!(confined(&a, "in").is_ok());
        // The directory itself through a link: resolved on both sides.
        assert!(confined(&d.path().join("l"), "f").is_ok());
        std::os::unix::fs::symlink(d.path(), a.join("up")).unwrap();
        assert!(matches!(
            confined(&a, "up/h"),
            Err(ConfineError::Escapes { .. })
        ));
    }
}
