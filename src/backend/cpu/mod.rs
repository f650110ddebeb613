//! The CPU backend: every operation through the `cryptodl-kernels` twins, polynomials and limbs in
//! parallel (rayon), tensors in recycled buffers, key switching fused per polynomial.

mod fused;
mod pool;

use super::{
    check_binary, check_convert, check_join, check_keyswitch_inner, check_linear, check_mul_sum,
    check_prepared_map, check_relin_rescale, check_scalars, check_scaled_prefix, check_slice,
    check_truncate, expect_form, AtomicCounters, Backend, BackendError, Counters, Form,
    KeySwitchPlan, LinearWeights, MemoryUse, Result, RnsContext, Shape, SwitchKey,
};
use cryptodl_kernels::modarith::Modulus;
use cryptodl_kernels::{automorphism, elementwise, keyswitch};
use pool::{Buf, Pool};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// A tensor in host memory.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    shape: Shape,
    data: Buf,
}

impl PartialEq for CpuTensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data[..] == other.data[..]
    }
}

impl Eq for CpuTensor {}

impl CpuTensor {
    /// The residues, `[polys][limbs][n]`.
    pub fn data(&self) -> &[u32] {
        &self.data
    }

    /// The residues as a vector (no copy).
    pub fn into_vec(self) -> Vec<u32> {
        self.data.into_vec()
    }
}

/// Words of un-rescaled outputs one block of a fused linear-and-rescale sums at once (256 MiB,
/// from the pool).
const LINEAR_SCRATCH_WORDS: usize = 1 << 26;

/// The CPU memory bound of one tensor by default (4 GiB): layers are chunked below it, as on a
/// GPU with that binding limit. (Key switching needs no large intermediate on the CPU, so a
/// layer of the networks here is one tensor.)
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 4 << 30;

/// The CPU implementation of [`Backend`].
pub struct CpuBackend {
    ctx: RnsContext,
    pool: Arc<Pool>,
    max_tensor_words: usize,
    counters: AtomicCounters,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
    static WIDE_SCRATCH: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`with_scratch`] for `u64` accumulators.
pub(crate) fn with_wide_scratch<R>(len: usize, f: impl FnOnce(&mut [u64]) -> R) -> R {
    let mut buf = WIDE_SCRATCH
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let r = f(&mut buf[..len]);
    WIDE_SCRATCH.with(|s| s.borrow_mut().push(buf));
    r
}

/// Runs `f` with a per-thread scratch buffer of `len` words (contents unspecified: callers
/// overwrite what they read). Buffers are reused across calls (nested calls get distinct ones),
/// so hot paths allocate nothing.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| s.borrow_mut().push(buf));
    r
}

impl CpuBackend {
    /// A CPU backend for `ctx`, with tensors of at most [`DEFAULT_MAX_TENSOR_BYTES`].
    pub fn new(ctx: RnsContext) -> Self {
        Self::with_max_tensor_bytes(ctx, DEFAULT_MAX_TENSOR_BYTES)
    }

    /// A CPU backend whose schedulers keep every tensor below `bytes` (at least one polynomial).
    pub fn with_max_tensor_bytes(ctx: RnsContext, bytes: usize) -> Self {
        Self {
            ctx,
            pool: Pool::new(),
            max_tensor_words: (bytes / 4).max(1),
            counters: AtomicCounters::default(),
        }
    }

    /// Wraps `data` as a tensor without copying it (the host side of a single-ciphertext
    /// evaluation); checked like [`Backend::upload`], but not counted as a transfer.
    pub fn from_vec(&self, data: Vec<u32>, shape: Shape) -> Result<CpuTensor> {
        self.ctx.check_upload(data.len(), &shape)?;
        Ok(CpuTensor {
            shape,
            data: self.pool.adopt(data),
        })
    }

    fn mods(&self, shape: &Shape) -> Vec<Modulus> {
        self.ctx.moduli_of(&shape.moduli)
    }

    /// A new tensor of `shape` (contents unspecified until written).
    fn alloc(&self, shape: Shape) -> CpuTensor {
        let words = shape.words(self.ctx.n());
        CpuTensor {
            shape,
            data: self.pool.take(words),
        }
    }

    fn launch(&self) {
        self.counters.launch();
    }

