//! Polynomials in the Chebyshev basis, evaluated on encrypted batches by baby-step giant-step
//! with every level and scale planned top-down, so no addition ever meets two scales.
//!
//! The evaluator is the one EvalMod (bootstrapping) and high-degree activations use. Its
//! structure follows Lattigo's `he/hefloat` polynomial evaluator:
//!
//! 1. the input is mapped from `[lo, hi]` to `[-1, 1]` (one level, skipped on `[-1, 1]`);
//! 2. the Chebyshev power basis `T_1 .. T_{b-1}` (baby steps) and `T_b, T_2b, T_4b, ..` (giant
//!    steps) is computed with `T_2n = 2 T_n^2 - 1` and `T_{m+n} = 2 T_m T_n - T_{m-n}`, one
//!    relinearization each, `T_i` at `ceil(log2 i)` levels below the input;
//! 3. the polynomial is split recursively at the largest giant step `g <= degree`,
//!    `p = q T_g + r`, down to baby polynomials, which are sums of `c_i T_i`.
//!
//! **Scales.** With primes that are not the scale (26-30-bit primes, any scale), products and
//! rescales leave every `T_i` at its own scale. Each baby polynomial multiplies `T_i` by the
//! integer `round(c_i * k_i)` with `k_i = target * q / scale(T_i)`, so its terms all land on the
//! one scale `target * q` and the rescale that follows gives exactly `target`; each giant step asks
//! its quotient for the scale `target * q / scale(T_g)`, so the product lands on `target` too.
//! The difference `T_{m-n}` is brought to the scale of the product `T_m T_n` the same way before
//! the rescale, so it costs no level. The only approximation is the rounding of those integers
//! (relative `2^-(log2 k + 1)`), far below the noise.
//!
//! **Levels.** The result is at `level(x) - depth` ([`Chebyshev::cost`]). Among the
//! baby-step sizes `b = 2, 4, ..`, the evaluator takes the one with the fewest levels, then the
//! fewest relinearizations: degree `2^k - 1` costs `k` levels (plus one for the interval map).

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::ckks::{DeviceCiphertext, DeviceEvaluator, DeviceKeys};

use super::CircuitError;

/// `p(x) = sum_k c_k T_k(u)` with `u = (2x - lo - hi) / (hi - lo)`: a polynomial on `[lo, hi]`
/// in the Chebyshev basis (stable at high degree, where the monomial basis is not).
#[derive(Clone, Debug, PartialEq)]
pub struct Chebyshev {
    coeffs: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Chebyshev {
    /// A polynomial from its Chebyshev coefficients (degree 0 first) on `[lo, hi]`; trailing
    /// zero coefficients are dropped.
    pub fn new(mut coeffs: Vec<f64>, lo: f64, hi: f64) -> Result<Self, CircuitError> {
        let bad = |reason: String| CircuitError::InvalidPolynomial { reason };
        if coeffs.is_empty() {
            return Err(bad("no coefficients".into()));
        }
        if let Some(i) = coeffs.iter().position(|c| !c.is_finite()) {
            return Err(bad(format!("coefficient {i} is {}", coeffs[i])));
        }
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad(format!(
                "the interval [{lo}, {hi}] is empty or not finite"
            )));
        }
        while coeffs.len() > 1 && coeffs[coeffs.len() - 1] == 0.0 {
            coeffs.pop();
        }
        Ok(Self { coeffs, lo, hi })
    }

    /// Interpolates `f` at the `degree + 1` Chebyshev nodes of the first kind on `[lo, hi]`
    /// (close to the minimax polynomial for smooth `f`).
    pub fn interpolate(
        f: impl Fn(f64) -> f64,
        degree: usize,
        lo: f64,
        hi: f64,
    ) -> Result<Self, CircuitError> {
        let n = degree + 1;
        let angles: Vec<f64> = (0..n)
            .map(|j| std::f64::consts::PI * (j as f64 + 0.5) / n as f64)
            .collect();
        let values: Vec<f64> = angles
            .iter()
            .map(|a| f(0.5 * (hi - lo) * a.cos() + 0.5 * (hi + lo)))
            .collect();
        let coeffs = (0..n)
            .map(|k| {
                let s: f64 = angles
                    .iter()
                    .zip(&values)
                    .map(|(a, v)| v * (k as f64 * a).cos())
                    .sum();
                s * if k == 0 { 1.0 } else { 2.0 } / n as f64
            })
            .collect();
        Self::new(coeffs, lo, hi)
    }

    /// The Chebyshev coefficients, degree 0 first.
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// The interval `[lo, hi]`.
    pub fn interval(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len() - 1
    }

    fn is_unit(&self) -> bool {
        self.lo == -1.0 && self.hi == 1.0
    }

    /// Levels (rescales, each of [`PolynomialEvaluator::with_primes_per_level`] primes) and
    /// relinearizations [`PolynomialEvaluator::evaluate`] spends on it, with the baby-step size
    /// it picks.
    pub fn cost(&self) -> PolynomialCost {
        best_cost(self)
    }

    /// `p(x)` in f64 (Clenshaw's recurrence), the reference for the encrypted evaluation.
    pub fn eval(&self, x: f64) -> f64 {
        let u = (2.0 * x - self.lo - self.hi) / (self.hi - self.lo);
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs[1..].iter().rev() {
            let b0 = c + 2.0 * u * b1 - b2;
            b2 = b1;
            b1 = b0;
        }
        self.coeffs[0] + u * b1 - b2
    }
}

