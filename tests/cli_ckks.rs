//! The `params` and `bench ops` commands: JSON shapes, the insecure opt-in, clear errors.

use std::process::Command;

fn cryptodl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cryptodl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a `--backend gpu` command failed for want of an adapter: a failure under
/// `CRYPTODL_REQUIRE_GPU=1` (CI), else a loud skip.
fn no_gpu(ok: bool, stderr: &str, what: &str) -> bool {
    if ok || !stderr.contains("needs a GPU adapter") {
        return false;
    }
    assert!(
        std::env::var("CRYPTODL_REQUIRE_GPU").as_deref() != Ok("1"),
        "CRYPTODL_REQUIRE_GPU=1 but no GPU adapter: {stderr}"
    );
    eprintln!("SKIPPED: no GPU adapter for `{what}` ({stderr})");
    true
}

#[test]
fn params_json_lists_secure_and_insecure_presets() {
    let (ok, stdout, _) = cryptodl(&["params", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v.as_array().unwrap();
    let n8192 = rows.iter().find(|r| r["name"] == "n8192").unwrap();
    for key in [
        "name",
        "n",
        "slots",
        "log_qp",
        "prime_bits",
        "depth",
        "security_bits",
        "secure",
    ] {
        assert!(n8192.get(key).is_some(), "missing {key}");
    }
    assert_eq!(n8192["n"], 8192);
    assert_eq!(n8192["slots"], 4096);
    assert_eq!(n8192["secure"], true);
    assert_eq!(
        n8192["prime_bits"],
        serde_json::json!([30, 26, 26, 26, 26, 26, 26, 30])
    );
    assert!(n8192["log_qp"].as_f64().unwrap() <= 218.0);
    let toy = rows.iter().find(|r| r["name"] == "toy1024").unwrap();
    assert_eq!(toy["secure"], false);
    let (ok, table, _) = cryptodl(&["params"]);
    assert!(ok && table.contains("INSECURE") && table.contains("n16384"));
}

#[test]
fn bench_ops_json_and_insecure_opt_in() {
    let (ok, _, stderr) = cryptodl(&["bench", "ops", "--preset", "toy1024", "--reps", "1"]);
    assert!(!ok);
    assert!(stderr.contains("--insecure"), "{stderr}");
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "ops",
        "--preset",
        "toy1024",
        "--insecure",
        "--reps",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["preset"], "toy1024");
    assert_eq!(v["n"], 1024);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["insecure"], true);
    let ops: Vec<&str> = v["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "ntt_forward",
            "ntt_inverse",
            "encode",
            "encrypt",
            "decrypt",
            "add",
            "mul_const",
            "mul_relin",
            "rescale",
            "rotate"
        ]
    );
    assert!(v["ops"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["median_us"].as_f64().unwrap() > 0.0));
    let fresh = v["precision_bits"]["fresh"].as_f64().unwrap();
    let mul = v["precision_bits"]["mul_relin"].as_f64().unwrap();
    assert!(fresh > 15.0 && mul > 13.0, "{fresh} {mul}");
    let (ok, table, _) = cryptodl(&[
        "bench",
        "ops",
        "--preset",
        "toy1024",
        "--insecure",
        "--reps",
        "1",
    ]);
    assert!(ok && table.contains("INSECURE"));
}

#[test]
fn unknown_preset_names_the_known_ones() {
    let (ok, _, stderr) = cryptodl(&["bench", "ops", "--preset", "n9999"]);
    assert!(!ok);
    assert!(
        stderr.contains("n9999") && stderr.contains("n8192") && stderr.contains("cryptodl params"),
        "{stderr}"
    );
}

