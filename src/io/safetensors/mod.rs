//! Reading `.safetensors` models (one file or a directory of shards) as weight-table batches,
//! lazily: files are memory-mapped and each tensor becomes a one-row batch when it is pulled.
//! Used by `arrowquant import` and by the SQL table function `read_safetensors('path')`
//! ([`SafetensorsModel::table`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Int64Array, ListArray, RecordBatch, StringArray};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use memmap2::Mmap;
use safetensors::Dtype;

mod parse;

pub use parse::{Entry, element_size, entries, widen, widen_into};

use crate::array::{LAYER_NAME, SHAPE, WEIGHTS, f32_item, f32_list, i64_list};
use crate::error::{Error, Result};

/// One mapped file and its tensors, in file order.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    /// The open file, for `pread` ([`SafetensorsModel::read_at`]).
    file: File,
    map: Mmap,
    entries: Vec<Entry>,
}

/// A safetensors model: one file or the shards of a directory.
#[derive(Debug, Clone)]
pub struct SafetensorsModel {
    shards: Arc<Vec<Shard>>,
}

/// The schema of the rows: `layer_name, weights list<float32>, shape list<int64>, dtype`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(LAYER_NAME, DataType::Utf8, false),
        Field::new(WEIGHTS, f32_list(), false),
        Field::new(SHAPE, i64_list(), false),
        Field::new("dtype", DataType::Utf8, false),
    ]))
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<(File, Mmap)> {
    let file = File::open(path).map_err(Error::io(path))?;
    // SAFETY: read-only map of a model file. If another process truncates it while we read,
    // the OS raises SIGBUS: the same contract as every mmap-based model loader (safetensors').
    let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
    Ok((file, map))
}

/// The files of a model: `path` itself, or the shards of a directory (those named by
/// `model.safetensors.index.json` when present, else every `*.safetensors`, sorted).
pub fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let index = path.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(Error::io(&index))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: not valid JSON: {e}", index.display())))?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(Error::Data(format!(
                "{}: no \"weight_map\" object",
                index.display()
            )));
        };
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| path.join(f))
            .collect();
        files.sort();
        files.dedup();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::Data(format!(
                "{}: shard {}, named by model.safetensors.index.json, is missing",
                path.display(),
                missing.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(Error::io(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Data(format!(
            "{}: no *.safetensors files",
            path.display()
        )));
    }
    Ok(files)
}

impl SafetensorsModel {
    /// Opens a model: maps each file and checks its header (offsets inside the file, no overlap).
    pub fn open(path: &Path) -> Result<Self> {
        let mut shards = Vec::new();
        for file in model_files(path)? {
            let (handle, map) = map_file(&file)?;
            let entries = parse::entries(&map)
                .map_err(|e| Error::Data(format!("{}: {e}", file.display())))?;
            shards.push(Shard {
                path: file,
                file: handle,
                map,
                entries,
            });
        }
        Ok(Self {
            shards: Arc::new(shards),
        })
    }

    /// Every tensor of every shard, in shard and file order, with its raw bytes (an error when
    /// they lie outside the file).
    pub fn raw_tensors(&self) -> impl Iterator<Item = (&Entry, Result<&[u8]>)> {
        self.shards.iter().flat_map(|shard| {
            shard.entries.iter().map(move |e| {
                let bytes = e.bytes(&shard.map).ok_or_else(|| {
                    Error::Data(format!(
                        "{}: tensor '{}' lies outside the file",
                        shard.path.display(),
                        e.name
                    ))
                });
                (e, bytes)
            })
        })
    }

    /// Reads `len` bytes of tensor `e` (one of [`Self::raw_tensors`]) starting `offset` bytes into
    /// it, with `pread` instead of through the memory map: a one-pass reader of a large model
    /// avoids a page fault per 4 KiB this way.
    pub fn read_at(&self, e: &Entry, offset: usize, out: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(shard) = self
            .shards
            .iter()
            .find(|s| s.entries.iter().any(|x| std::ptr::eq(x, e)))
        else {
            return Err(Error::Data(format!(
                "tensor '{}' is not in this model",
                e.name
            )));
        };
        if e.start + offset + out.len() > e.end.min(shard.map.len()) {
            return Err(Error::Data(format!(
                "{}: tensor '{}' lies outside the file",
                shard.path.display(),
                e.name
            )));
        }
        shard
            .file
            .read_exact_at(out, (e.start + offset) as u64)
            .map_err(Error::io(&shard.path))
    }

    /// Tells the OS that the pages of `bytes` (a tensor from [`Self::raw_tensors`]) will not be
    /// read again, so a pass over a model larger than memory keeps only the current tensor's
    /// pages in this process's resident set (the page cache keeps them for others).
    pub fn release(&self, bytes: &[u8]) {
        const PAGE: usize = 4096;
        let start = bytes.as_ptr() as usize;
        for shard in self.shards.iter() {
            let base = shard.map.as_ptr() as usize;
            if start < base || start + bytes.len() > base + shard.map.len() {
                continue;
            }
            // Whole pages inside the tensor only: a neighbour's bytes stay mapped.
            let from = (start - base).div_ceil(PAGE) * PAGE;
            let to = (start - base + bytes.len()) / PAGE * PAGE;
            if to > from {
                #[cfg(unix)]
                // SAFETY: the map is a read-only view of an unmodified file and no slice of these
                // pages is used after this call (the caller is done with `bytes`); MADV_DONTNEED on
                // a file mapping only drops the pages from this process, and a later read faults
                // them in again from the file with the same contents.
                #[allow(unsafe_code)]
                let _ = unsafe {
                    shard.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        from,
                        to - from,
                    )
                };
            }
            return;
        }
    }

    /// Tensors that are not floats, which the rows skip: (name, dtype).
    pub fn skipped(&self) -> Vec<(String, String)> {
        self.shards
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| element_size(e.dtype).is_none())
            .map(|e| (e.name.clone(), format!("{:?}", e.dtype)))
            .collect()
    }

    /// The float tensors as one-row batches, pulled lazily.
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'static {
        let shards = Arc::clone(&self.shards);
        let schema = schema();
        let positions: Vec<(usize, usize)> = shards
            .iter()
            .enumerate()
            .flat_map(|(s, shard)| {
                shard
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| element_size(e.dtype).is_some())
                    .map(move |(i, _)| (s, i))
            })
            .collect();
        positions.into_iter().map(move |(s, i)| {
            let shard = &shards[s];
            let e = &shard.entries[i];
            let bytes = e.bytes(&shard.map).ok_or_else(|| {
                Error::Data(format!(
                    "{}: tensor '{}' lies outside the file",
                    shard.path.display(),
                    e.name
                ))
            })?;
            let values = mapped_f32(&shards, s, e.dtype, bytes)
                .unwrap_or_else(|| ScalarBuffer::from(widen(e.dtype, bytes)));
            let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
            tensor_batch(&schema, &e.name, values, &shape, &format!("{:?}", e.dtype))
        })
    }
}

