//! `TensorStore`: a Hugging Face checkpoint directory opened for reading — one `model.safetensors`
//! or any number of shards listed in `model.safetensors.index.json`, every shard memory-mapped so
//! that reading a tensor touches only that tensor's bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::{PareError, Result};

/// Name of the single-file weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// What the header says about one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// The shard file holding it.
    pub file: PathBuf,
}

impl TensorInfo {
    /// Stored size in bytes.
    pub fn bytes(&self) -> usize {
        (self.shape.iter().product::<usize>() * self.dtype.bitsize()).div_ceil(8)
    }
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range inside the shard's mmap.
    start: usize,
    end: usize,
}

/// A checkpoint's tensors, by name, backed by memory maps.
pub struct TensorStore {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
    /// Refuse float tensors holding NaN/Inf (the default, see [`allow_non_finite`]).
    check_finite: bool,
    /// Tensors read with NaN/Inf values while allowed: name → count.
    non_finite: std::sync::Mutex<BTreeMap<String, usize>>,
}

/// Process-wide default for stores opened from now on: `true` lets NaN/Inf weights through
/// (recorded, see [`TensorStore::non_finite_tensors`]) instead of refusing the input
/// (`--allow-non-finite`).
static ALLOW_NON_FINITE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the default for stores opened from now on (`--allow-non-finite`).
pub fn allow_non_finite(allow: bool) {
    ALLOW_NON_FINITE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Bytes per element of `dtype` (sub-byte dtypes round up; only used for whole-byte dtypes).
pub fn dtype_size(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}

/// True for the float dtypes pare computes with (F16, BF16, F32, F64).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Checks that a `weight_map` value names a file inside the directory: relative, no `..`, no
/// root or drive prefix. Symbolic links are allowed (the Hugging Face cache uses them).
fn check_shard_name(name: &str) -> std::result::Result<(), String> {
    let p = Path::new(name);
    if name.is_empty() {
        return Err("empty shard file name".into());
    }
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "shard `{name}` points outside the checkpoint directory"
                ));
            }
        }
    }
    Ok(())
}

/// Header entries of one shard: name → (dtype, shape, absolute start, absolute end).
pub type ShardIndex = BTreeMap<String, (Dtype, Vec<usize>, usize, usize)>;

