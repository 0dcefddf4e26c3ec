//! `pare compare` (placeholder until the comparison report lands).
