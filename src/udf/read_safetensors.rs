//! `read_safetensors('path')`: a `.safetensors` model (a file or a directory of shards) as a
//! weight table `layer_name, weights, shape, dtype`, streamed tensor by tensor.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;
use datafusion::error::DataFusionError;

use crate::io::safetensors::SafetensorsModel;

/// The table function's SQL name.
pub(crate) const NAME: &str = "read_safetensors";

/// `read_safetensors('path')`: a model file or a directory of shards as a weight table.
#[derive(Debug, Default)]
pub struct ReadSafetensors;

impl TableFunctionImpl for ReadSafetensors {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let path =
            super::literal_path(NAME, "a .safetensors file or a directory of shards", &args)?;
        let table = SafetensorsModel::open(Path::new(&path))
            .and_then(|model| model.table())
            .map_err(|e| DataFusionError::Plan(format!("{NAME}: {e}")))?;
        Ok(Arc::new(table))
    }
}
