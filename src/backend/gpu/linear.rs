//! The tables of the tiled linear kernel: outputs grouped into blocks, each block's inputs.

use super::shaders::{LINEAR_TK as TK, LINEAR_TM as TM};
use crate::backend::LinearWeights;

/// Marks an empty output slot.
const EMPTY: u32 = u32::MAX;

/// The `rows` table, the reordered weights and what the counted cost needs (layouts in
/// `shaders/linear.wgsl`).
pub(super) struct LinearTiles {
    /// The index tables, packed.
    pub rows: Vec<u32>,
    /// Offsets of U, the slot permutation, the chunk bounds and the entry positions in `rows`.
    pub u_off: u32,
    pub perm_off: u32,
    pub seg_off: u32,
    pub upos_off: u32,
    /// Blocks of [`TM`] output slots.
    pub blocks: usize,
    /// For each entry in kernel order, its index in the CSR weights.
    pub order: Vec<usize>,
    /// Sum over blocks of the inputs each reads (the input words loaded per coefficient).
    pub block_inputs: usize,
    /// Inputs some entry reads (the floor reads each once).
    pub used_inputs: usize,
}

impl LinearTiles {
    /// Groups the outputs of `w` into blocks: outputs sorted by their first column (rows that
    /// read the same inputs land together: the channels of one convolution position, then
    /// neighbouring positions), [`TM`] per block.
    pub fn new(w: &LinearWeights) -> Self {
        let outputs = w.outputs();
        let row = |j: usize| w.row_ptr[j] as usize..w.row_ptr[j + 1] as usize;
        let mut by_first: Vec<usize> = (0..outputs).collect();
        by_first.sort_by_key(|&j| (w.cols[row(j)].iter().min().copied().unwrap_or(EMPTY), j));
        let blocks = outputs.div_ceil(TM);
        let mut u_ptr = vec![0u32];
        let mut u = Vec::new();
        let mut perm = vec![EMPTY; blocks * TM];
        let mut seg_ptr = vec![0u32; blocks * TM];
        let mut bounds: Vec<u32> = Vec::new();
        let mut upos = Vec::with_capacity(w.cols.len());
        let mut order = Vec::with_capacity(w.cols.len());
        for (b, block) in by_first.chunks(TM).enumerate() {
            let mut inputs: Vec<u32> = block
                .iter()
                .flat_map(|&j| &w.cols[row(j)])
                .copied()
                .collect();
            inputs.sort_unstable();
            inputs.dedup();
            let chunks = inputs.len().div_ceil(TK);
            for r in 0..TM {
                let s = b * TM + r;
                seg_ptr[s] = bounds.len() as u32;
                let Some(&j) = block.get(r) else {
                    bounds.extend(std::iter::repeat_n(order.len() as u32, chunks + 1));
                    continue;
                };
                perm[s] = j as u32;
                let mut entries: Vec<(usize, usize)> = row(j)
                    .map(|e| {
                        let pos = inputs.binary_search(&w.cols[e]).expect("column in U");
                        (pos, e)
                    })
                    .collect();
                entries.sort_unstable();
                let mut next = 0;
                for ch in 0..=chunks {
                    while next < entries.len() && entries[next].0 < ch * TK {
                        next += 1;
                    }
                    bounds.push((order.len() + next) as u32);
                }
                for (pos, e) in entries {
                    upos.push(pos as u32);
                    order.push(e);
                }
            }
            u.extend_from_slice(&inputs);
            u_ptr.push(u.len() as u32);
        }
        let block_inputs = u.len();
        let mut used = w.cols.clone();
        used.sort_unstable();
        used.dedup();
        let u_off = u_ptr.len();
        let perm_off = u_off + u.len();
        let seg_off = perm_off + perm.len();
        let bounds_off = seg_off + seg_ptr.len();
        let upos_off = bounds_off + bounds.len();
        let mut rows = u_ptr;
        rows.extend_from_slice(&u);
        rows.extend_from_slice(&perm);
        rows.extend(seg_ptr.iter().map(|&p| p + bounds_off as u32));
        rows.extend_from_slice(&bounds);
        rows.extend_from_slice(&upos);
        LinearTiles {
            rows,
            u_off: u_off as u32,
            perm_off: perm_off as u32,
            seg_off: seg_off as u32,
            upos_off: upos_off as u32,
            blocks,
            order,
            block_inputs,
            used_inputs: used.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates the tables the way the shader does, on one coefficient.
    fn eval(t: &LinearTiles, w: &LinearWeights, x: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; w.outputs()];
        let r = &t.rows;
        for b in 0..t.blocks {
            let (u0, u1) = (r[b] as usize, r[b + 1] as usize);
            let chunks = (u1 - u0).div_ceil(TK);
            for slot in b * TM..(b + 1) * TM {
                let j = r[t.perm_off as usize + slot];
                let so = r[t.seg_off as usize + slot] as usize;
                for ch in 0..chunks {
                    for e in r[so + ch]..r[so + ch + 1] {
                        let pos = r[t.upos_off as usize + e as usize] as usize;
                        assert!(pos >= ch * TK && pos < (ch + 1) * TK);
                        let input = r[t.u_off as usize + u0 + pos] as usize;
                        let orig = t.order[e as usize];
                        assert_eq!(input, w.cols[orig] as usize);
                        out[j as usize] += u64::from(w.values[orig]) * x[input];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_entry_lands_in_its_chunk_once() {
        // a convolution-like band (3 taps), a dense layer wider than a chunk, and empty rows
        for (inputs, outputs, taps) in [(300usize, 290usize, 3usize), (200, 130, 200), (10, 3, 0)] {
            let mut row_ptr = vec![0u32];
            let mut cols = Vec::new();
            for j in 0..outputs {
                for t in 0..taps {
                    cols.push(((j + t * 7) % inputs) as u32);
                }
                row_ptr.push(cols.len() as u32);
            }
            let w = LinearWeights {
                inputs,
                values: (0..cols.len() as u32).map(|v| v % 13 + 1).collect(),
                bias: vec![0; outputs],
                row_ptr,
                cols,
            };
            let t = LinearTiles::new(&w);
            let x: Vec<u64> = (0..inputs as u64).map(|i| i * 3 + 1).collect();
            let want: Vec<u64> = (0..outputs)
                .map(|j| {
                    (w.row_ptr[j]..w.row_ptr[j + 1])
                        .map(|e| u64::from(w.values[e as usize]) * x[w.cols[e as usize] as usize])
                        .sum()
                })
                .collect();
            assert_eq!(eval(&t, &w, &x), want);
            assert_eq!(t.order.len(), w.cols.len());
            assert_eq!(t.blocks, outputs.div_ceil(TM));
        }
    }
}
