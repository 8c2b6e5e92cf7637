//! The `arrowquant` command line (DESIGN.md §5), run by the Python package's console script.
//! Exit codes: 0 success, 1 data error, 2 usage error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Parser, Subcommand};
use datafusion::arrow::util::pretty::pretty_format_batches;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result};
use crate::io::parquet_source::total_rows;
use crate::job::{self, ConvertOptions, Progress, Report, runtime};
use crate::kernels::{Method, Scheme};
use crate::options::{self, DEFAULT_GROUP_SIZE, DEFAULT_SCHEME, Group};

/// Quantize neural-network weight tables stored as Parquet.
#[derive(Debug, Parser)]
#[command(name = "arrowquant", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize a model: a Parquet weight table into a Parquet table with a `q` column, a
    /// Hugging Face model directory into a compressed-tensors one (transformers, vLLM), or a
    /// GGUF into a quantized GGUF (llama.cpp).
    Convert(ConvertArgs),
    /// Turn a quantized Parquet table back into float32 weights.
    Dequantize {
        /// The quantized Parquet file or directory.
        input: PathBuf,
        /// The Parquet file to write.
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Run SQL with the arrowquant functions registered.
    Sql {
        /// The query (or queries, separated by `;`).
        query: Option<String>,
        /// Read the SQL from a file instead.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Register a Parquet file or directory as a table: NAME=PATH.
        #[arg(long = "table", value_parser = parse_table)]
        tables: Vec<(String, PathBuf)>,
        /// Run on the Ballista cluster whose scheduler is at df://HOST:PORT (the tables' paths
        /// must be readable by every executor).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Run a cluster's scheduler (Apache DataFusion Ballista) with the arrowquant functions.
    Scheduler {
        /// Where to listen, HOST:PORT.
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: std::net::SocketAddr,
        /// Seconds without a heartbeat before an executor is lost and its tasks run elsewhere.
        #[arg(long, default_value_t = 60)]
        executor_timeout: u64,
    },
    /// Run a cluster executor (Apache DataFusion Ballista) with the arrowquant functions.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long)]
        scheduler: String,
        /// Where shuffle files go.
        #[arg(long)]
        work_dir: PathBuf,
        /// Task slots (default: one per core).
        #[arg(long, default_value_t = 0)]
        concurrent_tasks: usize,
        /// The Arrow Flight address, HOST:PORT; gRPC listens on the next port.
        #[arg(long, default_value = "0.0.0.0:50051")]
        bind: std::net::SocketAddr,
        /// The gRPC port (default: the Flight port + 1).
        #[arg(long)]
        grpc_port: Option<u16>,
        /// The host name other machines reach this executor by (default: the bind address).
        #[arg(long)]
        external_host: Option<String>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = 10)]
        heartbeat: u64,
    },
    /// Import a .safetensors model as a Parquet weight table (float tensors widened to f32).
    Import {
        /// The .safetensors file, or a directory of shards.
        input: PathBuf,
        /// The Parquet file to write.
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// The bundled default job: make a sample model, import it, convert it, print the report.
    Demo {
        /// Where to put the sample model and the tables.
        #[arg(long, default_value = "arrowquant-demo")]
        dir: PathBuf,
        /// Size of the sample model relative to the default (about 220 MB of float32).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// The scheme to convert to.
        #[arg(long, default_value = "int8", value_parser = parse_scheme)]
        scheme: Scheme,
    },
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// The Parquet weight table (a file or a directory of them), a Hugging Face model directory
    /// (config.json + *.safetensors), or a .gguf file.
    input: PathBuf,
    /// The Parquet file, model directory or .gguf file to write.
    output: PathBuf,
    /// What to write: `parquet` (a q table; the default for Parquet input) or
    /// `compressed-tensors` (the default for a model directory). GGUF follows from `.gguf`.
    #[arg(long, value_parser = ["parquet", "compressed-tensors"])]
    format: Option<String>,
    /// compressed-tensors: quantize the 2-D weights whose name matches this glob although they
    /// stay dense by default (embeddings, lm_head) (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// compressed-tensors from a q table (Parquet): the original model directory, whose
    /// config.json and tokenizer files the output gets.
    #[arg(long)]
    config_from: Option<PathBuf>,
    /// compressed-tensors: the largest shard, e.g. 5GB (the default), 500MB.
    #[arg(long, value_parser = parse_bytes)]
    max_shard_size: Option<usize>,
    /// The scheme: int8, int8_asym, int4, int4_asym, int2, int2_asym, int8_zp, int4_zp, int2_zp,
    /// q8_0, q4_0, q2_k … q6_k.
    #[arg(long, value_parser = parse_scheme, required_unless_present_any = ["min_cosine", "preset", "types"])]
    scheme: Option<Scheme>,
    /// Elements per scale (0: one scale per tensor). Default 128.
    #[arg(long, conflicts_with = "per_channel", allow_negative_numbers = true, value_parser = parse_group_size)]
    group_size: Option<Group>,
    /// One scale per output channel (groups of shape[-1]).
    #[arg(long)]
    per_channel: bool,
    /// How each group's scale is chosen: rtn (the default: round to nearest over the range;
    /// ggml's reference encoders, byte-identical to llama-quantize) or search (the linear
    /// schemes' scale, min or zero point of least squared error, and better q4_k blocks in
    /// ggml's layout; slower).
    #[arg(long, default_value = "rtn", value_parser = parse_method)]
    method: Method,
    /// Keep layers whose name matches this glob unquantized (repeatable), e.g. '*norm*'.
    #[arg(long)]
    exclude: Vec<String>,
    /// Per layer, the narrowest of int2/int4/int8 whose cosine similarity reaches this target
    /// (instead of one --scheme for all), e.g. 0.995.
    #[arg(long)]
    min_cosine: Option<f64>,
    /// GGUF in and out: llama-quantize's preset (Q8_0, Q4_0, Q4_K_S, Q4_K_M, Q5_K_M, Q6_K),
    /// its per-tensor rules run as the SQL of sql/llama_presets.sql.
    #[arg(long, conflicts_with = "types")]
    preset: Option<String>,
    /// GGUF in and out: a SQL file whose query over `tensors(layer_name, shape)` and
    /// `params(n_layers, n_head, n_head_kv, n_expert, arch)` returns `layer_name, type`.
    #[arg(long)]
    types: Option<PathBuf>,
    /// GGUF: quantize tensors that are already quantized (dequantized first).
    #[arg(long)]
    allow_requantize: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run on the Ballista cluster whose scheduler is at df://HOST:PORT: OUTPUT is a
    /// directory every executor writes its parts into (a shared path).
    #[arg(long)]
    cluster: Option<String>,
}

