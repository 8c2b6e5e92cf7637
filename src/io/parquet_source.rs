//! The Parquet input of the jobs, read page by page.
//!
//! DataFusion's Parquet scan fetches a row group's column chunks whole before decoding them, so
//! its memory grows with the row group, and pyarrow's `write_table` puts a whole weight table
//! (up to a million rows) in one. The jobs read their input with parquet's synchronous reader
//! instead, which pulls one page at a time from the file: memory stays bounded by the batch
//! (one tensor) whatever the row groups are. Each (file, row group) is a unit of work, spread
//! over at most `target_partitions` partitions, each read on a blocking thread and handed to
//! DataFusion as a [`StreamingTable`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use crate::error::{Error, Result};
use crate::io::fast_parquet::RowGroupBatches;

/// One row group of one file.
#[derive(Debug, Clone)]
struct Unit {
    path: PathBuf,
    row_group: usize,
}

/// The Parquet files of IN: the file itself, or a directory's `*.parquet` in name order.
pub fn parquet_files(input: &Path) -> Result<Vec<PathBuf>> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| Error::Data(format!("{}: {e}", input.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// Opens a Parquet file and reads its footer; a 0-byte or truncated file is an error naming it.
pub fn open(path: &Path) -> Result<ArrowReaderMetadata> {
    let file = File::open(path).map_err(Error::io(path))?;
    ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    })
}

/// Registers IN (a Parquet file or a directory of them) as table `name`, read page by page on
/// at most `partitions` threads. Every file's footer is read here, so a 0-byte or truncated
/// file is an error naming it before any work; every file must have the first file's columns.
pub fn register_streaming(
    ctx: &SessionContext,
    name: &str,
    input: &Path,
    partitions: usize,
) -> Result<()> {
    let files = parquet_files(input)?;
    let mut schema: Option<SchemaRef> = None;
    let mut units = Vec::new();
    for path in &files {
        let footer = open(path)?;
        // Metadata (pyarrow's pandas and ARROW:schema keys) differs between writers; the
        // columns are what must agree.
        let found = Arc::new(Schema::new(footer.schema().fields().clone()));
        match &schema {
            None => schema = Some(Arc::clone(&found)),
            Some(first) if first.fields() != found.fields() => {
                return Err(Error::Schema(format!(
                    "{}: its columns [{}] differ from those of {} [{}]",
                    path.display(),
                    describe(&found),
                    files
                        .first()
                        .map_or(String::new(), |f| f.display().to_string()),
                    describe(first),
                )));
            }
            Some(_) => {}
        }
        units.extend(
            (0..footer.metadata().num_row_groups()).map(|row_group| Unit {
                path: path.clone(),
                row_group,
            }),
        );
    }
    let Some(schema) = schema else {
        return Err(Error::Data(format!(
            "{}: no *.parquet files in it",
            input.display()
        )));
    };
    let n = partitions.clamp(1, units.len().max(1));
    let mut parts: Vec<Vec<Unit>> = vec![Vec::new(); n];
    for (i, unit) in units.into_iter().enumerate() {
        parts[i % n].push(unit);
    }
    let streams: Vec<Arc<dyn PartitionStream>> = parts
        .into_iter()
        .map(|units| {
            Arc::new(RowGroupStream {
                schema: Arc::clone(&schema),
                units,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(schema, streams)?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// Total rows of IN (a Parquet file or a directory of them), from the footers.
pub fn total_rows(input: &Path) -> Result<u64> {
    let mut rows = 0;
    for path in parquet_files(input)? {
        rows += open(&path)?.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Ok(rows)
}

/// Reads one row group of a file `batch_size` rows at a time (weight columns through
/// [`crate::io::fast_parquet`]), handing each batch
/// to `f` until it returns false; returns whether `f` wanted more. Errors name the file.
fn read(
    path: &Path,
    row_group: usize,
    batch_size: usize,
    mut f: impl FnMut(RecordBatch) -> Result<bool>,
) -> Result<bool> {
    let reader = RowGroupBatches::try_new(path, open(path)?, row_group, batch_size, true)?;
    for batch in reader {
        if !f(batch?)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One partition: its row groups, read in order on a blocking thread.
#[derive(Debug)]
struct RowGroupStream {
    schema: SchemaRef,
    units: Vec<Unit>,
}

/// Batches waiting between the reader thread and DataFusion: one being read, two ready.
const QUEUE: usize = 2;

impl RowGroupStream {
    /// Reads every unit, sending each batch; stops early when the receiver is gone.
    fn read_all(
        &self,
        batch_size: usize,
        tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, DataFusionError>>,
    ) -> Result<()> {
        for unit in &self.units {
            let more = read(&unit.path, unit.row_group, batch_size, |b| {
                let batch = RecordBatch::try_new(Arc::clone(&self.schema), b.columns().to_vec())
                    .map_err(|e| {
                        Error::Data(format!(
                            "{}: row group {}: {e}",
                            unit.path.display(),
                            unit.row_group
                        ))
                    })?;
                Ok(tx.blocking_send(Ok(batch)).is_ok())
            })?;
            if !more {
                break;
            }
        }
        Ok(())
    }
}

impl PartitionStream for RowGroupStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let this = RowGroupStream {
            schema: Arc::clone(&self.schema),
            units: self.units.clone(),
        };
        let batch_size = ctx.session_config().batch_size();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    if let Err(e) = this.read_all(batch_size, &tx) {
                        let _ = tx.blocking_send(Err(e.into()));
                    }
                });
            }
            Err(e) => {
                let _ = tx.try_send(Err(DataFusionError::Execution(format!(
                    "reading Parquet needs a tokio runtime: {e}"
                ))));
            }
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream.boxed(),
        ))
    }
}
