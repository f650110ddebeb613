//! The CKKS evaluator over any compute [`Backend`]: batches of ciphertexts resident on the device.
//!
//! [`DeviceEvaluator`] is the CKKS evaluator, written once for every backend: the same code runs on
//! [`CpuBackend`](crate::backend::cpu::CpuBackend) and
//! [`GpuBackend`](crate::backend::gpu::GpuBackend), with results equal word for word (pinned by
//! `tests/device_evaluator.rs`); the single-ciphertext [`Evaluator`](super::Evaluator) is a thin
//! front over it. A [`DeviceCiphertext`] holds `count` ciphertexts of the same size, level and
//! scale in one tensor `[count][size][limb][coeff]` (NTT form), so every operation is a few
//! batched launches whatever the count; data moves only in [`DeviceEvaluator::upload`] and
//! [`DeviceEvaluator::download`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{Backend, KeySwitchPlan, LinearWeights, Shape, SwitchKey};

use super::{
    Ciphertext, CkksError, Context, EncapsulationKeys, EvaluationKeys, Plaintext, SwitchingKey,
};

/// Relative tolerance when comparing scales of operands (as in the host evaluator).
const SCALE_RTOL: f64 = 1e-9;

fn same_scale(a: f64, b: f64) -> bool {
    (a - b).abs() <= SCALE_RTOL * a.abs().max(b.abs())
}

/// Checks that `b` has the size, level and scale of `a` (each `(size, level, scale)`): the
/// batches one operation puts together.
fn check_alike(
    op: &'static str,
    (a_size, a_level, a_scale): (usize, usize, f64),
    (b_size, b_level, b_scale): (usize, usize, f64),
) -> Result<(), CkksError> {
    if a_size != b_size {
        return Err(CkksError::SizeMismatch {
            op,
            left: a_size,
            right: b_size,
        });
    }
    check_level_scale(op, (a_level, a_scale), (b_level, b_scale))
}

/// Checks that `b` has the level and scale of `a` (each `(level, scale)`).
fn check_level_scale(
    op: &'static str,
    (a_level, a_scale): (usize, f64),
    (b_level, b_scale): (usize, f64),
) -> Result<(), CkksError> {
    if a_level != b_level {
        return Err(CkksError::LevelMismatch {
            op,
            left: a_level,
            right: b_level,
        });
    }
    if !same_scale(a_scale, b_scale) {
        return Err(CkksError::ScaleMismatch {
            op,
            left: a_scale,
            right: b_scale,
        });
    }
    Ok(())
}

/// A linear layer encoded for inputs at one level and scale ([`DeviceEvaluator::encode_linear`]):
/// its weights as residues, prepared for the backend (`L` is [`Backend::Linear`]).
pub struct EncodedLinear<L> {
    weights: L,
    inputs: usize,
    outputs: usize,
    level: usize,
    in_scale: f64,
    /// The weights' scale: an output's scale is its input's times this.
    const_scale: f64,
}

impl<L> EncodedLinear<L> {
    /// Ciphertexts in and out.
    pub fn dims(&self) -> (usize, usize) {
        (self.inputs, self.outputs)
    }
}

/// `count` ciphertexts of equal size, level and scale, resident on a backend as one tensor
/// `[count][size][limb][coeff]` over `Q_level` (NTT form).
pub struct DeviceCiphertext<T> {
    data: T,
    count: usize,
    size: usize,
    level: usize,
    scale: f64,
}

impl<T> DeviceCiphertext<T> {
    /// Number of ciphertexts in the batch.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Components per ciphertext (2, or 3 after a multiplication before relinearization).
    pub fn size(&self) -> usize {
        self.size
    }
    /// Level (number of data primes minus one).
    pub fn level(&self) -> usize {
        self.level
    }
    /// Current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// The backend tensor.
    pub fn tensor(&self) -> &T {
        &self.data
    }
    /// Overrides the tracked scale (for callers that know better, e.g. `q_l / q_l` after a
    /// constant multiplication and rescale, equal up to rounding of the f64 scale).
    pub fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }
    /// The backend tensor, taken out of the batch.
    pub fn into_tensor(self) -> T {
        self.data
    }

    /// A batch from its parts (checked by the evaluator when used).
    pub(crate) fn from_parts(data: T, count: usize, size: usize, level: usize, scale: f64) -> Self {
        Self {
            data,
            count,
            size,
            level,
            scale,
        }
    }
}

/// A plaintext resident on a backend (one polynomial over `Q_level`, NTT form).
pub struct DevicePlaintext<T> {
    data: T,
    level: usize,
    scale: f64,
}

impl<T> DevicePlaintext<T> {
    /// Level.
    pub fn level(&self) -> usize {
        self.level
    }
    /// Scale the message was encoded at.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// Plaintexts resident on a backend, one per ciphertext of a batch (each duplicated over the
/// two components, so that [`DeviceEvaluator::mul_plain_batch`] is one element-wise product).
pub struct DevicePlainBatch<T> {
    data: T,
    count: usize,
    level: usize,
    scale: f64,
}

impl<T> DevicePlainBatch<T> {
    /// Number of plaintexts.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Level.
    pub fn level(&self) -> usize {
        self.level
    }
    /// Scale the messages were encoded at.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// The highest level each evaluation key is used at (by Galois element; `None` / absent: the
/// top), for [`DeviceEvaluator::upload_keys_trimmed`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLevels {
    /// The relinearization key's.
    pub relin: Option<usize>,
    /// Each Galois key's.
    pub galois: BTreeMap<usize, usize>,
}

/// Evaluation keys resident on a backend (no secret: relinearization, Galois and encapsulation
/// keys only).
pub struct DeviceKeys<T> {
    relin: Option<SwitchKey<T>>,
    galois: BTreeMap<usize, SwitchKey<T>>,
    /// `s -> s'` and `s' -> s` (sparse-secret encapsulation).
    encapsulation: Option<(SwitchKey<T>, SwitchKey<T>)>,
}

impl<T> DeviceKeys<T> {
    /// Whether the encapsulation keys of bootstrapping are present.
    pub fn has_encapsulation(&self) -> bool {
        self.encapsulation.is_some()
    }
}

/// A linear layer over a batch of ciphertexts (a convolution or dense layer in batch packing):
/// output `j` is `sum_{(i, w) in rows[j]} w * input_i + bias[j]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinearLayer {
    /// Number of input ciphertexts.
    pub inputs: usize,
    /// Per output, its `(input index, weight)` entries (zero weights may be left out).
    pub rows: Vec<Vec<(usize, f64)>>,
    /// Per output, a constant added to every slot (empty: no bias).
    pub bias: Vec<f64>,
}

/// Evaluates CKKS operations on batches of device-resident ciphertexts. Holds no secret.
pub struct DeviceEvaluator<B: Backend> {
    ctx: Arc<Context>,
    backend: B,
}

/// A rotation's Galois element and key, or `None` for a rotation by a multiple of the slots.
type KeyedStep<'a, T> = Option<(usize, &'a SwitchKey<T>)>;

