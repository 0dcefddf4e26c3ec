//! The CubeCL kernels of this crate on wgpu's Vulkan backend (SPIR-V), and [`Gpu`], the handle
//! that uploads weights and launches them (feature `vulkan`).
//!
//! Every GEMM here computes `y = x · Wᵀ` for a small batch (`x` `[batch, in]`, `y`
//! `[batch, out]`, batch 1 to [`MAX_BATCH`]), the decode-time shape where the weight's bytes
//! decide the time. One plane (subgroup: 32 lanes on NVIDIA) owns one output row at a time, and
//! the planes of the grid stride over the rows. The lanes of a plane stride over the row's
//! storage words, so consecutive lanes read consecutive words (coalesced). Each lane keeps one
//! partial sum per batch row in registers, and `plane_sum` adds them up: no shared memory and no
//! barrier. (cubecl-spirv 0.11.3 declares shared memory wrongly on Vulkan drivers without
//! `VK_KHR_workgroup_memory_explicit_layout`, which crashes Mesa's lavapipe; the plane design
//! avoids it and is the usual shape of a GEMV anyway.) The compressed weights are read as they
//! are stored: [`int4`](crate::int4) codes are unpacked in registers, [`sparse24`](crate::sparse24)
//! positions select the inputs, and neither is ever densified.
//!
//! Sums are f32 in a fixed order for a given device (each lane's words in order, then the
//! plane's reduction), so a result is repeatable run to run. The tests compare it with the f64
//! CPU references.

use cubecl::device::WgpuDeviceKind;
use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::int4::PackedInt4;
use crate::sparse24::Sparse24;
use crate::{LayoutError, expect_len};

/// Units per cube in the GEMM kernels (`UNITS / plane size` rows in flight per cube).
pub const UNITS: usize = 64;
/// The largest batch the GEMM kernels take (each unit keeps `batch` partial sums).
pub const MAX_BATCH: usize = 16;
/// Units per cube of the copy kernel.
const COPY_UNITS: usize = 256;
/// The most cubes along one grid axis that Vulkan guarantees (`maxComputeWorkGroupCount`).
const MAX_GRID_X: usize = 65_535;

/// An error of the GPU path: no device, a bad layout, or a failed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuError(pub String);

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}

impl From<LayoutError> for GpuError {
    fn from(e: LayoutError) -> Self {
        Self(e.0)
    }
}

/// The first output row of this unit's plane: planes own rows, consecutive across the grid.
#[cube]
fn plane_first_row() -> usize {
    CUBE_POS as usize * (CUBE_DIM / PLANE_DIM) as usize + PLANE_POS as usize
}

/// How far a plane steps to its next row: the number of planes in the grid.
#[cube]
fn plane_row_stride() -> usize {
    CUBE_COUNT as usize * (CUBE_DIM / PLANE_DIM) as usize
}

/// Sets the `batch` partial sums to zero, before each row.
#[cube]
fn zero(acc: &mut Array<f32>, #[comptime] batch: usize) {
    #[unroll]
    for b in 0..batch {
        acc[b] = 0.0;
    }
}

/// Adds one partial sum per batch row over the units of a plane, and lane 0 writes row `row`
/// of `y` (`[batch, rows]`). The plane must call it in uniform control flow.
#[cube]
fn plane_store(acc: &Array<f32>, y: &mut [f32], row: usize, rows: usize, #[comptime] batch: usize) {
    #[unroll]
    for b in 0..batch {
        let total = plane_sum(acc[b]);
        if UNIT_POS_PLANE == 0 {
            y[b * rows + row] = total;
        }
    }
}

/// `y[b, o] = Σ_i x[b, i] · s[o, i / g] · (q[o, i] − z[o, i / g])` over the packed layout of
/// [`PackedInt4`]: `packed` `[rows, cols / 8]`, `scales` and `zeros` `[rows, cols / group]`.
/// One plane per output row; the planes of the grid stride over the rows, and the lanes of a
/// plane over the row's packed words.
#[cube(launch_unchecked)]
fn int4_gemm_kernel(
    x: &[f32],
    packed: &[u32],
    scales: &[f32],
    zeros: &[f32],
    y: &mut [f32],
    rows: usize,
    cols: usize,
    group: usize,
    #[comptime] batch: usize,
) {
    let lanes = PLANE_DIM as usize;
    let words = cols / 8;
    let ngroups = cols / group;
    let words_per_group = group / 8;
    let mut acc = Array::<f32>::new(batch);
    let mut wq = Array::<f32>::new(8usize);
    let mut o = plane_first_row();
    while o < rows {
        zero(&mut acc, batch);
        let mut w = UNIT_POS_PLANE as usize;
        while w < words {
            let g = o * ngroups + w / words_per_group;
            let s = scales[g];
            // q − z = nibble − (8 + z).
            let offset = zeros[g] + 8.0;
            let mut word = packed[o * words + w];
            #[unroll]
            for j in 0..8usize {
                wq[j] = (f32::cast_from(word & 15u32) - offset) * s;
                word >>= 4u32;
            }
            #[unroll]
            for b in 0..batch {
                let xb = b * cols + w * 8;
                let mut part = 0.0f32;
                #[unroll]
                for j in 0..8usize {
                    part += x[xb + j] * wq[j];
                }
                acc[b] += part;
            }
            w += lanes;
        }
        plane_store(&acc, y, o, rows, batch);
        o += plane_row_stride();
    }
}

