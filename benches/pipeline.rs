//! Criterion benchmarks of the pipeline stages on synthetic profiles: inflate, decode,
//! aggregate (by function, by stack) and encode (families to exposition text).
//!
//! The profiles are the ones `scripts/bench` compares with `go tool pprof`: a heap
//! profile of 200,000 samples over 20,000 functions, stacks up to 36 deep, and a
//! goroutine profile of 20,000 distinct stacks. `BENCH_SCALE` (a divisor, default 1
//! under `cargo bench`, 100 under `cargo test`) shrinks both.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pprof_exporter::aggregate::functions::FunctionAccumulator;
use pprof_exporter::aggregate::{self, HeapSummary, Limits};
use pprof_exporter::decode::profile::{DecodeLimits, pb};
use pprof_exporter::decode::{self, decode_profile, stream};
use pprof_exporter::expose;
use pprof_exporter::synth::{SynthConfig, SynthKind, generate, to_gzip};

struct Input {
    name: &'static str,
    gzip: Vec<u8>,
    raw: Vec<u8>,
}

fn input(name: &'static str, kind: SynthKind, samples: usize, functions: usize) -> Input {
    let gzip = to_gzip(&generate(&SynthConfig {
        kind,
        seed: 1,
        samples,
        functions,
        max_depth: 36,
    }));
    let raw = decode::gunzip_bounded(&gzip, u64::MAX)
        .expect("generated profiles inflate")
        .into_owned();
    Input { name, gzip, raw }
}

fn inputs() -> (Input, Input) {
    // `cargo test --all-targets` runs each benchmark once, unoptimised, without
    // `--bench`: a hundredth of the size keeps that smoke check cheap.
    let default = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        100
    };
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(default);
    (
        input(
            "heap-200k",
            SynthKind::Heap,
            200_000 / scale,
            20_000 / scale,
        ),
        input(
            "goroutine-20k",
            SynthKind::Goroutine,
            20_000 / scale,
            20_000 / scale,
        ),
    )
}

fn pipeline(c: &mut Criterion) {
    let (heap, goroutine) = inputs();
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    for p in [&heap, &goroutine] {
        g.bench_function(format!("inflate/{}", p.name), |b| {
            b.iter(|| decode::gunzip_bounded(black_box(&p.gzip), u64::MAX).map(|r| r.len()))
        });
        g.bench_function(format!("decode/{}", p.name), |b| {
            b.iter(|| decode_profile(black_box(&p.raw), limits).map(|p| p.sample_count()))
        });
        g.bench_function(format!("decode-prost-messages-only/{}", p.name), |b| {
            use prost::Message;
            b.iter(|| pb::Profile::decode(black_box(p.raw.as_slice())).map(|p| p.sample.len()))
        });
        // The top-level walk and the function and location tables, without the samples.
        g.bench_function(format!("open/{}", p.name), |b| {
            b.iter(|| stream::open(black_box(&p.raw)).map(|d| d.loc_frames.len()))
        });
        // What `inspect` does: one sample type, samples aggregated straight off the wire.
        g.bench_function(format!("inspect-stream/{}", p.name), |b| {
            b.iter(|| {
                let d = stream::open(black_box(&p.raw)).expect("decodes");
                let index = d.default_index().unwrap_or(0);
                let mut acc = FunctionAccumulator::new(d.functions.len(), &[index]);
                d.samples(limits, |s| acc.add(s.values, s.frames.iter().copied()))
                    .expect("decodes");
                acc.finish(&d.functions).rows.len()
            })
        });
    }

    let heap_profile = decode_profile(&heap.raw, limits).expect("decodes");
    let goroutine_profile = decode_profile(&goroutine.raw, limits).expect("decodes");
    g.bench_function("aggregate/heap-summary/heap-200k", |b| {
        b.iter(|| HeapSummary::from_profile(black_box(&heap_profile)).map(|s| s.table.rows.len()))
    });
    g.bench_function("aggregate/by-stack/goroutine-20k", |b| {
        b.iter(|| {
            aggregate::by_stack(black_box(&goroutine_profile), &[])
                .stacks
                .len()
        })
    });

    let summary = HeapSummary::from_profile(&heap_profile).expect("heap profile");
    let stacks = aggregate::by_stack(&goroutine_profile, &[]);
    let limits = Limits::default();
    g.bench_function("families/heap-200k", |b| {
        b.iter(|| black_box(&summary).families(&limits).0.len())
    });
    g.bench_function("families/goroutine-20k", |b| {
        b.iter(|| {
            aggregate::goroutine_families(black_box(&stacks), &[], &limits)
                .0
                .len()
        })
    });
    let (mut families, _) = summary.families(&limits);
    families.extend(aggregate::goroutine_families(&stacks, &[], &limits).0);
    g.bench_function("encode/heap+goroutine-families", |b| {
        b.iter(|| expose::encode("http://127.0.0.1:6060", black_box(&families)).len())
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
