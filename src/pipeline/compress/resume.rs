//! `pare compress --resume`: the block loop's state saved after every finished block, so a run
//! killed at any point (SIGKILL, power loss, Ctrl-C) continues from the last finished block and
//! writes the same bytes as an uninterrupted run.
//!
//! The state lives beside the output in `.{name}.pare-resume/` (never inside the output, which
//! appears only by rename when complete):
//! - `fingerprint.json`: pare's version, the recipe text, the model directory and its files'
//!   sizes, the calibration settings; `--resume` refuses state with another fingerprint (exit 2);
//! - per finished block `b`: `block-{b}.tensors` (the tensors it added to the output, in order),
//!   and for the latest block only `state-{b}.json` (the report and export bookkeeping so far)
//!   and `hidden-{b}.bin` (the calibration hidden states entering block `b + 1`);
//! - `block-{b}.done`, written last: block `b` is complete.
//!
//! Every file is written to `*.partial` and renamed, so a kill leaves either the old state or
//! the new. A block's hidden states are written by a background thread while the next block
//! runs ([`PendingSave`]); `block-{b}.done` appears only once every file is in place. Resuming replays the saved tensors into a fresh output folder, restores the report
//! and bookkeeping, loads the hidden states and continues with block `k + 1`. The profile pass
//! (if any) is re-run; it is deterministic. A successful run removes the folder, and so does one
//! that fails (its input or recipe must change, so the state would not match); Ctrl-C and a kill
//! leave it. A run without `--resume` removes a stale one first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};

use crate::checkpoint::{Dtype, OutTensor, StoredTensor};
use crate::error::{PareError, Result};
use crate::model::{from_host, with_host};
use crate::report::Report;

/// The resume folder of one output. Dropped without [`ResumeDir::keep`] (a finished run, or one
/// that failed on its input), it removes the folder; a killed process leaves it.
pub struct ResumeDir {
    dir: PathBuf,
    keep: bool,
}

impl Drop for ResumeDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a previous run left: its last finished block.
pub struct Resumed {
    pub last_block: usize,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> PareError {
    PareError::io(format!("{what} {}", p.display()), e)
}

/// Writes `bytes` to `path` via `path.partial` and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, &mut |w| w.write_all(bytes))
}

/// Writes what `fill` writes to `path` via `path.partial` (buffered, synced) and a rename.
fn write_atomic_with(
    path: &Path,
    fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    fill(&mut w).map_err(|e| io("writing", &tmp, e))?;
    let f = w
        .into_inner()
        .map_err(|e| io("writing", &tmp, e.into_error()))?;
    f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", path, e))
}

/// A block's resume state being written ([`ResumeDir::save_block`]). Dropping it waits for the
/// write, so that the folder is never removed under the writer.
#[derive(Default)]
pub struct PendingSave(Option<std::thread::JoinHandle<Result<()>>>);

impl PendingSave {
    /// Waits for the write to finish; its error, if any.
    pub fn wait(&mut self) -> Result<()> {
        match self.0.take() {
            None => Ok(()),
            Some(h) => h.join().map_err(|_| {
                PareError::Internal("the resume-state writer thread panicked".into())
            })?,
        }
    }
}

impl Drop for PendingSave {
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// Writes block `b`'s `tensors` into `dir` (`block-{b}.tensors`: an 8-byte header length, a
/// JSON header, then each tensor's bytes), streamed from the tensors with no copy. Returns where
/// each tensor's bytes now are, for [`crate::checkpoint::CheckpointWriter::add_stored`].
fn write_block_tensors(
    dir: &Path,
    b: usize,
    tensors: &[(String, OutTensor)],
) -> Result<Vec<StoredTensor>> {
    let head: Vec<Value> = tensors
        .iter()
        .map(|(name, t)| json!({"name": name, "dtype": dtype_name(t.dtype), "shape": t.shape, "len": t.bytes.len()}))
        .collect();
    let head = serde_json::to_vec(&head)
        .map_err(|e| PareError::Internal(format!("cannot serialise a tensor header: {e}")))?;
    let path = Arc::new(dir.join(format!("block-{b}.tensors")));
    write_atomic_with(&path, &mut |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        tensors.iter().try_for_each(|(_, t)| w.write_all(&t.bytes))
    })?;
    let mut at = 8 + head.len() as u64;
    Ok(tensors
        .iter()
        .map(|(name, t)| {
            let s = StoredTensor {
                name: name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                path: path.clone(),
                offset: at,
                len: t.bytes.len(),
            };
            at += t.bytes.len() as u64;
            s
        })
        .collect())
}

