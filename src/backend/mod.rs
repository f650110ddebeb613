//! Compute backends for tensors of RNS polynomials: `cpu` (kernels crate) and `gpu` (wgpu).
//!
//! A tensor is `[polys][limbs][n]` canonical `u32` residues, limb-major, in one flat buffer; limb
//! `l` of every polynomial is taken modulo `ctx.primes()[moduli[l]]`, where `moduli` (the tensor's
//! limb map) indexes the [`RnsContext`] the backend was built for (all primes `Q ∪ P` of a
//! parameter set, each with its NTT tables). Ciphertext tensors are `[ct][component][limb][n]`,
//! i.e. `polys = count * components`.
//!
//! Every tensor carries its representation ([`Form`]: coefficients or NTT evaluations), and every
//! operation checks it: a polynomial product of tensors in coefficient form, or an NTT of a tensor
//! already in NTT form, is an error ([`BackendError::Representation`]), not garbage.
//!
//! Every operation exists on both backends and gives bit-identical results; GPU tensors stay on
//! the device between operations, and only [`Backend::upload`] / [`Backend::download`] move data.
//! The RNS constants every operation needs (base conversions, divide-and-round) are derived in
//! one place, [`RnsContext`], and cached there per limb map for both backends.

pub mod cost;
pub mod cpu;
pub mod gpu;
pub mod verify;

use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::rescale::DivideRound;
use cryptodl_kernels::rns::{BaseConverter, RnsBasis};
use cryptodl_kernels::KernelError;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Errors of the compute backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Building moduli or tables failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The GPU runtime failed.
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    /// The data length does not match the shape.
    #[error("{op}: got {got} words, shape needs {want}")]
    Length {
        /// Operation.
        op: &'static str,
        /// Words given.
        got: usize,
        /// Words needed.
        want: usize,
    },
    /// Two operands do not fit together.
    #[error("{op}: {reason}")]
    Shape {
        /// Operation.
        op: &'static str,
        /// What does not match.
        reason: String,
    },
    /// A limb map names a modulus the context does not have.
    #[error("limb map entry {index} is outside the context's {len} moduli")]
    ModulusIndex {
        /// The bad index.
        index: usize,
        /// Moduli in the context.
        len: usize,
    },
    /// The ring degree is outside what the kernels support.
    #[error("ring degree {n} is not a power of two in 2..=2^20")]
    Degree {
        /// The degree.
        n: usize,
    },
    /// An operand is in the wrong representation (coefficients vs NTT evaluations).
    #[error("{op}: operand is in {found} form, the operation needs {expected} form")]
    Representation {
        /// Operation.
        op: &'static str,
        /// The form the operation needs.
        expected: Form,
        /// The operand's form.
        found: Form,
    },
}

/// Result alias of the backends.
pub type Result<T> = std::result::Result<T, BackendError>;

/// The primes of a parameter set (`Q` then `P`) at degree `n`, with NTT tables and the RNS
/// constants derived from them. Cheap to clone (shared); the constants of every limb map an
/// operation uses are computed once and cached for every backend and evaluator built on it.
#[derive(Clone)]
pub struct RnsContext {
    inner: Arc<RnsInner>,
}

/// A cache of constants by a pair of limb maps (context indices).
type ByMaps<T> = Mutex<HashMap<(Vec<usize>, Vec<usize>), Arc<T>>>;

struct RnsInner {
    n: usize,
    primes: Vec<u32>,
    moduli: Vec<Modulus>,
    tables: Vec<NttTable>,
    /// Divide-and-round constants by (kept limbs, dropped limbs).
    divide_round: ByMaps<DivideRound>,
    /// Base converters by (source limbs, target limbs).
    converters: ByMaps<BaseConverter>,
}

impl std::fmt::Debug for RnsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RnsContext")
            .field("n", &self.inner.n)
            .field("primes", &self.inner.primes)
            .finish_non_exhaustive()
    }
}

