//! Polynomial fitting of activations on [-a, a]: Legendre least squares, Chebyshev interpolation,
//! minimax (Remez exchange) and CryptoDL's derivative-then-integrate route, plus error measures.

use super::activation::{ActFn, Polynomial};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Fitting method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FitMethod {
    /// Continuous least squares on [-a, a] (orthogonal projection on Legendre polynomials).
    Legendre,
    /// Interpolation at the degree+1 Chebyshev nodes of the first kind.
    Chebyshev,
    /// Best uniform approximation, found by the Remez exchange algorithm.
    Minimax,
    /// CryptoDL: least-squares fit of the derivative (for ReLU the step function) with degree - 1,
    /// integrated; the constant of integration minimises the squared error on [-a, a].
    Derivative,
}

impl FitMethod {
    /// Every method, in display order.
    pub const ALL: [FitMethod; 4] = [
        FitMethod::Legendre,
        FitMethod::Chebyshev,
        FitMethod::Minimax,
        FitMethod::Derivative,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            FitMethod::Legendre => "legendre",
            FitMethod::Chebyshev => "chebyshev",
            FitMethod::Minimax => "minimax",
            FitMethod::Derivative => "derivative",
        }
    }
}

impl fmt::Display for FitMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FitMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FitMethod::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("unknown fit method `{s}` (expected legendre, chebyshev, minimax or derivative)")
        })
    }
}

/// Why a fit was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FitError {
    /// Degree outside the supported range.
    #[error(
        "degree {degree} is not supported: use a degree from 1 to 12 (2 to 8 is the useful range)"
    )]
    Degree {
        /// The requested degree.
        degree: usize,
    },
    /// Interval half-width outside [`MIN_INTERVAL`, `MAX_INTERVAL`].
    #[error(
        "interval half-width {a:e} must lie in [{MIN_INTERVAL}, {MAX_INTERVAL}] (the fit is on \
         [-a, a]; activation inputs of a trained network lie within a few units)"
    )]
    Interval {
        /// The requested half-width.
        a: f64,
    },
    /// A Gaussian width that is not a positive number.
    #[error("sigma {sigma} must be a positive finite number (the inputs' standard deviation)")]
    Sigma {
        /// The requested width.
        sigma: f64,
    },
}

/// The narrowest fitting interval accepted: its coefficients grow like `a^-k`.
pub const MIN_INTERVAL: f64 = 1e-3;
/// The widest fitting interval accepted.
pub const MAX_INTERVAL: f64 = 1e3;

/// Errors of an approximation `p` of `f`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitErrors {
    /// max |f - p| on [-a, a] (dense grid of 20,001 points).
    pub max_abs_error: f64,
    /// mean |f - p| over [-a, a] (uniform input).
    pub mean_abs_error: f64,
    /// E|f(X) - p(X)| for X ~ N(0, sigma^2) over the whole line (polynomial grows outside [-a, a]).
    pub gaussian_mean_abs_error: f64,
}

/// One fitted polynomial with its errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Approximated function.
    #[serde(rename = "fn")]
    pub func: ActFn,
    /// Degree asked for.
    pub degree: usize,
    /// Half-width a of [-a, a].
    pub interval: f64,
    /// Method.
    pub method: FitMethod,
    /// The polynomial (monomial coefficients in x, degree 0 first).
    pub coefficients: Vec<f64>,
    /// max |f - p| on [-a, a].
    pub max_abs_error: f64,
    /// mean |f - p| on [-a, a].
    pub mean_abs_error: f64,
    /// E|f - p| under N(0, sigma^2).
    pub gaussian_mean_abs_error: f64,
    /// The sigma used for `gaussian_mean_abs_error`.
    pub gaussian_sigma: f64,
}

impl Fit {
    /// The polynomial.
    pub fn polynomial(&self) -> Polynomial {
        Polynomial::new(self.coefficients.clone())
    }
}

/// Fits `func` by `method` with a polynomial of `degree` on [-a, a], and measures its errors
/// (Gaussian error with standard deviation `sigma`).
pub fn fit(
    func: ActFn,
    degree: usize,
    a: f64,
    method: FitMethod,
    sigma: f64,
) -> Result<Fit, FitError> {
    if degree == 0 || degree > 12 {
        return Err(FitError::Degree { degree });
    }
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&a) {
        return Err(FitError::Interval { a });
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(FitError::Sigma { sigma });
    }
    let p = fit_polynomial(func, degree, a, method);
    let e = errors(func, &p, a, sigma);
    Ok(Fit {
        func,
        degree,
        interval: a,
        method,
        coefficients: p.coeffs,
        max_abs_error: e.max_abs_error,
        mean_abs_error: e.mean_abs_error,
        gaussian_mean_abs_error: e.gaussian_mean_abs_error,
        gaussian_sigma: sigma,
    })
}

