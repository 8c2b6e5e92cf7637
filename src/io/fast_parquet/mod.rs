//! Parquet at memory speed for weight tables.
//!
//! A weight column (`list<float32>`, one row per tensor, no nulls inside, millions of values
//! per row) is the easiest case Parquet has, yet the parquet crate's generic list reader
//! decodes one repetition and one definition level per value. [`RowGroupBatches`] reads such
//! columns from their pages instead: levels as runs ([`levels`]), PLAIN values copied straight
//! into the output buffer (BYTE_STREAM_SPLIT and dictionary pages decoded on the way), pages
//! decompressed by the crate's own codecs. Everything else — the other columns, and a column
//! chunk from the first page the fast path does not read (nulls inside a list, an unknown
//! encoding) — goes through the generic reader, so the result is always the generic reader's.

pub mod levels;
pub mod read;
pub mod write;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;

use self::read::{ListColumnReader, Step, fast_item_width};
use crate::error::{Error, Result};

/// Page buffers handed back after use, so that the next pages are read into memory that is
/// already mapped: a fresh buffer per 1 MiB page costs 256 page faults, more than the read.
type Pool = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A page buffer that goes back to its pool when the last `Bytes` slicing it is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < 8
        {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// A file whose pages are read into pooled buffers.
struct PooledFile {
    file: File,
    pool: Pool,
}

impl parquet::file::reader::Length for PooledFile {
    fn len(&self) -> u64 {
        parquet::file::reader::Length::len(&self.file)
    }
}

impl parquet::file::reader::ChunkReader for PooledFile {
    type T = <File as parquet::file::reader::ChunkReader>::T;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.file.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        use std::io::{Read, Seek};
        let mut buf = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        buf.clear();
        buf.reserve(length);
        let mut file = self.file.try_clone()?;
        file.seek(std::io::SeekFrom::Start(start))?;
        let read = file.take(length as u64).read_to_end(&mut buf)?;
        if read != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "expected {length} bytes at offset {start}, read {read}"
            )));
        }
        Ok(bytes::Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(&self.pool),
        }))
    }
}

/// Where one column of the output comes from.
enum Source {
    /// Column `.0` of the generic reader's batch of the other columns.
    Other(usize),
    /// The fast path.
    Fast(Box<ListColumnReader>),
    /// The generic reader of this column alone, after the fast path gave up.
    Generic(ParquetRecordBatchReader),
}

/// The batches of one row group of a Parquet file, `list<float>` columns read by the fast path.
pub struct RowGroupBatches {
    file: File,
    metadata: ArrowReaderMetadata,
    schema: SchemaRef,
    row_group: usize,
    num_rows: usize,
    row: usize,
    batch_size: usize,
    sources: Vec<Source>,
    others: Option<ParquetRecordBatchReader>,
    place: String,
    fallbacks: Vec<String>,
}

impl std::fmt::Debug for RowGroupBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowGroupBatches")
            .field("place", &self.place)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