impl RnsContext {
    /// Builds the tables for `primes` (each NTT-friendly for `n`, pairwise distinct).
    pub fn new(n: usize, primes: &[u32]) -> Result<Self> {
        if !n.is_power_of_two() || !(2..=1 << 20).contains(&n) {
            return Err(BackendError::Degree { n });
        }
        for (i, p) in primes.iter().enumerate() {
            if primes[..i].contains(p) {
                return Err(KernelError::DuplicateModulus { q: *p }.into());
            }
        }
        let moduli = primes
            .iter()
            .map(|&q| Modulus::new(q))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let tables = primes
            .iter()
            .map(|&q| NttTable::new(q, n))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(RnsInner {
                n,
                primes: primes.to_vec(),
                moduli,
                tables,
                divide_round: Mutex::new(HashMap::new()),
                converters: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.inner.n
    }

    /// The primes, in context order.
    pub fn primes(&self) -> &[u32] {
        &self.inner.primes
    }

    /// The moduli, in context order.
    pub fn moduli(&self) -> &[Modulus] {
        &self.inner.moduli
    }

    /// The NTT tables, in context order.
    pub fn tables(&self) -> &[NttTable] {
        &self.inner.tables
    }

    /// The moduli of the limbs of a limb map.
    pub fn moduli_of(&self, map: &[usize]) -> Vec<Modulus> {
        map.iter().map(|&i| self.inner.moduli[i]).collect()
    }

    /// The NTT tables of the limbs of a limb map.
    pub fn tables_of(&self, map: &[usize]) -> Vec<&NttTable> {
        map.iter().map(|&i| &self.inner.tables[i]).collect()
    }

    /// `prod_{i in of} p_i mod p_t` for every `t` in `at` (e.g. `P mod q_t` for a fused
    /// relinearize-and-rescale).
    pub fn product_mod(&self, of: &[usize], at: &[usize]) -> Vec<u32> {
        at.iter()
            .map(|&t| {
                let m = &self.inner.moduli[t];
                of.iter().fold(1 % m.value(), |acc, &i| {
                    m.mul(acc, self.inner.primes[i] % m.value())
                })
            })
            .collect()
    }

    /// Divide-and-round constants for a tensor over `keep ++ drop` (context indices): the
    /// result is `round(x / prod(drop))` over `keep`. Computed once per pair of limb maps.
    pub fn divide_round(&self, keep: &[usize], drop: &[usize]) -> Result<Arc<DivideRound>> {
        self.check_map(keep)?;
        self.check_map(drop)?;
        let key = (keep.to_vec(), drop.to_vec());
        let mut cache = self
            .inner
            .divide_round
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let primes = |m: &[usize]| m.iter().map(|&i| self.inner.primes[i]).collect::<Vec<_>>();
        let c = Arc::new(DivideRound::new(&primes(drop), &primes(keep))?);
        cache.insert(key, c.clone());
        Ok(c)
    }

    /// The base conversion from the limbs `from` to the limbs `to` (context indices): the
    /// mod-up of a key-switching digit, or the conversion inside a divide-and-round. Computed
    /// once per pair of limb maps.
    pub fn base_converter(&self, from: &[usize], to: &[usize]) -> Result<Arc<BaseConverter>> {
        self.check_map(from)?;
        self.check_map(to)?;
        let key = (from.to_vec(), to.to_vec());
        let mut cache = self
            .inner
            .converters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let primes: Vec<u32> = from.iter().map(|&i| self.inner.primes[i]).collect();
        let c = Arc::new(BaseConverter::new(
            &RnsBasis::new(&primes)?,
            &self.moduli_of(to),
        ));
        cache.insert(key, c.clone());
        Ok(c)
    }

    /// Checks that `len` words with this `shape` can be uploaded (valid limb map, exact size).
    pub fn check_upload(&self, len: usize, shape: &Shape) -> Result<()> {
        self.check_map(&shape.moduli)?;
        let want = shape.words(self.n());
        if len != want {
            return Err(BackendError::Length {
                op: "upload",
                got: len,
                want,
            });
        }
        Ok(())
    }

    /// Checks a limb map against the context.
    pub fn check_map(&self, map: &[usize]) -> Result<()> {
        match map.iter().find(|&&i| i >= self.inner.primes.len()) {
            Some(&index) => Err(BackendError::ModulusIndex {
                index,
                len: self.inner.primes.len(),
            }),
            None => Ok(()),
        }
    }
}

/// What the limbs of a tensor hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// Coefficients (what base conversions and the coefficient automorphism work on).
    Coeff,
    /// NTT evaluations, bit-reversed order (what products, key switching and the NTT-form
    /// automorphism work on). Ciphertexts and plaintexts live in this form.
    Ntt,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::Coeff => "coefficient",
            Form::Ntt => "NTT",
        })
    }
}

/// Fails unless `shape` is in `form`.
pub(crate) fn expect_form(op: &'static str, shape: &Shape, form: Form) -> Result<()> {
    if shape.form != form {
        return Err(BackendError::Representation {
            op,
            expected: form,
            found: shape.form,
        });
    }
    Ok(())
}

/// Shape of a tensor: `polys` polynomials whose limb `l` is modulo context modulus `moduli[l]`,
/// in representation `form`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Number of polynomials.
    pub polys: usize,
    /// Limb map: context modulus index of each limb.
    pub moduli: Vec<usize>,
    /// Coefficients or NTT evaluations.
    pub form: Form,
}

impl Shape {
    /// `polys` polynomials over `moduli` in NTT form.
    pub fn ntt(polys: usize, moduli: Vec<usize>) -> Self {
        Self {
            polys,
            moduli,
            form: Form::Ntt,
        }
    }

    /// `polys` polynomials over `moduli` in coefficient form.
    pub fn coeff(polys: usize, moduli: Vec<usize>) -> Self {
        Self {
            polys,
            moduli,
            form: Form::Coeff,
        }
    }

    /// The same limb map and form with `polys` polynomials.
    pub fn with_polys(&self, polys: usize) -> Self {
        Self {
            polys,
            moduli: self.moduli.clone(),
            form: self.form,
        }
    }

    /// Limbs per polynomial.
    pub fn limbs(&self) -> usize {
        self.moduli.len()
    }

    /// Words in a tensor of this shape at degree `n`.
    pub fn words(&self, n: usize) -> usize {
        self.polys * self.moduli.len() * n
    }
}

/// A key-switching key laid out for [`Backend::keyswitch`]: `[dnum][2][key_limbs][n]` in NTT
/// form over `key_moduli` (all of `Q` then `P`).
pub struct SwitchKey<T> {
    /// The key tensor (`polys = 2 * dnum`).
    pub key: T,
    /// Number of digits.
    pub dnum: usize,
    /// Limbs of `Q` per digit (the last digit may be shorter).
    pub alpha: usize,
    /// Context indices of the special primes `P`.
    pub special: Vec<usize>,
}

/// Sparse weights of [`Backend::linear`] in CSR form (layouts in `cryptodl_kernels::linear`):
/// output `j` is the sum over entries `e` in `row_ptr[j]..row_ptr[j + 1]` of
/// `values[l][e] * x[cols[e]]`, plus `bias[j][l]` on component 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearWeights {
    /// Number of input groups (ciphertexts) the columns index.
    pub inputs: usize,
    /// `outputs + 1` offsets into the entries (0 first, non-decreasing, `nnz` last).
    pub row_ptr: Vec<u32>,
    /// Input index of each entry.
    pub cols: Vec<u32>,
    /// `[limbs][nnz]` weight residues, each below its limb's prime.
    pub values: Vec<u32>,
    /// `[outputs][limbs]` residues added to component 0.
    pub bias: Vec<u32>,
}

impl LinearWeights {
    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }

    /// The kernel's view of the weights.
    pub fn rows(&self) -> cryptodl_kernels::linear::SparseRows<'_> {
        cryptodl_kernels::linear::SparseRows {
            row_ptr: &self.row_ptr,
            cols: &self.cols,
            values: &self.values,
            bias: &self.bias,
        }
    }
}

