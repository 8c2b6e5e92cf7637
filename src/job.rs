//! Parquet-to-Parquet jobs (DESIGN.md §5): `convert`, `dequantize`, `import`, and the SQL runner.
//! Inputs stream through DataFusion partition by partition; outputs are written beside their
//! final path and renamed at the end, so an interrupted job never leaves a partial file at OUT.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::prelude::{ParquetReadOptions, SessionConfig};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernels::{ErrorSums, Scheme, dequantize_into, error_sums, weight_entropy};
use crate::table::{Group, LAYER_NAME, Q, SHAPE, WEIGHTS};
use crate::udf::common::{QRows, WeightRows};

/// Rows per DataFusion batch in jobs. A weight table's rows are whole tensors, often 16 MB and
/// more, so one per batch bounds memory by the largest tensor per partition; measured on a
/// 256 MB table, 1 row beat 4 (0.78 s against 1.0 s, 650 MB peak RSS against 800 MB) because
/// smaller decode buffers are reused by the allocator instead of page-faulted in afresh.
pub const JOB_BATCH_ROWS: usize = 1;
/// Largest Parquet row group the jobs write, in bytes.
pub const ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;

/// Options of `convert`.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertOptions {
    /// The scheme.
    #[serde(serialize_with = "scheme_name")]
    pub scheme: Scheme,
    /// The grouping.
    #[serde(serialize_with = "group_name")]
    pub group: Group,
    /// Glob patterns (`*`, `?`) of layer names kept as float32.
    pub exclude: Vec<String>,
    /// Replace OUT when it exists.
    pub overwrite: bool,
    /// When set, each layer gets the narrowest of int2/int4/int8 reaching this cosine
    /// similarity, and `scheme` is ignored.
    pub min_cosine: Option<f64>,
}

fn scheme_name<S: serde::Serializer>(s: &Scheme, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

fn group_name<S: serde::Serializer>(g: &Group, ser: S) -> std::result::Result<S::Ok, S::Error> {
    match g {
        Group::PerTensor => ser.serialize_str("per_tensor"),
        Group::PerChannel => ser.serialize_str("per_channel"),
        Group::Size(n) => ser.serialize_u64(*n as u64),
        Group::Count(n) => ser.serialize_str(&format!("{n} groups")),
    }
}

/// One line of the job report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The layer.
    pub layer_name: String,
    /// Its shape, when the table has one.
    pub shape: Option<Vec<i64>>,
    /// Its scheme, or `float32` when excluded.
    pub scheme: String,
    /// Number of weights.
    pub numel: u64,
    /// Bytes as float32.
    pub bytes_before: u64,
    /// Bytes of codes, scales and mins (or float32 when excluded).
    pub bytes_after: u64,
    /// Mean squared error.
    pub mse: f64,
    /// Largest |x − x̂|.
    pub max_abs_error: f64,
    /// SQNR in dB.
    pub sqnr_db: f64,
    /// Cosine similarity.
    pub cosine_similarity: f64,
    /// Sensitivity: the Shannon entropy in bits of the layer's 256-bin weight histogram
    /// (`weight_entropy`); high entropy layers lose more to few bits.
    pub sensitivity: f64,
}

/// What a job did: per layer, totals and throughput.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// One entry per layer, in the order they were written.
    pub layers: Vec<LayerReport>,
    /// Sum of `bytes_before`.
    pub bytes_before: u64,
    /// Sum of `bytes_after`.
    pub bytes_after: u64,
    /// `bytes_before / bytes_after`.
    pub compression_ratio: f64,
    /// Cosine similarity of the whole model (all layers concatenated).
    pub cosine_similarity: f64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Float32 input bytes per second.
    pub throughput_bytes_per_s: f64,
}

