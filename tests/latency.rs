//! Latency packing (issue 11): one image across the slots of a few ciphertexts, with
//! rotations; the encrypted logits equal the plaintext reference's, the GPU's ciphertexts equal
//! the CPU's word for word, and the keys hold exactly the plan's rotations.

use std::sync::Arc;

use cryptodl::ckks::*;
use cryptodl::nn::dataset::DatasetKind;
use cryptodl::nn::model::Model;
use cryptodl::nn::reference;
use cryptodl::sched::latency::LatencyPlan;
use cryptodl::sched::{Device, Plan, Session};

mod common;

struct Client {
    ctx: Arc<Context>,
    sk: SecretKey,
    pk: PublicKey,
    keys: EvaluationKeys,
    enc: Encoder,
}

fn client(params: &Parameters, plan: &LatencyPlan, seed: u64) -> Client {
    let ctx = Context::new(params).unwrap();
    let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(seed));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &plan.rotations(), false).unwrap();
    Client {
        enc: Encoder::new(ctx.clone()),
        ctx,
        sk,
        pk,
        keys,
    }
}

#[test]
fn cryptonets_in_latency_packing_gives_the_reference_logits() {
    let model = Model::demo().unwrap();
    let plan = Plan::compile(&model).unwrap();
    let params = Preset::by_name("n8192").unwrap().parameters(false).unwrap();
    let lp = LatencyPlan::compile(&plan, &params).unwrap();
    // The first convolution from a client-side gather (25 ciphertexts), then two dense layers
    // by diagonals.
    assert_eq!(lp.input_ciphertexts(), 25);
    let kinds: Vec<&str> = lp.ops.iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        ["gather", "square", "diagonal", "square", "diagonal"]
    );
    let c = client(&params, &lp, 5);
    assert_eq!(c.keys.galois.len(), lp.rotations().len());
    let session = Session::new(Device::Cpu, c.ctx.clone(), &c.keys).unwrap();
    let test = DatasetKind::FashionMnist.load_test(None).unwrap().take(6);
    let mut encryptor = Encryptor::with_sampler(c.ctx.clone(), Sampler::from_seed_insecure(9));
    let dec = Decryptor::new(c.ctx.clone());
    let mut first = None;
    for i in 0..test.len() {
        let x = reference::normalize(&model, test.image(i));
        let cts = lp.encrypt_image(&c.enc, &mut encryptor, &c.pk, &x).unwrap();
        let scored = session.score_latency(&lp, &cts).unwrap();
        let got = lp
            .decrypt_logits(&dec, &c.enc, &c.sk, &scored.logits)
            .unwrap();
        let want = reference::forward(&model, &x).unwrap();
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
        assert!(err < 1e-2, "image {i}: logit error {err}");
        assert!(reference::agrees(&want, &got), "image {i}");
        if first.is_none() {
            first = Some((cts, scored.logits));
        }
    }
    // The GPU gives the same ciphertext, word for word.
    let Some(rt) = common::gpu() else { return };
    let (cts, cpu_logits) = first.unwrap();
    let gpu = Session::new(Device::Gpu(rt), c.ctx.clone(), &c.keys).unwrap();
    let g = gpu.score_latency(&lp, &cts).unwrap();
    assert_eq!(g.logits, cpu_logits, "GPU == CPU for a full image");
}

#[test]
fn a_missing_rotation_key_names_the_rotation() {
    let model = Model::demo().unwrap();
    let plan = Plan::compile(&model).unwrap();
    let params = Preset::by_name("n8192").unwrap().parameters(false).unwrap();
    let lp = LatencyPlan::compile(&plan, &params).unwrap();
    let mut c = client(&params, &lp, 7);
    let missing = lp.rotations()[3];
    let g = c.ctx.galois_element(missing);
    c.keys.galois.remove(&g);
    let session = Session::new(Device::Cpu, c.ctx.clone(), &c.keys).unwrap();
    let mut encryptor = Encryptor::with_sampler(c.ctx.clone(), Sampler::from_seed_insecure(3));
    let x = vec![0.1; 784];
    let cts = lp.encrypt_image(&c.enc, &mut encryptor, &c.pk, &x).unwrap();
    let e = session.score_latency(&lp, &cts).err().unwrap().to_string();
    assert!(e.contains(&format!("{missing}")), "{e}");
}

