//! Precision statistics of decrypted results (like Lattigo's `GetPrecisionStats`).

use serde::Serialize;

/// Summary of `-log2 |error|` over slots (higher is better).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrecisionStats {
    /// Smallest per-slot precision (the worst slot), in bits.
    pub min_bits: f64,
    /// Mean of the per-slot precisions, in bits.
    pub mean_bits: f64,
    /// Median of the per-slot precisions, in bits.
    pub median_bits: f64,
    /// Largest absolute error.
    pub max_abs_error: f64,
}

/// Compares `got` with `want` slot by slot. Exact slots count as 53 bits (f64 precision).
pub fn precision_stats(want: &[f64], got: &[f64]) -> PrecisionStats {
    assert_eq!(want.len(), got.len(), "compare equal-length slot vectors");
    assert!(!want.is_empty(), "no slots to compare");
    let mut bits: Vec<f64> = want
        .iter()
        .zip(got)
        .map(|(w, g)| {
            let e = (w - g).abs();
            if e == 0.0 {
                53.0
            } else {
                (-e.log2()).min(53.0)
            }
        })
        .collect();
    let max_abs_error = want
        .iter()
        .zip(got)
        .map(|(w, g)| (w - g).abs())
        .fold(0.0, f64::max);
    let mean_bits = bits.iter().sum::<f64>() / bits.len() as f64;
    bits.sort_by(f64::total_cmp);
    let mid = bits.len() / 2;
    let median_bits = if bits.len().is_multiple_of(2) {
        (bits[mid - 1] + bits[mid]) / 2.0
    } else {
        bits[mid]
    };
    PrecisionStats {
        min_bits: bits[0],
        mean_bits,
        median_bits,
        max_abs_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_errors() {
        let want = [0.0, 0.0, 0.0, 1.0];
        let got = [0.5, 0.25, 0.125, 1.0];
        let s = precision_stats(&want, &got);
        assert_eq!(s.min_bits, 1.0);
        assert_eq!(s.median_bits, 2.5);
        assert_eq!(s.mean_bits, (1.0 + 2.0 + 3.0 + 53.0) / 4.0);
        assert_eq!(s.max_abs_error, 0.5);
    }
}
