//! `convert MODEL_DIR OUT_DIR`: a Hugging Face model directory (config.json + safetensors
//! shards) to a compressed-tensors `pack-quantized` model directory that transformers and vLLM
//! load. Tensor by tensor from the memory-mapped shards: a Linear weight is quantized by the
//! kernels and mapped exactly onto `weight_packed`/`weight_scale`/`weight_zero_point`; every
//! other tensor is copied byte for byte. The output directory is built beside OUT_DIR and renamed
//! into place at the end, so a failed job leaves nothing at OUT_DIR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Progress;
use crate::error::{Error, Result};
use crate::io::compressed_tensors::{
    self as ct, Args, Layout, Planned, ShardedWriter, quantization_config,
};
use crate::io::safetensors::{SafetensorsModel, element_size, widen_into};
use crate::kernels::{
    KernelError, Method, QuantizedBuffers, Scheme, effective_group_size, quantize_into_with,
    stored_group_size,
};
use crate::options::{Group, QuantizeOptions};

/// Hugging Face's default largest shard, 5 GB.
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Names (globs) of 2-D weights that stay dense by default: embeddings and the output head,
/// as llm-compressor leaves them (its `ignore: ["lm_head"]`; embeddings are not Linear).
pub const DEFAULT_DENSE: [&str; 3] = ["*embed*", "*lm_head*", "*wte*"];

/// What `convert` to compressed-tensors does.
#[derive(Debug, Clone)]
pub struct CompressedTensorsOptions {
    /// Scheme and grouping (`min_cosine` is not supported here).
    pub quantize: QuantizeOptions,
    /// Globs of tensor names to quantize although the defaults keep them dense.
    pub include: Vec<String>,
    /// Globs of tensor names to keep dense.
    pub exclude: Vec<String>,
    /// Replace OUT_DIR if it exists.
    pub overwrite: bool,
    /// Largest shard in bytes.
    pub max_shard_bytes: usize,
}

/// What the export wrote.
#[derive(Debug, Default, Clone)]
pub struct ExportReport {
    /// Modules quantized: (module name, scheme, shape).
    pub quantized: Vec<(String, Scheme, [usize; 2])>,
    /// Tensors copied unchanged.
    pub dense: Vec<String>,
    /// The shard files written.
    pub shards: Vec<String>,
}

/// Elements widened to f32 at a time: 256 KiB of f32, so the copy stays in L2 between the
/// widening and the kernel instead of making a round trip through memory.
const CHUNK_ELEMENTS: usize = 1 << 16;

/// One output tensor's bytes on their way to the writer thread.
enum Piece<'a> {
    /// Made here (packed codes, scales, …).
    Owned(Vec<u8>),
    /// A dense tensor, straight from the input's memory map.
    Mapped(&'a [u8]),
}

/// Why [`Worker::run`] failed.
enum Chunked {
    /// Reading the tensor's bytes.
    Read(Error),
    /// The kernel.
    Kernel(KernelError),
}

/// The buffers one thread reuses from tensor to tensor: raw bytes, their f32 widening, and the
/// quantized output of its share of the tensor.
#[derive(Default)]
struct Worker {
    bytes: Vec<u8>,
    x: Vec<f32>,
    out: QuantizedBuffers,
    method: Method,
}

impl Worker {
    /// Quantizes elements `range` of a tensor of float dtype `dtype` (element size `size`),
    /// whose bytes `read(offset, out)` gives, into `self.out` (cleared first): a chunk at a time
    /// (whole groups of whole code bytes; `chunk` elements), read, widened to f32, quantized.
    #[allow(clippy::too_many_arguments)] // one tensor's parameters
    fn run(
        &mut self,
        dtype: safetensors::Dtype,
        range: std::ops::Range<usize>,
        chunk: usize,
        read: &(dyn Fn(usize, &mut [u8]) -> Result<()> + Sync),
        scheme: Scheme,
        group: usize,
        g: usize,
    ) -> std::result::Result<(), Chunked> {
        self.out.codes.clear();
        self.out.scales.clear();
        self.out.mins.clear();
        let size = element_size(dtype).unwrap_or(4);
        let mut start = range.start;
        while start < range.end {
            let n = chunk.min(range.end - start);
            self.bytes.resize(n * size, 0);
            read(start * size, &mut self.bytes).map_err(Chunked::Read)?;
            widen_into(dtype, &self.bytes, &mut self.x);
            quantize_into_with(&self.x, scheme, group, self.method, &mut self.out, 1)
                .map_err(|e| Chunked::Kernel(e.shifted(start, g)))?;
            start += n;
        }
        Ok(())
    }
}

