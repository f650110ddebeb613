//! Outputs never destroy inputs and nothing escapes a directory (issue 22, classes 1 and 2):
//! every command that writes a file is run with its output pointed at each file it reads,
//! under four spellings (the path itself, a detour through `..`, a symbolic link, a hard link),
//! and at key and job files it does not read; each run must fail naming both paths and leave
//! every byte of every file as it was. Links planted where `score` and `encrypt` create files
//! of their own are refused, and nothing appears where they point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest;

mod common;
use common::job::{cryptodl, job, Job};

/// Every regular file under `dir` (not following links), by path: its inode, length and
/// modification time, and the SHA-256 of its bytes (of its first and last MiB for the large
/// encrypted batches, whose inode and times change with any write anyway).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                use std::io::{Read, Seek, SeekFrom};
                let m = e.metadata().unwrap();
                let mib = 1u64 << 20;
                let mut f = std::fs::File::open(e.path()).unwrap();
                let mut h = sha2::Sha256::new();
                let mut buf = Vec::new();
                if m.len() > 2 * mib {
                    (&mut f).take(mib).read_to_end(&mut buf).unwrap();
                    f.seek(SeekFrom::End(-(mib as i64))).unwrap();
                }
                f.read_to_end(&mut buf).unwrap();
                h.update(&buf);
                let digest = h.finalize();
                out.insert(
                    e.path(),
                    format!(
                        "{} {} {}.{} {}",
                        m.ino(),
                        m.len(),
                        m.mtime(),
                        m.mtime_nsec(),
                        hex::encode(digest)
                    ),
                );
            }
        }
    }
    out
}

/// The four spellings of `file` that name it: as is, through `..`, a symbolic link to it and a
/// hard link to it (the links made in `scratch`).
fn spellings(file: &Path, scratch: &Path, tag: usize) -> Vec<(String, PathBuf)> {
    let parent = file.parent().unwrap();
    let name = file.file_name().unwrap();
    let detour = parent
        .join("..")
        .join(parent.file_name().unwrap())
        .join(".")
        .join(name);
    let sym = scratch.join(format!("sym-{tag}.out"));
    std::os::unix::fs::symlink(file, &sym).unwrap();
    let hard = scratch.join(format!("hard-{tag}.out"));
    std::fs::hard_link(file, &hard).unwrap();
    vec![
        ("itself".into(), file.to_path_buf()),
        ("through ..".into(), detour),
        ("a symbolic link".into(), sym),
        ("a hard link".into(), hard),
    ]
}

/// The job of `common::job`, an ONNX model with external data, a label file, an architecture
/// spec and a small IDX dataset beside it.
fn fixture() -> Job {
    let j = job();
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    std::fs::create_dir_all(j.path("onnx")).unwrap();
    for f in ["pytorch-cryptonets.onnx", "pytorch-cryptonets.onnx.data"] {
        std::fs::copy(onnx.join(f), j.path(&format!("onnx/{f}"))).unwrap();
    }
    std::fs::write(
        j.path("spec.json"),
        r#"{"name":"t","layers":[{"type":"flatten"},{"type":"dense","out":10}]}"#,
    )
    .unwrap();
    // A dataset of 4 training and 4 test images.
    std::fs::create_dir_all(j.path("data")).unwrap();
    let idx = |dims: &[u32], body: Vec<u8>| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend(body);
        b
    };
    for split in ["train", "t10k"] {
        std::fs::write(
            j.path(&format!("data/{split}-images-idx3-ubyte")),
            idx(&[4, 28, 28], vec![7; 4 * 784]),
        )
        .unwrap();
        std::fs::write(
            j.path(&format!("data/{split}-labels-idx1-ubyte")),
            idx(&[4], vec![1, 2, 3, 4]),
        )
        .unwrap();
    }
    j
}

/// A command whose output option takes `out`, with the files it reads.
struct Case {
    name: &'static str,
    args: Vec<String>,
    /// The output option, which the out path follows.
    flag: &'static str,
    inputs: Vec<PathBuf>,
    /// Whether it writes a model (which may replace another model, not an input).
    writes_model: bool,
}

