//! Base conversions on the GPU backend: the cached tables of grouped conversions and
//! divide-and-round, and their dispatch.

use std::ops::Range;
use std::sync::Arc;

use super::ntt::ConvLoad;
use super::shaders::{self, Family};
use super::{cached, cost, log2, GpuBackend, View};
use crate::backend::{BackendError, Result};

pub(super) struct ConvBuffers {
    pub(super) groups: wgpu::Buffer,
    pub(super) mat: wgpu::Buffer,
    pub(super) mat_shoup: wgpu::Buffer,
    pub(super) exact: wgpu::Buffer,
    pub(super) sources: u32,
    /// Source limbs per group (for the counted cost).
    pub(super) group_sizes: Vec<u64>,
}

/// A grouped conversion's tables on the host: `(start, len)` per group, `mat` and its Shoup
/// companions per (source, target), the `exact` table of `rns.wgsl`, and per source
/// `(h_s, (B/b_s)^-1 mod b_s, its Shoup companion, b_s)`.
pub(super) struct ConvHost {
    pub(super) groups: Vec<u32>,
    pub(super) mat: Vec<u32>,
    pub(super) mat_shoup: Vec<u32>,
    pub(super) exact: Vec<u32>,
    pub(super) pre: Vec<u32>,
}

/// Per-limb scalars of a divide-and-round (from [`RnsContext::divide_round`]).
pub(super) struct DivRoundBuffers {
    /// `(D^-1 mod k_i, its Shoup companion)` per kept limb.
    pub(super) d_inv: wgpu::Buffer,
    pub(super) conv: Arc<ConvBuffers>,
}