impl<B: Backend> DeviceEvaluator<B> {
    /// An evaluator for `ctx` on `backend`, which must be built for the same primes (build it
    /// on [`Context::rns`], so that both share the cached RNS constants).
    pub fn new(ctx: Arc<Context>, backend: B) -> Result<Self, CkksError> {
        let params = ctx.params();
        let want: Vec<u32> = params.q().iter().chain(params.p()).copied().collect();
        let bctx = backend.context();
        if bctx.n() != params.n() || bctx.primes() != want.as_slice() {
            return Err(CkksError::InvalidParameters {
                reason: format!(
                    "backend {} is built for N = {} and primes {:?}, the parameters have N = {} and primes {:?}; build it on Context::rns()",
                    backend.name(),
                    bctx.n(),
                    bctx.primes(),
                    params.n(),
                    want
                ),
            });
        }
        Ok(Self { ctx, backend })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn level_shape(&self, polys: usize, level: usize) -> Shape {
        Shape::ntt(polys, (0..=level).collect())
    }

    /// Uploads a batch of ciphertexts of equal size, level and scale (one transfer).
    pub fn upload(&self, cts: &[Ciphertext]) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let first = cts.first().ok_or(CkksError::EmptyBatch)?;
        for ct in cts {
            ct.check(&self.ctx)?;
            check_alike(
                "upload",
                (first.size, first.level, first.scale),
                (ct.size, ct.level, ct.scale),
            )?;
        }
        let parts: Vec<&[u32]> = cts.iter().map(|c| c.data.as_slice()).collect();
        let shape = self.level_shape(cts.len() * first.size, first.level);
        Ok(DeviceCiphertext {
            data: self.backend.upload_parts(&parts, shape)?,
            count: cts.len(),
            size: first.size,
            level: first.level,
            scale: first.scale,
        })
    }

    /// The batches `parts` (equal size, level and scale) one after the other, as one batch.
    pub fn concat(
        &self,
        parts: &[DeviceCiphertext<B::Tensor>],
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let first = parts.first().ok_or(CkksError::EmptyBatch)?;
        for p in parts {
            self.check(p)?;
            check_alike(
                "concat",
                (first.size, first.level, first.scale),
                (p.size, p.level, p.scale),
            )?;
        }
        let tensors: Vec<&B::Tensor> = parts.iter().map(|p| &p.data).collect();
        Ok(DeviceCiphertext {
            data: self.backend.join_components(1, &tensors)?,
            count: parts.iter().map(|p| p.count).sum(),
            size: first.size,
            level: first.level,
            scale: first.scale,
        })
    }

    /// Ciphertexts `range` of the batch `x`, as a new batch (one copy launch).
    pub fn slice(
        &self,
        x: &DeviceCiphertext<B::Tensor>,
        range: std::ops::Range<usize>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(x)?;
        if range.is_empty() || range.end > x.count {
            return Err(CkksError::InvalidLayer {
                reason: format!(
                    "cannot take ciphertexts {range:?} of a batch of {}",
                    x.count
                ),
            });
        }
        let polys = x.count * x.size;
        let data = self.backend.slice_components(
            &x.data,
            polys,
            range.start * x.size..range.end * x.size,
        )?;
        Ok(DeviceCiphertext {
            data,
            count: range.len(),
            size: x.size,
            level: x.level,
            scale: x.scale,
        })
    }

    /// Downloads a batch as host ciphertexts.
    pub fn download(&self, ct: &DeviceCiphertext<B::Tensor>) -> Result<Vec<Ciphertext>, CkksError> {
        self.check(ct)?;
        let words = self.backend.download(&ct.data)?;
        let per = words.len() / ct.count;
        Ok(words
            .chunks_exact(per)
            .map(|c| Ciphertext {
                data: c.to_vec(),
                size: ct.size,
                level: ct.level,
                scale: ct.scale,
            })
            .collect())
    }

    /// Uploads a plaintext (multiplied into or added to every ciphertext of a batch).
    pub fn upload_plaintext(
        &self,
        pt: &Plaintext,
    ) -> Result<DevicePlaintext<B::Tensor>, CkksError> {
        pt.check(&self.ctx)?;
        Ok(DevicePlaintext {
            data: self
                .backend
                .upload(&pt.data, self.level_shape(1, pt.level))?,
            level: pt.level,
            scale: pt.scale,
        })
    }

    /// Uploads plaintexts of one level and scale, one per ciphertext of the batches they will
    /// multiply ([`Self::mul_plain_batch`]).
    pub fn upload_plain_batch(
        &self,
        pts: &[Plaintext],
    ) -> Result<DevicePlainBatch<B::Tensor>, CkksError> {
        let first = pts.first().ok_or(CkksError::EmptyBatch)?;
        let mut parts: Vec<&[u32]> = Vec::with_capacity(2 * pts.len());
        for pt in pts {
            pt.check(&self.ctx)?;
            check_level_scale(
                "upload_plain_batch",
                (first.level, first.scale),
                (pt.level, pt.scale),
            )?;
            parts.push(&pt.data);
            parts.push(&pt.data);
        }
        let data = self
            .backend
            .upload_parts(&parts, self.level_shape(2 * pts.len(), first.level))?;
        Ok(DevicePlainBatch {
            data,
            count: pts.len(),
            level: first.level,
            scale: first.scale,
        })
    }

    /// `sum_i a_i * pt_i` over single ciphertexts `a_i` (alike in level and scale) and the
    /// plaintexts of `pts` (one each): one ciphertext, scales multiplied (rescale afterwards).
    /// The baby-step sums of a BSGS linear transformation ([`Backend::mul_sum`]).
    pub fn mul_plain_sum(
        &self,
        a: &[&DeviceCiphertext<B::Tensor>],
        pts: &DevicePlainBatch<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let first = *a.first().ok_or(CkksError::EmptyBatch)?;
        for x in a {
            self.check(x)?;
            check_alike(
                "mul_plain_sum",
                (first.size, first.level, first.scale),
                (x.size, x.level, x.scale),
            )?;
            if x.count != 1 {
                return Err(CkksError::CountMismatch {
                    op: "mul_plain_sum",
                    left: x.count,
                    right: 1,
                });
            }
        }
        if first.size != 2 {
            return Err(CkksError::NotRelinearized { size: first.size });
        }
        if a.len() != pts.count {
            return Err(CkksError::CountMismatch {
                op: "mul_plain_sum",
                left: a.len(),
                right: pts.count,
            });
        }
        if first.level != pts.level {
            return Err(CkksError::LevelMismatch {
                op: "mul_plain_sum",
                left: first.level,
                right: pts.level,
            });
        }
        let parts: Vec<&B::Tensor> = a.iter().map(|x| &x.data).collect();
        let data = self.backend.mul_sum(&parts, &pts.data)?;
        Ok(self.with_data(first, data, 2, first.level, first.scale * pts.scale))
    }

    /// `a_i * pt_i` for every ciphertext `a_i` of the batch and its own plaintext (scales
    /// multiply; rescale afterwards).
    pub fn mul_plain_batch(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        pts: &DevicePlainBatch<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        if a.count != pts.count {
            return Err(CkksError::CountMismatch {
                op: "mul_plain_batch",
                left: a.count,
                right: pts.count,
            });
        }
        if a.level != pts.level {
            return Err(CkksError::LevelMismatch {
                op: "mul_plain_batch",
                left: a.level,
                right: pts.level,
            });
        }
        let data = self.backend.mul(&a.data, &pts.data)?;
        Ok(self.with_data(a, data, a.size, a.level, a.scale * pts.scale))
    }

