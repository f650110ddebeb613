//! The server engine: one [`Session`] per (device, parameters, evaluation keys), built once, that
//! scores any number of batches. Every command that scores (`demo`, `infer`, `score`,
//! `bench model`) goes through it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::backend::cost::KernelCounts;
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{GpuBackend, GpuRuntime};
use crate::backend::{Backend, Counters, MemoryUse};
use crate::ckks::{
    Ciphertext, CkksError, Context, DeviceCiphertext, DeviceEvaluator, DeviceKeys, EvaluationKeys,
};

use super::latency::run::{prepare, run_op, PreparedPlan};
use super::latency::LatencyPlan;
use super::plan::Plan;
use super::run::{chunk_size, download, run_step, upload, LinearCache};

/// Where a session evaluates.
#[derive(Clone)]
#[non_exhaustive]
pub enum Device {
    /// The CPU backend (kernels crate, rayon over the current thread pool).
    Cpu,
    /// A GPU through wgpu.
    Gpu(Arc<GpuRuntime>),
}

/// What one step of a scored batch cost.
#[derive(Clone, Debug, Serialize)]
pub struct StepStats {
    /// Index in the plan.
    pub step: usize,
    /// `linear`, `square` or `cubic`.
    pub kind: &'static str,
    /// Ciphertexts in.
    pub ciphertexts_in: usize,
    /// Ciphertexts out.
    pub ciphertexts_out: usize,
    /// Level of the input.
    pub level_in: usize,
    /// Wall time (the backend synchronised at the end).
    pub seconds: f64,
    /// Kernel launches (GPU dispatches, CPU kernel calls).
    pub launches: u64,
    /// Bytes moved host -> backend (tensor data).
    pub bytes_uploaded: u64,
    /// Bytes moved backend -> host.
    pub bytes_downloaded: u64,
    /// Counted bytes and multiplies per kernel family, beside their floor (GPU backend).
    #[serde(skip_serializing_if = "KernelCounts::is_empty")]
    pub kernels: KernelCounts,
}

