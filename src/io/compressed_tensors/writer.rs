//! A streaming writer of sharded `.safetensors` models: the tensors are planned first (name,
//! dtype, shape), so each shard's header is written before its data, and the data then streams
//! tensor by tensor in plan order — a shard is never held in memory. Shards are cut at
//! `max_shard_bytes` (Hugging Face's `model-00001-of-0000N.safetensors`, with
//! `model.safetensors.index.json`), one file `model.safetensors` when everything fits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One tensor of the plan.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The tensor's name.
    pub name: String,
    /// Its safetensors dtype (`"I32"`, `"F32"`, `"BF16"`, …).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its size in bytes.
    pub bytes: usize,
}

/// The shards of a plan: which tensors each holds.
#[derive(Debug)]
struct Shard {
    file: String,
    tensors: std::ops::Range<usize>,
}

/// Writes planned tensors, in order, into shards under a directory.
pub struct ShardedWriter {
    dir: PathBuf,
    plan: Vec<Planned>,
    shards: Vec<Shard>,
    /// Index of the next tensor to write.
    next: usize,
    out: Option<(usize, BufWriter<File>)>,
}

/// Bytes of every dtype this writer is given.
pub fn dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F64" | "I64" | "U64" => Some(8),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
        _ => None,
    }
}

impl ShardedWriter {
    /// Plans the shards of `plan` (in order, a new shard when the next tensor would pass
    /// `max_shard_bytes`; a tensor larger than that gets a shard of its own) under `dir`.
    pub fn new(dir: &Path, plan: Vec<Planned>, max_shard_bytes: usize) -> Result<Self> {
        for t in &plan {
            let numel: usize = t.shape.iter().product();
            if dtype_size(&t.dtype).map(|s| s * numel) != Some(t.bytes) {
                return Err(Error::Data(format!(
                    "tensor '{}': {} bytes do not match dtype {} and shape {:?}",
                    t.name, t.bytes, t.dtype, t.shape
                )));
            }
        }
        let mut cuts = vec![0];
        let mut size = 0usize;
        for (i, t) in plan.iter().enumerate() {
            if size > 0 && size + t.bytes > max_shard_bytes {
                cuts.push(i);
                size = 0;
            }
            size += t.bytes;
        }
        cuts.push(plan.len());
        let n = cuts.len() - 1;
        let shards = cuts
            .windows(2)
            .enumerate()
            .map(|(k, w)| Shard {
                file: if n == 1 {
                    "model.safetensors".to_string()
                } else {
                    format!("model-{:05}-of-{n:05}.safetensors", k + 1)
                },
                tensors: w[0]..w[1],
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            plan,
            shards,
            next: 0,
            out: None,
        })
    }