    /// The sum of the ciphertexts of the batch: one ciphertext (one launch).
    pub fn sum(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        if a.count == 1 {
            return self.drop_levels(a, 0);
        }
        let layer = LinearLayer {
            inputs: a.count,
            rows: vec![(0..a.count).map(|i| (i, 1.0)).collect()],
            bias: Vec::new(),
        };
        self.linear(a, &layer, Some(1.0))
    }

    /// The one-digit key `s -> s'` over `q_0 .. q_base` and its special primes.
    fn upload_encapsulation_key(
        &self,
        e: &EncapsulationKeys,
    ) -> Result<SwitchKey<B::Tensor>, CkksError> {
        let params = self.ctx.params();
        let q_len = params.q().len();
        if e.base >= params.max_level() || e.special == 0 || e.special > params.p().len() {
            return Err(CkksError::InvalidParameters {
                reason: format!(
                    "encapsulation key for base level {} with {} special primes does not fit these parameters",
                    e.base, e.special
                ),
            });
        }
        let limbs: Vec<usize> = (0..=e.base).chain(q_len..q_len + e.special).collect();
        let shape = Shape::ntt(2, limbs);
        let expected = shape.words(self.ctx.n());
        if e.to_sparse.data.len() != expected {
            return Err(CkksError::ShapeMismatch {
                what: "encapsulation key",
                expected,
                found: e.to_sparse.data.len(),
            });
        }
        Ok(SwitchKey {
            key: self.backend.upload(&e.to_sparse.data, shape)?,
            dnum: 1,
            alpha: e.base + 1,
            special: (q_len..q_len + e.special).collect(),
        })
    }

    fn upload_switching_key(&self, key: &SwitchingKey) -> Result<SwitchKey<B::Tensor>, CkksError> {
        self.upload_switching_key_at(key, self.ctx.params().max_level())
    }

    /// Uploads the part of a switching key that inputs at `max_level` or below use: the digits
    /// covering `q_0 .. q_max_level` and, in each, those limbs and the special primes (the same
    /// key material, a fraction of the memory for a key used only low in a circuit).
    fn upload_switching_key_at(
        &self,
        key: &SwitchingKey,
        max_level: usize,
    ) -> Result<SwitchKey<B::Tensor>, CkksError> {
        let params = self.ctx.params();
        let top = params.max_level();
        if max_level < top {
            let n = self.ctx.n();
            let k_limbs = top + 1 + params.p().len();
            let full = params.dnum() * 2 * k_limbs * n;
            if key.data.len() != full {
                return Err(CkksError::ShapeMismatch {
                    what: "switching key",
                    expected: full,
                    found: key.data.len(),
                });
            }
            let alpha = params.digit_size();
            let dnum = (max_level + 1).div_ceil(alpha);
            let limbs: Vec<usize> = (0..=max_level).chain(top + 1..k_limbs).collect();
            let mut data = Vec::with_capacity(dnum * 2 * limbs.len() * n);
            for poly in key.data.chunks_exact(k_limbs * n).take(2 * dnum) {
                for &l in &limbs {
                    data.extend_from_slice(&poly[l * n..(l + 1) * n]);
                }
            }
            return Ok(SwitchKey {
                key: self.backend.upload(&data, Shape::ntt(2 * dnum, limbs))?,
                dnum,
                alpha,
                special: (top + 1..k_limbs).collect(),
            });
        }
        let k_limbs = top + 1 + params.p().len();
        let dnum = params.dnum();
        let shape = Shape::ntt(2 * dnum, (0..k_limbs).collect());
        let expected = shape.words(self.ctx.n());
        if key.data.len() != expected {
            return Err(CkksError::ShapeMismatch {
                what: "switching key",
                expected,
                found: key.data.len(),
            });
        }
        Ok(SwitchKey {
            key: self.backend.upload(&key.data, shape)?,
            dnum,
            alpha: params.digit_size(),
            special: (top + 1..k_limbs).collect(),
        })
    }

    /// Uploads the evaluation keys like [`Self::upload_keys`], freeing each host key once it is
    /// on the backend, so the peak holds one copy of the keys (plus one key), not two.
    pub fn upload_keys_consuming(
        &self,
        keys: EvaluationKeys,
    ) -> Result<DeviceKeys<B::Tensor>, CkksError> {
        self.upload_keys_trimmed(keys, &KeyLevels::default())
    }

    /// [`Self::upload_keys_consuming`], keeping of each key only the part that inputs at the
    /// highest level `levels` gives for it use (the other keys whole). Using a trimmed key above
    /// that level is an error (a shape mismatch naming the key switch), never a wrong result.
    pub fn upload_keys_trimmed(
        &self,
        keys: EvaluationKeys,
        levels: &KeyLevels,
    ) -> Result<DeviceKeys<B::Tensor>, CkksError> {
        let top = self.ctx.params().max_level();
        let EvaluationKeys {
            relin,
            galois,
            encapsulation,
            ..
        } = keys;
        let relin = relin
            .map(|k| self.upload_switching_key_at(&k, levels.relin.unwrap_or(top).min(top)))
            .transpose()?;
        let mut uploaded = BTreeMap::new();
        for (g, k) in galois {
            let level = levels.galois.get(&g).copied().unwrap_or(top).min(top);
            uploaded.insert(g, self.upload_switching_key_at(&k, level)?);
        }
        let encapsulation = encapsulation
            .map(|e| {
                Ok::<_, CkksError>((
                    self.upload_encapsulation_key(&e)?,
                    self.upload_switching_key(&e.from_sparse)?,
                ))
            })
            .transpose()?;
        Ok(DeviceKeys {
            relin,
            galois: uploaded,
            encapsulation,
        })
    }

    /// Uploads the evaluation keys (relinearization and every Galois key present).
    pub fn upload_keys(&self, keys: &EvaluationKeys) -> Result<DeviceKeys<B::Tensor>, CkksError> {
        let relin = keys
            .relin
            .as_ref()
            .map(|k| self.upload_switching_key(k))
            .transpose()?;
        let galois = keys
            .galois
            .iter()
            .map(|(&g, k)| Ok((g, self.upload_switching_key(k)?)))
            .collect::<Result<_, CkksError>>()?;
        let encapsulation = keys
            .encapsulation
            .as_ref()
            .map(|e| {
                Ok::<_, CkksError>((
                    self.upload_encapsulation_key(e)?,
                    self.upload_switching_key(&e.from_sparse)?,
                ))
            })
            .transpose()?;
        Ok(DeviceKeys {
            relin,
            galois,
            encapsulation,
        })
    }

    fn check(&self, ct: &DeviceCiphertext<B::Tensor>) -> Result<(), CkksError> {
        let shape = self.backend.shape(&ct.data);
        let expected = self.level_shape(ct.count * ct.size, ct.level);
        if ct.count == 0
            || ct.size < 2
            || ct.level > self.ctx.params().max_level()
            || *shape != expected
        {
            return Err(CkksError::ShapeMismatch {
                what: "device ciphertext",
                expected: expected.words(self.ctx.n()),
                found: shape.words(self.ctx.n()),
            });
        }
        Ok(())
    }

