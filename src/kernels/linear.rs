//! The linear schemes `int8`, `int8_asym`, `int4`, `int4_asym`, `int2`, `int2_asym` and the
//! integer-zero-point schemes `int8_zp`, `int4_zp`, `int2_zp`: one scale (and min or zero point)
//! per group.
//!
//! A tensor is walked in tiles of [`TILE`] elements. Entering a group computes its scale (one
//! pass over the group, which then sits in L1); each tile's codes are written straight into the
//! output (8-bit) or into a small stack buffer that is packed into the output (4- and 2-bit), so
//! every byte of input is read from memory once and every byte of output written once.

use std::mem::MaybeUninit;

use super::scan::{abs_max, min_max};
use super::{KernelError, Method, QuantizedRef, Scheme, effective_group_size, round_half_away};

/// Elements quantized per tile: a multiple of 4, so a tile always packs into whole bytes.
const TILE: usize = 4096;

/// Largest code magnitude of a symmetric scheme, or number of steps of an asymmetric one.
fn levels(scheme: Scheme) -> f32 {
    match scheme {
        Scheme::Int8 => 127.0,
        Scheme::Int4 => 7.0,
        Scheme::Int8Asym | Scheme::Int8Zp => 255.0,
        Scheme::Int4Asym | Scheme::Int4Zp => 15.0,
        Scheme::Int2 => 1.0,
        _ => 3.0,
    }
}

/// How one group's elements become codes.
#[derive(Clone, Copy)]
enum Step {
    /// Scale 0: every code is 0.
    Zero,
    /// Symmetric: round(x / d) in [-q, q].
    Sym { d: f32, q: f32 },
    /// Asymmetric: round((x - m) / d) in [0, q].
    Asym { m: f32, d: f32, q: f32 },
    /// Asymmetric with a range beyond f32::MAX: the same arithmetic in f64.
    AsymWide { m: f32, d: f64, q: f32 },
    /// Integer zero point: round(x / d) + z in [0, q].
    Zp { d: f32, z: f32, q: f32 },
}

/// The scale, min and step of group `g`, whose first element has index `offset`.
#[inline(always)]
fn group_step(g: &[f32], scheme: Scheme, offset: usize) -> Result<(f32, f32, Step), KernelError> {
    let q = levels(scheme);
    if !scheme.is_asymmetric() {
        let d = abs_max(g, offset)? / q;
        let step = if d == 0.0 {
            Step::Zero
        } else {
            Step::Sym { d, q }
        };
        return Ok((d, 0.0, step));
    }
    let (lo, hi) = min_max(g, offset)?;
    if scheme.has_zero_point() {
        return zero_point_step(lo, hi, q).ok_or(KernelError::RangeOverflow {
            scheme,
            group: offset / g.len().max(1),
            lo,
            hi,
        });
    }
    let range = hi - lo;
    if range.is_finite() {
        let d = range / q;
        let step = if d == 0.0 {
            Step::Zero
        } else {
            Step::Asym { m: lo, d, q }
        };
        Ok((d, lo, step))
    } else {
        let d = (f64::from(hi) - f64::from(lo)) / f64::from(q);
        Ok((d as f32, lo, Step::AsymWide { m: lo, d, q }))
    }
}

/// The scale, zero point and step of a `_zp` group whose values lie in [lo, hi]: the range is
/// widened to include 0 (so 0 is exactly representable), d = (max − min) / q and
/// z = round(−min / d), the convention of GPTQ, AWQ and compressed-tensors. `None` when
/// max − min overflows f32: then d·(q − z) could too.
#[inline(always)]
fn zero_point_step(lo: f32, hi: f32, q: f32) -> Option<(f32, f32, Step)> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let range = hi - lo;
    if !range.is_finite() {
        return None;
    }
    let d = range / q;
    if d == 0.0 {
        return Some((0.0, 0.0, Step::Zero));
    }
    let z = round_half_away(-lo / d, 0.0, q) as f32;
    Some((d, z, Step::Zp { d, z, q }))
}

/// Candidates of [`Method::Search`]: the group's range times 1.05 down to 0.70.
const SEARCH_STEPS: usize = 16;

#[inline(always)]
fn search_shrink(t: usize) -> f32 {
    1.05 - 0.35 * t as f32 / SEARCH_STEPS as f32
}