/// Checks that weights prepared for the limb map `prepared` meet inputs over `x`'s (shared by
/// every backend's [`Backend::linear_prepared`]).
pub(crate) fn check_prepared_map(op: &'static str, x: &Shape, prepared: &[usize]) -> Result<()> {
    if x.moduli != prepared {
        return Err(BackendError::Shape {
            op,
            reason: format!(
                "the weights were prepared for limbs {prepared:?}, the input is over {:?}",
                x.moduli
            ),
        });
    }
    Ok(())
}

/// The shape of a linear layer of `inputs -> outputs`, validated by [`check_linear`] when it was
/// prepared for the limb map `prepared`, applied to `x` of `comps` components: only `x` is
/// checked, so applying prepared weights costs nothing per weight.
pub(crate) fn check_prepared_linear(
    op: &'static str,
    ctx: &RnsContext,
    x: &Shape,
    comps: usize,
    prepared: &[usize],
    (inputs, outputs): (usize, usize),
) -> Result<cryptodl_kernels::linear::LinearShape> {
    check_prepared_map(op, x, prepared)?;
    if comps == 0 || x.polys != inputs * comps {
        return Err(BackendError::Shape {
            op,
            reason: format!("input {x:?} is not {inputs} groups of {comps} components"),
        });
    }
    Ok(cryptodl_kernels::linear::LinearShape {
        inputs,
        outputs,
        comps,
        limbs: x.limbs(),
        n: ctx.n(),
    })
}

/// Validates the operands of [`Backend::linear`] (shared by every backend); returns the shape.
pub(crate) fn check_linear(
    ctx: &RnsContext,
    x: &Shape,
    comps: usize,
    w: &LinearWeights,
) -> Result<cryptodl_kernels::linear::LinearShape> {
    let bad = |reason: String| BackendError::Shape {
        op: "linear",
        reason,
    };
    let (limbs, nnz, outputs) = (x.limbs(), w.cols.len(), w.outputs());
    if comps == 0 || x.polys != w.inputs * comps || limbs == 0 {
        return Err(bad(format!(
            "input {x:?} is not {} groups of {comps} components",
            w.inputs
        )));
    }
    if outputs == 0
        || w.row_ptr[0] != 0
        || w.row_ptr.windows(2).any(|p| p[0] > p[1])
        || w.row_ptr[outputs] as usize != nnz
    {
        return Err(bad(format!(
            "row_ptr must rise from 0 to the {nnz} entries over at least one output"
        )));
    }
    if let Some(c) = w.cols.iter().find(|&&c| c as usize >= w.inputs) {
        return Err(bad(format!(
            "column {c} is outside the {} inputs",
            w.inputs
        )));
    }
    if w.values.len() != limbs * nnz || w.bias.len() != outputs * limbs {
        return Err(bad(format!(
            "{} values and {} bias words given; {limbs} limbs need {} and {}",
            w.values.len(),
            w.bias.len(),
            limbs * nnz,
            outputs * limbs
        )));
    }
    let q = |l: usize| ctx.primes()[x.moduli[l]];
    let high_value = (0..w.values.len()).find(|&i| w.values[i] >= q(i / nnz.max(1)));
    let high_bias = (0..w.bias.len()).find(|&i| w.bias[i] >= q(i % limbs));
    if high_value.is_some() || high_bias.is_some() {
        return Err(bad(
            "weights and bias must be reduced modulo their limb's prime".into(),
        ));
    }
    Ok(cryptodl_kernels::linear::LinearShape {
        inputs: w.inputs,
        outputs,
        comps,
        limbs,
        n: ctx.n(),
    })
}

/// Validates the operands of [`Backend::keyswitch_inner`] (shared by every backend).
pub(crate) fn check_keyswitch_inner(
    digits: &Shape,
    dnum: usize,
    key: &Shape,
    key_map: &[usize],
) -> Result<()> {
    expect_form("keyswitch_inner", digits, Form::Ntt)?;
    expect_form("keyswitch_inner", key, Form::Ntt)?;
    let (limbs, key_limbs) = (digits.limbs(), key.limbs());
    if dnum == 0
        || !digits.polys.is_multiple_of(dnum)
        || key.polys < 2 * dnum
        || !key.polys.is_multiple_of(2)
        || key_map.len() != limbs
        || key_map.iter().any(|&k| k >= key_limbs)
        || key_map
            .iter()
            .zip(&digits.moduli)
            .any(|(&k, &m)| key.moduli[k] != m)
    {
        return Err(BackendError::Shape {
            op: "keyswitch_inner",
            reason: format!("digits {digits:?}, dnum {dnum}, key {key:?}, key map {key_map:?}"),
        });
    }
    Ok(())
}

/// Digit ranges (positions in the limb list) of a hybrid decomposition of `limbs` limbs with
/// `alpha` limbs per digit.
pub fn digit_ranges(limbs: usize, alpha: usize) -> Vec<Range<usize>> {
    let alpha = alpha.max(1);
    (0..limbs.div_ceil(alpha))
        .map(|j| j * alpha..((j + 1) * alpha).min(limbs))
        .collect()
}

/// Launches and transfers of a backend, counted as they are recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Host -> backend tensor uploads.
    pub uploads: u64,
    /// Backend -> host tensor downloads.
    pub downloads: u64,
    /// Bytes uploaded (tensor data; small kernel parameter blocks are not counted).
    pub upload_bytes: u64,
    /// Bytes downloaded.
    pub download_bytes: u64,
    /// Kernel launches: GPU compute dispatches, or CPU kernel calls (one per operation, a
    /// fused CPU operation counting once).
    pub launches: u64,
    /// Queue submissions (GPU only).
    pub submissions: u64,
    /// Counted bytes and multiplies per kernel family, beside their floor (GPU only: the CPU
    /// backend's kernels are not counted).
    pub kernels: cost::KernelCounts,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            uploads: self.uploads - o.uploads,
            downloads: self.downloads - o.downloads,
            upload_bytes: self.upload_bytes - o.upload_bytes,
            download_bytes: self.download_bytes - o.download_bytes,
            launches: self.launches - o.launches,
            submissions: self.submissions - o.submissions,
            kernels: self.kernels - o.kernels,
        }
    }
}

