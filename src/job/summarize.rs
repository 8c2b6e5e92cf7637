//! `arrowquant.summarize`: the report of a quantized table against its original.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use super::report::{ORIGINAL, Report, ReportBuilder};
use crate::array::{LAYER_NAME, Q, SHAPE, WEIGHTS};
use crate::error::{Error, Result};

/// The report of `quantized` (rows with `layer_name` and `q`) against the `original` weight
/// table, joined on `layer_name`: what `arrowquant.summarize` returns.
pub fn summarize(
    original: impl Iterator<Item = Result<RecordBatch>>,
    quantized: &[RecordBatch],
) -> Result<Report> {
    use datafusion::arrow::compute::interleave;
    let mut index: HashMap<String, (usize, usize)> = HashMap::new();
    let mut q_columns: Vec<ArrayRef> = Vec::new();
    for (b, batch) in quantized.iter().enumerate() {
        let (Some(names), Some(q)) = (batch.column_by_name(LAYER_NAME), batch.column_by_name(Q))
        else {
            return Err(Error::Schema(format!(
                "the quantized table needs '{LAYER_NAME}' and '{Q}' columns"
            )));
        };
        let names = cast(names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        for r in 0..names.len() {
            if names.is_valid(r) {
                index.insert(names.value(r).to_string(), (b, r));
            }
        }
        q_columns.push(Arc::clone(q));
    }
    let sources: Vec<&dyn Array> = q_columns.iter().map(|c| c.as_ref()).collect();
    let mut report = ReportBuilder::default();
    for batch in original {
        let batch = batch?;
        crate::array::validate_schema(batch.schema_ref())?;
        let names = batch
            .column_by_name(LAYER_NAME)
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?
            .ok_or_else(|| Error::Schema(format!("no '{LAYER_NAME}' column")))?;
        let names = names.as_string::<i32>();
        let mut picks = Vec::with_capacity(names.len());
        for r in 0..names.len() {
            let name = if names.is_valid(r) {
                names.value(r)
            } else {
                ""
            };
            match index.get(name) {
                Some(&p) => picks.push(p),
                None => {
                    return Err(Error::Data(format!(
                        "layer '{name}' is in the original table but not in the quantized one"
                    )));
                }
            }
        }
        let q = if sources.is_empty() {
            continue;
        } else {
            interleave(&sources, &picks)?
        };
        let mut fields = vec![LAYER_NAME.to_string()];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(names.clone())];
        if let Some(shape) = batch.column_by_name(SHAPE) {
            fields.push(SHAPE.into());
            columns.push(Arc::clone(shape));
        }
        fields.push(Q.into());
        columns.push(q);
        fields.push(ORIGINAL.into());
        columns.push(Arc::clone(
            batch
                .column_by_name(WEIGHTS)
                .ok_or_else(|| Error::Schema(format!("no '{WEIGHTS}' column")))?,
        ));
        let joined = RecordBatch::try_from_iter(fields.into_iter().zip(columns))?;
        report.add(&joined)?;
    }
    report.finish()
}
