//! Explaining a leak, end to end against real Go 1.19 and 1.27 targets: the
//! goroutine-leak profile, debug=2 states, promoted goroutine labels, Go's MemStats,
//! the process RSS found by port, and the growth streak.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use pprof_exporter::aggregate::goroutines::blocking_function;

const WAIT: Duration = Duration::from_secs(40);

/// Per blocking function, the goroutine counts of a debug=1 profile text, computed
/// independently of the exporter's proto path.
fn debug1_counts(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut current: Option<(f64, Vec<String>)> = None;
    let flush = |cur: Option<(f64, Vec<String>)>, out: &mut BTreeMap<String, f64>| {
        if let Some((n, frames)) = cur {
            let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
            *out.entry(blocking_function(&refs).to_owned())
                .or_insert(0.0) += n;
        }
    };
    for line in text.lines() {
        if let Some((count, _)) = line.split_once(" @ ") {
            flush(current.take(), &mut out);
            current = Some((count.trim().parse().unwrap(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("#\t") {
            let func = rest.split('\t').nth(1).unwrap_or("");
            let func = func.split("+0x").next().unwrap().to_owned();
            if let Some((_, frames)) = current.as_mut() {
                frames.push(func);
            }
        }
    }
    flush(current, &mut out);
    out
}

fn vm_rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1024.0
}

fn memstats_field(text: &str, name: &str) -> f64 {
    let prefix = format!("# {name} = ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in MemStats"))
        .trim()
        .parse()
        .unwrap()
}

fn start_full(leaky: &Leaky) -> Exporter {
    Exporter::start(&[
        "--target",
        &leaky.url,
        "--scrape.interval",
        "1s",
        "--goroutine.leak-interval",
        "1s",
        "--goroutine.states-interval",
        "1s",
        "--goroutine.label",
        "worker",
    ])
}

#[test]
fn go127_leaks_states_labels_memstats_and_rss() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let exp = start_full(&leaky);
    let m = exp.wait_for(WAIT, "every profile collected", |m| {
        [
            "heap",
            "goroutine",
            "goroutineleak",
            "goroutine_states",
            "memstats",
            "process",
        ]
        .iter()
        .all(|p| m.get("pprof_scrape_success", &[("profile", p)]) == Some(1.0))
    });

    // Leaked goroutines per function equal the target's own debug=1 leak profile.
    let (status, text) = http_get(&format!("{}/debug/pprof/goroutineleak?debug=1", leaky.url));
    assert_eq!(status, 200);
    let theirs = debug1_counts(&text);
    assert_eq!(
        theirs.get("main.blockedSender.func1"),
        Some(&20.0),
        "{text}"
    );
    assert_eq!(theirs.get("main.selectForever"), Some(&5.0));
    for (function, n) in &theirs {
        assert_eq!(
            m.sum("pprof_goroutines_leaked", &[("function", function)]),
            *n,
            "{function}"
        );
    }
    assert_eq!(
        m.get("pprof_profile_goroutines_leaked", &[]),
        Some(theirs.values().sum())
    );

    // States from debug=2, with the leak mark split out.
    let state = |f: &str, s: &str| {
        m.sum(
            "pprof_goroutines_by_state",
            &[("function", f), ("state", s)],
        )
    };
    assert_eq!(state("main.blockedSender.func1", "chan send"), 20.0);
    assert_eq!(state("main.selectForever", "select (no cases)"), 5.0);
    assert_eq!(state("main.labeledWorker.func1", "chan receive"), 7.0);
    assert_eq!(
        m.sum(
            "pprof_goroutines_by_state",
            &[("function", "main.blockedSender.func1"), ("leaked", "true")]
        ),
        20.0,
        "the leak profile ran first, so debug=2 marks the senders (leaked)"
    );
    assert!(
        m.get(
            "pprof_goroutine_wait_seconds_max",
            &[
                ("function", "main.labeledWorker.func1"),
                ("state", "chan receive")
            ]
        )
        .is_some()
    );

    // A promoted pprof.Do label.
    assert_eq!(
        m.sum(
            "pprof_goroutines",
            &[
                ("function", "main.labeledWorker.func1"),
                ("label_worker", "ingest")
            ]
        ),
        7.0
    );
    assert_eq!(
        m.sum("pprof_goroutines", &[("label_worker", "")]) + 7.0,
        m.get("pprof_profile_goroutines", &[]).unwrap()
    );

    // MemStats against live reads of the target taken just before and just after a
    // scrape: the target's totals move while it runs (they grew by a quarter between
    // start-up and a read a few seconds later), so ours must lie between the two, give
    // or take a few percent. Stack in-use moves with every request the target serves,
    // so only the slow-moving totals are compared live; the parser's fixture tests
    // check every field exactly.
    let fields = [
        ("pprof_go_memstats_sys_bytes", "Sys"),
        ("pprof_go_memstats_heap_sys_bytes", "HeapSys"),
    ];
    let live = || {
        let (_, text) = http_get(&format!("{}/debug/pprof/heap?debug=1", leaky.url));
        fields.map(|(_, field)| memstats_field(&text, field))
    };
    let before = live();
    let asked = now_unix();
    let m = exp.wait_for(WAIT, "a memstats scrape after the live read", |m| {
        m.get(
            "pprof_last_scrape_timestamp_seconds",
            &[("profile", "memstats")],
        )
        .is_some_and(|t| t > asked)
    });
    let after = live();
    for (i, (metric, _)) in fields.iter().enumerate() {
        let ours = m.get(metric, &[]).unwrap();
        let (lo, hi) = (before[i].min(after[i]), before[i].max(after[i]));
        assert!(
            ours >= 0.95 * lo && ours <= 1.05 * hi,
            "{metric}: {ours}, live {} before and {} after",
            before[i],
            after[i]
        );
    }
    let accounted = m.get("pprof_go_memstats_go_accounted_bytes", &[]).unwrap();
    assert_eq!(
        accounted,
        m.get("pprof_go_memstats_sys_bytes", &[]).unwrap()
            - m.get("pprof_go_memstats_heap_released_bytes", &[]).unwrap()
    );

    // RSS of the process found by its port, against /proc read here.
    let rss = m.get("pprof_process_resident_memory_bytes", &[]).unwrap();
    let truth = vm_rss(leaky.proc.pid());
    assert!(
        (rss - truth).abs() <= 0.10 * truth,
        "RSS {rss} vs VmRSS {truth}"
    );
    assert_eq!(
        m.get("pprof_process_id", &[]),
        Some(f64::from(leaky.proc.pid()))
    );
    promtool_check_metrics(&m.text);
}

#[test]
fn go119_has_no_leak_profile_and_stays_up() {
    let Some(leaky) = Leaky::start(Go::V119, &[]) else {
        return;
    };
    let exp = start_full(&leaky);
    let m = exp.wait_for(WAIT, "states and memstats collected", |m| {
        m.get("pprof_scrape_success", &[("profile", "goroutine_states")]) == Some(1.0)
            && m.get("pprof_scrape_success", &[("profile", "memstats")]) == Some(1.0)
    });
    assert_eq!(m.get("pprof_up", &[]), Some(1.0));
    assert_eq!(m.select("pprof_goroutines_leaked", &[]).count(), 0);
    assert_eq!(
        m.get("pprof_scrape_success", &[("profile", "goroutineleak")]),
        None
    );
    assert_eq!(
        m.sum("pprof_scrape_errors_total", &[("profile", "goroutineleak")]),
        0.0
    );
    assert!(exp.proc.output().contains("does not serve this profile"));
    assert_eq!(
        m.sum(
            "pprof_goroutines_by_state",
            &[
                ("function", "main.blockedSender.func1"),
                ("state", "chan send"),
                ("leaked", "false")
            ]
        ),
        20.0
    );
}

#[test]
fn states_are_skipped_above_the_goroutine_limit() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let exp = Exporter::start(&[
        "--target",
        &leaky.url,
        "--scrape.interval",
        "1s",
        "--goroutine.states-interval",
        "1s",
        "--goroutine.states-max",
        "10",
    ]);
    let m = exp.wait_for(WAIT, "a skipped dump", |m| {
        m.get(
            "pprof_scrape_skipped_total",
            &[
                ("profile", "goroutine_states"),
                ("reason", "too_many_goroutines"),
            ],
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert_eq!(m.select("pprof_goroutines_by_state", &[]).count(), 0);
    assert_eq!(m.get("pprof_up", &[]), Some(1.0));
}

#[test]
fn growth_streak_rises_while_leaking_and_resets_when_it_stops() {
    let Some(leaky) = Leaky::start(Go::V127, &["-leak-every", "100ms"]) else {
        return;
    };
    let exp = Exporter::start(&["--target", &leaky.url, "--scrape.interval", "1s"]);
    let streak = |m: &Metrics| {
        m.sum(
            "pprof_goroutines_growth_streak",
            &[("function", "main.blockedSender.func1")],
        )
    };
    exp.wait_for(WAIT, "a streak of 3", |m| streak(m) >= 3.0);
    assert_eq!(http_get(&format!("{}/leak/stop", leaky.url)).0, 200);
    exp.wait_for(WAIT, "the streak to reset", |m| streak(m) == 0.0);
}