/// `y[b, r] = Σ_k x[b, 4k + p0] · v0 + x[b, 4k + p1] · v1` over the layout of [`Sparse24`]:
/// `values` `[rows, cols / 2]`, `meta` `[rows, cols / 32]`. Planes and lanes as in the int4
/// kernel, the lanes striding over the row's metadata words (32 inputs each).
#[cube(launch_unchecked)]
fn sparse24_gemm_kernel(
    x: &[f32],
    values: &[f32],
    meta: &[u32],
    y: &mut [f32],
    rows: usize,
    cols: usize,
    #[comptime] batch: usize,
) {
    let lanes = PLANE_DIM as usize;
    let words = cols / 32;
    let mut acc = Array::<f32>::new(batch);
    let mut cidx = Array::<usize>::new(16usize);
    let mut r = plane_first_row();
    while r < rows {
        zero(&mut acc, batch);
        let mut m = UNIT_POS_PLANE as usize;
        while m < words {
            let mut bits = meta[r * words + m];
            let vbase = r * (cols / 2) + m * 16;
            #[unroll]
            for k in 0..8usize {
                let p = bits & 15u32;
                cidx[2 * k] = m * 32 + 4 * k + (p & 3u32) as usize;
                cidx[2 * k + 1] = m * 32 + 4 * k + (p >> 2u32) as usize;
                bits >>= 4u32;
            }
            #[unroll]
            for b in 0..batch {
                let xb = b * cols;
                let mut part = 0.0f32;
                #[unroll]
                for j in 0..16usize {
                    part += x[xb + cidx[j]] * values[vbase + j];
                }
                acc[b] += part;
            }
            m += lanes;
        }
        plane_store(&acc, y, r, rows, batch);
        r += plane_row_stride();
    }
}

/// The dense baseline: `y[b, o] = Σ_i x[b, i] · w[o, i]`, `w` `[rows, cols]` f32, planes and
/// lanes as in the int4 kernel.
#[cube(launch_unchecked)]
fn dense_gemm_kernel(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    rows: usize,
    cols: usize,
    #[comptime] batch: usize,
) {
    let lanes = PLANE_DIM as usize;
    let mut acc = Array::<f32>::new(batch);
    let mut o = plane_first_row();
    while o < rows {
        zero(&mut acc, batch);
        let mut i = UNIT_POS_PLANE as usize;
        while i < cols {
            let wi = w[o * cols + i];
            #[unroll]
            for b in 0..batch {
                acc[b] += x[b * cols + i] * wi;
            }
            i += lanes;
        }
        plane_store(&acc, y, o, rows, batch);
        o += plane_row_stride();
    }
}

/// Each unit writes `plane_sum(1)` and the plane size: the two must agree on every unit.
#[cube(launch_unchecked)]
fn plane_probe_kernel(out: &mut [f32]) {
    let u = UNIT_POS as usize;
    out[2 * u] = plane_sum(1.0f32);
    out[2 * u + 1] = f32::cast_from(PLANE_DIM);
}

/// `dst[i] = src[i]` for `i < len`: the bandwidth the GEMMs are measured against.
#[cube(launch_unchecked)]
fn copy_kernel(src: &[u32], dst: &mut [u32], len: usize) {
    let i = CUBE_POS as usize * COPY_UNITS + UNIT_POS as usize;
    if i < len {
        dst[i] = src[i];
    }
}

/// A grid of at least `cubes` cubes: at most 65,535 along x, the rest along y (the kernels
/// guard the excess).
fn grid(cubes: usize) -> CubeCount {
    let x = cubes.clamp(1, MAX_GRID_X);
    let y = cubes.div_ceil(x).max(1);
    CubeCount::Static(x as u32, y as u32, 1)
}

