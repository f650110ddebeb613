// Base conversion between RNS bases, grouped: one dispatch converts every group (digit) of every
// polynomial of a tensor.
//
// Input x: [polys][S][n] view (limb s of poly p at (in_off + p * in_stride + s) * n), coefficient
// form, canonical. Group g owns source limbs [groups[2g], groups[2g] + groups[2g+1]). Output:
// [polys][G][T][n] view (limb t of group g of poly p at (o_off + p * o_stride + g * T + t) * n),
// target t uses modulus index tgt_map[t]. With y_s = (x_s + h_s) * (B_g/q_s)^-1 mod q_s:
//   basis_convert (CPU twin: cryptodl_kernels::rns::BaseConverter::convert; h_s = 0):
//     out[p][g][t] = sum_{s in g} y_s * mat[s * T + t] mod p_t,   mat[s*T+t] = (B_g / q_s) mod p_t
//   with Shoup companions mat_shoup. Output canonical [0, p_t). When p_t is itself in B_g the
//   result is exactly x_t (the other terms vanish mod p_t), so mod-up needs no separate copy.
//   divide_round_convert (CPU twin: cryptodl_kernels::rescale::DivideRound::divide_round_convert;
//   one group, h_s = floor(D/2) mod q_s): the same sum minus u * (B mod p_t) with
//   u = floor(sum_s y_s * floor(2^64 / q_s) / 2^64) in 96-bit fixed point (the exact conversion
//   of BaseConverter::convert_exact: it removes the u * B overflow of the fast sum, except with
//   probability ~ S * 2^-34), plus post_t = -floor(D/2) mod p_t.
//
// One invocation per (poly, group, coefficient): it reads its group's sources once, keeps y in
// registers (at most MAX_GROUP limbs per group) and writes every target, so each input word is
// read once and y_s (and the overflow count u) is computed once per coefficient.