fn map_shard(path: &Path) -> Result<(Mmap, ShardIndex)> {
    let file = File::open(path).map_err(|e| PareError::input(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| PareError::input(path, format!("cannot stat: {e}")))?
        .len();
    if len < 8 {
        return Err(PareError::input(
            path,
            format!("truncated safetensors file ({len} bytes)"),
        ));
    }
    // SAFETY: the map is read-only; pare never writes a file it has open for reading (the
    // writer refuses an output inside the input directory). Another process truncating the
    // file while it is mapped could fault, as with every mmap-based loader.
    let mmap = unsafe { Mmap::map(&file) }
        .map_err(|e| PareError::input(path, format!("cannot map: {e}")))?;
    let index = parse_shard_header(&mmap[..], path)?;
    Ok((mmap, index))
}

/// Parses a safetensors file's bytes (`bytes` is the whole file) into its header entries,
/// checking every tensor's byte range against the file and its dtype × shape; errors name
/// `path`. Used on the mapped file, and by the fuzz harness on arbitrary bytes.
pub fn parse_shard_header(mmap: &[u8], path: &Path) -> Result<ShardIndex> {
    let len = mmap.len();
    if len < 8 {
        return Err(PareError::input(
            path,
            format!("truncated safetensors file ({len} bytes)"),
        ));
    }
    let (n, meta) = SafeTensors::read_metadata(mmap).map_err(|e| {
        let mut field = [0u8; 8];
        field.copy_from_slice(&mmap[..8]);
        let claimed = u64::from_le_bytes(field);
        let msg = match e {
            safetensors::SafeTensorError::InvalidHeaderLength
            | safetensors::SafeTensorError::HeaderTooLarge => format!(
                "invalid safetensors header: its length field claims {claimed} header bytes, \
                 but the file holds {len} bytes"
            ),
            safetensors::SafeTensorError::MetadataIncompleteBuffer => format!(
                "invalid safetensors header: its tensor data does not end at the end of the \
                 file ({len} bytes); the file is truncated or padded"
            ),
            e => format!("invalid safetensors header: {e}"),
        };
        PareError::input(path, msg)
    })?;
    let data_start = 8 + n;
    let mut out = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let (s, e) = info.data_offsets;
        let start = data_start.checked_add(s);
        let end = data_start.checked_add(e);
        let numel: Option<usize> = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let want = numel
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|b| b.div_ceil(8));
        match (start, end) {
            (Some(start), Some(end))
                if start <= end && end <= mmap.len() && Some(end - start) == want =>
            {
                out.insert(name, (info.dtype, info.shape.clone(), start, end));
            }
            _ => {
                return Err(PareError::input(
                    path,
                    format!(
                        "tensor `{name}` claims bytes {s}..{e} after the header, but the file holds {} data bytes",
                        mmap.len() - data_start
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Parses a `model.safetensors.index.json` (`text`, read from `index`) into its weight map,
/// tensor name → shard file name, each name checked to stay inside the checkpoint directory.
/// Used by [`TensorStore::open`], and by the fuzz harness on arbitrary text.
pub fn parse_index(text: &str, index: &Path) -> Result<BTreeMap<String, String>> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| PareError::input(index, format!("malformed JSON: {e}")))?;
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(PareError::input(
            index,
            "`weight_map` is missing or not an object",
        ));
    };
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let Some(file) = file.as_str() else {
            return Err(PareError::input(
                index,
                format!("weight_map.{name}: expected a file name string"),
            ));
        };
        check_shard_name(file)
            .map_err(|m| PareError::input(index, format!("weight_map.{name}: {m}")))?;
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

impl TensorStore {
    /// Opens the checkpoint in `dir`: `model.safetensors` if present, else the shard index.
    pub fn open(dir: &Path) -> Result<TensorStore> {
        if !dir.is_dir() {
            return Err(PareError::input(dir, "checkpoint directory does not exist"));
        }
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let mut store = TensorStore {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
            check_finite: !ALLOW_NON_FINITE.load(std::sync::atomic::Ordering::Relaxed),
            non_finite: Default::default(),
        };
        if single.is_file() {
            let (mmap, tensors) = map_shard(&single)?;
            store.shards.push(Shard { path: single, mmap });
            for (name, (dtype, shape, start, end)) in tensors {
                store.tensors.insert(
                    name,
                    Entry {
                        shard: 0,
                        dtype,
                        shape,
                        start,
                        end,
                    },
                );
            }
            return Ok(store);
        }
        if !index.is_file() {
            return Err(PareError::input(
                dir,
                format!("no weights: neither {SINGLE_FILE} nor {INDEX_FILE} is in the directory"),
            ));
        }
        let text = std::fs::read_to_string(&index)
            .map_err(|e| PareError::input(&index, format!("cannot read: {e}")))?;
        let map = parse_index(&text, &index)?;
        let mut shard_ids: HashMap<String, usize> = HashMap::new();
        let mut shard_tensors = Vec::new();
        // Sorted by file name so shard numbering is deterministic.
        let mut files: Vec<&str> = map.values().map(String::as_str).collect();
        files.sort_unstable();
        files.dedup();
        for file in files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(PareError::input(
                    &index,
                    format!("shard `{file}` listed in weight_map is missing"),
                ));
            }
            let (mmap, tensors) = map_shard(&path)?;
            shard_ids.insert(file.to_string(), store.shards.len());
            store.shards.push(Shard { path, mmap });
            shard_tensors.push(tensors);
        }
        for (name, file) in &map {
            let Some(&id) = shard_ids.get(file.as_str()) else {
                return Err(PareError::Internal(format!(
                    "shard `{file}` was not opened"
                )));
            };
            let Some((dtype, shape, start, end)) = shard_tensors[id].remove(name) else {
                return Err(PareError::input(
                    &store.shards[id].path,
                    format!(
                        "tensor `{name}` is listed in {INDEX_FILE} but not stored in this shard"
                    ),
                ));
            };
            store.tensors.insert(
                name.clone(),
                Entry {
                    shard: id,
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok(store)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// True when the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Dtype, shape and file of `name`.
    pub fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|e| TensorInfo {
            dtype: e.dtype,
            shape: e.shape.clone(),
            file: self.shards[e.shard].path.clone(),
        })
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.tensors.get(name).ok_or_else(|| {
            PareError::input(
                &self.dir,
                format!("tensor `{name}` is not in the checkpoint"),
            )
        })
    }

    /// The file holding `name` (the directory when it is absent), for error messages.
    pub fn file_of(&self, name: &str) -> PathBuf {
        match self.tensors.get(name) {
            Some(e) => self.shards[e.shard].path.clone(),
            None => self.dir.clone(),
        }
    }

    /// The stored bytes of `name` (little-endian, possibly unaligned), its dtype and shape.
    pub fn read_raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let e = self.entry(name)?;
        Ok((
            e.dtype,
            e.shape.clone(),
            &self.shards[e.shard].mmap[e.start..e.end],
        ))
    }

    /// Drops the mapped pages of `name` from the process's resident set once its bytes were
    /// copied out, so streaming holds one block, not every block read so far. The pages stay in
    /// the page cache and fault back in from the file on the next read.
    fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Some(e) = self.tensors.get(name) {
            // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED discards no data:
            // a later access re-reads the same bytes from the file. Best effort; errors ignored.
            let _ = unsafe {
                self.shards[e.shard].mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    e.start,
                    e.end - e.start,
                )
            };
        }
    }

    /// `name` converted to f32 (from BF16, F16, F32 or F64).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, bytes) = self.read_raw(name)?;
        let data = bytes_to_f32(bytes, dtype).ok_or_else(|| {
            PareError::input(
                self.file_of(name),
                format!(
                    "tensor `{name}` has dtype {dtype:?}; expected a float (BF16, F16, F32, F64)"
                ),
            )
        })?;
        self.release(name);
        self.check_finite(name, &data)?;
        Ok((shape, data))
    }

    /// Reads NaN/Inf as damage: an error naming the file and the tensor, or, when allowed, a
    /// record for the report.
    pub fn check_finite(&self, name: &str, data: &[f32]) -> Result<()> {
        let bad = data
            .par_iter()
            .with_min_len(CONVERT_MIN_LEN)
            .filter(|v| !v.is_finite())
            .count();
        if bad == 0 {
            return Ok(());
        }
        if self.check_finite {
            let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(PareError::input(
                self.file_of(name),
                format!(
                    "tensor `{name}` holds {bad} NaN/Inf value(s) (first at element {first}): the \
                     weights are damaged; pass --allow-non-finite to go on anyway"
                ),
            ));
        }
        if let Ok(mut m) = self.non_finite.lock() {
            m.insert(name.to_string(), bad);
        }
        Ok(())
    }

    /// Whether NaN/Inf weights are refused (see [`allow_non_finite`]); `inspect` turns it off
    /// to count them.
    pub fn set_check_finite(&mut self, check: bool) {
        self.check_finite = check;
    }

    /// Tensors read so far that held NaN/Inf (only when allowed), with their counts.
    pub fn non_finite_tensors(&self) -> Vec<(String, usize)> {
        self.non_finite
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// `name` converted to i64 (from any integer dtype: I8–I64, U8–U32).
    pub fn read_int(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dtype, shape, bytes) = self.read_raw(name)?;
        let data = bytes_to_i64(bytes, dtype).ok_or_else(|| {
            PareError::input(
                self.file_of(name),
                format!("tensor `{name}` has dtype {dtype:?}; expected an integer"),
            )
        })?;
        self.release(name);
        Ok((shape, data))
    }

    /// The dtype of most float parameters (by element count); F32 when there is none.
    pub fn main_float_dtype(&self) -> Dtype {
        let mut counts: BTreeMap<Dtype, usize> = BTreeMap::new();
        for e in self.tensors.values().filter(|e| is_float(e.dtype)) {
            *counts.entry(e.dtype).or_default() += e.shape.iter().product::<usize>();
        }
        counts
            .into_iter()
            .max_by_key(|&(d, n)| (n, d))
            .map(|(d, _)| d)
            .unwrap_or(Dtype::F32)
    }

    /// Sum of all tensors' stored bytes.
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }

    /// Number of shard files.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Little-endian float bytes to f32; `None` for a non-float dtype.
