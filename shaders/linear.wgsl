// Linear layer over a batch of RNS polynomials, as a tiled modular GEMM (CPU twin:
// cryptodl_kernels::linear::linear): the weighted sums of ciphertexts that convolutions and dense
// layers become in batch packing.
//
// Input x: [inputs][comps][limbs][n]. Output out: [outputs][comps][limbs][n]:
//   out[j][k][l][c] = (k == 0 ? bias[j][l] : 0) + sum_{e in row j} w[l][e] * x[col(e)][k][l][c] mod q_l
// Inputs canonical in [0, q); the output is canonical (Shoup products, modular adds), equal to the
// CPU twin's exact sum whatever the order of the terms. Layout-agnostic (coefficient or NTT form).
//
// Tiling. The host groups the outputs into blocks of TM slots (outputs whose rows read nearby
// inputs together: sorted by their first column) and lists each block's inputs U_b (the union of
// its rows' columns, ascending). One workgroup computes one block for TC consecutive
// coefficients of one (component, limb): it walks U_b in chunks of TK inputs, loads each chunk's
// TK x TC input words into workgroup memory once, and every invocation adds the chunk's terms of
// its PER outputs (slots r, r + RPASS, ...) for its coefficient. Each input word is thus read
// from memory once per block that uses it, instead of once per output that uses it: a dense
// layer of up to TM outputs reads its inputs once.
//
// `rows` (u32 words; offsets in the parameters):
//   [0, blocks]         u_ptr: block b's inputs are U[u_ptr[b] .. u_ptr[b + 1]]
//   u_off + i           U: input indices, ascending within each block
//   perm_off + s        the output of slot s = b * TM + r, or 0xffffffff for an empty slot
//   seg_off + s         where slot s's chunk bounds start in `rows`: chunks(b) + 1 entry indices,
//                       chunk ch holding the slot's entries [bound[ch], bound[ch + 1])
//   upos_off + e        the position in U_b of entry e's input (entries in slot order, each
//                       slot's entries by ascending position)
// With `accumulate` = 1 the sums are added to the words already in `out` (linear_acc).
// `w` holds [limbs][nnz] pairs (weight residue, its Shoup companion) in that entry order; `bias`
// is [outputs][limbs], added to component 0 only.

const TC: u32 = 32u;
const TM: u32 = 128u;
const TK: u32 = 64u;
const RPASS: u32 = 8u; // 256 / TC
const PER: u32 = 16u; // TM / RPASS
const EMPTY: u32 = 0xffffffffu;

struct LinParams {
    n: u32,
    limbs: u32,
    comps: u32,
    nnz: u32,
    blocks: u32,
    tiles: u32,
    u_off: u32,
    perm_off: u32,
    seg_off: u32,
    upos_off: u32,
    // 1: add to the words already in `out` (linear_acc)
    accumulate: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
@group(0) @binding(5) var<storage, read> moduli: array<u32>;
@group(0) @binding(6) var<storage, read> limb_map: array<u32>;
@group(0) @binding(7) var<uniform> prm: LinParams;

var<workgroup> xs: array<u32, 2048>; // TK * TC

@compute @workgroup_size(256)
fn linear(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let ct = g % prm.tiles;
    let rest = g / prm.tiles;
    let l = rest % prm.limbs;
    let rest2 = rest / prm.limbs;
    let k = rest2 % prm.comps;
    let b = rest2 / prm.comps;
    if (b >= prm.blocks) {
        return;
    }
    let lc = lid % TC;
    let r = lid / TC;
    let q = moduli[limb_map[l] * MOD_STRIDE];
    var acc: array<u32, PER>;
    for (var m = 0u; m < PER; m++) {
        let j = rows[prm.perm_off + b * TM + r + m * RPASS];
        acc[m] = 0u;
        if (j != EMPTY) {
            if (prm.accumulate == 1u) {
                acc[m] = out[((j * prm.comps + k) * prm.limbs + l) * prm.n + ct * TC + lc];
            }
            if (k == 0u) {
                acc[m] = add_mod(acc[m], bias[j * prm.limbs + l], q);
            }
        }
    }
    let u0 = rows[b];
    let u1 = rows[b + 1u];
    let chunks = (u1 - u0 + TK - 1u) / TK;
    for (var ch = 0u; ch < chunks; ch++) {
        let base = u0 + ch * TK;
        for (var i = 0u; i < TK * TC / 256u; i++) {
            let e = lid + i * 256u;
            let ui = e / TC;
            var v = 0u;
            if (base + ui < u1) {
                let input = rows[prm.u_off + base + ui];
                v = x[((input * prm.comps + k) * prm.limbs + l) * prm.n + ct * TC + e % TC];
            }
            xs[e] = v;
        }
        workgroupBarrier();
        for (var m = 0u; m < PER; m++) {
            let so = rows[prm.seg_off + b * TM + r + m * RPASS];
            let e1 = rows[so + ch + 1u];
            for (var e = rows[so + ch]; e < e1; e++) {
                let pos = rows[prm.upos_off + e] - ch * TK;
                let wi = 2u * (l * prm.nnz + e);
                acc[m] = add_mod(acc[m], mul_shoup(xs[pos * TC + lc], w[wi], w[wi + 1u], q), q);
            }
        }
        workgroupBarrier();
    }
    let c = ct * TC + lc;
    for (var m = 0u; m < PER; m++) {
        let j = rows[prm.perm_off + b * TM + r + m * RPASS];
        if (j != EMPTY) {
            out[((j * prm.comps + k) * prm.limbs + l) * prm.n + c] = acc[m];
        }
    }
}
