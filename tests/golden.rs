//! Golden tests: captured profiles through decode -> aggregate -> encode, compared with
//! the expected exposition kept beside them. `UPDATE_GOLDEN=1` rewrites the expected
//! files; review the diff before committing it. The output is also checked by an
//! independent parser (the harness) and by `promtool check metrics`.

mod common;

use common::*;
use pprof_exporter::aggregate::Limits;
use pprof_exporter::expose;
use pprof_exporter::target::{ProfileKind, TargetConfig, process};

fn config(top: usize) -> TargetConfig {
    TargetConfig {
        url: "http://127.0.0.1:6060".parse().unwrap(),
        path_prefix: "/debug/pprof".into(),
        heap_gc: false,
        interval: std::time::Duration::from_secs(15),
        target_budget: 0.01,
        limits: Limits {
            top,
            stack_text: 256,
        },
        max_decompressed_bytes: 64 << 20,
        promoted_labels: Vec::new(),
        promoted_label_names: Vec::new(),
        leak_interval: None,
        states_interval: None,
        states_max: 10_000,
        memstats_interval: None,
        process: None,
        smaps_interval: None,
        proc_root: "/proc".into(),
    }
}

fn render(case: &str, kind: ProfileKind, top: usize) -> String {
    let body = std::fs::read(
        root()
            .join("tests/fixtures/profiles")
            .join(format!("{case}.pb.gz")),
    )
    .unwrap();
    let cfg = config(top);
    let processed = process(kind, &body, &cfg).unwrap();
    expose::encode(&cfg.label(), &processed.families)
}

fn check_golden(name: &str, actual: &str) {
    let path = root()
        .join("tests/fixtures/golden")
        .join(format!("{name}.prom"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name}: output differs from {} at line {}:\n  expected: {:?}\n  actual:   {:?}",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn heap_profiles() {
    for v in ["go1.19", "go1.27"] {
        let text = render(&format!("heap-{v}"), ProfileKind::Heap, 100);
        let m = Metrics::parse(&text);
        // The fold keeps sums equal to the profile totals.
        for (per_fn, total) in [
            ("pprof_heap_inuse_bytes", "pprof_profile_heap_inuse_bytes"),
            (
                "pprof_heap_alloc_objects_total",
                "pprof_profile_heap_alloc_objects_total",
            ),
        ] {
            assert_eq!(
                m.sum(per_fn, &[]),
                m.get(total, &[]).unwrap(),
                "{v}: {per_fn}"
            );
        }
        assert!(
            m.get("pprof_heap_inuse_bytes", &[("function", "main.retainHeap")])
                .unwrap()
                > 1e6
        );
        promtool_check_metrics(&text);
        check_golden(&format!("heap-{v}"), &text);
    }
}

#[test]
fn goroutine_profiles() {
    for v in ["go1.19", "go1.27"] {
        let text = render(&format!("goroutine-{v}"), ProfileKind::Goroutine, 100);
        let m = Metrics::parse(&text);
        assert_eq!(
            m.sum(
                "pprof_goroutines",
                &[("function", "main.blockedSender.func1")]
            ),
            20.0
        );
        assert_eq!(
            m.sum("pprof_goroutines", &[("function", "main.selectForever")]),
            5.0
        );
        assert_eq!(
            m.sum(
                "pprof_goroutines",
                &[("function", "main.labeledWorker.func1")]
            ),
            7.0
        );
        assert_eq!(
            m.sum("pprof_goroutines", &[]),
            m.get("pprof_profile_goroutines", &[]).unwrap()
        );
        promtool_check_metrics(&text);
        check_golden(&format!("goroutine-{v}"), &text);
    }
}

#[test]
fn folding_keeps_totals() {
    let text = render("goroutine-go1.27", ProfileKind::Goroutine, 2);
    let m = Metrics::parse(&text);
    let series: Vec<_> = m.select("pprof_goroutines", &[]).collect();
    assert_eq!(series.len(), 3, "2 kept + (other)");
    assert!(
        m.get(
            "pprof_goroutines",
            &[("function", "(other)"), ("stack_id", "(other)")]
        )
        .is_some()
    );
    assert_eq!(
        m.sum("pprof_goroutines", &[]),
        m.get("pprof_profile_goroutines", &[]).unwrap()
    );
    // Stack info only for the kept stacks.
    assert_eq!(m.select("pprof_goroutine_stack_info", &[]).count(), 2);
    check_golden("goroutine-go1.27-top2", &text);
}
