//! `read_gguf('model.gguf')`: a GGUF file as a weight table `layer_name, weights, shape,
//! ggml_type`, streamed tensor by tensor from a memory map; weights dequantized to float32 from
//! F32, F16, BF16, Q8_0, Q4_0 and the K-quants; `shape` outermost first, as in a weight table
//! (GGUF stores the dims innermost first).

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;
use datafusion::error::DataFusionError;

use crate::io::gguf::GgufModel;

/// The table function's SQL name.
pub(crate) const NAME: &str = "read_gguf";

/// `read_gguf('path')`: a GGUF file as a weight table.
#[derive(Debug, Default)]
pub struct ReadGguf;

impl TableFunctionImpl for ReadGguf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let path = super::literal_path(NAME, "a .gguf file", &args)?;
        let table = GgufModel::open(Path::new(&path))
            .and_then(|model| model.table())
            .map_err(|e| DataFusionError::Plan(format!("{NAME}: {e}")))?;
        Ok(Arc::new(table))
    }
}
