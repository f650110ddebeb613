//! Homomorphic operations on ciphertexts with scale and level tracking (server side: needs only
//! evaluation keys).

use std::sync::Arc;

use cryptodl_kernels::automorphism::automorphism_ntt;
use cryptodl_kernels::elementwise;
use cryptodl_kernels::keyswitch::{keyswitch_inner_limb, InnerShape};
use rayon::prelude::*;

use super::poly::{inverse_limbs, with_scratch};
use super::{Ciphertext, CkksError, Context, EvaluationKeys, Plaintext, SwitchingKey};

/// Relative tolerance when comparing scales of operands.
const SCALE_RTOL: f64 = 1e-9;

/// Evaluates CKKS operations. Holds no secret.
#[derive(Clone)]
pub struct Evaluator {
    ctx: Arc<Context>,
}

fn same_scale(a: f64, b: f64) -> bool {
    (a - b).abs() <= SCALE_RTOL * a.abs().max(b.abs())
}

impl Evaluator {
    /// An evaluator for the context.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn check_ct(&self, ct: &Ciphertext) -> Result<(), CkksError> {
        ct.check(&self.ctx)
    }

    fn check_pair(
        &self,
        a: &Ciphertext,
        b_level: usize,
        b_scale: f64,
        op: &'static str,
    ) -> Result<(), CkksError> {
        if a.level != b_level {
            return Err(CkksError::LevelMismatch {
                op,
                left: a.level,
                right: b_level,
            });
        }
        if !same_scale(a.scale, b_scale) {
            return Err(CkksError::ScaleMismatch {
                op,
                left: a.scale,
                right: b_scale,
            });
        }
        Ok(())
    }

    fn moduli(&self, level: usize) -> &[cryptodl_kernels::modarith::Modulus] {
        &self.ctx.q_moduli()[..=level]
    }

    /// `a += b` (same level and scale; sizes may differ).
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        self.check_pair(a, b.level, b.scale, "add")?;
        let n = self.ctx.n();
        let len = (a.level + 1) * n;
        if b.size > a.size {
            a.data.resize(b.size * len, 0);
            a.size = b.size;
        }
        elementwise::add(
            &mut a.data[..b.size * len],
            &b.data,
            n,
            self.moduli(a.level),
        );
        Ok(())
    }

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut r = a.clone();
        self.add_assign(&mut r, b)?;
        Ok(r)
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut nb = b.clone();
        self.negate_assign(&mut nb)?;
        self.add(a, &nb)
    }

    /// `a = -a`.
    pub fn negate_assign(&self, a: &mut Ciphertext) -> Result<(), CkksError> {
        self.check_ct(a)?;
        let n = self.ctx.n();
        elementwise::neg(&mut a.data, n, self.moduli(a.level));
        Ok(())
    }

    /// `-a`.
    pub fn negate(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut r = a.clone();
        self.negate_assign(&mut r)?;
        Ok(r)
    }

    fn check_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<(), CkksError> {
        pt.check(&self.ctx)?;
        if a.level != pt.level {
            return Err(CkksError::LevelMismatch {
                op: "plaintext operation",
                left: a.level,
                right: pt.level,
            });
        }
        Ok(())
    }

    /// `a + pt` (same level and scale).
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        self.check_plain(a, pt)?;
        self.check_pair(a, pt.level, pt.scale, "add_plain")?;
        let mut r = a.clone();
        elementwise::add(
            r.component_mut(0),
            &pt.data,
            self.ctx.n(),
            self.moduli(a.level),
        );
        Ok(r)
    }

    /// `a * pt` (scales multiply; rescale afterwards).
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        self.check_plain(a, pt)?;
        let mut r = a.clone();
        let n = self.ctx.n();
        let moduli = self.moduli(a.level);
        r.data
            .par_chunks_exact_mut(pt.data.len())
            .for_each(|c| elementwise::mul(c, &pt.data, n, moduli));
        r.scale *= pt.scale;
        Ok(r)
    }

    /// `a * c` for a real constant `c`, as the integer `round(c * const_scale)` (no plaintext
    /// polynomial, no NTT). The scale is multiplied by `const_scale`; with `None` it is the last
    /// prime of the level, so that a following [`Self::rescale_assign`] restores the input scale.
    pub fn mul_const_assign(
        &self,
        a: &mut Ciphertext,
        c: f64,
        const_scale: Option<f64>,
    ) -> Result<(), CkksError> {
        self.check_ct(a)?;
        let cs = const_scale.unwrap_or(self.ctx.params().q()[a.level] as f64);
        let scalars = self.ctx.const_residues(c, cs, a.level)?;
        let n = self.ctx.n();
        let moduli = self.moduli(a.level);
        let len = (a.level + 1) * n;
        a.data
            .par_chunks_exact_mut(len)
            .for_each(|comp| elementwise::mul_scalar(comp, &scalars, n, moduli));
        a.scale *= cs;
        Ok(())
    }

    /// `a * c` (see [`Self::mul_const_assign`]).
    pub fn mul_const(
        &self,
        a: &Ciphertext,
        c: f64,
        const_scale: Option<f64>,
    ) -> Result<Ciphertext, CkksError> {
        let mut r = a.clone();
        self.mul_const_assign(&mut r, c, const_scale)?;
        Ok(r)
    }

    /// `a + c` for a real constant `c` (added to every slot at the ciphertext's scale).
    pub fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<(), CkksError> {
        self.check_ct(a)?;
        let scalars = self.ctx.const_residues(c, a.scale, a.level)?;
        let n = self.ctx.n();
        let moduli = self.moduli(a.level);
        elementwise::add_scalar(a.component_mut(0), &scalars, n, moduli);
        Ok(())
    }

    /// `a * b` without relinearization: a 3-component ciphertext at scale `scale_a * scale_b`.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        if a.level != b.level {
            return Err(CkksError::LevelMismatch {
                op: "mul",
                left: a.level,
                right: b.level,
            });
        }
        if a.size != 2 || b.size != 2 {
            return Err(CkksError::NotRelinearized {
                size: a.size.max(b.size),
            });
        }
        let n = self.ctx.n();
        let limbs = a.level + 1;
        let len = limbs * n;
        let mut data = vec![0u32; 3 * len];
        // per-limb tensor products in parallel
        let (o0, rest) = data.split_at_mut(len);
        let (o1, o2) = rest.split_at_mut(len);
        let moduli = self.moduli(a.level);
        o0.par_chunks_exact_mut(n)
            .zip(o1.par_chunks_exact_mut(n))
            .zip(o2.par_chunks_exact_mut(n))
            .enumerate()
            .for_each(|(l, ((x0, x1), x2))| {
                let m = &moduli[l];
                let r = l * n..(l + 1) * n;
                let (a0, a1) = (&a.data[r.clone()], &a.data[len + r.start..len + r.end]);
                let (b0, b1) = (&b.data[r.clone()], &b.data[len + r.start..len + r.end]);
                for k in 0..n {
                    let (p, q, s, t) = (a0[k] as u64, a1[k] as u64, b0[k] as u64, b1[k] as u64);
                    x0[k] = m.reduce_product(p * s);
                    x1[k] = m.reduce_u64(p * t + q * s);
                    x2[k] = m.reduce_product(q * t);
                }
            });
        Ok(Ciphertext {
            data,
            size: 3,
            level: a.level,
            scale: a.scale * b.scale,
        })
    }

    /// Key switching of `d` (`[limb][coeff]` over `Q_l`, NTT form) with `key`: returns
    /// `(k_0, k_1)` over `Q_l` with `k_0 + k_1 s = d s' + small`.
    fn switch_key(
        &self,
        d: &[u32],
        level: usize,
        key: &SwitchingKey,
    ) -> Result<Vec<u32>, CkksError> {
        let ctx = &self.ctx;
        let n = ctx.n();
        let params = ctx.params();
        let top = params.max_level();
        let k = params.p().len();
        let active = level + 1 + k;
        let key_limbs = top + 1 + k;
        let expected = params.dnum() * 2 * key_limbs * n;
        if key.data.len() != expected {
            return Err(CkksError::ShapeMismatch {
                what: "switching key",
                expected,
                found: key.data.len(),
            });
        }
        let ks = ctx.keyswitch_tables(level);
        let tables = ctx.qp_tables(level);
        let moduli = ctx.qp_moduli(level);
        // 1. coefficient form of d; 2. mod-up every digit to Q_l ++ P (NTT form)
        let dnum = ks.digits.len();
        let shape = InnerShape {
            dnum,
            limbs: active,
            key_limbs,
            n,
        };
        let key_used = &key.data[..dnum * 2 * key_limbs * n];
        let mut out = Vec::with_capacity(2 * (level + 1) * n);
        with_scratch(
            (level + 1) * n + dnum * active * n + 2 * active * n,
            |buf| {
                let (coeff, rest) = buf.split_at_mut((level + 1) * n);
                let (ext, acc) = rest.split_at_mut(dnum * active * n);
                coeff.copy_from_slice(d);
                inverse_limbs(coeff, &tables[..=level], n);
                let coeff = &*coeff;
                ext.par_chunks_exact_mut(active * n)
                    .zip(ks.digits.par_iter())
                    .for_each(|(e, dig)| {
                        let (s0, s1) = (dig.source[0], *dig.source.last().unwrap());
                        e[s0 * n..(s1 + 1) * n].copy_from_slice(&d[s0 * n..(s1 + 1) * n]);
                        let conv_len = dig.target.len() * n;
                        with_scratch(conv_len + dig.source.len() * n, |tmp| {
                            let (conv_out, conv_scratch) = tmp.split_at_mut(conv_len);
                            dig.conv.convert(
                                &coeff[s0 * n..(s1 + 1) * n],
                                conv_out,
                                n,
                                conv_scratch,
                            );
                            for (t_idx, &t) in dig.target.iter().enumerate() {
                                let limb = &mut e[t * n..(t + 1) * n];
                                limb.copy_from_slice(&conv_out[t_idx * n..(t_idx + 1) * n]);
                                tables[t].forward(limb);
                            }
                        });
                    });
                // 3. inner product with the key, limb by limb
                let ext = &*ext;
                let (acc0, acc1) = acc.split_at_mut(active * n);
                acc0.par_chunks_exact_mut(n)
                    .zip(acc1.par_chunks_exact_mut(n))
                    .enumerate()
                    .for_each_init(
                        || vec![0u64; n],
                        |wide, (l, (o0, o1))| {
                            let key_l = if l <= level {
                                l
                            } else {
                                top + 1 + (l - level - 1)
                            };
                            keyswitch_inner_limb(
                                ext, key_used, shape, l, key_l, &moduli[l], o0, o1, wide,
                            );
                        },
                    );
                // 4. divide by P and round
                acc.par_chunks_exact_mut(active * n).for_each(|comp| {
                    let (keep, drop) = comp.split_at_mut((level + 1) * n);
                    with_scratch(ks.mod_down.scratch_len(n), |scratch| {
                        ks.mod_down.apply(
                            keep,
                            drop,
                            &ctx.q_tables()[..=level],
                            ctx.p_tables(),
                            n,
                            scratch,
                        )
                    });
                });
                for comp in acc.chunks_exact(active * n) {
                    out.extend_from_slice(&comp[..(level + 1) * n]);
                }
            },
        );
        Ok(out)
    }

    /// Relinearizes a 3-component ciphertext back to 2 components.
    pub fn relinearize_assign(
        &self,
        a: &mut Ciphertext,
        keys: &EvaluationKeys,
    ) -> Result<(), CkksError> {
        self.check_ct(a)?;
        if a.size == 2 {
            return Ok(());
        }
        if a.size != 3 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let rlk = keys.relin.as_ref().ok_or(CkksError::MissingRelinKey)?;
        let n = self.ctx.n();
        let len = (a.level + 1) * n;
        let ks = self.switch_key(&a.data[2 * len..], a.level, rlk)?;
        a.data.truncate(2 * len);
        a.size = 2;
        elementwise::add(&mut a.data, &ks, n, self.moduli(a.level));
        Ok(())
    }

    /// Divides by the last prime of the level and rounds: level - 1, scale / q_l.
    pub fn rescale_assign(&self, a: &mut Ciphertext) -> Result<(), CkksError> {
        self.check_ct(a)?;
        if a.level == 0 {
            return Err(CkksError::OutOfLevels { op: "rescale" });
        }
        let n = self.ctx.n();
        let l = a.level;
        let len = (l + 1) * n;
        let table = self.ctx.rescale_table(l);
        let tables = self.ctx.q_tables();
        a.data.par_chunks_exact_mut(len).for_each(|comp| {
            let (keep, drop) = comp.split_at_mut(l * n);
            with_scratch(table.scratch_len(n), |scratch| {
                table.apply(keep, drop, &tables[..l], &tables[l..=l], n, scratch)
            });
        });
        // compact [c][l+1][n] -> [c][l][n] in place
        for c in 1..a.size {
            a.data.copy_within(c * len..c * len + l * n, c * l * n);
        }
        a.data.truncate(a.size * l * n);
        a.scale /= self.ctx.params().q()[l] as f64;
        a.level = l - 1;
        Ok(())
    }

    /// `a * b`, relinearized and rescaled.
    pub fn mul_relin_rescale(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        keys: &EvaluationKeys,
    ) -> Result<Ciphertext, CkksError> {
        let mut r = self.mul(a, b)?;
        self.relinearize_assign(&mut r, keys)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// Drops `levels` data primes without dividing (the message and scale are unchanged).
    pub fn drop_levels_assign(&self, a: &mut Ciphertext, levels: usize) -> Result<(), CkksError> {
        self.check_ct(a)?;
        if levels > a.level {
            return Err(CkksError::OutOfLevels { op: "drop_levels" });
        }
        let n = self.ctx.n();
        let (old, new) = ((a.level + 1) * n, (a.level + 1 - levels) * n);
        let mut data = Vec::with_capacity(a.size * new);
        for c in 0..a.size {
            data.extend_from_slice(&a.data[c * old..c * old + new]);
        }
        a.data = data;
        a.level -= levels;
        Ok(())
    }

    fn apply_galois(
        &self,
        a: &Ciphertext,
        g: usize,
        keys: &EvaluationKeys,
        what: i64,
    ) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        if a.size != 2 {
            return Err(CkksError::NotRelinearized { size: a.size });
        }
        let key = keys.galois.get(&g).ok_or(CkksError::MissingGaloisKey {
            step: what,
            galois: g,
        })?;
        let n = self.ctx.n();
        let len = (a.level + 1) * n;
        let perm = self.ctx.galois_permutation(g);
        let mut rotated = vec![0u32; 2 * len];
        automorphism_ntt(&a.data, &mut rotated, &perm);
        let ks = self.switch_key(&rotated[len..], a.level, key)?;
        let mut data = rotated;
        data.truncate(len);
        data.extend_from_slice(&ks[len..]);
        elementwise::add(&mut data[..len], &ks[..len], n, self.moduli(a.level));
        Ok(Ciphertext {
            data,
            size: 2,
            level: a.level,
            scale: a.scale,
        })
    }

    /// Rotates the slots left by `step` (negative: right). Needs the Galois key of that step.
    pub fn rotate(
        &self,
        a: &Ciphertext,
        step: i64,
        keys: &EvaluationKeys,
    ) -> Result<Ciphertext, CkksError> {
        let g = self.ctx.galois_element(step);
        self.apply_galois(a, g, keys, step)
    }

    /// Complex conjugation of every slot. Needs the conjugation key.
    pub fn conjugate(
        &self,
        a: &Ciphertext,
        keys: &EvaluationKeys,
    ) -> Result<Ciphertext, CkksError> {
        self.apply_galois(a, self.ctx.conjugation_element(), keys, 0)
    }
}