/// Thread-safe [`Counters`].
#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    uploads: AtomicU64,
    downloads: AtomicU64,
    upload_bytes: AtomicU64,
    download_bytes: AtomicU64,
    launches: AtomicU64,
    submissions: AtomicU64,
    kernels: Mutex<cost::KernelCounts>,
}

impl AtomicCounters {
    pub(crate) fn upload(&self, bytes: u64) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn download(&self, bytes: u64) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.download_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn launch(&self) {
        self.launches.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn kernel(&self, family: cost::CostFamily, c: cost::KernelCost) {
        if let Ok(mut k) = self.kernels.lock() {
            k.record(family, c);
        }
    }
    pub(crate) fn submit(&self) {
        self.submissions.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> Counters {
        Counters {
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            upload_bytes: self.upload_bytes.load(Ordering::Relaxed),
            download_bytes: self.download_bytes.load(Ordering::Relaxed),
            launches: self.launches.load(Ordering::Relaxed),
            submissions: self.submissions.load(Ordering::Relaxed),
            kernels: self.kernels.lock().map(|k| *k).unwrap_or_default(),
        }
    }
}

/// Memory a backend holds for tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Bytes of the tensors alive now.
    pub live_bytes: u64,
    /// The most bytes of tensors alive at once so far.
    pub peak_bytes: u64,
    /// Bytes of freed tensor buffers kept for reuse (not returned to the system).
    pub pooled_bytes: u64,
    /// Bytes of tensor buffers newly obtained from the system so far (not reused): the memory
    /// the kernel had to zero. Flat from one batch to the next when buffers are reused.
    pub fresh_bytes: u64,
}

/// Operations a CKKS evaluator needs on tensors of RNS polynomials.
///
/// Binary element-wise operations accept `b` with the same number of polynomials as `a`, or
/// one polynomial (broadcast to all of `a`); limb maps and forms must be equal. The composite
/// operations at the end ([`Backend::keyswitch_ext`], [`Backend::keyswitch`],
/// [`Backend::relin_rescale`]) have default implementations composed of the primitives; a backend
/// may fuse them, provided the result is the same word for word.
pub trait Backend {
    /// A tensor resident on this backend.
    type Tensor;
    /// A linear layer's weights in the form this backend applies them, for inputs over one limb
    /// map ([`Self::prepare_linear`]): the GPU's kernel tables built and uploaded once, then
    /// applied to batch after batch.
    type Linear: Send + Sync;

    /// Short description (`cpu`, or `gpu (<adapter>)`).
    fn name(&self) -> String;
    /// The context the backend was built for.
    fn context(&self) -> &RnsContext;
    /// Shape of a tensor.
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a Shape;

    /// The largest tensor (in `u32` words) one operation may bind: a GPU's storage-binding size,
    /// or the CPU backend's memory bound; schedulers chunk batches to stay below it.
    fn max_tensor_words(&self) -> usize;

    /// Words of the largest intermediate tensor that key switching needs per polynomial of
    /// `limbs` limbs, with `special` special primes and `digits` digits: the mod-up digits
    /// `[digits][limbs + special]` when key switching is composed of separate launches (the
    /// default); 0 for a backend that fuses it per polynomial in scratch memory.
    fn keyswitch_words(&self, limbs: usize, special: usize, digits: usize) -> usize {
        digits * (limbs + special) * self.context().n()
    }

    /// Launches and transfers so far.
    fn counters(&self) -> Counters;
    /// Tensor memory held by the backend (device memory on a GPU).
    fn memory(&self) -> MemoryUse;
    /// Waits until every recorded operation has finished (for timing; a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Host -> backend (counted).
    fn upload(&self, data: &[u32], shape: Shape) -> Result<Self::Tensor>;
    /// Host -> backend of the concatenation of `parts` (e.g. the ciphertexts of a batch), without
    /// concatenating them on the host first (counted as one upload).
    fn upload_parts(&self, parts: &[&[u32]], shape: Shape) -> Result<Self::Tensor> {
        self.upload(&parts.concat(), shape)
    }
    /// Backend -> host (counted; submits pending work first).
    fn download(&self, t: &Self::Tensor) -> Result<Vec<u32>>;
    /// Copy of a tensor, on the backend.
    fn duplicate(&self, t: &Self::Tensor) -> Result<Self::Tensor>;

    /// Components `keep` of every item of `group` consecutive polynomials (e.g. `c2` of every
    /// ciphertext of a `[count][3][limbs]` tensor: `group = 3`, `keep = 2..3`), as a new tensor
    /// `[count][keep.len()][limbs]`.
    fn slice_components(
        &self,
        t: &Self::Tensor,
        group: usize,
        keep: Range<usize>,
    ) -> Result<Self::Tensor>;