    fn check_pair(
        &self,
        op: &'static str,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
    ) -> Result<(), CkksError> {
        self.check(a)?;
        self.check(b)?;
        if a.count != b.count {
            return Err(CkksError::CountMismatch {
                op,
                left: a.count,
                right: b.count,
            });
        }
        if a.level != b.level {
            return Err(CkksError::LevelMismatch {
                op,
                left: a.level,
                right: b.level,
            });
        }
        Ok(())
    }

    fn with_data(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        data: B::Tensor,
        size: usize,
        level: usize,
        scale: f64,
    ) -> DeviceCiphertext<B::Tensor> {
        DeviceCiphertext {
            data,
            count: a.count,
            size,
            level,
            scale,
        }
    }

    /// Components `keep` of every ciphertext of `a`.
    fn components(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        keep: std::ops::Range<usize>,
    ) -> Result<B::Tensor, CkksError> {
        Ok(self.backend.slice_components(&a.data, a.size, keep)?)
    }

    /// `f(a, b)` on the components both have; the extra components of the larger operand pass
    /// through `extra` (identity for add, negation for sub's `b`).
    fn combine(
        &self,
        op: &'static str,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
        f: impl Fn(&B, &B::Tensor, &B::Tensor) -> crate::backend::Result<B::Tensor>,
        negate_extra_b: bool,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_pair(op, a, b)?;
        if !same_scale(a.scale, b.scale) {
            return Err(CkksError::ScaleMismatch {
                op,
                left: a.scale,
                right: b.scale,
            });
        }
        let be = &self.backend;
        let data = if a.size == b.size {
            f(be, &a.data, &b.data)?
        } else {
            let common = a.size.min(b.size);
            let head = f(
                be,
                &self.components(a, 0..common)?,
                &self.components(b, 0..common)?,
            )?;
            let tail = if a.size > b.size {
                self.components(a, common..a.size)?
            } else {
                let t = self.components(b, common..b.size)?;
                if negate_extra_b {
                    be.negate(&t)?
                } else {
                    t
                }
            };
            be.join_components(a.count, &[&head, &tail])?
        };
        Ok(self.with_data(a, data, a.size.max(b.size), a.level, a.scale))
    }

    /// `a + b` (same count, level and scale; sizes may differ).
    pub fn add(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.combine("add", a, b, |be, x, y| be.add(x, y), false)
    }

    /// `a - b` (same count, level and scale; sizes may differ).
    pub fn sub(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.combine("sub", a, b, |be, x, y| be.sub(x, y), true)
    }

    /// `-a`.
    pub fn negate(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        let data = self.backend.negate(&a.data)?;
        Ok(self.with_data(a, data, a.size, a.level, a.scale))
    }

    fn check_plain(
        &self,
        op: &'static str,
        a: &DeviceCiphertext<B::Tensor>,
        pt: &DevicePlaintext<B::Tensor>,
    ) -> Result<(), CkksError> {
        self.check(a)?;
        if a.level != pt.level {
            return Err(CkksError::LevelMismatch {
                op,
                left: a.level,
                right: pt.level,
            });
        }
        Ok(())
    }

    /// Replaces component 0 of every ciphertext by `c0` (`[count][1]`).
    fn with_c0(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        c0: B::Tensor,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let rest = self.components(a, 1..a.size)?;
        let data = self.backend.join_components(a.count, &[&c0, &rest])?;
        Ok(self.with_data(a, data, a.size, a.level, a.scale))
    }

    /// `a + pt` for every ciphertext of the batch (same level and scale).
    pub fn add_plain(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        pt: &DevicePlaintext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_plain("add_plain", a, pt)?;
        if !same_scale(a.scale, pt.scale) {
            return Err(CkksError::ScaleMismatch {
                op: "add_plain",
                left: a.scale,
                right: pt.scale,
            });
        }
        let c0 = self.backend.add(&self.components(a, 0..1)?, &pt.data)?;
        self.with_c0(a, c0)
    }

    /// `a * pt` for every ciphertext of the batch (scales multiply; rescale afterwards).
    pub fn mul_plain(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        pt: &DevicePlaintext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_plain("mul_plain", a, pt)?;
        let data = self.backend.mul(&a.data, &pt.data)?;
        Ok(self.with_data(a, data, a.size, a.level, a.scale * pt.scale))
    }

    /// `a * c` for a real constant `c` as the integer `round(c * const_scale)`; with `None` the
    /// constant scale is the last prime of the level (see [`Evaluator::mul_const`](super::Evaluator::mul_const)).
    pub fn mul_const(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        c: f64,
        const_scale: Option<f64>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        let cs = const_scale.unwrap_or(self.ctx.params().q()[a.level] as f64);
        let scalars = self.ctx.const_residues(c, cs, a.level)?;
        let data = self.backend.mul_scalar(&a.data, &scalars)?;
        Ok(self.with_data(a, data, a.size, a.level, a.scale * cs))
    }

    /// A linear layer over the batch `x` (one launch): output `j` is
    /// `sum_{(i, w) in rows[j]} round(w * const_scale) * x_i + round(bias[j] * scale)`, a batch of
    /// `rows.len()` ciphertexts at scale `x.scale * const_scale` (with `None`, the last prime of
    /// the level, so that a following [`Self::rescale`] restores the input scale). Equal word for
    /// word to the host's `mul_const` / `add` / `add_const` chain.
    pub fn linear(
        &self,
        x: &DeviceCiphertext<B::Tensor>,
        layer: &LinearLayer,
        const_scale: Option<f64>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let e = self.encode_linear(x.level, x.scale, layer, const_scale)?;
        self.linear_encoded(x, &e)
    }

    /// `layer` encoded for inputs at `level` and `scale` (weights times `const_scale`, by
    /// default the level's last prime): its residues computed and prepared for the backend once
    /// (on a GPU, the kernel tables uploaded), to apply to batch after batch with
    /// [`Self::linear_encoded`] and its kin.
    pub fn encode_linear(
        &self,
        level: usize,
        scale: f64,
        layer: &LinearLayer,
        const_scale: Option<f64>,
    ) -> Result<EncodedLinear<B::Linear>, CkksError> {
        let (weights, const_scale) = self.linear_weights(level, scale, layer, const_scale)?;
        let outputs = weights.outputs();
        let moduli: Vec<usize> = (0..=level).collect();
        Ok(EncodedLinear {
            weights: self.backend.prepare_linear(weights, &moduli)?,
            inputs: layer.inputs,
            outputs,
            level,
            in_scale: scale,
            const_scale,
        })
    }

    /// Checks that `x` is what `e` was encoded for.
    fn check_encoded<L>(
        &self,
        op: &'static str,
        x: &DeviceCiphertext<B::Tensor>,
        e: &EncodedLinear<L>,
    ) -> Result<(), CkksError> {
        self.check(x)?;
        if x.count != e.inputs {
            return Err(CkksError::CountMismatch {
                op,
                left: e.inputs,
                right: x.count,
            });
        }
        check_level_scale(op, (e.level, e.in_scale), (x.level, x.scale))
    }

