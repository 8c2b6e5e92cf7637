//! `arrowquant sql`: run SQL with the functions registered and Parquet files as tables.

use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::ParquetReadOptions;

use crate::error::{Error, Result};

/// Runs every statement of `sql` with the functions registered and `tables` (name → Parquet
/// file or directory) available; returns the results of each statement that produced rows.
/// Every table's footers are read first, so an unreadable file is an error naming it.
pub async fn run_sql(sql: &str, tables: &[(String, PathBuf)]) -> Result<Vec<Vec<RecordBatch>>> {
    let ctx = SessionContext::new();
    crate::register_all(&ctx);
    for (name, path) in tables {
        crate::io::parquet_source::total_rows(path)?;
        let path = path.display().to_string();
        ctx.register_parquet(name, &path, ParquetReadOptions::default())
            .await
            .map_err(|e| Error::Data(format!("{path}: cannot read as Parquet: {e}")))?;
    }
    run_statements(&ctx, sql).await
}

/// Runs every statement of `sql` on `ctx`; returns the results of each that produced rows.
pub async fn run_statements(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<RecordBatch>>> {
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
