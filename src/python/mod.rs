//! The Python bindings (`arrowquant._internal`): Arrow PyCapsule interface in and out through
//! pyo3-arrow, the SQL functions as datafusion-ffi capsules, kernels run with the GIL released.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, RecordBatchReader};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::ScalarUDF;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::udf::FFI_ScalarUDF;
use datafusion_ffi::udtf::FFI_TableFunction;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::{PyArray, PyRecordBatch, PySchema, PyTable};

use crate::array::table;
use crate::error::Error;
use crate::kernels::Scheme;
use crate::options::{self, Group, QuantizeOptions};

pyo3::import_exception!(arrowquant._errors, ArrowQuantError);
pyo3::import_exception!(arrowquant._errors, SchemaError);
pyo3::import_exception!(arrowquant._errors, QuantizationError);
pyo3::import_exception!(arrowquant._errors, ConfigError);

/// Raises `err` as the `arrowquant` exception of its kind.
fn to_py(_py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    match &err {
        Error::Schema(_) => SchemaError::new_err(message),
        Error::Data(_) => QuantizationError::new_err(message),
        // A job's SQL functions report bad data as execution errors.
        Error::DataFusion(e)
            if matches!(
                e.find_root(),
                datafusion::error::DataFusionError::Execution(_)
            ) =>
        {
            QuantizationError::new_err(message)
        }
        Error::Config(_) | Error::Option(_) => ConfigError::new_err(message),
        _ => ArrowQuantError::new_err(message),
    }
}

/// A SQL function of arrowquant, handed to datafusion-python as an FFI capsule.
#[pyclass(frozen, name = "ScalarUdf", module = "arrowquant._internal")]
struct PyScalarUdf {
    udf: Arc<ScalarUDF>,
}

#[pymethods]
impl PyScalarUdf {
    /// The function's SQL name.
    #[getter]
    fn name(&self) -> String {
        self.udf.name().to_string()
    }

    fn __repr__(&self) -> String {
        format!("ScalarUdf({})", self.udf.name())
    }

    /// The datafusion-ffi capsule (`datafusion_scalar_udf`) that `datafusion.udf(obj)` reads.
    fn __datafusion_scalar_udf__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let ffi = FFI_ScalarUDF::from(Arc::clone(&self.udf));
        PyCapsule::new_with_value(py, ffi, c"datafusion_scalar_udf")
    }
}

/// The table function `read_safetensors('path')`, handed to datafusion-python as an FFI capsule.
#[pyclass(frozen, name = "TableFunction", module = "arrowquant._internal")]
struct PyReadSafetensors;

#[pymethods]
impl PyReadSafetensors {
    /// The function's SQL name.
    #[getter]
    fn name(&self) -> &'static str {
        "read_safetensors"
    }

    /// The datafusion-ffi capsule (`datafusion_table_function`) that `datafusion.udtf(obj, name)`
    /// reads; the session supplies the logical extension codec (datafusion-python 55).
    fn __datafusion_table_function__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let attr = "__datafusion_logical_extension_codec__";
        let capsule = if session.hasattr(attr)? {
            session.getattr(attr)?.call0()?
        } else {
            session
        };
        let capsule = capsule.cast_into::<PyCapsule>().map_err(|e| {
            PyValueError::new_err(format!(
                "expected a session or a logical codec capsule, got {e}"
            ))
        })?;
        let ptr = capsule.pointer_checked(Some(c"datafusion_logical_extension_codec"))?;
        // SAFETY: the capsule's name was checked: it holds an FFI_LogicalExtensionCodec, which
        // lives as long as the capsule we hold here; we clone it before the capsule is dropped.
        #[allow(unsafe_code)]
        let codec: FFI_LogicalExtensionCodec =
            unsafe { ptr.cast::<FFI_LogicalExtensionCodec>().as_ref() }.clone();
        let udtf: Arc<dyn datafusion::catalog::TableFunctionImpl> =
            Arc::new(crate::udf::ReadSafetensors);
        let ffi = FFI_TableFunction::new_with_ffi_codec(udtf, None, codec);
        PyCapsule::new_with_value(py, ffi, c"datafusion_table_function")
    }
}

/// The table functions, for `arrowquant.register`.
#[pyfunction]
fn udtfs() -> Vec<PyReadSafetensors> {
    vec![PyReadSafetensors]
}

/// Every SQL function, in the one list that `arrowquant.register` loops over.
#[pyfunction]
fn udfs() -> Vec<PyScalarUdf> {
    crate::functions()
        .into_iter()
        .map(|udf| PyScalarUdf { udf })
        .collect()
}

