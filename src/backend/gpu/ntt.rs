//! The NTT passes of the GPU backend: where a transform reads its input and how it ends
//! (in place, out of place, a divide-and-round tail, a fused mod-up load).

use super::shaders::{self, Family};
use super::{cost, distinct, log2, GpuBackend, GpuError, View};
use crate::backend::cost::KernelCost;
use crate::backend::Result;

/// Where an NTT reads its input and how it ends.
#[derive(Clone, Copy)]
pub(super) enum NttIo<'a> {
    /// In place in the output view.
    InPlace,
    /// Out of place: the first pass reads this view.
    From(View<'a>),
    /// In place, and the forward transform's last store finishes a divide-and-round:
    /// `out = (x - v) * D^-1` with `x` the kept limbs (this view) and `d_inv` per-limb Shoup pairs.
    DivideTail {
        x: View<'a>,
        d_inv: &'a wgpu::Buffer,
    },
    /// Out of place, forward: the first pass loads the base conversion of the coefficient-form
    /// view `x` (`polys / groups` polynomials of the conversion's source limbs) by `conv`, the
    /// tensor being `[polys / groups][groups][targets]` (a fused mod-up).
    Convert { x: View<'a>, conv: &'a ConvLoad },
}

/// The table of a base conversion fused into a forward NTT's load (`NttIo::Convert`; layout in
/// `shaders/ntt.wgsl`), and what its counted cost needs.
pub(super) struct ConvLoad {
    pub(super) aux: wgpu::Buffer,
    /// Source limbs per group.
    pub(super) group_sizes: Vec<u64>,
    /// Words of `aux`.
    pub(super) words: u64,
}

impl GpuBackend {
    /// Records the NTT passes over `polys` x `map` limbs of a view.
    /// `src`: an out-of-place transform reads its input from that view (the first pass loads
    /// it), leaving `src` unchanged.
    pub(super) fn ntt_view(
        &self,
        v: View,
        io: NttIo,
        polys: usize,
        map: &[usize],
        forward: bool,
    ) -> Result<()> {
        if polys == 0 || map.is_empty() {
            return Ok(());
        }
        self.check_word_range(polys, map.len())?;
        let n = self.ctx.n();
        let tile = self.ntt_tile as usize;
        let family = if self.ntt_tile == shaders::NTT_TILE {
            Family::Ntt
        } else {
            Family::NttWide
        };
        let lmap = self.map_buffer(map)?;
        let total = (polys * map.len() * n) as u64;
        let tiles = total.div_ceil(tile as u64);
        // Unused bindings are bound to a read-only buffer the kernel does not read.
        if !forward && !matches!(io, NttIo::InPlace | NttIo::From(_)) {
            return Err(GpuError::Internal(
                "a divide tail or a fused conversion is for a forward NTT".into(),
            )
            .into());
        }
        let (src, tail, conv) = match io {
            NttIo::InPlace => (None, None, None),
            NttIo::From(s) => (Some(s), None, None),
            NttIo::DivideTail { x, d_inv } => (Some(x), Some(d_inv), None),
            NttIo::Convert { x, conv } => (Some(x), Some(&conv.aux), Some(conv)),
        };
        let (src_buf, src_off, src_stride) =
            src.map_or((&self.moduli, 0, 0), |s| (s.buf, s.off, s.stride));
        let from_src = matches!(io, NttIo::From(_) | NttIo::Convert { .. });
        let mode = match io {
            NttIo::DivideTail { .. } => 1,
            NttIo::Convert { .. } => 2,
            _ => 0,
        };
        let params = |last: u32, first: bool| {
            [
                n as u32,
                log2(n),
                map.len() as u32,
                polys as u32,
                v.off,
                v.stride,
                last,
                u32::from(first && from_src),
                src_off,
                src_stride,
                mode,
                conv.map_or(0, |c| c.group_sizes.len() as u32),
            ]
        };
        let tail_buf = tail.unwrap_or(&self.moduli);
        let bindings = [v.buf, src_buf, &self.tables, &self.moduli, &*lmap, tail_buf];
        let (first, second) = if forward {
            ("ntt_forward_strided", "ntt_forward_block")
        } else {
            ("ntt_inverse_block", "ntt_inverse_strided")
        };
        let pl = (polys * map.len()) as u64;
        let limbs = distinct(map);
        let log_n = u64::from(log2(n));
        let inverse = !forward;
        let tail_cost = if mode == 1 {
            cost::divide_tail(self.rt.arith(), pl * n as u64)
        } else {
            KernelCost::default()
        };
        // The first pass of a fused mod-up loads conversions instead of words.
        let first_pass = |c: KernelCost| match conv {
            Some(conv) => cost::convert_load(
                self.rt.arith(),
                c,
                (polys / conv.group_sizes.len().max(1)) as u64,
                &conv.group_sizes,
                map.len() as u64,
                n as u64,
                conv.words,
            ),
            None => c,
        };
        if n <= tile {
            let entry = if forward {
                "ntt_forward_block"
            } else {
                "ntt_inverse_block"
            };
            let c = first_pass(cost::ntt_pass(
                self.rt.arith(),
                pl,
                limbs,
                n as u64,
                log_n,
                1,
                inverse,
                true,
            )) + tail_cost;
            self.dispatch(family, entry, &bindings, &params(1, true), tiles, c)?;
        } else {
            // The block pass does the log2(tile) stages local to a tile, the strided pass the rest.
            let block = u64::from(log2(tile));
            let (s1, s2) = if forward {
                (log_n - block, block)
            } else {
                (block, log_n - block)
            };
            let c1 = first_pass(cost::ntt_pass(
                self.rt.arith(),
                pl,
                limbs,
                n as u64,
                s1,
                2,
                inverse,
                false,
            ));
            let c2 = cost::ntt_pass(self.rt.arith(), pl, limbs, n as u64, s2, 2, inverse, true)
                + tail_cost;
            self.dispatch(family, first, &bindings, &params(0, true), tiles, c1)?;
            self.dispatch(family, second, &bindings, &params(1, false), tiles, c2)?;
        }
        Ok(())
    }
}
