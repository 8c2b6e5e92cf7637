//! GGUF v3 reader and writer (little-endian only), following ggml's `gguf.cpp` and gguf-py.
//!
//! Layout: magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv pairs
//! (string key, u32 value type, value), tensor infos (string name, u32 n_dims,
//! u64 dims innermost first, u32 ggml type, u64 offset relative to the data
//! section), zero padding up to `general.alignment` (default 32), then tensor
//! data, each tensor starting at an aligned offset and zero-padded to the alignment.
//! Strings are u64 byte length + UTF-8 bytes; arrays are u32 element type + u64 count + elements.

use std::fmt;

#[cfg(not(fuzzing))] // the fuzz target compiles this folder alone, without the Arrow layer
mod model;
mod read;
mod write;
#[cfg(not(fuzzing))]
pub use model::{GGML_TYPE, GgufModel, schema, type_name};
pub use read::parse;
pub use write::GgufWriter;

/// The only GGUF version this module reads and writes.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Key that overrides the data alignment (must be a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's GGML_MAX_DIMS: tensors have at most 4 dimensions.
pub const MAX_DIMS: usize = 4;
/// ggml's GGML_MAX_NAME: llama.cpp rejects tensor names of this many bytes or more.
pub const MAX_NAME_BYTES: usize = 64;
/// Deepest nesting of arrays inside arrays accepted on read and write.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// Everything that can go wrong reading or writing GGUF; messages name the key/tensor involved.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufError {
    /// Input ended early: reading `what` at byte `offset` needed `need` bytes but only `have` remain.
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
        /// Bytes it needed.
        need: u64,
        /// Bytes left.
        have: u64,
    },
    /// The file does not start with "GGUF".
    BadMagic([u8; 4]),
    /// The version field is not 3.
    UnsupportedVersion(u32),
    /// Structurally invalid content or arguments (expected vs found in the message).
    Invalid(String),
    /// The tensor type has no f32 conversion here.
    Unsupported(String),
    /// The underlying writer failed.
    Io(String),
}

