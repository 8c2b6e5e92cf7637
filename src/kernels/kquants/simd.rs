//! Lane-parallel K-quant quantizers, byte-identical to the scalar transcription.
//!
//! Each SIMD lane replays exactly the scalar instruction sequence of one independent
//! sub-block (same f32 operations, same order, same operand grouping, no FMA): the
//! sub-block searches (`make_qkx2_quants`, `make_qx_quants`, `make_q3_quants`) run with
//! lane k = sub-block k of a group of super-blocks, every element step done by all lanes
//! in lockstep; data-dependent branches become per-lane masked selects. Lanes are plain
//! `[f32; W]` arrays with element-wise loops that LLVM auto-vectorizes; the same
//! `#[inline(always)]` body is compiled for AVX-512, AVX2 and baseline x86-64 (or any
//! other target) and picked at run time, so every build produces the same bytes.
//!
//! Instead of copying the candidate levels of an accepted step (a masked 32-wide blend
//! per step), each lane records the (iscale, min) that produced its accepted levels; the
//! levels are recomputed from them only for sub-blocks whose quantized scale is 0 (the
//! only case where ggml keeps the search's levels). Recomputing runs the identical ops.
#![allow(clippy::manual_clamp)] // MIN/MAX kept in C's order; clamp would assert lo <= hi
#![allow(clippy::needless_range_loop)] // lane loops index several arrays in lockstep

use super::search::{GROUP_MAX_EPS, fp16_to_fp32, fp32_to_fp16, get_scale_min_k4, nearest_int};
use super::{KQuant, QK_K};
use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct F<const W: usize>([f32; W]);

#[derive(Clone, Copy)]
struct M<const W: usize>([bool; W]);

impl<const W: usize> F<W> {
    #[inline(always)]
    fn splat(v: f32) -> F<W> {
        F([v; W])
    }
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> F<W> {
        let mut r = [0.0f32; W];
        for k in 0..W {
            r[k] = f(self.0[k]);
        }
        F(r)
    }
    #[inline(always)]
    fn zip(self, o: F<W>, f: impl Fn(f32, f32) -> f32) -> F<W> {
        let mut r = [0.0f32; W];
        for k in 0..W {
            r[k] = f(self.0[k], o.0[k]);
        }
        F(r)
    }
    #[inline(always)]
    fn cmp(self, o: F<W>, f: impl Fn(f32, f32) -> bool) -> M<W> {
        let mut r = [false; W];
        for k in 0..W {
            r[k] = f(self.0[k], o.0[k]);
        }
        M(r)
    }
    #[inline(always)]
    fn lt(self, o: F<W>) -> M<W> {
        self.cmp(o, |a, b| a < b)
    }
    #[inline(always)]
    fn gt(self, o: F<W>) -> M<W> {
        self.cmp(o, |a, b| a > b)
    }
    #[inline(always)]
    fn abs(self) -> F<W> {
        self.map(f32::abs)
    }
    /// `MAX(lo, MIN(hi, nearest_int(f)))` for lanes where |f| < 2^22 (then the 1.5*2^23 trick is
    /// exactly round-half-even of f, since 1.5*2^23 is even); callers guarantee the range, else use
    /// `nint_clamp`. With SSE4.1+ (T != T_SCALAR) the rounding is one `roundps`.
    #[inline(always)]
    fn nint_clamp_fast<const T: u8>(self, lo: i32, hi: i32) -> F<W> {
        let (lo, hi) = (lo as f32, hi as f32);
        let mut r = [0.0f32; W];
        for k in 0..W {
            let v = if T == T_SCALAR {
                (self.0[k] + 12582912.0f32) - 12582912.0f32
            } else {
                self.0[k].round_ties_even()
            };
            let v = if v > hi { hi } else { v };
            r[k] = if v < lo { lo } else { v };
        }
        F(r)
    }
    /// ggml's `MAX(lo, MIN(hi, nearest_int(f)))` per lane, returned as f32 (exact: |result| < 2^23).
    #[inline(always)]
    fn nint_clamp(self, lo: i32, hi: i32) -> F<W> {
        let mut r = [0.0f32; W];
        for k in 0..W {
            let i = ((self.0[k] + 12582912.0f32).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000;
            r[k] = i.min(hi).max(lo) as f32;
        }
        F(r)
    }
}

impl<const W: usize> M<W> {
    #[inline(always)]
    fn sel(self, a: F<W>, b: F<W>) -> F<W> {
        let mut r = [0.0f32; W];
        for k in 0..W {
            r[k] = if self.0[k] { a.0[k] } else { b.0[k] };
        }
        F(r)
    }
    #[inline(always)]
    fn and(self, o: M<W>) -> M<W> {
        let mut r = [false; W];
        for k in 0..W {
            r[k] = self.0[k] & o.0[k];
        }
        M(r)
    }
    #[inline(always)]
    fn not(self) -> M<W> {
        let mut r = [false; W];
        for k in 0..W {
            r[k] = !self.0[k];
        }
        M(r)
    }
    #[inline(always)]
    fn any(self) -> bool {
        self.0.iter().fold(false, |a, &b| a | b)
    }
    #[inline(always)]
    fn all(self) -> bool {
        self.0.iter().fold(true, |a, &b| a & b)
    }
    #[inline(always)]
    fn or(self, o: M<W>) -> M<W> {
        let mut r = [false; W];
        for k in 0..W {
            r[k] = self.0[k] | o.0[k];
        }
        M(r)
    }
}

macro_rules! binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const W: usize> $tr for F<W> {
            type Output = F<W>;
            #[inline(always)]
            fn $f(self, o: F<W>) -> F<W> { self.zip(o, |a, b| a $op b) }
        }
    };
}
binop!(Add, add, +);
binop!(Sub, sub, -);
binop!(Mul, mul, *);
binop!(Div, div, /);
impl<const W: usize> Neg for F<W> {
    type Output = F<W>;
    #[inline(always)]
    fn neg(self) -> F<W> {
        self.map(|a| -a)
    }
}

