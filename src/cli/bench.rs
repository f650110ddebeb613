//! `cryptodl bench`: time CKKS primitives.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::output::print_json;
use crate::ckks::{
    precision_stats, Context, Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, Preset,
    Sampler,
};

/// `cryptodl bench` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Median time of each CKKS primitive at the top level, on random inputs.
    ///
    /// Ops: ntt_forward / ntt_inverse (one limb), encode, encrypt (public key), decrypt
    /// (decrypt + decode), add, mul_const (incl. rescale), mul_relin (ct x ct + relinearize +
    /// rescale), rescale, rotate (by one slot). Also reports the mean precision (bits) of a fresh
    /// encryption and of a mul_relin result, for inputs uniform in [-1, 1].
    Ops(OpsArgs),
}

/// Which implementation runs the operations.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The CPU path (kernels crate + rayon).
    Cpu,
    /// The wgpu backend: server-side ops on device-resident tensors (client ops stay on the host).
    Gpu,
}

/// Arguments of `cryptodl bench ops`.
#[derive(clap::Args, Debug)]
pub struct OpsArgs {
    /// Backend to time.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Parameter preset (see `cryptodl params`).
    #[arg(long, default_value = "n8192")]
    preset: String,
    /// Worker threads (rayon over limbs and ciphertexts). Default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Repetitions per operation (the median is reported).
    #[arg(long, default_value_t = 15)]
    reps: usize,
    /// GPU adapter (case-insensitive substring of its name; default: $CRYPTODL_ADAPTER, else the
    /// most powerful one). Only with `--backend gpu`.
    #[arg(long)]
    adapter: Option<String>,
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
    /// GPU only: compute dispatches of one run of the op.
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatches: Option<u64>,
    /// GPU only: bytes moved host -> device by one run of the op.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_uploaded: Option<u64>,
    /// GPU only: bytes moved device -> host by one run of the op (the timed readback excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_downloaded: Option<u64>,
}

#[derive(Serialize)]
struct Precision {
    fresh: f64,
    mul_relin: f64,
}

#[derive(Serialize)]
struct OpsReport {
    backend: &'static str,
    /// GPU only: the adapter, and what the times measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timing: Option<String>,
    preset: String,
    n: usize,
    threads: usize,
    insecure: bool,
    ops: Vec<OpTime>,
    precision_bits: Precision,
}

fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Runs `cryptodl bench`.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ops(args) => {
            let threads = args.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("could not start the worker threads")?;
            let report = pool.install(|| bench_ops(&args, threads))?;
            if args.json {
                return print_json(&report);
            }
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
            if let (Some(a), Some(t)) = (&report.adapter, &report.timing) {
                println!("adapter {a} | times: {t}");
            }
            println!(
                "{:<12} {:>12} {:>12} {:>11} {:>14} {:>16}",
                "op",
                "median (us)",
                "wall (us)",
                "dispatches",
                "bytes uploaded",
                "bytes downloaded"
            );
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            for o in &report.ops {
                println!(
                    "{:<12} {:>12.1} {:>12} {:>11} {:>14} {:>16}",
                    o.op,
                    o.median_us,
                    o.wall_median_us
                        .map_or("-".to_string(), |w| format!("{w:.1}")),
                    opt(o.dispatches),
                    opt(o.bytes_uploaded),
                    opt(o.bytes_downloaded)
                );
            }
            println!(
                "precision (mean bits): fresh {:.2}, mul_relin {:.2}",
                report.precision_bits.fresh, report.precision_bits.mul_relin
            );
            Ok(())
        }
    }
}

