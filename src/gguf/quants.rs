//! ggml's `Q4_0` and `Q8_0` blocks (ggml-common.h), both of 32 weights along a row:
//!
//! - `Q8_0`: an f16 scale `d` then 32 `i8` values; weight = `d · q`. 34 bytes.
//! - `Q4_0`: an f16 scale `d` then 16 bytes of nibbles; byte `j` holds weight `j` in its low
//!   nibble and weight `j + 16` in its high nibble, each as `q + 8` (`q` in −8…7); weight =
//!   `d · q`. 18 bytes.
//!
//! Two ways in:
//! - [`q8_0_rtn`] / [`q4_0_rtn`]: llama.cpp's reference round-to-nearest
//!   (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, bit for bit, including its quirks: Q4_0
//!   maps the signed value of largest magnitude to −8, and both round with the f32 scale before
//!   it is stored as f16).
//! - [`pack_q8_0`] / [`pack_q4_0`]: pare's own integer codes and scales (a symmetric group-32
//!   result), written without a second rounding. They refuse a scale that f16 cannot hold
//!   exactly.

use half::f16;

/// Weights per block of both formats.
pub const QK: usize = 32;

/// `roundf`: round half away from zero.
fn roundf(x: f32) -> f32 {
    x.round()
}

/// llama.cpp's `quantize_row_q8_0_ref` of one row (its length a multiple of 32).
pub fn q8_0_rtn(row: &[f32], out: &mut Vec<u8>) {
    for b in row.chunks(QK) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| roundf(v * id) as i8 as u8));
    }
}

/// llama.cpp's `quantize_row_q4_0_ref` of one row (its length a multiple of 32).
pub fn q4_0_rtn(row: &[f32], out: &mut Vec<u8>) {
    for b in row.chunks(QK) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let nib = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            out.push(nib(b[j]) | (nib(b[j + QK / 2]) << 4));
        }
    }
}

/// The f16 of `scale` when it holds `scale` exactly.
fn exact_f16(scale: f32) -> Option<f16> {
    let h = f16::from_f32(scale);
    (h.to_f32() == scale).then_some(h)
}

/// Packs one row of `Q8_0` from int8 codes (−128…127) and one scale per 32 codes. `Err(g)` names
/// the first group whose scale is not exactly an f16.
pub fn pack_q8_0(codes: &[i8], scales: &[f32], out: &mut Vec<u8>) -> Result<(), usize> {
    for (g, (b, &s)) in codes.chunks(QK).zip(scales).enumerate() {
        let d = exact_f16(s).ok_or(g)?;
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(b.iter().map(|&q| q as u8));
    }
    Ok(())
}

/// Packs one row of `Q4_0` from int4 codes (−8…7) and one scale per 32 codes. `Err(g)` names the
/// first group whose scale is not exactly an f16.
pub fn pack_q4_0(codes: &[i8], scales: &[f32], out: &mut Vec<u8>) -> Result<(), usize> {
    for (g, (b, &s)) in codes.chunks(QK).zip(scales).enumerate() {
        let d = exact_f16(s).ok_or(g)?;
        out.extend_from_slice(&d.to_le_bytes());
        let nib = |q: i8| ((q as i32 + 8) & 0xF) as u8;
        for j in 0..QK / 2 {
            out.push(nib(b[j]) | (nib(b[j + QK / 2]) << 4));
        }
    }
    Ok(())
}

/// Dequantises `Q8_0` blocks (for checks).
pub fn dequant_q8_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 34 * QK);
    for b in bytes.chunks_exact(34) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        out.extend(b[2..].iter().map(|&q| d * f32::from(q as i8)));
    }
    out
}

/// Dequantises `Q4_0` blocks (for checks).
pub fn dequant_q4_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 18 * QK);
    for b in bytes.chunks_exact(18) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qs = &b[2..];
        out.extend(qs.iter().map(|&q| d * ((q & 0xF) as i32 - 8) as f32));
        out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_rtn_follows_the_reference_rule() {
        // Largest magnitude is -2.0 (signed) → d = 0.25; 1.0 → 1/0.25·(-1)… d is positive here:
        // d = max / -8 = 0.25, id = 4: x·4 + 8.5 truncated.
        let mut row = vec![0.0f32; 32];
        row[0] = -2.0;
        row[1] = 1.0;
        row[16] = 0.3;
        let mut out = Vec::new();
        q4_0_rtn(&row, &mut out);
        assert_eq!(out.len(), 18);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]).to_f32(), 0.25);
        // -2·4+8.5 = 0.5 → 0; 1·4+8.5 = 12.5 → 12; 0.3·4+8.5 = 9.7 → 9; 0 → 8.
        assert_eq!(out[2], 0 | (9 << 4));
        assert_eq!(out[3], 12 | (8 << 4));
        let back = dequant_q4_0(&out);
        assert_eq!(&back[..2], &[-2.0, 1.0]);
        assert_eq!(back[16], 0.25);
    }

    #[test]
    fn q8_0_rtn_rounds_half_away_from_zero() {
        let mut row = vec![0.0f32; 32];
        row[0] = 127.0;
        row[1] = -2.5;
        row[2] = 2.5;
        let mut out = Vec::new();
        q8_0_rtn(&row, &mut out);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]).to_f32(), 1.0);
        assert_eq!(out[2] as i8, 127);
        assert_eq!(out[3] as i8, -3);
        assert_eq!(out[4] as i8, 3);
    }

    #[test]
    fn packing_codes_is_exact_and_refuses_non_f16_scales() {
        let codes: Vec<i8> = (0..64).map(|i| ((i * 7) % 16) as i8 - 8).collect();
        let scales = [0.125f32, 0.0029296875];
        let mut out = Vec::new();
        pack_q4_0(&codes, &scales, &mut out).unwrap();
        let back = dequant_q4_0(&out);
        for (i, (&q, &w)) in codes.iter().zip(&back).enumerate() {
            assert_eq!(w, f32::from(q) * scales[i / 32], "{i}");
        }
        let mut out = Vec::new();
        let c8: Vec<i8> = (0..64).map(|i| (i * 4 - 128) as i8).collect();
        pack_q8_0(&c8, &scales, &mut out).unwrap();
        for (i, (&q, &w)) in c8.iter().zip(&dequant_q8_0(&out)).enumerate() {
            assert_eq!(w, f32::from(q) * scales[i / 32], "{i}");
        }
        // 0.1 is not an f16.
        assert_eq!(pack_q4_0(&codes, &[0.125, 0.1], &mut Vec::new()), Err(1));
    }
}
