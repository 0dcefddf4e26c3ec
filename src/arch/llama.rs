//! The Llama-family adapter (Llama, Mistral, Qwen2, Qwen3 by config flags) and the MoE namings
//! of Mixtral (`block_sparse_moe.experts.{e}.w1|w3|w2`) and Qwen3-MoE
//! (`mlp.experts.{e}.gate_proj|up_proj|down_proj`): canonical ids ↔ checkpoint tensor names,
//! and loading one block's weights.

use std::collections::BTreeSet;

use burn::tensor::Device;

use super::LinearSlot;
use crate::checkpoint::{QuantizationConfig, TensorStore};
use crate::config::{ArchKind, HfConfig};
use crate::error::{PareError, Result};
use crate::id::{LinearId, LinearRole, MlpPart};
use crate::matrix::Matrix;
use crate::model::{Attention, DecoderBlock, Ends, Ffn, Linear, Mlp, Moe, RmsNorm};

/// Knows the tensor names of one architecture family.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub cfg: HfConfig,
}

/// One block's weights on the host: linears (with optional biases) and the two norms.
#[derive(Clone, Debug)]
pub struct BlockWeights {
    pub block: usize,
    pub linears: Vec<(LinearSlot, Matrix, Option<Vec<f32>>)>,
    pub input_norm: Vec<f32>,
    pub post_norm: Vec<f32>,
    /// Qwen3: the per-head q and k RMSNorm weights (`[head_dim]` each).
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
}

impl Architecture {
    pub fn new(cfg: HfConfig) -> Self {
        Self { cfg }
    }

    fn layer(&self, b: usize) -> String {
        format!("model.layers.{b}")
    }

    /// Every linear of block `b` in execution order.
    pub fn linears(&self, b: usize) -> Vec<LinearSlot> {
        let c = &self.cfg;
        let (h, q, kv, ffn) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        let l = self.layer(b);
        let slot = |role: LinearRole, key: String, rows, cols| LinearSlot {
            id: LinearId::new(b, role),
            key,
            rows,
            cols,
        };
        let mut v = vec![
            slot(LinearRole::Q, format!("{l}.self_attn.q_proj"), q, h),
            slot(LinearRole::K, format!("{l}.self_attn.k_proj"), kv, h),
            slot(LinearRole::V, format!("{l}.self_attn.v_proj"), kv, h),
            slot(LinearRole::O, format!("{l}.self_attn.o_proj"), h, q),
        ];
        let dense = |v: &mut Vec<LinearSlot>, m: &str| {
            for (part, name) in [
                (MlpPart::Gate, "gate_proj"),
                (MlpPart::Up, "up_proj"),
                (MlpPart::Down, "down_proj"),
            ] {
                let (rows, cols) = if part == MlpPart::Down {
                    (h, ffn)
                } else {
                    (ffn, h)
                };
                v.push(slot(
                    LinearRole::Mlp(part),
                    format!("{m}.{name}"),
                    rows,
                    cols,
                ));
            }
        };
        if !c.is_moe_block(b) {
            dense(&mut v, &format!("{l}.mlp"));
            return v;
        }
        // Mixtral: `block_sparse_moe.experts.{e}.w1|w3|w2`; Qwen3-MoE: `mlp.experts.{e}.*_proj`.
        let (m, names) = match c.kind {
            ArchKind::Mixtral => (format!("{l}.block_sparse_moe"), ["w1", "w3", "w2"]),
            _ => (format!("{l}.mlp"), ["gate_proj", "up_proj", "down_proj"]),
        };
        let f = c.expert_ffn;
        v.push(slot(
            LinearRole::Router,
            format!("{m}.gate"),
            c.num_experts,
            h,
        ));
        for e in 0..c.num_experts {
            let x = format!("{m}.experts.{e}");
            let role = |part| LinearRole::Expert { index: e, part };
            v.push(slot(role(MlpPart::Gate), format!("{x}.{}", names[0]), f, h));
            v.push(slot(role(MlpPart::Up), format!("{x}.{}", names[1]), f, h));
            v.push(slot(role(MlpPart::Down), format!("{x}.{}", names[2]), h, f));
        }
        v
    }