/// Quantizes a tensor of `numel` elements of `dtype` on `workers.len()` threads, each reading,
/// widening and quantizing its own contiguous share chunk by chunk, and gathers the pieces into
/// `out` in order: the same bytes as quantizing the whole tensor at once. Per-tensor scaling
/// needs every element in one group and runs on one thread.
fn quantize_tensor(
    dtype: safetensors::Dtype,
    numel: usize,
    read: &(dyn Fn(usize, &mut [u8]) -> Result<()> + Sync),
    scheme: Scheme,
    group: usize,
    workers: &mut [Worker],
    out: &mut QuantizedBuffers,
) -> std::result::Result<(), Chunked> {
    let g = effective_group_size(scheme, group, numel);
    let per_tensor = scheme.block_size().is_none() && group == 0;
    // Shares and chunks are whole groups of whole code bytes.
    let unit = g / gcd(g, 4) * 4;
    let chunk = if per_tensor {
        numel.max(1)
    } else {
        (CHUNK_ELEMENTS / unit).max(1) * unit
    };
    let n = if per_tensor {
        1
    } else {
        workers.len().clamp(1, numel.div_ceil(chunk).max(1))
    };
    let share = numel.div_ceil(n).div_ceil(unit) * unit;
    let ranges: Vec<_> = (0..n)
        .map(|k| (k * share).min(numel)..((k + 1) * share).min(numel))
        .collect();
    let Some((first, rest)) = workers.split_first_mut() else {
        return Err(Chunked::Kernel(KernelError::Internal("no worker".into())));
    };
    let results: Vec<std::result::Result<(), Chunked>> = std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .iter_mut()
            .zip(ranges.iter().skip(1).cloned())
            .map(|(w, r)| s.spawn(move || w.run(dtype, r, chunk, read, scheme, group, g)))
            .collect();
        let mut results = vec![first.run(dtype, ranges[0].clone(), chunk, read, scheme, group, g)];
        for h in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err(Chunked::Kernel(KernelError::Internal(
                    "a quantization thread panicked".into(),
                )))
            }));
        }
        results
    });
    // The error of the earliest share wins, as in a serial run.
    for r in results {
        r?;
    }
    out.codes.clear();
    out.scales.clear();
    out.mins.clear();
    for w in &workers[..n] {
        out.codes.extend_from_slice(&w.out.codes);
        out.scales.extend_from_slice(&w.out.scales);
        out.mins.extend_from_slice(&w.out.mins);
    }
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `*` and `?` wildcards over a whole name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether tensor `name` of `shape` is quantized: a 2-D `*.weight`, not matching an exclude
/// glob, and either an include glob or none of [`DEFAULT_DENSE`].
fn is_quantized(name: &str, shape: &[usize], opts: &CompressedTensorsOptions) -> bool {
    let any = |globs: &[String]| globs.iter().any(|g| glob_match(g, name));
    shape.len() == 2
        && name.ends_with(".weight")
        && !any(&opts.exclude)
        && (any(&opts.include) || !DEFAULT_DENSE.iter().any(|g| glob_match(g, name)))
}

/// The output directory, built beside its final place and renamed there at the end.
struct OutputDir {
    tmp: tempfile::TempDir,
    target: PathBuf,
    overwrite: bool,
}

