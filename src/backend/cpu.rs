//! The CPU backend: every operation through the `cryptodl-kernels` twins, limbs in parallel.

use super::gpu::check_groups;
use super::{
    check_join, check_keyswitch_inner, check_linear, check_slice, check_truncate, Backend,
    BackendError, LinearWeights, Result, RnsContext, Shape,
};
use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::rescale::DivideRound;
use cryptodl_kernels::rns::{BaseConverter, RnsBasis};
use cryptodl_kernels::{automorphism, elementwise, keyswitch};
use rayon::prelude::*;
use std::ops::Range;

/// A tensor in host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuTensor {
    shape: Shape,
    data: Vec<u32>,
}

impl CpuTensor {
    /// The residues, `[polys][limbs][n]`.
    pub fn data(&self) -> &[u32] {
        &self.data
    }
}

/// Outputs per block of the CPU `linear` (8 accumulators of N `u64` stay in cache).
const LINEAR_BLOCK: usize = 8;

/// The CPU implementation of [`Backend`].
pub struct CpuBackend {
    ctx: RnsContext,
}

impl CpuBackend {
    /// A CPU backend for `ctx`.
    pub fn new(ctx: RnsContext) -> Self {
        Self { ctx }
    }

    fn mods(&self, shape: &Shape) -> Vec<Modulus> {
        shape.moduli.iter().map(|&i| self.ctx.moduli()[i]).collect()
    }

    /// A copy of `a` with `f` applied to each polynomial (`[limbs][n]`) in parallel.
    fn per_poly<F>(&self, a: &CpuTensor, f: F) -> CpuTensor
    where
        F: Fn(&mut [u32]) + Sync + Send,
    {
        let mut out = a.data.clone();
        let w = a.shape.limbs() * self.ctx.n();
        if w > 0 {
            out.par_chunks_mut(w).for_each(f);
        }
        CpuTensor {
            shape: a.shape.clone(),
            data: out,
        }
    }

    fn check_binary(&self, op: &'static str, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
        if a.shape.moduli != b.shape.moduli
            || !(b.shape.polys == a.shape.polys || b.shape.polys == 1)
        {
            return Err(BackendError::Shape {
                op,
                reason: format!("a {:?} vs b {:?}", a.shape, b.shape),
            });
        }
        Ok(())
    }

