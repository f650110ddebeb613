//! Precomputed tables for a parameter set: NTT tables, rescale / mod-down / mod-up constants,
//! CRT bases for decoding, Galois permutations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cryptodl_kernels::automorphism::galois_permutation_ntt;
use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::rescale::DivideRound;
use cryptodl_kernels::rns::{BaseConverter, RnsBasis};

use super::{CkksError, Parameters};

/// Mod-up constants for one key-switching digit at one level.
#[derive(Debug)]
pub(crate) struct DigitModUp {
    /// Limb indices (into the active list `Q_l ++ P`) that form the digit.
    pub source: Vec<usize>,
    /// Active limb indices the digit is extended to.
    pub target: Vec<usize>,
    pub conv: BaseConverter,
}

/// Per-level key-switching constants.
#[derive(Debug)]
pub(crate) struct LevelKeySwitch {
    pub digits: Vec<DigitModUp>,
    /// Divide by `P` and round, keeping `Q_l`.
    pub mod_down: DivideRound,
}

/// Everything derived from [`Parameters`] once, shared by keys, encryptor and evaluator.
#[derive(Debug)]
pub struct Context {
    params: Parameters,
    q_moduli: Vec<Modulus>,
    p_moduli: Vec<Modulus>,
    q_tables: Vec<NttTable>,
    p_tables: Vec<NttTable>,
    /// `rescale[l]` divides level `l` by `q_l` (index 0 unused).
    rescale: Vec<Option<DivideRound>>,
    keyswitch: Vec<LevelKeySwitch>,
    /// CRT basis of `Q_l` for each level.
    bases: Vec<RnsBasis>,
    galois_perms: Mutex<HashMap<usize, Arc<Vec<u32>>>>,
}

impl Context {
    /// Precomputes all tables for `params`.
    pub fn new(params: &Parameters) -> Result<Arc<Self>, CkksError> {
        let n = params.n();
        let q = params.q();
        let p = params.p();
        let q_tables = q
            .iter()
            .map(|&x| NttTable::new(x, n))
            .collect::<Result<Vec<_>, _>>()?;
        let p_tables = p
            .iter()
            .map(|&x| NttTable::new(x, n))
            .collect::<Result<Vec<_>, _>>()?;
        let q_moduli: Vec<Modulus> = q_tables.iter().map(|t| *t.modulus()).collect();
        let p_moduli: Vec<Modulus> = p_tables.iter().map(|t| *t.modulus()).collect();
        let mut rescale = vec![None];
        for l in 1..q.len() {
            rescale.push(Some(DivideRound::new(&q[l..=l], &q[..l])?));
        }
        let alpha = params.digit_size();
        let mut keyswitch = Vec::with_capacity(q.len());
        let mut bases = Vec::with_capacity(q.len());
        for l in 0..q.len() {
            let active = l + 1 + p.len();
            let active_moduli: Vec<Modulus> =
                q_moduli[..=l].iter().chain(&p_moduli).copied().collect();
            let mut digits = Vec::new();
            for start in (0..=l).step_by(alpha) {
                let source: Vec<usize> = (start..(start + alpha).min(l + 1)).collect();
                let target: Vec<usize> = (0..active).filter(|i| !source.contains(i)).collect();
                let from = RnsBasis::new(&source.iter().map(|&i| q[i]).collect::<Vec<_>>())?;
                let to: Vec<Modulus> = target.iter().map(|&i| active_moduli[i]).collect();
                digits.push(DigitModUp {
                    conv: BaseConverter::new(&from, &to),
                    source,
                    target,
                });
            }
            keyswitch.push(LevelKeySwitch {
                digits,
                mod_down: DivideRound::new(p, &q[..=l])?,
            });
            bases.push(RnsBasis::new(&q[..=l])?);
        }
        Ok(Arc::new(Self {
            params: params.clone(),
            q_moduli,
            p_moduli,
            q_tables,
            p_tables,
            rescale,
            keyswitch,
            bases,
            galois_perms: Mutex::new(HashMap::new()),
        }))
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
        &self.q_moduli
    }
    /// Special-prime moduli.
    pub fn p_moduli(&self) -> &[Modulus] {
        &self.p_moduli
    }
    /// NTT tables of the data primes.
    pub fn q_tables(&self) -> &[NttTable] {
        &self.q_tables
    }
    /// NTT tables of the special primes.
    pub fn p_tables(&self) -> &[NttTable] {
        &self.p_tables
    }
    /// Moduli of `Q_l ++ P` (the key-switching basis at level `l`).
    pub fn qp_moduli(&self, level: usize) -> Vec<Modulus> {
        self.q_moduli[..=level]
            .iter()
            .chain(&self.p_moduli)
            .copied()
            .collect()
    }
    /// NTT tables of `Q_l ++ P`.
    pub fn qp_tables(&self, level: usize) -> Vec<&NttTable> {
        self.q_tables[..=level]
            .iter()
            .chain(&self.p_tables)
            .collect()
    }
    pub(crate) fn rescale_table(&self, level: usize) -> &DivideRound {
        self.rescale[level].as_ref().expect("level >= 1")
    }
    pub(crate) fn keyswitch_tables(&self, level: usize) -> &LevelKeySwitch {
        &self.keyswitch[level]
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
