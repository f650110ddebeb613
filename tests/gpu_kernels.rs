//! GPU == CPU, bit for bit, for every kernel on random inputs (runs on lavapipe in CI).

use cryptodl::backend::cpu::CpuBackend;
use cryptodl::backend::gpu::shaders::Arith;
use cryptodl::backend::gpu::shaders::{NTT_TILE, NTT_TILE_WIDE};
use cryptodl::backend::gpu::{AdapterChoice, GpuBackend, GpuRuntime};
use cryptodl::backend::verify::{mismatches, run_case, VerifyCase};
use cryptodl::backend::{Backend, LinearWeights, RnsContext, Shape};
use cryptodl_kernels::primes::ntt_primes;

mod common;
use common::gpu;

fn check(case: VerifyCase, seed: u64) {
    let Some(rt) = gpu() else { return };
    let reports = run_case(rt, &case, seed).expect("verify case runs");
    assert!(reports.len() >= 17, "every kernel reported: {reports:?}");
    let bad: Vec<_> = reports.iter().filter(|r| r.mismatches > 0).collect();
    assert!(bad.is_empty(), "GPU != CPU for {case:?}: {bad:#?}");
}

#[test]
fn every_kernel_matches_cpu_n1024_odd_counts() {
    // n < TILE: several polynomials per NTT tile, and a ragged last tile (7 * 2 * 3 limbs).
    check(
        VerifyCase {
            n: 1024,
            q_limbs: 3,
            p_limbs: 2,
            alpha: 2,
            count: 7,
            primes: None,
            ntt_tile: Some(NTT_TILE),
        },
        1,
    );
}

#[test]
fn every_kernel_matches_cpu_n2048_single() {
    // n == TILE: one block pass; one ciphertext, one-limb digits.
    check(
        VerifyCase {
            n: 2048,
            q_limbs: 2,
            p_limbs: 1,
            alpha: 1,
            count: 1,
            primes: None,
            ntt_tile: Some(NTT_TILE),
        },
        2,
    );
}

#[test]
fn every_kernel_matches_cpu_n4096_strided() {
    // n > TILE: strided + block passes; 5 ciphertexts, digits of 2 over 5 limbs (last digit 1).
    check(
        VerifyCase {
            n: 4096,
            q_limbs: 5,
            p_limbs: 2,
            alpha: 2,
            count: 5,
            primes: None,
            ntt_tile: Some(NTT_TILE),
        },
        3,
    );
}

#[test]
fn every_kernel_matches_cpu_on_the_real_toy4096_primes() {
    // 26-bit data primes and a 30-bit q0 as the CKKS presets use (not only 30-bit primes).
    let p = cryptodl::ckks::Preset::by_name("toy4096")
        .unwrap()
        .parameters(true)
        .unwrap();
    check(
        VerifyCase {
            n: p.n(),
            q_limbs: p.q().len(),
            p_limbs: p.p().len(),
            alpha: p.digit_size(),
            count: 2,
            primes: Some(p.q().iter().chain(p.p()).copied().collect()),
            // the adapter's choice: the wide tile on lavapipe (two polynomials per tile)
            ntt_tile: None,
        },
        5,
    );
}

/// The same kernels with the other wide-product arithmetic than the shared runtime's: portable
/// 16-bit halves where the adapter has SHADER_INT64 (then the other tests ran native products),
/// else nothing to compare.
#[test]
fn every_kernel_matches_cpu_with_the_other_arithmetic() {
    let Some(shared) = gpu() else { return };
    let other = match shared.arith() {
        Arith::Int64 => Arith::Portable,
        _ if shared.adapter().shader_int64 => Arith::Int64,
        _ => {
            eprintln!(
                "SKIPPED: the adapter has no SHADER_INT64; only the portable arithmetic runs"
            );
            return;
        }
    };
    let rt = std::sync::Arc::new(
        GpuRuntime::with_arith(&AdapterChoice::from_env(), Some(other)).expect("second runtime"),
    );
    assert_eq!(rt.arith(), other);
    for (case, seed) in [
        (VerifyCase::preset("n1024").unwrap(), 11),
        (VerifyCase::preset("n8192").unwrap(), 12),
        (
            VerifyCase {
                ntt_tile: Some(NTT_TILE),
                ..VerifyCase::preset("n4096").unwrap()
            },
            13,
        ),
    ] {
        let reports = run_case(rt.clone(), &case, seed).expect("verify case runs");
        let bad: Vec<_> = reports.iter().filter(|r| r.mismatches > 0).collect();
        assert!(
            bad.is_empty(),
            "GPU ({other:?}) != CPU for {case:?}: {bad:#?}"
        );
    }
}

