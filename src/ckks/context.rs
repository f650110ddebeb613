//! What a parameter set derives once: the RNS context (NTT tables, and the cached constants of
//! base conversion, divide-and-round and key switching, shared with the compute backends), CRT
//! bases for decoding, Galois permutations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cryptodl_kernels::automorphism::galois_permutation_ntt;
use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::rns::RnsBasis;

use super::{CkksError, Parameters};
use crate::backend::RnsContext;

/// Everything derived from [`Parameters`] once, shared by keys, encryptor, decoder and the
/// evaluators.
#[derive(Debug)]
pub struct Context {
    params: Parameters,
    /// The primes `Q` then `P` with their tables and cached RNS constants.
    rns: RnsContext,
    /// CRT basis of `Q_l` for each level.
    bases: Vec<RnsBasis>,
    galois_perms: Mutex<HashMap<usize, Arc<Vec<u32>>>>,
}

impl Context {
    /// Precomputes the tables for `params`.
    pub fn new(params: &Parameters) -> Result<Arc<Self>, CkksError> {
        let q = params.q();
        let primes: Vec<u32> = q.iter().chain(params.p()).copied().collect();
        let rns = RnsContext::new(params.n(), &primes)?;
        let bases = (0..q.len())
            .map(|l| RnsBasis::new(&q[..=l]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            params: params.clone(),
            rns,
            bases,
            galois_perms: Mutex::new(HashMap::new()),
        }))
    }

    /// The RNS context of `Q ∪ P` (what a compute backend for these parameters is built on).
    pub fn rns(&self) -> &RnsContext {
        &self.rns
    }

    /// Context indices of the limbs of `Q_l` (`0..=level`).
    pub fn q_indices(&self, level: usize) -> Vec<usize> {
        (0..=level).collect()
    }

    /// Context indices of the special primes `P`.
    pub fn p_indices(&self) -> Vec<usize> {
        let l = self.params.q().len();
        (l..l + self.params.p().len()).collect()
    }

    /// The parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }
    /// Ring degree.
    pub fn n(&self) -> usize {
        self.params.n()
    }
    /// Data-prime moduli.
    pub fn q_moduli(&self) -> &[Modulus] {
        &self.rns.moduli()[..self.params.q().len()]
    }
    /// Special-prime moduli.
    pub fn p_moduli(&self) -> &[Modulus] {
        &self.rns.moduli()[self.params.q().len()..]
    }
    /// NTT tables of the data primes.
    pub fn q_tables(&self) -> &[NttTable] {
        &self.rns.tables()[..self.params.q().len()]
    }
    /// NTT tables of the special primes.
    pub fn p_tables(&self) -> &[NttTable] {
        &self.rns.tables()[self.params.q().len()..]
    }
    /// Moduli of `Q_l ++ P` (the key-switching basis at level `l`).
    pub fn qp_moduli(&self, level: usize) -> Vec<Modulus> {
        self.q_moduli()[..=level]
            .iter()
            .chain(self.p_moduli())
            .copied()
            .collect()
    }
    /// NTT tables of `Q_l ++ P`.
    pub fn qp_tables(&self, level: usize) -> Vec<&NttTable> {
        self.q_tables()[..=level]
            .iter()
            .chain(self.p_tables())
            .collect()
    }
    /// CRT basis of `Q_l`.
    pub fn basis(&self, level: usize) -> &RnsBasis {
        &self.bases[level]
    }
    /// Slot permutation (NTT form) of the automorphism `X -> X^g`, cached.
    pub fn galois_permutation(&self, g: usize) -> Arc<Vec<u32>> {
        let mut cache = self.galois_perms.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(g)
            .or_insert_with(|| Arc::new(galois_permutation_ntt(g, self.n())))
            .clone()
    }

    /// The integer `round(c * const_scale)` reduced modulo each prime of `level` (a constant
    /// multiplied into or added to ciphertexts without a plaintext polynomial).
    pub(crate) fn const_residues(
        &self,
        c: f64,
        const_scale: f64,
        level: usize,
    ) -> Result<Vec<u32>, CkksError> {
        let v = (c * const_scale).round();
        if !v.is_finite() {
            return Err(CkksError::NonFiniteInput);
        }
        Ok(self.q_moduli()[..=level]
            .iter()
            .map(|m| super::encoder::f64_to_residue(v, m))
            .collect())
    }

    /// Galois element of a left rotation by `step` slots (`5^step mod 2N`; negative steps rotate
    /// right).
    pub fn galois_element(&self, step: i64) -> usize {
        let slots = self.params.slots() as i64;
        let two_n = 2 * self.n() as u64;
        let e = step.rem_euclid(slots) as u64;
        let mut r = 1u64;
        for _ in 0..e {
            r = r * 5 % two_n;
        }
        r as usize
    }
    /// Galois element of complex conjugation (`2N - 1`).
    pub fn conjugation_element(&self) -> usize {
        2 * self.n() - 1
    }
}
