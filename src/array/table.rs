//! Whole weight tables, batch by batch (DESIGN.md §1): schema validation and the batch-level
//! quantize and dequantize that Python and the row path of the jobs share.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::args::{FloatArg, IntArg, RowError, StrArg};
use super::q::{QRows, q_type};
use super::rows::{dequantize_rows, quantize_rows, quantize_rows_to_target};
use super::weights::{WeightRows, f32_list, i64_list};
use super::{LAYER_NAME, Q, SHAPE, WEIGHTS};
use crate::error::{Error, Result};
use crate::options::{Group, QuantizeOptions};

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_float_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(
                f.data_type(),
                DataType::Float16 | DataType::Float32 | DataType::Float64
            )
        }
        _ => false,
    }
}

fn is_int_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(f.data_type(), DataType::Int32 | DataType::Int64)
        }
        _ => false,
    }
}

/// Checks the columns of a weight table; the error lists, for each column that is wrong, what
/// was expected and what was found.
pub fn validate_schema(schema: &Schema) -> Result<()> {
    let mut problems = Vec::new();
    let mut check =
        |name: &str, required: bool, ok: fn(&DataType) -> bool, expected: &str| match schema
            .field_with_name(name)
        {
            Ok(f) if ok(f.data_type()) => {}
            Ok(f) => problems.push(format!(
                "column '{name}': expected {expected}, found {}",
                f.data_type()
            )),
            Err(_) if required => problems.push(format!(
                "column '{name}': expected {expected}, found no such column"
            )),
            Err(_) => {}
        };
    check(
        LAYER_NAME,
        true,
        is_string,
        "utf8 (or large_utf8, utf8view)",
    );
    check(
        WEIGHTS,
        true,
        is_float_list,
        "list<float32> (or large_list, fixed_size_list; float16/float64 items)",
    );
    check(SHAPE, false, is_int_list, "list<int64> (or int32 items)");
    if problems.is_empty() {
        return Ok(());
    }
    let found: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    Err(Error::Schema(format!(
        "not a weight table: {}. The table has [{}]",
        problems.join("; "),
        found.join(", ")
    )))
}

/// The layer names of a batch as utf8, when it has them.
fn layer_names(batch: &RecordBatch) -> Option<ArrayRef> {
    let col = batch.column_by_name(LAYER_NAME)?;
    cast(col, &DataType::Utf8).ok()
}

/// A data error for `row` of `batch`, naming its layer.
fn data_error(batch: &RecordBatch, e: RowError) -> Error {
    let name = layer_names(batch).and_then(|names| {
        let names = names.as_string::<i32>().clone();
        (e.row < names.len() && names.is_valid(e.row)).then(|| names.value(e.row).to_string())
    });
    match name {
        Some(name) => Error::Data(format!("layer '{name}' (row {}): {}", e.row, e.message)),
        None => Error::Data(format!("row {}: {}", e.row, e.message)),
    }
}

/// Each row's shape as i64 dims, when the batch has a shape column.
fn shapes(batch: &RecordBatch) -> Result<Option<Vec<Option<Vec<i64>>>>> {
    let Some(col) = batch.column_by_name(SHAPE) else {
        return Ok(None);
    };
    let col = cast(col, &i64_list())?;
    let list = col.as_list::<i32>();
    Ok(Some(
        (0..list.len())
            .map(|i| {
                list.is_valid(i).then(|| {
                    let v = list.value(i);
                    v.as_primitive::<Int64Type>().values().to_vec()
                })
            })
            .collect(),
    ))
}

/// Checks every row's shape against its length; returns the per-row innermost dimension.
pub fn check_shapes(batch: &RecordBatch, rows: &WeightRows) -> Result<Option<Vec<Option<i64>>>> {
    let Some(shapes) = shapes(batch)? else {
        return Ok(None);
    };
    let mut inner = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.iter().enumerate() {
        let x = rows
            .row(i)
            .map_err(|e| data_error(batch, RowError::new(i, e)))?;
        let (Some(shape), Some(x)) = (shape, x) else {
            inner.push(None);
            continue;
        };
        if let Some(d) = shape.iter().find(|&&d| d < 0) {
            return Err(data_error(
                batch,
                RowError::new(i, format!("shape {shape:?} has a negative dimension {d}")),
            ));
        }
        let product = shape.iter().try_fold(1i64, |p, &d| p.checked_mul(d));
        if product != Some(x.len() as i64) {
            return Err(data_error(
                batch,
                RowError::new(
                    i,
                    format!(
                        "shape {shape:?} has {} elements but the row has {}",
                        product.map_or("too many".to_string(), |p| p.to_string()),
                        x.len()
                    ),
                ),
            ));
        }
        inner.push(Some(shape.last().copied().unwrap_or(1)));
    }
    Ok(Some(inner))
}

