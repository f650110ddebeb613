//! `cryptodl demo`: the most complete encrypted pipeline that works today, end to end.
//!
//! Until the encrypted CNN lands, the demo runs one CryptoDL layer: fit a low-degree polynomial
//! to ReLU, then evaluate it on a batch of encrypted values (client encrypts, server evaluates
//! with evaluation keys only — loaded from files, no secret key in sight — client decrypts).

use std::time::Instant;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::output::print_json;
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{resolve, Backend, BackendKind, Resolved};
use crate::ckks::serialize::{
    load_ciphertexts, load_evaluation_keys, save_ciphertexts, save_evaluation_keys,
};
use crate::ckks::{
    precision_stats, rns_context, Ciphertext, CkksError, Context, Decryptor, DeviceCiphertext,
    DeviceEvaluator, DeviceKeys, Encoder, Encryptor, EvaluationKeys, KeyGenerator, Preset,
};
use crate::nn::activation::ActFn;
use crate::nn::fit::{fit, FitMethod};

/// Arguments of `cryptodl demo`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "What it shows: the CKKS scheme (client/server split, files, precision) \
and CryptoDL's polynomial activations. The encrypted CNN itself is not built yet; this is the \
most complete piece that works, and it says so."
)]
pub struct DemoArgs {
    /// Parameter preset (see `cryptodl params`).
    #[arg(long, default_value = "n8192")]
    preset: String,
    /// Degree of the ReLU approximation (2 or 3: one or two levels of depth).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=3))]
    degree: u32,
    /// Interval [-A, A] the approximation is fitted on (inputs are drawn from it).
    #[arg(long, default_value_t = 8.0)]
    interval: f64,
    /// Where the server evaluates: cpu, gpu (an error without an adapter) or auto (the GPU if
    /// one opens, else the CPU, saying why).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// GPU adapter (case-insensitive substring of its name; default: $CRYPTODL_ADAPTER, else the
    /// most powerful one).
    #[arg(long)]
    adapter: Option<String>,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a report.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Timings {
    keygen_ms: f64,
    encrypt_ms: f64,
    evaluate_ms: f64,
    decrypt_ms: f64,
}

#[derive(Serialize)]
struct DemoReport {
    preset: String,
    backend: String,
    insecure: bool,
    slots: usize,
    activation: &'static str,
    coefficients: Vec<f64>,
    interval: f64,
    fit_max_abs_error: f64,
    levels_used: usize,
    precision_bits_mean: f64,
    precision_bits_min: f64,
    max_abs_error_vs_polynomial: f64,
    mean_abs_error_vs_relu: f64,
    timings: Timings,
    values_per_second: f64,
}

/// Evaluates `p(x) = c0 + c1 x + c2 x^2 (+ c3 x^3)` on the batch `x` with the server's keys
/// only, in two levels for degree 2 and 3 (the leading constant is folded into a scalar
/// multiplication).
fn eval_polynomial<B: Backend>(
    eval: &DeviceEvaluator<B>,
    keys: &DeviceKeys<B::Tensor>,
    x: &DeviceCiphertext<B::Tensor>,
    c: &[f64],
) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
    let q = eval.context().params().q().to_vec();
    let top = x.level();
    // a = c_top * x  (rescaled: same scale as x, one level down)
    let (c_top, lower) = c.split_last().expect("degree >= 2");
    let mut a = eval.rescale(&eval.mul_const(x, *c_top, None)?)?;
    let x1 = eval.drop_levels(x, 1)?;
    a.set_scale(x1.scale()); // q_top / q_top: identical up to rounding of the f64 scale
    if lower.len() == 2 {
        // degree 2: (c2 x + c1) * x + c0
        let a = eval.add_const(&a, lower[1])?;
        let r = eval.mul_relin_rescale(&a, &x1, keys)?;
        eval.add_const(&r, lower[0])
    } else {
        // degree 3: (c3 x + c2) * x^2 + (c1 x + c0)
        let a = eval.add_const(&a, lower[2])?;
        let x2 = eval.mul_relin_rescale(x, x, keys)?; // level top-1, scale s^2/q_top
        let r = eval.mul_relin_rescale(&a, &x2, keys)?; // level top-2
                                                        // linear part c1 x + c0 at the same level and scale as r
        let target = r.scale();
        let cs = target * q[top - 1] as f64 / x.scale();
        let lin = eval.drop_levels(&eval.mul_const(x, lower[1], Some(cs))?, 1)?;
        let mut lin = eval.rescale(&lin)?;
        lin.set_scale(target);
        eval.add_const(&eval.add(&r, &lin)?, lower[0])
    }
}

