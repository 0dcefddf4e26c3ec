//! Tests of the checkpoint writer: greedy sharding, single and oversized shards, refusing
//! overlapping outputs, clean-up on error, and tensors stored by the caller (the resume path).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::tests::{pseudo_random, roundtrip};
use super::*;

/// A rank-1 F32 tensor of `len` elements holding `bytes` zero bytes (`bytes ≠ 4·len` makes a
/// tensor whose byte count does not match its shape).
fn zeros_f32(len: usize, bytes: usize) -> OutTensor {
    OutTensor {
        dtype: Dtype::F32,
        shape: vec![len],
        bytes: vec![0; bytes],
    }
}

#[test]
fn writer_shards_greedily_and_round_trips_bf16() {
    // Six 40-byte bf16 tensors with a 100-byte limit: 2 per shard → 3 shards.
    let ts: Vec<(String, OutTensor)> = (0..6)
        .map(|i| {
            let m = pseudo_random(4, 5, i + 1);
            (
                format!("t{i}"),
                OutTensor {
                    dtype: Dtype::BF16,
                    shape: vec![4, 5],
                    bytes: encode_floats(&m.data, Dtype::BF16).unwrap(),
                },
            )
        })
        .collect();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("tokenizer.json"), "{}").unwrap();
    let write = |out: &Path, force: bool| {
        let mut w = CheckpointWriter::create(out, &input, force, 100).unwrap();
        for (n, t) in ts.clone() {
            w.add(n, t).unwrap();
        }
        let meta = BTreeMap::from([("pare_version".to_string(), "x".to_string())]);
        let files = [input.join("tokenizer.json"), input.join("missing.json")];
        w.finish(
            &json!({"b": 1, "a": [1, 2]}),
            &files,
            &[("recipe.yaml".into(), b"steps: []\n".to_vec())],
            meta,
        )
        .unwrap()
    };
    let out = root.path().join("out");
    write(&out, false);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
            "model.safetensors.index.json",
            "recipe.yaml",
            "tokenizer.json"
        ]
    );
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["metadata"]["total_size"], 240);
    assert_eq!(
        index["weight_map"]["t2"],
        "model-00002-of-00003.safetensors"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}\n"
    );
    let s = TensorStore::open(&out).unwrap();
    assert_eq!(s.shard_count(), 3);
    for (n, t) in &ts {
        let (dt, shape, bytes) = s.read_raw(n).unwrap();
        assert_eq!((dt, &shape, bytes), (t.dtype, &t.shape, &t.bytes[..]));
    }
    // Every shard carries the metadata (with format pt) and mode 0644.
    for f in files.iter().filter(|f| f.ends_with(".safetensors")) {
        let bytes = std::fs::read(out.join(f)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = meta.metadata().clone().unwrap();
        assert_eq!(
            (m["format"].as_str(), m["pare_version"].as_str()),
            ("pt", "x")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777,
                0o644
            );
        }
    }
    // Deterministic: a second write (with --force) gives byte-identical files.
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert!(
        CheckpointWriter::create(&out, &input, false, 100)
            .unwrap_err()
            .to_string()
            .contains("--force")
    );
    write(&out, true);
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert!(before == after);
    // No temp folders left behind.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);
}

#[test]
fn writer_single_shard_and_oversized_tensor() {
    let big = zeros_f32(30, 120);
    let small = zeros_f32(2, 8);
    let (_d, s) = roundtrip(
        vec![
            ("a".into(), small.clone()),
            ("b".into(), big),
            ("c".into(), small),
        ],
        100,
    );
    // a | b (alone, over the limit) | c
    assert_eq!(s.shard_count(), 3);
    assert!(
        s.info("b")
            .unwrap()
            .file
            .ends_with("model-00002-of-00003.safetensors")
    );
    let (_d2, s) = roundtrip(
        vec![(
            "x".into(),
            OutTensor {
                dtype: Dtype::I64,
                shape: vec![1],
                bytes: vec![1, 0, 0, 0, 0, 0, 0, 0],
            },
        )],
        100,
    );
    assert!(s.info("x").unwrap().file.ends_with("model.safetensors"));
    assert!(!s.dir().join("model.safetensors.index.json").exists());
}