fn cases(j: &Job) -> Vec<Case> {
    let job_id = std::fs::read_dir(j.path("a/jobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Case {
            name: "decrypt",
            args: s(&[
                "decrypt",
                "--keys",
                &j.p("a"),
                "--in",
                &j.p("scored"),
                "--insecure",
            ]),
            flag: "--out",
            inputs: vec![
                j.path("a/secret.key"),
                j.path("a/public.key"),
                j.path("a/eval.keys"),
                job_id,
                j.path("scored/manifest.json"),
                j.path("scored/logits-00000.cts"),
            ],
            writes_model: false,
        },
        Case {
            name: "import",
            args: s(&["import", &j.p("onnx/pytorch-cryptonets.onnx")]),
            flag: "--out",
            inputs: vec![
                j.path("onnx/pytorch-cryptonets.onnx"),
                j.path("onnx/pytorch-cryptonets.onnx.data"),
            ],
            writes_model: true,
        },
        Case {
            name: "train",
            args: s(&[
                "train",
                "--arch",
                &j.p("spec.json"),
                "--dataset",
                "mnist",
                "--data-dir",
                &j.p("data"),
                "--epochs",
                "1",
            ]),
            flag: "--out",
            inputs: vec![
                j.path("spec.json"),
                j.path("data/train-images-idx3-ubyte"),
                j.path("data/t10k-labels-idx1-ubyte"),
            ],
            writes_model: true,
        },
        Case {
            name: "approx",
            args: s(&["approx", "--fn", "relu", "--degree", "2"]),
            flag: "--plot",
            inputs: vec![],
            writes_model: false,
        },
    ]
}

#[test]
fn no_output_replaces_an_input_under_any_name() {
    let j = fixture();
    let scratch = j.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let protected = [
        j.path("b/secret.key"),
        j.path("b/eval.keys"),
        j.path("enc/manifest.json"),
        j.path("enc/batch-00000.cts"),
    ];
    let mut runs = 0;
    let mut tag = 0;
    for case in cases(&j) {
        let mut targets: Vec<(PathBuf, &str)> =
            case.inputs.iter().map(|p| (p.clone(), "reads")).collect();
        // Key and job files the command does not read are never replaced either, nor a model
        // by anything but a model.
        targets.extend(protected.iter().map(|p| (p.clone(), "holds")));
        if !case.writes_model {
            targets.push((j.path("m.safetensors"), "holds"));
        }
        for (file, why) in targets {
            for (spelling, out) in spellings(&file, &scratch, tag) {
                tag += 1;
                let before = snapshot(j.dir.path());
                let mut args = case.args.clone();
                args.push(case.flag.into());
                args.push(out.to_str().unwrap().into());
                let (ok, _, e) = cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
                assert!(
                    !ok,
                    "{}: {} {} ({spelling}) was accepted as output",
                    case.name,
                    case.flag,
                    file.display()
                );
                assert!(
                    e.contains("nothing was written")
                        && e.contains(case.flag)
                        && (e.contains("which this command reads") || e.contains(" holds ")),
                    "{} with {} = {} ({spelling}, it {why} it): {e}",
                    case.name,
                    case.flag,
                    file.display()
                );
                assert_eq!(
                    before,
                    snapshot(j.dir.path()),
                    "{}: a byte changed with {} {} ({spelling})",
                    case.name,
                    case.flag,
                    file.display()
                );
                runs += 1;
            }
        }
    }
    eprintln!("{runs} runs with an output among the inputs: all refused, no byte changed");
    assert!(runs >= 100);
}

