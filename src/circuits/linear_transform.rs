//! Homomorphic linear transformations of the slots, `y = M x` for a complex matrix given by its
//! diagonals, by baby-step giant-step with hoisted baby rotations: the building block of
//! bootstrapping's CoeffsToSlots and SlotsToCoeffs (factored DFT matrices, a few diagonals each).
//!
//! With `diag_k[j] = M[j][(j + k) mod n]` (`n` slots; rotations are to the left,
//! `rot_r(v)[j] = v[(j + r) mod n]`), `M x = sum_k diag_k * rot_k(x)`. Writing `k = g n1 + b`,
//!
//! `M x = sum_g rot_{g n1}( sum_b rot_{-g n1}(diag_{g n1 + b}) * rot_b(x) )`,
//!
//! so the baby rotations `rot_b(x)` share one key-switching decomposition (hoisting), each giant
//! step is one plaintext-batch product and sum over them (one launch each), and there is one
//! rotation per giant step. The diagonals are encoded pre-rotated once
//! ([`LinearTransform::encode`]) at the scale of the level's primes, so the rescale after the sum
//! gives back the input's scale; a transformation costs one level.

use std::collections::{BTreeMap, BTreeSet};

use num_complex::Complex64;

use crate::backend::Backend;
use crate::ckks::{DeviceEvaluator, DeviceKeys, DevicePlainBatch, Encoder};

use super::polynomial::Ct;
use super::CircuitError;

/// `y = M x` on `n` slots, `M` given by its non-zero diagonals.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTransform {
    slots: usize,
    diagonals: BTreeMap<usize, Vec<Complex64>>,
    n1: usize,
}

impl LinearTransform {
    /// A transformation of `slots` slots (a power of two) from its diagonals
    /// (`diag_k[j] = M[j][(j + k) mod slots]`, each of `slots` values, `k < slots`).
    pub fn from_diagonals(
        slots: usize,
        diagonals: BTreeMap<usize, Vec<Complex64>>,
    ) -> Result<Self, CircuitError> {
        let bad = |reason: String| CircuitError::InvalidPolynomial { reason };
        if !slots.is_power_of_two() {
            return Err(bad(format!("{slots} slots is not a power of two")));
        }
        if diagonals.is_empty() {
            return Err(bad(
                "a linear transformation needs at least one diagonal".into()
            ));
        }
        for (&k, d) in &diagonals {
            if k >= slots || d.len() != slots {
                return Err(bad(format!(
                    "diagonal {k} has {} values; want index < {slots} and {slots} values",
                    d.len()
                )));
            }
            if d.iter().any(|v| !(v.re.is_finite() && v.im.is_finite())) {
                return Err(bad(format!("diagonal {k} holds a non-finite value")));
            }
        }
        // The baby-step size with the fewest rotations (baby + giant steps).
        let n1 = (0..=slots.trailing_zeros())
            .map(|e| 1usize << e)
            .min_by_key(|&n1| {
                let babies: BTreeSet<usize> = diagonals.keys().map(|k| k % n1).collect();
                let giants: BTreeSet<usize> = diagonals.keys().map(|k| k / n1).collect();
                (babies.len() + giants.len(), n1)
            })
            .expect("at least one baby-step size");
        Ok(Self {
            slots,
            diagonals,
            n1,
        })
    }

