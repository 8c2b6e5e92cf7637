//! A job's output as a directory of part files, each written where its partition runs.
//!
//! [`WriteParts`] is a logical plan node over a converted table; [`PartsQueryPlanner`] plans it
//! as a [`WritePartsExec`], each of whose partitions writes one part file into the directory
//! (through a hidden temporary file beside it, renamed when complete, as every output) and
//! yields that part's report lines ([`ReportBuilder::part_schema`]). The original weights never
//! leave the task: only the lines travel back. The client then numbers the parts in layer order
//! and writes [`MANIFEST`] last, listing the parts and the report, so a reader never sees a
//! half-written dataset and a failed job leaves no manifest. On one machine the same plan runs
//! in-process; on a Ballista cluster (`crate::cluster`) the scheduler plans it and each executor
//! task writes its part.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, UInt64Type};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, Result as DfResult, internal_err};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::report::{ORIGINAL, Report, ReportBuilder};
use crate::array::LAYER_NAME;
use crate::error::{Error, Result};
use crate::io::output::ParquetOutput;

/// The file a finished job writes last into its output directory: JSON listing the parts and
/// the report. Readers that only list `*.parquet` files (DataFusion, pyarrow, DuckDB, polars)
/// skip it, as they skip the hidden temporary files of parts still being written.
pub const MANIFEST: &str = "_SUCCESS";

/// Where a part file goes and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct PartsSpec {
    /// The output directory, as every task sees it (a shared path on a cluster).
    pub dir: String,
    /// Key-value metadata of every part file.
    pub metadata: Vec<(String, String)>,
}

impl PartsSpec {
    /// The path of partition `partition`'s part file.
    pub fn part_path(&self, partition: usize) -> PathBuf {
        Path::new(&self.dir).join(part_name(partition))
    }
}

/// `part-00007.parquet`.
pub fn part_name(partition: usize) -> String {
    format!("part-{partition:05}.parquet")
}

/// Who writes parts in this process: set once by `arrowquant executor` to its executor id, so
/// the manifest says which executor wrote which part; `local` otherwise.
static WRITER: OnceLock<String> = OnceLock::new();

/// Names this process in the manifests of the parts it writes (the first call wins).
pub fn set_writer_name(name: String) {
    let _ = WRITER.set(name);
}

fn writer_name() -> String {
    let name = WRITER.get().map_or("local", String::as_str);
    format!("{name} (pid {})", std::process::id())
}

/// The logical node: write the input's partitions as part files, return their report lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteParts {
    /// The converted table: the q table's columns, plus the original weights in [`ORIGINAL`].
    pub input: LogicalPlan,
    /// Where and how.
    pub spec: PartsSpec,
    schema: DFSchemaRef,
}

impl WriteParts {
    /// The node over `input`.
    pub fn try_new(input: LogicalPlan, spec: PartsSpec) -> Result<Self> {
        let schema = DFSchema::try_from(ReportBuilder::part_schema())?;
        Ok(Self {
            input,
            spec,
            schema: Arc::new(schema),
        })
    }

    /// The node as a plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

impl PartialOrd for WriteParts {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.spec.partial_cmp(&other.spec) {
            Some(Ordering::Equal) => self.input.partial_cmp(&other.input),
            o => o,
        }
    }
}

impl UserDefinedLogicalNodeCore for WriteParts {
    fn name(&self) -> &str {
        "WriteParts"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WriteParts: dir={}", self.spec.dir)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let (Some(input), true) = (inputs.pop(), inputs.is_empty()) else {
            return internal_err!("WriteParts takes exactly one input");
        };
        Ok(Self {
            input,
            spec: self.spec.clone(),
            schema: Arc::clone(&self.schema),
        })
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}

/// The physical node: partition `i` of the input becomes `part-0000i.parquet`.
#[derive(Debug)]
pub struct WritePartsExec {
    input: Arc<dyn ExecutionPlan>,
    spec: PartsSpec,
    properties: Arc<PlanProperties>,
}

impl WritePartsExec {
    /// The node over `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: PartsSpec) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(ReportBuilder::part_schema()),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            spec,
            properties: Arc::new(properties),
        }
    }

    /// Where and how.
    pub fn spec(&self) -> &PartsSpec {
        &self.spec
    }
}

