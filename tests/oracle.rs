//! Oracle: `pprof-exporter inspect --format json` must equal `go tool pprof -top
//! -nodefraction=0` flat and cum for every function, exactly, on profiles captured from
//! real Go programs and on generated ones (inlining, recursion, labels, deep stacks);
//! and the table, with its default node fraction, lists what `go tool pprof -top` lists.

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

/// The flat and cum columns and the function name of a row of a `-top` table, whose
/// layout ours shares with pprof's: flat, flat%, sum%, cum, cum%, name.
fn top_row(line: &str) -> (&str, &str, String) {
    let mut cols = line.split_whitespace();
    let flat = cols.next().unwrap();
    let cum = cols.nth(2).unwrap();
    let name = cols.skip(1).collect::<Vec<_>>().join(" ");
    (flat, cum, name)
}

/// Runs `go tool pprof -top -nodefraction=0` and returns (total, function -> (flat, cum)).
fn pprof_top(go: &Path, file: &Path, index: &str, unit: &str, base: Option<&Path>) -> (i64, Table) {
    let (total, rows, dropped) = pprof_top_with(go, file, index, unit, base, &["-nodefraction=0"]);
    assert_eq!(dropped, 0, "pprof dropped nodes");
    (total, rows)
}

/// Runs `go tool pprof -top` with `extra` flags and returns (total, function -> (flat,
/// cum), nodes dropped).
fn pprof_top_with(
    go: &Path,
    file: &Path,
    index: &str,
    unit: &str,
    base: Option<&Path>,
    extra: &[&str],
) -> (i64, Table, usize) {
    let mut cmd = go_command(go);
    cmd.args(["tool", "pprof", "-top", "-edgefraction=0"])
        .args(extra)
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
    let mut dropped = 0;
    for line in text.lines() {
        // "Dropped 12 nodes (cum <= 34)"
        if let Some(rest) = line.strip_prefix("Dropped ") {
            if rest.contains(" nodes ") || rest.contains(" node ") {
                dropped = rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            continue;
        }
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
        let (flat, cum, name) = top_row(line);
        let (flat, cum) = (parse_value(flat), parse_value(cum));
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
    (total.unwrap_or(0), rows, dropped)
}

/// Runs our `inspect` with `args` on `file` (less `base`) and returns what it printed.
fn run_inspect(args: &[&str], file: &Path, base: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new(exporter_bin());
    cmd.arg("inspect").args(args).arg(file);
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs our `inspect --format json` and returns (sample type, unit, total, table).
fn inspect(file: &Path, index: &str, base: Option<&Path>) -> (String, String, i64, Table) {
    let out = run_inspect(&["--format", "json", "--sample-index", index], file, base);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
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

/// Runs our `inspect` table with its default node fraction and returns (function ->
/// (flat, cum), functions dropped).
fn inspect_table(file: &Path, index: &str, base: Option<&Path>) -> (Table, usize) {
    let text = String::from_utf8(run_inspect(&["--sample-index", index], file, base)).unwrap();
    let mut rows = Table::new();
    let mut dropped = 0;
    let mut in_table = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Dropped ") {
            assert!(rest.contains(" functions with |cum| < "), "{line}");
            dropped = rest.split_whitespace().next().unwrap().parse().unwrap();
            continue;
        }
        if line.trim_start().starts_with("flat") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let (flat, cum, name) = top_row(line);
        let (flat, cum) = (flat.parse().unwrap(), cum.parse().unwrap());
        assert!(rows.insert(name, (flat, cum)).is_none(), "listed twice");
    }
    (rows, dropped)
}

/// The table leaves out what `go tool pprof -top` leaves out by default (functions with
/// |cum| under 0.5 % of the total), says how many, and shows the rest as pprof does.
#[test]
fn default_table_drops_what_pprof_drops() {
    let Some(go) = oracle_go() else { return };
    let dir = tempdir("drop");
    let cfg = |kind, seed| SynthConfig {
        kind,
        seed,
        samples: 3_000,
        functions: 400,
        max_depth: 30,
    };
    let heap = dir.join("heap.pb.gz");
    let heap2 = dir.join("heap2.pb.gz");
    let goroutine = dir.join("goroutine.pb.gz");
    std::fs::write(&heap, to_gzip(&generate(&cfg(SynthKind::Heap, 5)))).unwrap();
    std::fs::write(&heap2, to_gzip(&generate(&cfg(SynthKind::Heap, 6)))).unwrap();
    std::fs::write(
        &goroutine,
        to_gzip(&generate(&cfg(SynthKind::Goroutine, 7))),
    )
    .unwrap();
    let cases: [(&Path, &str, &str, Option<&Path>); 5] = [
        (&heap, "inuse_space", "bytes", None),
        (&heap, "alloc_objects", "count", None),
        (&goroutine, "goroutine", "count", None),
        (&heap2, "inuse_space", "bytes", Some(&heap)),
        (&fixture("heap-go1.27.pb.gz"), "alloc_space", "bytes", None),
    ];
    let mut some_dropped = 0;
    for (file, index, unit, base) in cases {
        let what = format!("{} {index} base {base:?}", file.display());
        let (ours, our_dropped) = inspect_table(file, index, base);
        let (_, theirs, their_dropped) = pprof_top_with(&go, file, index, unit, base, &[]);
        assert_eq!(ours, theirs, "{what}: rows differ");
        assert_eq!(our_dropped, their_dropped, "{what}: dropped counts differ");
        assert!(!ours.is_empty(), "{what}: nothing shown");
        if our_dropped > 0 {
            some_dropped += 1;
        }
    }
    // The synthetic profiles spread their values over hundreds of functions.
    assert!(
        some_dropped >= 4,
        "only {some_dropped} cases dropped any function"
    );

    // JSON lists every function unless a fraction is given.
    let (_, all, _) = pprof_top_with(
        &go,
        &goroutine,
        "goroutine",
        "count",
        None,
        &["-nodefraction=0"],
    );
    let (_, shown, _) = pprof_top_with(&go, &goroutine, "goroutine", "count", None, &[]);
    assert!(shown.len() < all.len());
    let json = |args: &[&str]| {
        let out = run_inspect(&[&["--format", "json"], args].concat(), &goroutine, None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["functions"].as_array().unwrap().len()
    };
    assert_eq!(json(&[]), all.len());
    assert_eq!(json(&["--node-fraction", "0.005"]), shown.len());
}