struct RnsParams {
    n: u32,
    log_n: u32,
    polys: u32,
    groups: u32,
    targets: u32,
    in_off: u32,
    in_stride: u32,
    o_off: u32,
    o_stride: u32,
    sources: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> y: array<u32>;
@group(0) @binding(2) var<storage, read> moduli: array<u32>;
@group(0) @binding(3) var<storage, read> tgt_map: array<u32>;
@group(0) @binding(4) var<storage, read> groups: array<u32>;
@group(0) @binding(5) var<storage, read> mat: array<u32>;
@group(0) @binding(6) var<storage, read> mat_shoup: array<u32>;
// [2S words: floor(2^64 / q_s) as (lo, hi) per source limb] ++ [G * T words: (B_g mod p_t) at
// 2S + g * T + t] ++ [4S words: (h_s, (B_g/q_s)^-1 mod q_s, its Shoup companion, q_s) at
// 2S + G*T + 4s] ++ [T words: post_t at 6S + G*T + t].
@group(0) @binding(7) var<storage, read> exact: array<u32>;
@group(0) @binding(8) var<uniform> prm: RnsParams;

const MAX_GROUP: u32 = 32u;

struct ConvIdx {
    valid: bool,
    poly: u32,
    g: u32,
    c: u32,
}

fn conv_idx(gid: vec3<u32>, nwg: vec3<u32>) -> ConvIdx {
    let idx = gid.x + gid.y * nwg.x * 256u;
    var r: ConvIdx;
    r.c = idx & (prm.n - 1u);
    let rest = idx >> prm.log_n;
    r.g = rest % prm.groups;
    r.poly = rest / prm.groups;
    r.valid = r.poly < prm.polys;
    return r;
}

fn y_at(poly: u32, s: u32, c: u32) -> u32 {
    return y[(prm.in_off + poly * prm.in_stride + s) * prm.n + c];
}

// Source word s of the conversion: y_s = (x_s + h_s) * (B_g/q_s)^-1 mod q_s, from the per-source
// table after the exact constants (h_s = 0 except in divide_round_convert).
fn src_y(r: ConvIdx, s: u32) -> u32 {
    let base = 2u * prm.sources + prm.groups * prm.targets + 4u * s;
    let q = exact[base + 3u];
    let v = add_mod(y_at(r.poly, s, r.c), exact[base], q);
    return mul_shoup(v, exact[base + 1u], exact[base + 2u], q);
}

fn out_at(r: ConvIdx, t: u32) -> u32 {
    return (prm.o_off + r.poly * prm.o_stride + r.g * prm.targets + t) * prm.n + r.c;
}

// sum_{s in g} y_s * mat[s][t] mod p_t, with the group's y in ys.
fn fast_sum(ys: ptr<function, array<u32, MAX_GROUP>>, s0: u32, len: u32, t: u32, p: u32) -> u32 {
    var acc = 0u;
    for (var i = 0u; i < len; i++) {
        let m = (s0 + i) * prm.targets + t;
        acc = add_mod(acc, reduce_2q(mul_shoup_lazy((*ys)[i], mat[m], mat_shoup[m], p), p), p);
    }
    return acc;
}

@compute @workgroup_size(256)
fn basis_convert(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = conv_idx(gid, nwg);
    if (!r.valid) {
        return;
    }
    let s0 = groups[2u * r.g];
    let len = groups[2u * r.g + 1u];
    var ys: array<u32, MAX_GROUP>;
    for (var i = 0u; i < len; i++) {
        ys[i] = src_y(r, s0 + i);
    }
    for (var t = 0u; t < prm.targets; t++) {
        let p = moduli[tgt_map[t] * MOD_STRIDE];
        out[out_at(r, t)] = fast_sum(&ys, s0, len, t, p);
    }
}

// The middle of divide-and-round (CPU twin: DivideRound::divide_round_convert): the input is the
// dropped limbs x_s in coefficient form (one group), h_s = floor(D/2) mod d_s, post_t =
// -floor(D/2) mod p_t: out_t = exact conversion of x + floor(D/2), minus floor(D/2).
@compute @workgroup_size(256)
fn divide_round_convert(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = conv_idx(gid, nwg);
    if (!r.valid) {
        return;
    }
    let s0 = groups[2u * r.g];
    let len = groups[2u * r.g + 1u];
    var ys: array<u32, MAX_GROUP>;
    // 96-bit accumulator (w0, w1, w2) of y_s * f_s, f_s = floor(2^64 / q_s) = (f_lo, f_hi):
    // u = w2 < S.
    var w0 = 0u;
    var w1 = 0u;
    var w2 = 0u;
    for (var i = 0u; i < len; i++) {
        let s = s0 + i;
        let v = src_y(r, s);
        ys[i] = v;
        if (len > 1u) {
            let lo = mul_wide(v, exact[2u * s]);
            let hi = mul_wide(v, exact[2u * s + 1u]);
            // term = lo + (hi << 32)
            let n0 = w0 + lo.x;
            let c0 = select(0u, 1u, n0 < w0);
            let t1 = w1 + lo.y;
            let c1a = select(0u, 1u, t1 < w1);
            let t2 = t1 + hi.x;
            let c1b = select(0u, 1u, t2 < t1);
            let n1 = t2 + c0;
            let c1c = select(0u, 1u, n1 < t2);
            w0 = n0;
            w1 = n1;
            w2 = w2 + hi.y + c1a + c1b + c1c;
        }
    }
    let post_off = 6u * prm.sources + prm.groups * prm.targets;
    for (var t = 0u; t < prm.targets; t++) {
        let mi = tgt_map[t];
        let p = moduli[mi * MOD_STRIDE];
        var acc = fast_sum(&ys, s0, len, t, p);
        if (len > 1u) {
            // subtract u * (B_g mod p_t)
            let qmod = exact[2u * prm.sources + r.g * prm.targets + t];
            acc = sub_mod(acc, mul_mod(w2, qmod, p, moduli[mi * MOD_STRIDE + 1u], moduli[mi * MOD_STRIDE + 2u]), p);
        }
        out[out_at(r, t)] = add_mod(acc, exact[post_off + t], p);
    }
}
