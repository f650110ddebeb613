//! `cryptodl bench`: time CKKS primitives.

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
    median_us: f64,
}

#[derive(Serialize)]
struct Precision {
    fresh: f64,
    mul_relin: f64,
}

#[derive(Serialize)]
struct OpsReport {
    backend: &'static str,
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
            println!("{:<12} {:>12}", "op", "median (us)");
            for o in &report.ops {
                println!("{:<12} {:>12.1}", o.op, o.median_us);
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
    let mut push = |op: &'static str, us: f64| ops.push(OpTime { op, median_us: us });
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
        preset: params.name().to_string(),
        n,
        threads,
        insecure: params.is_insecure(),
        ops,
        precision_bits: Precision { fresh, mul_relin },
    })
}
