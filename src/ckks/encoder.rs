//! CKKS encoder: canonical embedding of `N/2` complex slots into `Z_Q[X]/(X^N + 1)` (HEAAN's
//! special FFT over the rotation group `5^j mod 2N`), rounding at a given scale.

use num_complex::Complex64;
use std::sync::Arc;

use cryptodl_kernels::modarith::Modulus;

use super::{CkksError, Context, Plaintext};

/// Encodes and decodes slot vectors. Cheap to clone (shares the context).
#[derive(Clone)]
pub struct Encoder {
    ctx: Arc<Context>,
    rot_group: Vec<usize>,
    /// `exp(2 pi i k / 2N)` for `k = 0 .. 2N`.
    ksi: Vec<Complex64>,
}

fn bit_reverse_in_place(v: &mut [Complex64]) {
    let n = v.len();
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = cryptodl_kernels::ntt::bit_reverse(i, bits);
        if i < j {
            v.swap(i, j);
        }
    }
}

/// Exact residue of a real integer-valued `f64` modulo `q` (works beyond 2^63: `v = m * 2^e`).
pub(crate) fn f64_to_residue(v: f64, m: &Modulus) -> u32 {
    if v.abs() < 9.0e18 {
        return m.reduce_i64(v as i64);
    }
    let bits = v.abs().to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1075;
    let mant = (bits & ((1 << 52) - 1)) | (1 << 52);
    let r = m.mul(m.reduce_u64(mant), m.pow(2, exp as u64));
    if v < 0.0 {
        m.neg(r)
    } else {
        r
    }
}

impl Encoder {
    /// An encoder for the context's ring.
    pub fn new(ctx: Arc<Context>) -> Self {
        let n = ctx.n();
        let m = 2 * n;
        let slots = n / 2;
        let mut rot_group = Vec::with_capacity(slots);
        let mut r = 1usize;
        for _ in 0..slots {
            rot_group.push(r);
            r = r * 5 % m;
        }
        let ksi = (0..=m)
            .map(|k| Complex64::from_polar(1.0, std::f64::consts::TAU * k as f64 / m as f64))
            .collect();
        Self {
            ctx,
            rot_group,
            ksi,
        }
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Number of slots (`N/2`).
    pub fn slots(&self) -> usize {
        self.ctx.n() / 2
    }

    fn fft_special(&self, v: &mut [Complex64]) {
        let size = v.len();
        let m = 2 * self.ctx.n();
        bit_reverse_in_place(v);
        let mut len = 2;
        while len <= size {
            let (lenh, lenq) = (len >> 1, len << 2);
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (self.rot_group[j] % lenq) * m / lenq;
                    let u = v[i + j];
                    let w = v[i + j + lenh] * self.ksi[idx];
                    v[i + j] = u + w;
                    v[i + j + lenh] = u - w;
                }
            }
            len <<= 1;
        }
    }

    fn fft_special_inv(&self, v: &mut [Complex64]) {
        let size = v.len();
        let m = 2 * self.ctx.n();
        let mut len = size;
        while len >= 2 {
            let (lenh, lenq) = (len >> 1, len << 2);
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (lenq - (self.rot_group[j] % lenq)) * m / lenq;
                    let u = v[i + j] + v[i + j + lenh];
                    let w = (v[i + j] - v[i + j + lenh]) * self.ksi[idx];
                    v[i + j] = u;
                    v[i + j + lenh] = w;
                }
            }
            len >>= 1;
        }
        bit_reverse_in_place(v);
        let inv = 1.0 / size as f64;
        v.iter_mut().for_each(|x| *x *= inv);
    }

    /// Encodes complex slot values (at most `N/2`; missing slots are zero) at `level` and `scale`.
    pub fn encode_complex(
        &self,
        values: &[Complex64],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let n = self.ctx.n();
        let slots = n / 2;
        if values.len() > slots {
            return Err(CkksError::TooManySlots {
                given: values.len(),
                slots,
            });
        }
        if level > self.ctx.params().max_level() {
            return Err(CkksError::LevelOutOfRange {
                level,
                max: self.ctx.params().max_level(),
            });
        }
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(CkksError::InvalidScale { scale });
        }
        let mut v = vec![Complex64::new(0.0, 0.0); slots];
        v[..values.len()].copy_from_slice(values);
        if v.iter().any(|z| !z.re.is_finite() || !z.im.is_finite()) {
            return Err(CkksError::NonFiniteInput);
        }
        self.fft_special_inv(&mut v);
        let mut coeffs = vec![0f64; n];
        for (i, z) in v.iter().enumerate() {
            coeffs[i] = (z.re * scale).round();
            coeffs[i + slots] = (z.im * scale).round();
        }
        let moduli = &self.ctx.q_moduli()[..=level];
        let mut data = Vec::with_capacity(moduli.len() * n);
        for (l, m) in moduli.iter().enumerate() {
            let start = data.len();
            data.extend(coeffs.iter().map(|&c| f64_to_residue(c, m)));
            self.ctx.q_tables()[l].forward(&mut data[start..]);
        }
        Ok(Plaintext { data, level, scale })
    }

    /// Encodes real slot values (see [`Self::encode_complex`]).
    pub fn encode(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext, CkksError> {
        let v: Vec<Complex64> = values.iter().map(|&x| Complex64::new(x, 0.0)).collect();
        self.encode_complex(&v, level, scale)
    }

    /// Decodes a plaintext to its `N/2` complex slots.
    pub fn decode_complex(&self, pt: &Plaintext) -> Vec<Complex64> {
        let n = self.ctx.n();
        let slots = n / 2;
        let limbs = pt.level + 1;
        let mut data = pt.data.clone();
        for (l, limb) in data.chunks_exact_mut(n).enumerate().take(limbs) {
            self.ctx.q_tables()[l].inverse(limb);
        }
        let mut coeffs = vec![0f64; n];
        self.ctx
            .basis(pt.level)
            .compose_centered_f64_batch(&data, n, 1.0 / pt.scale, &mut coeffs);
        let mut v: Vec<Complex64> = (0..slots)
            .map(|i| Complex64::new(coeffs[i], coeffs[i + slots]))
            .collect();
        self.fft_special(&mut v);
        v
    }

    /// Decodes a plaintext to the real parts of its slots.
    pub fn decode(&self, pt: &Plaintext) -> Vec<f64> {
        self.decode_complex(pt).into_iter().map(|z| z.re).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::Preset;

    #[test]
    fn encode_decode_round_trip_is_precise() {
        let params = Preset::by_name("toy1024")
            .unwrap()
            .parameters(true)
            .unwrap();
        let ctx = Context::new(&params).unwrap();
        let enc = Encoder::new(ctx);
        let vals: Vec<Complex64> = (0..512)
            .map(|i| Complex64::new((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()))
            .collect();
        for (level, log_scale, tol) in [(0, 20, 1e-4), (3, 40, 1e-9)] {
            let pt = enc
                .encode_complex(&vals, level, 2f64.powi(log_scale))
                .unwrap();
            let out = enc.decode_complex(&pt);
            let err = vals
                .iter()
                .zip(&out)
                .map(|(a, b)| (a - b).norm())
                .fold(0.0, f64::max);
            assert!(err < tol, "level {level}: {err}");
        }
    }

    #[test]
    fn huge_scales_are_exact() {
        let m = Modulus::new(998_244_353).unwrap();
        let v = 2f64.powi(80) * 3.0;
        let want = m.mul(3, m.pow(2, 80));
        assert_eq!(f64_to_residue(v, &m), want);
        assert_eq!(f64_to_residue(-v, &m), m.neg(want));
    }
}
