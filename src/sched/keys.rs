//! The client's key directory: the secret, public and evaluation keys of one `keygen`, written
//! all three or none, never where the server's files go.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::job::MANIFEST;
use crate::circuits::{BootstrapConfig, CircuitError};
use crate::ckks::serialize::{
    load_evaluation_keys, load_public_key, read_header, save_evaluation_keys, save_public_key,
    save_secret_key, FileError,
};
use crate::ckks::{CkksError, Context, KeyGenerator, Parameters, SecretKey, PRESETS};
use crate::io::{remove_stale_temps, try_lock, write_advice, Artifact, FileLock, ReadSet};

/// The secret key (stays with the client; only decryption reads it).
pub const SECRET_KEY: &str = "secret.key";
/// The public key (encryption).
pub const PUBLIC_KEY: &str = "public.key";
/// The evaluation keys: the only key file the server gets.
pub const EVAL_KEYS: &str = "eval.keys";
/// The three, in the order they are written.
pub const KEY_FILES: [&str; 3] = [EVAL_KEYS, PUBLIC_KEY, SECRET_KEY];

/// Why keys could not be made, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The key directory would be (or be inside) a job directory, which the server gets.
    #[error(
        "--out {} is {} {} (its {MANIFEST}): the server gets that directory, and must never get \
         the secret key; keep the keys in a directory of their own (nothing was written)",
        .dir.display(),
        if *.inside { "inside the job directory" } else { "the job directory" },
        .job.display()
    )]
    InJobDir {
        /// The key directory asked for.
        dir: PathBuf,
        /// The job directory.
        job: PathBuf,
        /// Whether `dir` is below `job` (rather than `job` itself).
        inside: bool,
    },
    /// A key file is already there.
    #[error(
        "{} exists; remove the key files or choose another --out (keys are never overwritten)",
        .path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Another run of the command holds the directory's lock.
    #[error(
        "another `cryptodl {command}` is writing to {}; wait for it or choose another directory",
        .dir.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The command holding it.
        command: &'static str,
    },
    /// The operating system refused (creating, locking or cleaning a directory).
    #[error("cannot {what} {}: {error}{}", .path.display(), write_advice(.error))]
    Io {
        /// What was being done (`create`, `lock`, `clean`).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// Writing the keys failed; whatever was written was removed.
    #[error("no keys were written: {0}")]
    NotWritten(FileError),
    /// A key file was made with parameters that are not a preset.
    #[error(
        "{} was made with parameters that are not a preset (fingerprint {fingerprint:016x}); \
         files from a newer or custom build cannot be read here",
        .path.display()
    )]
    NotAPreset {
        /// The file.
        path: PathBuf,
        /// Its parameters' fingerprint.
        fingerprint: u64,
    },
    /// A key file beside the secret key was not made from it.
    #[error("{}: {error}", .path.display())]
    NotFromSecret {
        /// The key file.
        path: PathBuf,
        /// What the check found.
        error: CkksError,
    },
    /// A key file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Key generation failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// The bootstrapping keys could not be made.
    #[error(transparent)]
    Circuit(#[from] CircuitError),
}

/// The parameters a key or ciphertext file was made with (found by the fingerprint of its
/// checksum-verified header); presets below 128-bit security need `insecure`.
pub fn parameters_of(path: &Path, insecure: bool) -> Result<Parameters, KeysError> {
    let header = read_header(path)?;
    for p in PRESETS {
        let params = p.parameters(true)?;
        if params.fingerprint() == header.fingerprint {
            return Ok(p.parameters(insecure)?);
        }
    }
    Err(KeysError::NotAPreset {
        path: path.to_path_buf(),
        fingerprint: header.fingerprint,
    })
}

/// Takes the lock that keeps two runs of `command` out of `dir`.
pub fn lock_dir(dir: &Path, command: &'static str) -> Result<FileLock, KeysError> {
    let path = dir.join(format!(".cryptodl-{command}.lock"));
    try_lock(&path)
        .map_err(|error| KeysError::Io {
            what: "lock",
            path: path.clone(),
            error,
        })?
        .ok_or_else(|| KeysError::Locked {
            dir: dir.to_path_buf(),
            command,
        })
}

/// Checks that keys may be written into `out`: not a job directory or one inside a job
/// directory (the server gets those), which a job's manifest marks.
pub fn check_key_dir(out: &Path) -> Result<(), KeysError> {
    let o = crate::io::resolve_existing(out);
    for dir in o.ancestors() {
        let m = dir.join(MANIFEST);
        if crate::io::artifact(&m).ok().flatten() == Some(Artifact::JobFile) {
            return Err(KeysError::InJobDir {
                dir: out.to_path_buf(),
                job: dir.to_path_buf(),
                inside: dir != o,
            });
        }
    }
    Ok(())
}

