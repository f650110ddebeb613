// Negacyclic NTT over every limb of every polynomial of a tensor, in workgroup-memory tiles.
//
// Data: `data` holds `polys` polynomials of `limbs` limbs of `n` coefficients; limb l of poly p
// starts at ((off + p * stride + l) * n). In place, or out of place from a view of `src`. Limb l uses modulus index limb_map[l]: its tables start
// at tables[mi * 4n] as [psi_rev | psi_rev_shoup | psi_inv_rev | psi_inv_rev_shoup], n each.
//
// A transform is one or two dispatches whatever `polys` and `limbs`:
//  * n <= TILE: one `*_block` pass does every stage of TILE/n polynomials per workgroup.
//  * n  > TILE: with n = N1 * TILE, the stages whose butterfly span t >= TILE only mix
//    coefficients congruent mod TILE, so a `*_strided` pass does them on N1 x (TILE/N1) tiles
//    (one column per residue class); the stages with t < TILE are local to blocks of TILE
//    consecutive coefficients and a `*_block` pass does them.
//
// Forward (Cooley-Tukey, Harvey lazy butterflies): input natural order, values in [0, 4q)
// (canonical input is fine); intermediate values in [0, 4q); output bit-reversed, canonical [0, q)
// when `last` = 1. Inverse (Gentleman-Sande): input bit-reversed in [0, 2q), intermediate values in
// [0, 2q); output natural order, multiplied by n^-1, canonical [0, q) when `last` = 1.

// TILE words of workgroup memory: 2048 (8 KiB) by default; the backend compiles a second copy of
// this file with TILE = 8192 (32 KiB) for adapters that have the storage, making every transform
// of n <= 8192 a single pass.
const TILE: u32 = 2048u;
const LOG_TILE: u32 = 11u;
const WG: u32 = 256u;
const PER_THREAD: u32 = TILE / WG; // elements loaded per thread
const BFLY_PER_THREAD: u32 = TILE / 2u / WG; // butterflies per thread per stage

struct NttParams {
    n: u32,
    log_n: u32,
    limbs: u32,
    polys: u32,
    off: u32,
    stride: u32,
    last: u32,
    // 1: this pass loads from `src` (view src_off, src_stride) instead of `data`: an
    // out-of-place transform (the first pass of one; later passes work in `data`).
    from_src: u32,
    src_off: u32,
    src_stride: u32,
    // 1: the forward transform's last store finishes a divide-and-round:
    // out = (src - v) * aux[limb] mod q (src: the kept limbs of x, view src_off/stride).
    // 2: the first pass loads a base conversion of `src` (mod-up fused into the forward NTT):
    // the tensor is [polys][conv_groups][limbs] (limb t: target t of a group), and its input
    // coefficient is the conversion of the group's source limbs of `src` to target t, exactly
    // as `basis_convert` in rns.wgsl computes it (CPU twin: BaseConverter::convert, then
    // NttTable::forward). aux: [pre_off, mat_off, (start, len) per group], at pre_off
    // ((B_g/q_s)^-1 mod q_s, its Shoup companion, q_s) per source limb s, at mat_off
    // ((B_g/q_s) mod p_t, its Shoup companion) per (s, t).
    tail: u32,
    conv_groups: u32,
}

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read> moduli: array<u32>;
@group(0) @binding(4) var<storage, read> limb_map: array<u32>;
// per limb (D^-1 mod q, its Shoup companion) when `tail` = 1; the conversion table when 2
@group(0) @binding(5) var<storage, read> aux: array<u32>;
@group(0) @binding(6) var<uniform> prm: NttParams;

var<workgroup> sh: array<u32, TILE>;

// Address of coefficient c of limb-poly lp (lp = poly * limbs + limb).
fn coeff_addr(lp: u32, c: u32) -> u32 {
    let poly = lp / prm.limbs;
    let limb = lp % prm.limbs;
    return (prm.off + poly * prm.stride + limb) * prm.n + c;
}

// Coefficient c of target limb t of group g of poly `poly` of a fused mod-up (tail = 2):
// sum over the group's sources s of y_s * ((B_g/q_s) mod p_t) mod p_t, with
// y_s = x_s (B_g/q_s)^-1 mod q_s; canonical [0, p_t).
fn converted(poly: u32, g: u32, t: u32, c: u32) -> u32 {
    let s0 = aux[2u + 2u * g];
    let len = aux[3u + 2u * g];
    let p = moduli[limb_map[t] * MOD_STRIDE];
    var acc = 0u;
    for (var i = 0u; i < len; i++) {
        let s = s0 + i;
        let pre = aux[0] + 3u * s;
        let q = aux[pre + 2u];
        let x = src[(prm.src_off + poly * prm.src_stride + s) * prm.n + c];
        let y = mul_shoup(add_mod(x, 0u, q), aux[pre], aux[pre + 1u], q);
        let m = aux[1] + 2u * (s * prm.limbs + t);
        acc = add_mod(acc, reduce_2q(mul_shoup_lazy(y, aux[m], aux[m + 1u], p), p), p);
    }
    return acc;
}

