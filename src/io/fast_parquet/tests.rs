//! The fast reader against the parquet crate's generic reader, on generated files.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float16Array, Float32Array, Float64Array, GenericListArray,
    Int64Array, OffsetSizeTrait, RecordBatch, StringArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use half::f16;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::basic::{Compression, Encoding, GzipLevel, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use proptest::prelude::*;

use super::RowGroupBatches;

/// One generated table: row lengths (`None` = NULL row), whether some item is null, the item type
/// (16/32/64 bits) and List or LargeList.
#[derive(Debug, Clone)]
struct Table {
    rows: Vec<Option<usize>>,
    item_null: bool,
    bits: u8,
    large: bool,
    seed: u64,
}

fn values(n: usize, bits: u8, seed: u64) -> ArrayRef {
    // A few repeated values first (so dictionary pages have something to do), then noise.
    let x: Vec<f64> = (0..n as u64)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            if i < 64 {
                (i % 5) as f64 - 2.0
            } else {
                h as f64 / 1e5 - 80.0
            }
        })
        .collect();
    match bits {
        16 => Arc::new(Float16Array::from_iter_values(
            x.iter().map(|&v| f16::from_f64(v)),
        )),
        32 => Arc::new(Float32Array::from_iter_values(x.iter().map(|&v| v as f32))),
        _ => Arc::new(Float64Array::from_iter_values(x.iter().copied())),
    }
}

fn list<O: OffsetSizeTrait>(t: &Table, item: Arc<Field>) -> ArrayRef {
    let lens: Vec<usize> = t.rows.iter().map(|r| r.unwrap_or(0)).collect();
    let n: usize = lens.iter().sum();
    let mut items = values(n, t.bits, t.seed);
    if t.item_null && n > 0 {
        let valid: Vec<bool> = (0..n).map(|i| i != n / 2).collect();
        let data = items
            .to_data()
            .into_builder()
            .nulls(Some(NullBuffer::from(valid)))
            .build()
            .unwrap();
        items = datafusion::arrow::array::make_array(data);
    }
    let nulls = t
        .rows
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from(t.rows.iter().map(Option::is_some).collect::<Vec<_>>()));
    let offsets = OffsetBuffer::<O>::from_lengths(lens);
    Arc::new(GenericListArray::<O>::new(item, offsets, items, nulls))
}

fn batch(t: &Table) -> RecordBatch {
    let item_type = match t.bits {
        16 => DataType::Float16,
        32 => DataType::Float32,
        _ => DataType::Float64,
    };
    let item = Arc::new(Field::new("item", item_type, true));
    let weights = if t.large {
        list::<i64>(t, item)
    } else {
        list::<i32>(t, item)
    };
    let names: StringArray = (0..t.rows.len())
        .map(|i| Some(format!("layer.{i}")))
        .collect();
    let shape = GenericListArray::<i32>::from_iter_primitive::<
        datafusion::arrow::datatypes::Int64Type,
        _,
        _,
    >(t.rows.iter().map(|r| r.map(|n| vec![Some(n as i64)])));
    let _ = Int64Array::from(vec![0i64]);
    let schema = Schema::new(vec![
        Field::new("layer_name", DataType::Utf8, true),
        Field::new("weights", weights.data_type().clone(), true),
        Field::new("shape", shape.data_type().clone(), true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(names), weights, Arc::new(shape)],
    )
    .unwrap()
}

/// Writes `b` to a temporary file with `props` and reads it back both ways, `batch_size` rows
/// at a time; returns the fallbacks of the fast reader.
fn compare(b: &RecordBatch, props: WriterProperties, batch_size: usize) -> Vec<String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = ArrowWriter::try_new(file.reopen().unwrap(), b.schema(), Some(props)).unwrap();
    // Several row groups and several write calls.
    let half = b.num_rows() / 2;
    w.write(&b.slice(0, half)).unwrap();
    w.flush().unwrap();
    w.write(&b.slice(half, b.num_rows() - half)).unwrap();
    w.close().unwrap();
    compare_file(file.path(), batch_size)
}