impl OutputDir {
    fn create(target: &Path, overwrite: bool) -> Result<Self> {
        if target.exists() && !overwrite {
            return Err(Error::Config(format!(
                "output {} exists; pass --overwrite to replace it",
                target.display()
            )));
        }
        let tmp = crate::io::output::temp_dir_beside(target)?;
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
            overwrite,
        })
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn commit(self) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(self.tmp.path(), perms).map_err(Error::io(self.tmp.path()))?;
        }
        if self.target.exists() && self.overwrite {
            if self.target.is_dir() {
                std::fs::remove_dir_all(&self.target).map_err(Error::io(&self.target))?;
            } else {
                std::fs::remove_file(&self.target).map_err(Error::io(&self.target))?;
            }
        }
        let tmp = self.tmp.keep();
        std::fs::rename(&tmp, &self.target).map_err(Error::io(&self.target))
    }
}

/// Reads `dir/config.json` as a JSON object.
fn read_config(dir: &Path) -> Result<serde_json::Map<String, Value>> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::Config(format!(
            "{} has no config.json: not a Hugging Face model directory",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Data(format!(
            "{}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(Error::Data(format!(
            "{}: not valid JSON: {e}",
            path.display()
        ))),
    }
}

/// Copies the files of the model directory that are not weights or its config (tokenizer,
/// generation config, chat template, …) into `out`.
fn copy_other_files(input: &Path, out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(input).map_err(Error::io(input))? {
        let entry = entry.map_err(Error::io(input))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let weights = name.ends_with(".safetensors")
            || name == "model.safetensors.index.json"
            || name == "config.json"
            || name.ends_with(".bin")
            || name.ends_with(".pt")
            || name.starts_with('.');
        if path.is_file() && !weights {
            std::fs::copy(&path, out.join(&name)).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

/// `convert MODEL_DIR OUT_DIR` to compressed-tensors (see the module docs).
pub fn convert_compressed_tensors(
    input: &Path,
    output: &Path,
    opts: &CompressedTensorsOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    opts.quantize.validate()?;
    if opts.quantize.min_cosine.is_some() {
        return Err(Error::Config(
            "compressed-tensors: --min-cosine picks a width per layer, but a compressed-tensors \
             file is written with --scheme"
                .into(),
        ));
    }
    if !input.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory: compressed-tensors converts a Hugging Face model directory \
             (config.json + *.safetensors)",
            input.display()
        )));
    }
    let config = read_config(input)?;
    if input.canonicalize().ok() == output.canonicalize().ok() {
        return Err(Error::Config(format!(
            "output {} is the input; write somewhere else",
            output.display()
        )));
    }
    let model = SafetensorsModel::open(input)?;
    let scheme = opts.quantize.scheme;

    // Plan: every output tensor's name, dtype, shape and size, before any work.
    let mut plan: Vec<Planned> = Vec::new();
    let mut layouts: Vec<Option<Layout>> = Vec::new();
    let mut groups: BTreeMap<Args, Vec<String>> = BTreeMap::new();
    let mut ignore: Vec<String> = Vec::new();
    let mut report = ExportReport::default();
    for (e, _) in model.raw_tensors() {
        let module = e.name.strip_suffix(".weight").unwrap_or(&e.name);
        if is_quantized(&e.name, &e.shape, opts) && element_size(e.dtype).is_some() {
            let (rows, cols) = (e.shape[0], e.shape[1]);
            let numel = rows * cols;
            let group = opts.quantize.group_size(numel, Some(cols)).unwrap_or(0);
            let per_channel = matches!(opts.quantize.group, Group::PerChannel | Group::PerTensor);
            let l = ct::layout(
                scheme,
                stored_group_size(scheme, group),
                rows,
                cols,
                per_channel,
            )
            .map_err(|why| Error::Data(format!("tensor '{}' {:?}: {why}", e.name, e.shape)))?;
            if let Some(block) = scheme.block_size()
                && !numel.is_multiple_of(block)
            {
                return Err(Error::Data(format!(
                    "tensor '{}' {:?}: {scheme} needs a multiple of {block} elements, got {numel}",
                    e.name, e.shape
                )));
            }
            plan.extend(ct::planned(module, &l));
            groups.entry(l.args).or_default().push(module.to_string());
            report
                .quantized
                .push((module.to_string(), scheme, [rows, cols]));
            layouts.push(Some(l));
        } else {
            if e.shape.len() == 2 && e.name.ends_with(".weight") {
                ignore.push(module.to_string());
            }
            plan.push(Planned {
                name: e.name.clone(),
                dtype: format!("{:?}", e.dtype),
                shape: e.shape.clone(),
                bytes: e.end - e.start,
            });
            report.dense.push(e.name.clone());
            layouts.push(None);
        }
    }
    if groups.is_empty() {
        return Err(Error::Config(format!(
            "{}: no tensor to quantize (2-D *.weight tensors, less --exclude and the default \
             dense ones {DEFAULT_DENSE:?}, plus --include)",
            input.display()
        )));
    }

    let out = OutputDir::create(output, opts.overwrite)?;
    let writer = ShardedWriter::new(out.path(), plan, opts.max_shard_bytes)?;
    let threads = match opts.quantize.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The writer runs on its own thread, one tensor behind the quantizers: the output's copy
    // into the page cache overlaps the next tensor's work. At most two tensors' outputs wait in
    // the channel; dense tensors travel as slices of the memory map, never copied.
    let model = &model;
    let (send, recv) = std::sync::mpsc::sync_channel::<(String, Piece<'_>)>(2);
    report.shards = std::thread::scope(|s| -> Result<Vec<String>> {
        let written = s.spawn(move || -> Result<Vec<String>> {
            let mut writer = writer;
            for (name, piece) in recv {
                let bytes: &[u8] = match &piece {
                    Piece::Owned(v) => v,
                    Piece::Mapped(b) => b,
                };
                writer.write(&name, bytes)?;
                if let Piece::Mapped(b) = piece {
                    model.release(b);
                }
            }
            writer.finish()
        });
        let produced = (|| -> Result<()> {
            let mut bufs = QuantizedBuffers::default();
            let mut workers: Vec<Worker> = (0..threads)
                .map(|_| Worker {
                    method: opts.quantize.method,
                    ..Worker::default()
                })
                .collect();
            for ((e, bytes), layout) in model.raw_tensors().zip(&layouts) {
                let bytes = bytes?;
                let Some(l) = layout else {
                    progress.advance(1, bytes.len() as u64);
                    if send.send((e.name.clone(), Piece::Mapped(bytes))).is_err() {
                        break; // the writer stopped: its error is reported below
                    }
                    continue;
                };
                let numel = l.rows * l.cols;
                let group = opts.quantize.group_size(numel, Some(l.cols)).unwrap_or(0);
                let read = |offset: usize, out: &mut [u8]| model.read_at(e, offset, out);
                quantize_tensor(
                    e.dtype,
                    numel,
                    &read,
                    scheme,
                    group,
                    &mut workers,
                    &mut bufs,
                )
                .map_err(|err| match err {
                    Chunked::Read(err) => err,
                    Chunked::Kernel(err) => {
                        Error::Data(format!("layer '{}': quantize: {err}", e.name))
                    }
                })?;
                let q = bufs.view(scheme, group, numel);
                let module = e.name.strip_suffix(".weight").unwrap_or(&e.name);
                let tensors = ct::packed_tensors(module, &q, l)
                    .map_err(|why| Error::Data(format!("tensor '{}': {why}", e.name)))?;
                for (name, data) in tensors {
                    if send.send((name, Piece::Owned(data))).is_err() {
                        return Ok(());
                    }
                }
                progress.advance(1, numel as u64 * 4);
            }
            Ok(())
        })();
        drop(send);
        let written = written.join().unwrap_or_else(|_| {
            Err(Error::Data(
                "internal error (a bug in arrowquant, please report it): the writer thread panicked".into(),
            ))
        });
        // A quantization error comes first; else the writer's result.
        produced?;
        written
    })?;
    finish(out, input, config, &groups, &ignore)?;
    Ok(report)
}

