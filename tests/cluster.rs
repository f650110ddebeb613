//! Batch scoring beyond one process (issue 13): shards cover a job exactly once and equal one
//! process byte for byte, workers share one output directory, `--devices` runs one worker per
//! device, `status` reports every batch, damaged logits are found and rescored on request, and
//! bad shards, devices and read-only outputs are clear errors.

use std::path::Path;
use std::process::Command;

mod common;
use common::job::{cryptodl, job, json, Job};

/// `job()` plus `big`: 10,000 images in 5 batches of up to 2048, scored by one process into
/// `reference`.
fn big_job() -> Job {
    let j = job();
    let (ok, out, e) = j.encrypt("m.safetensors", "a", "big", "10000");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["batches"], 5, "{out}");
    let (ok, _, e) = j.score("m.safetensors", "a", "big", "reference");
    assert!(ok, "{e}");
    j
}

fn score_with(j: &Job, out: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = j.score_args("m.safetensors", "a", "big", out);
    args.extend(extra.iter().map(|s| s.to_string()));
    cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn assert_same_as_reference(j: &Job, out: &str) {
    for i in 0..5 {
        let name = format!("logits-{i:05}.cts");
        assert_eq!(
            std::fs::read(j.path(&format!("{out}/{name}"))).unwrap(),
            std::fs::read(j.path(&format!("reference/{name}"))).unwrap(),
            "{out}/{name}"
        );
    }
}

fn status(j: &Job, out: &str) -> serde_json::Value {
    let (ok, s, e) = cryptodl(&["status", "--in", &j.p("big"), "--out", &j.p(out), "--json"]);
    assert!(ok, "{e}");
    json(&s)
}

#[test]
fn shards_run_at_once_cover_the_job_once_and_equal_one_process() {
    let j = big_job();
    // A temporary a killed worker left behind is never taken for a result.
    std::fs::create_dir_all(j.path("sharded")).unwrap();
    let stale = j.path("sharded/.logits-00004.cts.cryptodl-Zz9.tmp");
    std::fs::write(&stale, b"half a file").unwrap();
    let shards = ["1/3", "2/3", "3/3"];
    let reports: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .map(|k| {
                let j = &j;
                s.spawn(move || {
                    let (ok, out, e) = score_with(j, "sharded", &["--shard", k]);
                    assert!(ok, "{k}: {e}");
                    json(&out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Batch i belongs to shard i mod 3 + 1: 2, 2 and 1 batches.
    for (r, n) in reports.iter().zip([2, 2, 1]) {
        assert_eq!(r["shard_batches"], n, "{r}");
        assert_eq!(r["scored"], n, "{r}");
    }
    assert!(!stale.exists(), "the stale temporary was removed");
    assert_same_as_reference(&j, "sharded");
    let st = status(&j, "sharded");
    assert_eq!(st["complete"], true, "{st}");
    assert_eq!(st["done"], 5);
    let workers = st["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{st}");
    assert!(workers.iter().all(|w| w["finished"] == true));
    let batches: u64 = workers.iter().map(|w| w["batches"].as_u64().unwrap()).sum();
    assert_eq!(batches, 5);

    // Two workers given the same shard by mistake: each of its batches is scored once.
    let both: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let j = &j;
                s.spawn(move || {
                    let (ok, out, e) = score_with(j, "twice", &["--shard", "2/3"]);
                    assert!(ok, "{e}");
                    json(&out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let scored: u64 = both.iter().map(|r| r["scored"].as_u64().unwrap()).sum();
    assert_eq!(scored, 2, "{both:?}");
    let st = status(&j, "twice");
    assert_eq!(
        (st["done"].as_u64(), st["missing"].as_u64()),
        (Some(2), Some(3))
    );
    let pending: Vec<u64> = st["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(pending, [0, 2, 3], "{st}");
    // The rest of the job resumes into the same directory.
    let (ok, out, e) = score_with(&j, "twice", &[]);
    assert!(ok, "{e}");
    assert_eq!(
        (
            json(&out)["scored"].as_u64(),
            json(&out)["skipped"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_same_as_reference(&j, "twice");
}

#[test]
fn several_devices_share_a_shard_and_equal_one_worker() {
    let j = big_job();
    let (ok, out, e) = score_with(&j, "two", &["--devices", "cpu,cpu"]);
    assert!(ok, "{e}");
    let r = json(&out);
    let workers = r["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{r}");
    assert_eq!(r["scored"], 5);
    assert_same_as_reference(&j, "two");
    eprintln!("2 CPU workers, 5 batches: wall {} s", r["wall_s"]);
    // A GPU worker beside a CPU worker gives the same bytes (GPU == CPU word for word).
    if common::gpu().is_some() {
        let (ok, out, e) = score_with(&j, "mixed", &["--devices", "gpu:0,cpu"]);
        assert!(ok, "{e}");
        assert_eq!(json(&out)["workers"].as_array().unwrap().len(), 2);
        assert_same_as_reference(&j, "mixed");
        // Two batches in flight on one GPU (two workers, one session): the same bytes.
        let (ok, out, e) = score_with(&j, "inflight", &["--devices", "gpu:0", "--in-flight", "2"]);
        assert!(ok, "{e}");
        let r = json(&out);
        let workers = r["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2, "{r}");
        assert!(workers.iter().all(|w| w["device"] == workers[0]["device"]));
        assert_eq!(r["scored"], 5);
        assert_same_as_reference(&j, "inflight");
    }
    // In flight on the CPU too (the same session, no synchronisation between steps).
    let (ok, out, e) = score_with(&j, "cpu-inflight", &["--in-flight", "3"]);
    assert!(ok, "{e}");
    assert_eq!(json(&out)["workers"].as_array().unwrap().len(), 3);
    assert_same_as_reference(&j, "cpu-inflight");
    let (ok, _, e) = score_with(&j, "bad", &["--in-flight", "0"]);
    assert!(!ok && e.contains("in-flight"), "{e}");
    for (devices, want) in [
        ("tpu", "`tpu` is not a device"),
        ("cpu,", "comma list"),
        ("gpu:99", "no GPU adapter 99"),
    ] {
        let (ok, _, e) = score_with(&j, "bad", &["--devices", devices]);
        assert!(!ok && e.contains(want), "{devices}: {e}");
    }
    let (ok, _, e) = score_with(&j, "bad", &["--devices", "cpu", "--backend", "gpu"]);
    assert!(!ok && e.contains("cannot be used with"), "{e}");
}

#[test]
fn bad_shards_are_clear_errors() {
    let j = job();
    for (shard, want) in [
        ("0/3", "shards count from 1 to 3"),
        ("4/3", "shards count from 1 to 3"),
        ("1/0", "number of shards must be 1"),
        ("a/3", "not a shard"),
        ("2", "not a shard"),
    ] {
        let mut args = j.score_args("m.safetensors", "a", "enc", "x");
        args.extend(["--shard".to_string(), shard.to_string()]);
        let (ok, _, e) = cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!ok && e.contains(want), "{shard}: {e}");
    }
    assert!(!j.path("x").exists(), "nothing written");
}

#[test]
fn damaged_logits_are_reported_and_rescored_on_request() {
    let j = big_job();
    let (ok, _, e) = score_with(&j, "dmg", &[]);
    assert!(ok, "{e}");
    // Batch 3's logits damaged on disk after scoring; batch 1's lost.
    let file = j.path("dmg/logits-00003.cts");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::remove_file(j.path("dmg/logits-00001.cts")).unwrap();
    let st = status(&j, "dmg");
    assert_eq!(st["complete"], false);
    assert_eq!(
        (
            st["done"].as_u64(),
            st["missing"].as_u64(),
            st["damaged"].as_u64()
        ),
        (Some(3), Some(1), Some(1)),
        "{st}"
    );
    let damaged = &st["pending"][1];
    assert_eq!(damaged["batch"], 3);
    assert_eq!(damaged["state"], "damaged");
    assert!(
        damaged["reason"].as_str().unwrap().contains("checksum"),
        "{st}"
    );
    // Without the flag: batch 1 is scored, then the damaged batch stops the run, kept as is.
    let (ok, _, e) = score_with(&j, "dmg", &[]);
    assert!(
        !ok && e.contains("batch 3 are damaged") && e.contains("--rescore-corrupt"),
        "{e}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "not overwritten");
    // With it: rescored, and the job is whole again.
    let (ok, out, e) = score_with(&j, "dmg", &["--rescore-corrupt"]);
    assert!(ok, "{e}");
    assert_eq!(json(&out)["rescored"], 1, "{out}");
    assert_same_as_reference(&j, "dmg");
    assert_eq!(status(&j, "dmg")["complete"], true);
    // Logits of another job dropped in are reported as foreign, and never overwritten.
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "other");
    assert!(ok, "{e}");
    std::fs::copy(
        j.path("other/logits-00000.cts"),
        j.path("dmg/logits-00000.cts"),
    )
    .unwrap();
    let st = status(&j, "dmg");
    assert_eq!(st["foreign"], 1, "{st}");
    let (ok, _, e) = score_with(&j, "dmg", &["--rescore-corrupt"]);
    assert!(!ok && e.contains("the job is"), "{e}");
}

/// A read-only directory: a read-only tmpfs mount as root, a 0555 directory otherwise.
struct ReadOnly<'a> {
    path: &'a Path,
    mounted: bool,
}

impl<'a> ReadOnly<'a> {
    fn new(path: &'a Path) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "root, but cannot mount a read-only tmpfs at {path:?}");
            return ReadOnly {
                path,
                mounted: true,
            };
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        ReadOnly {
            path,
            mounted: false,
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(self.path, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn a_read_only_output_is_a_clear_error() {
    let j = job();
    let dir = j.path("ro");
    let ro = ReadOnly::new(&dir);
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "ro");
    assert!(!ok, "scored into a read-only directory");
    assert!(
        (e.contains("Read-only file system") || e.contains("Permission denied"))
            && e.contains("must be writable"),
        "{e}"
    );
    let (ok, _, e) = j.score("m.safetensors", "a", "enc", "ro/sub");
    assert!(!ok && e.contains("must be writable"), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
    drop(ro);
}
