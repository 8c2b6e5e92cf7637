//! Parquet's RLE/bit-packed hybrid encoding, decoded as runs.
//!
//! The levels of a weight column are long runs (one row per tensor, no nulls inside), so the
//! reader works on runs, never on one `i16` per value. The same decoder reads dictionary
//! indices, where the runs are mostly of length one.

/// A run of `count` equal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The value (a level or a dictionary index).
    pub value: u32,
    /// How many times it repeats.
    pub count: u32,
}

/// The bit width of levels up to `max_level` (0 for 0).
pub fn bit_width(max_level: i16) -> u8 {
    (16 - (max_level.max(0) as u16).leading_zeros()) as u8
}

/// Appends `run`, merging it with the last run when the values are equal (a run of 0 adds
/// nothing).
pub fn push(out: &mut Vec<Run>, value: u32, count: u32) {
    if count == 0 {
        return;
    }
    match out.last_mut() {
        Some(last) if last.value == value => last.count += count,
        _ => out.push(Run { value, count }),
    }
}

/// Reads an unsigned LEB128 varint at `*pos`.
fn varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = data.get(*pos) else {
            return Err("a run header runs past the end of the levels".into());
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a run header is longer than 10 bytes".into())
}

/// Decodes `n` values of `bit_width` bits (0..=32) from `data` into `out` as runs, merging
/// equal neighbours. Padding past `n` in the last bit-packed group is ignored; data that ends
/// before `n` values is an error.
pub fn decode_runs(data: &[u8], bit_width: u8, n: usize, out: &mut Vec<Run>) -> Result<(), String> {
    out.clear();
    for_each_run(data, bit_width, n, |value, count| {
        push(out, value, count);
        Ok(())
    })
}

/// Calls `f(value, count)` for each run of the `n` values of `bit_width` bits in `data` (a
/// bit-packed value is a run of one), in order; stops at `f`'s first error.
pub fn for_each_run(
    data: &[u8],
    bit_width: u8,
    n: usize,
    mut f: impl FnMut(u32, u32) -> Result<(), String>,
) -> Result<(), String> {
    if bit_width > 32 {
        return Err(format!("bit width {bit_width} is more than 32"));
    }
    if bit_width == 0 {
        // Every value is 0 and nothing is stored.
        if n > 0 {
            f(0, n as u32)?;
        }
        return Ok(());
    }
    let value_bytes = usize::from(bit_width).div_ceil(8);
    let mask = if bit_width == 32 {
        u32::MAX
    } else {
        (1u32 << bit_width) - 1
    };
    let (mut pos, mut left) = (0usize, n);
    while left > 0 {
        let header = varint(data, &mut pos)?;
        if header & 1 == 0 {
            // An RLE run: count, then the value in `value_bytes` little-endian bytes.
            let count = usize::try_from(header >> 1).unwrap_or(usize::MAX).min(left);
            let Some(bytes) = data.get(pos..pos + value_bytes) else {
                return Err("an RLE run's value runs past the end of the levels".into());
            };
            pos += value_bytes;
            let value = bytes
                .iter()
                .rev()
                .fold(0u32, |v, &b| (v << 8) | u32::from(b));
            if value > mask {
                return Err(format!(
                    "a run value {value} needs more than {bit_width} bits"
                ));
            }
            if count == 0 {
                continue;
            }
            f(value, count as u32)?;
            left -= count;
        } else {
            // Bit-packed groups of 8 values, least significant bit first.
            let groups = usize::try_from(header >> 1).unwrap_or(usize::MAX);
            let len = groups
                .checked_mul(usize::from(bit_width))
                .filter(|&l| pos + l <= data.len())
                .ok_or("a bit-packed run runs past the end of the levels")?;
            let packed = &data[pos..pos + len];
            pos += len;
            let count = (groups * 8).min(left);
            for i in 0..count {
                let bit = i * usize::from(bit_width);
                let mut word = [0u8; 8];
                let avail = &packed[bit / 8..(bit / 8 + 8).min(packed.len())];
                word[..avail.len()].copy_from_slice(avail);
                let v = (u64::from_le_bytes(word) >> (bit % 8)) as u32 & mask;
                f(v, 1)?;
            }
            left -= count;
        }
    }
    Ok(())
}

/// Appends the RLE/bit-packed hybrid encoding of `runs` to `out`, every run as an RLE run (legal
/// for any length; a weight column's levels are a handful of runs per row).
pub fn encode_runs(runs: impl IntoIterator<Item = Run>, bit_width: u8, out: &mut Vec<u8>) {
    let value_bytes = usize::from(bit_width).div_ceil(8);
    for run in runs.into_iter().filter(|r| r.count > 0) {
        let mut header = u64::from(run.count) << 1;
        loop {
            let byte = (header & 0x7f) as u8;
            header >>= 7;
            if header == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(&run.value.to_le_bytes()[..value_bytes]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[(u32, u32)]) -> Vec<Run> {
        v.iter()
            .map(|&(value, count)| Run { value, count })
            .collect()
    }

    #[test]
    fn decodes_rle_and_bit_packed_runs() {
        // RLE 5×1 (header 10), then one bit-packed group of 8 one-bit values 0b1011_0001
        // (LSB first: 1,0,0,0,1,1,0,1), of which 6 are wanted.
        let data = [10, 1, 3, 0b1011_0001];
        let mut out = Vec::new();
        decode_runs(&data, 1, 11, &mut out).unwrap();
        assert_eq!(out, runs(&[(1, 6), (0, 3), (1, 2)]));
    }

    #[test]
    fn decodes_wide_values() {
        // Bit width 12: one RLE run of 300 × 0xABC (varint 600 = 0xD8 0x04).
        let data = [0xD8, 0x04, 0xBC, 0x0A];
        let mut out = Vec::new();
        decode_runs(&data, 12, 300, &mut out).unwrap();
        assert_eq!(out, runs(&[(0xABC, 300)]));
    }

    #[test]
    fn truncated_levels_are_an_error() {
        let mut out = Vec::new();
        assert!(decode_runs(&[10, 1], 1, 6, &mut out).is_err());
        assert!(decode_runs(&[3], 1, 8, &mut out).is_err());
        assert!(decode_runs(&[10, 2], 1, 5, &mut out).is_err());
    }

    #[test]
    fn encoding_round_trips() {
        let want = runs(&[(0, 1), (1, 1_000_000), (0, 1), (3, 7)]);
        let mut bytes = Vec::new();
        encode_runs(want.clone(), 2, &mut bytes);
        let mut out = Vec::new();
        decode_runs(&bytes, 2, 1_000_009, &mut out).unwrap();
        assert_eq!(out, want);
    }
}
