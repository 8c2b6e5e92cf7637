//! Criterion benchmarks of every kernel: each scheme per tensor, in groups of 32 and 128, and per
//! channel, on 64 MB of float32, beside the speed-of-light pass (read f32, write i8) measured in
//! the same run. `cargo bench --bench kernels [-- FILTER]`; throughput is GB/s of f32 input.

#![allow(clippy::unwrap_used)] // a benchmark has nothing to recover from
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use arrowquant::kernels::{
    QuantizedBuffers, QuantizedRef, Scheme, dequantize_into, error_sums, quantize_into,
    quantize_into_parallel, speed_of_light, stored_group_size, weight_entropy,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 4096;
const COLS: usize = 4096; // 16 M elements = 64 MB; per channel = groups of COLS

fn weights() -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..ROWS * COLS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = weights();
    let mut g = c.benchmark_group("kernels");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut sol = vec![0i8; x.len()];
    g.bench_function("speed_of_light_f32_to_i8", |b| {
        b.iter(|| speed_of_light(black_box(&x), &mut sol))
    });
    let mut out = QuantizedBuffers::default();
    for scheme in Scheme::ALL {
        let groups: &[(&str, usize)] = if scheme.block_size().is_some() {
            &[("block32", 32)]
        } else {
            &[
                ("per_tensor", 0),
                ("group32", 32),
                ("group128", 128),
                ("per_channel", COLS),
            ]
        };
        for &(label, group) in groups {
            g.bench_with_input(
                BenchmarkId::new(scheme.name(), label),
                &group,
                |b, &group| {
                    b.iter(|| {
                        out.codes.clear();
                        out.scales.clear();
                        out.mins.clear();
                        quantize_into(black_box(&x), scheme, group, &mut out).unwrap();
                    })
                },
            );
        }
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let group = scheme.block_size().unwrap_or(128);
        g.bench_with_input(
            BenchmarkId::new(scheme.name(), format!("group{group}_{threads}threads")),
            &group,
            |b, &group| {
                b.iter(|| {
                    out.codes.clear();
                    out.scales.clear();
                    out.mins.clear();
                    quantize_into_parallel(black_box(&x), scheme, group, &mut out, threads)
                        .unwrap();
                })
            },
        );
    }
    for scheme in [Scheme::Int8, Scheme::Int4, Scheme::Q4_0] {
        let mut q = QuantizedBuffers::default();
        quantize_into(&x, scheme, 128, &mut q).unwrap();
        let r = QuantizedRef {
            scheme,
            group_size: stored_group_size(scheme, 128),
            numel: x.len(),
            codes: &q.codes,
            scales: &q.scales,
            mins: None,
        };
        let mut y = Vec::with_capacity(x.len());
        g.bench_function(BenchmarkId::new("dequantize", scheme.name()), |b| {
            b.iter(|| {
                y.clear();
                dequantize_into(black_box(&r), &mut y).unwrap();
            })
        });
    }
    // The report's passes: entropy of the weights, and the error sums against a reconstruction.
    g.bench_function("weight_entropy_256_bins", |b| {
        b.iter(|| weight_entropy(black_box(&x), 256).unwrap())
    });
    let y: Vec<f32> = x.iter().map(|&v| v * 0.999).collect();
    g.bench_function("error_sums", |b| b.iter(|| error_sums(black_box(&x), &y)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
