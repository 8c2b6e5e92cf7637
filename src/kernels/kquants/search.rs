//! ggml's scalar helpers and per-(sub-)block scale searches, transcribed from
//! ggml-quants.c (ggml 0.20.2): `nearest_int`, fp16 conversions, `get_scale_min_k4`,
//! `make_qkx2_quants`, `make_qx_quants`, `make_q3_quants`. Each search works on a
//! fixed-size array so it can later be run across SIMD lanes.
//!
//! Element-wise work may be split into separate passes, but every reduction is a
//! sequential f32 accumulation in C's element order and operand grouping, no FMA.
#![allow(clippy::manual_clamp)] // MIN/MAX kept in C's order; clamp would assert lo <= hi

/// ggml's GROUP_MAX_EPS: sub-blocks with max |x| below this are treated as all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round-half-even via the 1.5*2^23 float trick (no range assert).
#[inline(always)]
pub(super) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// f32 -> f16 bits, round-to-nearest-even; NaN maps to ggml's canonical 0x7E00 (keeping sign).
#[inline(always)]
pub(super) fn fp32_to_fp16(f: f32) -> u16 {
    if f.is_nan() {
        (((f.to_bits() >> 16) & 0x8000) as u16) | 0x7E00
    } else {
        half::f16::from_f32(f).to_bits()
    }
}

/// f16 bits -> f32 (exact); NaN payloads reproduced as ggml's software conversion does.
#[inline(always)]
pub(super) fn fp16_to_fp32(h: u16) -> f32 {
    if (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0 {
        let sign = ((h as u32) & 0x8000) << 16;
        f32::from_bits(sign | 0x7FC0_0000 | (((h as u32) & 0x03FF) << 13))
    } else {
        half::f16::from_bits(h).to_f32()
    }
}

#[inline(always)]
pub(super) fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// ggml's `get_scale_min_k4`: unpacks the 6-bit scale and min of sub-block j.
#[inline(always)]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// ggml's `make_qkx2_quants` for n = N: asymmetric (scale, min) search; returns (scale, the_min).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        *l = [0; N];
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0f32 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..N {
        let li = nearest_int(iscale * (x[i] - min));
        l[i] = li.min(nmax).max(0) as u8;
        let mut diff = scale * l[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    // Element-wise work is done in separate passes (vectorizable); every sum below is still
    // accumulated sequentially in C's element order with C's operand grouping.
    let mut xm = [0.0f32; N];
    for i in 0..N {
        xm[i] = x[i] - min;
    }
    let mut laux = [0u8; N];
    let mut lf = [0.0f32; N];
    let (mut t_l, mut t_l2, mut t_xl, mut t_e) =
        ([0.0f32; N], [0.0f32; N], [0.0f32; N], [0.0f32; N]);
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        for i in 0..N {
            let li = nearest_int(iscale * xm[i]).min(nmax).max(0);
            laux[i] = li as u8;
            lf[i] = li as f32;
            let wl = weights[i] * lf[i];
            t_l[i] = wl;
            t_l2[i] = wl * lf[i];
            t_xl[i] = wl * x[i];
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..N {
            sum_l += t_l[i];
            sum_l2 += t_l2[i];
            sum_xl += t_xl[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            for i in 0..N {
                let diff = this_scale * lf[i] + this_min - x[i];
                t_e[i] = weights[i] * if use_mad { diff.abs() } else { diff * diff };
            }
            let mut cur_error = 0.0f32;
            for &e in t_e.iter() {
                cur_error += e;
            }
            if cur_error < best_error {
                *l = laux;
                best_error = cur_error;
                scale = this_scale;
                // C keeps searching with the *updated* min (in x[i]-min and max-min).
                min = this_min;
                for i in 0..N {
                    xm[i] = x[i] - min;
                }
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants(16, nmax, x, L, rmse_type=1, qw=NULL)`: symmetric scale search.
#[inline(always)]
pub(super) fn make_qx_quants16(nmax: i32, x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x.iter() {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        *l = [0; 16];
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..16 {
        let li = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l[i] = (li + nmax) as i8;
        let w = x[i] * x[i];
        let lf = li as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut w = [0.0f32; 16];
    let mut wx = [0.0f32; 16];
    for i in 0..16 {
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
    }
    let mut laux = [0i8; 16];
    let (mut t_lx, mut t_l2) = ([0.0f32; 16], [0.0f32; 16]);
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        for i in 0..16 {
            let li = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
            laux[i] = (li + nmax) as i8;
            let lf = li as f32;
            t_lx[i] = wx[i] * lf;
            t_l2[i] = w[i] * lf * lf;
        }
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..16 {
            sumlx += t_lx[i];
            suml2 += t_l2[i];
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            *l = laux;
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants(16, nmax, x, L, do_rmse=true)`.
#[inline(always)]
pub(super) fn make_q3_quants16(nmax: i32, x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x.iter() {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        *l = [0; 16];
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..16 {
        let li = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l[i] = li as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..16 {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax - 1).max(-nmax);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for v in l.iter_mut() {
        *v = (*v as i32 + nmax) as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Sub-block search shared by Q4_K/Q5_K: weights av_x+|x|, then make_qkx2_quants on 32 values.
#[inline(always)]
pub(super) fn qkx2_subblock32(
    x: &[f32; 32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; 32],
) -> (f32, f32) {
    let mut sum_x2 = 0.0f32;
    for &v in x.iter() {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    let mut weights = [0.0f32; 32];
    for (w, &v) in weights.iter_mut().zip(x.iter()) {
        *w = av_x + v.abs();
    }
    make_qkx2_quants::<32>(nmax, x, &weights, l, rmin, 0.1, nstep, false)
}