    /// The inverse of [`Self::slice_components`]: `parts[i]` is `[count][k_i][limbs]` (every part
    /// over the same limb map and form); returns `[count][k_0 + k_1 + ...][limbs]`, item by item
    /// (e.g. joining `c0'` of `[count][1]` with `c1` of `[count][1]` gives `[count][2]`). With
    /// `count = 1` it concatenates whole tensors (batches of ciphertexts into one).
    fn join_components(&self, count: usize, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;

    /// The first `limbs` limbs of every polynomial (drops the last limbs without dividing:
    /// CKKS `drop_levels`).
    fn truncate_limbs(&self, t: &Self::Tensor, limbs: usize) -> Result<Self::Tensor>;

    /// `w` prepared for inputs over the limb map `moduli` (its residues are per limb of that
    /// map), to apply with [`Self::linear_prepared`] and its kin any number of times.
    fn prepare_linear(&self, w: LinearWeights, moduli: &[usize]) -> Result<Self::Linear>;

    /// Sparse linear layer: `x` is `[inputs][comps][limbs]`; returns `[outputs][comps][limbs]`
    /// with output `j` the weighted sum of row `j` of `w` (plus the bias on component 0). In
    /// batch packing this is a convolution or dense layer over ciphertexts, in one launch. `x`
    /// must be over the limb map `w` was prepared for.
    fn linear_prepared(
        &self,
        x: &Self::Tensor,
        comps: usize,
        w: &Self::Linear,
    ) -> Result<Self::Tensor>;

    /// [`Self::linear_prepared`] then [`Self::divide_round`] by the last limb (a linear step
    /// with its rescale). Returns `[outputs][comps][limbs - 1]`.
    fn linear_rescale_prepared(
        &self,
        x: &Self::Tensor,
        comps: usize,
        w: &Self::Linear,
    ) -> Result<Self::Tensor> {
        let y = self.linear_prepared(x, comps, w)?;
        self.divide_round(&y, 1)
    }

    /// `acc += linear(x)` (bias included): `acc` is shaped like [`Self::linear_prepared`]'s
    /// output. The partial sums of a layer whose inputs come in chunks accumulate without a
    /// separate add.
    fn linear_acc_prepared(
        &self,
        acc: &mut Self::Tensor,
        x: &Self::Tensor,
        comps: usize,
        w: &Self::Linear,
    ) -> Result<()> {
        let part = self.linear_prepared(x, comps, w)?;
        *acc = self.add(acc, &part)?;
        Ok(())
    }

    /// [`Self::linear_prepared`] with weights prepared for this one call.
    fn linear(&self, x: &Self::Tensor, comps: usize, w: &LinearWeights) -> Result<Self::Tensor> {
        let p = self.prepare_linear(w.clone(), &self.shape(x).moduli)?;
        self.linear_prepared(x, comps, &p)
    }

    /// [`Self::linear_rescale_prepared`] with weights prepared for this one call.
    fn linear_rescale(
        &self,
        x: &Self::Tensor,
        comps: usize,
        w: &LinearWeights,
    ) -> Result<Self::Tensor> {
        let p = self.prepare_linear(w.clone(), &self.shape(x).moduli)?;
        self.linear_rescale_prepared(x, comps, &p)
    }

    /// [`Self::linear_acc_prepared`] with weights prepared for this one call.
    fn linear_acc(
        &self,
        acc: &mut Self::Tensor,
        x: &Self::Tensor,
        comps: usize,
        w: &LinearWeights,
    ) -> Result<()> {
        let p = self.prepare_linear(w.clone(), &self.shape(x).moduli)?;
        self.linear_acc_prepared(acc, x, comps, &p)
    }

    /// In-place forward NTT of every limb of every polynomial (coefficients in natural order ->
    /// evaluations in bit-reversed order); the tensor must be in coefficient form.
    fn ntt_forward(&self, t: &mut Self::Tensor) -> Result<()>;
    /// In-place inverse NTT of every limb of every polynomial (bit-reversed evaluations ->
    /// coefficients in natural order); the tensor must be in NTT form.
    fn ntt_inverse(&self, t: &mut Self::Tensor) -> Result<()>;
    /// The inverse NTT of `t` as a new tensor, `t` unchanged (on the GPU the transform reads `t`
    /// directly instead of copying it first).
    fn ntt_inverse_out_of_place(&self, t: &Self::Tensor) -> Result<Self::Tensor> {
        let mut out = self.duplicate(t)?;
        self.ntt_inverse(&mut out)?;
        Ok(out)
    }

    /// `a + b`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a - b`.
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `-a`.
    fn negate(&self, a: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a * b` coefficient-wise: the polynomial product, so both must be in NTT form.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a * s_l`, one scalar (`< q_l`) per limb.
    fn mul_scalar(&self, a: &Self::Tensor, scalars: &[u32]) -> Result<Self::Tensor>;
    /// `a + s_l`, one scalar (`< q_l`) per limb, on every coefficient.
    fn add_scalar(&self, a: &Self::Tensor, scalars: &[u32]) -> Result<Self::Tensor>;
    /// `acc += a * b` coefficient-wise (NTT form).
    fn mac(&self, acc: &mut Self::Tensor, a: &Self::Tensor, b: &Self::Tensor) -> Result<()>;
    /// `acc[p][l] += a[p][l] * s_l` for every polynomial `p` and every limb `l` of `a`, whose
    /// limb map must be the first limbs of `acc`'s (same polys, same form): e.g. `P (c0, c1)` over
    /// `Q_l` added into a key-switching result over `Q_l ∪ P`.
    fn add_scaled_prefix(
        &self,
        acc: &mut Self::Tensor,
        a: &Self::Tensor,
        scalars: &[u32],
    ) -> Result<()>;
    /// `sum_i parts[i] * plains[i]`: every part a tensor of the same shape (`[polys][limbs]`,
    /// NTT form), `plains` their factors one after the other (`[parts][polys][limbs]`, same
    /// limbs). Returns `[polys][limbs]`. The baby-step sums of a BSGS linear transformation.
    fn mul_sum(&self, parts: &[&Self::Tensor], plains: &Self::Tensor) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::mul_sum(self, parts, plains)
    }
    /// Ciphertext tensor product: `a`, `b` are `[count][2][limbs]`; returns `[count][3][limbs]`
    /// `(a0 b0, a0 b1 + a1 b0, a1 b1)` (NTT form).
    fn tensor(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `X -> X^g` in NTT (bit-reversed) form.
    fn automorphism_ntt(&self, a: &Self::Tensor, g: usize) -> Result<Self::Tensor>;
    /// `X -> X^g` in coefficient form.
    fn automorphism_coeff(&self, a: &Self::Tensor, g: usize) -> Result<Self::Tensor>;

    /// Fast base conversion of `a` (coefficient form) whose limbs are split into `groups`
    /// (ranges of limb positions) towards `targets` (context indices): returns
    /// `[polys][groups][targets]` with limb map `targets` repeated per group, i.e. a tensor of
    /// `polys * groups.len()` polynomials over `targets` (coefficient form).
    fn basis_convert(
        &self,
        a: &Self::Tensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<Self::Tensor>;

    /// [`Self::basis_convert`] then [`Self::ntt_forward`] (the mod-up of key switching): the
    /// same words, in NTT form. The GPU fuses the conversion into the transform's load where
    /// that moves fewer bytes, so the converted tensor never goes through memory in coefficient
    /// form.
    fn basis_convert_ntt(
        &self,
        a: &Self::Tensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<Self::Tensor> {
        let mut out = self.basis_convert(a, groups, targets)?;
        self.ntt_forward(&mut out)?;
        Ok(out)
    }

    /// Key-switching inner product: `digits` is `[polys][dnum][limbs]` (NTT form, stored as
    /// `polys * dnum` polynomials); `key` is `[key_dnum][2][key_limbs]` with `key_dnum >= dnum`
    /// (digit `j` uses key digit `j`); active limb `l` uses key limb `key_map[l]`. Returns
    /// `[polys][2][limbs]`.
    fn keyswitch_inner(
        &self,
        digits: &Self::Tensor,
        dnum: usize,
        key: &Self::Tensor,
        key_map: &[usize],
    ) -> Result<Self::Tensor>;

    /// Divide-and-round by the product `D` of the last `drop` limbs (NTT form in and out):
    /// CKKS rescale (`drop = 1`), key-switching mod-down (`drop = |P|`), and both at once
    /// (`drop = |P| + 1` on a tensor over `Q_l ∪ P`).
    fn divide_round(&self, a: &Self::Tensor, drop: usize) -> Result<Self::Tensor>;

    /// Hybrid key switching of `d` (NTT form over `Q_l`, any number of polynomials) without the
    /// final division: mod-up of each digit to `Q_l ∪ P`, inner product with the key. Returns
    /// `[polys][2][limbs + |P|]` over `Q_l ∪ P`, which [`Self::divide_round`] by `P` brings back
    /// to `Q_l`.
    fn keyswitch_ext(&self, d: &Self::Tensor, key: &SwitchKey<Self::Tensor>) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::keyswitch_ext(self, d, key)
    }

    /// Hybrid key switching of `d` (NTT form over `Q_l`): [`Self::keyswitch_ext`] then the
    /// mod-down by `P`. Returns `[polys][2][limbs]` over `Q_l`.
    fn keyswitch(&self, d: &Self::Tensor, key: &SwitchKey<Self::Tensor>) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::keyswitch(self, d, key)
    }

    /// Applies the Galois automorphism `g` to a batch of ciphertexts `[count][2][limbs]` (NTT
    /// form) and switches `sigma(c1)` back to the secret with `key`: `(sigma(c0) + ks_0, ks_1)`,
    /// `ks = keyswitch(sigma(c1))`. Returns `[count][2][limbs]`.
    fn galois_switch(
        &self,
        a: &Self::Tensor,
        g: usize,
        key: &SwitchKey<Self::Tensor>,
    ) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::galois_switch(self, a, g, key)
    }

    /// Relinearizes and rescales a batch of products `[count][3][limbs]` (NTT form over `Q_l`,
    /// `l >= 1`) in one division: `(c0, c1) P + keyswitch_ext(c2)` over `Q_l ∪ P`, divided by
    /// `P q_l` and rounded. Returns `[count][2][limbs - 1]` over `Q_{l-1}`.
    fn relin_rescale(
        &self,
        prod: &Self::Tensor,
        key: &SwitchKey<Self::Tensor>,
    ) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::relin_rescale(self, prod, key)
    }