/// Reads every row group of `path` with the fast and the generic reader and asserts the
/// batches equal, value bits included; returns the fallbacks.
pub(super) fn compare_file(path: &std::path::Path, batch_size: usize) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    let meta = ArrowReaderMetadata::load(&f, ArrowReaderOptions::default()).unwrap();
    let mut fallbacks = Vec::new();
    for rg in 0..meta.metadata().num_row_groups() {
        let mut fast = RowGroupBatches::try_new(path, meta.clone(), rg, batch_size, true).unwrap();
        let slow = RowGroupBatches::try_new(path, meta.clone(), rg, batch_size, false).unwrap();
        assert_eq!(
            fast.fast_columns(),
            1,
            "the weights column is read by the fast path"
        );
        assert_eq!(slow.fast_columns(), 0);
        let want: Vec<RecordBatch> = slow.map(Result::unwrap).collect();
        let got: Vec<RecordBatch> = fast.by_ref().map(Result::unwrap).collect();
        assert_eq!(got.len(), want.len(), "row group {rg}: number of batches");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "row group {rg}");
            for (a, b) in g.columns().iter().zip(w.columns()) {
                assert_eq!(a.to_data(), b.to_data());
            }
        }
        fallbacks.extend(fast.fallbacks().iter().cloned());
    }
    fallbacks
}

fn codec(i: usize) -> Compression {
    [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4,
        Compression::LZ4_RAW,
        Compression::ZSTD(ZstdLevel::default()),
        Compression::BROTLI(Default::default()),
    ][i % 7]
}

fn table() -> impl Strategy<Value = Table> {
    (
        proptest::collection::vec(
            prop_oneof![
                1 => Just(None),
                2 => Just(Some(0usize)),
                2 => Just(Some(1usize)),
                5 => (2usize..300).prop_map(Some),
                2 => (300usize..5000).prop_map(Some),
            ],
            1..12,
        ),
        proptest::bool::weighted(0.15),
        prop_oneof![Just(16u8), Just(32u8), Just(64u8)],
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(rows, item_null, bits, large, seed)| Table {
            rows,
            item_null,
            bits,
            large,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fast_reader_equals_generic_reader(
        t in table(),
        codec_i in 0usize..7,
        dictionary in any::<bool>(),
        v2 in any::<bool>(),
        split in any::<bool>(),
        page_bytes in prop_oneof![Just(64usize), Just(1000), Just(1 << 20)],
        batch_size in 1usize..4,
    ) {
        let mut props = WriterProperties::builder()
            .set_compression(codec(codec_i))
            .set_dictionary_enabled(dictionary)
            .set_data_page_size_limit(page_bytes)
            .set_dictionary_page_size_limit(page_bytes.max(256))
            .set_write_batch_size(97)
            .set_writer_version(if v2 { WriterVersion::PARQUET_2_0 } else { WriterVersion::PARQUET_1_0 });
        if split && !dictionary {
            props = props.set_column_encoding("weights.list.item".into(), Encoding::BYTE_STREAM_SPLIT);
        }
        let b = batch(&t);
        let fallbacks = compare(&b, props.build(), batch_size);
        // Only a null inside a list, or DELTA_BYTE_ARRAY (what the crate writes for float16 in
        // v2 files), leaves the fast path.
        if !(t.item_null || v2 && t.bits == 16) {
            prop_assert!(fallbacks.is_empty(), "{:?}", fallbacks);
        }
    }
}

#[test]
fn a_null_inside_a_list_falls_back_from_that_batch() {
    let t = Table {
        rows: vec![Some(3), Some(2000), Some(5), None, Some(7)],
        item_null: true,
        bits: 32,
        large: false,
        seed: 1,
    };
    let props = WriterProperties::builder()
        .set_data_page_size_limit(128)
        .set_write_batch_size(16)
        .build();
    let fallbacks = compare(&batch(&t), props, 1);
    assert_eq!(fallbacks, vec!["weights: a null inside a list".to_string()]);
}

/// Writes `b` through [`crate::io::output::ParquetOutput`] (the writer's fast path for the
/// weights column) in batches cut at `cuts`, a row group closed past `group_bytes`, and
/// returns the file.
fn write_fast(
    b: &RecordBatch,
    cuts: &[usize],
    group_bytes: usize,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.parquet");
    let mut out = crate::io::output::ParquetOutput::create(&path, &b.schema(), &[])
        .unwrap()
        .with_row_group_bytes(group_bytes);
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&b.num_rows())) {
        let cut = cut.clamp(at, b.num_rows());
        out.write(&b.slice(at, cut - at)).unwrap();
        at = cut;
    }
    out.commit().unwrap();
    (dir, path)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fast_writer_files_read_back_as_written(
        t in table(),
        cuts in proptest::collection::vec(0usize..12, 0..4),
        group_bytes in prop_oneof![Just(1usize), Just(20_000), Just(1 << 30)],
        batch_size in 1usize..4,
    ) {
        let b = batch(&t);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (_dir, path) = write_fast(&b, &cuts, group_bytes);
        // The parquet crate's generic reader gets back exactly what was written.
        let f = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 5).unwrap();
        let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let read = datafusion::arrow::compute::concat_batches(&b.schema(), &read).unwrap();
        prop_assert_eq!(&read, &b);
        // And so does the fast reader, without leaving its path when no item is null.
        let fallbacks = compare_file(&path, batch_size);
        if !t.item_null {
            prop_assert!(fallbacks.is_empty(), "{:?}", fallbacks);
        }
    }
}