impl GpuBackend {
    /// The conversion tables of `groups` of `src` to `targets`, cached.
    pub(super) fn conv_buffers(
        &self,
        src: &[usize],
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<Arc<ConvBuffers>> {
        let key = (src.to_vec(), groups.to_vec(), targets.to_vec());
        cached(&self.conv, key, || {
            self.build_conv(src, groups, targets, None)
        })
    }

    /// The tables of a grouped conversion (layouts in `shaders/rns.wgsl`): per group, the shared
    /// converter from its limbs to the targets, `mat[s][t] = (B/b_s) mod p_t` with Shoup
    /// companions, and in `exact`: `floor(2^64 / b_s)`, `B mod p_t`, then per source
    /// `(h_s, (B/b_s)^-1 mod b_s, its Shoup companion, b_s)` and per target `post_t`. `rounding`
    /// gives `(h_s, post_t)` for divide-and-round; plain conversions add 0.
    pub(super) fn build_conv(
        &self,
        src: &[usize],
        groups: &[Range<usize>],
        targets: &[usize],
        rounding: Option<(&[u32], &[u32])>,
    ) -> Result<ConvBuffers> {
        let h = self.conv_host(src, groups, targets, rounding)?;
        Ok(ConvBuffers {
            groups: self.rt.upload_constant(&h.groups),
            mat: self.rt.upload_constant(&h.mat),
            mat_shoup: self.rt.upload_constant(&h.mat_shoup),
            exact: self.rt.upload_constant(&h.exact),
            sources: src.len() as u32,
            group_sizes: groups.iter().map(|g| g.len() as u64).collect(),
        })
    }

    /// The conversion of `groups` of `src` to `targets` as a forward NTT's load reads it
    /// (`NttIo::Convert`), cached.
    pub(super) fn conv_load(
        &self,
        src: &[usize],
        groups: &[Range<usize>],
        targets: &[usize],
    ) -> Result<Arc<ConvLoad>> {
        let key = (src.to_vec(), groups.to_vec(), targets.to_vec());
        cached(&self.conv_loads, key, || {
            let h = self.conv_host(src, groups, targets, None)?;
            let pre_off = 2 + h.groups.len();
            let mat_off = pre_off + 3 * src.len();
            let mut aux = vec![pre_off as u32, mat_off as u32];
            aux.extend_from_slice(&h.groups);
            aux.extend(h.pre.chunks(4).flat_map(|p| [p[1], p[2], p[3]]));
            aux.extend(h.mat.iter().zip(&h.mat_shoup).flat_map(|(&m, &ms)| [m, ms]));
            Ok(ConvLoad {
                aux: self.rt.upload_constant(&aux),
                group_sizes: groups.iter().map(|g| g.len() as u64).collect(),
                words: aux.len() as u64,
            })
        })
    }

    /// The host tables of a grouped conversion (see [`Self::build_conv`]).
    pub(super) fn conv_host(
        &self,
        src: &[usize],
        groups: &[Range<usize>],
        targets: &[usize],
        rounding: Option<(&[u32], &[u32])>,
    ) -> Result<ConvHost> {
        if let Some(g) = groups.iter().find(|g| g.len() > shaders::RNS_MAX_GROUP) {
            return Err(BackendError::Shape {
                op: "basis_convert",
                reason: format!(
                    "a group of {} limbs; the GPU conversion holds at most {} limbs per group (digit)",
                    g.len(),
                    shaders::RNS_MAX_GROUP
                ),
            });
        }
        let tmods = self.ctx.moduli_of(targets);
        let smods = self.ctx.moduli_of(src);
        let (mut mat, mut mat_shoup) = (Vec::new(), Vec::new());
        let (mut exact, mut b_mod_p, mut pre) = (Vec::new(), Vec::new(), Vec::new());
        for g in groups {
            let conv = self.ctx.base_converter(&src[g.clone()], targets)?;
            for (s, &qhi) in conv.from().q_hat_inv().iter().enumerate() {
                for (t, m) in tmods.iter().enumerate() {
                    let v = conv.q_hat_mod_p()[t][s];
                    mat.push(v);
                    mat_shoup.push(m.shoup(v));
                }
                let (i, m) = (g.start + s, &smods[g.start + s]);
                let h = rounding.map_or(0, |(h, _)| h[i]);
                pre.extend_from_slice(&[h, qhi, m.shoup(qhi), m.value()]);
            }
            exact.extend(
                conv.inv_q_fixed()
                    .iter()
                    .flat_map(|&f| [f as u32, (f >> 32) as u32]),
            );
            b_mod_p.extend_from_slice(conv.q_mod_p());
        }
        exact.extend_from_slice(&b_mod_p);
        exact.extend_from_slice(&pre);
        match rounding {
            Some((_, post)) => exact.extend_from_slice(post),
            None => exact.extend(std::iter::repeat_n(0, targets.len())),
        }
        let gw: Vec<u32> = groups
            .iter()
            .flat_map(|g| [g.start as u32, g.len() as u32])
            .collect();
        Ok(ConvHost {
            groups: gw,
            mat,
            mat_shoup,
            exact,
            pre,
        })
    }

    /// Records a grouped base conversion (`basis_convert`) or the middle of a divide-and-round
    /// (`divide_round_convert`, one group): `x` viewed as `polys` x `src` in coefficient form,
    /// into `out` viewed as `polys` x (`groups` x `targets`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn convert_view(
        &self,
        out: View,
        y: View,
        polys: usize,
        conv: &ConvBuffers,
        groups: usize,
        targets: &[usize],
        rounding: bool,
    ) -> Result<()> {
        let n = self.ctx.n();
        self.check_word_range(polys * groups, targets.len())?;
        let tmap = self.map_buffer(targets)?;
        let params = [
            n as u32,
            log2(n),
            polys as u32,
            groups as u32,
            targets.len() as u32,
            y.off,
            y.stride,
            out.off,
            out.stride,
            conv.sources,
            0,
            0,
        ];
        let total = (polys * groups * n) as u64;
        Ok(self.dispatch(
            Family::Rns,
            if rounding {
                "divide_round_convert"
            } else {
                "basis_convert"
            },
            &[
                out.buf,
                y.buf,
                &self.moduli,
                &tmap,
                &conv.groups,
                &conv.mat,
                &conv.mat_shoup,
                &conv.exact,
            ],
            &params,
            total.div_ceil(u64::from(shaders::WORKGROUP_SIZE)),
            cost::basis_convert(
                self.rt.arith(),
                polys as u64,
                &conv.group_sizes,
                targets.len() as u64,
                n as u64,
                rounding,
            ),
        )?)
    }
}
