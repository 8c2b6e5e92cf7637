//! GGUF/ggml `Q8_0` and `Q4_0`, bit-exact with ggml's reference `quantize_row_q8_0_ref` and
//! `quantize_row_q4_0_ref`: `id = 1/d` in f32, codes from `x * id`, `d` stored as f16.

use std::mem::MaybeUninit;

use half::f16;

use super::scan::{abs_max, min_max};
use super::{KernelError, QuantizedRef, Scheme, round_half_away};

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

/// Quantizes `x` (a whole number of blocks) with `Q8_0` or `Q4_0` into `codes`
/// (`scheme.code_bytes(x.len())` bytes) and one f16-rounded scale per block in `scales`. The
/// caller sizes both slices exactly, and on success every element of both has been written;
/// block and element indices in errors count within `x`.
pub fn quantize(
    x: &[f32],
    scheme: Scheme,
    codes: &mut [MaybeUninit<u8>],
    scales: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    check_len(scheme, x.len())?;
    if codes.len() != scheme.code_bytes(x.len()) || scales.len() != x.len() / BLOCK {
        return Err(KernelError::Internal(format!(
            "{scheme} output buffers sized wrong for {} elements",
            x.len()
        )));
    }
    quantize_blocks(x, scheme, codes, scales)
}

multiversion! {
    /// The block loop of [`quantize`], for the widest instruction set this CPU has.
    fn quantize_blocks / quantize_avx512 / quantize_avx2 = quantize_portable(
        x: &[f32],
        scheme: Scheme,
        codes: &mut [MaybeUninit<u8>],
        scales: &mut [MaybeUninit<f32>],
    ) -> Result<(), KernelError>
}

#[inline(always)]
fn quantize_portable(
    x: &[f32],
    scheme: Scheme,
    codes: &mut [MaybeUninit<u8>],
    scales: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    let per_block = scheme.code_bytes(BLOCK);
    let blocks = x
        .chunks_exact(BLOCK)
        .zip(codes.chunks_exact_mut(per_block))
        .zip(scales.iter_mut())
        .enumerate();
    for (b, ((blk, out), scale)) in blocks {
        if scheme == Scheme::Q8_0 {
            scale.write(q8_0_block(blk, b, out)?);
        } else {
            scale.write(q4_0_block(blk, b, out)?);
        }
    }
    Ok(())
}

/// One `Q8_0` block: codes `roundf(x * id)` with `d = max|x| / 127`, `id = 1/d`; returns the
/// f16-rounded scale.
#[inline(always)]
fn q8_0_block(blk: &[f32], b: usize, out: &mut [MaybeUninit<u8>]) -> Result<f32, KernelError> {
    let amax = abs_max(blk, b * BLOCK)?;
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let scale = f16_scale(Scheme::Q8_0, b, d)?;
    // |x * id| <= 127 (+ rounding) for every normal scale; the clamp only tames the
    // infinities of a subnormal `d` and never changes a code ggml would produce.
    for (c, &v) in out.iter_mut().zip(blk) {
        c.write(round_half_away(v * id, -128.0, 127.0) as i8 as u8);
    }
    Ok(scale)
}

