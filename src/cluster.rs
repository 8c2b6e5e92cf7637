//! The same SQL and `convert` on an Apache DataFusion Ballista cluster.
//!
//! Ballista ships plans, not code: scalar functions travel by name, and plan nodes of ours by
//! the codecs here. So the three sides each register arrowquant: the client
//! ([`connect`], or a Rust user's own `SessionContext::remote_with_state` with
//! [`client_config`] and [`crate::register_all`]), the scheduler ([`run_scheduler`]: our
//! functions and planner in every session it builds, our codecs) and every executor
//! ([`run_executor`]: a function registry made from a full session state, so DataFusion's own
//! functions are there too, and our codecs). `convert` on a cluster is the directory job of
//! [`crate::job::parts`]: each executor task writes its partition's part file into the shared
//! output directory, the client gathers the report lines and writes the manifest last.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result as DfResult, TableReference, exec_err, plan_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionConfig};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::error::{Error, Result};
use crate::job::parts::{PartsQueryPlanner, PartsSpec, WriteParts, WritePartsExec, prepare_dir};
use crate::job::{ConvertOptions, JOB_BATCH_ROWS, Report};

/// The largest gRPC message every side accepts: a plan or a result batch may carry whole
/// tensors, and Ballista's default (16 MiB) is smaller than one.
pub const GRPC_MESSAGE_BYTES: usize = 1 << 30;

/// The first byte of a codec buffer that holds a node of ours; anything else is Ballista's.
const OURS: u8 = b'A';
const BALLISTA: u8 = b'B';

/// The logical codec of every side: [`WriteParts`] as JSON, the rest through Ballista's; a
/// table no executor could rebuild is refused on the client with what to do instead.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

/// The physical codec of every side: [`WritePartsExec`] as JSON, the rest through Ballista's
/// (its shuffle readers and writers).
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

fn tagged(buf: &[u8]) -> DfResult<(u8, &[u8])> {
    match buf.split_first() {
        Some((&tag, rest)) if tag == OURS || tag == BALLISTA => Ok((tag, rest)),
        _ => exec_err!("arrowquant codec: a plan node from another build (no arrowquant tag)"),
    }
}

fn spec_from(bytes: &[u8]) -> DfResult<PartsSpec> {
    serde_json::from_slice(bytes)
        .map_err(|e| datafusion::error::DataFusionError::Execution(format!("WriteParts: {e}")))
}

