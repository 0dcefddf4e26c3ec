//! The gradient artefact: per-weight gradient magnitudes of the dense model's causal-LM loss,
//! the input of GBLM (Das et al. 2023; ALGORITHMS.md §4).
//!
//! For every block linear `W` (`[out, in]`) it holds `G = sqrt(Σ_n (α · ∂L_n/∂W)²)`, the ℓ2 norm
//! over calibration sequences `n` of the α-scaled gradient of sequence `n`'s mean next-token
//! cross-entropy (batch 1, labels = inputs, as transformers shifts them). α = 100 as the
//! reference's `--scale`; it only sets the unit (the GBLM score adds `|W|·G` to Wanda's
//! `|W|·‖X_j‖₂`, so α weighs the two terms).
//!
//! # On disk
//! A safetensors file, like llama.cpp's imatrix a reusable artefact with provenance: one `F32`
//! tensor per linear named as the checkpoint names its weight (`model.layers.3.self_attn.q_proj.weight`),
//! shape `[out, in]`. `__metadata__` holds `format: pare-gradients`, the model's fingerprint
//! ([`model_fingerprint`]), α, the calibration it was computed on and the mean loss. A recipe
//! reuses it with `gblm: { gradients: FILE }`; [`GradientFile::check`] refuses a file made from
//! another model or with other shapes (exit 2).
//!
//! While the pass runs, the file is memory-mapped and accumulates `Σ (α g)²` in place
//! ([`GradientWriter`]); each block's tensors are flushed and dropped from the resident set once
//! the block is done ([`GradientWriter::release`]), so the artefact's size (4 bytes per block
//! weight) lives on disk, not in RAM. It is written under a temporary name and renamed into
//! place once complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};
use safetensors::{Dtype, SafeTensors};

use crate::arch::{Architecture, LinearSlot};
use crate::checkpoint::TensorStore;
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::matrix::Matrix;

/// `__metadata__.format` of a gradient artefact.
pub const FORMAT: &str = "pare-gradients";
/// The reference's gradient scale (`--scale 100`).
pub const DEFAULT_ALPHA: f32 = 100.0;
/// Room left in the header for the metadata written at the end of the pass.
const HEADER_SLACK: usize = 1024;

/// The safetensors name of `slot`'s gradient (its weight's name).
pub fn tensor_name(slot: &LinearSlot) -> String {
    format!("{}.weight", slot.key)
}

/// A short fingerprint of a model: its config's shape fields and the first MiB of its embedding
/// table, FNV-1a, as 16 hex digits. Two checkpoints with the same fingerprint have the same
/// linears and the same embedding; a compressed copy of a model keeps its fingerprint (the
/// embedding is never compressed).
pub fn model_fingerprint(arch: &Architecture, store: &TensorStore) -> Result<String> {
    let c = &arch.cfg;
    let mut h = fnv::FnvHasher::default();
    for v in [
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.num_experts,
        c.expert_ffn,
    ] {
        h.write_u64(v as u64);
    }
    let (_, _, bytes) = store.read_raw(arch.embed_name())?;
    h.write(&bytes[..bytes.len().min(1 << 20)]);
    Ok(format!("{:016x}", h.finish()))
}

/// Where the bytes of each tensor lie in the file, and its shape.
struct Layout {
    /// name → (byte start in the file, rows, cols).
    tensors: BTreeMap<String, (usize, usize, usize)>,
    /// Header length (after the 8-byte length field), fixed once the file is created.
    header_len: usize,
    total: usize,
}

/// The header entries of `slots`' gradients, in order.
fn entries(slots: &[LinearSlot]) -> Vec<crate::checkpoint::writer::Slot> {
    slots
        .iter()
        .map(|s| {
            crate::checkpoint::writer::Slot::entry(
                tensor_name(s),
                Dtype::F32,
                vec![s.rows, s.cols],
                s.rows * s.cols * 4,
            )
        })
        .collect()
}

fn layout(
    entries: &[crate::checkpoint::writer::Slot],
    metadata: &BTreeMap<String, String>,
) -> (Layout, Vec<u8>) {
    let probe = crate::checkpoint::writer::header(entries, Some(metadata), 0);
    let head =
        crate::checkpoint::writer::header(&entries, Some(metadata), probe.len() + HEADER_SLACK);
    let data_start = 8 + head.len();
    let mut tensors = BTreeMap::new();
    let mut off = data_start;
    for e in entries {
        tensors.insert(e.name.clone(), (off, e.shape[0], e.shape[1]));
        off += e.len;
    }
    (
        Layout {
            tensors,
            header_len: head.len(),
            total: off,
        },
        head,
    )
}

