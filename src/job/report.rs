//! What a job did, as one Arrow `RecordBatch`: a row per layer (name, shape, scheme, sizes,
//! error metrics, sensitivity), the model's totals in the schema metadata. Rendered once for the
//! terminal (arrow's pretty printer), once as JSON, and handed to Python as is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Builder, ListBuilder, RecordBatch, StringArray,
    UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type,
};
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::{Map, Value};

use crate::array::{LAYER_NAME, Q, QRows, SHAPE, WeightRows, check_shapes, i64_list};
use crate::error::{Error, Result};
use crate::kernels::{ErrorSums, dequantize_into, error_sums, over_pieces, weight_entropy_threads};

/// The column of a converted batch that carries the original weights to the report.
pub const ORIGINAL: &str = "__aq_original";

/// Keys of the model totals in the report's schema metadata, in the order they are shown.
pub const TOTALS: [&str; 6] = [
    "bytes_before",
    "bytes_after",
    "compression_ratio",
    "cosine_similarity",
    "seconds",
    "throughput_bytes_per_s",
];

/// The float columns of [`ReportBuilder::part_schema`]: a layer's [`ErrorSums`], then its
/// sensitivity.
const PART_SUMS: [&str; 6] = [
    "squared_error",
    "max_abs_error",
    "xx",
    "yy",
    "xy",
    "sensitivity",
];

/// [`error_sums`] of `x` against `y` on every core, added piece by piece.
fn sums_threads(x: &[f32], y: &[f32]) -> ErrorSums {
    let mut total = ErrorSums::default();
    for s in over_pieces(x, 0, |start, p| {
        error_sums(p, y.get(start..).unwrap_or(&[]))
    }) {
        total.add(&s);
    }
    total
}

/// `before / after`, 1 when nothing is after.
fn ratio(before: u64, after: u64) -> f64 {
    if after == 0 {
        1.0
    } else {
        before as f64 / after as f64
    }
}

/// One layer's line, while the report is gathered.
struct Line {
    layer_name: String,
    shape: Option<Vec<i64>>,
    scheme: String,
    numel: u64,
    bytes_before: u64,
    bytes_after: u64,
    sums: ErrorSums,
    sensitivity: f64,
}

/// Gathers the report batch by batch.
pub struct ReportBuilder {
    lines: Vec<Line>,
    totals: ErrorSums,
    start: Instant,
}

impl Default for ReportBuilder {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            totals: ErrorSums::default(),
            start: Instant::now(),
        }
    }
}

