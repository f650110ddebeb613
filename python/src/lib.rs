//! `cryptodl._cryptodl`: the engine's client and server steps for Python (the package
//! `cryptodl` wraps it); every call goes through the same library code as the CLI, on the same
//! files, with the GIL released while it works.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use cryptodl::backend::gpu::{list_adapters, AdapterChoice, GpuError, GpuRuntime};
use cryptodl::ckks::{CkksError, Preset, PRESETS};
use cryptodl::nn::images::{self, ArrayValues, ImagesError};
use cryptodl::nn::model::{Model, ModelError};
use cryptodl::nn::onnx::{self, ImportOptions, OnnxError};
use cryptodl::nn::reference;
use cryptodl::sched::client::{decrypt_job, open_secret_key, ClientError, JobRecord};
use cryptodl::sched::encrypt::{
    check_job_dir, encrypt_job, EncryptError, EncryptJob, EncryptionKeys,
};
use cryptodl::sched::job::{JobError, Manifest};
use cryptodl::sched::keys::{self, KeysError};
use cryptodl::sched::latency::LatencyPlan;
use cryptodl::sched::scoring::{JobScorer, ScoreError, ServerJob};
use cryptodl::sched::worker::{hostname, work, Queue};
use cryptodl::sched::{self as sched, Device, Plan, PlanError, Session};

create_exception!(
    cryptodl,
    CryptodlError,
    PyException,
    "Base class of every cryptodl error (its message is the CLI's)."
);
create_exception!(
    cryptodl,
    InputError,
    CryptodlError,
    "Bad input: arrays of the wrong dtype or shape, a model deeper than the parameters, a file \
     that is not what it should be, an output that would replace an input."
);
create_exception!(
    cryptodl,
    IntegrityError,
    CryptodlError,
    "Files that do not belong together or were damaged: another key set, job or model, a \
     checksum that fails, logits no plan produces."
);
create_exception!(
    cryptodl,
    DeviceError,
    CryptodlError,
    "No usable GPU adapter, or the device failed."
);

/// The Python exception of an error: its class by what went wrong, its message the CLI's.
enum Kind {
    Input,
    Integrity,
    Device,
    Other,
}

fn raise(kind: Kind, e: &dyn std::fmt::Display) -> PyErr {
    let msg = e.to_string();
    match kind {
        Kind::Input => InputError::new_err(msg),
        Kind::Integrity => IntegrityError::new_err(msg),
        Kind::Device => DeviceError::new_err(msg),
        Kind::Other => CryptodlError::new_err(msg),
    }
}

/// The class of each library error.
trait Classify: std::fmt::Display + Sized {
    fn kind(&self) -> Kind;
    fn py(&self) -> PyErr {
        raise(self.kind(), self)
    }
}

/// Errors that are always of one class.
macro_rules! classify_as {
    ($kind:expr => $($t:ty),+) => {
        $(impl Classify for $t {
            fn kind(&self) -> Kind {
                $kind
            }
        })+
    };
}

classify_as!(Kind::Input => ImagesError, ModelError, OnnxError, PlanError, CkksError);
classify_as!(Kind::Device => GpuError);
classify_as!(Kind::Integrity => JobError);

impl Classify for KeysError {
    fn kind(&self) -> Kind {
        match self {
            KeysError::File(_) | KeysError::NotFromSecret { .. } | KeysError::NotAPreset { .. } => {
                Kind::Integrity
            }
            KeysError::Ckks(_) | KeysError::InJobDir { .. } | KeysError::Exists { .. } => {
                Kind::Input
            }
            _ => Kind::Other,
        }
    }
}
impl Classify for EncryptError {
    fn kind(&self) -> Kind {
        match self {
            EncryptError::Keys(e) => e.kind(),
            EncryptError::File(_) | EncryptError::KeySets { .. } | EncryptError::Job(_) => {
                Kind::Integrity
            }
            EncryptError::Io { .. } | EncryptError::Client(_) => Kind::Other,
            _ => Kind::Input,
        }
    }
}
impl Classify for ClientError {
    fn kind(&self) -> Kind {
        match self {
            ClientError::Keys(e) => e.kind(),
            ClientError::Ckks(_) => Kind::Other,
            _ => Kind::Integrity,
        }
    }
}
impl Classify for ScoreError {
    fn kind(&self) -> Kind {
        match self {
            ScoreError::Keys(e) => e.kind(),
            ScoreError::Model(_) | ScoreError::Plan(_) | ScoreError::Output(_) => Kind::Input,
            ScoreError::Io { .. } | ScoreError::Ckks(_) => Kind::Other,
            _ => Kind::Integrity,
        }
    }
}