fn options(
    scheme: &str,
    group_size: Option<&Bound<'_, PyAny>>,
    num_groups: Option<usize>,
    min_cosine: Option<f64>,
    threads: usize,
    method: &str,
) -> Result<QuantizeOptions, Error> {
    let scheme = options::parse_scheme(scheme)?;
    let method = options::parse_method(method)?;
    let group = match (num_groups, group_size) {
        (Some(n), _) => Group::Count(n),
        (None, None) => Group::PerTensor,
        (None, Some(g)) if g.is_none() => Group::PerTensor,
        (None, Some(g)) => match (g.extract::<String>(), g.extract::<i64>()) {
            (Ok(s), _) if s == "per_channel" => Group::PerChannel,
            (_, Ok(n)) => options::parse_group_size(n)?,
            _ => {
                return Err(Error::Config(format!(
                    "group_size: expected 0 (one group per tensor) or a positive number of \
                     elements, None or 'per_channel', got {g}"
                )));
            }
        },
    };
    let opts = QuantizeOptions {
        scheme,
        group,
        min_cosine,
        threads,
        method,
    };
    opts.validate()?;
    Ok(opts)
}

/// Runs `f` over every batch of `data`, the GIL released around each batch and Ctrl-C honoured
/// between batches; returns the results as a table with `schema`.
fn map_stream(
    py: Python<'_>,
    data: AnyRecordBatch,
    schema_of: fn(&datafusion::arrow::datatypes::Schema) -> datafusion::arrow::datatypes::SchemaRef,
    f: impl Fn(&RecordBatch) -> Result<RecordBatch, Error> + Sync,
) -> PyResult<PyTable> {
    let mut reader: Box<dyn RecordBatchReader + Send> = data.into_reader()?;
    let schema = schema_of(reader.schema().as_ref());
    let mut out = Vec::new();
    loop {
        py.check_signals()?;
        let Some(batch) = reader.next() else { break };
        let batch = batch.map_err(|e| to_py(py, Error::Arrow(e)))?;
        let result = py.detach(|| f(&batch)).map_err(|e| to_py(py, e))?;
        out.push(result);
    }
    PyTable::try_new(out, schema)
}

/// Quantizes every batch of an Arrow stream (any `__arrow_c_stream__`/`__arrow_c_array__`
/// producer) into a table: other columns, then `q`.
#[pyfunction]
#[pyo3(signature = (data, scheme = "int8", group_size = None, num_groups = None, min_cosine = None, threads = 0, method = "rtn"))]
#[allow(clippy::too_many_arguments)] // the options, as Python keyword arguments
fn quantize_stream(
    py: Python<'_>,
    data: AnyRecordBatch,
    scheme: &str,
    group_size: Option<&Bound<'_, PyAny>>,
    num_groups: Option<usize>,
    min_cosine: Option<f64>,
    threads: usize,
    method: &str,
) -> PyResult<PyTable> {
    let opts = options(scheme, group_size, num_groups, min_cosine, threads, method)
        .map_err(|e| to_py(py, e))?;
    if let Ok(schema) = data.schema() {
        table::validate_schema(&schema).map_err(|e| to_py(py, e))?;
    }
    map_stream(py, data, table::quantized_schema, |b| {
        table::quantize_batch(b, &opts)
    })
}

/// Hands every batch of `data` to Rust and back without touching it: the cost of crossing the
/// boundary, for the benchmarks.
#[pyfunction]
fn passthrough(py: Python<'_>, data: AnyRecordBatch) -> PyResult<PyTable> {
    map_stream(py, data, |s| Arc::new(s.clone()), |b| Ok(b.clone()))
}

/// Quantizes one record batch.
#[pyfunction]
#[pyo3(signature = (batch, scheme = "int8", group_size = None, num_groups = None, min_cosine = None, threads = 0, method = "rtn"))]
#[allow(clippy::too_many_arguments)] // the options, as Python keyword arguments
fn quantize_batch(
    py: Python<'_>,
    batch: PyRecordBatch,
    scheme: &str,
    group_size: Option<&Bound<'_, PyAny>>,
    num_groups: Option<usize>,
    min_cosine: Option<f64>,
    threads: usize,
    method: &str,
) -> PyResult<PyRecordBatch> {
    let opts = options(scheme, group_size, num_groups, min_cosine, threads, method)
        .map_err(|e| to_py(py, e))?;
    let batch = batch.into_inner();
    let out = py
        .detach(|| table::quantize_batch(&batch, &opts))
        .map_err(|e| to_py(py, e))?;
    Ok(PyRecordBatch::new(out))
}