    /// A copy of `a` with `f` applied to each polynomial (`[limbs][n]`) in parallel.
    fn per_poly<F>(&self, a: &CpuTensor, f: F) -> CpuTensor
    where
        F: Fn(&mut [u32]) + Sync + Send,
    {
        self.launch();
        let mut out = CpuTensor {
            shape: a.shape.clone(),
            data: self.pool.copy_of(&a.data),
        };
        let w = a.shape.limbs() * self.ctx.n();
        if w > 0 {
            out.data.par_chunks_mut(w).for_each(f);
        }
        out
    }

    /// `a op= b` per polynomial through a twin `f(a, b, n, moduli)`; `b` may be broadcast.
    fn binary(
        &self,
        op: &'static str,
        a: &CpuTensor,
        b: &CpuTensor,
        f: fn(&mut [u32], &[u32], usize, &[Modulus]),
    ) -> Result<CpuTensor> {
        check_binary(op, &a.shape, &b.shape)?;
        self.launch();
        let n = self.ctx.n();
        let w = a.shape.limbs() * n;
        let mods = self.mods(&a.shape);
        let mut out = CpuTensor {
            shape: a.shape.clone(),
            data: self.pool.copy_of(&a.data),
        };
        if w > 0 {
            let b_words = b.data.len();
            out.data.par_chunks_mut(w).enumerate().for_each(|(p, o)| {
                let bo = (p * w) % b_words;
                f(o, &b.data[bo..bo + w], n, &mods)
            });
        }
        Ok(out)
    }

    /// [`Backend::linear`], and with `rescale` [`Backend::linear_rescale`]: blocks of outputs in
    /// parallel, each packing the inputs its rows use into a cached panel once per panel of
    /// coefficients (see `linear_outputs`); with `rescale`, a block is summed in per-thread
    /// scratch and divided by the last limb straight into the output, so the un-rescaled layer
    /// never exists in memory.
    fn linear_blocks(
        &self,
        x: &CpuTensor,
        comps: usize,
        w: &LinearWeights,
        rescale: bool,
    ) -> Result<CpuTensor> {
        let shape = check_linear(&self.ctx, &x.shape, comps, w)?;
        if rescale {
            expect_form("linear_rescale", &x.shape, Form::Ntt)?;
            if shape.limbs < 2 {
                return Err(BackendError::Shape {
                    op: "linear_rescale",
                    reason: format!("cannot rescale {} limb", shape.limbs),
                });
            }
        }
        self.launch();
        let mods = self.mods(&x.shape);
        let n = self.ctx.n();
        let per_out = comps * shape.limbs * n;
        let mut out_shape = x.shape.with_polys(shape.outputs * comps);
        if rescale {
            out_shape.moduli.truncate(shape.limbs - 1);
        }
        let div = if rescale {
            Some(fused::Division::new(
                &self.ctx,
                &x.shape.moduli,
                shape.limbs - 1,
            )?)
        } else {
            None
        };
        let out_limbs = out_shape.limbs();
        let mut out = self.alloc(out_shape);
        // Blocks: two per thread (each packs its inputs' panels once), and with `rescale` at most
        // LINEAR_SCRATCH_WORDS of un-rescaled outputs.
        let threads = rayon::current_num_threads().max(1);
        let mut block = shape.outputs.div_ceil(2 * threads).max(1);
        if rescale {
            block = block.min(LINEAR_SCRATCH_WORDS / per_out.max(1)).max(1);
        }
        let block_words = block * comps * out_limbs * n;
        out.data
            .par_chunks_mut(block_words)
            .enumerate()
            .for_each(|(k, o)| {
                let j0 = k * block;
                match &div {
                    None => cryptodl_kernels::linear::linear_outputs(
                        o,
                        j0,
                        &x.data,
                        w.rows(),
                        shape,
                        &mods,
                    ),
                    Some(div) => {
                        let outputs = o.len() / (comps * out_limbs * n);
                        let mut sums = self.pool.take(outputs * per_out);
                        cryptodl_kernels::linear::linear_outputs(
                            &mut sums,
                            j0,
                            &x.data,
                            w.rows(),
                            shape,
                            &mods,
                        );
                        for (o, s) in o
                            .chunks_mut(out_limbs * n)
                            .zip(sums.chunks(shape.limbs * n))
                        {
                            div.apply(o, s, n);
                        }
                    }
                }
            });
        Ok(out)
    }

