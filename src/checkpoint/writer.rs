//! `CheckpointWriter`: writes a Hugging Face checkpoint directory — safetensors shards split by
//! the hub's greedy rule, `model.safetensors.index.json`, config.json, tokenizer and extra files —
//! into a temporary sibling folder that is renamed into place only when complete.
//!
//! Output is deterministic: tensors inside a shard are ordered by (element size descending, name)
//! as safetensors does, JSON keys are sorted, and nothing depends on time. Tensors are buffered
//! until their shard is full, so peak memory is one shard.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::checkpoint::formats::OutTensor;
use crate::checkpoint::reader::{INDEX_FILE, SINGLE_FILE};
use crate::error::{PareError, Result};

/// The hub's default shard limit: 5 GB, decimal.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Spare header bytes left in each shard so the metadata given to `finish` can be written in place.
const HEADER_RESERVE: usize = 4096;

/// Writes one output checkpoint; see the module docs.
#[derive(Debug)]
pub struct CheckpointWriter {
    out: PathBuf,
    tmp: PathBuf,
    force: bool,
    max_shard_bytes: u64,
    pending: Vec<(String, OutTensor)>,
    pending_bytes: u64,
    /// Written shards: (partial file, header entries in file order).
    shards: Vec<(PathBuf, Vec<Slot>)>,
    names: std::collections::HashSet<String>,
    total_size: u64,
    finished: bool,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> PareError {
    PareError::io(format!("{what} {}", path.display()), e)
}

fn set_mode_644(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io_err("setting permissions of", path, e))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_err("writing", path, e))?;
    set_mode_644(path)
}

/// Canonical form of a path that may not exist yet (its parent must).
fn canonical_target(path: &Path) -> Option<PathBuf> {
    if let Ok(c) = path.canonicalize() {
        return Some(c);
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// Header entry of one tensor: name, dtype, shape, byte length.
type Slot = (String, Dtype, Vec<usize>, usize);

fn slots(tensors: &[(String, OutTensor)]) -> Vec<Slot> {
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype, t.shape.clone(), t.bytes.len()))
        .collect()
}

/// The safetensors header (JSON, space-padded to at least `min_len` and so that the data starts
/// at a multiple of 8) for tensors laid out in the order given.
fn header(
    tensors: &[Slot],
    metadata: Option<&BTreeMap<String, String>>,
    min_len: usize,
) -> Vec<u8> {
    let q = |x: &str| serde_json::to_string(x).unwrap_or_default();
    let mut items = Vec::with_capacity(tensors.len() + 1);
    if let Some(m) = metadata {
        let kv: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("{}:{}", q(k), q(v)))
            .collect();
        items.push(format!("\"__metadata__\":{{{}}}", kv.join(",")));
    }
    let mut off = 0usize;
    for (name, dtype, shape, len) in tensors {
        let dt = serde_json::to_string(dtype).unwrap_or_default();
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let end = off + len;
        items.push(format!(
            "{}:{{\"dtype\":{dt},\"shape\":[{}],\"data_offsets\":[{off},{end}]}}",
            q(name),
            shape.join(",")
        ));
        off = end;
    }
    let s = format!("{{{}}}", items.join(","));
    let len = (s.len().max(min_len) + 8).div_ceil(8) * 8 - 8;
    let mut b = s.into_bytes();
    b.resize(len, b' ');
    b
}

/// Orders a shard's tensors like safetensors: larger elements first (keeps alignment), then name.
fn order(tensors: &mut [(String, OutTensor)]) {
    tensors.sort_by(|a, b| {
        b.1.dtype
            .bitsize()
            .cmp(&a.1.dtype.bitsize())
            .then_with(|| a.0.cmp(&b.0))
    });
}

