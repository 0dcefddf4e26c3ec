//! The GGUF v3 container (ggml's `docs/gguf.md`): a streaming writer and a reader.
//!
//! Layout, all little-endian: magic `GGUF`, version `u32` (3), tensor count `u64`, metadata count
//! `u64`; the metadata key/value pairs (key as a `u64`-length string, value type `u32`, value);
//! the tensor infos (name, `u32` rank, `u64` dims with the fastest-varying first — a `[out, in]`
//! matrix is written `[in, out]` —, `u32` ggml type, `u64` offset into the data section); padding
//! to `general.alignment` (32 when absent); then each tensor's bytes, each padded to the
//! alignment.
//!
//! The writer needs every tensor's name, shape and type up front (the infos carry offsets), then
//! takes the tensors' bytes one at a time in the same order, so memory holds one tensor. It writes
//! to `{path}.partial` and renames it into place in [`GgufWriter::finish`]; dropped before that,
//! it removes the partial file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{PareError, Result};
use crate::gguf::GgmlType;

/// `GGUF` as a little-endian `u32`.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The GGUF version pare writes and reads.
pub const VERSION: u32 = 3;
/// The spec's default alignment (`general.alignment` absent).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value. Arrays hold one element type; nested arrays are not used by pare.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    ArrStr(Vec<String>),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    ArrU32(Vec<u32>),
    ArrBool(Vec<bool>),
}

