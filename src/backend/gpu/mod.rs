//! The wgpu backend: tensors resident in device buffers, WGSL kernels from `shaders/`.

mod convert;
mod cost;
mod error;
mod linear;
mod ntt;
mod runtime;
pub mod shaders;

use convert::{ConvBuffers, DivRoundBuffers};
pub use error::GpuError;
use ntt::{ConvLoad, NttIo};

pub use runtime::{
    list_adapters, AdapterChoice, AdapterSummary, GpuRuntime, PooledBuffer, RuntimeOptions,
    ADAPTER_ENV, ARITH_ENV, WGPU_MAX_BINDING,
};
use shaders::Family;

use super::cost::KernelCost;
use super::{
    check_binary, check_convert, check_join, check_keyswitch_inner, check_linear,
    check_prepared_linear, check_relin_rescale, check_scalars, check_scaled_prefix, check_slice,
    check_truncate, expect_form, AtomicCounters, Backend, BackendError, Counters, Form,
    KeySwitchPlan, LinearWeights, MemoryUse, Result, RnsContext, Shape, SwitchKey,
};
use linear::LinearTiles;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// A tensor resident in a device buffer.
pub struct GpuTensor {
    shape: Shape,
    buf: PooledBuffer,
}

impl GpuTensor {
    /// The device buffer (valid words: `shape.words(n)`).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
}

/// A view of a tensor buffer for a kernel: limb `l` of poly `p` at `(off + p * stride + l) * n`.
#[derive(Clone, Copy)]
struct View<'a> {
    buf: &'a wgpu::Buffer,
    off: u32,
    stride: u32,
}

impl<'a> View<'a> {
    fn whole(t: &'a GpuTensor) -> Self {
        Self {
            buf: t.buffer(),
            off: 0,
            stride: t.shape.limbs() as u32,
        }
    }
}

/// Cache key of a base conversion: source limb map, groups, targets.
type ConvKey = (Vec<usize>, Vec<Range<usize>>, Vec<usize>);
/// Cache key of a divide-and-round: limb map, dropped limbs.
type DivRoundKey = (Vec<usize>, usize);

/// The wgpu implementation of [`Backend`].
pub struct GpuBackend {
    rt: Arc<GpuRuntime>,
    ctx: RnsContext,
    moduli: wgpu::Buffer,
    tables: wgpu::Buffer,
    maps: Mutex<HashMap<Vec<usize>, Arc<wgpu::Buffer>>>,
    conv: Mutex<HashMap<ConvKey, Arc<ConvBuffers>>>,
    conv_loads: Mutex<HashMap<ConvKey, Arc<ConvLoad>>>,
    divround: Mutex<HashMap<DivRoundKey, Arc<DivRoundBuffers>>>,
    counters: AtomicCounters,
    /// Coefficients per NTT tile: [`shaders::NTT_TILE_WIDE`] where the adapter has the
    /// workgroup storage, else [`shaders::NTT_TILE`].
    ntt_tile: u32,
}

/// Component `i` of every ciphertext of `t` (`comps` components each): a view and its count.
#[derive(Clone, Copy)]
struct Components<'a> {
    view: View<'a>,
    polys: usize,
}

fn component(t: &GpuTensor, i: u32, comps: u32) -> Components<'_> {
    let l = t.shape.limbs() as u32;
    Components {
        view: View {
            buf: t.buffer(),
            off: i * l,
            stride: comps * l,
        },
        polys: t.shape.polys / comps as usize,
    }
}

/// The entry of `cache` for `key`, made by `make` (and kept) on a miss: the backend's tables
/// (limb maps, conversion and divide-and-round constants) are built and uploaded once.
fn cached<K: std::hash::Hash + Eq, V>(
    cache: &Mutex<HashMap<K, Arc<V>>>,
    key: K,
    make: impl FnOnce() -> Result<V>,
) -> Result<Arc<V>> {
    let mut cache = cache.lock().map_err(|_| GpuError::Poisoned)?;
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let v = Arc::new(make()?);
    cache.insert(key, v.clone());
    Ok(v)
}

/// Distinct moduli of a limb map.
fn distinct(map: &[usize]) -> u64 {
    map.iter().collect::<std::collections::BTreeSet<_>>().len() as u64
}

fn log2(n: usize) -> u32 {
    n.trailing_zeros()
}