/// What evaluating one polynomial costs, per ciphertext of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolynomialCost {
    /// Levels consumed (the interval map included).
    pub levels: usize,
    /// Ciphertext-ciphertext products, each with one relinearization (key switch).
    pub relinearizations: usize,
    /// Baby-step size `b`: `T_1 .. T_{b-1}` are computed, then giant steps `T_b, T_2b, ..`.
    pub baby_steps: usize,
}

/// `ceil(log2 i)` for `i >= 1`: the levels `T_i` lies below `T_1`.
fn ceil_log2(i: usize) -> usize {
    (usize::BITS - (i.max(1) - 1).leading_zeros()) as usize
}

/// `p = q T_g + r` in the Chebyshev basis, for `g <= degree(p) < 2g`
/// (`T_g T_j = (T_{g+j} + T_{g-j}) / 2`).
fn split(coeffs: &[f64], g: usize) -> (Vec<f64>, Vec<f64>) {
    let d = coeffs.len() - 1;
    debug_assert!(g <= d && d < 2 * g);
    let mut q = vec![0.0; d - g + 1];
    let mut r = coeffs[..g].to_vec();
    q[0] = coeffs[g];
    for i in g + 1..=d {
        q[i - g] = 2.0 * coeffs[i];
        r[2 * g - i] -= coeffs[i];
    }
    for v in [&mut q, &mut r] {
        while v.len() > 1 && v[v.len() - 1] == 0.0 {
            v.pop();
        }
    }
    (q, r)
}

/// The giant step a polynomial of degree `deg` is split at, or `None` for a baby polynomial.
fn giant(deg: usize, baby: usize) -> Option<usize> {
    (deg >= baby).then(|| 1 << (usize::BITS - 1 - deg.leading_zeros()))
}

/// Levels below `T_1` that the split of `coeffs` needs, and its giant-step products.
fn need(coeffs: &[f64], baby: usize) -> (usize, usize) {
    let deg = coeffs.len() - 1;
    match giant(deg, baby) {
        None => (ceil_log2(deg) + 1, 0),
        Some(g) => {
            let (q, r) = split(coeffs, g);
            let (lq, mq) = need(&q, baby);
            let (lr, mr) = need(&r, baby);
            (lr.max(lq + 1).max(ceil_log2(g) + 1), mq + mr + 1)
        }
    }
}

