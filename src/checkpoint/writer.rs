//! `CheckpointWriter`: writes a Hugging Face checkpoint directory — safetensors shards split by
//! the hub's greedy rule, `model.safetensors.index.json`, config.json, tokenizer and extra files —
//! into a temporary sibling folder that is renamed into place only when complete.
//!
//! Output is deterministic: tensors inside a shard are ordered by (element size descending, name)
//! as safetensors does, JSON keys are sorted, and nothing depends on time.
//!
//! Writing streams: [`CheckpointWriter::add`] appends the tensor's bytes to the open shard's
//! temporary data file (`shard-NNNNN.data`) at once and keeps only its header entry. When the
//! shard is full it is assembled as header + data copied in order, in 1 MiB chunks, into
//! `shard-NNNNN.partial` (with spare header room, so `finish` can stamp the metadata in place), and
//! the data file is removed. Memory use is therefore one tensor plus a copy buffer, whatever the
//! shard size; disk use is at most the output plus one shard.
//!
//! Test hook: when the environment variable `PARE_FAULT_WRITE_LIMIT` holds a byte count, the
//! writer fails with an [`PareError::Io`] error ("No space left on device (injected)") naming the
//! file being written as soon as it has written that many bytes in all (tensor data, shards,
//! index, config and copied files). It simulates a full disk; leave it unset in normal use.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::checkpoint::formats::OutTensor;
use crate::checkpoint::reader::{INDEX_FILE, SINGLE_FILE};
use crate::error::{PareError, Result};

/// The hub's default shard limit: 5 GB, decimal.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Spare header bytes left in each shard so the metadata given to `finish` can be written in place.
const HEADER_RESERVE: usize = 4096;

/// Environment variable of the full-disk test hook (see the module docs).
pub const FAULT_WRITE_LIMIT_ENV: &str = "PARE_FAULT_WRITE_LIMIT";

/// Chunk size of the copy from a shard's data file into the shard.
const COPY_CHUNK: usize = 1 << 20;

/// Bytes written so far, against the optional injected limit.
#[derive(Debug, Default)]
struct Budget {
    written: u64,
    limit: Option<u64>,
}

impl Budget {
    fn from_env() -> Result<Self> {
        let limit = match std::env::var(FAULT_WRITE_LIMIT_ENV) {
            Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                PareError::Usage(format!(
                    "{FAULT_WRITE_LIMIT_ENV}={v}: expected a byte count (test hook)"
                ))
            })?),
            Err(_) => None,
        };
        Ok(Self { written: 0, limit })
    }
}

/// A writer that counts bytes into a [`Budget`] and fails once its injected limit is reached.
struct Counted<'a, W: Write> {
    inner: W,
    budget: &'a mut Budget,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut n = buf.len();
        if let Some(limit) = self.budget.limit {
            let left = limit.saturating_sub(self.budget.written);
            if left == 0 && n > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device (injected)",
                ));
            }
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let n = self.inner.write(&buf[..n])?;
        self.budget.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The shard being filled: its data file and the header entries of the tensors in it.
#[derive(Debug)]
struct OpenShard {
    path: PathBuf,
    data: BufWriter<File>,
    slots: Vec<Slot>,
    bytes: u64,
}

