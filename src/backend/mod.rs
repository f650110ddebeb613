//! Compute backends for tensors of RNS polynomials: `cpu` (kernels crate) and `gpu` (wgpu).
//!
//! A tensor is `[polys][limbs][n]` canonical `u32` residues, limb-major, in one flat buffer; limb
//! `l` of every polynomial is taken modulo `ctx.primes()[moduli[l]]`, where `moduli` (the tensor's
//! limb map) indexes the [`RnsContext`] the backend was built for (all primes `Q ∪ P` of a
//! parameter set, each with its NTT tables). Ciphertext tensors are `[ct][component][limb][n]`,
//! i.e. `polys = count * components`.
//!
//! Every operation exists on both backends and gives bit-identical results; GPU tensors stay on
//! the device between operations, and only [`Backend::upload`] / [`Backend::download`] move data.

pub mod cpu;
pub mod gpu;
pub mod verify;

use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::KernelError;
use std::ops::Range;

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
}

/// Result alias of the backends.
pub type Result<T> = std::result::Result<T, BackendError>;

/// The primes of a parameter set (`Q` then `P`) at degree `n`, with NTT tables.
#[derive(Clone, Debug)]
pub struct RnsContext {
    n: usize,
    primes: Vec<u32>,
    moduli: Vec<Modulus>,
    tables: Vec<NttTable>,
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
            n,
            primes: primes.to_vec(),
            moduli,
            tables,
        })
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The primes, in context order.
    pub fn primes(&self) -> &[u32] {
        &self.primes
    }

    /// The moduli, in context order.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// The NTT tables, in context order.
    pub fn tables(&self) -> &[NttTable] {
        &self.tables
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
        match map.iter().find(|&&i| i >= self.primes.len()) {
            Some(&index) => Err(BackendError::ModulusIndex {
                index,
                len: self.primes.len(),
            }),
            None => Ok(()),
        }
    }
}

/// Shape of a tensor: `polys` polynomials whose limb `l` is modulo context modulus `moduli[l]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Number of polynomials.
    pub polys: usize,
    /// Limb map: context modulus index of each limb.
    pub moduli: Vec<usize>,
}

