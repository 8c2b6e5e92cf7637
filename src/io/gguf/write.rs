//! GGUF writing: header, key/values and tensor infos up front, then streamed tensor data.

use super::*;
use std::collections::HashSet;
use std::io::Write;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value, depth: u32) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(et, items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return invalid(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
            }
            out.extend_from_slice(&(*et as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (i, item) in items.iter().enumerate() {
                if item.value_type() != *et {
                    return invalid(format!(
                        "array element {i}: expected {et:?}, found {:?}",
                        item.value_type()
                    ));
                }
                put_value(out, item, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Streaming GGUF writer: `new` writes header, kv, tensor infos and padding; then the tensors'
/// bytes are passed to `write_data` in info order (any chunking); `finish` checks completeness.
pub struct GgufWriter<W: Write> {
    w: W,
    infos: Vec<TensorInfo>,
    sizes: Vec<u64>,
    alignment: u64,
    cur: usize,
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Validates and writes everything before the data; `tensors` are (name, dims innermost first, ggml type).
    pub fn new(
        mut w: W,
        kv: &[(String, Value)],
        tensors: &[(String, Vec<u64>, u32)],
    ) -> Result<Self> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut keys = HashSet::new();
        for (k, v) in kv {
            if k.is_empty() || !keys.insert(k.as_str()) {
                return invalid(format!("key '{k}': keys must be non-empty and unique"));
            }
            if k == ALIGNMENT_KEY {
                match v {
                    Value::U32(a) if a.is_power_of_two() => alignment = *a as u64,
                    _ => {
                        return invalid(format!(
                            "'{ALIGNMENT_KEY}': expected a u32 power of two, found {v:?}"
                        ));
                    }
                }
            }
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v, 0).map_err(|e| e.context(&format!("key '{k}'")))?;
        }
        let mut infos = Vec::with_capacity(tensors.len());
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut names = HashSet::new();
        let mut offset = 0u64;
        for (name, dims, ty) in tensors {
            if name.len() >= MAX_NAME_BYTES || !names.insert(name.as_str()) {
                return invalid(format!(
                    "tensor '{name}': names must be unique and under {MAX_NAME_BYTES} bytes"
                ));
            }
            let n = tensor_nbytes(dims, *ty).map_err(|e| e.context(&format!("tensor '{name}'")))?;
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            infos.push(TensorInfo {
                name: name.clone(),
                dims: dims.clone(),
                ggml_type: *ty,
                offset,
            });
            sizes.push(n);
            offset = align_up(n, alignment)
                .and_then(|p| offset.checked_add(p))
                .ok_or_else(|| GgufError::Invalid("total data size overflows".into()))?;
        }
        let padded = align_up(out.len() as u64, alignment).unwrap_or(0) as usize;
        out.resize(padded, 0);
        w.write_all(&out)?;
        let mut gw = GgufWriter {
            w,
            infos,
            sizes,
            alignment,
            cur: 0,
            written: 0,
        };
        gw.advance()?;
        Ok(gw)
    }

    /// Tensor infos with the offsets that were written.
    pub fn infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Moves past every completed (or empty) tensor, writing its padding.
    fn advance(&mut self) -> Result<()> {
        while let Some(&size) = self.sizes.get(self.cur) {
            if self.written < size {
                break;
            }
            let mut pad = align_up(size, self.alignment).unwrap_or(size) - size;
            while pad > 0 {
                let n = pad.min(64);
                self.w.write_all(&[0u8; 64][..n as usize])?;
                pad -= n;
            }
            self.cur += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Writes the next bytes of the current tensor; a chunk may not cross into the next tensor.
    pub fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(&size) = self.sizes.get(self.cur) else {
            return invalid(format!(
                "{} extra data bytes after the last tensor",
                chunk.len()
            ));
        };
        let left = size - self.written;
        if chunk.len() as u64 > left {
            return invalid(format!(
                "tensor '{}': expected {left} more bytes (of {size}), got a {}-byte chunk",
                self.infos[self.cur].name,
                chunk.len()
            ));
        }
        self.w.write_all(chunk)?;
        self.written += chunk.len() as u64;
        self.advance()
    }

    /// Checks every tensor was fully written, flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.infos.get(self.cur) {
            return invalid(format!(
                "tensor '{}' has {} of {} bytes written at finish",
                t.name, self.written, self.sizes[self.cur]
            ));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}