/// Accumulates `Σ (α g)²` per weight into a memory-mapped artefact, then takes the square root
/// and renames it into place ([`GradientWriter::finish`]). Dropped unfinished, the temporary file
/// is removed.
pub struct GradientWriter {
    dest: PathBuf,
    tmp: PathBuf,
    map: MmapMut,
    layout: Layout,
    entries: Vec<crate::checkpoint::writer::Slot>,
    alpha: f32,
    done: bool,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> PareError {
    PareError::input(path, format!("cannot {what}: {e}"))
}

impl GradientWriter {
    /// A zeroed artefact for `slots` at a temporary name beside `dest`; `metadata` is the
    /// provenance known now (more is added by [`Self::finish`]).
    pub fn create(
        dest: &Path,
        slots: &[LinearSlot],
        alpha: f32,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gradients".into());
        let tmp = dest.with_file_name(format!(".{name}.partial"));
        let entries = entries(slots);
        let (layout, head) = layout(&entries, metadata);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, "create the gradient file", e))?;
        file.set_len(layout.total as u64)
            .map_err(|e| io(&tmp, "size the gradient file", e))?;
        // SAFETY: the file was just created by this process under a temporary name and is only
        // written through this map.
        let mut map =
            unsafe { MmapMut::map_mut(&file) }.map_err(|e| io(&tmp, "map the gradient file", e))?;
        map[..8].copy_from_slice(&(head.len() as u64).to_le_bytes());
        map[8..8 + head.len()].copy_from_slice(&head);

        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
            map,
            layout,
            entries,
            alpha,
            done: false,
        })
    }

    fn values(&mut self, name: &str) -> Result<(&mut [f32], usize, usize)> {
        let (start, rows, cols) = *self.layout.tensors.get(name).ok_or_else(|| {
            PareError::Internal(format!("the gradient artefact has no tensor `{name}`"))
        })?;
        let bytes = &mut self.map[start..start + rows * cols * 4];
        let v = bytemuck::try_cast_slice_mut::<u8, f32>(bytes)
            .map_err(|e| PareError::Internal(format!("gradient artefact alignment: {e}")))?;
        Ok((v, rows, cols))
    }

    /// Adds `(α g)²` elementwise into the tensor `name`; `g` is one sequence's gradient
    /// `[out, in]`.
    pub fn add_squared(&mut self, name: &str, g: &Matrix) -> Result<()> {
        let alpha = self.alpha;
        let (v, rows, cols) = self.values(name)?;
        if (g.rows, g.cols) != (rows, cols) {
            return Err(PareError::Internal(format!(
                "gradient of `{name}` is [{}, {}], the artefact holds [{rows}, {cols}]",
                g.rows, g.cols
            )));
        }
        for (a, x) in v.iter_mut().zip(&g.data) {
            let s = alpha * x;
            *a += s * s;
        }
        Ok(())
    }

    /// Writes the tensor `name`'s pages back to the file and drops them from the process's
    /// resident set (they stay in the page cache and fault back in on the next access), so the
    /// pass holds one block's share of the artefact, not all of it.
    pub fn release(&mut self, name: &str) -> Result<()> {
        let Some(&(start, rows, cols)) = self.layout.tensors.get(name) else {
            return Ok(());
        };
        let len = rows * cols * 4;
        self.map
            .flush_range(start, len)
            .map_err(|e| io(&self.tmp, "write the gradient file", e))?;
        #[cfg(unix)]
        {
            // SAFETY: a shared file-backed map whose range was just flushed: MADV_DONTNEED only
            // unmaps the pages; a later access reads the same bytes back from the file.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
        Ok(())
    }

    /// Takes the square root of every accumulated value, writes the final `metadata` into the
    /// header and renames the file to its destination.
    pub fn finish(mut self, metadata: &BTreeMap<String, String>) -> Result<PathBuf> {
        let names: Vec<String> = self.layout.tensors.keys().cloned().collect();
        for name in names {
            let (v, _, _) = self.values(&name)?;
            for a in v.iter_mut() {
                *a = a.max(0.0).sqrt();
            }
            self.release(&name)?;
        }
        let head = crate::checkpoint::writer::header(
            &self.entries,
            Some(metadata),
            self.layout.header_len,
        );
        if head.len() != self.layout.header_len {
            return Err(PareError::Internal(format!(
                "gradient artefact metadata ({} bytes) outgrew the header room ({})",
                head.len(),
                self.layout.header_len
            )));
        }
        self.map[8..8 + head.len()].copy_from_slice(&head);
        self.map
            .flush()
            .map_err(|e| io(&self.tmp, "write the gradient file", e))?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| io(&self.dest, "move the gradient file into place", e))?;
        self.done = true;
        Ok(self.dest.clone())
    }
}

