//! `dequantize`: a quantized Parquet table back to float32 weights.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::functions::expr_fn::coalesce;
use datafusion::logical_expr::{Expr, ident};

use super::{Progress, check_paths, job_context, name_layers, write_streams};
use crate::array::{Q, WEIGHTS};
use crate::error::{Error, Result};
use crate::io::output::{ParquetOutput, metadata};
use crate::udf::expr_fn;

/// Turns a quantized Parquet table back into float32 weights: `q` becomes `weights`, and a
/// `weights` column that `convert` kept for excluded layers fills the rows whose `q` is NULL.
pub async fn dequantize(
    input: &Path,
    output: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<()> {
    check_paths(input, output, overwrite)?;
    let ctx = job_context();
    let partitions = ctx.copied_config().target_partitions();
    crate::io::parquet_source::register_streaming(&ctx, "input", input, partitions)?;
    let df = ctx.table("input").await?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if !names.iter().any(|n| n == Q) {
        return Err(Error::Schema(format!(
            "{}: not a quantized table: expected a '{Q}' column, found [{}]",
            input.display(),
            names.join(", ")
        )));
    }
    let mut select: Vec<Expr> = names
        .iter()
        .filter(|n| *n != Q && *n != WEIGHTS)
        .map(|n| ident(n.as_str()))
        .collect();
    let weights = expr_fn::dequantize(ident(Q));
    select.push(if names.iter().any(|n| n == WEIGHTS) {
        coalesce(vec![weights, ident(WEIGHTS)]).alias(WEIGHTS)
    } else {
        weights.alias(WEIGHTS)
    });
    let df = df.select(select)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let task = Arc::new(df.task_ctx());
    let plan = name_layers(df.create_physical_plan().await?)?;
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, task)?;
    let out = ParquetOutput::create(output, &schema, &metadata(&[]))?;
    write_streams(streams, out, |b| {
        progress.advance(b.num_rows() as u64, 0);
        Ok(b.clone())
    })
    .await
}