impl ReportBuilder {
    /// Adds the layers of a converted batch: `layer_name`, `q`, the original weights in
    /// [`ORIGINAL`] and `shape` if present. Checks each row's shape against its length.
    /// Returns the float32 bytes of the batch.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<u64> {
        let (Some(original), Some(q)) = (batch.column_by_name(ORIGINAL), batch.column_by_name(Q))
        else {
            return Ok(0);
        };
        let xs = WeightRows::try_new("report", original)?;
        check_shapes(batch, &xs)?;
        let qs = QRows::try_new("report", q)?;
        let names = match batch.column_by_name(LAYER_NAME) {
            Some(c) => Some(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()),
            None => None,
        };
        let shapes = match batch.column_by_name(SHAPE) {
            Some(c) => Some(cast(c, &i64_list())?),
            None => None,
        };
        let mut bytes = 0;
        let mut scratch = Vec::new();
        for i in 0..batch.num_rows() {
            let Ok(Some(x)) = xs.row(i) else { continue };
            let layer_name = names
                .as_ref()
                .filter(|n| n.is_valid(i))
                .map(|n| n.value(i).to_string())
                .unwrap_or_default();
            let shape = shapes.as_ref().and_then(|s| {
                let s = s.as_list::<i32>();
                s.is_valid(i)
                    .then(|| s.value(i).as_primitive::<Int64Type>().values().to_vec())
            });
            let bytes_before = 4 * x.len() as u64;
            bytes += bytes_before;
            // Large layers on every core: the report is on the writer's path.
            let sensitivity = weight_entropy_threads(x, 256, 0).unwrap_or(f64::NAN);
            let (scheme, bytes_after, sums) = match qs.row(i) {
                Ok(Some(r)) => {
                    scratch.clear();
                    dequantize_into(&r, &mut scratch)
                        .map_err(|e| Error::Data(format!("layer '{layer_name}': {e}")))?;
                    let mins = r.mins.map_or(0, <[f32]>::len);
                    let after = (r.codes.len() + 4 * (r.scales.len() + mins)) as u64;
                    (
                        r.scheme.name().to_string(),
                        after,
                        sums_threads(x, &scratch),
                    )
                }
                // Kept as float32: exact, but part of the whole model's cosine similarity.
                _ => ("float32".to_string(), bytes_before, sums_threads(x, x)),
            };
            self.totals.add(&sums);
            self.lines.push(Line {
                layer_name,
                shape,
                scheme,
                numel: x.len() as u64,
                bytes_before,
                bytes_after,
                sums,
                sensitivity,
            });
        }
        Ok(bytes)
    }

    /// The schema of [`Self::part_batch`]: where a part was written, then each layer's line
    /// with its raw error sums, so that the lines of many parts add up to the same report.
    pub fn part_schema() -> SchemaRef {
        let u64s = ["rows", "numel", "bytes_before", "bytes_after", "n"];
        let mut fields = vec![
            Field::new("part", DataType::Utf8, false),
            Field::new("executor", DataType::Utf8, false),
            Field::new("file_bytes", DataType::UInt64, false),
            Field::new(LAYER_NAME, DataType::Utf8, false),
            Field::new(SHAPE, i64_list(), true),
            Field::new("scheme", DataType::Utf8, false),
        ];
        fields.extend(u64s.iter().map(|n| Field::new(*n, DataType::UInt64, false)));
        fields.extend(
            PART_SUMS
                .iter()
                .map(|n| Field::new(*n, DataType::Float64, false)),
        );
        Arc::new(Schema::new(fields))
    }

    /// The lines gathered so far as rows of [`Self::part_schema`], for the part file `part`
    /// (`rows` rows, `file_bytes` bytes) written by `executor`.
    pub fn part_batch(
        &self,
        part: &str,
        executor: &str,
        rows: u64,
        file_bytes: u64,
    ) -> Result<RecordBatch> {
        let l = &self.lines;
        let n = l.len();
        let strings = |f: fn(&Line) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(l.iter().map(f)))
        };
        let u64s = |f: fn(&Line) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(l.iter().map(f)))
        };
        let f64s = |f: fn(&Line) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(l.iter().map(f)))
        };
        let mut shapes = ListBuilder::new(Int64Builder::new());
        for line in l {
            shapes.append_option(line.shape.as_ref().map(|s| s.iter().copied().map(Some)));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(part, n))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                executor, n,
            ))),
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(
                file_bytes, n,
            ))),
            strings(|l| &l.layer_name),
            Arc::new(shapes.finish()),
            strings(|l| &l.scheme),
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(rows, n))),
            u64s(|l| l.numel),
            u64s(|l| l.bytes_before),
            u64s(|l| l.bytes_after),
            u64s(|l| l.sums.n as u64),
            f64s(|l| l.sums.squared_error),
            f64s(|l| l.sums.max_abs_error),
            f64s(|l| l.sums.xx),
            f64s(|l| l.sums.yy),
            f64s(|l| l.sums.xy),
            f64s(|l| l.sensitivity),
        ];
        Ok(RecordBatch::try_new(Self::part_schema(), columns)?)
    }

    /// Adds the lines of a batch of [`Self::part_schema`] rows (one part's, written elsewhere).
    pub fn add_part_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Data(format!("part report: no column '{name}'")))
        };
        let string = |name: &str| -> Result<StringArray> {
            Ok(cast(column(name)?, &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        };
        let u64s = |name: &str| -> Result<UInt64Array> {
            Ok(column(name)?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| Error::Data(format!("part report: '{name}' is not uint64")))?
                .clone())
        };
        let f64s = |name: &str| -> Result<Float64Array> {
            Ok(column(name)?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| Error::Data(format!("part report: '{name}' is not float64")))?
                .clone())
        };
        let (names, schemes) = (string(LAYER_NAME)?, string("scheme")?);
        let shapes = cast(column(SHAPE)?, &i64_list())?;
        let shapes = shapes.as_list::<i32>();
        let [numel, before, after, n] = ["numel", "bytes_before", "bytes_after", "n"].map(u64s);
        let [se, max, xx, yy, xy, sensitivity] = PART_SUMS.map(f64s);
        let (numel, before, after, n) = (numel?, before?, after?, n?);
        let (se, max, xx, yy, xy, sensitivity) = (se?, max?, xx?, yy?, xy?, sensitivity?);
        for i in 0..batch.num_rows() {
            let sums = ErrorSums {
                n: n.value(i) as usize,
                squared_error: se.value(i),
                max_abs_error: max.value(i),
                xx: xx.value(i),
                yy: yy.value(i),
                xy: xy.value(i),
            };
            self.totals.add(&sums);
            self.lines.push(Line {
                layer_name: names.value(i).to_string(),
                shape: shapes.is_valid(i).then(|| {
                    shapes
                        .value(i)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                }),
                scheme: schemes.value(i).to_string(),
                numel: numel.value(i),
                bytes_before: before.value(i),
                bytes_after: after.value(i),
                sums,
                sensitivity: sensitivity.value(i),
            });
        }
        Ok(())
    }

    /// Puts the layers in the natural order of their names (a job's partitions finish in any
    /// order).
    pub fn sort_by_layer_name(&mut self) {
        self.lines
            .sort_by_cached_key(|l| super::natural_key(&l.layer_name));
    }

    /// The report, layers in the order they were added.
    pub fn finish(self) -> Result<Report> {
        let l = &self.lines;
        let before: u64 = l.iter().map(|l| l.bytes_before).sum();
        let after: u64 = l.iter().map(|l| l.bytes_after).sum();
        let seconds = self.start.elapsed().as_secs_f64();

        let totals = [
            before.to_string(),
            after.to_string(),
            ratio(before, after).to_string(),
            self.totals.metrics().cosine_similarity.to_string(),
            seconds.to_string(),
            (before as f64 / seconds.max(1e-9)).to_string(),
        ];
        let f64s = |f: fn(&Line) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(l.iter().map(f)))
        };
        let u64s = |f: fn(&Line) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(l.iter().map(f)))
        };
        let mut shapes = ListBuilder::new(Int64Builder::new());
        for line in l {
            shapes.append_option(line.shape.as_ref().map(|s| s.iter().copied().map(Some)));
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                LAYER_NAME,
                Arc::new(StringArray::from_iter_values(
                    l.iter().map(|l| &l.layer_name),
                )),
            ),
            (SHAPE, Arc::new(shapes.finish())),
            (
                "scheme",
                Arc::new(StringArray::from_iter_values(l.iter().map(|l| &l.scheme))),
            ),
            ("numel", u64s(|l| l.numel)),
            ("bytes_before", u64s(|l| l.bytes_before)),
            ("bytes_after", u64s(|l| l.bytes_after)),
            (
                "compression_ratio",
                f64s(|l| ratio(l.bytes_before, l.bytes_after)),
            ),
            ("mse", f64s(|l| l.sums.metrics().mse)),
            ("max_abs_error", f64s(|l| l.sums.metrics().max_abs_error)),
            ("sqnr_db", f64s(|l| l.sums.metrics().sqnr_db)),
            (
                "cosine_similarity",
                f64s(|l| l.sums.metrics().cosine_similarity),
            ),
            ("sensitivity", f64s(|l| l.sensitivity)),
        ];
        let metadata: HashMap<String, String> = TOTALS
            .iter()
            .zip(totals)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), *n == SHAPE))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let batch = RecordBatch::try_new(schema, columns.into_iter().map(|(_, c)| c).collect())?;
        Ok(Report { batch })
    }
}