/// Dequantizes every batch of a quantized stream: `q` becomes `weights` again.
#[pyfunction]
fn dequantize_stream(py: Python<'_>, data: AnyRecordBatch) -> PyResult<PyTable> {
    map_stream(py, data, table::dequantized_schema, table::dequantize_batch)
}

/// The per-layer report of `quantized` against `original` (joined on `layer_name`): scheme,
/// sizes, compression ratio and error metrics per layer; the totals in the schema metadata.
#[pyfunction]
fn summarize(
    py: Python<'_>,
    original: AnyRecordBatch,
    quantized: AnyRecordBatch,
) -> PyResult<PyTable> {
    let quantized: Vec<RecordBatch> = quantized
        .into_reader()?
        .collect::<Result<_, _>>()
        .map_err(|e| to_py(py, Error::Arrow(e)))?;
    let reader = original.into_reader()?;
    let report = py
        .detach(|| crate::job::summarize(reader.map(|b| b.map_err(Error::Arrow)), &quantized))
        .map_err(|e| to_py(py, e))?;
    let schema = report.batch.schema();
    PyTable::try_new(vec![report.batch], schema)
}

/// Checks that a schema is a weight table's; raises `SchemaError` listing what is wrong.
#[pyfunction]
fn validate_schema(py: Python<'_>, schema: PySchema) -> PyResult<()> {
    table::validate_schema(schema.into_inner().as_ref()).map_err(|e| to_py(py, e))
}

/// The address of the float32 values buffer that Rust reads for a list array's weights, for
/// the zero-copy tests (compare with pyarrow's `buffers()[i].address`).
#[pyfunction]
fn weights_values_address(array: PyArray) -> PyResult<usize> {
    let (array, _) = array.into_inner();
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().values().clone(),
        DataType::LargeList(_) => array.as_list::<i64>().values().clone(),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().values().clone(),
        other => {
            return Err(PyValueError::new_err(format!(
                "expected a list array, got {other}"
            )));
        }
    };
    let data = values.to_data();
    let Some(buffer) = data.buffers().first() else {
        return Err(PyValueError::new_err(
            "the list's values have no data buffer",
        ));
    };
    Ok(buffer.as_ptr() as usize)
}

/// `arrowquant convert` as a function: the streaming Parquet-to-Parquet job, run in Rust with
/// the GIL released; returns the report as JSON (the `--report` file's content).
#[pyfunction]
#[pyo3(signature = (input, output, scheme = "int8", group_size = None, exclude = Vec::new(), min_cosine = None, overwrite = false, method = "rtn"))]
#[allow(clippy::too_many_arguments)] // the job's options, as Python keyword arguments
fn convert(
    py: Python<'_>,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    scheme: &str,
    group_size: Option<&Bound<'_, PyAny>>,
    exclude: Vec<String>,
    min_cosine: Option<f64>,
    overwrite: bool,
    method: &str,
) -> PyResult<String> {
    let opts =
        options(scheme, group_size, None, min_cosine, 0, method).map_err(|e| to_py(py, e))?;
    let job = crate::job::ConvertOptions {
        scheme: opts.scheme,
        group: opts.group,
        exclude,
        overwrite,
        min_cosine,
        method: opts.method,
    };
    let report = py
        .detach(|| crate::job::runtime()?.block_on(crate::job::convert(&input, &output, &job, &())))
        .map_err(|e| to_py(py, e))?;
    Ok(report.to_json().to_string())
}