/// Which transpose kernel a body instantiation uses (pure data movement, no arithmetic,
/// so every variant yields the same lanes).
const T_SCALAR: u8 = 0;
#[cfg(target_arch = "x86_64")]
const T_AVX2: u8 = 1;
#[cfg(target_arch = "x86_64")]
const T_AVX512: u8 = 2;

/// Transposes W consecutive sub-blocks of N values: t[i].0[k] = x[N*k + i].
#[inline(always)]
fn transpose<const W: usize, const N: usize, const T: u8>(x: &[f32]) -> [F<W>; N] {
    assert!(x.len() >= N * W && N % 16 == 0 && W % 16 == 0);
    let mut t = [F::splat(0.0); N];
    match T {
        #[cfg(target_arch = "x86_64")]
        T_AVX512 | T_AVX2 => {
            let dst = t.as_mut_ptr().cast::<f32>();
            let tile = if T == T_AVX512 { 16 } else { 8 };
            for kb in (0..W).step_by(tile) {
                for ib in (0..N).step_by(tile) {
                    // SAFETY: rows kb..kb+tile of x (stride N) and columns ib..ib+tile stay inside
                    // x (len >= N*W, asserted); the destination tile lies inside t (N rows of W
                    // floats, contiguous because F is repr(C) over [f32; W]). The body is only
                    // instantiated with T_AVX512/T_AVX2 from functions compiled with those features,
                    // which run only after runtime detection.
                    #[allow(unsafe_code)]
                    unsafe {
                        let src = x.as_ptr().add(kb * N + ib);
                        let d = dst.add(ib * W + kb);
                        if T == T_AVX512 {
                            tr16_avx512(src, N, d, W)
                        } else {
                            tr8_avx2(src, N, d, W)
                        }
                    }
                }
            }
        }
        _ => {
            for k in 0..W {
                for i in 0..N {
                    t[i].0[k] = x[N * k + i];
                }
            }
        }
    }
    t
}