/// The squared error of `g` quantized with `step`, each element rounded and reconstructed
/// exactly as [`quantize_run`] and [`dequantize`] do, summed in f64: the final judge of the
/// search.
#[inline(always)]
fn step_error(g: &[f32], step: Step) -> f64 {
    let sq = |v: f32, y: f32| {
        let r = f64::from(v) - f64::from(y);
        r * r
    };
    match step {
        Step::Zero => g.iter().map(|&v| sq(v, 0.0)).sum(),
        Step::Sym { d, q } => g
            .iter()
            .map(|&v| sq(v, d * round_half_away(v / d, -q, q) as f32 + 0.0))
            .sum(),
        Step::Asym { m, d, q } => g
            .iter()
            .map(|&v| sq(v, d * round_half_away((v - m) / d, 0.0, q) as f32 + m))
            .sum(),
        // The search never proposes the wide form; RTN's is kept as it is.
        Step::AsymWide { .. } => f64::INFINITY,
        Step::Zp { d, z, q } => g
            .iter()
            .map(|&v| {
                let c = (round_half_away(v / d, -z, q - z) + z as i32) as f32;
                sq(v, (c - z) * d)
            })
            .sum(),
    }
}

/// Rounds to the nearest integer, ties to even, for |v| < 2^22: one add and one subtract, which
/// vectorize (the search's scoring only; the codes written use [`round_half_away`]).
#[inline(always)]
fn rne(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (v + MAGIC) - MAGIC
}

/// Lanes of the search's f32 accumulators: independent sums the compiler keeps in vector
/// registers.
const SEARCH_LANES: usize = 8;