/// Progress reported to an optional Python callable `progress(done, total)`; the first
/// exception it raises is kept and raised when the work is over.
struct Progress {
    callback: Option<Py<PyAny>>,
    total: AtomicUsize,
    done: AtomicUsize,
    error: Mutex<Option<PyErr>>,
}

impl Progress {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        Progress {
            callback,
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            error: Mutex::new(None),
        }
    }

    fn start(&self, total: usize) {
        self.total.store(total, Ordering::SeqCst);
        self.report(0);
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.report(done);
    }

    fn report(&self, done: usize) {
        let Some(cb) = &self.callback else { return };
        let total = self.total.load(Ordering::SeqCst);
        Python::attach(|py| {
            if let Err(e) = cb.call1(py, (done, total)) {
                let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
            }
        });
    }

    /// The callback's first exception, if any.
    fn finish(self) -> PyResult<()> {
        match self.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The GPU adapters wgpu sees (JSON: a list of objects).
#[pyfunction]
fn devices_json(py: Python<'_>) -> PyResult<String> {
    let list = py.detach(list_adapters);
    serde_json::to_string(&list).map_err(|e| raise(Kind::Other, &e))
}

/// The parameter presets (JSON: a list of objects).
#[pyfunction]
fn params_json() -> PyResult<String> {
    let mut out = Vec::new();
    for p in PRESETS {
        let params = p.parameters(true).map_err(|e| e.py())?;
        out.push(serde_json::json!({
            "name": p.name,
            "log_n": p.log_n,
            "slots": params.slots(),
            "levels": params.max_level(),
            "q_bits": p.q_bits,
            "p_bits": p.p_bits,
            "log_qp": p.q_bits.iter().chain(p.p_bits).sum::<u32>(),
            "log_scale": p.log_scale,
            "secure": p.secure,
            "bootstrappable": cryptodl::circuits::BootstrapConfig::for_preset(p.name).is_some(),
        }));
    }
    serde_json::to_string(&out).map_err(|e| raise(Kind::Other, &e))
}

/// A trained model with polynomial activations.
#[pyclass(module = "cryptodl", name = "Model", frozen)]
struct PyModel {
    model: Model,
}

#[pymethods]
impl PyModel {
    /// Loads a cryptodl model file (`.safetensors`, as `cryptodl train` and `import` write).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let model = py.detach(|| Model::load(&path)).map_err(|e| e.py())?;
        Ok(PyModel { model })
    }

    /// The embedded demo model (cryptonets, Fashion-MNIST).
    #[staticmethod]
    fn demo() -> PyResult<Self> {
        Ok(PyModel {
            model: Model::demo().map_err(|e| e.py())?,
        })
    }

    /// Imports an ONNX model (`cryptodl import`): `mean` / `std` per channel of pixel / 255,
    /// `input_shape` (C, H, W) where the graph does not say.
    #[staticmethod]
    #[pyo3(signature = (path, mean=None, std=None, input_shape=None, name=None))]
    fn import_onnx(
        py: Python<'_>,
        path: PathBuf,
        mean: Option<Vec<f64>>,
        std: Option<Vec<f64>>,
        input_shape: Option<[usize; 3]>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let opts = ImportOptions {
            input_shape,
            mean,
            std,
            name,
        };
        let imported = py
            .detach(|| onnx::import(&path, &opts))
            .map_err(|e| e.py())?;
        Ok(PyModel {
            model: imported.model,
        })
    }

    /// Writes the model (`.safetensors`, atomically) for the CLI and the server.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.model.save(&path)).map_err(|e| e.py())
    }

    /// The model's name.
    #[getter]
    fn name(&self) -> String {
        self.model.name.clone()
    }

    /// Its input (channels, height, width).
    #[getter]
    fn input_shape(&self) -> (usize, usize, usize) {
        let [c, h, w] = self.model.input;
        (c, h, w)
    }

    /// Its number of classes.
    #[getter]
    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    /// The plaintext f64 reference of the model on `images` (as the encrypted path computes
    /// it): logits, N x classes.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let imgs = images_of(images, self.model.input)?;
        let model = &self.model;
        let logits = py
            .detach(|| {
                (0..imgs.len())
                    .map(|k| reference::forward(model, &imgs.normalized(model, k)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| e.py())?;
        to_array(py, logits, model.num_classes())
    }

    fn __repr__(&self) -> String {
        let [c, h, w] = self.model.input;
        format!(
            "Model(name={:?}, input_shape=({c}, {h}, {w}), classes={})",
            self.model.name,
            self.model.num_classes()
        )
    }
}

/// Images from a numpy array (uint8 pixels, or float32 / float64 in [0, 1]), checked as the
/// CLI checks a `.npy` file of them.
fn images_of(a: &Bound<'_, PyAny>, shape: [usize; 3]) -> PyResult<images::Images> {
    let bad = |e: ImagesError| e.py();
    // A C-contiguous array (the package makes one) is read in place, without a copy.
    fn values<'a, T: numpy::Element + Copy>(x: &'a PyReadonlyArrayDyn<'_, T>) -> Cow<'a, [T]> {
        match x.as_slice() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(x.as_array().iter().copied().collect()),
        }
    }
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        let v = values(&x);
        return images::from_array("array", x.shape(), ArrayValues::U8(&v), shape).map_err(bad);
    }
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let v = values(&x);
        return images::from_array("array", x.shape(), ArrayValues::F32(&v), shape).map_err(bad);
    }
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let v = values(&x);
        return images::from_array("array", x.shape(), ArrayValues::F64(&v), shape).map_err(bad);
    }
    let dtype = a
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()))
        .unwrap_or_else(|_| "not a numpy array".into());
    Err(InputError::new_err(format!(
        "images must be a numpy array of uint8 (0..255) or float32 / float64 (0..1), N x C x H x W \
         (or N x H x W for one channel); got {dtype}"
    )))
}