    /// `a op= b` per polynomial through a twin `f(a, b, n, moduli)`; `b` may be broadcast.
    fn binary(
        &self,
        op: &'static str,
        a: &CpuTensor,
        b: &CpuTensor,
        f: fn(&mut [u32], &[u32], usize, &[Modulus]),
    ) -> Result<CpuTensor> {
        self.check_binary(op, a, b)?;
        let n = self.ctx.n();
        let w = a.shape.limbs() * n;
        let mods = self.mods(&a.shape);
        let mut out = a.data.clone();
        if w > 0 {
            let b_words = b.data.len();
            out.par_chunks_mut(w).enumerate().for_each(|(p, o)| {
                let bo = (p * w) % b_words;
                f(o, &b.data[bo..bo + w], n, &mods)
            });
        }
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn check_scalars(&self, op: &'static str, a: &Shape, s: &[u32]) -> Result<()> {
        if s.len() != a.limbs()
            || s.iter()
                .zip(&a.moduli)
                .any(|(&v, &mi)| v >= self.ctx.primes()[mi])
        {
            return Err(BackendError::Shape {
                op,
                reason: format!("{} scalars (each reduced) needed, got {s:?}", a.limbs()),
            });
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn context(&self) -> &RnsContext {
        &self.ctx
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a Shape {
        &t.shape
    }

    fn upload(&self, data: &[u32], shape: Shape) -> Result<CpuTensor> {
        self.ctx.check_upload(data.len(), &shape)?;
        Ok(CpuTensor {
            shape,
            data: data.to_vec(),
        })
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<u32>> {
        Ok(t.data.clone())
    }

    fn duplicate(&self, t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }

    fn slice_components(
        &self,
        t: &CpuTensor,
        group: usize,
        keep: Range<usize>,
    ) -> Result<CpuTensor> {
        let items = check_slice(&t.shape, group, &keep)?;
        let w = t.shape.limbs() * self.ctx.n();
        let mut data = Vec::with_capacity(items * keep.len() * w);
        for i in 0..items {
            data.extend_from_slice(
                &t.data[(i * group + keep.start) * w..(i * group + keep.end) * w],
            );
        }
        Ok(CpuTensor {
            shape: Shape {
                polys: items * keep.len(),
                moduli: t.shape.moduli.clone(),
            },
            data,
        })
    }

    fn join_components(&self, count: usize, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let ks = check_join(count, &parts.iter().map(|p| &p.shape).collect::<Vec<_>>())?;
        let w = parts[0].shape.limbs() * self.ctx.n();
        let total: usize = ks.iter().sum();
        let mut data = Vec::with_capacity(count * total * w);
        for i in 0..count {
            for (p, &k) in parts.iter().zip(&ks) {
                data.extend_from_slice(&p.data[i * k * w..(i + 1) * k * w]);
            }
        }
        Ok(CpuTensor {
            shape: Shape {
                polys: count * total,
                moduli: parts[0].shape.moduli.clone(),
            },
            data,
        })
    }

    fn linear(&self, x: &CpuTensor, comps: usize, w: &LinearWeights) -> Result<CpuTensor> {
        let shape = check_linear(&self.ctx, &x.shape, comps, w)?;
        let mods = self.mods(&x.shape);
        let n = self.ctx.n();
        let mut data = vec![0u32; shape.outputs * comps * shape.limbs * n];
        // Blocks of outputs: inputs shared by the block's rows are read once per block.
        let block_words = LINEAR_BLOCK * comps * shape.limbs * n;
        data.par_chunks_mut(block_words)
            .enumerate()
            .for_each_init(Vec::new, |acc, (k, o)| {
                cryptodl_kernels::linear::linear_block(
                    o,
                    k * LINEAR_BLOCK,
                    &x.data,
                    w.rows(),
                    shape,
                    &mods,
                    acc,
                )
            });
        Ok(CpuTensor {
            shape: Shape {
                polys: shape.outputs * comps,
                moduli: x.shape.moduli.clone(),
            },
            data,
        })
    }

    fn truncate_limbs(&self, t: &CpuTensor, limbs: usize) -> Result<CpuTensor> {
        check_truncate(&t.shape, limbs)?;
        let n = self.ctx.n();
        let w = t.shape.limbs() * n;
        let mut data = Vec::with_capacity(t.shape.polys * limbs * n);
        for p in t.data.chunks_exact(w) {
            data.extend_from_slice(&p[..limbs * n]);
        }
        Ok(CpuTensor {
            shape: Shape {
                polys: t.shape.polys,
                moduli: t.shape.moduli[..limbs].to_vec(),
            },
            data,
        })
    }

    fn ntt_forward(&self, t: &mut CpuTensor) -> Result<()> {
        let tables = self.ctx.tables();
        let shape = t.shape.clone();
        let limbs = shape.limbs().max(1);
        t.data
            .par_chunks_mut(self.ctx.n())
            .enumerate()
            .for_each(|(i, c)| tables[shape.moduli[i % limbs]].forward(c));
        Ok(())
    }

    fn ntt_inverse(&self, t: &mut CpuTensor) -> Result<()> {
        let tables = self.ctx.tables();
        let shape = t.shape.clone();
        let limbs = shape.limbs().max(1);
        t.data
            .par_chunks_mut(self.ctx.n())
            .enumerate()
            .for_each(|(i, c)| tables[shape.moduli[i % limbs]].inverse(c));
        Ok(())
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("add", a, b, elementwise::add)
    }

    fn sub(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("sub", a, b, elementwise::sub)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("mul", a, b, elementwise::mul)
    }

    fn negate(&self, a: &CpuTensor) -> Result<CpuTensor> {
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| elementwise::neg(o, self.ctx.n(), &mods)))
    }

    fn mul_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        self.check_scalars("mul_scalar", &a.shape, scalars)?;
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| {
            elementwise::mul_scalar(o, scalars, self.ctx.n(), &mods)
        }))
    }

