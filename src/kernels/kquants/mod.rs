//! Pure-Rust K-quant (Q2_K..Q6_K) quantizers and dequantizers, byte-identical to
//! ggml's reference C code (`quantize_row_q*_K_ref` / `dequantize_row_q*_K` in
//! ggml/src/ggml-quants.c, ggml 0.20.2, commit 8c63e709).
//!
//! Exactness rules followed throughout: every reduction is a sequential f32
//! accumulation in C's order, no FMA, C's left-to-right evaluation of `a*b*c`,
//! rounding through `nearest_int` (the 1.5*2^23 trick), and C's integer
//! conversions (`as u8` / `as i8` wrap exactly like C's assignment to
//! `uint8_t`/`int8_t` on gcc).
#![allow(clippy::manual_clamp)] // MIN/MAX kept in C's order; clamp would assert lo <= hi
#![allow(clippy::manual_is_multiple_of)] // keep `%` for older toolchains

/// Number of weights in one K-quant super-block.
pub const QK_K: usize = 256;

mod search;
mod simd;
use search::{
    GROUP_MAX_EPS, fp16_to_fp32, fp32_to_fp16, get_scale_min_k4, make_q3_quants16,
    make_qkx2_quants, make_qx_quants16, nearest_int, qkx2_subblock32, rd16,
};

/// The K-quant formats supported by this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KQuant {
    /// ggml Q2_K (84 bytes / 256 weights).
    Q2K,
    /// ggml Q3_K (110 bytes / 256 weights).
    Q3K,
    /// ggml Q4_K (144 bytes / 256 weights).
    Q4K,
    /// ggml Q5_K (176 bytes / 256 weights).
    Q5K,
    /// ggml Q6_K (210 bytes / 256 weights).
    Q6K,
}

impl KQuant {
    /// Bytes of one 256-weight super-block.
    pub fn block_bytes(self) -> usize {
        match self {
            KQuant::Q2K => 84,
            KQuant::Q3K => 110,
            KQuant::Q4K => 144,
            KQuant::Q5K => 176,
            KQuant::Q6K => 210,
        }
    }

    /// Nominal bits per quantized weight (excluding scales).
    pub fn bits(self) -> u8 {
        match self {
            KQuant::Q2K => 2,
            KQuant::Q3K => 3,
            KQuant::Q4K => 4,
            KQuant::Q5K => 5,
            KQuant::Q6K => 6,
        }
    }

    /// Lower-case ggml-style name, e.g. "q4_k".
    pub fn name(self) -> &'static str {
        match self {
            KQuant::Q2K => "q2_k",
            KQuant::Q3K => "q3_k",
            KQuant::Q4K => "q4_k",
            KQuant::Q5K => "q5_k",
            KQuant::Q6K => "q6_k",
        }
    }
}

// ------------------------------------------------------- block quantizers

/// Common Q4_K/Q5_K super-block: returns (d, dmin, packed 6-bit scales, levels L[256]).
fn q45_superblock(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (u16, u16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let mut xs = [0.0f32; 32];
        xs.copy_from_slice(&x[32 * j..32 * j + 32]);
        let mut ls = [0u8; 32];
        let (s, m) = qkx2_subblock32(&xs, nmax, rmin, nstep, &mut ls);
        l[32 * j..32 * j + 32].copy_from_slice(&ls);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
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
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
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
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, &sc);
        let d = df * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dminf * m as f32;
        for ii in 0..32 {
            let li = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = li.min(nmax).max(0) as u8;
        }
    }
    (d16, dmin16, sc, l)
}