fn parse_scheme(s: &str) -> std::result::Result<Scheme, String> {
    options::parse_scheme(s).map_err(|e| e.message)
}

fn parse_method(s: &str) -> std::result::Result<Method, String> {
    options::parse_method(s).map_err(|e| e.message)
}

fn parse_group_size(s: &str) -> std::result::Result<Group, String> {
    let n: i64 = s
        .parse()
        .map_err(|_| format!("expected an integer, got '{s}'"))?;
    options::parse_group_size(n).map_err(|e| e.message)
}

fn parse_bytes(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("expected a size like 5GB or 500MB, got '{s}'"))?;
    let mult: usize = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => return Err(format!("expected a size like 5GB or 500MB, got '{s}'")),
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("expected a positive size, got '{s}'"))
}

fn parse_table(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), path.into()))
        }
        _ => Err(format!("expected NAME=PATH, got '{s}'")),
    }
}

/// A progress bar on stderr when it is a terminal; nothing otherwise. It counts rows (layers),
/// and says how many bytes of float32 weights they held.
struct Bar {
    bar: ProgressBar,
    what: String,
    bytes: AtomicU64,
}

impl Bar {
    fn new(rows: u64, what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} layers, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(what.to_string());
        Self {
            bar,
            what: what.to_string(),
            bytes: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn advance(&self, rows: u64, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > 0 {
            self.bar
                .set_message(format!("{} ({})", self.what, HumanBytes(total)));
        }
        self.bar.inc(rows);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Whether `convert` writes compressed-tensors: asked with `--format`, or a model directory in.
fn is_compressed_tensors(args: &ConvertArgs) -> bool {
    match args.format.as_deref() {
        Some(f) => f == "compressed-tensors",
        None => args.input.join("config.json").is_file(),
    }
}

fn group_of(args: &ConvertArgs) -> Group {
    if args.per_channel {
        Group::PerChannel
    } else {
        args.group_size.unwrap_or(Group::Size(DEFAULT_GROUP_SIZE))
    }
}

/// `convert MODEL_DIR OUT_DIR [--format compressed-tensors]`.
fn convert_compressed_tensors(args: &ConvertArgs) -> Result<()> {
    if args.preset.is_some() || args.types.is_some() || args.allow_requantize {
        return Err(Error::Config(
            "--preset, --types and --allow-requantize are for GGUF files (IN.gguf OUT.gguf)".into(),
        ));
    }
    if args.report.is_some() {
        return Err(Error::Config(
            "--report is for Parquet q tables; compressed-tensors prints what it wrote".into(),
        ));
    }
    let opts = job::CompressedTensorsOptions {
        quantize: options::QuantizeOptions {
            scheme: args.scheme.unwrap_or(DEFAULT_SCHEME),
            group: group_of(args),
            min_cosine: args.min_cosine,
            threads: 0,
            method: args.method,
        },
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        overwrite: args.overwrite,
        max_shard_bytes: args.max_shard_size.unwrap_or(job::DEFAULT_MAX_SHARD_BYTES),
    };
    let bar = Bar::new(0, "convert");
    let report = if args.input.is_dir() && args.input.join("config.json").is_file() {
        if args.config_from.is_some() {
            return Err(Error::Config(
                "--config-from is for a q table in; a model directory brings its own config.json"
                    .into(),
            ));
        }
        job::convert_compressed_tensors(&args.input, &args.output, &opts, &bar)?
    } else if let Some(model_dir) = &args.config_from {
        runtime()?.block_on(job::export_q_table(
            &args.input,
            &args.output,
            model_dir,
            &opts,
            &bar,
        ))?
    } else if args.input.is_dir() {
        job::convert_compressed_tensors(&args.input, &args.output, &opts, &bar)?
    } else {
        return Err(Error::Config(format!(
            "{}: a q table to compressed-tensors needs the original model's config: --config-from MODEL_DIR",
            args.input.display()
        )));
    };
    drop(bar);
    for (module, scheme, [rows, cols]) in &report.quantized {
        say(&format!("{module:<48} [{rows}, {cols}] -> {scheme}\n"));
    }
    say(&format!(
        "wrote {} quantized and {} dense tensors to {} ({})\n",
        report.quantized.len(),
        report.dense.len(),
        args.output.display(),
        report.shards.join(", ")
    ));
    Ok(())
}

fn convert(args: &ConvertArgs) -> Result<Report> {
    if !args.include.is_empty() || args.max_shard_size.is_some() || args.config_from.is_some() {
        return Err(Error::Config(
            "--include, --max-shard-size and --config-from are for compressed-tensors output (--format compressed-tensors)".into(),
        ));
    }
    if args.preset.is_some() || args.types.is_some() || args.allow_requantize {
        return Err(Error::Config(
            "--preset, --types and --allow-requantize are for GGUF files (IN.gguf OUT.gguf)".into(),
        ));
    }
    let group = group_of(args);
    let opts = ConvertOptions {
        scheme: args.scheme.unwrap_or(DEFAULT_SCHEME),
        group,
        exclude: args.exclude.clone(),
        overwrite: args.overwrite,
        min_cosine: args.min_cosine,
        method: args.method,
    };
    opts.quantize().validate()?;
    let report = match &args.cluster {
        Some(url) => runtime()?.block_on(crate::cluster::convert(
            url,
            &args.input,
            &args.output,
            &opts,
        ))?,
        None => {
            let bar = Bar::new(total_rows(&args.input).unwrap_or(0), "convert");
            runtime()?.block_on(job::convert(&args.input, &args.output, &opts, &bar))?
        }
    };
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(path, json).map_err(Error::io(path))?;
    }
    Ok(report)
}

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `convert IN.gguf OUT.gguf --preset P | --types FILE.sql`.
fn convert_gguf(args: &ConvertArgs) -> Result<()> {
    if !(is_gguf(&args.input) && is_gguf(&args.output)) {
        return Err(Error::Config(format!(
            "GGUF converts to GGUF: {} -> {} (name both *.gguf)",
            args.input.display(),
            args.output.display()
        )));
    }
    let rules = match (&args.preset, &args.types) {
        (Some(p), _) => job::TypeRules::Preset(p.clone()),
        (None, Some(f)) => job::TypeRules::Sql(std::fs::read_to_string(f).map_err(Error::io(f))?),
        (None, None) => {
            return Err(Error::Config(
                "GGUF: give --preset (Q8_0, Q4_0, Q4_K_S, Q4_K_M, Q5_K_M, Q6_K) or --types FILE.sql"
                    .into(),
            ));
        }
    };
    let opts = job::GgufOptions {
        rules,
        allow_requantize: args.allow_requantize,
        overwrite: args.overwrite,
        threads: 0,
        method: args.method,
    };
    let bar = Bar::new(0, "convert");
    let report = runtime()?.block_on(job::convert_gguf(&args.input, &args.output, &opts, &bar))?;
    drop(bar);
    for (name, from, to) in &report.tensors {
        say(&format!("{name:<40} {from:>6} -> {to}\n"));
    }
    say(&format!(
        "wrote {} tensors to {} (general.file_type {})\n",
        report.tensors.len(),
        args.output.display(),
        report.file_type
    ));
    Ok(())
}

fn demo(dir: &Path, scale: f64, scheme: Scheme) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let model = dir.join("model.safetensors");
    let table = dir.join("model.parquet");
    let quantized = dir.join(format!("model.{}.parquet", scheme.name()));
    say(&format!(
        "Writing a sample model to {} ...\n",
        model.display()
    ));
    job::write_demo_model(&model, scale)?;
    say(&format!(
        "Importing it as a weight table: {} ...\n",
        table.display()
    ));
    let imported = job::import_safetensors(&model, &table, true, &())?;
    for (name, dtype) in &imported.skipped {
        say(&format!("  skipped {name} ({dtype}: not a float tensor)\n"));
    }
    say(&format!(
        "Converting to {scheme} per channel, norms kept as float32: {} ...\n\n",
        quantized.display()
    ));
    let opts = ConvertOptions {
        scheme,
        group: if scheme.block_size().is_some() {
            Group::Size(32)
        } else {
            Group::PerChannel
        },
        exclude: vec!["*norm*".into()],
        overwrite: true,
        min_cosine: None,
        method: Method::Rtn,
    };
    let bar = Bar::new(total_rows(&table).unwrap_or(0), "convert");
    let report = runtime()?.block_on(job::convert(&table, &quantized, &opts, &bar))?;
    drop(bar);
    say(&report.to_text()?);
    say(&format!(
        "\nTry: arrowquant sql --table q={} \"SELECT layer_name, q['scheme'], q['scales'][1] FROM q LIMIT 3\"\n",
        quantized.display()
    ));
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(args)
            if args.cluster.is_some()
                && (is_gguf(&args.input)
                    || is_gguf(&args.output)
                    || is_compressed_tensors(&args)) =>
        {
            return Err(Error::Config(
                "--cluster converts Parquet weight tables into a directory of Parquet parts; \
                 GGUF and compressed-tensors outputs are written on one machine"
                    .into(),
            ));
        }
        Command::Convert(args) if is_gguf(&args.input) || is_gguf(&args.output) => {
            convert_gguf(&args)?
        }
        Command::Convert(args) if is_compressed_tensors(&args) => {
            convert_compressed_tensors(&args)?
        }
        Command::Convert(args) => {
            let report = convert(&args)?;
            say(&report.to_text()?);
        }
        Command::Dequantize {
            input,
            output,
            overwrite,
        } => {
            let bar = Bar::new(total_rows(&input).unwrap_or(0), "dequantize");
            runtime()?.block_on(job::dequantize(&input, &output, overwrite, &bar))?;
        }
        Command::Sql {
            query,
            file,
            tables,
            cluster,
        } => {
            let sql = match (query, file) {
                (Some(q), None) => q,
                (None, Some(f)) => std::fs::read_to_string(&f).map_err(Error::io(&f))?,
                _ => return Err(Error::Config("sql: give either a QUERY or -f FILE".into())),
            };
            let results = match cluster {
                Some(url) => runtime()?.block_on(crate::cluster::run_sql(&url, &sql, &tables))?,
                None => runtime()?.block_on(job::run_sql(&sql, &tables))?,
            };
            for batches in results {
                let text = pretty_format_batches(&batches)?;
                say(&format!("{text}\n"));
            }
        }
        Command::Import {
            input,
            output,
            overwrite,
        } => {
            let report =
                job::import_safetensors(&input, &output, overwrite, &Bar::new(0, "import"))?;
            say(&format!(
                "imported {} tensors into {}\n",
                report.imported,
                output.display()
            ));
            for (name, dtype) in report.skipped {
                say(&format!("skipped {name} ({dtype}: not a float tensor)\n"));
            }
        }
        Command::Demo { dir, scale, scheme } => demo(&dir, scale, scheme)?,
        Command::Scheduler {
            bind,
            executor_timeout,
        } => runtime()?.block_on(crate::cluster::run_scheduler(
            &crate::cluster::SchedulerOptions {
                bind,
                executor_timeout,
            },
        ))?,
        Command::Executor {
            scheduler,
            work_dir,
            concurrent_tasks,
            bind,
            grpc_port,
            external_host,
            heartbeat,
        } => runtime()?.block_on(crate::cluster::run_executor(
            &crate::cluster::ExecutorOptions {
                scheduler,
                bind,
                grpc_port,
                external_host,
                work_dir,
                concurrent_tasks,
                heartbeat,
            },
        ))?,
    }
    Ok(())
}

/// Runs the command line with `args` (the program name first); returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(Error::Option(e)) => {
            eprintln!("arrowquant: error: {}: {}", e.option.flag(), e.message);
            2
        }
        Err(e) => {
            eprintln!("arrowquant: error: {e}");
            match e {
                Error::Config(_) => 2,
                _ => 1,
            }
        }
    }
}
