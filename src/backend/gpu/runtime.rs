//! wgpu runtime: adapter choice, device and limits, buffer pool, pipeline cache, batched encoding.

use super::shaders::{self, Arith, Binding, Family};
use super::GpuError;
use crate::backend::{AtomicCounters, Counters, MemoryUse};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use wgpu::util::DeviceExt;

/// Environment variable naming the adapter to use (case-insensitive substring of its name).
pub const ADAPTER_ENV: &str = "CRYPTODL_ADAPTER";
/// Environment variable forcing the shaders' wide products: `portable` or `int64`.
pub const ARITH_ENV: &str = "CRYPTODL_GPU_ARITH";

/// Submit the pending encoder once it holds this many dispatches (keeps command buffers bounded).
const MAX_PENDING_DISPATCHES: u64 = 1024;

/// Timestamp queries available to one timing (two per compute pass).
const TIMING_QUERIES: u32 = 4096;

/// Which adapter to use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdapterChoice {
    /// The best adapter: discrete GPU first, then integrated, virtual, other, CPU (software).
    HighPerformance,
    /// The first adapter whose name contains this string (case-insensitive).
    Named(String),
    /// The adapter at this index of [`list_adapters`] (`cryptodl devices` numbers them).
    Index(usize),
}

impl AdapterChoice {
    /// `Named(value of CRYPTODL_ADAPTER)` if the variable is set and non-empty, else
    /// `HighPerformance`.
    pub fn from_env() -> Self {
        match std::env::var(ADAPTER_ENV) {
            Ok(v) if !v.trim().is_empty() && v.trim() != "auto" => {
                Self::Named(v.trim().to_string())
            }
            _ => Self::HighPerformance,
        }
    }

    /// `--adapter NAME` if given (`auto` = high performance), else [`Self::from_env`].
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            Some("auto") => Self::HighPerformance,
            Some(name) => Self::Named(name.to_string()),
            None => Self::from_env(),
        }
    }
}

/// How a [`GpuRuntime`] is opened, beyond the adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// The shaders' wide products: `None` picks [`Arith::Int64`] where the adapter has
    /// `SHADER_INT64`.
    pub arith: Option<Arith>,
    /// The largest storage binding (and so tensor) to use, in bytes. On a device that executes,
    /// at most the adapter's own limit (smaller tensors: more, smaller launches); when counting
    /// only, any size: the counts then are those of a device with this limit (wgpu grants
    /// NVIDIA and AMD GPUs [`WGPU_MAX_BINDING`] on Vulkan and DX12).
    pub max_binding: Option<u64>,
    /// Count only: record every dispatch's kernel, shape and counted cost exactly as an
    /// executing runtime does, but execute nothing, move no data (downloads read zeros) and
    /// allocate no tensor memory on the device (tensor buffers are placeholders).
    pub counts_only: bool,
}

impl RuntimeOptions {
    /// The defaults, with the arithmetic forced by `CRYPTODL_GPU_ARITH` (`portable`, `int64`)
    /// where it is set.
    pub fn from_env() -> Self {
        let arith = match std::env::var(ARITH_ENV).as_deref() {
            Ok("portable") => Some(Arith::Portable),
            Ok("int64") => Some(Arith::Int64),
            _ => None,
        };
        Self {
            arith,
            ..Self::default()
        }
    }
}

/// The largest storage binding wgpu 30 grants on Vulkan and DX12 (`i32::MAX` bytes): what
/// NVIDIA and AMD GPUs get.
pub const WGPU_MAX_BINDING: u64 = (1 << 31) - 1;

/// What `cryptodl devices` reports about one adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    /// Adapter name.
    pub name: String,
    /// Graphics API (Vulkan, Metal, Dx12, ...).
    pub backend: String,
    /// Discrete / integrated / virtual / CPU / other.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Workgroup (shared) memory per workgroup, bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    #[serde(skip)]
    pub max_invocations: u32,
    /// Largest buffer, bytes.
    #[serde(skip)]
    pub max_buffer_size: u64,
    /// Whether the adapter has timestamp queries (GPU-side kernel timing).
    pub timestamp_queries: bool,
    /// Whether the adapter has 64-bit integers in shaders (`SHADER_INT64`): the kernels then
    /// build wide products natively ([`Arith::Int64`]).
    pub shader_int64: bool,
}

