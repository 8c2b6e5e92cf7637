//! The linear schemes `int8`, `int8_asym`, `int4`, `int4_asym`, `int2`, `int2_asym`: one scale
//! (and min) per group.

use super::scan::{abs_max, min_max};
use super::{KernelError, QuantizedRef, Scheme, effective_group_size, round_half_away};

/// Largest code magnitude of a symmetric scheme, or number of steps of an asymmetric one.
fn levels(scheme: Scheme) -> f32 {
    match scheme {
        Scheme::Int8 => 127.0,
        Scheme::Int4 => 7.0,
        Scheme::Int8Asym => 255.0,
        Scheme::Int4Asym => 15.0,
        Scheme::Int2 => 1.0,
        _ => 3.0,
    }
}

/// Quantizes `x` group by group into one unpacked code byte per element (`codes.len() ==
/// x.len()`), pushing one scale (and, if asymmetric, one min) per group.
pub fn quantize_groups(
    x: &[f32],
    scheme: Scheme,
    group: usize,
    codes: &mut [u8],
    scales: &mut Vec<f32>,
    mins: &mut Vec<f32>,
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU supports AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { quantize_groups_avx2(x, scheme, group, codes, scales, mins) };
    }
    quantize_groups_portable(x, scheme, group, codes, scales, mins)
}

/// The same loop compiled for AVX2 (8 floats per instruction instead of 4). No FMA: results are
/// bit-identical to the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_groups_avx2(
    x: &[f32],
    scheme: Scheme,
    group: usize,
    codes: &mut [u8],
    scales: &mut Vec<f32>,
    mins: &mut Vec<f32>,
) -> Result<(), KernelError> {
    quantize_groups_portable(x, scheme, group, codes, scales, mins)
}

#[inline(always)]
fn quantize_groups_portable(
    x: &[f32],
    scheme: Scheme,
    group: usize,
    codes: &mut [u8],
    scales: &mut Vec<f32>,
    mins: &mut Vec<f32>,
) -> Result<(), KernelError> {
    scales.reserve(x.len().div_ceil(group.max(1)));
    // The common group sizes get their own copy of the loop with the size a constant, which the
    // compiler unrolls and vectorizes without remainder handling per group.
    match group {
        32 => group_loop(x, scheme, 32, codes, scales, mins),
        64 => group_loop(x, scheme, 64, codes, scales, mins),
        128 => group_loop(x, scheme, 128, codes, scales, mins),
        256 => group_loop(x, scheme, 256, codes, scales, mins),
        _ => group_loop(x, scheme, group, codes, scales, mins),
    }
}

#[inline(always)]
fn group_loop(
    x: &[f32],
    scheme: Scheme,
    group: usize,
    codes: &mut [u8],
    scales: &mut Vec<f32>,
    mins: &mut Vec<f32>,
) -> Result<(), KernelError> {
    let q = levels(scheme);
    for (gi, (g, c)) in x.chunks(group).zip(codes.chunks_mut(group)).enumerate() {
        let offset = gi * group;
        if scheme.is_asymmetric() {
            let (lo, hi) = min_max(g, offset)?;
            let range = hi - lo;
            if range.is_finite() {
                let d = range / q;
                scales.push(d);
                quantize_asym(g, lo, d, q, c);
            } else {
                // Only for ranges beyond f32::MAX: the same arithmetic in f64.
                let d = (f64::from(hi) - f64::from(lo)) / f64::from(q);
                scales.push(d as f32);
                quantize_asym_wide(g, lo, d, q, c);
            }
            mins.push(lo);
        } else {
            let d = abs_max(g, offset)? / q;
            scales.push(d);
            quantize_sym(g, d, q, c);
        }
    }
    Ok(())
}

#[inline(always)]
fn quantize_sym(g: &[f32], d: f32, q: f32, codes: &mut [u8]) {
    if d == 0.0 {
        codes.fill(0);
        return;
    }
    for (c, &x) in codes.iter_mut().zip(g) {
        *c = round_half_away(x / d, -q, q) as i8 as u8;
    }
}