/// `rows` of `width` values as an N x width array.
fn to_array<'py>(
    py: Python<'py>,
    rows: Vec<Vec<f64>>,
    width: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let n = rows.len();
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    PyArray1::from_vec(py, flat).reshape([n, width])
}

fn packing_is_latency(packing: &str) -> PyResult<bool> {
    match packing {
        "batch" => Ok(false),
        "latency" => Ok(true),
        p => Err(InputError::new_err(format!(
            "packing {p:?}: use \"batch\" (N/2 images per batch file, throughput) or \"latency\" \
             (one image across a few ciphertexts)"
        ))),
    }
}

/// What `model` costs encrypted (`cryptodl plan`): the preset (the smallest 128-bit one deep
/// enough, unless named), levels, ciphertexts per image or batch, each step, and in latency
/// packing the rotations the evaluation keys need. Returns JSON.
#[pyfunction]
#[pyo3(signature = (model, preset=None, packing="batch", insecure=false))]
fn plan_json(
    model: PyRef<'_, PyModel>,
    preset: Option<String>,
    packing: &str,
    insecure: bool,
) -> PyResult<String> {
    let latency = packing_is_latency(packing)?;
    let plan = Plan::compile(&model.model).map_err(|e| e.py())?;
    let (params, chosen) =
        sched::parameters_for(&plan, preset.as_deref(), latency, insecure).map_err(|e| e.py())?;
    plan.check_depth(params.name(), params.max_level())
        .map_err(|e| e.py())?;
    let mut doc = serde_json::json!({
        "model": plan.model,
        "preset": params.name(),
        "preset_chosen": chosen,
        "insecure": params.is_insecure(),
        "packing": packing,
        "slots": params.slots(),
        "levels_needed": plan.levels_needed(),
        "levels": params.max_level(),
        "input_level": plan.input_level(),
        "steps": plan.steps.iter().map(|s| s.kind()).collect::<Vec<_>>(),
    });
    if latency {
        let lp = LatencyPlan::compile(&plan, &params).map_err(|e| e.py())?;
        doc["input_ciphertexts_per_image"] = lp.input_ciphertexts().into();
        doc["rotations"] = lp.rotations().into();
    } else {
        doc["input_ciphertexts_per_batch"] = plan.inputs.into();
        doc["output_ciphertexts_per_batch"] = plan.outputs.into();
        doc["images_per_batch"] = params.slots().into();
    }
    Ok(doc.to_string())
}

