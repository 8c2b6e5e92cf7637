//! Outputs that appear atomically: written to a hidden temporary file beside the final path
//! (`tempfile`), made durable and renamed at the end. An interrupted or failed job leaves
//! nothing at the final path; the temporary file is removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tempfile::NamedTempFile;

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
pub struct ParquetOutput {
    writer: ArrowWriter<NamedTempFile>,
    schema: SchemaRef,
    target: PathBuf,
}

impl ParquetOutput {
    /// Starts writing `schema` to `target`, with `metadata` in the file's key-value metadata
    /// and in the Arrow schema's (where `pyarrow.parquet.read_schema(...).metadata` shows it).
    pub fn create(
        target: &Path,
        schema: &SchemaRef,
        metadata: &[(String, String)],
    ) -> Result<Self> {
        let mut schema_metadata = schema.metadata().clone();
        schema_metadata.extend(metadata.iter().cloned());
        let schema: SchemaRef = schema
            .as_ref()
            .clone()
            .with_metadata(schema_metadata)
            .into();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            // Weights, codes and scales are all distinct values: a dictionary would only hash
            // every value (and every multi-MiB codes blob) before falling back to PLAIN.
            .set_dictionary_enabled(false)
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let writer = ArrowWriter::try_new(temp_beside(target)?, Arc::clone(&schema), Some(props))
            .map_err(|e| Error::Data(format!("{}: {e}", target.display())))?;
        Ok(Self {
            writer,
            schema,
            target: target.to_path_buf(),
        })
    }

    /// The schema batches are written with.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Writes one batch (its columns, under the output's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = batch.clone().with_schema(self.schema())?;
        self.writer
            .write(&batch)
            .map_err(|e| Error::Data(format!("writing {}: {e}", self.target.display())))
    }

    /// Finishes the file and moves it to its final path.
    pub fn commit(self) -> Result<()> {
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| Error::Data(format!("writing {}: {e}", self.target.display())))?;
        commit(tmp, &self.target)
    }
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