/// The baby-step size with the fewest levels, then the fewest relinearizations, and its cost.
fn best_cost(p: &Chebyshev) -> PolynomialCost {
    let deg = p.degree();
    let map = usize::from(!p.is_unit());
    (1..=ceil_log2(deg + 1).max(1))
        .map(|ls| {
            let baby = 1usize << ls;
            let (levels, products) = need(&p.coeffs, baby);
            // T_2 .. T_{b-1}, then the giant steps T_b, T_2b, .. up to the degree.
            let mut basis = baby.min(deg + 1).saturating_sub(2);
            let mut g = baby;
            while g <= deg {
                basis += 1;
                g *= 2;
            }
            PolynomialCost {
                levels: levels + map,
                relinearizations: basis + products,
                baby_steps: baby,
            }
        })
        .min_by_key(|c| (c.levels, c.relinearizations))
        .expect("at least one baby-step size")
}

/// Evaluates [`Chebyshev`] polynomials on batches of ciphertexts (every slot of every
/// ciphertext), on any backend, with the evaluation keys' relinearization key.
pub struct PolynomialEvaluator<'a, B: Backend> {
    ev: &'a DeviceEvaluator<B>,
    keys: &'a DeviceKeys<B::Tensor>,
    /// Primes divided out per level of the circuit (1, or 2 for double-prime scaling).
    primes: usize,
}

pub(super) type Ct<B> = DeviceCiphertext<<B as Backend>::Tensor>;

impl<'a, B: Backend> PolynomialEvaluator<'a, B> {
    /// An evaluator over `ev` with `keys` (only the relinearization key is used).
    pub fn new(ev: &'a DeviceEvaluator<B>, keys: &'a DeviceKeys<B::Tensor>) -> Self {
        Self {
            ev,
            keys,
            primes: 1,
        }
    }

    /// Every level of the circuit divides by `primes` primes at once (double-prime scaling with
    /// 2: the scale can then be about the product of two primes, 2^52 with 26-bit primes, and
    /// the ciphertext loses `primes` limbs per level).
    pub fn with_primes_per_level(mut self, primes: usize) -> Result<Self, CircuitError> {
        if primes == 0 {
            return Err(CircuitError::InvalidPolynomial {
                reason: "a level must divide by at least one prime".into(),
            });
        }
        self.primes = primes;
        Ok(self)
    }

