//! A GGUF file, memory-mapped, as a weight table: one row per tensor (`layer_name`, `weights`
//! as float32, `shape` outermost first as in a weight table, `ggml_type`), pulled lazily.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Int64Array, ListArray, RecordBatch, StringArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use memmap2::Mmap;

use super::{GgufFile, TensorInfo, Value, parse, to_f32, type_info};
use crate::array::{LAYER_NAME, SHAPE, WEIGHTS, f32_item, f32_list, i64_list};
use crate::error::{Error, Result};
use crate::kernels::kquants::{KQuant, dequantize_k};

/// The ggml type column of [`schema`].
pub const GGML_TYPE: &str = "ggml_type";

/// The schema of the rows: `layer_name, weights list<float32>, shape list<int64>, ggml_type`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(LAYER_NAME, DataType::Utf8, false),
        Field::new(WEIGHTS, f32_list(), false),
        Field::new(SHAPE, i64_list(), false),
        Field::new(GGML_TYPE, DataType::Utf8, false),
    ]))
}

/// A mapped GGUF file and its parsed header.
#[derive(Debug, Clone)]
pub struct GgufModel {
    path: PathBuf,
    map: Arc<Mmap>,
    /// The header: key-values and tensor infos, in file order.
    pub file: Arc<GgufFile>,
}

/// The K-quant of a ggml type id.
fn k_quant(ggml_type: u32) -> Option<KQuant> {
    match ggml_type {
        10 => Some(KQuant::Q2K),
        11 => Some(KQuant::Q3K),
        12 => Some(KQuant::Q4K),
        13 => Some(KQuant::Q5K),
        14 => Some(KQuant::Q6K),
        _ => None,
    }
}

/// The name of a ggml type id (`Q4_K`), or its number when unknown.
pub fn type_name(ggml_type: u32) -> String {
    type_info(ggml_type).map_or_else(|| format!("type {ggml_type}"), |t| t.0.to_string())
}

impl GgufModel {
    /// Maps `path` and parses its header; every tensor's data must lie inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io(path))?;
        // SAFETY: a read-only map of a model file. If another process truncates it while we
        // read, the OS raises SIGBUS: the same contract as llama.cpp's and safetensors' loaders.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
        let parsed = parse(&map).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            file: Arc::new(parsed),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A key's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.file.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The stored bytes of tensor `i`.
    pub fn tensor_bytes(&self, i: usize) -> Result<&[u8]> {
        self.file
            .tensor_data(&self.map, i)
            .map_err(|e| Error::Data(format!("{}: {e}", self.path.display())))
    }

    /// Tensor `i` as float32 (F32, F16, BF16, Q8_0, Q4_0 and the K-quants), into `out`.
    pub fn tensor_f32(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        let info = self.info(i)?;
        let bytes = self.tensor_bytes(i)?;
        let numel = info
            .numel()
            .map_err(|e| Error::Data(e.to_string()))
            .and_then(|n| usize::try_from(n).map_err(|_| Error::Data(format!("{n} elements"))))?;
        let place = |e: String| {
            Error::Data(format!(
                "{}: tensor '{}' ({}): {e}",
                self.path.display(),
                info.name,
                type_name(info.ggml_type)
            ))
        };
        match k_quant(info.ggml_type) {
            Some(k) => {
                out.clear();
                dequantize_k(k, bytes, numel, out).map_err(place)
            }
            None => to_f32(info.ggml_type, bytes, numel, out).map_err(|e| place(e.to_string())),
        }
    }

    /// Tensor info `i`.
    pub fn info(&self, i: usize) -> Result<&TensorInfo> {
        self.file
            .tensors
            .get(i)
            .ok_or_else(|| Error::Data(format!("no tensor {i}")))
    }

    /// Tensor `i` as a one-row batch of [`schema`].
    pub fn batch(&self, i: usize) -> Result<RecordBatch> {
        let info = self.info(i)?;
        let mut values = Vec::new();
        self.tensor_f32(i, &mut values)?;
        let shape: Vec<i64> = info.dims.iter().rev().map(|&d| d as i64).collect();
        let weights = ListArray::try_new(
            f32_item(),
            OffsetBuffer::from_lengths([values.len()]),
            Arc::new(Float32Array::from(values)),
            None,
        )?;
        let shape_list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Int64, true)),
            OffsetBuffer::from_lengths([shape.len()]),
            Arc::new(Int64Array::from(shape)),
            None,
        )?;
        Ok(RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![info.name.as_str()])),
                Arc::new(weights),
                Arc::new(shape_list),
                Arc::new(StringArray::from(vec![type_name(info.ggml_type)])),
            ],
        )?)
    }

    /// The model as a DataFusion table: one partition, streamed tensor by tensor.
    pub fn table(&self) -> Result<StreamingTable> {
        let partition: Arc<dyn PartitionStream> = Arc::new(TensorStream {
            model: self.clone(),
            schema: schema(),
        });
        Ok(StreamingTable::try_new(schema(), vec![partition])?)
    }
}

/// The one partition of [`GgufModel::table`].
#[derive(Debug)]
struct TensorStream {
    model: GgufModel,
    schema: SchemaRef,
}

impl PartitionStream for TensorStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let model = self.model.clone();
        let batches = (0..model.file.tensors.len())
            .map(move |i| model.batch(i).map_err(DataFusionError::from));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        ))
    }
}
