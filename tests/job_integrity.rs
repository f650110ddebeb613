//! The files of a scoring job are bound together (key set, job, model, batch), every bad input
//! is a clear error naming the file and the values, and failures leave nothing behind: one test
//! per finding of the careful-user review (issue 9). A tiny model on Fashion-MNIST at the toy4096
//! preset keeps each step under a second.

use std::path::Path;
use std::process::Command;

use cryptodl::ckks::serialize::{load_ciphertexts, save_ciphertexts};
use cryptodl::ckks::{Context, Preset};
use cryptodl::nn::model::Layer;
use cryptodl::sched::job::{Manifest, MANIFEST};

mod common;
use common::job::{cryptodl, fails_with, job, json, model};

#[test]
fn keys_of_another_keygen_are_refused_at_every_step() {
    let j = job();
    // Foreign evaluation keys at score.
    fails_with(
        &j.score_args("m.safetensors", "b", "enc", "x")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[
            "eval.keys",
            "the key set is",
            "use the keys of the `keygen`",
        ],
    );
    // A batch encrypted under other keys, dropped into the job.
    let (ok, _, e) = j.encrypt("m.safetensors", "b", "enc-b", "40");
    assert!(ok, "{e}");
    std::fs::copy(
        j.path("enc-b/batch-00000.cts"),
        j.path("enc/batch-00000.cts"),
    )
    .unwrap();
    let e = j.score("m.safetensors", "a", "enc", "y").2;
    assert!(
        e.contains("batch-00000.cts") && e.contains("the job is"),
        "{e}"
    );
    // The wrong secret key at decrypt.
    let (ok, _, e) = j.decrypt("b", "scored");
    assert!(
        !ok && e.contains("secret.key") && e.contains("the key set is"),
        "{e}"
    );
    // A forged secret key: all-zero coefficients behind a recomputed CRC.
    let sk = j.path("a/secret.key");
    let mut bytes = std::fs::read(&sk).unwrap();
    let end = bytes.len() - 4;
    bytes[48..end].fill(0);
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::create_dir_all(j.path("forged")).unwrap();
    std::fs::write(j.path("forged/secret.key"), &bytes).unwrap();
    let (ok, _, e) = j.decrypt("forged", "scored");
    assert!(!ok && e.contains("forged or damaged"), "{e}");
    // The real key decrypts.
    let (ok, out, e) = j.decrypt("a", "scored");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["images"], 40);
}

#[test]
fn logits_of_another_job_are_never_resumed_or_decrypted() {
    let j = job();
    // Another job scored into the old output directory: refused, not "already done".
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "enc2", "40");
    assert!(ok, "{e}");
    let (ok, _, e) = j.score("m.safetensors", "a", "enc2", "scored");
    assert!(!ok && e.contains("holds the logits of another job"), "{e}");
    // Logits of another job copied in: decrypt refuses them.
    let (ok, _, e) = j.score("m.safetensors", "a", "enc2", "scored2");
    assert!(ok, "{e}");
    std::fs::copy(
        j.path("scored2/logits-00000.cts"),
        j.path("scored/logits-00000.cts"),
    )
    .unwrap();
    let (ok, _, e) = j.decrypt("a", "scored");
    assert!(
        !ok && e.contains("logits-00000.cts") && e.contains("the job is"),
        "{e}"
    );
    // An input batch in place of the logits: named as what it is.
    std::fs::copy(
        j.path("enc/batch-00000.cts"),
        j.path("scored2/logits-00000.cts"),
    )
    .unwrap();
    let (ok, _, e) = j.decrypt("a", "scored2");
    assert!(
        !ok && e.contains("the content is an encrypted input batch"),
        "{e}"
    );
    // Logits of this job with one ciphertext dropped (a 9-class argmax otherwise).
    let (ok, _, e) = j.score("m.safetensors", "a", "enc2", "scored3");
    assert!(ok, "{e}");
    let params = Preset::by_name("toy4096")
        .unwrap()
        .parameters(true)
        .unwrap();
    let ctx = Context::new(&params).unwrap();
    let file = j.path("scored3/logits-00000.cts");
    let (mut cts, label) = load_ciphertexts(&file, &ctx).unwrap();
    cts.pop();
    save_ciphertexts(&file, &params, &label, &cts).unwrap();
    let (ok, _, e) = j.decrypt("a", "scored3");
    assert!(!ok && e.contains("the number of ciphertexts is 9"), "{e}");
    // Logits of this job at a scale no plan produces.
    let (ok, _, e) = j.score("m.safetensors", "a", "enc2", "scored4");
    assert!(ok, "{e}");
    let file = j.path("scored4/logits-00000.cts");
    let (mut cts, label) = load_ciphertexts(&file, &ctx).unwrap();
    for ct in &mut cts {
        ct.set_scale(ct.scale() * 8.0);
    }
    save_ciphertexts(&file, &params, &label, &cts).unwrap();
    let (ok, _, e) = j.decrypt("a", "scored4");
    assert!(!ok && e.contains("the scale is"), "{e}");
}