    /// A transformation from a dense `slots x slots` matrix (row-major; zero diagonals skipped).
    pub fn from_matrix(m: &[Vec<Complex64>]) -> Result<Self, CircuitError> {
        let n = m.len();
        if m.iter().any(|row| row.len() != n) {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!("the matrix is not square ({n} rows)"),
            });
        }
        let diagonals = (0..n)
            .map(|k| (k, (0..n).map(|j| m[j][(j + k) % n]).collect::<Vec<_>>()))
            .filter(|(_, d)| d.iter().any(|v| *v != Complex64::new(0.0, 0.0)))
            .collect();
        Self::from_diagonals(n, diagonals)
    }

    /// The same transformation on `slots` slots whose values repeat with this one's period
    /// (sparse packing: `slots / self.slots()` copies side by side): every diagonal repeated,
    /// the rotations unchanged.
    pub fn tiled(&self, slots: usize) -> Result<Self, CircuitError> {
        if slots < self.slots || !slots.is_multiple_of(self.slots) {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!("{} slots do not tile {slots} slots", self.slots),
            });
        }
        let diagonals = self
            .diagonals
            .iter()
            .map(|(&k, d)| (k, d.iter().cycle().take(slots).copied().collect()))
            .collect();
        Self::from_diagonals(slots, diagonals)
    }

    /// The diagonals (`k -> diag_k`).
    pub fn diagonals(&self) -> &BTreeMap<usize, Vec<Complex64>> {
        &self.diagonals
    }

    /// The slot count.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The baby-step size `n1`.
    pub fn baby_step(&self) -> usize {
        self.n1
    }

    fn babies(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.diagonals.keys().map(|k| k % self.n1).collect();
        set.into_iter().collect()
    }

    /// Diagonals by giant step: `g -> [(b, diag_{g n1 + b})]`.
    fn giants(&self) -> BTreeMap<usize, Vec<(usize, &Vec<Complex64>)>> {
        let mut g: BTreeMap<usize, Vec<(usize, &Vec<Complex64>)>> = BTreeMap::new();
        for (k, d) in &self.diagonals {
            g.entry(k / self.n1).or_default().push((k % self.n1, d));
        }
        g
    }

    /// The rotations (left, in slots) the evaluation keys need: the baby and giant steps.
    pub fn rotations(&self) -> Vec<i64> {
        let mut r: BTreeSet<i64> = self.babies().into_iter().map(|b| b as i64).collect();
        r.extend(self.giants().keys().map(|&g| (g * self.n1) as i64));
        r.remove(&0);
        r.into_iter().collect()
    }

    /// `M x` in f64, the reference for the encrypted evaluation.
    pub fn apply_plain(&self, x: &[Complex64]) -> Vec<Complex64> {
        let n = self.slots;
        (0..n)
            .map(|j| {
                self.diagonals
                    .iter()
                    .map(|(k, d)| d[j] * x[(j + k) % n])
                    .sum()
            })
            .collect()
    }

    /// Encodes the pre-rotated diagonals for inputs at `level`, at the scale of the product of
    /// the last `primes` primes of that level (so a rescale by them restores the input's scale),
    /// and uploads them.
    pub fn encode<B: Backend>(
        &self,
        ev: &DeviceEvaluator<B>,
        level: usize,
        primes: usize,
    ) -> Result<EncodedTransform<B::Tensor>, CircuitError> {
        let ctx = ev.context();
        let params = ctx.params();
        if self.slots != params.slots() {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!(
                    "the transformation has {} slots, the parameters {}",
                    self.slots,
                    params.slots()
                ),
            });
        }
        if primes == 0 || primes > level {
            return Err(CircuitError::OutOfLevels {
                circuit: "a linear transformation".into(),
                needed: primes.max(1),
                level,
            });
        }
        let scale: f64 = params.q()[level + 1 - primes..=level]
            .iter()
            .map(|&q| q as f64)
            .product();
        let enc = Encoder::new(ctx.clone());
        let n = self.slots;
        let babies = self.babies();
        let giants = self
            .giants()
            .into_iter()
            .map(|(g, diags)| {
                let shift = g * self.n1;
                let mut used = Vec::with_capacity(diags.len());
                let mut pts = Vec::with_capacity(diags.len());
                for (b, d) in diags {
                    // rot_{-g n1}(d)[j] = d[(j - g n1) mod n].
                    let rotated: Vec<Complex64> =
                        (0..n).map(|j| d[(j + n - shift % n) % n]).collect();
                    pts.push(enc.encode_complex(&rotated, level, scale)?);
                    used.push(babies.binary_search(&b).expect("baby step listed"));
                }
                Ok((shift as i64, used, ev.upload_plain_batch(&pts)?))
            })
            .collect::<Result<Vec<_>, CircuitError>>()?;
        Ok(EncodedTransform {
            level,
            primes,
            babies: babies.into_iter().map(|b| b as i64).collect(),
            giants,
        })
    }
}

/// A [`LinearTransform`]'s diagonals resident on a backend, for inputs at one level.
pub struct EncodedTransform<T> {
    level: usize,
    primes: usize,
    babies: Vec<i64>,
    /// Per giant step: its rotation, the positions in `babies` of the baby steps it uses, and
    /// their pre-rotated diagonals.
    giants: Vec<(i64, Vec<usize>, DevicePlainBatch<T>)>,
}

impl<T> EncodedTransform<T> {
    /// `M x` for every ciphertext of `x` (at the level it was encoded for; one after the other),
    /// rescaled: one level (of the encoding's primes) below `x`, at `x`'s scale.
    pub fn apply<B: Backend<Tensor = T>>(
        &self,
        ev: &DeviceEvaluator<B>,
        keys: &DeviceKeys<T>,
        x: &Ct<B>,
    ) -> Result<Ct<B>, CircuitError> {
        if x.level() != self.level {
            return Err(CircuitError::OutOfLevels {
                circuit: format!("a linear transformation encoded for level {}", self.level),
                needed: self.level,
                level: x.level(),
            });
        }
        if x.count() > 1 {
            let each = (0..x.count())
                .map(|i| self.apply(ev, keys, &ev.slice(x, i..i + 1)?))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(ev.concat(&each)?);
        }
        let rotated = ev.rotate_hoisted(x, &self.babies, keys)?;
        let parts = self
            .giants
            .iter()
            .map(|(step, used, pts)| {
                let babies: Vec<&Ct<B>> = used.iter().map(|&i| &rotated[i]).collect();
                Ok((*step, ev.mul_plain_sum(&babies, pts)?))
            })
            .collect::<Result<Vec<_>, CircuitError>>()?;
        let parts: Vec<(i64, &Ct<B>)> = parts.iter().map(|(s, c)| (*s, c)).collect();
        // The giant steps' key switchings summed before one division by P and the primes.
        Ok(ev.rotate_sum_rescale(&parts, keys, self.primes)?)
    }
}