impl GpuBackend {
    /// A backend for `ctx` on runtime `rt` (uploads the moduli and NTT tables once).
    pub fn new(rt: Arc<GpuRuntime>, ctx: RnsContext) -> Result<Self> {
        let n = ctx.n();
        let mut moduli = Vec::with_capacity(ctx.primes().len() * 8);
        let mut tables = Vec::with_capacity(ctx.primes().len() * 4 * n);
        for (m, t) in ctx.moduli().iter().zip(ctx.tables()) {
            moduli.extend_from_slice(&[
                m.value(),
                m.barrett_mu(),
                m.bits(),
                t.n_inv(),
                t.n_inv_shoup(),
                0,
                0,
                0,
            ]);
            tables.extend_from_slice(t.psi_rev());
            tables.extend_from_slice(t.psi_rev_shoup());
            tables.extend_from_slice(t.psi_inv_rev());
            tables.extend_from_slice(t.psi_inv_rev_shoup());
        }
        rt.check_binding(tables.len() as u64 * 4)?;
        let moduli = rt.upload_constant(&moduli);
        let tables = rt.upload_constant(&tables);
        Ok(Self {
            ctx,
            moduli,
            tables,
            maps: Mutex::new(HashMap::new()),
            conv: Mutex::new(HashMap::new()),
            conv_loads: Mutex::new(HashMap::new()),
            divround: Mutex::new(HashMap::new()),
            counters: AtomicCounters::default(),
            ntt_tile: rt.adapter().ntt_tile(),
            rt,
        })
    }

    /// Coefficients per NTT workgroup tile: a transform of `n <= tile` is one dispatch, larger
    /// ones two.
    pub fn ntt_tile(&self) -> u32 {
        self.ntt_tile
    }

    /// The same backend with NTT tiles of `tile` coefficients ([`shaders::NTT_TILE`], or
    /// [`shaders::NTT_TILE_WIDE`] where the adapter has 32 KiB of workgroup storage): tests run
    /// both.
    pub fn with_ntt_tile(mut self, tile: u32) -> Result<Self> {
        let have = self.rt.limits().max_compute_workgroup_storage_size;
        if tile != shaders::NTT_TILE && tile != shaders::NTT_TILE_WIDE {
            return Err(BackendError::Shape {
                op: "ntt",
                reason: format!(
                    "NTT tiles are {} or {} coefficients, not {tile}",
                    shaders::NTT_TILE,
                    shaders::NTT_TILE_WIDE
                ),
            });
        }
        if 4 * tile > have {
            return Err(GpuError::Internal(format!(
                "an NTT tile of {tile} coefficients needs {} bytes of workgroup storage; the adapter has {have}",
                4 * tile
            ))
            .into());
        }
        self.ntt_tile = tile;
        Ok(self)
    }

