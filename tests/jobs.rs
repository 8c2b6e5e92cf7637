//! The jobs end to end on small files, in Rust: convert, dequantize, import and the errors that
//! name a layer. `cargo test` alone runs them; no Python needed.

#![allow(clippy::unwrap_used)] // a test helper that fails should panic

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrowquant::array::i64_list;
use arrowquant::job::{self, ConvertOptions};
use arrowquant::kernels::{Method, Scheme};
use arrowquant::options::Group;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, ListArray, RecordBatch, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn read(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let schema = batches[0].schema();
    datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// Each row's value of `column`, by layer name (partitions interleave rows).
fn by_layer(batch: &RecordBatch, column: &str) -> HashMap<String, ArrayRef> {
    let names = batch
        .column_by_name("layer_name")
        .unwrap()
        .as_string::<i32>();
    let col = batch.column_by_name(column).unwrap();
    (0..batch.num_rows())
        .map(|i| (names.value(i).to_string(), col.slice(i, 1)))
        .collect()
}

fn f32_list(rows: &[Vec<f32>]) -> ArrayRef {
    let values: Vec<f32> = rows.iter().flatten().copied().collect();
    Arc::new(
        ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            OffsetBuffer::from_lengths(rows.iter().map(Vec::len)),
            Arc::new(Float32Array::from(values)),
            None,
        )
        .unwrap(),
    )
}

/// Writes a weight table of `(name, weights, shape)` rows.
fn write_table(path: &Path, rows: &[(&str, Vec<f32>, Vec<i64>)]) {
    let names = StringArray::from_iter_values(rows.iter().map(|r| r.0));
    let weights = f32_list(&rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
    let dims: Vec<i64> = rows.iter().flat_map(|r| r.2.clone()).collect();
    let shapes = ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        OffsetBuffer::from_lengths(rows.iter().map(|r| r.2.len())),
        Arc::new(Int64Array::from(dims)),
        None,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("layer_name", DataType::Utf8, false),
        Field::new("weights", weights.data_type().clone(), true),
        Field::new("shape", i64_list(), true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(names), weights, Arc::new(shapes)],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    job::runtime().unwrap().block_on(f)
}

fn options(
    scheme: Scheme,
    group: Group,
    exclude: &[&str],
    min_cosine: Option<f64>,
) -> ConvertOptions {
    ConvertOptions {
        scheme,
        group,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        overwrite: true,
        min_cosine,
        method: Method::Rtn,
    }
}

/// `tests/golden/convert_*.parquet` were written by `convert` before the code was restructured
/// (commit 5c693a6) from `convert_input.parquet`: the `q` columns must stay identical.
#[test]
fn convert_writes_the_same_q_as_before_the_restructuring() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "int4_g64",
            options(Scheme::Int4, Group::Size(64), &[], None),
        ),
        (
            "int8_per_channel_exclude",
            options(Scheme::Int8, Group::PerChannel, &["*norm*"], None),
        ),
        ("q4_0", options(Scheme::Q4_0, Group::Size(32), &[], None)),
        (
            "int2_asym_per_tensor",
            options(Scheme::Int2Asym, Group::PerTensor, &[], None),
        ),
        (
            "target_0995",
            options(Scheme::Int8, Group::Size(128), &[], Some(0.995)),
        ),
    ];
    for (name, opts) in cases {
        let out = dir.path().join(format!("{name}.parquet"));
        let report = run(job::convert(
            &golden("convert_input.parquet"),
            &out,
            &opts,
            &(),
        ))
        .unwrap();
        assert_eq!(report.batch.num_rows(), 7, "{name}");
        let (got, want) = (
            read(&out),
            read(&golden(&format!("convert_{name}.parquet"))),
        );
        assert_eq!(got.schema().fields(), want.schema().fields(), "{name}");
        for column in got.schema().fields().iter().map(|f| f.name()) {
            let (g, w) = (by_layer(&got, column), by_layer(&want, column));
            assert_eq!(g.len(), w.len());
            for (layer, value) in &g {
                assert_eq!(
                    value.to_data(),
                    w[layer].to_data(),
                    "{name}: {layer}.{column}"
                );
            }
        }
    }
}

