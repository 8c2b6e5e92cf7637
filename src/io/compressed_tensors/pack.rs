//! The exact mapping of a quantized 2-D weight onto compressed-tensors' `pack-quantized` tensors
//! (compressed-tensors 0.20 `PackedQuantizationCompressor`): `weight_packed` int32 `[out,
//! ceil(in·b/32)]` with element i of a row at bit i·b of the row's little-endian bit stream and
//! stored as code + 2^(b−1); `weight_scale` `[out, in/g]` (or `[out, 1]` per channel);
//! `weight_zero_point` int32 `[ceil(out·b/32), in/g]`, packed along the output dimension the same
//! way; `weight_shape` int64 `[2]`. Dequantized there as `(q − z)·d`, which is what arrowquant's
//! `dequantize` computes: no value changes on the way.
//!
//! Pure: bytes in, bytes out; no files, no DataFusion.

use crate::kernels::{QuantizedRef, Scheme, effective_group_size};

/// How a tensor's scales are laid out in compressed-tensors' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// One scale per output row (`strategy: channel`).
    Channel,
    /// One scale per `g` consecutive elements of a row (`strategy: group`, `group_size: g`).
    Group(usize),
}

/// The quantization arguments of one tensor: what its `config_groups` entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Args {
    /// Bits per code (2, 4 or 8).
    pub bits: u8,
    /// No zero point (`symmetric: true`).
    pub symmetric: bool,
    /// Channel or group.
    pub strategy: Strategy,
}

/// Shapes and byte sizes of the tensors one weight becomes (known before quantizing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The arguments.
    pub args: Args,
    /// `[out, in]`.
    pub rows: usize,
    /// `in`.
    pub cols: usize,
    /// Scales per row.
    pub groups: usize,
}

impl Layout {
    /// int32 words per row of `weight_packed`.
    pub fn words_per_row(&self) -> usize {
        (self.cols * usize::from(self.args.bits)).div_ceil(32)
    }

    /// Shape of `weight_packed`.
    pub fn packed_shape(&self) -> [usize; 2] {
        [self.rows, self.words_per_row()]
    }

    /// Shape of `weight_scale` (and of the unpacked zero points).
    pub fn scale_shape(&self) -> [usize; 2] {
        [self.rows, self.groups]
    }

    /// Shape of `weight_zero_point`, for asymmetric tensors.
    pub fn zero_point_shape(&self) -> Option<[usize; 2]> {
        (!self.args.symmetric).then(|| {
            [
                (self.rows * usize::from(self.args.bits)).div_ceil(32),
                self.groups,
            ]
        })
    }
}

/// Why a quantized tensor cannot be written as compressed-tensors exactly.
fn refuse(what: String) -> Result<Layout, String> {
    Err(what)
}

/// The layout of a `rows × cols` weight quantized with `scheme` in groups of `group_size`
/// (0 = per tensor), or the reason it cannot be written exactly. Groups that divide the row are
/// `group`, except that groups of exactly one row are `channel` when `per_channel` (the user
/// asked for per-channel scales); groups of whole rows (per tensor) are `channel`.
pub fn layout(
    scheme: Scheme,
    group_size: usize,
    rows: usize,
    cols: usize,
    per_channel: bool,
) -> Result<Layout, String> {
    let symmetric = match scheme {
        Scheme::Int8 | Scheme::Int4 | Scheme::Int2 | Scheme::Q8_0 | Scheme::Q4_0 => true,
        Scheme::Int8Zp | Scheme::Int4Zp | Scheme::Int2Zp => false,
        Scheme::Int8Asym | Scheme::Int4Asym | Scheme::Int2Asym => {
            return refuse(format!(
                "{scheme} stores float mins (d·q + m), which compressed-tensors' integer zero \
                 points cannot represent exactly; quantize with {} instead",
                scheme.name().replace("_asym", "_zp")
            ));
        }
        k => {
            return refuse(format!(
                "{k} is a ggml K-quant, which compressed-tensors has no layout for; write it \
                 to GGUF, or quantize with int4/int8 (or *_zp)"
            ));
        }
    };
    if rows == 0 || cols == 0 {
        return refuse(format!("shape [{rows}, {cols}] has no elements"));
    }
    let numel = rows * cols;
    let g = effective_group_size(scheme, group_size, numel);
    let strategy = if cols.is_multiple_of(g) && !(g == cols && per_channel) {
        Strategy::Group(g)
    } else if g.is_multiple_of(cols) {
        // Per channel, per tensor, or groups spanning whole rows: one scale per row, repeated.
        Strategy::Channel
    } else {
        return refuse(format!(
            "groups of {g} cross the rows of length {cols} (the group size must divide the row \
             length, or be a multiple of it)"
        ));
    };
    let groups = match strategy {
        Strategy::Channel => 1,
        Strategy::Group(g) => cols / g,
    };
    Ok(Layout {
        args: Args {
            bits: scheme.bits(),
            symmetric,
            strategy,
        },
        rows,
        cols,
        groups,
    })
}

