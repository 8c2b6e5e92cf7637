//! The crate's error type for whole tables, files and jobs. The SQL functions report
//! `DataFusionError`s; this type adds the layer name and the kind (schema, data, options), and
//! converts into a `DataFusionError` in one place.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::options::OptionError;

/// An arrowquant error outside a SQL function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The table does not have the columns of a weight table (DESIGN.md §1).
    #[error("{0}")]
    Schema(String),
    /// A row's data cannot be quantized (NaN, wrong shape, …); names the layer when known.
    #[error("{0}")]
    Data(String),
    /// Bad options that are not one option's value (paths, an option against the table).
    #[error("{0}")]
    Config(String),
    /// One option's bad value, from [`crate::options`].
    #[error(transparent)]
    Option(#[from] OptionError),
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
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error about `path`, for `map_err`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            Error::Arrow(e) => DataFusionError::ArrowError(Box::new(e), None),
            Error::Data(m) => DataFusionError::Execution(m),
            e @ (Error::Schema(_) | Error::Config(_) | Error::Option(_)) => {
                DataFusionError::Plan(e.to_string())
            }
            e @ Error::Io { .. } => DataFusionError::External(Box::new(e)),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
