//! Key switching fused per polynomial on the CPU: the mod-up of every digit, the inner product
//! with the key and the division by `P` (or by `P q_l`, when relinearization and rescale are
//! fused) run for one polynomial at a time in per-thread scratch, so the intermediates stay in
//! cache and no tensor of digits is ever allocated.
//!
//! Word for word the composed implementation of the [`Backend`](crate::backend::Backend) trait's
//! defaults (inverse NTT, `basis_convert` of every digit to every target, forward NTT,
//! `keyswitch_inner`, `divide_round`): converting a digit to one of its own primes gives back its
//! own residue, so the fused path copies those limbs (still in NTT form) instead. Pinned by
//! `tests/backend_fused.rs`.

use std::ops::Range;
use std::sync::Arc;

use cryptodl_kernels::elementwise;
use cryptodl_kernels::keyswitch::{keyswitch_inner_limb, InnerShape};
use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::ntt::NttTable;
use cryptodl_kernels::rescale::DivideRound;
use cryptodl_kernels::rns::BaseConverter;
use rayon::prelude::*;

use super::{with_scratch, with_wide_scratch, CpuBackend, CpuTensor};
use crate::backend::{KeySwitchPlan, Result, RnsContext, Shape, SwitchKey};

/// A divide-and-round of polynomials over a limb map by its last limbs.
pub(super) struct Division<'a> {
    dr: Arc<DivideRound>,
    keep_tables: Vec<&'a NttTable>,
    drop_tables: Vec<&'a NttTable>,
    keep: usize,
    limbs: usize,
}

impl<'a> Division<'a> {
    /// Keeps the first `keep` limbs of `map`, divides by the others.
    pub(super) fn new(ctx: &'a RnsContext, map: &[usize], keep: usize) -> Result<Self> {
        let (k, d) = map.split_at(keep);
        Ok(Self {
            dr: ctx.divide_round(k, d)?,
            keep_tables: ctx.tables_of(k),
            drop_tables: ctx.tables_of(d),
            keep,
            limbs: map.len(),
        })
    }

    /// `x` (`[limbs][n]`, NTT form) becomes `round(x / D)` in its first `keep` limbs; the others
    /// are consumed.
    pub(super) fn apply_in_place(&self, x: &mut [u32], n: usize) {
        let (keep, drop) = x[..self.limbs * n].split_at_mut(self.keep * n);
        with_scratch(self.dr.scratch_len(n), |scratch| {
            self.dr
                .apply(keep, drop, &self.keep_tables, &self.drop_tables, n, scratch)
        });
    }

    /// `out` (`[keep][n]`) = `round(x / D)` for `x` (`[limbs][n]`, NTT form).
    pub(super) fn apply(&self, out: &mut [u32], x: &[u32], n: usize) {
        let drop = (self.limbs - self.keep) * n;
        out.copy_from_slice(&x[..self.keep * n]);
        with_scratch(drop + self.dr.scratch_len(n), |buf| {
            let (d, scratch) = buf.split_at_mut(drop);
            d.copy_from_slice(&x[self.keep * n..self.limbs * n]);
            self.dr
                .apply(out, d, &self.keep_tables, &self.drop_tables, n, scratch)
        });
    }
}

/// The mod-up of one digit: its limb positions, the other target positions, and the conversion
/// from the digit's primes to theirs.
struct Digit {
    own: Range<usize>,
    others: Vec<usize>,
    conv: Arc<BaseConverter>,
}

/// Everything the mod-up and inner product of one polynomial needs (computed once per call).
struct ModUp<'a> {
    limbs: usize,
    targets: usize,
    digits: Vec<Digit>,
    source_tables: Vec<&'a NttTable>,
    target_tables: Vec<&'a NttTable>,
    target_moduli: Vec<Modulus>,
    key_map: Vec<usize>,
    key: &'a [u32],
    key_limbs: usize,
}

