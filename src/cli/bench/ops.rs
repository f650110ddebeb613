//! `cryptodl bench ops`: the median time of every CKKS primitive, and its precision.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{GpuBackend, GpuRuntime};
use crate::backend::{Backend, Shape};
use crate::ckks::{
    precision_stats, Ciphertext, Context, Decryptor, DeviceCiphertext, DeviceEvaluator, DeviceKeys,
    Encoder, Encryptor, EvaluationKeys, KeyGenerator, Preset, Sampler,
};
use crate::cli::output::{median, print_json, thread_pool};
use crate::cli::server::{resolve, ServerArgs};
use crate::sched::Device;

/// Arguments of `cryptodl bench ops`.
#[derive(clap::Args, Debug)]
pub struct OpsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Parameter preset (see `cryptodl params`).
    #[arg(long, default_value = "n8192")]
    preset: String,
    /// Worker threads (rayon over ciphertexts, limbs and digits). Default: all cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Repetitions per operation (the median is reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    reps: u32,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct OpTime {
    op: &'static str,
    /// Median time of one run: GPU kernel time from timestamp queries for the GPU's server-side
    /// ops where the adapter has them (see `timing`), wall time otherwise.
    median_us: f64,
    /// GPU only: median wall time of one run plus one readback of its result.
    #[serde(skip_serializing_if = "Option::is_none")]
    wall_median_us: Option<f64>,
    /// Server-side ops: kernel launches of one run (GPU dispatches, CPU kernel calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    launches: Option<u64>,
    /// Server-side ops: bytes moved host -> backend by one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_uploaded: Option<u64>,
    /// Server-side ops: bytes moved backend -> host by one run (the timed readback excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_downloaded: Option<u64>,
}

impl OpTime {
    fn host(op: &'static str, median_us: f64) -> Self {
        Self {
            op,
            median_us,
            wall_median_us: None,
            launches: None,
            bytes_uploaded: None,
            bytes_downloaded: None,
        }
    }
}

#[derive(Serialize)]
struct Precision {
    fresh: f64,
    mul_relin: f64,
}

#[derive(Serialize)]
struct OpsReport {
    backend: String,
    /// GPU only: the adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
    /// What the times measure.
    timing: String,
    preset: String,
    n: usize,
    threads: usize,
    insecure: bool,
    ops: Vec<OpTime>,
    precision_bits: Precision,
}

fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..reps.max(1))
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

/// Runs `cryptodl bench ops`.
pub(super) fn run(args: OpsArgs) -> anyhow::Result<()> {
    let (pool, threads) = thread_pool(args.threads)?;
    let report = pool.install(|| bench_ops(&args, threads))?;
    if args.json {
        return print_json(&report);
    }
    print_ops(&report);
    Ok(())
}