/// Writes the hidden states entering block `b + 1` (`hidden-{b}.bin`, each batch read in place
/// on the host), then marks block `b` done and drops block `b − 1`'s state and hidden states.
fn write_hidden_and_mark(dir: &Path, b: usize, hidden: &[Tensor<3>]) -> Result<()> {
    let mut failed = None;
    write_atomic_with(&dir.join(format!("hidden-{b}.bin")), &mut |w| {
        w.write_all(&(hidden.len() as u64).to_le_bytes())?;
        for t in hidden {
            let [n, s, d] = t.dims();
            for x in [n, s, d] {
                w.write_all(&(x as u64).to_le_bytes())?;
            }
            match with_host(&t.clone().reshape([n * s, d]), |v| {
                w.write_all(bytemuck::cast_slice(v))
            }) {
                Ok(r) => r?,
                Err(e) => {
                    failed = Some(e);
                    return Err(std::io::Error::other("cannot read the hidden states"));
                }
            }
        }
        Ok(())
    })
    .map_err(|e| failed.take().unwrap_or(e))?;
    write_atomic(&dir.join(format!("block-{b}.done")), b"")?;
    if b > 0 {
        for f in [
            format!("state-{}.json", b - 1),
            format!("hidden-{}.bin", b - 1),
        ] {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| io("removing", &p, e))?;
            }
        }
    }
    Ok(())
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

fn dtype_of(name: &str) -> Option<Dtype> {
    [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::BOOL,
    ]
    .into_iter()
    .find(|d| dtype_name(*d) == name)
}

impl ResumeDir {
    /// `.{name}.pare-resume` beside `out`.
    pub fn path_for(out: &Path) -> PathBuf {
        let name = out
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        out.with_file_name(format!(".{name}.pare-resume"))
    }

    /// Opens the state for `out`. With `resume`, a folder with the same `fingerprint` gives the
    /// last finished block; another fingerprint is an error. Without `resume` (or with nothing
    /// to resume) the folder starts empty. Returns notes for the log.
    pub fn open(
        out: &Path,
        fingerprint: &Value,
        resume: bool,
    ) -> Result<(Self, Option<Resumed>, Vec<String>)> {
        let dir = Self::path_for(out);
        let mut notes = Vec::new();
        let fp_path = dir.join("fingerprint.json");
        if resume && fp_path.is_file() {
            let text = std::fs::read_to_string(&fp_path).map_err(|e| io("reading", &fp_path, e))?;
            let old: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if &old != fingerprint {
                return Err(PareError::Usage(format!(
                    "--resume: {} holds the state of a different run (another recipe, model, calibration or pare version); remove it, or run without --resume to start over",
                    dir.display()
                )));
            }
            let me = Self { dir, keep: false };
            let last = (0..usize::MAX)
                .take_while(|b| me.dir.join(format!("block-{b}.done")).is_file())
                .last();
            return Ok(match last {
                Some(k) if me.dir.join(format!("hidden-{k}.bin")).is_file() => {
                    notes.push(format!(
                        "resuming after block {k} from {}",
                        me.dir.display()
                    ));
                    (me, Some(Resumed { last_block: k }), notes)
                }
                _ => {
                    notes.push(format!(
                        "--resume: {} holds no finished block; starting at block 0",
                        me.dir.display()
                    ));
                    (me, None, notes)
                }
            });
        }
        if dir.exists() {
            if !resume {
                notes.push(format!(
                    "removed {}, the resume state of an earlier run (pass --resume to continue one)",
                    dir.display()
                ));
            } else {
                notes.push(format!(
                    "--resume: {} has no fingerprint; starting at block 0",
                    dir.display()
                ));
            }
            std::fs::remove_dir_all(&dir).map_err(|e| io("removing", &dir, e))?;
        } else if resume {
            notes.push("--resume: nothing to resume; starting at block 0".into());
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        write_atomic(
            &fp_path,
            serde_json::to_string_pretty(fingerprint)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok((Self { dir, keep: false }, None, notes))
    }

    /// Saves finished block `b`: its tensors, the report and export bookkeeping, and the hidden
    /// states entering block `b + 1`; then marks it done and drops block `b − 1`'s state.
    ///
    /// The tensors and the state are written here, so that their memory is free before the next
    /// block is read; the tensors' file is where the output takes their bytes from, so the
    /// returned [`StoredTensor`]s go to the checkpoint writer and the file stays until the run
    /// ends (it is written once, not once here and once into the output's data file). The
    /// hidden states, the done mark and the clean-up are left to a background
    /// thread, so that the next block's work overlaps them; the returned [`PendingSave`] holds
    /// its result. The thread reads `hidden` through shared handles (no copy on the host): the
    /// caller waits for it before replacing those tensors, so that their buffers are never held
    /// twice.
    pub fn save_block(
        &self,
        b: usize,
        tensors: Vec<(String, OutTensor)>,
        report: &Report,
        export: Value,
        hidden: &[Tensor<3>],
    ) -> Result<(PendingSave, Vec<StoredTensor>)> {
        let stored = write_block_tensors(&self.dir, b, &tensors)?;
        drop(tensors);
        let state = serde_json::to_string(&json!({"report": report, "export": export}))
            .map_err(|e| PareError::Internal(format!("cannot serialise the resume state: {e}")))?;
        write_atomic(&self.dir.join(format!("state-{b}.json")), state.as_bytes())?;
        let (dir, hidden) = (self.dir.clone(), hidden.to_vec());
        std::thread::Builder::new()
            .name("pare-resume".into())
            .spawn(move || write_hidden_and_mark(&dir, b, &hidden))
            .map(|h| (PendingSave(Some(h)), stored))
            .map_err(|e| PareError::io("starting the resume-state writer", e))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.dir.join(name);
        let mut v = Vec::new();
        std::fs::File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut v))
            .map_err(|e| io("reading", &p, e))?;
        Ok(v)
    }

