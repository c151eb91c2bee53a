//! Oracle: `pprof-exporter inspect --format json` must equal `go tool pprof -top
//! -nodefraction=0` flat and cum for every function, exactly, on profiles captured from
//! real Go programs and on generated ones (inlining, recursion, labels, deep stacks).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pprof_exporter::synth::{SynthConfig, SynthKind, generate, to_gzip};

type Table = BTreeMap<String, (i64, i64)>;

/// The go command used as the oracle: Go 1.27's pprof, else Go 1.19's.
fn oracle_go() -> Option<PathBuf> {
    Go::V127.bin().or_else(|| Go::V119.bin())
}

fn parse_value(s: &str) -> i64 {
    s.trim_end_matches('B')
        .parse()
        .unwrap_or_else(|_| panic!("unparseable pprof value {s:?}"))
}

/// Runs `go tool pprof -top` and returns (total, function -> (flat, cum)).
fn pprof_top(go: &Path, file: &Path, index: &str, unit: &str, base: Option<&Path>) -> (i64, Table) {
    let mut cmd = go_command(go);
    cmd.args([
        "tool",
        "pprof",
        "-top",
        "-nodefraction=0",
        "-edgefraction=0",
    ])
    .arg(format!("-sample_index={index}"));
    if unit == "bytes" {
        // Exact byte counts instead of human-scaled ones (e.g. 4096kB).
        cmd.arg("-unit=B");
    }
    if let Some(b) = base {
        cmd.arg("-base").arg(b);
    }
    let out = cmd.arg(file).output().expect("run go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut total = None;
    let mut rows = Table::new();
    let mut in_table = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Showing nodes accounting for ") {
            // "X, 100% of TOTAL total"
            let t = rest
                .split(" of ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            total = Some(parse_value(t));
            continue;
        }
        if line.trim_start().starts_with("flat") {
            in_table = true;
            continue;
        }
        if !in_table || line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split_whitespace();
        let flat = parse_value(cols.next().unwrap());
        let cum = parse_value(cols.nth(2).unwrap());
        let name = cols.skip(1).collect::<Vec<_>>().join(" ");
        // Display-only suffixes pprof adds for inlined calls.
        let name = name
            .strip_suffix(" (partial-inline)")
            .or_else(|| name.strip_suffix(" (inline)"))
            .unwrap_or(&name)
            .to_owned();
        assert!(
            rows.insert(name.clone(), (flat, cum)).is_none(),
            "pprof listed {name} twice"
        );
    }
    assert!(!text.contains("Dropped"), "pprof dropped nodes:\n{text}");
    (total.unwrap_or(0), rows)
}

/// Runs our `inspect --format json` and returns (sample type, unit, total, table).
fn inspect(file: &Path, index: &str, base: Option<&Path>) -> (String, String, i64, Table) {
    let mut cmd = Command::new(exporter_bin());
    cmd.args(["inspect", "--format", "json", "--sample-index", index])
        .arg(file);
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = v.as_object().unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "unexpected keys {keys:?}");
    let mut rows = Table::new();
    let mut last: Option<(u64, u64)> = None;
    for f in obj["functions"].as_array().unwrap() {
        let fo = f.as_object().unwrap();
        assert_eq!(fo.len(), 3);
        let (flat, cum) = (fo["flat"].as_i64().unwrap(), fo["cum"].as_i64().unwrap());
        let key = (flat.unsigned_abs(), cum.unsigned_abs());
        if let Some(prev) = last {
            assert!(
                prev.0 > key.0 || (prev.0 == key.0 && prev.1 >= key.1),
                "not sorted by |flat|, |cum|"
            );
        }
        last = Some(key);
        rows.insert(fo["function"].as_str().unwrap().to_owned(), (flat, cum));
    }
    (
        obj["sample_type"].as_str().unwrap().to_owned(),
        obj["unit"].as_str().unwrap().to_owned(),
        obj["total"].as_i64().unwrap(),
        rows,
    )
}