impl AdapterSummary {
    /// Coefficients per NTT tile the backend uses on this adapter (one pass up to this degree).
    pub fn ntt_tile(&self) -> u32 {
        if self.max_workgroup_storage >= 4 * shaders::NTT_TILE_WIDE {
            shaders::NTT_TILE_WIDE
        } else {
            shaders::NTT_TILE
        }
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    desc.flags = wgpu::InstanceFlags::empty();
    wgpu::Instance::new(desc)
}

fn summarize(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
        (false, false) => format!("{} {}", info.driver, info.driver_info),
        (false, true) => info.driver.clone(),
        (true, false) => info.driver_info.clone(),
        (true, true) => "unknown".to_string(),
    };
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        max_invocations: limits.max_compute_invocations_per_workgroup,
        max_buffer_size: limits.max_buffer_size,
        timestamp_queries: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_int64: adapter.features().contains(wgpu::Features::SHADER_INT64),
    }
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Every adapter of the native backends (Vulkan, Metal, DX12), best first.
pub fn list_adapters() -> Vec<AdapterSummary> {
    sorted_adapters(&instance()).iter().map(summarize).collect()
}

fn sorted_adapters(inst: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| type_rank(a.get_info().device_type));
    adapters
}

/// The size of the pooled buffer for a tensor of `bytes`: rounded up to a power of two (at
/// least 256 bytes) so buffers are reused across shapes, unless that would pass `max_binding`
/// (2^31 - 1 on most GPUs: a tensor over 1 GiB keeps its own size, since a buffer is bound
/// whole).
fn buffer_size(bytes: u64, max_binding: u64) -> u64 {
    let size = bytes.next_power_of_two().max(256);
    if size > max_binding {
        bytes
    } else {
        size
    }
}

/// The smallest storage binding a runtime may be limited to (a few ciphertext limbs).
const MIN_BINDING: u64 = 1 << 20;

/// Shader requirements the device must meet (checked against the adapter's limits).
const NEEDED_WORKGROUP_STORAGE: u32 = shaders::NTT_TILE * 4;
const NEEDED_INVOCATIONS: u32 = shaders::WORKGROUP_SIZE;

/// Free tensor buffers by size, and the device memory they and the live ones take.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    live: AtomicU64,
    peak: AtomicU64,
    created: AtomicU64,
}

impl BufferPool {
    fn usage(&self) -> MemoryUse {
        let (live, created) = (
            self.live.load(Ordering::Relaxed),
            self.created.load(Ordering::Relaxed),
        );
        MemoryUse {
            live_bytes: live,
            peak_bytes: self.peak.load(Ordering::Relaxed),
            pooled_bytes: created.saturating_sub(live),
            fresh_bytes: created,
        }
    }
}

/// A storage buffer from the pool; returns to the pool when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    /// The bytes it stands for (a counting runtime's placeholder buffers are smaller).
    size: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// The wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.live.fetch_sub(self.size, Ordering::Relaxed);
            if let Ok(mut free) = self.pool.free.lock() {
                free.entry(self.size).or_default().push(b);
            }
        }
    }
}

/// A wgpu device with its pipelines, buffer pool and pending command encoder.
pub struct GpuRuntime {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    limits: wgpu::Limits,
    arith: Arith,
    modules: Mutex<
        HashMap<
            Family,
            (
                wgpu::ShaderModule,
                wgpu::BindGroupLayout,
                wgpu::PipelineLayout,
            ),
        >,
    >,
    pipelines: Mutex<HashMap<(Family, &'static str), wgpu::ComputePipeline>>,
    pool: Arc<BufferPool>,
    encoder: Mutex<Option<(wgpu::CommandEncoder, u64)>>,
    counters: AtomicCounters,
    timing: Mutex<Option<Timing>>,
    /// Count only: nothing executes (see [`RuntimeOptions::counts_only`]).
    counts_only: bool,
}

/// An active GPU timing: every compute pass writes a begin and an end timestamp.
struct Timing {
    set: wgpu::QuerySet,
    /// Queries written so far (two per pass).
    next: u32,
    /// More passes were recorded than the query set holds (the timing is then refused).
    overflow: bool,
}

static SHARED: OnceLock<Result<Arc<GpuRuntime>, GpuError>> = OnceLock::new();

impl GpuRuntime {
    /// Opens the adapter picked by `choice` and creates a device with the adapter's own limits
    /// (so large tensors fit), after checking the limits the kernels need. The kernels use
    /// native 64-bit products where the adapter has them, unless `CRYPTODL_GPU_ARITH=portable`.
    pub fn new(choice: &AdapterChoice) -> Result<Self, GpuError> {
        Self::with_options(choice, &RuntimeOptions::from_env())
    }