    /// [`Self::linear`] with a layer encoded by [`Self::encode_linear`] for `x`'s level and
    /// scale.
    pub fn linear_encoded(
        &self,
        x: &DeviceCiphertext<B::Tensor>,
        e: &EncodedLinear<B::Linear>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_encoded("linear", x, e)?;
        let data = self.backend.linear_prepared(&x.data, x.size, &e.weights)?;
        Ok(DeviceCiphertext {
            data,
            count: e.outputs,
            size: x.size,
            level: x.level,
            scale: x.scale * e.const_scale,
        })
    }

    /// `acc += linear(x)` ([`Backend::linear_acc`]): the partial sums of a layer whose inputs
    /// come in chunks, accumulated in place. `acc` must hold the layer's outputs at `x`'s level
    /// and size, at the scale the layer gives.
    pub fn linear_acc(
        &self,
        acc: &mut DeviceCiphertext<B::Tensor>,
        x: &DeviceCiphertext<B::Tensor>,
        layer: &LinearLayer,
    ) -> Result<(), CkksError> {
        let e = self.encode_linear(x.level, x.scale, layer, None)?;
        self.linear_acc_encoded(acc, x, &e)
    }

    /// [`Self::linear_acc`] with a layer encoded by [`Self::encode_linear`].
    pub fn linear_acc_encoded(
        &self,
        acc: &mut DeviceCiphertext<B::Tensor>,
        x: &DeviceCiphertext<B::Tensor>,
        e: &EncodedLinear<B::Linear>,
    ) -> Result<(), CkksError> {
        self.check_encoded("linear_acc", x, e)?;
        let scale = x.scale * e.const_scale;
        self.check(acc)?;
        if acc.count != e.outputs {
            return Err(CkksError::CountMismatch {
                op: "linear_acc",
                left: acc.count,
                right: e.outputs,
            });
        }
        check_alike(
            "linear_acc",
            (acc.size, acc.level, acc.scale),
            (x.size, x.level, scale),
        )?;
        self.backend
            .linear_acc_prepared(&mut acc.data, &x.data, x.size, &e.weights)?;
        Ok(())
    }

    /// [`Self::linear`] with the constant scale `q_l`, then [`Self::rescale`], in one backend
    /// operation ([`Backend::linear_rescale`]; fused on the CPU): level - 1, scale unchanged up
    /// to the rounding of `q_l / q_l`.
    pub fn linear_rescale(
        &self,
        x: &DeviceCiphertext<B::Tensor>,
        layer: &LinearLayer,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let e = self.encode_linear(x.level, x.scale, layer, None)?;
        self.linear_rescale_encoded(x, &e)
    }

