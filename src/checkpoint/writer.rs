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
use std::sync::Arc;

use safetensors::Dtype;

use crate::checkpoint::budget::{Budget, Counted};
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

/// The shard being filled: its data file and the header entries of the tensors in it.
#[derive(Debug)]
struct OpenShard {
    path: PathBuf,
    data: BufWriter<File>,
    slots: Vec<Slot>,
    /// Bytes of the shard's tensors.
    bytes: u64,
    /// Bytes written to its data file (the tensors not stored elsewhere).
    bytes_data: u64,
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

/// A tensor already on disk in a file the caller keeps until [`CheckpointWriter::finish`] (the
/// resume state's per-block tensor files): its bytes are `len` bytes at `offset` of `path`.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub path: Arc<PathBuf>,
    pub offset: u64,
    pub len: usize,
}

/// Header entry of one tensor: name, dtype, shape, byte length, and where its bytes are: at
/// `offset` of the shard's data file (`file: None`) or of a caller's file.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    offset: u64,
    file: Option<Arc<PathBuf>>,
}

impl Slot {
    /// A header entry only (for laying out a file written elsewhere, such as the gradient
    /// artefact).
    pub(crate) fn entry(name: String, dtype: Dtype, shape: Vec<usize>, len: usize) -> Self {
        Self {
            name,
            dtype,
            shape,
            len,
            offset: 0,
            file: None,
        }
    }
}

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
    for t in tensors {
        let dt = serde_json::to_string(&t.dtype).unwrap_or_default();
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let end = off + t.len;
        items.push(format!(
            "{}:{{\"dtype\":{dt},\"shape\":[{}],\"data_offsets\":[{off},{end}]}}",
            q(&t.name),
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
        b.dtype
            .bitsize()
            .cmp(&a.dtype.bitsize())
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Writes the shard `path`: header `head`, then each slot's bytes in slot order, in chunks,
/// copied from `data` (the shard's data file `data_path`, open for reading) or from the slot's
/// own file.
fn write_shard(
    path: &Path,
    (data_path, data): (&Path, &mut File),
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
    // The caller's file read last, kept open for the next slot in it.
    let mut other: Option<(Arc<PathBuf>, File)> = None;
    let mut read_err: Option<(PathBuf, std::io::Error)> = None;
    let res = (|| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(head)?;
        for s in slots {
            let from = s.file.as_deref().map_or(data_path, PathBuf::as_path);
            let src: &mut File = match &s.file {
                None => &mut *data,
                Some(p) => {
                    if other.as_ref().is_none_or(|(q, _)| q != p) {
                        match File::open(p.as_path()) {
                            Ok(f) => other = Some((p.clone(), f)),
                            Err(e) => {
                                read_err = Some((from.to_path_buf(), e));
                                return Ok(());
                            }
                        }
                    }
                    match other.as_mut() {
                        Some((_, f)) => f,
                        None => return Ok(()),
                    }
                }
            };
            if let Err(e) = src.seek(SeekFrom::Start(s.offset)) {
                read_err = Some((from.to_path_buf(), e));
                return Ok(());
            }
            let mut left = s.len;
            while left > 0 {
                let n = left.min(buf.len());
                if let Err(e) = src.read_exact(&mut buf[..n]) {
                    read_err = Some((from.to_path_buf(), e));
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
    if let Some((from, e)) = read_err {
        return Err(PareError::io(
            format!(
                "reading back the tensor data for {} from {}",
                path.display(),
                from.display()
            ),
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

    /// Starts recording: from now on [`CheckpointWriter::add`] keeps each tensor (in order)
    /// instead of writing it, until the caller takes them with
    /// [`CheckpointWriter::take_journal`], stores them in a file of its own and hands them back
    /// with [`CheckpointWriter::add_stored`]. The compress loop's resume state is that file, so
    /// a block's tensors are written to disk once before the shard is assembled, not twice.
    pub fn record(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// Stops recording; tensors added later are written at once again. Errors when recorded
    /// tensors were never taken.
    pub fn stop_recording(&mut self) -> Result<()> {
        match self.journal.take() {
            Some(j) if !j.is_empty() => Err(PareError::Internal(format!(
                "{} recorded tensors (the first `{}`) were never stored",
                j.len(),
                j[0].0
            ))),
            _ => Ok(()),
        }
    }

    /// The tensors added since recording started or the last call, in order. They are not in
    /// the output until given back with [`CheckpointWriter::add_stored`].
    pub fn take_journal(&mut self) -> Vec<(String, OutTensor)> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Adds a tensor: closes the current shard first when this tensor would overflow it, then
    /// appends the bytes to the open shard's data file (nothing but the header entry is kept).
    /// While recording, the tensor is kept for [`CheckpointWriter::take_journal`] instead.
    pub fn add(&mut self, name: String, t: OutTensor) -> Result<()> {
        let numel: usize = t.shape.iter().product();
        if (numel * t.dtype.bitsize()).div_ceil(8) != t.bytes.len() {
            return Err(PareError::Internal(format!(
                "tensor `{name}`: {} bytes do not match shape {:?} of {:?}",
                t.bytes.len(),
                t.shape,
                t.dtype
            )));
        }
        if let Some(j) = self.journal.as_mut() {
            j.push((name, t));
            return Ok(());
        }
        let OutTensor {
            dtype,
            shape,
            bytes,
        } = t;
        self.place(name, dtype, shape, bytes.len(), None)?;
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| PareError::Internal("no open shard after placing a tensor".into()))?;
        let mut w = Counted {
            inner: &mut open.data,
            budget: &mut self.budget,
        };
        w.write_all(&bytes)
            .map_err(|e| io_err("writing", &open.path, e))?;
        open.bytes_data += bytes.len() as u64;
        Ok(())
    }

    /// Adds a tensor whose bytes are already in a file the caller keeps, unchanged, until
    /// [`CheckpointWriter::finish`]: they are copied from there when the shard is assembled.
    pub fn add_stored(&mut self, t: StoredTensor) -> Result<()> {
        let numel: usize = t.shape.iter().product();
        if (numel * t.dtype.bitsize()).div_ceil(8) != t.len {
            return Err(PareError::Internal(format!(
                "stored tensor `{}` in {}: {} bytes do not match shape {:?} of {:?}",
                t.name,
                t.path.display(),
                t.len,
                t.shape,
                t.dtype
            )));
        }
        self.place(t.name, t.dtype, t.shape, t.len, Some((t.path, t.offset)))
    }

    /// Enters a tensor of `len` bytes in the open shard (closing the current one first when it
    /// would overflow), its bytes next in the data file (`stored: None`) or in a caller's file.
    fn place(
        &mut self,
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        len: usize,
        stored: Option<(Arc<PathBuf>, u64)>,
    ) -> Result<()> {
        if !self.names.insert(name.clone()) {
            return Err(PareError::Internal(format!(
                "tensor `{name}` written twice"
            )));
        }
        let size = len as u64;
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
                    bytes_data: 0,
                })
            }
        };
        let (file, offset) = match stored {
            Some((p, off)) => (Some(p), off),
            None => (None, open.bytes_data),
        };
        open.slots.push(Slot {
            name,
            dtype,
            shape,
            len,
            offset,
            file,
        });
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
        write_shard(
            &path,
            (&data_path, &mut data),
            &slots,
            &head,
            &mut self.budget,
        )?;
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
        self.stop_recording()?;
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
                bytes_data: 0,
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
            for t in sl {
                weight_map.insert(t.name, file_name(i + 1));
            }
        }
        let dest = self.tmp.join(file_name(n));
        if let Some((_, sl)) = self.close_open(Some((&dest, &metadata)))? {
            for t in sl {
                weight_map.insert(t.name, file_name(n));
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