    /// [`Self::new`] with the products' arithmetic chosen: `None` picks
    /// [`Arith::Int64`] where the adapter has `SHADER_INT64`; asking for it where the adapter
    /// lacks it is an error.
    pub fn with_arith(choice: &AdapterChoice, arith: Option<Arith>) -> Result<Self, GpuError> {
        Self::with_options(
            choice,
            &RuntimeOptions {
                arith,
                ..Default::default()
            },
        )
    }

    /// [`Self::new`] with `options`: the arithmetic, a smaller (or, counting only, any) storage
    /// binding limit, counting only.
    pub fn with_options(
        choice: &AdapterChoice,
        options: &RuntimeOptions,
    ) -> Result<Self, GpuError> {
        let arith = options.arith;
        let inst = instance();
        let adapters = sorted_adapters(&inst);
        if adapters.is_empty() {
            return Err(GpuError::NoAdapter);
        }
        let adapter = match choice {
            AdapterChoice::HighPerformance => adapters.into_iter().next(),
            AdapterChoice::Named(name) => {
                let want = name.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let found = adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want));
                if found.is_none() {
                    return Err(GpuError::AdapterNotFound {
                        wanted: name.clone(),
                        available: names.join(", "),
                    });
                }
                found
            }
            AdapterChoice::Index(i) => {
                let count = adapters.len();
                adapters
                    .into_iter()
                    .nth(*i)
                    .ok_or(GpuError::AdapterIndex { index: *i, count })?
                    .into()
            }
        }
        .ok_or(GpuError::NoAdapter)?;
        let summary = summarize(&adapter);
        let alimits = adapter.limits();
        if alimits.max_compute_workgroup_storage_size < NEEDED_WORKGROUP_STORAGE
            || alimits.max_compute_invocations_per_workgroup < NEEDED_INVOCATIONS
        {
            return Err(GpuError::LimitsTooSmall {
                adapter: summary.name.clone(),
                workgroup_storage: alimits.max_compute_workgroup_storage_size,
                invocations: alimits.max_compute_invocations_per_workgroup,
                need_storage: NEEDED_WORKGROUP_STORAGE,
                need_invocations: NEEDED_INVOCATIONS,
            });
        }
        // Request the adapter's own limits (storage binding size, workgroup storage, invocations,
        // ...): large tensors fit, and every binding is checked against them before use.
        let required_limits = alimits.clone();
        let arith = match arith {
            Some(Arith::Int64) if !summary.shader_int64 => {
                return Err(GpuError::Internal(format!(
                    "{} has no 64-bit integers in shaders (SHADER_INT64); use {ARITH_ENV}=portable",
                    summary.name
                )))
            }
            Some(a) => a,
            None if summary.shader_int64 => Arith::Int64,
            None => Arith::Portable,
        };
        let mut required_features = wgpu::Features::empty();
        if summary.timestamp_queries {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if arith == Arith::Int64 {
            required_features |= wgpu::Features::SHADER_INT64;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cryptodl"),
            required_features,
            required_limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: summary.name.clone(),
            reason: e.to_string(),
        })?;
        let mut limits = device.limits();
        if let Some(max) = options.max_binding {
            let own = limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size);
            if max < MIN_BINDING || (!options.counts_only && max > own) {
                return Err(GpuError::BindingLimit {
                    asked: max,
                    min: MIN_BINDING,
                    max: own,
                });
            }
            limits.max_storage_buffer_binding_size = max;
            limits.max_buffer_size = limits.max_buffer_size.max(max);
        }
        Ok(Self {
            device,
            queue,
            summary,
            limits,
            arith,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(BufferPool::default()),
            encoder: Mutex::new(None),
            counters: AtomicCounters::default(),
            timing: Mutex::new(None),
            counts_only: options.counts_only,
        })
    }

    /// One runtime per process for the adapter chosen by [`AdapterChoice::from_env`], created on
    /// first use; every shader module and pipeline is compiled once for it.
    pub fn shared() -> Result<Arc<GpuRuntime>, GpuError> {
        SHARED
            .get_or_init(|| GpuRuntime::new(&AdapterChoice::from_env()).map(Arc::new))
            .clone()
    }

    /// The shared runtime if `choice` is the process default ([`AdapterChoice::from_env`]),
    /// otherwise a new runtime for `choice`.
    pub fn open(choice: &AdapterChoice) -> Result<Arc<GpuRuntime>, GpuError> {
        if *choice == AdapterChoice::from_env() {
            Self::shared()
        } else {
            Self::new(choice).map(Arc::new)
        }
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// How the kernels build wide products on this device.
    pub fn arith(&self) -> Arith {
        self.arith
    }

    /// Whether this runtime only counts (executes nothing; see [`RuntimeOptions::counts_only`]).
    pub fn counts_only(&self) -> bool {
        self.counts_only
    }

    /// The device limits in force (with a [`RuntimeOptions::max_binding`] applied).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Transfers, dispatches and submissions of every backend on this runtime.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    /// Device memory of the tensor buffers: live, the most live at once, and pooled for reuse.
    pub fn memory(&self) -> MemoryUse {
        self.pool.usage()
    }

    /// Submits the pending batch and waits until the device has finished all submitted work.
    pub fn wait_idle(&self) -> Result<(), GpuError> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Device {
                adapter: self.summary.name.clone(),
                reason: e.to_string(),
            })
    }

    /// The largest storage binding (and so tensor buffer) in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Checks that a storage binding of `bytes` fits this device.
    pub fn check_binding(&self, bytes: u64) -> Result<(), GpuError> {
        let max = self.max_binding();
        if bytes > max {
            return Err(GpuError::TensorTooLarge { bytes, max });
        }
        Ok(())
    }

    /// A storage buffer of at least `words` u32 from the pool (contents undefined).
    pub fn alloc(&self, words: usize) -> Result<PooledBuffer, GpuError> {
        let bytes = (words.max(1) as u64) * 4;
        self.check_binding(bytes)?;
        let size = buffer_size(bytes, self.max_binding());
        let reused = self
            .pool
            .free
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(&size).and_then(|v| v.pop()));
        let live = self.pool.live.fetch_add(size, Ordering::Relaxed) + size;
        self.pool.peak.fetch_max(live, Ordering::Relaxed);
        let buffer = reused.unwrap_or_else(|| {
            self.pool.created.fetch_add(size, Ordering::Relaxed);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cryptodl tensor"),
                // Counting only: a placeholder, never bound.
                size: if self.counts_only { 256 } else { size },
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(PooledBuffer {
            buffer: Some(buffer),
            size,
            pool: self.pool.clone(),
        })
    }

    /// Uploads `data` into a pooled buffer (counted). The write is ordered before every dispatch
    /// recorded afterwards.
    pub fn upload(&self, data: &[u32]) -> Result<PooledBuffer, GpuError> {
        let buf = self.alloc(data.len())?;
        if !self.counts_only {
            // Dispatches recorded so far must run before this write lands.
            self.flush();
            self.queue
                .write_buffer(buf.buffer(), 0, bytemuck::cast_slice(data));
        }
        self.counters.upload(data.len() as u64 * 4);
        Ok(buf)
    }

    /// Uploads the concatenation of `parts` into one pooled buffer (counted as one upload), with
    /// one write per part: no host-side copy of the whole.
    pub fn upload_parts(&self, parts: &[&[u32]]) -> Result<PooledBuffer, GpuError> {
        let words: usize = parts.iter().map(|p| p.len()).sum();
        let buf = self.alloc(words)?;
        self.flush();
        let mut at = 0u64;
        for p in parts {
            if !p.is_empty() && !self.counts_only {
                self.queue
                    .write_buffer(buf.buffer(), at * 4, bytemuck::cast_slice(p));
            }
            at += p.len() as u64;
        }
        self.counters.upload(words as u64 * 4);
        Ok(buf)
    }

    /// Uploads constant data (tables, moduli, maps): not counted as a tensor transfer.
    pub fn upload_constant(&self, data: &[u32]) -> wgpu::Buffer {
        let contents: &[u8] = if data.is_empty() {
            &[0u8; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("cryptodl constants"),
                contents,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            })
    }

    #[allow(clippy::type_complexity)]
    fn module(
        &self,
        family: Family,
    ) -> Result<
        (
            wgpu::ShaderModule,
            wgpu::BindGroupLayout,
            wgpu::PipelineLayout,
        ),
        GpuError,
    > {
        let mut modules = self.modules.lock().map_err(|_| GpuError::Poisoned)?;
        if let Some(m) = modules.get(&family) {
            return Ok(m.clone());
        }
        let source = shaders::source(family, self.arith);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.file_name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader {
                family: family.file_name(),
                reason: err.to_string(),
            });
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = family
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, kind)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        Binding::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let bgl = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(family.file_name()),
                entries: &entries,
            });
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(family.file_name()),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        let entry = (module, bgl, layout);
        modules.insert(family, entry.clone());
        Ok(entry)
    }

    /// The compute pipeline of `entry` in `family`, compiled on first use.
    pub fn pipeline(
        &self,
        family: Family,
        entry: &'static str,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        if let Some(p) = self
            .pipelines
            .lock()
            .map_err(|_| GpuError::Poisoned)?
            .get(&(family, entry))
        {
            return Ok(p.clone());
        }
        let (module, _, layout) = self.module(family)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader {
                family: family.file_name(),
                reason: format!("entry point {entry}: {err}"),
            });
        }
        self.pipelines
            .lock()
            .map_err(|_| GpuError::Poisoned)?
            .insert((family, entry), pipeline.clone());
        Ok(pipeline)
    }

    /// Number of pipelines compiled so far.
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Records one dispatch of `entry` with `bindings` (binding i = buffer i) and a uniform block
    /// `params` as the last binding, over `workgroups` workgroups (split over x and y as needed).
    /// Nothing is submitted until a download (or the batch limit).
    pub fn dispatch(
        &self,
        family: Family,
        entry: &'static str,
        bindings: &[&wgpu::Buffer],
        params: &[u32],
        workgroups: u64,
    ) -> Result<(), GpuError> {
        if workgroups == 0 {
            return Ok(());
        }
        let max_dim = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        let x = workgroups.min(max_dim);
        let y = workgroups.div_ceil(x);
        if y > max_dim {
            return Err(GpuError::DispatchTooLarge { workgroups });
        }
        if self.counts_only {
            if bindings.len() + 1 != family.bindings().len() {
                return Err(GpuError::Internal(format!(
                    "{entry}: wrong number of bindings"
                )));
            }
            self.counters.launch();
            return Ok(());
        }
        // Every buffer is bound whole: none may pass the binding limit in force (the device's
        // own, or a smaller `max_binding`), as the limit a real GPU enforces would reject it.
        if let Some(b) = bindings.iter().find(|b| b.size() > self.max_binding()) {
            return Err(GpuError::TensorTooLarge {
                bytes: b.size(),
                max: self.max_binding(),
            });
        }
        let pipeline = self.pipeline(family, entry)?;
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("cryptodl params"),
                contents: bytemuck::cast_slice(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let (_, layout, _) = self.module(family)?;
        if bindings.len() + 1 != family.bindings().len() {
            return Err(GpuError::Internal(format!(
                "{entry}: {} bindings given, {} expected",
                bindings.len() + 1,
                family.bindings().len()
            )));
        }
        let mut entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: bindings.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &entries,
        });
        let mut guard = self.encoder.lock().map_err(|_| GpuError::Poisoned)?;
        let (encoder, count) = guard.get_or_insert_with(|| {
            (
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cryptodl batch"),
                    }),
                0,
            )
        });
        {
            let mut timing = self.timing.lock().map_err(|_| GpuError::Poisoned)?;
            let timestamp_writes = match timing.as_mut() {
                Some(t) if t.next + 2 <= TIMING_QUERIES => {
                    t.next += 2;
                    Some(wgpu::ComputePassTimestampWrites {
                        query_set: &t.set,
                        beginning_of_pass_write_index: Some(t.next - 2),
                        end_of_pass_write_index: Some(t.next - 1),
                    })
                }
                Some(t) => {
                    t.overflow = true;
                    None
                }
                None => None,
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x as u32, y as u32, 1);
        }
        *count += 1;
        self.counters.launch();
        if *count >= MAX_PENDING_DISPATCHES {
            let (enc, _) = guard.take().expect("encoder present");
            self.queue.submit([enc.finish()]);
            self.counters.submit();
        }
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `words` u32 in the pending batch.
    pub fn copy(
        &self,
        src: &wgpu::Buffer,
        src_word: u64,
        dst: &wgpu::Buffer,
        dst_word: u64,
        words: u64,
    ) -> Result<(), GpuError> {
        if words == 0 || self.counts_only {
            return Ok(());
        }
        let mut guard = self.encoder.lock().map_err(|_| GpuError::Poisoned)?;
        let (encoder, _) = guard.get_or_insert_with(|| {
            (
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cryptodl batch"),
                    }),
                0,
            )
        });
        encoder.copy_buffer_to_buffer(src, src_word * 4, dst, dst_word * 4, words * 4);
        Ok(())
    }

    /// Submits the pending batch, if any.
    pub fn flush(&self) {
        if let Ok(mut guard) = self.encoder.lock() {
            if let Some((enc, _)) = guard.take() {
                self.queue.submit([enc.finish()]);
                self.counters.submit();
            }
        }
    }

    /// Starts timing the kernels on the GPU: every compute pass recorded until
    /// [`Self::finish_timing`] writes a begin and an end timestamp. Returns `false` (and times
    /// nothing) when the adapter has no timestamp queries.
    pub fn start_timing(&self) -> bool {
        if !self.summary.timestamp_queries || self.counts_only {
            return false;
        }
        self.flush();
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("cryptodl timing"),
            ty: wgpu::QueryType::Timestamp,
            count: TIMING_QUERIES,
        });
        match self.timing.lock() {
            Ok(mut t) => {
                *t = Some(Timing {
                    set,
                    next: 0,
                    overflow: false,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Ends the timing started by [`Self::start_timing`]: the summed GPU time of the compute
    /// passes recorded since, in seconds (`None` if no timing was active). Submits pending work.
    pub fn finish_timing(&self) -> Result<Option<f64>, GpuError> {
        let Some(t) = self.timing.lock().map_err(|_| GpuError::Poisoned)?.take() else {
            return Ok(None);
        };
        if t.overflow {
            return Err(GpuError::Internal(format!(
                "more than {} compute passes in one timing; time fewer operations at once",
                TIMING_QUERIES / 2
            )));
        }
        if t.next == 0 {
            return Ok(Some(0.0));
        }
        let bytes = u64::from(t.next) * wgpu::QUERY_SIZE as u64;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cryptodl timing resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let ticks: Vec<u64> = self.read_back(&resolve, bytes, |enc| {
            enc.resolve_query_set(&t.set, 0..t.next, &resolve, 0)
        })?;
        let period_ns = f64::from(self.queue.get_timestamp_period());
        let total: u64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]))
            .sum();
        Ok(Some(total as f64 * period_ns * 1e-9))
    }

    /// Submits the pending batch (or an empty encoder) with `before` recorded at its end and a
    /// copy of `bytes` of `src` to a staging buffer, then maps the staging buffer: one
    /// submission, one wait. The encoder lock is held until the submission, so work other
    /// threads record afterwards cannot overtake it.
    fn read_back<T: bytemuck::Pod>(
        &self,
        src: &wgpu::Buffer,
        bytes: u64,
        before: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<Vec<T>, GpuError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cryptodl readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // Waits for this submission only: work other threads submit later (batches in flight
        // on one device) keeps running.
        let index = {
            let mut guard = self.encoder.lock().map_err(|_| GpuError::Poisoned)?;
            let mut enc = match guard.take() {
                Some((e, _)) => e,
                None => self
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cryptodl readback"),
                    }),
            };
            before(&mut enc);
            enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
            let index = self.queue.submit([enc.finish()]);
            self.counters.submit();
            index
        };
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Device {
                adapter: self.summary.name.clone(),
                reason: e.to_string(),
            })?;
        rx.recv()
            .map_err(|_| GpuError::Readback("map callback dropped".into()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            // Mapped ranges are aligned for any element type.
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Reads `words` u32 of `src` back to the host: the pending batch and the copy to a staging
    /// buffer go in one submission, then one map (counted as one download).
    pub fn download(&self, src: &wgpu::Buffer, words: usize) -> Result<Vec<u32>, GpuError> {
        if words == 0 {
            return Ok(Vec::new());
        }
        let bytes = words as u64 * 4;
        let out = if self.counts_only {
            vec![0; words]
        } else {
            self.read_back(src, bytes, |_| {})?
        };
        self.counters.download(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_never_pass_the_binding_limit() {
        // The cryptonets mod-up digits of a whole layer: 1.16 GB, under wgpu's 2^31 - 1 limit
        // but rounding up to 2^31 (which a real GPU refuses to bind).
        let digits = 845 * 6 * 7 * 8192 * 4;
        assert_eq!(buffer_size(digits, WGPU_MAX_BINDING), digits);
        assert_eq!(buffer_size(digits, 1 << 32), 1 << 31);
        for (bytes, max) in [(3 << 20, 3 << 20), ((3 << 20) - 4, 3 << 20), (5, 1 << 20)] {
            let size = buffer_size(bytes, max);
            assert!(
                size >= bytes && size <= max.max(bytes),
                "{bytes} {max} -> {size}"
            );
        }
        assert_eq!(buffer_size(5, 1 << 20), 256);
        assert_eq!(buffer_size(1000, 1 << 20), 1024);
    }
}