    /// `a * b` for batches of 2-component ciphertexts `[count][2][limbs]` (NTT form over `Q_l`,
    /// `l >= 1`), relinearized and rescaled: [`Self::tensor`] then [`Self::relin_rescale`].
    /// Returns `[count][2][limbs - 1]`.
    fn mul_relin_rescale(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        key: &SwitchKey<Self::Tensor>,
    ) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        composed::mul_relin_rescale(self, a, b, key)
    }
}

/// The composite operations of [`Backend`] built from its primitives: the trait's default
/// implementations, and the reference that fused implementations are tested against.
pub mod composed {
    use super::{
        check_mul_sum, check_relin_rescale, Backend, KeySwitchPlan, LinearWeights, Result, Shape,
        SwitchKey,
    };

    /// [`Backend::keyswitch_ext`]: inverse NTT, mod-up of every digit to `Q_l ∪ P`
    /// ([`Backend::basis_convert`]), forward NTT, [`Backend::keyswitch_inner`].
    pub fn keyswitch_ext<B: Backend>(
        be: &B,
        d: &B::Tensor,
        key: &SwitchKey<B::Tensor>,
    ) -> Result<B::Tensor> {
        let plan = KeySwitchPlan::new(be.context(), be.shape(d), key, be.shape(&key.key))?;
        let coeff = be.ntt_inverse_out_of_place(d)?;
        let mut ext = be.basis_convert(&coeff, &plan.digits, &plan.targets)?;
        drop(coeff);
        be.ntt_forward(&mut ext)?;
        be.keyswitch_inner(&ext, plan.digits.len(), &key.key, &plan.key_map)
    }