    /// The header of shard `k`: JSON padded with spaces to a multiple of 8 bytes.
    fn header(&self, k: usize) -> Result<Vec<u8>> {
        let mut map = serde_json::Map::new();
        map.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut offset = 0usize;
        for t in &self.plan[self.shards[k].tensors.clone()] {
            map.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype,
                    "shape": t.shape,
                    "data_offsets": [offset, offset + t.bytes],
                }),
            );
            offset += t.bytes;
        }
        let mut json = serde_json::to_vec(&map).map_err(|e| Error::Data(e.to_string()))?;
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend(json);
        Ok(out)
    }

    /// The name of the next tensor to write, if any is left.
    pub fn next_name(&self) -> Option<&str> {
        self.plan.get(self.next).map(|t| t.name.as_str())
    }

    /// Writes the next tensor of the plan; `name` and the size of `bytes` must be the plan's.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.plan.get(self.next) else {
            return Err(Error::Data(format!(
                "tensor '{name}' is not in the plan (all {} written)",
                self.plan.len()
            )));
        };
        if t.name != name || t.bytes != bytes.len() {
            return Err(Error::Data(format!(
                "internal error (a bug in arrowquant, please report it): expected tensor '{}' \
                 of {} bytes next, got '{name}' of {}",
                t.name,
                t.bytes,
                bytes.len()
            )));
        }
        let k = self
            .shards
            .iter()
            .position(|s| s.tensors.contains(&self.next))
            .unwrap_or(0);
        if self.out.as_ref().map(|(i, _)| *i) != Some(k) {
            self.close()?;
            let path = self.dir.join(&self.shards[k].file);
            let file = File::create(&path).map_err(Error::io(&path))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(&self.header(k)?).map_err(Error::io(&path))?;
            self.out = Some((k, w));
        }
        if let Some((k, w)) = self.out.as_mut() {
            let path = self.dir.join(&self.shards[*k].file);
            w.write_all(bytes).map_err(Error::io(&path))?;
        }
        self.next += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((k, w)) = self.out.take() {
            let path = self.dir.join(&self.shards[k].file);
            let file = w.into_inner().map_err(|e| Error::Io {
                path: path.display().to_string(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(Error::io(&path))?;
        }
        Ok(())
    }

    /// Closes the last shard and, for several shards, writes `model.safetensors.index.json`.
    /// Every planned tensor must have been written. Returns the shard file names.
    pub fn finish(mut self) -> Result<Vec<String>> {
        if self.next != self.plan.len() {
            return Err(Error::Data(format!(
                "internal error (a bug in arrowquant, please report it): {} of {} tensors written",
                self.next,
                self.plan.len()
            )));
        }
        self.close()?;
        // A plan with no tensors still gets its (empty) file.
        if self.plan.is_empty() {
            let path = self.dir.join(&self.shards[0].file);
            std::fs::write(&path, self.header(0)?).map_err(Error::io(&path))?;
        }
        if self.shards.len() > 1 {
            let mut weight_map = BTreeMap::new();
            for s in &self.shards {
                for t in &self.plan[s.tensors.clone()] {
                    weight_map.insert(t.name.clone(), s.file.clone());
                }
            }
            let total: usize = self.plan.iter().map(|t| t.bytes).sum();
            let index = serde_json::json!({
                "metadata": { "total_size": total },
                "weight_map": weight_map,
            });
            let path = self.dir.join("model.safetensors.index.json");
            let text =
                serde_json::to_string_pretty(&index).map_err(|e| Error::Data(e.to_string()))?;
            std::fs::write(&path, text).map_err(Error::io(&path))?;
        }
        Ok(self.shards.iter().map(|s| s.file.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_read_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let plan: Vec<Planned> = (0..5)
            .map(|i| Planned {
                name: format!("t{i}"),
                dtype: "I32".into(),
                shape: vec![3, i + 1],
                bytes: 12 * (i + 1),
            })
            .collect();
        let mut w = ShardedWriter::new(dir.path(), plan.clone(), 40).unwrap();
        for t in &plan {
            let data: Vec<u8> = (0..t.bytes).map(|b| b as u8).collect();
            w.write(&t.name, &data).unwrap();
        }
        let files = w.finish().unwrap();
        // 12+24 | 36 | 48 | 60: a tensor larger than the limit gets a shard of its own.
        assert_eq!(files.len(), 4);
        assert_eq!(files[0], "model-00001-of-00004.safetensors");
        let mut seen = Vec::new();
        for f in &files {
            let bytes = std::fs::read(dir.path().join(f)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                assert_eq!(
                    view.data().len(),
                    plan.iter().find(|t| t.name == name).unwrap().bytes
                );
                assert_eq!(view.data()[5], 5);
                seen.push(name);
            }
        }
        seen.sort();
        assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
        let index =
            std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap();
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        assert_eq!(
            index["weight_map"]["t4"],
            "model-00004-of-00004.safetensors"
        );
        assert_eq!(index["metadata"]["total_size"], 180);
    }

    #[test]
    fn out_of_plan_writes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vec![Planned {
            name: "a".into(),
            dtype: "F32".into(),
            shape: vec![2],
            bytes: 8,
        }];
        let mut w = ShardedWriter::new(dir.path(), plan.clone(), 1 << 30).unwrap();
        assert!(w.write("b", &[0; 8]).is_err());
        w.write("a", &[0; 8]).unwrap();
        assert!(w.write("a", &[0; 8]).is_err());
        assert_eq!(w.finish().unwrap(), ["model.safetensors"]);
        let bad = vec![Planned {
            name: "a".into(),
            dtype: "F32".into(),
            shape: vec![3],
            bytes: 8,
        }];
        assert!(ShardedWriter::new(dir.path(), bad, 1).is_err());
    }
}
