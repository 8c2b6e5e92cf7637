//! `convert`: a Parquet weight table in, a quantized Parquet table out. The plan is built from
//! [`expr_fn`] expressions (exclusion by `LIKE` on `layer_name`, per-channel as `shape[-1]`),
//! so the same plan could run anywhere DataFusion runs.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::functions_nested::expr_fn::{array_element, array_length};
use datafusion::logical_expr::{Expr, cast, ident, lit, when};
use serde::Serialize;

use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;

use super::parts::{PartsSpec, WriteParts, finish, prepare_dir, write_manifest};
use super::report::{ORIGINAL, Report, ReportBuilder};
use super::{Progress, check_paths, job_context, name_layers, write_streams};
use crate::array::{LAYER_NAME, Q, SHAPE, WEIGHTS, check_options, validate_schema};
use crate::error::{Error, Result};
use crate::io::output::{ParquetOutput, metadata};
use crate::kernels::{Method, Scheme};
use crate::options::{Group, QuantizeOptions};
use crate::udf::expr_fn;

/// Options of `convert`.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertOptions {
    /// The scheme (ignored when `min_cosine` is set).
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
    /// How the linear schemes choose their scales.
    #[serde(serialize_with = "method_name")]
    pub method: Method,
}

impl ConvertOptions {
    /// The options of the `quantize` inside.
    pub fn quantize(&self) -> QuantizeOptions {
        QuantizeOptions {
            scheme: self.scheme,
            group: self.group,
            min_cosine: self.min_cosine,
            threads: 0,
            method: self.method,
        }
    }
}

fn scheme_name<S: serde::Serializer>(s: &Scheme, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

fn method_name<S: serde::Serializer>(m: &Method, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(m.name())
}

fn group_name<S: serde::Serializer>(g: &Group, ser: S) -> std::result::Result<S::Ok, S::Error> {
    match g {
        Group::PerTensor => ser.serialize_str("per_tensor"),
        Group::PerChannel => ser.serialize_str("per_channel"),
        Group::Size(n) => ser.serialize_u64(*n as u64),
        Group::Count(n) => ser.serialize_str(&format!("{n} groups")),
    }
}

/// A glob (`*`, `?`) as a SQL `LIKE` pattern (`%`, `_`, with `%`, `_` and `\` escaped).
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
            c => s.push(c),
        }
    }
    s
}

/// The group size argument of `quantize` for a grouping.
fn group_expr(group: Group) -> Expr {
    match group {
        Group::PerTensor => lit(0i64),
        Group::Size(n) => lit(n as i64),
        Group::PerChannel => array_element(ident(SHAPE), lit(-1i64)),
        Group::Count(n) => {
            let n = n.max(1) as i64;
            (cast(array_length(ident(WEIGHTS)), DataType::Int64) + lit(n - 1)) / lit(n)
        }
    }
}

/// The `q` column of `convert`: `quantize(...)`, or NULL for layers matching an exclude glob.
/// Also returns the condition that a layer is excluded.
fn q_expr(opts: &ConvertOptions) -> Result<(Expr, Option<Expr>)> {
    let group = group_expr(opts.group);
    let quantize = match opts.min_cosine {
        Some(t) => expr_fn::quantize_to_target(ident(WEIGHTS), lit(t), group),
        None if opts.method == Method::Rtn => {
            expr_fn::quantize(ident(WEIGHTS), lit(opts.scheme.name()), group)
        }
        None => expr_fn::quantize_with(
            ident(WEIGHTS),
            lit(opts.scheme.name()),
            group,
            lit(opts.method.name()),
        ),
    };
    let excluded = opts
        .exclude
        .iter()
        .map(|p| ident(LAYER_NAME).like(lit(glob_to_like(p))))
        .reduce(Expr::or);
    match excluded {
        // CASE WHEN excluded IS NOT TRUE THEN quantize(...) END: excluded rows get NULL, and
        // are never quantized.
        Some(e) => Ok((when(e.clone().is_not_true(), quantize).end()?, Some(e))),
        None => Ok((quantize, None)),
    }
}

/// The converted table of `df` (a weight table read from `input`): every column but the
/// weights, `q`, the weights of excluded layers, and the original weights in [`ORIGINAL`] for
/// the report (dropped before writing).
pub(crate) fn converted(df: DataFrame, input: &Path, opts: &ConvertOptions) -> Result<DataFrame> {
    let schema = df.schema().as_arrow().clone();
    validate_schema(&schema).map_err(|e| Error::Schema(format!("{}: {e}", input.display())))?;
    check_options(&schema, &opts.quantize()).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", input.display())),
        e => e,
    })?;
    let (q, excluded) = q_expr(opts)?;
    let mut select: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| *n != WEIGHTS && *n != Q)
        .map(|n| ident(n.as_str()))
        .collect();
    select.push(q.alias(Q));
    if let Some(e) = excluded {
        select.push(when(e, ident(WEIGHTS)).end()?.alias(WEIGHTS));
    }
    select.push(ident(WEIGHTS).alias(ORIGINAL));
    Ok(df.select(select)?)
}