impl StepStats {
    /// The stats of step `(index, kind)` from `(ciphertexts in, out)`, the input level, its
    /// start and the backend's counters over it.
    fn new(
        (step, kind): (usize, &'static str),
        (ciphertexts_in, ciphertexts_out): (usize, usize),
        level_in: usize,
        start: Instant,
        c: Counters,
    ) -> Self {
        StepStats {
            step,
            kind,
            ciphertexts_in,
            ciphertexts_out,
            level_in,
            seconds: start.elapsed().as_secs_f64(),
            launches: c.launches,
            bytes_uploaded: c.upload_bytes,
            bytes_downloaded: c.download_bytes,
            kernels: c.kernels,
        }
    }
}

/// What a scored batch cost.
#[derive(Clone, Debug, Serialize)]
pub struct BatchStats {
    /// Upload of the input ciphertexts (and dropping them to the plan's level).
    pub upload_seconds: f64,
    /// Each step.
    pub steps: Vec<StepStats>,
    /// Download of the logits.
    pub download_seconds: f64,
    /// Everything: upload, steps, download.
    pub seconds: f64,
    /// Launches and transfers of the whole batch.
    pub counters: Counters,
    /// Tensor memory the backend obtained from the system during the batch (0 when every
    /// buffer was reused).
    pub fresh_bytes: u64,
}

/// The logits of one batch and what they cost.
pub struct Scored {
    /// One ciphertext per model output (slot `s` holds sample `s`'s logit).
    pub logits: Vec<Ciphertext>,
    /// Timings and counts.
    pub stats: BatchStats,
}

/// One backend with the evaluation keys uploaded to it.
struct Server<B: Backend> {
    eval: DeviceEvaluator<B>,
    keys: DeviceKeys<B::Tensor>,
    /// Ciphertexts per launch, when set by the caller (else from the plan's input level).
    chunk: Option<usize>,
    /// The plaintexts of the last latency plan scored.
    latency: Mutex<Option<Arc<PreparedPlan<B::Tensor>>>>,
    /// The linear layers encoded so far (batch packing), reused by every batch.
    linear: LinearCache<B::Linear>,
}

/// The session's server, on the backend chosen at run time (boxed: built once, used by
/// reference).
enum Engine {
    Cpu(Box<Server<CpuBackend>>),
    Gpu(Box<Server<GpuBackend>>),
}

/// The server's side of encrypted inference: a backend, the evaluation keys uploaded to it
/// once, and the chunk size; scores any number of batches with [`Session::score`]. Holds no
/// secret.
///
/// ```
/// use cryptodl::ckks::{Context, Decryptor, Encoder, Encryptor, KeyGenerator, Preset};
/// use cryptodl::nn::{model::Model, reference};
/// use cryptodl::sched::{self, Device, Plan, Session};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = Model::demo()?; // the embedded CryptoNets-size network
/// let plan = Plan::compile(&model)?;
/// let ctx = Context::new(&Preset::by_name("n8192")?.parameters(false)?)?;
/// plan.check_depth("n8192", ctx.params().max_level())?;
///
/// // Client: keys, and one image encrypted in batch packing (one ciphertext per pixel).
/// let mut kg = KeyGenerator::new(ctx.clone());
/// let sk = kg.secret_key();
/// let pk = kg.public_key(&sk);
/// let eval_keys = kg.evaluation_keys(&sk, &[], false)?; // relinearization only
/// let image = reference::normalize(&model, &[128u8; 784]);
/// let enc = Encoder::new(ctx.clone());
/// let batch = sched::encrypt_batch(&plan, &enc, |_| Encryptor::new(ctx.clone()), &pk,
///                                  std::slice::from_ref(&image), || {})?;
///
/// // Server: evaluation keys and ciphertexts only.
/// let session = Session::new(Device::Cpu, ctx.clone(), &eval_keys)?;
/// let scored = session.score(&plan, &batch)?;
/// assert_eq!(scored.stats.steps.len(), plan.steps.len());
///
/// // Client: decrypt the logits.
/// let logits = sched::decrypt_logits(&Decryptor::new(ctx), &enc, &sk, &scored.logits, 1)?;
/// let want = reference::forward(&model, &image)?;
/// assert_eq!(reference::argmax(&logits[0]), reference::argmax(&want));
/// # Ok(())
/// # }
/// ```
pub struct Session {
    engine: Engine,
}

impl<B: Backend> Server<B> {
    fn new(ctx: Arc<Context>, backend: B, keys: &EvaluationKeys) -> Result<Self, CkksError> {
        let eval = DeviceEvaluator::new(ctx, backend)?;
        let keys = eval.upload_keys(keys)?;
        Ok(Self {
            eval,
            keys,
            chunk: None,
            latency: Mutex::new(None),
            linear: LinearCache::default(),
        })
    }

    /// The prepared plaintexts of `plan` (encoded and uploaded on first use).
    fn prepared(&self, plan: &LatencyPlan) -> Result<Arc<PreparedPlan<B::Tensor>>, CkksError> {
        let mut slot = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref().filter(|p| p.id == plan.id) {
            return Ok(p.clone());
        }
        let p = Arc::new(prepare(&self.eval, plan)?);
        *slot = Some(p.clone());
        Ok(p)
    }

    fn score_latency(
        &self,
        plan: &LatencyPlan,
        image: &[Ciphertext],
        mut progress: impl FnMut(&StepStats),
    ) -> Result<Scored, CkksError> {
        if image.len() != plan.input_ciphertexts() {
            return Err(CkksError::CountMismatch {
                op: "score_latency",
                left: plan.input_ciphertexts(),
                right: image.len(),
            });
        }
        let needed = plan.input_level;
        if let Some(low) = image.iter().find(|c| c.level < needed) {
            return Err(CkksError::TooShallow {
                level: low.level,
                needed,
            });
        }
        let prepared = self.prepared(plan)?;
        let be = self.eval.backend();
        let start = be.counters();
        let fresh = be.memory().fresh_bytes;
        let t0 = Instant::now();
        let mut cur = self.eval.upload(image)?;
        if cur.level() > needed {
            cur = self.eval.drop_levels(&cur, cur.level() - needed)?;
        }
        be.synchronize()?;
        let upload_seconds = t0.elapsed().as_secs_f64();
        let mut steps = Vec::with_capacity(plan.ops.len());
        for (i, op) in plan.ops.iter().enumerate() {
            let before = be.counters();
            let t = Instant::now();
            let (ciphertexts_in, level_in) = (cur.count(), cur.level());
            cur = run_op(&self.eval, &self.keys, plan, &prepared, i, cur)?;
            be.synchronize()?;
            let stats = StepStats::new(
                (i, op.kind()),
                (ciphertexts_in, cur.count()),
                level_in,
                t,
                be.counters() - before,
            );
            progress(&stats);
            steps.push(stats);
        }
        let t = Instant::now();
        let logits = self.eval.download(&cur)?;
        drop(cur);
        let download_seconds = t.elapsed().as_secs_f64();
        Ok(Scored {
            logits,
            stats: BatchStats {
                upload_seconds,
                steps,
                download_seconds,
                seconds: t0.elapsed().as_secs_f64(),
                counters: be.counters() - start,
                fresh_bytes: be.memory().fresh_bytes - fresh,
            },
        })
    }