/// Progress callbacks: rows and float32 bytes done so far.
pub trait Progress: Send + Sync {
    /// Called after each written batch.
    fn advance(&self, rows: u64, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _rows: u64, _bytes: u64) {}
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A new session for jobs: every core, small batches, the functions registered.
pub fn job_context() -> SessionContext {
    // No round-robin repartitioning of a partition's batches: rows keep the order of their row
    // group, so the same input gives the same output file. Parallelism comes from the input's
    // row groups (one partition per core), and within a partition from the pipeline (the
    // reader thread, the quantizing task and the writer overlap).
    let config = SessionConfig::new()
        .with_batch_size(JOB_BATCH_ROWS)
        .with_round_robin_repartition(false);
    let ctx = SessionContext::new_with_config(config);
    crate::register_all(&ctx);
    ctx
}

/// Checks IN and OUT before any work: IN exists, OUT is not IN, OUT is free unless `overwrite`.
pub fn check_paths(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let canonical_in = input
        .canonicalize()
        .map_err(|e| Error::Config(format!("input {}: {e}", input.display())))?;
    if let Ok(canonical_out) = output.canonicalize()
        && canonical_out == canonical_in
    {
        return Err(Error::Config(format!(
            "output {} is the input; write somewhere else",
            output.display()
        )));
    }
    if output.exists() && !overwrite {
        return Err(Error::Config(format!(
            "output {} exists; pass --overwrite to replace it",
            output.display()
        )));
    }
    if output.is_dir() {
        return Err(Error::Config(format!(
            "output {} is a directory; name a file",
            output.display()
        )));
    }
    Ok(())
}

/// Total rows of the Parquet input (a file or a directory of `*.parquet`), from the footers.
pub fn parquet_rows(input: &Path) -> Result<u64> {
    let files = crate::input::parquet_files(input)?;
    let mut rows = 0;
    for f in files {
        let file = File::open(&f).map_err(io_err(&f))?;
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(file).map_err(|e| {
                Error::Data(format!("{}: not a readable Parquet file: {e}", f.display()))
            })?;
        use parquet::file::reader::FileReader;
        rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Ok(rows)
}

/// An output file being written beside its final path; removed unless committed.
pub struct AtomicOutput {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicOutput {
    /// Starts an output for `target`: a hidden temporary file in the same directory.
    pub fn new(target: &Path) -> Result<(Self, File)> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.arrowquant-{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok((
            Self {
                tmp,
                target: target.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }

    /// Makes the output durable and moves it to its final path.
    pub fn commit(mut self, file: File) -> Result<()> {
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn writer_props(metadata: Vec<(String, String)>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_key_value_metadata(Some(
            metadata
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect(),
        ))
        .build()
}

/// Writes every batch of `streams` (one per partition, run concurrently) into `output`
/// atomically, calling `inspect` on each batch before it is written.
async fn write_streams(
    streams: Vec<datafusion::physical_plan::SendableRecordBatchStream>,
    schema: SchemaRef,
    output: &Path,
    metadata: Vec<(String, String)>,
    mut inspect: impl FnMut(&RecordBatch) -> Result<RecordBatch>,
) -> Result<()> {
    let (out, file) = AtomicOutput::new(output)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(streams.len().max(1) * 2);
    let mut tasks = Vec::new();
    for mut stream in streams {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if tx.send(batch.map_err(Error::from)).await.is_err() || failed {
                    break;
                }
            }
        }));
    }
    drop(tx);
    // The options go into the file's key-value metadata and into the Arrow schema's metadata,
    // where pyarrow's `read_schema(...).metadata` shows them.
    let mut schema_metadata = schema.metadata().clone();
    schema_metadata.extend(metadata.iter().cloned());
    let schema = Arc::new(schema.as_ref().clone().with_metadata(schema_metadata));
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_props(metadata)))
        .map_err(|e| Error::Data(format!("{}: {e}", output.display())))?;
    let result: Result<()> = async {
        while let Some(batch) = rx.recv().await {
            let batch = inspect(&batch?)?.with_schema(Arc::clone(&schema))?;
            writer
                .write(&batch)
                .map_err(|e| Error::Data(format!("writing {}: {e}", output.display())))?;
        }
        Ok(())
    }
    .await;
    for t in tasks {
        t.abort();
    }
    result?;
    let file = writer
        .into_inner()
        .map_err(|e| Error::Data(format!("writing {}: {e}", output.display())))?;
    out.commit(file)
}

fn glob_to_like(pattern: &str) -> String {
    let mut s = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' => s.push('%'),
            '?' => s.push('_'),
            '%' | '_' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            '\'' => s.push_str("''"),
            c => s.push(c),
        }
    }
    s
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Registers IN (a Parquet file or directory) as table `name` for a job, read page by page
/// ([`crate::input`], which checks every file's footer first), so memory does not grow with the
/// row groups.
fn register_job_input(ctx: &SessionContext, name: &str, input: &Path) -> Result<()> {
    let partitions = ctx.copied_config().target_partitions();
    crate::input::register_streaming(ctx, name, input, partitions)
}

/// Registers IN (a Parquet file or directory) as table `input`, after checking that every file
/// has a readable footer (a 0-byte or truncated file is an error naming it).
pub async fn register_input(ctx: &SessionContext, name: &str, input: &Path) -> Result<()> {
    parquet_rows(input)?;
    let path = input.display().to_string();
    ctx.register_parquet(name, &path, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::Data(format!("{path}: cannot read as Parquet: {e}")))
}

/// Converts a Parquet weight table to a quantized one; returns the report.
pub async fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    check_paths(input, output, opts.overwrite)?;
    let start = Instant::now();
    let ctx = job_context();
    register_job_input(&ctx, "input", input)?;
    let df = ctx.table("input").await?;
    crate::table::validate_schema(df.schema().as_arrow())
        .map_err(|e| Error::Schema(format!("{}: {e}", input.display())))?;
    if opts.group == Group::PerChannel && df.schema().field_with_unqualified_name(SHAPE).is_err() {
        return Err(Error::Config(format!(
            "--per-channel needs a '{SHAPE}' column, and {} has none",
            input.display()
        )));
    }
    let others: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != WEIGHTS && n != Q)
        .map(|n| quote_ident(&n))
        .collect();
    let group = match opts.group {
        Group::PerTensor => "0".to_string(),
        Group::Size(n) => n.to_string(),
        Group::PerChannel => format!("{SHAPE}[-1]"),
        Group::Count(n) => format!(
            "(array_length({WEIGHTS}) + {m}) / {n}",
            m = n.max(1) - 1,
            n = n.max(1)
        ),
    };
    let quantize = match opts.min_cosine {
        Some(t) => format!("quantize_to_target({WEIGHTS}, {t:?}, {group})"),
        None => format!("quantize({WEIGHTS}, '{}', {group})", opts.scheme.name()),
    };
    let excluded = opts
        .exclude
        .iter()
        .map(|p| format!("{LAYER_NAME} LIKE '{}'", glob_to_like(p)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let (q_expr, kept) = if excluded.is_empty() {
        (format!("{quantize} AS {Q}"), String::new())
    } else {
        (
            format!("CASE WHEN {excluded} THEN NULL ELSE {quantize} END AS {Q}"),
            format!(", CASE WHEN {excluded} THEN {WEIGHTS} END AS {WEIGHTS}"),
        )
    };
    // The original weights ride along as `__aq_original` for the report and are dropped
    // before writing.
    let mut select = others.clone();
    select.push(q_expr);
    let sql = format!(
        "SELECT {}{kept}, {WEIGHTS} AS __aq_original FROM input",
        select.join(", ")
    );
    let df = ctx.sql(&sql).await?;
    let full_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let keep: Vec<usize> = (0..full_schema.fields().len())
        .filter(|&i| full_schema.field(i).name() != "__aq_original")
        .collect();
    let out_schema = Arc::new(full_schema.project(&keep)?);
    let streams = df.execute_stream_partitioned().await?;
    let mut report = Report::default();
    let mut totals = ErrorSums::default(); // over the whole model
    let metadata = vec![
        (
            "arrowquant.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "arrowquant.options".to_string(),
            serde_json::to_string(opts).unwrap_or_default(),
        ),
    ];
    let written = write_streams(streams, out_schema, output, metadata, |batch| {
        if let Some(original) = batch.column_by_name("__aq_original") {
            let rows = WeightRows::try_new("convert", original)?;
            crate::table::check_shapes(batch, &rows)?;
        }
        let layers = report_batch(batch, &mut totals)?;
        let (rows, bytes) = (
            batch.num_rows() as u64,
            layers.iter().map(|l| l.bytes_before).sum(),
        );
        report.layers.extend(layers);
        progress.advance(rows, bytes);
        Ok(batch.project(&keep)?)
    })
    .await;
    if let Err(e @ Error::DataFusion(_)) = written {
        // SQL functions know the row of their batch, not the layer: find the layer.
        return Err(name_the_layer(input, opts).unwrap_or(e));
    }
    written?;
    // Partitions finish in any order; the report lists layers in their natural order.
    report
        .layers
        .sort_by_cached_key(|l| natural_key(&l.layer_name));
    finish_report(&mut report, totals, start);
    Ok(report)
}

/// After a job failed inside DataFusion: quantizes IN's layers one at a time, in order, with
/// the job's options, and returns the first error, which names its layer (`None` if every layer
/// passes, or IN cannot be read again). Runs only on failure.
fn name_the_layer(input: &Path, opts: &ConvertOptions) -> Option<Error> {
    let quantize = crate::table::QuantizeOptions {
        scheme: opts.scheme,
        group: opts.group,
        min_cosine: opts.min_cosine,
        threads: 1,
    };
    let mut found = None;
    let scanned = crate::input::scan(input, 1, |batch| {
        let excluded = batch
            .column_by_name(LAYER_NAME)
            .and_then(|c| cast(c, &DataType::Utf8).ok())
            .is_some_and(|names| {
                let names = names.as_string::<i32>();
                names.len() == 1
                    && names.is_valid(0)
                    && opts.exclude.iter().any(|p| glob_match(p, names.value(0)))
            });
        if !excluded && let Err(e) = crate::table::quantize_batch(&batch, &quantize) {
            found = Some(e);
            return Ok(false);
        }
        Ok(true)
    });
    scanned.ok().and(found)
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` any one character), as
/// `--exclude` does through SQL `LIKE`.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some(i);
                mark = j;
                i += 1;
            }
            Some(&c) if c == '?' || c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some(s) => {
                    i = s + 1;
                    mark += 1;
                    j = mark;
                }
                None => return false,
            },
        }
    }
    p[i.min(p.len())..].iter().all(|&c| c == '*')
}

/// Orders layer names as people do: `layers.2` before `layers.10`.
fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let (d, r) = rest.split_at(digits);
            key.push((0, d.parse().unwrap_or(u64::MAX), d.to_string()));
            rest = r;
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            let (t, r) = rest.split_at(text);
            key.push((1, 0, t.to_string()));
            rest = r;
        }
    }
    key
}

fn finish_report(report: &mut Report, totals: ErrorSums, start: Instant) {
    report.bytes_before = report.layers.iter().map(|l| l.bytes_before).sum();
    report.bytes_after = report.layers.iter().map(|l| l.bytes_after).sum();
    report.compression_ratio = if report.bytes_after == 0 {
        1.0
    } else {
        report.bytes_before as f64 / report.bytes_after as f64
    };
    report.cosine_similarity = totals.metrics().cosine_similarity;
    report.seconds = start.elapsed().as_secs_f64();
    report.throughput_bytes_per_s = report.bytes_before as f64 / report.seconds.max(1e-9);
}

/// The report lines of one converted batch (`__aq_original` holds the float weights).
fn report_batch(batch: &RecordBatch, totals: &mut ErrorSums) -> Result<Vec<LayerReport>> {
    let col = |name: &str| batch.column_by_name(name).cloned();
    let Some(original) = col("__aq_original") else {
        return Ok(Vec::new());
    };
    let Some(q) = col(Q) else {
        return Ok(Vec::new());
    };
    let xs = WeightRows::try_new("convert", &original)?;
    let qs = QRows::try_new("convert", &q)?;
    let names: Option<StringArray> = match col(LAYER_NAME) {
        Some(c) => Some(cast(&c, &DataType::Utf8)?.as_string::<i32>().clone()),
        None => None,
    };
    let shapes: Option<ArrayRef> = match col(SHAPE) {
        Some(c) => Some(cast(
            &c,
            &DataType::List(Arc::new(
                datafusion::arrow::datatypes::Field::new_list_field(DataType::Int64, true),
            )),
        )?),
        None => None,
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut scratch = Vec::new();
    for i in 0..batch.num_rows() {
        let name = names
            .as_ref()
            .filter(|n| n.is_valid(i))
            .map(|n| n.value(i).to_string())
            .unwrap_or_default();
        let shape = shapes.as_ref().and_then(|s| {
            let s = s.as_list::<i32>();
            s.is_valid(i).then(|| {
                s.value(i)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
        });
        let Ok(Some(x)) = xs.row(i) else { continue };
        let bytes_before = 4 * x.len() as u64;
        let sensitivity = weight_entropy(x, 256).unwrap_or(f64::NAN);
        let line = match qs.row(i) {
            Ok(Some(r)) => {
                scratch.clear();
                dequantize_into(&r, &mut scratch)
                    .map_err(|e| Error::Data(format!("layer '{name}': {e}")))?;
                let sums = error_sums(x, &scratch);
                totals.add(&sums);
                let m = sums.metrics();
                let mins = r.mins.map_or(0, <[f32]>::len);
                LayerReport {
                    layer_name: name,
                    shape,
                    scheme: r.scheme.name().to_string(),
                    numel: x.len() as u64,
                    bytes_before,
                    bytes_after: (r.codes.len() + 4 * (r.scales.len() + mins)) as u64,
                    mse: m.mse,
                    max_abs_error: m.max_abs_error,
                    sqnr_db: m.sqnr_db,
                    cosine_similarity: m.cosine_similarity,
                    sensitivity,
                }
            }
            _ => {
                // Kept as float32: exact, but part of the whole model's cosine similarity.
                totals.add(&error_sums(x, x));
                LayerReport {
                    layer_name: name,
                    shape,
                    scheme: "float32".into(),
                    numel: x.len() as u64,
                    bytes_before,
                    bytes_after: bytes_before,
                    mse: 0.0,
                    max_abs_error: 0.0,
                    sqnr_db: f64::INFINITY,
                    cosine_similarity: 1.0,
                    sensitivity,
                }
            }
        };
        out.push(line);
    }
    Ok(out)
}

/// Turns a quantized Parquet table back into float32 weights.
pub async fn dequantize(
    input: &Path,
    output: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<()> {
    check_paths(input, output, overwrite)?;
    let ctx = job_context();
    register_job_input(&ctx, "input", input)?;
    let df = ctx.table("input").await?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if !names.iter().any(|n| n == Q) {
        return Err(Error::Schema(format!(
            "{}: not a quantized table: expected a '{Q}' column, found [{}]",
            input.display(),
            names.join(", ")
        )));
    }
    let mut select: Vec<String> = names
        .iter()
        .filter(|n| *n != Q && *n != WEIGHTS)
        .map(|n| quote_ident(n))
        .collect();
    select.push(if names.iter().any(|n| n == WEIGHTS) {
        format!("coalesce(dequantize({Q}), {WEIGHTS}) AS {WEIGHTS}")
    } else {
        format!("dequantize({Q}) AS {WEIGHTS}")
    });
    let df = ctx
        .sql(&format!("SELECT {} FROM input", select.join(", ")))
        .await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let streams = df.execute_stream_partitioned().await?;
    let metadata = vec![(
        "arrowquant.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )];
    write_streams(streams, schema, output, metadata, |b| {
        progress.advance(b.num_rows() as u64, 0);
        Ok(b.clone())
    })
    .await
}

/// Runs every statement of `sql` with the functions registered and `tables` (name → Parquet
/// path) available; returns the results of each statement that produced rows.
pub async fn run_sql(sql: &str, tables: &[(String, PathBuf)]) -> Result<Vec<Vec<RecordBatch>>> {
    let ctx = SessionContext::new();
    crate::register_all(&ctx);
    for (name, path) in tables {
        register_input(&ctx, name, path).await?;
    }
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let statements = datafusion::sql::parser::DFParser::parse_sql_with_dialect(sql, &dialect)
        .map_err(|e| Error::Config(format!("SQL: {e}")))?;
    let mut results = Vec::new();
    for statement in statements {
        let plan = ctx.state().statement_to_plan(statement).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let batches = df.collect().await?;
        if batches
            .iter()
            .any(|b| b.num_columns() > 0 && b.num_rows() > 0)
        {
            results.push(batches);
        }
    }
    Ok(results)
}

/// What `import` did.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    /// Tensors written as rows.
    pub imported: usize,
    /// Tensors skipped (name, dtype): integer or other non-float tensors.
    pub skipped: Vec<(String, String)>,
}

/// Imports a `.safetensors` model (a file or a directory of shards; memory-mapped, one tensor at
/// a time) as a weight table: `layer_name, weights list<float32>, shape list<int64>, dtype`.
pub fn import_safetensors(
    input: &Path,
    output: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    check_paths(input, output, overwrite)?;
    let model = crate::safetensors::SafetensorsModel::open(input)?;
    let (out, file) = AtomicOutput::new(output)?;
    let metadata = vec![
        (
            "arrowquant.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("arrowquant.source".to_string(), input.display().to_string()),
    ];
    let mut writer = ArrowWriter::try_new(
        file,
        crate::safetensors::schema(),
        Some(writer_props(metadata)),
    )
    .map_err(|e| Error::Data(format!("{}: {e}", output.display())))?;
    let mut report = ImportReport {
        skipped: model.skipped(),
        ..Default::default()
    };
    for batch in model.batches() {
        let batch = batch?;
        writer
            .write(&batch)
            .map_err(|e| Error::Data(format!("writing {}: {e}", output.display())))?;
        let bytes = batch.column(1).as_list::<i32>().values().len() as u64 * 4;
        progress.advance(1, bytes);
        report.imported += 1;
    }
    let file = writer
        .into_inner()
        .map_err(|e| Error::Data(format!("writing {}: {e}", output.display())))?;
    out.commit(file)?;
    Ok(report)
}

/// Shapes of a small but realistic transformer (`demo`): about 55 M parameters, 220 MB.
pub fn demo_model_shapes() -> Vec<(String, Vec<usize>)> {
    let (vocab, d, ff, blocks) = (16_000, 768, 3072, 6);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![vocab, d])];
    for b in 0..blocks {
        let p = format!("model.layers.{b}");
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push((format!("{p}.self_attn.{n}.weight"), vec![d, d]));
        }
        v.push((format!("{p}.mlp.up_proj.weight"), vec![ff, d]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![d, ff]));
        v.push((format!("{p}.input_layernorm.weight"), vec![d]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
    }
    v.push(("model.norm.weight".to_string(), vec![d]));
    v
}

/// Writes the demo model as safetensors: Gaussian weights (std 0.02, fixed seed), norms near 1,
/// stored as bf16 for the embedding and f32 elsewhere, and one int64 buffer (skipped on import).
pub fn write_demo_model(path: &Path, scale: f64) -> Result<()> {
    let mut rng = SplitMix(0x5EED);
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, mut shape) in demo_model_shapes() {
        if let [rows, _] = shape.as_mut_slice() {
            *rows = ((*rows as f64 * scale).ceil() as usize).max(1);
        }
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm");
        let values = (0..n).map(|_| {
            let g = rng.gaussian();
            if is_norm { 1.0 + 0.05 * g } else { 0.02 * g }
        });
        if name.contains("embed") {
            let bytes = values
                .flat_map(|v| half::bf16::from_f64(v).to_le_bytes())
                .collect();
            tensors.push((name, safetensors::Dtype::BF16, shape, bytes));
        } else {
            let bytes = values.flat_map(|v| (v as f32).to_le_bytes()).collect();
            tensors.push((name, safetensors::Dtype::F32, shape, bytes));
        }
    }
    let positions: Vec<u8> = (0..512i64).flat_map(|i| i.to_le_bytes()).collect();
    tensors.push((
        "model.position_ids".into(),
        safetensors::Dtype::I64,
        vec![512],
        positions,
    ));
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Data(format!("demo tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    let (out, file) = AtomicOutput::new(path)?;
    drop(file);
    safetensors::serialize_to_file(views, Some(info), &out.tmp)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let file = File::open(&out.tmp).map_err(io_err(path))?;
    out.commit(file)
}

/// A small deterministic generator (SplitMix64) with Box–Muller Gaussians.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The report of `quantized` (rows with `layer_name` and `q`) against the `original` weight
/// table, joined on `layer_name`: what `arrowquant.summarize` returns.
pub fn summarize(
    original: impl Iterator<Item = Result<RecordBatch>>,
    quantized: &[RecordBatch],
) -> Result<Report> {
    use datafusion::arrow::compute::interleave;
    let start = Instant::now();
    let mut index: HashMap<String, (usize, usize)> = HashMap::new();
    let mut q_columns: Vec<ArrayRef> = Vec::new();
    for (b, batch) in quantized.iter().enumerate() {
        let (Some(names), Some(q)) = (batch.column_by_name(LAYER_NAME), batch.column_by_name(Q))
        else {
            return Err(Error::Schema(format!(
                "the quantized table needs '{LAYER_NAME}' and '{Q}' columns"
            )));
        };
        let names = cast(names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        for r in 0..names.len() {
            if names.is_valid(r) {
                index.insert(names.value(r).to_string(), (b, r));
            }
        }
        q_columns.push(Arc::clone(q));
    }
    let sources: Vec<&dyn Array> = q_columns.iter().map(|c| c.as_ref()).collect();
    let mut report = Report::default();
    let mut totals = ErrorSums::default();
    for batch in original {
        let batch = batch?;
        crate::table::validate_schema(batch.schema_ref())?;
        let names = batch
            .column_by_name(LAYER_NAME)
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?
            .ok_or_else(|| Error::Schema(format!("no '{LAYER_NAME}' column")))?;
        let names = names.as_string::<i32>();
        let mut picks = Vec::with_capacity(names.len());
        for r in 0..names.len() {
            let name = if names.is_valid(r) {
                names.value(r)
            } else {
                ""
            };
            match index.get(name) {
                Some(&p) => picks.push(p),
                None => {
                    return Err(Error::Data(format!(
                        "layer '{name}' is in the original table but not in the quantized one"
                    )));
                }
            }
        }
        let q = if sources.is_empty() {
            continue;
        } else {
            interleave(&sources, &picks)?
        };
        let mut fields = vec![LAYER_NAME.to_string()];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(names.clone())];
        if let Some(shape) = batch.column_by_name(SHAPE) {
            fields.push(SHAPE.into());
            columns.push(Arc::clone(shape));
        }
        fields.push(Q.into());
        columns.push(q);
        fields.push("__aq_original".into());
        columns.push(Arc::clone(
            batch
                .column_by_name(WEIGHTS)
                .ok_or_else(|| Error::Schema(format!("no '{WEIGHTS}' column")))?,
        ));
        let joined = RecordBatch::try_from_iter(fields.into_iter().zip(columns))?;
        report.layers.extend(report_batch(&joined, &mut totals)?);
    }
    finish_report(&mut report, totals, start);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{glob_match, natural_key};

    #[test]
    fn globs_match_like_the_exclude_option() {
        assert!(glob_match("*norm*", "encoder.layernorm.weight"));
        assert!(glob_match("*.bias", "fc.bias"));
        assert!(!glob_match("*.bias", "fc.bias.x"));
        assert!(glob_match("layer.?.w", "layer.3.w"));
        assert!(!glob_match("layer.?.w", "layer.10.w"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn natural_order_of_layer_names() {
        let mut names = vec![
            "layers.10.w",
            "layers.2.w",
            "embed",
            "layers.2.b",
            "layers.1.w",
        ];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(
            names,
            [
                "embed",
                "layers.1.w",
                "layers.2.b",
                "layers.2.w",
                "layers.10.w"
            ]
        );
    }
}