/// A buffer on the device: its handle and its length in 4-byte elements.
#[derive(Clone)]
pub struct Resident {
    handle: Handle,
    len: usize,
}

impl Resident {
    /// Length in elements (f32 or u32).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn arg(&self) -> BufferArg {
        // SAFETY: `len` is the element count the buffer was created with (4-byte elements).
        unsafe { BufferArg::from_raw_parts(self.handle.clone(), self.len) }
    }
}

/// A [`PackedInt4`] weight on the device.
pub struct GpuInt4 {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Group size along the input.
    pub group: usize,
    packed: Resident,
    scales: Resident,
    zeros: Resident,
}

impl GpuInt4 {
    /// Bytes the kernel reads from this weight per call: codes, scales and zero points.
    pub fn bytes(&self) -> usize {
        4 * (self.packed.len + self.scales.len + self.zeros.len)
    }
}

/// A [`Sparse24`] weight on the device.
pub struct GpuSparse24 {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    values: Resident,
    meta: Resident,
}

impl GpuSparse24 {
    /// Bytes the kernel reads from this weight per call: kept values and positions.
    pub fn bytes(&self) -> usize {
        4 * (self.values.len + self.meta.len)
    }
}

/// A dense `[rows, cols]` f32 weight on the device (the baseline).
pub struct GpuDense {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    w: Resident,
}

impl GpuDense {
    /// Bytes the kernel reads from this weight per call.
    pub fn bytes(&self) -> usize {
        4 * self.w.len
    }
}

/// One Vulkan device: uploads, launches and reads back.
pub struct Gpu {
    client: Client,
    label: String,
    /// Lanes per plane, as the device reports it (sizes the grid; the kernels read the real
    /// plane size themselves, so a different one costs speed, never correctness).
    plane: usize,
}

impl Gpu {
    /// The Vulkan device `index` (counting discrete GPUs), or the adapter wgpu prefers when
    /// `None` (which may be a CPU implementation such as Mesa's lavapipe). Errors when the
    /// machine has no such Vulkan device.
    pub fn vulkan(index: Option<usize>) -> Result<Self, GpuError> {
        let label = match index {
            Some(i) => format!("vulkan:{i}"),
            None => "vulkan (default adapter)".to_string(),
        };
        let kind = match index {
            Some(i) => WgpuDeviceKind::DiscreteGpu(i),
            None => WgpuDeviceKind::DefaultDevice,
        };
        let device = cubecl::Device::vulkan(kind).map_err(|e| {
            GpuError(format!(
                "Vulkan device {}: {e}",
                index.map_or("(default)".to_string(), |i| i.to_string())
            ))
        })?;
        let client = device.client();
        let mut gpu = Self {
            client,
            label,
            plane: 1,
        };
        gpu.plane = gpu.probe_planes()?;
        Ok(gpu)
    }

    /// Runs [`plane_probe_kernel`] once and returns the plane size, or an error when the device's
    /// subgroup sums are wrong or its planes do not tile a cube (the kernels rely on both; wgpu
    /// does not always report subgroup support, so it is measured instead of trusted).
    fn probe_planes(&self) -> Result<usize, GpuError> {
        let out = self.empty(2 * UNITS);
        // SAFETY: one cube of `UNITS` units writes `2 · UNITS` elements.
        unsafe {
            plane_probe_kernel::launch_unchecked(
                &self.client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(UNITS as u32),
                out.arg(),
            )
        };
        let got = self.read_f32(&out)?;
        let plane = got[1] as usize;
        let sums_ok =
            (0..UNITS).all(|u| got[2 * u] == plane as f32 && got[2 * u + 1] == plane as f32);
        if plane == 0 || UNITS % plane != 0 || !sums_ok {
            return Err(GpuError(format!(
                "{}: subgroup sums are wrong or its subgroup size {plane} does not divide {UNITS}; \
                 the kernels need both",
                self.label
            )));
        }
        Ok(plane)
    }

    /// Which device this is, for reports.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Lanes per plane (subgroup size) the device reports.
    pub fn plane_size(&self) -> usize {
        self.plane
    }

    /// The grid of a GEMM over `rows` output rows: one plane per row.
    fn gemm_grid(&self, rows: usize) -> CubeCount {
        grid(rows.div_ceil(UNITS / self.plane))
    }

    /// Copies `data` to the device.
    pub fn upload_f32(&self, data: &[f32]) -> Resident {
        Resident {
            handle: self.client.create_from_slice(f32::as_bytes(data)),
            len: data.len(),
        }
    }

