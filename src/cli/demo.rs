//! `cryptodl demo`: the main job on an embedded default — the encrypted CNN.
//!
//! A CryptoNets-size network with degree-2 polynomial activations, trained on Fashion-MNIST by
//! `cryptodl train` and embedded in the binary (`models/cryptonets-poly2.safetensors`), scores a
//! batch of encrypted test images: the client encrypts and writes the evaluation keys and the
//! ciphertexts to files, the server loads them and evaluates with evaluation keys only, and the
//! client decrypts the logits and compares them with the plaintext reference.

use std::path::PathBuf;

use anyhow::Context as _;

use super::infer::{execute, print_report, Job};
use super::latency;
use super::output::print_json;
use super::server::{Packing, ServerArgs};
use crate::nn::dataset::DatasetKind;
use crate::nn::model::Model;

/// Arguments of `cryptodl demo`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "What it shows: CryptoDL end to end. A CNN trained with polynomial activations \
(embedded) classifies Fashion-MNIST test images that the server only ever sees encrypted \
(RNS-CKKS, 128-bit security at the default preset). One ciphertext per pixel holds that pixel \
of up to 4096 images, so the server's time is the same for 1 image or 4096.\n\nThe test images \
come from the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or \
--data-dir.\n\n`--dataset mnist --data-dir DIR` runs the MNIST headline network instead (at \
n16384, 8192 images a batch) on the MNIST test files in DIR (t10k-images-idx3-ubyte, \
t10k-labels-idx1-ubyte, raw or .gz)."
)]
pub struct DemoArgs {
    /// Parameter preset (see `cryptodl params`; default: the smallest 128-bit preset deep enough
    /// for the model: n8192 for the embedded one, which needs 6 levels).
    #[arg(long)]
    preset: Option<String>,
    /// Number of test images to classify, in batches of N/2 (default: one full batch).
    #[arg(long)]
    images: Option<usize>,
    /// The dataset: fashion-mnist (the default: the CryptoNets-size network, and the Debian
    /// package's images) or mnist (the MNIST headline network; give --data-dir).
    #[arg(long, default_value = "fashion-mnist")]
    dataset: DatasetKind,
    /// Directory holding the dataset's test files (default for fashion-mnist: the Debian
    /// package's location).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Batch packing (one run scores up to N/2 images) or latency packing (each image across a
    /// few ciphertexts, scored on its own in milliseconds; default 16 images).
    #[arg(long, value_enum, default_value = "batch")]
    packing: Packing,
    #[command(flatten)]
    server: ServerArgs,
    /// Accept presets below 128-bit security (every output then says so).
    #[arg(long)]
    insecure: bool,
    /// Print JSON instead of a report.
    #[arg(long)]
    json: bool,
}

/// Runs `cryptodl demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let kind = args.dataset;
    let model = Model::embedded(kind).with_context(|| {
        format!("no embedded model for {kind}; demo runs fashion-mnist or mnist (`cryptodl infer --model M` runs any model)")
    })??;
    let params = super::latency::parameters_for(
        &crate::sched::Plan::compile(&model)?,
        args.preset.as_deref(),
        args.packing == Packing::Latency,
        args.insecure,
        true,
    )?;
    if args.packing == Packing::Latency {
        super::warn_insecure(&params, args.json);
        let (_, test) = super::eval::test_set(
            &model,
            Some(kind),
            args.data_dir.as_deref(),
            Some(args.images.unwrap_or(16)),
        )?;
        if !args.json {
            eprintln!(
                "cryptodl demo: an encrypted CNN ({}) classifies {} encrypted {kind} test images one at a time (latency packing).",
                model.name,
                test.len()
            );
        }
        let images = latency::Images::dataset(&model, kind.name(), &test);
        return latency::score_and_report(
            &model,
            &params,
            args.server.device()?,
            &images,
            args.json,
        );
    }
    let images = args.images.unwrap_or(params.slots());
    let (_, test) =
        super::eval::test_set(&model, Some(kind), args.data_dir.as_deref(), Some(images))?;
    if !args.json {
        eprintln!(
            "cryptodl demo: an encrypted CNN ({}, degree-2 polynomial activations) classifies {} \
             encrypted {kind} test images.",
            model.name,
            test.len()
        );
    }
    let dir = tempfile::tempdir().context("could not create a temporary directory")?;
    let report = execute(&Job {
        model: &model,
        params,
        test: &test,
        dataset: kind.name(),
        server: &args.server,
        exchange_dir: Some(dir.path()),
        quiet: args.json,
    })?;
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}