/// Makes a key directory (`cryptodl keygen`): `out/secret.key`, `public.key`, `eval.keys`.
/// Returns JSON (key set, preset, sizes).
#[pyfunction]
#[pyo3(signature = (out, preset=None, model=None, packing="batch", insecure=false))]
fn keygen_json(
    py: Python<'_>,
    out: PathBuf,
    preset: Option<String>,
    model: Option<PyRef<'_, PyModel>>,
    packing: &str,
    insecure: bool,
) -> PyResult<String> {
    let latency = packing_is_latency(packing)?;
    let demo;
    let model: Option<&Model> = match (&model, latency) {
        (Some(m), _) => Some(&m.model),
        (None, true) => {
            demo = Model::demo().map_err(|e| e.py())?;
            Some(&demo)
        }
        (None, false) => None,
    };
    // The plan is compiled once: for the preset, its depth check, and latency's rotations.
    let (params, rotations) = match model {
        Some(m) => {
            let plan = Plan::compile(m).map_err(|e| e.py())?;
            let (params, _) = sched::parameters_for(&plan, preset.as_deref(), latency, insecure)
                .map_err(|e| e.py())?;
            plan.check_depth(params.name(), params.max_level())
                .map_err(|e| e.py())?;
            let rotations = match latency {
                true => LatencyPlan::compile(&plan, &params)
                    .map_err(|e| e.py())?
                    .rotations(),
                false => Vec::new(),
            };
            (params, rotations)
        }
        None => (
            Preset::by_name(preset.as_deref().unwrap_or("n8192"))
                .and_then(|p| p.parameters(insecure))
                .map_err(|e| e.py())?,
            Vec::new(),
        ),
    };
    let made = py
        .detach(|| keys::generate(&out, &params, &rotations, None, |_| {}))
        .map_err(|e| e.py())?;
    Ok(serde_json::json!({
        "preset": params.name(),
        "insecure": params.is_insecure(),
        "key_set": made.key_set,
        "out": out.display().to_string(),
        "files": keys::KEY_FILES,
        "rotations": made.rotations,
        "eval_keys_bytes": made.eval_keys_bytes,
    })
    .to_string())
}

/// Encrypts `images` for `model` under the keys in `keys` into the job directory `out`
/// (`cryptodl encrypt --input`). Returns JSON (job, batches, ...).
#[pyfunction]
#[pyo3(signature = (keys, model, images, out, labels=None, packing="batch", insecure=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn encrypt_json(
    py: Python<'_>,
    keys: PathBuf,
    model: PyRef<'_, PyModel>,
    images: &Bound<'_, PyAny>,
    out: PathBuf,
    labels: Option<Vec<u8>>,
    packing: &str,
    insecure: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let latency = packing_is_latency(packing)?;
    let model = &model.model;
    let mut imgs = images_of(images, model.input)?;
    if let Some(l) = labels {
        if l.len() != imgs.len() {
            return Err(InputError::new_err(format!(
                "{} labels for {} images; give one label per image",
                l.len(),
                imgs.len()
            )));
        }
        imgs.labels = Some(l);
    }
    let has_labels = imgs.labels.is_some();
    let progress = Progress::new(progress);
    let done = py.detach(|| -> PyResult<_> {
        let mut reads = cryptodl::io::ReadSet::new();
        keys::key_files(&mut reads, &keys);
        let opened = EncryptionKeys::open(&keys, insecure).map_err(|e| e.py())?;
        check_job_dir(&out, &keys).map_err(|e| e.py())?;
        let job = EncryptJob {
            model,
            keys: &keys,
            opened: &opened,
            out: &out,
            images: &imgs,
            source: format!("numpy array ({} images)", imgs.len()),
            dataset: None,
            labels_file: has_labels.then_some(Path::new("labels")),
            latency,
        };
        let done = encrypt_job(&job, &reads, |n| progress.start(n), || progress.tick())
            .map_err(|e| e.py())?;
        Ok((
            done,
            opened.params.name().to_string(),
            opened.params.is_insecure(),
        ))
    });
    progress.finish()?;
    let (done, preset, insecure) = done?;
    Ok(serde_json::json!({
        "job": done.job,
        "model": model.name,
        "preset": preset,
        "insecure": insecure,
        "key_set": done.key_set,
        "images": done.images,
        "batches": done.batches,
        "packing": packing,
        "ciphertexts_per_batch": done.ciphertexts_per_batch,
        "input_level": done.input_level,
        "sources": done.record.display().to_string(),
        "out": out.display().to_string(),
    })
    .to_string())
}