/// Σ over `g` of each of the `K` values `f(v)` returns, in [`SEARCH_LANES`] interleaved f32
/// accumulators per sum.
#[inline(always)]
fn lane_sums<const K: usize>(g: &[f32], f: impl Fn(f32) -> [f32; K]) -> [f32; K] {
    let mut acc = [[0f32; SEARCH_LANES]; K];
    let (chunks, rest) = g.as_chunks::<SEARCH_LANES>();
    for c in chunks {
        for (l, &v) in c.iter().enumerate() {
            let r = f(v);
            for k in 0..K {
                acc[k][l] += r[k];
            }
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        let r = f(v);
        for k in 0..K {
            acc[k][l] += r[k];
        }
    }
    acc.map(|a| a.iter().sum())
}

/// The search's fast score of a step: its squared error with the inverse scale multiplied in
/// and ties rounded to even, in f32 (within a rounding of [`step_error`]).
#[inline(always)]
fn approx_error(g: &[f32], step: Step) -> f32 {
    match step {
        Step::Sym { d, q } => {
            let inv = 1.0 / d;
            lane_sums(g, |v| {
                let r = v - d * rne(v * inv).max(-q).min(q);
                [r * r]
            })[0]
        }
        Step::Asym { m, d, q } => {
            let inv = 1.0 / d;
            lane_sums(g, |v| {
                let r = v - (d * rne((v - m) * inv).max(0.0).min(q) + m);
                [r * r]
            })[0]
        }
        Step::Zp { d, z, q } => {
            let inv = 1.0 / d;
            lane_sums(g, |v| {
                let r = v - d * (rne(v * inv) + z).max(0.0).min(q) + d * z;
                [r * r]
            })[0]
        }
        Step::Zero | Step::AsymWide { .. } => f32::INFINITY,
    }
}

/// Whether a candidate step is usable: a positive finite scale (and finite min).
#[inline(always)]
fn usable(step: Step) -> bool {
    match step {
        Step::Sym { d, .. } | Step::Zp { d, .. } => d.is_finite() && d > 0.0,
        Step::Asym { m, d, .. } => d.is_finite() && d > 0.0 && m.is_finite(),
        _ => false,
    }
}

/// The scale and min (or zero point) a step stores.
#[inline(always)]
fn stored(step: Step) -> (f32, f32, Step) {
    match step {
        Step::Sym { d, .. } => (d, 0.0, step),
        Step::Asym { m, d, .. } => (d, m, step),
        Step::Zp { d, z, .. } => (d, z, step),
        Step::Zero => (0.0, 0.0, step),
        Step::AsymWide { m, d, .. } => (d as f32, m, step),
    }
}

/// The candidates of one clipped range for group `g`: the step at that range, and its
/// least-squares refit for the codes it gives (the scale, or scale and min together).
#[inline(always)]
fn candidates(g: &[f32], rtn: Step, shrink: f32, z: f32) -> [Step; 2] {
    let none = Step::Zero;
    match rtn {
        Step::Sym { d, q } => {
            let d0 = d * shrink;
            let inv = 1.0 / d0;
            let [sxl, sll] = lane_sums(g, |v| {
                let c = rne(v * inv).max(-q).min(q);
                [v * c, c * c]
            });
            let refit = if sll > 0.0 { sxl / sll } else { 0.0 };
            [Step::Sym { d: d0, q }, Step::Sym { d: refit, q }]
        }
        Step::Asym { m, d, q } => {
            let range = d * q;
            let d0 = d * shrink;
            let m0 = m + range * (1.0 - shrink) / 2.0;
            let inv = 1.0 / d0;
            let [sc, scc, sx, sxc] = lane_sums(g, |v| {
                let c = rne((v - m0) * inv).max(0.0).min(q);
                [c, c * c, v, v * c]
            });
            let n = g.len() as f32;
            let det = n * scc - sc * sc;
            let refit = if det > 0.0 {
                let d1 = (n * sxc - sx * sc) / det;
                let m1 = (scc * sx - sc * sxc) / det;
                Step::Asym { m: m1, d: d1, q }
            } else {
                none
            };
            [Step::Asym { m: m0, d: d0, q }, refit]
        }
        Step::Zp { d, q, .. } => {
            let d0 = d * shrink;
            let inv = 1.0 / d0;
            let [sxk, skk] = lane_sums(g, |v| {
                let k = (rne(v * inv) + z).max(0.0).min(q) - z;
                [v * k, k * k]
            });
            let refit = if skk > 0.0 { sxk / skk } else { 0.0 };
            [Step::Zp { d: d0, z, q }, Step::Zp { d: refit, z, q }]
        }
        Step::Zero | Step::AsymWide { .. } => [none, none],
    }
}

/// The best of the candidates around RTN's `(d, m, step)` for group `g` ([`Method::Search`]):
/// for each of [`SEARCH_STEPS`] + 1 clipped ranges, the step at that range and its
/// least-squares refit, scored fast ([`approx_error`]); for zero points, the best range's scale
/// also with z ± 1. The winner is then judged exactly against RTN ([`step_error`]: the codes and
/// reconstruction as written) and kept only when strictly better, so no group is ever worse
/// than RTN's.
#[inline(always)]
fn search_step(g: &[f32], rtn: (f32, f32, Step)) -> (f32, f32, Step) {
    let z = match rtn.2 {
        Step::Zp { z, .. } => z,
        Step::Sym { .. } | Step::Asym { .. } => 0.0,
        Step::Zero | Step::AsymWide { .. } => return rtn,
    };
    let mut best = (rtn.2, approx_error(g, rtn.2));
    // A function, not a closure, so that it inlines into the instruction-set build it runs in.
    #[inline(always)]
    fn consider(g: &[f32], best: &mut (Step, f32), s: Step) {
        if usable(s) {
            let e = approx_error(g, s);
            if e < best.1 {
                *best = (s, e);
            }
        }
    }
    for t in 0..=SEARCH_STEPS {
        for s in candidates(g, rtn.2, search_shrink(t), z) {
            consider(g, &mut best, s);
        }
    }
    if let Step::Zp { d, z, q } = best.0 {
        let shrink = d / rtn.0.max(f32::MIN_POSITIVE);
        for z1 in [z - 1.0, z + 1.0] {
            if (0.0..=q).contains(&z1) {
                consider(g, &mut best, Step::Zp { d, z: z1, q });
                for s in candidates(g, rtn.2, shrink, z1) {
                    consider(g, &mut best, s);
                }
            }
        }
    }
    if step_error(g, best.0) < step_error(g, rtn.2) {
        stored(best.0)
    } else {
        rtn
    }
}

/// Writes one code byte per element of `x` into `codes` (`codes.len() == x.len()`).
#[inline(always)]
fn quantize_run(x: &[f32], step: Step, codes: &mut [u8]) {
    match step {
        Step::Zero => codes.fill(0),
        Step::Sym { d, q } => {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = round_half_away(v / d, -q, q) as i8 as u8;
            }
        }
        Step::Asym { m, d, q } => {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = round_half_away((v - m) / d, 0.0, q) as u8;
            }
        }
        Step::AsymWide { m, d, q } => {
            for (c, &v) in codes.iter_mut().zip(x) {
                let v = ((f64::from(v) - f64::from(m)) / d) as f32;
                *c = round_half_away(v, 0.0, q) as u8;
            }
        }
        Step::Zp { d, z, q } => {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (round_half_away(v / d, -z, q - z) + z as i32) as u8;
            }
        }
    }
}