fn spec_into(spec: &PartsSpec, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.push(OURS);
    serde_json::to_writer(buf, spec)
        .map_err(|e| datafusion::error::DataFusionError::Execution(format!("WriteParts: {e}")))
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        match tagged(buf)? {
            (OURS, rest) => {
                let [input] = inputs else {
                    return exec_err!("WriteParts takes exactly one input");
                };
                let node = WriteParts::try_new(input.clone(), spec_from(rest)?)
                    .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
                Ok(Extension {
                    node: Arc::new(node),
                })
            }
            (_, rest) => self.inner.try_decode(rest, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        if let Some(w) = node.node.as_any().downcast_ref::<WriteParts>() {
            return spec_into(&w.spec, buf);
        }
        buf.push(BALLISTA);
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let (_, rest) = tagged(buf)?;
        self.inner
            .try_decode_table_provider(rest, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let mut inner = Vec::new();
        if self
            .inner
            .try_encode_table_provider(table_ref, node, &mut inner)
            .is_err()
        {
            return plan_err!(
                "table '{table_ref}' cannot run on a cluster: executors rebuild only Parquet tables \
                 (files or directories that every executor can read at the same path); for \
                 safetensors or GGUF, `arrowquant import` the model into Parquet first"
            );
        }
        buf.push(BALLISTA);
        buf.extend(inner);
        Ok(())
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DfResult<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match tagged(buf)? {
            (OURS, rest) => {
                let [input] = inputs else {
                    return exec_err!("WritePartsExec takes exactly one input");
                };
                Ok(Arc::new(WritePartsExec::new(
                    Arc::clone(input),
                    spec_from(rest)?,
                )))
            }
            (_, rest) => self.inner.try_decode(rest, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(w) = node.downcast_ref::<WritePartsExec>() {
            return spec_into(w.spec(), buf);
        }
        buf.push(BALLISTA);
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode_udf(node, buf)
    }
}

/// Both codecs, as the three sides install them.
pub fn codecs() -> (Arc<LogicalCodec>, Arc<PhysicalCodec>) {
    (Arc::default(), Arc::default())
}

/// The session configuration of a cluster client: our codecs, gRPC messages up to
/// [`GRPC_MESSAGE_BYTES`], the static planner (one stage per scan, so each part is written
/// where its row groups are read), and the jobs' one-row batches without round-robin
/// repartitioning. `partitions` is how many tasks a scan becomes.
pub fn client_config(partitions: usize) -> SessionConfig {
    let (logical, physical) = codecs();
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(logical)
        .with_ballista_physical_extension_codec(physical)
        .with_ballista_grpc_client_max_message_size(GRPC_MESSAGE_BYTES)
        .with_ballista_adaptive_query_planner(false)
        .with_batch_size(JOB_BATCH_ROWS)
        .with_round_robin_repartition(false)
        .with_target_partitions(partitions.max(1))
}

/// `host:port` of a `df://HOST:PORT` URL (the port defaults to 50050, Ballista's).
pub fn scheduler_address(url: &str) -> Result<(String, u16)> {
    let rest = url.strip_prefix("df://").ok_or_else(|| {
        Error::Config(format!(
            "cluster URL '{url}': expected df://HOST:PORT (the scheduler's address)"
        ))
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| {
                Error::Config(format!("cluster URL '{url}': '{p}' is not a port number"))
            })?,
        ),
        None => (rest, 50050),
    };
    if host.is_empty() {
        return Err(Error::Config(format!("cluster URL '{url}': no host")));
    }
    Ok((host.to_string(), port))
}

/// Fails within `timeout` unless something accepts connections at the scheduler's address.
fn check_reachable(url: &str, timeout: Duration) -> Result<()> {
    let (host, port) = scheduler_address(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("cluster {url}: cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Config(format!(
        "cluster {url}: no scheduler answers at {host}:{port} ({}); start one with \
         `arrowquant scheduler --bind {host}:{port}`",
        last.map_or_else(|| "no address".to_string(), |e| e.to_string())
    )))
}

/// A session on the cluster at `url` (`df://HOST:PORT`) with the arrowquant functions, after
/// checking within seconds that the scheduler answers.
pub async fn connect(url: &str, partitions: usize) -> Result<SessionContext> {
    check_reachable(url, Duration::from_secs(5))?;
    let state = SessionStateBuilder::new()
        .with_config(client_config(partitions))
        .with_default_features()
        .build();
    let (host, port) = scheduler_address(url)?;
    let ctx = SessionContext::remote_with_state(&format!("df://{host}:{port}"), state).await?;
    crate::register_all(&ctx);
    Ok(ctx)
}

/// The session state the scheduler builds for each client session: DataFusion's defaults,
/// Ballista's optimizer rules, our functions, and a planner that knows [`WriteParts`].
pub fn scheduler_state(config: SessionConfig) -> DfResult<SessionState> {
    let base = ballista_core::utils::default_session_builder(config)?;
    let state = SessionStateBuilder::new_from_existing(base)
        .with_query_planner(Arc::new(PartsQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::register_all(&ctx);
    Ok(ctx.state())
}

/// Options of `arrowquant scheduler`.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Seconds without a heartbeat before an executor counts as lost and its tasks run again
    /// elsewhere.
    pub executor_timeout: u64,
}

/// Runs a Ballista scheduler with arrowquant's functions, planner and codecs, until stopped.
pub async fn run_scheduler(opts: &SchedulerOptions) -> Result<()> {
    let (logical, physical) = codecs();
    let timeout = opts.executor_timeout.max(2);
    let config = SchedulerConfig {
        bind_host: opts.bind.ip().to_string(),
        bind_port: opts.bind.port(),
        override_session_builder: Some(Arc::new(scheduler_state)),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        grpc_server_max_decoding_message_size: GRPC_MESSAGE_BYTES as u32,
        grpc_server_max_encoding_message_size: GRPC_MESSAGE_BYTES as u32,
        grpc_client_max_message_size: GRPC_MESSAGE_BYTES as u32,
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 3).max(1),
        no_executors_grace_period_seconds: timeout,
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Config(format!("scheduler: {e}")))?;
    eprintln!("arrowquant scheduler listening on {}", opts.bind);
    start_server(cluster, opts.bind, Arc::new(config))
        .await
        .map_err(|e| Error::Config(format!("scheduler on {}: {e}", opts.bind)))
}

/// Options of `arrowquant executor`.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's `HOST:PORT`.
    pub scheduler: String,
    /// The Arrow Flight service's address (other executors and clients fetch results there);
    /// the gRPC service listens on the next port unless `grpc_port` says otherwise.
    pub bind: SocketAddr,
    /// The gRPC port.
    pub grpc_port: Option<u16>,
    /// The name other machines reach this one by (default: the bind address).
    pub external_host: Option<String>,
    /// Where shuffle files go.
    pub work_dir: PathBuf,
    /// Task slots (0: one per core).
    pub concurrent_tasks: usize,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat: u64,
}

/// Runs a Ballista executor with arrowquant's functions and codecs, until stopped.
pub async fn run_executor(opts: &ExecutorOptions) -> Result<()> {
    let (host, port) = scheduler_address(&format!("df://{}", opts.scheduler))?;
    std::fs::create_dir_all(&opts.work_dir).map_err(Error::io(&opts.work_dir))?;
    let (logical, physical) = codecs();
    // The registry from a full session state: DataFusion's functions (nested ones such as
    // array_length too) and ours.
    let state = scheduler_state(SessionConfig::new_with_ballista())?;
    let registry = BallistaFunctionRegistry::from(&state);
    let grpc_port = match opts.grpc_port {
        Some(p) => p,
        None => opts.bind.port().checked_add(1).ok_or_else(|| {
            Error::Config(format!(
                "executor: no port after {}; give --grpc-port",
                opts.bind
            ))
        })?,
    };
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: opts
            .external_host
            .clone()
            .or_else(|| (!opts.bind.ip().is_unspecified()).then(|| opts.bind.ip().to_string())),
        port: opts.bind.port(),
        grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks,
        work_dir: Some(opts.work_dir.display().to_string()),
        grpc_max_decoding_message_size: GRPC_MESSAGE_BYTES as u32,
        grpc_max_encoding_message_size: GRPC_MESSAGE_BYTES as u32,
        executor_heartbeat_interval_seconds: opts.heartbeat.max(1),
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        ..Default::default()
    };
    crate::job::parts::set_writer_name(format!("executor {}", config.executor_id));
    eprintln!(
        "arrowquant executor {} on {} (gRPC {}), scheduler {}, {} task slots, work dir {}",
        config.executor_id,
        opts.bind,
        grpc_port,
        opts.scheduler,
        if opts.concurrent_tasks == 0 {
            "one per core".to_string()
        } else {
            opts.concurrent_tasks.to_string()
        },
        opts.work_dir.display()
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Config(format!("executor: {e}")))
}