impl RowGroupBatches {
    /// Reads `row_group` of the file at `path` (whose footer is `metadata`) `batch_size` rows at
    /// a time; with `fast` false every column goes through the generic reader.
    pub fn try_new(
        path: &Path,
        metadata: ArrowReaderMetadata,
        row_group: usize,
        batch_size: usize,
        fast: bool,
    ) -> Result<Self> {
        let place = format!("{}: row group {row_group}", path.display());
        let data = |e: &dyn std::fmt::Display| Error::Data(format!("{place}: {e}"));
        let file = File::open(path).map_err(Error::io(path))?;
        let parquet = Arc::clone(metadata.metadata());
        let Some(rg) = parquet.row_groups().get(row_group) else {
            return Err(data(&"no such row group"));
        };
        let descr = parquet.file_metadata().schema_descr();
        let schema = Arc::clone(metadata.schema());
        // Each root's leaves; a fast column is a root with one leaf that passes the checks.
        let mut leaves: Vec<Vec<usize>> = vec![Vec::new(); schema.fields().len()];
        for leaf in 0..descr.num_columns() {
            if let Some(l) = leaves.get_mut(descr.get_column_root_idx(leaf)) {
                l.push(leaf);
            }
        }
        let pooled = PooledFile {
            file: file.try_clone().map_err(Error::io(path))?,
            pool: Pool::default(),
        };
        let chunks = SerializedRowGroupReader::new(
            Arc::new(pooled),
            rg,
            None,
            Arc::new(parquet::file::properties::ReaderProperties::builder().build()),
        )
        .map_err(|e| data(&e))?;
        let (mut sources, mut others) = (Vec::new(), Vec::new());
        for (root, field) in schema.fields().iter().enumerate() {
            let fast_reader = match leaves[root].as_slice() {
                [leaf] if fast => {
                    let column = descr.column(*leaf);
                    match fast_item_width(field.data_type(), &column) {
                        Some(width) => {
                            let pages =
                                chunks.get_column_page_reader(*leaf).map_err(|e| data(&e))?;
                            // Levels per row: about the values per row of a weight column.
                            let hint = rg.column(*leaf).num_values().max(0) as usize
                                / (rg.num_rows().max(1) as usize);
                            ListColumnReader::with_row_hint(
                                pages,
                                field.data_type().clone(),
                                &column,
                                width,
                                hint.min(1 << 28),
                                rg.num_rows().max(0) as usize,
                            )
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            sources.push(match fast_reader {
                Some(r) => Source::Fast(Box::new(r)),
                None => {
                    others.push(root);
                    Source::Other(others.len() - 1)
                }
            });
        }
        let mut this = Self {
            file,
            metadata,
            schema,
            row_group,
            num_rows: usize::try_from(rg.num_rows()).unwrap_or(0),
            row: 0,
            batch_size: batch_size.max(1),
            sources,
            others: None,
            place,
            fallbacks: Vec::new(),
        };
        if !others.is_empty() {
            this.others = Some(this.generic(others, 0)?);
        }
        Ok(this)
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// How many columns the fast path started on.
    pub fn fast_columns(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| !matches!(s, Source::Other(_)))
            .count()
    }

    /// The columns that left the fast path, and why (for tests and diagnostics).
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// The generic reader of `roots`, from row `from` of the row group on.
    fn generic(&self, roots: Vec<usize>, from: usize) -> Result<ParquetRecordBatchReader> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::Data(format!("{}: {e}", self.place)))?;
        let descr = self.metadata.metadata().file_metadata().schema_descr();
        let mask = ProjectionMask::roots(descr, roots);
        let selection = RowSelection::from(vec![
            RowSelector::skip(from),
            RowSelector::select(self.num_rows - from),
        ]);
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_projection(mask)
            .with_row_groups(vec![self.row_group])
            .with_row_selection(selection)
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|e| Error::Data(format!("{}: {e}", self.place)))
    }

    /// The next batch, or `None` after the row group's last row.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.row >= self.num_rows {
            return Ok(None);
        }
        let place = &self.place;
        let data = |e: &dyn std::fmt::Display| Error::Data(format!("{place}: {e}"));
        let other = match &mut self.others {
            Some(r) => Some(
                r.next()
                    .ok_or_else(|| data(&"the columns ended before the row group's rows"))?
                    .map_err(|e| data(&e))?,
            ),
            None => None,
        };
        let n = other
            .as_ref()
            .map_or((self.num_rows - self.row).min(self.batch_size), |b| {
                b.num_rows()
            });
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for root in 0..self.sources.len() {
            let name = self.schema.field(root).name();
            let column = |e: &dyn std::fmt::Display| {
                Error::Data(format!("{}: column {name}: {e}", self.place))
            };
            let array = match &mut self.sources[root] {
                Source::Other(i) => match &other {
                    Some(b) => Arc::clone(b.column(*i)),
                    None => return Err(column(&"missing from the generic reader")),
                },
                Source::Fast(r) => match r.next_rows(n).map_err(|e| column(&e))? {
                    Step::Rows(a) => a,
                    Step::Unsupported(why) => {
                        self.fallbacks.push(format!("{name}: {}", why.0));
                        let mut generic = self.generic(vec![root], self.row)?;
                        let array = next_column(&mut generic).map_err(|e| column(&e))?;
                        self.sources[root] = Source::Generic(generic);
                        array
                    }
                },
                Source::Generic(r) => next_column(r).map_err(|e| column(&e))?,
            };
            if array.len() != n {
                return Err(column(&format!(
                    "{} rows where the other columns have {n}",
                    array.len()
                )));
            }
            columns.push(array);
        }
        self.row += n;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map(Some)
            .map_err(|e| data(&e))
    }
}

/// Every row group of IN (a Parquet file or a directory of them) read whole, `batch_size` rows
/// per batch, with or without the fast path: `read_parquet` in Python.
pub fn read_all(
    input: &Path,
    batch_size: usize,
    fast: bool,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut schema = None;
    let mut batches = Vec::new();
    for path in crate::io::parquet_source::parquet_files(input)? {
        let footer = crate::io::parquet_source::open(&path)?;
        let file_schema = Arc::clone(footer.schema());
        if let Some(first) = &schema
            && first != &file_schema
        {
            return Err(Error::Schema(format!(
                "{}: its schema differs from the first file's",
                path.display()
            )));
        }
        for rg in 0..footer.metadata().num_row_groups() {
            for b in RowGroupBatches::try_new(&path, footer.clone(), rg, batch_size, fast)? {
                batches.push(b?);
            }
        }
        schema.get_or_insert(file_schema);
    }
    let schema = schema
        .ok_or_else(|| Error::Data(format!("{}: no *.parquet files in it", input.display())))?;
    Ok((schema, batches))
}

/// The only column of a one-column generic reader's next batch.
fn next_column(r: &mut ParquetRecordBatchReader) -> std::result::Result<ArrayRef, String> {
    match r.next() {
        Some(Ok(b)) => b
            .columns()
            .first()
            .cloned()
            .ok_or_else(|| "no column".into()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("ended before the row group's rows".into()),
    }
}

impl Iterator for RowGroupBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(b) => b.map(Ok),
            Err(e) => {
                // Stop after an error.
                self.row = self.num_rows;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
