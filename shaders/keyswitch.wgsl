// Key-switching inner product. CPU twin: cryptodl_kernels::keyswitch::keyswitch_inner.
//
// digits: [polys][dnum][limbs][n] view in NTT form (limb l of digit j of poly p at
//         (d_off + p * d_stride + j * limbs + l) * n); limb l uses modulus index limb_map[l].
// key:    [dnum][2][key_limbs][n] in NTT form; active limb l reads key limb key_map[l].
// out:    [polys][2][limbs][n] view (component c, limb l of poly p at
//         (o_off + p * o_stride + c * limbs + l) * n):
//         out_c = sum_j digit_j * key_{j,c} mod q, canonical. Inputs canonical.
//
// One invocation per (limb, coefficient) loops over every polynomial of the batch with the key
// words of up to KS_GROUP digits in registers, so each key word is read once per dispatch, not
// once per polynomial. More digits go in groups (a later group adds to the earlier sums in out).

struct KsParams {
    n: u32,
    log_n: u32,
    polys: u32,
    limbs: u32,
    dnum: u32,
    key_limbs: u32,
    d_off: u32,
    d_stride: u32,
    o_off: u32,
    o_stride: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> digits: array<u32>;
@group(0) @binding(2) var<storage, read> key: array<u32>;
@group(0) @binding(3) var<storage, read> moduli: array<u32>;
@group(0) @binding(4) var<storage, read> limb_map: array<u32>;
@group(0) @binding(5) var<storage, read> key_map: array<u32>;
@group(0) @binding(6) var<uniform> prm: KsParams;

const KS_GROUP: u32 = 8u;

@compute @workgroup_size(256)
fn keyswitch_inner(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let c = idx & (prm.n - 1u);
    let l = idx >> prm.log_n;
    if (l >= prm.limbs) {
        return;
    }
    let mi = limb_map[l];
    let q = moduli[mi * MOD_STRIDE];
    let mu = moduli[mi * MOD_STRIDE + 1u];
    let k = moduli[mi * MOD_STRIDE + 2u];
    let kl = key_map[l];
    let half = prm.limbs * prm.n;
    var k0: array<u32, KS_GROUP>;
    var k1: array<u32, KS_GROUP>;
    for (var j0 = 0u; j0 < prm.dnum; j0 += KS_GROUP) {
        let jn = min(prm.dnum - j0, KS_GROUP);
        for (var j = 0u; j < jn; j++) {
            k0[j] = key[((2u * (j0 + j)) * prm.key_limbs + kl) * prm.n + c];
            k1[j] = key[((2u * (j0 + j) + 1u) * prm.key_limbs + kl) * prm.n + c];
        }
        for (var p = 0u; p < prm.polys; p++) {
            let o = (prm.o_off + p * prm.o_stride + l) * prm.n + c;
            var acc0 = 0u;
            var acc1 = 0u;
            if (j0 > 0u) {
                acc0 = out[o];
                acc1 = out[o + half];
            }
            for (var j = 0u; j < jn; j++) {
                let d = digits[(prm.d_off + p * prm.d_stride + (j0 + j) * prm.limbs + l) * prm.n + c];
                acc0 = add_mod(acc0, mul_mod(d, k0[j], q, mu, k), q);
                acc1 = add_mod(acc1, mul_mod(d, k1[j], q, mu, k), q);
            }
            out[o] = acc0;
            out[o + half] = acc1;
        }
    }
}