impl<'a> ModUp<'a> {
    fn new(
        ctx: &'a RnsContext,
        d: &Shape,
        key: &'a SwitchKey<CpuTensor>,
        plan: &KeySwitchPlan,
    ) -> Result<Self> {
        let t = &plan.targets;
        let digits = plan
            .digits
            .iter()
            .map(|g| {
                let others: Vec<usize> = (0..t.len()).filter(|p| !g.contains(p)).collect();
                let other_map: Vec<usize> = others.iter().map(|&p| t[p]).collect();
                Ok(Digit {
                    conv: ctx.base_converter(&d.moduli[g.clone()], &other_map)?,
                    own: g.clone(),
                    others,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n = ctx.n();
        let key_limbs = key.key.shape.limbs();
        Ok(Self {
            limbs: d.limbs(),
            targets: t.len(),
            source_tables: ctx.tables_of(&d.moduli),
            target_tables: ctx.tables_of(t),
            target_moduli: ctx.moduli_of(t),
            key_map: plan.key_map.clone(),
            // The digits in use are a prefix of the key's (fewer at lower levels).
            key: &key.key.data[..2 * digits.len() * key_limbs * n],
            key_limbs,
            digits,
        })
    }

    /// `out` (`[2][targets][n]`) = the key-switching inner product of the mod-up of `d`
    /// (`[limbs][n]`, NTT form), not divided by `P`. With `parallel`, the digits and limbs of
    /// this one polynomial are spread over the threads.
    fn apply(&self, out: &mut [u32], d: &[u32], n: usize, parallel: bool) {
        let (limbs, targets) = (self.limbs, self.targets);
        let dnum = self.digits.len();
        with_scratch(limbs * n + dnum * targets * n, |buf| {
            let (coeff, ext) = buf.split_at_mut(limbs * n);
            coeff.copy_from_slice(d);
            let inverse = |(i, c): (usize, &mut [u32])| self.source_tables[i].inverse(c);
            if parallel {
                coeff.par_chunks_mut(n).enumerate().for_each(inverse);
            } else {
                coeff.chunks_mut(n).enumerate().for_each(inverse);
            }
            let coeff = &*coeff;
            let mod_up = |(j, e): (usize, &mut [u32])| {
                let dig = &self.digits[j];
                let own = dig.own.start * n..dig.own.end * n;
                e[own.clone()].copy_from_slice(&d[own.clone()]);
                let conv_len = dig.others.len() * n;
                with_scratch(conv_len + dig.own.len() * n, |tmp| {
                    let (conv, scratch) = tmp.split_at_mut(conv_len);
                    dig.conv.convert(&coeff[own], conv, n, scratch);
                    for (k, &p) in dig.others.iter().enumerate() {
                        let limb = &mut e[p * n..(p + 1) * n];
                        limb.copy_from_slice(&conv[k * n..(k + 1) * n]);
                        self.target_tables[p].forward(limb);
                    }
                });
            };
            if parallel {
                ext.par_chunks_mut(targets * n).enumerate().for_each(mod_up);
            } else {
                ext.chunks_mut(targets * n).enumerate().for_each(mod_up);
            }
            let ext = &*ext;
            let shape = InnerShape {
                dnum,
                limbs: targets,
                key_limbs: self.key_limbs,
                n,
            };
            let (out0, out1) = out.split_at_mut(targets * n);
            let inner = |(l, (o0, o1)): (usize, (&mut [u32], &mut [u32]))| {
                let m = &self.target_moduli[l];
                with_wide_scratch(n, |acc| {
                    keyswitch_inner_limb(ext, self.key, shape, l, self.key_map[l], m, o0, o1, acc)
                });
            };
            if parallel {
                out0.par_chunks_mut(n)
                    .zip(out1.par_chunks_mut(n))
                    .enumerate()
                    .for_each(inner);
            } else {
                out0.chunks_mut(n)
                    .zip(out1.chunks_mut(n))
                    .enumerate()
                    .for_each(inner);
            }
        });
    }
}

/// Whether one polynomial's work should itself be spread over the threads (too few
/// polynomials to keep every thread busy).
fn inner_parallel(polys: usize) -> bool {
    polys < rayon::current_num_threads()
}

/// [`Backend::keyswitch_ext`](crate::backend::Backend::keyswitch_ext), fused per polynomial.
pub(super) fn keyswitch_ext(
    be: &CpuBackend,
    d: &CpuTensor,
    key: &SwitchKey<CpuTensor>,
    plan: &KeySwitchPlan,
) -> Result<CpuTensor> {
    let n = be.ctx.n();
    let mu = ModUp::new(&be.ctx, &d.shape, key, plan)?;
    let (limbs, targets) = (mu.limbs, mu.targets);
    let polys = d.shape.polys;
    let mut out = be.alloc(Shape::ntt(2 * polys, plan.targets.clone()));
    let par = inner_parallel(polys);
    if limbs > 0 {
        out.data
            .par_chunks_mut(2 * targets * n)
            .zip(d.data.par_chunks(limbs * n))
            .for_each(|(o, x)| mu.apply(o, x, n, par));
    }
    Ok(out)
}

/// [`Backend::keyswitch`](crate::backend::Backend::keyswitch), fused per polynomial.
pub(super) fn keyswitch(
    be: &CpuBackend,
    d: &CpuTensor,
    key: &SwitchKey<CpuTensor>,
    plan: &KeySwitchPlan,
) -> Result<CpuTensor> {
    let n = be.ctx.n();
    let mu = ModUp::new(&be.ctx, &d.shape, key, plan)?;
    let div = Division::new(&be.ctx, &plan.targets, d.shape.limbs())?;
    let (limbs, targets) = (mu.limbs, mu.targets);
    let polys = d.shape.polys;
    let mut out = be.alloc(d.shape.with_polys(2 * polys));
    let par = inner_parallel(polys);
    if limbs > 0 {
        out.data
            .par_chunks_mut(2 * limbs * n)
            .zip(d.data.par_chunks(limbs * n))
            .for_each(|(o, x)| {
                with_scratch(2 * targets * n, |acc| {
                    mu.apply(acc, x, n, par);
                    let finish = |(o, a): (&mut [u32], &mut [u32])| {
                        div.apply_in_place(a, n);
                        o.copy_from_slice(&a[..limbs * n]);
                    };
                    let pairs = o.chunks_mut(limbs * n).zip(acc.chunks_mut(targets * n));
                    if par {
                        pairs.collect::<Vec<_>>().into_par_iter().for_each(finish);
                    } else {
                        pairs.for_each(finish);
                    }
                })
            });
    }
    Ok(out)
}

/// Relinearize-and-rescale of single ciphertexts: everything but the data, computed once per call.
pub(super) struct RelinRescale<'a> {
    mu: ModUp<'a>,
    div: Division<'a>,
    p_mod: Vec<u32>,
    mods: Vec<Modulus>,
    limbs: usize,
    par: bool,
}

impl<'a> RelinRescale<'a> {
    /// For `count` ciphertexts over `map` (`Q_l`, NTT form) with `key`.
    pub(super) fn new(
        be: &'a CpuBackend,
        map: &[usize],
        count: usize,
        key: &'a SwitchKey<CpuTensor>,
        plan: &KeySwitchPlan,
    ) -> Result<Self> {
        let c2 = Shape::ntt(count, map.to_vec());
        Ok(Self {
            mu: ModUp::new(&be.ctx, &c2, key, plan)?,
            div: Division::new(&be.ctx, &plan.targets, map.len() - 1)?,
            p_mod: be.ctx.product_mod(&key.special, map),
            mods: be.ctx.moduli_of(map),
            limbs: map.len(),
            par: inner_parallel(count),
        })
    }

    /// `out` (`[2][limbs - 1][n]`) = `round(((c0, c1) P + keyswitch_ext(c2)) / (P q_l))` for the
    /// product `ct` (`[3][limbs][n]`).
    fn apply(&self, out: &mut [u32], ct: &[u32], n: usize) {
        let (limbs, targets) = (self.limbs, self.mu.targets);
        let comp = limbs * n;
        with_scratch(2 * targets * n, |acc| {
            self.mu.apply(acc, &ct[2 * comp..3 * comp], n, self.par);
            let finish = |(c, (o, a)): (usize, (&mut [u32], &mut [u32]))| {
                elementwise::mul_scalar_acc(
                    &mut a[..comp],
                    &ct[c * comp..(c + 1) * comp],
                    &self.p_mod,
                    n,
                    &self.mods,
                );
                self.div.apply_in_place(a, n);
                o.copy_from_slice(&a[..(limbs - 1) * n]);
            };
            let (out_comps, acc_comps) =
                (out.chunks_mut((limbs - 1) * n), acc.chunks_mut(targets * n));
            if self.par {
                let pairs: Vec<_> = out_comps.zip(acc_comps).enumerate().collect();
                pairs.into_par_iter().for_each(finish);
            } else {
                out_comps.zip(acc_comps).enumerate().for_each(finish);
            }
        });
    }
}

/// [`Backend::relin_rescale`](crate::backend::Backend::relin_rescale), fused per ciphertext:
/// `(c0, c1) P + keyswitch_ext(c2)`, divided by `P q_l` in one division.
pub(super) fn relin_rescale(
    be: &CpuBackend,
    prod: &CpuTensor,
    key: &SwitchKey<CpuTensor>,
    plan: &KeySwitchPlan,
) -> Result<CpuTensor> {
    let n = be.ctx.n();
    let limbs = prod.shape.limbs();
    let count = prod.shape.polys / 3;
    let rr = RelinRescale::new(be, &prod.shape.moduli, count, key, plan)?;
    let mut shape = prod.shape.with_polys(2 * count);
    shape.moduli.truncate(limbs - 1);
    let mut out = be.alloc(shape);
    out.data
        .par_chunks_mut(2 * (limbs - 1) * n)
        .zip(prod.data.par_chunks(3 * limbs * n))
        .for_each(|(o, ct)| rr.apply(o, ct, n));
    Ok(out)
}

/// [`Backend::mul_relin_rescale`](crate::backend::Backend::mul_relin_rescale), fused per
/// ciphertext: the tensor product in scratch, then [`RelinRescale`]; no product tensor.
pub(super) fn mul_relin_rescale(
    be: &CpuBackend,
    a: &CpuTensor,
    b: &CpuTensor,
    key: &SwitchKey<CpuTensor>,
    plan: &KeySwitchPlan,
) -> Result<CpuTensor> {
    let n = be.ctx.n();
    let limbs = a.shape.limbs();
    let count = a.shape.polys / 2;
    let rr = RelinRescale::new(be, &a.shape.moduli, count, key, plan)?;
    let mut shape = a.shape.clone();
    shape.moduli.truncate(limbs - 1);
    let mut out = be.alloc(shape);
    let comp = limbs * n;
    out.data
        .par_chunks_mut(2 * (limbs - 1) * n)
        .zip(a.data.par_chunks(2 * comp).zip(b.data.par_chunks(2 * comp)))
        .for_each(|(o, (x, y))| {
            with_scratch(3 * comp, |prod| {
                elementwise::tensor(x, y, prod, n, &rr.mods);
                rr.apply(o, prod, n);
            })
        });
    Ok(out)
}
