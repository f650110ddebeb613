//! The counted cost of one dispatch of each WGSL kernel, from its shape (see `backend::cost`).
//!
//! Data words (tensors: inputs, outputs, digits, keys) count 4 bytes per access per invocation,
//! read off the shader. Constant tables (twiddles, weights with their column indices and row
//! pointers, biases, conversion matrices, per-limb scalars) are small, shared by every
//! invocation and stay in the cache, so they count once per dispatch, in the counted bytes and in
//! the floor alike. The floor reads each data input once and writes each output once.
//!
//! Multiplies follow the shaders' arithmetic ([`Arith`]): a Shoup product is 6 u32 multiplies
//! with portable wide products, 3 with native 64-bit ones; a Barrett product 9 or 3; a wide
//! product 4 or 1. The numbers in the docs below are the portable ones.

use super::shaders::Arith;
use crate::backend::cost::KernelCost;

const WORD: u64 = 4;

fn cost(bytes: u64, mults: u64, floor_bytes: u64, floor_mults: u64) -> KernelCost {
    KernelCost {
        dispatches: 1,
        bytes,
        mults,
        floor_bytes,
        floor_mults,
    }
}

/// One pass of a negacyclic NTT (`ntt.wgsl`) over `pl` (polys x limbs) polynomials of `n`
/// coefficients with `limbs` distinct moduli, doing `stages` of the `log2 n` stages; the whole
/// transform takes `passes` passes (its floor is split evenly between them). A butterfly is one
/// Shoup product (6); the inverse's last pass multiplies every coefficient by `n^-1` (6 more,
/// 3 in the floor, where it folds into the last stage as the CPU twin does).
#[allow(clippy::too_many_arguments)]
pub fn ntt_pass(
    a: Arith,
    pl: u64,
    limbs: u64,
    n: u64,
    stages: u64,
    passes: u64,
    inverse: bool,
    last: bool,
) -> KernelCost {
    let words = pl * n;
    let log_n = u64::from(n.trailing_zeros());
    let twiddles = 2 * WORD * n * limbs; // w and its Shoup companion, per limb
    let scale = if inverse && last {
        a.shoup() * words
    } else {
        0
    };
    let floor_scale = if inverse { a.shoup() * words / 2 } else { 0 };
    cost(
        2 * WORD * words + twiddles,
        a.shoup() * (words / 2) * stages + scale,
        (2 * WORD * words + twiddles) / passes,
        (a.shoup() * (words / 2) * log_n + floor_scale) / passes,
    )
}

/// The divide-and-round tail a forward NTT's last store may carry, over `words` output words:
/// read the kept limb of `x` (4 bytes) and one Shoup product by `D^-1`; the floor does the same.
pub fn divide_tail(a: Arith, words: u64) -> KernelCost {
    KernelCost {
        dispatches: 0,
        ..cost(
            WORD * words,
            a.shoup() * words,
            WORD * words,
            a.shoup() * words,
        )
    }
}

/// One element-wise kernel (`elementwise.wgsl`) over `words` = polys x limbs x n invocations,
/// where `b` repeats with period `b_polys` of `polys` polynomials (`scalars` per-limb pairs).
pub fn elementwise(
    a: Arith,
    entry: &str,
    words: u64,
    polys: u64,
    b_polys: u64,
    limbs: u64,
) -> KernelCost {
    // (data words per invocation, of which from b, u32 multiplies per invocation)
    let (access, from_b, mults) = match entry {
        "ew_copy" | "ew_add_scalar" | "ew_negate" => (2, 0, 0),
        "ew_add" | "ew_sub" => (3, 1, 0),
        "ew_mul" => (3, 1, a.barrett()),
        "ew_mul_scalar" => (2, 0, a.shoup()),
        "ew_mac" => (4, 1, a.barrett()),
        "ew_mul_scalar_acc" => (3, 0, a.shoup()),
        // one coefficient: a0 a1 b0 b1 in, three products out (Karatsuba, 3 Barrett products)
        "ew_tensor" => (7, 2, 3 * a.barrett()),
        _ => (3, 1, a.barrett()),
    };
    let scalars = 2 * WORD * limbs;
    let bytes = WORD * access * words + scalars;
    // b is read once per polynomial of b, not once per polynomial of a.
    let b_once = if polys > 0 && b_polys < polys {
        WORD * from_b * words / polys * (polys - b_polys)
    } else {
        0
    };
    cost(bytes, mults * words, bytes - b_once, mults * words)
}