/// Writes one output checkpoint; see the module docs.
#[derive(Debug)]
pub struct CheckpointWriter {
    out: PathBuf,
    tmp: PathBuf,
    /// Temporary folders of interrupted earlier runs for the same output, removed by `create`.
    stale: Vec<PathBuf>,
    force: bool,
    max_shard_bytes: u64,
    open: Option<OpenShard>,
    /// Written shards: (partial file, header entries in file order).
    shards: Vec<(PathBuf, Vec<Slot>)>,
    names: std::collections::HashSet<String>,
    total_size: u64,
    budget: Budget,
    finished: bool,
    /// When recording: every tensor added since the last [`CheckpointWriter::take_journal`].
    journal: Option<Vec<(String, OutTensor)>>,
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

fn write_file(path: &Path, bytes: &[u8], budget: &mut Budget) -> Result<()> {
    let f = File::create(path).map_err(|e| io_err("creating", path, e))?;
    let mut w = Counted { inner: f, budget };
    w.write_all(bytes)
        .and_then(|_| w.flush())
        .map_err(|e| io_err("writing", path, e))?;
    set_mode_644(path)
}

/// Copies `src` to `dest` in chunks through the budget.
fn copy_file(src: &Path, dest: &Path, budget: &mut Budget) -> Result<()> {
    let mut i = File::open(src).map_err(|e| io_err("copying", src, e))?;
    let o = File::create(dest).map_err(|e| io_err("creating", dest, e))?;
    let mut w = Counted { inner: o, budget };
    std::io::copy(&mut i, &mut w)
        .and_then(|_| w.flush())
        .map_err(|e| io_err("writing", dest, e))?;
    set_mode_644(dest)
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

/// Header entry of one tensor: name, dtype, shape, byte length, offset in the shard's data file.
pub(crate) type Slot = (String, Dtype, Vec<usize>, usize, u64);

/// The safetensors header (JSON, space-padded to at least `min_len` and so that the data starts
/// at a multiple of 8) for tensors laid out in the order given.
pub(crate) fn header(
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
    for (name, dtype, shape, len, _) in tensors {
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
fn order(tensors: &mut [Slot]) {
    tensors.sort_by(|a, b| {
        b.1.bitsize()
            .cmp(&a.1.bitsize())
            .then_with(|| a.0.cmp(&b.0))
    });
}

/// Writes the shard `path`: header `head`, then each slot's bytes copied from `data` (the shard's
/// data file, open for reading) in slot order, in chunks.
fn write_shard(
    path: &Path,
    data: &mut File,
    slots: &[Slot],
    head: &[u8],
    budget: &mut Budget,
) -> Result<()> {
    let f = File::create(path).map_err(|e| io_err("creating", path, e))?;
    let mut w = Counted {
        inner: BufWriter::with_capacity(COPY_CHUNK, f),
        budget,
    };
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut read_err = None;
    let res = (|| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(head)?;
        for (_, _, _, len, off) in slots {
            if let Err(e) = data.seek(SeekFrom::Start(*off)) {
                read_err = Some(e);
                return Ok(());
            }
            let mut left = *len;
            while left > 0 {
                let n = left.min(buf.len());
                if let Err(e) = data.read_exact(&mut buf[..n]) {
                    read_err = Some(e);
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
                left -= n;
            }
        }
        w.flush()?;
        w.inner.get_ref().sync_all()
    })();
    res.map_err(|e| io_err("writing", path, e))?;
    if let Some(e) = read_err {
        return Err(PareError::io(
            format!("reading back the tensor data for {}", path.display()),
            e,
        ));
    }
    set_mode_644(path)
}

/// Removes `.<name>.pare-tmp-<pid>` and `.<name>.pare-old-<pid>` folders in `parent` whose
/// process no longer runs (a killed earlier run); returns them. Without `/proc` (not Linux)
/// nothing is removed, as liveness cannot be checked.
fn remove_stale_temps(parent: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return Ok(Vec::new());
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        let pid = [".pare-tmp-", ".pare-old-"].iter().find_map(|tag| {
            f.strip_prefix('.')
                .and_then(|r| r.strip_prefix(name))
                .and_then(|r| r.strip_prefix(tag))
                .and_then(|p| p.parse::<u32>().ok())
        });
        let Some(pid) = pid else { continue };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = e.path();
        std::fs::remove_dir_all(&path).map_err(|e| io_err("removing stale", &path, e))?;
        removed.push(path);
    }
    Ok(removed)
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
        let stale = remove_stale_temps(parent, name)?;
        let tmp = parent.join(format!(".{name}.pare-tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err("removing stale", &tmp, e))?;
        }
        let budget = Budget::from_env()?;
        std::fs::create_dir(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            stale,
            force,
            max_shard_bytes: max_shard_bytes.max(1),
            open: None,
            shards: Vec::new(),
            names: Default::default(),
            total_size: 0,
            budget,
            finished: false,
            journal: None,
        })
    }

    /// The temporary folder being written.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Temporary folders that interrupted earlier runs left for this output, removed when this
    /// writer was created.
    pub fn removed_stale(&self) -> &[PathBuf] {
        &self.stale
    }

    /// Adds a tensor: closes the current shard first when this tensor would overflow it, then
    /// appends the bytes to the open shard's data file (nothing but the header entry is kept).
    /// Starts recording every added tensor (for the resume state).
    pub fn record(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// The tensors added since recording started or the last call, in order.
    pub fn take_journal(&mut self) -> Vec<(String, OutTensor)> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn add(&mut self, name: String, t: OutTensor) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            j.push((name.clone(), t.clone()));
        }
        let numel: usize = t.shape.iter().product();
        if (numel * t.dtype.bitsize()).div_ceil(8) != t.bytes.len() {
            return Err(PareError::Internal(format!(
                "tensor `{name}`: {} bytes do not match shape {:?} of {:?}",
                t.bytes.len(),
                t.shape,
                t.dtype
            )));
        }
        if !self.names.insert(name.clone()) {
            return Err(PareError::Internal(format!(
                "tensor `{name}` written twice"
            )));
        }
        let size = t.bytes.len() as u64;
        if self
            .open
            .as_ref()
            .is_some_and(|o| !o.slots.is_empty() && o.bytes + size > self.max_shard_bytes)
        {
            self.flush()?;
        }
        let open = match &mut self.open {
            Some(o) => o,
            None => {
                let path = self
                    .tmp
                    .join(format!("shard-{:05}.data", self.shards.len() + 1));
                let f = File::create(&path).map_err(|e| io_err("creating", &path, e))?;
                self.open.insert(OpenShard {
                    path,
                    data: BufWriter::with_capacity(COPY_CHUNK, f),
                    slots: Vec::new(),
                    bytes: 0,
                })
            }
        };
        let mut w = Counted {
            inner: &mut open.data,
            budget: &mut self.budget,
        };
        w.write_all(&t.bytes)
            .map_err(|e| io_err("writing", &open.path, e))?;
        open.slots
            .push((name, t.dtype, t.shape, t.bytes.len(), open.bytes));
        open.bytes += size;
        self.total_size += size;
        Ok(())
    }

    /// Closes the open shard: flushes its data file and assembles it behind its header, either
    /// as `dest` with `metadata` (the last shard) or as the next `.partial` file with spare
    /// header room. Returns the header entries in file order, or `None` when no shard was open.
    fn close_open(
        &mut self,
        dest: Option<(&Path, &BTreeMap<String, String>)>,
    ) -> Result<Option<(PathBuf, Vec<Slot>)>> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let OpenShard {
            path: data_path,
            data,
            mut slots,
            ..
        } = open;
        data.into_inner()
            .map_err(|e| io_err("writing", &data_path, e.into_error()))?;
        order(&mut slots);
        let plain = header(&slots, None, 0).len() + HEADER_RESERVE;
        let (path, head) = match dest {
            Some((d, meta)) => (d.to_path_buf(), header(&slots, Some(meta), plain)),
            None => (
                self.tmp
                    .join(format!("shard-{:05}.partial", self.shards.len() + 1)),
                header(&slots, None, plain),
            ),
        };
        let mut data = File::open(&data_path).map_err(|e| io_err("reading back", &data_path, e))?;
        write_shard(&path, &mut data, &slots, &head, &mut self.budget)?;
        drop(data);
        std::fs::remove_file(&data_path).map_err(|e| io_err("removing", &data_path, e))?;
        Ok(Some((path, slots)))
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(done) = self.close_open(None)? {
            self.shards.push(done);
        }
        Ok(())
    }

