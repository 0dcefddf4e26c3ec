//! CPU kernels of the forward pass, on host slices (the flex device keeps tensors in host
//! memory, so the model hands them over without copies): the linear layer's GEMM, a fused causal
//! attention (RoPE, grouped-query heads, softmax, weighted values in one pass), RMSNorm,
//! SiLU·up, and a vectorised exp. Each has a reference test against a plain implementation.
//!
//! Why not burn's own ops here: on this machine faer's f32 GEMM runs at about twice burn-flex's
//! (AVX-512 kernels chosen at run time: 218 against 109 GFLOP/s on the model's shapes), burn's
//! `exp` is a scalar libm call, and the attention as burn ops materialises head-major copies, the
//! GQA expansion and a mask tensor. The loops are plain Rust compiled several times by
//! [`multiversion!`] (AVX-512, AVX2+FMA, baseline) and chosen at run time, so they vectorise
//! for the CPU at hand; reductions keep [`LANES`] independent partial sums so that they
//! vectorise without reordering a single sum.

pub mod attention;
pub mod backward;
pub mod elementwise;
pub mod gemm;

/// Independent partial sums in reductions (two AVX2 or one AVX-512 register of f32).
pub const LANES: usize = 16;

/// Defines `fn $name(args) -> ret` whose body is compiled for AVX-512 (F+VL+FMA), for AVX2+FMA
/// and for the baseline, and dispatched on the CPU's features at run time.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has every feature `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Σ xs with [`LANES`] partial sums (vectorisable; deterministic for a given length).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// max xs (−∞ for an empty slice), vectorisable.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, v| a.max(*v));
    acc.iter().fold(m, |a, v| a.max(*v))
}