/// Registers each Parquet table (`name`, file or directory) on `ctx`, by absolute path: every
/// executor reads it at that path.
pub async fn register_parquet(ctx: &SessionContext, name: &str, path: &Path) -> Result<()> {
    let absolute = std::path::absolute(path).map_err(Error::io(path))?;
    crate::io::parquet_source::total_rows(&absolute)?;
    let text = absolute.display().to_string();
    ctx.register_parquet(name, &text, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::Data(format!("{text}: cannot read as Parquet: {e}")))
}

/// The row groups of a Parquet file or directory: a cluster job's natural task count.
fn row_groups(input: &Path) -> Result<usize> {
    let mut n = 0;
    for file in crate::io::parquet_source::parquet_files(input)? {
        n += crate::io::parquet_source::open(&file)?
            .metadata()
            .num_row_groups();
    }
    Ok(n)
}

/// `convert IN OUT` on the cluster at `url`: IN is a Parquet table and OUT a directory that
/// every executor writes into (one part per task, a task per row group) and the client
/// finishes with the manifest.
pub async fn convert(
    url: &str,
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<Report> {
    if input.is_dir() && input.join("config.json").is_file()
        || input
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        return Err(Error::Config(format!(
            "{}: on a cluster, convert reads Parquet weight tables; `arrowquant import` the model \
             first (into a path every executor can read)",
            input.display()
        )));
    }
    crate::job::check_dir_paths(input, output)?;
    let ctx = connect(url, row_groups(input)?).await?;
    register_parquet(&ctx, "input", input).await?;
    let df = crate::job::converted(ctx.table("input").await?, input, opts)?;
    let dir = std::path::absolute(output).map_err(Error::io(output))?;
    prepare_dir(&dir, opts.overwrite)?;
    crate::job::write_parts(&ctx, df, &dir, opts, false).await
}

/// `arrowquant sql --cluster URL`: every statement of `sql` on the cluster, with `tables`
/// (name → Parquet path) registered.
pub async fn run_sql(
    url: &str,
    sql: &str,
    tables: &[(String, PathBuf)],
) -> Result<Vec<Vec<RecordBatch>>> {
    let mut partitions = 1;
    for (_, path) in tables {
        partitions = partitions.max(row_groups(path)?);
    }
    let ctx = connect(url, partitions).await?;
    for (name, path) in tables {
        register_parquet(&ctx, name, path).await?;
    }
    crate::job::run_statements(&ctx, sql).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            scheduler_address("df://10.0.0.5:50050").unwrap(),
            ("10.0.0.5".to_string(), 50050)
        );
        assert_eq!(
            scheduler_address("df://sched").unwrap(),
            ("sched".to_string(), 50050)
        );
        assert!(scheduler_address("http://x:1").is_err());
        assert!(scheduler_address("df://x:notaport").is_err());
    }

    #[test]
    fn an_unreachable_scheduler_is_an_error_within_seconds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let start = std::time::Instant::now();
        let e = check_reachable(&format!("df://127.0.0.1:{port}"), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no scheduler answers"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(6));
    }

    #[test]
    fn write_parts_round_trips_through_the_physical_codec() {
        use datafusion::physical_plan::empty::EmptyExec;
        let spec = PartsSpec {
            dir: "/shared/out".into(),
            metadata: vec![("k".into(), "v".into())],
        };
        let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::new(
            datafusion::arrow::datatypes::Schema::empty(),
        )));
        let node: Arc<dyn ExecutionPlan> =
            Arc::new(WritePartsExec::new(Arc::clone(&input), spec.clone()));
        let codec = PhysicalCodec::default();
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = Vec::new();
        codec.try_encode(node, &mut buf, &converter).unwrap();
        assert_eq!(buf.first(), Some(&OURS));
        let ctx = SessionContext::new();
        let back = codec
            .try_decode(&buf, &[input], &ctx.task_ctx(), &converter)
            .unwrap();
        let back = back.downcast_ref::<WritePartsExec>().unwrap();
        assert_eq!(back.spec(), &spec);
    }
}
