use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;
fn t<F: FnMut() -> Tensor<4>>(name: &str, mut f: F) {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let s = Instant::now();
        let r = f();
        let _ = r.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        best = best.min(s.elapsed().as_secs_f64());
    }
    println!("{name}: {:.1} ms", best * 1e3);
}
fn main() {
    let d = Device::flex();
    let (b, s, nh, nkv, hd) = (8usize, 512usize, 10usize, 5usize, 32usize);
    let q = Tensor::<4>::random([b, nh, s, hd], Distribution::Uniform(-1.0, 1.0), &d);
    let k = Tensor::<4>::random([b, nkv, s, hd], Distribution::Uniform(-1.0, 1.0), &d);
    let v = k.clone();
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let kx = k.clone().reshape([b, nkv, 1, s, hd]).expand([b, nkv, 2, s, hd]).reshape([b, nh, s, hd]);
    t("expand", || k.clone().reshape([b, nkv, 1, s, hd]).expand([b, nkv, 2, s, hd]).reshape([b, nh, s, hd]));
    t("attention", || attention(q.clone(), kx.clone(), kx.clone(), None, None, opts));
    t("attention noncausal", || attention(q.clone(), kx.clone(), kx.clone(), None, None, AttentionModuleOptions{is_causal:false, ..opts}));
    t("swap+reshape", || q.clone().swap_dims(1, 2).reshape([b * s, nh * hd]).reshape([b, s, nh, hd]));
    let cos = Tensor::<2>::random([s, hd], Distribution::Uniform(-1.0, 1.0), &d).reshape([1, 1, s, hd]);
    t("rope", || {
        let x1 = q.clone().slice([0..b, 0..nh, 0..s, 0..hd / 2]);
        let x2 = q.clone().slice([0..b, 0..nh, 0..s, hd / 2..hd]);
        let r = Tensor::cat(vec![x2.neg(), x1], 3);
        q.clone() * cos.clone() + r * cos.clone()
    });
    let x = Tensor::<2>::random([b * s, 320], Distribution::Uniform(-1.0, 1.0), &d);
    let w = Tensor::<2>::random([320, 864], Distribution::Uniform(-1.0, 1.0), &d);
    t("linear 320x864", || x.clone().matmul(w.clone()).reshape([1, 1, b * s, 864]));
    t("rmsnorm", || {
        let var = x.clone().square().mean_dim(1);
        (x.clone() * var.add_scalar(1e-5).sqrt().recip()).reshape([1, 1, b * s, 320])
    });
    t("silu*mul", || { let g = x.clone().matmul(w.clone()); (burn::tensor::activation::silu(g.clone()) * g).reshape([1,1,b*s,864]) });
}
