//! The jobs (DESIGN.md §5), one file each: [`convert()`], [`dequantize()`], [`import`],
//! [`convert_gguf`] (llama-quantize's job), the SQL runner [`sql`], [`demo`], and the report and
//! summary. A job builds a DataFusion plan from
//! [`crate::udf::expr_fn`] expressions over its input ([`crate::io`]), runs it partition by
//! partition, and writes the batches into an output that appears atomically.

mod compressed_tensors;
mod convert;
mod demo;
mod dequantize;
mod gguf;
mod import;
mod layer_names;
pub mod parts;
mod report;
mod sql;
mod summarize;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;

pub use compressed_tensors::{
    CompressedTensorsOptions, DEFAULT_DENSE, DEFAULT_MAX_SHARD_BYTES, ExportReport,
    convert_compressed_tensors, export_q_table, glob_match,
};
pub use convert::{ConvertOptions, convert, is_dir_output};
pub(crate) use convert::{check_dir_paths, converted, write_parts};
pub use demo::{demo_model_shapes, write_demo_model};
pub use dequantize::dequantize;
pub use gguf::{GgufOptions, GgufReport, PRESETS, PRESETS_SQL, TypeRules, convert_gguf};
pub use import::{ImportReport, import_safetensors};
pub use layer_names::{NameLayersExec, name_layers};
pub use report::{Report, ReportBuilder, TOTALS};
pub use sql::{run_sql, run_statements};
pub use summarize::summarize;

use crate::error::{Error, Result};
use crate::io::output::ParquetOutput;

/// Rows per DataFusion batch in jobs. A weight table's rows are whole tensors, often 16 MB and
/// more, so one per batch bounds memory by the largest tensor per partition; measured on a
/// 256 MB table, 1 row beat 4 (0.78 s against 1.0 s, 650 MB peak RSS against 800 MB) because
/// smaller decode buffers are reused by the allocator instead of page-faulted in afresh.
pub const JOB_BATCH_ROWS: usize = 1;

/// Progress callbacks: rows and float32 bytes done so far.
pub trait Progress: Send + Sync {
    /// Called after each written batch.
    fn advance(&self, rows: u64, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _rows: u64, _bytes: u64) {}
}

/// A multi-threaded tokio runtime for one job.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))
}

/// A new session for jobs: every core, small batches, the functions registered.
pub fn job_context() -> SessionContext {
    // No round-robin repartitioning of a partition's batches: rows keep the order of their row
    // group, so the same input gives the same output file. Parallelism comes from the input's
    // row groups (one partition per core), and within a partition from the pipeline (the
    // reader thread, the quantizing task and the writer overlap).
    let config = SessionConfig::new()
        .with_batch_size(JOB_BATCH_ROWS)
        .with_round_robin_repartition(false);
    // The planner knows `WriteParts`, the node of outputs written as part files.
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(parts::PartsQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::register_all(&ctx);
    ctx
}

/// Checks IN and OUT before any work: IN exists, OUT is not IN, OUT is free unless `overwrite`.
pub fn check_paths(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let canonical_in = input
        .canonicalize()
        .map_err(|e| Error::Config(format!("input {}: {e}", input.display())))?;
    if let Ok(canonical_out) = output.canonicalize()
        && canonical_out == canonical_in
    {
        return Err(Error::Config(format!(
            "output {} is the input; write somewhere else",
            output.display()
        )));
    }
    if output.exists() && !overwrite {
        return Err(Error::Config(format!(
            "output {} exists; pass --overwrite to replace it",
            output.display()
        )));
    }
    if output.is_dir() {
        return Err(Error::Config(format!(
            "output {} is a directory; name a file",
            output.display()
        )));
    }
    Ok(())
}

/// Writes every batch of `streams` (one per partition, run concurrently) into `out`, calling
/// `inspect` on each batch first and writing what it returns; commits `out` when all succeed.
async fn write_streams(
    streams: Vec<SendableRecordBatchStream>,
    mut out: ParquetOutput,
    mut inspect: impl FnMut(&RecordBatch) -> Result<RecordBatch>,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(streams.len().max(1) * 2);
    let mut tasks = Vec::new();
    for mut stream in streams {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if tx.send(batch.map_err(Error::from)).await.is_err() || failed {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let result: Result<()> = async {
        while let Some(batch) = rx.recv().await {
            out.write(&inspect(&batch?)?)?;
        }
        Ok(())
    }
    .await;
    for t in tasks {
        t.abort();
    }
    result?;
    out.commit()
}

/// Orders layer names as people do: `layers.2` before `layers.10`.
pub(crate) fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let (d, r) = rest.split_at(digits);
            key.push((0, d.parse().unwrap_or(u64::MAX), d.to_string()));
            rest = r;
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            let (t, r) = rest.split_at(text);
            key.push((1, 0, t.to_string()));
            rest = r;
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::natural_key;

    #[test]
    fn natural_order_of_layer_names() {
        let mut names = vec![
            "layers.10.w",
            "layers.2.w",
            "embed",
            "layers.2.b",
            "layers.1.w",
        ];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(
            names,
            [
                "embed",
                "layers.1.w",
                "layers.2.b",
                "layers.2.w",
                "layers.10.w"
            ]
        );
    }
}