    fn add_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        self.check_scalars("add_scalar", &a.shape, scalars)?;
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| {
            elementwise::add_scalar(o, scalars, self.ctx.n(), &mods)
        }))
    }

    fn mac(&self, acc: &mut CpuTensor, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
        self.check_binary("mac", a, b)?;
        if acc.shape != a.shape {
            return Err(BackendError::Shape {
                op: "mac",
                reason: format!("accumulator {:?} vs operand {:?}", acc.shape, a.shape),
            });
        }
        let n = self.ctx.n();
        let w = a.shape.limbs() * n;
        let mods = self.mods(&a.shape);
        let b_words = b.data.len();
        acc.data
            .par_chunks_mut(w.max(1))
            .zip(a.data.par_chunks(w.max(1)))
            .enumerate()
            .for_each(|(p, (o, x))| {
                let bo = (p * w) % b_words.max(1);
                elementwise::mul_acc(o, x, &b.data[bo..bo + w], n, &mods)
            });
        Ok(())
    }

    fn tensor(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        if a.shape != b.shape || a.shape.polys % 2 != 0 {
            return Err(BackendError::Shape {
                op: "tensor",
                reason: format!("operands {:?} and {:?}", a.shape, b.shape),
            });
        }
        let n = self.ctx.n();
        let comp = a.shape.limbs() * n;
        let count = a.shape.polys / 2;
        let mods = self.mods(&a.shape);
        let mut out = vec![0u32; 3 * count * comp];
        if comp > 0 {
            out.par_chunks_mut(3 * comp)
                .zip(a.data.par_chunks(2 * comp).zip(b.data.par_chunks(2 * comp)))
                .for_each(|(o, (x, y))| elementwise::tensor(x, y, o, n, &mods));
        }
        Ok(CpuTensor {
            shape: Shape {
                polys: 3 * count,
                moduli: a.shape.moduli.clone(),
            },
            data: out,
        })
    }

    fn automorphism_ntt(&self, a: &CpuTensor, g: usize) -> Result<CpuTensor> {
        let n = self.ctx.n();
        check_odd(g)?;
        let perm = automorphism::galois_permutation_ntt(g % (2 * n), n);
        let mut out = vec![0u32; a.data.len()];
        automorphism::automorphism_ntt(&a.data, &mut out, &perm);
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn automorphism_coeff(&self, a: &CpuTensor, g: usize) -> Result<CpuTensor> {
        let n = self.ctx.n();
        check_odd(g)?;
        let mut out = vec![0u32; a.data.len()];
        automorphism::automorphism_coeff(&a.data, &mut out, g % (2 * n), n, &self.mods(&a.shape));
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn basis_convert(
        &self,
        a: &CpuTensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<CpuTensor> {
        check_groups("basis_convert", a.shape.limbs(), groups)?;
        self.ctx.check_map(targets)?;
        let n = self.ctx.n();
        let limbs = a.shape.limbs();
        let tmods: Vec<Modulus> = targets.iter().map(|&t| self.ctx.moduli()[t]).collect();
        let convs = groups
            .iter()
            .map(|g| {
                let primes: Vec<u32> = a.shape.moduli[g.clone()]
                    .iter()
                    .map(|&i| self.ctx.primes()[i])
                    .collect();
                Ok(BaseConverter::new(&RnsBasis::new(&primes)?, &tmods))
            })
            .collect::<Result<Vec<_>>>()?;
        let block = groups.len() * targets.len() * n;
        let mut out = vec![0u32; a.shape.polys * block];
        out.par_chunks_mut(block.max(1))
            .enumerate()
            .for_each(|(p, o)| {
                let poly = &a.data[p * limbs * n..(p + 1) * limbs * n];
                for (gi, (g, conv)) in groups.iter().zip(&convs).enumerate() {
                    let mut scratch = vec![0u32; g.len() * n];
                    conv.convert(
                        &poly[g.start * n..g.end * n],
                        &mut o[gi * targets.len() * n..(gi + 1) * targets.len() * n],
                        n,
                        &mut scratch,
                    );
                }
            });
        Ok(CpuTensor {
            shape: Shape {
                polys: a.shape.polys * groups.len(),
                moduli: targets.to_vec(),
            },
            data: out,
        })
    }

    fn keyswitch_inner(
        &self,
        digits: &CpuTensor,
        dnum: usize,
        key: &CpuTensor,
        key_map: &[usize],
    ) -> Result<CpuTensor> {
        let n = self.ctx.n();
        let limbs = digits.shape.limbs();
        let key_limbs = key.shape.limbs();
        check_keyswitch_inner(&digits.shape, dnum, &key.shape, key_map)?;
        let polys = digits.shape.polys / dnum;
        let mods = self.mods(&digits.shape);
        let mut out = vec![0u32; 2 * polys * limbs * n];
        if limbs > 0 {
            out.par_chunks_mut(2 * limbs * n)
                .zip(digits.data.par_chunks(dnum * limbs * n))
                .for_each(|(o, d)| {
                    // The digits in use are a prefix of the key's (fewer at lower levels).
                    let used = &key.data[..2 * dnum * key_limbs * n];
                    keyswitch::keyswitch_inner(d, used, key_map, &mods, n, o)
                });
        }
        Ok(CpuTensor {
            shape: Shape {
                polys: 2 * polys,
                moduli: digits.shape.moduli.clone(),
            },
            data: out,
        })
    }

    fn divide_round(&self, a: &CpuTensor, drop: usize) -> Result<CpuTensor> {
        let n = self.ctx.n();
        let limbs = a.shape.limbs();
        if drop == 0 || drop >= limbs {
            return Err(BackendError::Shape {
                op: "divide_round",
                reason: format!("cannot drop {drop} of {limbs} limbs"),
            });
        }
        let keep_n = limbs - drop;
        let keep = &a.shape.moduli[..keep_n];
        let dropm = &a.shape.moduli[keep_n..];
        let primes = |m: &[usize]| m.iter().map(|&i| self.ctx.primes()[i]).collect::<Vec<_>>();
        let tables = |m: &[usize]| {
            m.iter()
                .map(|&i| self.ctx.tables()[i].clone())
                .collect::<Vec<_>>()
        };
        let dr = DivideRound::new(&primes(dropm), &primes(keep))?;
        let (keep_tables, drop_tables) = (tables(keep), tables(dropm));
        let mut out = vec![0u32; a.shape.polys * keep_n * n];
        out.par_chunks_mut(keep_n * n)
            .zip(a.data.par_chunks(limbs * n))
            .for_each(|(o, x)| {
                o.copy_from_slice(&x[..keep_n * n]);
                let mut d = x[keep_n * n..].to_vec();
                let mut scratch = vec![0u32; dr.scratch_len(n)];
                dr.apply(o, &mut d, &keep_tables, &drop_tables, n, &mut scratch);
            });
        Ok(CpuTensor {
            shape: Shape {
                polys: a.shape.polys,
                moduli: keep.to_vec(),
            },
            data: out,
        })
    }
}

fn check_odd(g: usize) -> Result<()> {
    if g % 2 == 0 {
        return Err(BackendError::Shape {
            op: "automorphism",
            reason: format!("Galois element {g} must be odd"),
        });
    }
    Ok(())
}