#[test]
fn demo_classifies_encrypted_images_like_the_plaintext_reference() {
    let (ok, stdout, stderr) = cryptodl(&["demo", "--images", "64", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["insecure"], false);
    assert_eq!(v["preset"], "n8192");
    assert_eq!(v["samples"], 64);
    assert_eq!(v["batches"], 1);
    assert_eq!(v["ciphertexts_in"], 784);
    assert_eq!(v["levels_used"], 5);
    // Encrypted predictions are the plaintext reference's, and the network classifies well.
    assert_eq!(v["disagreements_beyond_ties"], 0, "{v}");
    assert!(v["max_logit_error"].as_f64().unwrap() < 1e-2, "{v}");
    assert!(v["encrypted_accuracy"].as_f64().unwrap() > 0.8, "{v}");
    // Insecure presets need the opt-in; a preset too shallow for the model names one that fits.
    let (ok, _, stderr) = cryptodl(&["demo", "--preset", "toy4096"]);
    assert!(!ok && stderr.contains("--insecure"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&["demo", "--preset", "toy4096", "--insecure"]);
    assert!(!ok && stderr.contains("use --preset n8192"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&["demo", "--images", "0"]);
    assert!(!ok && stderr.contains("no images"), "{stderr}");
}

#[test]
fn infer_refuses_models_ckks_cannot_compute() {
    use cryptodl::nn::activation::ActFn;
    use cryptodl::nn::model::{Activation, Layer, Model, Normalization};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relu.safetensors");
    Model {
        name: "relu-net".into(),
        input: [1, 28, 28],
        normalization: Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        },
        layers: vec![
            Layer::Flatten,
            Layer::Dense {
                weight: ndarray::Array2::zeros((4, 784)),
                bias: ndarray::Array1::zeros(4),
            },
            Layer::Act(Activation::Std { func: ActFn::Relu }),
            Layer::Dense {
                weight: ndarray::Array2::zeros((10, 4)),
                bias: ndarray::Array1::zeros(10),
            },
        ],
        training: serde_json::Value::Null,
    }
    .save(&path)
    .unwrap();
    let (ok, _, stderr) = cryptodl(&["infer", "--model", path.to_str().unwrap()]);
    assert!(!ok && stderr.contains("--act poly2"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&["infer", "--model", "/nonexistent/model.safetensors"]);
    assert!(
        !ok && stderr.contains("/nonexistent/model.safetensors"),
        "{stderr}"
    );
}

#[test]
fn bench_ops_gpu_counts_dispatches_and_transfers() {
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "ops",
        "--backend",
        "gpu",
        "--preset",
        "toy1024",
        "--insecure",
        "--reps",
        "1",
        "--json",
    ]);
    if no_gpu(ok, &stderr, "bench ops --backend gpu") {
        return;
    }
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["backend"], "gpu");
    assert!(v["adapter"].as_str().is_some() && v["timing"].as_str().is_some());
    let op = |name: &str| {
        v["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == name)
            .unwrap()
            .clone()
    };
    // Resident tensors: mul+relin+rescale and rotate move nothing between host and device.
    for name in [
        "add",
        "mul_const",
        "mul_relin",
        "rescale",
        "rotate",
        "ntt_forward",
    ] {
        let o = op(name);
        assert_eq!(o["bytes_uploaded"], 0, "{name}");
        assert_eq!(o["bytes_downloaded"], 0, "{name}");
        assert!(o["launches"].as_u64().unwrap() >= 1, "{name}");
        let (t, wall) = (
            o["median_us"].as_f64().unwrap(),
            o["wall_median_us"].as_f64().unwrap(),
        );
        assert!(t > 0.0 && wall > 0.0, "{name}: {t} / {wall} us");
    }
    assert_eq!(op("ntt_forward")["launches"], 1); // N = 1024 <= one tile
    assert!(op("encrypt").get("launches").is_none()); // client side, on the host
}

#[test]
fn keygen_encrypt_score_decrypt_as_separate_client_and_server_steps() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/cryptonets-poly2.safetensors"
    );
    let (ok, _, stderr) = cryptodl(&["keygen", "--out", &p("keys")]);
    assert!(ok, "{stderr}");
    // Keys are never overwritten.
    let (ok, _, stderr) = cryptodl(&["keygen", "--out", &p("keys")]);
    assert!(!ok && stderr.contains("never overwritten"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&[
        "encrypt",
        "--model",
        model,
        "--keys",
        &p("keys"),
        "--limit",
        "40",
        "--out",
        &p("enc"),
    ]);
    assert!(ok, "{stderr}");
    // The server has the evaluation keys only.
    let server_keys = dir.path().join("server");
    std::fs::create_dir_all(&server_keys).unwrap();
    std::fs::copy(
        dir.path().join("keys/eval.keys"),
        server_keys.join("eval.keys"),
    )
    .unwrap();
    let score = |out: &str| {
        cryptodl(&[
            "score",
            "--model",
            model,
            "--eval-keys",
            server_keys.join("eval.keys").to_str().unwrap(),
            "--in",
            &p("enc"),
            "--out",
            out,
            "--json",
        ])
    };
    // Decrypting before scoring says what to do.
    let (ok, _, stderr) = cryptodl(&["decrypt", "--keys", &p("keys"), "--in", &p("enc")]);
    assert!(!ok && stderr.contains("cryptodl score"), "{stderr}");
    let (ok, stdout, stderr) = score(&p("scored"));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["scored"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(0))
    );
    // A re-run resumes: nothing left to do.
    let (ok, stdout, stderr) = score(&p("scored"));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["scored"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(1))
    );
    let (ok, stdout, stderr) = cryptodl(&[
        "decrypt",
        "--keys",
        &p("keys"),
        "--in",
        &p("scored"),
        "--dataset",
        "fashion-mnist",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["images"], 40);
    assert_eq!(v["predictions"].as_array().unwrap().len(), 40);
    assert!(v["accuracy"].as_f64().unwrap() > 0.75, "{v}");
    // A truncated ciphertext file is refused with the file named.
    let batch = dir.path().join("enc/batch-00000.cts");
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, stderr) = score(&p("scored2"));
    assert!(!ok && stderr.contains("batch-00000.cts"), "{stderr}");
}