impl GgufError {
    pub(crate) fn context(self, ctx: &str) -> Self {
        match self {
            GgufError::Truncated {
                what,
                offset,
                need,
                have,
            } => GgufError::Truncated {
                what: format!("{ctx}: {what}"),
                offset,
                need,
                have,
            },
            GgufError::Invalid(m) => GgufError::Invalid(format!("{ctx}: {m}")),
            e => e,
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Truncated {
                what,
                offset,
                need,
                have,
            } => write!(
                f,
                "truncated GGUF: {what} at offset {offset} needs {need} bytes, only {have} left"
            ),
            GgufError::BadMagic(m) => write!(f, "bad magic: expected \"GGUF\", found {m:02x?}"),
            GgufError::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (expected 3)")
            }
            GgufError::Invalid(m) => write!(f, "invalid GGUF: {m}"),
            GgufError::Unsupported(m) => write!(f, "unsupported: {m}"),
            GgufError::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

impl std::error::Error for GgufError {}

impl From<std::io::Error> for GgufError {
    fn from(e: std::io::Error) -> Self {
        GgufError::Io(e.to_string())
    }
}

pub(crate) type Result<T> = std::result::Result<T, GgufError>;

pub(crate) fn invalid<T>(msg: String) -> Result<T> {
    Err(GgufError::Invalid(msg))
}

/// GGUF metadata value type ids (gguf_type in gguf.h).
#[allow(missing_docs)] // one variant per type of the spec, named as there
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Maps a stored type id to a ValueType, None if unknown.
    pub fn from_u32(t: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match t {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoded size of one value of this type (used to bound allocations).
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value; arrays keep their element type so empty arrays round-trip.
#[allow(missing_docs)] // one variant per value type of the spec, named as there
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type, then elements (all of that type). Nested arrays (element type Array) are
    /// read and written like gguf-py does, but ggml/llama.cpp's reader rejects them.
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value's GGUF type id.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (unique in the file).
    pub name: String,
    /// Dimensions innermost (contiguous) first, as stored; numpy shape reversed.
    pub dims: Vec<u64>,
    /// ggml type id (see [`type_info`]).
    pub ggml_type: u32,
    /// Byte offset of the data relative to `GgufFile::data_start` (a multiple of the alignment).
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (product of dims; 1 for zero dims), checked.
    pub fn numel(&self) -> Result<u64> {
        numel(&self.dims).ok_or_else(|| {
            GgufError::Invalid(format!(
                "tensor '{}': element count of dims {:?} overflows",
                self.name, self.dims
            ))
        })
    }

    /// Size of the tensor's data in bytes, checked.
    pub fn nbytes(&self) -> Result<u64> {
        tensor_nbytes(&self.dims, self.ggml_type)
            .map_err(|e| e.context(&format!("tensor '{}'", self.name)))
    }
}

/// A parsed GGUF header: metadata, tensor infos and where the data section starts.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// File format version (always 3 here).
    pub version: u32,
    /// Key/value pairs in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute byte offset of the data section.
    pub data_start: u64,
    /// Data alignment in bytes (`general.alignment` or 32).
    pub alignment: u64,
}

/// (name, elements per block, bytes per block) for a ggml type id, as in ggml.h / gguf-py GGML_QUANT_SIZES.
pub fn type_info(ggml_type: u32) -> Option<(&'static str, usize, usize)> {
    const K: usize = 256;
    Some(match ggml_type {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", K, 2 + 2 + K / 16 + K / 4),
        11 => ("Q3_K", K, 2 + K / 4 + K / 8 + 12),
        12 => ("Q4_K", K, 2 + 2 + K / 2 + 12),
        13 => ("Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12),
        14 => ("Q6_K", K, 2 + K / 2 + K / 4 + K / 16),
        15 => ("Q8_K", K, 4 + K + K / 8),
        16 => ("IQ2_XXS", K, 2 + K / 4),
        17 => ("IQ2_XS", K, 2 + K / 4 + K / 32),
        18 => ("IQ3_XXS", K, 2 + K / 4 + K / 8),
        19 => ("IQ1_S", K, 2 + K / 8 + K / 16),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4),
        22 => ("IQ2_S", K, 2 + K / 4 + K / 16),
        23 => ("IQ4_XS", K, 2 + 2 + K / 2 + K / 64),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", K, K / 8 + K / 16 + K / 32),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", K, 2 + 4 * 13),
        35 => ("TQ2_0", K, 2 + 64),
        39 => ("MXFP4", 32, 1 + 16),
        40 => ("NVFP4", 64, 4 + 32),
        41 => ("Q1_0", 128, 2 + 16),
        42 => ("Q2_0", 64, 2 + 16),
        _ => return None,
    })
}

fn numel(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Byte size of a tensor of `ggml_type` with `dims` (innermost first); checks n_dims <= 4,
/// a known type, dims[0] a multiple of the block size and no overflow past i64::MAX (as ggml).
pub fn tensor_nbytes(dims: &[u64], ggml_type: u32) -> Result<u64> {
    if dims.len() > MAX_DIMS {
        return invalid(format!(
            "n_dims: expected at most {MAX_DIMS}, found {}",
            dims.len()
        ));
    }
    let (tname, blck, bsize) = type_info(ggml_type)
        .ok_or_else(|| GgufError::Invalid(format!("unknown ggml type {ggml_type}")))?;
    let n = numel(dims)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| {
            GgufError::Invalid(format!("element count of dims {dims:?} overflows i64"))
        })?;
    let row = dims.first().copied().unwrap_or(1);
    if row % blck as u64 != 0 {
        return invalid(format!(
            "row length {row} is not a multiple of the {tname} block size {blck}"
        ));
    }
    (n / blck as u64)
        .checked_mul(bsize as u64)
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or_else(|| {
            GgufError::Invalid(format!("byte size of dims {dims:?} as {tname} overflows"))
        })
}

pub(crate) fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// Dequantizes `numel` elements of F32, F16, BF16, Q8_0 or Q4_0 data to f32 like ggml's
/// dequantize_row_* (out is cleared first); other types give `Unsupported`.
pub fn to_f32(ggml_type: u32, data: &[u8], numel: usize, out: &mut Vec<f32>) -> Result<()> {
    let (name, blck, bsize) = type_info(ggml_type)
        .ok_or_else(|| GgufError::Invalid(format!("unknown ggml type {ggml_type}")))?;
    if !numel.is_multiple_of(blck) {
        return invalid(format!(
            "{numel} elements is not a multiple of the {name} block size {blck}"
        ));
    }
    let need = (numel / blck).checked_mul(bsize);
    if need != Some(data.len()) {
        return invalid(format!(
            "{numel} {name} elements need {need:?} bytes, found {}",
            data.len()
        ));
    }
    out.clear();
    out.reserve(numel);
    match ggml_type {
        0 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        1 => out.extend(data.chunks_exact(2).map(f16_at)),
        30 => out.extend(
            data.chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        ),
        8 => {
            for blk in data.chunks_exact(34) {
                let (d, qs) = blk.split_at(2);
                let d = f16_at(d);
                out.extend(qs.iter().map(|&q| q as i8 as f32 * d));
            }
        }
        2 => {
            for blk in data.chunks_exact(18) {
                let (d, qs) = blk.split_at(2);
                let d = f16_at(d);
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        _ => {
            return Err(GgufError::Unsupported(format!(
                "to_f32 for ggml type {name} ({ggml_type})"
            )));
        }
    }
    Ok(())
}
