//! The pure part of reading `.safetensors`: the header's tensors and their widened values, from
//! bytes, with no DataFusion (the fuzz target `safetensors` compiles this file on its own).

use safetensors::Dtype;

/// One tensor of a file: where its bytes are.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The tensor's name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Start of its bytes, from the start of the file.
    pub start: usize,
    /// End of its bytes, from the start of the file.
    pub end: usize,
}

impl Entry {
    /// The tensor's bytes in `file`, or `None` if they lie outside it.
    pub fn bytes<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        file.get(self.start..self.end)
    }
}

/// The tensors of a safetensors file, in file order, after the header check (offsets inside the
/// file, no overlap, sizes matching shape × dtype); an error message otherwise.
pub fn entries(file: &[u8]) -> Result<Vec<Entry>, String> {
    let (header, metadata) = safetensors::SafeTensors::read_metadata(file)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let data_start = header + 8;
    let mut entries: Vec<Entry> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| Entry {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            start: data_start + info.data_offsets.0,
            end: data_start + info.data_offsets.1,
        })
        .collect();
    entries.sort_by_key(|e| (e.start, e.name.clone()));
    Ok(entries)
}

/// Bytes per element of the float dtypes arrowquant widens to f32; `None` for the others.
pub fn element_size(d: Dtype) -> Option<usize> {
    match d {
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

/// Widens little-endian `bytes` of a float dtype to f32 into `out`, replacing its contents
/// (left empty for other dtypes); reusing `out` spares a fresh allocation per tensor.
pub fn widen_into(d: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    // Sized first, then filled element by element from fixed-size chunks: loops the compiler
    // vectorizes (an `extend` over a mapped iterator does not).
    let Some(size) = element_size(d) else {
        out.clear();
        return;
    };
    out.resize(bytes.len() / size, 0.0);
    match d {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, v) in out.iter_mut().zip(widen(d, bytes)) {
                *o = v;
            }
        }
    }
}

/// Widens little-endian `bytes` of a float dtype to f32 (empty for other dtypes).
pub fn widen(d: Dtype, bytes: &[u8]) -> Vec<f32> {
    match d {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => Vec::new(),
    }
}