impl DisplayAs for WritePartsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WritePartsExec: dir={}", self.spec.dir)
    }
}

impl ExecutionPlan for WritePartsExec {
    fn name(&self) -> &str {
        "WritePartsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // One part per input partition, rows in their input order: no repartitioning.
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return internal_err!("WritePartsExec takes exactly one child");
        };
        Ok(Arc::new(Self::new(input, self.spec.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let spec = self.spec.clone();
        let write = async move {
            write_part(input, &spec, partition)
                .await
                .map_err(|e| DataFusionError::Execution(e.to_string()))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            ReportBuilder::part_schema(),
            futures::stream::once(write),
        )))
    }
}

/// Writes one partition's batches as its part file; returns the part's report lines. An empty
/// partition writes no file.
///
/// A task does not know its partition's place in the whole scan (Ballista re-indexes each
/// task's slice from 0), so the part is named after what it holds: `part-<hash>.parquet`, the
/// FNV-1a hash of its layer names and row count. A retried task writes the same name, replacing
/// its earlier attempt; the client renames the parts to `part-00000.parquet`, ... in the order
/// of their first layers once all are written ([`finish`]).
async fn write_part(
    mut input: SendableRecordBatchStream,
    spec: &PartsSpec,
    partition: usize,
) -> Result<RecordBatch> {
    let schema = input.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name() != ORIGINAL)
        .collect();
    let out_schema: SchemaRef = Arc::new(schema.project(&keep)?);
    // Only the temporary file's name comes from this; the part is renamed when complete.
    let provisional = spec.part_path(partition);
    let mut report = ReportBuilder::default();
    let mut out: Option<ParquetOutput> = None;
    let mut rows = 0u64;
    let mut hash = Fnv::default();
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if let Some(names) = batch.column_by_name(LAYER_NAME) {
            let names = datafusion::arrow::compute::cast(names, &DataType::Utf8)?;
            for name in names.as_string::<i32>().iter() {
                hash.write(name.unwrap_or("").as_bytes());
                hash.write(&[0xff]);
            }
        }
        report.add(&batch)?;
        let writer = match &mut out {
            Some(w) => w,
            None => out.insert(ParquetOutput::create(
                &provisional,
                &out_schema,
                &spec.metadata,
            )?),
        };
        writer.write(&batch.project(&keep)?)?;
        rows += batch.num_rows() as u64;
    }
    let Some(out) = out else {
        return report.part_batch("", &writer_name(), 0, 0);
    };
    hash.write(&rows.to_le_bytes());
    let name = format!("part-{:016x}.parquet", hash.0);
    let target = Path::new(&spec.dir).join(&name);
    out.commit_as(&target)?;
    let bytes = std::fs::metadata(&target)
        .map_err(Error::io(&target))?
        .len();
    report.part_batch(&name, &writer_name(), rows, bytes)
}

/// 64-bit FNV-1a: the same hash on every machine and build, unlike std's hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Plans [`WriteParts`] as [`WritePartsExec`].
#[derive(Debug, Default)]
pub struct PartsPlanner;

#[async_trait]
impl ExtensionPlanner for PartsPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<WriteParts>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("WriteParts takes exactly one input");
        };
        Ok(Some(Arc::new(WritePartsExec::new(
            Arc::clone(input),
            node.spec.clone(),
        ))))
    }
}

/// DataFusion's planner with [`PartsPlanner`]: the query planner of job sessions, and of the
/// cluster's scheduler.
#[derive(Debug, Default)]
pub struct PartsQueryPlanner;