/// Adds the key files of the directory `keys` to `reads` (a command's inputs, which none of its
/// outputs may replace).
pub fn key_files(reads: &mut ReadSet, keys: &Path) {
    reads
        .file(keys.join(SECRET_KEY), "the secret key of --keys")
        .file(keys.join(PUBLIC_KEY), "the public key of --keys")
        .file(keys.join(EVAL_KEYS), "the evaluation keys of --keys");
}

/// Checks the key material beside the secret key `sk` in `keys` (the public key, the
/// evaluation keys) against it: files of another `keygen` relabelled with this key set's id
/// are refused before they are used. Returns which were checked (`public`, `evaluation`).
pub fn check_key_material(
    keys: &Path,
    ctx: &Arc<Context>,
    sk: &SecretKey,
) -> Result<Vec<&'static str>, KeysError> {
    let mut checked = Vec::new();
    let not_from = |path: &Path| {
        let path = path.to_path_buf();
        move |error| KeysError::NotFromSecret { path, error }
    };
    let pk_path = keys.join(PUBLIC_KEY);
    if pk_path.exists() {
        let pk = load_public_key(&pk_path, ctx)?;
        pk.check_against(ctx, sk).map_err(not_from(&pk_path))?;
        checked.push("public");
    }
    let ek_path = keys.join(EVAL_KEYS);
    if ek_path.exists() {
        let ek = load_evaluation_keys(&ek_path, ctx)?;
        ek.check_against(ctx, sk).map_err(not_from(&ek_path))?;
        checked.push("evaluation");
    }
    Ok(checked)
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyDir {
    /// The key set's id (a hash of the secret), which every file made with the keys carries.
    pub key_set: String,
    /// Galois keys in the evaluation keys (latency packing's rotations, bootstrapping's).
    pub rotations: usize,
    /// Size of `eval.keys`, the file the server gets.
    pub eval_keys_bytes: u64,
}

/// Makes a key set at `params` into the directory `out` (created if missing; no key file may
/// be there yet, and it may not be or be inside a job directory): the evaluation keys with the
/// Galois keys of `rotations`, and with `bootstrap` those of bootstrapping and its
/// encapsulation keys. All three files or none. `bootstrapping(true)` and `(false)` bracket
/// the making of bootstrapping's keys (minutes at n65536), for a progress display.
pub fn generate(
    out: &Path,
    params: &Parameters,
    rotations: &[i64],
    bootstrap: Option<&BootstrapConfig>,
    mut bootstrapping: impl FnMut(bool),
) -> Result<KeyDir, KeysError> {
    check_key_dir(out)?;
    std::fs::create_dir_all(out).map_err(|error| KeysError::Io {
        what: "create",
        path: out.to_path_buf(),
        error,
    })?;
    let _lock = lock_dir(out, "keygen")?;
    if let Some(f) = KEY_FILES.iter().find(|f| out.join(f).exists()) {
        return Err(KeysError::Exists { path: out.join(f) });
    }
    for f in KEY_FILES {
        remove_stale_temps(out, Some(f)).map_err(|error| KeysError::Io {
            what: "clean",
            path: out.to_path_buf(),
            error,
        })?;
    }
    let ctx = Context::new(params)?;
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let ek = match bootstrap {
        None => kg.evaluation_keys(&sk, rotations, false)?,
        Some(c) => {
            bootstrapping(true);
            let ek = c.keys(&mut kg, &sk, params, rotations);
            bootstrapping(false);
            ek?
        }
    };
    // All three or none: a failure removes what was written.
    let written: Result<(), FileError> = (|| {
        save_evaluation_keys(out.join(EVAL_KEYS), params, &ek)?;
        save_public_key(out.join(PUBLIC_KEY), params, &pk)?;
        save_secret_key(out.join(SECRET_KEY), params, &sk)
    })();
    if let Err(e) = written {
        for f in KEY_FILES {
            let _ = std::fs::remove_file(out.join(f));
        }
        return Err(KeysError::NotWritten(e));
    }
    Ok(KeyDir {
        key_set: sk.key_set().to_string(),
        rotations: ek.galois.len(),
        eval_keys_bytes: std::fs::metadata(out.join(EVAL_KEYS)).map_or(0, |m| m.len()),
    })
}
