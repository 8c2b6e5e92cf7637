//! `import`: a `.safetensors` model (a file or a directory of shards) as a Parquet weight table.

use std::path::Path;

use datafusion::arrow::array::AsArray;

use super::{Progress, check_paths};
use crate::error::Result;
use crate::io::output::{ParquetOutput, metadata};
use crate::io::safetensors::{SafetensorsModel, schema};

/// What `import` did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Tensors written as rows.
    pub imported: usize,
    /// Tensors skipped (name, dtype): integer or other non-float tensors.
    pub skipped: Vec<(String, String)>,
}

/// Imports a `.safetensors` model (memory-mapped, one tensor at a time) as a weight table:
/// `layer_name, weights list<float32>, shape list<int64>, dtype`.
pub fn import_safetensors(
    input: &Path,
    output: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    check_paths(input, output, overwrite)?;
    let model = SafetensorsModel::open(input)?;
    let source = input.display().to_string();
    let mut out = ParquetOutput::create(
        output,
        &schema(),
        &metadata(&[("arrowquant.source", source)]),
    )?;
    let mut report = ImportReport {
        skipped: model.skipped(),
        ..Default::default()
    };
    for batch in model.batches() {
        let batch = batch?;
        out.write(&batch)?;
        let bytes = batch.column(1).as_list::<i32>().values().len() as u64 * 4;
        progress.advance(1, bytes);
        report.imported += 1;
    }
    out.commit()?;
    Ok(report)
}
