//! Recipe tests for the steps that refine or learn masks (DSnoT, MaskLLM): what they inherit
//! from earlier steps and the orders they refuse.

use super::tests::{CAL, plan, recipe_err};
use crate::compress::{Method, NofM};

fn steps(body: &str) -> String {
    format!("{CAL}steps:\n{body}")
}

#[test]
fn dsnot_inherits_the_earlier_pattern() {
    let p = plan(&steps(
        "  - wanda: { pattern: \"2:4\" }\n  - dsnot: { max_cycles: 7 }\n",
    ))
    .unwrap();
    let Method::Dsnot(d) = &p.steps[1].method else {
        panic!("{:?}", p.steps[1].method)
    };
    assert_eq!(d.pattern, Some(NofM { n: 2, m: 4 }));
    assert_eq!(d.max_cycles, 7);
    assert!(d.same_sign, "N:M always applies the sign rule");
    let p = plan(&steps("  - sparsegpt: { sparsity: 0.6 }\n  - dsnot: {}\n")).unwrap();
    let Method::Dsnot(d) = &p.steps[1].method else {
        panic!()
    };
    assert_eq!((d.pattern, d.max_cycles, d.same_sign), (None, 50, false));
    assert_eq!(d.update_threshold, 0.1);
}

#[test]
fn dsnot_refuses_unpruned_quantised_and_mixed_targets() {
    let (k, m) = recipe_err(plan(&steps("  - dsnot: {}\n")));
    assert_eq!(k, "steps[0].dsnot");
    assert!(m.contains("no earlier step prunes"), "{m}");
    let (k, m) = recipe_err(plan(&steps(
        "  - wanda: { sparsity: 0.5 }\n  - rtn: { format: int4-ch-sym }\n  - dsnot: {}\n",
    )));
    assert_eq!(k, "steps[2].dsnot");
    assert!(m.contains("quantised by steps[1].rtn"), "{m}");
    let (_, m) = recipe_err(plan(&steps(
        "  - wanda: { sparsity: 0.5, targets: [\"re:.*attn.*\"] }\n  - wanda: { pattern: \"2:4\", targets: [\"re:.*mlp.*\"] }\n  - dsnot: {}\n",
    )));
    assert!(m.contains("different patterns"), "{m}");
    let (k, m) = recipe_err(plan(&steps(
        "  - wanda: { pattern: \"2:4\" }\n  - dsnot: { same_sign: false }\n",
    )));
    assert_eq!(k, "steps[1].dsnot.same_sign");
    assert!(m.contains("always applies"), "{m}");
    let (k, _) = recipe_err(plan(&steps(
        "  - wanda: { sparsity: 0.5 }\n  - dsnot: { max_cycles: 0 }\n",
    )));
    assert_eq!(k, "steps[1].dsnot.max_cycles");
}

#[test]
fn gblm_resolves_its_gradient_source_and_owl_n_of_m() {
    let p = plan(&steps("  - gblm: { pattern: \"2:4\" }\n")).unwrap();
    let Method::Gblm(g) = &p.steps[0].method else {
        panic!("{:?}", p.steps[0].method)
    };
    assert_eq!(
        g.gradients,
        crate::compress::GradientSource::Pass { alpha: 100.0 }
    );
    assert_eq!(g.select.pattern, Some(NofM { n: 2, m: 4 }));
    let (k, m) = recipe_err(plan(&steps(
        "  - gblm: { sparsity: 0.5, gradients: g.safetensors, alpha: 10 }\n",
    )));
    assert_eq!(k, "steps[0].gblm.alpha");
    assert!(m.contains("not both"), "{m}");
    let (k, m) = recipe_err(plan(&steps("  - gblm: { sparsity: 0.5, alpha: -1 }\n")));
    assert_eq!(k, "steps[0].gblm.alpha");
    assert!(m.contains("positive"), "{m}");
    // OWL's N:M variant: the step declares no single pattern (blocks keep different N).
    let p = plan(&steps(
        "  - gblm: { pattern: \"4:8\", profile: { owl: {} } }\n",
    ))
    .unwrap();
    assert_eq!(p.steps[0].pattern(), None);
    let Method::Gblm(g) = &p.steps[0].method else {
        panic!()
    };
    let owl = g.select.owl.unwrap();
    assert_eq!((owl.lambda, owl.pattern), (2.0, Some(NofM { n: 4, m: 8 })));
    let (k, m) = recipe_err(plan(&steps(
        "  - wanda: { pattern: \"2:4\", profile: { owl: { lambda: 2.5 } } }\n",
    )));
    assert_eq!(k, "steps[0].wanda.profile.owl.lambda");
    assert!(m.contains("(0, 2]"), "{m}");
}

#[test]
fn maskllm_end_to_end_resolves_and_refuses_what_it_cannot_do() {
    use crate::compress::maskllm::{EndToEnd, Loss, end_to_end};
    let p = plan(&steps(
        "  - maskllm: { pattern: \"2:4\", mode: end-to-end }\n",
    ))
    .unwrap();
    let Method::MaskLlm(m) = &p.steps[0].method else {
        panic!("{:?}", p.steps[0].method)
    };
    assert_eq!(
        m.end_to_end,
        Some(EndToEnd {
            batch: 4,
            loss: Loss::Distill
        })
    );
    assert_eq!(m.schedule.iterations, end_to_end::ITERATIONS);
    assert_eq!(m.schedule.lr, end_to_end::LR as f32);
    // Without reconstruction the block loop gathers nothing for it.
    use crate::compress::Compressor;
    assert_eq!(m.stats(), crate::stats::StatSet::EMPTY);
    let p = plan(&steps(
        "  - maskllm: { pattern: \"2:4\", mode: end-to-end, loss: lm, batch: 2, reconstruct: true }\n",
    ))
    .unwrap();
    let Method::MaskLlm(m) = &p.steps[0].method else {
        panic!()
    };
    assert_eq!(
        m.end_to_end,
        Some(EndToEnd {
            batch: 2,
            loss: Loss::Lm
        })
    );
    assert_ne!(m.stats(), crate::stats::StatSet::EMPTY);
    // The layer mode keeps its own defaults and refuses the end-to-end fields.
    let p = plan(&steps("  - maskllm: { pattern: \"2:4\" }\n")).unwrap();
    let Method::MaskLlm(m) = &p.steps[0].method else {
        panic!()
    };
    assert_eq!((m.end_to_end, m.schedule.iterations), (None, 300));
    for (body, key, want) in [
        (
            "pattern: \"2:4\", batch: 2",
            "steps[0].maskllm.batch",
            "end-to-end",
        ),
        (
            "pattern: \"2:4\", loss: lm",
            "steps[0].maskllm.loss",
            "end-to-end",
        ),
        (
            "pattern: \"2:4\", mode: end-to-end, prior: previous",
            "steps[0].maskllm.prior",
            "before the block loop",
        ),
        (
            "pattern: \"2:4\", mode: end-to-end, compensate: true",
            "steps[0].maskllm.compensate",
            "layer mode",
        ),
        (
            "pattern: \"2:4\", mode: end-to-end, batch: 0",
            "steps[0].maskllm.batch",
            "at least 1",
        ),
    ] {
        let (k, m) = recipe_err(plan(&steps(&format!("  - maskllm: {{ {body} }}\n"))));
        assert_eq!(k, key, "{body}");
        assert!(m.contains(want), "{body}: {m}");
    }
    let e = plan(&steps("  - maskllm: { pattern: \"2:4\", mode: global }\n"));
    assert!(e.is_err());
}
