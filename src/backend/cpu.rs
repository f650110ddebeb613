//! The CPU backend: every operation through the `cryptodl-kernels` twins, limbs in parallel.

use super::gpu::{check_groups, galois_permutation_ntt};
use super::{check_slice, div_round_constants, Backend, BackendError, Result, RnsContext, Shape};
use cryptodl_kernels::modarith::{mul_shoup, Modulus};
use cryptodl_kernels::rns::{BaseConverter, RnsBasis};
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

/// The CPU implementation of [`Backend`].
pub struct CpuBackend {
    ctx: RnsContext,
}

impl CpuBackend {
    /// A CPU backend for `ctx`.
    pub fn new(ctx: RnsContext) -> Self {
        Self { ctx }
    }

    fn modulus(&self, i: usize) -> &Modulus {
        &self.ctx.moduli()[i]
    }

    /// Applies `f(limb_index_in_map, modulus, out_chunk)` to every limb of `out` in parallel.
    fn per_limb<F>(&self, shape: &Shape, out: &mut [u32], f: F)
    where
        F: Fn(usize, usize, &Modulus, &mut [u32]) + Sync,
    {
        let n = self.ctx.n();
        let limbs = shape.limbs();
        out.par_chunks_mut(n).enumerate().for_each(|(i, chunk)| {
            let l = i % limbs;
            f(i, l, self.modulus(shape.moduli[l]), chunk)
        });
    }

    fn binary<F>(&self, op: &'static str, a: &CpuTensor, b: &CpuTensor, f: F) -> Result<CpuTensor>
    where
        F: Fn(&Modulus, u32, u32) -> u32 + Sync,
    {
        if a.shape.moduli != b.shape.moduli
            || !(b.shape.polys == a.shape.polys || b.shape.polys == 1)
        {
            return Err(BackendError::Shape {
                op,
                reason: format!("a {:?} vs b {:?}", a.shape, b.shape),
            });
        }
        let n = self.ctx.n();
        let b_words = b.data.len().max(1);
        let mut out = a.data.clone();
        self.per_limb(&a.shape, &mut out, |i, _, m, chunk| {
            let bo = (i * n) % b_words;
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = f(m, *v, b.data[bo + k]);
            }
        });
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
        self.ctx.check_map(&shape.moduli)?;
        let want = shape.words(self.ctx.n());
        if data.len() != want {
            return Err(BackendError::Length {
                op: "upload",
                got: data.len(),
                want,
            });
        }
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
        self.binary("add", a, b, |m, x, y| m.add(x, y))
    }

    fn sub(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("sub", a, b, |m, x, y| m.sub(x, y))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("mul", a, b, |m, x, y| m.mul(x, y))
    }