impl Shape {
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

/// Constants of a fast base conversion, computed once by the backend from its context.
#[derive(Clone, Debug)]
pub(crate) struct ConvConstants {
    /// Per source limb: `(B_g / q_s)^-1 mod q_s` and its Shoup companion.
    pub q_hat_inv: Vec<(u32, u32)>,
    /// `[s][t]`: `(B_g / q_s) mod p_t` and its Shoup companion modulo `p_t`.
    pub mat: Vec<(u32, u32)>,
    /// Per source limb: `u64::MAX / q_s` (fixed-point `1/q_s` of the exact conversion).
    pub inv_q_fixed: Vec<u64>,
    /// `[g][t]`: `B_g mod p_t`.
    pub b_mod_p: Vec<u32>,
}

/// Computes the conversion constants for source limbs `src` (context indices) split into `groups`
/// (ranges of positions in `src`) towards `targets` (context indices).
pub(crate) fn conv_constants(
    ctx: &RnsContext,
    src: &[usize],
    groups: &[Range<usize>],
    targets: &[usize],
) -> ConvConstants {
    let m = ctx.moduli();
    let mut q_hat_inv = vec![(0, 0); src.len()];
    let mut mat = vec![(0, 0); src.len() * targets.len()];
    let inv_q_fixed = src
        .iter()
        .map(|&s| u64::MAX / u64::from(m[s].value()))
        .collect();
    let mut b_mod_p = vec![0; groups.len() * targets.len()];
    for (gi, g) in groups.iter().enumerate() {
        for (t, &ti) in targets.iter().enumerate() {
            let pt = &m[ti];
            b_mod_p[gi * targets.len() + t] = g
                .clone()
                .fold(1u32, |acc, o| pt.mul(acc, m[src[o]].value() % pt.value()));
        }
    }
    for g in groups {
        for s in g.clone() {
            let qs = &m[src[s]];
            // (B_g / q_s) mod q_s
            let hat = g
                .clone()
                .filter(|&o| o != s)
                .fold(1u32, |acc, o| qs.mul(acc, m[src[o]].value() % qs.value()));
            let inv = qs.inv(hat).unwrap_or(0);
            q_hat_inv[s] = (inv, qs.shoup(inv));
            for (t, &ti) in targets.iter().enumerate() {
                let pt = &m[ti];
                let v = g
                    .clone()
                    .filter(|&o| o != s)
                    .fold(1u32, |acc, o| pt.mul(acc, m[src[o]].value() % pt.value()));
                mat[s * targets.len() + t] = (v, pt.shoup(v));
            }
        }
    }
    ConvConstants {
        q_hat_inv,
        mat,
        inv_q_fixed,
        b_mod_p,
    }
}

/// Constants of [`Backend::divide_round`] for keeping `keep` and dropping `drop` (context indices).
#[derive(Clone, Debug)]
pub(crate) struct DivRoundConstants {
    /// `floor(D/2) mod d_i` per dropped limb (`(d_i - 1)/2 ... ` reduced).
    pub half_drop: Vec<u32>,
    /// `q_k - (floor(D/2) mod q_k)` per kept limb (adding it subtracts the half).
    pub neg_half_keep: Vec<u32>,
    /// `D^-1 mod q_k` per kept limb with its Shoup companion.
    pub d_inv: Vec<(u32, u32)>,
}

pub(crate) fn div_round_constants(
    ctx: &RnsContext,
    keep: &[usize],
    drop: &[usize],
) -> DivRoundConstants {
    let m = ctx.moduli();
    let d_mod = |md: &Modulus| {
        drop.iter()
            .fold(1u32, |a, &d| md.mul(a, m[d].value() % md.value()))
    };
    // floor(D/2) mod x = (D - 1) / 2 mod x = (D mod x - 1) * 2^-1 mod x (D odd).
    let half = |md: &Modulus| {
        let inv2 = md.inv(2).unwrap_or(0);
        md.mul(md.sub(d_mod(md), 1 % md.value()), inv2)
    };
    let half_drop = drop.iter().map(|&d| half(&m[d])).collect();
    let neg_half_keep = keep.iter().map(|&k| m[k].neg(half(&m[k]))).collect();
    let d_inv = keep
        .iter()
        .map(|&k| {
            let inv = m[k].inv(d_mod(&m[k])).unwrap_or(0);
            (inv, m[k].shoup(inv))
        })
        .collect();
    DivRoundConstants {
        half_drop,
        neg_half_keep,
        d_inv,
    }
}

/// Validates the operands of [`Backend::keyswitch_inner`] (shared by every backend).
pub(crate) fn check_keyswitch_inner(
    digits: &Shape,
    dnum: usize,
    key: &Shape,
    key_map: &[usize],
) -> Result<()> {
    let (limbs, key_limbs) = (digits.limbs(), key.limbs());
    if dnum == 0
        || digits.polys % dnum != 0
        || key.polys < 2 * dnum
        || key.polys % 2 != 0
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

/// Operations a CKKS evaluator needs on tensors of RNS polynomials.
///
/// Binary element-wise operations accept `b` with the same number of polynomials as `a`, or
/// one polynomial (broadcast to all of `a`); limb maps must be equal.
pub trait Backend {
    /// A tensor resident on this backend.
    type Tensor;

    /// Short description (`cpu`, or `gpu (<adapter>)`).
    fn name(&self) -> String;
    /// The context the backend was built for.
    fn context(&self) -> &RnsContext;
    /// Shape of a tensor.
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a Shape;

    /// The largest tensor (in `u32` words) one operation can bind, if the backend has a limit (a
    /// GPU's storage-binding size); schedulers chunk batches to stay below it.
    fn max_tensor_words(&self) -> Option<usize> {
        None
    }

    /// Host -> backend (counted on the GPU).
    fn upload(&self, data: &[u32], shape: Shape) -> Result<Self::Tensor>;
    /// Backend -> host (counted on the GPU; submits pending work first).
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
    /// over the same limb map); returns `[count][k_0 + k_1 + ...][limbs]`, item by item
    /// (e.g. joining `c0'` of `[count][1]` with `c1` of `[count][1]` gives `[count][2]`).
    fn join_components(&self, count: usize, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;

    /// The first `limbs` limbs of every polynomial (drops the last limbs without dividing:
    /// CKKS `drop_levels`).
    fn truncate_limbs(&self, t: &Self::Tensor, limbs: usize) -> Result<Self::Tensor>;

    /// Sparse linear layer: `x` is `[inputs][comps][limbs]`; returns `[outputs][comps][limbs]`
    /// with output `j` the weighted sum of row `j` of `w` (plus the bias on component 0). In
    /// batch packing this is a convolution or dense layer over ciphertexts, in one launch.
    fn linear(&self, x: &Self::Tensor, comps: usize, w: &LinearWeights) -> Result<Self::Tensor>;

    /// In-place forward NTT of every limb of every polynomial (natural -> bit-reversed order).
    fn ntt_forward(&self, t: &mut Self::Tensor) -> Result<()>;
    /// In-place inverse NTT of every limb of every polynomial (bit-reversed -> natural order).
    fn ntt_inverse(&self, t: &mut Self::Tensor) -> Result<()>;

    /// `a + b`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a - b`.
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `-a`.
    fn negate(&self, a: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a * b` coefficient-wise.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `a * s_l`, one scalar (`< q_l`) per limb.
    fn mul_scalar(&self, a: &Self::Tensor, scalars: &[u32]) -> Result<Self::Tensor>;
    /// `a + s_l`, one scalar (`< q_l`) per limb, on every coefficient.
    fn add_scalar(&self, a: &Self::Tensor, scalars: &[u32]) -> Result<Self::Tensor>;
    /// `acc += a * b` coefficient-wise.
    fn mac(&self, acc: &mut Self::Tensor, a: &Self::Tensor, b: &Self::Tensor) -> Result<()>;
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
    /// `polys * groups.len()` polynomials over `targets`.
    fn basis_convert(
        &self,
        a: &Self::Tensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<Self::Tensor>;

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
    /// CKKS rescale (`drop = 1`) and key-switching mod-down (`drop = |P|`).
    fn divide_round(&self, a: &Self::Tensor, drop: usize) -> Result<Self::Tensor>;

    /// Hybrid key switching of `d` (NTT form over `Q_l`, any number of polynomials): mod-up of
    /// each digit to `Q_l ∪ P`, inner product with the key, mod-down. Returns `[polys][2][limbs]`.
    fn keyswitch(&self, d: &Self::Tensor, key: &SwitchKey<Self::Tensor>) -> Result<Self::Tensor> {
        let dshape = self.shape(d).clone();
        let kshape = self.shape(&key.key).clone();
        let digits = digit_ranges(dshape.limbs(), key.alpha);
        // At lower levels fewer digits are in use: their keys are a prefix of the key tensor.
        if digits.len() > key.dnum || kshape.polys != 2 * key.dnum {
            return Err(BackendError::Shape {
                op: "keyswitch",
                reason: format!(
                    "{} limbs in digits of {} need {} digits; key has dnum {} and {} polys",
                    dshape.limbs(),
                    key.alpha,
                    digits.len(),
                    key.dnum,
                    kshape.polys
                ),
            });
        }
        let mut targets = dshape.moduli.clone();
        targets.extend_from_slice(&key.special);
        let key_map = targets
            .iter()
            .map(|t| {
                kshape
                    .moduli
                    .iter()
                    .position(|k| k == t)
                    .ok_or_else(|| BackendError::Shape {
                        op: "keyswitch",
                        reason: format!("key has no limb for context modulus {t}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut coeff = self.duplicate(d)?;
        self.ntt_inverse(&mut coeff)?;
        let mut ext = self.basis_convert(&coeff, &digits, &targets)?;
        drop(coeff);
        self.ntt_forward(&mut ext)?;
        let acc = self.keyswitch_inner(&ext, digits.len(), &key.key, &key_map)?;
        drop(ext);
        self.divide_round(&acc, key.special.len())
    }
}

pub(crate) fn check_slice(shape: &Shape, group: usize, keep: &Range<usize>) -> Result<usize> {
    if group == 0 || shape.polys % group != 0 || keep.is_empty() || keep.end > group {
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
            if s.moduli != first.moduli {
                Err(bad(format!(
                    "limb maps differ: {:?} vs {:?}",
                    s.moduli, first.moduli
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

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum BackendKind {
    /// The CPU (kernels crate).
    Cpu,
    /// A GPU through wgpu; an error if none can be opened.
    Gpu,
    /// The GPU if one can be opened, else the CPU (saying why on stderr).
    Auto,
}

/// What [`BackendKind::Auto`] resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Run on the CPU.
    Cpu,
    /// Run on the GPU.
    Gpu,
}

/// Resolves `kind` with the adapter `choice`: `auto` falls back to the CPU with one line on stderr
/// saying why; `gpu` fails with the runtime's error.
pub fn resolve(
    kind: BackendKind,
    choice: &gpu::AdapterChoice,
) -> std::result::Result<(Resolved, Option<std::sync::Arc<gpu::GpuRuntime>>), gpu::GpuError> {
    match kind {
        BackendKind::Cpu => Ok((Resolved::Cpu, None)),
        BackendKind::Gpu => Ok((Resolved::Gpu, Some(gpu::GpuRuntime::open(choice)?))),
        BackendKind::Auto => match gpu::GpuRuntime::open(choice) {
            Ok(rt) => Ok((Resolved::Gpu, Some(rt))),
            Err(e) => {
                eprintln!("backend auto: using the CPU because no GPU could be opened: {e}");
                Ok((Resolved::Cpu, None))
            }
        },
    }
}
