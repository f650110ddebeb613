//! Activation functions (ReLU, Sigmoid, Tanh, GELU, SiLU) and the polynomials that replace them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A standard (non-polynomial) activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ActFn {
    /// max(0, x).
    Relu,
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// x * Phi(x) (exact, erf-based).
    Gelu,
    /// x * sigmoid(x).
    Silu,
}

impl ActFn {
    /// Every function, in display order.
    pub const ALL: [ActFn; 5] = [
        ActFn::Relu,
        ActFn::Sigmoid,
        ActFn::Tanh,
        ActFn::Gelu,
        ActFn::Silu,
    ];

    /// Lower-case name (`relu`, `sigmoid`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ActFn::Relu => "relu",
            ActFn::Sigmoid => "sigmoid",
            ActFn::Tanh => "tanh",
            ActFn::Gelu => "gelu",
            ActFn::Silu => "silu",
        }
    }

    /// f(x).
    pub fn eval(self, x: f64) -> f64 {
        match self {
            ActFn::Relu => x.max(0.0),
            ActFn::Sigmoid => sigmoid(x),
            ActFn::Tanh => x.tanh(),
            ActFn::Gelu => x * std_normal_cdf(x),
            ActFn::Silu => x * sigmoid(x),
        }
    }

    /// f'(x); for ReLU the step function with value 1/2 at 0.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            ActFn::Relu => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    0.0
                } else {
                    0.5
                }
            }
            ActFn::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            ActFn::Tanh => 1.0 - x.tanh().powi(2),
            ActFn::Gelu => std_normal_cdf(x) + x * std_normal_pdf(x),
            ActFn::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
        }
    }
}

impl fmt::Display for ActFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ActFn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActFn::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown function `{s}` (expected relu, sigmoid, tanh, gelu or silu)")
            })
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn std_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn std_normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// A polynomial `c[0] + c[1] x + c[2] x^2 + ...` (coefficients from degree 0 up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Polynomial {
    /// Coefficients, degree 0 first.
    pub coeffs: Vec<f64>,
}

impl Polynomial {
    /// Wraps coefficients (degree 0 first).
    pub fn new(coeffs: Vec<f64>) -> Self {
        Polynomial { coeffs }
    }

    /// Degree (number of coefficients minus one; 0 for an empty polynomial).
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// Evaluates in the order the encrypted path uses: `c0 + c1*x + c2*(x*x) + c3*((x*x)*x) + ...`,
    /// i.e. the powers are built by repeated multiplication and the terms summed from degree 0 up.
    pub fn eval(&self, x: f64) -> f64 {
        let mut acc = 0.0;
        let mut pow = 1.0;
        for (k, &c) in self.coeffs.iter().enumerate() {
            if k > 0 {
                pow *= x;
            }
            acc += c * pow;
        }
        acc
    }

    /// The derivative polynomial.
    pub fn derivative(&self) -> Polynomial {
        Polynomial::new(
            self.coeffs
                .iter()
                .enumerate()
                .skip(1)
                .map(|(k, &c)| k as f64 * c)
                .collect(),
        )
    }

    /// The antiderivative with constant term `c0`.
    pub fn integral(&self, c0: f64) -> Polynomial {
        let mut out = vec![c0];
        out.extend(
            self.coeffs
                .iter()
                .enumerate()
                .map(|(k, &c)| c / (k as f64 + 1.0)),
        );
        Polynomial::new(out)
    }

    /// `q(x) = p(s * x)`: coefficient k multiplied by `s^k`.
    pub fn scale_input(&self, s: f64) -> Polynomial {
        Polynomial::new(
            self.coeffs
                .iter()
                .enumerate()
                .map(|(k, &c)| c * s.powi(k as i32))
                .collect(),
        )
    }
}

impl fmt::Display for Polynomial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.coeffs.iter().map(|c| format!("{c:.6e}")).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        for f in ActFn::ALL {
            for &x in &[-3.0, -0.7, 0.3, 2.5] {
                let h = 1e-6;
                let fd = (f.eval(x + h) - f.eval(x - h)) / (2.0 * h);
                assert!(
                    (fd - f.derivative(x)).abs() < 1e-6,
                    "{f} at {x}: {fd} vs {}",
                    f.derivative(x)
                );
            }
        }
    }

    #[test]
    fn polynomial_calculus() {
        let p = Polynomial::new(vec![1.0, 2.0, 3.0]);
        assert_eq!(p.eval(2.0), 1.0 + 4.0 + 12.0);
        assert_eq!(p.derivative().coeffs, vec![2.0, 6.0]);
        assert_eq!(p.derivative().integral(1.0).coeffs, p.coeffs);
        assert_eq!(p.scale_input(2.0).eval(1.5), p.eval(3.0));
        assert_eq!("Tanh".parse::<ActFn>().unwrap(), ActFn::Tanh);
        assert!("foo".parse::<ActFn>().is_err());
    }
}
