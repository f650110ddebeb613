//! A scoring job on disk for the CLI tests: a tiny model of Fashion-MNIST images, keys, batches
//! encrypted at the insecure toy4096 preset (each step well under a second), and the commands
//! run on them.

use std::path::PathBuf;
use std::process::{Command, Output};

use cryptodl::nn::activation::Polynomial;
use cryptodl::nn::model::{Activation, Layer, Model, Normalization};

/// Runs the `cryptodl` binary.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptodl"))
        .args(args)
        .output()
        .unwrap()
}

/// Success, stdout, stderr.
pub fn cryptodl(args: &[&str]) -> (bool, String, String) {
    let out = run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cryptodl` expecting a failure whose stderr holds each of `what`; returns stderr.
pub fn fails_with(args: &[&str], what: &[&str]) -> String {
    let (ok, _, stderr) = cryptodl(args);
    assert!(!ok, "{args:?} should fail");
    for w in what {
        assert!(stderr.contains(w), "{args:?}: `{w}` not in: {stderr}");
    }
    stderr
}

/// A tiny classifier of Fashion-MNIST images: flatten, dense 4, poly2, dense 10.
pub fn model(seed: u64, std: f64) -> Model {
    let w = |o: usize, i: usize, s: u64| {
        ndarray::Array2::from_shape_fn((o, i), |(a, b)| {
            (((a * 31 + b * 17) as u64 * (s + 3)) % 97) as f64 / 400.0 - 0.12
        })
    };
    Model {
        name: "tiny".into(),
        input: [1, 28, 28],
        normalization: Normalization {
            mean: vec![0.3],
            std: vec![std],
        },
        layers: vec![
            Layer::Flatten,
            Layer::Dense {
                weight: w(4, 784, seed),
                bias: ndarray::Array1::zeros(4),
            },
            Layer::Act(Activation::Poly {
                coeffs: Polynomial::new(vec![0.375, 0.5, 0.1171875]),
            }),
            Layer::Dense {
                weight: w(10, 4, seed + 1),
                bias: ndarray::Array1::zeros(10),
            },
        ],
        training: serde_json::json!({"dataset": "fashion-mnist"}),
    }
}

/// A temporary directory holding a job's files.
pub struct Job {
    pub dir: tempfile::TempDir,
}

impl Job {
    pub fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn keygen(&self, out: &str) {
        let (ok, _, e) = cryptodl(&[
            "keygen",
            "--preset",
            "toy4096",
            "--insecure",
            "--out",
            &self.p(out),
        ]);
        assert!(ok, "{e}");
    }
    pub fn encrypt(
        &self,
        model: &str,
        keys: &str,
        out: &str,
        limit: &str,
    ) -> (bool, String, String) {
        self.encrypt_to(model, keys, &self.p(out), limit)
    }
    /// `encrypt` into the directory `out` (a path, not a name under the job).
    pub fn encrypt_to(
        &self,
        model: &str,
        keys: &str,
        out: &str,
        limit: &str,
    ) -> (bool, String, String) {
        cryptodl(&[
            "encrypt",
            "--model",
            &self.p(model),
            "--keys",
            &self.p(keys),
            "--limit",
            limit,
            "--out",
            out,
            "--insecure",
            "--json",
        ])
    }
    pub fn score_args(&self, model: &str, keys: &str, input: &str, out: &str) -> Vec<String> {
        [
            "score",
            "--model",
            &self.p(model),
            "--eval-keys",
            &self.p(&format!("{keys}/eval.keys")),
            "--in",
            &self.p(input),
            "--out",
            &self.p(out),
            "--insecure",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
    pub fn score(&self, model: &str, keys: &str, input: &str, out: &str) -> (bool, String, String) {
        let a = self.score_args(model, keys, input, out);
        cryptodl(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
    pub fn decrypt(&self, keys: &str, input: &str) -> (bool, String, String) {
        cryptodl(&[
            "decrypt",
            "--keys",
            &self.p(keys),
            "--in",
            &self.p(input),
            "--insecure",
            "--json",
        ])
    }
}

/// Keys `a` and `b`, the model `m.safetensors`, a job `enc` encrypted with `a` (40 images, one
/// batch) and scored into `scored`.
pub fn job() -> Job {
    let j = Job {
        dir: tempfile::tempdir().unwrap(),
    };
    j.keygen("a");
    j.keygen("b");
    model(1, 0.35).save(&j.path("m.safetensors")).unwrap();
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "enc", "40");
    assert!(ok, "{e}");
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "scored");
    assert!(ok, "{e}");
    j
}

/// Parses a command's JSON output.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}