/// One grouped base conversion (`rns.wgsl`): `polys` polynomials whose `group_sizes` source limbs
/// each convert to `targets` limbs of `n` coefficients. One invocation per (polynomial, group,
/// coefficient) reads its sources once, computes `y_s = x_s (B/q_s)^-1` once (one Shoup product
/// each, 6) and writes every target (one Shoup product per source, 6).
/// `divide_round_convert` (`rounding`) also sums a 96-bit fixed-point overflow count over the
/// sources once (2 wide products, 8, per source) and corrects each target (one Barrett product,
/// 9). At the floor.
pub fn basis_convert(
    a: Arith,
    polys: u64,
    group_sizes: &[u64],
    targets: u64,
    n: u64,
    rounding: bool,
) -> KernelCost {
    let sources: u64 = group_sizes.iter().sum();
    let groups = group_sizes.len() as u64;
    let multi: u64 = group_sizes.iter().filter(|&&s| s > 1).sum();
    let multi_groups = group_sizes.iter().filter(|&&s| s > 1).count() as u64;
    let coeffs = polys * n;
    // mat and its companions, then the exact table (2S + G T + 4S + T words)
    let tables = WORD * (2 * sources * targets + 6 * sources + groups * targets + targets);
    let bytes = WORD * coeffs * (sources + groups * targets) + tables;
    let mut mults = a.shoup() * coeffs * sources * (1 + targets);
    if rounding {
        mults += coeffs * (2 * a.wide() * multi + a.barrett() * multi_groups * targets);
    }
    cost(bytes, mults, bytes, mults)
}

/// `pass`, the first pass of a forward NTT, loading a fused base conversion (`ntt.wgsl` with
/// `tail` = 2) instead of its input words: `polys` polynomials whose `group_sizes` source limbs
/// convert to `targets` limbs of `n` coefficients. Each loaded word reads its group's sources
/// (4 bytes each) and computes, per source, `y_s` (one Shoup product, 6) and its term (one
/// more, 6); the `table_words` of the conversion table once. The floor reads each source word
/// once and computes each `y_s` once (as `basis_convert` does), and writes nothing more than
/// the transform.
pub fn convert_load(
    a: Arith,
    pass: KernelCost,
    polys: u64,
    group_sizes: &[u64],
    targets: u64,
    n: u64,
    table_words: u64,
) -> KernelCost {
    let sources: u64 = group_sizes.iter().sum();
    let coeffs = polys * n;
    let loaded = coeffs * group_sizes.len() as u64 * targets; // words the pass loads
    let reads = coeffs * sources * targets; // source words read
    let tables = WORD * table_words;
    KernelCost {
        dispatches: pass.dispatches,
        bytes: pass.bytes - WORD * loaded + WORD * reads + tables,
        mults: pass.mults + 2 * a.shoup() * reads,
        floor_bytes: (pass.floor_bytes + WORD * coeffs * sources + tables)
            .saturating_sub(WORD * loaded),
        floor_mults: pass.floor_mults + a.shoup() * coeffs * sources * (1 + targets),
    }
}

/// The key-switching inner product (`keyswitch.wgsl`) of `polys` decomposed polynomials of
/// `limbs` limbs and `dnum` digits: one invocation per (limb, coefficient) holds the key words
/// of up to 8 digits and loops over the polynomials, two Barrett products per digit (18). The
/// key is read once per dispatch; beyond 8 digits a group adds to the sums the previous one
/// wrote (read back: above the floor).
pub fn keyswitch_inner(a: Arith, polys: u64, limbs: u64, dnum: u64, n: u64) -> KernelCost {
    let words = polys * limbs * n;
    let digits = WORD * dnum * words;
    let out = 2 * WORD * words;
    let key = 2 * WORD * dnum * limbs * n;
    let regroups = dnum.div_ceil(8).saturating_sub(1);
    cost(
        digits + out * (1 + 2 * regroups) + key,
        2 * a.barrett() * dnum * words,
        digits + out + key,
        2 * a.barrett() * dnum * words,
    )
}

/// A Galois automorphism (`automorphism.wgsl`) of `words` words: one read and one write each,
/// one multiply for the index.
pub fn automorphism(words: u64) -> KernelCost {
    cost(2 * WORD * words, words, 2 * WORD * words, words)
}

/// The shape of a linear layer's dispatch.
pub struct LinearShape {
    /// Input groups (ciphertexts) some entry reads.
    pub inputs: u64,
    /// Inputs the blocks read, summed over blocks (an input used by two blocks counts twice).
    pub block_inputs: u64,
    /// Output groups.
    pub outputs: u64,
    /// Whether the sums are added to the outputs' words (which are then read too).
    pub accumulate: bool,
    /// Entries of the sparse weights.
    pub nnz: u64,
    /// Words per group: components x limbs x n.
    pub plane: u64,
}