/// 16x16 f32 transpose: dst[i*ds + k] = src[k*ss + i].
/// # Safety
/// The CPU must support AVX-512F; src rows k*ss..k*ss+16 and dst rows i*ds..i*ds+16
/// (k, i < 16) must be valid for reads / writes (unaligned is fine).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn tr16_avx512(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): AVX-512F is enabled for this fn and the caller guarantees the CPU
    // has it; the 16 loads/stores stay inside the row ranges the caller guarantees.
    let mut r = [_mm512_setzero_ps(); 16];
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..16 {
        // SAFETY: row k of src is readable for 16 floats (this fn's contract).
        r[k] = unsafe { _mm512_loadu_ps(src.add(k * ss)) };
    }
    for q in 0..8 {
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    for q in 0..4 {
        let b = 4 * q;
        r[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        r[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        r[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        r[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    for h in 0..2 {
        let b = 8 * h;
        for j in 0..4 {
            t[b + j] = _mm512_shuffle_f32x4::<0x88>(r[b + j], r[b + 4 + j]);
            t[b + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(r[b + j], r[b + 4 + j]);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
    }
    for i in 0..16 {
        // SAFETY: row i of dst is writable for 16 floats (this fn's contract).
        unsafe { _mm512_storeu_ps(dst.add(i * ds), r[i]) };
    }
}

/// 8x8 f32 transpose: dst[i*ds + k] = src[k*ss + i].
/// # Safety
/// The CPU must support AVX2; src rows k*ss..k*ss+8 and dst rows i*ds..i*ds+8 (k, i < 8)
/// must be valid for reads / writes (unaligned is fine).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn tr8_avx2(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): AVX2 is enabled for this fn and the caller guarantees the CPU has
    // it; the 8 loads/stores stay inside the row ranges the caller guarantees.
    let mut r = [_mm256_setzero_ps(); 8];
    let mut t = [_mm256_setzero_ps(); 8];
    for k in 0..8 {
        // SAFETY: row k of src is readable for 8 floats (this fn's contract).
        r[k] = unsafe { _mm256_loadu_ps(src.add(k * ss)) };
    }
    for q in 0..4 {
        t[2 * q] = _mm256_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm256_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    for q in 0..2 {
        let b = 4 * q;
        r[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
        r[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        r[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        r[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    for j in 0..4 {
        t[j] = _mm256_permute2f128_ps::<0x20>(r[j], r[4 + j]);
        t[4 + j] = _mm256_permute2f128_ps::<0x31>(r[j], r[4 + j]);
    }
    for i in 0..8 {
        // SAFETY: row i of dst is writable for 8 floats (this fn's contract).
        unsafe { _mm256_storeu_ps(dst.add(i * ds), t[i]) };
    }
}

// ------------------------------------------------------------ lane searches

/// Per-lane result of `make_qkx2_quants`: scale, the_min, and how to rebuild its levels.
struct Qkx2<const W: usize> {
    scale: F<W>,
    the_min: F<W>,
    /// Levels = MAX(0, MIN(nmax, nearest_int(acc_iscale*(x - acc_min)))), or 0 if `trivial`.
    acc_iscale: F<W>,
    acc_min: F<W>,
    trivial: M<W>,
}

/// Below this magnitude nearest_int's bit trick equals round-half-even (`nint_clamp_fast`).
const FAST_LIMIT: f32 = 4_000_000.0;

/// One candidate's level pass of `make_qkx2_quants`: levels into laux, (sum_l, sum_l2, sum_xl).
#[inline(always)]
fn qkx2_sums<const W: usize, const N: usize, const T: u8, const FAST: bool>(
    nmax: i32,
    x: &[F<W>; N],
    weights: &[F<W>; N],
    iscale: F<W>,
    min: F<W>,
    laux: &mut [F<W>; N],
) -> (F<W>, F<W>, F<W>) {
    let zero = F::splat(0.0);
    let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
    for i in 0..N {
        let t = iscale * (x[i] - min);
        let lf = if FAST {
            t.nint_clamp_fast::<T>(0, nmax)
        } else {
            t.nint_clamp(0, nmax)
        };
        laux[i] = lf;
        let wl = weights[i] * lf;
        sum_l = sum_l + wl;
        sum_l2 = sum_l2 + wl * lf;
        sum_xl = sum_xl + wl * x[i];
    }
    (sum_l, sum_l2, sum_xl)
}

/// Search state of `make_qkx2_quants` for W lanes (see `qkx2_lanes`).
struct Qkx2State<'a, const W: usize, const N: usize> {
    x: &'a [F<W>; N],
    weights: [F<W>; N],
    laux: [F<W>; N],
    sum_w: F<W>,
    sum_x: F<W>,
    xmin: F<W>,
    max: F<W>,
    min: F<W>,
    finite: M<W>,
    trivial: M<W>,
    live: M<W>,
    scale: F<W>,
    best_error: F<W>,
    acc_iscale: F<W>,
    acc_min: F<W>,
}

/// First part of `make_qkx2_quants`: weights, min/max, sums, initial levels and error.
#[inline(always)]
fn qkx2_init<const W: usize, const N: usize>(
    nmax: i32,
    x: &[F<W>; N],
    av_x: Option<F<W>>,
    use_mad: bool,
) -> Qkx2State<'_, W, N> {
    let zero = F::splat(0.0);
    let wt = |v: F<W>| match av_x {
        Some(a) => a + v.abs(),
        None => v.abs(),
    };
    let mut weights = [zero; N];
    weights[0] = wt(x[0]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    let mut nonfinite = x[0] * zero; // NaN iff some x is inf or NaN (only used for the fast-path guard)
    for i in 1..N {
        min = x[i].lt(min).sel(x[i], min);
        max = x[i].gt(max).sel(x[i], max);
        let w = wt(x[i]);
        weights[i] = w;
        sum_w = sum_w + w;
        sum_x = sum_x + w * x[i];
        nonfinite = nonfinite + x[i] * zero;
    }
    let finite = nonfinite.cmp(zero, |a, b| a == b);
    let xmin = min; // every x lies in [xmin, max] when finite
    min = min.gt(zero).sel(zero, min);
    let trivial = max.cmp(min, |a, b| a == b);
    let iscale = F::splat(nmax as f32) / (max - min);
    let scale = F::splat(1.0) / iscale;
    let mut best_error = zero;
    for i in 0..N {
        let lf = (iscale * (x[i] - min)).nint_clamp(0, nmax);
        let d = scale * lf + min - x[i];
        let diff = if use_mad { d.abs() } else { d * d };
        best_error = best_error + weights[i] * diff;
    }
    Qkx2State {
        x,
        weights,
        laux: [zero; N],
        sum_w,
        sum_x,
        xmin,
        max,
        min,
        finite,
        trivial,
        live: trivial.not(),
        scale,
        best_error,
        acc_iscale: iscale,
        acc_min: min,
    }
}

/// One candidate step `is` of `make_qkx2_quants`.
#[inline(always)]
fn qkx2_step<const W: usize, const N: usize, const T: u8>(
    st: &mut Qkx2State<'_, W, N>,
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    is: i32,
    use_mad: bool,
) {
    let zero = F::splat(0.0);
    let x = st.x;
    let min = st.min;
    let iscale = F::splat(rmin + rdelta * is as f32 + nmax as f32) / (st.max - min);
    // Fast rounding is exact for a lane if all iscale*(x - min) are below FAST_LIMIT: rounding is
    // monotone, so they lie between iscale*(xmin - min) and iscale*(max - min). Trivial lanes
    // (max == min) are never used.
    let lim = F::splat(FAST_LIMIT);
    let lo_ok = (iscale * (st.xmin - min)).abs().lt(lim);
    let hi_ok = (iscale * (st.max - min)).abs().lt(lim);
    let fast = st.trivial.or(st.finite.and(lo_ok).and(hi_ok)).all();
    let (sum_l, sum_l2, sum_xl) = if fast {
        qkx2_sums::<W, N, T, true>(nmax, x, &st.weights, iscale, min, &mut st.laux)
    } else {
        qkx2_sums::<W, N, T, false>(nmax, x, &st.weights, iscale, min, &mut st.laux)
    };
    let (sum_w, sum_x) = (st.sum_w, st.sum_x);
    let d = sum_w * sum_l2 - sum_l * sum_l;
    let dpos = d.gt(zero).and(st.live);
    if !dpos.any() {
        return;
    }
    let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
    let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
    let mpos = this_min.gt(zero);
    this_min = mpos.sel(zero, this_min);
    this_scale = mpos.sel(sum_xl / sum_l2, this_scale);
    let mut cur_error = zero;
    for i in 0..N {
        let dd = this_scale * st.laux[i] + this_min - x[i];
        let diff = if use_mad { dd.abs() } else { dd * dd };
        cur_error = cur_error + st.weights[i] * diff;
    }
    let acc = dpos.and(cur_error.lt(st.best_error));
    st.acc_iscale = acc.sel(iscale, st.acc_iscale);
    st.acc_min = acc.sel(min, st.acc_min);
    st.best_error = acc.sel(cur_error, st.best_error);
    st.scale = acc.sel(this_scale, st.scale);
    // C keeps searching with the updated min.
    st.min = acc.sel(this_min, min);
}

#[inline(always)]
fn qkx2_finish<const W: usize, const N: usize>(st: &Qkx2State<'_, W, N>) -> Qkx2<W> {
    let zero = F::splat(0.0);
    Qkx2 {
        scale: st.trivial.sel(zero, st.scale),
        the_min: -st.min,
        acc_iscale: st.acc_iscale,
        acc_min: st.acc_min,
        trivial: st.trivial,
    }
}

/// `make_qkx2_quants` (nstep >= 1) for W independent sub-blocks of N values.
/// Weights are av_x + |x| (Q4_K/Q5_K) when `av_x` is given, else |x| (Q2_K).
#[inline(always)]
fn qkx2_lanes<const W: usize, const N: usize, const T: u8>(
    nmax: i32,
    x: &[F<W>; N],
    av_x: Option<F<W>>,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> Qkx2<W> {
    let mut st = qkx2_init(nmax, x, av_x, use_mad);
    for is in 0..=nstep {
        qkx2_step::<W, N, T>(&mut st, nmax, rmin, rdelta, is, use_mad);
    }
    qkx2_finish(&st)
}

/// Two independent `qkx2_lanes` searches advanced candidate by candidate in one loop, so the
/// out-of-order core overlaps one search's latency (divisions, reductions) with the other's work.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn qkx2_lanes2<const W: usize, const N: usize, const T: u8>(
    nmax: i32,
    xa: &[F<W>; N],
    ava: Option<F<W>>,
    xb: &[F<W>; N],
    avb: Option<F<W>>,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (Qkx2<W>, Qkx2<W>) {
    let mut sa = qkx2_init(nmax, xa, ava, use_mad);
    let mut sb = qkx2_init(nmax, xb, avb, use_mad);
    for is in 0..=nstep {
        qkx2_step::<W, N, T>(&mut sa, nmax, rmin, rdelta, is, use_mad);
        qkx2_step::<W, N, T>(&mut sb, nmax, rmin, rdelta, is, use_mad);
    }
    (qkx2_finish(&sa), qkx2_finish(&sb))
}

/// Rebuilds lane k's accepted `make_qkx2_quants` levels (same ops as the search).
#[inline(always)]
fn qkx2_levels<const W: usize>(r: &Qkx2<W>, k: usize, nmax: i32, x: &[f32], l: &mut [u8]) {
    if r.trivial.0[k] {
        l.iter_mut().for_each(|v| *v = 0);
        return;
    }
    let (is, m) = (r.acc_iscale.0[k], r.acc_min.0[k]);
    for (li, &xi) in l.iter_mut().zip(x) {
        *li = nearest_int(is * (xi - m)).min(nmax).max(0) as u8;
    }
}

/// Rounds (fast path: finite, |t| < 2^22) and applies only the clamps flagged: a clamp is left out
/// only where the caller proved it can never change the value (see `qx_lanes`).
#[inline(always)]
fn nint_fast_opt<const W: usize, const T: u8, const LO: bool, const HI: bool>(
    t: F<W>,
    lo: i32,
    hi: i32,
) -> F<W> {
    let (lo, hi) = (lo as f32, hi as f32);
    let mut r = [0.0f32; W];
    for k in 0..W {
        let v = if T == T_SCALAR {
            (t.0[k] + 12582912.0f32) - 12582912.0f32
        } else {
            t.0[k].round_ties_even()
        };
        let v = if HI && v > hi { hi } else { v };
        r[k] = if LO && v < lo { lo } else { v };
    }
    F(r)
}

/// Two candidates of `make_qx_quants` in one pass (independent add chains overlap):
/// [(sumlx, suml2); 2], each sum in C's order.
#[inline(always)]
fn qx_sums2<const W: usize, const T: u8, const FAST: bool, const LO: bool, const HI: bool>(
    nmax: i32,
    x: &[F<W>; 16],
    w: &[F<W>; 16],
    wx: &[F<W>; 16],
    ia: F<W>,
    ib: F<W>,
) -> [(F<W>, F<W>); 2] {
    let zero = F::splat(0.0);
    let (mut lxa, mut l2a, mut lxb, mut l2b) = (zero, zero, zero, zero);
    for i in 0..16 {
        let (ta, tb) = (ia * x[i], ib * x[i]);
        let (la, lb) = if FAST {
            (
                nint_fast_opt::<W, T, LO, HI>(ta, -nmax, nmax - 1),
                nint_fast_opt::<W, T, LO, HI>(tb, -nmax, nmax - 1),
            )
        } else {
            (
                ta.nint_clamp(-nmax, nmax - 1),
                tb.nint_clamp(-nmax, nmax - 1),
            )
        };
        lxa = lxa + wx[i] * la;
        l2a = l2a + w[i] * la * la;
        lxb = lxb + wx[i] * lb;
        l2b = l2b + w[i] * lb * lb;
    }
    [(lxa, l2a), (lxb, l2b)]
}

/// Search state of `make_qx_quants` (see `qx_lanes`).
struct QxState<const W: usize> {
    scale: F<W>,
    best: F<W>,
    acc_iscale: F<W>,
}

/// Candidates `is_a`, `is_b` (in that order) of `make_qx_quants`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn qx_pair<const W: usize, const T: u8, const FAST: bool, const LO: bool, const HI: bool>(
    st: &mut QxState<W>,
    nmax: i32,
    max: F<W>,
    x: &[F<W>; 16],
    w: &[F<W>; 16],
    wx: &[F<W>; 16],
    is_a: i32,
    is_b: i32,
) {
    let zero = F::splat(0.0);
    let nmaxf = nmax as f32;
    let ia = F::splat(-(nmaxf + 0.1f32 * is_a as f32)) / max;
    let ib = F::splat(-(nmaxf + 0.1f32 * is_b as f32)) / max;
    let sums = qx_sums2::<W, T, FAST, LO, HI>(nmax, x, w, wx, ia, ib);
    for (iscale, (sumlx, suml2)) in [(ia, sums[0]), (ib, sums[1])] {
        let acc = suml2.gt(zero).and((sumlx * sumlx).gt(st.best * suml2));
        st.scale = acc.sel(sumlx / suml2, st.scale);
        st.best = acc.sel(st.scale * sumlx, st.best);
        st.acc_iscale = acc.sel(iscale, st.acc_iscale);
    }
}

/// The 18 candidates is = -9..=9 (is != 0) of `make_qx_quants`, in C's order, two per pass.
#[inline(always)]
fn qx_candidates<const W: usize, const T: u8, const FAST: bool>(
    st: &mut QxState<W>,
    nmax: i32,
    max: F<W>,
    x: &[F<W>; 16],
    w: &[F<W>; 16],
    wx: &[F<W>; 16],
) {
    // Clamps that cannot bind on the fast path (all x finite, |x| <= amax = |max| for live
    // lanes; all-zero lanes are discarded). iscale = -(nmax + 0.1*is)/max, so every
    // |t| = |iscale*x| <= (nmax + 0.1*is)*(1 + 2^-24)^2 after the two roundings:
    //   is <= -6: |t| <= 31.4000x < nmax - 0.5 -> nearest_int in [-31, 31], no clamp binds;
    //   is <=  4: |t| <= 32.4000x < nmax + 0.5 -> nearest_int >= -nmax, only MIN(nmax-1, .) binds.
    // (Only for nmax = 32, q6_k; otherwise every clamp is kept.)
    if FAST && nmax == 32 {
        qx_pair::<W, T, true, false, false>(st, nmax, max, x, w, wx, -9, -8);
        qx_pair::<W, T, true, false, false>(st, nmax, max, x, w, wx, -7, -6);
        qx_pair::<W, T, true, false, true>(st, nmax, max, x, w, wx, -5, -4);
        qx_pair::<W, T, true, false, true>(st, nmax, max, x, w, wx, -3, -2);
        qx_pair::<W, T, true, false, true>(st, nmax, max, x, w, wx, -1, 1);
        qx_pair::<W, T, true, false, true>(st, nmax, max, x, w, wx, 2, 3);
        qx_pair::<W, T, true, true, true>(st, nmax, max, x, w, wx, 4, 5);
        qx_pair::<W, T, true, true, true>(st, nmax, max, x, w, wx, 6, 7);
        qx_pair::<W, T, true, true, true>(st, nmax, max, x, w, wx, 8, 9);
    } else {
        for (a, b) in [
            (-9, -8),
            (-7, -6),
            (-5, -4),
            (-3, -2),
            (-1, 1),
            (2, 3),
            (4, 5),
            (6, 7),
            (8, 9),
        ] {
            qx_pair::<W, T, FAST, true, true>(st, nmax, max, x, w, wx, a, b);
        }
    }
}

/// `make_qx_quants(16, nmax, x, L, 1, NULL)` for W sub-blocks: (scale, acc_iscale, zero-lane mask).
#[inline(always)]
fn qx_lanes<const W: usize, const T: u8>(nmax: i32, x: &[F<W>; 16]) -> (F<W>, F<W>, M<W>) {
    let zero = F::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for &xi in x.iter() {
        let ax = xi.abs();
        let m = ax.gt(amax);
        amax = m.sel(ax, amax);
        max = m.sel(xi, max);
    }
    let allzero = amax.lt(F::splat(GROUP_MAX_EPS));
    let nmaxf = nmax as f32;
    let iscale = F::splat(-nmaxf) / max;
    // (Element-wise work is kept inside loops that carry a sequential reduction: LLVM then
    // vectorizes across lanes; a purely element-wise loop over i gets vectorized over i with
    // gathers instead.)
    let mut w = [zero; 16];
    let mut wx = [zero; 16];
    let (mut sumlx, mut suml2) = (zero, zero);
    let mut nonfinite = zero;
    for i in 0..16 {
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
        let lf = (iscale * x[i]).nint_clamp(-nmax, nmax - 1);
        sumlx = sumlx + wx[i] * lf;
        suml2 = suml2 + w[i] * lf * lf;
        nonfinite = nonfinite + x[i] * zero;
    }
    // Fast rounding is exact when every x is finite: |iscale*x| <= (nmax+0.9)*|x|/amax (+ulps)
    // for live lanes (amax >= GROUP_MAX_EPS); all-zero lanes are discarded.
    let fast = allzero.or(nonfinite.cmp(zero, |a, b| a == b)).all();
    let scale = suml2.cmp(zero, |a, b| a != b).sel(sumlx / suml2, zero);
    let mut st = QxState {
        scale,
        best: scale * sumlx,
        acc_iscale: iscale,
    };
    if fast {
        qx_candidates::<W, T, true>(&mut st, nmax, max, x, &w, &wx);
    } else {
        qx_candidates::<W, T, false>(&mut st, nmax, max, x, &w, &wx);
    }
    (allzero.sel(zero, st.scale), st.acc_iscale, allzero)
}

/// `make_q3_quants(16, nmax, x, L, true)` for W sub-blocks: (scale, levels L in -nmax..nmax
/// as f32 (ggml stores L+nmax), all-zero mask (ggml's levels are then 0, not nmax)).
#[inline(always)]
fn q3_lanes<const W: usize>(nmax: i32, x: &[F<W>; 16]) -> (F<W>, [F<W>; 16], M<W>) {
    let zero = F::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for &xi in x.iter() {
        let ax = xi.abs();
        let m = ax.gt(amax);
        amax = m.sel(ax, amax);
        max = m.sel(xi, max);
    }
    let allzero = amax.lt(F::splat(GROUP_MAX_EPS));
    let iscale = F::splat(-(nmax as f32)) / max;
    let mut l = [zero; 16];
    let mut w = [zero; 16];
    let mut wx = [zero; 16];
    let (mut sumlx, mut suml2) = (zero, zero);
    for i in 0..16 {
        l[i] = allzero.sel(zero, (iscale * x[i]).nint_clamp(-nmax, nmax - 1));
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
        sumlx = sumlx + wx[i] * l[i];
        suml2 = suml2 + w[i] * l[i] * l[i];
    }
    let mut active = allzero.not();
    for _itry in 0..5 {
        let mut changed = M([false; W]);
        for i in 0..16 {
            let li = l[i];
            let slx = sumlx - wx[i] * li;
            let c1 = slx.gt(zero).and(active);
            if !c1.any() {
                continue;
            }
            let sl2 = suml2 - w[i] * li * li;
            let new_l = (x[i] * sl2 / slx).nint_clamp(-nmax, nmax - 1);
            let c2 = c1.and(new_l.cmp(li, |a, b| a != b));
            let slx2 = slx + wx[i] * new_l;
            let sl22 = sl2 + w[i] * new_l * new_l;
            let c3 = c2
                .and(sl22.gt(zero))
                .and((slx2 * slx2 * suml2).gt(sumlx * sumlx * sl22));
            l[i] = c3.sel(new_l, li);
            sumlx = c3.sel(slx2, sumlx);
            suml2 = c3.sel(sl22, suml2);
            for k in 0..W {
                changed.0[k] |= c3.0[k];
            }
        }
        active = active.and(changed);
        if !active.any() {
            break;
        }
    }
    (
        allzero.not().and(suml2.gt(zero)).sel(sumlx / suml2, zero),
        l,
        allzero,
    )
}

// ------------------------------------------------------- group quantizers

/// Q4_K / Q5_K: 2*W/8 super-blocks (two interleaved W-lane searches).
#[inline(always)]
fn q45_group<const W: usize, const T: u8>(x: &[f32], y: &mut [u8], q5: bool) {
    let (nmax, rmin, nstep, bb) = if q5 {
        (31, -0.5f32, 15, 176)
    } else {
        (15, -1.0f32, 20, 144)
    };
    let half = W / 8 * QK_K;
    let (xa, xb) = x.split_at(half);
    let av = |xt: &[F<W>; 32]| {
        let mut sum_x2 = F::splat(0.0);
        for &v in xt.iter() {
            sum_x2 = sum_x2 + v * v;
        }
        (sum_x2 / F::splat(32.0)).map(f32::sqrt)
    };
    let xta = transpose::<W, 32, T>(xa);
    let xtb = transpose::<W, 32, T>(xb);
    let (ra, rb) = qkx2_lanes2::<W, 32, T>(
        nmax,
        &xta,
        Some(av(&xta)),
        &xtb,
        Some(av(&xtb)),
        rmin,
        0.1,
        nstep,
        false,
    );
    let (ya, yb) = y.split_at_mut(W / 8 * bb);
    q45_finish(&ra, xa, ya, q5, nmax);
    q45_finish(&rb, xb, yb, q5, nmax);
}

/// Q4_K / Q5_K super-block scales, final levels and packing for the W/8 super-blocks of one search.
#[inline(always)]
fn q45_finish<const W: usize>(r: &Qkx2<W>, x: &[f32], y: &mut [u8], q5: bool, nmax: i32) {
    let bb = if q5 { 176 } else { 144 };
    for s in 0..W / 8 {
        let xs = &x[QK_K * s..QK_K * (s + 1)];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..8 {
            let (sj, mj) = (r.scale.0[8 * s + j], r.the_min.0[8 * s + j]);
            if sj > max_scale {
                max_scale = sj;
            }
            if mj > max_min {
                max_min = mj;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0f32 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 {
            63.0f32 / max_min
        } else {
            0.0
        };
        let mut sc = [0u8; 12];
        for j in 0..8 {
            let ls = (nearest_int(inv_scale * r.scale.0[8 * s + j]) as u8).min(63);
            let lm = (nearest_int(inv_min * r.the_min.0[8 * s + j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        let d16 = fp32_to_fp16(max_scale / 63.0);
        let dmin16 = fp32_to_fp16(max_min / 63.0);
        let df = fp16_to_fp32(d16);
        let dminf = fp16_to_fp32(dmin16);
        let mut l = [0u8; QK_K];
        for j in 0..8 {
            let (sv, m) = get_scale_min_k4(j, &sc);
            let d = df * sv as f32;
            let xj: &[f32; 32] = &xs.as_chunks::<32>().0[j];
            let lj: &mut [u8; 32] = &mut l.as_chunks_mut::<32>().0[j];
            if d == 0.0 {
                qkx2_levels(r, 8 * s + j, nmax, xj, lj);
                continue;
            }
            let dm = dminf * m as f32;
            for ii in 0..32 {
                lj[ii] = nearest_int((xj[ii] + dm) / d).min(nmax).max(0) as u8;
            }
        }
        let yb = &mut y[bb * s..bb * (s + 1)];
        yb[0..2].copy_from_slice(&d16.to_le_bytes());
        yb[2..4].copy_from_slice(&dmin16.to_le_bytes());
        yb[4..16].copy_from_slice(&sc);
        if q5 {
            let mut qh = [0u8; 32];
            for (nn, n) in (0..QK_K).step_by(64).enumerate() {
                let (m1, m2) = (1u8 << (2 * nn), 2u8 << (2 * nn));
                for j in 0..32 {
                    let (l1, l2) = (l[n + j], l[n + j + 32]);
                    qh[j] |= if l1 > 15 { m1 } else { 0 } | if l2 > 15 { m2 } else { 0 };
                    yb[48 + 32 * nn + j] = (l1 & 15) | ((l2 & 15) << 4);
                }
            }
            yb[16..48].copy_from_slice(&qh);
        } else {
            for jj in 0..4 {
                for i in 0..32 {
                    yb[16 + 32 * jj + i] = l[64 * jj + i] | (l[64 * jj + i + 32] << 4);
                }
            }
        }
    }
}

/// Q6_K: W/16 super-blocks.
#[inline(always)]
fn q6_group<const W: usize, const T: u8>(x: &[f32], y: &mut [u8]) {
    let xt = transpose::<W, 16, T>(x);
    let (scales, acc_iscale, allzero) = qx_lanes::<W, T>(32, &xt);
    for s in 0..W / 16 {
        let xs = &x[QK_K * s..QK_K * (s + 1)];
        let yb = &mut y[210 * s..210 * (s + 1)];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let scale = scales.0[16 * s + ib];
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            yb.iter_mut().for_each(|v| *v = 0);
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        let d16 = fp32_to_fp16(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales.0[16 * s + ib]).min(127) as i8;
        }
        let df = fp16_to_fp32(d16);
        let mut l = [0u8; QK_K];
        for j in 0..16 {
            let d = df * sc[j] as f32;
            let xj: &[f32; 16] = &xs.as_chunks::<16>().0[j];
            let lj: &mut [u8; 16] = &mut l.as_chunks_mut::<16>().0[j];
            let k = 16 * s + j;
            if d == 0.0 {
                if !allzero.0[k] {
                    let is = acc_iscale.0[k];
                    for ii in 0..16 {
                        lj[ii] = (nearest_int(is * xj[ii]).min(31).max(-32) + 32) as u8;
                    }
                }
                continue;
            }
            for ii in 0..16 {
                lj[ii] = (nearest_int(xj[ii] / d).min(31).max(-32) + 32) as u8;
            }
        }
        for h in 0..2 {
            let j = 128 * h;
            for i in 0..32 {
                let (a, b, c, e) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
                yb[64 * h + i] = (a & 0xF) | ((c & 0xF) << 4);
                yb[64 * h + i + 32] = (b & 0xF) | ((e & 0xF) << 4);
                yb[128 + 32 * h + i] =
                    (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
        for ib in 0..16 {
            yb[192 + ib] = sc[ib] as u8;
        }
        yb[208..210].copy_from_slice(&d16.to_le_bytes());
    }
}

#[inline(always)]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        let j = 128 * h;
        for i in 0..32 {
            qs[32 * h + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// Q2_K: W/16 super-blocks.
#[inline(always)]
fn q2_group<const W: usize, const T: u8>(x: &[f32], y: &mut [u8]) {
    let xt = transpose::<W, 16, T>(x);
    let r = qkx2_lanes::<W, 16, T>(3, &xt, None, -0.5, 0.1, 15, true);
    for s in 0..W / 16 {
        let xs = &x[QK_K * s..QK_K * (s + 1)];
        let yb = &mut y[84 * s..84 * (s + 1)];
        let (scales, mins) = (
            &r.scale.0[16 * s..16 * s + 16],
            &r.the_min.0[16 * s..16 * s + 16],
        );
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut sc = [0u8; 16];
        let d16 = if max_scale > 0.0 {
            let iscale = 15.0f32 / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            fp32_to_fp16(max_scale / 15.0)
        } else {
            fp32_to_fp16(0.0)
        };
        let dmin16 = if max_min > 0.0 {
            let iscale = 15.0f32 / max_min;
            for j in 0..16 {
                sc[j] |= nearest_int(iscale * mins[j]).wrapping_shl(4) as u8;
            }
            fp32_to_fp16(max_min / 15.0)
        } else {
            fp32_to_fp16(0.0)
        };
        let df = fp16_to_fp32(d16);
        let dminf = fp16_to_fp32(dmin16);
        let mut l = [0u8; QK_K];
        for j in 0..16 {
            let d = df * (sc[j] & 0xF) as f32;
            let xj: &[f32; 16] = &xs.as_chunks::<16>().0[j];
            let lj: &mut [u8; 16] = &mut l.as_chunks_mut::<16>().0[j];
            if d == 0.0 {
                qkx2_levels(&r, 16 * s + j, 3, xj, lj);
                continue;
            }
            let dm = dminf * (sc[j] >> 4) as f32;
            for ii in 0..16 {
                lj[ii] = nearest_int((xj[ii] + dm) / d).min(3).max(0) as u8;
            }
        }
        yb[0..16].copy_from_slice(&sc);
        pack_2bit(&l, &mut yb[16..80]);
        yb[80..82].copy_from_slice(&d16.to_le_bytes());
        yb[82..84].copy_from_slice(&dmin16.to_le_bytes());
    }
}

/// Q3_K: W/16 super-blocks.
#[inline(always)]
fn q3_group<const W: usize, const T: u8>(x: &[f32], y: &mut [u8]) {
    let xt = transpose::<W, 16, T>(x);
    let (scv, lt, allzero) = q3_lanes(4, &xt);
    for s in 0..W / 16 {
        let xs = &x[QK_K * s..QK_K * (s + 1)];
        let yb = &mut y[110 * s..110 * (s + 1)];
        let scales = &scv.0[16 * s..16 * s + 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..16 {
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let mut sc = [0u8; 12];
        let d16 = if max_scale != 0.0 {
            let iscale = -32.0f32 / max_scale;
            for j in 0..16 {
                let lv = nearest_int(iscale * scales[j]) as i8;
                let lv = (lv.min(31).max(-32) + 32) as u8;
                if j < 8 {
                    sc[j] = lv & 0xF;
                } else {
                    sc[j - 8] |= (lv & 0xF) << 4;
                }
                sc[j % 4 + 8] |= (lv >> 4) << (2 * (j / 4));
            }
            fp32_to_fp16(1.0 / iscale)
        } else {
            fp32_to_fp16(0.0)
        };
        let df = fp16_to_fp32(d16);
        let mut l = [0u8; QK_K];
        for j in 0..16 {
            let sv = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
            let sv = (sv | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
            let d = df * sv as f32;
            let xj: &[f32; 16] = &xs.as_chunks::<16>().0[j];
            let lj: &mut [u8; 16] = &mut l.as_chunks_mut::<16>().0[j];
            if d == 0.0 {
                if !allzero.0[16 * s + j] {
                    for ii in 0..16 {
                        lj[ii] = (lt[ii].0[16 * s + j] as i32 + 4) as u8;
                    }
                }
                continue;
            }
            for ii in 0..16 {
                lj[ii] = (nearest_int(xj[ii] / d).min(3).max(-4) + 4) as u8;
            }
        }
        let mut hmask = [0u8; 32];
        let mut lu = [0u8; QK_K];
        for j in 0..QK_K {
            let v = l[j];
            if v > 3 {
                hmask[j % 32] |= 1u8 << (j / 32);
            }
            lu[j] = v & 3;
        }
        yb[0..32].copy_from_slice(&hmask);
        pack_2bit(&lu, &mut yb[32..96]);
        yb[96..108].copy_from_slice(&sc);
        yb[108..110].copy_from_slice(&d16.to_le_bytes());
    }
}

// ------------------------------------------------------------- drivers

/// Lanes per group for each type (W/8 or W/16 super-blocks per group): 32 lanes = two
/// AVX-512 vectors per step for the 32-value searches; q6_k's 16-value search runs best at 16.
const W_Q45: usize = 32;
const W_Q2: usize = 32;
const W_Q3: usize = 32;
const W_Q6: usize = 16;

/// One group of `kind` (W_* lanes).
#[inline(always)]
fn group<const T: u8>(kind: KQuant, x: &[f32], y: &mut [u8]) {
    match kind {
        KQuant::Q2K => q2_group::<W_Q2, T>(x, y),
        KQuant::Q3K => q3_group::<W_Q3, T>(x, y),
        KQuant::Q4K => q45_group::<W_Q45, T>(x, y, false),
        KQuant::Q5K => q45_group::<W_Q45, T>(x, y, true),
        KQuant::Q6K => q6_group::<W_Q6, T>(x, y),
    }
}

/// Runs `group` over x, zero-padding the last group.
/// (No closures or fn pointers: everything must inline into the target_feature callers.)
#[inline(always)]
fn quantize_body<const T: u8>(kind: KQuant, x: &[f32], out: &mut [u8]) {
    let sb_per_group = match kind {
        KQuant::Q4K | KQuant::Q5K => 2 * W_Q45 / 8, // two interleaved searches
        KQuant::Q2K => W_Q2 / 16,
        KQuant::Q3K => W_Q3 / 16,
        KQuant::Q6K => W_Q6 / 16,
    };
    let gx = sb_per_group * QK_K;
    let gy = sb_per_group * kind.block_bytes();
    let mut xc = x.chunks_exact(gx);
    let mut yc = out.chunks_exact_mut(gy);
    for (xg, yg) in (&mut xc).zip(&mut yc) {
        group::<T>(kind, xg, yg);
    }
    let rx = xc.remainder();
    if !rx.is_empty() {
        let mut xp = vec![0.0f32; gx];
        xp[..rx.len()].copy_from_slice(rx);
        let mut yp = vec![0u8; gy];
        group::<T>(kind, &xp, &mut yp);
        let ry = yc.into_remainder();
        let n = ry.len();
        ry.copy_from_slice(&yp[..n]);
    }
}

/// Instruction-set variants of the same body (for dispatch and for the equality test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn quantize_baseline(kind: KQuant, x: &[f32], out: &mut [u8]) {
    quantize_body::<T_SCALAR>(kind, x, out)
}

/// # Safety
/// The CPU must support AVX2 (no other requirement: the body is safe code).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(kind: KQuant, x: &[f32], out: &mut [u8]) {
    quantize_body::<T_AVX2>(kind, x, out)
}

/// # Safety
/// The CPU must support AVX-512 F/BW/DQ/VL and AVX2 (the body is safe code).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
unsafe fn quantize_avx512(kind: KQuant, x: &[f32], out: &mut [u8]) {
    quantize_body::<T_AVX512>(kind, x, out)
}

impl Isa {
    /// The widest variant this CPU supports.
    pub(super) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    /// `best()`, unless KQ_ISA=baseline|avx2|avx512 asks for a narrower supported variant.
    pub(super) fn from_env() -> Isa {
        let want = match std::env::var("KQ_ISA").as_deref() {
            Ok("baseline") => Isa::Baseline,
            #[cfg(target_arch = "x86_64")]
            Ok("avx2") => Isa::Avx2,
            _ => return Isa::best(),
        };
        if want.supported() { want } else { Isa::best() }
    }

    /// Whether this CPU can run the variant.
    #[allow(dead_code)]
    pub(super) fn supported(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::best() == Isa::Avx512,
        }
    }
}

/// Quantizes whole super-blocks of x into out (exactly x.len()/256 * block_bytes bytes).
pub(super) fn quantize_simd(isa: Isa, kind: KQuant, x: &[f32], out: &mut [u8]) {
    assert!(x.len() % QK_K == 0 && out.len() == x.len() / QK_K * kind.block_bytes());
    match isa {
        Isa::Baseline => quantize_baseline(kind, x, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert!(is_x86_feature_detected!("avx2"));
            // SAFETY: the CPU supports AVX2 (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                quantize_avx2(kind, x, out)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert!(Isa::best() == Isa::Avx512);
            // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL and AVX2 (checked by Isa::best just above).
            #[allow(unsafe_code)]
            unsafe {
                quantize_avx512(kind, x, out)
            }
        }
    }
}