/// The polynomial alone (no validation: callers pass 1 <= degree <= 12 and a > 0).
pub fn fit_polynomial(func: ActFn, degree: usize, a: f64, method: FitMethod) -> Polynomial {
    let g = |t: f64| func.eval(a * t);
    let in_t = match method {
        FitMethod::Legendre => legendre_to_monomial(&legendre_project(g, degree)),
        FitMethod::Chebyshev => chebyshev_to_monomial(&chebyshev_interpolate(g, degree)),
        FitMethod::Minimax => chebyshev_to_monomial(&remez(g, degree)),
        FitMethod::Derivative => {
            // d/dt g(t) = a f'(a t); fit it with degree - 1, integrate, pick the best constant.
            let dg = |t: f64| a * func.derivative(a * t);
            let q = legendre_to_monomial(&legendre_project(dg, degree - 1));
            let mut p = q.integral(0.0);
            // Least-squares constant: mean of g - p over [-1, 1].
            let c = simpson(|t| g(t) - p.eval(t)) / 2.0;
            p.coeffs[0] = c;
            p
        }
    };
    // x = a t  =>  coefficient of x^k is b_k / a^k. Round-off-sized coefficients (the even or odd
    // part of a symmetric function) are set to exactly 0.
    let big = in_t.coeffs.iter().fold(0.0f64, |m, c| m.max(c.abs()));
    let clean = Polynomial::new(
        in_t.coeffs
            .iter()
            .map(|&c| if c.abs() < 1e-12 * big { 0.0 } else { c })
            .collect(),
    );
    clean.scale_input(1.0 / a)
}

/// Max and mean absolute error on [-a, a], and the mean absolute error under N(0, sigma^2).
pub fn errors(func: ActFn, p: &Polynomial, a: f64, sigma: f64) -> FitErrors {
    const N: usize = 20_000;
    let mut max = 0.0f64;
    for i in 0..=N {
        let x = -a + 2.0 * a * i as f64 / N as f64;
        max = max.max((func.eval(x) - p.eval(x)).abs());
    }
    let mean = simpson(|t| (func.eval(a * t) - p.eval(a * t)).abs()) / 2.0;
    let gauss = if sigma > 0.0 && sigma.is_finite() {
        // Integrate over [-10 sigma, 10 sigma] in the standard variable z.
        let w = 10.0;
        simpson(|t| {
            let z = w * t;
            let x = sigma * z;
            (func.eval(x) - p.eval(x)).abs() * (-0.5 * z * z).exp()
        }) * w
            / (2.0 * std::f64::consts::PI).sqrt()
    } else {
        f64::NAN
    };
    FitErrors {
        max_abs_error: max,
        mean_abs_error: mean,
        gaussian_mean_abs_error: gauss,
    }
}

/// Composite Simpson rule on [-1, 1] with 20,000 panels (0 is a panel boundary, so a kink there
/// does not hurt).
fn simpson(f: impl Fn(f64) -> f64) -> f64 {
    const N: usize = 20_000;
    let h = 2.0 / N as f64;
    let mut s = f(-1.0) + f(1.0);
    for i in 1..N {
        let t = -1.0 + h * i as f64;
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(t);
    }
    s * h / 3.0
}

/// Legendre coefficients c_k = (2k+1)/2 * int_{-1}^{1} g P_k.
fn legendre_project(g: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    (0..=degree)
        .map(|k| (2.0 * k as f64 + 1.0) / 2.0 * simpson(|t| g(t) * legendre_p(k, t)))
        .collect()
}

fn legendre_p(k: usize, t: f64) -> f64 {
    let (mut p0, mut p1) = (1.0, t);
    if k == 0 {
        return p0;
    }
    for n in 1..k {
        let p2 = ((2 * n + 1) as f64 * t * p1 - n as f64 * p0) / (n + 1) as f64;
        p0 = p1;
        p1 = p2;
    }
    p1
}