    /// Copies `data` to the device.
    pub fn upload_u32(&self, data: &[u32]) -> Resident {
        Resident {
            handle: self.client.create_from_slice(u32::as_bytes(data)),
            len: data.len(),
        }
    }

    /// An uninitialised buffer of `len` 4-byte elements.
    pub fn empty(&self, len: usize) -> Resident {
        Resident {
            handle: self.client.empty(4 * len.max(1)),
            len,
        }
    }

    /// Reads a buffer back as f32 (waits for the kernels that write it).
    pub fn read_f32(&self, buf: &Resident) -> Result<Vec<f32>, GpuError> {
        let bytes = self
            .client
            .read_one(buf.handle.clone())
            .map_err(|e| GpuError(format!("reading a device buffer back: {e:?}")))?;
        Ok(f32::from_bytes(&bytes)[..buf.len].to_vec())
    }

    /// Reads a buffer back as u32.
    pub fn read_u32(&self, buf: &Resident) -> Result<Vec<u32>, GpuError> {
        let bytes = self
            .client
            .read_one(buf.handle.clone())
            .map_err(|e| GpuError(format!("reading a device buffer back: {e:?}")))?;
        Ok(u32::from_bytes(&bytes)[..buf.len].to_vec())
    }

    /// Waits until every launched kernel has finished.
    pub fn sync(&self) -> Result<(), GpuError> {
        cubecl::future::block_on(self.client.sync())
            .map_err(|e| GpuError(format!("waiting for the device: {e:?}")))
    }

    /// Uploads an int4 weight as it is packed, after checking its lengths against its shape
    /// (the fields are public, so the kernel does not trust [`PackedInt4::pack`] alone).
    pub fn upload_int4(&self, w: &PackedInt4) -> Result<GpuInt4, GpuError> {
        if w.group == 0 || w.group % 8 != 0 || w.cols % w.group != 0 {
            return Err(GpuError(format!(
                "int4 weight: group size {} must be a multiple of 8 dividing in = {}",
                w.group, w.cols
            )));
        }
        expect_len("int4 packed codes", w.packed.len(), w.rows * w.cols / 8)?;
        expect_len("int4 scales", w.scales.len(), w.rows * w.cols / w.group)?;
        expect_len("int4 zero points", w.zeros.len(), w.rows * w.cols / w.group)?;
        Ok(GpuInt4 {
            rows: w.rows,
            cols: w.cols,
            group: w.group,
            packed: self.upload_u32(&w.packed),
            scales: self.upload_f32(&w.scales),
            zeros: self.upload_f32(&w.zeros),
        })
    }

    /// Uploads a 2:4 weight as it is compressed, after checking its lengths against its shape.
    pub fn upload_sparse24(&self, w: &Sparse24) -> Result<GpuSparse24, GpuError> {
        if w.cols % 32 != 0 {
            return Err(GpuError(format!(
                "2:4 weight: in = {} must be a multiple of 32",
                w.cols
            )));
        }
        expect_len("2:4 values", w.values.len(), w.rows * w.cols / 2)?;
        expect_len("2:4 positions", w.meta.len(), w.rows * w.cols / 32)?;
        Ok(GpuSparse24 {
            rows: w.rows,
            cols: w.cols,
            values: self.upload_f32(&w.values),
            meta: self.upload_u32(&w.meta),
        })
    }

    /// Uploads a dense `[rows, cols]` weight.
    pub fn upload_dense(&self, w: &[f32], rows: usize, cols: usize) -> Result<GpuDense, GpuError> {
        expect_len("dense weight", w.len(), rows * cols)?;
        Ok(GpuDense {
            rows,
            cols,
            w: self.upload_f32(w),
        })
    }

    /// Launches `y = x · Wᵀ` over an int4 weight: `x` `[batch, cols]`, `y` `[batch, rows]`.
    pub fn int4_gemm(
        &self,
        x: &Resident,
        batch: usize,
        w: &GpuInt4,
        y: &Resident,
    ) -> Result<(), GpuError> {
        check_gemm(x, y, batch, w.rows, w.cols)?;
        // SAFETY: the lengths were checked against the shapes the kernel indexes with, and every
        // index it forms is below them (`o < rows`, `w < cols / 8`, `g < rows · cols / group`).
        unsafe {
            int4_gemm_kernel::launch_unchecked(
                &self.client,
                self.gemm_grid(w.rows),
                CubeDim::new_1d(UNITS as u32),
                x.arg(),
                w.packed.arg(),
                w.scales.arg(),
                w.zeros.arg(),
                y.arg(),
                w.rows,
                w.cols,
                w.group,
                batch,
            )
        };
        Ok(())
    }