fn bench_ops(args: &OpsArgs, threads: usize) -> anyhow::Result<OpsReport> {
    let params = Preset::by_name(&args.preset)?.parameters(args.insecure)?;
    let ctx = Context::new(&params)?;
    let n = params.n();
    let top = params.max_level();
    let scale = params.default_scale();
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[1], false)?;
    let enc = Encoder::new(ctx.clone());
    let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_os());
    let dec = Decryptor::new(ctx.clone());
    let eval = Evaluator::new(ctx.clone());
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut vals = || {
        (0..params.slots())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>()
    };
    let (a, b) = (vals(), vals());
    let pa = enc.encode(&a, top, scale)?;
    let pb = enc.encode(&b, top, scale)?;
    let ca = encryptor.encrypt(&pa, &pk)?;
    let cb = encryptor.encrypt(&pb, &pk)?;

    let table = &ctx.q_tables()[top];
    let mut limb: Vec<u32> = (0..n).map(|_| rng.random_range(0..table.q())).collect();
    let reps = args.reps;
    let mut ops = Vec::new();
    let mut push = |op: &'static str, us: f64| {
        ops.push(OpTime {
            op,
            median_us: us,
            wall_median_us: None,
            dispatches: None,
            bytes_uploaded: None,
            bytes_downloaded: None,
        })
    };
    push(
        "ntt_forward",
        median_us(reps * 10, || table.forward(&mut limb)),
    );
    push(
        "ntt_inverse",
        median_us(reps * 10, || table.inverse(&mut limb)),
    );
    push(
        "encode",
        median_us(reps, || drop(enc.encode(&a, top, scale).unwrap())),
    );
    push(
        "encrypt",
        median_us(reps, || drop(encryptor.encrypt(&pa, &pk).unwrap())),
    );
    push(
        "decrypt",
        median_us(reps, || drop(enc.decode(&dec.decrypt(&ca, &sk).unwrap()))),
    );
    if args.backend == BackendChoice::Gpu {
        let fresh = precision_stats(&a, &enc.decode(&dec.decrypt(&ca, &sk)?)).mean_bits;
        let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        let m = eval.mul_relin_rescale(&ca, &cb, &keys)?;
        let mul_relin = precision_stats(&want, &enc.decode(&dec.decrypt(&m, &sk)?)).mean_bits;
        // The NTT rows become the GPU's; encode / encrypt / decrypt stay the host's.
        ops.retain(|o| !o.op.starts_with("ntt"));
        let (adapter, timing) = gpu_ops(args, &ctx, &ca, &cb, &keys, &mut ops)?;
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
        return Ok(OpsReport {
            backend: "gpu",
            adapter: Some(adapter),
            timing: Some(timing),
            preset: params.name().to_string(),
            n,
            threads,
            insecure: params.is_insecure(),
            ops,
            // The GPU results equal the CPU's word for word (see `cryptodl verify`).
            precision_bits: Precision { fresh, mul_relin },
        });
    }
    push(
        "add",
        median_us(reps * 4, || drop(eval.add(&ca, &cb).unwrap())),
    );
    push(
        "mul_const",
        median_us(reps, || {
            let mut c = eval.mul_const(&ca, 0.7, None).unwrap();
            eval.rescale_assign(&mut c).unwrap();
        }),
    );
    push(
        "mul_relin",
        median_us(reps, || {
            drop(eval.mul_relin_rescale(&ca, &cb, &keys).unwrap())
        }),
    );
    let prod = eval.mul(&ca, &cb)?;
    let mut relin = prod.clone();
    eval.relinearize_assign(&mut relin, &keys)?;
    push(
        "rescale",
        median_us(reps, || {
            let mut c = relin.clone();
            eval.rescale_assign(&mut c).unwrap();
        }),
    );
    push(
        "rotate",
        median_us(reps, || drop(eval.rotate(&ca, 1, &keys).unwrap())),
    );

    let fresh = precision_stats(&a, &enc.decode(&dec.decrypt(&ca, &sk)?)).mean_bits;
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let m = eval.mul_relin_rescale(&ca, &cb, &keys)?;
    let mul_relin = precision_stats(&want, &enc.decode(&dec.decrypt(&m, &sk)?)).mean_bits;
    Ok(OpsReport {
        backend: "cpu",
        adapter: None,
        timing: None,
        preset: params.name().to_string(),
        n,
        threads,
        insecure: params.is_insecure(),
        ops,
        precision_bits: Precision { fresh, mul_relin },
    })
}

