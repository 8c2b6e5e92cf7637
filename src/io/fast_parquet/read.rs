//! The reader fast path: a `list<float>` column chunk read from its pages, levels as runs and
//! values copied straight into the output buffer.

use std::sync::Arc;

use arrow::array::ArrayData;
use arrow::array::{ArrayRef, GenericListArray, OffsetSizeTrait, make_array};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, FieldRef};
use parquet::basic::{Encoding, LogicalType, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::schema::types::ColumnDescriptor;

use super::levels::{Run, bit_width, decode_runs, for_each_run};

/// Why a column chunk leaves the fast path (read on by the generic reader from the batch that
/// met it).
#[derive(Debug)]
pub struct Unsupported(pub String);

/// What one call of [`ListColumnReader::next_rows`] gives.
#[derive(Debug)]
pub enum Step {
    /// The next rows.
    Rows(ArrayRef),
    /// Something the fast path does not read: read this batch and the rest of the chunk with
    /// the generic reader.
    Unsupported(Unsupported),
}

/// The item width in bytes of a `list<float>` column the fast path reads, or `None`: the
/// Arrow type must be `List`/`LargeList` of Float16/32/64 and the Parquet leaf the matching
/// physical type, directly under one repeated level.
pub fn fast_item_width(data_type: &DataType, descr: &ColumnDescriptor) -> Option<usize> {
    let item = match data_type {
        DataType::List(f) | DataType::LargeList(f) => f.data_type(),
        _ => return None,
    };
    if descr.max_rep_level() != 1 || descr.max_def_level() < 1 {
        return None;
    }
    match (item, descr.physical_type()) {
        (DataType::Float32, PhysicalType::FLOAT) => Some(4),
        (DataType::Float64, PhysicalType::DOUBLE) => Some(8),
        (DataType::Float16, PhysicalType::FIXED_LEN_BYTE_ARRAY)
            if descr.type_length() == 2
                && matches!(descr.logical_type_ref(), Some(LogicalType::Float16)) =>
        {
            Some(2)
        }
        _ => None,
    }
}

/// The levels of the page being read, as runs, and its values as plain bytes.
#[derive(Debug, Default)]
struct PageCursor {
    rep: Vec<Run>,
    def: Vec<Run>,
    /// Index of the current run and how many of its levels are left.
    ri: usize,
    r_left: u32,
    di: usize,
    d_left: u32,
    values: bytes::Bytes,
    vpos: usize,
}

impl PageCursor {
    /// The next levels that share one rep and one def level: `(rep, def, count)`.
    fn peek(&mut self) -> Option<(u32, u32, u32)> {
        while self.r_left == 0 {
            self.ri += 1;
            self.r_left = self.rep.get(self.ri)?.count;
        }
        while self.d_left == 0 {
            self.di += 1;
            self.d_left = self.def.get(self.di)?.count;
        }
        let (r, d) = (self.rep.get(self.ri)?, self.def.get(self.di)?);
        Some((r.value, d.value, self.r_left.min(self.d_left)))
    }

    fn advance(&mut self, n: u32) {
        self.r_left -= n;
        self.d_left -= n;
    }

    /// Starts on runs `rep` and `def`.
    fn reset(&mut self) {
        self.ri = 0;
        self.di = 0;
        self.r_left = self.rep.first().map_or(0, |r| r.count);
        self.d_left = self.def.first().map_or(0, |r| r.count);
        self.vpos = 0;
    }
}

/// The state of the row being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Values,
    Empty,
    Null,
}

/// Reads one `list<float>` column chunk a number of rows at a time.
pub struct ListColumnReader {
    pages: Box<dyn PageReader>,
    /// The list's Arrow type.
    data_type: DataType,
    item: FieldRef,
    width: usize,
    max_def: u32,
    /// The definition level of an empty list; below it the list is NULL.
    def_empty: u32,
    dict: Option<bytes::Bytes>,
    page: PageCursor,
    open: Option<Open>,
    finished: bool,
    /// The chunk's values per row on average, in bytes, and the rows not yet read: the first
    /// reservation of a batch is its rows' share.
    row_bytes_hint: usize,
    rows_left: usize,
    batch_hint: usize,
    // The batch being built.
    values: Vec<u8>,
    offsets: Vec<i64>,
    valid: Vec<bool>,
    any_null: bool,
}

impl std::fmt::Debug for ListColumnReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListColumnReader")
            .field("data_type", &self.data_type)
            .finish_non_exhaustive()
    }
}

impl ListColumnReader {
    /// A reader of the chunk behind `pages`; `data_type` and `descr` must pass
    /// [`fast_item_width`] (`width` is what it returned).
    pub fn new(
        pages: Box<dyn PageReader>,
        data_type: DataType,
        descr: &ColumnDescriptor,
        width: usize,
    ) -> Option<Self> {
        Self::with_row_hint(pages, data_type, descr, width, 0, 0)
    }