    /// Records one dispatch and counts it, with its counted cost `cost` (from `gpu::cost`).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        family: Family,
        entry: &'static str,
        bindings: &[&wgpu::Buffer],
        params: &[u32],
        workgroups: u64,
        cost: KernelCost,
    ) -> std::result::Result<(), GpuError> {
        self.rt
            .dispatch(family, entry, bindings, params, workgroups)?;
        if workgroups > 0 {
            self.counters.launch();
            self.counters.kernel(family.cost_family(), cost);
        }
        Ok(())
    }

    /// Records the tiled linear kernel into `out` (checked by the caller), adding to its words
    /// when `accumulate`.
    fn linear_dispatch(
        &self,
        out: &GpuTensor,
        x: &GpuTensor,
        comps: usize,
        lin: &GpuLinear,
        accumulate: bool,
    ) -> Result<()> {
        let op = if accumulate { "linear_acc" } else { "linear" };
        if !Arc::ptr_eq(&lin.rt, &self.rt) {
            return Err(BackendError::Shape {
                op,
                reason: "the weights were prepared on another GPU runtime (device); prepare them on this one".into(),
            });
        }
        let shape = check_prepared_linear(
            op,
            &self.ctx,
            &x.shape,
            comps,
            &lin.moduli,
            (lin.inputs, lin.outputs),
        )?;
        self.check_word_range(shape.outputs * comps, shape.limbs)?;
        let nnz = lin.nnz;
        let tiles = &lin.tiles;
        let (rows, pairs, bias) = (&lin.rows, &lin.pairs, &lin.bias);
        let lmap = self.map_buffer(&x.shape.moduli)?;
        let n = self.ctx.n();
        let coeff_tiles = n / shaders::LINEAR_TC;
        let params = [
            n as u32,
            shape.limbs as u32,
            comps as u32,
            nnz as u32,
            tiles.blocks as u32,
            coeff_tiles as u32,
            tiles.u_off,
            tiles.perm_off,
            tiles.seg_off,
            tiles.upos_off,
            u32::from(accumulate),
            0,
        ];
        let workgroups = (tiles.blocks * comps * shape.limbs * coeff_tiles) as u64;
        let table_bytes =
            4 * (tiles.rows.len() + 2 * nnz * shape.limbs + lin.outputs * shape.limbs) as u64;
        self.dispatch(
            Family::Linear,
            "linear",
            &[
                out.buffer(),
                x.buffer(),
                rows,
                pairs,
                bias,
                &self.moduli,
                &*lmap,
            ],
            &params,
            workgroups,
            cost::linear(
                self.rt.arith(),
                cost::LinearShape {
                    inputs: tiles.used_inputs as u64,
                    block_inputs: tiles.block_inputs as u64,
                    outputs: shape.outputs as u64,
                    accumulate,
                    nnz: nnz as u64,
                    plane: (comps * shape.limbs * n) as u64,
                },
                table_bytes,
            ),
        )?;
        Ok(())
    }

    /// Key switching of the polynomials of the view `d` (one per ciphertext, NTT form over
    /// `moduli`) without copies: the inverse NTT reads the view, and after the inner product
    /// `P * x` is added to component `c` of the result for each `(c, x)` of `adds` (views of
    /// ciphertext components over `moduli`) before one division by `P` and `extra_drop` more
    /// limbs (1: a rescale at the same time).
    fn switch_from_view(
        &self,
        d: Components,
        moduli: &[usize],
        key: &SwitchKey<GpuTensor>,
        adds: &[(u32, Components)],
        extra_drop: usize,
    ) -> Result<GpuTensor> {
        let count = d.polys;
        let plan = KeySwitchPlan::new(
            &self.ctx,
            &Shape::ntt(count, moduli.to_vec()),
            key,
            &key.key.shape,
        )?;
        let coeff = self.alloc(Shape::coeff(count, moduli.to_vec()))?;
        self.ntt_view(
            View::whole(&coeff),
            NttIo::From(d.view),
            count,
            moduli,
            false,
        )?;
        let ext = self.basis_convert_ntt(&coeff, &plan.digits, &plan.targets)?;
        drop(coeff);
        let acc = self.keyswitch_inner(&ext, plan.digits.len(), &key.key, &plan.key_map)?;
        drop(ext);
        let p_mod = self.ctx.product_mod(&key.special, moduli);
        let ext_limbs = acc.shape.limbs() as u32;
        for &(c, x) in adds {
            let out = View {
                buf: acc.buffer(),
                off: c * ext_limbs,
                stride: 2 * ext_limbs,
            };
            self.ew(
                "ew_mul_scalar_acc",
                out,
                x.view,
                x.view,
                count,
                count,
                moduli,
                Some(&p_mod),
            )?;
        }
        self.divide_round(&acc, key.special.len() + extra_drop)
    }

    /// The runtime (adapter, limits, counters).
    pub fn runtime(&self) -> &Arc<GpuRuntime> {
        &self.rt
    }

    fn map_buffer(&self, map: &[usize]) -> Result<Arc<wgpu::Buffer>> {
        cached(&self.maps, map.to_vec(), || {
            let words: Vec<u32> = map.iter().map(|&i| i as u32).collect();
            Ok(self.rt.upload_constant(&words))
        })
    }

    fn alloc(&self, shape: Shape) -> Result<GpuTensor> {
        self.ctx.check_map(&shape.moduli)?;
        let buf = self.rt.alloc(shape.words(self.ctx.n()))?;
        Ok(GpuTensor { shape, buf })
    }

    fn check_word_range(&self, polys: usize, limbs: usize) -> Result<()> {
        let words = (polys as u64) * (limbs as u64) * (self.ctx.n() as u64);
        if words >= 1 << 32 {
            return Err(GpuError::TensorTooLarge {
                bytes: words * 4,
                max: 1 << 34,
            }
            .into());
        }
        Ok(())
    }

    /// Records one element-wise kernel: `out` view, `a` and `b` views over `polys` x `map`.
    #[allow(clippy::too_many_arguments)]
    fn ew(
        &self,
        entry: &'static str,
        out: View,
        a: View,
        b: View,
        b_polys: usize,
        polys: usize,
        map: &[usize],
        scalars: Option<&[u32]>,
    ) -> Result<()> {
        if polys == 0 || map.is_empty() {
            return Ok(());
        }
        self.check_word_range(polys, map.len())?;
        let n = self.ctx.n();
        let lmap = self.map_buffer(map)?;
        let sc = match scalars {
            Some(s) => {
                let mut words = Vec::with_capacity(2 * s.len());
                for (&v, &mi) in s.iter().zip(map) {
                    let m = &self.ctx.moduli()[mi];
                    words.push(v);
                    words.push(m.shoup(v));
                }
                self.rt.upload_constant(&words)
            }
            None => self.rt.upload_constant(&[]),
        };
        let params = [
            n as u32,
            log2(n),
            map.len() as u32,
            polys as u32,
            a.off,
            a.stride,
            b.off,
            b.stride,
            out.off,
            out.stride,
            b_polys.max(1) as u32,
            0,
        ];
        let total = (polys * map.len() * n) as u64;
        self.dispatch(
            Family::Elementwise,
            entry,
            &[out.buf, a.buf, b.buf, &self.moduli, &*lmap, &sc],
            &params,
            total.div_ceil(u64::from(shaders::WORKGROUP_SIZE)),
            cost::elementwise(
                self.rt.arith(),
                entry,
                total,
                polys as u64,
                b_polys.max(1) as u64,
                map.len() as u64,
            ),
        )?;
        Ok(())
    }

    fn binary(
        &self,
        op: &'static str,
        entry: &'static str,
        a: &GpuTensor,
        b: &GpuTensor,
    ) -> Result<GpuTensor> {
        check_binary(op, &a.shape, &b.shape)?;
        let out = self.alloc(a.shape.clone())?;
        self.ew(
            entry,
            View::whole(&out),
            View::whole(a),
            View::whole(b),
            b.shape.polys,
            a.shape.polys,
            &a.shape.moduli,
            None,
        )?;
        Ok(out)
    }
}