/// The tensors of one weight, as little-endian bytes ready for safetensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// `weight_packed`, int32.
    pub packed: Vec<u8>,
    /// `weight_scale`, float32.
    pub scale: Vec<u8>,
    /// `weight_zero_point`, int32, for asymmetric tensors.
    pub zero_point: Option<Vec<u8>>,
}

/// Code `i` of `q` as the unsigned value compressed-tensors stores (code + 2^(b−1) for the
/// signed schemes). Indexes within `q.codes`, which `validate` sized.
#[inline]
fn stored_code(q: &QuantizedRef<'_>, i: usize) -> u32 {
    let byte = |k: usize| u32::from(q.codes.get(k).copied().unwrap_or(0));
    match q.scheme {
        Scheme::Int8 | Scheme::Q8_0 => byte(i) ^ 0x80,
        Scheme::Int8Zp => byte(i),
        Scheme::Int4 => ((byte(i / 2) >> (4 * (i % 2))) & 0xf) ^ 0x8,
        Scheme::Int4Zp => (byte(i / 2) >> (4 * (i % 2))) & 0xf,
        Scheme::Int2 => ((byte(i / 4) >> (2 * (i % 4))) & 0x3) ^ 0x2,
        Scheme::Int2Zp => (byte(i / 4) >> (2 * (i % 4))) & 0x3,
        // ggml Q4_0: per block of 32, byte j holds element j (low) and j + 16 (high), already
        // offset by 8.
        _ => {
            let (b, j) = (i / 32, i % 32);
            let v = byte(b * 16 + j % 16);
            if j < 16 { v & 0xf } else { v >> 4 }
        }
    }
}

/// The XOR that turns our packed code bytes into compressed-tensors' (signed → offset), when
/// the two bit layouts agree byte for byte (sequential little-endian codes).
fn byte_mask(scheme: Scheme) -> Option<u8> {
    match scheme {
        Scheme::Int8 | Scheme::Q8_0 => Some(0x80),
        Scheme::Int4 => Some(0x88),
        Scheme::Int2 => Some(0xaa),
        Scheme::Int8Zp | Scheme::Int4Zp | Scheme::Int2Zp => Some(0),
        _ => None,
    }
}

/// Packs a dense bit stream of `n` values of `bits` bits (value k at bit k·bits) into
/// little-endian int32 words, appending `words` words to `out`.
fn pack_words(values: impl Iterator<Item = u32>, bits: usize, words: usize, out: &mut Vec<u8>) {
    let mut acc = vec![0u32; words];
    for (k, v) in values.enumerate() {
        let bit = k * bits;
        if let Some(w) = acc.get_mut(bit / 32) {
            *w |= v << (bit % 32);
        }
    }
    out.extend(acc.iter().flat_map(|w| w.to_le_bytes()));
}