/// Writes `config.json` with the `quantization_config`, copies the model directory's other
/// files and moves the output into place.
fn finish(
    out: OutputDir,
    model_dir: &Path,
    mut config: serde_json::Map<String, Value>,
    groups: &BTreeMap<Args, Vec<String>>,
    ignore: &[String],
) -> Result<()> {
    config.insert(
        "quantization_config".into(),
        quantization_config(groups, ignore),
    );
    let config_path = out.path().join("config.json");
    let text = serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| Error::Data(e.to_string()))?;
    std::fs::write(&config_path, text).map_err(Error::io(&config_path))?;
    copy_other_files(model_dir, out.path())?;
    out.commit()
}

/// One row of a q table, as the export sees it before reading the codes.
struct PlannedRow {
    name: String,
    layout: Option<Layout>,
}

/// The 2-D shape `[rows, cols]` of a row, or why it has none.
fn matrix(name: &str, shape_i64: Option<Vec<i64>>) -> Result<[usize; 2]> {
    match shape_i64.as_deref() {
        Some(&[r, c]) if r >= 0 && c >= 0 => Ok([r as usize, c as usize]),
        other => Err(Error::Data(format!(
            "layer '{name}': compressed-tensors quantizes 2-D [out, in] weights, but its shape is {other:?}"
        ))),
    }
}

