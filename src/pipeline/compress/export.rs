//! Export of compressed linears in the recipe's layout, and the config.json that describes them
//! (compressed-tensors `quantization_config` / `sparsity_config`, plus pare's provenance).

use serde_json::{Value, json};

use crate::allocate::Allocation;
use crate::arch::LinearSlot;
use crate::calib::CalibrationSet;
use crate::checkpoint::{self, Dtype, OutTensor};
use crate::compress::{CompressedLinear, ExportHints, QuantScheme};
use crate::error::{PareError, Result};
use crate::recipe::{ExportFormat, Plan};

/// compressed-tensors version whose layout pare writes.
pub const CT_VERSION: &str = "0.19.0";
/// The last compressed-tensors release that registers the (legacy) sparse bitmask compressors.
pub const CT_SPARSE_VERSION: &str = "0.14.0.1";

fn dtype_bytes(d: Dtype) -> u64 {
    match d {
        Dtype::BF16 | Dtype::F16 => 2,
        Dtype::F64 => 8,
        _ => 4,
    }
}

/// What the export has seen so far: quantised module groups, sparsity, byte counts.
pub struct ExportState {
    format: ExportFormat,
    dtype: Dtype,
    /// The dtype of quantisation scales (f16 for GGUF, else the model's).
    scale_dtype: Dtype,
    groups: Vec<(QuantScheme, Vec<String>)>,
    /// Per entry of `groups`: quantised with static act-order (written as `"actorder": "static"`,
    /// as llm-compressor does; RTN/FineQuant groups keep `null`).
    static_order: Vec<bool>,
    unquantised: Vec<String>,
    sparse_targets: Vec<String>,
    zeros: u64,
    params: u64,
    bytes_before: u64,
    bytes_after: u64,
    bytes_compact: u64,
}

impl ExportState {
    pub fn new(format: ExportFormat, dtype: Dtype, scale_dtype: Dtype) -> Self {
        Self {
            format,
            dtype,
            scale_dtype,
            groups: Vec::new(),
            static_order: Vec::new(),
            unquantised: Vec::new(),
            sparse_targets: Vec::new(),
            zeros: 0,
            params: 0,
            bytes_before: 0,
            bytes_after: 0,
            bytes_compact: 0,
        }
    }