/// The key-value metadata of a converted table's files: the version and the options.
fn options_metadata(opts: &ConvertOptions) -> Vec<(String, String)> {
    let options = serde_json::to_string(opts).unwrap_or_default();
    metadata(&[("arrowquant.options", options)])
}

/// Whether `output` names a directory of parts rather than a file: an existing directory, or
/// a path written with a trailing `/`.
pub fn is_dir_output(output: &Path) -> bool {
    output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/')
}

/// Converts a Parquet weight table to a quantized one; returns the report. `output` is a file,
/// or a directory of part files with a manifest ([`is_dir_output`], [`super::parts`]).
pub async fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    if is_dir_output(output) {
        return convert_to_dir(input, output, opts).await;
    }
    check_paths(input, output, opts.overwrite)?;
    let mut report = ReportBuilder::default();
    let ctx = job_context();
    let partitions = ctx.copied_config().target_partitions();
    crate::io::parquet_source::register_streaming(&ctx, "input", input, partitions)?;
    let df = converted(ctx.table("input").await?, input, opts)?;
    let full_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let keep: Vec<usize> = (0..full_schema.fields().len())
        .filter(|&i| full_schema.field(i).name() != ORIGINAL)
        .collect();
    let out_schema = Arc::new(full_schema.project(&keep)?);
    let task = Arc::new(df.task_ctx());
    let plan = name_layers(df.create_physical_plan().await?)?;
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, task)?;
    let out = ParquetOutput::create(output, &out_schema, &options_metadata(opts))?;
    write_streams(streams, out, |batch| {
        let bytes = report.add(batch)?;
        progress.advance(batch.num_rows() as u64, bytes);
        Ok(batch.project(&keep)?)
    })
    .await?;
    report.sort_by_layer_name();
    report.finish()
}

/// `convert` into a directory on this machine: one part per partition of the input.
async fn convert_to_dir(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<Report> {
    check_dir_paths(input, output)?;
    let ctx = job_context();
    let partitions = ctx.copied_config().target_partitions();
    crate::io::parquet_source::register_streaming(&ctx, "input", input, partitions)?;
    let df = converted(ctx.table("input").await?, input, opts)?;
    prepare_dir(output, opts.overwrite)?;
    write_parts(&ctx, df, output, opts, true).await
}

/// Checks that a directory output is not the input, nor inside it.
pub(crate) fn check_dir_paths(input: &Path, output: &Path) -> Result<()> {
    let canonical_in = input
        .canonicalize()
        .map_err(|e| Error::Config(format!("input {}: {e}", input.display())))?;
    if let Ok(out) = output.canonicalize()
        && (out == canonical_in || out.starts_with(&canonical_in) || canonical_in.starts_with(&out))
    {
        return Err(Error::Config(format!(
            "output {} overlaps the input {}; write somewhere else",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

/// Runs `df` (a [`converted`] table) as a [`WriteParts`] plan into `dir` on `ctx` (here, or on
/// the cluster `ctx` is connected to), then writes the manifest; returns the report. `here`:
/// the plan runs in this process, and its errors name the failing layer.
pub(crate) async fn write_parts(
    ctx: &SessionContext,
    df: DataFrame,
    dir: &Path,
    opts: &ConvertOptions,
    here: bool,
) -> Result<Report> {
    let mut report = ReportBuilder::default();
    let spec = PartsSpec {
        dir: dir.display().to_string(),
        metadata: options_metadata(opts),
    };
    let plan = WriteParts::try_new(df.logical_plan().clone(), spec)?.into_plan();
    let df = ctx.execute_logical_plan(plan).await?;
    let lines = if here {
        let task = Arc::new(df.task_ctx());
        let plan = name_layers(df.create_physical_plan().await?)?;
        datafusion::physical_plan::collect(plan, task).await?
    } else {
        df.collect().await.map_err(|e| {
            Error::Data(format!(
                "the job failed on the cluster, so {} has no manifest ({}); run it again with \
                 --overwrite: {e}",
                dir.display(),
                super::parts::MANIFEST
            ))
        })?
    };
    let options = serde_json::to_value(opts).unwrap_or_default();
    let manifest = finish(dir, &lines, options, &mut report)?;
    report.sort_by_layer_name();
    let report = report.finish()?;
    write_manifest(dir, manifest, &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(super::glob_to_like("*norm*"), "%norm%");
        assert_eq!(super::glob_to_like("layer.?.w"), "layer._.w");
        assert_eq!(super::glob_to_like("a_b%c\\"), "a\\_b\\%c\\\\");
        assert_eq!(super::glob_to_like("it's"), "it's");
    }
}