fn print_ops(report: &OpsReport) {
    if report.insecure {
        println!(
            "WARNING: preset {} is INSECURE (below 128-bit security)",
            report.preset
        );
    }
    println!(
        "backend {} | preset {} | N = {} | threads {}",
        report.backend, report.preset, report.n, report.threads
    );
    println!("times: {}", report.timing);
    println!(
        "{:<12} {:>12} {:>12} {:>9} {:>14} {:>16}",
        "op", "median (us)", "wall (us)", "launches", "bytes uploaded", "bytes downloaded"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for o in &report.ops {
        println!(
            "{:<12} {:>12.1} {:>12} {:>9} {:>14} {:>16}",
            o.op,
            o.median_us,
            o.wall_median_us
                .map_or("-".to_string(), |w| format!("{w:.1}")),
            opt(o.launches),
            opt(o.bytes_uploaded),
            opt(o.bytes_downloaded)
        );
    }
    println!(
        "precision (mean bits): fresh {:.2}, mul_relin {:.2}",
        report.precision_bits.fresh, report.precision_bits.mul_relin
    );
}

/// Client-side material for the op benchmarks.
struct OpsFixture {
    ctx: std::sync::Arc<Context>,
    keys: EvaluationKeys,
    ca: Ciphertext,
    cb: Ciphertext,
    a: Vec<f64>,
    b: Vec<f64>,
}

fn bench_ops(args: &OpsArgs, threads: usize) -> anyhow::Result<OpsReport> {
    let params = Preset::by_name(&args.preset)?.parameters(args.insecure)?;
    let ctx = Context::new(&params)?;
    let n = params.n();
    let top = params.max_level();
    let scale = params.default_scale();
    let reps = args.reps as usize;
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[1], false)?;
    let enc = Encoder::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_os());
    let dec = Decryptor::new(ctx.clone());
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut vals = || {
        (0..params.slots())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>()
    };
    let (a, b) = (vals(), vals());
    let pa = enc.encode(&a, top, scale)?;
    let ca = encryptor.encrypt(&pa, &pk)?;
    let cb = encryptor.encrypt(&enc.encode(&b, top, scale)?, &pk)?;

    // Client side (host): the same on every backend.
    let mut ops = vec![
        OpTime::host(
            "encode",
            median_us(reps, || drop(enc.encode(&a, top, scale).unwrap())),
        ),
        OpTime::host(
            "encrypt",
            median_us(reps, || drop(encryptor.encrypt(&pa, &pk).unwrap())),
        ),
        OpTime::host(
            "decrypt",
            median_us(reps, || drop(enc.decode(&dec.decrypt(&ca, &sk).unwrap()))),
        ),
    ];
    let fx = OpsFixture {
        ctx: ctx.clone(),
        keys,
        ca,
        cb,
        a,
        b,
    };
    let (backend, adapter, timing, product) = match resolve(
        args.server.backend,
        args.server.adapter.as_deref(),
    )? {
        Device::Cpu => {
            let dev = DeviceEvaluator::new(ctx.clone(), CpuBackend::new(ctx.rns().clone()))?;
            // The NTT rows time the kernel on one limb in place (no copy).
            let table = &ctx.q_tables()[top];
            let mut limb: Vec<u32> = (0..n).map(|i| (i as u32 * 7919) % table.q()).collect();
            ops.push(OpTime::host(
                "ntt_forward",
                median_us(reps * 10, || table.forward(&mut limb)),
            ));
            ops.push(OpTime::host(
                "ntt_inverse",
                median_us(reps * 10, || table.inverse(&mut limb)),
            ));
            let product = server_ops(&dev, &fx, reps, None, &mut ops)?;
            (
                "cpu".to_string(),
                None,
                "wall time of one run (its result stays in host memory)".to_string(),
                product,
            )
        }
        Device::Gpu(rt) => {
            let dev =
                DeviceEvaluator::new(ctx.clone(), GpuBackend::new(rt.clone(), ctx.rns().clone())?)?;
            let limb = dev.backend().upload(
                &fx.ca.data()[top * n..(top + 1) * n],
                Shape::coeff(1, vec![top]),
            )?;
            let be = dev.backend();
            let timer = Some(rt.as_ref());
            ops.push(measure(be, reps, timer, "ntt_forward", &|| {
                let mut t = be.duplicate(&limb)?;
                be.ntt_forward(&mut t)?;
                Ok(t)
            })?);
            let mut limb_ntt = be.duplicate(&limb)?;
            be.ntt_forward(&mut limb_ntt)?;
            ops.push(measure(be, reps, timer, "ntt_inverse", &|| {
                let mut t = be.duplicate(&limb_ntt)?;
                be.ntt_inverse(&mut t)?;
                Ok(t)
            })?);
            let product = server_ops(&dev, &fx, reps, timer, &mut ops)?;
            let timing = if rt.adapter().timestamp_queries {
                "server-side ops: GPU time of their kernels from timestamp queries (wall time, with \
                 one readback, beside it); encode, encrypt and decrypt: wall time on the host \
                 (client side)"
            } else {
                "server-side ops: wall time of the op plus one readback of its result (this adapter \
                 has no timestamp queries); encode, encrypt and decrypt: wall time on the host \
                 (client side)"
            };
            (
                "gpu".to_string(),
                Some(rt.adapter().name.clone()),
                timing.to_string(),
                product,
            )
        }
    };
    const ORDER: [&str; 10] = [
        "ntt_forward",
        "ntt_inverse",
        "encode",
        "encrypt",
        "decrypt",
        "add",
        "mul_const",
        "mul_relin",
        "rescale",
        "rotate",
    ];
    ops.sort_by_key(|o| ORDER.iter().position(|&x| x == o.op));
    let fresh = precision_stats(&fx.a, &enc.decode(&dec.decrypt(&fx.ca, &sk)?)).mean_bits;
    let want: Vec<f64> = fx.a.iter().zip(&fx.b).map(|(x, y)| x * y).collect();
    let mul_relin = precision_stats(&want, &enc.decode(&dec.decrypt(&product, &sk)?)).mean_bits;
    Ok(OpsReport {
        backend,
        adapter,
        timing,
        preset: params.name().to_string(),
        n,
        threads,
        insecure: params.is_insecure(),
        ops,
        precision_bits: Precision { fresh, mul_relin },
    })
}