/// Copies one code per byte (`out.len() == codes.len()`).
#[inline(always)]
fn pack_bytes(codes: &[u8], out: &mut [MaybeUninit<u8>]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        o.write(c);
    }
}

/// Packs one code per byte into two per byte, element 2i in the low nibble
/// (`out.len() == codes.len().div_ceil(2)`).
#[inline(always)]
fn pack_nibbles(codes: &[u8], out: &mut [MaybeUninit<u8>]) {
    let mut pairs = codes.chunks_exact(2);
    for (o, p) in out.iter_mut().zip(pairs.by_ref()) {
        o.write((p[0] & 0x0f) | (p[1] << 4));
    }
    if let ([last], Some(o)) = (pairs.remainder(), out.last_mut()) {
        o.write(last & 0x0f);
    }
}

/// Packs one code per byte into four per byte, element 4i in bits 0–1
/// (`out.len() == codes.len().div_ceil(4)`).
#[inline(always)]
fn pack_crumbs(codes: &[u8], out: &mut [MaybeUninit<u8>]) {
    let mut quads = codes.chunks_exact(4);
    for (o, c) in out.iter_mut().zip(quads.by_ref()) {
        o.write((c[0] & 3) | ((c[1] & 3) << 2) | ((c[2] & 3) << 4) | ((c[3] & 3) << 6));
    }
    let rest = quads.remainder();
    if !rest.is_empty()
        && let Some(o) = out.last_mut()
    {
        o.write(
            rest.iter()
                .enumerate()
                .fold(0u8, |byte, (k, &c)| byte | ((c & 3) << (2 * k))),
        );
    }
}

multiversion! {
    /// Quantizes `x` in groups of `group` elements (`group >= 1`) into packed `codes`
    /// (`scheme.code_bytes(x.len())` bytes), one scale per group in `scales` and, for asymmetric
    /// schemes, one min per group in `mins`. The caller sizes the three slices exactly
    /// ([`super::quantize_into_parallel`] does), and on success every element of all three has been
    /// written; element indices in errors count from 0 within `x`.
    pub fn quantize / quantize_avx512 / quantize_avx2 = quantize_portable(
        x: &[f32],
        scheme: Scheme,
        group: usize,
        method: Method,
        codes: &mut [MaybeUninit<u8>],
        scales: &mut [MaybeUninit<f32>],
        mins: &mut [MaybeUninit<f32>],
    ) -> Result<(), KernelError>
}

#[inline(always)]
fn quantize_portable(
    x: &[f32],
    scheme: Scheme,
    group: usize,
    method: Method,
    codes: &mut [MaybeUninit<u8>],
    scales: &mut [MaybeUninit<f32>],
    mins: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    let group = group.max(1);
    let groups = x.len().div_ceil(group);
    let asym = scheme.is_asymmetric();
    if codes.len() != scheme.code_bytes(x.len())
        || scales.len() != groups
        || mins.len() != if asym { groups } else { 0 }
    {
        return Err(KernelError::Internal(format!(
            "{scheme} output buffers sized wrong for {} elements in groups of {group}",
            x.len()
        )));
    }
    let bits = usize::from(scheme.bits());
    // Codes go to a tile in L1 first, then are packed (or, 8-bit, copied) into the output, so
    // every output byte is written exactly once.
    let mut tile = [0u8; TILE];
    let mut step = Step::Zero;
    let (mut next_group, mut gi) = (0usize, 0usize);
    for (t, xt) in x.chunks(TILE).enumerate() {
        let base = t * TILE;
        let buf = &mut tile[..xt.len()];
        let mut pos = 0;
        while pos < xt.len() {
            let at = base + pos;
            if at == next_group {
                let g = &x[at..x.len().min(at.saturating_add(group))];
                let mut chosen = group_step(g, scheme, at)?;
                if method == Method::Search {
                    chosen = search_step(g, chosen);
                }
                let (d, m, s) = chosen;
                scales[gi].write(d);
                if asym {
                    mins[gi].write(m);
                }
                step = s;
                gi += 1;
                next_group = at.saturating_add(group);
            }
            let end = xt.len().min(next_group - base);
            quantize_run(&xt[pos..end], step, &mut buf[pos..end]);
            pos = end;
        }
        let packed = &mut codes[base * bits / 8..][..(xt.len() * bits).div_ceil(8)];
        match bits {
            8 => pack_bytes(buf, packed),
            4 => pack_nibbles(buf, packed),
            _ => pack_crumbs(buf, packed),
        }
    }
    Ok(())
}

