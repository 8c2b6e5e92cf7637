//! `convert IN.gguf OUT.gguf --preset Q4_K_M`: llama-quantize's job. Each tensor's type comes
//! from SQL over the file's tensor list (`sql/llama_presets.sql`, llama.cpp's own rules written
//! as one `CASE` per preset, or a query of the user's); the tensors are then streamed from the
//! memory-mapped input, quantized with the byte-exact ggml kernels and written in the order the
//! query gives, into a GGUF that keeps every key-value of the input.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, ListArray, RecordBatch, StringArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;

use super::{Progress, check_paths};
use crate::error::{Error, Result};
use crate::io::gguf::{GgufModel, GgufWriter, Value, type_name};
use crate::io::output::{commit, temp_beside};
use crate::kernels::{
    Method, QuantizedBuffers, Scheme, gguf_blocks_into, q5_blocks, quantize_into_with,
};

/// llama.cpp's per-tensor type rules for its presets, as SQL over `tensors(layer_name, shape)`
/// and `params(n_layers, n_head, n_head_kv, n_expert, arch)`: one column per preset.
pub const PRESETS_SQL: &str = include_str!("../../sql/llama_presets.sql");

/// The presets of `llama-quantize` that [`PRESETS_SQL`] writes, with their `general.file_type`.
pub const PRESETS: [(&str, u32); 6] = [
    ("Q8_0", 7),
    ("Q4_0", 2),
    ("Q4_K_S", 14),
    ("Q4_K_M", 15),
    ("Q5_K_M", 17),
    ("Q6_K", 18),
];

/// How each tensor's type is chosen.
#[derive(Debug, Clone)]
pub enum TypeRules {
    /// One of [`PRESETS`], by name (case-insensitive).
    Preset(String),
    /// A query over `tensors` and `params` returning `layer_name, type`, in output order.
    Sql(String),
}

/// Options of the GGUF job.
#[derive(Debug, Clone)]
pub struct GgufOptions {
    /// The type of each tensor.
    pub rules: TypeRules,
    /// Quantize tensors that are already quantized (dequantized first), as llama-quantize's
    /// `--allow-requantize`.
    pub allow_requantize: bool,
    /// Replace OUT when it exists.
    pub overwrite: bool,
    /// Threads per tensor (0: every core).
    pub threads: usize,
    /// The encoder: ggml's reference (`Rtn`, byte-identical to llama-quantize), or the search,
    /// which writes better q4_k blocks in the same layout.
    pub method: Method,
}

/// What the GGUF job wrote: each tensor's name, input type and output type, in output order.
#[derive(Debug, Default)]
pub struct GgufReport {
    /// (tensor, input type, output type).
    pub tensors: Vec<(String, String, String)>,
    /// The `general.file_type` written.
    pub file_type: u32,
}

/// What happens to one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// Copied as stored.
    Keep,
    /// Converted to f16.
    F16,
    /// Quantized.
    Quantize(Scheme),
    /// ggml's Q5_0 (false) or Q5_1 (true): GGUF-only, llama.cpp's fallback for rows that are
    /// not a multiple of 256.
    Q5(bool),
}

fn target(name: &str, t: &str) -> Result<Target> {
    match t.to_ascii_lowercase().as_str() {
        "f32" | "keep" => Ok(Target::Keep),
        "f16" => Ok(Target::F16),
        "q5_0" => Ok(Target::Q5(false)),
        "q5_1" => Ok(Target::Q5(true)),
        other => match other.parse::<Scheme>() {
            Ok(s) if s.block_size().is_some() => Ok(Target::Quantize(s)),
            _ => Err(Error::Config(format!(
                "tensor '{name}': type '{t}' is not one GGUF can store; expected f32 (keep), f16, \
                 q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k or q6_k"
            ))),
        },
    }
}

/// The ggml type id a target is written as, given the input's.
fn ggml_type(t: Target, input: u32) -> u32 {
    match t {
        Target::Keep => input,
        Target::F16 => 1,
        Target::Q5(false) => 6,
        Target::Q5(true) => 7,
        Target::Quantize(s) => match s {
            Scheme::Q8_0 => 8,
            Scheme::Q4_0 => 2,
            Scheme::Q2K => 10,
            Scheme::Q3K => 11,
            Scheme::Q4K => 12,
            Scheme::Q5K => 13,
            _ => 14,
        },
    }
}

