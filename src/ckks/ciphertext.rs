//! Plaintexts and ciphertexts: limb-major residues in NTT form with their level and scale.

use super::{CkksError, Context};

/// An encoded message: `[limb][coeff]` residues over `Q_level`, NTT form.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) data: Vec<u32>,
    pub(crate) level: usize,
    pub(crate) scale: f64,
}

impl Plaintext {
    /// Level (number of data primes minus one).
    pub fn level(&self) -> usize {
        self.level
    }
    /// Scale the message was encoded at.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Checks the level and the number of residues against the context.
    pub(crate) fn check(&self, ctx: &Context) -> Result<(), CkksError> {
        let expected = (self.level + 1) * ctx.n();
        if self.level > ctx.params().max_level() || self.data.len() != expected {
            return Err(CkksError::ShapeMismatch {
                what: "plaintext",
                expected,
                found: self.data.len(),
            });
        }
        Ok(())
    }
}

/// A ciphertext of `size` components (2 normally, 3 after a multiplication before
/// relinearization), laid out `[component][limb][coeff]` over `Q_level`, NTT form.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) data: Vec<u32>,
    pub(crate) size: usize,
    pub(crate) level: usize,
    pub(crate) scale: f64,
}

impl Ciphertext {
    /// Number of polynomial components.
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
    /// Overrides the tracked scale (for callers that know better, e.g. after folding constants).
    pub fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }
    /// Checks the level, the size (at least 2 components) and the number of residues against
    /// the context.
    pub(crate) fn check(&self, ctx: &Context) -> Result<(), CkksError> {
        let expected = self.size * (self.level + 1) * ctx.n();
        if self.level > ctx.params().max_level() || self.data.len() != expected || self.size < 2 {
            return Err(CkksError::ShapeMismatch {
                what: "ciphertext",
                expected,
                found: self.data.len(),
            });
        }
        Ok(())
    }
    /// Raw residues `[component][limb][coeff]` (NTT form).
    pub fn data(&self) -> &[u32] {
        &self.data
    }
    /// Number of coefficients per limb.
    pub fn limb_len(&self) -> usize {
        self.data
            .len()
            .checked_div(self.size * (self.level + 1))
            .unwrap_or(0)
    }
    /// One component, `[limb][coeff]`.
    pub(crate) fn component(&self, c: usize) -> &[u32] {
        let len = self.data.len() / self.size;
        &self.data[c * len..(c + 1) * len]
    }
}