/// Widens packed codes to one f32 each (`out.len()` codes starting at the first bit of
/// `codes`): `BITS` bits per code, sign-extended when `SIGNED`.
#[inline(always)]
fn unpack<const BITS: u32, const SIGNED: bool>(codes: &[u8], out: &mut [f32]) {
    let per = (8 / BITS) as usize;
    let mask = ((1u16 << BITS) - 1) as u8;
    let decode = |v: u8| -> f32 {
        if SIGNED {
            f32::from(((v << (8 - BITS)) as i8) >> (8 - BITS))
        } else {
            f32::from(v)
        }
    };
    let full = out.len() / per;
    let mut whole = out.chunks_exact_mut(per);
    for (o, &b) in whole.by_ref().zip(codes) {
        for (k, y) in o.iter_mut().enumerate() {
            *y = decode((b >> (k as u32 * BITS)) & mask);
        }
    }
    let rest = whole.into_remainder();
    if let Some(&b) = codes.get(full) {
        for (k, y) in rest.iter_mut().enumerate() {
            *y = decode((b >> (k as u32 * BITS)) & mask);
        }
    }
}

multiversion! {
    /// Reconstructs a validated linear-scheme `q` into `out` (`out.len() == q.numel`).
    pub fn dequantize / dequantize_avx512 / dequantize_avx2 = dequantize_portable(
        q: &QuantizedRef<'_>,
        out: &mut [f32],
    )
}