/// A small model at `toy4096`: flatten, dense 4, poly2, dense 3 (4 of the 5 levels).
fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    use cryptodl::nn::activation::Polynomial;
    use cryptodl::nn::model::{Activation, Layer, Model, Normalization};
    let path = dir.join("tiny.safetensors");
    let w = |o: usize, i: usize| {
        ndarray::Array2::from_shape_fn((o, i), |(a, b)| ((a * 7 + b * 3) % 11) as f64 / 40.0 - 0.1)
    };
    Model {
        name: "tiny".into(),
        input: [1, 8, 8],
        normalization: Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        },
        layers: vec![
            Layer::Flatten,
            Layer::Dense {
                weight: w(4, 64),
                bias: ndarray::Array1::from(vec![0.1, -0.2, 0.05, 0.0]),
            },
            Layer::Act(Activation::Poly {
                coeffs: Polynomial::new(vec![0.375, 0.5, 0.1171875]),
            }),
            Layer::Dense {
                weight: w(3, 4),
                bias: ndarray::Array1::zeros(3),
            },
        ],
        training: serde_json::Value::Null,
    }
    .save(&path)
    .unwrap();
    path
}

/// `bench model` of `model` at the insecure toy4096 preset, then `extra`.
fn bench_tiny<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "bench",
        "model",
        "--model",
        model,
        "--preset",
        "toy4096",
        "--insecure",
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn bench_model_reports_every_step_and_reuses_memory() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let model = model.to_str().unwrap();
    let args = |backend: &'static str| {
        bench_tiny(
            model,
            &[
                "--batches",
                "2",
                "--threads",
                "2",
                "--backend",
                backend,
                "--json",
            ],
        )
    };
    let (ok, stdout, stderr) = cryptodl(&args("cpu"));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["insecure"], true);
    assert_eq!(
        (v["threads"].as_u64(), v["batch_size"].as_u64()),
        (Some(2), Some(2048))
    );
    assert_eq!(v["batches"], 2);
    assert_eq!(
        v["input_level"], 4,
        "4 of toy4096's 5 levels: inputs one level down"
    );
    let layers = v["layers"].as_array().unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["linear", "square", "linear"]);
    assert_eq!(layers[0]["ciphertexts_in"], 64);
    assert_eq!(layers[2]["ciphertexts_out"], 3);
    for l in layers {
        assert!(l["seconds"].as_f64().unwrap() > 0.0);
        assert!(l["launches"].as_u64().unwrap() >= 1);
        assert_eq!(
            l["bytes_uploaded"], 0,
            "the steps run on resident ciphertexts"
        );
    }
    let bps = v["batch_seconds"].as_f64().unwrap();
    let pph = v["predictions_per_hour"].as_f64().unwrap();
    assert!((pph - 2048.0 / bps * 3600.0).abs() < 1e-6 * pph);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    // Two workers interleave differently from batch to batch, so the second batch's peak may top
    // the first's by a buffer or two (seen in CI: 96 KiB of a 12 MB peak); a pool that stopped
    // reusing memory would take the whole peak fresh again.
    let (fresh, peak) = (
        v["fresh_bytes"].as_u64().unwrap(),
        v["peak_memory_bytes"].as_u64().unwrap(),
    );
    assert!(
        fresh * 20 <= peak,
        "a batch after the warm-up takes (almost) only pooled memory: {fresh} fresh bytes, peak {peak}"
    );
    assert_eq!(
        v["disagreements_beyond_ties"], 0,
        "random inputs: near-ties may go either way, nothing else"
    );
    assert!(v["max_logit_error"].as_f64().unwrap() < 1e-2);
    assert_eq!(
        v["bytes_uploaded"].as_u64().unwrap(),
        64 * 2 * 5 * 4096 * 4,
        "host -> backend: the batch's 64 ciphertexts of 5 limbs, nothing else"
    );

    // The same on a GPU: the same steps, the inputs uploaded once per batch.
    let (ok, stdout, stderr) = cryptodl(&args("gpu"));
    if no_gpu(ok, &stderr, "bench model --backend gpu") {
        return;
    }
    assert!(ok, "{stderr}");
    let g: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(g["backend"], "gpu");
    assert!(g["adapter"].as_str().is_some());
    assert_eq!(g["disagreements_beyond_ties"], 0);
    assert_eq!(g["bytes_uploaded"], v["bytes_uploaded"]);
    assert_eq!(
        g["bytes_downloaded"].as_u64().unwrap(),
        3 * 2 * 2 * 4096 * 4,
        "backend -> host: the 3 logits ciphertexts (2 limbs), nothing else"
    );
    assert_eq!(g["layers"].as_array().unwrap().len(), 3);
}