fn int_kv(model: &GgufModel, key: &str) -> Option<i64> {
    match model.get(key)? {
        Value::U8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

/// `tensors(layer_name, shape)` (shape outermost first) and `params(...)` of a model.
fn register_metadata(ctx: &SessionContext, model: &GgufModel) -> Result<()> {
    let infos = &model.file.tensors;
    let names = StringArray::from_iter_values(infos.iter().map(|t| t.name.as_str()));
    let dims: Vec<i64> = infos
        .iter()
        .flat_map(|t| t.dims.iter().rev().map(|&d| d as i64))
        .collect();
    let shapes = ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        OffsetBuffer::from_lengths(infos.iter().map(|t| t.dims.len())),
        Arc::new(Int64Array::from(dims)),
        None,
    )?;
    let tensors = RecordBatch::try_from_iter([
        ("layer_name", Arc::new(names) as _),
        ("shape", Arc::new(shapes) as _),
    ])?;
    let arch = match model.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => "llama".to_string(),
    };
    let param = |key: &str| int_kv(model, &format!("{arch}.{key}"));
    let n_layers = param("block_count").unwrap_or_else(|| {
        infos
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix("blk.")?
                    .split('.')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1)
    });
    let n_head = param("attention.head_count").unwrap_or(0);
    let params = RecordBatch::try_from_iter([
        ("n_layers", Arc::new(Int64Array::from(vec![n_layers])) as _),
        ("n_head", Arc::new(Int64Array::from(vec![n_head])) as _),
        (
            "n_head_kv",
            Arc::new(Int64Array::from(vec![
                param("attention.head_count_kv").unwrap_or(n_head),
            ])) as _,
        ),
        (
            "n_expert",
            Arc::new(Int64Array::from(vec![param("expert_count").unwrap_or(0)])) as _,
        ),
        ("arch", Arc::new(StringArray::from(vec![arch])) as _),
    ])?;
    for (name, batch) in [("tensors", tensors), ("params", params)] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}

/// Runs the rules: each tensor's type, in output order.
async fn plan_types(
    model: &GgufModel,
    rules: &TypeRules,
) -> Result<(Vec<(String, String)>, Option<u32>)> {
    let ctx = SessionContext::new();
    register_metadata(&ctx, model)?;
    let (sql, column, file_type) = match rules {
        TypeRules::Preset(p) => {
            let Some(&(name, ftype)) = PRESETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(p))
            else {
                return Err(Error::Config(format!(
                    "--preset: expected one of {}, got '{p}'",
                    PRESETS.map(|p| p.0).join(", ")
                )));
            };
            (PRESETS_SQL, name.to_ascii_lowercase(), Some(ftype))
        }
        TypeRules::Sql(sql) => (sql.as_str(), "type".to_string(), None),
    };
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| Error::Config(format!("type rules: {e}")))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let (Some(names), Some(types)) =
            (b.column_by_name("layer_name"), b.column_by_name(&column))
        else {
            return Err(Error::Config(format!(
                "type rules: the query must return columns 'layer_name' and '{column}'"
            )));
        };
        let (names, types) = (cast(names, &DataType::Utf8)?, cast(types, &DataType::Utf8)?);
        let (names, types) = (names.as_string::<i32>(), types.as_string::<i32>());
        for i in 0..b.num_rows() {
            let name = if names.is_valid(i) {
                names.value(i)
            } else {
                ""
            };
            let t = if types.is_valid(i) {
                types.value(i)
            } else {
                "f32"
            };
            out.push((name.to_string(), t.to_string()));
        }
    }
    Ok((out, file_type))
}

/// The `general.file_type` of a custom rule set: llama.cpp's value for its most common type.
fn guessed_file_type(targets: &[Target]) -> u32 {
    let mut counts = std::collections::HashMap::new();
    for t in targets {
        if let Target::Quantize(s) = t {
            *counts.entry(s.name()).or_insert(0usize) += 1;
        }
    }
    let top = counts.into_iter().max_by_key(|(_, c)| *c).map(|(s, _)| s);
    match top {
        Some("q8_0") => 7,
        Some("q4_0") => 2,
        Some("q2_k") => 10,
        Some("q3_k") => 12,
        Some("q4_k") => 15,
        Some("q5_k") => 17,
        Some("q6_k") => 18,
        _ => 0,
    }
}

