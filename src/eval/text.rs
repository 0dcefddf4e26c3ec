//! Perplexity and KL-divergence of a model on a text, with the pruning-paper protocol
//! (ALGORITHMS.md §0.3): the whole text tokenised once (BOS once at the start), cut into
//! non-overlapping windows of `seq_len` (tail dropped), every position after the first of each
//! window predicted; PPL = exp(mean NLL over all predicted tokens).
//!
//! With a base model, per predicted token: KL(base ‖ model) summed over the whole vocabulary
//! (llama.cpp sums only entries with base log-prob > −16; the full sum is exact and never
//! smaller), Δp = p_model(correct) − p_base(correct), and whether the two argmax tokens agree.

use std::path::Path;

use burn::tensor::activation::log_softmax;

use crate::error::{PareError, Result};
use crate::model::to_host;
use crate::pipeline::{ModelRunner, Progress};

/// Per-token results of evaluating a model (and optionally a base) on a text.
#[derive(Clone, Debug, Default)]
pub struct TextScores {
    pub seq_len: usize,
    pub windows: usize,
    /// NLL of every predicted token under the model.
    pub nll: Vec<f64>,
    /// NLL under the base, when given.
    pub nll_base: Vec<f64>,
    /// KL(base ‖ model) per predicted token.
    pub kld: Vec<f64>,
    /// p_model(correct) − p_base(correct) per token.
    pub delta_p: Vec<f64>,
    /// Whether the argmax tokens agree, per token.
    pub same_top: Vec<bool>,
}

/// Cuts `ids` into non-overlapping windows of `seq_len`, dropping the tail; at most `max_windows`.
pub fn windows(ids: &[u32], seq_len: usize, max_windows: Option<usize>) -> Vec<Vec<u32>> {
    let n = if seq_len == 0 { 0 } else { ids.len() / seq_len };
    let n = max_windows.map_or(n, |m| n.min(m));
    (0..n)
        .map(|i| ids[i * seq_len..(i + 1) * seq_len].to_vec())
        .collect()
}

/// Tokenises `text_path` with the model's tokenizer and returns the windows; errors when the text
/// is shorter than one window.
pub fn text_windows(
    runner: &ModelRunner,
    text_path: &Path,
    seq_len: usize,
    max_windows: Option<usize>,
) -> Result<Vec<Vec<u32>>> {
    if seq_len < 2 {
        return Err(PareError::Usage(format!(
            "--seq-len {seq_len}: must be at least 2"
        )));
    }
    if max_windows == Some(0) {
        return Err(PareError::Usage(
            "--max-windows 0: must be at least 1 (leave it out to score every window)".into(),
        ));
    }
    let text = std::fs::read_to_string(text_path)
        .map_err(|e| PareError::input(text_path, format!("cannot read text: {e}")))?;
    let ids = runner.tokenizer.encode_document(&text, true)?;
    let w = windows(&ids, seq_len, max_windows);
    if w.is_empty() {
        return Err(PareError::input(
            text_path,
            format!(
                "text has {} tokens, fewer than one window of {seq_len}",
                ids.len()
            ),
        ));
    }
    Ok(w)
}

fn log_softmax_rows(runner: &ModelRunner, h: burn::tensor::Tensor<3>) -> Result<Vec<f32>> {
    to_host(log_softmax(runner.ends.logits(h)?, 1))
}

/// Scores `windows` with `model` and, when given, compares with `base` token by token.
pub fn score(
    model: &ModelRunner,
    base: Option<&ModelRunner>,
    windows: &[Vec<u32>],
    progress: &dyn Progress,
) -> Result<TextScores> {
    let based = match base {
        Some(b) => Some((b, b.final_hidden(windows, progress)?)),
        None => None,
    };
    score_with(
        model,
        based.as_ref().map(|(b, h)| (*b, h.as_slice())),
        windows,
        progress,
    )
}