    /// Rewrites the header of an already written shard with `metadata`: in place when it fits
    /// the reserved space, otherwise by copying the data behind a new header.
    fn restamp(
        path: &Path,
        dest: &Path,
        slots: &[Slot],
        metadata: &BTreeMap<String, String>,
        budget: &mut Budget,
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
                .map_err(|e| io_err("writing", path, e))?;
            let mut w = Counted {
                inner: &mut f,
                budget,
            };
            w.write_all(&head)
                .and_then(|_| f.sync_all())
                .map_err(|e| io_err("writing", path, e))?;
            drop(f);
            std::fs::rename(path, dest).map_err(|e| io_err("renaming", path, e))?;
        } else {
            f.seek(SeekFrom::Start(8 + old_len as u64))
                .map_err(|e| io_err("reading", path, e))?;
            let o = File::create(dest).map_err(|e| io_err("creating", dest, e))?;
            let mut w = Counted {
                inner: BufWriter::with_capacity(COPY_CHUNK, o),
                budget,
            };
            w.write_all(&(head.len() as u64).to_le_bytes())
                .and_then(|_| w.write_all(&head))
                .and_then(|_| std::io::copy(&mut f, &mut w).map(|_| ()))
                .and_then(|_| w.flush())
                .and_then(|_| w.inner.get_ref().sync_all())
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
        self,
        config_json: &serde_json::Value,
        copy_files: &[PathBuf],
        extra_files: &[(String, Vec<u8>)],
        metadata: BTreeMap<String, String>,
    ) -> Result<PathBuf> {
        self.finish_with(config_json, copy_files, extra_files, metadata, &mut |_| {
            Ok(())
        })
    }