/// Maps a validated `q` of a `rows × cols` weight onto compressed-tensors' tensors, exactly.
pub fn pack(q: &QuantizedRef<'_>, layout: &Layout) -> Result<Packed, String> {
    q.validate().map_err(|e| e.to_string())?;
    let (rows, cols) = (layout.rows, layout.cols);
    if q.numel != rows * cols {
        return Err(format!(
            "q holds {} values, but the shape [{rows}, {cols}] has {}",
            q.numel,
            rows * cols
        ));
    }
    let bits = usize::from(layout.args.bits);
    let words = layout.words_per_row();
    let mut packed = Vec::with_capacity(rows * words * 4);
    let row_bytes = cols * bits / 8;
    match byte_mask(q.scheme) {
        // Rows of whole words: our packed bytes are theirs, up to the sign offset.
        Some(mask) if (cols * bits).is_multiple_of(32) => {
            packed.extend(q.codes.iter().map(|b| b ^ mask));
            debug_assert_eq!(packed.len(), rows * row_bytes);
        }
        _ => {
            for r in 0..rows {
                let codes = (r * cols..(r + 1) * cols).map(|i| stored_code(q, i));
                pack_words(codes, bits, words, &mut packed);
            }
        }
    }
    let g = effective_group_size(q.scheme, q.group_size, q.numel);
    // Group of element (row r, scale column j): the first element it covers.
    let group_of = |r: usize, j: usize| match layout.args.strategy {
        Strategy::Channel => r * cols / g,
        Strategy::Group(gs) => (r * cols + j * gs) / g,
    };
    let mut scale = Vec::with_capacity(rows * layout.groups * 4);
    for r in 0..rows {
        for j in 0..layout.groups {
            let d = q.scales.get(group_of(r, j)).copied().unwrap_or(0.0);
            scale.extend(d.to_le_bytes());
        }
    }
    let zero_point = match layout.zero_point_shape() {
        None => None,
        Some([zw, _]) => {
            let zeros = q.mins.unwrap_or_default();
            let mut out = Vec::with_capacity(zw * layout.groups * 4);
            // Packed along the output dimension: word (w, j) holds rows w·32/b … of column j.
            let mut acc = vec![0u32; zw * layout.groups];
            for j in 0..layout.groups {
                for r in 0..rows {
                    let z = zeros.get(group_of(r, j)).copied().unwrap_or(0.0) as u32;
                    let bit = r * bits;
                    if let Some(w) = acc.get_mut((bit / 32) * layout.groups + j) {
                        *w |= z << (bit % 32);
                    }
                }
            }
            out.extend(acc.iter().flat_map(|w| w.to_le_bytes()));
            Some(out)
        }
    };
    Ok(Packed {
        packed,
        scale,
        zero_point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{QuantizedBuffers, quantize_into, stored_group_size};

    fn quantized(x: &[f32], scheme: Scheme, group: usize) -> QuantizedBuffers {
        let mut b = QuantizedBuffers::default();
        quantize_into(x, scheme, group, &mut b).unwrap();
        b
    }

    fn q_ref<'a>(
        b: &'a QuantizedBuffers,
        scheme: Scheme,
        group: usize,
        n: usize,
    ) -> QuantizedRef<'a> {
        QuantizedRef {
            scheme,
            group_size: stored_group_size(scheme, group),
            numel: n,
            codes: &b.codes,
            scales: &b.scales,
            mins: scheme.is_asymmetric().then_some(&b.mins[..]),
        }
    }

    /// compressed-tensors' `unpack_from_int32` + `dequantize`, element by element.
    fn their_dequantize(p: &Packed, l: &Layout) -> Vec<f32> {
        let bits = usize::from(l.args.bits);
        let word = |bytes: &[u8], k: usize| {
            u32::from_le_bytes([
                bytes[4 * k],
                bytes[4 * k + 1],
                bytes[4 * k + 2],
                bytes[4 * k + 3],
            ])
        };
        let field = |bytes: &[u8], base_word: usize, k: usize| {
            let bit = k * bits;
            (word(bytes, base_word + bit / 32) >> (bit % 32)) & ((1 << bits) - 1)
        };
        let offset = 1i32 << (bits - 1);
        let mut out = Vec::new();
        for r in 0..l.rows {
            for c in 0..l.cols {
                let q = field(&p.packed, r * l.words_per_row(), c) as i32 - offset;
                let j = match l.args.strategy {
                    Strategy::Channel => 0,
                    Strategy::Group(g) => c / g,
                };
                let d =
                    f32::from_le_bytes(p.scale[4 * (r * l.groups + j)..][..4].try_into().unwrap());
                let z = match &p.zero_point {
                    None => 0,
                    Some(zp) => {
                        let bit = r * bits;
                        let w = (bit / 32) * l.groups + j;
                        ((word(zp, w) >> (bit % 32)) & ((1 << bits) - 1)) as i32 - offset
                    }
                };
                out.push((q as f32 - z as f32) * d);
            }
        }
        out
    }

    #[test]
    fn every_exact_scheme_dequantizes_to_the_same_bits() {
        let (rows, cols) = (7, 96);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 613) as f32 * 0.013 - 3.1)
            .collect();
        for scheme in [
            Scheme::Int8,
            Scheme::Int4,
            Scheme::Int2,
            Scheme::Int8Zp,
            Scheme::Int4Zp,
            Scheme::Int2Zp,
            Scheme::Q8_0,
            Scheme::Q4_0,
        ] {
            for group in [0, 32, 48, 96, 192] {
                let b = quantized(&x, scheme, group);
                let q = q_ref(&b, scheme, group, x.len());
                let l = layout(scheme, q.group_size, rows, cols, false).unwrap();
                let p = pack(&q, &l).unwrap();
                assert_eq!(p.packed.len(), rows * l.words_per_row() * 4);
                let mut ours = Vec::new();
                crate::kernels::dequantize_into(&q, &mut ours).unwrap();
                assert_eq!(their_dequantize(&p, &l), ours, "{scheme} group {group}");
            }
        }
    }

    #[test]
    fn odd_rows_take_the_element_by_element_path() {
        // 3 × 13 int4: a row is 52 bits, not whole words; groups of 13 (per channel).
        let x: Vec<f32> = (0..39).map(|i| i as f32 - 19.0).collect();
        for scheme in [Scheme::Int4, Scheme::Int2Zp, Scheme::Int8] {
            let b = quantized(&x, scheme, 13);
            let q = q_ref(&b, scheme, 13, 39);
            let l = layout(scheme, 13, 3, 13, true).unwrap();
            assert_eq!(l.args.strategy, Strategy::Channel);
            assert_eq!(
                layout(scheme, 13, 3, 13, false).unwrap().args.strategy,
                Strategy::Group(13)
            );
            let p = pack(&q, &l).unwrap();
            let mut ours = Vec::new();
            crate::kernels::dequantize_into(&q, &mut ours).unwrap();
            assert_eq!(their_dequantize(&p, &l), ours, "{scheme}");
        }
    }

    #[test]
    fn int4_codes_by_hand() {
        // Codes -7..=7 become 1..=15; element i at bits 4i.
        let x: Vec<f32> = (-7..9).map(|v| v as f32).map(|v| v.min(7.0)).collect();
        let b = quantized(&x, Scheme::Int4, 0);
        let q = q_ref(&b, Scheme::Int4, 0, 16);
        let l = layout(Scheme::Int4, 0, 2, 8, false).unwrap();
        let p = pack(&q, &l).unwrap();
        assert_eq!(p.packed, [0x21, 0x43, 0x65, 0x87, 0xa9, 0xcb, 0xed, 0xff]);
        assert_eq!(
            p.scale,
            [1.0f32, 1.0]
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn what_cannot_be_exact_is_refused() {
        let e = layout(Scheme::Int4Asym, 32, 2, 64, false).unwrap_err();
        assert!(e.contains("float mins") && e.contains("int4_zp"), "{e}");
        let e = layout(Scheme::Q4K, 256, 2, 256, false).unwrap_err();
        assert!(e.contains("K-quant"), "{e}");
        let e = layout(Scheme::Int4, 48, 2, 64, false).unwrap_err();
        assert!(
            e.contains("groups of 48 cross the rows of length 64"),
            "{e}"
        );
        assert_eq!(
            layout(Scheme::Int4, 0, 2, 64, false).unwrap().args.strategy,
            Strategy::Channel
        );
        assert_eq!(
            layout(Scheme::Int4, 128, 2, 64, false)
                .unwrap()
                .args
                .strategy,
            Strategy::Channel
        );
        assert_eq!(
            layout(Scheme::Q4_0, 128, 2, 64, false)
                .unwrap()
                .args
                .strategy,
            Strategy::Group(32)
        );
    }
}