/// Times one server-side op on `be`: GPU kernel time from timestamp queries where `timer` has
/// them, else wall time (with one readback on a GPU, the only way to wait for it). The op's own
/// launches and transfers are counted.
fn measure<B: Backend>(
    be: &B,
    reps: usize,
    timer: Option<&GpuRuntime>,
    name: &'static str,
    op: &dyn Fn() -> anyhow::Result<B::Tensor>,
) -> anyhow::Result<OpTime> {
    let before = be.counters();
    let out = op()?;
    let c = be.counters() - before;
    if timer.is_some() {
        be.download(&out)?; // warm-up readback
    }
    drop(out);
    let (mut wall, mut kernel) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let timed = timer.is_some_and(|rt| rt.start_timing());
        let t = Instant::now();
        let out = op()?;
        if timer.is_some() {
            be.download(&out)?;
        }
        wall.push(t.elapsed().as_secs_f64() * 1e6);
        drop(out);
        if let Some(rt) = timer {
            if let Some(secs) = rt.finish_timing()?.filter(|_| timed) {
                kernel.push(secs * 1e6);
            }
        }
    }
    let wall = median(wall);
    Ok(OpTime {
        op: name,
        median_us: if kernel.is_empty() {
            wall
        } else {
            median(kernel)
        },
        wall_median_us: timer.map(|_| wall),
        launches: Some(c.launches),
        bytes_uploaded: Some(c.upload_bytes),
        bytes_downloaded: Some(c.download_bytes),
    })
}

/// Times the server-side ops of the evaluator on resident ciphertexts; returns the product of
/// `mul_relin` (for its precision).
fn server_ops<B: Backend>(
    dev: &DeviceEvaluator<B>,
    fx: &OpsFixture,
    reps: usize,
    timer: Option<&GpuRuntime>,
    ops: &mut Vec<OpTime>,
) -> anyhow::Result<Ciphertext> {
    let ga = dev.upload(std::slice::from_ref(&fx.ca))?;
    let gb = dev.upload(std::slice::from_ref(&fx.cb))?;
    let keys: DeviceKeys<B::Tensor> = dev.upload_keys(&fx.keys)?;
    let be = dev.backend();
    let ct = |c: DeviceCiphertext<B::Tensor>| -> anyhow::Result<B::Tensor> { Ok(c.into_tensor()) };
    // `add` is cheap: more repetitions for a stable median.
    ops.push(measure(be, reps * 4, timer, "add", &|| {
        ct(dev.add(&ga, &gb)?)
    })?);
    ops.push(measure(be, reps, timer, "mul_const", &|| {
        ct(dev.rescale(&dev.mul_const(&ga, 0.7, None)?)?)
    })?);
    ops.push(measure(be, reps, timer, "mul_relin", &|| {
        ct(dev.mul_relin_rescale(&ga, &gb, &keys)?)
    })?);
    ops.push(measure(be, reps, timer, "rescale", &|| {
        ct(dev.rescale(&ga)?)
    })?);
    ops.push(measure(be, reps, timer, "rotate", &|| {
        ct(dev.rotate(&ga, 1, &keys)?)
    })?);
    let product = dev.download(&dev.mul_relin_rescale(&ga, &gb, &keys)?)?;
    let _ = fx.ctx.params();
    Ok(product.into_iter().next().expect("a batch of one"))
}
