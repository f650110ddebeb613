//! Errors of the GPU runtime.

/// Errors of the GPU runtime.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter of the native backends (Vulkan, Metal, DX12).
    #[error("no GPU adapter found (Vulkan, Metal or DX12); on Linux install mesa-vulkan-drivers and libvulkan1 for the lavapipe software adapter")]
    NoAdapter,
    /// `--adapter` / `CRYPTODL_ADAPTER` matched nothing.
    #[error("no adapter name contains {wanted:?}; available: {available}")]
    AdapterNotFound {
        /// The requested name.
        wanted: String,
        /// Names of the adapters found.
        available: String,
    },
    /// `--devices gpu:N` named an index past the adapters found.
    #[error("there is no GPU adapter {index}: `cryptodl devices` lists {count} (numbered from 0)")]
    AdapterIndex {
        /// The requested index.
        index: usize,
        /// How many adapters there are.
        count: usize,
    },
    /// The adapter cannot run the kernels.
    #[error("adapter {adapter} offers {workgroup_storage} B of workgroup memory and {invocations} invocations per workgroup; the kernels need {need_storage} B and {need_invocations}")]
    LimitsTooSmall {
        /// Adapter name.
        adapter: String,
        /// Workgroup memory offered.
        workgroup_storage: u32,
        /// Invocations offered.
        invocations: u32,
        /// Workgroup memory needed.
        need_storage: u32,
        /// Invocations needed.
        need_invocations: u32,
    },
    /// Creating or polling the device failed.
    #[error("device on adapter {adapter}: {reason}")]
    Device {
        /// Adapter name.
        adapter: String,
        /// What failed.
        reason: String,
    },
    /// A shader failed to compile.
    #[error("shader {family}: {reason}")]
    Shader {
        /// Shader file.
        family: &'static str,
        /// Compiler message.
        reason: String,
    },
    /// A tensor exceeds the device's storage binding limit.
    #[error("tensor of {bytes} bytes exceeds the device's storage binding limit of {max} bytes")]
    TensorTooLarge {
        /// Bytes needed.
        bytes: u64,
        /// Device limit.
        max: u64,
    },
    /// `--max-binding` outside what the runtime can use.
    #[error("a storage binding limit of {asked} bytes is outside {min}..={max} bytes (the adapter's own limit); only a counting-only runtime may assume a larger one")]
    BindingLimit {
        /// The limit asked for.
        asked: u64,
        /// The smallest allowed.
        min: u64,
        /// The adapter's own limit.
        max: u64,
    },
    /// A dispatch needs more workgroups than two dimensions allow.
    #[error("dispatch of {workgroups} workgroups exceeds the device's grid")]
    DispatchTooLarge {
        /// Workgroups needed.
        workgroups: u64,
    },
    /// Reading a buffer back failed.
    #[error("readback failed: {0}")]
    Readback(String),
    /// A lock was poisoned by a panic elsewhere.
    #[error("GPU runtime lock poisoned")]
    Poisoned,
    /// Internal inconsistency (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl GpuError {
    /// Whether this error means there is no usable adapter here (none, not the one asked for,
    /// too small, or its device would not open), as opposed to a bad request or a failure in
    /// use.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            GpuError::NoAdapter
                | GpuError::AdapterNotFound { .. }
                | GpuError::AdapterIndex { .. }
                | GpuError::LimitsTooSmall { .. }
                | GpuError::Device { .. }
        )
    }
}