    fn ntt(&self, t: &mut CpuTensor, from: Form) -> Result<()> {
        expect_form(
            if from == Form::Coeff {
                "ntt_forward"
            } else {
                "ntt_inverse"
            },
            &t.shape,
            from,
        )?;
        self.launch();
        let tables = self.ctx.tables_of(&t.shape.moduli);
        let limbs = t.shape.limbs().max(1);
        t.data
            .par_chunks_mut(self.ctx.n())
            .enumerate()
            .for_each(|(i, c)| match from {
                Form::Coeff => tables[i % limbs].forward(c),
                Form::Ntt => tables[i % limbs].inverse(c),
            });
        t.shape.form = match from {
            Form::Coeff => Form::Ntt,
            Form::Ntt => Form::Coeff,
        };
        Ok(())
    }
}

/// Linear weights on the CPU: the CSR weights as they are, and the limb map they are for.
#[derive(Clone, Debug)]
pub struct CpuLinear {
    w: LinearWeights,
    moduli: Vec<usize>,
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Linear = CpuLinear;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn context(&self) -> &RnsContext {
        &self.ctx
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a Shape {
        &t.shape
    }

    fn max_tensor_words(&self) -> usize {
        self.max_tensor_words
    }

    fn keyswitch_words(&self, _limbs: usize, _special: usize, _digits: usize) -> usize {
        0 // fused per polynomial in per-thread scratch
    }

    fn counters(&self) -> Counters {
        self.counters.get()
    }

    fn memory(&self) -> MemoryUse {
        self.pool.usage()
    }

    fn upload(&self, data: &[u32], shape: Shape) -> Result<CpuTensor> {
        self.ctx.check_upload(data.len(), &shape)?;
        self.counters.upload(data.len() as u64 * 4);
        Ok(CpuTensor {
            shape,
            data: self.pool.copy_of(data),
        })
    }

    fn upload_parts(&self, parts: &[&[u32]], shape: Shape) -> Result<CpuTensor> {
        let words: usize = parts.iter().map(|p| p.len()).sum();
        self.ctx.check_upload(words, &shape)?;
        self.counters.upload(words as u64 * 4);
        let mut out = self.alloc(shape);
        let mut rest: &mut [u32] = &mut out.data;
        let mut pieces = Vec::with_capacity(parts.len());
        for p in parts {
            let (head, tail) = rest.split_at_mut(p.len());
            pieces.push((head, *p));
            rest = tail;
        }
        pieces
            .into_par_iter()
            .for_each(|(o, p)| o.copy_from_slice(p));
        Ok(out)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<u32>> {
        self.counters.download(t.data.len() as u64 * 4);
        Ok(t.data.to_vec())
    }

    fn duplicate(&self, t: &CpuTensor) -> Result<CpuTensor> {
        self.launch();
        Ok(t.clone())
    }

    fn slice_components(
        &self,
        t: &CpuTensor,
        group: usize,
        keep: Range<usize>,
    ) -> Result<CpuTensor> {
        let items = check_slice(&t.shape, group, &keep)?;
        self.launch();
        let w = t.shape.limbs() * self.ctx.n();
        let mut out = self.alloc(t.shape.with_polys(items * keep.len()));
        let part = keep.len() * w;
        if part > 0 {
            out.data
                .par_chunks_mut(part)
                .enumerate()
                .for_each(|(i, o)| {
                    o.copy_from_slice(
                        &t.data[(i * group + keep.start) * w..(i * group + keep.end) * w],
                    )
                });
        }
        Ok(out)
    }

    fn join_components(&self, count: usize, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let ks = check_join(count, &parts.iter().map(|p| &p.shape).collect::<Vec<_>>())?;
        self.launch();
        let w = parts[0].shape.limbs() * self.ctx.n();
        let total: usize = ks.iter().sum();
        let mut out = self.alloc(parts[0].shape.with_polys(count * total));
        if total * w > 0 {
            out.data
                .par_chunks_mut(total * w)
                .enumerate()
                .for_each(|(i, o)| {
                    let mut at = 0;
                    for (p, &k) in parts.iter().zip(&ks) {
                        o[at..at + k * w].copy_from_slice(&p.data[i * k * w..(i + 1) * k * w]);
                        at += k * w;
                    }
                });
        }
        Ok(out)
    }

    fn prepare_linear(&self, w: LinearWeights, moduli: &[usize]) -> Result<CpuLinear> {
        self.ctx.check_map(moduli)?;
        let shape = Shape::ntt(w.inputs, moduli.to_vec());
        check_linear(&self.ctx, &shape, 1, &w)?;
        Ok(CpuLinear {
            w,
            moduli: moduli.to_vec(),
        })
    }

    fn linear_prepared(&self, x: &CpuTensor, comps: usize, w: &CpuLinear) -> Result<CpuTensor> {
        check_prepared_map("linear", &x.shape, &w.moduli)?;
        self.linear(x, comps, &w.w)
    }

    fn linear_rescale_prepared(
        &self,
        x: &CpuTensor,
        comps: usize,
        w: &CpuLinear,
    ) -> Result<CpuTensor> {
        check_prepared_map("linear_rescale", &x.shape, &w.moduli)?;
        self.linear_rescale(x, comps, &w.w)
    }

    fn linear_acc_prepared(
        &self,
        acc: &mut CpuTensor,
        x: &CpuTensor,
        comps: usize,
        w: &CpuLinear,
    ) -> Result<()> {
        check_prepared_map("linear_acc", &x.shape, &w.moduli)?;
        self.linear_acc(acc, x, comps, &w.w)
    }

    fn linear(&self, x: &CpuTensor, comps: usize, w: &LinearWeights) -> Result<CpuTensor> {
        self.linear_blocks(x, comps, w, false)
    }

    fn linear_acc(
        &self,
        acc: &mut CpuTensor,
        x: &CpuTensor,
        comps: usize,
        w: &LinearWeights,
    ) -> Result<()> {
        let part = self.linear_blocks(x, comps, w, false)?;
        *acc = self.add(acc, &part)?;
        Ok(())
    }

    fn linear_rescale(&self, x: &CpuTensor, comps: usize, w: &LinearWeights) -> Result<CpuTensor> {
        // Fused when a layer's un-rescaled outputs fit a few scratch blocks per thread; for wider
        // layers, smaller blocks would each pack the panels of (nearly) every input again, which
        // costs more than writing the layer once and rescaling it.
        let shape = check_linear(&self.ctx, &x.shape, comps, w)?;
        let per_out = comps * shape.limbs * self.ctx.n();
        let blocks = (shape.outputs * per_out).div_ceil(LINEAR_SCRATCH_WORDS);
        if blocks <= 2 * rayon::current_num_threads().max(1) {
            self.linear_blocks(x, comps, w, true)
        } else {
            let y = self.linear_blocks(x, comps, w, false)?;
            self.divide_round(&y, 1)
        }
    }

    fn truncate_limbs(&self, t: &CpuTensor, limbs: usize) -> Result<CpuTensor> {
        check_truncate(&t.shape, limbs)?;
        self.launch();
        let n = self.ctx.n();
        let w = t.shape.limbs() * n;
        let mut shape = t.shape.clone();
        shape.moduli.truncate(limbs);
        let mut out = self.alloc(shape);
        out.data
            .par_chunks_mut(limbs * n)
            .zip(t.data.par_chunks(w))
            .for_each(|(o, p)| o.copy_from_slice(&p[..limbs * n]));
        Ok(out)
    }

    fn ntt_forward(&self, t: &mut CpuTensor) -> Result<()> {
        self.ntt(t, Form::Coeff)
    }

    fn ntt_inverse(&self, t: &mut CpuTensor) -> Result<()> {
        self.ntt(t, Form::Ntt)
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("add", a, b, elementwise::add)
    }

    fn sub(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        self.binary("sub", a, b, elementwise::sub)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        expect_form("mul", &a.shape, Form::Ntt)?;
        self.binary("mul", a, b, elementwise::mul)
    }

    fn negate(&self, a: &CpuTensor) -> Result<CpuTensor> {
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| elementwise::neg(o, self.ctx.n(), &mods)))
    }

