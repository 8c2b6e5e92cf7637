//! Runs every `sql/*.slt` file against a fresh `SessionContext` with arrowquant registered.
//! `cargo test --test sqllogictests [-- NAME...]` runs the files whose names contain a NAME;
//! `-- --complete` rewrites the expected results from what the engine returns (review the diff).

use std::path::PathBuf;
use std::process::ExitCode;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqllogictest::{
    AsyncDB, DBOutput, DefaultColumnType, Runner, default_column_validator, default_normalizer,
    default_validator,
};

/// The database adapter: one `SessionContext` per file.
struct DataFusionDb {
    ctx: SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(DataFusionError);

fn format_batches(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| {
                        let s = f.value(r).to_string();
                        if s.is_empty() && c.is_valid(r) {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl AsyncDB for DataFusionDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await.map_err(DbError)?;
        let width = df.schema().fields().len();
        let batches = df.collect().await.map_err(DbError)?;
        let rows = format_batches(&batches).map_err(DbError)?;
        if width == 0 || (sql.trim_start().to_lowercase().starts_with("create") && rows.is_empty())
        {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "datafusion"
    }
}

fn new_context() -> SessionContext {
    // Two partitions, so multi-partition plans are exercised on any machine.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    arrowquant::register_all(&ctx);
    ctx
}

fn main() -> ExitCode {
    let complete = std::env::args().any(|a| a == "--complete");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "slt"));
    files.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    });
    files.sort();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let mut runner = Runner::new(|| async { Ok(DataFusionDb { ctx: new_context() }) });
        if complete {
            let result = runtime.block_on(runner.update_test_file(
                file,
                " ",
                default_validator,
                default_normalizer,
                default_column_validator,
            ));
            if let Err(e) = result {
                eprintln!("cannot complete {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
        let mut runner = Runner::new(|| async { Ok(DataFusionDb { ctx: new_context() }) });
        match runtime.block_on(runner.run_file_async(file)) {
            Ok(()) => {
                passed += 1;
                eprintln!("ok     {}", file.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("FAILED {}\n{e}\n", file.display());
            }
        }
    }
    eprintln!("sqllogictests: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
