//! Parallel helpers over the limbs of RNS polynomials (CPU path; rayon over limbs).

use cryptodl_kernels::ntt::NttTable;
use rayon::prelude::*;

/// Forward NTT of every limb of `[limb][coeff]` data (limb `i` with `tables[i % len]`).
pub fn forward_limbs(data: &mut [u32], tables: &[&NttTable], n: usize) {
    data.par_chunks_exact_mut(n)
        .enumerate()
        .for_each(|(i, limb)| tables[i % tables.len()].forward(limb));
}

/// Inverse NTT of every limb of `[limb][coeff]` data (limb `i` with `tables[i % len]`).
pub fn inverse_limbs(data: &mut [u32], tables: &[&NttTable], n: usize) {
    data.par_chunks_exact_mut(n)
        .enumerate()
        .for_each(|(i, limb)| tables[i % tables.len()].inverse(limb));
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` words (contents unspecified: callers
/// overwrite what they read). Buffers are reused across calls, so hot paths allocate nothing.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| s.borrow_mut().push(buf));
    r
}