#[test]
fn the_server_never_gets_the_key_directory_and_scores_write_no_input() {
    let j = fixture();
    // encrypt --out the key directory: the server would receive the secret key.
    for out in [j.p("a"), j.p("a/../a")] {
        let (ok, _, e) = j.encrypt_to("m.safetensors", "a", &out, "4");
        assert!(
            !ok && e.contains("key directory") && e.contains("secret key"),
            "{e}"
        );
    }
    assert!(!j.path("a/manifest.json").exists());
    // Nor a directory holding the key directory, one inside it, or a secret key under
    // another name.
    std::fs::create_dir_all(j.path("with-copy/deep")).unwrap();
    std::fs::copy(j.path("a/secret.key"), j.path("with-copy/deep/backup.bin")).unwrap();
    // A link to the key directory inside the job directory: copying it (`cp -rL`, `scp -r`)
    // would follow it.
    std::fs::create_dir_all(j.path("with-link")).unwrap();
    std::os::unix::fs::symlink(j.path("a"), j.path("with-link/k")).unwrap();
    for (out, why) in [
        (j.p("."), "holds (or is) the key directory"),
        (j.p("a/jobs"), "is inside the key directory"),
        (j.p("with-copy"), "holds a secret key"),
        (j.p("with-link"), "holds a secret key"),
    ] {
        let (ok, _, e) = j.encrypt_to("m.safetensors", "a", &out, "4");
        assert!(
            !ok && e.contains(why) && e.contains("nothing was written"),
            "{out}: {e}"
        );
    }
    assert!(!j.path("manifest.json").exists() && !j.path("a/jobs/manifest.json").exists());
    // keygen never writes keys into a job directory, or one inside it.
    for out in ["enc", "scored", "enc/keys"] {
        let (ok, _, e) = cryptodl(&[
            "keygen",
            "--preset",
            "toy4096",
            "--insecure",
            "--out",
            &j.p(out),
        ]);
        assert!(
            !ok && e.contains("job directory") && e.contains("never get the secret key"),
            "{out}: {e}"
        );
    }
    assert!(!j.path("enc/secret.key").exists() && !j.path("enc/keys").exists());
    // score's logits file hard-linked to its model: refused before any work.
    std::fs::create_dir_all(j.path("out")).unwrap();
    std::fs::hard_link(j.path("m.safetensors"), j.path("out/logits-00000.cts")).unwrap();
    let before = std::fs::read(j.path("m.safetensors")).unwrap();
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "out");
    assert!(
        !ok && e.contains("which this command reads (--model)"),
        "{e}"
    );
    assert_eq!(before, std::fs::read(j.path("m.safetensors")).unwrap());
}

#[test]
fn links_planted_where_cryptodl_creates_its_own_files_are_refused() {
    let j = fixture();
    let outside = j.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A lock-file link in score's output directory.
    std::fs::create_dir_all(j.path("s1")).unwrap();
    std::os::unix::fs::symlink(outside.join("planted"), j.path("s1/.logits-00000.cts.lock"))
        .unwrap();
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "s1");
    assert!(!ok && e.contains("symbolic link"), "{e}");
    assert!(!outside.join("planted").exists(), "the link was followed");
    // A logs directory that leads out.
    std::fs::create_dir_all(j.path("s2")).unwrap();
    std::os::unix::fs::symlink(&outside, j.path("s2/logs")).unwrap();
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "s2");
    assert!(!ok && e.contains("symbolic link"), "{e}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a log was written outside"
    );
    // `status` does not read logs through that link.
    let (ok, out, e) = cryptodl(&["status", "--in", &j.p("enc"), "--out", &j.p("s2"), "--json"]);
    assert!(ok, "{e}");
    assert_eq!(common::job::json(&out)["unreadable_log_lines"], 1);
    // The client's job records: a `jobs` link in the key directory.
    let keys = j.path("c");
    j.keygen("c");
    std::os::unix::fs::symlink(&outside, keys.join("jobs")).unwrap();
    let (ok, _, e) = j.encrypt("m.safetensors", "c", "enc-c", "4");
    assert!(!ok && e.contains("symbolic link"), "{e}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a record was written outside"
    );
    assert!(
        !j.path("enc-c/manifest.json").exists() && !j.path("enc-c/batch-00000.cts").exists(),
        "encrypt wrote before refusing"
    );
}