    fn negate(&self, a: &CpuTensor) -> Result<CpuTensor> {
        let mut out = a.data.clone();
        self.per_limb(&a.shape, &mut out, |_, _, m, c| {
            c.iter_mut().for_each(|v| *v = m.neg(*v))
        });
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn mul_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        self.check_scalars("mul_scalar", &a.shape, scalars)?;
        let mut out = a.data.clone();
        self.per_limb(&a.shape, &mut out, |_, l, m, c| {
            let (w, ws, q) = (scalars[l], m.shoup(scalars[l]), m.value());
            c.iter_mut().for_each(|v| *v = mul_shoup(*v, w, ws, q))
        });
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn add_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        self.check_scalars("add_scalar", &a.shape, scalars)?;
        let mut out = a.data.clone();
        self.per_limb(&a.shape, &mut out, |_, l, m, c| {
            c.iter_mut().for_each(|v| *v = m.add(*v, scalars[l]))
        });
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn mac(&self, acc: &mut CpuTensor, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
        if acc.shape != a.shape {
            return Err(BackendError::Shape {
                op: "mac",
                reason: format!("accumulator {:?} vs operand {:?}", acc.shape, a.shape),
            });
        }
        let prod = self.mul(a, b)?;
        *acc = self.add(acc, &prod)?;
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
        let limbs = a.shape.limbs();
        let comp = limbs * n;
        let count = a.shape.polys / 2;
        let mut out = vec![0u32; 3 * count * comp];
        out.par_chunks_mut(3 * comp).enumerate().for_each(|(c, o)| {
            let a0 = &a.data[2 * c * comp..];
            let b0 = &b.data[2 * c * comp..];
            for l in 0..limbs {
                let m = self.modulus(a.shape.moduli[l]);
                for k in l * n..(l + 1) * n {
                    let (x0, x1, y0, y1) = (a0[k], a0[comp + k], b0[k], b0[comp + k]);
                    o[k] = m.mul(x0, y0);
                    o[comp + k] = m.add(m.mul(x0, y1), m.mul(x1, y0));
                    o[2 * comp + k] = m.mul(x1, y1);
                }
            }
        });
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
        let perm = galois_permutation_ntt(g % (2 * n), n);
        let mut out = a.data.clone();
        out.par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .for_each(|(o, i)| {
                for (j, v) in o.iter_mut().enumerate() {
                    *v = i[perm[j] as usize];
                }
            });
        Ok(CpuTensor {
            shape: a.shape.clone(),
            data: out,
        })
    }

    fn automorphism_coeff(&self, a: &CpuTensor, g: usize) -> Result<CpuTensor> {
        let n = self.ctx.n();
        check_odd(g)?;
        let g = g % (2 * n);
        let mut out = a.data.clone();
        self.per_limb(&a.shape, &mut out, |i, _, m, o| {
            let input = &a.data[i * n..(i + 1) * n];
            for (k, &v) in input.iter().enumerate() {
                let d = (k * g) % (2 * n);
                if d >= n {
                    o[d - n] = m.neg(v);
                } else {
                    o[d] = v;
                }
            }
        });
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
        let tmods: Vec<Modulus> = targets.iter().map(|&t| *self.modulus(t)).collect();
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
        if dnum == 0
            || digits.shape.polys % dnum != 0
            || key.shape.polys != 2 * dnum
            || key_map.len() != limbs
            || key_map.iter().any(|&k| k >= key_limbs)
            || key_map
                .iter()
                .zip(&digits.shape.moduli)
                .any(|(&k, &m)| key.shape.moduli[k] != m)
        {
            return Err(BackendError::Shape {
                op: "keyswitch_inner",
                reason: format!(
                    "digits {:?}, dnum {dnum}, key {:?}, key map {key_map:?}",
                    digits.shape, key.shape
                ),
            });
        }
        let polys = digits.shape.polys / dnum;
        let mut out = vec![0u32; 2 * polys * limbs * n];
        out.par_chunks_mut(n).enumerate().for_each(|(i, o)| {
            let l = i % limbs;
            let c = (i / limbs) % 2;
            let p = i / (2 * limbs);
            let m = self.modulus(digits.shape.moduli[l]);
            for j in 0..dnum {
                let d = &digits.data[((p * dnum + j) * limbs + l) * n..][..n];
                let kk = &key.data[((2 * j + c) * key_limbs + key_map[l]) * n..][..n];
                for k in 0..n {
                    o[k] = m.add(o[k], m.mul(d[k], kk[k]));
                }
            }
        });
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
        let c = div_round_constants(&self.ctx, keep, dropm);
        let drop_primes: Vec<u32> = dropm.iter().map(|&i| self.ctx.primes()[i]).collect();
        let keep_mods: Vec<Modulus> = keep.iter().map(|&i| *self.modulus(i)).collect();
        let conv = BaseConverter::new(&RnsBasis::new(&drop_primes)?, &keep_mods);
        let tables = self.ctx.tables();
        let mut out = vec![0u32; a.shape.polys * keep_n * n];
        out.par_chunks_mut(keep_n * n)
            .enumerate()
            .for_each(|(p, o)| {
                let x = &a.data[p * limbs * n..(p + 1) * limbs * n];
                let mut d = x[keep_n * n..].to_vec();
                for (l, limb) in d.chunks_exact_mut(n).enumerate() {
                    let t = &tables[dropm[l]];
                    t.inverse(limb);
                    let m = t.modulus();
                    limb.iter_mut().for_each(|v| *v = m.add(*v, c.half_drop[l]));
                }
                let mut scratch = vec![0u32; drop * n];
                conv.convert(&d, o, n, &mut scratch);
                for (l, limb) in o.chunks_exact_mut(n).enumerate() {
                    let t = &tables[keep[l]];
                    let m = t.modulus();
                    limb.iter_mut()
                        .for_each(|v| *v = m.add(*v, c.neg_half_keep[l]));
                    t.forward(limb);
                    let (w, ws) = c.d_inv[l];
                    for (v, &xv) in limb.iter_mut().zip(&x[l * n..(l + 1) * n]) {
                        *v = mul_shoup(m.sub(xv, *v), w, ws, m.value());
                    }
                }
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
