//! The crate's error type for whole tables, files and jobs. The SQL functions report
//! `DataFusionError`s; this type adds the layer name and the kind (schema, data, options).

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// An arrowquant error outside a SQL function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The table does not have the columns of a weight table (DESIGN.md §1).
    #[error("{0}")]
    Schema(String),
    /// A row's data cannot be quantized (NaN, wrong shape, …); names the layer when known.
    #[error("{0}")]
    Data(String),
    /// Bad options (unknown scheme, negative group size, …).
    #[error("{0}")]
    Config(String),
    /// An Arrow error.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// A DataFusion error.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A file system error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