    fn corrupt(&self, what: &str) -> PareError {
        PareError::Usage(format!(
            "--resume: {} is damaged ({what}); remove it, or run without --resume",
            self.dir.display()
        ))
    }

    /// The tensors block `b` added, in order, as stored in its tensor file (only the header is
    /// read; the file's length is checked against it).
    pub fn block_tensors(&self, b: usize) -> Result<Vec<StoredTensor>> {
        let path = Arc::new(self.dir.join(format!("block-{b}.tensors")));
        let mut f = std::fs::File::open(path.as_path()).map_err(|e| io("reading", &path, e))?;
        let size = f.metadata().map_err(|e| io("reading", &path, e))?.len();
        let mut n = [0u8; 8];
        f.read_exact(&mut n)
            .map_err(|_| self.corrupt("short tensor file"))?;
        let n = u64::from_le_bytes(n);
        if n > size.saturating_sub(8) {
            return Err(self.corrupt("tensor header"));
        }
        let mut head = vec![0u8; n as usize];
        f.read_exact(&mut head)
            .map_err(|_| self.corrupt("tensor header"))?;
        let head: Vec<Value> =
            serde_json::from_slice(&head).map_err(|_| self.corrupt("tensor header"))?;
        let mut at = 8 + n;
        let mut out = Vec::with_capacity(head.len());
        for h in head {
            let len = h["len"]
                .as_u64()
                .ok_or_else(|| self.corrupt("tensor length"))?;
            out.push(StoredTensor {
                name: h["name"].as_str().unwrap_or_default().to_string(),
                dtype: h["dtype"]
                    .as_str()
                    .and_then(dtype_of)
                    .ok_or_else(|| self.corrupt("tensor dtype"))?,
                shape: h["shape"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_u64().map(|x| x as usize))
                            .collect()
                    })
                    .unwrap_or_default(),
                path: path.clone(),
                offset: at,
                len: len as usize,
            });
            at += len;
        }
        if at != size {
            return Err(self.corrupt("tensor data"));
        }
        Ok(out)
    }

    /// The report and export bookkeeping after block `b`.
    pub fn state(&self, b: usize) -> Result<(Report, Value)> {
        let v: Value = serde_json::from_slice(&self.read(&format!("state-{b}.json"))?)
            .map_err(|_| self.corrupt("state"))?;
        let report: Report =
            serde_json::from_value(v["report"].clone()).map_err(|_| self.corrupt("report"))?;
        Ok((report, v["export"].clone()))
    }

    /// The hidden states entering block `b + 1`.
    pub fn hidden(&self, b: usize, device: &Device) -> Result<Vec<Tensor<3>>> {
        let bytes = self.read(&format!("hidden-{b}.bin"))?;
        let u = |at: usize| -> Result<usize> {
            bytes
                .get(at..at + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize)
                .ok_or_else(|| self.corrupt("hidden states"))
        };
        let count = u(0)?;
        let mut at = 8;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let (n, s, d) = (u(at)?, u(at + 8)?, u(at + 16)?);
            at += 24;
            let len = n * s * d * 4;
            let vals: Vec<f32> = bytes
                .get(at..at + len)
                .ok_or_else(|| self.corrupt("hidden states"))?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            at += len;
            out.push(from_host(vals, [n * s, d], device).reshape([n, s, d]));
        }
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the folder when this value is dropped (an interrupted run that can resume).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Removes the folder (after a successful run).
    pub fn remove(mut self) -> Result<()> {
        self.keep = true;
        std::fs::remove_dir_all(&self.dir).map_err(|e| io("removing", &self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(seed: f32, device: &Device) -> Vec<Tensor<3>> {
        (0..2)
            .map(|i| {
                let v: Vec<f32> = (0..3 * 4 * 5)
                    .map(|j| seed + i as f32 * 0.5 + j as f32 * 0.25)
                    .collect();
                from_host(v, [3 * 4, 5], device).reshape([3, 4, 5])
            })
            .collect()
    }

    fn values(h: &[Tensor<3>]) -> Result<Vec<Vec<f32>>> {
        h.iter()
            .map(|t| crate::model::to_host(t.clone().reshape([12, 5])))
            .collect()
    }

    /// The background writer leaves what `--resume` reads back: the tensors, the state and the
    /// hidden states bit for bit, block `b − 1`'s state dropped once block `b` is done.
    #[test]
    fn saved_state_reads_back_and_replaces_the_previous_block() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| PareError::io("tempdir", e))?;
        let out = tmp.path().join("out");
        let device = Device::flex();
        let fp = json!({"run": 1});
        let (dir, resumed, _) = ResumeDir::open(&out, &fp, false)?;
        assert!(resumed.is_none());
        let t = |b: u8| {
            vec![(
                format!("w{b}"),
                OutTensor {
                    dtype: Dtype::U8,
                    shape: vec![3],
                    bytes: vec![b, b + 1, b + 2],
                },
            )]
        };
        let report = Report::default();
        for b in 0..2u8 {
            let h = hidden(f32::from(b), &device);
            let (mut p, stored) = dir.save_block(b.into(), t(b), &report, json!({"b": b}), &h)?;
            assert_eq!(stored.len(), 1);
            // The caller may drop its tensors at once: the writer holds its own handles.
            drop(h);
            p.wait()?;
        }
        let d = dir.dir().to_path_buf();
        assert!(!d.join("hidden-0.bin").exists() && !d.join("state-0.json").exists());
        assert!(d.join("block-0.done").exists() && d.join("block-1.done").exists());
        let got = dir.block_tensors(1)?;
        assert_eq!(got[0].name, "w1");
        assert_eq!((got[0].dtype, got[0].shape.clone()), (Dtype::U8, vec![3]));
        let bytes = std::fs::read(got[0].path.as_path()).map_err(|e| PareError::io("read", e))?;
        let at = got[0].offset as usize;
        assert_eq!(bytes[at..at + got[0].len], [1, 2, 3]);
        assert_eq!(dir.state(1)?.1, json!({"b": 1}));
        assert_eq!(
            values(&dir.hidden(1, &device)?)?,
            values(&hidden(1.0, &device))?
        );
        // Kept (as a killed run leaves it) and reopened with --resume: the last finished block
        // is 1.
        let mut dir = dir;
        dir.keep();
        drop(dir);
        let (_, r, _) = ResumeDir::open(&out, &fp, true)?;
        assert!(matches!(r, Some(Resumed { last_block: 1 })));
        Ok(())
    }
}