#[test]
fn the_model_must_be_the_one_the_job_was_encrypted_for() {
    let j = job();
    // Retrained (other weights, same name), outputs permuted, other normalisation.
    model(2, 0.35)
        .save(&j.path("retrained.safetensors"))
        .unwrap();
    let mut permuted = model(1, 0.35);
    if let Some(Layer::Dense { weight, .. }) = permuted.layers.last_mut() {
        for k in 0..4 {
            weight.swap([0, k], [1, k]);
        }
    }
    permuted.save(&j.path("permuted.safetensors")).unwrap();
    model(1, 0.5).save(&j.path("renorm.safetensors")).unwrap();
    for m in ["retrained", "permuted", "renorm"] {
        let (ok, _, e) = j.score(&format!("{m}.safetensors"), "a", "enc", &format!("o-{m}"));
        assert!(!ok && e.contains("the model's digest"), "{m}: {e}");
    }
    // A flipped bit in the model's weights: the file is refused at load.
    let mut bytes = std::fs::read(j.path("m.safetensors")).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(j.path("flipped.safetensors"), &bytes).unwrap();
    let (ok, _, e) = j.score("flipped.safetensors", "a", "enc", "o-flipped");
    assert!(!ok && e.contains("do not match its digest"), "{e}");
}

#[test]
fn manifest_counts_are_checked_against_the_preset_and_the_batches() {
    let j = job();
    let path = j.path(&format!("enc/{MANIFEST}"));
    let original = std::fs::read_to_string(&path).unwrap();
    let m: Manifest = serde_json::from_str(&original).unwrap();
    let reseal = |batches: Vec<usize>| {
        let mut e = m.clone();
        e.batches = batches;
        e.checksum = e.computed_checksum();
        std::fs::write(&path, serde_json::to_string(&e).unwrap()).unwrap();
    };
    let score = |out: &str| j.score("m.safetensors", "a", "enc", out);
    // Edited without resealing: a checksum error.
    std::fs::write(&path, original.replace("[\n    40\n  ]", "[\n    41\n  ]")).unwrap();
    let e = score("o1").2;
    assert!(
        e.contains("manifest.json") && e.contains("checksum mismatch"),
        "{e}"
    );
    // Resealed: every count is checked.
    for (batches, what) in [
        (vec![5000], "holds 5000 images"),
        (vec![0], "holds 0 images"),
        (vec![], "0 batches"),
        (vec![2048], "the image count is 40"),
        (vec![41], "the image count is 40"),
        (vec![40, 40], "batch-00001.cts"),
    ] {
        reseal(batches.clone());
        let (ok, _, e) = score(&format!("o-{}", batches.len()));
        assert!(!ok && e.contains(what), "{batches:?}: {e}");
    }
    std::fs::write(&path, original.replace("40", "18446744073709551616")).unwrap();
    let (ok, _, e) = score("o-huge");
    assert!(!ok && e.contains("manifest.json"), "{e}");
}