    fn chunk_for(&self, level: usize) -> usize {
        self.chunk
            .unwrap_or_else(|| chunk_size(self.eval.backend(), self.eval.context().params(), level))
    }

    fn score(
        &self,
        plan: &Plan,
        batch: &[Ciphertext],
        per_step: bool,
        mut progress: impl FnMut(&StepStats),
    ) -> Result<Scored, CkksError> {
        if batch.len() != plan.inputs {
            return Err(CkksError::CountMismatch {
                op: "score",
                left: plan.inputs,
                right: batch.len(),
            });
        }
        let needed = plan.input_level();
        if let Some(low) = batch.iter().find(|c| c.level < needed) {
            return Err(CkksError::TooShallow {
                level: low.level,
                needed,
            });
        }
        let be = self.eval.backend();
        // Chunks sized for the level the batch arrives at (the upload's), which covers the rest.
        let top = batch.iter().map(|c| c.level).max().unwrap_or(needed);
        let chunk = self.chunk_for(top);
        let start = be.counters();
        let fresh = be.memory().fresh_bytes;
        let t0 = Instant::now();
        let mut cur = upload(&self.eval, batch, chunk)?;
        // Ciphertexts above the plan's input level: drop the levels no step needs.
        cur = cur
            .into_iter()
            .map(|c| {
                let extra = c.level() - needed;
                if extra > 0 {
                    self.eval.drop_levels(&c, extra)
                } else {
                    Ok(c)
                }
            })
            .collect::<Result<_, _>>()?;
        if per_step {
            be.synchronize()?;
        }
        let upload_seconds = t0.elapsed().as_secs_f64();
        let mut steps = Vec::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            let before = be.counters();
            let t = Instant::now();
            let ciphertexts_in = cur.iter().map(DeviceCiphertext::count).sum();
            let level_in = cur.first().map_or(0, DeviceCiphertext::level);
            cur = run_step(&self.eval, &self.keys, step, cur, chunk, Some(&self.linear))?;
            if per_step {
                be.synchronize()?;
            }
            let stats = StepStats::new(
                (i, step.kind()),
                (
                    ciphertexts_in,
                    cur.iter().map(DeviceCiphertext::count).sum(),
                ),
                level_in,
                t,
                be.counters() - before,
            );
            progress(&stats);
            steps.push(stats);
        }
        let t = Instant::now();
        let logits = download(&self.eval, &cur)?;
        drop(cur);
        let download_seconds = t.elapsed().as_secs_f64();
        Ok(Scored {
            logits,
            stats: BatchStats {
                upload_seconds,
                steps,
                download_seconds,
                seconds: t0.elapsed().as_secs_f64(),
                counters: be.counters() - start,
                fresh_bytes: be.memory().fresh_bytes - fresh,
            },
        })
    }
}

macro_rules! on_engine {
    ($self:expr, |$s:ident| $body:expr) => {
        match &$self.engine {
            Engine::Cpu($s) => $body,
            Engine::Gpu($s) => $body,
        }
    };
}

impl Session {
    /// A session on `device` for `ctx`'s parameters, with the evaluation keys uploaded.
    pub fn new(
        device: Device,
        ctx: Arc<Context>,
        keys: &EvaluationKeys,
    ) -> Result<Self, CkksError> {
        let rns = ctx.rns().clone();
        let engine = match device {
            Device::Cpu => Engine::Cpu(Box::new(Server::new(ctx, CpuBackend::new(rns), keys)?)),
            Device::Gpu(rt) => {
                Engine::Gpu(Box::new(Server::new(ctx, GpuBackend::new(rt, rns)?, keys)?))
            }
        };
        Ok(Self { engine })
    }

