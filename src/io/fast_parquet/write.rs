//! The writer's fast path for weight columns: a top-level `list<float>` column chunk encoded
//! row by row, not value by value.
//!
//! A whole-tensor row is two repetition-level runs (one 0, then 1s) and one definition-level
//! run, whatever its length; its values are the Arrow buffer's bytes, which are already
//! Parquet's PLAIN encoding (little-endian). So a page is a few run headers and one `memcpy`,
//! where the parquet crate's generic writer computes, encodes and takes statistics of two
//! levels and one value per element. The pages (v1, about [`PAGE_BYTES`] of values each; a long
//! row continues on the next page, as v1 allows) go through the crate's own page writer, and
//! the chunk is spliced into the row group with its `append_column`, so headers, footer and
//! offsets are the crate's. Nulls inside a list fall back to one level per element of that row.
//!
//! Compression: SNAPPY when the first page of the chunk shrinks by more than 10 % under it (a
//! bf16 model widened to f32 halves), else none: float32 weights gain 0–3 % from SNAPPY for
//! the price of compressing every byte. The codec is per column chunk in Parquet, so every
//! reader follows it.

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, GenericListArray, OffsetSizeTrait};
use datafusion::arrow::buffer::{Buffer, NullBuffer};
use datafusion::arrow::datatypes::DataType;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use super::levels::{Run, bit_width, encode_runs, push};
use super::read::fast_item_width;

/// Bytes of values per data page (the parquet crate's default page size).
pub const PAGE_BYTES: usize = 1 << 20;

/// Levels per page at most, so that a page of NULL or empty rows stays bounded too.
const PAGE_LEVELS: u32 = 1 << 20;

/// A page compresses when SNAPPY makes its first page smaller than this fraction.
const COMPRESS_BELOW: f64 = 0.9;

/// Levels as runs, written in Parquet's RLE/bit-packed hybrid (RLE runs only).
#[derive(Debug, Default)]
struct Runs {
    runs: Vec<Run>,
}

impl Runs {
    fn push(&mut self, level: u16, count: u32) {
        push(&mut self.runs, u32::from(level), count);
    }

