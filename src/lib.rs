//! arrowquant: quantize neural-network weights stored as Arrow tables.
//!
//! Data flows one way, through layers that only use the ones below them:
//! - [`kernels`] (and [`mem`]): the pure core, `&[f32]` in, codes and scales out.
//! - [`options`]: the one options model (schemes, grouping) and its checks.
//! - [`array`]: weight tables and the `q` struct as Arrow arrays; the row loops.
//! - [`io`]: Parquet and `.safetensors` in, atomic Parquet out.
//! - [`udf`]: the DataFusion SQL functions, their `Expr` builders ([`udf::expr_fn`]) and
//!   [`register_all`].
//! - [`job`]: the streaming jobs, built as DataFusion plans of those expressions; [`cli`]: the
//!   `arrowquant` command line over them; `python`: the bindings.

pub mod array;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod io;
pub mod job;
pub mod kernels;
pub mod mem;
pub mod options;
pub mod udf;

#[cfg(feature = "python")]
mod python;

pub use udf::{functions, register_all};