    /// Every linear of every block.
    pub fn all_linears(&self) -> Vec<LinearSlot> {
        (0..self.cfg.num_layers)
            .flat_map(|b| self.linears(b))
            .collect()
    }

    pub fn embed_name(&self) -> &'static str {
        "model.embed_tokens.weight"
    }

    /// The LM head tensor (the embedding when tied).
    pub fn head_name(&self) -> &'static str {
        if self.cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        }
    }

    /// Names of block norms of block `b`.
    fn norm_names(&self, b: usize) -> [String; 2] {
        let l = self.layer(b);
        [
            format!("{l}.input_layernorm.weight"),
            format!("{l}.post_attention_layernorm.weight"),
        ]
    }

    /// Every tensor that is not a block linear (embeddings, norms, head, biases): copied as is.
    pub fn passthrough_tensors(&self, store: &TensorStore) -> Vec<String> {
        let linear_keys: BTreeSet<String> = self.all_linears().into_iter().map(|s| s.key).collect();
        store
            .names()
            .filter(|n| {
                let module = n.rsplit_once('.').map(|x| x.0).unwrap_or(n);
                !linear_keys.contains(module) || n.ends_with(".bias")
            })
            .map(str::to_string)
            .collect()
    }

    fn read_vector(&self, store: &TensorStore, name: &str, len: usize) -> Result<Vec<f32>> {
        let (shape, data) = store.read_f32(name)?;
        if shape != [len] {
            return Err(PareError::input(
                store.dir(),
                format!("tensor `{name}` has shape {shape:?}; config.json implies [{len}]"),
            ));
        }
        Ok(data)
    }

    fn read_matrix(
        &self,
        store: &TensorStore,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix> {
        let (shape, data) = store.read_f32(name)?;
        if shape != [rows, cols] {
            return Err(PareError::input(
                store.dir(),
                format!(
                    "tensor `{name}` has shape {shape:?}; config.json implies [{rows}, {cols}]"
                ),
            ));
        }
        Ok(Matrix::from_vec(rows, cols, data))
    }

    /// Reads block `b`'s weights (dequantising or densifying compressed layouts).
    pub fn read_block(
        &self,
        store: &TensorStore,
        b: usize,
        qcfg: Option<&QuantizationConfig>,
    ) -> Result<BlockWeights> {
        let h = self.cfg.hidden_size;
        let mut linears = Vec::new();
        for slot in self.linears(b) {
            let w = store.read_linear(&slot.key, slot.rows, slot.cols, qcfg)?;
            let bias_name = format!("{}.bias", slot.key);
            let bias = if store.info(&bias_name).is_some() {
                Some(self.read_vector(store, &bias_name, slot.rows)?)
            } else {
                None
            };
            linears.push((slot, w, bias));
        }
        let [n1, n2] = self.norm_names(b);
        let qk_norm = match self.cfg.qk_norm {
            true => {
                let (l, hd) = (self.layer(b), self.cfg.head_dim);
                Some((
                    self.read_vector(store, &format!("{l}.self_attn.q_norm.weight"), hd)?,
                    self.read_vector(store, &format!("{l}.self_attn.k_norm.weight"), hd)?,
                ))
            }
            false => None,
        };
        Ok(BlockWeights {
            block: b,
            linears,
            input_norm: self.read_vector(store, &n1, h)?,
            post_norm: self.read_vector(store, &n2, h)?,
            qk_norm,
        })
    }

    /// Builds the burn block from host weights (copies them; see [`Architecture::into_block`]).
    pub fn build_block(&self, w: &BlockWeights, device: &Device) -> Result<DecoderBlock> {
        Ok(self.into_block(w.clone(), device)?.0)
    }

    /// Builds the burn block from host weights, moving them (the fused q|k|v and gate|up
    /// weights are assembled part by part, each part dropped once copied), and returns the
    /// block with its linears' slots.
    pub fn into_block(
        &self,
        w: BlockWeights,
        device: &Device,
    ) -> Result<(DecoderBlock, Vec<LinearSlot>)> {
        let c = &self.cfg;
        let block = w.block;
        let mut slots = Vec::with_capacity(w.linears.len());
        let mut parts = std::collections::BTreeMap::new();
        for (slot, m, b) in w.linears {
            parts.insert(slot.id.role, (m, b));
            slots.push(slot);
        }
        let mut take = |role: LinearRole| -> Result<(Matrix, Option<Vec<f32>>)> {
            parts.remove(&role).ok_or_else(|| {
                PareError::Internal(format!(
                    "block {block}: linear `{}` missing",
                    LinearId::new(block, role)
                ))
            })
        };
        let mut mlp = |role: &dyn Fn(MlpPart) -> LinearRole| -> Result<Mlp> {
            let gate = take(role(MlpPart::Gate))?;
            let ffn = gate.0.rows;
            let up = take(role(MlpPart::Up))?;
            let (down, db) = take(role(MlpPart::Down))?;
            Ok(Mlp {
                gate_up: Linear::fused_owned(vec![gate, up], device),
                ffn,
                down: Linear::owned(down, db, device),
            })
        };
        let ffn = match c.is_moe_block(block) {
            false => Ffn::Dense(mlp(&LinearRole::Mlp)?),
            true => {
                let mut experts = Vec::with_capacity(c.num_experts);
                for e in 0..c.num_experts {
                    experts.push(mlp(&|part| LinearRole::Expert { index: e, part })?);
                }
                let (r, rb) = take(LinearRole::Router)?;
                Ffn::Moe(Moe {
                    router: Linear::owned(r, rb, device),
                    experts,
                    top_k: c.experts_per_token,
                    norm_topk_prob: c.norm_topk_prob,
                    odp_beta: c.odp_beta.get(block).copied().flatten(),
                })
            }
        };
        let qkv = vec![
            take(LinearRole::Q)?,
            take(LinearRole::K)?,
            take(LinearRole::V)?,
        ];
        let (o, ob) = take(LinearRole::O)?;
        let attn = Attention {
            qkv: Linear::fused_owned(qkv, device),
            o: Linear::owned(o, ob, device),
            n_heads: c.num_heads,
            n_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            window: c.window_of(block),
            qk_norm: w.qk_norm.map(|(q, k)| {
                (
                    RmsNorm::new(q, c.rms_norm_eps, device),
                    RmsNorm::new(k, c.rms_norm_eps, device),
                )
            }),
        };
        Ok((
            DecoderBlock {
                input_norm: RmsNorm::new(w.input_norm, c.rms_norm_eps, device),
                attn,
                post_norm: RmsNorm::new(w.post_norm, c.rms_norm_eps, device),
                ffn,
            },
            slots,
        ))
    }

    /// Embedding, final norm and head. The head is built first and each host copy is handed
    /// over by value, so at most one extra `[vocab, hidden]` copy exists at a time.
    pub fn load_ends(&self, store: &TensorStore, device: &Device) -> Result<Ends> {
        let c = &self.cfg;
        if !c.tie_word_embeddings && store.info("lm_head.weight").is_none() {
            return Err(PareError::input(
                store.dir(),
                "tensor `lm_head.weight` missing and config.json says tie_word_embeddings: false",
            ));
        }
        let head = Linear::owned(
            self.read_matrix(store, self.head_name(), c.vocab_size, c.hidden_size)?,
            None,
            device,
        );
        let embed = self.read_matrix(store, self.embed_name(), c.vocab_size, c.hidden_size)?;
        let norm = RmsNorm::new(
            self.read_vector(store, "model.norm.weight", c.hidden_size)?,
            c.rms_norm_eps,
            device,
        );
        Ok(Ends::new(embed, norm, head, device))
    }
}
