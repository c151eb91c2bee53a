//! Replays the fuzz corpus under plain `cargo test`: every seed the fuzzers start from
//! (the captured profiles, debug=1/debug=2 texts and `/proc` files in tests/fixtures)
//! and every input saved under tests/fixtures/fuzz/<target>/ (crashes and hangs the
//! fuzzers found, kept as regression inputs) goes through each fuzz target's code.
//! Cheap, and needs no cargo-fuzz: `scripts/fuzz` is the slow search, this is the
//! fast check that nothing it ever found comes back.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The seeds `scripts/fuzz` copies into the corpus, as (name, bytes).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let fixtures = root().join("tests/fixtures");
    let mut out = Vec::new();
    for p in files_under(&fixtures.join("profiles")) {
        let gz = std::fs::read(&p).unwrap();
        out.push((p.display().to_string(), gz.clone()));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        out.push((format!("{} (inflated)", p.display()), raw));
    }
    for dir in ["text", "proc"] {
        for p in files_under(&fixtures.join(dir)) {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn seeds_run_through_every_target() {
    let seeds = seeds();
    assert!(seeds.len() >= 15, "fixtures missing: {}", seeds.len());
    for (target, run) in harness::TARGETS {
        for (name, bytes) in &seeds {
            let start = Instant::now();
            run(bytes);
            // Every seed is a real payload of at most a few MB: seconds would mean a
            // super-linear path.
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{target} on {name} took {:?}",
                start.elapsed()
            );
        }
    }
}

/// Inputs the fuzzers found (crashes, hangs) and cases written by hand, one directory
/// per target. Each file must run to completion through its target.
#[test]
fn saved_inputs_replay_through_their_target() {
    let saved = root().join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for (target, run) in harness::TARGETS {
        for p in files_under(&saved.join(target)) {
            if p.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let start = Instant::now();
            run(&bytes);
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{target} on {} took {:?}",
                p.display(),
                start.elapsed()
            );
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} saved inputs");
}