pub fn bytes_to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    // In parallel: a block's weights are read between two forwards, and one thread converting
    // (and faulting in the mapped source and the new buffer) left the other core idle.
    Some(match dtype {
        Dtype::F32 => bytes
            .par_chunks_exact(4)
            .with_min_len(CONVERT_MIN_LEN)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .par_chunks_exact(2)
            .with_min_len(CONVERT_MIN_LEN)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .par_chunks_exact(2)
            .with_min_len(CONVERT_MIN_LEN)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .par_chunks_exact(8)
            .with_min_len(CONVERT_MIN_LEN)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Values converted per rayon task at least (small tensors stay on one thread).
const CONVERT_MIN_LEN: usize = 1 << 16;

/// Little-endian integer bytes to i64; `None` for a non-integer dtype.
pub fn bytes_to_i64(bytes: &[u8], dtype: Dtype) -> Option<Vec<i64>> {
    Some(match dtype {
        Dtype::U8 => bytes.iter().map(|&b| b as i64).collect(),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        Dtype::I16 => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        Dtype::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        Dtype::U32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models/tiny-llama");

    /// A minimal safetensors file by hand: header JSON then data.
    fn write_st(path: &Path, header: &str, data: &[u8]) {
        let mut f = File::create(path).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(data).unwrap();
    }

    fn err(dir: &Path) -> String {
        TensorStore::open(dir).unwrap_err().to_string()
    }

    #[test]
    fn reads_tiny_llama() {
        let s = TensorStore::open(Path::new(TINY)).unwrap();
        assert_eq!(s.names().count(), 75);
        let names: Vec<&str> = s.names().collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        let i = s.info("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!((i.dtype, i.shape.clone()), (Dtype::BF16, vec![320, 864]));
        assert!(i.file.ends_with("model.safetensors"));
        let (shape, v) = s.read_f32("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!(shape, vec![320, 864]);
        let (_, _, raw) = s.read_raw("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!(half::bf16::from_le_bytes([raw[2], raw[3]]).to_f32(), v[1]);
        assert_eq!(s.main_float_dtype(), Dtype::BF16);
        assert_eq!(s.total_bytes(), 23_440_000);
        assert!(
            s.read_f32("nope")
                .unwrap_err()
                .to_string()
                .contains("`nope`")
        );
    }

    #[test]
    fn sharded_index_and_conversions() {
        let d = tempfile::tempdir().unwrap();
        let a: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write_st(
            &d.path().join("a.safetensors"),
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &a,
        );
        let b: Vec<u8> = [
            half::f16::from_f32(0.5).to_le_bytes(),
            (-3i16).to_le_bytes(),
        ]
        .concat();
        write_st(
            &d.path().join("b.safetensors"),
            r#"{"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"i":{"dtype":"I16","shape":[1],"data_offsets":[2,4]}}"#,
            &b,
        );
        std::fs::write(
            d.path().join(INDEX_FILE),
            r#"{"metadata":{"total_size":12},"weight_map":{"x":"a.safetensors","h":"b.safetensors","i":"b.safetensors"}}"#,
        )
        .unwrap();
        let s = TensorStore::open(d.path()).unwrap();
        assert_eq!(s.shard_count(), 2);
        assert_eq!(s.read_f32("x").unwrap(), (vec![2], vec![1.5, -2.0]));
        assert_eq!(s.read_f32("h").unwrap().1, vec![0.5]);
        assert_eq!(s.read_int("i").unwrap().1, vec![-3]);
        let e = s.read_f32("i").unwrap_err().to_string();
        assert!(e.contains("b.safetensors") && e.contains("I16"), "{e}");
        assert_eq!(s.main_float_dtype(), Dtype::F32);
    }

    #[test]
    fn rejects_bad_directories() {
        let d = tempfile::tempdir().unwrap();
        assert!(err(&d.path().join("missing")).contains("does not exist"));
        assert!(err(d.path()).contains("neither model.safetensors"));
        std::fs::write(d.path().join(INDEX_FILE), "{not json").unwrap();
        assert!(err(d.path()).contains("malformed JSON"));
        for bad in [
            "../x.safetensors",
            "/etc/x.safetensors",
            "sub/../../x.safetensors",
        ] {
            std::fs::write(
                d.path().join(INDEX_FILE),
                format!(r#"{{"weight_map":{{"t":"{bad}"}}}}"#),
            )
            .unwrap();
            let e = err(d.path());
            assert!(e.contains("outside the checkpoint"), "{bad}: {e}");
        }
        std::fs::write(
            d.path().join(INDEX_FILE),
            r#"{"weight_map":{"t":"gone.safetensors"}}"#,
        )
        .unwrap();
        assert!(err(d.path()).contains("`gone.safetensors` listed in weight_map is missing"));
        // A shard that lacks a tensor the index promises.
        write_st(
            &d.path().join("gone.safetensors"),
            r#"{"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            &[7],
        );
        assert!(err(d.path()).contains("`t` is listed"));
    }

    #[test]
    fn rejects_truncated_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SINGLE_FILE);
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert!(err(d.path()).contains("truncated"));
        // The header claims 8 data bytes; the file holds 4.
        write_st(
            &p,
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 4],
        );
        assert!(err(d.path()).contains("invalid safetensors header"));
        // Header length larger than the file.
        let mut f = File::create(&p).unwrap();
        f.write_all(&1000u64.to_le_bytes()).unwrap();
        f.write_all(b"{}").unwrap();
        drop(f);
        assert!(err(d.path()).contains("model.safetensors"));
    }
}
