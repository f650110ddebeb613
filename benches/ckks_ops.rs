//! Criterion benches of CKKS operations at the N=8192 preset (single thread), the same set as
//! `cryptodl bench ops`.

use criterion::{criterion_group, criterion_main, Criterion};
use cryptodl::ckks::*;

fn ops(c: &mut Criterion) {
    // Single thread: the global rayon pool gets one worker.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    {
        let params = Preset::by_name("n8192").unwrap().parameters(false).unwrap();
        let ctx = Context::new(&params).unwrap();
        let mut kg = KeyGenerator::new(ctx.clone());
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let keys = kg.evaluation_keys(&sk, &[1], false).unwrap();
        let enc = Encoder::new(ctx.clone());
        let mut encryptor = Encryptor::new(ctx.clone());
        let dec = Decryptor::new(ctx.clone());
        let eval = Evaluator::new(ctx.clone());
        let top = params.max_level();
        let vals: Vec<f64> = (0..params.slots())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let pt = enc.encode(&vals, top, params.default_scale()).unwrap();
        let ct = encryptor.encrypt(&pt, &pk).unwrap();
        let mut g = c.benchmark_group("ckks_n8192");
        g.sample_size(20);
        g.bench_function("encode", |b| {
            b.iter(|| enc.encode(&vals, top, params.default_scale()).unwrap())
        });
        g.bench_function("encrypt", |b| {
            b.iter(|| encryptor.encrypt(&pt, &pk).unwrap())
        });
        g.bench_function("decrypt_decode", |b| {
            b.iter(|| enc.decode(&dec.decrypt(&ct, &sk).unwrap()))
        });
        // The server's ops: the batched evaluator on a resident ciphertext (as `bench ops`).
        let dev = eval.device();
        let keys = dev.upload_keys(&keys).unwrap();
        let x = dev.upload(std::slice::from_ref(&ct)).unwrap();
        g.bench_function("add", |b| b.iter(|| dev.add(&x, &x).unwrap()));
        g.bench_function("mul_const_rescale", |b| {
            b.iter(|| dev.rescale(&dev.mul_const(&x, 0.7, None).unwrap()).unwrap())
        });
        g.bench_function("mul_relin_rescale", |b| {
            b.iter(|| dev.mul_relin_rescale(&x, &x, &keys).unwrap())
        });
        g.bench_function("rotate", |b| b.iter(|| dev.rotate(&x, 1, &keys).unwrap()));
        g.finish();
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