fn quantize_block_q4k(x: &[f32; QK_K], y: &mut [u8; 144]) {
    let (d, dmin, sc, l) = q45_superblock(x, 15, -1.0, 20);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    y[4..16].copy_from_slice(&sc);
    for (jj, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            y[16 + 32 * jj + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

fn quantize_block_q5k(x: &[f32; QK_K], y: &mut [u8; 176]) {
    let (d, dmin, sc, l) = q45_superblock(x, 31, -0.5, 15);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    y[4..16].copy_from_slice(&sc);
    let mut qh = [0u8; 32];
    let mut ql = [0u8; 128];
    let (mut m1, mut m2) = (1u8, 2u8);
    for (nn, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * nn + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
    y[16..48].copy_from_slice(&qh);
    y[48..176].copy_from_slice(&ql);
}

fn quantize_block_q6k(x: &[f32; QK_K], y: &mut [u8; 210]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..16 {
        let mut xs = [0.0f32; 16];
        xs.copy_from_slice(&x[16 * ib..16 * ib + 16]);
        let mut ls = [0i8; 16];
        let scale = make_qx_quants16(32, &xs, &mut ls);
        l[16 * ib..16 * ib + 16].copy_from_slice(&ls);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = [0u8; 210];
        return;
    }
    let iscale = -128.0f32 / max_scale;
    let d16 = fp32_to_fp16(1.0 / iscale);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    let df = fp16_to_fp32(d16);
    for j in 0..16 {
        let d = df * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let li = nearest_int(x[16 * j + ii] / d).min(31).max(-32);
            l[16 * j + ii] = (li + 32) as i8;
        }
    }
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            let q1 = (l[j + i] & 0xF) as u8;
            let q2 = (l[j + i + 32] & 0xF) as u8;
            let q3 = (l[j + i + 64] & 0xF) as u8;
            let q4 = (l[j + i + 96] & 0xF) as u8;
            y[64 * h + i] = q1 | (q3 << 4);
            y[64 * h + i + 32] = q2 | (q4 << 4);
            let hi = |v: i8| (v >> 4) as u8;
            y[128 + 32 * h + i] = hi(l[j + i])
                | (hi(l[j + i + 32]) << 2)
                | (hi(l[j + i + 64]) << 4)
                | (hi(l[j + i + 96]) << 6);
        }
    }
    for ib in 0..16 {
        y[192 + ib] = sc[ib] as u8;
    }
    y[208..210].copy_from_slice(&d16.to_le_bytes());
}

fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            qs[32 * h + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

fn quantize_block_q2k(x: &[f32; QK_K], y: &mut [u8; 84]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        let mut xs = [0.0f32; 16];
        xs.copy_from_slice(&x[16 * j..16 * j + 16]);
        let mut weights = [0.0f32; 16];
        for (w, &v) in weights.iter_mut().zip(xs.iter()) {
            *w = v.abs();
        }
        let mut ls = [0u8; 16];
        let (s, m) = make_qkx2_quants::<16>(3, &xs, &weights, &mut ls, -0.5, 0.1, 15, true);
        l[16 * j..16 * j + 16].copy_from_slice(&ls);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
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
    for j in 0..16 {
        let d = df * (sc[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dminf * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let li = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = li.min(3).max(0) as u8;
        }
    }
    y[0..16].copy_from_slice(&sc);
    pack_2bit(&l, &mut y[16..80]);
    y[80..82].copy_from_slice(&d16.to_le_bytes());
    y[82..84].copy_from_slice(&dmin16.to_le_bytes());
}

fn quantize_block_q3k(x: &[f32; QK_K], y: &mut [u8; 110]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        let mut xs = [0.0f32; 16];
        xs.copy_from_slice(&x[16 * j..16 * j + 16]);
        let mut ls = [0i8; 16];
        scales[j] = make_q3_quants16(4, &xs, &mut ls);
        l[16 * j..16 * j + 16].copy_from_slice(&ls);
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
    for j in 0..16 {
        let s = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let d = df * s as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let li = nearest_int(x[16 * j + ii] / d).min(3).max(-4);
            l[16 * j + ii] = (li + 4) as i8;
        }
    }
    let mut hmask = [0u8; 32];
    let mut lu = [0u8; QK_K];
    let (mut m, mut hm) = (0usize, 1u8);
    for j in 0..QK_K {
        let mut v = l[j];
        if v > 3 {
            hmask[m] |= hm;
            v -= 4;
        }
        lu[j] = v as u8;
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm = hm.wrapping_shl(1);
        }
    }
    y[0..32].copy_from_slice(&hmask);
    pack_2bit(&lu, &mut y[32..96]);
    y[96..108].copy_from_slice(&sc);
    y[108..110].copy_from_slice(&d16.to_le_bytes());
}

// ----------------------------------------------------- block dequantizers

fn dequantize_block_q2k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let d = fp16_to_fp32(rd16(b, 80));
    let min = fp16_to_fp32(rd16(b, 82));
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for j in 0..4 {
            let shift = 2 * j as u32;
            for half in 0..2 {
                let sc = b[8 * n + 2 * j + half];
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                let base = 128 * n + 32 * j + 16 * half;
                let qs = &q[16 * half..16 * half + 16];
                for (yo, &qv) in y[base..base + 16].iter_mut().zip(qs) {
                    *yo = dl * ((qv >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

fn dequantize_block_q3k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let d_all = fp16_to_fp32(rd16(b, 108));
    let rd32 = |o: usize| u32::from_le_bytes([b[96 + o], b[97 + o], b[98 + o], b[99 + o]]);
    let mut aux = [rd32(0), rd32(4), rd32(8), 0u32];
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut scales = [0i8; 16];
    for (k, a) in aux.iter().enumerate() {
        for (t, byte) in a.to_le_bytes().iter().enumerate() {
            scales[4 * k + t] = *byte as i8;
        }
    }
    let (mut is, mut o, mut m) = (0usize, 0usize, 1u8);
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for i in 0..16 {
                    let k = 16 * half + i;
                    let hv = if b[k] & m != 0 { 0 } else { 4 };
                    y[o] = dl * (((q[k] >> shift) & 3) as i32 - hv) as f32;
                    o += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

fn dequantize_block_q4k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = fp16_to_fp32(rd16(b, 0));
    let min = fp16_to_fp32(rd16(b, 2));
    let mut sc = [0u8; 12];
    sc.copy_from_slice(&b[4..16]);
    for jj in 0..4 {
        let (s1, m1) = get_scale_min_k4(2 * jj, &sc);
        let (s2, m2) = get_scale_min_k4(2 * jj + 1, &sc);
        let (d1, mm1, d2, mm2) = (
            d * s1 as f32,
            min * m1 as f32,
            d * s2 as f32,
            min * m2 as f32,
        );
        let q = &b[16 + 32 * jj..16 + 32 * jj + 32];
        for i in 0..32 {
            y[64 * jj + i] = d1 * (q[i] & 0xF) as f32 - mm1;
            y[64 * jj + 32 + i] = d2 * (q[i] >> 4) as f32 - mm2;
        }
    }
}

fn dequantize_block_q5k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = fp16_to_fp32(rd16(b, 0));
    let min = fp16_to_fp32(rd16(b, 2));
    let mut sc = [0u8; 12];
    sc.copy_from_slice(&b[4..16]);
    let qh = &b[16..48];
    let (mut u1, mut u2) = (1u8, 2u8);
    for jj in 0..4 {
        let (s1, m1) = get_scale_min_k4(2 * jj, &sc);
        let (s2, m2) = get_scale_min_k4(2 * jj + 1, &sc);
        let (d1, mm1, d2, mm2) = (
            d * s1 as f32,
            min * m1 as f32,
            d * s2 as f32,
            min * m2 as f32,
        );
        let ql = &b[48 + 32 * jj..48 + 32 * jj + 32];
        for i in 0..32 {
            let h1 = if qh[i] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[i] & u2 != 0 { 16 } else { 0 };
            y[64 * jj + i] = d1 * ((ql[i] & 0xF) as i32 + h1) as f32 - mm1;
            y[64 * jj + 32 + i] = d2 * ((ql[i] >> 4) as i32 + h2) as f32 - mm2;
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
    }
}

fn dequantize_block_q6k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = fp16_to_fp32(rd16(b, 208));
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let o = 128 * n + l;
            y[o] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[o + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[o + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[o + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

// ------------------------------------------------------------- public API

// ------------------------------------------------------- q4_k search (better blocks, same layout)

/// The 6-bit sub-block scales and mins of a Q4_K/Q5_K block, packed as ggml packs them.
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            sc[j] = s;
            sc[j + 4] = m;
        } else {
            sc[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            sc[j - 4] |= (s >> 4) << 6;
            sc[j] |= (m >> 4) << 6;
        }
    }
    sc
}

/// Sub-block `x` (32 values) with scale `d` and min `dm`: its codes, nearest and clamped to
/// [0, 15], and the squared error of what ggml's decoder makes of them (`d·q − dm`).
#[inline(always)]
fn q4k_subblock(x: &[f32], d: f32, dm: f32, codes: &mut [u8; 32]) -> f64 {
    let mut e = 0f64;
    for (c, &v) in codes.iter_mut().zip(x) {
        let q = if d == 0.0 {
            0
        } else {
            nearest_int((v + dm) / d).clamp(0, 15)
        };
        *c = q as u8;
        let r = f64::from(v) - f64::from(d * q as f32 - dm);
        e += r * r;
    }
    e
}

/// A Q4_K block from its parts: super-block scales, 6-bit sub-block scales/mins and codes.
fn pack_q4k(d16: u16, dmin16: u16, ls: &[u8; 8], lm: &[u8; 8], l: &[[u8; 32]; 8]) -> [u8; 144] {
    let mut y = [0u8; 144];
    y[0..2].copy_from_slice(&d16.to_le_bytes());
    y[2..4].copy_from_slice(&dmin16.to_le_bytes());
    y[4..16].copy_from_slice(&pack_scales_k4(ls, lm));
    for jj in 0..4 {
        for i in 0..32 {
            y[16 + 32 * jj + i] = l[2 * jj][i] | (l[2 * jj + 1][i] << 4);
        }
    }
    y
}

/// The squared error of Q4_K block `b` against `x`, decoded by ggml's decoder.
fn q4k_error(x: &[f32; QK_K], b: &[u8; 144]) -> f64 {
    let mut y = [0f32; QK_K];
    dequantize_block_q4k(b, &mut y);
    x.iter()
        .zip(&y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

/// Improves one Q4_K block `b` (ggml's reference encoding of `x`) in place, in the same layout:
/// for super-block scales near the reference's (×0.97, ×1, ×1.03 each, rounded to f16), every
/// sub-block takes the pair of 6-bit scale and min (each within two of the reference's,
/// rescaled) whose codes give the least squared error. The best whole block replaces `b` only
/// when its error is smaller, so no block is worse than the reference.
fn refine_q4k(x: &[f32; QK_K], b: &mut [u8; 144]) {
    let d0 = fp16_to_fp32(rd16(b, 0));
    let dmin0 = fp16_to_fp32(rd16(b, 2));
    if !(d0.is_finite() && dmin0.is_finite()) || d0 <= 0.0 {
        return;
    }
    let mut sc = [0u8; 12];
    sc.copy_from_slice(&b[4..16]);
    let (mut ls0, mut lm0) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (ls0[j], lm0[j]) = get_scale_min_k4(j, &sc);
    }
    let mut best = (*b, q4k_error(x, b));
    for fd in [1.0f32, 0.97, 1.03] {
        for fm in [1.0f32, 0.97, 1.03] {
            let (d16, dmin16) = (fp32_to_fp16(d0 * fd), fp32_to_fp16(dmin0 * fm));
            let (df, dminf) = (fp16_to_fp32(d16), fp16_to_fp32(dmin16));
            if !(df > 0.0 && df.is_finite() && dminf.is_finite() && dminf >= 0.0) {
                continue;
            }
            let (mut ls, mut lm, mut l) = ([0u8; 8], [0u8; 8], [[0u8; 32]; 8]);
            let mut total = 0f64;
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let rescale = |v: u8, from: f32, to: f32| -> i32 {
                    if to > 0.0 {
                        nearest_int(f32::from(v) * from / to)
                    } else {
                        0
                    }
                };
                let (s_c, m_c) = (rescale(ls0[j], d0, df), rescale(lm0[j], dmin0, dminf));
                let mut sub = (f64::INFINITY, 0u8, 0u8, [0u8; 32]);
                for s in (s_c - 2).max(0)..=(s_c + 2).min(63) {
                    for m in (m_c - 2).max(0)..=(m_c + 2).min(63) {
                        let mut codes = [0u8; 32];
                        let e = q4k_subblock(xs, df * s as f32, dminf * m as f32, &mut codes);
                        if e < sub.0 {
                            sub = (e, s as u8, m as u8, codes);
                        }
                    }
                }
                total += sub.0;
                (ls[j], lm[j], l[j]) = (sub.1, sub.2, sub.3);
            }
            if total < best.1 {
                let blk = pack_q4k(d16, dmin16, &ls, &lm, &l);
                let e = q4k_error(x, &blk);
                if e < best.1 {
                    best = (blk, e);
                }
            }
        }
    }
    *b = best.0;
}

/// Q4_K blocks of `x` (len a multiple of 256) by the search: ggml's reference blocks, each
/// then improved by [`refine_q4k`]; llama.cpp reads them unchanged.
pub fn quantize_q4k_search(x: &[f32], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    quantize_k(KQuant::Q4K, x, out)?;
    for (chunk, blk) in x.chunks_exact(QK_K).zip(out[start..].chunks_exact_mut(144)) {
        if let (Ok(xa), Ok(b)) = (
            <&[f32; QK_K]>::try_from(chunk),
            <&mut [u8; 144]>::try_from(blk),
        ) {
            refine_q4k(xa, b);
        }
    }
    Ok(())
}

fn run_quant<const B: usize>(x: &[f32], out: &mut Vec<u8>, f: fn(&[f32; QK_K], &mut [u8; B])) {
    out.reserve(x.len() / QK_K * B);
    let mut blk = [0u8; B];
    for chunk in x.chunks_exact(QK_K) {
        let mut xa = [0.0f32; QK_K];
        xa.copy_from_slice(chunk);
        f(&xa, &mut blk);
        out.extend_from_slice(&blk);
    }
}

/// Quantizes x (len multiple of 256) appending the ggml block bytes to out.
/// Lane-parallel (SIMD) path, byte-identical to [`quantize_k_scalar`].
pub fn quantize_k(kind: KQuant, x: &[f32], out: &mut Vec<u8>) -> Result<(), String> {
    quantize_k_isa(simd::Isa::from_env(), kind, x, out)
}

fn quantize_k_isa(
    isa: simd::Isa,
    kind: KQuant,
    x: &[f32],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if x.len() % QK_K != 0 {
        return Err(format!(
            "{}: input length {} is not a multiple of {}",
            kind.name(),
            x.len(),
            QK_K
        ));
    }
    let start = out.len();
    out.resize(start + x.len() / QK_K * kind.block_bytes(), 0);
    simd::quantize_simd(isa, kind, x, &mut out[start..]);
    Ok(())
}

/// Reference scalar transcription of ggml's `quantize_row_q*_K_ref` (one sub-block at a time).
pub fn quantize_k_scalar(kind: KQuant, x: &[f32], out: &mut Vec<u8>) -> Result<(), String> {
    if x.len() % QK_K != 0 {
        return Err(format!(
            "{}: input length {} is not a multiple of {}",
            kind.name(),
            x.len(),
            QK_K
        ));
    }
    match kind {
        KQuant::Q2K => run_quant::<84>(x, out, quantize_block_q2k),
        KQuant::Q3K => run_quant::<110>(x, out, quantize_block_q3k),
        KQuant::Q4K => run_quant::<144>(x, out, quantize_block_q4k),
        KQuant::Q5K => run_quant::<176>(x, out, quantize_block_q5k),
        KQuant::Q6K => run_quant::<210>(x, out, quantize_block_q6k),
    }
    Ok(())
}

fn run_dequant<const B: usize>(
    blocks: &[u8],
    out: &mut Vec<f32>,
    f: fn(&[u8; B], &mut [f32; QK_K]),
) {
    out.reserve(blocks.len() / B * QK_K);
    let mut ya = [0.0f32; QK_K];
    let mut ba = [0u8; B];
    for chunk in blocks.chunks_exact(B) {
        ba.copy_from_slice(chunk);
        f(&ba, &mut ya);
        out.extend_from_slice(&ya);
    }
}

fn check_blocks(kind: KQuant, blocks: &[u8]) -> Result<usize, String> {
    let bb = kind.block_bytes();
    if blocks.len() % bb != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {}-byte blocks",
            kind.name(),
            blocks.len(),
            bb
        ));
    }
    Ok(blocks.len() / bb)
}

/// Dequantizes blocks (ggml's dequantize_row_q*_K) appending f32 to out.
pub fn dequantize_k(
    kind: KQuant,
    blocks: &[u8],
    numel: usize,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    let nb = check_blocks(kind, blocks)?;
    if numel % QK_K != 0 || numel / QK_K != nb {
        return Err(format!(
            "{}: numel {} does not match {} blocks of {}",
            kind.name(),
            numel,
            nb,
            QK_K
        ));
    }
    match kind {
        KQuant::Q2K => run_dequant::<84>(blocks, out, dequantize_block_q2k),
        KQuant::Q3K => run_dequant::<110>(blocks, out, dequantize_block_q3k),
        KQuant::Q4K => run_dequant::<144>(blocks, out, dequantize_block_q4k),
        KQuant::Q5K => run_dequant::<176>(blocks, out, dequantize_block_q5k),
        KQuant::Q6K => run_dequant::<210>(blocks, out, dequantize_block_q6k),
    }
    Ok(())
}

/// The f32 super-block scale d and dmin (dmin = 0 for q6_k/q3_k) of each block, for SQL to read.
pub fn block_scales(kind: KQuant, blocks: &[u8]) -> Result<(Vec<f32>, Vec<f32>), String> {
    let nb = check_blocks(kind, blocks)?;
    let (d_off, dmin_off) = match kind {
        KQuant::Q2K => (80, Some(82)),
        KQuant::Q3K => (108, None),
        KQuant::Q4K | KQuant::Q5K => (0, Some(2)),
        KQuant::Q6K => (208, None),
    };
    let mut d = Vec::with_capacity(nb);
    let mut dmin = Vec::with_capacity(nb);
    for b in blocks.chunks_exact(kind.block_bytes()) {
        d.push(fp16_to_fp32(rd16(b, d_off)));
        dmin.push(dmin_off.map_or(0.0, |o| fp16_to_fp32(rd16(b, o))));
    }
    Ok((d, dmin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
        bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// LCG input (exact in f32) with a zero sub-block; hashes come from ggml 0.20.2 (selftest_hashes.py).
    #[test]
    fn matches_ggml_hashes() {
        let mut s = 12345u32;
        let mut x: Vec<f32> = (0..16 * 256)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let e = -20 + 3 * ((i / 256) % 8) - 12;
                (((s >> 8) as i32) - (1 << 23)) as f32 * 2f32.powi(e)
            })
            .collect();
        x[768..800].iter_mut().for_each(|v| *v = 0.0);
        let expect = [
            (KQuant::Q2K, 0x08f3044fe450c9e3u64, 0x099340f1da6e9978u64),
            (KQuant::Q3K, 0xb226e0b7457a1250, 0xd9ff62bae4920ca7),
            (KQuant::Q4K, 0xf5440a5e0a209d29, 0x4baf6cb4260e334c),
            (KQuant::Q5K, 0x984d19d33bb6330a, 0x2f24dff20b22bf2e),
            (KQuant::Q6K, 0xd39302df211048c8, 0xd93c60e19cb0ac18),
        ];
        for (kind, hq, hd) in expect {
            let mut q = Vec::new();
            quantize_k(kind, &x, &mut q).unwrap();
            assert_eq!(q.len(), 16 * kind.block_bytes());
            assert_eq!(fnv(q.iter().copied()), hq, "{} quantize", kind.name());
            let mut d = Vec::new();
            dequantize_k(kind, &q, x.len(), &mut d).unwrap();
            assert_eq!(
                fnv(d.iter().flat_map(|v| v.to_le_bytes())),
                hd,
                "{} dequantize",
                kind.name()
            );
            let (ds, dm) = block_scales(kind, &q).unwrap();
            assert_eq!((ds.len(), dm.len()), (16, 16));
        }
    }

    /// Random super-blocks mixing the hard cases: wide magnitudes, zero / constant sub-blocks,
    /// ties, subnormals, one-signed blocks, huge values, inf and NaN (with payloads).
    fn stress_input(nb: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut x = Vec::with_capacity(nb * QK_K);
        for b in 0..nb {
            let mode = next() % 12;
            let e = (next() % 90) as i32 - 60; // 2^-60 .. 2^29
            let scale = 2f32.powi(e);
            for i in 0..QK_K {
                let u = (next() as f32 / 4294967296.0) * 2.0 - 1.0;
                let g = (u + (next() as f32 / 4294967296.0) * 2.0 - 1.0) * 1.7; // rough bell shape
                let v = match mode {
                    0 | 1 => g * scale,
                    2 => ((next() % 33) as f32 - 16.0) / 2.0, // ties
                    3 => g * 1e-40,                           // subnormal
                    4 => g.abs() * scale + scale,             // positive
                    5 => -(g.abs() * scale) - scale * 0.5,    // negative
                    6 => {
                        if (i / 16) % 3 == 0 {
                            0.0
                        } else {
                            g
                        }
                    } // zero sub-blocks
                    7 => {
                        if (i / 32) % 2 == 0 {
                            1.25 * scale
                        } else {
                            g * scale
                        }
                    } // constant sub-blocks
                    8 => g * 3e38,                            // huge (inf-prone sums)
                    // NaNs only with the default payload: where two NaNs meet in one commutative op,
                    // IEEE leaves the result's payload open and compilers may swap operands (gcc for
                    // ggml, LLVM here); payload cases are covered by ggml's own golden files.
                    9 => {
                        if next() % 64 == 0 {
                            [
                                f32::INFINITY,
                                f32::NEG_INFINITY,
                                f32::NAN,
                                f32::from_bits(0xffc0_0000),
                            ][(next() % 4) as usize]
                        } else {
                            g
                        }
                    }
                    10 => {
                        if next() % 40 == 0 {
                            g * 1e6
                        } else {
                            g * 1e-3
                        }
                    } // outliers
                    _ => {
                        let v = f32::from_bits(next());
                        if v.is_nan() { f32::NAN } else { v }
                    } // random bits
                };
                x.push(v);
            }
            if b % 7 == 3 {
                x[b * QK_K..(b + 1) * QK_K]
                    .iter_mut()
                    .for_each(|v| *v = 0.0);
            }
        }
        x
    }

    /// The lane-parallel path (every instruction-set variant this CPU runs) gives exactly the
    /// scalar transcription's bytes, including a padded partial last group.
    #[test]
    fn simd_matches_scalar() {
        let isas = [
            simd::Isa::Baseline,
            #[cfg(target_arch = "x86_64")]
            simd::Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            simd::Isa::Avx512,
        ];
        for (seed, nb) in [(1u64, 101usize), (2, 64), (3, 7), (4, 1), (5, 250)] {
            let x = stress_input(nb, seed);
            for kind in [
                KQuant::Q2K,
                KQuant::Q3K,
                KQuant::Q4K,
                KQuant::Q5K,
                KQuant::Q6K,
            ] {
                let mut want = Vec::new();
                quantize_k_scalar(kind, &x, &mut want).unwrap();
                for isa in isas.iter().copied().filter(|i| i.supported()) {
                    let mut got = vec![0xAAu8; 3]; // appends after existing bytes
                    quantize_k_isa(isa, kind, &x, &mut got).unwrap();
                    assert_eq!(&got[..3], &[0xAA; 3]);
                    let bb = kind.block_bytes();
                    if let Some(b) = (0..nb)
                        .find(|&b| got[3 + b * bb..3 + (b + 1) * bb] != want[b * bb..(b + 1) * bb])
                    {
                        panic!(
                            "{} {:?} seed {seed}: block {b} differs\n ours {:02x?}\n want {:02x?}\n x {:?}",
                            kind.name(),
                            isa,
                            &got[3 + b * bb..3 + (b + 1) * bb],
                            &want[b * bb..(b + 1) * bb],
                            &x[b * QK_K..(b + 1) * QK_K]
                        );
                    }
                    assert_eq!(got.len(), 3 + want.len());
                }
            }
        }
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut q = Vec::new();
        assert!(quantize_k(KQuant::Q4K, &[0.0; 255], &mut q).is_err());
        let mut d = Vec::new();
        assert!(dequantize_k(KQuant::Q6K, &[0u8; 209], 256, &mut d).is_err());
        assert!(dequantize_k(KQuant::Q6K, &[0u8; 210], 512, &mut d).is_err());
        assert!(block_scales(KQuant::Q2K, &[0u8; 85]).is_err());
    }
}