    /// Appends the v1 form (a 4-byte length, then the runs) to `out`.
    fn encode(&mut self, bit_width: u8, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        encode_runs(self.runs.drain(..), bit_width, out);
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// The definition levels of a top-level list column.
#[derive(Debug, Clone, Copy)]
struct Defs {
    /// A NULL row (only when the list is optional).
    null_row: u16,
    /// An empty list.
    empty: u16,
    /// A NULL item.
    null_item: u16,
    /// A value.
    value: u16,
}

/// One column chunk of a top-level `list<float>` column, being encoded.
pub struct ListColumnWriter {
    descr: ColumnDescPtr,
    width: usize,
    defs: Defs,
    def_width: u8,
    rep: Runs,
    def: Runs,
    /// The values of the open page, as slices of the input buffers.
    values: Vec<Buffer>,
    value_bytes: usize,
    levels: u32,
    page: Vec<u8>,
    compressed: Vec<u8>,
    codec: Option<Compression>,
    sink: TrackedWrite<Chunks>,
    num_values: i64,
    uncompressed: i64,
    rows: u64,
}

impl std::fmt::Debug for ListColumnWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListColumnWriter")
            .field("column", &self.descr.path())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ListColumnWriter {
    /// Whether a top-level column of `data_type` is one the fast path writes (a list of
    /// float16/32/64 on a little-endian machine), before its Parquet leaf is known.
    pub fn covers(data_type: &DataType) -> bool {
        let item = match data_type {
            DataType::List(f) | DataType::LargeList(f) => f.data_type(),
            _ => return false,
        };
        cfg!(target_endian = "little")
            && matches!(
                item,
                DataType::Float16 | DataType::Float32 | DataType::Float64
            )
    }

    /// A writer for the leaf `descr` of a top-level column of `data_type`, when the fast path
    /// covers it (a list of float16/32/64 on a little-endian machine).
    pub fn new(data_type: &DataType, descr: &ColumnDescPtr, spare: Vec<Vec<u8>>) -> Option<Self> {
        if !Self::covers(data_type) {
            return None;
        }
        let width = fast_item_width(data_type, descr)?;
        let max_def = u16::try_from(descr.max_def_level()).ok()?;
        let item_optional = u16::from(descr.self_type().is_optional());
        let empty = max_def.checked_sub(1 + item_optional)?;
        Some(Self {
            descr: ColumnDescPtr::clone(descr),
            width,
            defs: Defs {
                null_row: empty.saturating_sub(1),
                empty,
                null_item: max_def - 1,
                value: max_def,
            },
            def_width: bit_width(descr.max_def_level()),
            rep: Runs::default(),
            def: Runs::default(),
            values: Vec::new(),
            value_bytes: 0,
            levels: 0,
            page: Vec::new(),
            compressed: Vec::new(),
            codec: None,
            sink: TrackedWrite::new(Chunks {
                spare,
                ..Chunks::default()
            }),
            num_values: 0,
            uncompressed: 0,
            rows: 0,
        })
    }

    /// Bytes encoded so far (pages written and the open page's values).
    pub fn memory_size(&self) -> usize {
        self.sink.bytes_written() + self.value_bytes
    }

    /// Encodes the rows of `array`, a `List` or `LargeList` of the writer's item type.
    pub fn write(&mut self, array: &dyn Array) -> Result<(), String> {
        match array.data_type() {
            DataType::List(_) => self.write_list(array.as_list::<i32>()),
            DataType::LargeList(_) => self.write_list(array.as_list::<i64>()),
            other => Err(format!("expected a list column, found {other}")),
        }
    }

    fn write_list<O: OffsetSizeTrait>(&mut self, list: &GenericListArray<O>) -> Result<(), String> {
        let items = list.values();
        let data = items.to_data();
        let item_bytes = match data.buffers() {
            [b] => b.clone(),
            _ => return Err("list items without a single value buffer".into()),
        };
        let item_offset = data.offset();
        let item_nulls = items.logical_nulls();
        let offsets = list.value_offsets();
        for row in 0..list.len() {
            if list.is_null(row) {
                if self.defs.null_row == self.defs.empty {
                    return Err(format!("row {row} is NULL in a non-nullable list"));
                }
                self.level(self.defs.null_row)?;
            } else {
                let (Some(start), Some(end)) = (offsets.get(row), offsets.get(row + 1)) else {
                    return Err(format!("row {row}: offsets end early"));
                };
                let (start, end) = (start.as_usize(), end.as_usize());
                if start == end {
                    self.level(self.defs.empty)?;
                } else if item_nulls
                    .as_ref()
                    .is_some_and(|n| n.slice(start, end - start).null_count() > 0)
                {
                    self.row_with_nulls(&item_bytes, item_offset, start, end, item_nulls.as_ref())?;
                } else {
                    let bytes = slice(&item_bytes, item_offset + start, end - start, self.width)?;
                    self.row(bytes)?;
                }
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// One level with rep 0 and no value (a NULL or empty row).
    fn level(&mut self, def: u16) -> Result<(), String> {
        self.rep.push(0, 1);
        self.def.push(def, 1);
        self.levels += 1;
        if self.levels >= PAGE_LEVELS {
            self.flush_page()?;
        }
        Ok(())
    }

    /// A row of values with no NULL among them, split across pages where it is long.
    fn row(&mut self, bytes: Buffer) -> Result<(), String> {
        let mut first = true;
        let mut at = 0;
        while at < bytes.len() {
            let room = (PAGE_BYTES.saturating_sub(self.value_bytes) / self.width).max(1);
            let n = room.min((bytes.len() - at) / self.width);
            if n == 0 {
                return Err(format!("a row of {} bytes is not whole items", bytes.len()));
            }
            let head = bytes.slice_with_length(at, n * self.width);
            at += head.len();
            let n32 = u32::try_from(n).map_err(|_| "page too long".to_string())?;
            if first {
                self.rep.push(0, 1);
                self.rep.push(1, n32 - 1);
                first = false;
            } else {
                self.rep.push(1, n32);
            }
            self.def.push(self.defs.value, n32);
            self.levels += n32;
            self.value_bytes += head.len();
            self.values.push(head);
            if self.value_bytes >= PAGE_BYTES || self.levels >= PAGE_LEVELS {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    /// A row with NULL items: one level per element, only the valid values stored.
    fn row_with_nulls(
        &mut self,
        items: &Buffer,
        item_offset: usize,
        start: usize,
        end: usize,
        nulls: Option<&NullBuffer>,
    ) -> Result<(), String> {
        for i in start..end {
            let rep = u16::from(i != start);
            self.rep.push(rep, 1);
            if nulls.is_some_and(|n| n.is_null(i)) {
                self.def.push(self.defs.null_item, 1);
            } else {
                self.def.push(self.defs.value, 1);
                let v = slice(items, item_offset + i, 1, self.width)?;
                self.value_bytes += v.len();
                self.values.push(v);
            }
            self.levels += 1;
            if self.value_bytes >= PAGE_BYTES || self.levels >= PAGE_LEVELS {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    /// Writes the open page, if it has levels.
    fn flush_page(&mut self) -> Result<(), String> {
        if self.levels == 0 {
            return Ok(());
        }
        let mut page = std::mem::take(&mut self.page);
        page.clear();
        page.reserve(self.value_bytes + 64);
        self.rep.encode(1, &mut page);
        self.def.encode(self.def_width, &mut page);
        for v in self.values.drain(..) {
            page.extend_from_slice(&v);
        }
        let uncompressed = page.len();
        let deciding = self.codec.is_none();
        let codec = match self.codec {
            Some(c) => c,
            None => {
                self.snappy(&page)?;
                let c = if (self.compressed.len() as f64) < COMPRESS_BELOW * uncompressed as f64 {
                    Compression::SNAPPY
                } else {
                    Compression::UNCOMPRESSED
                };
                self.codec = Some(c);
                c
            }
        };
        let buf = if codec == Compression::SNAPPY {
            if !deciding {
                self.snappy(&page)?;
            }
            let compressed = Bytes::from(std::mem::take(&mut self.compressed));
            self.page = page;
            compressed
        } else {
            self.compressed.clear();
            Bytes::from(page)
        };
        // Kept to take the buffer back once the page is written (a fresh 1 MiB buffer per
        // page costs 256 page faults).
        let kept = buf.clone();
        let data_page = Page::DataPage {
            buf,
            num_values: self.levels,
            encoding: Encoding::PLAIN,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = SerializedPageWriter::new(&mut self.sink)
            .write_page(CompressedPage::new(data_page, uncompressed))
            .map_err(|e| e.to_string())?;
        self.uncompressed +=
            (spec.bytes_written as usize - spec.compressed_size + spec.uncompressed_size) as i64;
        self.num_values += i64::from(self.levels);
        self.levels = 0;
        self.value_bytes = 0;
        if let Ok(back) = kept.try_into_mut() {
            let back: Vec<u8> = back.into();
            if self.page.capacity() < back.capacity() {
                self.page = back;
            } else if self.compressed.capacity() < back.capacity() {
                self.compressed = back;
            }
        }
        Ok(())
    }

    /// Compresses `page` into `self.compressed`.
    fn snappy(&mut self, page: &[u8]) -> Result<(), String> {
        self.compressed
            .resize(snap::raw::max_compress_len(page.len()), 0);
        let n = snap::raw::Encoder::new()
            .compress(page, &mut self.compressed)
            .map_err(|e| format!("snappy: {e}"))?;
        self.compressed.truncate(n);
        Ok(())
    }

    /// Finishes the chunk: its bytes (data page offset 0) and what the row group writer needs
    /// to splice them in with `append_column`.
    pub fn close(mut self) -> Result<(ChunkList, ColumnCloseResult), String> {
        self.flush_page()?;
        let err = |e: parquet::errors::ParquetError| e.to_string();
        let bytes = self.sink.into_inner().map_err(err)?.finish();
        let metadata = ColumnChunkMetaData::builder(self.descr)
            .set_compression(self.codec.unwrap_or(Compression::UNCOMPRESSED))
            .set_encodings(vec![Encoding::PLAIN, Encoding::RLE])
            .set_num_values(self.num_values)
            .set_total_compressed_size(bytes.len as i64)
            .set_total_uncompressed_size(self.uncompressed)
            .set_data_page_offset(0)
            .build()
            .map_err(err)?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len,
            rows_written: self.rows,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((bytes, close))
    }
}

/// `n` items of `width` bytes from item `first` of `buffer`, as a shared slice (no copy).
fn slice(buffer: &Buffer, first: usize, n: usize, width: usize) -> Result<Buffer, String> {
    let (start, len) = (first * width, n * width);
    if start + len > buffer.len() {
        return Err(format!(
            "items {first}..{} past the end of a {}-byte buffer",
            first + n,
            buffer.len()
        ));
    }
    Ok(buffer.slice_with_length(start, len))
}

/// Where a chunk's pages are written: buffers of at least [`CHUNK_BYTES`], so that the chunk
/// grows without reallocating (and copying) what it holds.
#[derive(Default)]
pub struct Chunks {
    done: Vec<Bytes>,
    current: Vec<u8>,
    /// Buffers of an earlier chunk, already faulted in.
    spare: Vec<Vec<u8>>,
}

/// The smallest buffer of [`Chunks`].
const CHUNK_BYTES: usize = 8 << 20;

impl Chunks {
    fn finish(mut self) -> ChunkList {
        if !self.current.is_empty() {
            self.done
                .push(Bytes::from(std::mem::take(&mut self.current)));
        }
        let len = self.done.iter().map(|b| b.len() as u64).sum();
        ChunkList {
            chunks: self.done,
            len,
        }
    }
}

impl ChunkList {
    /// The buffers back, once the chunk is in the file, for the next chunk to write into.
    pub fn recycle(self) -> Vec<Vec<u8>> {
        self.chunks
            .into_iter()
            .filter_map(|b| b.try_into_mut().ok().map(Vec::from))
            .collect()
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.capacity() - self.current.len() < buf.len() {
            if !self.current.is_empty() {
                self.done
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
            match self.spare.pop() {
                Some(mut b) if b.capacity() >= buf.len() => {
                    b.clear();
                    self.current = b;
                }
                _ => {
                    self.current.reserve(buf.len().max(CHUNK_BYTES));
                    crate::mem::advise_huge_pages(&mut self.current);
                }
            }
        }
        self.current.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A finished column chunk: its bytes in order, read by the row group writer's
/// `append_column`.
#[derive(Debug)]
pub struct ChunkList {
    chunks: Vec<Bytes>,
    len: u64,
}

impl parquet::file::reader::Length for ChunkList {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for ChunkList {
    type T = ChunkRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ChunkRead> {
        let mut skip = start;
        let mut chunks = std::collections::VecDeque::new();
        for c in &self.chunks {
            let n = c.len() as u64;
            if skip >= n {
                skip -= n;
            } else {
                chunks.push_back(c.slice(skip as usize..));
                skip = 0;
            }
        }
        Ok(ChunkRead { chunks })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        use std::io::Read;
        let mut out = Vec::with_capacity(length);
        self.get_read(start)?
            .take(length as u64)
            .read_to_end(&mut out)?;
        if out.len() != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at {start} of a {}-byte chunk",
                self.len
            )));
        }
        Ok(Bytes::from(out))
    }
}

/// Reads a [`ChunkList`] from an offset on.
pub struct ChunkRead {
    chunks: std::collections::VecDeque<Bytes>,
}

impl std::io::Read for ChunkRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(front) = self.chunks.front_mut() {
            if front.is_empty() {
                self.chunks.pop_front();
                continue;
            }
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            bytes::Buf::advance(front, n);
            return Ok(n);
        }
        Ok(0)
    }
}