    /// The evaluator underneath.
    pub fn evaluator(&self) -> &'a DeviceEvaluator<B> {
        self.ev
    }

    /// Primes divided out per level.
    pub fn primes_per_level(&self) -> usize {
        self.primes
    }

    /// The product of the primes a rescale from `level` divides by.
    pub(super) fn level_modulus(&self, level: usize) -> f64 {
        let q = self.ev.context().params().q();
        q[level + 1 - self.primes..=level]
            .iter()
            .map(|&p| p as f64)
            .product()
    }

    /// Relinearizes a product and divides it by one level's primes.
    pub(super) fn relin_rescale(&self, a: &Ct<B>) -> Result<Ct<B>, CircuitError> {
        Ok(if self.primes == 1 {
            self.ev.relin_rescale(a, self.keys)?
        } else {
            let r = self.ev.relinearize(a, self.keys)?;
            self.ev.rescale_by(&r, self.primes)?
        })
    }

    /// `p(x)` in every slot of every ciphertext of `x` (2-component ciphertexts whose slots lie in
    /// `p`'s interval), at scale `out_scale` and level `x.level() - p.cost().levels * primes`
    /// (`primes` per level, 1 unless [`Self::with_primes_per_level`]). Values outside
    /// the interval are evaluated too, but Chebyshev polynomials grow fast there.
    pub fn evaluate(
        &self,
        x: &Ct<B>,
        p: &Chebyshev,
        out_scale: f64,
    ) -> Result<Ct<B>, CircuitError> {
        let cost = best_cost(p);
        let limbs = cost.levels * self.primes;
        if limbs > x.level() {
            return Err(CircuitError::OutOfLevels {
                circuit: format!("a degree-{} polynomial", p.degree()),
                needed: limbs,
                level: x.level(),
            });
        }
        if !(out_scale.is_finite() && out_scale >= 1.0) {
            return Err(CircuitError::InvalidPolynomial {
                reason: format!("output scale {out_scale} is not a finite number >= 1"),
            });
        }
        let ev = self.ev;
        let u = if p.is_unit() {
            ev.drop_levels(x, 0)?
        } else {
            let (lo, hi) = (p.lo, p.hi);
            let q = self.level_modulus(x.level());
            let scaled = ev.mul_const(x, 2.0 / (hi - lo), Some(q))?;
            let shifted = ev.add_const(&scaled, -(hi + lo) / (hi - lo))?;
            ev.rescale_by(&shifted, self.primes)?
        };
        let target = x.level() - limbs;
        let basis = self.power_basis(u, p.degree(), cost.baby_steps)?;
        self.eval_split(&p.coeffs, cost.baby_steps, &basis, target, out_scale)
    }

    /// `a` dropped to `level`.
    fn at(&self, a: &Ct<B>, level: usize) -> Result<Ct<B>, CircuitError> {
        let drop = a
            .level()
            .checked_sub(level)
            .ok_or(CircuitError::OutOfLevels {
                circuit: "a power of the Chebyshev basis".into(),
                needed: level,
                level: a.level(),
            })?;
        Ok(self.ev.drop_levels(a, drop)?)
    }

    /// `T_1 .. T_{baby-1}` and the giant steps `T_baby, T_2baby, ..` up to `degree`.
    fn power_basis(
        &self,
        u: Ct<B>,
        degree: usize,
        baby: usize,
    ) -> Result<BTreeMap<usize, Ct<B>>, CircuitError> {
        let ev = self.ev;
        let mut wanted: Vec<usize> = (2..baby.min(degree + 1)).collect();
        let mut g = baby;
        while g <= degree {
            wanted.push(g);
            g *= 2;
        }
        let mut basis = BTreeMap::new();
        basis.insert(1, u);
        for i in wanted {
            let t = if i.is_power_of_two() {
                // T_2n = 2 T_n^2 - 1.
                let tn = &basis[&(i / 2)];
                let sq = ev.mul(tn, tn)?;
                let r = self.relin_rescale(&ev.add(&sq, &sq)?)?;
                ev.add_const(&r, -1.0)?
            } else {
                // T_{a+b} = 2 T_a T_b - T_{a-b}, a the power of two below i.
                let a = 1 << (usize::BITS - 1 - i.leading_zeros());
                let (ta, tb, td) = (&basis[&a], &basis[&(i - a)], &basis[&(2 * a - i)]);
                let level = ta.level().min(tb.level());
                let prod = ev.mul(&self.at(ta, level)?, &self.at(tb, level)?)?;
                let td = self.at(td, level)?;
                let minus_td = ev.mul_const(&td, -1.0, Some(prod.scale() / td.scale()))?;
                let sum = ev.add(&ev.add(&prod, &prod)?, &minus_td)?;
                self.relin_rescale(&sum)?
            };
            basis.insert(i, t);
        }
        Ok(basis)
    }

    /// `coeffs` on the power basis, at `level` and scale `scale`.
    fn eval_split(
        &self,
        coeffs: &[f64],
        baby: usize,
        basis: &BTreeMap<usize, Ct<B>>,
        level: usize,
        scale: f64,
    ) -> Result<Ct<B>, CircuitError> {
        let ev = self.ev;
        let k = self.primes;
        let q = self.level_modulus(level + k);
        let deg = coeffs.len() - 1;
        match giant(deg, baby) {
            None => {
                // sum_i round(c_i * scale * q / scale(T_i)) T_i: every term at scale * q.
                let mut acc: Option<Ct<B>> = None;
                for (i, &c) in coeffs.iter().enumerate().skip(1) {
                    if c == 0.0 {
                        continue;
                    }
                    let t = self.at(&basis[&i], level + k)?;
                    let term = ev.mul_const(&t, c, Some(scale * q / t.scale()))?;
                    acc = Some(match acc {
                        None => term,
                        Some(a) => ev.add(&a, &term)?,
                    });
                }
                let acc = match acc {
                    Some(a) => a,
                    None => {
                        let t = self.at(&basis[&1], level + k)?;
                        ev.mul_const(&t, 0.0, Some(scale * q / t.scale()))?
                    }
                };
                let acc = if coeffs[0] != 0.0 {
                    ev.add_const(&acc, coeffs[0])?
                } else {
                    acc
                };
                Ok(ev.rescale_by(&acc, k)?)
            }
            Some(g) => {
                let (qc, rc) = split(coeffs, g);
                let tg = self.at(&basis[&g], level + k)?;
                let quotient =
                    self.eval_split(&qc, baby, basis, level + k, scale * q / tg.scale())?;
                let prod = self.relin_rescale(&ev.mul(&quotient, &tg)?)?;
                let rest = self.eval_split(&rc, baby, basis, level, scale)?;
                Ok(ev.add(&prod, &rest)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_reproduces_a_polynomial_and_clenshaw_evaluates_it() {
        let f = |x: f64| 0.5 - 1.5 * x + 0.25 * x * x * x;
        let p = Chebyshev::interpolate(f, 3, -2.0, 3.0).unwrap();
        for i in 0..=50 {
            let x = -2.0 + 5.0 * i as f64 / 50.0;
            assert!((p.eval(x) - f(x)).abs() < 1e-12, "{x}");
        }
        // T_3(u) = 4u^3 - 3u on [-1, 1].
        let t3 = Chebyshev::new(vec![0.0, 0.0, 0.0, 1.0], -1.0, 1.0).unwrap();
        assert!((t3.eval(0.3) - (4.0 * 0.027 - 0.9)).abs() < 1e-15);
    }

    #[test]
    fn the_split_is_exact() {
        let coeffs: Vec<f64> = (0..14).map(|i| ((i * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let p = Chebyshev::new(coeffs.clone(), -1.0, 1.0).unwrap();
        let (q, r) = split(&coeffs, 8);
        let (q, r, tg) = (
            Chebyshev::new(q, -1.0, 1.0).unwrap(),
            Chebyshev::new(r, -1.0, 1.0).unwrap(),
            Chebyshev::new([vec![0.0; 8], vec![1.0]].concat(), -1.0, 1.0).unwrap(),
        );
        for i in 0..=20 {
            let u = -1.0 + i as f64 / 10.0;
            let want = p.eval(u);
            assert!((q.eval(u) * tg.eval(u) + r.eval(u) - want).abs() < 1e-12);
        }
    }

    #[test]
    fn degree_two_to_the_k_minus_one_costs_k_levels() {
        for k in 1..=7usize {
            let d = (1 << k) - 1;
            let p = Chebyshev::new(vec![0.5; d + 1], -1.0, 1.0).unwrap();
            let c = best_cost(&p);
            assert_eq!(c.levels, k, "degree {d}: {c:?}");
            // One more level on another interval.
            let q = Chebyshev::new(vec![0.5; d + 1], -3.0, 1.0).unwrap();
            assert_eq!(best_cost(&q).levels, k + 1);
        }
        assert!(Chebyshev::new(vec![], -1.0, 1.0).is_err());
        assert!(Chebyshev::new(vec![1.0, f64::NAN], -1.0, 1.0).is_err());
        assert!(Chebyshev::new(vec![1.0], 1.0, 1.0).is_err());
    }
}