// Coefficient c of limb-poly lp as this pass loads it: from `src` on the first pass of an
// out-of-place transform, converted from `src` on the first pass of a fused mod-up, else from
// `data`.
fn load(lp: u32, c: u32) -> u32 {
    if (prm.tail == 2u && prm.from_src == 1u) {
        let pg = lp / prm.limbs;
        return converted(pg / prm.conv_groups, pg % prm.conv_groups, lp % prm.limbs, c);
    }
    if (prm.from_src == 1u) {
        let poly = lp / prm.limbs;
        let limb = lp % prm.limbs;
        return src[(prm.src_off + poly * prm.src_stride + limb) * prm.n + c];
    }
    return data[coeff_addr(lp, c)];
}

// The canonical forward output v of coefficient c of limb-poly lp, finished as `tail` asks.
fn forward_out(lp: u32, c: u32, v: u32, q: u32) -> u32 {
    let r = reduce_4q(v, q);
    if (prm.tail != 1u) {
        return r;
    }
    let poly = lp / prm.limbs;
    let limb = lp % prm.limbs;
    let x = src[(prm.src_off + poly * prm.src_stride + limb) * prm.n + c];
    return mul_shoup(sub_mod(x, r, q), aux[2u * limb], aux[2u * limb + 1u], q);
}

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// ---- block passes: TILE consecutive logical coefficients (several polys when n < TILE) ----

// Logical element e of tile t -> (lp, c); lp may be past the end (then skipped).
fn block_lp(t: u32, e: u32) -> u32 {
    return (t * TILE + e) >> prm.log_n;
}

fn block_c(t: u32, e: u32) -> u32 {
    return (t * TILE + e) & (prm.n - 1u);
}

fn block_load(t: u32, lid: u32) {
    let total = prm.polys * prm.limbs;
    for (var r = 0u; r < PER_THREAD; r++) {
        let e = lid + r * WG;
        let lp = block_lp(t, e);
        if (lp < total) {
            sh[e] = load(lp, block_c(t, e));
        }
    }
}

// Final store; `scale` = 1 multiplies by n^-1 (inverse), `canon` picks the final reduction.
fn block_store(t: u32, lid: u32, forward: bool) {
    let total = prm.polys * prm.limbs;
    for (var r = 0u; r < PER_THREAD; r++) {
        let e = lid + r * WG;
        let lp = block_lp(t, e);
        if (lp < total) {
            var v = sh[e];
            if (prm.last == 1u) {
                let mi = limb_map[lp % prm.limbs];
                let q = moduli[mi * MOD_STRIDE];
                if (forward) {
                    v = forward_out(lp, block_c(t, e), v, q);
                } else {
                    let ninv = moduli[mi * MOD_STRIDE + 3u];
                    let ninv_s = moduli[mi * MOD_STRIDE + 4u];
                    v = reduce_2q(mul_shoup_lazy(v, ninv, ninv_s, q), q);
                }
            }
            data[coeff_addr(lp, block_c(t, e))] = v;
        }
    }
}

// Forward Harvey butterfly on sh[i], sh[j] with twiddle index tw of modulus mi.
fn ct_butterfly(i: u32, j: u32, mi: u32, tw: u32) {
    let q = moduli[mi * MOD_STRIDE];
    let base = mi * 4u * prm.n;
    let w = tables[base + tw];
    let ws = tables[base + prm.n + tw];
    var x = sh[i];
    x = select(x, x - 2u * q, x >= 2u * q);
    let t = mul_shoup_lazy(sh[j], w, ws, q);
    sh[i] = x + t;
    sh[j] = x + 2u * q - t;
}

// Inverse Harvey butterfly on sh[i], sh[j] with twiddle index tw of modulus mi.
fn gs_butterfly(i: u32, j: u32, mi: u32, tw: u32) {
    let q = moduli[mi * MOD_STRIDE];
    let base = mi * 4u * prm.n + 2u * prm.n;
    let w = tables[base + tw];
    let ws = tables[base + prm.n + tw];
    let x = sh[i];
    let y = sh[j];
    let s = x + y;
    sh[i] = select(s, s - 2u * q, s >= 2u * q);
    sh[j] = mul_shoup_lazy(x + 2u * q - y, w, ws, q);
}

@compute @workgroup_size(256)
fn ntt_forward_block(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = tile_index(wid, nwg);
    let total = prm.polys * prm.limbs;
    block_load(t, lid);
    workgroupBarrier();
    let span = min(prm.n, TILE);
    var log_half = firstTrailingBit(span) - 1u;
    for (var half = span >> 1u; half >= 1u; half >>= 1u) {
        for (var r = 0u; r < BFLY_PER_THREAD; r++) {
            let u = lid + r * WG;
            let i = (u >> log_half) * 2u * half + (u & (half - 1u));
            let lp = block_lp(t, i);
            if (lp < total) {
                let c = block_c(t, i);
                let tw = (prm.n + c) >> (log_half + 1u);
                ct_butterfly(i, i + half, limb_map[lp % prm.limbs], tw);
            }
        }
        workgroupBarrier();
        log_half -= 1u;
    }
    block_store(t, lid, true);
}