    /// [`Self::linear_rescale`] with a layer encoded by [`Self::encode_linear`] (with the
    /// default constant scale).
    pub fn linear_rescale_encoded(
        &self,
        x: &DeviceCiphertext<B::Tensor>,
        e: &EncodedLinear<B::Linear>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        if x.level == 0 {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        self.check_encoded("linear_rescale", x, e)?;
        let data = self
            .backend
            .linear_rescale_prepared(&x.data, x.size, &e.weights)?;
        let q = self.ctx.params().q()[x.level] as f64;
        Ok(DeviceCiphertext {
            data,
            count: e.outputs,
            size: x.size,
            level: x.level - 1,
            scale: x.scale * e.const_scale / q,
        })
    }

    /// The backend weights of a linear layer over inputs at `level` and `scale` (weights times
    /// `const_scale`, by default the level's last prime), and that constant scale.
    fn linear_weights(
        &self,
        level: usize,
        scale: f64,
        layer: &LinearLayer,
        const_scale: Option<f64>,
    ) -> Result<(LinearWeights, f64), CkksError> {
        if level > self.ctx.params().max_level() {
            return Err(CkksError::LevelOutOfRange {
                level,
                max: self.ctx.params().max_level(),
            });
        }
        let outputs = layer.rows.len();
        if outputs == 0 || !(layer.bias.is_empty() || layer.bias.len() == outputs) {
            return Err(CkksError::InvalidLayer {
                reason: format!(
                    "{outputs} rows and {} bias values: need at least one row, and one bias per row or none",
                    layer.bias.len()
                ),
            });
        }
        if let Some(i) = layer
            .rows
            .iter()
            .flatten()
            .map(|&(i, _)| i)
            .find(|&i| i >= layer.inputs)
        {
            return Err(CkksError::InvalidLayer {
                reason: format!("input index {i} is outside the {} inputs", layer.inputs),
            });
        }
        let cs = const_scale.unwrap_or(self.ctx.params().q()[level] as f64);
        let out_scale = scale * cs;
        let limbs = level + 1;
        let mut row_ptr = Vec::with_capacity(outputs + 1);
        row_ptr.push(0u32);
        let mut cols = Vec::new();
        let mut ints = Vec::new();
        for row in &layer.rows {
            for &(i, w) in row {
                cols.push(i as u32);
                ints.push(w);
            }
            row_ptr.push(cols.len() as u32);
        }
        // [nnz][limbs] residues, transposed to the kernel's [limbs][nnz].
        let per_entry = ints
            .iter()
            .map(|&w| self.ctx.const_residues(w, cs, level))
            .collect::<Result<Vec<_>, _>>()?;
        let values = (0..limbs)
            .flat_map(|l| per_entry.iter().map(move |r| r[l]))
            .collect();
        let bias = if layer.bias.is_empty() {
            vec![0; outputs * limbs]
        } else {
            layer
                .bias
                .iter()
                .map(|&b| self.ctx.const_residues(b, out_scale, level))
                .collect::<Result<Vec<_>, _>>()?
                .concat()
        };
        let weights = LinearWeights {
            inputs: layer.inputs,
            row_ptr,
            cols,
            values,
            bias,
        };
        Ok((weights, cs))
    }

    /// `a + c` for a real constant `c` (added to every slot at the ciphertext's scale).
    pub fn add_const(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        c: f64,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        let scalars = self.ctx.const_residues(c, a.scale, a.level)?;
        let c0 = self
            .backend
            .add_scalar(&self.components(a, 0..1)?, &scalars)?;
        self.with_c0(a, c0)
    }

    /// `a * b` without relinearization: 3-component ciphertexts at scale `scale_a * scale_b`.
    pub fn mul(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_pair("mul", a, b)?;
        if a.size != 2 || b.size != 2 {
            return Err(CkksError::NotRelinearized {
                size: a.size.max(b.size),
            });
        }
        let data = self.backend.tensor(&a.data, &b.data)?;
        Ok(self.with_data(a, data, 3, a.level, a.scale * b.scale))
    }

    /// Relinearizes 3-component ciphertexts back to 2 components.
    pub fn relinearize(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        match a.size {
            2 => {
                let data = self.backend.duplicate(&a.data)?;
                Ok(self.with_data(a, data, 2, a.level, a.scale))
            }
            3 => {
                let rlk = keys.relin.as_ref().ok_or(CkksError::MissingRelinKey)?;
                let ks = self.backend.keyswitch(&self.components(a, 2..3)?, rlk)?;
                let data = self.backend.add(&self.components(a, 0..2)?, &ks)?;
                Ok(self.with_data(a, data, 2, a.level, a.scale))
            }
            size => Err(CkksError::NotRelinearized { size }),
        }
    }

    /// Divides by the last prime of the level and rounds: level - 1, scale / q_l.
    pub fn rescale(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.level == 0 {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let data = self.backend.divide_round(&a.data, 1)?;
        let q = self.ctx.params().q()[a.level] as f64;
        Ok(self.with_data(a, data, a.size, a.level - 1, a.scale / q))
    }

    /// Divides by the product of the last `primes` primes of the level and rounds, in one
    /// division: level - `primes`, scale / (q_l ... q_{l-primes+1}). With `primes = 2` a level of
    /// the circuit is two primes, so the scale can be the square of a prime (double-prime
    /// scaling: a 2^52 scale on 26-bit words).
    pub fn rescale_by(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        primes: usize,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if primes == 0 {
            return self.drop_levels(a, 0);
        }
        if primes > a.level {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let data = self.backend.divide_round(&a.data, primes)?;
        let q = self.ctx.params().q()[a.level + 1 - primes..=a.level]
            .iter()
            .map(|&q| q as f64)
            .product::<f64>();
        Ok(self.with_data(a, data, a.size, a.level - primes, a.scale / q))
    }

    /// Relinearizes 3-component ciphertexts and rescales them in one division (by `P q_l`,
    /// [`Backend::relin_rescale`]): level - 1, scale / q_l.
    pub fn relin_rescale(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.size != 3 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        if a.level == 0 {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let rlk = keys.relin.as_ref().ok_or(CkksError::MissingRelinKey)?;
        let data = self.backend.relin_rescale(&a.data, rlk)?;
        let q = self.ctx.params().q()[a.level] as f64;
        Ok(self.with_data(a, data, 2, a.level - 1, a.scale / q))
    }

    /// `a * b`, relinearized and rescaled ([`Backend::mul_relin_rescale`]: the tensor product,
    /// then [`Self::relin_rescale`]'s single division).
    pub fn mul_relin_rescale(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        b: &DeviceCiphertext<B::Tensor>,
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check_pair("mul", a, b)?;
        if a.size != 2 || b.size != 2 {
            return Err(CkksError::NotRelinearized {
                size: a.size.max(b.size),
            });
        }
        if a.level == 0 {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let rlk = keys.relin.as_ref().ok_or(CkksError::MissingRelinKey)?;
        let data = self.backend.mul_relin_rescale(&a.data, &b.data, rlk)?;
        let q = self.ctx.params().q()[a.level] as f64;
        Ok(self.with_data(a, data, 2, a.level - 1, a.scale * b.scale / q))
    }

    /// ModRaise, the first step of bootstrapping: ciphertexts at level `base` (modulus `Q_base =
    /// q_0 ... q_base`) lifted to `level`. Each coefficient is taken as the centred integer in
    /// `(-Q_base / 2, Q_base / 2]` and reduced modulo every prime of `level` (inverse NTT, a shift
    /// by `floor(Q_base / 2)`, the exact lift of [`Self::exact_lift`], the shift back, forward
    /// NTT), so the result decrypts to `m + Q_base I` for a small integer polynomial `I` (its
    /// coefficients are sums of about the secret's weight terms in `[-1/2, 1/2]`), at the same
    /// scale. The lift is exact: the fast basis conversion's `u Q_base` error, multiplied by the
    /// secret in `c_1 s`, would widen `I` several times over.
    pub fn mod_raise(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        level: usize,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let q = self.ctx.params().q();
        let base = a.level;
        if level >= q.len() || level <= base {
            return Err(CkksError::OutOfLevels { op: "mod_raise" });
        }
        let be = &self.backend;
        // floor(Q_base / 2) modulo each prime, by Horner over the base primes (exact in u128).
        let half_mod = |qi: u32| -> u32 {
            let qi = qi as u128;
            // Q_base = prod q_j; floor(Q/2) = (Q - 1) / 2 for odd Q.
            let mut q_mod = 1u128;
            for &qj in &q[..=base] {
                q_mod = q_mod * (qj as u128 % qi) % qi;
            }
            // (Q - 1) / 2 mod qi = (Q - 1) * 2^-1 mod qi.
            let inv2 = qi.div_ceil(2);
            ((q_mod + qi - 1) % qi * inv2 % qi) as u32
        };
        let half: Vec<u32> = q[..=base].iter().map(|&qi| half_mod(qi)).collect();
        let coeff = be.ntt_inverse_out_of_place(&a.data)?;
        let shifted = be.add_scalar(&coeff, &half)?;
        drop(coeff);
        let targets: Vec<usize> = (0..=level).collect();
        let ext = self.exact_lift(&shifted, base, &targets)?;
        drop(shifted);
        let back: Vec<u32> = q[..=level]
            .iter()
            .map(|&qi| (qi - half_mod(qi)) % qi)
            .collect();
        let mut ext = be.add_scalar(&ext, &back)?;
        be.ntt_forward(&mut ext)?;
        Ok(self.with_data(a, ext, 2, level, a.scale))
    }

    /// The exact integer of each coefficient of `x` (coefficient form over limbs `0..=base`,
    /// values in `[0, Q_base)`) modulo each of `targets`: Garner's mixed radix
    /// `X = d_0 + q_0 (d_1 + q_1 (d_2 + ...))`, `d_i in [0, q_i)`, every step an exact one-limb
    /// conversion (a value below its prime reduced modulo others), a subtraction or a product
    /// by a constant, so every backend gives the same words.
    fn exact_lift(
        &self,
        x: &B::Tensor,
        base: usize,
        targets: &[usize],
    ) -> Result<B::Tensor, CkksError> {
        let be = &self.backend;
        let q = self.ctx.params().q();
        let qp: Vec<u32> = self
            .ctx
            .qp_moduli(self.ctx.params().max_level())
            .iter()
            .map(|m| m.value())
            .collect();
        let mulmod = |a: u64, b: u64, m: u64| a * b % m;
        let powmod = |mut b: u64, mut e: u64, m: u64| {
            let mut r = 1u64;
            while e > 0 {
                if e & 1 == 1 {
                    r = mulmod(r, b, m);
                }
                b = mulmod(b, b, m);
                e >>= 1;
            }
            r
        };
        // prod_{l < j} q_l modulo m.
        let radix = |j: usize, m: u64| {
            q[..j]
                .iter()
                .fold(1u64, |acc, &ql| mulmod(acc, ql as u64 % m, m))
        };
        let mut digits: Vec<B::Tensor> = Vec::with_capacity(base + 1);
        // One group per limb: limb i alone is group i of the conversion to q_i.
        let groups: Vec<std::ops::Range<usize>> = (0..=base).map(|i| i..i + 1).collect();
        for (i, &qi) in q[..=base].iter().enumerate() {
            let qi = qi as u64;
            let mut v =
                be.slice_components(&be.basis_convert(x, &groups, &[i])?, base + 1, i..i + 1)?;
            for (j, d) in digits.iter().enumerate() {
                let dj = be.basis_convert(d, std::slice::from_ref(&(0..1)), &[i])?;
                let w = radix(j, qi) as u32;
                v = be.sub(&v, &be.mul_scalar(&dj, &[w])?)?;
            }
            if i > 0 {
                let inv = powmod(radix(i, qi), qi - 2, qi) as u32;
                v = be.mul_scalar(&v, &[inv])?;
            }
            digits.push(v);
        }
        let mut acc: Option<B::Tensor> = None;
        for (j, d) in digits.iter().enumerate() {
            let mut c = be.basis_convert(d, std::slice::from_ref(&(0..1)), targets)?;
            if j > 0 {
                let w: Vec<u32> = targets
                    .iter()
                    .map(|&t| radix(j, qp[t] as u64) as u32)
                    .collect();
                c = be.mul_scalar(&c, &w)?;
            }
            acc = Some(match acc {
                None => c,
                Some(a) => be.add(&a, &c)?,
            });
        }
        Ok(acc.expect("at least one limb"))
    }

    /// Switches ciphertexts from the dense secret to the sparse one of bootstrapping's
    /// encapsulation (`to_sparse`) or back (`!to_sparse`): `(c0 + ks_0(c1), ks_1(c1))`.
    /// `to_sparse` needs the input at or below the level the key was made for.
    pub fn encapsulate(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        keys: &DeviceKeys<B::Tensor>,
        to_sparse: bool,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let (down, up) = keys
            .encapsulation
            .as_ref()
            .ok_or(CkksError::MissingEncapsulationKeys)?;
        let key = if to_sparse {
            if a.level > down.alpha - 1 {
                return Err(CkksError::LevelMismatch {
                    op: "encapsulate (drop to the key's base level first)",
                    left: a.level,
                    right: down.alpha - 1,
                });
            }
            down
        } else {
            up
        };
        let be = &self.backend;
        let ks = be.keyswitch(&self.components(a, 1..2)?, key)?;
        let c0 = be.add(
            &self.components(a, 0..1)?,
            &be.slice_components(&ks, 2, 0..1)?,
        )?;
        let c1 = be.slice_components(&ks, 2, 1..2)?;
        let data = be.join_components(a.count, &[&c0, &c1])?;
        Ok(self.with_data(a, data, 2, a.level, a.scale))
    }

    /// Drops `levels` data primes without dividing (message and scale unchanged).
    pub fn drop_levels(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        levels: usize,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if levels > a.level {
            return Err(CkksError::OutOfLevels { op: "drop_levels" });
        }
        let data = if levels == 0 {
            self.backend.duplicate(&a.data)?
        } else {
            self.backend.truncate_limbs(&a.data, a.level + 1 - levels)?
        };
        Ok(self.with_data(a, data, a.size, a.level - levels, a.scale))
    }

    fn apply_galois(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        g: usize,
        keys: &DeviceKeys<B::Tensor>,
        step: i64,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.check(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let key = keys
            .galois
            .get(&g)
            .ok_or(CkksError::MissingGaloisKey { step, galois: g })?;
        // (c0, c1) -> (sigma(c0) + ks_0, ks_1) with ks = keyswitch(sigma(c1)).
        let data = self.backend.galois_switch(&a.data, g, key)?;
        Ok(self.with_data(a, data, 2, a.level, a.scale))
    }

    /// Rotates the slots of every ciphertext left by `step` (negative: right).
    pub fn rotate(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        step: i64,
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let g = self.ctx.galois_element(step);
        self.apply_galois(a, g, keys, step)
    }

    /// Rotates every ciphertext of `a` left by each of `steps` (0 is the identity), sharing one
    /// key-switching decomposition among them (hoisting, Halevi-Shoup): the mod-up of `c1` is
    /// done once, and each rotation applies its automorphism to the extended digits before the
    /// inner product with its key. Returns one batch per step. The results decrypt like
    /// [`Self::rotate`]'s, with different (equally small) noise.
    pub fn rotate_hoisted(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        steps: &[i64],
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<Vec<DeviceCiphertext<B::Tensor>>, CkksError> {
        self.check(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let slots = self.ctx.params().slots() as i64;
        let keyed: Vec<KeyedStep<'_, B::Tensor>> = steps
            .iter()
            .map(|&step| {
                if step.rem_euclid(slots) == 0 {
                    return Ok(None);
                }
                let g = self.ctx.galois_element(step);
                let key = keys
                    .galois
                    .get(&g)
                    .ok_or(CkksError::MissingGaloisKey { step, galois: g })?;
                Ok(Some((g, key)))
            })
            .collect::<Result<_, CkksError>>()?;
        let be = &self.backend;
        let c0 = self.components(a, 0..1)?;
        let c1 = self.components(a, 1..2)?;
        let ext = match keyed.iter().flatten().next() {
            None => None,
            Some((_, key)) => {
                let plan =
                    KeySwitchPlan::new(be.context(), be.shape(&c1), key, be.shape(&key.key))?;
                let coeff = be.ntt_inverse_out_of_place(&c1)?;
                let mut ext = be.basis_convert(&coeff, &plan.digits, &plan.targets)?;
                drop(coeff);
                be.ntt_forward(&mut ext)?;
                Some((ext, plan))
            }
        };
        keyed
            .into_iter()
            .map(|k| match (k, &ext) {
                (None, _) | (_, None) => self.drop_levels(a, 0),
                (Some((g, key)), Some((ext, plan))) => {
                    let rext = be.automorphism_ntt(ext, g)?;
                    // The digits and targets are shared; where this key's limbs sit in its
                    // tensor is its own (keys may be trimmed to different levels).
                    let own =
                        KeySwitchPlan::new(be.context(), be.shape(&c1), key, be.shape(&key.key))?;
                    let acc =
                        be.keyswitch_inner(&rext, plan.digits.len(), &key.key, &own.key_map)?;
                    drop(rext);
                    let ks = be.divide_round(&acc, key.special.len())?;
                    let r0 = be.add(
                        &be.automorphism_ntt(&c0, g)?,
                        &be.slice_components(&ks, 2, 0..1)?,
                    )?;
                    let r1 = be.slice_components(&ks, 2, 1..2)?;
                    let data = be.join_components(a.count, &[&r0, &r1])?;
                    Ok(self.with_data(a, data, 2, a.level, a.scale))
                }
            })
            .collect()
    }

    /// `sum_j rotate(a_j, step_j)` (single ciphertexts alike in level and scale; step 0 adds
    /// `a_j` as it is), rescaled by the level's last `primes` primes, with one division for all
    /// of it: every rotation's key switching stops before its mod-down (over `Q_l ∪ P`,
    /// [`Backend::keyswitch_ext`]), the sum is taken there, and one divide-and-round by
    /// `P q_l ... q_{l - primes + 1}` ends it (lazy mod-down, Bossuat et al., Eurocrypt 2021).
    /// The giant steps of a BSGS linear transformation. Decrypts like the rotations summed and
    /// rescaled one by one, with less noise.
    pub fn rotate_sum_rescale(
        &self,
        parts: &[(i64, &DeviceCiphertext<B::Tensor>)],
        keys: &DeviceKeys<B::Tensor>,
        primes: usize,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        let first = parts.first().ok_or(CkksError::EmptyBatch)?.1;
        for (_, x) in parts {
            self.check(x)?;
            check_alike(
                "rotate_sum_rescale",
                (first.size, first.level, first.scale),
                (x.size, x.level, x.scale),
            )?;
            if x.count != 1 {
                return Err(CkksError::CountMismatch {
                    op: "rotate_sum_rescale",
                    left: x.count,
                    right: 1,
                });
            }
        }
        if first.size != 2 {
            return Err(CkksError::NotRelinearized { size: first.size });
        }
        if primes > first.level {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let be = &self.backend;
        let slots = self.ctx.params().slots() as i64;
        // Over Q_l: c0 of every part (rotated), c1 of the unrotated ones; over Q_l ∪ P: the key
        // switchings of the rotated c1.
        let (mut lin0, mut lin1, mut ext): (Option<B::Tensor>, Option<B::Tensor>, Option<_>) =
            (None, None, None);
        let accumulate = |acc: &mut Option<B::Tensor>, t: B::Tensor| -> Result<(), CkksError> {
            *acc = Some(match acc.take() {
                None => t,
                Some(a) => be.add(&a, &t)?,
            });
            Ok(())
        };
        let mut special: Option<Vec<usize>> = None;
        for &(step, x) in parts {
            if step.rem_euclid(slots) == 0 {
                accumulate(&mut lin0, self.components(x, 0..1)?)?;
                accumulate(&mut lin1, self.components(x, 1..2)?)?;
                continue;
            }
            let g = self.ctx.galois_element(step);
            let key = keys
                .galois
                .get(&g)
                .ok_or(CkksError::MissingGaloisKey { step, galois: g })?;
            if special.get_or_insert_with(|| key.special.clone()) != &key.special {
                return Err(CkksError::InvalidParameters {
                    reason: "rotation keys over different special primes".into(),
                });
            }
            let rot = be.automorphism_ntt(&x.data, g)?;
            accumulate(&mut lin0, be.slice_components(&rot, 2, 0..1)?)?;
            let c1 = be.slice_components(&rot, 2, 1..2)?;
            drop(rot);
            accumulate(&mut ext, be.keyswitch_ext(&c1, key)?)?;
        }
        let lin0 = lin0.expect("at least one part");
        let (data, dropped) = match (ext, special) {
            (Some(mut acc), Some(special)) => {
                let lin1 = match lin1 {
                    Some(t) => t,
                    None => be.mul_scalar(&lin0, &vec![0; first.level + 1])?,
                };
                let lin = be.join_components(1, &[&lin0, &lin1])?;
                let moduli: Vec<usize> = (0..=first.level).collect();
                let p_mod = be.context().product_mod(&special, &moduli);
                be.add_scaled_prefix(&mut acc, &lin, &p_mod)?;
                (be.divide_round(&acc, special.len() + primes)?, primes)
            }
            _ => {
                let lin1 = lin1.expect("an unrotated part");
                let lin = be.join_components(1, &[&lin0, &lin1])?;
                if primes == 0 {
                    (lin, 0)
                } else {
                    (be.divide_round(&lin, primes)?, primes)
                }
            }
        };
        let q = self.ctx.params().q()[first.level + 1 - dropped..=first.level]
            .iter()
            .map(|&q| q as f64)
            .product::<f64>();
        Ok(self.with_data(first, data, 2, first.level - dropped, first.scale / q))
    }

    /// Complex conjugation of every slot of every ciphertext.
    pub fn conjugate(
        &self,
        a: &DeviceCiphertext<B::Tensor>,
        keys: &DeviceKeys<B::Tensor>,
    ) -> Result<DeviceCiphertext<B::Tensor>, CkksError> {
        self.apply_galois(a, self.ctx.conjugation_element(), keys, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::ckks::{Decryptor, Encoder, Encryptor, KeyGenerator, Preset, Sampler};

    /// The centred coefficients of a plaintext (CRT over its limbs).
    fn coefficients(ctx: &Context, pt: &Plaintext) -> Vec<i128> {
        let n = ctx.n();
        let q: Vec<u128> = ctx.params().q()[..=pt.level]
            .iter()
            .map(|&q| q as u128)
            .collect();
        let big: u128 = q.iter().product();
        let mut limbs = pt.data.clone();
        for (i, limb) in limbs.chunks_mut(n).enumerate() {
            ctx.q_tables()[i].inverse(limb);
        }
        (0..n)
            .map(|j| {
                let mut t: u128 = 0;
                for (i, &qi) in q.iter().enumerate() {
                    let rest = big / qi;
                    // (rest mod qi)^-1 mod qi by Fermat.
                    let (mut b, mut e, mut inv) = (rest % qi, qi - 2, 1u128);
                    while e > 0 {
                        if e & 1 == 1 {
                            inv = inv * b % qi;
                        }
                        b = b * b % qi;
                        e >>= 1;
                    }
                    let r = limbs[i * n + j] as u128 * inv % qi;
                    t = (t + r * rest) % big;
                }
                if t > big / 2 {
                    t as i128 - big as i128
                } else {
                    t as i128
                }
            })
            .collect()
    }

    #[test]
    fn mod_raise_adds_only_small_multiples_of_q0() {
        let params = Preset::by_name("toy1024")
            .unwrap()
            .parameters(true)
            .unwrap();
        let ctx = Context::new(&params).unwrap();
        let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(5));
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let enc = Encoder::new(ctx.clone());
        let values: Vec<f64> = (0..enc.slots())
            .map(|i| (i % 17) as f64 / 17.0 - 0.5)
            .collect();
        let ct = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(6))
            .encrypt(&enc.encode(&values, 0, (1u64 << 20) as f64).unwrap(), &pk)
            .unwrap();
        let dev = DeviceEvaluator::new(ctx.clone(), CpuBackend::new(ctx.rns().clone())).unwrap();
        let top = params.max_level();
        let raised = dev
            .download(
                &dev.mod_raise(&dev.upload(std::slice::from_ref(&ct)).unwrap(), top)
                    .unwrap(),
            )
            .unwrap();
        assert_eq!((raised[0].level, raised[0].scale), (top, ct.scale));
        let dec = Decryptor::new(ctx.clone());
        let m = coefficients(&ctx, &dec.decrypt(&ct, &sk).unwrap());
        let t = coefficients(&ctx, &dec.decrypt(&raised[0], &sk).unwrap());
        let q0 = params.q()[0] as i128;
        let mut widest = 0;
        for (m, t) in m.iter().zip(&t) {
            assert_eq!((t - m) % q0, 0, "t = {t}, m = {m}");
            widest = widest.max(((t - m) / q0).abs());
        }
        // |I| is at most about the secret's weight / 2; for a dense ternary secret at N = 1024
        // it stays in the tens.
        eprintln!("ModRaise at N = 1024: |I| up to {widest}");
        assert!(widest > 0 && widest < 100, "|I| up to {widest}");
        // A ciphertext above level 0 is refused.
        let up = dev.upload(&[raised[0].clone()]).unwrap();
        assert!(dev.mod_raise(&up, top).is_err());
    }
}
