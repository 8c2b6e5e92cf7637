//! Outputs that appear atomically: written to a hidden temporary file beside the final path
//! (`tempfile`), made durable and renamed at the end. An interrupted or failed job leaves
//! nothing at the final path; the temporary file is removed when dropped.

use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use tempfile::NamedTempFile;

use crate::io::fast_parquet::write::ListColumnWriter;

use crate::error::{Error, Result};

/// Largest Parquet row group the jobs write, in bytes.
pub const ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;

/// `target`'s directory (`.` for a bare name) and its file name.
fn dir_and_name(target: &Path) -> (PathBuf, String) {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    (dir, name)
}

/// A temporary directory beside `target`, named after it (hidden), for outputs that are a
/// directory: built there, then renamed to `target`.
pub fn temp_dir_beside(target: &Path) -> Result<tempfile::TempDir> {
    let (dir, name) = dir_and_name(target);
    tempfile::Builder::new()
        .prefix(&format!(".{name}.arrowquant-"))
        .tempdir_in(&dir)
        .map_err(Error::io(&dir))
}

/// A temporary file in `target`'s directory, named after it, for [`commit`].
pub fn temp_beside(target: &Path) -> Result<NamedTempFile> {
    let (dir, name) = dir_and_name(target);
    let mut builder = tempfile::Builder::new();
    // The final file gets the permissions of one made by `File::create` (0666 less the umask
    // on Unix), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder
        .prefix(&format!(".{name}.arrowquant-"))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(Error::io(&dir))
}

/// Makes `tmp` durable and moves it to `target`.
pub fn commit(tmp: NamedTempFile, target: &Path) -> Result<()> {
    tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
    tmp.persist(target).map_err(|e| Error::Io {
        path: target.display().to_string(),
        source: e.error,
    })?;
    Ok(())
}

/// A Parquet file being written beside its final path.
///
/// Written with the parquet crate's row group and column writers, except top-level
/// `list<float>` columns (weights), which [`ListColumnWriter`] encodes row by row.
pub struct ParquetOutput {
    file: SerializedFileWriter<BufWriter<NamedTempFile>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Each top-level column's leaves, and whether the fast path writes it.
    columns: Vec<(Range<usize>, bool)>,
    group: Option<RowGroup>,
    row_groups: usize,
    max_rows: usize,
    row_group_bytes: usize,
    /// Buffers of the last fast column chunk, reused by the next one.
    spare: Vec<Vec<u8>>,
    target: PathBuf,
}

/// The encoder of one leaf column in the row group being written.
enum Encoder {
    Fast(Box<ListColumnWriter>),
    Generic(Box<ArrowColumnWriter>),
}

/// The row group being written.
struct RowGroup {
    encoders: Vec<Encoder>,
    rows: usize,
}

impl ParquetOutput {
    /// Starts writing `schema` to `target`, with `metadata` in the file's key-value metadata
    /// and in the Arrow schema's (where `pyarrow.parquet.read_schema(...).metadata` shows it).
    pub fn create(
        target: &Path,
        schema: &SchemaRef,
        metadata: &[(String, String)],
    ) -> Result<Self> {
        Self::create_with(target, schema, metadata, true)
    }

