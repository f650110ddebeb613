//! Polynomials in the flow with per-channel coefficients: the symbolic value of every tensor
//! between two linear layers of an imported graph.

/// A polynomial in the flow with per-channel coefficients: `coeffs[k]` holds the coefficient of
/// `x^k`, one value (all channels) or one per channel.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ChanPoly(pub(super) Vec<Vec<f64>>);

impl ChanPoly {
    pub(super) fn identity() -> Self {
        ChanPoly(vec![vec![0.0], vec![1.0]])
    }
    pub(super) fn constant(v: Vec<f64>) -> Self {
        ChanPoly(vec![v])
    }
    pub(super) fn degree(&self) -> usize {
        self.0.len().saturating_sub(1)
    }
    pub(super) fn trim(mut self) -> Self {
        while self.0.len() > 1 && self.0.last().is_some_and(|c| c.iter().all(|&x| x == 0.0)) {
            self.0.pop();
        }
        self
    }
    pub(super) fn zip(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        let n = a.len().max(b.len());
        (0..n)
            .map(|i| f(a[i.min(a.len() - 1)], b[i.min(b.len() - 1)]))
            .collect()
    }
    pub(super) fn add(&self, o: &Self, sign: f64) -> Self {
        let n = self.0.len().max(o.0.len());
        let zero = vec![0.0];
        ChanPoly(
            (0..n)
                .map(|k| {
                    Self::zip(
                        self.0.get(k).unwrap_or(&zero),
                        o.0.get(k).unwrap_or(&zero),
                        |x, y| x + sign * y,
                    )
                })
                .collect(),
        )
        .trim()
    }
    pub(super) fn mul(&self, o: &Self) -> Self {
        let mut out = vec![vec![0.0]; self.0.len() + o.0.len() - 1];
        for (i, a) in self.0.iter().enumerate() {
            for (j, b) in o.0.iter().enumerate() {
                let p = Self::zip(a, b, |x, y| x * y);
                out[i + j] = Self::zip(&out[i + j], &p, |x, y| x + y);
            }
        }
        ChanPoly(out).trim()
    }
    /// The coefficients when they are the same in every channel.
    pub(super) fn uniform(&self) -> Option<Vec<f64>> {
        self.0
            .iter()
            .map(|c| {
                let first = c[0];
                c.iter().all(|&x| x == first).then_some(first)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomials_compose_per_channel() {
        let x = ChanPoly::identity();
        let sq = x.mul(&x);
        assert_eq!(sq.0, vec![vec![0.0], vec![0.0], vec![1.0]]);
        let affine = ChanPoly(vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let p = sq.add(&affine, 1.0);
        assert_eq!(p.degree(), 2);
        assert_eq!(p.uniform(), None);
        assert_eq!(p.add(&affine, -1.0).uniform(), Some(vec![0.0, 0.0, 1.0]));
        assert_eq!(x.add(&x, -1.0).degree(), 0);
    }
}
