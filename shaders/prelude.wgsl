// Modular arithmetic on u32 residues modulo primes q < 2^30, prepended to every kernel family.
// WGSL has no portable 64-bit integer, so 32x32->64 products are assembled from 16-bit halves.
// Mirrors cryptodl_kernels::modarith (Shoup and Barrett reduction); every kernel's final output
// is a canonical residue in [0, q), so GPU and CPU agree bit for bit.

// Per-modulus record in the `moduli` storage buffer: MOD_STRIDE u32 per modulus.
//   [0] q   [1] Barrett mu = floor(2^(2k) / q)   [2] k = bit length of q
//   [3] N^-1 mod q   [4] Shoup companion of N^-1   [5..8) reserved (zero)
const MOD_STRIDE: u32 = 8u;

// <wide-products>: replaced by shaders/prelude_int64.wgsl where the device has SHADER_INT64.
// Full 64-bit product of two u32 as (lo, hi). 4 u32 multiplies.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Middle column: < 3 * 2^16, no overflow.
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// High 32 bits of a * b. 4 u32 multiplies.
fn mul_hi(a: u32, b: u32) -> u32 {
    return mul_wide(a, b).y;
}
// </wide-products>

// x in [0, 2q) -> [0, q).
fn reduce_2q(x: u32, q: u32) -> u32 {
    return select(x, x - q, x >= q);
}

// x in [0, 4q) -> [0, q).
fn reduce_4q(x: u32, q: u32) -> u32 {
    let y = select(x, x - 2u * q, x >= 2u * q);
    return select(y, y - q, y >= q);
}

// Shoup: w' = floor(w * 2^32 / q); returns x*w mod q in [0, 2q) for any u32 x. 6 u32 multiplies.
fn mul_shoup_lazy(x: u32, w: u32, w_shoup: u32, q: u32) -> u32 {
    return x * w - mul_hi(x, w_shoup) * q;
}

// Shoup multiplication, canonical output in [0, q).
fn mul_shoup(x: u32, w: u32, w_shoup: u32, q: u32) -> u32 {
    return reduce_2q(mul_shoup_lazy(x, w, w_shoup, q), q);
}

// Barrett reduction of a 64-bit z = (lo, hi) < q^2 to [0, q). 5 u32 multiplies.
// qhat = ((z >> (k-1)) * mu) >> (k+1) underestimates floor(z/q) by at most 2.
fn barrett_reduce_wide(z: vec2<u32>, q: u32, mu: u32, k: u32) -> u32 {
    // 2 <= k <= 30: both shift amounts below are in [1, 31].
    let s = (z.x >> (k - 1u)) | (z.y << (33u - k));
    let p = mul_wide(s, mu);
    let qhat = (p.x >> (k + 1u)) | (p.y << (31u - k));
    var r = z.x - qhat * q;
    r = select(r, r - q, r >= q);
    r = select(r, r - q, r >= q);
    return r;
}

// a * b mod q for a, b in [0, q), canonical. 9 u32 multiplies.
fn mul_mod(a: u32, b: u32, q: u32, mu: u32, k: u32) -> u32 {
    return barrett_reduce_wide(mul_wide(a, b), q, mu, k);
}

// a + b mod q for a, b in [0, q).
fn add_mod(a: u32, b: u32, q: u32) -> u32 {
    let s = a + b;
    return select(s, s - q, s >= q);
}

// a - b mod q for a, b in [0, q).
fn sub_mod(a: u32, b: u32, q: u32) -> u32 {
    return select(a - b, a + q - b, a < b);
}

// -a mod q for a in [0, q).
fn neg_mod(a: u32, q: u32) -> u32 {
    return select(q - a, 0u, a == 0u);
}