    /// Launches `y = x · Wᵀ` over a 2:4 weight: `x` `[batch, cols]`, `y` `[batch, rows]`.
    pub fn sparse24_gemm(
        &self,
        x: &Resident,
        batch: usize,
        w: &GpuSparse24,
        y: &Resident,
    ) -> Result<(), GpuError> {
        check_gemm(x, y, batch, w.rows, w.cols)?;
        // SAFETY: as in `int4_gemm`; positions are 2-bit, so `x` is read below `cols` per row.
        unsafe {
            sparse24_gemm_kernel::launch_unchecked(
                &self.client,
                self.gemm_grid(w.rows),
                CubeDim::new_1d(UNITS as u32),
                x.arg(),
                w.values.arg(),
                w.meta.arg(),
                y.arg(),
                w.rows,
                w.cols,
                batch,
            )
        };
        Ok(())
    }

    /// Launches `y = x · Wᵀ` over a dense weight: `x` `[batch, cols]`, `y` `[batch, rows]`.
    pub fn dense_gemm(
        &self,
        x: &Resident,
        batch: usize,
        w: &GpuDense,
        y: &Resident,
    ) -> Result<(), GpuError> {
        check_gemm(x, y, batch, w.rows, w.cols)?;
        // SAFETY: as in `int4_gemm`.
        unsafe {
            dense_gemm_kernel::launch_unchecked(
                &self.client,
                self.gemm_grid(w.rows),
                CubeDim::new_1d(UNITS as u32),
                x.arg(),
                w.w.arg(),
                y.arg(),
                w.rows,
                w.cols,
                batch,
            )
        };
        Ok(())
    }

    /// Launches `dst = src` (equal lengths).
    pub fn copy(&self, src: &Resident, dst: &Resident) -> Result<(), GpuError> {
        expect_len("copy destination", dst.len, src.len)?;
        // SAFETY: both buffers hold `len` elements and the kernel guards `i < len`.
        unsafe {
            copy_kernel::launch_unchecked(
                &self.client,
                grid(src.len.div_ceil(COPY_UNITS)),
                CubeDim::new_1d(COPY_UNITS as u32),
                src.arg(),
                dst.arg(),
                src.len,
            )
        };
        Ok(())
    }

    /// `x · Wᵀ` of host data through the int4 kernel (upload, launch, read back).
    pub fn int4_gemm_host(
        &self,
        x: &[f32],
        batch: usize,
        w: &PackedInt4,
    ) -> Result<Vec<f32>, GpuError> {
        let wd = self.upload_int4(w)?;
        self.through(x, batch, w.rows, |xd, y| self.int4_gemm(xd, batch, &wd, y))
    }

    /// `x · Wᵀ` of host data through the 2:4 kernel.
    pub fn sparse24_gemm_host(
        &self,
        x: &[f32],
        batch: usize,
        w: &Sparse24,
    ) -> Result<Vec<f32>, GpuError> {
        let wd = self.upload_sparse24(w)?;
        self.through(x, batch, w.rows, |xd, y| {
            self.sparse24_gemm(xd, batch, &wd, y)
        })
    }

    /// `x · Wᵀ` of host data through the dense kernel.
    pub fn dense_gemm_host(
        &self,
        x: &[f32],
        batch: usize,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let wd = self.upload_dense(w, rows, cols)?;
        self.through(x, batch, rows, |xd, y| self.dense_gemm(xd, batch, &wd, y))
    }

    /// Uploads `x`, runs `launch(x, y)` into a fresh `[batch, rows]` output and reads it back.
    /// The launcher checks `x`'s length against the weight.
    fn through(
        &self,
        x: &[f32],
        batch: usize,
        rows: usize,
        launch: impl FnOnce(&Resident, &Resident) -> Result<(), GpuError>,
    ) -> Result<Vec<f32>, GpuError> {
        let (xd, y) = (self.upload_f32(x), self.empty(batch * rows));
        launch(&xd, &y)?;
        self.read_f32(&y)
    }
}

/// Checks a GEMM's batch and buffer lengths against the weight's shape.
fn check_gemm(
    x: &Resident,
    y: &Resident,
    batch: usize,
    rows: usize,
    cols: usize,
) -> Result<(), GpuError> {
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(GpuError(format!(
            "batch {batch}: expected 1 to {MAX_BATCH} rows of x"
        )));
    }
    expect_len("x", x.len, batch * cols)?;
    expect_len("y", y.len, batch * rows)?;
    Ok(())
}