/// Times the server-side ops of the CKKS [`DeviceEvaluator`] on device-resident ciphertexts;
/// returns the adapter's name and what the times measure.
fn gpu_ops(
    args: &OpsArgs,
    ctx: &Arc<Context>,
    ca: &crate::ckks::Ciphertext,
    cb: &crate::ckks::Ciphertext,
    keys: &crate::ckks::EvaluationKeys,
    ops: &mut Vec<OpTime>,
) -> anyhow::Result<(String, String)> {
    use crate::backend::gpu::{AdapterChoice, GpuBackend, GpuRuntime};
    use crate::backend::{Backend, Shape};
    use crate::ckks::{rns_context, DeviceCiphertext, DeviceEvaluator};

    let params = ctx.params();
    let rt = GpuRuntime::open(&AdapterChoice::from_arg(args.adapter.as_deref()))
        .context("`--backend gpu` needs a GPU adapter (see `cryptodl devices`)")?;
    let adapter = rt.adapter().name.clone();
    let n = params.n();
    let top = params.max_level();
    let dev = DeviceEvaluator::new(ctx.clone(), GpuBackend::new(rt, rns_context(params)?)?)?;
    let gpu = dev.backend();
    let ga = dev.upload(std::slice::from_ref(ca))?;
    let gb = dev.upload(std::slice::from_ref(cb))?;
    let dkeys = dev.upload_keys(keys)?;
    let limb = gpu.upload(
        &ca.data()[top * n..(top + 1) * n],
        Shape {
            polys: 1,
            moduli: vec![top],
        },
    )?;
    type Tensor = <GpuBackend as Backend>::Tensor;

    // One run of `op` yields a result tensor. Its kernels are timed on the GPU with timestamp
    // queries where the adapter has them; the wall time includes one readback of the result (the
    // only way to wait for the device). The op's own dispatches and transfers are counted.
    let rt = gpu.runtime();
    let timestamps = rt.adapter().timestamp_queries;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut measure =
        |name: &'static str, op: &dyn Fn() -> anyhow::Result<Tensor>| -> anyhow::Result<()> {
            let before = gpu.counters();
            let out = op()?;
            let after = gpu.counters();
            gpu.download(&out)?; // warm-up readback
            let (mut wall, mut kernel) = (Vec::new(), Vec::new());
            for _ in 0..args.reps.max(1) {
                let timed = rt.start_timing();
                let t = Instant::now();
                let out = op()?;
                gpu.download(&out)?;
                wall.push(t.elapsed().as_secs_f64() * 1e6);
                if let Some(secs) = rt.finish_timing()?.filter(|_| timed) {
                    kernel.push(secs * 1e6);
                }
            }
            let wall = median(wall);
            ops.push(OpTime {
                op: name,
                median_us: if kernel.is_empty() {
                    wall
                } else {
                    median(kernel)
                },
                wall_median_us: Some(wall),
                dispatches: Some(after.dispatches - before.dispatches),
                bytes_uploaded: Some(after.upload_bytes - before.upload_bytes),
                bytes_downloaded: Some(after.download_bytes - before.download_bytes),
            });
            Ok(())
        };
    let ct = |c: DeviceCiphertext<Tensor>| -> anyhow::Result<Tensor> { Ok(c.into_tensor()) };
    measure("ntt_forward", &|| {
        let mut t = gpu.duplicate(&limb)?;
        gpu.ntt_forward(&mut t)?;
        Ok(t)
    })?;
    measure("ntt_inverse", &|| {
        let mut t = gpu.duplicate(&limb)?;
        gpu.ntt_inverse(&mut t)?;
        Ok(t)
    })?;
    measure("add", &|| ct(dev.add(&ga, &gb)?))?;
    measure("mul_const", &|| {
        ct(dev.rescale(&dev.mul_const(&ga, 0.7, None)?)?)
    })?;
    measure(
        "mul_relin",
        &|| ct(dev.mul_relin_rescale(&ga, &gb, &dkeys)?),
    )?;
    measure("rescale", &|| ct(dev.rescale(&ga)?))?;
    measure("rotate", &|| ct(dev.rotate(&ga, 1, &dkeys)?))?;
    let timing = if timestamps {
        "server-side ops: GPU time of their kernels from timestamp queries (wall time, with one \
         readback, beside it); encode, encrypt and decrypt: wall time on the host (client side)"
    } else {
        "wall time of the op plus one readback of its result (this adapter has no timestamp \
         queries); encode, encrypt and decrypt run on the host (client side)"
    };
    Ok((adapter, timing.to_string()))
}
