// Sparse linear layer over a batch of RNS polynomials (CPU twin:
// cryptodl_kernels::linear::linear): the weighted sums of ciphertexts that convolutions and dense
// layers become in batch packing.
//
// Input x: [inputs][comps][limbs][n]. Weights in CSR form: `rows` holds row_ptr (outputs + 1
// offsets) then cols (nnz input indices); `w` holds [limbs][nnz] pairs (weight residue, its Shoup
// companion); `bias` is [outputs][limbs], added to component 0 only. Output
// out: [outputs][comps][limbs][n], one invocation per output word g = ((j*comps + k)*limbs + l)*n + c:
//   out[j][k][l][c] = (k == 0 ? bias[j][l] : 0) + sum_{e in row j} w[l][e] * x[cols[e]][k][l][c] mod q_l
// Inputs canonical in [0, q); the output is canonical (Shoup products, modular adds), equal to the
// CPU twin's exact sum. Layout-agnostic (coefficient or NTT form).

struct LinParams {
    n: u32,
    log_n: u32,
    limbs: u32,
    comps: u32,
    outputs: u32,
    nnz: u32,
    _pad0: u32,
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

@compute @workgroup_size(256)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = gid.x + gid.y * nwg.x * 256u;
    let lp = g >> prm.log_n;
    if (lp >= prm.outputs * prm.comps * prm.limbs) {
        return;
    }
    let c = g & (prm.n - 1u);
    let l = lp % prm.limbs;
    let jk = lp / prm.limbs;
    let k = jk % prm.comps;
    let j = jk / prm.comps;
    let q = moduli[limb_map[l] * MOD_STRIDE];
    var acc = select(0u, bias[j * prm.limbs + l], k == 0u);
    let cols = prm.outputs + 1u;
    let end = rows[j + 1u];
    for (var e = rows[j]; e < end; e++) {
        let wi = 2u * (l * prm.nnz + e);
        let i = rows[cols + e];
        let v = x[((i * prm.comps + k) * prm.limbs + l) * prm.n + c];
        acc = add_mod(acc, mul_shoup(v, w[wi], w[wi + 1u], q), q);
    }
    out[g] = acc;
}