    /// [`Backend::mul_sum`]: the parts joined ([`Backend::join_components`]), one product
    /// ([`Backend::mul`]) and a sum over the parts ([`Backend::linear`] with unit weights).
    pub fn mul_sum<B: Backend>(
        be: &B,
        parts: &[&B::Tensor],
        plains: &B::Tensor,
    ) -> Result<B::Tensor> {
        let shapes: Vec<&Shape> = parts.iter().map(|p| be.shape(p)).collect();
        check_mul_sum(&shapes, be.shape(plains))?;
        let (count, limbs) = (parts.len(), shapes[0].limbs());
        let joined = be.join_components(1, parts)?;
        let prod = be.mul(&joined, plains)?;
        drop(joined);
        let w = LinearWeights {
            inputs: count,
            row_ptr: vec![0, count as u32],
            cols: (0..count as u32).collect(),
            values: vec![1; limbs * count],
            bias: vec![0; limbs],
        };
        be.linear(&prod, shapes[0].polys, &w)
    }

    /// [`Backend::keyswitch`]: [`keyswitch_ext`], then [`Backend::divide_round`] by `P`.
    pub fn keyswitch<B: Backend>(
        be: &B,
        d: &B::Tensor,
        key: &SwitchKey<B::Tensor>,
    ) -> Result<B::Tensor> {
        let acc = keyswitch_ext(be, d, key)?;
        be.divide_round(&acc, key.special.len())
    }

    /// [`Backend::galois_switch`]: the automorphism, [`keyswitch`] of `sigma(c1)`, and the
    /// components put back together.
    pub fn galois_switch<B: Backend>(
        be: &B,
        a: &B::Tensor,
        g: usize,
        key: &SwitchKey<B::Tensor>,
    ) -> Result<B::Tensor> {
        let count = be.shape(a).polys / 2;
        let rot = be.automorphism_ntt(a, g)?;
        let ks = be.keyswitch(&be.slice_components(&rot, 2, 1..2)?, key)?;
        let c0 = be.add(
            &be.slice_components(&rot, 2, 0..1)?,
            &be.slice_components(&ks, 2, 0..1)?,
        )?;
        let c1 = be.slice_components(&ks, 2, 1..2)?;
        be.join_components(count, &[&c0, &c1])
    }

    /// [`Backend::relin_rescale`]: [`keyswitch_ext`] of `c2`, `+ P (c0, c1)`
    /// ([`Backend::add_scaled_prefix`]), [`Backend::divide_round`] by `P q_l`.
    pub fn relin_rescale<B: Backend>(
        be: &B,
        prod: &B::Tensor,
        key: &SwitchKey<B::Tensor>,
    ) -> Result<B::Tensor> {
        let shape = be.shape(prod).clone();
        check_relin_rescale(&shape)?;
        let c2 = be.slice_components(prod, 3, 2..3)?;
        let mut acc = keyswitch_ext(be, &c2, key)?;
        drop(c2);
        let c01 = be.slice_components(prod, 3, 0..2)?;
        let p_mod = be.context().product_mod(&key.special, &shape.moduli);
        be.add_scaled_prefix(&mut acc, &c01, &p_mod)?;
        drop(c01);
        be.divide_round(&acc, key.special.len() + 1)
    }

    /// [`Backend::mul_relin_rescale`]: [`Backend::tensor`], then [`relin_rescale`].
    pub fn mul_relin_rescale<B: Backend>(
        be: &B,
        a: &B::Tensor,
        b: &B::Tensor,
        key: &SwitchKey<B::Tensor>,
    ) -> Result<B::Tensor> {
        let prod = be.tensor(a, b)?;
        relin_rescale(be, &prod, key)
    }
}

/// Validates the operands of [`Backend::mul_sum`].
pub(crate) fn check_mul_sum(parts: &[&Shape], plains: &Shape) -> Result<()> {
    let first = parts.first().ok_or_else(|| BackendError::Shape {
        op: "mul_sum",
        reason: "no parts".into(),
    })?;
    expect_form("mul_sum", first, Form::Ntt)?;
    if let Some(p) = parts.iter().find(|p| **p != *first) {
        return Err(BackendError::Shape {
            op: "mul_sum",
            reason: format!("parts differ: {first:?} vs {p:?}"),
        });
    }
    if plains.moduli != first.moduli || plains.polys != parts.len() * first.polys {
        return Err(BackendError::Shape {
            op: "mul_sum",
            reason: format!(
                "{} parts of {} polys over {:?} need {} plaintext polys over the same moduli, got {} over {:?}",
                parts.len(),
                first.polys,
                first.moduli,
                parts.len() * first.polys,
                plains.polys,
                plains.moduli
            ),
        });
    }
    expect_form("mul_sum", plains, Form::Ntt)
}

/// Validates the operand of [`Backend::relin_rescale`].
pub(crate) fn check_relin_rescale(shape: &Shape) -> Result<()> {
    expect_form("relin_rescale", shape, Form::Ntt)?;
    if !shape.polys.is_multiple_of(3) || shape.limbs() < 2 {
        return Err(BackendError::Shape {
            op: "relin_rescale",
            reason: format!(
                "{} polys of {} limbs are not 3-component ciphertexts above level 0",
                shape.polys,
                shape.limbs()
            ),
        });
    }
    Ok(())
}

/// How key switching of a tensor over `Q_l` proceeds with a key: the digits (ranges of limb
/// positions), the targets of their mod-up (`Q_l` then `P`, context indices) and the key limb of
/// each target. Shared by the composed and the fused implementations.
#[derive(Clone, Debug)]
pub struct KeySwitchPlan {
    /// Digit ranges (positions in the tensor's limb list).
    pub digits: Vec<Range<usize>>,
    /// `Q_l ∪ P`: the tensor's limb map followed by the special primes.
    pub targets: Vec<usize>,
    /// Key limb of each target.
    pub key_map: Vec<usize>,
}

