//! Writes a synthetic pprof profile (gzip protobuf) for tests and benchmarks.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use pprof_exporter::synth::{SynthConfig, SynthKind, generate, to_gzip};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Heap,
    Goroutine,
}

/// Generate a seeded synthetic heap or goroutine profile.
#[derive(Debug, Parser)]
#[command(name = "pprof-synth", version)]
struct Args {
    /// Profile kind.
    #[arg(long, value_enum, default_value = "heap")]
    kind: Kind,
    /// Samples (stacks).
    #[arg(long, default_value = "10000")]
    samples: usize,
    /// Distinct functions.
    #[arg(long, default_value = "1000")]
    functions: usize,
    /// Deepest stack, in locations.
    #[arg(long = "max-depth", default_value = "32")]
    max_depth: usize,
    /// PRNG seed.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Output file.
    #[arg(short, long)]
    output: std::path::PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = SynthConfig {
        kind: match args.kind {
            Kind::Heap => SynthKind::Heap,
            Kind::Goroutine => SynthKind::Goroutine,
        },
        seed: args.seed,
        samples: args.samples,
        functions: args.functions,
        max_depth: args.max_depth,
    };
    match std::fs::write(&args.output, to_gzip(&generate(&cfg))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pprof-synth: {}: {e}", args.output.display());
            ExitCode::FAILURE
        }
    }
}