#[test]
fn insecure_jobs_say_so_in_every_output() {
    let j = job();
    let m = std::fs::read_to_string(j.path(&format!("enc/{MANIFEST}"))).unwrap();
    assert!(json(&m)["insecure"].as_bool().unwrap());
    let (ok, out, e) = j.encrypt("m.safetensors", "a", "enc3", "10");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["insecure"], true);
    let (ok, out, e) = j.score("m.safetensors", "a", "enc3", "s3");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["insecure"], true);
    let (ok, out, e) = j.decrypt("a", "s3");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["insecure"], true);
    // Text outputs: a warning on stderr and INSECURE on stdout.
    let (ok, out, e) = cryptodl(&[
        "decrypt",
        "--keys",
        &j.p("a"),
        "--in",
        &j.p("s3"),
        "--insecure",
    ]);
    assert!(
        ok && e.contains("INSECURE") && out.contains("INSECURE"),
        "{out} {e}"
    );
    // And without the opt-in, an insecure job is refused.
    let (ok, _, e) = cryptodl(&["decrypt", "--keys", &j.p("a"), "--in", &j.p("s3")]);
    assert!(!ok && e.contains("--insecure"), "{e}");
}

#[test]
fn degenerate_and_overflowing_models_are_refused() {
    let j = job();
    // Weights scaled by 1e12: the values would wrap around the modulus.
    let mut big = model(1, 0.35);
    for l in &mut big.layers {
        if let Layer::Dense { weight, .. } = l {
            weight.mapv_inplace(|w| w * 1e12);
        }
    }
    big.save(&j.path("big.safetensors")).unwrap();
    let (ok, _, e) = j.encrypt("big.safetensors", "a", "enc-big", "40");
    assert!(
        !ok && e.contains("values reach") && e.contains("too large"),
        "{e}"
    );
    // Zero outputs / an empty polynomial / std <= 0 are refused at load.
    let mut flat = model(1, 0.35);
    flat.layers = vec![Layer::Flatten];
    flat.save(&j.path("flat.safetensors")).unwrap();
    let mut std0 = model(1, 0.35);
    std0.normalization.std = vec![-1.0];
    std0.save(&j.path("std0.safetensors")).unwrap();
    for (m, what) in [
        ("flat", "must end with a dense layer"),
        ("std0", "positive standard deviations"),
    ] {
        let (ok, _, e) = j.encrypt(&format!("{m}.safetensors"), "a", &format!("e-{m}"), "40");
        assert!(!ok && e.contains(what), "{m}: {e}");
    }
}

#[test]
#[cfg(target_os = "linux")]
fn fifos_devices_and_bad_flags_give_clear_errors_at_once() {
    let j = job();
    // A FIFO as the evaluation keys or the manifest: an error, not a hang.
    let fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    std::fs::create_dir_all(j.path("fifo-keys")).unwrap();
    fifo(&j.path("fifo-keys/eval.keys"));
    let (ok, _, e) = j.score("m.safetensors", "fifo-keys", "enc", "o1");
    assert!(!ok && e.contains("not a regular file"), "{e}");
    std::fs::create_dir_all(j.path("fifo-enc")).unwrap();
    fifo(&j.path(&format!("fifo-enc/{MANIFEST}")));
    let (ok, _, e) = j.score("m.safetensors", "a", "fifo-enc", "o2");
    assert!(!ok && e.contains("not a regular file"), "{e}");
    // A device as the model.
    let (ok, _, e) = cryptodl(&["eval", "--model", "/dev/zero"]);
    assert!(!ok && e.contains("not a regular file"), "{e}");
    // A flipped bit in a key file's version field: a checksum error, not "newer cryptodl".
    let mut ek = std::fs::read(j.path("a/eval.keys")).unwrap();
    ek[8] ^= 4;
    std::fs::create_dir_all(j.path("flip")).unwrap();
    std::fs::write(j.path("flip/eval.keys"), &ek).unwrap();
    let (ok, _, e) = j.score("m.safetensors", "flip", "enc", "o3");
    assert!(
        !ok && e.contains("checksum mismatch") && !e.contains("newer"),
        "{e}"
    );
    // An I/O error names its cause once.
    let (ok, _, e) = j.score("m.safetensors", "missing", "enc", "o4");
    assert!(!ok && e.matches("No such file").count() == 1, "{e}");
    // --limit -1 and --limit 0.
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "o5", "-1");
    assert!(!ok && e.contains("invalid value '-1'"), "{e}");
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "o6", "0");
    assert!(!ok && e.contains("invalid value '0'"), "{e}");
    let (ok, _, e) = cryptodl(&["eval", "--model", &j.p("m.safetensors"), "--limit", "0"]);
    assert!(!ok && e.contains("invalid value '0'"), "{e}");
}

