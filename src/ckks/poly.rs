//! Parallel helpers over the limbs of host RNS polynomials (client side: keys and encryption).

use cryptodl_kernels::ntt::NttTable;
use rayon::prelude::*;

/// Forward NTT of every limb of `[limb][coeff]` data (limb `i` with `tables[i % len]`).
pub fn forward_limbs(data: &mut [u32], tables: &[&NttTable], n: usize) {
    data.par_chunks_exact_mut(n)
        .enumerate()
        .for_each(|(i, limb)| tables[i % tables.len()].forward(limb));
}