fn chebyshev_t(k: usize, t: f64) -> f64 {
    let (mut p0, mut p1) = (1.0, t);
    if k == 0 {
        return p0;
    }
    for _ in 1..k {
        let p2 = 2.0 * t * p1 - p0;
        p0 = p1;
        p1 = p2;
    }
    p1
}

/// Monomial coefficients of a series in a three-term-recurrence basis.
fn basis_to_monomial(
    coeffs: &[f64],
    next: impl Fn(usize, &[f64], &[f64]) -> Vec<f64>,
) -> Polynomial {
    let n = coeffs.len();
    let mut out = vec![0.0; n.max(1)];
    let mut prev: Vec<f64> = vec![1.0];
    let mut cur: Vec<f64> = vec![0.0, 1.0];
    for (k, &c) in coeffs.iter().enumerate() {
        let basis = match k {
            0 => prev.clone(),
            1 => cur.clone(),
            _ => {
                let b = next(k - 1, &cur, &prev);
                prev = std::mem::replace(&mut cur, b.clone());
                b
            }
        };
        for (j, &b) in basis.iter().enumerate() {
            out[j] += c * b;
        }
    }
    Polynomial::new(out)
}

fn legendre_to_monomial(c: &[f64]) -> Polynomial {
    // (n+1) P_{n+1} = (2n+1) t P_n - n P_{n-1}
    basis_to_monomial(c, |n, pn, pm| {
        let mut r = vec![0.0; pn.len() + 1];
        for (j, &v) in pn.iter().enumerate() {
            r[j + 1] += (2 * n + 1) as f64 * v;
        }
        for (j, &v) in pm.iter().enumerate() {
            r[j] -= n as f64 * v;
        }
        r.iter().map(|v| v / (n + 1) as f64).collect()
    })
}

fn chebyshev_to_monomial(c: &[f64]) -> Polynomial {
    // T_{n+1} = 2 t T_n - T_{n-1}
    basis_to_monomial(c, |_, tn, tm| {
        let mut r = vec![0.0; tn.len() + 1];
        for (j, &v) in tn.iter().enumerate() {
            r[j + 1] += 2.0 * v;
        }
        for (j, &v) in tm.iter().enumerate() {
            r[j] -= v;
        }
        r
    })
}

/// Chebyshev coefficients of the interpolant at the degree+1 Chebyshev nodes (first kind).
fn chebyshev_interpolate(g: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    let nodes: Vec<f64> = (0..n)
        .map(|j| (std::f64::consts::PI * (j as f64 + 0.5) / n as f64).cos())
        .collect();
    let vals: Vec<f64> = nodes.iter().map(|&t| g(t)).collect();
    (0..n)
        .map(|k| {
            let s: f64 = nodes
                .iter()
                .zip(&vals)
                .map(|(&t, &v)| v * chebyshev_t(k, t))
                .sum();
            s * if k == 0 { 1.0 } else { 2.0 } / n as f64
        })
        .collect()
}

/// Solves a small dense linear system by Gaussian elimination with partial pivoting.
fn solve(mut m: Vec<Vec<f64>>, mut rhs: Vec<f64>) -> Option<Vec<f64>> {
    let n = rhs.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[piv][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, piv);
        rhs.swap(col, piv);
        for r in col + 1..n {
            let f = m[r][col] / m[col][col];
            let pivot_row = m[col].clone();
            for (dst, src) in m[r][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *dst -= f * src;
            }
            rhs[r] -= f * rhs[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| m[r][c] * x[c]).sum();
        x[r] = (rhs[r] - s) / m[r][r];
    }
    Some(x)
}