/// A slice of a shard's memory map, owned (the map stays alive while an array uses it).
struct MapSlice {
    shards: Arc<Vec<Shard>>,
    shard: usize,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.shards
            .get(self.shard)
            .and_then(|s| s.map.get(self.range.clone()))
            .unwrap_or_default()
    }
}

/// A little-endian, 4-byte aligned float32 tensor as a buffer over the memory map itself: no
/// copy (and no fresh allocation to fault in) on the way to the Parquet writer.
fn mapped_f32(
    shards: &Arc<Vec<Shard>>,
    shard: usize,
    dtype: Dtype,
    bytes: &[u8],
) -> Option<ScalarBuffer<f32>> {
    if dtype != Dtype::F32 || cfg!(target_endian = "big") || bytes.as_ptr().align_offset(4) != 0 {
        return None;
    }
    let map = &shards.get(shard)?.map;
    let start = (bytes.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
    let owner = MapSlice {
        shards: Arc::clone(shards),
        shard,
        range: start..start + bytes.len(),
    };
    let buffer = Buffer::from(bytes::Bytes::from_owner(owner));
    (buffer.len() == bytes.len()).then(|| ScalarBuffer::new(buffer, 0, bytes.len() / 4))
}

/// A one-row batch of [`schema`].
pub fn tensor_batch(
    schema: &SchemaRef,
    name: &str,
    values: ScalarBuffer<f32>,
    shape: &[i64],
    dtype: &str,
) -> Result<RecordBatch> {
    let weights = ListArray::try_new(
        f32_item(),
        OffsetBuffer::from_lengths([values.len()]),
        Arc::new(Float32Array::new(values, None)),
        None,
    )?;
    let shape = ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        OffsetBuffer::from_lengths([shape.len()]),
        Arc::new(Int64Array::from(shape.to_vec())),
        None,
    )?;
    Ok(RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(StringArray::from(vec![name])),
            Arc::new(weights),
            Arc::new(shape),
            Arc::new(StringArray::from(vec![dtype])),
        ],
    )?)
}

impl SafetensorsModel {
    /// The model as a DataFusion table: one partition, streamed tensor by tensor.
    pub fn table(&self) -> Result<StreamingTable> {
        let partition: Arc<dyn PartitionStream> = Arc::new(ModelStream {
            model: self.clone(),
            schema: schema(),
        });
        Ok(StreamingTable::try_new(schema(), vec![partition])?)
    }
}

/// The one partition of [`SafetensorsModel::table`].
#[derive(Debug)]
struct ModelStream {
    model: SafetensorsModel,
    schema: SchemaRef,
}

impl PartitionStream for ModelStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .model
            .batches()
            .map(|b| b.map_err(DataFusionError::from));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        ))
    }
}