@compute @workgroup_size(256)
fn ntt_inverse_block(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = tile_index(wid, nwg);
    let total = prm.polys * prm.limbs;
    block_load(t, lid);
    workgroupBarrier();
    let span = min(prm.n, TILE);
    var log_half = 0u;
    for (var half = 1u; half < span; half <<= 1u) {
        for (var r = 0u; r < BFLY_PER_THREAD; r++) {
            let u = lid + r * WG;
            let i = (u >> log_half) * 2u * half + (u & (half - 1u));
            let lp = block_lp(t, i);
            if (lp < total) {
                let c = block_c(t, i);
                let tw = (prm.n + c) >> (log_half + 1u);
                gs_butterfly(i, i + half, limb_map[lp % prm.limbs], tw);
            }
        }
        workgroupBarrier();
        log_half += 1u;
    }
    block_store(t, lid, false);
}

// ---- strided passes (n > TILE): N1 = n / TILE rows, C = TILE / N1 columns per tile ----
// Local element e = row * C + col holds coefficient c0 + col + TILE * row.

fn strided_rows() -> u32 {
    return prm.n / TILE;
}

fn strided_coeff(t: u32, e: u32) -> u32 {
    let rows = strided_rows();
    let cols = TILE / rows;
    let c0 = (t % rows) * cols;
    return c0 + (e % cols) + TILE * (e / cols);
}

fn strided_load(t: u32, lid: u32) {
    let lp = t / strided_rows();
    if (lp < prm.polys * prm.limbs) {
        for (var r = 0u; r < PER_THREAD; r++) {
            let e = lid + r * WG;
            sh[e] = load(lp, strided_coeff(t, e));
        }
    }
}

fn strided_store(t: u32, lid: u32, forward: bool) {
    let lp = t / strided_rows();
    if (lp < prm.polys * prm.limbs) {
        let mi = limb_map[lp % prm.limbs];
        let q = moduli[mi * MOD_STRIDE];
        let ninv = moduli[mi * MOD_STRIDE + 3u];
        let ninv_s = moduli[mi * MOD_STRIDE + 4u];
        for (var r = 0u; r < PER_THREAD; r++) {
            let e = lid + r * WG;
            var v = sh[e];
            if (prm.last == 1u) {
                if (forward) {
                    v = forward_out(lp, strided_coeff(t, e), v, q);
                } else {
                    v = reduce_2q(mul_shoup_lazy(v, ninv, ninv_s, q), q);
                }
            }
            data[coeff_addr(lp, strided_coeff(t, e))] = v;
        }
    }
}

@compute @workgroup_size(256)
fn ntt_forward_strided(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = tile_index(wid, nwg);
    let rows = strided_rows();
    let cols = TILE / rows;
    let lp = t / rows;
    let valid = lp < prm.polys * prm.limbs;
    let mi = limb_map[lp % prm.limbs];
    strided_load(t, lid);
    workgroupBarrier();
    // Row span tr = t_global / TILE from rows/2 down to 1.
    var log_tr = firstTrailingBit(rows) - 1u;
    for (var tr = rows >> 1u; tr >= 1u; tr >>= 1u) {
        if (valid) {
            for (var r = 0u; r < BFLY_PER_THREAD; r++) {
                let u = lid + r * WG;
                let col = u % cols;
                let b = u / cols;
                let row = (b >> log_tr) * 2u * tr + (b & (tr - 1u));
                let i = row * cols + col;
                let c = strided_coeff(t, i);
                // Global span t_g = tr * TILE; twiddle index (n + c) / (2 t_g).
                let tw = (prm.n + c) >> (log_tr + LOG_TILE + 1u);
                ct_butterfly(i, i + tr * cols, mi, tw);
            }
        }
        workgroupBarrier();
        log_tr -= 1u;
    }
    strided_store(t, lid, true);
}

@compute @workgroup_size(256)
fn ntt_inverse_strided(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = tile_index(wid, nwg);
    let rows = strided_rows();
    let cols = TILE / rows;
    let lp = t / rows;
    let valid = lp < prm.polys * prm.limbs;
    let mi = limb_map[lp % prm.limbs];
    strided_load(t, lid);
    workgroupBarrier();
    var log_tr = 0u;
    for (var tr = 1u; tr < rows; tr <<= 1u) {
        if (valid) {
            for (var r = 0u; r < BFLY_PER_THREAD; r++) {
                let u = lid + r * WG;
                let col = u % cols;
                let b = u / cols;
                let row = (b >> log_tr) * 2u * tr + (b & (tr - 1u));
                let i = row * cols + col;
                let c = strided_coeff(t, i);
                let tw = (prm.n + c) >> (log_tr + LOG_TILE + 1u);
                gs_butterfly(i, i + tr * cols, mi, tw);
            }
        }
        workgroupBarrier();
        log_tr += 1u;
    }
    strided_store(t, lid, false);
}