/// `arrowquant convert MODEL_DIR OUT_DIR --format compressed-tensors` as a function (or, with
/// `config_from`, the export of a q table), run with the GIL released; returns what was written
/// as JSON.
#[pyfunction]
#[pyo3(signature = (input, output, scheme = "int8", group_size = None, include = Vec::new(), exclude = Vec::new(), overwrite = false, max_shard_bytes = None, config_from = None, method = "rtn"))]
#[allow(clippy::too_many_arguments)] // the job's options, as Python keyword arguments
fn convert_compressed_tensors(
    py: Python<'_>,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    scheme: &str,
    group_size: Option<&Bound<'_, PyAny>>,
    include: Vec<String>,
    exclude: Vec<String>,
    overwrite: bool,
    max_shard_bytes: Option<usize>,
    config_from: Option<std::path::PathBuf>,
    method: &str,
) -> PyResult<String> {
    let quantize = options(scheme, group_size, None, None, 0, method).map_err(|e| to_py(py, e))?;
    let job = crate::job::CompressedTensorsOptions {
        quantize,
        include,
        exclude,
        overwrite,
        max_shard_bytes: max_shard_bytes.unwrap_or(crate::job::DEFAULT_MAX_SHARD_BYTES),
    };
    let report = py
        .detach(|| match &config_from {
            Some(model_dir) => crate::job::runtime()?.block_on(crate::job::export_q_table(
                &input,
                &output,
                model_dir,
                &job,
                &(),
            )),
            None => crate::job::convert_compressed_tensors(&input, &output, &job, &()),
        })
        .map_err(|e| to_py(py, e))?;
    let quantized: Vec<serde_json::Value> = report
        .quantized
        .iter()
        .map(|(m, s, shape)| serde_json::json!({"module": m, "scheme": s.name(), "shape": shape}))
        .collect();
    Ok(serde_json::json!({
        "quantized": quantized,
        "dense": report.dense,
        "shards": report.shards,
    })
    .to_string())
}

/// Runs the `arrowquant` command line with the GIL released; returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| crate::cli::main(argv))
}

/// The speed-of-light reference for the benchmarks: one streaming pass over a list array's
/// float32 values that writes one i8 each, on `threads` threads, with the GIL released.
#[pyfunction]
#[pyo3(signature = (array, threads = 1))]
fn speed_of_light(py: Python<'_>, array: PyArray, threads: usize) -> PyResult<usize> {
    let (array, _) = array.into_inner();
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().values().clone(),
        other => {
            return Err(PyValueError::new_err(format!(
                "expected a list array, got {other}"
            )));
        }
    };
    let Some(x) = values.as_primitive_opt::<datafusion::arrow::datatypes::Float32Type>() else {
        return Err(PyValueError::new_err("expected float32 values"));
    };
    let x = x.values().as_ref();
    let written = py.detach(|| {
        // The same huge-page output buffer as the kernels get (crate::mem).
        let mut out: Vec<i8> = crate::mem::zeroed(x.len());
        let chunk = x.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for (src, dst) in x.chunks(chunk).zip(out.chunks_mut(chunk)) {
                s.spawn(move || crate::kernels::speed_of_light(src, dst));
            }
        });
        std::hint::black_box(&out).len()
    });
    Ok(written)
}

/// A Parquet file or directory read whole; `list<float>` columns through the fast path unless
/// `fast` is false (the parquet crate's generic reader, for comparison).
#[pyfunction]
#[pyo3(signature = (path, fast = true))]
fn read_parquet(py: Python<'_>, path: std::path::PathBuf, fast: bool) -> PyResult<PyTable> {
    let (schema, batches) = py
        .detach(|| crate::io::fast_parquet::read_all(&path, 1024, fast))
        .map_err(|e| to_py(py, e))?;
    PyTable::try_new(batches, schema)
}

/// Writes any Arrow stream to a Parquet file (atomically); top-level `list<float>` columns
/// through the writer's fast path unless `fast` is false (the parquet crate's generic writer).
#[pyfunction]
#[pyo3(signature = (data, path, fast = true))]
fn write_parquet(
    py: Python<'_>,
    data: AnyRecordBatch,
    path: std::path::PathBuf,
    fast: bool,
) -> PyResult<()> {
    let reader = data.into_reader()?;
    let schema = reader.schema();
    py.detach(|| {
        crate::io::output::write_all(
            &path,
            &schema,
            reader.map(|b| b.map_err(Error::Arrow)),
            fast,
        )
    })
    .map_err(|e| to_py(py, e))
}

/// The native module behind the `arrowquant` package.
#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SCHEMES", Scheme::ALL.map(Scheme::name).to_vec())?;
    m.add("DEFAULT_GROUP_SIZE", options::DEFAULT_GROUP_SIZE)?;
    m.add_class::<PyScalarUdf>()?;
    m.add_class::<PyReadSafetensors>()?;
    m.add_function(wrap_pyfunction!(udtfs, m)?)?;
    m.add_function(wrap_pyfunction!(udfs, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_stream, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_batch, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize_stream, m)?)?;
    m.add_function(wrap_pyfunction!(validate_schema, m)?)?;
    m.add_function(wrap_pyfunction!(weights_values_address, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(read_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(write_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(convert_compressed_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(passthrough, m)?)?;
    m.add_function(wrap_pyfunction!(summarize, m)?)?;
    m.add_function(wrap_pyfunction!(speed_of_light, m)?)?;
    Ok(())
}