/// A job's report: one row per layer, the totals in the schema metadata ([`TOTALS`]).
#[derive(Debug, Clone)]
pub struct Report {
    /// The report itself.
    pub batch: RecordBatch,
}

impl Report {
    /// A model total by its key in [`TOTALS`] (NaN when missing).
    pub fn total(&self, key: &str) -> f64 {
        self.batch
            .schema_ref()
            .metadata()
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// The report for a terminal: the layers as a table (arrow's pretty printer, floats to the
    /// digits that matter), then a line of totals.
    pub fn to_text(&self) -> Result<String> {
        let b = &self.batch;
        let columns: Vec<ArrayRef> = b
            .schema_ref()
            .fields()
            .iter()
            .zip(b.columns())
            .map(
                |(field, column)| match column.as_primitive_opt::<Float64Type>() {
                    Some(values) => {
                        let text = values.iter().map(|v| {
                            v.map(|v| match field.name().as_str() {
                                "mse" | "max_abs_error" => format!("{v:.3e}"),
                                "cosine_similarity" => format!("{v:.6}"),
                                _ => format!("{v:.2}"),
                            })
                        });
                        Arc::new(text.collect::<StringArray>()) as ArrayRef
                    }
                    None => Arc::clone(column),
                },
            )
            .collect();
        let shown = RecordBatch::try_from_iter(
            b.schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .zip(columns),
        )?;
        let table = pretty_format_batches(&[shown])?;
        Ok(format!(
            "{table}\ntotal: {} layers, {} -> {} bytes (compression {:.2}x), cosine similarity \
             {:.6}, {:.2} s, {:.1} MB/s\n",
            self.batch.num_rows(),
            self.total("bytes_before"),
            self.total("bytes_after"),
            self.total("compression_ratio"),
            self.total("cosine_similarity"),
            self.total("seconds"),
            self.total("throughput_bytes_per_s") / 1e6
        ))
    }

    /// The report as JSON: `layers` (an object per row), then the totals. Non-finite numbers
    /// (the SQNR of a layer kept as float32) are `null`.
    pub fn to_json(&self) -> Value {
        let b = &self.batch;
        let mut layers = vec![Map::new(); b.num_rows()];
        for (field, column) in b.schema_ref().fields().iter().zip(b.columns()) {
            for (row, layer) in layers.iter_mut().enumerate() {
                layer.insert(field.name().clone(), json_value(column.as_ref(), row));
            }
        }
        let mut out = Map::new();
        out.insert(
            "layers".into(),
            Value::Array(layers.into_iter().map(Value::Object).collect()),
        );
        for key in TOTALS {
            let v = self.total(key);
            let v = if key.starts_with("bytes") {
                Value::from(v as u64)
            } else {
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
            };
            out.insert(key.into(), v);
        }
        Value::Object(out)
    }
}

/// One value of a report column as JSON.
fn json_value(column: &dyn Array, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::UInt64 => Value::from(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
        DataType::List(_) => {
            let list = column.as_list::<i32>().value(row);
            Value::from(list.as_primitive::<Int64Type>().values().to_vec())
        }
        _ => Value::Null,
    }
}