/// Decrypts the logits of the scored job in `scored` with the secret key in `keys`
/// (`cryptodl decrypt`): N x classes, in job order.
#[pyfunction]
#[pyo3(signature = (keys, scored, insecure=false, progress=None))]
fn decrypt<'py>(
    py: Python<'py>,
    keys: PathBuf,
    scored: PathBuf,
    insecure: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let progress = Progress::new(progress);
    let result = py.detach(|| -> Result<_, PyErr> {
        let (manifest, params) = Manifest::read(&scored, insecure).map_err(|e| e.py())?;
        let (ctx, sk, _) =
            open_secret_key(&keys, &manifest, &params, insecure).map_err(|e| e.py())?;
        // The record beside the keys, when there is one, must be this job's.
        JobRecord::read(&keys, &manifest).map_err(|e| e.py())?;
        progress.start(manifest.batches.len());
        let logits =
            decrypt_job(&manifest, &scored, &ctx, &sk, || progress.tick()).map_err(|e| e.py())?;
        Ok((logits, manifest.model.outputs))
    });
    progress.finish()?;
    let (logits, width) = result?;
    to_array(py, logits, width)
}

/// The device a server scores on: `cpu`, `gpu` (the most powerful adapter, or the one whose
/// name contains `adapter`) or `auto` (a GPU if there is one, else the CPU).
fn device_of(device: &str, adapter: Option<&str>) -> PyResult<Device> {
    let choice = AdapterChoice::from_arg(adapter);
    match device {
        "cpu" => Ok(Device::Cpu),
        "gpu" => GpuRuntime::open(&choice).map(Device::Gpu).map_err(|e| {
            raise(
                Kind::Device,
                &format!("device \"gpu\" needs a GPU adapter (see cryptodl.devices()): {e}"),
            )
        }),
        "auto" => Ok(GpuRuntime::open(&choice).map_or(Device::Cpu, Device::Gpu)),
        d => Err(InputError::new_err(format!(
            "device {d:?}: use \"cpu\", \"gpu\" or \"auto\""
        ))),
    }
}

/// Scores the job in `job` into `out` with the model file `model` and the evaluation keys
/// `eval_keys` on `device` (`cryptodl score`): resumable, batches already scored are skipped.
/// Returns JSON (batches scored, skipped, seconds).
#[pyfunction]
#[pyo3(signature = (model, eval_keys, job, out, device="cpu", adapter=None, insecure=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn score_json(
    py: Python<'_>,
    model: PathBuf,
    eval_keys: PathBuf,
    job: PathBuf,
    out: PathBuf,
    device: &str,
    adapter: Option<&str>,
    insecure: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let device = py.detach(|| device_of(device, adapter))?;
    let progress = Progress::new(progress);
    let t0 = std::time::Instant::now();
    let result = py.detach(|| -> Result<_, PyErr> {
        let (opened, keys) =
            ServerJob::open(&job, &model, &eval_keys, insecure).map_err(|e| e.py())?;
        let batches = opened.manifest.batches.len();
        opened
            .check_outputs(&model, &eval_keys, &out, 0..batches)
            .map_err(|e| e.py())?;
        let session = Session::new(device, opened.ctx.clone(), &keys).map_err(|e| e.py())?;
        drop(keys);
        let scorer =
            JobScorer::new(opened.files(&out), opened.scoring(), false).map_err(|e| e.py())?;
        progress.start(batches);
        // One worker, as each of `cryptodl score`'s: its log in `out` (`cryptodl status`
        // reads it), batches already done skipped, one another worker holds tried again.
        let todo: Vec<usize> = (0..batches).collect();
        let tick = || progress.tick();
        let queue = Queue::new(&todo, &tick);
        let worker = format!("{}-{}-python", hostname(), std::process::id());
        let done = work(&scorer, &queue, &session, worker, "1/1").map_err(|e| e.py())?;
        Ok(serde_json::json!({
            "job": opened.manifest.job,
            "model": opened.model.name,
            "preset": opened.params.name(),
            "insecure": opened.params.is_insecure(),
            "device": session.backend_name(),
            "worker": done.worker,
            "batches": batches,
            "scored": done.tally.scored,
            "skipped": done.tally.skipped,
            "busy": done.tally.busy,
            "images": done.tally.images,
            "server_seconds": done.tally.server_s,
            "out": out.display().to_string(),
        }))
    });
    progress.finish()?;
    let mut report = result?;
    report["wall_seconds"] = t0.elapsed().as_secs_f64().into();
    Ok(report.to_string())
}

/// The Rust half of the `cryptodl` package.
#[pymodule]
fn _cryptodl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CryptodlError", py.get_type::<CryptodlError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(devices_json, m)?)?;
    m.add_function(wrap_pyfunction!(params_json, m)?)?;
    m.add_function(wrap_pyfunction!(plan_json, m)?)?;
    m.add_function(wrap_pyfunction!(keygen_json, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt_json, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(score_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
