//! Homomorphic operations on single host ciphertexts (server side: needs only evaluation keys):
//! a thin front over [`DeviceEvaluator`] on the CPU backend, so there is one implementation of
//! the scheme.

use std::sync::Arc;

use super::device::DeviceCiphertext;
use super::{
    Ciphertext, CkksError, Context, DeviceEvaluator, DeviceKeys, EvaluationKeys, Plaintext,
};
use crate::backend::cpu::{CpuBackend, CpuTensor};
use crate::backend::Shape;

/// Evaluation keys ready for [`Evaluator`] (relinearization and Galois keys in host tensors).
pub type HostKeys = DeviceKeys<CpuTensor>;

/// Evaluates CKKS operations on one ciphertext at a time, on the CPU. Holds no secret.
///
/// Each call wraps its operands as a batch of one for [`DeviceEvaluator`] (moving, not copying,
/// the `_assign` operands) and unwraps the result, so it computes exactly what the batched
/// evaluator computes.
pub struct Evaluator {
    dev: DeviceEvaluator<CpuBackend>,
}

impl Evaluator {
    /// An evaluator for the context.
    pub fn new(ctx: Arc<Context>) -> Self {
        let backend = CpuBackend::new(ctx.rns().clone());
        Self {
            dev: DeviceEvaluator::new(ctx, backend)
                .expect("a backend built on the context's primes"),
        }
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        self.dev.context()
    }

    /// The batched evaluator underneath.
    pub fn device(&self) -> &DeviceEvaluator<CpuBackend> {
        &self.dev
    }

    /// The evaluation keys as host tensors (once per key set; every key-switching operation
    /// takes them).
    pub fn upload_keys(&self, keys: &EvaluationKeys) -> Result<HostKeys, CkksError> {
        self.dev.upload_keys(keys)
    }

    fn wrap(
        &self,
        data: Vec<u32>,
        like: &Ciphertext,
    ) -> Result<DeviceCiphertext<CpuTensor>, CkksError> {
        let shape = Shape::ntt(like.size, (0..=like.level).collect());
        let t = self.dev.backend().from_vec(data, shape)?;
        Ok(DeviceCiphertext::from_parts(
            t, 1, like.size, like.level, like.scale,
        ))
    }

    fn put(&self, ct: &Ciphertext) -> Result<DeviceCiphertext<CpuTensor>, CkksError> {
        ct.check(self.context())?;
        self.wrap(ct.data.clone(), ct)
    }

    /// Moves the words of `ct` into a batch of one (`ct` is left empty until reassigned).
    fn put_owned(&self, ct: &mut Ciphertext) -> Result<DeviceCiphertext<CpuTensor>, CkksError> {
        ct.check(self.context())?;
        let data = std::mem::take(&mut ct.data);
        self.wrap(data, ct)
    }

    fn take(d: DeviceCiphertext<CpuTensor>) -> Ciphertext {
        let (size, level, scale) = (d.size(), d.level(), d.scale());
        Ciphertext {
            data: d.into_tensor().into_vec(),
            size,
            level,
            scale,
        }
    }

    /// Runs `f` on `a` as a batch of one and writes the result back into `a`; on error `a` is
    /// restored.
    fn update(
        &self,
        a: &mut Ciphertext,
        f: impl FnOnce(&DeviceCiphertext<CpuTensor>) -> Result<DeviceCiphertext<CpuTensor>, CkksError>,
    ) -> Result<(), CkksError> {
        let x = self.put_owned(a)?;
        match f(&x) {
            Ok(r) => {
                *a = Self::take(r);
                Ok(())
            }
            Err(e) => {
                a.data = x.into_tensor().into_vec();
                Err(e)
            }
        }
    }

    /// `a += b` (same level and scale; sizes may differ).
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        let y = self.put(b)?;
        self.update(a, |x| self.dev.add(x, &y))
    }

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.add(&self.put(a)?, &self.put(b)?)?))
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.sub(&self.put(a)?, &self.put(b)?)?))
    }

    /// `a = -a`.
    pub fn negate_assign(&self, a: &mut Ciphertext) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.negate(x))
    }

    /// `-a`.
    pub fn negate(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.negate(&self.put(a)?)?))
    }

    /// `a + pt` (same level and scale).
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        let p = self.dev.upload_plaintext(pt)?;
        Ok(Self::take(self.dev.add_plain(&self.put(a)?, &p)?))
    }

    /// `a * pt` (scales multiply; rescale afterwards).
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        let p = self.dev.upload_plaintext(pt)?;
        Ok(Self::take(self.dev.mul_plain(&self.put(a)?, &p)?))
    }

    /// `a * c` for a real constant `c`, as the integer `round(c * const_scale)` (no plaintext
    /// polynomial, no NTT). The scale is multiplied by `const_scale`; with `None` it is the last
    /// prime of the level, so that a following [`Self::rescale_assign`] restores the input scale.
    pub fn mul_const_assign(
        &self,
        a: &mut Ciphertext,
        c: f64,
        const_scale: Option<f64>,
    ) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.mul_const(x, c, const_scale))
    }

    /// `a * c` (see [`Self::mul_const_assign`]).
    pub fn mul_const(
        &self,
        a: &Ciphertext,
        c: f64,
        const_scale: Option<f64>,
    ) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.mul_const(
            &self.put(a)?,
            c,
            const_scale,
        )?))
    }

    /// `a + c` for a real constant `c` (added to every slot at the ciphertext's scale).
    pub fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.add_const(x, c))
    }

    /// `a * b` without relinearization: a 3-component ciphertext at scale `scale_a * scale_b`.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.mul(&self.put(a)?, &self.put(b)?)?))
    }

    /// Relinearizes a 3-component ciphertext back to 2 components.
    pub fn relinearize_assign(&self, a: &mut Ciphertext, keys: &HostKeys) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.relinearize(x, keys))
    }

    /// Divides by the last prime of the level and rounds: level - 1, scale / q_l.
    pub fn rescale_assign(&self, a: &mut Ciphertext) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.rescale(x))
    }

    /// Relinearizes a 3-component ciphertext and rescales it in one division.
    pub fn relin_rescale_assign(
        &self,
        a: &mut Ciphertext,
        keys: &HostKeys,
    ) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.relin_rescale(x, keys))
    }

    /// `a * b`, relinearized and rescaled.
    pub fn mul_relin_rescale(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        keys: &HostKeys,
    ) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.mul_relin_rescale(
            &self.put(a)?,
            &self.put(b)?,
            keys,
        )?))
    }

    /// Drops `levels` data primes without dividing (the message and scale are unchanged).
    pub fn drop_levels_assign(&self, a: &mut Ciphertext, levels: usize) -> Result<(), CkksError> {
        self.update(a, |x| self.dev.drop_levels(x, levels))
    }

    /// Rotates the slots left by `step` (negative: right). Needs the Galois key of that step.
    pub fn rotate(
        &self,
        a: &Ciphertext,
        step: i64,
        keys: &HostKeys,
    ) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.rotate(&self.put(a)?, step, keys)?))
    }

    /// Complex conjugation of every slot. Needs the conjugation key.
    pub fn conjugate(&self, a: &Ciphertext, keys: &HostKeys) -> Result<Ciphertext, CkksError> {
        Ok(Self::take(self.dev.conjugate(&self.put(a)?, keys)?))
    }
}
