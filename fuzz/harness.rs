//! What each fuzz target does with one input. Shared by the cargo-fuzz targets in
//! `fuzz_targets/` and by `tests/faults_corpus.rs`, which replays the seed corpus and
//! every saved crash input under plain `cargo test`, so both run exactly this code.
//!
//! Each function feeds the bytes through a parser and everything downstream of it, as
//! the exporter would, and checks the invariants that must hold for any input: no
//! panic (including arithmetic overflow, since fuzz and test builds keep debug
//! assertions), and output bounded by the configured limits.
#![allow(dead_code)]

use pprof_exporter::aggregate::{self, Family, HeapSummary, Limits};
use pprof_exporter::decode::profile::DecodeLimits;
use pprof_exporter::decode::{self, goroutine_text, memstats};
use pprof_exporter::process;
use pprof_exporter::target::{self, ProfileKind, TargetConfig};

/// One fuzz target's code.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: the name of the binary and of the corpus directory.
pub const TARGETS: [(&str, Target); 4] = [
    ("profile", profile),
    ("goroutine_text", goroutine_text),
    ("memstats", memstats),
    ("proc", proc),
];

/// Small limits, so that the folding paths run on small inputs too.
fn limits() -> Limits {
    Limits {
        top: 3,
        stack_text: 48,
    }
}

/// Inflation bound for fuzz inputs: far above any input libFuzzer makes, far below
/// what would exhaust its memory limit.
const MAX_INFLATED: u64 = 16 << 20;

fn check_bounded(families: &[Family], per_family: usize) {
    for f in families {
        assert!(
            f.series.len() <= per_family,
            "{} has {} series, limit {per_family}",
            f.name,
            f.series.len()
        );
    }
}

/// How the exporter is configured for the fuzz inputs: small limits, one promoted
/// goroutine label.
fn config() -> TargetConfig {
    TargetConfig {
        url: "http://127.0.0.1:6060".parse().expect("static URL"),
        path_prefix: "/debug/pprof".into(),
        heap_gc: false,
        interval: std::time::Duration::from_secs(15),
        target_budget: 0.01,
        limits: limits(),
        max_decompressed_bytes: MAX_INFLATED,
        promoted_labels: vec!["worker".to_owned()],
        promoted_label_names: vec!["label_worker"],
        leak_interval: None,
        states_interval: None,
        states_max: 10_000,
        memstats_interval: None,
        process: None,
        smaps_interval: None,
        proc_root: "/proc".into(),
    }
}

/// A protobuf profile (gzip or plain) through decoding and every aggregation the
/// exporter and `inspect` run on heap, goroutine and goroutine-leak profiles: the
/// exporter's own path (samples aggregated off the wire) and the materialised
/// `Profile`, which must agree whenever both accept the input.
pub fn profile(data: &[u8]) {
    let cfg = config();
    let limits = limits();
    let streamed: Vec<(ProfileKind, Option<Vec<Family>>)> = [
        ProfileKind::Heap,
        ProfileKind::Goroutine,
        ProfileKind::GoroutineLeak,
    ]
    .into_iter()
    .map(|kind| {
        let families = target::process(kind, data, &cfg).ok().map(|p| p.families);
        if let Some(f) = &families {
            check_bounded(f, limits.top + 1);
        }
        (kind, families)
    })
    .collect();
    let Ok(raw) = decode::gunzip_bounded(data, MAX_INFLATED) else {
        return;
    };
    let Ok(p) = decode::decode_profile(&raw, DecodeLimits::default()) else {
        return;
    };
    let all: Vec<usize> = (0..p.sample_types.len()).collect();
    let table = aggregate::by_function(&p, &all);
    assert_eq!(table.totals.len(), all.len());
    let _ = p.default_index();
    let from_stream = |kind: ProfileKind| {
        streamed
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, f)| f.clone())
    };
    if let Ok(heap) = HeapSummary::from_profile(&p) {
        let (families, _) = heap.families(&limits);
        // Flat families fold the rest into one "(other)" series; cum ones drop it.
        check_bounded(&families, limits.top + 1);
        assert!(heap.top_inuse(2).len() <= 2);
        if let Some(s) = from_stream(ProfileKind::Heap) {
            assert_eq!(
                s, families,
                "streamed and materialised heap aggregation differ"
            );
        }
    }
    let summary = aggregate::by_stack(&p, &cfg.promoted_labels);
    let (families, _) = aggregate::goroutine_families(&summary, &cfg.promoted_label_names, &limits);
    check_bounded(&families, limits.top + 1);
    if let Some(s) = from_stream(ProfileKind::Goroutine) {
        // The exporter adds nothing else to a goroutine profile's families here (the
        // growth streak is added by the per-target loop).
        assert_eq!(
            s, families,
            "streamed and materialised goroutine aggregation differ"
        );
    }
    let (families, _) = aggregate::leaked_families(&summary, &limits);
    check_bounded(&families, limits.top + 1);
    if let Some(s) = from_stream(ProfileKind::GoroutineLeak) {
        let (plain, _) = aggregate::leaked_families(&aggregate::by_stack(&p, &[]), &limits);
        assert_eq!(
            s, plain,
            "streamed and materialised leak aggregation differ"
        );
    }
    for g in summary.stacks.iter().take(8) {
        let text = aggregate::goroutines::stack_text(&g.frames, limits.stack_text);
        assert!(text.len() <= limits.stack_text.max(4), "{text:?}");
    }
}

/// A `goroutine?debug=2` dump through the parser and the state families.
pub fn goroutine_text(data: &[u8]) {
    let Ok(dump) = goroutine_text::parse_goroutines(data) else {
        return;
    };
    for g in &dump.goroutines {
        assert!(g.frames.len() <= goroutine_text::MAX_FRAMES);
    }
    let limits = limits();
    let (families, _) = aggregate::states::state_families(&dump, &limits);
    // Each kept (function, state) pair has a leaked and a non-leaked series.
    check_bounded(&families, 2 * (limits.top + 1));
}

/// A `heap?debug=1` text through the MemStats parser and its families.
pub fn memstats(data: &[u8]) {
    let Ok(m) = memstats::parse_memstats(data) else {
        return;
    };
    let _ = m.last_pause_ns();
    let _ = aggregate::memstats::go_accounted(&m);
    let families = aggregate::memstats::memstats_families(&m);
    check_bounded(&families, 1);
}

/// Bytes as every `/proc` text the exporter parses: status, smaps_rollup, stat,
/// net/tcp, an fd link and a pid file.
pub fn proc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let status = process::parse_status(&text);
    let _ = process::parse_smaps_rollup(&text);
    let _ = process::parse_start_ticks(&text);
    let port = data.first().map_or(0, |&b| (u16::from(b) << 8) | 0x50);
    let inodes = process::listening_inodes(&text, port);
    assert!(inodes.iter().all(|&i| i != 0));
    let _ = process::socket_inode(&text);
    if let Some(pid) = process::parse_pid(&text) {
        assert!(pid > 0);
    }
    let _ = status;
}
