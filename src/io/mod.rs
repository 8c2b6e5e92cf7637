//! Files in and out, as Arrow batches: the jobs' Parquet input read page by page, `.safetensors`
//! models memory-mapped tensor by tensor, GGUF and compressed-tensors models out, and Parquet
//! output that appears atomically.

pub mod compressed_tensors;
pub mod fast_parquet;
pub mod gguf;
pub mod output;
pub mod parquet_source;
pub mod safetensors;
