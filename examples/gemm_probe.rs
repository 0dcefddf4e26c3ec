use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;
fn main() {
    let d = Device::flex();
    for &(m, k, n) in &[(1024usize, 1024usize, 1024usize), (2048, 2048, 2048), (4096, 320, 864)] {
        let a = Tensor::<2>::random([m, k], Distribution::Uniform(-1.0, 1.0), &d);
        let b = Tensor::<2>::random([k, n], Distribution::Uniform(-1.0, 1.0), &d);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            let c = a.clone().matmul(b.clone());
            let _ = c.slice([0..1, 0..1]).into_data();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{m}x{k}x{n}: {:.1} GFLOP/s", 2.0 * (m * k * n) as f64 / best / 1e9);
    }
}
