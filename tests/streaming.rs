//! Streaming and sharding: a random Llama written once as one f32 file and once as bf16 shards
//! with an index gives the same logits; plus the (ignored) generator of the big checkpoint used by
//! benches/streaming_rss.sh.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pare::checkpoint::{CheckpointWriter, Dtype, OutTensor, encode_floats};
use pare::pipeline::{ModelRunner, Silent};

use common::{Rng, cpu, model_dir};

/// Shape of a random Llama.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    vocab: usize,
}

impl Dims {
    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    fn config(&self, dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "head_dim": self.head_dim(),
            "intermediate_size": self.ffn,
            "max_position_embeddings": 512,
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "vocab_size": self.vocab,
            "dtype": dtype,
            "torch_dtype": dtype,
        })
    }

    /// Every tensor: name, shape, init scale (0 means "norm": 1 + small noise).
    fn tensors(&self) -> Vec<(String, Vec<usize>, f32)> {
        let (h, kv, f, v) = (
            self.hidden,
            self.kv_heads * self.head_dim(),
            self.ffn,
            self.vocab,
        );
        let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h], 1.0)];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h], 0.0));
            t.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h], s(h)));
            t.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h], s(h)));
            t.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h], s(h)));
            t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h], s(h)));
            t.push((format!("{p}.post_attention_layernorm.weight"), vec![h], 0.0));
            t.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h], s(h)));
            t.push((format!("{p}.mlp.up_proj.weight"), vec![f, h], s(h)));
            t.push((format!("{p}.mlp.down_proj.weight"), vec![h, f], s(f)));
        }
        t.push(("model.norm.weight".to_string(), vec![h], 0.0));
        t.push(("lm_head.weight".to_string(), vec![v, h], s(h)));
        t
    }
}

/// Values of one tensor, already rounded to bf16 so that f32 and bf16 copies hold equal numbers.
fn values(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r = rng.next_f32();
            let v = if scale == 0.0 {
                1.0 + 0.1 * r
            } else {
                scale * r
            };
            half::bf16::from_f32(v).to_f32()
        })
        .collect()
}

/// Writes the random model `dims` into `out` in `dtype` with shards of at most `shard_bytes`,
/// copying the stories260k tokenizer files.
fn write_model(dims: Dims, out: &Path, dtype: Dtype, shard_bytes: u64, seed: u64) -> PathBuf {
    let src = model_dir("stories260k");
    let mut w = CheckpointWriter::create(out, &src, true, shard_bytes).expect("create writer");
    let mut rng = Rng(seed | 1);
    for (name, shape, scale) in dims.tensors() {
        let n = shape.iter().product();
        let v = values(&mut rng, n, scale);
        let bytes = encode_floats(&v, dtype).expect("encode");
        w.add(
            name,
            OutTensor {
                dtype,
                shape,
                bytes,
            },
        )
        .expect("add tensor");
    }
    let dt = if dtype == Dtype::F32 {
        "float32"
    } else {
        "bfloat16"
    };
    let copy = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    .map(|f| src.join(f));
    w.finish(&dims.config(dt), &copy, &[], BTreeMap::new())
        .expect("finish")
}

fn shard_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    v.sort();
    v
}