impl Value {
    /// The GGUF value type id (`GGUF_TYPE_*`).
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::ArrStr(_)
            | Value::ArrI32(_)
            | Value::ArrF32(_)
            | Value::ArrU32(_)
            | Value::ArrBool(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let arr = |out: &mut Vec<u8>, ty: u32, n: usize| {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
        };
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Str(s) => put_str(out, s),
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::ArrStr(a) => {
                arr(out, 8, a.len());
                a.iter().for_each(|s| put_str(out, s));
            }
            Value::ArrI32(a) => {
                arr(out, 5, a.len());
                a.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::ArrU32(a) => {
                arr(out, 4, a.len());
                a.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::ArrF32(a) => {
                arr(out, 6, a.len());
                a.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::ArrBool(a) => {
                arr(out, 7, a.len());
                a.iter().for_each(|v| out.push(u8::from(*v)));
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One tensor of the file: name, shape in pare's order (`[out, in]`, or `[experts, out, in]`),
/// type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl TensorPlan {
    /// Bytes of the tensor's data (before padding).
    pub fn bytes(&self) -> u64 {
        let n: usize = self.shape.iter().product();
        self.ty.bytes_for(n) as u64
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Streams one GGUF file; see the module docs.
pub struct GgufWriter {
    path: PathBuf,
    partial: PathBuf,
    file: Option<BufWriter<File>>,
    plans: Vec<TensorPlan>,
    next: usize,
    alignment: u64,
    written: u64,
}

impl GgufWriter {
    /// Writes the header, `metadata` (in the given order) and the infos of `plans`. Errors when
    /// the metadata's `general.alignment` is not a power of two or a tensor shape cannot be held
    /// by its type (the row length must be a multiple of the block size).
    pub fn create(
        path: &Path,
        metadata: &[(String, Value)],
        plans: Vec<TensorPlan>,
    ) -> Result<Self> {
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some(_) => {
                return Err(PareError::Internal(
                    "general.alignment must be a u32 power of two".into(),
                ));
            }
            None => DEFAULT_ALIGNMENT,
        };
        for p in &plans {
            let row = p.shape.last().copied().unwrap_or(1);
            if !row.is_multiple_of(p.ty.block_size()) {
                return Err(PareError::Internal(format!(
                    "GGUF tensor `{}` has rows of {row}, not a multiple of {}'s block of {}",
                    p.name,
                    p.ty.label(),
                    p.ty.block_size()
                )));
            }
        }
        let mut head = Vec::with_capacity(1 << 16);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(plans.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut head, k);
            head.extend_from_slice(&v.type_id().to_le_bytes());
            v.encode(&mut head);
        }
        let mut offset = 0u64;
        for p in &plans {
            put_str(&mut head, &p.name);
            head.extend_from_slice(&(p.shape.len() as u32).to_le_bytes());
            for d in p.shape.iter().rev() {
                head.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            head.extend_from_slice(&p.ty.ggml_id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + p.bytes(), alignment);
        }
        let padded = align_up(head.len() as u64, alignment) as usize;
        head.resize(padded, 0);
        let partial = partial_path(path);
        let f = File::create(&partial)
            .map_err(|e| PareError::io(format!("creating {}", partial.display()), e))?;
        let mut file = BufWriter::with_capacity(1 << 20, f);
        file.write_all(&head)
            .map_err(|e| PareError::io(format!("writing {}", partial.display()), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            file: Some(file),
            plans,
            next: 0,
            alignment,
            written: 0,
        })
    }

    /// The plan of the tensor whose bytes [`GgufWriter::write_tensor`] expects next.
    pub fn next_plan(&self) -> Option<&TensorPlan> {
        self.plans.get(self.next)
    }

    /// Writes the next tensor's bytes (checked against its plan's size) and its padding.
    pub fn write_tensor(&mut self, bytes: &[u8]) -> Result<()> {
        let plan = self
            .plans
            .get(self.next)
            .ok_or_else(|| PareError::Internal("GGUF: more tensors than planned".into()))?;
        if bytes.len() as u64 != plan.bytes() {
            return Err(PareError::Internal(format!(
                "GGUF tensor `{}`: {} bytes, its plan needs {}",
                plan.name,
                bytes.len(),
                plan.bytes()
            )));
        }
        let pad = (align_up(bytes.len() as u64, self.alignment) - bytes.len() as u64) as usize;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| PareError::Internal("GGUF writer already finished".into()))?;
        let err = |e| PareError::io(format!("writing {}", self.partial.display()), e);
        file.write_all(bytes).map_err(err)?;
        file.write_all(&vec![0u8; pad]).map_err(err)?;
        self.written += (bytes.len() + pad) as u64;
        self.next += 1;
        Ok(())
    }

    /// Flushes, checks every planned tensor was written, and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.next != self.plans.len() {
            return Err(PareError::Internal(format!(
                "GGUF: {} of {} tensors written",
                self.next,
                self.plans.len()
            )));
        }
        if let Some(mut f) = self.file.take() {
            f.flush()
                .map_err(|e| PareError::io(format!("writing {}", self.partial.display()), e))?;
            f.get_ref()
                .sync_all()
                .map_err(|e| PareError::io(format!("syncing {}", self.partial.display()), e))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .map_err(|e| PareError::io(format!("renaming into {}", self.path.display()), e))?;
        self.next = usize::MAX;
        Ok(self.path.clone())
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.next != usize::MAX {
            self.file = None;
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// One tensor info as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dims as stored (fastest-varying first, ggml's `ne`).
    pub dims: Vec<u64>,
    /// The raw ggml type id.
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

/// A GGUF file parsed in memory (for tests and checks; pare's own files are small to medium).
#[derive(Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Byte offset of the data section.
    pub data_start: u64,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(PareError::input(
                self.path,
                format!("GGUF truncated at byte {} (needs {n} more)", self.at),
            ));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len())
            .ok_or_else(|| PareError::input(self.path, format!("GGUF length {n} out of range")))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| PareError::input(self.path, "GGUF string is not UTF-8"))
    }
    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(i8::from_le_bytes(self.arr()?)),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            9 => {
                let et = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(et)?);
                }
                let bad = || PareError::input(self.path, format!("GGUF array of type {et}"));
                match et {
                    8 => Value::ArrStr(
                        items
                            .into_iter()
                            .map(|v| {
                                if let Value::Str(s) = v {
                                    s
                                } else {
                                    String::new()
                                }
                            })
                            .collect(),
                    ),
                    5 => Value::ArrI32(
                        items
                            .into_iter()
                            .map(|v| if let Value::I32(x) = v { x } else { 0 })
                            .collect(),
                    ),
                    4 => Value::ArrU32(
                        items
                            .into_iter()
                            .map(|v| if let Value::U32(x) = v { x } else { 0 })
                            .collect(),
                    ),
                    6 => Value::ArrF32(
                        items
                            .into_iter()
                            .map(|v| if let Value::F32(x) = v { x } else { 0.0 })
                            .collect(),
                    ),
                    7 => Value::ArrBool(
                        items
                            .into_iter()
                            .map(|v| matches!(v, Value::Bool(true)))
                            .collect(),
                    ),
                    _ => return Err(bad()),
                }
            }
            _ => {
                return Err(PareError::input(
                    self.path,
                    format!("GGUF value type {ty} is not defined"),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Reads and parses `path`; exit-2 errors name the file and what is malformed.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| PareError::io(format!("reading {}", path.display()), e))?;
        Self::parse(bytes, path)
    }

    pub fn parse(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let mut c = Cursor {
            b: &bytes,
            at: 0,
            path,
        };
        if c.take(4)? != MAGIC {
            return Err(PareError::input(
                path,
                "not a GGUF file (magic is not `GGUF`)",
            ));
        }
        let version = c.u32()?;
        if version != VERSION {
            return Err(PareError::input(
                path,
                format!("GGUF version {version}; pare reads version {VERSION}"),
            ));
        }
        let n_tensors = c.len()?;
        let n_kv = c.len()?;
        let mut metadata = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let k = c.string()?;
            let ty = c.u32()?;
            metadata.push((k, c.value(ty)?));
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let rank = c.u32()? as usize;
            let dims = (0..rank).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = c.u32()?;
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        };
        let data_start = align_up(c.at as u64, alignment.max(1));
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
            bytes,
        })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The data bytes of `t` (its size from its dims and type; unknown types give an error).
    pub fn data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let ty = GgmlType::from_id(t.ggml_type).ok_or_else(|| {
            PareError::Internal(format!(
                "GGUF tensor `{}` has ggml type {} that pare does not read",
                t.name, t.ggml_type
            ))
        })?;
        let n: u64 = t.dims.iter().product();
        let len = ty.bytes_for(n as usize);
        let start = (self.data_start + t.offset) as usize;
        self.bytes
            .get(start..start + len)
            .ok_or_else(|| PareError::Internal(format!("GGUF tensor `{}` out of bounds", t.name)))
    }
}
