//! Choosing where the server evaluates: the `--backend` / `--adapter` flags shared by `demo`,
//! `infer`, `score`, `bench` and `verify`, resolved to a [`Device`].

use std::sync::Arc;

use crate::backend::gpu::{AdapterChoice, GpuError, GpuRuntime, RuntimeOptions};
use crate::sched::Device;

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The CPU (kernels crate).
    Cpu,
    /// A GPU through wgpu; an error if none can be opened.
    Gpu,
    /// The GPU if one can be opened, else the CPU (saying why on stderr).
    Auto,
}

/// How images are packed into ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Packing {
    /// Image i of the batch in slot i of every ciphertext (one ciphertext per input value): a
    /// batch of N/2 images costs what one costs. Highest throughput.
    Batch,
    /// One image across the slots of a few ciphertexts, moved by rotations: milliseconds per
    /// image. Lowest latency; the evaluation keys hold the rotations the model needs.
    Latency,
}

/// Where the server part of a command runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Where the server evaluates: cpu, gpu (an error without an adapter) or auto (the GPU if
    /// one opens, else the CPU, saying why).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// GPU adapter (case-insensitive substring of its name; default: $CRYPTODL_ADAPTER, else the
    /// most powerful one).
    #[arg(long)]
    pub adapter: Option<String>,
}

impl ServerArgs {
    /// The device these flags name: `auto` falls back to the CPU with one line on stderr saying
    /// why; `gpu` fails with the runtime's error.
    pub fn device(&self) -> anyhow::Result<Device> {
        resolve(self.backend, self.adapter.as_deref())
    }
}

/// Opens the GPU `adapter` names (the process's shared runtime unless `options` are given). An
/// error that means no usable adapter says `--backend gpu` needs one; an `--max-binding` above
/// the adapter's limit says how to count for a larger device.
pub fn open_gpu(
    adapter: Option<&str>,
    options: Option<&RuntimeOptions>,
) -> anyhow::Result<Arc<GpuRuntime>> {
    let choice = AdapterChoice::from_arg(adapter);
    let rt = match options {
        Some(o) => GpuRuntime::with_options(&choice, o).map(Arc::new),
        None => GpuRuntime::open(&choice),
    };
    rt.map_err(|e| match e {
        GpuError::BindingLimit { .. } => anyhow::anyhow!(
            "--max-binding: {e}; add --counts-only to count for a device with larger bindings"
        ),
        e if e.is_unavailable() => anyhow::Error::new(e)
            .context("`--backend gpu` needs a GPU adapter (see `cryptodl devices`)"),
        e => e.into(),
    })
}

/// Resolves a backend kind and adapter name to a [`Device`] (see [`ServerArgs::device`]).
pub fn resolve(kind: BackendKind, adapter: Option<&str>) -> anyhow::Result<Device> {
    let choice = AdapterChoice::from_arg(adapter);
    match kind {
        BackendKind::Cpu => Ok(Device::Cpu),
        BackendKind::Gpu => Ok(Device::Gpu(open_gpu(adapter, None)?)),
        BackendKind::Auto => match GpuRuntime::open(&choice) {
            Ok(rt) => Ok(Device::Gpu(rt)),
            Err(e) => {
                eprintln!("backend auto: using the CPU because no GPU could be opened: {e}");
                Ok(Device::Cpu)
            }
        },
    }
}