#[test]
fn sharded_bf16_and_single_f32_give_identical_logits() {
    let dims = Dims {
        hidden: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        ffn: 128,
        vocab: 512,
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let f32_dir = write_model(dims, &tmp.path().join("f32"), Dtype::F32, u64::MAX, 7);
    let bf_dir = write_model(dims, &tmp.path().join("bf16"), Dtype::BF16, 100_000, 7);

    assert_eq!(shard_files(&f32_dir), vec!["model.safetensors".to_string()]);
    assert!(!f32_dir.join("model.safetensors.index.json").exists());
    let shards = shard_files(&bf_dir);
    let n = shards.len();
    assert!(n >= 3, "expected at least 3 shards, got {shards:?}");
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(*s, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
    }
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bf_dir.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("parse index");
    let map = index["weight_map"].as_object().expect("weight_map");
    assert_eq!(map.len(), dims.tensors().len());
    let used: std::collections::BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    assert_eq!(used.len(), n, "every shard holds tensors");

    let ids: Vec<u32> = (0..96u32)
        .map(|i| (i * 37 + 5) % dims.vocab as u32)
        .collect();
    let mut a = ModelRunner::open(&f32_dir, &cpu()).expect("open f32");
    let mut b = ModelRunner::open(&bf_dir, &cpu()).expect("open bf16");
    assert_eq!(a.store.shard_count(), 1);
    assert_eq!(b.store.shard_count(), n);
    let la = a.logits(&ids).expect("logits f32");
    let lb = b.logits(&ids).expect("logits bf16");
    assert_eq!(la.len(), ids.len() * dims.vocab);
    let worst = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "logits differ by {worst}");
    let spread = la.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        spread > 1e-2,
        "logits are degenerate (max |logit| {spread})"
    );

    // The streaming path (one block at a time) agrees with the resident one on both copies.
    let sa = ModelRunner::open(&f32_dir, &cpu()).expect("open f32");
    let sb = ModelRunner::open(&bf_dir, &cpu()).expect("open bf16");
    let wins = vec![ids[..48].to_vec(), ids[48..].to_vec()];
    let ha = sa.final_hidden(&wins, &Silent).expect("stream f32");
    let hb = sb.final_hidden(&wins, &Silent).expect("stream bf16");
    let ha = pare::model::to_host(sa.ends.logits(ha[0].clone()).expect("logits")).expect("host");
    let hb = pare::model::to_host(sb.ends.logits(hb[0].clone()).expect("logits")).expect("host");
    let worst = ha
        .iter()
        .zip(&hb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "streamed logits differ by {worst}");
    let first = &ha[..48 * dims.vocab];
    let worst = first
        .iter()
        .zip(&la[..48 * dims.vocab])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4,
        "streamed and resident logits differ by {worst}"
    );
}

/// Writes a big random bf16 checkpoint into `$PARE_BIG_CHECKPOINT` for the benches: by default
/// 1B-shaped (TinyLlama-1.1B's widths, 24 blocks: 2.4 GB, 1 GB shards; benches/streaming_rss.sh,
/// benches/vs_pytorch.sh); with `PARE_BIG_SHAPE=7b` Llama-2-7B-shaped (32 blocks, hidden 4096,
/// FFN 11008: 13.5 GB in two shards of at most 10 GB, as the hub's; benches/scale_7b.sh).
#[test]
#[ignore = "writes a multi-GB checkpoint; run by the benches"]
fn generate_big_checkpoint() {
    let out = std::env::var_os("PARE_BIG_CHECKPOINT")
        .map(PathBuf::from)
        .expect("set PARE_BIG_CHECKPOINT to the output folder");
    let seven_b = std::env::var("PARE_BIG_SHAPE").is_ok_and(|s| s == "7b");
    // PARE_BIG_LAYERS=N keeps the shape but writes only N blocks (a short profile run of the
    // 7B shape); the 2 GB floor below only holds for the full depth.
    let layers: Option<usize> = std::env::var("PARE_BIG_LAYERS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("PARE_BIG_LAYERS is a number of blocks"));
    let (mut dims, shard) = if seven_b {
        let d = Dims {
            hidden: 4096,
            layers: 32,
            heads: 32,
            kv_heads: 32,
            ffn: 11008,
            vocab: 32000,
        };
        (d, 10_000_000_000)
    } else {
        let d = Dims {
            hidden: 2048,
            layers: 24,
            heads: 32,
            kv_heads: 4,
            ffn: 5632,
            vocab: 32000,
        };
        (d, 1_000_000_000)
    };
    if let Some(n) = layers {
        dims.layers = n;
    }
    let params: usize = dims
        .tensors()
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    assert!(
        layers.is_some() || params * 2 >= 2_000_000_000,
        "{params} parameters is under 2 GB in bf16"
    );
    let dir = write_model(dims, &out, Dtype::BF16, shard, 11);
    eprintln!("wrote {} ({params} parameters)", dir.display());
}
