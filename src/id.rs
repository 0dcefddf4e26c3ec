//! Canonical linear ids, typed: a decoder block and the role of the linear inside it. The string
//! form (`blocks.3.attn.q`, `blocks.3.mlp.down`, `blocks.3.moe.router`,
//! `blocks.3.moe.experts.5.up`) is what recipes, reports and `inspect` speak; only `arch/` maps
//! it to checkpoint tensor names. Parsing is strict: an id that is not one of these shapes is an
//! error, never a silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The three projections of a gated MLP expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MlpPart {
    Gate,
    Up,
    Down,
}

impl MlpPart {
    /// The canonical name (`gate`, `up`, `down`).
    pub fn name(self) -> &'static str {
        match self {
            MlpPart::Gate => "gate",
            MlpPart::Up => "up",
            MlpPart::Down => "down",
        }
    }
}

/// What a linear does inside its decoder block. Declaration order is execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearRole {
    /// Attention query, key, value and output projections.
    Q,
    K,
    V,
    O,
    /// Dense MLP projections.
    Mlp(MlpPart),
    /// The MoE router (`gate` in Mixtral/Qwen3-MoE checkpoints).
    Router,
    /// A projection of MoE expert `index`.
    Expert {
        index: usize,
        part: MlpPart,
    },
}

impl LinearRole {
    /// True for the projections of MoE experts.
    pub fn is_expert(self) -> bool {
        matches!(self, LinearRole::Expert { .. })
    }
}

/// A linear layer of the model: block index and role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinearId {
    pub block: usize,
    pub role: LinearRole,
}

impl LinearId {
    pub fn new(block: usize, role: LinearRole) -> Self {
        Self { block, role }
    }
}

impl fmt::Display for LinearId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.block;
        match self.role {
            LinearRole::Q => write!(f, "blocks.{b}.attn.q"),
            LinearRole::K => write!(f, "blocks.{b}.attn.k"),
            LinearRole::V => write!(f, "blocks.{b}.attn.v"),
            LinearRole::O => write!(f, "blocks.{b}.attn.o"),
            LinearRole::Mlp(p) => write!(f, "blocks.{b}.mlp.{}", p.name()),
            LinearRole::Router => write!(f, "blocks.{b}.moe.router"),
            LinearRole::Expert { index, part } => {
                write!(f, "blocks.{b}.moe.experts.{index}.{}", part.name())
            }
        }
    }
}

/// Why a string is not a canonical linear id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLinearId(pub String);

impl fmt::Display for BadLinearId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a linear id (expected e.g. blocks.3.attn.q, blocks.3.mlp.down, blocks.3.moe.router, blocks.3.moe.experts.5.up)",
            self.0
        )
    }
}

impl std::error::Error for BadLinearId {}

fn part(s: &str) -> Option<MlpPart> {
    match s {
        "gate" => Some(MlpPart::Gate),
        "up" => Some(MlpPart::Up),
        "down" => Some(MlpPart::Down),
        _ => None,
    }
}

/// A decimal index without sign or leading zeros (so that parsing round-trips `Display`).
fn index(s: &str) -> Option<usize> {
    let ok =
        !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

impl FromStr for LinearId {
    type Err = BadLinearId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLinearId(s.to_string());
        let parts: Vec<&str> = s.split('.').collect();
        let (block, rest) = match parts.as_slice() {
            ["blocks", b, rest @ ..] => (index(b).ok_or_else(bad)?, rest),
            _ => return Err(bad()),
        };
        let role = match rest {
            ["attn", "q"] => LinearRole::Q,
            ["attn", "k"] => LinearRole::K,
            ["attn", "v"] => LinearRole::V,
            ["attn", "o"] => LinearRole::O,
            ["mlp", p] => LinearRole::Mlp(part(p).ok_or_else(bad)?),
            ["moe", "router"] => LinearRole::Router,
            ["moe", "experts", e, p] => LinearRole::Expert {
                index: index(e).ok_or_else(bad)?,
                part: part(p).ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        Ok(LinearId { block, role })
    }
}

impl Serialize for LinearId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LinearId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let ids = [
            LinearId::new(0, LinearRole::Q),
            LinearId::new(3, LinearRole::O),
            LinearId::new(12, LinearRole::Mlp(MlpPart::Down)),
            LinearId::new(1, LinearRole::Router),
            LinearId::new(
                2,
                LinearRole::Expert {
                    index: 17,
                    part: MlpPart::Up,
                },
            ),
        ];
        let text = [
            "blocks.0.attn.q",
            "blocks.3.attn.o",
            "blocks.12.mlp.down",
            "blocks.1.moe.router",
            "blocks.2.moe.experts.17.up",
        ];
        for (id, t) in ids.iter().zip(text) {
            assert_eq!(id.to_string(), t);
            assert_eq!(t.parse::<LinearId>().unwrap(), *id);
        }
    }

    #[test]
    fn malformed_ids_are_errors_not_defaults() {
        for bad in [
            "blocks.0.moe.experts.x.up",
            "blocks.0.moe.experts.01.up",
            "blocks.0.moe.experts.1",
            "blocks.-1.attn.q",
            "blocks.0.attn.z",
            "layers.0.attn.q",
            "blocks.0.mlp.up.extra",
            "",
        ] {
            let e = bad.parse::<LinearId>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn order_is_block_then_execution_order() {
        let mut v: Vec<LinearId> = [
            "blocks.1.attn.q",
            "blocks.0.mlp.down",
            "blocks.0.attn.v",
            "blocks.0.attn.q",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            s,
            [
                "blocks.0.attn.q",
                "blocks.0.attn.v",
                "blocks.0.mlp.down",
                "blocks.1.attn.q"
            ]
        );
    }
}