#[inline(always)]
fn quantize_asym(g: &[f32], m: f32, d: f32, q: f32, codes: &mut [u8]) {
    if d == 0.0 {
        codes.fill(0);
        return;
    }
    for (c, &x) in codes.iter_mut().zip(g) {
        *c = round_half_away((x - m) / d, 0.0, q) as u8;
    }
}

#[inline(always)]
fn quantize_asym_wide(g: &[f32], m: f32, d: f64, q: f32, codes: &mut [u8]) {
    for (c, &x) in codes.iter_mut().zip(g) {
        let v = ((f64::from(x) - f64::from(m)) / d) as f32;
        *c = round_half_away(v, 0.0, q) as u8;
    }
}

/// Packs one code per byte into two per byte, element 2i in the low nibble, appending to `out`.
pub fn pack_nibbles(codes: &[u8], out: &mut Vec<u8>) {
    out.reserve(codes.len().div_ceil(2));
    let mut pairs = codes.chunks_exact(2);
    out.extend(pairs.by_ref().map(|p| (p[0] & 0x0f) | (p[1] << 4)));
    if let [last] = pairs.remainder() {
        out.push(last & 0x0f);
    }
}

/// Packs one code per byte into four per byte, element 4i in bits 0–1, appending to `out`.
pub fn pack_crumbs(codes: &[u8], out: &mut Vec<u8>) {
    out.reserve(codes.len().div_ceil(4));
    out.extend(codes.chunks(4).map(|c| {
        c.iter()
            .enumerate()
            .fold(0u8, |byte, (k, &code)| byte | ((code & 0b11) << (2 * k)))
    }));
}

/// Code `i` of `q` as an integer: signed for symmetric schemes, unsigned otherwise.
#[inline(always)]
fn code_at(codes: &[u8], scheme: Scheme, i: usize) -> f32 {
    match scheme {
        Scheme::Int8 => f32::from(codes[i] as i8),
        Scheme::Int8Asym => f32::from(codes[i]),
        Scheme::Int2 | Scheme::Int2Asym => {
            let crumb = (codes[i / 4] >> (2 * (i % 4))) & 0b11;
            if scheme == Scheme::Int2 {
                f32::from(((crumb << 6) as i8) >> 6)
            } else {
                f32::from(crumb)
            }
        }
        _ => {
            let byte = codes[i / 2];
            let nib = if i.is_multiple_of(2) {
                byte & 0x0f
            } else {
                byte >> 4
            };
            if scheme == Scheme::Int4 {
                f32::from(((nib << 4) as i8) >> 4)
            } else {
                f32::from(nib)
            }
        }
    }
}

/// Reconstructs a validated linear-scheme `q` into `out` (`out.len() == q.numel`).
pub fn dequantize(q: &QuantizedRef<'_>, out: &mut [f32]) {
    let group = effective_group_size(q.scheme, q.group_size, q.numel);
    let top = levels(q.scheme);
    // `validate` guarantees one scale (and min) per group, so the indexing below is in bounds.
    let groups = out.chunks_mut(group).zip(q.scales).enumerate();
    for (gi, (dst, &d)) in groups {
        let m = q.mins.and_then(|m| m.get(gi).copied()).unwrap_or(0.0);
        let start = gi * group;
        if (d.abs() * top + m.abs()) < f32::MAX {
            for (j, y) in dst.iter_mut().enumerate() {
                *y = d * code_at(q.codes, q.scheme, start + j) + m;
            }
        } else {
            // Near f32::MAX, d·q + m can overflow in f32 although the true value is finite.
            for (j, y) in dst.iter_mut().enumerate() {
                let v =
                    f64::from(d) * f64::from(code_at(q.codes, q.scheme, start + j)) + f64::from(m);
                *y = v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
            }
        }
    }
}