#[test]
fn plan_keygen_encrypt_score_decrypt_and_bench_in_latency_packing() {
    use common::job::{cryptodl, json};
    // `plan` lists the rotations and the key size; `keygen` makes exactly those keys.
    let (ok, out, e) = cryptodl(&["plan", "--packing", "latency", "--json"]);
    assert!(ok, "{e}");
    let p = json(&out);
    let rotations = p["rotations"].as_array().unwrap().len();
    assert_eq!(p["input_ciphertexts"], 25);
    assert_eq!(p["preset"], "n8192");
    assert_eq!(
        p["evaluation_key_bytes"].as_u64().unwrap(),
        p["galois_key_bytes"].as_u64().unwrap() * (rotations as u64 + 1)
    );
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/cryptonets-poly2.safetensors"
    );
    let (ok, out, e) = cryptodl(&[
        "keygen",
        "--packing",
        "latency",
        "--out",
        &d("keys"),
        "--json",
    ]);
    assert!(ok, "{e}");
    assert_eq!(
        json(&out)["rotations"].as_u64().unwrap() as usize,
        rotations
    );
    let (ok, out, e) = cryptodl(&[
        "encrypt",
        "--model",
        model,
        "--keys",
        &d("keys"),
        "--packing",
        "latency",
        "--limit",
        "20",
        "--out",
        &d("enc"),
        "--json",
    ]);
    assert!(ok, "{e}");
    assert_eq!(json(&out)["batches"], 2);
    let score = |keys: &str, out: &str| {
        cryptodl(&[
            "score",
            "--model",
            model,
            "--eval-keys",
            &d(&format!("{keys}/eval.keys")),
            "--in",
            &d("enc"),
            "--out",
            &d(out),
            "--json",
        ])
    };
    let (ok, _, e) = score("keys", "scored");
    assert!(ok, "{e}");
    let (ok, out, e) = cryptodl(&[
        "decrypt",
        "--keys",
        &d("keys"),
        "--in",
        &d("scored"),
        "--json",
    ]);
    assert!(ok, "{e}");
    let predictions: Vec<usize> = json(&out)["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as usize)
        .collect();
    let m = Model::load(std::path::Path::new(model)).unwrap();
    let test = DatasetKind::FashionMnist.load_test(None).unwrap().take(20);
    let want: Vec<usize> = (0..20)
        .map(|i| {
            reference::argmax(
                &reference::forward(&m, &reference::normalize(&m, test.image(i))).unwrap(),
            )
        })
        .collect();
    assert_eq!(predictions, want);
    // A job in latency packing with keys that lack its rotations: named before any work.
    let (ok, _, e) = cryptodl(&["keygen", "--out", &d("plain-keys")]);
    assert!(ok, "{e}");
    let (ok, _, e) = cryptodl(&[
        "encrypt",
        "--model",
        model,
        "--keys",
        &d("plain-keys"),
        "--packing",
        "latency",
        "--limit",
        "2",
        "--out",
        &d("enc2"),
    ]);
    assert!(ok, "{e}");
    let (ok, _, e) = cryptodl(&[
        "score",
        "--model",
        model,
        "--eval-keys",
        &d("plain-keys/eval.keys"),
        "--in",
        &d("enc2"),
        "--out",
        &d("s2"),
    ]);
    assert!(
        !ok && e.contains("no Galois key for rotation 1") && e.contains("--packing latency"),
        "{e}"
    );
    // infer and bench model in latency packing.
    let (ok, out, e) = cryptodl(&[
        "infer",
        "--model",
        model,
        "--packing",
        "latency",
        "--limit",
        "4",
        "--json",
    ]);
    assert!(ok, "{e}");
    let r = json(&out);
    assert_eq!(
        (
            r["samples"].as_u64(),
            r["disagreements_beyond_ties"].as_u64()
        ),
        (Some(4), Some(0))
    );
    let (ok, out, e) = cryptodl(&[
        "bench",
        "model",
        "--packing",
        "latency",
        "--batches",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(ok, "{e}");
    let r = json(&out);
    assert_eq!(r["packing"], "latency");
    assert_eq!(r["ops"].as_array().unwrap().len(), 5);
    assert!(r["latency_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(r["disagreements_beyond_ties"], 0);
}