impl GpuBackend {
    /// `ew_<op>` with one scalar per limb (mul_scalar, add_scalar): same checks, same dispatch.
    fn scalar_op(&self, op: &'static str, a: &GpuTensor, scalars: &[u32]) -> Result<GpuTensor> {
        check_scalars(&self.ctx, op, &a.shape, scalars)?;
        let out = self.alloc(a.shape.clone())?;
        let va = View::whole(a);
        let entry = if op == "mul_scalar" {
            "ew_mul_scalar"
        } else {
            "ew_add_scalar"
        };
        self.ew(
            entry,
            View::whole(&out),
            va,
            va,
            a.shape.polys,
            a.shape.polys,
            &a.shape.moduli,
            Some(scalars),
        )?;
        Ok(out)
    }
}

/// A linear layer on the GPU: the tiled kernel's tables, the weights with their Shoup
/// companions in kernel order and the bias, uploaded once (validated then: applying it checks
/// only the input).
pub struct GpuLinear {
    /// The runtime (device) its buffers live on.
    rt: Arc<GpuRuntime>,
    /// Ciphertexts in and out, and weights (checked when prepared).
    inputs: usize,
    outputs: usize,
    nnz: usize,
    moduli: Vec<usize>,
    tiles: LinearTiles,
    rows: wgpu::Buffer,
    pairs: wgpu::Buffer,
    bias: wgpu::Buffer,
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Linear = GpuLinear;

    fn name(&self) -> String {
        format!("gpu ({})", self.rt.adapter().name)
    }

    fn context(&self) -> &RnsContext {
        &self.ctx
    }