#[test]
fn writer_refuses_overlap_and_cleans_up_on_error() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for out in [input.clone(), input.join("sub"), root.path().to_path_buf()] {
        let e = CheckpointWriter::create(&out, &input, true, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");
    }
    // Parent is a file: the temp folder cannot be created.
    std::fs::write(root.path().join("file"), "x").unwrap();
    assert!(CheckpointWriter::create(&root.path().join("file/out"), &input, false, 100).is_err());
    // A write error (the shard path is taken by a directory) is an Io error naming the file, and
    // dropping the writer removes the temp folder.
    let out = root.path().join("out");
    let mut w = CheckpointWriter::create(&out, &input, false, 10).unwrap();
    let tmp = w.temp_dir().to_path_buf();
    assert!(
        tmp.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".out.pare-tmp-")
    );
    std::fs::create_dir(tmp.join("shard-00001.partial")).unwrap();
    let t = zeros_f32(2, 8);
    w.add("a".into(), t.clone()).unwrap();
    let e = w.add("b".into(), t).unwrap_err();
    assert!(
        matches!(e, crate::PareError::Io { .. }) && e.to_string().contains("shard-00001.partial"),
        "{e}"
    );
    drop(w);
    assert!(!tmp.exists() && !out.exists());
    // Bad byte count and duplicate names.
    let mut w = CheckpointWriter::create(&out, &input, false, 10).unwrap();
    assert!(w.add("x".into(), zeros_f32(3, 8)).is_err());
    w.add("y".into(), zeros_f32(2, 8)).unwrap();
    assert!(w.add("y".into(), zeros_f32(2, 8)).is_err());
}

/// Tensors recorded, stored by the caller in a file of its own and handed back with
/// `add_stored` (the compress loop's resume path) give the same bytes, in the same shards, as
/// adding them directly; recorded tensors never stored are an error, not a silent loss.
#[test]
fn writer_stored_tensors_give_the_bytes_of_direct_adds() {
    let ts: Vec<(String, OutTensor)> = (0..6)
        .map(|i| {
            let m = pseudo_random(4, 5 + i as usize, i + 7);
            let dtype = if i == 3 { Dtype::F32 } else { Dtype::BF16 };
            (
                format!("t{}", 5 - i),
                OutTensor {
                    dtype,
                    shape: vec![4, 5 + i as usize],
                    bytes: encode_floats(&m.data, dtype).unwrap(),
                },
            )
        })
        .collect();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let finish = |w: CheckpointWriter| {
        w.finish(&json!({"a": 1}), &[], &[], BTreeMap::new())
            .unwrap()
    };
    let direct = root.path().join("direct");
    let mut w = CheckpointWriter::create(&direct, &input, false, 150).unwrap();
    for (n, t) in ts.clone() {
        w.add(n, t).unwrap();
    }
    finish(w);
    let stored = root.path().join("stored");
    let mut w = CheckpointWriter::create(&stored, &input, false, 150).unwrap();
    w.add(ts[0].0.clone(), ts[0].1.clone()).unwrap();
    w.record();
    let keep = root.path().join("kept.bin");
    for (i, (n, t)) in ts[1..5].iter().enumerate() {
        w.add(n.clone(), t.clone()).unwrap();
        if i % 2 == 1 {
            // The caller's file: some junk, then the tensors back to back.
            let taken = w.take_journal();
            let path = std::sync::Arc::new(keep.with_extension(format!("{i}")));
            let mut bytes = vec![9u8; 13];
            let mut refs = Vec::new();
            for (n, t) in taken {
                refs.push(StoredTensor {
                    name: n,
                    dtype: t.dtype,
                    shape: t.shape,
                    path: path.clone(),
                    offset: bytes.len() as u64,
                    len: t.bytes.len(),
                });
                bytes.extend_from_slice(&t.bytes);
            }
            std::fs::write(path.as_path(), bytes).unwrap();
            refs.into_iter().for_each(|r| w.add_stored(r).unwrap());
        }
    }
    w.stop_recording().unwrap();
    w.add(ts[5].0.clone(), ts[5].1.clone()).unwrap();
    finish(w);
    let list = |d: &Path| {
        let mut f: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        f.sort();
        f
    };
    assert!(
        list(&direct).len() > 3,
        "several shards: {:?}",
        list(&direct)
    );
    assert_eq!(list(&direct), list(&stored));
    for f in list(&direct) {
        assert_eq!(
            std::fs::read(direct.join(&f)).unwrap(),
            std::fs::read(stored.join(&f)).unwrap(),
            "{f}"
        );
    }
    // A recorded tensor never stored: finish refuses.
    let lost = root.path().join("lost");
    let mut w = CheckpointWriter::create(&lost, &input, false, 150).unwrap();
    w.record();
    w.add(ts[0].0.clone(), ts[0].1.clone()).unwrap();
    let e = w
        .finish(&json!({}), &[], &[], BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("never stored") && e.contains("t5"), "{e}");
    assert!(!lost.exists());
}
