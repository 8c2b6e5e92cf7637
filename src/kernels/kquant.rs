//! ggml's K-quants (super-blocks of 256 elements) in the `q` layout: `codes` holds the
//! super-blocks exactly as ggml and GGUF store them (so `gguf_blocks` is the identity), and
//! `scales`/`mins` carry each super-block's f32 `d`/`dmin` for SQL to read. The quantizers are
//! byte-identical to ggml's reference `quantize_row_q*_K_ref` (what `llama-quantize` runs without
//! an importance matrix): [`kquants`].

use std::mem::MaybeUninit;

use super::kquants::{self, KQuant, QK_K};
use super::scan::min_max;
use super::{KernelError, Method, QuantizedRef, Scheme};

/// The K-quant of a scheme.
pub(crate) fn kind(scheme: Scheme) -> Option<KQuant> {
    match scheme {
        Scheme::Q2K => Some(KQuant::Q2K),
        Scheme::Q3K => Some(KQuant::Q3K),
        Scheme::Q4K => Some(KQuant::Q4K),
        Scheme::Q5K => Some(KQuant::Q5K),
        Scheme::Q6K => Some(KQuant::Q6K),
        _ => None,
    }
}

fn write<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) -> Result<(), KernelError> {
    if dst.len() != src.len() {
        return Err(KernelError::Internal(format!(
            "output sized for {} values, got {}",
            dst.len(),
            src.len()
        )));
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
    Ok(())
}

/// Quantizes `x` (a whole number of super-blocks) into ggml's blocks in `codes` (q4_k with
/// [`Method::Search`]: ggml's reference blocks improved in the same layout), and each
/// block's f32 `d` into `scales` and `dmin` into `mins` (empty for q3_k and q6_k). The caller
/// sizes the slices exactly; on success every element has been written.
pub fn quantize(
    x: &[f32],
    scheme: Scheme,
    method: Method,
    codes: &mut [MaybeUninit<u8>],
    scales: &mut [MaybeUninit<f32>],
    mins: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    let Some(k) = kind(scheme) else {
        return Err(KernelError::Inconsistent(format!(
            "{scheme} is not a K-quant"
        )));
    };
    if !x.len().is_multiple_of(QK_K) {
        return Err(KernelError::NotBlockMultiple {
            scheme,
            block: QK_K,
            numel: x.len(),
        });
    }
    min_max(x, 0)?;
    let mut blocks = Vec::with_capacity(scheme.code_bytes(x.len()));
    // The length was checked above: an error here is a broken invariant.
    if method == Method::Search && k == KQuant::Q4K {
        kquants::quantize_q4k_search(x, &mut blocks).map_err(KernelError::Internal)?;
    } else {
        kquants::quantize_k(k, x, &mut blocks).map_err(KernelError::Internal)?;
    }
    let (d, dmin) = kquants::block_scales(k, &blocks).map_err(KernelError::Internal)?;
    if let Some((block, &scale)) = d
        .iter()
        .chain(&dmin)
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(KernelError::ScaleOverflow {
            scheme,
            block: block % d.len().max(1),
            scale,
        });
    }
    // Past f16's range ggml's arithmetic breaks down: a scale overflows to inf or NaN (refused
    // above), or, once x*x overflows f32, q6_k/q3_k take the all-zero path and write d = 0 for a
    // block of huge weights. A block with no scale but a weight of f16's max or more is refused.
    for (block, (chunk, (&d, &m))) in x.chunks(QK_K).zip(d.iter().zip(&dmin)).enumerate() {
        let largest = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
        if d == 0.0 && m == 0.0 && largest >= 65504.0 {
            return Err(KernelError::ScaleOverflow {
                scheme,
                block,
                scale: f32::INFINITY,
            });
        }
    }
    write(codes, &blocks)?;
    write(scales, &d)?;
    if scheme.is_asymmetric() {
        write(mins, &dmin)?;
    }
    Ok(())
}

/// Reconstructs a K-quant tensor (ggml's `dequantize_row_q*_K`) into `dst` (`q.numel` values).
pub fn dequantize(q: &QuantizedRef<'_>, dst: &mut [f32]) -> Result<(), KernelError> {
    let Some(k) = kind(q.scheme) else {
        return Err(KernelError::Internal(format!(
            "{} is not a K-quant",
            q.scheme
        )));
    };
    let mut out = Vec::with_capacity(q.numel);
    kquants::dequantize_k(k, q.codes, q.numel, &mut out).map_err(KernelError::Inconsistent)?;
    if out.len() != dst.len() {
        return Err(KernelError::Internal(format!(
            "{} blocks hold {} values, numel is {}",
            q.scheme,
            out.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(&out);
    Ok(())
}
