//! Bandwidth of the GPU kernels on one weight shape (issue 17's kernel figures):
//! the int4 dequant-GEMM against a copy of the same bytes, and the 2:4 sparse GEMM and the int4
//! one against the dense f32 GEMM, at batch 1, 4 and 16.
//!
//!     cargo run --release --features vulkan -p pare-kernels --example gpu_bench -- 4096x11008
//!         [--weights N] [--reps N] [--device N]
//!
//! `OUTxIN` is the weight shape (`[out, in]`). `--weights` weight buffers are cycled so that
//! they do not fit in the GPU's cache (default: enough for 256 MiB of int4 codes). Times are wall
//! times of `reps × weights` launches between two device syncs, after one warm-up launch each.
//! Bandwidth counts the bytes a kernel must move: the weight as stored, `x` and `y`; a copy
//! counts what it reads and writes.

use std::time::Instant;

use pare_kernels::gpu::{Gpu, GpuError, Resident};
use pare_kernels::int4::PackedInt4;
use pare_kernels::sparse24::Sparse24;

fn val(i: usize, seed: usize) -> f32 {
    let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
    h as f32 / 5_003.5 - 1.0
}

struct Args {
    rows: usize,
    cols: usize,
    weights: Option<usize>,
    reps: usize,
    device: Option<usize>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rows: 4096,
        cols: 11008,
        weights: None,
        reps: 20,
        device: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name}: expected a number"))
        };
        match s.as_str() {
            "--weights" => a.weights = Some(num("--weights")?),
            "--reps" => a.reps = num("--reps")?.max(1),
            "--device" => a.device = Some(num("--device")?),
            shape => {
                let (r, c) = shape
                    .split_once('x')
                    .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
                    .ok_or(format!("{shape}: expected a shape OUTxIN, e.g. 4096x11008"))?;
                (a.rows, a.cols) = (r, c);
            }
        }
    }
    if a.cols % 128 != 0 {
        return Err(format!("in = {}: expected a multiple of 128", a.cols));
    }
    Ok(a)
}

/// Seconds per launch of `launch(i)` cycled over `n` weights, `reps` times.
fn time(
    gpu: &Gpu,
    n: usize,
    reps: usize,
    mut launch: impl FnMut(usize) -> Result<(), GpuError>,
) -> Result<f64, GpuError> {
    for i in 0..n {
        launch(i)?;
    }
    gpu.sync()?;
    let t = Instant::now();
    for _ in 0..reps {
        for i in 0..n {
            launch(i)?;
        }
    }
    gpu.sync()?;
    Ok(t.elapsed().as_secs_f64() / (reps * n) as f64)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&a) {
        eprintln!("gpu_bench: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), GpuError> {
    let gpu = Gpu::vulkan(a.device)?;
    let (rows, cols, group) = (a.rows, a.cols, 128);
    let codes_bytes = rows * cols / 2;
    let n = a
        .weights
        .unwrap_or((256usize << 20).div_ceil(codes_bytes))
        .max(1);
    println!(
        "{}: weight [{rows}, {cols}] (out, in), {n} buffers each, {} reps, group {group}, plane {}",
        gpu.label(),
        a.reps,
        gpu.plane_size()
    );

    // One weight, uploaded `n` times: distinct buffers defeat the cache whatever they hold.
    let codes: Vec<i8> = (0..rows * cols)
        .map(|i| ((i * 7 + i / 13) % 16) as i8 - 8)
        .collect();
    let scales = (0..rows * cols / group)
        .map(|g| 0.01 + 0.001 * (g % 9) as f32)
        .collect();
    let w = PackedInt4::pack(&codes, rows, cols, group, scales, None)?;
    let d = w.dequantize();
    // 2:4 from the dense weight: keep the first two of each group of four.
    let pruned: Vec<f32> = d
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 4 < 2 { v } else { 0.0 })
        .collect();
    let s24 = Sparse24::compress(&pruned, rows, cols)?;
    let mut int4 = Vec::new();
    let mut sparse = Vec::new();
    let mut dense = Vec::new();
    for _ in 0..n {
        int4.push(gpu.upload_int4(&w)?);
        sparse.push(gpu.upload_sparse24(&s24)?);
        dense.push(gpu.upload_dense(&d, rows, cols)?);
    }

    // The copy moves as many bytes as the int4 kernel reads from its weights (read + write).
    let words = int4[0].bytes() / 8;
    let src: Vec<Resident> = (0..n)
        .map(|k| gpu.upload_u32(&vec![k as u32; words]))
        .collect();
    let dst: Vec<Resident> = (0..n).map(|_| gpu.empty(words)).collect();
    let t_copy = time(&gpu, n, a.reps, |i| gpu.copy(&src[i], &dst[i]))?;
    let copy_bw = (8 * words) as f64 / t_copy;
    println!(
        "copy: {:.1} µs per {:.1} MiB moved, {:.1} GB/s",
        t_copy * 1e6,
        (8 * words) as f64 / 1048576.0,
        copy_bw / 1e9
    );
    println!(
        "batch | int4 µs | int4 GB/s | int4/copy bw | 2:4 µs | 2:4 GB/s | dense f32 µs | dense GB/s | dense/2:4 time | dense/int4 time"
    );
    for batch in [1usize, 4, 16] {
        let x = gpu.upload_f32(&(0..batch * cols).map(|i| val(i, batch)).collect::<Vec<_>>());
        let y = gpu.empty(batch * rows);
        let io = 4 * batch * (rows + cols);
        let t4 = time(&gpu, n, a.reps, |i| gpu.int4_gemm(&x, batch, &int4[i], &y))?;
        let ts = time(&gpu, n, a.reps, |i| {
            gpu.sparse24_gemm(&x, batch, &sparse[i], &y)
        })?;
        let td = time(&gpu, n, a.reps, |i| {
            gpu.dense_gemm(&x, batch, &dense[i], &y)
        })?;
        let bw4 = (int4[0].bytes() + io) as f64 / t4;
        let bws = (sparse[0].bytes() + io) as f64 / ts;
        let bwd = (dense[0].bytes() + io) as f64 / td;
        println!(
            "{batch:5} | {:7.1} | {:9.1} | {:12.3} | {:6.1} | {:8.1} | {:12.1} | {:10.1} | {:14.2} | {:15.2}",
            t4 * 1e6,
            bw4 / 1e9,
            bw4 / copy_bw,
            ts * 1e6,
            bws / 1e9,
            td * 1e6,
            bwd / 1e9,
            td / ts,
            td / t4
        );
    }
    Ok(())
}