    /// [`Self::new`] for a chunk of `rows` rows of about `row_values` values each (the first
    /// reservation of a batch).
    pub fn with_row_hint(
        pages: Box<dyn PageReader>,
        data_type: DataType,
        descr: &ColumnDescriptor,
        width: usize,
        row_values: usize,
        rows: usize,
    ) -> Option<Self> {
        let item = match &data_type {
            DataType::List(f) | DataType::LargeList(f) => Arc::clone(f),
            _ => return None,
        };
        let max_def = u32::try_from(descr.max_def_level()).ok()?;
        let item_optional = descr.self_type().is_optional();
        Some(Self {
            pages,
            data_type,
            item,
            width,
            max_def,
            def_empty: max_def - 1 - u32::from(item_optional),
            dict: None,
            page: PageCursor::default(),
            open: None,
            finished: false,
            row_bytes_hint: row_values.saturating_mul(width),
            rows_left: rows,
            batch_hint: 0,
            values: Vec::new(),
            offsets: vec![0],
            valid: Vec::new(),
            any_null: false,
        })
    }

    /// Loads the next data page (after any dictionary page); false at the end of the chunk.
    fn load_page(&mut self) -> Result<Result<bool, Unsupported>, String> {
        loop {
            let page = self.pages.get_next_page().map_err(|e| e.to_string())?;
            let Some(page) = page else {
                return Ok(Ok(false));
            };
            let (buf, num_levels, encoding, rep, def) = match page {
                Page::DictionaryPage { buf, encoding, .. } => {
                    if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                        return Ok(Err(Unsupported(format!("a {encoding} dictionary page"))));
                    }
                    self.dict = Some(buf);
                    continue;
                }
                Page::DataPage {
                    buf,
                    num_values,
                    encoding,
                    def_level_encoding,
                    rep_level_encoding,
                    ..
                } => {
                    if rep_level_encoding != Encoding::RLE || def_level_encoding != Encoding::RLE {
                        return Ok(Err(Unsupported("BIT_PACKED levels".into())));
                    }
                    let mut pos = 0;
                    let mut section = || -> Result<std::ops::Range<usize>, String> {
                        let len = buf
                            .get(pos..pos + 4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                            .ok_or("a data page ends inside its levels")?;
                        let range = pos + 4..pos + 4 + len;
                        pos = range.end;
                        Ok(range)
                    };
                    let rep = section()?;
                    let def = section()?;
                    (buf, num_values, encoding, rep, def)
                }
                Page::DataPageV2 {
                    buf,
                    num_values,
                    encoding,
                    def_levels_byte_len,
                    rep_levels_byte_len,
                    ..
                } => {
                    let r = rep_levels_byte_len as usize;
                    let d = def_levels_byte_len as usize;
                    (buf, num_values, encoding, 0..r, r..r + d)
                }
            };
            let n = num_levels as usize;
            let values_start = def.end;
            let (Some(rep), Some(def)) = (buf.get(rep), buf.get(def)) else {
                return Err("a data page ends inside its levels".into());
            };
            decode_runs(rep, 1, n, &mut self.page.rep)?;
            decode_runs(def, bit_width(self.max_def as i16), n, &mut self.page.def)?;
            let values = buf.slice(values_start..);
            let count: usize = self
                .page
                .def
                .iter()
                .filter(|r| r.value == self.max_def)
                .map(|r| r.count as usize)
                .sum();
            self.page.values = match encoding {
                Encoding::PLAIN => values,
                Encoding::BYTE_STREAM_SPLIT => match unsplit(&values, count, self.width) {
                    Some(v) => v,
                    None => {
                        return Err("a BYTE_STREAM_SPLIT page is shorter than its values".into());
                    }
                },
                Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                    let Some(dict) = &self.dict else {
                        return Err("a dictionary-encoded page without a dictionary page".into());
                    };
                    gather(dict, &values, count, self.width)?
                }
                e => return Ok(Err(Unsupported(format!("{e} values")))),
            };
            self.page.reset();
            return Ok(Ok(true));
        }
    }

    /// Ends the open row, if any; returns whether there was one.
    fn close_row(&mut self) -> bool {
        let Some(open) = self.open.take() else {
            return false;
        };
        self.offsets.push((self.values.len() / self.width) as i64);
        self.valid.push(open != Open::Null);
        self.any_null |= open == Open::Null;
        true
    }

    /// Copies `n` values of the current page into the batch.
    fn copy_values(&mut self, n: u32) -> Result<(), String> {
        let len = n as usize * self.width;
        let Some(src) = self.page.values.get(self.page.vpos..self.page.vpos + len) else {
            return Err("a data page has fewer values than its levels say".into());
        };
        if self.values.capacity() - self.values.len() < len {
            // The average row first, then doubling (a copy when realloc cannot remap), and
            // huge pages for the fresh memory: a weight row is tens of MiB, and 4 KiB page
            // faults would cost more than the copy.
            let want = if self.values.is_empty() {
                self.batch_hint
            } else {
                self.values.len()
            };
            self.values.reserve(len.max(want));
            crate::mem::advise_huge_pages(&mut self.values);
        }
        self.values.extend_from_slice(src);
        self.page.vpos += len;
        Ok(())
    }

    /// The next `n` rows (fewer only at the end of the chunk).
    pub fn next_rows(&mut self, n: usize) -> Result<Step, String> {
        self.batch_hint = self
            .row_bytes_hint
            .saturating_mul(n.min(self.rows_left).max(1));
        self.rows_left = self.rows_left.saturating_sub(n);
        let mut rows = 0;
        'rows: while rows < n {
            let Some((rep, def, count)) = self.page.peek() else {
                if self.finished {
                    break;
                }
                match self.load_page()? {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.finished = true;
                        self.close_row();
                        break;
                    }
                    Err(u) => return Ok(Step::Unsupported(u)),
                }
            };
            if rep == 0 {
                // Each level starts a row; the open one ends here.
                for _ in 0..count {
                    if self.close_row() {
                        rows += 1;
                        if rows == n {
                            break 'rows;
                        }
                    }
                    self.page.advance(1);
                    self.open = Some(if def == self.max_def {
                        self.copy_values(1)?;
                        Open::Values
                    } else if def == self.def_empty {
                        Open::Empty
                    } else if def < self.def_empty {
                        Open::Null
                    } else {
                        return Ok(Step::Unsupported(Unsupported(
                            "a null inside a list".into(),
                        )));
                    });
                }
            } else if def == self.max_def {
                if self.open != Some(Open::Values) {
                    return Err("a page continues a row that has not started".into());
                }
                self.copy_values(count)?;
                self.page.advance(count);
            } else {
                return Ok(Step::Unsupported(Unsupported(
                    "a null inside a list".into(),
                )));
            }
        }
        Ok(Step::Rows(self.take_batch()?))
    }

    /// The rows gathered so far as an array, and a fresh batch.
    fn take_batch(&mut self) -> Result<ArrayRef, String> {
        let mut values = std::mem::take(&mut self.values);
        if values.capacity() > values.len() + (values.len() >> 3) + 4096 {
            values.shrink_to_fit();
        }
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let valid = std::mem::take(&mut self.valid);
        let nulls =
            std::mem::take(&mut self.any_null).then(|| NullBuffer::new(BooleanBuffer::from(valid)));
        let len = values.len() / self.width;
        let mut values = Buffer::from_vec(values);
        if values.as_ptr().align_offset(self.width) != 0 {
            // The allocator gave bytes an alignment below the item's (no allocator in use
            // does): copy into arrow's 64-byte aligned memory.
            values = Buffer::from_slice_ref(values.as_slice());
        }
        let items = ArrayData::builder(self.item.data_type().clone())
            .len(len)
            .add_buffer(values)
            .build()
            .map_err(|e| e.to_string())?;
        let items = make_array(items);
        match self.data_type {
            DataType::List(_) => list::<i32>(&self.item, offsets, items, nulls),
            _ => list::<i64>(&self.item, offsets, items, nulls),
        }
    }
}