fn write_shard(path: &Path, tensors: &[(String, OutTensor)], head: &[u8]) -> Result<()> {
    let f = File::create(path).map_err(|e| io_err("creating", path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let res = (|| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(head)?;
        for (_, t) in tensors {
            w.write_all(&t.bytes)?;
        }
        w.flush()?;
        w.get_ref().sync_all()
    })();
    res.map_err(|e| io_err("writing", path, e))?;
    set_mode_644(path)
}

impl CheckpointWriter {
    /// Prepares to write `out`. Refuses when `out` is `input_dir` or inside it (or contains it),
    /// or exists and `force` is false. Work happens in `.<name>.pare-tmp-<pid>` beside `out`.
    pub fn create(out: &Path, input_dir: &Path, force: bool, max_shard_bytes: u64) -> Result<Self> {
        let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
            return Err(PareError::Usage(format!(
                "output path {} has no usable folder name",
                out.display()
            )));
        };
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        let input = input_dir
            .canonicalize()
            .map_err(|e| io_err("resolving", input_dir, e))?;
        let target = canonical_target(out).ok_or_else(|| {
            PareError::Usage(format!("cannot resolve output path {}", out.display()))
        })?;
        if target.starts_with(&input) || input.starts_with(&target) {
            return Err(PareError::Usage(format!(
                "output {} overlaps the input checkpoint {}; choose another folder",
                out.display(),
                input_dir.display()
            )));
        }
        if out.exists() && !force {
            return Err(PareError::Usage(format!(
                "output {} already exists; pass --force to replace it",
                out.display()
            )));
        }
        let tmp = parent.join(format!(".{name}.pare-tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err("removing stale", &tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            force,
            max_shard_bytes: max_shard_bytes.max(1),
            pending: Vec::new(),
            pending_bytes: 0,
            shards: Vec::new(),
            names: Default::default(),
            total_size: 0,
            finished: false,
        })
    }

    /// The temporary folder being written.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Adds a tensor. Flushes the current shard first when this tensor would overflow it.
    pub fn add(&mut self, name: String, t: OutTensor) -> Result<()> {
        let numel: usize = t.shape.iter().product();
        if (numel * t.dtype.bitsize()).div_ceil(8) != t.bytes.len() {
            return Err(PareError::Usage(format!(
                "tensor `{name}`: {} bytes do not match shape {:?} of {:?}",
                t.bytes.len(),
                t.shape,
                t.dtype
            )));
        }
        if !self.names.insert(name.clone()) {
            return Err(PareError::Usage(format!("tensor `{name}` written twice")));
        }
        let size = t.bytes.len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + size > self.max_shard_bytes {
            self.flush()?;
        }
        self.total_size += size;
        self.pending_bytes += size;
        self.pending.push((name, t));
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut tensors = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        order(&mut tensors);
        let path = self
            .tmp
            .join(format!("shard-{:05}.partial", self.shards.len() + 1));
        let sl = slots(&tensors);
        let head = header(&sl, None, header(&sl, None, 0).len() + HEADER_RESERVE);
        write_shard(&path, &tensors, &head)?;
        self.shards.push((path, sl));
        Ok(())
    }

    /// Rewrites the header of an already written shard with `metadata`: in place when it fits
    /// the reserved space, otherwise by copying the data behind a new header.
    fn restamp(
        path: &Path,
        dest: &Path,
        slots: &[Slot],
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut f = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("opening", path, e))?;
        let mut n = [0u8; 8];
        f.read_exact(&mut n)
            .map_err(|e| io_err("reading", path, e))?;
        let old_len = u64::from_le_bytes(n) as usize;
        let head = header(slots, Some(metadata), old_len);
        if head.len() == old_len {
            f.seek(SeekFrom::Start(8))
                .and_then(|_| f.write_all(&head))
                .and_then(|_| f.sync_all())
                .map_err(|e| io_err("writing", path, e))?;
            drop(f);
            std::fs::rename(path, dest).map_err(|e| io_err("renaming", path, e))?;
        } else {
            f.seek(SeekFrom::Start(8 + old_len as u64))
                .map_err(|e| io_err("reading", path, e))?;
            let mut o = File::create(dest).map_err(|e| io_err("creating", dest, e))?;
            o.write_all(&(head.len() as u64).to_le_bytes())
                .and_then(|_| o.write_all(&head))
                .and_then(|_| std::io::copy(&mut f, &mut o).map(|_| ()))
                .and_then(|_| o.sync_all())
                .map_err(|e| io_err("writing", dest, e))?;
            drop(f);
            std::fs::remove_file(path).map_err(|e| io_err("removing", path, e))?;
        }
        set_mode_644(dest)
    }

    /// Writes the last shard, names the shards, writes the index (when more than one shard),
    /// config.json (pretty, 2-space), copies `copy_files` that exist, writes `extra_files`, then
    /// moves the folder into place (replacing the old one only now, with `force`). `metadata`
    /// goes into every shard header; `format: pt` is added when absent.
    pub fn finish(
        mut self,
        config_json: &serde_json::Value,
        copy_files: &[PathBuf],
        extra_files: &[(String, Vec<u8>)],
        mut metadata: BTreeMap<String, String>,
    ) -> Result<PathBuf> {
        metadata
            .entry("format".into())
            .or_insert_with(|| "pt".into());
        let mut last = std::mem::take(&mut self.pending);
        order(&mut last);
        let n = self.shards.len() + usize::from(!last.is_empty() || self.shards.is_empty());
        let file_name = |i: usize| {
            if n == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{i:05}-of-{n:05}.safetensors")
            }
        };
        let mut weight_map = BTreeMap::new();
        for (i, (partial, sl)) in std::mem::take(&mut self.shards).into_iter().enumerate() {
            let dest = self.tmp.join(file_name(i + 1));
            Self::restamp(&partial, &dest, &sl, &metadata)?;
            for (name, ..) in sl {
                weight_map.insert(name, file_name(i + 1));
            }
        }
        if !last.is_empty() || n == 1 && weight_map.is_empty() {
            let dest = self.tmp.join(file_name(n));
            let sl = slots(&last);
            let head = header(
                &sl,
                Some(&metadata),
                header(&sl, None, 0).len() + HEADER_RESERVE,
            );
            write_shard(&dest, &last, &head)?;
            for (name, _) in &last {
                weight_map.insert(name.clone(), file_name(n));
            }
        }
        if n > 1 {
            let index = serde_json::json!({"metadata": {"total_size": self.total_size}, "weight_map": weight_map});
            let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
            write_file(&self.tmp.join(INDEX_FILE), text.as_bytes())?;
        }
        let cfg = serde_json::to_string_pretty(config_json).unwrap_or_default() + "\n";
        write_file(&self.tmp.join("config.json"), cfg.as_bytes())?;
        for src in copy_files.iter().filter(|p| p.is_file()) {
            let Some(fname) = src.file_name() else {
                continue;
            };
            let dest = self.tmp.join(fname);
            std::fs::copy(src, &dest).map_err(|e| io_err("copying", src, e))?;
            set_mode_644(&dest)?;
        }
        for (name, bytes) in extra_files {
            write_file(&self.tmp.join(name), bytes)?;
        }
        let old = if self.out.exists() {
            if !self.force {
                return Err(PareError::Usage(format!(
                    "output {} appeared while writing; not replacing it",
                    self.out.display()
                )));
            }
            let name = self
                .out
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("out");
            let old = self
                .tmp
                .with_file_name(format!(".{name}.pare-old-{}", std::process::id()));
            std::fs::rename(&self.out, &old).map_err(|e| io_err("moving aside", &self.out, e))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.tmp, &self.out) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &self.out);
            }
            return Err(io_err("renaming into", &self.out, e));
        }
        self.finished = true;
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(|e| io_err("removing the replaced", &old, e))?;
        }
        Ok(self.out.clone())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Bytes of one element of `dtype` rounded up (helper for size estimates).
pub fn element_bytes(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}
