//! EvalMod, the step of bootstrapping that removes the multiple of `q_0`: `x -> sin(2 pi x)`,
//! which is `2 pi (x - round(x))` near integers, by a scaled cosine and double angles.
//!
//! After ModRaise and CoeffsToSlots a slot holds `x = m / q_0 + I` with `I` an integer, `|I| <
//! K`, and `|m / q_0|` small. [`EvalMod`] evaluates `c_0 = cos(2 pi (x - 1/4) / 2^r)` as a
//! Chebyshev interpolant on `[-K, K]` (the angle is `2^r` times smaller, so a low degree fits
//! it), then `r` double angles `c_{j+1} = 2 c_j^2 - 1` give `cos(2 pi (x - 1/4)) = sin(2 pi x)`
//! (Han and Ki, CT-RSA 2020; Bossuat et al., Eurocrypt 2021). The factor `1 / (2 pi)` (and
//! `q_0 / scale`) is left to the linear transformation after it (SlotsToCoeffs), as in
//! Lattigo, so it costs no level. Each double angle multiplies the error of the angle before
//! it by up to 4, so the interpolant is fitted to double precision and the scale should be
//! large (double-prime scaling).

use crate::backend::Backend;

use super::polynomial::{Chebyshev, Ct, PolynomialCost, PolynomialEvaluator};
use super::CircuitError;

/// The EvalMod circuit's shape: the range of the integer part, the interpolant's degree and the
/// number of double angles.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalMod {
    k: f64,
    degree: usize,
    double_angles: usize,
    /// Whether inputs come divided by `k` (the interval map folded into the step before).
    prescaled: bool,
    cosine: Chebyshev,
}

impl EvalMod {
    /// EvalMod for inputs in `[-k, k]` (`k`: one more than the largest integer part), with a
    /// cosine interpolant of `degree` and `double_angles` double angles.
    pub fn new(k: f64, degree: usize, double_angles: usize) -> Result<Self, CircuitError> {
        if !(k.is_finite() && k >= 1.0) {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!("EvalMod's range K = {k} must be a finite number >= 1"),
            });
        }
        if double_angles > 16 {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!("{double_angles} double angles (at most 16)"),
            });
        }
        let r = (1u64 << double_angles) as f64;
        let two_pi = 2.0 * std::f64::consts::PI;
        let cosine = Chebyshev::interpolate(|x| (two_pi * (x - 0.25) / r).cos(), degree, -k, k)?;
        Ok(Self {
            k,
            degree,
            double_angles,
            prescaled: false,
            cosine,
        })
    }

    /// The same circuit for inputs already divided by `K` (in `[-1, 1]`): the interpolant needs
    /// no interval map, which saves a level when the step before folds `1 / K` in (as
    /// bootstrapping's CoeffsToSlots does).
    pub fn prescaled(self) -> Result<Self, CircuitError> {
        let r = (1u64 << self.double_angles) as f64;
        let (k, two_pi) = (self.k, 2.0 * std::f64::consts::PI);
        let cosine = Chebyshev::interpolate(
            |u| (two_pi * (k * u - 0.25) / r).cos(),
            self.degree,
            -1.0,
            1.0,
        )?;
        Ok(Self {
            prescaled: true,
            cosine,
            ..self
        })
    }

    /// The range `K`.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// Whether inputs come divided by `K` ([`Self::prescaled`]).
    pub fn is_prescaled(&self) -> bool {
        self.prescaled
    }

    /// The cosine interpolant evaluated first.
    pub fn cosine(&self) -> &Chebyshev {
        &self.cosine
    }

    /// `sin(2 pi x)` in f64, as the circuit computes it (interpolant, then double angles): the
    /// reference for the encrypted evaluation (`x` undivided, also when [`Self::prescaled`]).
    pub fn eval(&self, x: f64) -> f64 {
        let mut c = self
            .cosine
            .eval(if self.prescaled { x / self.k } else { x });
        for _ in 0..self.double_angles {
            c = 2.0 * c * c - 1.0;
        }
        c
    }

    /// Levels and relinearizations: the interpolant's, plus one of each per double angle.
    pub fn cost(&self) -> PolynomialCost {
        let mut c = self.cosine.cost();
        c.levels += self.double_angles;
        c.relinearizations += self.double_angles;
        c
    }

    /// `sin(2 pi x)` in every slot of `x`, at scale `out_scale`, `cost().levels` levels (of
    /// `pe`'s primes per level) below `x`.
    pub fn evaluate<B: Backend>(
        &self,
        pe: &PolynomialEvaluator<'_, B>,
        x: &Ct<B>,
        out_scale: f64,
    ) -> Result<Ct<B>, CircuitError> {
        let cost = self.cost();
        let k = pe.primes_per_level();
        if cost.levels * k > x.level() {
            return Err(CircuitError::OutOfLevels {
                circuit: format!(
                    "EvalMod (K = {}, degree {}, {} double angles)",
                    self.k, self.degree, self.double_angles
                ),
                needed: cost.levels * k,
                level: x.level(),
            });
        }
        // Scales backwards from the output: s_j^2 / Q_j = s_{j+1}, Q_j the modulus of the
        // rescale after double angle j, so the last lands exactly on `out_scale`.
        let first = x.level() - (cost.levels - self.double_angles) * k;
        let mut scale = out_scale;
        for j in (0..self.double_angles).rev() {
            scale = (scale * pe.level_modulus(first - j * k)).sqrt();
        }
        let ev = pe.evaluator();
        let mut c = pe.evaluate(x, &self.cosine, scale)?;
        for _ in 0..self.double_angles {
            let sq = ev.mul(&c, &c)?;
            let r = pe.relin_rescale(&ev.add(&sq, &sq)?)?;
            c = ev.add_const(&r, -1.0)?;
        }
        Ok(c)
    }
}