    /// [`Self::create`], with the weight-column fast path (`fast`) or without it (every column
    /// through the parquet crate's generic writer, for comparison).
    pub fn create_with(
        target: &Path,
        schema: &SchemaRef,
        metadata: &[(String, String)],
        fast: bool,
    ) -> Result<Self> {
        let mut schema_metadata = schema.metadata().clone();
        schema_metadata.extend(metadata.iter().cloned());
        let schema: SchemaRef = schema
            .as_ref()
            .clone()
            .with_metadata(schema_metadata)
            .into();
        // The offset index requires pages that start on rows, and the crate cannot write it for
        // some columns only: a file with a fast column has none (and chunk statistics, since
        // page statistics force the offset index). Its readers lose nothing they use.
        let has_fast = fast
            && schema
                .fields()
                .iter()
                .any(|f| ListColumnWriter::covers(f.data_type()));
        let props = WriterProperties::builder()
            .set_offset_index_disabled(has_fast)
            .set_statistics_enabled(if has_fast {
                EnabledStatistics::Chunk
            } else {
                EnabledStatistics::Page
            })
            .set_compression(Compression::SNAPPY)
            // Weights, codes and scales are all distinct values: a dictionary would only hash
            // every value (and every multi-MiB codes blob) before falling back to PLAIN.
            .set_dictionary_enabled(false)
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
        let err =
            |e: parquet::errors::ParquetError| Error::Data(format!("{}: {e}", target.display()));
        // ArrowWriter writes the Arrow schema into the footer; its lower half does the rest.
        // The crate writes through an 8 KiB buffer, and splices column chunks in 8 KiB pieces:
        // a large buffer beneath makes those one system call per 8 MiB.
        let sink = BufWriter::with_capacity(8 << 20, temp_beside(target)?);
        let (file, factory) = ArrowWriter::try_new(sink, Arc::clone(&schema), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(err)?;
        let descr = file.schema_descr();
        let mut columns: Vec<(Range<usize>, bool)> = vec![(0..0, false); schema.fields().len()];
        for leaf in 0..descr.num_columns() {
            if let Some((range, _)) = columns.get_mut(descr.get_column_root_idx(leaf)) {
                // Leaves of one root are contiguous; an unset range ends at 0.
                if range.end == 0 {
                    *range = leaf..leaf + 1;
                } else {
                    range.end = leaf + 1;
                }
            }
        }
        for ((range, is_fast), field) in columns.iter_mut().zip(schema.fields()) {
            *is_fast = has_fast
                && range.len() == 1
                && ListColumnWriter::new(field.data_type(), &descr.column(range.start), Vec::new())
                    .is_some();
        }
        Ok(Self {
            file,
            factory,
            schema,
            columns,
            group: None,
            row_groups: 0,
            max_rows,
            row_group_bytes: ROW_GROUP_BYTES,
            spare: Vec::new(),
            target: target.to_path_buf(),
        })
    }

    /// The schema batches are written with.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Closes row groups past `bytes` instead of [`ROW_GROUP_BYTES`] (tests use small ones).
    pub fn with_row_group_bytes(mut self, bytes: usize) -> Self {
        self.row_group_bytes = bytes.max(1);
        self
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        writing(&self.target, e)
    }

    /// A fresh row group's encoders.
    fn row_group(&mut self) -> Result<RowGroup> {
        let writers = self
            .factory
            .create_column_writers(self.row_groups)
            .map_err(|e| self.err(e))?;
        let descr = self.file.schema_descr();
        let mut encoders = Vec::with_capacity(writers.len());
        for (leaf, writer) in writers.into_iter().enumerate() {
            let root = descr.get_column_root_idx(leaf);
            let fast = match (self.columns.get(root), self.schema.fields().get(root)) {
                (Some((_, true)), Some(field)) => ListColumnWriter::new(
                    field.data_type(),
                    &descr.column(leaf),
                    std::mem::take(&mut self.spare),
                ),
                _ => None,
            };
            encoders.push(match fast {
                Some(w) => Encoder::Fast(Box::new(w)),
                None => Encoder::Generic(Box::new(writer)),
            });
        }
        Ok(RowGroup { encoders, rows: 0 })
    }

    /// Writes one batch (its columns, under the output's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = batch.clone().with_schema(self.schema())?;
        let mut group = match self.group.take() {
            Some(g) => g,
            None => self.row_group()?,
        };
        for (i, (leaves, _)) in self.columns.iter().enumerate() {
            let (field, array) = (self.schema.field(i), batch.column(i));
            let encoders = group.encoders.get_mut(leaves.clone()).unwrap_or_default();
            if let [Encoder::Fast(w)] = encoders {
                w.write(array.as_ref())
                    .map_err(|e| self.err(format!("column {}: {e}", field.name())))?;
                continue;
            }
            let computed = compute_leaves(field, array).map_err(|e| self.err(e))?;
            if computed.len() != encoders.len() {
                return Err(Error::DataFusion(
                    datafusion::error::DataFusionError::Internal(format!(
                        "column {}: {} leaves where the schema has {}",
                        field.name(),
                        computed.len(),
                        encoders.len()
                    )),
                ));
            }
            for (leaf, encoder) in computed.iter().zip(encoders.iter_mut()) {
                if let Encoder::Generic(w) = encoder {
                    w.write(leaf).map_err(|e| self.err(e))?;
                }
            }
        }
        group.rows += batch.num_rows();
        let bytes: usize = group
            .encoders
            .iter()
            .map(|e| match e {
                Encoder::Fast(w) => w.memory_size(),
                Encoder::Generic(w) => w.get_estimated_total_bytes(),
            })
            .sum();
        if bytes >= self.row_group_bytes || group.rows >= self.max_rows {
            self.flush(group)
        } else {
            self.group = Some(group);
            Ok(())
        }
    }

    /// Writes `group` to the file as its next row group.
    fn flush(&mut self, group: RowGroup) -> Result<()> {
        // `rg` borrows the file, so errors are made from the path alone.
        let target = &self.target;
        let err = |e: &dyn std::fmt::Display| writing(target, e);
        let mut rg = self.file.next_row_group().map_err(|e| err(&e))?;
        for encoder in group.encoders {
            match encoder {
                Encoder::Fast(w) => {
                    let (bytes, close) = w.close().map_err(|e| err(&e))?;
                    rg.append_column(&bytes, close).map_err(|e| err(&e))?;
                    self.spare.extend(bytes.recycle());
                }
                Encoder::Generic(w) => w
                    .close()
                    .and_then(|chunk| chunk.append_to_row_group(&mut rg))
                    .map_err(|e| err(&e))?,
            }
        }
        rg.close().map_err(|e| err(&e))?;
        self.row_groups += 1;
        Ok(())
    }

    /// Finishes the file and moves it to its final path.
    pub fn commit(self) -> Result<()> {
        let target = self.target.clone();
        self.commit_as(&target)
    }

    /// Finishes the file and moves it to `target` instead, a path in the same directory (a name
    /// known only once every row is written).
    pub fn commit_as(mut self, target: &Path) -> Result<()> {
        if let Some(group) = self.group.take() {
            self.flush(group)?;
        }
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| writing(target, e))?
            .into_inner()
            .map_err(|e| Error::io(target)(e.into_error()))?;
        commit(tmp, target)
    }
}

/// The error of a failed write of `target`.
fn writing(target: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data(format!("writing {}: {e}", target.display()))
}

/// The key-value metadata every output carries: `arrowquant.version`, then `extra`.
pub fn metadata(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut m = vec![(
        "arrowquant.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )];
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    m
}

/// Writes `batches` to a Parquet file at `target` (atomically, as every output), with or
/// without the weight-column fast path: `write_parquet` in Python.
pub fn write_all(
    target: &Path,
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
    fast: bool,
) -> Result<()> {
    let mut out = ParquetOutput::create_with(target, schema, &metadata(&[]), fast)?;
    for batch in batches {
        out.write(&batch?)?;
    }
    out.commit()
}
