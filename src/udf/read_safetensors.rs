//! `read_safetensors('path')`: a `.safetensors` model (a file or a directory of shards) as a
//! weight table `layer_name, weights, shape, dtype`, streamed tensor by tensor.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;

use crate::io::safetensors::SafetensorsModel;

/// The table function's SQL name.
pub(crate) const NAME: &str = "read_safetensors";

/// `read_safetensors('path')`: a model file or a directory of shards as a weight table.
#[derive(Debug, Default)]
pub struct ReadSafetensors;

impl TableFunctionImpl for ReadSafetensors {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let path = match args.exprs() {
            [
                Expr::Literal(
                    ScalarValue::Utf8(Some(p))
                    | ScalarValue::LargeUtf8(Some(p))
                    | ScalarValue::Utf8View(Some(p)),
                    _,
                ),
            ] => p.clone(),
            other => {
                return plan_err!(
                    "'{NAME}' takes 1 argument, a string literal path (a .safetensors file or a \
                     directory of shards), got {} arguments",
                    other.len()
                );
            }
        };
        let table = SafetensorsModel::open(Path::new(&path))
            .and_then(|model| model.table())
            .map_err(|e| DataFusionError::Plan(format!("{NAME}: {e}")))?;
        Ok(Arc::new(table))
    }
}