/// [`score`] with the base's final hidden states of `windows` already computed
/// ([`ModelRunner::final_hidden`], one `[batch, seq, hidden]` tensor per batch): `pare compare`
/// computes them once for all its runs.
pub fn score_with(
    model: &ModelRunner,
    base: Option<(&ModelRunner, &[burn::tensor::Tensor<3>])>,
    windows: &[Vec<u32>],
    progress: &dyn Progress,
) -> Result<TextScores> {
    let seq_len = windows.first().map(Vec::len).unwrap_or(0);
    let vocab = model.ends.vocab;
    if let Some((b, _)) = base {
        if b.ends.vocab != vocab {
            return Err(PareError::input(
                &b.dir,
                format!(
                    "base vocabulary {} differs from the model's {vocab}",
                    b.ends.vocab
                ),
            ));
        }
    }
    let hidden = model.final_hidden(windows, progress)?;
    let based = base;
    let mut out = TextScores {
        seq_len,
        windows: windows.len(),
        ..Default::default()
    };
    let mut first = 0;
    for (i, h) in hidden.into_iter().enumerate() {
        let n_in_batch = h.dims()[0];
        let lp = log_softmax_rows(model, h)?;
        let lpb = match &based {
            Some((b, hb)) => Some(log_softmax_rows(b, hb[i].clone())?),
            None => None,
        };
        for w in 0..n_in_batch {
            let ids = &windows[first + w];
            for t in 0..seq_len - 1 {
                let row = (w * seq_len + t) * vocab;
                let target = ids[t + 1] as usize;
                let q = &lp[row..row + vocab];
                out.nll.push(-(q[target] as f64));
                if let Some(lpb) = &lpb {
                    let p = &lpb[row..row + vocab];
                    let mut kl = 0.0f64;
                    let (mut am_p, mut am_q) = (0usize, 0usize);
                    for v in 0..vocab {
                        let lb = p[v] as f64;
                        kl += lb.exp() * (lb - q[v] as f64);
                        if p[v] > p[am_p] {
                            am_p = v;
                        }
                        if q[v] > q[am_q] {
                            am_q = v;
                        }
                    }
                    out.kld.push(kl.max(0.0));
                    out.nll_base.push(-(p[target] as f64));
                    out.delta_p
                        .push((q[target] as f64).exp() - (p[target] as f64).exp());
                    out.same_top.push(am_p == am_q);
                }
            }
        }
        first += n_in_batch;
    }
    Ok(out)
}

/// Mean and standard error of the mean (`sqrt((E[x²]−E[x]²)/(N−1))`, llama.cpp's definition).
pub fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / n;
    let m2 = x.iter().map(|v| v * v).sum::<f64>() / n;
    let se = if x.len() > 1 {
        ((m2 - m * m).max(0.0) / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    (m, se)
}

/// Percentile `f ∈ [0,1]` of sorted values by linear interpolation at `f·(N−1)`.
pub fn percentile(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = f * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

/// Pearson correlation of two equal-length series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, _) = mean_se(a);
    let (mb, _) = mean_se(b);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa.sqrt() * sbb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_drop_the_tail() {
        let ids: Vec<u32> = (0..10).collect();
        let w = windows(&ids, 4, None);
        assert_eq!(w, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(windows(&ids, 4, Some(1)).len(), 1);
        assert!(windows(&ids, 11, None).is_empty());
    }

    #[test]
    fn percentile_interpolates() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.5), 2.5);
        assert_eq!(percentile(&s, 1.0), 4.0);
        let (m, se) = mean_se(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((se - 1.0).abs() < 1e-12);
    }
}

/// Summaries of `TextScores` in the report's terms.
pub mod summary {
    use super::*;
    use crate::report::{Estimate, KldStats, PerplexityStats, Quality};

    fn ppl_stats(text: &str, s: &TextScores, nll: &[f64]) -> PerplexityStats {
        let (mean, _) = mean_se(nll);
        PerplexityStats {
            text: text.to_string(),
            seq_len: s.seq_len,
            windows: s.windows,
            predicted_tokens: nll.len() as u64,
            mean_nll: mean,
            ppl: mean.exp(),
        }
    }

