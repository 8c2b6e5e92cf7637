//! GGUF parsing: header, key/values and tensor infos from an in-memory file.

use super::*;
use std::collections::HashSet;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let have = self.remaining();
        if n > have {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                need: n,
                have,
            });
        }
        let s = self.buf.get(self.pos..self.pos + n as usize).unwrap_or(&[]);
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            GgufError::Invalid(format!("{what} at offset {at}: not valid UTF-8 ({e})"))
        })
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        let vt = ValueType::from_u32(ty).ok_or_else(|| {
            GgufError::Invalid(format!("value type: expected 0..=12, found {ty}"))
        })?;
        Ok(match vt {
            ValueType::U8 => Value::U8(self.arr::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr("i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr("f32")?)),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr("i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr("f64")?)),
            ValueType::Bool => match self.arr::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return invalid(format!("bool: expected 0 or 1, found {b}")),
            },
            ValueType::String => Value::String(self.string("string")?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return invalid(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
                }
                let et = self.u32("array element type")?;
                let evt = ValueType::from_u32(et).ok_or_else(|| {
                    GgufError::Invalid(format!("array element type: expected 0..=12, found {et}"))
                })?;
                let n = self.u64("array length")?;
                let min = n.saturating_mul(evt.min_size());
                if min > self.remaining() {
                    return Err(GgufError::Truncated {
                        what: format!("array of {n} {evt:?}"),
                        offset: self.pos as u64,
                        need: min,
                        have: self.remaining(),
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for i in 0..n {
                    v.push(
                        self.value(et, depth + 1)
                            .map_err(|e| e.context(&format!("element {i}")))?,
                    );
                }
                Value::Array(evt, v)
            }
        })
    }
}

/// Parses the header and tensor infos of a GGUF v3 file held in `bytes` and checks that every
/// tensor's data range [data_start+offset, +nbytes) lies inside `bytes`.
pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic = c.arr::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if version != GGUF_VERSION {
        if version & 0xFFFF == 0 && version != 0 {
            return invalid(format!(
                "version field {version:#x} looks byte-swapped (big-endian GGUF is not supported)"
            ));
        }
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor_count")?;
    let n_kv = c.u64("kv_count")?;

    // Each kv needs >= 8 (key len) + 4 (type) + 1 bytes, each tensor info >= 8 + 4 + 4 + 8.
    let mut kv = Vec::with_capacity(n_kv.min(c.remaining() / 13) as usize);
    let mut keys = HashSet::new();
    for i in 0..n_kv {
        let key = c
            .string("key")
            .map_err(|e| e.context(&format!("kv #{i}")))?;
        if key.is_empty() {
            return invalid(format!("kv #{i}: empty key"));
        }
        if !keys.insert(key.clone()) {
            return invalid(format!("kv #{i}: duplicate key '{key}'"));
        }
        let ctx = format!("key '{key}'");
        let ty = c.u32("value type").map_err(|e| e.context(&ctx))?;
        let v = c.value(ty, 0).map_err(|e| e.context(&ctx))?;
        kv.push((key, v));
    }

    let alignment = match kv.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
        Some((_, v)) => {
            return invalid(format!(
                "'{ALIGNMENT_KEY}': expected a u32 power of two, found {v:?}"
            ));
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors.min(c.remaining() / 24) as usize);
    let mut names = HashSet::new();
    let mut sizes = Vec::with_capacity(tensors.capacity());
    for i in 0..n_tensors {
        let name = c
            .string("tensor name")
            .map_err(|e| e.context(&format!("tensor #{i}")))?;
        if !names.insert(name.clone()) {
            return invalid(format!("tensor #{i}: duplicate tensor name '{name}'"));
        }
        let ctx = format!("tensor '{name}'");
        let n_dims = c.u32("n_dims").map_err(|e| e.context(&ctx))?;
        if n_dims as usize > MAX_DIMS {
            return invalid(format!(
                "{ctx}: n_dims: expected at most {MAX_DIMS}, found {n_dims}"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("dim").map_err(|e| e.context(&ctx))?);
        }
        let ggml_type = c.u32("ggml type").map_err(|e| e.context(&ctx))?;
        let offset = c.u64("data offset").map_err(|e| e.context(&ctx))?;
        sizes.push(tensor_nbytes(&dims, ggml_type).map_err(|e| e.context(&ctx))?);
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    let data_start = align_up(c.pos as u64, alignment)
        .ok_or_else(|| GgufError::Invalid("data section start overflows".into()))?;
    let len = bytes.len() as u64;
    if n_tensors > 0 && data_start > len {
        return Err(GgufError::Truncated {
            what: "padding before tensor data".into(),
            offset: c.pos as u64,
            need: data_start - c.pos as u64,
            have: c.remaining(),
        });
    }
    for (t, &nbytes) in tensors.iter().zip(&sizes) {
        if t.offset % alignment != 0 {
            return invalid(format!(
                "tensor '{}': offset {} is not a multiple of the alignment {alignment}",
                t.name, t.offset
            ));
        }
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(nbytes));
        match end {
            Some(end) if end <= len => {}
            _ => {
                return invalid(format!(
                    "tensor '{}': data [{} + {}, +{}) extends past the end of the file ({} bytes)",
                    t.name, data_start, t.offset, nbytes, len
                ));
            }
        }
    }
    Ok(GgufFile {
        version,
        kv,
        tensors,
        data_start,
        alignment,
    })
}

impl GgufFile {
    /// The value of the first key equal to `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Index of the tensor named `name`.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// The data bytes of tensor `i` inside the whole-file buffer `bytes` (every bound checked).
    pub fn tensor_data<'a>(&self, bytes: &'a [u8], i: usize) -> Result<&'a [u8]> {
        let t = self.tensors.get(i).ok_or_else(|| {
            GgufError::Invalid(format!(
                "tensor index {i} out of range (file has {})",
                self.tensors.len()
            ))
        })?;
        let n = t.nbytes()?;
        let start = self.data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(n));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => {
                Ok(bytes.get(s as usize..e as usize).unwrap_or(&[]))
            }
            _ => invalid(format!(
                "tensor '{}': data [{} + {}, +{n}) is outside the {}-byte buffer",
                t.name,
                self.data_start,
                t.offset,
                bytes.len()
            )),
        }
    }
}