/// One `Q4_0` block (16 bytes, element j low, j + 16 high): `d = max / -8` where `max` is the
/// signed value of largest magnitude (the first one wins a tie), codes
/// `min(15, trunc(x * id + 8.5))`; returns the f16-rounded scale.
#[inline(always)]
fn q4_0_block(blk: &[f32], b: usize, out: &mut [MaybeUninit<u8>]) -> Result<f32, KernelError> {
    let (lo, hi) = min_max(blk, b * BLOCK)?;
    // A select, not a branch: the sign of a block's largest value is a coin toss.
    let larger = if hi > -lo { hi } else { lo };
    let max = if hi != -lo {
        larger
    } else {
        // A tie in magnitude (or an all-zero block): the first of largest magnitude, exactly as
        // ggml's scalar loop finds it (which also fixes the sign of a zero scale).
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in blk {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        max
    };
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let scale = f16_scale(Scheme::Q4_0, b, d)?;
    let code = |v: f32| -> u8 {
        // x * id lies in [-8, 8], so v is in [0.5, 16.5] except for the infinities and NaN of
        // a subnormal `d`: max/min clamp those (NaN to 0) as the saturating cast did, and the
        // truncation of a value in [0, 15] is the `(int8_t)` of ggml followed by its MIN(15, ·).
        #[allow(clippy::manual_clamp)] // clamp would keep NaN; max/min turn it into 0
        let v = (v * id + 8.5).max(0.0).min(15.0);
        // SAFETY: `v` is finite and within [0, 15].
        #[allow(unsafe_code)]
        let t: i32 = unsafe { v.to_int_unchecked() };
        t as u8
    };
    let (first, second) = blk.split_at(BLOCK / 2);
    for ((o, &x0), &x1) in out.iter_mut().zip(first).zip(second) {
        o.write(code(x0) | (code(x1) << 4));
    }
    Ok(scale)
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

/// Appends the exact ggml block bytes of a ggml value: per `q8_0`/`q4_0` block the f16 scale
/// (little-endian) followed by its codes; the K-quants' codes are already ggml's blocks.
pub fn gguf_blocks_into(q: &QuantizedRef<'_>, out: &mut Vec<u8>) -> Result<(), KernelError> {
    if q.scheme.block_size().is_none() {
        return Err(KernelError::Inconsistent(format!(
            "gguf blocks exist only for q8_0, q4_0 and the K-quants, got {}",
            q.scheme
        )));
    }
    q.validate()?;
    if q.scheme.is_k_quant() {
        out.extend_from_slice(q.codes);
        return Ok(());
    }
    let per_block = q.scheme.code_bytes(BLOCK);
    out.reserve(q.codes.len() + 2 * q.scales.len());
    for (codes, &d) in q.codes.chunks_exact(per_block).zip(q.scales) {
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(codes);
    }
    Ok(())
}

/// ggml's `Q5_0` (`with_min` false) or `Q5_1` blocks of `x` (a whole number of blocks of 32),
/// byte-identical to `quantize_row_q5_0_ref`/`quantize_row_q5_1_ref`: per block the f16 `d`
/// (and f16 `m`), the 32 fifth bits, then 16 bytes of low nibbles (element j low, j + 16 high).
/// These are GGUF-only types: llama.cpp's fallback for K-quant rows that are not a multiple of 256.
pub fn q5_blocks(x: &[f32], with_min: bool, out: &mut Vec<u8>) -> Result<(), KernelError> {
    let name = if with_min { "q5_1" } else { "q5_0" };
    let half = |block: usize, v: f32| -> Result<[u8; 2], KernelError> {
        let h = f16::from_f32(v);
        if h.is_infinite() {
            return Err(KernelError::Inconsistent(format!(
                "{name} block {block} has scale {v}, which overflows f16 (max 65504)"
            )));
        }
        Ok(h.to_le_bytes())
    };
    if !x.len().is_multiple_of(BLOCK) {
        return Err(KernelError::Inconsistent(format!(
            "{name} needs a length that is a multiple of {BLOCK}, got {} elements",
            x.len()
        )));
    }
    min_max(x, 0)?;
    out.reserve(x.len() / BLOCK * if with_min { 24 } else { 22 });
    for (b, blk) in x.chunks_exact(BLOCK).enumerate() {
        let (d, m) = if with_min {
            let (mut lo, mut hi) = (f32::MAX, -f32::MAX);
            for &v in blk {
                if v < lo {
                    lo = v;
                }
                if v > hi {
                    hi = v;
                }
            }
            ((hi - lo) / 31.0, lo)
        } else {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in blk {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            (max / -16.0, 0.0)
        };
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half(b, d)?);
        if with_min {
            out.extend_from_slice(&half(b, m)?);
        }
        // C's (int8_t)/(uint8_t) of a value known to lie in [0, 32.5]: a truncation.
        let code = |v: f32| -> u8 {
            let t = if with_min {
                ((v - m) * id + 0.5) as i32
            } else {
                (v * id + 16.5) as i32
            };
            t.clamp(0, 31) as u8
        };
        let (first, second) = blk.split_at(BLOCK / 2);
        let mut qh = 0u32;
        let mut qs = [0u8; BLOCK / 2];
        for (j, ((q, &x0), &x1)) in qs.iter_mut().zip(first).zip(second).enumerate() {
            let (c0, c1) = (code(x0), code(x1));
            *q = (c0 & 0x0f) | ((c1 & 0x0f) << 4);
            qh |= u32::from((c0 & 0x10) >> 4) << j;
            qh |= u32::from((c1 & 0x10) >> 4) << (j + BLOCK / 2);
        }
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// A kernel call writing codes and scales.
    type Call<'a> = &'a dyn Fn(&mut [MaybeUninit<u8>], &mut [MaybeUninit<f32>]);

    /// Every build of the loop that this CPU can run gives the same bytes as the portable one.
    #[test]
    #[allow(unsafe_code)]
    fn every_instruction_set_gives_the_same_bytes() {
        let x: Vec<f32> = (0..32 * 701)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.37 - 370.5)
            .collect();
        for scheme in [Scheme::Q8_0, Scheme::Q4_0] {
            let run = |f: Call| {
                let mut codes = vec![MaybeUninit::new(0u8); scheme.code_bytes(x.len())];
                let mut scales = vec![MaybeUninit::new(0f32); x.len() / BLOCK];
                f(&mut codes, &mut scales);
                // SAFETY: every element was initialized above (and written by the kernel).
                let codes: Vec<u8> = codes
                    .into_iter()
                    .map(|m| unsafe { m.assume_init() })
                    .collect();
                let scales: Vec<f32> = scales
                    .into_iter()
                    .map(|m| unsafe { m.assume_init() })
                    .collect();
                (codes, scales)
            };
            let want = run(&|c, s| quantize_portable(&x, scheme, c, s).unwrap());
            #[cfg(target_arch = "x86_64")]
            {
                if crate::kernels::isa_test_can_run(Isa::Avx2) {
                    // SAFETY: AVX2 is present (checked just above).
                    let got = run(&|c, s| unsafe { quantize_avx2(&x, scheme, c, s).unwrap() });
                    assert_eq!(got, want, "avx2 {scheme}");
                }
                if crate::kernels::isa_test_can_run(Isa::Avx512) {
                    // SAFETY: AVX-512 F, BW and VL are present (checked just above).
                    let got = run(&|c, s| unsafe { quantize_avx512(&x, scheme, c, s).unwrap() });
                    assert_eq!(got, want, "avx512 {scheme}");
                }
            }
        }
    }
}
