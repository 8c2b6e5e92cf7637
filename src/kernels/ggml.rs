//! GGUF/ggml `Q8_0` and `Q4_0`, bit-exact with ggml's reference `quantize_row_q8_0_ref` and
//! `quantize_row_q4_0_ref`: `id = 1/d` in f32, codes from `x * id`, `d` stored as f16.

use half::f16;

use super::scan::abs_max;
use super::{KernelError, QuantizedBuffers, QuantizedRef, Scheme, round_half_away};

const BLOCK: usize = 32;

fn check_len(scheme: Scheme, numel: usize) -> Result<(), KernelError> {
    if numel.is_multiple_of(BLOCK) {
        Ok(())
    } else {
        Err(KernelError::NotBlockMultiple {
            scheme,
            block: BLOCK,
            numel,
        })
    }
}

/// Rounds `d` to f16 as ggml does (nearest even), refusing a scale that overflows.
fn f16_scale(scheme: Scheme, block: usize, d: f32) -> Result<f32, KernelError> {
    let h = f16::from_f32(d);
    if h.is_infinite() {
        return Err(KernelError::ScaleOverflow {
            scheme,
            block,
            scale: d,
        });
    }
    Ok(h.to_f32())
}

/// Appends the `Q8_0` codes (one i8 per element) and f16-rounded scales of `x`.
pub fn quantize_q8_0(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU supports AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { quantize_q8_0_avx2(x, out) };
    }
    quantize_q8_0_portable(x, out)
}

/// [`quantize_q8_0`] compiled for AVX2; no FMA, so the bytes are identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_q8_0_avx2(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    quantize_q8_0_portable(x, out)
}

#[inline(always)]
fn quantize_q8_0_portable(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    check_len(Scheme::Q8_0, x.len())?;
    out.codes.reserve(x.len());
    for (b, blk) in x.chunks_exact(BLOCK).enumerate() {
        let amax = abs_max(blk, b * BLOCK)?;
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.scales.push(f16_scale(Scheme::Q8_0, b, d)?);
        // |x * id| <= 127 (+ rounding) for every normal scale; the clamp only tames the
        // infinities of a subnormal `d` and never changes a code ggml would produce.
        out.codes.extend(
            blk.iter()
                .map(|&v| round_half_away(v * id, -128.0, 127.0) as i8 as u8),
        );
    }
    Ok(())
}

/// Appends the `Q4_0` codes (16 bytes per block, element j low, j + 16 high) and scales of `x`.
pub fn quantize_q4_0(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU supports AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { quantize_q4_0_avx2(x, out) };
    }
    quantize_q4_0_portable(x, out)
}

/// [`quantize_q4_0`] compiled for AVX2; no FMA, so the bytes are identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_q4_0_avx2(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    quantize_q4_0_portable(x, out)
}

#[inline(always)]
fn quantize_q4_0_portable(x: &[f32], out: &mut QuantizedBuffers) -> Result<(), KernelError> {
    check_len(Scheme::Q4_0, x.len())?;
    out.codes.reserve(x.len() / 2);
    for (b, blk) in x.chunks_exact(BLOCK).enumerate() {
        abs_max(blk, b * BLOCK)?;
        // The signed value of largest magnitude; the first one wins a tie.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in blk {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.scales.push(f16_scale(Scheme::Q4_0, b, d)?);
        let (lo, hi) = blk.split_at(BLOCK / 2);
        out.codes.extend(lo.iter().zip(hi).map(|(&x0, &x1)| {
            let q0 = ((x0 * id + 8.5) as i8).min(15) as u8 & 0x0f;
            let q1 = ((x1 * id + 8.5) as i8).min(15) as u8 & 0x0f;
            q0 | (q1 << 4)
        }));
    }
    Ok(())
}

/// Reconstructs a validated `q8_0`/`q4_0` value into `out` (`out.len() == q.numel`).
pub fn dequantize(q: &QuantizedRef<'_>, out: &mut [f32]) {
    let per_block = q.scheme.code_bytes(BLOCK);
    let blocks = out
        .chunks_exact_mut(BLOCK)
        .zip(q.codes.chunks_exact(per_block))
        .zip(q.scales);
    for ((dst, codes), &d) in blocks {
        if q.scheme == Scheme::Q8_0 {
            for (y, &c) in dst.iter_mut().zip(codes) {
                *y = f32::from(c as i8) * d;
            }
        } else {
            let (lo, hi) = dst.split_at_mut(BLOCK / 2);
            for ((y0, y1), &c) in lo.iter_mut().zip(hi.iter_mut()).zip(codes) {
                *y0 = (i32::from(c & 0x0f) - 8) as f32 * d;
                *y1 = (i32::from(c >> 4) - 8) as f32 * d;
            }
        }
    }
}

/// Appends the exact ggml block bytes of a `q8_0`/`q4_0` value: per block the f16 scale
/// (little-endian) followed by its codes.
pub fn gguf_blocks_into(q: &QuantizedRef<'_>, out: &mut Vec<u8>) -> Result<(), KernelError> {
    if q.scheme.block_size().is_none() {
        return Err(KernelError::Inconsistent(format!(
            "gguf blocks exist only for q8_0 and q4_0, got {}",
            q.scheme
        )));
    }
    q.validate()?;
    let per_block = q.scheme.code_bytes(BLOCK);
    out.reserve(q.codes.len() + 2 * q.scales.len());
    for (codes, &d) in q.codes.chunks_exact(per_block).zip(q.scales) {
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(codes);
    }
    Ok(())
}
