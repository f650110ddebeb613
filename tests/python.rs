//! The Python package, as a user gets it: the wheel built by maturin, installed into a fresh
//! venv, then pytest (`python/tests`) and the example (`examples/python`) run against it and the
//! CLI. Needs `maturin` (`MATURIN`, else on PATH) and a Python with numpy and pytest
//! (`CRYPTODL_PYTHON`, else `python3`; the venv sees its packages); without them it skips
//! loudly, or fails where `CRYPTODL_REQUIRE_PYTHON=1` (CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// What is missing to run the Python tests here, or `None`.
fn missing(python: &str, maturin: &str) -> Option<String> {
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    if !ok(Command::new(maturin).arg("--version")) {
        return Some(format!(
            "no maturin ({maturin}): pip install 'maturin>=1.5,<2' (or set MATURIN)"
        ));
    }
    if !ok(Command::new(python).args(["-c", "import numpy, pytest, venv"])) {
        return Some(format!(
            "{python} lacks numpy, pytest or venv: apt-get install python3-numpy python3-pytest \
             python3-venv (or set CRYPTODL_PYTHON)"
        ));
    }
    None
}

fn run(c: &mut Command, what: &str) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{o}\n{e}");
    eprintln!(
        "{what}: ok\n{}",
        o.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    o.into_owned()
}

#[test]
fn wheel_installs_and_pytest_and_the_example_pass() {
    let python = std::env::var("CRYPTODL_PYTHON").unwrap_or_else(|_| "python3".into());
    let maturin = std::env::var("MATURIN").unwrap_or_else(|_| "maturin".into());
    if let Some(why) = missing(&python, &maturin) {
        assert!(
            std::env::var("CRYPTODL_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "CRYPTODL_REQUIRE_PYTHON=1 but {why}"
        );
        eprintln!("SKIPPED: the Python package tests ({why})");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let wheels = dir.path().join("wheels");
    // The workspace's target directory: the engine is already built for the tests, so only
    // the extension is compiled.
    run(
        Command::new(&maturin)
            .args(["build", "--release", "--quiet", "-m"])
            .arg(root.join("python/Cargo.toml"))
            .arg("-o")
            .arg(&wheels),
        "maturin build",
    );
    let wheel: PathBuf = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("maturin wrote no wheel");
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains("abi3"), "{name} is not an abi3 wheel");
    // A fresh venv with the wheel alone (no Rust toolchain involved in installing it).
    let venv = dir.path().join("venv");
    run(
        Command::new(&python)
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
        "python -m venv",
    );
    let vpy = venv.join("bin/python");
    run(
        Command::new(&vpy)
            .args(["-m", "pip", "install", "--quiet", "--no-index", "--no-deps"])
            .arg(&wheel),
        "pip install the wheel",
    );
    let model = dir.path().join("tiny.safetensors");
    common::job::model(1, 0.35).save(&model).unwrap();
    let env = |c: &mut Command| {
        c.env("CRYPTODL_BIN", env!("CARGO_BIN_EXE_cryptodl"))
            .env("CRYPTODL_TEST_MODEL", &model)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // The installed package, not the source tree.
            .current_dir(dir.path());
    };
    let mut pytest = Command::new(&vpy);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
        .arg(root.join("python/tests"));
    env(&mut pytest);
    let out = run(&mut pytest, "pytest python/tests");
    assert!(!out.contains(" failed"), "{out}");
    let mut example = Command::new(&vpy);
    example
        .arg(root.join("examples/python/score.py"))
        .args(["--images", "8", "--out"])
        .arg(dir.path().join("example"));
    env(&mut example);
    let out = run(&mut example, "examples/python/score.py");
    assert!(out.contains("same argmax as the plaintext model"), "{out}");
}
