// Fast base conversion between RNS bases, grouped: one dispatch converts every group (digit) of
// every polynomial of a tensor. CPU twin: cryptodl_kernels::rns::BaseConverter::convert, applied
// to y = x * (B_g/q_s)^-1 mod q_s (that product is an `ew_mul_scalar` pass before this one).
//
// Input y: [polys][S][n] view (limb s of poly p at (in_off + p * in_stride + s) * n), coefficient
// form, any u32 values (canonical in practice). Group g owns source limbs
// [groups[2g], groups[2g] + groups[2g+1]). Output: [polys][G][T][n] view
// (limb t of group g of poly p at (o_off + p * o_stride + g * T + t) * n), target t uses modulus
// index tgt_map[t]:
//     out[p][g][t] = sum_{s in g} y_s * mat[s * T + t] mod p_t,   mat[s*T+t] = (B_g / q_s) mod p_t
// with Shoup companions mat_shoup. Output canonical [0, p_t). When p_t is itself in B_g the result
// is exactly x_t (the other terms vanish mod p_t), so mod-up needs no separate copy.

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
    _p0: u32,
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
@group(0) @binding(7) var<uniform> prm: RnsParams;

@compute @workgroup_size(256)
fn basis_convert(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let c = idx & (prm.n - 1u);
    let rest = idx >> prm.log_n;
    let t = rest % prm.targets;
    let rest2 = rest / prm.targets;
    let g = rest2 % prm.groups;
    let poly = rest2 / prm.groups;
    if (poly >= prm.polys) {
        return;
    }
    let p = moduli[tgt_map[t] * MOD_STRIDE];
    let s0 = groups[2u * g];
    let s1 = s0 + groups[2u * g + 1u];
    var acc = 0u;
    for (var s = s0; s < s1; s++) {
        let v = y[(prm.in_off + poly * prm.in_stride + s) * prm.n + c];
        let m = s * prm.targets + t;
        acc = add_mod(acc, reduce_2q(mul_shoup_lazy(v, mat[m], mat_shoup[m], p), p), p);
    }
    out[(prm.o_off + poly * prm.o_stride + g * prm.targets + t) * prm.n + c] = acc;
}