#[test]
fn every_kernel_matches_cpu_with_wide_ntt_tiles() {
    // Tiles of 8192: eight polynomials per tile at n = 1024 with a ragged last tile, and a
    // strided pass of 2 rows at n = 16384.
    let Some(rt) = gpu() else { return };
    let have = rt.limits().max_compute_workgroup_storage_size;
    if have < 4 * NTT_TILE_WIDE {
        eprintln!(
            "SKIPPED: the adapter has {have} bytes of workgroup storage, wide NTT tiles need {}",
            4 * NTT_TILE_WIDE
        );
        return;
    }
    for (n, q_limbs, count) in [(1024, 3, 7), (16384, 3, 1)] {
        check(
            VerifyCase {
                n,
                q_limbs,
                p_limbs: 2,
                alpha: 2,
                count,
                primes: None,
                ntt_tile: Some(NTT_TILE_WIDE),
            },
            6,
        );
    }
}

#[test]
fn every_kernel_matches_cpu_n8192() {
    check(VerifyCase::preset("n8192").expect("preset"), 4);
}

#[test]
fn ntt_matches_cpu_at_n32768() {
    let Some(rt) = gpu() else { return };
    let n = 32768;
    let primes = ntt_primes(30, n, 2, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let wide = rt.limits().max_compute_workgroup_storage_size >= 4 * NTT_TILE_WIDE;
    let tiles = if wide {
        vec![NTT_TILE, NTT_TILE_WIDE]
    } else {
        vec![NTT_TILE]
    };
    for tile in tiles {
        ntt_matches_cpu_at_n32768_with(&rt, &ctx, &primes, tile);
    }
}

fn ntt_matches_cpu_at_n32768_with(
    rt: &std::sync::Arc<cryptodl::backend::gpu::GpuRuntime>,
    ctx: &RnsContext,
    primes: &[u32],
    tile: u32,
) {
    let n = ctx.n();
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt.clone(), ctx.clone())
        .unwrap()
        .with_ntt_tile(tile)
        .unwrap();
    let data: Vec<u32> = (0..3 * 2 * n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % primes[(i / n) % 2])
        .collect();
    for forward in [true, false] {
        // The same words, read as coefficients (forward) or NTT evaluations (inverse).
        let shape = if forward {
            Shape::coeff(3, vec![0, 1])
        } else {
            Shape::ntt(3, vec![0, 1])
        };
        let mut c = cpu.upload(&data, shape.clone()).unwrap();
        let mut g = gpu.upload(&data, shape.clone()).unwrap();
        if forward {
            cpu.ntt_forward(&mut c).unwrap();
            gpu.ntt_forward(&mut g).unwrap();
        } else {
            cpu.ntt_inverse(&mut c).unwrap();
            gpu.ntt_inverse(&mut g).unwrap();
        }
        let (c, g) = (cpu.download(&c).unwrap(), gpu.download(&g).unwrap());
        assert_eq!(mismatches(&c, &g), 0, "forward = {forward}, tile {tile}");
    }
}