#[async_trait]
impl QueryPlanner for PartsQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PartsPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Readies `dir` for a job's parts: created if missing; an existing one must hold only a
/// previous output of ours (part files, hidden temporaries, the manifest) and `overwrite`,
/// and loses those files first, manifest first, so it is never a finished dataset meanwhile.
pub fn prepare_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.is_file() {
        return Err(Error::Config(format!(
            "output {} is a file; a directory output needs a directory (or a new path)",
            dir.display()
        )));
    }
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(Error::io(dir));
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(Error::Config(format!(
            "output {} exists; pass --overwrite to replace it",
            dir.display()
        )));
    }
    let ours = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name == MANIFEST
            || (name.starts_with("part-") && name.ends_with(".parquet"))
            || (name.starts_with(".part-") && name.ends_with(".tmp"))
    };
    if let Some(other) = entries.iter().find(|p| !ours(p)) {
        return Err(Error::Config(format!(
            "output {} holds {}, which is not a part of an arrowquant output; not replacing it",
            dir.display(),
            other.display()
        )));
    }
    let manifest = dir.join(MANIFEST);
    if manifest.exists() {
        std::fs::remove_file(&manifest).map_err(Error::io(&manifest))?;
    }
    for p in entries.iter().filter(|p| **p != manifest) {
        std::fs::remove_file(p).map_err(Error::io(p))?;
    }
    Ok(())
}

/// Gathers the parts' report lines (one batch per task) into the job's report, checks every
/// part is there, renames the parts to `part-00000.parquet`, ... in the natural order of their
/// first layers, and returns the manifest's JSON (write it with [`write_manifest`], last).
pub fn finish(
    dir: &Path,
    lines: &[RecordBatch],
    options: serde_json::Value,
    report: &mut ReportBuilder,
) -> Result<serde_json::Value> {
    struct Part {
        written_as: String,
        executor: String,
        rows: u64,
        bytes: u64,
        first_layer: String,
    }
    let mut parts: Vec<Part> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for batch in lines {
        report.add_part_batch(batch)?;
        let string = |c: &str| {
            batch
                .column_by_name(c)
                .and_then(|c| c.as_string_opt::<i32>())
                .cloned()
                .ok_or_else(|| Error::Data(format!("part report: no utf8 column '{c}'")))
        };
        let number = |c: &str| {
            batch
                .column_by_name(c)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .cloned()
                .ok_or_else(|| Error::Data(format!("part report: no uint64 column '{c}'")))
        };
        let (part, executor, layer) = (string("part")?, string("executor")?, string(LAYER_NAME)?);
        let (rows, bytes) = (number("rows")?, number("file_bytes")?);
        let mut in_batch = std::collections::HashSet::new();
        for i in 0..batch.num_rows() {
            let name = part.value(i);
            if name.is_empty() || !in_batch.insert(name) {
                continue;
            }
            if !seen.insert(name.to_string()) {
                return Err(Error::Data(format!(
                    "two tasks wrote {name} in {}: their layers have the same names; layer \
                     names must be unique",
                    dir.display()
                )));
            }
            parts.push(Part {
                written_as: name.to_string(),
                executor: executor.value(i).to_string(),
                rows: rows.value(i),
                bytes: bytes.value(i),
                first_layer: layer.value(i).to_string(),
            });
        }
    }
    for p in &parts {
        if !dir.join(&p.written_as).is_file() {
            return Err(Error::Data(format!(
                "part {} was reported written but is not in {}: is the output directory \
                 shared by every executor?",
                p.written_as,
                dir.display()
            )));
        }
    }
    parts.sort_by_cached_key(|p| super::natural_key(&p.first_layer));
    let mut listed = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let file = part_name(i);
        let (from, to) = (dir.join(&p.written_as), dir.join(&file));
        std::fs::rename(&from, &to).map_err(Error::io(&from))?;
        listed.push(serde_json::json!({
            "file": file, "executor": p.executor, "rows": p.rows, "bytes": p.bytes
        }));
    }
    Ok(serde_json::json!({"parts": listed, "options": options}))
}

/// Writes `manifest` (the JSON of [`finish`] with the report added) as [`MANIFEST`] in `dir`.
pub fn write_manifest(dir: &Path, mut manifest: serde_json::Value, report: &Report) -> Result<()> {
    if let Some(m) = manifest.as_object_mut() {
        m.insert("report".into(), report.to_json());
    }
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(e.to_string()))?;
    let target = dir.join(MANIFEST);
    let mut tmp = crate::io::output::temp_beside(&target)?;
    std::io::Write::write_all(&mut tmp, &text).map_err(Error::io(&target))?;
    crate::io::output::commit(tmp, &target)
}