/// The `q` column of a q-table batch, and its `weights` column when it has one.
fn q_and_weights(
    batch: &datafusion::arrow::array::RecordBatch,
) -> Result<(crate::array::QRows, Option<crate::array::WeightRows>)> {
    use crate::array::{Q, QRows, WEIGHTS, WeightRows};
    let q = batch
        .column_by_name(Q)
        .ok_or_else(|| Error::Schema(format!("a q table needs the column '{Q}'")))?;
    let weights = batch
        .column_by_name(WEIGHTS)
        .map(|w| WeightRows::try_new(WEIGHTS, w))
        .transpose()?;
    Ok((QRows::try_new(Q, q)?, weights))
}

/// `convert Q.parquet OUT_DIR --format compressed-tensors --config-from MODEL_DIR`: writes an
/// already quantized `q` table (from `convert`) as a compressed-tensors model, mapping each `q`
/// exactly (nothing is requantized); rows without `q` are written densely from `weights`
/// (float32). The config and the tokenizer files come from MODEL_DIR.
pub async fn export_q_table(
    input: &Path,
    output: &Path,
    model_dir: &Path,
    opts: &CompressedTensorsOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    use futures::StreamExt;

    use crate::array::{LAYER_NAME, Q, SHAPE};

    let config = read_config(model_dir)?;
    super::check_paths(input, output, opts.overwrite)?;
    let ctx = super::job_context();
    crate::io::parquet_source::register_streaming(&ctx, "input", input, 1)?;
    let df = ctx.table("input").await?;
    let schema = df.schema().as_arrow().clone();
    for col in [LAYER_NAME, Q, SHAPE] {
        if schema.column_with_name(col).is_none() {
            return Err(Error::Schema(format!(
                "{}: a q table (from `arrowquant convert`) needs the column '{col}'; it has [{}]",
                input.display(),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let shapes = |batch: &datafusion::arrow::array::RecordBatch, i: usize| -> Option<Vec<i64>> {
        let col = batch.column_by_name(SHAPE)?;
        let list = col.as_list_opt::<i32>()?;
        if list.is_null(i) {
            return None;
        }
        let v = list.value(i);
        let v =
            datafusion::arrow::compute::cast(&v, &datafusion::arrow::datatypes::DataType::Int64)
                .ok()?;
        Some(v.as_primitive::<Int64Type>().values().to_vec())
    };

    // Pass 1: the layout of every row, from names, shapes and the q headers.
    let mut rows: Vec<PlannedRow> = Vec::new();
    let mut plan: Vec<Planned> = Vec::new();
    let mut groups: BTreeMap<Args, Vec<String>> = BTreeMap::new();
    let mut ignore: Vec<String> = Vec::new();
    let mut report = ExportReport::default();
    let mut stream = df.clone().execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let names = datafusion::arrow::compute::cast(
            batch
                .column_by_name(LAYER_NAME)
                .ok_or_else(|| Error::Schema("layer_name".into()))?,
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let names = names.as_string::<i32>();
        let (q, weights) = q_and_weights(&batch)?;
        for i in 0..batch.num_rows() {
            let name = names.value(i).to_string();
            let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            let row = q
                .row(i)
                .map_err(|e| Error::Data(format!("layer '{name}': {e}")))?;
            match row {
                Some(qr) => {
                    let [r, c] = matrix(&name, shapes(&batch, i))?;
                    let per_channel = qr.group_size == c;
                    let l = ct::layout(qr.scheme, qr.group_size, r, c, per_channel)
                        .map_err(|why| Error::Data(format!("layer '{name}' [{r}, {c}]: {why}")))?;
                    plan.extend(ct::planned(&module, &l));
                    groups.entry(l.args).or_default().push(module.clone());
                    report.quantized.push((module, qr.scheme, [r, c]));
                    rows.push(PlannedRow {
                        name,
                        layout: Some(l),
                    });
                }
                None => {
                    let w = weights
                        .as_ref()
                        .and_then(|w| w.row(i).ok().flatten())
                        .ok_or_else(|| {
                            Error::Data(format!(
                                "layer '{name}': neither q nor weights; nothing to write"
                            ))
                        })?;
                    let shape: Vec<usize> = match shapes(&batch, i) {
                        Some(s) => s.iter().map(|&d| d.max(0) as usize).collect(),
                        None => vec![w.len()],
                    };
                    if shape.iter().product::<usize>() != w.len() {
                        return Err(Error::Data(format!(
                            "layer '{name}': shape {shape:?} does not hold its {} weights",
                            w.len()
                        )));
                    }
                    if shape.len() == 2 && name.ends_with(".weight") {
                        ignore.push(module);
                    }
                    plan.push(Planned {
                        name: name.clone(),
                        dtype: "F32".into(),
                        shape,
                        bytes: w.len() * 4,
                    });
                    report.dense.push(name.clone());
                    rows.push(PlannedRow { name, layout: None });
                }
            }
        }
    }
    if groups.is_empty() {
        return Err(Error::Data(format!(
            "{}: no row has a q to export",
            input.display()
        )));
    }

    // Pass 2: the bytes, row by row in the same order.
    let out = OutputDir::create(output, opts.overwrite)?;
    let mut writer = ShardedWriter::new(out.path(), plan, opts.max_shard_bytes)?;
    let mut planned = rows.iter();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (q, weights) = q_and_weights(&batch)?;
        for i in 0..batch.num_rows() {
            let Some(row) = planned.next() else {
                return Err(Error::Data(format!(
                    "{}: changed while being read",
                    input.display()
                )));
            };
            match &row.layout {
                Some(l) => {
                    let qr = q
                        .row(i)
                        .map_err(|e| Error::Data(format!("layer '{}': {e}", row.name)))?
                        .ok_or_else(|| {
                            Error::Data(format!("{}: changed while being read", input.display()))
                        })?;
                    let module = row.name.strip_suffix(".weight").unwrap_or(&row.name);
                    let tensors = ct::packed_tensors(module, &qr, l)
                        .map_err(|why| Error::Data(format!("layer '{}': {why}", row.name)))?;
                    for (name, data) in tensors {
                        writer.write(&name, &data)?;
                    }
                    progress.advance(1, qr.numel as u64 * 4);
                }
                None => {
                    let w = weights
                        .as_ref()
                        .and_then(|w| w.row(i).ok().flatten())
                        .unwrap_or_default();
                    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
                    writer.write(&row.name, &bytes)?;
                    progress.advance(1, bytes.len() as u64);
                }
            }
        }
    }
    report.shards = writer.finish()?;
    finish(out, model_dir, config, &groups, &ignore)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*embed*", "model.embed_tokens.weight"));
        assert!(glob_match(
            "model.layers.?.mlp.*",
            "model.layers.3.mlp.up_proj.weight"
        ));
        assert!(!glob_match(
            "model.layers.?.mlp.*",
            "model.layers.13.mlp.up_proj.weight"
        ));
        assert!(glob_match("*", ""));
        assert!(!glob_match("lm_head", "lm_head.weight"));
        assert!(glob_match("*a*b*c", "xaxbxbxc"));
    }
}