/// Remez exchange on [-1, 1] in the Chebyshev basis; returns Chebyshev coefficients.
fn remez(g: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    const GRID: usize = 20_000;
    let n = degree + 2;
    let grid: Vec<f64> = (0..=GRID)
        .map(|i| -1.0 + 2.0 * i as f64 / GRID as f64)
        .collect();
    let gv: Vec<f64> = grid.iter().map(|&t| g(t)).collect();
    // Initial reference: Chebyshev extrema, snapped to the grid.
    let mut refs: Vec<usize> = (0..n)
        .map(|i| {
            // Slightly asymmetric Chebyshev extrema: a symmetric reference makes the levelled
            // error vanish for odd/even functions whose best approximation has lower degree.
            let u = (i as f64 / (n - 1) as f64).powf(1.1);
            let t = -(std::f64::consts::PI * u).cos();
            (((t + 1.0) / 2.0 * GRID as f64).round() as usize).min(GRID)
        })
        .collect();
    let mut best = chebyshev_interpolate(&g, degree);
    let eval = |c: &[f64], t: f64| -> f64 {
        c.iter()
            .enumerate()
            .map(|(k, &v)| v * chebyshev_t(k, t))
            .sum()
    };
    let mut best_max = f64::INFINITY;
    for _ in 0..100 {
        let m: Vec<Vec<f64>> = refs
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let mut row: Vec<f64> = (0..=degree).map(|k| chebyshev_t(k, grid[r])).collect();
                row.push(if i % 2 == 0 { 1.0 } else { -1.0 });
                row
            })
            .collect();
        let rhs: Vec<f64> = refs.iter().map(|&r| gv[r]).collect();
        let Some(sol) = solve(m, rhs) else { break };
        let c = sol[..=degree].to_vec();
        let level = sol[degree + 1].abs();
        let err: Vec<f64> = grid
            .iter()
            .zip(&gv)
            .map(|(&t, &v)| v - eval(&c, t))
            .collect();
        let max = err.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        if max < best_max {
            best_max = max;
            best = c;
        }
        if max - level <= 1e-10 * max.max(1e-300) {
            break;
        }
        // New reference: one extremum per run of constant sign, then trim to n points.
        let mut ext: Vec<usize> = Vec::new();
        let mut i = 0;
        while i <= GRID {
            let s = err[i] >= 0.0;
            let mut j = i;
            let mut arg = i;
            while j <= GRID && (err[j] >= 0.0) == s {
                if err[j].abs() > err[arg].abs() {
                    arg = j;
                }
                j += 1;
            }
            ext.push(arg);
            i = j;
        }
        if ext.len() < n {
            break;
        }
        if ext.len() > n {
            // Keep n consecutive (hence alternating) extrema that include the global maximum,
            // choosing the window whose smallest |error| is largest.
            let gmax = (0..ext.len())
                .max_by(|&i, &j| err[ext[i]].abs().total_cmp(&err[ext[j]].abs()))
                .unwrap_or(0);
            let lo = gmax.saturating_sub(n - 1);
            let hi = gmax.min(ext.len() - n);
            let start = (lo..=hi)
                .max_by(|&i, &j| {
                    let m = |s: usize| {
                        ext[s..s + n]
                            .iter()
                            .fold(f64::INFINITY, |m, &k| m.min(err[k].abs()))
                    };
                    m(i).total_cmp(&m(j))
                })
                .unwrap_or(lo);
            ext = ext[start..start + n].to_vec();
        }
        if ext == refs {
            break;
        }
        refs = ext;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_polynomials_of_lower_degree() {
        // x -> x^2 behaves like a polynomial only through gelu etc., so test the bases directly.
        let l = legendre_project(|t| 3.0 * t * t - 1.0 + 0.5 * t, 3);
        let p = legendre_to_monomial(&l);
        for (a, b) in p.coeffs.iter().zip([-1.0, 0.5, 3.0, 0.0]) {
            assert!((a - b).abs() < 1e-9, "{:?}", p.coeffs);
        }
        let c = chebyshev_interpolate(|t| 4.0 * t * t * t - 2.0 * t, 3);
        let p = chebyshev_to_monomial(&c);
        for (a, b) in p.coeffs.iter().zip([0.0, -2.0, 0.0, 4.0]) {
            assert!((a - b).abs() < 1e-12, "{:?}", p.coeffs);
        }
    }

    #[test]
    fn minimax_beats_other_methods_and_equioscillates() {
        for f in ActFn::ALL {
            for d in 2..=8 {
                let mm = fit(f, d, 8.0, FitMethod::Minimax, 1.0).unwrap();
                for m in [
                    FitMethod::Legendre,
                    FitMethod::Chebyshev,
                    FitMethod::Derivative,
                ] {
                    let o = fit(f, d, 8.0, m, 1.0).unwrap();
                    assert!(
                        mm.max_abs_error <= o.max_abs_error * (1.0 + 1e-6),
                        "{f} d={d} minimax {} vs {m} {}",
                        mm.max_abs_error,
                        o.max_abs_error
                    );
                }
                // Equioscillation: the error reaches +-E alternately at >= d+2 points.
                let p = mm.polynomial();
                let e = mm.max_abs_error;
                let mut signs = Vec::new();
                for i in 0..=20_000 {
                    let x = -8.0 + 16.0 * i as f64 / 20_000.0;
                    let r = f.eval(x) - p.eval(x);
                    if r.abs() >= e * (1.0 - 1e-4) {
                        let s = r > 0.0;
                        if signs.last() != Some(&s) {
                            signs.push(s);
                        }
                    }
                }
                assert!(
                    signs.len() >= d + 2,
                    "{f} d={d}: {} alternations",
                    signs.len()
                );
            }
        }
    }

    #[test]
    fn relu_minimax_known_value() {
        // Best quadratic for |x| on [-1,1] is x^2 + 1/8 (error 1/8), so ReLU = (x + |x|)/2 on
        // [-a, a] has error a/16.
        let mm = fit(ActFn::Relu, 2, 8.0, FitMethod::Minimax, 1.0).unwrap();
        assert!(
            (mm.max_abs_error - 0.5).abs() < 1e-3,
            "{}",
            mm.max_abs_error
        );
        let c = &mm.coefficients;
        assert!(
            (c[0] - 0.5).abs() < 1e-3
                && (c[1] - 0.5).abs() < 1e-9
                && (c[2] - 1.0 / 16.0).abs() < 1e-4
        );
    }

    #[test]
    fn chebyshev_error_bound() {
        // Interpolation error <= (1 + Lebesgue constant) * best error, with the Chebyshev-node
        // Lebesgue constant <= 1 + (2 / pi) ln(n + 1).
        for f in ActFn::ALL {
            for d in 2..=8 {
                let c = fit(f, d, 8.0, FitMethod::Chebyshev, 1.0).unwrap();
                let m = fit(f, d, 8.0, FitMethod::Minimax, 1.0).unwrap();
                let lebesgue = 1.0 + 2.0 / std::f64::consts::PI * ((d + 1) as f64).ln();
                assert!(
                    c.max_abs_error <= (1.0 + lebesgue) * m.max_abs_error * (1.0 + 1e-6),
                    "{f} d={d}"
                );
            }
        }
        // Smooth function on a small interval: sigmoid is entire up to poles at +-i pi, so the
        // degree-6 interpolant on [-1, 1] is accurate to a few 1e-6.
        let f = fit(ActFn::Sigmoid, 6, 1.0, FitMethod::Chebyshev, 1.0).unwrap();
        assert!(f.max_abs_error < 5e-6, "{}", f.max_abs_error);
        let f = fit(ActFn::Tanh, 3, 8.0, FitMethod::Chebyshev, 1.0).unwrap();
        assert!(f.max_abs_error < 0.5, "{}", f.max_abs_error);
    }

    #[test]
    fn derivative_route_integrates_the_step_fit() {
        let a = 8.0;
        for d in 2..=6 {
            let p = fit_polynomial(ActFn::Relu, d, a, FitMethod::Derivative);
            // p' must be the least-squares fit of the step function on [-a, a].
            let step_fit =
                legendre_to_monomial(&legendre_project(|t| ActFn::Relu.derivative(a * t), d - 1))
                    .scale_input(1.0 / a);
            let dp = p.derivative();
            for (x, y) in dp.coeffs.iter().zip(&step_fit.coeffs) {
                assert!(
                    (x - y).abs() < 1e-9,
                    "d={d}: {:?} vs {:?}",
                    dp.coeffs,
                    step_fit.coeffs
                );
            }
            assert_eq!(p.degree(), d);
        }
        // Degree 2: step ~ 1/2 + 3/(4a) x, so p = c + x/2 + 3 x^2 / (8 a).
        let p = fit_polynomial(ActFn::Relu, 2, a, FitMethod::Derivative);
        assert!((p.coeffs[1] - 0.5).abs() < 1e-9 && (p.coeffs[2] - 3.0 / 64.0).abs() < 1e-9);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            fit(ActFn::Relu, 0, 8.0, FitMethod::Legendre, 1.0),
            Err(FitError::Degree { .. })
        ));
        assert!(matches!(
            fit(ActFn::Relu, 2, -1.0, FitMethod::Legendre, 1.0),
            Err(FitError::Interval { .. })
        ));
        assert!(matches!(
            fit(ActFn::Relu, 2, f64::NAN, FitMethod::Legendre, 1.0),
            Err(FitError::Interval { .. })
        ));
    }
}