    fn est(x: &[f64]) -> Estimate {
        let (value, unc) = mean_se(x);
        Estimate { value, unc }
    }

    /// Perplexity (and with a base: base perplexity and the llama.cpp KLD statistics).
    pub fn quality(text: &str, s: &TextScores) -> Quality {
        let perplexity = ppl_stats(text, s, &s.nll);
        if s.kld.is_empty() {
            return Quality {
                perplexity,
                base_perplexity: None,
                kld: None,
                odp: None,
            };
        }
        let base = ppl_stats(text, s, &s.nll_base);
        let ln_ratio: Vec<f64> = s.nll.iter().zip(&s.nll_base).map(|(q, b)| q - b).collect();
        let r = est(&ln_ratio);
        // PPL uncertainties by the delta method, as llama.cpp does: d exp(x) = exp(x) dx.
        let q = est(&s.nll);
        let b = est(&s.nll_base);
        let mut kld_sorted = s.kld.clone();
        kld_sorted.sort_by(f64::total_cmp);
        let mut dp_sorted = s.delta_p.clone();
        dp_sorted.sort_by(f64::total_cmp);
        let dp2: Vec<f64> = s.delta_p.iter().map(|d| d * d).collect();
        let (ms, ms_se) = mean_se(&dp2);
        let rms = ms.sqrt();
        let same: Vec<f64> = s
            .same_top
            .iter()
            .map(|&x| if x { 1.0 } else { 0.0 })
            .collect();
        let n = same.len() as f64;
        let sp = same.iter().sum::<f64>() / n;
        let k = |f| percentile(&kld_sorted, f);
        let d = |f| percentile(&dp_sorted, f);
        let kld = KldStats {
            tokens: s.kld.len() as u64,
            mean_ppl_q: Estimate {
                value: q.value.exp(),
                unc: q.value.exp() * q.unc,
            },
            mean_ppl_base: Estimate {
                value: b.value.exp(),
                unc: b.value.exp() * b.unc,
            },
            cor_ln_ppl: correlation(&s.nll, &s.nll_base),
            mean_ln_ppl_ratio: r,
            mean_ppl_ratio: Estimate {
                value: r.value.exp(),
                unc: r.value.exp() * r.unc,
            },
            mean_ppl_diff: Estimate {
                value: q.value.exp() - b.value.exp(),
                unc: ((q.value.exp() * q.unc).powi(2) + (b.value.exp() * b.unc).powi(2)).sqrt(),
            },
            mean_kld: est(&s.kld),
            max_kld: k(1.0),
            kld_p99_9: k(0.999),
            kld_p99: k(0.99),
            kld_p95: k(0.95),
            kld_p90: k(0.90),
            median_kld: k(0.5),
            kld_p10: k(0.10),
            kld_p5: k(0.05),
            kld_p1: k(0.01),
            kld_p0_1: k(0.001),
            min_kld: k(0.0),
            mean_delta_p: est(&s.delta_p),
            max_delta_p: d(1.0),
            delta_p_p99_9: d(0.999),
            delta_p_p99: d(0.99),
            delta_p_p95: d(0.95),
            delta_p_p90: d(0.90),
            delta_p_p75: d(0.75),
            median_delta_p: d(0.5),
            delta_p_p25: d(0.25),
            delta_p_p10: d(0.10),
            delta_p_p5: d(0.05),
            delta_p_p1: d(0.01),
            delta_p_p0_1: d(0.001),
            min_delta_p: d(0.0),
            rms_delta_p: Estimate {
                value: rms,
                unc: if rms > 0.0 { ms_se / (2.0 * rms) } else { 0.0 },
            },
            same_top_p: Estimate {
                value: sp,
                unc: (sp * (1.0 - sp) / (n - 1.0).max(1.0)).sqrt(),
            },
        };
        Quality {
            perplexity,
            base_perplexity: Some(base),
            kld: Some(kld),
            odp: None,
        }
    }
}
