// Element-wise kernels on tensors of RNS polynomials (any order, NTT or coefficient form).
//
// Operands are views: limb l of poly p of operand X lives at ((X_off + p * X_stride + l) * n) in
// its buffer (offsets and strides in whole limbs). Limb l uses modulus index limb_map[l]. One
// invocation per output coefficient: gid < polys * limbs * n. Operand b is broadcast when
// b_polys < polys (poly p reads b's poly p % b_polys). Inputs canonical [0, q); outputs canonical.
//
//   ew_copy      out = a                  ew_add_scalar out = a + s_l
//   ew_add       out = a + b              ew_sub   out = a - b          ew_negate out = -a
//   ew_mul       out = a * b (Barrett)    ew_mul_scalar  out = a * s_l (Shoup, s per limb)
//   ew_mac       out = out + a * b
//   ew_mul_scalar_acc out = out + a * s_l (Shoup; out may be a wider tensor viewed over a's limbs)
//   ew_tensor    a, b ciphertexts (2 components each, component stride = limbs):
//                out0 = a0 b0, out1 = a0 b1 + a1 b0, out2 = a1 b1 (out component stride = limbs)

struct EwParams {
    n: u32,
    log_n: u32,
    limbs: u32,
    polys: u32,
    a_off: u32,
    a_stride: u32,
    b_off: u32,
    b_stride: u32,
    o_off: u32,
    o_stride: u32,
    b_polys: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> moduli: array<u32>;
@group(0) @binding(4) var<storage, read> limb_map: array<u32>;
// Per-limb scalar and its Shoup companion: scalars[2l], scalars[2l + 1].
@group(0) @binding(5) var<storage, read> scalars: array<u32>;
@group(0) @binding(6) var<uniform> prm: EwParams;

struct Elem {
    valid: bool,
    poly: u32,
    limb: u32,
    c: u32,
}

fn elem(gid: vec3<u32>, nwg: vec3<u32>) -> Elem {
    let g = gid.x + gid.y * nwg.x * 256u;
    var e: Elem;
    let lp = g >> prm.log_n;
    e.valid = lp < prm.polys * prm.limbs;
    e.poly = lp / prm.limbs;
    e.limb = lp % prm.limbs;
    e.c = g & (prm.n - 1u);
    return e;
}

fn a_at(e: Elem) -> u32 {
    return (prm.a_off + e.poly * prm.a_stride + e.limb) * prm.n + e.c;
}

fn b_at(e: Elem) -> u32 {
    return (prm.b_off + (e.poly % prm.b_polys) * prm.b_stride + e.limb) * prm.n + e.c;
}

fn o_at(e: Elem) -> u32 {
    return (prm.o_off + e.poly * prm.o_stride + e.limb) * prm.n + e.c;
}

fn modq(e: Elem) -> vec3<u32> {
    let mi = limb_map[e.limb];
    return vec3<u32>(moduli[mi * MOD_STRIDE], moduli[mi * MOD_STRIDE + 1u], moduli[mi * MOD_STRIDE + 2u]);
}

@compute @workgroup_size(256)
fn ew_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    out[o_at(e)] = a[a_at(e)];
}

@compute @workgroup_size(256)
fn ew_add_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = add_mod(a[a_at(e)], scalars[2u * e.limb], m.x);
}

@compute @workgroup_size(256)
fn ew_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = add_mod(a[a_at(e)], b[b_at(e)], m.x);
}

@compute @workgroup_size(256)
fn ew_sub(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = sub_mod(a[a_at(e)], b[b_at(e)], m.x);
}

@compute @workgroup_size(256)
fn ew_negate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = neg_mod(a[a_at(e)], m.x);
}

@compute @workgroup_size(256)
fn ew_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = mul_mod(a[a_at(e)], b[b_at(e)], m.x, m.y, m.z);
}

@compute @workgroup_size(256)
fn ew_mul_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    out[o_at(e)] = mul_shoup(a[a_at(e)], scalars[2u * e.limb], scalars[2u * e.limb + 1u], m.x);
}

@compute @workgroup_size(256)
fn ew_mac(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    let o = o_at(e);
    out[o] = add_mod(out[o], mul_mod(a[a_at(e)], b[b_at(e)], m.x, m.y, m.z), m.x);
}

@compute @workgroup_size(256)
fn ew_mul_scalar_acc(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    let o = o_at(e);
    out[o] = add_mod(out[o], mul_shoup(a[a_at(e)], scalars[2u * e.limb], scalars[2u * e.limb + 1u], m.x), m.x);
}

@compute @workgroup_size(256)
fn ew_tensor(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = elem(gid, nwg);
    if (!e.valid) {
        return;
    }
    let m = modq(e);
    let step = prm.limbs * prm.n;
    let ia = a_at(e);
    let ib = b_at(e);
    let io = o_at(e);
    let a0 = a[ia];
    let a1 = a[ia + step];
    let b0 = b[ib];
    let b1 = b[ib + step];
    // Karatsuba: 3 products; a0 b1 + a1 b0 = (a0 + a1)(b0 + b1) - a0 b0 - a1 b1 (mod q).
    let p00 = mul_mod(a0, b0, m.x, m.y, m.z);
    let p11 = mul_mod(a1, b1, m.x, m.y, m.z);
    let s = mul_mod(add_mod(a0, a1, m.x), add_mod(b0, b1, m.x), m.x, m.y, m.z);
    out[io] = p00;
    out[io + step] = sub_mod(sub_mod(s, p00, m.x), p11, m.x);
    out[io + 2u * step] = p11;
}