#[test]
fn counts_only_predicts_what_a_real_gpu_run_dispatches() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let model = model.to_str().unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = bench_tiny(model, &["--batches", "1", "--backend", "gpu", "--json"]);
        a.extend_from_slice(extra);
        a
    };
    // The options are GPU-only, and whatever the device, a too-small limit is refused.
    let (ok, _, stderr) = cryptodl(&bench_tiny(model, &["--counts-only"]));
    assert!(!ok && stderr.contains("--backend gpu"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&args(&["--max-binding", "12 parsecs"]));
    assert!(!ok && stderr.contains("give bytes"), "{stderr}");

    // A real run with small bindings (the tiny layer of 64 ciphertexts goes in several chunks).
    let (ok, stdout, stderr) = cryptodl(&args(&["--max-binding", "3MiB"]));
    if no_gpu(ok, &stderr, "bench model --counts-only") {
        return;
    }
    assert!(ok, "{stderr}");
    let real: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(real["gpu"]["max_binding_bytes"], 3 << 20);
    assert_eq!(real["gpu"]["counts_only"], false);
    assert_eq!(real["disagreements_beyond_ties"], 0);
    let chunk = real["chunk_size"].as_u64().unwrap();
    assert!(chunk < 64, "3 MiB bindings chunk the 64 inputs: {chunk}");

    // Counting only, the same limit: the same dispatches, counted the same, step by step.
    let (ok, stdout, stderr) = cryptodl(&args(&["--max-binding", "3MiB", "--counts-only"]));
    assert!(ok, "{stderr}");
    let counted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(counted["counts_only"], true);
    assert_eq!(counted["gpu"]["counts_only"], true);
    for key in [
        "chunk_size",
        "launches",
        "bytes_uploaded",
        "bytes_downloaded",
        "peak_memory_bytes",
        "counted",
    ] {
        assert_eq!(counted[key], real[key], "{key}");
    }
    let (rl, cl) = (
        real["layers"].as_array().unwrap(),
        counted["layers"].as_array().unwrap(),
    );
    assert_eq!(rl.len(), cl.len());
    for (r, c) in rl.iter().zip(cl) {
        for key in ["kind", "launches", "kernels", "ciphertexts_out"] {
            assert_eq!(c[key], r[key], "step {}: {key}", r["step"]);
        }
    }
    assert!(counted["counted"]["total"]["bytes"].as_u64().unwrap() > 0);

    // Larger bindings than the device has: only when counting; fewer launches, less traffic.
    let (ok, _, stderr) = cryptodl(&args(&["--max-binding", "1000GiB"]));
    assert!(!ok && stderr.contains("--counts-only"), "{stderr}");
    let (ok, stdout, stderr) = cryptodl(&args(&["--max-binding", "wgpu-max", "--counts-only"]));
    assert!(ok, "{stderr}");
    let big: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(big["gpu"]["max_binding_bytes"], 2147483647u64);
    assert!(big["chunk_size"].as_u64().unwrap() >= 64);
    assert!(big["launches"].as_u64().unwrap() < real["launches"].as_u64().unwrap());
    assert!(
        big["counted"]["total"]["bytes"].as_u64().unwrap()
            < real["counted"]["total"]["bytes"].as_u64().unwrap()
    );
}