/// The tiled linear layer (`linear.wgsl`): each block of outputs reads each of its inputs once
/// per coefficient (into workgroup memory) and writes its outputs; one Shoup product per entry
/// and coefficient (6). `tables` is the bytes of the index tables, weights and bias (once).
pub fn linear(a: Arith, s: LinearShape, tables: u64) -> KernelCost {
    let out = WORD * s.outputs * s.plane * if s.accumulate { 2 } else { 1 };
    cost(
        WORD * s.block_inputs * s.plane + out + tables,
        a.shoup() * s.nnz * s.plane,
        WORD * s.inputs * s.plane + out + tables,
        a.shoup() * s.nnz * s.plane,
    )
}

/// A buffer-to-buffer copy of `words` words (a copy command, not a dispatch).
pub fn copy(words: u64) -> KernelCost {
    KernelCost {
        dispatches: 0,
        ..cost(2 * WORD * words, 0, 2 * WORD * words, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Arith = Arith::Portable;

    #[test]
    fn native_products_halve_the_multiplies() {
        let (p, w) = (
            keyswitch_inner(Arith::Portable, 10, 7, 7, 8192),
            keyswitch_inner(Arith::Int64, 10, 7, 7, 8192),
        );
        assert_eq!(
            (p.mults, w.mults),
            (18 * 7 * 10 * 7 * 8192, 6 * 7 * 10 * 7 * 8192)
        );
        assert_eq!(p.bytes, w.bytes);
        let (p, w) = (
            ntt_pass(Arith::Portable, 4, 2, 4096, 12, 1, false, true),
            ntt_pass(Arith::Int64, 4, 2, 4096, 12, 1, false, true),
        );
        assert_eq!(p.mults, 2 * w.mults);
    }

    #[test]
    fn a_two_pass_ntt_moves_its_data_twice() {
        let (pl, n) = (14, 8192);
        let one = ntt_pass(P, pl, 7, n, 13, 1, false, true);
        assert_eq!(one.bytes, one.floor_bytes);
        assert_eq!(one.mults, one.floor_mults);
        let a = ntt_pass(P, pl, 7, n, 2, 2, false, false);
        let b = ntt_pass(P, pl, 7, n, 11, 2, false, true);
        let both = a + b;
        assert_eq!(both.mults, one.mults);
        assert!((both.bytes_ratio() - 2.0).abs() < 0.01);
        // the inverse pays 6 per coefficient for n^-1 where the floor pays 3
        let inv = ntt_pass(P, pl, 7, n, 13, 1, true, true);
        assert_eq!(inv.mults - one.mults, 6 * pl * n);
        assert_eq!(inv.floor_mults - one.floor_mults, 3 * pl * n);
    }

    #[test]
    fn tiles_read_each_input_once_per_block() {
        // 845 -> 100, dense, 2 components, 7 limbs, in one block: at the floor
        let dense = |block_inputs| LinearShape {
            inputs: 845,
            block_inputs,
            outputs: 100,
            accumulate: false,
            nnz: 84_500,
            plane: 2 * 7 * 8192,
        };
        let c = linear(P, dense(845), 1000);
        assert_eq!((c.bytes, c.mults), (c.floor_bytes, c.floor_mults));
        // one read per entry (the untiled kernel) is 89x the floor
        let c = linear(P, dense(84_500), 1000);
        assert!(
            c.bytes_ratio() > 80.0 && c.bytes_ratio() < 95.0,
            "{}",
            c.bytes_ratio()
        );
        // element-wise kernels are at their floor, except a broadcast operand
        let e = elementwise(P, "ew_mul", 3 * 7 * 8192, 3, 3, 7);
        assert_eq!(e.bytes, e.floor_bytes);
        let e = elementwise(P, "ew_mul", 3 * 7 * 8192, 3, 1, 7);
        assert_eq!(e.bytes - e.floor_bytes, 4 * 2 * 7 * 8192);
        // the key is read once per dispatch; beyond 8 digits, partial sums go through memory
        let k = keyswitch_inner(P, 100, 7, 7, 8192);
        assert_eq!(k.bytes, k.floor_bytes);
        assert!(keyswitch_inner(P, 100, 9, 9, 8192).bytes_ratio() > 1.0);
        // conversions read each source once
        let f = basis_convert(P, 2, &[2, 2, 1], 8, 8192, false);
        assert_eq!((f.mults, f.bytes), (f.floor_mults, f.floor_bytes));
    }
}