/// The server's part: loads the evaluation keys and the input ciphertexts, evaluates the
/// polynomial on `backend` and returns the results with the time taken (upload, evaluation and
/// download, not the file reads).
fn serve<B: Backend>(
    backend: B,
    ctx: &std::sync::Arc<Context>,
    keys: &EvaluationKeys,
    input: &[Ciphertext],
    coeffs: &[f64],
) -> anyhow::Result<(Vec<Ciphertext>, f64)> {
    let eval = DeviceEvaluator::new(ctx.clone(), backend)?;
    let t = Instant::now();
    let dkeys = eval.upload_keys(keys)?;
    let x = eval.upload(input)?;
    let y = eval_polynomial(&eval, &dkeys, &x, coeffs)?;
    let out = eval.download(&y)?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

/// Runs `cryptodl demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        anyhow::bail!(
            "--interval must be a positive number, got {}",
            args.interval
        );
    }
    let params = Preset::by_name(&args.preset)?.parameters(args.insecure)?;
    if params.max_level() < 2 {
        anyhow::bail!(
            "preset {} has depth {}; the demo needs 2",
            params.name(),
            params.max_level()
        );
    }
    let ctx = Context::new(&params)?;
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    if params.is_insecure() {
        say(format!(
            "WARNING: preset {} is INSECURE (below 128-bit security)",
            params.name()
        ));
    }
    say("cryptodl demo: one CryptoDL layer (polynomial ReLU) on encrypted data.".into());
    say(
        "(The encrypted CNN is not built yet; this is the most complete piece that works.)\n"
            .into(),
    );

    // 1. approximate ReLU
    let f = fit(
        ActFn::Relu,
        args.degree as usize,
        args.interval,
        FitMethod::Minimax,
        1.0,
    )?;
    say(format!(
        "1. ReLU ~ degree-{} minimax polynomial on [-{a}, {a}]: coefficients {:?}, max error {:.4}",
        args.degree,
        f.coefficients
            .iter()
            .map(|c| (c * 1e6).round() / 1e6)
            .collect::<Vec<_>>(),
        f.max_abs_error,
        a = args.interval
    ));

    // 2. client: keys and encryption
    let t = Instant::now();
    let mut kg = KeyGenerator::new(ctx.clone());
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = kg.evaluation_keys(&sk, &[], false)?;
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    let slots = params.slots();
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let xs: Vec<f64> = (0..slots)
        .map(|_| rng.random_range(-args.interval..args.interval))
        .collect();
    let enc = Encoder::new(ctx.clone());
    let t = Instant::now();
    let scaled: Vec<f64> = xs.iter().map(|x| x / args.interval).collect();
    let pt = enc.encode(&scaled, params.max_level(), params.default_scale())?;
    let ct = Encryptor::new(ctx.clone()).encrypt(&pt, &pk)?;
    let encrypt_ms = t.elapsed().as_secs_f64() * 1e3;

    let dir = tempfile::tempdir().context("could not create a temporary directory")?;
    let (keys_path, in_path, out_path) = (
        dir.path().join("eval.keys"),
        dir.path().join("input.ct"),
        dir.path().join("output.ct"),
    );
    save_evaluation_keys(&keys_path, &params, &keys)?;
    save_ciphertexts(&in_path, &params, std::slice::from_ref(&ct))?;
    say(format!(
        "2. client: {slots} values encrypted in one ciphertext ({}, N = {}); evaluation keys and \
         ciphertext written to files",
        params.name(),
        params.n()
    ));

    // 3. server: evaluation keys and ciphertexts from files, no secret key
    let server_keys = load_evaluation_keys(&keys_path, &ctx)?;
    let input = load_ciphertexts(&in_path, &ctx)?;
    // inputs were scaled by 1/A: p(x) = sum c_i A^i (x/A)^i
    let coeffs: Vec<f64> = f
        .coefficients
        .iter()
        .enumerate()
        .map(|(i, c)| c * args.interval.powi(i as i32))
        .collect();
    let (resolved, rt) = resolve(
        args.backend,
        &AdapterChoice::from_arg(args.adapter.as_deref()),
    )
    .context("`--backend gpu` needs a GPU adapter (see `cryptodl devices`)")?;
    let (outputs, evaluate_ms, backend_name) = match (resolved, rt) {
        (Resolved::Gpu, Some(rt)) => {
            let backend = GpuBackend::new(rt, rns_context(&params)?)?;
            let name = backend.name();
            let (o, ms) = serve(backend, &ctx, &server_keys, &input, &coeffs)?;
            (o, ms, name)
        }
        _ => {
            let (o, ms) = serve(
                CpuBackend::new(rns_context(&params)?),
                &ctx,
                &server_keys,
                &input,
                &coeffs,
            )?;
            (o, ms, "cpu".to_string())
        }
    };
    let out = &outputs[0];
    save_ciphertexts(&out_path, &params, &outputs)?;
    say(format!(
        "3. server ({backend_name}): evaluated the polynomial with evaluation keys only in \
         {evaluate_ms:.1} ms ({} levels used)",
        params.max_level() - out.level()
    ));

    // 4. client: decrypt and compare
    let t = Instant::now();
    let result = load_ciphertexts(&out_path, &ctx)?;
    let got = enc.decode(&Decryptor::new(ctx.clone()).decrypt(&result[0], &sk)?);
    let decrypt_ms = t.elapsed().as_secs_f64() * 1e3;
    let poly = f.polynomial();
    let want: Vec<f64> = xs.iter().map(|&x| poly.eval(x)).collect();
    let st = precision_stats(&want, &got);
    let relu_err = xs
        .iter()
        .zip(&got)
        .map(|(&x, g)| (x.max(0.0) - g).abs())
        .sum::<f64>()
        / slots as f64;
    say(format!(
        "4. client: decrypted; vs the plaintext polynomial: mean precision {:.1} bits (worst slot \
         {:.1}), max error {:.2e}; vs true ReLU: mean error {:.4}",
        st.mean_bits, st.min_bits, st.max_abs_error, relu_err
    ));
    let total_s = (encrypt_ms + evaluate_ms + decrypt_ms) / 1e3;
    let report = DemoReport {
        preset: params.name().to_string(),
        backend: backend_name.clone(),
        insecure: params.is_insecure(),
        slots,
        activation: "relu",
        coefficients: f.coefficients.clone(),
        interval: args.interval,
        fit_max_abs_error: f.max_abs_error,
        levels_used: params.max_level() - out.level(),
        precision_bits_mean: st.mean_bits,
        precision_bits_min: st.min_bits,
        max_abs_error_vs_polynomial: st.max_abs_error,
        mean_abs_error_vs_relu: relu_err,
        timings: Timings {
            keygen_ms,
            encrypt_ms,
            evaluate_ms,
            decrypt_ms,
        },
        values_per_second: slots as f64 / total_s,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "\ntimings: keygen {keygen_ms:.0} ms, encrypt {encrypt_ms:.1} ms, evaluate {evaluate_ms:.1} \
         ms, decrypt {decrypt_ms:.1} ms -> {:.0} encrypted activations per second (server: {})",
        report.values_per_second, backend_name
    );
    Ok(())
}