/// `convert IN OUT/` writes the parts-and-manifest layout of a cluster job on one machine: the
/// same q values as the single-file output, the parts numbered in layer order, `_SUCCESS` last
/// with the parts and the report; a second run needs `overwrite` and replaces the parts.
#[test]
fn convert_to_a_directory_writes_parts_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden("convert_input.parquet");
    let mut opts = options(Scheme::Int4, Group::Size(64), &[], None);
    opts.overwrite = false;
    let file = dir.path().join("one.parquet");
    run(job::convert(&input, &file, &opts, &())).unwrap();
    let out = dir.path().join("parts/");
    let report = run(job::convert(&input, &out, &opts, &())).unwrap();
    assert_eq!(report.batch.num_rows(), 7);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert!(!parts.is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    let listed: Vec<String> = parts
        .iter()
        .map(|p| p["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, listed);
    assert_eq!(listed[0], "part-00000.parquet");
    let rows: u64 = parts.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 7);
    assert_eq!(manifest["report"]["layers"].as_array().unwrap().len(), 7);
    assert_eq!(
        manifest["report"]["bytes_after"].as_u64().unwrap(),
        report.total("bytes_after") as u64
    );
    let want = by_layer(&read(&file), "q");
    let mut seen = 0;
    for name in &names {
        for (layer, q) in by_layer(&read(&out.join(name)), "q") {
            assert_eq!(q.to_data(), want[&layer].to_data(), "{layer}");
            seen += 1;
        }
    }
    assert_eq!(seen, 7);
    let again = run(job::convert(&input, &out, &opts, &())).unwrap_err();
    assert!(again.to_string().contains("--overwrite"), "{again}");
    opts.overwrite = true;
    run(job::convert(&input, &out, &opts, &())).unwrap();
    assert!(out.join("_SUCCESS").is_file());
}

#[test]
fn convert_then_dequantize_is_within_half_a_step_and_keeps_excluded_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (input, q, back) = (
        dir.path().join("in.parquet"),
        dir.path().join("q.parquet"),
        dir.path().join("back.parquet"),
    );
    let w: Vec<f32> = (0..512)
        .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
        .collect();
    write_table(
        &input,
        &[
            ("a.weight", w.clone(), vec![4, 128]),
            ("a.norm", vec![1.0; 128], vec![128]),
        ],
    );
    let opts = options(Scheme::Int4, Group::PerChannel, &["*norm"], None);
    let report = run(job::convert(&input, &q, &opts, &())).unwrap();
    let json = report.to_json();
    assert_eq!(json["layers"][0]["layer_name"], "a.norm");
    assert_eq!(json["layers"][0]["scheme"], "float32");
    assert_eq!(json["layers"][1]["scheme"], "int4");
    assert_eq!(json["layers"][1]["shape"], serde_json::json!([4, 128]));
    assert_eq!(json["layers"][1]["bytes_after"], 256 + 4 * 4);
    assert!(report.to_text().unwrap().contains("total: 2 layers"));
    run(job::dequantize(&q, &back, false, &())).unwrap();
    let restored = by_layer(&read(&back), "weights");
    let norm = restored["a.norm"].as_list::<i32>().value(0);
    assert_eq!(
        norm.as_primitive::<Float32Type>().values().as_ref(),
        &[1.0; 128]
    );
    let y = restored["a.weight"].as_list::<i32>().value(0);
    let y = y.as_primitive::<Float32Type>().values();
    for (row, (x, y)) in w.chunks(128).zip(y.chunks(128)).enumerate() {
        let step = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 7.0;
        for (a, b) in x.iter().zip(y) {
            assert!(
                (a - b).abs() <= step / 2.0 * (1.0 + 1e-6),
                "row {row}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn a_bad_weight_names_its_layer_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (
        dir.path().join("in.parquet"),
        dir.path().join("out.parquet"),
    );
    write_table(
        &input,
        &[
            ("good", vec![1.0; 64], vec![64]),
            ("bad.layer", vec![1.0, f32::NAN, 2.0, 3.0], vec![4]),
        ],
    );
    let opts = options(Scheme::Int8, Group::Size(32), &[], None);
    let err = run(job::convert(&input, &out, &opts, &()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 'bad.layer': quantize: element 1 is NaN, but weights must be finite"),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left behind");
    let err = run(job::convert(
        &input,
        &out,
        &options(Scheme::Int8, Group::Size(32), &[], Some(0.99)),
        &(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("layer 'bad.layer': quantize_to_target: element 1 is NaN"),
        "{err}"
    );
}

#[test]
fn per_channel_without_a_shape_column_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (
        dir.path().join("in.parquet"),
        dir.path().join("out.parquet"),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("layer_name", DataType::Utf8, false),
        Field::new("weights", f32_list(&[]).data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["a"])),
            f32_list(&[vec![1.0, 2.0]]),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(&input).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = run(job::convert(
        &input,
        &out,
        &options(Scheme::Int8, Group::PerChannel, &[], None),
        &(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("per-channel quantization needs a 'shape' column"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn import_reads_a_safetensors_model_tensor_by_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = (
        dir.path().join("m.safetensors"),
        dir.path().join("m.parquet"),
    );
    let w: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    let w_bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let ids: Vec<u8> = [7i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 4], &w_bytes)
                .unwrap(),
        ),
        (
            "h",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &h).unwrap(),
        ),
        (
            "ids",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &ids).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &model).unwrap();
    let report = job::import_safetensors(&model, &out, false, &()).unwrap();
    assert_eq!(report.imported, 2);
    assert_eq!(report.skipped, vec![("ids".to_string(), "I64".to_string())]);
    let t = read(&out);
    let weights = by_layer(&t, "weights");
    let w_back = weights["w"].as_list::<i32>().value(0);
    assert_eq!(
        w_back.as_primitive::<Float32Type>().values().as_ref(),
        &w[..]
    );
    let h_back = weights["h"].as_list::<i32>().value(0);
    assert_eq!(
        h_back.as_primitive::<Float32Type>().values().as_ref(),
        &[1.5, -2.0]
    );
    let shapes = by_layer(&t, "shape");
    let shape = shapes["w"].as_list::<i32>().value(0);
    assert_eq!(
        shape
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .as_ref(),
        &[3, 4]
    );
    // Refuses to overwrite, and the file is still whole.
    let err = job::import_safetensors(&model, &out, false, &()).unwrap_err();
    assert!(
        err.to_string().contains("exists; pass --overwrite"),
        "{err}"
    );
    assert_eq!(read(&out).num_rows(), 2);
}