/// The schema of `quantize_batch`'s output: every column but `weights`, then `q`.
pub fn quantized_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = input
        .fields()
        .iter()
        .filter(|f| f.name() != WEIGHTS)
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(Q, q_type(), true));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// Checks `opts` for a table with `schema`: [`QuantizeOptions::validate`], and per-channel's
/// need for a `shape` column.
pub fn check_options(schema: &Schema, opts: &QuantizeOptions) -> Result<()> {
    opts.validate()?;
    if opts.group == Group::PerChannel && schema.field_with_name(SHAPE).is_err() {
        return Err(Error::Config(format!(
            "per-channel quantization needs a '{SHAPE}' column, and the table has none"
        )));
    }
    Ok(())
}

/// `SELECT <other columns>, quantize(weights, scheme, group) AS q` over one batch.
pub fn quantize_batch(batch: &RecordBatch, opts: &QuantizeOptions) -> Result<RecordBatch> {
    validate_schema(batch.schema_ref())?;
    check_options(batch.schema_ref(), opts)?;
    let Some(weights) = batch.column_by_name(WEIGHTS) else {
        return Err(Error::Schema(format!("no '{WEIGHTS}' column")));
    };
    let rows = WeightRows::try_new("quantize", weights)?;
    let inner = check_shapes(batch, &rows)?;
    let group = match opts.group {
        Group::PerTensor => IntArg::Const(Some(0)),
        Group::Size(n) => IntArg::Const(Some(n as i64)),
        Group::PerChannel | Group::Count(_) => IntArg::Column(Int64Array::from(
            (0..rows.len())
                .map(|i| {
                    let numel = rows.row(i).ok().flatten().map_or(0, <[f32]>::len);
                    let inner = inner.as_ref().and_then(|v| v.get(i).copied().flatten());
                    let inner = inner.and_then(|d| usize::try_from(d).ok());
                    opts.group_size(numel, inner).map(|g| g as i64)
                })
                .collect::<Vec<_>>(),
        )),
    };
    let q = match opts.min_cosine {
        Some(t) => quantize_rows_to_target(&rows, &FloatArg::Const(Some(t)), &group),
        None => {
            let threads = match opts.threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            };
            let scheme = StrArg::Const(Some(opts.scheme.name().to_string()));
            quantize_rows(&rows, &scheme, &group, opts.method, threads)
        }
    }
    .map_err(|e| data_error(batch, e))?;
    let schema = quantized_schema(batch.schema_ref());
    let mut columns: Vec<ArrayRef> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != WEIGHTS)
        .map(|(_, c)| Arc::clone(c))
        .collect();
    columns.push(q);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The schema of `dequantize_batch`'s output: `q` replaced by `weights` (list<float32>).
pub fn dequantized_schema(input: &Schema) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .filter(|f| f.name() != WEIGHTS)
        .map(|f| {
            if f.name() == Q {
                Field::new(WEIGHTS, f32_list(), true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// `SELECT <other columns>, dequantize(q) AS weights` over one batch. A `weights` column that a
/// job kept for excluded layers fills the rows whose `q` is NULL.
pub fn dequantize_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let Some(q) = batch.column_by_name(Q) else {
        let found: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Err(Error::Schema(format!(
            "not a quantized table: expected a '{Q}' column (the struct quantize returns), found [{}]",
            found.join(", ")
        )));
    };
    let rows = QRows::try_new("dequantize", q)?;
    let mut weights = dequantize_rows(&rows).map_err(|e| data_error(batch, e))?;
    if let Some(kept) = batch.column_by_name(WEIGHTS) {
        let kept = cast(kept, &f32_list())?;
        let use_kept = datafusion::arrow::compute::is_null(&weights)?;
        weights = datafusion::arrow::compute::kernels::zip::zip(&use_kept, &kept, &weights)?;
    }
    let schema = dequantized_schema(batch.schema_ref());
    let columns: Vec<ArrayRef> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != WEIGHTS)
        .map(|(f, c)| {
            if f.name() == Q {
                Arc::clone(&weights)
            } else {
                Arc::clone(c)
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}