fn assert_same(go: &Path, file: &Path, index: &str, base: Option<&Path>) -> usize {
    let (sample_type, unit, total, ours) = inspect(file, index, base);
    assert_eq!(sample_type, index);
    let (pprof_total, theirs) = pprof_top(go, file, index, &unit, base);
    for (name, v) in &theirs {
        assert_eq!(
            ours.get(name),
            Some(v),
            "{}: {index}: function {name} differs",
            file.display()
        );
    }
    for name in ours.keys() {
        assert!(
            theirs.contains_key(name),
            "{}: {index}: we list {name}, pprof does not",
            file.display()
        );
    }
    if base.is_none() {
        assert_eq!(
            total,
            pprof_total,
            "{}: {index}: totals differ",
            file.display()
        );
    }
    assert!(
        !theirs.is_empty(),
        "{}: {index}: empty comparison proves nothing",
        file.display()
    );
    theirs.len()
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/profiles").join(name)
}

const HEAP_TYPES: [&str; 4] = [
    "alloc_objects",
    "alloc_space",
    "inuse_objects",
    "inuse_space",
];

#[test]
fn captured_heap_profiles_match_pprof() {
    let Some(go) = oracle_go() else { return };
    for v in ["go1.19", "go1.27"] {
        for index in HEAP_TYPES {
            let n = assert_same(&go, &fixture(&format!("heap-{v}.pb.gz")), index, None);
            assert!(n > 10, "{v} {index}: only {n} functions");
        }
    }
}

#[test]
fn captured_goroutine_profiles_match_pprof() {
    let Some(go) = oracle_go() else { return };
    for f in [
        "goroutine-go1.19.pb.gz",
        "goroutine-go1.27.pb.gz",
        "goroutineleak-go1.27.pb.gz",
    ] {
        let index = if f.starts_with("goroutineleak") {
            "goroutineleak"
        } else {
            "goroutine"
        };
        assert_same(&go, &fixture(f), index, None);
    }
}

#[test]
fn base_diff_matches_pprof() {
    let Some(go) = oracle_go() else { return };
    for index in HEAP_TYPES {
        assert_same(
            &go,
            &fixture("heap-go1.27-later.pb.gz"),
            index,
            Some(&fixture("heap-go1.27.pb.gz")),
        );
    }
    // Two generated profiles of the same shape with different values.
    let dir = tempdir("base");
    let a = dir.join("a.pb.gz");
    let b = dir.join("b.pb.gz");
    let cfg = |seed| SynthConfig {
        kind: SynthKind::Heap,
        seed,
        samples: 800,
        functions: 120,
        max_depth: 24,
    };
    std::fs::write(&a, to_gzip(&generate(&cfg(11)))).unwrap();
    std::fs::write(&b, to_gzip(&generate(&cfg(12)))).unwrap();
    for index in HEAP_TYPES {
        assert_same(&go, &b, index, Some(&a));
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = root()
        .join("target/test-tmp")
        .join(format!("oracle-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn generated_profiles_match_pprof() {
    let Some(go) = oracle_go() else { return };
    let dir = tempdir("gen");
    // The first and third hold enough samples for inspect to split them across
    // threads (more than two thousand).
    let cases = [
        (SynthKind::Heap, 1, 6_000, 400, 40),
        (SynthKind::Heap, 2, 500, 30, 64), // few functions, deep stacks: heavy recursion
        (SynthKind::Goroutine, 3, 3_000, 200, 30),
        (SynthKind::Goroutine, 4, 300, 20, 100),
    ];
    for (kind, seed, samples, functions, max_depth) in cases {
        let path = dir.join(format!("{kind:?}-{seed}.pb.gz"));
        let cfg = SynthConfig {
            kind,
            seed,
            samples,
            functions,
            max_depth,
        };
        std::fs::write(&path, to_gzip(&generate(&cfg))).unwrap();
        let indices: &[&str] = match kind {
            SynthKind::Heap => &HEAP_TYPES,
            SynthKind::Goroutine => &["goroutine"],
        };
        for index in indices {
            assert_same(&go, &path, index, None);
        }
    }
}
