//! The GPU kernels against their CPU references, on the default Vulkan adapter (any: Mesa's
//! lavapipe serves on a machine without a GPU). Built only with `--features vulkan` (Cargo.toml
//! `required-features`): the default `cargo test` builds nothing of it. Set
//! `PARE_VULKAN_INDEX=N` to test discrete GPU `N`.
#![cfg(feature = "vulkan")]

use pare_kernels::gpu::{Gpu, MAX_BATCH};
use pare_kernels::int4::{PackedInt4, dequant_gemm_ref};
use pare_kernels::sparse24::{Sparse24, gemm_ref};

fn gpu() -> Gpu {
    let index = std::env::var("PARE_VULKAN_INDEX").ok().map(|s| {
        s.parse()
            .expect("PARE_VULKAN_INDEX: expected a device index")
    });
    Gpu::vulkan(index).expect("a Vulkan adapter (apt-get install mesa-vulkan-drivers for lavapipe)")
}

/// A deterministic value in [-1, 1) from an index and a seed.
fn val(i: usize, seed: usize) -> f32 {
    let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
    h as f32 / 5_003.5 - 1.0
}

fn int4_sample(rows: usize, cols: usize, group: usize, asym: bool) -> PackedInt4 {
    let codes: Vec<i8> = (0..rows * cols)
        .map(|i| ((i * 7 + i / 5 + i / 97) % 16) as i8 - 8)
        .collect();
    let ng = cols / group;
    let scales = (0..rows * ng)
        .map(|g| 0.01 + 0.003 * (g % 7) as f32)
        .collect();
    let zeros = asym.then(|| (0..rows * ng).map(|g| (g % 5) as f32 - 2.0).collect());
    PackedInt4::pack(&codes, rows, cols, group, scales, zeros).unwrap()
}

fn sparse24_sample(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let (g, j) = (i / 4, i % 4);
            // All six 2-of-4 patterns, and every seventh group with a single non-zero.
            let (a, b) = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)][(g * 5 + g / 3) % 6];
            if j == a || (j == b && g % 7 != 0) {
                val(i, 3)
            } else {
                0.0
            }
        })
        .collect()
}

/// f32 sums against the f64 reference: within 1e-5 of the sum of the absolute terms' size.
fn assert_close(got: &[f32], want: &[f32], scale: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (scale + w.abs());
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {k}: {g} vs {w} (tol {tol})"
        );
    }
}

#[test]
fn int4_gemm_matches_the_cpu_reference() {
    let gpu = gpu();
    // Rows below and above a multiple of the cube, words per row below and above 64 units,
    // symmetric and asymmetric, group sizes 32 and 128.
    for &(rows, cols, group, asym) in &[
        (37, 192, 32, false),
        (64, 1024, 128, true),
        (5, 4096, 128, false),
    ] {
        let w = int4_sample(rows, cols, group, asym);
        for batch in [1, 3, 8, MAX_BATCH] {
            let x: Vec<f32> = (0..batch * cols).map(|i| val(i, batch)).collect();
            let want = dequant_gemm_ref(&x, batch, &w).unwrap();
            let got = gpu.int4_gemm_host(&x, batch, &w).unwrap();
            let scale = cols as f32 * 0.03 * 16.0;
            assert_close(
                &got,
                &want,
                scale,
                &format!("int4 {rows}x{cols} g{group} b{batch}"),
            );
        }
    }
}

#[test]
fn sparse24_gemm_matches_the_cpu_reference_and_the_dense_kernel() {
    let gpu = gpu();
    for &(rows, cols) in &[(29, 320), (70, 2048)] {
        let dense = sparse24_sample(rows, cols);
        let s = Sparse24::compress(&dense, rows, cols).unwrap();
        for batch in [1, 5, MAX_BATCH] {
            let x: Vec<f32> = (0..batch * cols).map(|i| val(i, 7 + batch)).collect();
            let want = gemm_ref(&x, batch, &s).unwrap();
            let got = gpu.sparse24_gemm_host(&x, batch, &s).unwrap();
            let what = format!("2:4 {rows}x{cols} b{batch}");
            assert_close(&got, &want, cols as f32 * 0.5, &what);
            let dense_got = gpu.dense_gemm_host(&x, batch, &dense, rows, cols).unwrap();
            assert_close(
                &dense_got,
                &want,
                cols as f32 * 0.5,
                &format!("dense {what}"),
            );
        }
    }
}

#[test]
fn more_rows_than_one_grid_axis_holds() {
    // 65,537 rows: the grid wraps onto a second axis; the last rows must be computed too.
    let gpu = gpu();
    let (rows, cols) = (65_537, 32);
    let w = int4_sample(rows, cols, 32, true);
    let x: Vec<f32> = (0..cols).map(|i| val(i, 11)).collect();
    let want = dequant_gemm_ref(&x, 1, &w).unwrap();
    let got = gpu.int4_gemm_host(&x, 1, &w).unwrap();
    assert_close(&got, &want, cols as f32 * 0.5, "int4 65537 rows");
}

#[test]
fn copy_copies_every_element() {
    let gpu = gpu();
    let n = 256 * 300 + 17;
    let data: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let (src, dst) = (gpu.upload_u32(&data), gpu.empty(n));
    gpu.copy(&src, &dst).unwrap();
    assert_eq!(gpu.read_u32(&dst).unwrap(), data);
}

#[test]
fn bad_shapes_are_refused_before_launch() {
    let gpu = gpu();
    let w = int4_sample(4, 64, 32, false);
    let wd = gpu.upload_int4(&w).unwrap();
    let y = gpu.empty(4);
    let e = gpu.int4_gemm(&gpu.empty(63), 1, &wd, &y).err().unwrap();
    assert!(e.0.starts_with("x: expected 64"), "{e}");
    let e = gpu
        .int4_gemm(&gpu.empty(17 * 64), 17, &wd, &gpu.empty(68))
        .err()
        .unwrap();
    assert!(e.0.contains("batch 17"), "{e}");
    let e = gpu
        .int4_gemm(&gpu.empty(64), 1, &wd, &gpu.empty(3))
        .err()
        .unwrap();
    assert!(e.0.starts_with("y: expected 4"), "{e}");
    let mut bad = w.clone();
    bad.scales.pop();
    let e = gpu.upload_int4(&bad).err().unwrap();
    assert!(e.0.starts_with("int4 scales: expected 8"), "{e}");
}
