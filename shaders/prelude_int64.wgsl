// The wide products of the prelude with native 64-bit integers (wgpu Features::SHADER_INT64),
// bit for bit the portable ones: one 32x32->64 multiply each instead of four 16-bit ones.

// Full 64-bit product of two u32 as (lo, hi). 1 (64-bit) multiply.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let p = u64(a) * u64(b);
    return vec2<u32>(u32(p), u32(p >> 32u));
}

// High 32 bits of a * b. 1 (64-bit) multiply.
fn mul_hi(a: u32, b: u32) -> u32 {
    return u32((u64(a) * u64(b)) >> 32u);
}
