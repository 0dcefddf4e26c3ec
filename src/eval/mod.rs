//! Evaluation: perplexity and KL-divergence on a text (`text`), task suites (`tasks`) through the
//! `LanguageModel` interface (`lm`).

pub mod lm;
pub mod tasks;
pub mod text;