/// Requantizes a GGUF model (F32/F16/BF16, or quantized with `allow_requantize`) into a new
/// GGUF, tensor by tensor; returns what it wrote.
pub async fn convert_gguf(
    input: &Path,
    output: &Path,
    opts: &GgufOptions,
    progress: &dyn Progress,
) -> Result<GgufReport> {
    check_paths(input, output, opts.overwrite)?;
    let model = GgufModel::open(input)?;
    let (types, preset_file_type) = plan_types(&model, &opts.rules).await?;
    let mut plan = Vec::with_capacity(types.len());
    for (name, t) in &types {
        let Some(i) = model.file.tensor_index(name) else {
            return Err(Error::Config(format!(
                "type rules: tensor '{name}' is not in {}",
                input.display()
            )));
        };
        plan.push((i, target(name, t)?));
    }
    if plan.len() != model.file.tensors.len() {
        let missing: Vec<&str> = model
            .file
            .tensors
            .iter()
            .filter(|t| !types.iter().any(|(n, _)| n == &t.name))
            .map(|t| t.name.as_str())
            .collect();
        return Err(Error::Config(format!(
            "type rules: every tensor needs exactly one type; {} rows for {} tensors (missing: \
             {})",
            plan.len(),
            model.file.tensors.len(),
            missing.join(", ")
        )));
    }
    for &(i, t) in &plan {
        let info = model.info(i)?;
        let stored = info.ggml_type;
        if t != Target::Keep && !matches!(stored, 0 | 1 | 30) && !opts.allow_requantize {
            return Err(Error::Config(format!(
                "tensor '{}' is already {}; pass --allow-requantize to quantize it again (its \
                 quality suffers, as with llama-quantize)",
                info.name,
                type_name(stored)
            )));
        }
    }
    let targets: Vec<Target> = plan.iter().map(|p| p.1).collect();
    let file_type = preset_file_type.unwrap_or_else(|| guessed_file_type(&targets));
    let mut kv: Vec<(String, Value)> = model
        .file
        .kv
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("split.")
                && k != "general.quantization_version"
                && k != "general.file_type"
        })
        .cloned()
        .collect();
    kv.push(("general.quantization_version".into(), Value::U32(2)));
    kv.push(("general.file_type".into(), Value::U32(file_type)));
    let mut infos = Vec::with_capacity(plan.len());
    for &(i, t) in &plan {
        let info = model.info(i)?;
        infos.push((
            info.name.clone(),
            info.dims.clone(),
            ggml_type(t, info.ggml_type),
        ));
    }
    let tmp = temp_beside(output)?;
    let file = tmp.reopen().map_err(Error::io(tmp.path()))?;
    let gguf_err =
        |e: crate::io::gguf::GgufError| Error::Data(format!("{}: {e}", output.display()));
    let mut writer =
        GgufWriter::new(BufWriter::with_capacity(1 << 22, file), &kv, &infos).map_err(gguf_err)?;
    let mut report = GgufReport {
        file_type,
        ..Default::default()
    };
    let (mut weights, mut bytes) = (Vec::new(), Vec::new());
    for &(i, t) in &plan {
        let info = model.info(i)?;
        let out_type = type_name(ggml_type(t, info.ggml_type));
        match t {
            Target::Keep => writer
                .write_data(model.tensor_bytes(i)?)
                .map_err(gguf_err)?,
            Target::F16 => {
                model.tensor_f32(i, &mut weights)?;
                bytes.clear();
                bytes.extend(
                    weights
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes()),
                );
                writer.write_data(&bytes).map_err(gguf_err)?;
            }
            Target::Q5(with_min) => {
                model.tensor_f32(i, &mut weights)?;
                bytes.clear();
                q5_blocks(&weights, with_min, &mut bytes)
                    .map_err(|e| Error::Data(format!("tensor '{}': {e}", info.name)))?;
                writer.write_data(&bytes).map_err(gguf_err)?;
            }
            Target::Quantize(scheme) => {
                model.tensor_f32(i, &mut weights)?;
                let mut q = QuantizedBuffers::default();
                let threads = match opts.threads {
                    0 => std::thread::available_parallelism().map_or(1, usize::from),
                    n => n,
                };
                quantize_into_with(&weights, scheme, 0, opts.method, &mut q, threads)
                    .map_err(|e| Error::Data(format!("tensor '{}' as {scheme}: {e}", info.name)))?;
                let r = q.view(scheme, 0, weights.len());
                bytes.clear();
                gguf_blocks_into(&r, &mut bytes)
                    .map_err(|e| Error::Data(format!("tensor '{}': {e}", info.name)))?;
                writer.write_data(&bytes).map_err(gguf_err)?;
            }
        }
        progress.advance(1, 4 * weights.len() as u64);
        report
            .tensors
            .push((info.name.clone(), type_name(info.ggml_type), out_type));
    }
    let mut buffered = writer.finish().map_err(gguf_err)?;
    buffered.flush().map_err(Error::io(output))?;
    drop(buffered);
    commit(tmp, output)?;
    Ok(report)
}