impl KeySwitchPlan {
    /// The plan for switching a tensor of shape `d` with `key` (whose tensor has shape `k`).
    pub fn new<T>(ctx: &RnsContext, d: &Shape, key: &SwitchKey<T>, k: &Shape) -> Result<Self> {
        expect_form("keyswitch", d, Form::Ntt)?;
        expect_form("keyswitch", k, Form::Ntt)?;
        let digits = digit_ranges(d.limbs(), key.alpha);
        // At lower levels fewer digits are in use: their keys are a prefix of the key tensor.
        if digits.len() > key.dnum || k.polys != 2 * key.dnum {
            return Err(BackendError::Shape {
                op: "keyswitch",
                reason: format!(
                    "{} limbs in digits of {} need {} digits; key has dnum {} and {} polys",
                    d.limbs(),
                    key.alpha,
                    digits.len(),
                    key.dnum,
                    k.polys
                ),
            });
        }
        let mut targets = d.moduli.clone();
        targets.extend_from_slice(&key.special);
        ctx.check_map(&targets)?;
        let key_map = targets
            .iter()
            .map(|t| {
                k.moduli
                    .iter()
                    .position(|m| m == t)
                    .ok_or_else(|| BackendError::Shape {
                        op: "keyswitch",
                        reason: format!("key has no limb for context modulus {t}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            digits,
            targets,
            key_map,
        })
    }
}

pub(crate) fn check_slice(shape: &Shape, group: usize, keep: &Range<usize>) -> Result<usize> {
    if group == 0 || !shape.polys.is_multiple_of(group) || keep.is_empty() || keep.end > group {
        return Err(BackendError::Shape {
            op: "slice_components",
            reason: format!(
                "cannot take components {keep:?} of groups of {group} from {} polys",
                shape.polys
            ),
        });
    }
    Ok(shape.polys / group)
}

/// Validates the operands of [`Backend::join_components`]; returns the components per item of
/// each part.
pub(crate) fn check_join(count: usize, parts: &[&Shape]) -> Result<Vec<usize>> {
    let bad = |reason: String| BackendError::Shape {
        op: "join_components",
        reason,
    };
    let first = parts
        .first()
        .ok_or_else(|| bad("no parts to join".into()))?;
    if count == 0 {
        return Err(bad("count is zero".into()));
    }
    parts
        .iter()
        .map(|s| {
            if s.moduli != first.moduli || s.form != first.form {
                Err(bad(format!(
                    "limb maps or forms differ: {:?} ({}) vs {:?} ({})",
                    s.moduli, s.form, first.moduli, first.form
                )))
            } else if s.polys == 0 || s.polys % count != 0 {
                Err(bad(format!(
                    "a part of {} polys is not {count} items of whole components",
                    s.polys
                )))
            } else {
                Ok(s.polys / count)
            }
        })
        .collect()
}

/// Validates [`Backend::truncate_limbs`].
pub(crate) fn check_truncate(shape: &Shape, limbs: usize) -> Result<()> {
    if limbs == 0 || limbs > shape.limbs() {
        return Err(BackendError::Shape {
            op: "truncate_limbs",
            reason: format!("cannot keep {limbs} of {} limbs", shape.limbs()),
        });
    }
    Ok(())
}

/// Validates the digit groups of [`Backend::basis_convert`]: consecutive, non-empty ranges that
/// partition `0..limbs`.
/// Validates a base conversion of `a` (coefficient form) in `groups` to `targets` (shared by
/// every backend's [`Backend::basis_convert`] and [`Backend::basis_convert_ntt`]): the groups
/// partition `a`'s limbs in order, the targets are the context's.
pub(crate) fn check_convert(
    op: &'static str,
    ctx: &RnsContext,
    a: &Shape,
    groups: &[Range<usize>],
    targets: &[usize],
) -> Result<()> {
    expect_form(op, a, Form::Coeff)?;
    let limbs = a.limbs();
    let mut next = 0;
    for g in groups {
        if g.start != next || g.is_empty() {
            break;
        }
        next = g.end;
    }
    if next != limbs || groups.iter().any(|g| g.is_empty()) || groups.is_empty() {
        return Err(BackendError::Shape {
            op,
            reason: format!("groups {groups:?} do not partition 0..{limbs} in order"),
        });
    }
    ctx.check_map(targets)
}

/// Validates a binary element-wise operation: equal limb maps and forms, and `b` either as many
/// polynomials as `a` or one (broadcast).
pub(crate) fn check_binary(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    if a.moduli != b.moduli || !(b.polys == a.polys || b.polys == 1) {
        return Err(BackendError::Shape {
            op,
            reason: format!(
                "a has {} polys over moduli {:?}, b has {} polys over {:?}",
                a.polys, a.moduli, b.polys, b.moduli
            ),
        });
    }
    expect_form(op, b, a.form)
}

/// Validates [`Backend::add_scaled_prefix`].
pub(crate) fn check_scaled_prefix(
    ctx: &RnsContext,
    acc: &Shape,
    a: &Shape,
    scalars: &[u32],
) -> Result<()> {
    expect_form("add_scaled_prefix", a, acc.form)?;
    if a.polys != acc.polys
        || a.limbs() > acc.limbs()
        || acc.moduli[..a.limbs()] != a.moduli[..]
        || scalars.len() != a.limbs()
    {
        return Err(BackendError::Shape {
            op: "add_scaled_prefix",
            reason: format!(
                "a {a:?} is not a prefix of acc {acc:?}, or {} scalars for {} limbs",
                scalars.len(),
                a.limbs()
            ),
        });
    }
    check_scalars(ctx, "add_scaled_prefix", a, scalars)
}

/// Validates per-limb scalars: one per limb, each reduced modulo its limb's prime.
pub(crate) fn check_scalars(
    ctx: &RnsContext,
    op: &'static str,
    a: &Shape,
    s: &[u32],
) -> Result<()> {
    if s.len() != a.limbs() {
        return Err(BackendError::Shape {
            op,
            reason: format!("{} scalars for {} limbs", s.len(), a.limbs()),
        });
    }
    for (&v, &mi) in s.iter().zip(&a.moduli) {
        if v >= ctx.primes()[mi] {
            return Err(BackendError::Shape {
                op,
                reason: format!("scalar {v} is not reduced modulo {}", ctx.primes()[mi]),
            });
        }
    }
    Ok(())
}