    /// [`CheckpointWriter::finish`], running `post` on the complete temporary folder before it
    /// is moved into place (to write files derived from the checkpoint, such as a GGUF); an
    /// error from `post` leaves nothing behind.
    pub fn finish_with(
        mut self,
        config_json: &serde_json::Value,
        copy_files: &[PathBuf],
        extra_files: &[(String, Vec<u8>)],
        mut metadata: BTreeMap<String, String>,
        post: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        metadata
            .entry("format".into())
            .or_insert_with(|| "pt".into());
        if self.open.is_none() && self.shards.is_empty() {
            // No tensor at all: still write one (empty) shard.
            let path = self.tmp.join("shard-00001.data");
            let f = File::create(&path).map_err(|e| io_err("creating", &path, e))?;
            self.open = Some(OpenShard {
                path,
                data: BufWriter::new(f),
                slots: Vec::new(),
                bytes: 0,
            });
        }
        let n = self.shards.len() + usize::from(self.open.is_some());
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
            Self::restamp(&partial, &dest, &sl, &metadata, &mut self.budget)?;
            for (name, ..) in sl {
                weight_map.insert(name, file_name(i + 1));
            }
        }
        let dest = self.tmp.join(file_name(n));
        if let Some((_, sl)) = self.close_open(Some((&dest, &metadata)))? {
            for (name, ..) in sl {
                weight_map.insert(name, file_name(n));
            }
        }
        if n > 1 {
            let index = serde_json::json!({"metadata": {"total_size": self.total_size}, "weight_map": weight_map});
            let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
            write_file(
                &self.tmp.join(INDEX_FILE),
                text.as_bytes(),
                &mut self.budget,
            )?;
        }
        // Bare NaN/Infinity of the input config (fields pare does not use) are written back.
        let cfg = crate::json::to_string_pretty(config_json) + "\n";
        write_file(
            &self.tmp.join("config.json"),
            cfg.as_bytes(),
            &mut self.budget,
        )?;
        for src in copy_files.iter().filter(|p| p.is_file()) {
            let Some(fname) = src.file_name() else {
                continue;
            };
            let dest = self.tmp.join(fname);
            copy_file(src, &dest, &mut self.budget)?;
        }
        for (name, bytes) in extra_files {
            write_file(&self.tmp.join(name), bytes, &mut self.budget)?;
        }
        post(&self.tmp)?;
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
