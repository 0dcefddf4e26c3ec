//! MC-MoE's bit-allocation integer program (ALGORITHMS.md §8.2), per MoE block:
//!
//! ```text
//! minimise   Σ_i Σ_b c[i][b] · x[i][b]
//! s.t.       Σ_b x[i][b] = 1                  every expert gets one width
//!            Σ_i Σ_b width[b] · x[i][b] ≤ B   the block's bit budget
//!            Σ_i x[i][top] ≥ 1, Σ_i x[i][second] ≥ 1   (the two widest widths are used)
//!            x ∈ {0, 1}
//! ```
//!
//! [`solve`] models it with `good_lp` and solves it with the pure-Rust `microlp` branch and bound
//! (the reference uses Gurobi), then checks the answer against [`exact`], a dynamic program over
//! (experts, bits used, top width used, second width used) that is exact for any size: microlp
//! has had invalid-solution bugs (CRATES.md §f), so an infeasible or worse microlp answer is
//! replaced by the exact one and the status says so. [`exhaustive`] enumerates every assignment
//! (for tests, up to 12 experts).

use std::time::Instant;

use good_lp::{Expression, Solution, SolverModel, microlp, variable, variables};
use serde::Serialize;

use crate::error::{PareError, Result};

/// One block's program: `cost[i][b]` for expert `i` at `widths[b]` (ascending), budget `budget`
/// total bits.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub cost: Vec<Vec<f64>>,
    pub widths: Vec<u8>,
    pub budget: u64,
}

/// An assignment: the width index of each expert, its objective, and how it was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assignment {
    pub choice: Vec<usize>,
    pub objective: f64,
    /// `microlp optimal`, `microlp optimal (checked exact)`, or why the exact answer was used.
    pub status: String,
    pub seconds: f64,
}

impl Program {
    fn n(&self) -> usize {
        self.cost.len()
    }

    /// Indices of the widest and second widest widths (the "at least one" constraints).
    fn required(&self) -> Vec<usize> {
        let w = self.widths.len();
        (w.saturating_sub(2)..w).collect()
    }

    /// Objective of `choice`, or `None` when it breaks a constraint.
    pub fn evaluate(&self, choice: &[usize]) -> Option<f64> {
        if choice.len() != self.n() || choice.iter().any(|&b| b >= self.widths.len()) {
            return None;
        }
        let bits: u64 = choice.iter().map(|&b| u64::from(self.widths[b])).sum();
        let ok = bits <= self.budget
            && self
                .required()
                .iter()
                .all(|r| choice.iter().any(|c| c == r) || self.n() < self.required().len());
        ok.then(|| choice.iter().enumerate().map(|(i, &b)| self.cost[i][b]).sum())
    }

    /// The least total bits any feasible assignment needs.
    pub fn min_bits(&self) -> u64 {
        let n = self.n() as u64;
        let min = u64::from(self.widths.first().copied().unwrap_or(0));
        let req: Vec<usize> = self.required();
        let extra: u64 = req.iter().map(|&r| u64::from(self.widths[r]) - min).sum();
        if n < req.len() as u64 {
            return n * min;
        }
        n * min + extra
    }
}

/// Exact optimum by dynamic programming (see the module docs); `None` when infeasible.
pub fn exact(p: &Program) -> Option<(Vec<usize>, f64)> {
    let n = p.n();
    let nb = p.widths.len();
    let req = p.required();
    let budget = p.budget.min(p.widths.iter().map(|&w| u64::from(w)).max().unwrap_or(0) * n as u64)
        as usize;
    let flags = 1usize << req.len();
    // best[bits][flags] after i experts, with the choice trail.
    let idx = |bits: usize, f: usize| bits * flags + f;
    let mut best = vec![f64::INFINITY; (budget + 1) * flags];
    best[idx(0, 0)] = 0.0;
    let mut trail: Vec<Vec<(usize, usize)>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut next = vec![f64::INFINITY; best.len()];
        let mut from = vec![(usize::MAX, 0usize); best.len()];
        for bits in 0..=budget {
            for f in 0..flags {
                let v = best[idx(bits, f)];
                if !v.is_finite() {
                    continue;
                }
                for b in 0..nb {
                    let nbits = bits + p.widths[b] as usize;
                    if nbits > budget {
                        continue;
                    }
                    let mut nf = f;
                    if let Some(k) = req.iter().position(|&r| r == b) {
                        nf |= 1 << k;
                    }
                    let c = v + p.cost[i][b];
                    let j = idx(nbits, nf);
                    if c < next[j] {
                        next[j] = c;
                        from[j] = (idx(bits, f), b);
                    }
                }
            }
        }
        best = next;
        trail.push(from);
    }
    let want = |f: usize| n < req.len() || f == flags - 1;
    let (mut at, obj) = (0..=budget)
        .flat_map(|bits| (0..flags).map(move |f| (bits, f)))
        .filter(|&(_, f)| want(f))
        .map(|(bits, f)| (idx(bits, f), best[idx(bits, f)]))
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let mut choice = vec![0usize; n];
    for i in (0..n).rev() {
        let (prev, b) = trail[i][at];
        choice[i] = b;
        at = prev;
    }
    Some((choice, obj))
}

/// Every assignment, the best kept (tests; `widths.len()^experts` of them).
pub fn exhaustive(p: &Program) -> Option<(Vec<usize>, f64)> {
    let (n, nb) = (p.n(), p.widths.len());
    let total = nb.checked_pow(n as u32)?;
    let mut best: Option<(Vec<usize>, f64)> = None;
    let mut choice = vec![0usize; n];
    for code in 0..total {
        let mut c = code;
        for x in choice.iter_mut() {
            *x = c % nb;
            c /= nb;
        }
        if let Some(v) = p.evaluate(&choice)
            && best.as_ref().is_none_or(|(_, b)| v < *b)
        {
            best = Some((choice.clone(), v));
        }
    }
    best
}