    /// The backend's name (`cpu`, or `gpu (<adapter>)`).
    pub fn backend_name(&self) -> String {
        on_engine!(self, |s| s.eval.backend().name())
    }

    /// `cpu` or `gpu`.
    pub fn kind(&self) -> &'static str {
        match &self.engine {
            Engine::Cpu(_) => "cpu",
            Engine::Gpu(_) => "gpu",
        }
    }

    /// The GPU adapter's name, on a GPU.
    pub fn adapter(&self) -> Option<String> {
        match &self.engine {
            Engine::Cpu(_) => None,
            Engine::Gpu(s) => Some(s.eval.backend().runtime().adapter().name.clone()),
        }
    }

    /// Ciphertexts per launch for `plan`: what keeps every intermediate tensor within the
    /// backend's limit, unless set with [`Self::set_chunk_size`].
    pub fn chunk_size(&self, plan: &Plan) -> usize {
        on_engine!(self, |s| s.chunk_for(plan.input_level()))
    }

    /// Sets the ciphertexts per launch (at least 1; the result does not depend on it).
    pub fn set_chunk_size(&mut self, chunk: usize) {
        match &mut self.engine {
            Engine::Cpu(s) => s.chunk = Some(chunk.max(1)),
            Engine::Gpu(s) => s.chunk = Some(chunk.max(1)),
        }
    }

    /// Scores one batch: `batch` holds one ciphertext per input value of the plan (slot `s` of
    /// each holding sample `s`), at the plan's input level or above (extra levels are dropped
    /// first). Returns the logits and the cost of each step.
    pub fn score(&self, plan: &Plan, batch: &[Ciphertext]) -> Result<Scored, CkksError> {
        self.score_with(plan, batch, |_| {})
    }

    /// [`Self::score`], calling `progress` after each step.
    pub fn score_with(
        &self,
        plan: &Plan,
        batch: &[Ciphertext],
        progress: impl FnMut(&StepStats),
    ) -> Result<Scored, CkksError> {
        on_engine!(self, |s| s.score(plan, batch, true, progress))
    }

    /// [`Self::score`] for throughput, with other batches in flight on the same session (from
    /// other threads): the backend is not synchronised between steps, so the device runs one
    /// batch's kernels while the host uploads or records another's, and only the download of
    /// the logits waits: for the work submitted with it (what every thread had recorded until
    /// then), not for what other batches record later. The logits are the same word for word;
    /// the steps' `seconds` are then the host's recording time, and their counters may include
    /// other batches' work.
    pub fn score_in_flight(&self, plan: &Plan, batch: &[Ciphertext]) -> Result<Scored, CkksError> {
        on_engine!(self, |s| s.score(plan, batch, false, |_| {}))
    }

    /// Encodes and uploads the plaintexts of a latency plan (done by the first
    /// [`Self::score_latency`] otherwise; call it to keep that out of a timed image).
    pub fn prepare_latency(&self, plan: &LatencyPlan) -> Result<(), CkksError> {
        on_engine!(self, |s| s.prepared(plan).map(|_| ()))
    }

    /// Scores one image in latency packing: `image` holds its
    /// [`LatencyPlan::input_ciphertexts`] ciphertexts (from [`super::latency::encrypt_image`]),
    /// at the plan's input level or above. Returns one ciphertext of logits and the cost of
    /// each operation. The evaluation keys must hold the plan's rotations.
    pub fn score_latency(
        &self,
        plan: &LatencyPlan,
        image: &[Ciphertext],
    ) -> Result<Scored, CkksError> {
        on_engine!(self, |s| s.score_latency(plan, image, |_| {}))
    }

    /// Launches and transfers since the session was built (key upload included).
    pub fn counters(&self) -> Counters {
        on_engine!(self, |s| s.eval.backend().counters())
    }

    /// Tensor memory of the backend (device memory on a GPU).
    pub fn memory(&self) -> MemoryUse {
        on_engine!(self, |s| s.eval.backend().memory())
    }
}

// Several workers may score through one session at once (`score --in-flight`).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Session>();
};
