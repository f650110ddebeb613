//! Criterion benches of the kernels: forward/inverse NTT of one limb, base conversion.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::primes::ntt_primes;

fn ntt(c: &mut Criterion) {
    let mut g = c.benchmark_group("ntt");
    for log_n in [12u32, 13, 14, 15] {
        let n = 1usize << log_n;
        let q = ntt_primes(30, n, 1, &[]).unwrap()[0];
        let t = NttTable::new(q, n).unwrap();
        let mut a: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % q)
            .collect();
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| t.forward(&mut a))
        });
        g.bench_with_input(BenchmarkId::new("inverse", n), &n, |b, _| {
            b.iter(|| t.inverse(&mut a))
        });
    }
    g.finish();
}

criterion_group!(benches, ntt);
criterion_main!(benches);