#[test]
fn ntt_round_trip_on_gpu_is_identity_and_differs_from_input() {
    let Some(rt) = gpu() else { return };
    let n = 4096;
    let primes = ntt_primes(30, n, 3, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let gpu = GpuBackend::new(rt, ctx).unwrap();
    let shape = Shape::coeff(3, vec![2, 0, 1]);
    let data: Vec<u32> = (0..shape.words(n))
        .map(|i| (i as u32).wrapping_mul(40_503) % primes[[2, 0, 1][(i / n) % 3]])
        .collect();
    let mut t = gpu.upload(&data, shape).unwrap();
    gpu.ntt_forward(&mut t).unwrap();
    let mid = gpu.download(&t).unwrap();
    assert!(mismatches(&mid, &data) > data.len() / 2);
    gpu.ntt_inverse(&mut t).unwrap();
    assert_eq!(gpu.download(&t).unwrap(), data);
}

#[test]
fn automorphism_ntt_is_the_coefficient_automorphism() {
    let Some(rt) = gpu() else { return };
    let n = 2048;
    let primes = ntt_primes(30, n, 2, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let gpu = GpuBackend::new(rt, ctx).unwrap();
    let shape = Shape::coeff(2, vec![0, 1]);
    let data: Vec<u32> = (0..shape.words(n))
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % primes[(i / n) % 2])
        .collect();
    for g in [3usize, 5, 25, 2 * n - 1] {
        let x = gpu.upload(&data, shape.clone()).unwrap();
        let want = gpu
            .download(&gpu.automorphism_coeff(&x, g).unwrap())
            .unwrap();
        let mut y = gpu.duplicate(&x).unwrap();
        gpu.ntt_forward(&mut y).unwrap();
        let mut z = gpu.automorphism_ntt(&y, g).unwrap();
        gpu.ntt_inverse(&mut z).unwrap();
        assert_eq!(gpu.download(&z).unwrap(), want, "g = {g}");
    }
}

#[test]
fn mismatch_counter_detects_a_single_flipped_word() {
    let a = vec![1u32, 2, 3, 4];
    let mut b = a.clone();
    assert_eq!(mismatches(&a, &b), 0);
    b[2] ^= 1;
    assert_eq!(mismatches(&a, &b), 1);
    assert_eq!(mismatches(&a, &b[..2]), 2);
}

#[test]
fn batched_ntt_is_a_constant_number_of_dispatches() {
    let Some(rt) = gpu() else { return };
    for (n, tile) in [
        (1024usize, NTT_TILE),
        (4096, NTT_TILE),
        (4096, 0),
        (16384, 0),
    ] {
        let primes = ntt_primes(30, n, 4, &[]).unwrap();
        let ctx = RnsContext::new(n, &primes).unwrap();
        let gpu = GpuBackend::new(rt.clone(), ctx).unwrap();
        // 0: the adapter's choice
        let gpu = if tile == 0 {
            gpu
        } else {
            gpu.with_ntt_tile(tile).unwrap()
        };
        let tile = gpu.ntt_tile() as usize;
        let mut counts = Vec::new();
        for (cts, limbs) in [(1usize, 1usize), (7, 3), (64, 4)] {
            let shape = Shape::coeff(2 * cts, (0..limbs).collect());
            let data = vec![1u32; shape.words(n)];
            let mut t = gpu.upload(&data, shape).unwrap();
            let before = gpu.counters().launches;
            gpu.ntt_forward(&mut t).unwrap();
            let fwd = gpu.counters().launches - before;
            gpu.ntt_inverse(&mut t).unwrap();
            let inv = gpu.counters().launches - before - fwd;
            counts.push((fwd, inv));
            // The round trip is exact, so the work really ran on every limb.
            assert_eq!(gpu.download(&t).unwrap(), data);
        }
        let expected = if n <= tile { (1, 1) } else { (2, 2) };
        assert!(
            counts.iter().all(|&c| c == expected),
            "n = {n}, tile {tile}: dispatches (forward, inverse) for 1x1, 7x3, 64x4 ciphertexts x limbs: {counts:?}"
        );
    }
}

#[test]
fn counted_cost_follows_every_dispatch() {
    let Some(rt) = gpu() else { return };
    for n in [1024usize, 4096] {
        let primes = ntt_primes(30, n, 3, &[]).unwrap();
        let ctx = RnsContext::new(n, &primes).unwrap();
        let gpu = GpuBackend::new(rt.clone(), ctx)
            .unwrap()
            .with_ntt_tile(NTT_TILE)
            .unwrap();
        let shape = Shape::coeff(2 * 5, (0..3).collect());
        let data = vec![1u32; shape.words(n)];
        let mut t = gpu.upload(&data, shape).unwrap();
        let before = gpu.counters();
        gpu.ntt_forward(&mut t).unwrap();
        let sq = gpu.mul(&t, &t).unwrap();
        let _copy = gpu.duplicate(&sq).unwrap();
        let after = gpu.counters();
        let k = after.kernels - before.kernels;
        // Every dispatch is counted under its family; the copy is counted but is no dispatch.
        assert_eq!(k.total().dispatches, after.launches - before.launches);
        assert_eq!(k.elementwise.dispatches, 1);
        assert_eq!(k.copy.bytes, 8 * 30 * n as u64);
        // An element-wise product is at its floor; an NTT in one pass too, in two passes its
        // data goes through memory twice.
        assert_eq!(k.elementwise.bytes, k.elementwise.floor_bytes);
        let arith = rt.arith();
        assert_eq!(k.elementwise.mults, arith.barrett() * 30 * n as u64);
        let log_n = n.trailing_zeros() as u64;
        assert_eq!(k.ntt.mults, arith.shoup() * 30 * (n as u64 / 2) * log_n);
        let want = if n <= gpu.ntt_tile() as usize {
            1.0
        } else {
            2.0
        };
        assert!(
            (k.ntt.bytes_ratio() - want).abs() < 0.1,
            "n = {n}: NTT bytes ratio {}",
            k.ntt.bytes_ratio()
        );
    }
}

/// The tiled linear kernel on layers with several blocks of outputs and several chunks of
/// inputs: a dense block, a convolution-like band, rows with repeated columns, empty rows.
#[test]
fn tiled_linear_matches_cpu_across_blocks_and_chunks() {
    let Some(rt) = gpu() else { return };
    let n = 1024;
    let primes = ntt_primes(30, n, 2, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt.clone(), ctx).unwrap();
    let (inputs, outputs, comps) = (200usize, 300usize, 2usize);
    let mut row_ptr = vec![0u32];
    let mut cols = Vec::new();
    for j in 0..outputs {
        match j % 5 {
            0 => cols.extend(0..inputs as u32),     // dense
            1 => {}                                 // empty
            2 => cols.extend([7u32, 7, 199, 0, 7]), // repeated columns
            _ => cols.extend((0..9).map(|t| ((j / 2 + t * 3) % inputs) as u32)), // band
        }
        row_ptr.push(cols.len() as u32);
    }
    let nnz = cols.len();
    let mix = |i: usize, q: u32| (i as u32).wrapping_mul(2_654_435_761).rotate_left(9) % q;
    let w = LinearWeights {
        inputs,
        values: (0..2 * nnz).map(|i| mix(i, primes[i / nnz])).collect(),
        bias: (0..outputs * 2)
            .map(|i| mix(i + 7, primes[i % 2]))
            .collect(),
        row_ptr,
        cols,
    };
    let shape = Shape::ntt(inputs * comps, vec![0, 1]);
    let x: Vec<u32> = (0..shape.words(n))
        .map(|i| mix(i + 99, primes[(i / n) % 2]))
        .collect();
    let want = cpu
        .download(
            &cpu.linear(&cpu.upload(&x, shape.clone()).unwrap(), comps, &w)
                .unwrap(),
        )
        .unwrap();
    let before = gpu.counters();
    let got = gpu
        .download(
            &gpu.linear(&gpu.upload(&x, shape).unwrap(), comps, &w)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(mismatches(&got, &want), 0);
    let k = (gpu.counters().kernels - before.kernels).linear;
    assert_eq!(k.dispatches, 1);
    // linear_acc adds to the outputs in the same kernel: equal to the CPU's linear + add
    let want_acc = {
        let x = cpu
            .upload(&x, Shape::ntt(inputs * comps, vec![0, 1]))
            .unwrap();
        let mut acc = cpu.linear(&x, comps, &w).unwrap();
        cpu.linear_acc(&mut acc, &x, comps, &w).unwrap();
        cpu.download(&acc).unwrap()
    };
    let got_acc = {
        let x = gpu
            .upload(&x, Shape::ntt(inputs * comps, vec![0, 1]))
            .unwrap();
        let mut acc = gpu.linear(&x, comps, &w).unwrap();
        let launches = gpu.counters().launches;
        gpu.linear_acc(&mut acc, &x, comps, &w).unwrap();
        assert_eq!(gpu.counters().launches, launches + 1);
        gpu.download(&acc).unwrap()
    };
    assert_eq!(mismatches(&got_acc, &want_acc), 0);
    assert_ne!(got_acc, got);
    // Prepared once, applied twice: the same words; prepared for other limbs or on another
    // runtime (device): refused, not misapplied.
    let xg = gpu
        .upload(&x, Shape::ntt(inputs * comps, vec![0, 1]))
        .unwrap();
    let p = gpu.prepare_linear(w.clone(), &[0, 1]).unwrap();
    for _ in 0..2 {
        let y = gpu.linear_prepared(&xg, comps, &p).unwrap();
        assert_eq!(mismatches(&gpu.download(&y).unwrap(), &want), 0);
    }
    let swapped = gpu.prepare_linear(w.clone(), &[1, 0]).unwrap();
    let e = gpu.linear_prepared(&xg, comps, &swapped).err().unwrap();
    assert!(e.to_string().contains("prepared for limbs"), "{e}");
    let other_rt =
        std::sync::Arc::new(GpuRuntime::new(&AdapterChoice::from_env()).expect("second runtime"));
    let other = GpuBackend::new(other_rt, gpu.context().clone()).unwrap();
    let foreign = other.prepare_linear(w.clone(), &[0, 1]).unwrap();
    let e = gpu.linear_prepared(&xg, comps, &foreign).err().unwrap();
    assert!(e.to_string().contains("another GPU runtime"), "{e}");
    // Each of the 3 blocks reads its inputs once per coefficient: far below one read per entry.
    assert!(
        k.bytes_ratio() < 4.0,
        "linear bytes / floor = {}",
        k.bytes_ratio()
    );
}

/// Key switching with more digits than the kernel keeps in registers (groups of 8).
#[test]
fn keyswitch_inner_matches_cpu_beyond_eight_digits() {
    let Some(rt) = gpu() else { return };
    let (n, limbs, dnum, polys) = (1024usize, 11usize, 10usize, 3usize);
    let primes = ntt_primes(30, n, limbs, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt.clone(), ctx).unwrap();
    let map: Vec<usize> = (0..limbs).collect();
    let digits = Shape::ntt(polys * dnum, map.clone());
    let key = Shape::ntt(2 * dnum, map.clone());
    let fill = |shape: &Shape, salt: u32| -> Vec<u32> {
        (0..shape.words(n))
            .map(|i| {
                (i as u32 ^ salt).wrapping_mul(2_654_435_761).rotate_left(5)
                    % primes[(i / n) % limbs]
            })
            .collect()
    };
    let (d, k) = (fill(&digits, 3), fill(&key, 4));
    let (cd, ck) = (
        cpu.upload(&d, digits.clone()).unwrap(),
        cpu.upload(&k, key.clone()).unwrap(),
    );
    let want = cpu
        .download(&cpu.keyswitch_inner(&cd, dnum, &ck, &map).unwrap())
        .unwrap();
    let (gd, gk) = (
        gpu.upload(&d, digits).unwrap(),
        gpu.upload(&k, key).unwrap(),
    );
    let got = gpu
        .download(&gpu.keyswitch_inner(&gd, dnum, &gk, &map).unwrap())
        .unwrap();
    assert_eq!(mismatches(&got, &want), 0);
}

/// Divide-and-round (rescale, mod-down) is an out-of-place inverse NTT, one conversion kernel and
/// a forward NTT whose last store finishes `(x - t) D^-1`: 3 dispatches when an NTT is one pass.
#[test]
fn divide_round_takes_three_dispatches_with_one_pass_ntts() {
    let Some(rt) = gpu() else { return };
    let n = 8192;
    let primes = ntt_primes(30, n, 4, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let cpu = CpuBackend::new(ctx.clone());
    let shape = Shape::ntt(2 * 3, (0..4).collect());
    let data: Vec<u32> = (0..shape.words(n))
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % primes[(i / n) % 4])
        .collect();
    let want = cpu
        .download(
            &cpu.divide_round(&cpu.upload(&data, shape.clone()).unwrap(), 2)
                .unwrap(),
        )
        .unwrap();
    let wide = rt.limits().max_compute_workgroup_storage_size >= 4 * NTT_TILE_WIDE;
    for tile in [NTT_TILE, NTT_TILE_WIDE] {
        if tile == NTT_TILE_WIDE && !wide {
            eprintln!("SKIPPED: wide NTT tiles (the adapter lacks 32 KiB of workgroup storage)");
            continue;
        }
        let gpu = GpuBackend::new(rt.clone(), ctx.clone())
            .unwrap()
            .with_ntt_tile(tile)
            .unwrap();
        let x = gpu.upload(&data, shape.clone()).unwrap();
        let before = gpu.counters().launches;
        let out = gpu.divide_round(&x, 2).unwrap();
        let dispatches = gpu.counters().launches - before;
        assert_eq!(
            dispatches,
            if tile == NTT_TILE { 5 } else { 3 },
            "tile {tile}"
        );
        assert_eq!(mismatches(&gpu.download(&out).unwrap(), &want), 0);
        // the input is left as it was
        assert_eq!(gpu.download(&x).unwrap(), data);
    }
}

/// Uploads two ciphertext tensors and a switching key.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn upload_inputs<B: Backend>(
    be: &B,
    a: &[u32],
    b: &[u32],
    key: &[u32],
    ct: &Shape,
    key_shape: &Shape,
    dnum: usize,
    alpha: usize,
    special: &[usize],
) -> (
    B::Tensor,
    B::Tensor,
    cryptodl::backend::SwitchKey<B::Tensor>,
) {
    let x = be.upload(a, ct.clone()).unwrap();
    let y = be.upload(b, ct.clone()).unwrap();
    let k = cryptodl::backend::SwitchKey {
        key: be.upload(key, key_shape.clone()).unwrap(),
        dnum,
        alpha,
        special: special.to_vec(),
    };
    (x, y, k)
}

/// mul + relinearize + rescale on resident tensors, as separate operations (key switching with
/// its own mod-down, then a rescale).
fn mul_relin_then_rescale<B: Backend>(
    be: &B,
    x: &B::Tensor,
    y: &B::Tensor,
    k: &cryptodl::backend::SwitchKey<B::Tensor>,
) -> B::Tensor {
    let t = be.tensor(x, y).unwrap();
    let c01 = be.slice_components(&t, 3, 0..2).unwrap();
    let c2 = be.slice_components(&t, 3, 2..3).unwrap();
    let ks = be.keyswitch(&c2, k).unwrap();
    let relin = be.add(&c01, &ks).unwrap();
    be.divide_round(&relin, 1).unwrap()
}

#[test]
fn mul_relin_rescale_on_resident_tensors_moves_no_data_and_matches_cpu() {
    let Some(rt) = gpu() else { return };
    let n = 2048;
    let (q_limbs, p_limbs, alpha, count) = (4usize, 2usize, 2usize, 5usize);
    let primes = ntt_primes(30, n, q_limbs + p_limbs, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt.clone(), ctx).unwrap();
    let q: Vec<usize> = (0..q_limbs).collect();
    let special: Vec<usize> = (q_limbs..q_limbs + p_limbs).collect();
    let dnum = q_limbs.div_ceil(alpha);
    let ct = Shape::ntt(2 * count, q.clone());
    let key_shape = Shape::ntt(2 * dnum, (0..q_limbs + p_limbs).collect());
    let rand = |len: usize, shape: &Shape, salt: u32| -> Vec<u32> {
        (0..len)
            .map(|i| {
                let q = primes[shape.moduli[(i / n) % shape.limbs()]];
                (i as u32 ^ salt).wrapping_mul(2_654_435_761).rotate_left(7) % q
            })
            .collect()
    };
    let a = rand(ct.words(n), &ct, 11);
    let b = rand(ct.words(n), &ct, 12);
    let key = rand(key_shape.words(n), &key_shape, 13);

    // Dispatch count of mul+relin+rescale does not depend on the number of ciphertexts.
    let one = Shape::ntt(2, q.clone());
    let (x1, y1, k1) = upload_inputs(
        &gpu,
        &a[..one.words(n)],
        &b[..one.words(n)],
        &key,
        &one,
        &key_shape,
        dnum,
        alpha,
        &special,
    );
    let before_one = gpu.counters().launches;
    let _ = mul_relin_then_rescale(&gpu, &x1, &y1, &k1);
    let dispatches_one = gpu.counters().launches - before_one;

    let (x, y, k) = upload_inputs(&gpu, &a, &b, &key, &ct, &key_shape, dnum, alpha, &special);
    let before = gpu.counters();
    let out = mul_relin_then_rescale(&gpu, &x, &y, &k);
    let after = gpu.counters();
    eprintln!(
        "mul+relin+rescale, N = {n}: {} dispatches for 1 and for {count} ciphertexts",
        dispatches_one
    );
    assert_eq!(after.launches - before.launches, dispatches_one);
    assert_eq!(
        (after.kernels - before.kernels).total().dispatches,
        dispatches_one,
        "every dispatch of mul+relin+rescale is counted under a kernel family"
    );
    assert_eq!(
        after.uploads, before.uploads,
        "no upload during mul+relin+rescale"
    );
    assert_eq!(
        after.downloads, before.downloads,
        "no download during mul+relin+rescale"
    );
    assert!(after.launches > before.launches);
    let got = gpu.download(&out).unwrap();
    assert_eq!(gpu.counters().downloads, before.downloads + 1);

    let (cx, cy, ck) = upload_inputs(&cpu, &a, &b, &key, &ct, &key_shape, dnum, alpha, &special);
    let want = cpu
        .download(&mul_relin_then_rescale(&cpu, &cx, &cy, &ck))
        .unwrap();
    assert_eq!(gpu.shape(&out).moduli, q[..q_limbs - 1].to_vec());
    assert_eq!(got.len(), 2 * count * (q_limbs - 1) * n);
    assert_eq!(mismatches(&got, &want), 0);
}

/// Several threads share one runtime (one pending command encoder): each thread's chain of
/// kernels must still run in the order it was recorded, whatever the others submit meanwhile.
#[test]
fn threads_sharing_the_runtime_keep_their_order() {
    let Some(rt) = gpu() else { return };
    let n = 1024;
    let primes = ntt_primes(30, n, 2, &[]).unwrap();
    let ctx = RnsContext::new(n, &primes).unwrap();
    let cpu = CpuBackend::new(ctx.clone());
    let gpu = GpuBackend::new(rt, ctx).unwrap();
    let shape = Shape::coeff(2, vec![0, 1]);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (cpu, gpu, shape, primes) = (&cpu, &gpu, &shape, &primes);
            s.spawn(move || {
                for round in 0..40u32 {
                    let data: Vec<u32> = (0..shape.words(n))
                        .map(|i| {
                            (i as u32 ^ (t << 20) ^ (round << 12)).wrapping_mul(2_654_435_761)
                                % primes[(i / n) % 2]
                        })
                        .collect();
                    let run = |b: &dyn Fn(&[u32]) -> Vec<u32>| b(&data);
                    let on_cpu = run(&|d| {
                        let mut x = cpu.upload(d, shape.clone()).unwrap();
                        cpu.ntt_forward(&mut x).unwrap();
                        let mut y = cpu.add(&cpu.mul(&x, &x).unwrap(), &x).unwrap();
                        cpu.ntt_inverse(&mut y).unwrap();
                        cpu.download(&y).unwrap()
                    });
                    let on_gpu = run(&|d| {
                        let mut x = gpu.upload(d, shape.clone()).unwrap();
                        gpu.ntt_forward(&mut x).unwrap();
                        let mut y = gpu.add(&gpu.mul(&x, &x).unwrap(), &x).unwrap();
                        gpu.ntt_inverse(&mut y).unwrap();
                        gpu.download(&y).unwrap()
                    });
                    assert_eq!(mismatches(&on_cpu, &on_gpu), 0, "thread {t} round {round}");
                }
            });
        }
    });
}