impl Drop for GradientWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A finished artefact, memory-mapped for reading.
pub struct GradientFile {
    pub path: PathBuf,
    map: Mmap,
    /// name → (byte start, rows, cols).
    tensors: BTreeMap<String, (usize, usize, usize)>,
    /// The provenance written with it.
    pub metadata: BTreeMap<String, String>,
    /// The tensor of each linear [`Self::check`] accepted.
    by_id: BTreeMap<LinearId, String>,
}

impl PartialEq for GradientFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.by_id == other.by_id
    }
}

impl std::fmt::Debug for GradientFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GradientFile {
    /// Opens and maps `path`; a file that is not a pare gradient artefact is a usage error
    /// naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| io(path, "open the gradient file", e))?;
        // SAFETY: read-only map of a finished artefact; pare never writes a file it reads.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io(path, "map the gradient file", e))?;
        let index = crate::checkpoint::reader::parse_shard_header(&map[..], path)?;
        let (_, meta) = SafeTensors::read_metadata(&map[..])
            .map_err(|e| PareError::input(path, format!("invalid safetensors header: {e}")))?;
        let metadata: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .unwrap_or_else(HashMap::new)
            .into_iter()
            .collect();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(PareError::input(
                path,
                format!(
                    "`__metadata__.format` is {:?}; expected \"{FORMAT}\" (a file written by \
                     `pare gradients`)",
                    metadata.get("format")
                ),
            ));
        }
        let mut tensors = BTreeMap::new();
        for (name, (dtype, shape, start, _)) in index {
            if dtype != Dtype::F32 || shape.len() != 2 {
                return Err(PareError::input(
                    path,
                    format!("tensor `{name}` is {dtype:?} {shape:?}; expected F32 [out, in]"),
                ));
            }
            if start % 4 != 0 {
                return Err(PareError::input(
                    path,
                    format!("tensor `{name}` starts at byte {start}, not a multiple of 4"),
                ));
            }
            tensors.insert(name, (start, shape[0], shape[1]));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            tensors,
            metadata,
            by_id: BTreeMap::new(),
        })
    }

    /// Checks that the artefact was made from the model with `fingerprint` and holds a gradient
    /// of the right shape for every linear in `slots`; errors (exit 2) name the file and what
    /// differs.
    pub fn check(&mut self, fingerprint: &str, slots: &[LinearSlot]) -> Result<()> {
        let theirs = self.metadata.get("model_fingerprint").map(String::as_str);
        if theirs != Some(fingerprint) {
            return Err(PareError::input(
                &self.path,
                format!(
                    "`__metadata__.model_fingerprint` is {theirs:?}; this model's is \
                     \"{fingerprint}\": the gradients were computed on another model (made from \
                     {:?}); run `pare gradients` on this one",
                    self.metadata.get("model")
                ),
            ));
        }
        for s in slots {
            let name = tensor_name(s);
            match self.tensors.get(&name) {
                None => {
                    return Err(PareError::input(
                        &self.path,
                        format!("no gradient `{name}` for linear {}", s.id),
                    ));
                }
                Some(&(_, r, c)) if (r, c) != (s.rows, s.cols) => {
                    return Err(PareError::input(
                        &self.path,
                        format!(
                            "gradient `{name}` is [{r}, {c}]; linear {} is [{}, {}]",
                            s.id, s.rows, s.cols
                        ),
                    ));
                }
                Some(_) => {
                    self.by_id.insert(s.id, name);
                }
            }
        }
        Ok(())
    }

    /// The gradient of the linear `id` (as the input model numbers it), once [`Self::check`]
    /// accepted it.
    pub fn linear(&self, id: LinearId) -> Option<&[f32]> {
        self.by_id.get(&id).and_then(|n| self.get(n))
    }

    /// The values of the tensor `name` (row-major `[out, in]`), if present.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        let &(start, rows, cols) = self.tensors.get(name)?;
        bytemuck::try_cast_slice(&self.map[start..start + rows * cols * 4]).ok()
    }

    /// The gradient of `slot`, checked to exist with its shape.
    pub fn of(&self, slot: &LinearSlot) -> Result<&[f32]> {
        let name = tensor_name(slot);
        self.get(&name)
            .filter(|v| v.len() == slot.rows * slot.cols)
            .ok_or_else(|| {
                PareError::input(
                    &self.path,
                    format!("no [{}, {}] gradient `{name}`", slot.rows, slot.cols),
                )
            })
    }

    /// Names of the tensors held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::LinearRole;

    fn slot(block: usize, role: LinearRole, key: &str, rows: usize, cols: usize) -> LinearSlot {
        LinearSlot {
            id: LinearId::new(block, role),
            key: key.into(),
            rows,
            cols,
        }
    }

    #[test]
    fn accumulates_the_l2_norm_of_scaled_gradients_and_checks_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("g.safetensors");
        let slots = vec![
            slot(0, LinearRole::Q, "model.layers.0.self_attn.q_proj", 2, 3),
            slot(0, LinearRole::O, "model.layers.0.self_attn.o_proj", 1, 2),
        ];
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("model_fingerprint".to_string(), "abc".to_string());
        let mut w = GradientWriter::create(&dest, &slots, 100.0, &meta).unwrap();
        let q = "model.layers.0.self_attn.q_proj.weight";
        w.add_squared(
            q,
            &Matrix::from_vec(2, 3, vec![0.03, 0.0, -0.01, 0.0, 1.0, 0.0]),
        )
        .unwrap();
        w.add_squared(
            q,
            &Matrix::from_vec(2, 3, vec![0.04, 0.0, 0.0, 0.0, 0.0, 0.0]),
        )
        .unwrap();
        // A wrong shape is an internal fault, not a silent partial write.
        let e = w.add_squared(q, &Matrix::zeros(3, 2)).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(!dest.exists(), "nothing at the destination before finish");
        meta.insert("loss".to_string(), "1.25".to_string());
        w.finish(&meta).unwrap();
        assert!(!dir.path().join(".g.safetensors.partial").exists());

        let mut f = GradientFile::open(&dest).unwrap();
        assert_eq!(f.metadata["loss"], "1.25");
        let g = f.get(q).unwrap().to_vec();
        // sqrt((100·0.03)² + (100·0.04)²) = 5; sqrt(1²·100²) = 100.
        assert!((g[0] - 5.0).abs() < 1e-5, "{g:?}");
        assert_eq!(g[1], 0.0);
        assert!((g[2] - 1.0).abs() < 1e-5);
        assert!((g[4] - 100.0).abs() < 1e-3);
        assert_eq!(
            f.get("model.layers.0.self_attn.o_proj.weight").unwrap(),
            &[0.0, 0.0]
        );
        f.check("abc", &slots).unwrap();
        assert_eq!(f.linear(slots[0].id).unwrap()[4], g[4]);

        let e = f.check("def", &slots).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("another model"), "{e}");
        let other = vec![slot(
            0,
            LinearRole::Q,
            "model.layers.0.self_attn.q_proj",
            3,
            3,
        )];
        let e = f.check("abc", &other).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is [2, 3]"), "{e}");
        let missing = vec![slot(
            1,
            LinearRole::Q,
            "model.layers.1.self_attn.q_proj",
            2,
            3,
        )];
        assert!(
            f.check("abc", &missing)
                .unwrap_err()
                .to_string()
                .contains("no gradient")
        );
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("g.safetensors");
        let slots = vec![slot(0, LinearRole::Q, "q", 1, 1)];
        let meta = BTreeMap::from([("format".to_string(), FORMAT.to_string())]);
        drop(GradientWriter::create(&dest, &slots, 1.0, &meta).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        // A plain safetensors file (no pare metadata) is not an artefact.
        let plain = dir.path().join("model.safetensors");
        let head = br#"{"q.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#;
        let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(&1f32.to_le_bytes());
        std::fs::write(&plain, bytes).unwrap();
        let e = GradientFile::open(&plain).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("pare-gradients"), "{e}");
        let e = GradientFile::open(&dir.path().join("absent")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