    fn shape<'a>(&self, t: &'a GpuTensor) -> &'a Shape {
        &t.shape
    }

    fn max_tensor_words(&self) -> usize {
        let l = self.rt.limits();
        let bytes = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        (bytes / 4).min(u64::from(u32::MAX)) as usize
    }

    fn counters(&self) -> Counters {
        self.counters.get()
    }

    fn memory(&self) -> MemoryUse {
        self.rt.memory()
    }

    fn synchronize(&self) -> Result<()> {
        Ok(self.rt.wait_idle()?)
    }

    fn upload(&self, data: &[u32], shape: Shape) -> Result<GpuTensor> {
        self.ctx.check_upload(data.len(), &shape)?;
        let buf = self.rt.upload(data)?;
        self.counters.upload(data.len() as u64 * 4);
        Ok(GpuTensor { shape, buf })
    }

    fn upload_parts(&self, parts: &[&[u32]], shape: Shape) -> Result<GpuTensor> {
        let words: usize = parts.iter().map(|p| p.len()).sum();
        self.ctx.check_upload(words, &shape)?;
        let buf = self.rt.upload_parts(parts)?;
        self.counters.upload(words as u64 * 4);
        Ok(GpuTensor { shape, buf })
    }

    fn download(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        let words = t.shape.words(self.ctx.n());
        let out = self.rt.download(t.buffer(), words)?;
        self.counters.download(words as u64 * 4);
        Ok(out)
    }

    fn duplicate(&self, t: &GpuTensor) -> Result<GpuTensor> {
        let out = self.alloc(t.shape.clone())?;
        let words = t.shape.words(self.ctx.n()) as u64;
        self.rt.copy(t.buffer(), 0, out.buffer(), 0, words)?;
        self.counters
            .kernel(super::cost::CostFamily::Copy, cost::copy(words));
        Ok(out)
    }

    fn slice_components(
        &self,
        t: &GpuTensor,
        group: usize,
        keep: Range<usize>,
    ) -> Result<GpuTensor> {
        let items = check_slice(&t.shape, group, &keep)?;
        let limbs = t.shape.limbs() as u32;
        let out = self.alloc(t.shape.with_polys(items * keep.len()))?;
        // One copy dispatch per kept component, over every item at once.
        for (j, comp) in keep.clone().enumerate() {
            let src = View {
                buf: t.buffer(),
                off: comp as u32 * limbs,
                stride: group as u32 * limbs,
            };
            let dst = View {
                buf: out.buffer(),
                off: j as u32 * limbs,
                stride: keep.len() as u32 * limbs,
            };
            self.ew(
                "ew_copy",
                dst,
                src,
                src,
                items,
                items,
                &t.shape.moduli,
                None,
            )?;
        }
        Ok(out)
    }

    fn join_components(&self, count: usize, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let ks = check_join(count, &parts.iter().map(|p| &p.shape).collect::<Vec<_>>())?;
        let map = &parts[0].shape.moduli;
        let limbs = map.len() as u32;
        let total: usize = ks.iter().sum();
        let out = self.alloc(parts[0].shape.with_polys(count * total))?;
        // One copy dispatch per component of each part, over every item at once.
        let mut base = 0u32;
        for (p, &k) in parts.iter().zip(&ks) {
            for j in 0..k as u32 {
                let src = View {
                    buf: p.buffer(),
                    off: j * limbs,
                    stride: k as u32 * limbs,
                };
                let dst = View {
                    buf: out.buffer(),
                    off: (base + j) * limbs,
                    stride: total as u32 * limbs,
                };
                self.ew("ew_copy", dst, src, src, count, count, map, None)?;
            }
            base += k as u32;
        }
        Ok(out)
    }

    fn prepare_linear(&self, w: LinearWeights, moduli: &[usize]) -> Result<GpuLinear> {
        self.ctx.check_map(moduli)?;
        check_linear(&self.ctx, &Shape::ntt(w.inputs, moduli.to_vec()), 1, &w)?;
        let nnz = w.cols.len();
        let tiles = LinearTiles::new(&w);
        let mut pairs = Vec::with_capacity(2 * nnz * moduli.len());
        for (l, &m) in moduli.iter().enumerate() {
            let m = &self.ctx.moduli()[m];
            for &e in &tiles.order {
                let v = w.values[l * nnz + e];
                pairs.extend_from_slice(&[v, m.shoup(v)]);
            }
        }
        // The tables are bound whole, like tensors.
        for words in [tiles.rows.len(), pairs.len(), w.bias.len()] {
            self.rt.check_binding(words as u64 * 4)?;
        }
        Ok(GpuLinear {
            rows: self.rt.upload_constant(&tiles.rows),
            pairs: self.rt.upload_constant(&pairs),
            bias: self.rt.upload_constant(&w.bias),
            tiles,
            moduli: moduli.to_vec(),
            inputs: w.inputs,
            outputs: w.outputs(),
            nnz,
            rt: self.rt.clone(),
        })
    }

    fn linear_prepared(&self, x: &GpuTensor, comps: usize, w: &GpuLinear) -> Result<GpuTensor> {
        let out = self.alloc(x.shape.with_polys(w.outputs * comps))?;
        self.linear_dispatch(&out, x, comps, w, false)?;
        Ok(out)
    }

    fn linear_acc_prepared(
        &self,
        acc: &mut GpuTensor,
        x: &GpuTensor,
        comps: usize,
        w: &GpuLinear,
    ) -> Result<()> {
        let want = x.shape.with_polys(w.outputs * comps);
        if acc.shape != want {
            return Err(BackendError::Shape {
                op: "linear_acc",
                reason: format!("accumulator {:?}, the layer gives {want:?}", acc.shape),
            });
        }
        self.linear_dispatch(acc, x, comps, w, true)
    }

    fn truncate_limbs(&self, t: &GpuTensor, limbs: usize) -> Result<GpuTensor> {
        check_truncate(&t.shape, limbs)?;
        let map = &t.shape.moduli[..limbs];
        let mut out_shape = t.shape.clone();
        out_shape.moduli.truncate(limbs);
        let out = self.alloc(out_shape)?;
        let src = View::whole(t);
        self.ew(
            "ew_copy",
            View::whole(&out),
            src,
            src,
            t.shape.polys,
            t.shape.polys,
            map,
            None,
        )?;
        Ok(out)
    }

    fn ntt_forward(&self, t: &mut GpuTensor) -> Result<()> {
        expect_form("ntt_forward", &t.shape, Form::Coeff)?;
        self.ntt_view(
            View::whole(t),
            NttIo::InPlace,
            t.shape.polys,
            &t.shape.moduli,
            true,
        )?;
        t.shape.form = Form::Ntt;
        Ok(())
    }

    fn ntt_inverse(&self, t: &mut GpuTensor) -> Result<()> {
        expect_form("ntt_inverse", &t.shape, Form::Ntt)?;
        self.ntt_view(
            View::whole(t),
            NttIo::InPlace,
            t.shape.polys,
            &t.shape.moduli,
            false,
        )?;
        t.shape.form = Form::Coeff;
        Ok(())
    }

    fn ntt_inverse_out_of_place(&self, t: &GpuTensor) -> Result<GpuTensor> {
        expect_form("ntt_inverse", &t.shape, Form::Ntt)?;
        let mut shape = t.shape.clone();
        shape.form = Form::Coeff;
        let out = self.alloc(shape)?;
        self.ntt_view(
            View::whole(&out),
            NttIo::From(View::whole(t)),
            t.shape.polys,
            &t.shape.moduli,
            false,
        )?;
        Ok(out)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("add", "ew_add", a, b)
    }

    fn sub(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("sub", "ew_sub", a, b)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        expect_form("mul", &a.shape, Form::Ntt)?;
        self.binary("mul", "ew_mul", a, b)
    }

    fn negate(&self, a: &GpuTensor) -> Result<GpuTensor> {
        let out = self.alloc(a.shape.clone())?;
        let va = View::whole(a);
        self.ew(
            "ew_negate",
            View::whole(&out),
            va,
            va,
            a.shape.polys,
            a.shape.polys,
            &a.shape.moduli,
            None,
        )?;
        Ok(out)
    }

    fn mul_scalar(&self, a: &GpuTensor, scalars: &[u32]) -> Result<GpuTensor> {
        self.scalar_op("mul_scalar", a, scalars)
    }

    fn add_scalar(&self, a: &GpuTensor, scalars: &[u32]) -> Result<GpuTensor> {
        self.scalar_op("add_scalar", a, scalars)
    }

    fn add_scaled_prefix(&self, acc: &mut GpuTensor, a: &GpuTensor, scalars: &[u32]) -> Result<()> {
        check_scaled_prefix(&self.ctx, &acc.shape, &a.shape, scalars)?;
        let out = View {
            buf: acc.buffer(),
            off: 0,
            stride: acc.shape.limbs() as u32,
        };
        let va = View::whole(a);
        self.ew(
            "ew_mul_scalar_acc",
            out,
            va,
            va,
            a.shape.polys,
            a.shape.polys,
            &a.shape.moduli,
            Some(scalars),
        )
    }

    fn mac(&self, acc: &mut GpuTensor, a: &GpuTensor, b: &GpuTensor) -> Result<()> {
        check_binary("mac", &a.shape, &b.shape)?;
        expect_form("mac", &a.shape, Form::Ntt)?;
        if acc.shape != a.shape {
            return Err(BackendError::Shape {
                op: "mac",
                reason: format!("accumulator {:?} vs operand {:?}", acc.shape, a.shape),
            });
        }
        self.ew(
            "ew_mac",
            View::whole(acc),
            View::whole(a),
            View::whole(b),
            b.shape.polys,
            a.shape.polys,
            &a.shape.moduli,
            None,
        )
    }

    fn tensor(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        expect_form("tensor", &a.shape, Form::Ntt)?;
        if a.shape != b.shape || !a.shape.polys.is_multiple_of(2) {
            return Err(BackendError::Shape {
                op: "tensor",
                reason: format!(
                    "operands must be equal [count][2][limbs] tensors, got {:?} and {:?}",
                    a.shape, b.shape
                ),
            });
        }
        let count = a.shape.polys / 2;
        let limbs = a.shape.limbs() as u32;
        let out = self.alloc(a.shape.with_polys(3 * count))?;
        let view = |buf, comps: u32| View {
            buf,
            off: 0,
            stride: comps * limbs,
        };
        self.ew(
            "ew_tensor",
            view(out.buffer(), 3),
            view(a.buffer(), 2),
            view(b.buffer(), 2),
            count,
            count,
            &a.shape.moduli,
            None,
        )?;
        Ok(out)
    }

    fn automorphism_ntt(&self, a: &GpuTensor, g: usize) -> Result<GpuTensor> {
        self.automorphism(a, g, true)
    }

    fn automorphism_coeff(&self, a: &GpuTensor, g: usize) -> Result<GpuTensor> {
        self.automorphism(a, g, false)
    }

    fn basis_convert(
        &self,
        a: &GpuTensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<GpuTensor> {
        check_convert("basis_convert", &self.ctx, &a.shape, groups, targets)?;
        let conv = self.conv_buffers(&a.shape.moduli, groups, targets)?;
        let out = self.alloc(Shape::coeff(a.shape.polys * groups.len(), targets.to_vec()))?;
        let gstride = (groups.len() * targets.len()) as u32;
        self.convert_view(
            View {
                buf: out.buffer(),
                off: 0,
                stride: gstride,
            },
            View::whole(a),
            a.shape.polys,
            &conv,
            groups.len(),
            targets,
            false,
        )?;
        Ok(out)
    }

    fn basis_convert_ntt(
        &self,
        a: &GpuTensor,
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<GpuTensor> {
        check_convert("basis_convert_ntt", &self.ctx, &a.shape, groups, targets)?;
        // Fused, each target re-reads its group's sources: worth it while that costs no more
        // than the converted tensor's write and read (one-limb digits: 1 read against 2).
        let sizes: usize = groups.iter().map(Range::len).sum();
        let fused_reads = sizes * targets.len();
        let separate = sizes + 2 * groups.len() * targets.len();
        if fused_reads > separate || groups.iter().any(|g| g.len() > shaders::RNS_MAX_GROUP) {
            let mut out = self.basis_convert(a, groups, targets)?;
            self.ntt_forward(&mut out)?;
            return Ok(out);
        }
        let conv = self.conv_load(&a.shape.moduli, groups, targets)?;
        let polys = a.shape.polys * groups.len();
        let out = self.alloc(Shape::ntt(polys, targets.to_vec()))?;
        self.ntt_view(
            View::whole(&out),
            NttIo::Convert {
                x: View::whole(a),
                conv: &conv,
            },
            polys,
            targets,
            true,
        )?;
        Ok(out)
    }

    fn keyswitch_inner(
        &self,
        digits: &GpuTensor,
        dnum: usize,
        key: &GpuTensor,
        key_map: &[usize],
    ) -> Result<GpuTensor> {
        let limbs = digits.shape.limbs();
        let key_limbs = key.shape.limbs();
        check_keyswitch_inner(&digits.shape, dnum, &key.shape, key_map)?;
        let polys = digits.shape.polys / dnum;
        let out = self.alloc(digits.shape.with_polys(2 * polys))?;
        if polys == 0 {
            return Ok(out);
        }
        self.check_word_range(2 * polys, limbs)?;
        let n = self.ctx.n();
        let lmap = self.map_buffer(&digits.shape.moduli)?;
        let kmap = self.map_buffer(key_map)?;
        let params = [
            n as u32,
            log2(n),
            polys as u32,
            limbs as u32,
            dnum as u32,
            key_limbs as u32,
            0,
            (dnum * limbs) as u32,
            0,
            (2 * limbs) as u32,
            0,
            0,
        ];
        let total = (limbs * n) as u64;
        self.dispatch(
            Family::Keyswitch,
            "keyswitch_inner",
            &[
                out.buffer(),
                digits.buffer(),
                key.buffer(),
                &self.moduli,
                &lmap,
                &kmap,
            ],
            &params,
            total.div_ceil(u64::from(shaders::WORKGROUP_SIZE)),
            cost::keyswitch_inner(
                self.rt.arith(),
                polys as u64,
                limbs as u64,
                dnum as u64,
                n as u64,
            ),
        )?;
        Ok(out)
    }

    /// The automorphism and key switch of a rotation without copying components: the inverse
    /// NTT of `sigma(c1)` reads it in place, `P sigma(c0)` is added to the switched component 0
    /// over `Q ∪ P`, and one division by `P` gives `(sigma(c0) + ks_0, ks_1)` directly
    /// (`round((P x + y) / P) = x + round(y / P)`).
    fn galois_switch(
        &self,
        a: &GpuTensor,
        g: usize,
        key: &SwitchKey<GpuTensor>,
    ) -> Result<GpuTensor> {
        expect_form("galois_switch", &a.shape, Form::Ntt)?;
        if !a.shape.polys.is_multiple_of(2) {
            return Err(BackendError::Shape {
                op: "galois_switch",
                reason: format!("{} polys are not 2-component ciphertexts", a.shape.polys),
            });
        }
        let rot = self.automorphism_ntt(a, g)?;
        let c = |i| component(&rot, i, 2);
        self.switch_from_view(c(1), &a.shape.moduli, key, &[(0, c(0))], 0)
    }

    /// Relinearize and rescale without copying components out of `prod`: the inverse NTT of
    /// c2 reads it in place, and P * (c0, c1) is added from views of `prod`.
    fn relin_rescale(&self, prod: &GpuTensor, key: &SwitchKey<GpuTensor>) -> Result<GpuTensor> {
        check_relin_rescale(&prod.shape)?;
        let c = |i| component(prod, i, 3);
        self.switch_from_view(c(2), &prod.shape.moduli, key, &[(0, c(0)), (1, c(1))], 1)
    }

    fn mul_relin_rescale(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        key: &SwitchKey<GpuTensor>,
    ) -> Result<GpuTensor> {
        let prod = self.tensor(a, b)?;
        self.relin_rescale(&prod, key)
    }

    fn divide_round(&self, a: &GpuTensor, drop: usize) -> Result<GpuTensor> {
        expect_form("divide_round", &a.shape, Form::Ntt)?;
        let limbs = a.shape.limbs();
        if drop == 0 || drop >= limbs {
            return Err(BackendError::Shape {
                op: "divide_round",
                reason: format!("cannot drop {drop} of {limbs} limbs"),
            });
        }
        let keep_n = limbs - drop;
        let keep = a.shape.moduli[..keep_n].to_vec();
        let dropm = a.shape.moduli[keep_n..].to_vec();
        let polys = a.shape.polys;
        let consts = cached(&self.divround, (a.shape.moduli.clone(), drop), || {
            let dr = self.ctx.divide_round(&keep, &dropm)?;
            let all = 0..drop;
            let kmods = self.ctx.moduli_of(&keep);
            let neg_half_keep: Vec<u32> = dr
                .half_mod_keep()
                .iter()
                .zip(&kmods)
                .map(|(&h, m)| m.neg(h))
                .collect();
            let conv = Arc::new(self.build_conv(
                &dropm,
                std::slice::from_ref(&all),
                &keep,
                Some((dr.half_mod_drop(), &neg_half_keep)),
            )?);
            Ok(DivRoundBuffers {
                d_inv: self.rt.upload_constant(
                    &dr.d_inv_mod_keep()
                        .iter()
                        .zip(&kmods)
                        .flat_map(|(&d, m)| [d, m.shoup(d)])
                        .collect::<Vec<u32>>(),
                ),
                conv,
            })
        })?;
        let stride = limbs as u32;
        let a_drop = View {
            buf: a.buffer(),
            off: keep_n as u32,
            stride,
        };
        let a_keep = View {
            buf: a.buffer(),
            off: 0,
            stride,
        };
        // 1. dropped limbs -> coefficient form (out of place: `a` is left as it is).
        let drop_shape = Shape::coeff(polys, dropm.clone());
        let keep_shape = Shape::coeff(polys, keep.clone());
        let t = self.alloc(drop_shape)?;
        self.ntt_view(View::whole(&t), NttIo::From(a_drop), polys, &dropm, false)?;
        // 2. + floor(D/2), exact conversion to the kept limbs, - floor(D/2) (one kernel, as the
        //    CPU twin DivideRound::divide_round_convert), forward NTT.
        let conv = self.alloc(keep_shape.clone())?;
        self.convert_view(
            View::whole(&conv),
            View::whole(&t),
            polys,
            &consts.conv,
            1,
            &keep,
            true,
        )?;
        std::mem::drop(t);
        // 3. forward NTT, ending with out = (x - t) * D^-1 in the same store.
        self.ntt_view(
            View::whole(&conv),
            NttIo::DivideTail {
                x: a_keep,
                d_inv: &consts.d_inv,
            },
            polys,
            &keep,
            true,
        )?;
        let mut out = conv;
        out.shape.form = Form::Ntt;
        Ok(out)
    }
}

impl GpuBackend {
    fn automorphism(&self, a: &GpuTensor, g: usize, ntt: bool) -> Result<GpuTensor> {
        let (op, form) = if ntt {
            ("automorphism_ntt", Form::Ntt)
        } else {
            ("automorphism_coeff", Form::Coeff)
        };
        expect_form(op, &a.shape, form)?;
        let n = self.ctx.n();
        if g.is_multiple_of(2) {
            return Err(BackendError::Shape {
                op: "automorphism",
                reason: format!("Galois element {g} must be odd"),
            });
        }
        let g = g % (2 * n);
        let out = self.alloc(a.shape.clone())?;
        if a.shape.polys == 0 || a.shape.limbs() == 0 {
            return Ok(out);
        }
        let lmap = self.map_buffer(&a.shape.moduli)?;
        let limbs = a.shape.limbs() as u32;
        let params = [
            n as u32,
            log2(n),
            a.shape.polys as u32,
            limbs,
            g as u32,
            0,
            limbs,
            0,
            limbs,
            0,
            0,
            0,
        ];
        let total = a.shape.words(n) as u64;
        self.dispatch(
            Family::Automorphism,
            if ntt {
                "automorphism_ntt"
            } else {
                "automorphism_coeff"
            },
            &[out.buffer(), a.buffer(), &self.moduli, &lmap],
            &params,
            total.div_ceil(u64::from(shaders::WORKGROUP_SIZE)),
            cost::automorphism(total),
        )?;
        Ok(out)
    }
}
