//! Command-line interface: one module per subcommand; `main.rs` only calls [`main`].

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod approx;
mod bench;
mod demo;
mod devices;
mod eval;
mod import;
mod infer;
mod latency;
mod output;
mod params;
mod pipeline;
mod score;
mod server;
mod train;
mod verify;

/// Homomorphic (RNS-CKKS) CNN inference on any GPU, after CryptoDL.
///
/// Typical flow: `cryptodl params` to pick a parameter preset, `cryptodl approx` to choose a
/// polynomial activation, `cryptodl train` to train a CNN with it, `cryptodl eval` for the
/// plaintext reference, `cryptodl infer` to classify encrypted images with it, `cryptodl bench
/// ops` to time the CKKS primitives.
#[derive(Parser, Debug)]
#[command(name = "cryptodl", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the main job end to end on an embedded default (see `cryptodl demo --help`).
    Demo(demo::DemoArgs),
    /// What a model costs encrypted: levels, ciphertexts, and in latency packing every
    /// operation's rotations and the evaluation keys they need.
    Plan(latency::PlanArgs),
    /// List the CKKS parameter presets and their security level.
    Params(params::ParamsArgs),
    /// Benchmarks (CKKS primitives, ...).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fit polynomial approximations of activation functions.
    Approx(approx::ApproxArgs),
    /// Train a CNN (with polynomial or standard activations) on an image dataset.
    Train(train::TrainArgs),
    /// Import an ONNX model (PyTorch, ...) with polynomial activations as a cryptodl model.
    Import(import::ImportArgs),
    /// Run a trained model in plaintext f64, exactly as the encrypted path computes it.
    Eval(eval::EvalArgs),
    /// Classify encrypted test images with a trained model (client encrypts, server evaluates
    /// with evaluation keys only, client decrypts and compares with the plaintext reference).
    Infer(infer::InferArgs),
    /// Client: generate keys (secret, public, and the evaluation keys for the server).
    Keygen(pipeline::KeygenArgs),
    /// Client: encrypt a dataset's test images in batches for the server.
    Encrypt(pipeline::EncryptArgs),
    /// Server: score encrypted batches with a model and the evaluation keys (resumable; shards
    /// and several devices for clusters).
    Score(score::ScoreArgs),
    /// Server or client: which batches of a job are scored, missing, running or damaged, and
    /// what each worker did.
    Status(score::StatusArgs),
    /// Client: decrypt the scored batches into predictions.
    Decrypt(pipeline::DecryptArgs),
    /// List GPU adapters with the limits that matter to the kernels.
    Devices(devices::DevicesArgs),
    /// Run every kernel on random inputs on the GPU and the CPU and compare bit for bit.
    Verify(verify::VerifyArgs),
}

/// Parses the command line, runs the subcommand, and maps errors to a non-zero exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Plan(a) => latency::plan(a),
        Command::Params(a) => params::run(a),
        Command::Bench(b) => bench::run(b),
        Command::Approx(a) => approx::run(a),
        Command::Train(a) => train::run(a),
        Command::Import(a) => import::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Keygen(a) => pipeline::keygen(a),
        Command::Encrypt(a) => pipeline::encrypt(a),
        Command::Score(a) => score::score(a),
        Command::Status(a) => score::status(a),
        Command::Decrypt(a) => pipeline::decrypt(a),
        Command::Devices(a) => devices::run(a),
        Command::Verify(a) => verify::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line on stderr (unless `quiet`) when the parameters are below 128-bit security; every
/// JSON report carries an `insecure` field as well.
fn warn_insecure(params: &crate::ckks::Parameters, quiet: bool) {
    if params.is_insecure() && !quiet {
        eprintln!(
            "WARNING: preset {} is INSECURE (below 128-bit security): for tests only",
            params.name()
        );
    }
}