/// Solves `p` with good_lp + microlp, checked against [`exact`]. Errors when the program is
/// infeasible (a budget below what the constraints need).
pub fn solve(p: &Program) -> Result<Assignment> {
    let t0 = Instant::now();
    let Some((exact_choice, exact_obj)) = exact(p) else {
        return Err(PareError::Internal(format!(
            "the bit budget {} is below the {} bits the constraints need",
            p.budget,
            p.min_bits()
        )));
    };
    let mut vars = variables!();
    let x: Vec<Vec<_>> = (0..p.n())
        .map(|_| (0..p.widths.len()).map(|_| vars.add(variable().binary())).collect())
        .collect();
    let objective: Expression = x
        .iter()
        .zip(&p.cost)
        .flat_map(|(xi, ci)| xi.iter().zip(ci).map(|(v, c)| *c * *v))
        .sum();
    let mut model = vars.minimise(objective.clone()).using(microlp);
    for xi in &x {
        let one: Expression = xi.iter().copied().sum();
        model = model.with(one.eq(1));
    }
    let bits: Expression = x
        .iter()
        .flat_map(|xi| xi.iter().zip(&p.widths).map(|(v, w)| f64::from(*w) * *v))
        .sum();
    model = model.with(bits.leq(p.budget as f64));
    if p.n() >= p.required().len() {
        for r in p.required() {
            let used: Expression = x.iter().map(|xi| xi[r]).sum();
            model = model.with(used.geq(1));
        }
    }
    let lp = model.solve().map(|s| {
        x.iter()
            .map(|xi| {
                xi.iter()
                    .enumerate()
                    .max_by(|a, b| s.value(*a.1).total_cmp(&s.value(*b.1)))
                    .map_or(0, |(b, _)| b)
            })
            .collect::<Vec<usize>>()
    });
    let seconds = t0.elapsed().as_secs_f64();
    let tol = 1e-9 * exact_obj.abs().max(1.0);
    Ok(match lp {
        Ok(choice) => match p.evaluate(&choice) {
            Some(v) if v <= exact_obj + tol => Assignment {
                choice,
                objective: v,
                status: "microlp optimal (checked exact)".into(),
                seconds,
            },
            Some(v) => Assignment {
                choice: exact_choice,
                objective: exact_obj,
                status: format!(
                    "microlp returned objective {v}, above the optimum {exact_obj}; the exact optimum was used"
                ),
                seconds,
            },
            None => Assignment {
                choice: exact_choice,
                objective: exact_obj,
                status: "microlp returned an infeasible assignment; the exact optimum was used"
                    .into(),
                seconds,
            },
        },
        Err(e) => Assignment {
            choice: exact_choice,
            objective: exact_obj,
            status: format!("microlp failed ({e}); the exact optimum was used"),
            seconds,
        },
    })
}

    /// A deterministic pseudo-random program (tests and `pare bench ilp`) of `n` experts over widths 2, 3, 4.
pub fn synthetic(n: usize, seed: u64, avg: f64) -> Program {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as f64) / f64::from(1u32 << 31)
    };
    let cost = (0..n)
        .map(|_| {
            let scale = next() * 10.0;
            // Narrower widths cost more.
            vec![scale * (4.0 + next()), scale * (2.0 + next()), scale * next()]
        })
        .collect();
    Program {
        cost,
        widths: vec![2, 3, 4],
        budget: (avg * n as f64).floor() as u64,
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_agrees_with_exhaustive_search_on_random_8_expert_blocks() {
        for seed in 0..40 {
            for avg in [2.375, 2.5, 3.0, 3.5] {
                let p = synthetic(8, seed, avg);
                let a = solve(&p).unwrap();
                let (_, best) = exhaustive(&p).unwrap();
                assert!((a.objective - best).abs() <= 1e-9 * best.max(1.0), "seed {seed} avg {avg}: {} vs {best}", a.objective);
                assert_eq!(p.evaluate(&a.choice), Some(a.objective));
                let (_, dp) = exact(&p).unwrap();
                assert!((dp - best).abs() <= 1e-9 * best.max(1.0));
            }
        }
    }

    #[test]
    fn constraints_hold_and_infeasible_budgets_are_refused() {
        let p = synthetic(8, 3, 2.375);
        let a = solve(&p).unwrap();
        let bits: u64 = a.choice.iter().map(|&b| u64::from(p.widths[b])).sum();
        assert!(bits <= 19);
        assert!(a.choice.contains(&2) && a.choice.contains(&1), "{:?}", a.choice);
        // 8 experts need at least 6·2 + 3 + 4 = 19 bits.
        let tight = Program { budget: 18, ..synthetic(8, 3, 2.0) };
        assert_eq!(tight.min_bits(), 19);
        assert!(solve(&tight).is_err());
        assert!(exact(&Program { budget: 19, ..tight }).is_some());
    }

    #[test]
    fn a_128_expert_block_solves() {
        let p = synthetic(128, 7, 2.5);
        let a = solve(&p).unwrap();
        let (_, best) = exact(&p).unwrap();
        assert!((a.objective - best).abs() <= 1e-9 * best.max(1.0));
        let bits: u64 = a.choice.iter().map(|&b| u64::from(p.widths[b])).sum();
        assert!(bits <= 320);
    }
}