#[test]
fn failures_leave_nothing_behind_and_concurrent_runs_share_the_batches() {
    let j = job();
    // A stale temporary of a killed encrypt is removed by the next run into that directory.
    std::fs::create_dir_all(j.path("enc4")).unwrap();
    let stale = j.path("enc4/.batch-00000.cts.cryptodl-AbC123.tmp");
    std::fs::write(&stale, vec![0u8; 1 << 16]).unwrap();
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "enc4", "10");
    assert!(ok, "{e}");
    assert!(!stale.exists(), "stale temporary removed");
    // An encrypt into a directory holding a job is refused.
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "enc4", "10");
    assert!(!ok && e.contains("choose an empty --out"), "{e}");
    // keygen writes all keys or none.
    std::fs::create_dir_all(j.path("k2/public.key")).unwrap();
    std::fs::remove_dir(j.path("k2/public.key")).unwrap();
    std::fs::create_dir_all(j.path("k2/public.key/blocker")).unwrap();
    let (ok, _, e) = cryptodl(&[
        "keygen",
        "--preset",
        "toy4096",
        "--insecure",
        "--out",
        &j.p("k2"),
    ]);
    assert!(!ok, "{e}");
    assert!(!j.path("k2/eval.keys").exists() && !j.path("k2/secret.key").exists());
    // Three batches scored by two runs at once: each batch exactly once.
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "big", "4500");
    assert!(ok, "{e}");
    let args = j.score_args("m.safetensors", "a", "big", "shared");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_cryptodl"))
            .args(&args)
            .output()
    };
    let (r1, r2) = std::thread::scope(|s| {
        let h1 = s.spawn(spawn);
        let h2 = s.spawn(spawn);
        (h1.join().unwrap().unwrap(), h2.join().unwrap().unwrap())
    });
    assert!(r1.status.success() && r2.status.success());
    let (v1, v2) = (
        json(&String::from_utf8_lossy(&r1.stdout)),
        json(&String::from_utf8_lossy(&r2.stdout)),
    );
    let scored = v1["scored"].as_u64().unwrap() + v2["scored"].as_u64().unwrap();
    assert_eq!(scored, 3, "{v1} {v2}");
    let names: Vec<String> = std::fs::read_dir(j.path("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    let (ok, out, e) = j.decrypt("a", "shared");
    assert!(ok, "{e}");
    assert_eq!(json(&out)["images"], 4500);
}

#[test]
fn a_killed_score_resumes_to_the_same_bytes() {
    let j = job();
    let (ok, _, e) = j.encrypt("m.safetensors", "a", "big", "4500");
    assert!(ok, "{e}");
    let (ok, _, e) = j.score("m.safetensors", "a", "big", "reference");
    assert!(ok, "{e}");
    // Kill a run once its first batch is written, then run again.
    let args = j.score_args("m.safetensors", "a", "big", "killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptodl"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = j.path("killed/logits-00000.cts");
    let t = std::time::Instant::now();
    while !first.exists() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (ok, _, e) = j.score("m.safetensors", "a", "big", "killed");
    assert!(ok, "{e}");
    for i in 0..3 {
        let name = format!("logits-{i:05}.cts");
        assert_eq!(
            std::fs::read(j.path(&format!("killed/{name}"))).unwrap(),
            std::fs::read(j.path(&format!("reference/{name}"))).unwrap(),
            "{name}"
        );
    }
    // Nothing left but the logits, the manifest and the workers' logs.
    let mut names: Vec<String> = std::fs::read_dir(j.path("killed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "logits-00000.cts",
            "logits-00001.cts",
            "logits-00002.cts",
            "logs",
            "manifest.json"
        ]
    );
}

/// `src` (a key file of keygen `b`) relabelled with the key-set id of `id_of` (keygen `a`),
/// its CRC recomputed: what a forger who knows only public files can make.
fn relabelled(src: &Path, id_of: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let id = std::fs::read(id_of).unwrap()[24..40].to_vec();
    bytes[24..40].copy_from_slice(&id);
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dst, bytes).unwrap();
}

/// Issue 22, class 6: key material of another key set relabelled with this one's id is caught
/// by the client, who holds the secret key: a public key or evaluation keys beside it at
/// `encrypt` and `decrypt`, and logits the server computed with such evaluation keys (noise
/// spread over the modulus) at `decrypt`; and a manifest edited after `encrypt` is not taken
/// back.
#[test]
fn relabelled_keys_and_the_noise_they_make_are_refused() {
    let j = job();
    // A forged public key beside a's secret key.
    std::fs::create_dir_all(j.path("f")).unwrap();
    std::fs::copy(j.path("a/secret.key"), j.path("f/secret.key")).unwrap();
    relabelled(
        &j.path("b/public.key"),
        &j.path("a/public.key"),
        &j.path("f/public.key"),
    );
    let (ok, _, e) = j.encrypt("m.safetensors", "f", "enc-f", "4");
    assert!(
        !ok && e.contains("public.key") && e.contains("was not made from this secret key"),
        "{e}"
    );
    assert!(!j.path("enc-f").exists());
    // Forged evaluation keys beside it.
    std::fs::copy(j.path("a/public.key"), j.path("f/public.key")).unwrap();
    relabelled(
        &j.path("b/eval.keys"),
        &j.path("a/eval.keys"),
        &j.path("f/eval.keys"),
    );
    let (ok, _, e) = j.encrypt("m.safetensors", "f", "enc-f", "4");
    assert!(
        !ok && e.contains("eval.keys") && e.contains("relinearization key"),
        "{e}"
    );
    let (ok, _, e) = j.decrypt("f", "scored");
    assert!(
        !ok && e.contains("eval.keys") && e.contains("was not made from"),
        "{e}"
    );
    // The server scores with forged evaluation keys (it cannot tell); the client can.
    std::fs::create_dir_all(j.path("server")).unwrap();
    relabelled(
        &j.path("b/eval.keys"),
        &j.path("a/eval.keys"),
        &j.path("server/eval.keys"),
    );
    let (ok, _, e) = j.score("m.safetensors", "server", "enc", "scored-f");
    assert!(ok, "{e}");
    let (ok, out, e) = j.decrypt("a", "scored-f");
    assert!(
        !ok && e.contains("logits-00000.cts") && e.contains("decrypted values lie beyond"),
        "{out} {e}"
    );
    // A manifest the server edited (checksum recomputed) is not the one encrypt recorded.
    let path = j.path("scored/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["model"]["name"] = "renamed".into();
    m["checksum"] = "".into();
    let mut manifest: Manifest = serde_json::from_value(m).unwrap();
    manifest.checksum = manifest.computed_checksum();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let (ok, _, e) = j.decrypt("a", "scored");
    assert!(!ok && e.contains("edited after encryption"), "{e}");
}

/// Issue 22, class 7: a normalisation whose std is near zero is refused by every command that
/// loads the model, instead of `eval` printing an accuracy of garbage.
#[test]
fn a_near_zero_std_is_refused_not_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model(1, 1e-12).save(&path).unwrap();
    let (ok, out, e) = cryptodl(&["eval", "--model", path.to_str().unwrap(), "--limit", "10"]);
    assert!(!ok, "eval accepted it: {out}");
    assert!(
        e.contains("std is near zero") && e.contains("over the limit"),
        "{e}"
    );
}