fn list<O: OffsetSizeTrait>(
    item: &FieldRef,
    offsets: Vec<i64>,
    items: ArrayRef,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef, String> {
    let offsets: Vec<O> = offsets
        .into_iter()
        .map(|o| O::from_usize(o as usize).ok_or("more values than a List's i32 offsets hold"))
        .collect::<Result<_, _>>()?;
    let array = GenericListArray::<O>::try_new(
        Arc::clone(item),
        OffsetBuffer::new(offsets.into()),
        items,
        nulls,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(array))
}

/// BYTE_STREAM_SPLIT values back to plain little-endian bytes.
fn unsplit(split: &[u8], count: usize, width: usize) -> Option<bytes::Bytes> {
    if split.len() < count * width {
        return None;
    }
    let mut out = vec![0u8; count * width];
    for (b, stream) in split.chunks_exact(count.max(1)).take(width).enumerate() {
        for (dst, &src) in out.iter_mut().skip(b).step_by(width).zip(stream) {
            *dst = src;
        }
    }
    Some(out.into())
}

/// Dictionary indices (bit width byte, then RLE/bit-packed hybrid) gathered into plain bytes.
fn gather(dict: &[u8], data: &[u8], count: usize, width: usize) -> Result<bytes::Bytes, String> {
    let mut out = Vec::with_capacity(count * width);
    if count > 0 {
        let (&bits, indices) = data
            .split_first()
            .ok_or("a dictionary-encoded page has no bit width")?;
        for_each_run(indices, bits, count, |index, count| {
            let start = index as usize * width;
            let Some(value) = dict.get(start..start + width) else {
                return Err(format!(
                    "dictionary index {index} is past the dictionary's {} values",
                    dict.len() / width
                ));
            };
            for _ in 0..count {
                out.extend_from_slice(value);
            }
            Ok(())
        })?;
    }
    Ok(out.into())
}