#[test]
fn fast_writer_splits_long_rows_into_pages_and_compresses_only_what_shrinks() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    // 3 Mi values (12 MiB, several pages) of noise, then as many in runs of 4096 equal values.
    let noise: Vec<f32> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 8) as f32 * 1e-7)
        .collect();
    let steps: Vec<f32> = (0..3u32 << 20).map(|i| (i >> 12) as f32).collect();
    let rows = [noise.clone(), steps];
    let (dir, mut paths) = (tempfile::tempdir().unwrap(), Vec::new());
    for (i, row) in rows.iter().enumerate() {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let weights = GenericListArray::<i32>::new(
            item,
            OffsetBuffer::from_lengths([row.len()]),
            Arc::new(Float32Array::from(row.clone())),
            None,
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "weights",
            weights.data_type().clone(),
            true,
        )]));
        let b = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(weights)]).unwrap();
        let path = dir.path().join(format!("{i}.parquet"));
        let mut out = crate::io::output::ParquetOutput::create(&path, &schema, &[]).unwrap();
        out.write(&b).unwrap();
        out.commit().unwrap();
        paths.push(path);
    }
    let open = |p: &std::path::Path| {
        let reader = SerializedFileReader::new(std::fs::File::open(p).unwrap()).unwrap();
        let chunk = reader.metadata().row_group(0).column(0).clone();
        (reader, chunk)
    };
    let (reader, chunk) = open(&paths[0]);
    assert_eq!(
        chunk.compression(),
        Compression::UNCOMPRESSED,
        "noise does not shrink"
    );
    assert_eq!(chunk.num_values(), 3 << 20);
    let pages = reader
        .get_row_group(0)
        .unwrap()
        .get_column_page_reader(0)
        .unwrap();
    assert_eq!(pages.count(), 12, "12 MiB of values in pages of 1 MiB");
    let (_, chunk) = open(&paths[1]);
    assert_eq!(
        chunk.compression(),
        Compression::SNAPPY,
        "runs of equal values shrink"
    );
    assert!(
        chunk.compressed_size() < 1 << 20,
        "{}",
        chunk.compressed_size()
    );
    for (path, row) in paths.iter().zip(&rows) {
        assert!(compare_file(path, 1).is_empty());
        let f = std::fs::File::open(path).unwrap();
        let mut r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 4).unwrap();
        let b = r.next().unwrap().unwrap();
        let list = b.column(0).as_list::<i32>();
        let values = list
            .values()
            .as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        assert_eq!(values.values().as_ref(), row.as_slice());
    }
}
