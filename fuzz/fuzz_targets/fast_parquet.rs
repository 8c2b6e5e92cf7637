//! Arbitrary bytes as a Parquet file through arrowquant's weight-column fast path
//! (src/io/fast_parquet): it never panics, and wherever both it and the parquet crate's
//! generic reader read a `list<float>` column chunk to the end, they read the same rows.
#![no_main]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;

#[allow(dead_code)]
#[path = "../../src/mem.rs"]
mod mem;

mod fast_parquet {
    #[allow(dead_code)]
    #[path = "../../../src/io/fast_parquet/levels.rs"]
    pub mod levels;
    #[allow(dead_code)]
    #[path = "../../../src/io/fast_parquet/read.rs"]
    pub mod read;
}

use fast_parquet::read::{ListColumnReader, Step, fast_item_width};

/// The column read row by row by the fast path: `None` if it errs or leaves the fast path.
fn fast_rows(reader: &mut ListColumnReader, rows: usize) -> Option<Vec<ArrayRef>> {
    let mut out = Vec::new();
    for _ in 0..rows {
        match reader.next_rows(1) {
            Ok(Step::Rows(a)) if a.len() == 1 => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let Ok(meta) = ArrowReaderMetadata::load(&bytes, Default::default()) else { return };
    let parquet = Arc::clone(meta.metadata());
    let descr = parquet.file_metadata().schema_descr();
    for (rg_index, rg) in parquet.row_groups().iter().enumerate() {
        let rows = rg.num_rows();
        if !(0..=4096).contains(&rows) {
            continue;
        }
        let Ok(chunks) = SerializedRowGroupReader::new(
            Arc::new(bytes.clone()),
            rg,
            None,
            Arc::new(ReaderProperties::builder().build()),
        ) else {
            continue;
        };
        for leaf in 0..descr.num_columns() {
            let root = descr.get_column_root_idx(leaf);
            let Some(field) = meta.schema().fields().get(root) else { continue };
            let column = descr.column(leaf);
            let Some(width) = fast_item_width(field.data_type(), &column) else { continue };
            let Ok(pages) = chunks.get_column_page_reader(leaf) else { continue };
            let Some(mut reader) =
                ListColumnReader::new(pages, field.data_type().clone(), &column, width)
            else {
                continue;
            };
            let fast = fast_rows(&mut reader, rows as usize);
            let generic: Option<Vec<ArrayRef>> =
                ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), meta.clone())
                    .with_projection(ProjectionMask::roots(descr, [root]))
                    .with_row_groups(vec![rg_index])
                    .with_batch_size(1)
                    .build()
                    .ok()
                    .and_then(|r| {
                        r.map(|b| b.ok().map(|b| Arc::clone(b.column(0))))
                            .collect::<Option<Vec<_>>>()
                    });
            if let (Some(fast), Some(generic)) = (fast, generic) {
                assert_eq!(fast.len(), generic.len());
                for (a, b) in fast.iter().zip(&generic) {
                    assert_eq!(a.to_data(), b.to_data());
                }
            }
        }
    }
});
