//! The Slurm example on a real Slurm: `examples/slurm/local-cluster-test.sh` starts a
//! single-node cluster and checks that a 3-task array equals one `score` process byte for byte,
//! and that cancelling a task mid-run and resubmitting resumes to the same bytes. It needs root
//! and the Debian packages `slurmctld slurmd slurm-client munge`: without them the test skips
//! loudly, and fails with `CRYPTODL_REQUIRE_SLURM=1` (set by `.ci/run`).

use std::process::Command;

mod common;
use common::job::cryptodl;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/slurm/local-cluster-test.sh"
);

#[test]
fn a_slurm_job_array_scores_like_one_process_and_resumes_after_a_cancel() {
    let check = Command::new("bash")
        .args([SCRIPT, "--check"])
        .output()
        .unwrap();
    if check.status.code() == Some(77) {
        let why = String::from_utf8_lossy(&check.stdout);
        assert!(
            std::env::var("CRYPTODL_REQUIRE_SLURM").as_deref() != Ok("1"),
            "CRYPTODL_REQUIRE_SLURM=1 but the Slurm test cannot run: {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    assert!(check.status.success(), "{check:?}");

    // The embedded cryptonets at n8192: the whole Fashion-MNIST test set is 3 batches of
    // 4096, a batch takes seconds, so a task can be cancelled while it scores.
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/cryptonets-poly2.safetensors"
    );
    let steps: [Vec<String>; 3] = [
        vec![
            "keygen".into(),
            "--preset".into(),
            "n8192".into(),
            "--out".into(),
            p("keys"),
        ],
        vec![
            "encrypt".into(),
            "--model".into(),
            model.into(),
            "--keys".into(),
            p("keys"),
            "--out".into(),
            p("enc"),
            "--json".into(),
        ],
        vec![
            "score".into(),
            "--model".into(),
            model.into(),
            "--eval-keys".into(),
            p("keys/eval.keys"),
            "--in".into(),
            p("enc"),
            "--out".into(),
            p("reference"),
            "--json".into(),
        ],
    ];
    for args in &steps {
        let (ok, _, e) = cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{args:?}: {e}");
    }
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("CRYPTODL", env!("CARGO_BIN_EXE_cryptodl"))
        .env("MODEL", model)
        .env("KEYS", p("keys/eval.keys"))
        .env("ENC", p("enc"))
        .env("REFERENCE", p("reference"))
        .env("WORK", dir.path())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "the Slurm test failed: {log}");
    assert!(log.contains("PASSED"), "{log}");
}
