// Galois automorphisms X -> X^g (g odd) on every limb of every polynomial of a tensor.
// CPU twins: cryptodl_kernels::automorphism::{automorphism_ntt, automorphism_coeff}.
//
// Input view [polys][limbs][n] (limb l of poly p at (in_off + p * in_stride + l) * n), output view
// likewise with o_off / o_stride. Inputs canonical; outputs canonical.
//   automorphism_ntt   (NTT form, bit-reversed slots): out[j] = in[perm[j]] with perm =
//                      galois_permutation_ntt(g, n), computed in the shader with reverseBits.
//   automorphism_coeff (coefficient form): in[k] moves to k g mod 2n, negated when that is >= n.

struct AutParams {
    n: u32,
    log_n: u32,
    polys: u32,
    limbs: u32,
    g: u32,
    in_off: u32,
    in_stride: u32,
    o_off: u32,
    o_stride: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> inp: array<u32>;
@group(0) @binding(2) var<storage, read> moduli: array<u32>;
@group(0) @binding(3) var<storage, read> limb_map: array<u32>;
@group(0) @binding(4) var<uniform> prm: AutParams;

@compute @workgroup_size(256)
fn automorphism_ntt(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let j = idx & (prm.n - 1u);
    let lp = idx >> prm.log_n;
    let l = lp % prm.limbs;
    let poly = lp / prm.limbs;
    if (poly >= prm.polys) {
        return;
    }
    // Slot j holds the evaluation at psi^(2 bitrev(j) + 1); X -> X^g maps it to the slot whose
    // exponent is (2 bitrev(j) + 1) g mod 2n (the wrapped product is exact mod 2n | 2^32).
    let shift = 32u - prm.log_n;
    let e = ((2u * (reverseBits(j) >> shift) + 1u) * prm.g) & (2u * prm.n - 1u);
    let src_slot = reverseBits((e - 1u) >> 1u) >> shift;
    let src = (prm.in_off + poly * prm.in_stride + l) * prm.n + src_slot;
    out[(prm.o_off + poly * prm.o_stride + l) * prm.n + j] = inp[src];
}

@compute @workgroup_size(256)
fn automorphism_coeff(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let k = idx & (prm.n - 1u);
    let lp = idx >> prm.log_n;
    let l = lp % prm.limbs;
    let poly = lp / prm.limbs;
    if (poly >= prm.polys) {
        return;
    }
    let q = moduli[limb_map[l] * MOD_STRIDE];
    // k * g mod 2n: the low (log_n + 1) bits of the wrapped product are exact.
    let dst = (k * prm.g) & (2u * prm.n - 1u);
    let v = inp[(prm.in_off + poly * prm.in_stride + l) * prm.n + k];
    let o = (prm.o_off + poly * prm.o_stride + l) * prm.n;
    if (dst >= prm.n) {
        out[o + dst - prm.n] = neg_mod(v, q);
    } else {
        out[o + dst] = v;
    }
}