    fn mul_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        check_scalars(&self.ctx, "mul_scalar", &a.shape, scalars)?;
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| {
            elementwise::mul_scalar(o, scalars, self.ctx.n(), &mods)
        }))
    }

    fn add_scalar(&self, a: &CpuTensor, scalars: &[u32]) -> Result<CpuTensor> {
        check_scalars(&self.ctx, "add_scalar", &a.shape, scalars)?;
        let mods = self.mods(&a.shape);
        Ok(self.per_poly(a, |o| {
            elementwise::add_scalar(o, scalars, self.ctx.n(), &mods)
        }))
    }

    fn mul_sum(&self, parts: &[&CpuTensor], plains: &CpuTensor) -> Result<CpuTensor> {
        let shapes: Vec<&Shape> = parts.iter().map(|p| &p.shape).collect();
        check_mul_sum(&shapes, &plains.shape)?;
        self.launch();
        let n = self.ctx.n();
        let shape = parts[0].shape.clone();
        let (limbs, w) = (shape.limbs(), shape.polys * shape.limbs() * n);
        let mods = self.mods(&shape);
        let mut out = self.alloc(shape);
        out.data.par_chunks_mut(n).enumerate().for_each(|(at, o)| {
            let r = at * n..(at + 1) * n;
            let a: Vec<&[u32]> = parts.iter().map(|p| &p.data[r.clone()]).collect();
            let b: Vec<&[u32]> = (0..parts.len())
                .map(|i| &plains.data[i * w + r.start..i * w + r.end])
                .collect();
            elementwise::mul_sum_limb(o, &a, &b, &mods[at % limbs]);
        });
        Ok(out)
    }

    fn mac(&self, acc: &mut CpuTensor, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
        check_binary("mac", &a.shape, &b.shape)?;
        expect_form("mac", &a.shape, Form::Ntt)?;
        if acc.shape != a.shape {
            return Err(BackendError::Shape {
                op: "mac",
                reason: format!("accumulator {:?} vs operand {:?}", acc.shape, a.shape),
            });
        }
        self.launch();
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

    fn add_scaled_prefix(&self, acc: &mut CpuTensor, a: &CpuTensor, scalars: &[u32]) -> Result<()> {
        check_scaled_prefix(&self.ctx, &acc.shape, &a.shape, scalars)?;
        self.launch();
        let n = self.ctx.n();
        let (wa, wacc) = (a.shape.limbs() * n, acc.shape.limbs() * n);
        let mods = self.mods(&a.shape);
        if wa > 0 {
            acc.data
                .par_chunks_mut(wacc)
                .zip(a.data.par_chunks(wa))
                .for_each(|(o, x)| elementwise::mul_scalar_acc(&mut o[..wa], x, scalars, n, &mods));
        }
        Ok(())
    }

    fn tensor(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        expect_form("tensor", &a.shape, Form::Ntt)?;
        if a.shape != b.shape || !a.shape.polys.is_multiple_of(2) {
            return Err(BackendError::Shape {
                op: "tensor",
                reason: format!("operands {:?} and {:?}", a.shape, b.shape),
            });
        }
        self.launch();
        let n = self.ctx.n();
        let comp = a.shape.limbs() * n;
        let count = a.shape.polys / 2;
        let mods = self.mods(&a.shape);
        let mut out = self.alloc(a.shape.with_polys(3 * count));
        if comp > 0 {
            out.data
                .par_chunks_mut(3 * comp)
                .zip(a.data.par_chunks(2 * comp).zip(b.data.par_chunks(2 * comp)))
                .for_each(|(o, (x, y))| elementwise::tensor(x, y, o, n, &mods));
        }
        Ok(out)
    }

    fn automorphism_ntt(&self, a: &CpuTensor, g: usize) -> Result<CpuTensor> {
        expect_form("automorphism_ntt", &a.shape, Form::Ntt)?;
        let n = self.ctx.n();
        check_odd(g)?;
        self.launch();
        let perm = automorphism::galois_permutation_ntt(g % (2 * n), n);
        let mut out = self.alloc(a.shape.clone());
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .for_each(|(o, x)| automorphism::automorphism_ntt(x, o, &perm));
        Ok(out)
    }

    fn automorphism_coeff(&self, a: &CpuTensor, g: usize) -> Result<CpuTensor> {
        expect_form("automorphism_coeff", &a.shape, Form::Coeff)?;
        let n = self.ctx.n();
        check_odd(g)?;
        self.launch();
        let mut out = self.alloc(a.shape.clone());
        let mods = self.mods(&a.shape);
        let limbs = a.shape.limbs().max(1);
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .enumerate()
            .for_each(|(i, (o, x))| {
                automorphism::automorphism_coeff(x, o, g % (2 * n), n, &mods[i % limbs..][..1])
            });
        Ok(out)
    }

    fn basis_convert(
        &self,
        a: &CpuTensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<CpuTensor> {
        check_convert("basis_convert", &self.ctx, &a.shape, groups, targets)?;
        self.launch();
        let n = self.ctx.n();
        let limbs = a.shape.limbs();
        let convs = groups
            .iter()
            .map(|g| self.ctx.base_converter(&a.shape.moduli[g.clone()], targets))
            .collect::<Result<Vec<_>>>()?;
        let block = targets.len() * n;
        let mut out = self.alloc(Shape::coeff(a.shape.polys * groups.len(), targets.to_vec()));
        if block > 0 {
            out.data
                .par_chunks_mut(block)
                .enumerate()
                .for_each(|(pg, o)| {
                    let (p, gi) = (pg / groups.len(), pg % groups.len());
                    let g = &groups[gi];
                    let poly = &a.data[p * limbs * n..(p + 1) * limbs * n];
                    with_scratch(g.len() * n, |scratch| {
                        convs[gi].convert(&poly[g.start * n..g.end * n], o, n, scratch)
                    });
                });
        }
        Ok(out)
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
        self.launch();
        let polys = digits.shape.polys / dnum;
        let mods = self.mods(&digits.shape);
        let mut out = self.alloc(digits.shape.with_polys(2 * polys));
        if limbs > 0 {
            // The digits in use are a prefix of the key's (fewer at lower levels).
            let used = &key.data[..2 * dnum * key_limbs * n];
            out.data
                .par_chunks_mut(2 * limbs * n)
                .zip(digits.data.par_chunks(dnum * limbs * n))
                .for_each(|(o, d)| keyswitch::keyswitch_inner(d, used, key_map, &mods, n, o));
        }
        Ok(out)
    }

    fn divide_round(&self, a: &CpuTensor, drop: usize) -> Result<CpuTensor> {
        expect_form("divide_round", &a.shape, Form::Ntt)?;
        let n = self.ctx.n();
        let limbs = a.shape.limbs();
        if drop == 0 || drop >= limbs {
            return Err(BackendError::Shape {
                op: "divide_round",
                reason: format!("cannot drop {drop} of {limbs} limbs"),
            });
        }
        self.launch();
        let keep_n = limbs - drop;
        let mut shape = a.shape.clone();
        shape.moduli.truncate(keep_n);
        let div = fused::Division::new(&self.ctx, &a.shape.moduli, keep_n)?;
        let mut out = self.alloc(shape);
        out.data
            .par_chunks_mut(keep_n * n)
            .zip(a.data.par_chunks(limbs * n))
            .for_each(|(o, x)| div.apply(o, x, n));
        Ok(out)
    }

    fn keyswitch_ext(&self, d: &CpuTensor, key: &SwitchKey<CpuTensor>) -> Result<CpuTensor> {
        let plan = KeySwitchPlan::new(&self.ctx, &d.shape, key, &key.key.shape)?;
        self.launch();
        fused::keyswitch_ext(self, d, key, &plan)
    }

    fn keyswitch(&self, d: &CpuTensor, key: &SwitchKey<CpuTensor>) -> Result<CpuTensor> {
        let plan = KeySwitchPlan::new(&self.ctx, &d.shape, key, &key.key.shape)?;
        self.launch();
        fused::keyswitch(self, d, key, &plan)
    }

    fn mul_relin_rescale(
        &self,
        a: &CpuTensor,
        b: &CpuTensor,
        key: &SwitchKey<CpuTensor>,
    ) -> Result<CpuTensor> {
        expect_form("mul_relin_rescale", &a.shape, Form::Ntt)?;
        if a.shape != b.shape || !a.shape.polys.is_multiple_of(2) || a.shape.limbs() < 2 {
            return Err(BackendError::Shape {
                op: "mul_relin_rescale",
                reason: format!(
                    "operands must be equal [count][2][limbs] tensors above level 0, got {:?} and {:?}",
                    a.shape, b.shape
                ),
            });
        }
        let c2_shape = Shape::ntt(a.shape.polys / 2, a.shape.moduli.clone());
        let plan = KeySwitchPlan::new(&self.ctx, &c2_shape, key, &key.key.shape)?;
        self.launch();
        fused::mul_relin_rescale(self, a, b, key, &plan)
    }

    fn relin_rescale(&self, prod: &CpuTensor, key: &SwitchKey<CpuTensor>) -> Result<CpuTensor> {
        check_relin_rescale(&prod.shape)?;
        let c2_shape = Shape::ntt(prod.shape.polys / 3, prod.shape.moduli.clone());
        let plan = KeySwitchPlan::new(&self.ctx, &c2_shape, key, &key.key.shape)?;
        self.launch();
        fused::relin_rescale(self, prod, key, &plan)
    }
}

fn check_odd(g: usize) -> Result<()> {
    if g.is_multiple_of(2) {
        return Err(BackendError::Shape {
            op: "automorphism",
            reason: format!("Galois element {g} must be odd"),
        });
    }
    Ok(())
}