    /// The bookkeeping so far, as JSON (for the resume state).
    pub fn snapshot(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|(s, m)| json!({"bits": s.bits, "group_size": s.group_size, "symmetric": s.symmetric, "modules": m}))
            .collect();
        json!({
            "groups": groups,
            "static_order": self.static_order,
            "unquantised": self.unquantised,
            "sparse_targets": self.sparse_targets,
            "zeros": self.zeros,
            "params": self.params,
            "bytes": [self.bytes_before, self.bytes_after, self.bytes_compact],
        })
    }

    /// Restores [`ExportState::snapshot`]'s bookkeeping; `None` when `v` is not one.
    pub fn restore(&mut self, v: &Value) -> Option<()> {
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        let mut groups = Vec::new();
        for g in v["groups"].as_array()? {
            let scheme = QuantScheme {
                bits: u8::try_from(g["bits"].as_u64()?).ok()?,
                group_size: g["group_size"].as_u64().map(|x| x as usize),
                symmetric: g["symmetric"].as_bool()?,
            };
            groups.push((scheme, strings(&g["modules"])?));
        }
        let bytes = v["bytes"].as_array()?;
        self.groups = groups;
        self.static_order = v["static_order"]
            .as_array()?
            .iter()
            .map(Value::as_bool)
            .collect::<Option<_>>()?;
        self.unquantised = strings(&v["unquantised"])?;
        self.sparse_targets = strings(&v["sparse_targets"])?;
        self.zeros = v["zeros"].as_u64()?;
        self.params = v["params"].as_u64()?;
        self.bytes_before = bytes.first()?.as_u64()?;
        self.bytes_after = bytes.get(1)?.as_u64()?;
        self.bytes_compact = bytes.get(2)?.as_u64()?;
        Some(())
    }

    /// Counts `weights` linear weights the output drops (pruned experts) in the size before:
    /// dense bytes in the model dtype, nothing after.
    pub fn count_removed(&mut self, weights: usize) {
        self.bytes_before += weights as u64 * dtype_bytes(self.dtype);
    }

    /// Tensors for the linear `slot` in the export layout; `compressed` is false for a linear no
    /// step touched (written dense).
    pub fn encode(
        &mut self,
        slot: &LinearSlot,
        cl: &CompressedLinear,
        hints: ExportHints,
        compressed: bool,
    ) -> Result<Vec<(String, OutTensor)>> {
        let key = slot.key.as_str();
        let w = &cl.weight;
        self.params += w.data.len() as u64;
        self.zeros += w.data.iter().filter(|v| **v == 0.0).count() as u64;
        self.bytes_before += w.data.len() as u64 * dtype_bytes(self.dtype);
        let tensors = match (self.format, compressed, &cl.quant) {
            (ExportFormat::PackQuantized, true, Some(q)) => {
                let ordered = hints.actorder_static;
                let found = self
                    .groups
                    .iter()
                    .zip(&self.static_order)
                    .position(|((s, _), o)| *s == q.scheme && *o == ordered);
                match found {
                    Some(i) => self.groups[i].1.push(key.to_string()),
                    None => {
                        self.groups.push((q.scheme, vec![key.to_string()]));
                        self.static_order.push(ordered);
                    }
                }
                checkpoint::encode_pack_quantized(key, q, w.rows, w.cols, self.scale_dtype)?
            }
            (ExportFormat::SparseBitmask, true, _) => {
                self.sparse_targets.push(key.to_string());
                checkpoint::encode_sparse_bitmask(key, w, self.dtype)?
            }
            (ExportFormat::Sparse24Bitmask, true, _) => {
                self.sparse_targets.push(key.to_string());
                checkpoint::encode_sparse_24_bitmask(key, w, self.dtype)
                    .map_err(|e| e.in_layer(slot.id))?
            }
            _ => {
                self.unquantised.push(key.to_string());
                checkpoint::encode_dense(key, w, self.dtype)?
            }
        };
        self.bytes_after += tensors
            .iter()
            .map(|(_, t)| t.bytes.len() as u64)
            .sum::<u64>();
        self.bytes_compact += compact_bytes(cl, dtype_bytes(self.dtype));
        Ok(tensors)
    }

    /// Linear-layer bytes: before (dense in the model dtype), as written, and in the most
    /// compact compressed-tensors layout.
    pub fn linear_bytes(&self) -> (u64, u64, u64) {
        (self.bytes_before, self.bytes_after, self.bytes_compact)
    }

    /// The output config.json: the input's, plus pare's `compression` section and the
    /// compressed-tensors block for the chosen layout.
    pub fn config_json(
        &self,
        raw: &Value,
        plan: &Plan,
        allocation: &Allocation,
        calib: &CalibrationSet,
    ) -> Result<Value> {
        let mut cfg = raw.clone();
        let Some(obj) = cfg.as_object_mut() else {
            return Err(PareError::Internal(
                "config.json is not a JSON object".into(),
            ));
        };
        obj.remove("quantization_config");
        let steps: Vec<Value> = plan
            .steps
            .iter()
            .map(|s| json!({"method": s.name, "targets": s.targets.len()}))
            .collect();
        obj.insert(
            "compression".into(),
            json!({
                "tool": "pare",
                "version": crate::VERSION,
                "steps": steps,
                "sequential": plan.sequential,
                "calibration": { "source": calib.source, "samples": calib.ids.len(), "seq_len": calib.seq_len(), "seed": calib.seed },
                "export": format!("{:?}", self.format),
                "allocation": allocation,
            }),
        );
        if let (Some(o), Some(c)) = (
            plan.odp,
            obj.get_mut("compression").and_then(Value::as_object_mut),
        ) {
            let blocks = raw
                .get("num_hidden_layers")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            if let Some(s) =
                crate::compress::mc_moe::odp::config_section(allocation, blocks, o.skip)
            {
                c.insert("odp".into(), s);
            }
        }
        let global_sparsity = if self.params > 0 {
            self.zeros as f64 / self.params as f64
        } else {
            0.0
        };
        match self.format {
            ExportFormat::PackQuantized if !self.groups.is_empty() => {
                let mut ignore = vec!["lm_head".to_string()];
                ignore.extend(self.unquantised.iter().cloned());
                let mut q = checkpoint::quantization_config_json(&self.groups, &ignore, CT_VERSION);
                for (i, ordered) in self.static_order.iter().enumerate() {
                    if let Some(w) = q
                        .pointer_mut(&format!("/config_groups/group_{i}/weights/actorder"))
                        .filter(|_| *ordered)
                    {
                        *w = json!("static");
                    }
                }
                obj.insert("quantization_config".into(), q);
            }
            ExportFormat::SparseBitmask | ExportFormat::Sparse24Bitmask
                if !self.sparse_targets.is_empty() =>
            {
                // The block compressed-tensors 0.14.0.1 (the last release with these layouts)
                // writes for a sparse-only model, as llm-compressor 0.10 infers it: every Linear
                // is a target, the ones left dense (and the head) are ignored. Extra top-level
                // keys (`format`, `config_groups`) would make 0.14 build a quantisation
                // compressor too and fail to decompress.
                let (fmt, structure) = if self.format == ExportFormat::Sparse24Bitmask {
                    ("sparse-24-bitmask", "2:4")
                } else {
                    ("sparse-bitmask", "unstructured")
                };
                let mut ignore = vec!["lm_head".to_string()];
                ignore.extend(self.unquantised.iter().cloned());
                let mut sp = checkpoint::sparsity_config_json(
                    fmt,
                    global_sparsity,
                    structure,
                    &["Linear".to_string()],
                    &ignore,
                );
                if let Some(o) = sp.as_object_mut() {
                    o.insert("registry_requires_subclass".into(), json!(false));
                }
                obj.insert(
                    "quantization_config".into(),
                    json!({
                        "quant_method": "compressed-tensors",
                        "sparsity_config": sp,
                        "transform_config": {},
                        "version": CT_SPARSE_VERSION,
                    }),
                );
            }
            _ => {}
        }
        Ok(cfg)
    }
}