#[inline(always)]
fn dequantize_portable(q: &QuantizedRef<'_>, out: &mut [f32]) {
    let group = effective_group_size(q.scheme, q.group_size, q.numel);
    let top = levels(q.scheme);
    let bits = usize::from(q.scheme.bits());
    let mut tile = [0f32; TILE];
    for (t, dst) in out.chunks_mut(TILE).enumerate() {
        let base = t * TILE;
        // `validate` guarantees the code bytes, and one scale (and min) per group: the slicing
        // and indexing below are in bounds. A tile starts on a whole byte (TILE % 4 == 0).
        let codes = q.codes.get(base * bits / 8..).unwrap_or_default();
        let c = &mut tile[..dst.len()];
        match q.scheme {
            Scheme::Int8 => unpack::<8, true>(codes, c),
            Scheme::Int8Asym | Scheme::Int8Zp => unpack::<8, false>(codes, c),
            Scheme::Int4 => unpack::<4, true>(codes, c),
            Scheme::Int4Asym | Scheme::Int4Zp => unpack::<4, false>(codes, c),
            Scheme::Int2 => unpack::<2, true>(codes, c),
            _ => unpack::<2, false>(codes, c),
        }
        let zp = q.scheme.has_zero_point();
        let mut pos = 0;
        while pos < dst.len() {
            let gi = (base + pos) / group;
            let end = dst.len().min((gi + 1) * group - base);
            let d = q.scales.get(gi).copied().unwrap_or(0.0);
            let m = q.mins.and_then(|m| m.get(gi).copied()).unwrap_or(0.0);
            let (ys, cs) = (&mut dst[pos..end], &c[pos..end]);
            if zp {
                // d·(q − z), in this order, as compressed-tensors' decompressor computes it;
                // |q − z| ≤ top, so d·(q − z) only overflows when the true value does.
                for (y, &c) in ys.iter_mut().zip(cs) {
                    *y = (c - m) * d;
                }
            } else if (d.abs() * top + m.abs()) < f32::MAX {
                for (y, &c) in ys.iter_mut().zip(cs) {
                    *y = d * c + m;
                }
            } else {
                // Near f32::MAX, d·q + m can overflow in f32 although the true value is finite.
                for (y, &c) in ys.iter_mut().zip(cs) {
                    let v = f64::from(d) * f64::from(c) + f64::from(m);
                    *y = v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
                }
            }
            pos = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// Code `i` of `q` as an integer, one element at a time: the reference for `dequantize`.
    #[inline(always)]
    fn code_at(codes: &[u8], scheme: Scheme, i: usize) -> f32 {
        match scheme {
            Scheme::Int8 => f32::from(codes[i] as i8),
            Scheme::Int8Asym | Scheme::Int8Zp => f32::from(codes[i]),
            Scheme::Int2 | Scheme::Int2Asym | Scheme::Int2Zp => {
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

    #[test]
    fn dequantize_matches_the_element_by_element_reference() {
        let x: Vec<f32> = (0..20_011)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.37 - 370.5)
            .collect();
        for scheme in Scheme::ALL.into_iter().filter(|s| s.block_size().is_none()) {
            for group in [1, 3, 5, 128, 4097, x.len()] {
                for len in [0, 1, 2, 3, 4095, 4097, x.len()] {
                    let x = &x[..len];
                    let mut b = super::super::QuantizedBuffers::default();
                    super::super::quantize_into(x, scheme, group, &mut b).unwrap();
                    let q = QuantizedRef {
                        scheme,
                        group_size: group,
                        numel: len,
                        codes: &b.codes,
                        scales: &b.scales,
                        mins: scheme.is_asymmetric().then_some(&b.mins[..]),
                    };
                    let mut got = vec![0f32; len];
                    dequantize(&q, &mut got);
                    let g = effective_group_size(scheme, group, len);
                    let want: Vec<f32> = (0..len)
                        .map(|i| {
                            let m = q.mins.map_or(0.0, |m| m[i / g]);
                            let c = code_at(q.codes, scheme, i);
                            if scheme.has_zero_point() {
                                (c - m) * q.scales[i / g]
                            } else {
                                q.scales[i / g] * c + m
                            }
                        })
                        .collect();
                    assert_eq!(got, want, "{scheme} group {group} len {len}");
                }
            }
        }
    }

    /// A kernel call writing codes, scales and mins.
    type Call<'a> =
        &'a dyn Fn(&mut [MaybeUninit<u8>], &mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]);

    /// Every build of the loop that this CPU can run gives the same bytes as the portable one.
    #[test]
    #[allow(unsafe_code)]
    fn every_instruction_set_gives_the_same_bytes() {
        let x: Vec<f32> = (0..20_011)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.37 - 370.5)
            .collect();
        for scheme in Scheme::ALL.into_iter().filter(|s| s.block_size().is_none()) {
            for group in [1, 3, 128, x.len()] {
                let groups = x.len().div_ceil(group);
                let run = |f: Call| {
                    let mut codes = vec![MaybeUninit::new(0u8); scheme.code_bytes(x.len())];
                    let mut scales = vec![MaybeUninit::new(0f32); groups];
                    let n_mins = if scheme.is_asymmetric() { groups } else { 0 };
                    let mut mins = vec![MaybeUninit::new(0f32); n_mins];
                    f(&mut codes, &mut scales, &mut mins);
                    // SAFETY: every element was initialized above (and written by the kernel).
                    let init = |v: Vec<MaybeUninit<f32>>| -> Vec<f32> {
                        v.into_iter().map(|m| unsafe { m.assume_init() }).collect()
                    };
                    let codes: Vec<u8> = codes
                        .into_iter()
                        .map(|m| unsafe { m.assume_init() })
                        .collect();
                    (codes, init(scales), init(mins))
                };
                let want = run(&|c, s, m| {
                    quantize_portable(&x, scheme, group, Method::Rtn, c, s, m).unwrap();
                });
                #[cfg(target_arch = "x86_64")]
                {
                    if crate::kernels::isa_test_can_run(Isa::Avx2) {
                        // SAFETY: AVX2 is present (checked just above).
                        let got = run(&|c, s, m| unsafe {
                            quantize_avx2(&x, scheme, group, Method::Rtn, c, s, m).unwrap();
                        });
                        assert_eq!(got, want, "avx2 {scheme} group {group}");
                    }
                    if crate::kernels::isa_test_can_run(Isa::Avx512) {
                        // SAFETY: AVX-512 F, BW and VL are present (checked just above).
                        let got = run(&|c, s, m| unsafe {
                            quantize_avx512(&x, scheme, group, Method::Rtn, c, s, m).unwrap();
                        });
                        assert_eq!(got, want, "avx512 {scheme} group {group}");
                    }
                }
            }
        }
    }
}
