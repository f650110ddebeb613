//! `cryptodl bench`: time the CKKS primitives (`ops`), whole encrypted batches (`model`) and
//! bootstrapping (`bootstrap`), on the CPU or a GPU, through the same evaluator the server runs.
//! One file per subcommand; `counted.rs` prints the GPU's counted cost that `model` and
//! `bootstrap` share.

mod bootstrap;
mod compare;
mod counted;
mod model;
mod ops;
mod report;

use crate::backend::gpu::WGPU_MAX_BINDING;

/// `cryptodl bench` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Median time of each CKKS primitive at the top level, on random inputs.
    ///
    /// Ops: ntt_forward / ntt_inverse (one limb), encode, encrypt (public key), decrypt
    /// (decrypt + decode), add, mul_const (incl. rescale), mul_relin (ct x ct + relinearize +
    /// rescale, fused), rescale, rotate (by one slot). The server-side ops run through the
    /// evaluator the server uses (`DeviceEvaluator`) on ciphertexts resident on the backend.
    /// Also reports the mean precision (bits) of a fresh encryption and of a mul_relin result,
    /// for inputs uniform in [-1, 1].
    Ops(ops::OpsArgs),
    /// Time the server's work on whole encrypted batches of a model: median batch time,
    /// predictions per hour, per-step time, launches and transfers, peak memory.
    ///
    /// Needs no dataset: the inputs are random images, encrypted once (client side, not timed
    /// in the batch), then scored by one session (evaluation keys uploaded once) for a warm-up
    /// batch and `--batches` timed ones. The server's work does not depend on the values. This
    /// is the command to compare the CPU and a GPU (examples below).
    Model(model::ModelArgs),
    /// Time, levels, precision, keys and peak memory of CKKS bootstrapping (full or sparse
    /// packing), on the CPU or a GPU; the counted cost per kernel family and its roofline time
    /// on a GPU.
    Bootstrap(bootstrap::BootstrapArgs),
    /// The same model on several backends, thread counts, packings and batches in flight, in
    /// one process: one JSON document with the machine and every measurement, checked against
    /// the plaintext reference, under benches/results/<machine>/ (`bench report` draws it).
    Compare(compare::CompareArgs),
    /// Draws `bench compare` documents (several machines side by side) as SVG charts and one
    /// self-contained HTML page: time per step CPU vs GPU, throughput against images in flight,
    /// the spread of the repeats, thread scaling, the GPU roofline, peak memory, and ratios.
    Report(report::ReportArgs),
}

/// A byte count: digits with an optional `KiB`, `MiB` or `GiB`, or `wgpu-max`.
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("wgpu-max") {
        return Ok(WGPU_MAX_BINDING);
    }
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
            "unknown unit {other:?} in {s:?}: give bytes, e.g. 134217728, 128MiB, 2GiB or wgpu-max"
        ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|d| d.checked_mul(scale))
        .ok_or_else(|| {
            format!(
                "{s:?} is not a byte count: give bytes, e.g. 134217728, 128MiB, 2GiB or wgpu-max"
            )
        })
}

/// Runs `cryptodl bench`.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bootstrap(args) => bootstrap::run(args),
        BenchCommand::Ops(args) => ops::run(args),
        BenchCommand::Model(args) => model::run(args),
        BenchCommand::Compare(args) => compare::run(args),
        BenchCommand::Report(args) => report::run(args),
    }
}