#[test]
fn batches_in_flight_give_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let model = model.to_str().unwrap();
    for backend in ["cpu", "gpu"] {
        let (ok, stdout, stderr) = cryptodl(&bench_tiny(
            model,
            &[
                "--batches",
                "2",
                "--in-flight",
                "3",
                "--threads",
                "3",
                "--backend",
                backend,
                "--json",
            ],
        ));
        if backend == "gpu" && no_gpu(ok, &stderr, "bench model --in-flight") {
            return;
        }
        assert!(ok, "{backend}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let f = &v["in_flight"][0];
        assert_eq!(f["batches_in_flight"], 3, "{backend}");
        assert_eq!(f["batches"], 6, "{backend}");
        assert_eq!(f["same_logits"], true, "{backend}");
        assert!(f["predictions_per_hour"].as_f64().unwrap() > 0.0);
        assert_eq!(v["disagreements_beyond_ties"], 0);
    }
    let (ok, _, stderr) = cryptodl(&bench_tiny(
        model,
        &["--in-flight", "2", "--counts-only", "--backend", "gpu"],
    ));
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
}

/// Issue 21: without --preset, commands pick the smallest 128-bit preset deep enough for the
/// model and say so; the embedded MNIST model needs n16384; `demo --dataset mnist` needs the
/// MNIST test files and says where to put them.
#[test]
fn the_smallest_preset_that_fits_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let deep = root.join("models/cryptodl-poly2.safetensors");
    let out = dir.path().join("k");
    let (ok, stdout, e) = cryptodl(&[
        "keygen",
        "--model",
        deep.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{e}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["preset"], "n16384", "{r}");
    let (ok, _, e) = cryptodl(&[
        "keygen",
        "--model",
        deep.to_str().unwrap(),
        "--out",
        dir.path().join("k2").to_str().unwrap(),
    ]);
    assert!(
        ok && e.contains("preset n16384: the smallest 128-bit preset deep enough"),
        "{e}"
    );
    // The demo model still runs at n8192, the MNIST one at n16384.
    let (demo, mnist) = (
        cryptodl::nn::model::Model::demo().unwrap(),
        cryptodl::nn::model::Model::embedded(cryptodl::nn::dataset::DatasetKind::Mnist)
            .unwrap()
            .unwrap(),
    );
    for (m, want) in [(demo, "n8192"), (mnist, "n16384")] {
        let plan = cryptodl::sched::Plan::compile(&m).unwrap();
        let (p, chosen) = cryptodl::sched::parameters_for(&plan, None, false, false).unwrap();
        assert!(chosen && p.name() == want, "{}: {}", m.name, p.name());
    }
    let (ok, _, e) = cryptodl(&[
        "demo",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("t10k-images-idx3-ubyte"), "{e}");
}

#[test]
fn params_show_the_bootstrappable_presets() {
    let (ok, stdout, _) = cryptodl(&["params", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v.as_array().unwrap();
    let n65536 = rows.iter().find(|r| r["name"] == "n65536").unwrap();
    assert_eq!(n65536["secure"], true);
    assert!(n65536["log_qp"].as_f64().unwrap() <= 1772.0);
    assert_eq!(n65536["bootstrap_primes"], 30);
    assert_eq!(n65536["primes_after_bootstrap"], 18);
    let n8192 = rows.iter().find(|r| r["name"] == "n8192").unwrap();
    assert!(n8192["bootstrap_primes"].is_null());
}

#[test]
fn bench_bootstrap_json_on_the_toy_preset_and_clear_refusals() {
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "bootstrap",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--reps",
        "1",
        "--failures",
        "3",
        "--threads",
        "2",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["insecure"], true);
    assert_eq!(v["primes_consumed"], 28);
    assert_eq!(v["output_level"], 7);
    assert!(v["precision"]["mean_bits"].as_f64().unwrap() > 20.0, "{v}");
    assert_eq!(v["failures"]["failures"], 0, "{v}");
    assert_eq!(v["stages"].as_array().unwrap().len(), 4);
    assert!(v["key_bytes"].as_u64().unwrap() > 0);
    // Insecure presets need the opt-in; presets without a circuit are refused naming the ones
    // that have one.
    let (ok, _, stderr) = cryptodl(&["bench", "bootstrap", "--preset", "toyboot1024"]);
    assert!(!ok && stderr.contains("insecure"), "{stderr}");
    let (ok, _, stderr) = cryptodl(&["bench", "bootstrap", "--preset", "n8192"]);
    assert!(!ok && stderr.contains("not bootstrappable"), "{stderr}");
    // Sparse packing: 8 slots (3 DFT stages, so 3 levels each), precision over every copy.
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "bootstrap",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--reps",
        "1",
        "--slots",
        "8",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["slots"], 8);
    assert!(v["precision"]["mean_bits"].as_f64().unwrap() > 18.0, "{v}");
    let (ok, _, stderr) = cryptodl(&[
        "bench",
        "bootstrap",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--slots",
        "100",
    ]);
    assert!(!ok && stderr.contains("--slots 100"), "{stderr}");
}

#[test]
fn bench_bootstrap_gpu_gives_the_cpus_precision() {
    let args = [
        "bench",
        "bootstrap",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--reps",
        "1",
        "--backend",
        "gpu",
        "--json",
    ];
    let (ok, stdout, stderr) = cryptodl(&args);
    if no_gpu(ok, &stderr, "bench bootstrap --backend gpu") {
        return;
    }
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["precision"]["mean_bits"].as_f64().unwrap() > 20.0, "{v}");
    assert!(v["adapter_type"].is_string());
}

#[test]
fn keygen_bootstrap_writes_the_encapsulation_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let out = out.to_str().unwrap();
    let (ok, stdout, stderr) = cryptodl(&[
        "keygen",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--bootstrap",
        "--out",
        out,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bootstrap"], true);
    assert_eq!(v["rotations"], 17, "{v}");
    let (ok, _, stderr) = cryptodl(&[
        "keygen",
        "--preset",
        "toy1024",
        "--insecure",
        "--bootstrap",
        "--out",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("not bootstrappable"), "{stderr}");
    // Sparse packing's keys: the rotations of 64-slot DFTs and of the sum over the copies.
    let sparse = dir.path().join("sparse");
    let (ok, stdout, stderr) = cryptodl(&[
        "keygen",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--bootstrap",
        "--bootstrap-slots",
        "64",
        "--out",
        sparse.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bootstrap_slots"], 64, "{v}");
    assert_eq!(v["rotations"], 16, "{v}");
    let (ok, _, stderr) = cryptodl(&[
        "keygen",
        "--preset",
        "toyboot1024",
        "--insecure",
        "--bootstrap",
        "--bootstrap-slots",
        "48",
        "--out",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("power of two"), "{stderr}");
}