/// Bytes of `cl` in the most compact compressed-tensors layout: pack-quantized when quantised
/// (packed ints, scales in the model dtype, zero-points, I64 shape), else the smallest of dense,
/// sparse-bitmask (non-zeros, bitmask, I64 row offsets) and sparse-24-bitmask (when 2:4 holds).
pub fn compact_bytes(cl: &CompressedLinear, elem: u64) -> u64 {
    let w = &cl.weight;
    let (rows, cols) = (w.rows as u64, w.cols as u64);
    if let Some(q) = &cl.quant {
        let bits = q.scheme.bits as u64;
        let groups = q.scheme.n_groups(w.cols) as u64;
        let packed = rows * (cols * bits).div_ceil(32) * 4;
        let zp = if q.zero_points.is_some() {
            (rows * bits).div_ceil(32) * 4 * groups
        } else {
            0
        };
        return packed + rows * groups * elem + zp + 16;
    }
    let dense = rows * cols * elem;
    let bitmask = rows * cols.div_ceil(8);
    let nnz = w.data.iter().filter(|v| **v != 0.0).count() as u64;
    let mut best = dense.min(nnz * elem + bitmask + rows * 8 + 16);
    if w.satisfies_n_of_m(2, 4) {
        best = best.min(rows * cols / 2 * elem + bitmask + 16);
    }
    best
}
