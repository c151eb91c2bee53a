//! End to end: the real exporter binary scraping the real Go program (built with Go
//! 1.19 and Go 1.27), asserted through `/metrics` by metric name and labels, and
//! checked by `promtool check metrics`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn ready(m: &Metrics) -> bool {
    m.get("pprof_up", &[]) == Some(1.0) && m.select("pprof_goroutines", &[]).count() > 0
}

fn check_live(go: Go) {
    let Some(leaky) = Leaky::start(go, &[]) else {
        return;
    };
    let exp = Exporter::start(&["--target", &leaky.url, "--scrape.interval", "1s"]);
    let m = exp.wait_for(WAIT, "first successful scrape", ready);
    let t = [("target", leaky.url.as_str())];

    // Every series but the build info carries the target label.
    for s in &m.samples {
        if s.name != "pprof_exporter_build_info" {
            assert_eq!(
                s.labels.get("target").map(String::as_str),
                Some(leaky.url.as_str()),
                "{s:?}"
            );
        }
    }

    // Goroutines: named by blocking call site, counts as the program set them up.
    let by_fn = |f: &str| m.sum("pprof_goroutines", &[t[0], ("function", f)]);
    assert_eq!(by_fn("main.blockedSender.func1"), 20.0, "{go:?}");
    assert_eq!(by_fn("main.selectForever"), 5.0, "{go:?}");
    assert_eq!(by_fn("main.labeledWorker.func1"), 7.0, "{go:?}");
    assert_eq!(
        m.sum("pprof_goroutines", &t),
        m.get("pprof_profile_goroutines", &t).unwrap()
    );
    let ids: BTreeSet<&str> = m
        .select("pprof_goroutines", &t)
        .map(|s| s.labels["stack_id"].as_str())
        .collect();
    for id in &ids {
        let info: Vec<_> = m
            .select("pprof_goroutine_stack_info", &[("stack_id", id)])
            .collect();
        assert_eq!(info.len(), 1, "stack_info for {id}");
        assert_eq!(info[0].value, 1.0);
    }
    let sender = m
        .select(
            "pprof_goroutines",
            &[("function", "main.blockedSender.func1")],
        )
        .next()
        .unwrap();
    let info = m
        .select(
            "pprof_goroutine_stack_info",
            &[("stack_id", sender.labels["stack_id"].as_str())],
        )
        .next()
        .unwrap();
    assert!(
        info.labels["stack"].ends_with(";runtime.gopark"),
        "{:?}",
        info.labels["stack"]
    );
    assert!(
        info.labels["stack"].starts_with("main.blockedSender.func1;"),
        "{:?}",
        info.labels["stack"]
    );

    // Heap: leaky records every allocation while it retains 64 x 64 KiB in
    // main.retainHeap, 32 x 32 KiB in main.makeBuffer (inlined into
    // main.retainViaInlined, still with a flat of its own) and 8 x 6 x 16 KiB in
    // main.recursiveAlloc. The profile scales each size by 1 / (1 - e^(-size/4096)),
    // 4096 being the rate in force when it is written. Now and then the profile also
    // charges a small allocation to the same stack (Go 1.27, one run in twelve: a
    // 112-byte sample, scaled to 4.05 kB, under main.makeBuffer; `go tool pprof`
    // shows it too), so the check counts buffers: no less than all of them, and less
    // than half a buffer more.
    let heap = |name: &str, f: &str| m.get(name, &[t[0], ("function", f)]);
    let expect = |f: &str, n: f64, size: f64| {
        let want = n * size / (1.0 - (-size / 4096.0).exp());
        let got = heap("pprof_heap_inuse_bytes", f).unwrap();
        assert!(
            got >= want * 0.999 - 1.0 && got < want + size / 2.0,
            "{f} in use {got}, want {n} buffers of {size} bytes, {want} ({go:?})"
        );
        got
    };
    let retained = expect("main.retainHeap", 64.0, 65536.0);
    let inlined = expect("main.makeBuffer", 32.0, 32768.0);
    expect("main.recursiveAlloc", 48.0, 16384.0);
    assert_eq!(
        heap("pprof_heap_inuse_bytes", "main.retainViaInlined"),
        None,
        "no flat of its own"
    );
    assert!(heap("pprof_heap_inuse_cum_bytes", "main.retainViaInlined").unwrap() >= inlined);
    assert!(heap("pprof_heap_alloc_bytes_total", "main.retainHeap").unwrap() >= retained);
    assert_eq!(m.types["pprof_heap_alloc_bytes_total"], "counter");
    assert_eq!(
        m.sum("pprof_heap_inuse_bytes", &t),
        m.get("pprof_profile_heap_inuse_bytes", &t).unwrap()
    );

    // Self-metrics.
    for p in ["heap", "goroutine"] {
        assert_eq!(
            m.get("pprof_scrape_success", &[t[0], ("profile", p)]),
            Some(1.0)
        );
        assert!(
            m.get("pprof_profile_size_bytes", &[t[0], ("profile", p)])
                .unwrap()
                > 100.0
        );
        assert!(
            m.get("pprof_scrape_duration_seconds", &[t[0], ("profile", p)])
                .unwrap()
                > 0.0
        );
        assert!(
            m.get(
                "pprof_last_scrape_timestamp_seconds",
                &[t[0], ("profile", p)]
            )
            .unwrap()
                > 1.6e9
        );
        assert_eq!(
            m.sum("pprof_scrape_errors_total", &[t[0], ("profile", p)]),
            0.0
        );
    }

    promtool_check_metrics(&m.text);

    // Landing page and health.
    let (status, page) = exp.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("main.retainHeap") && page.contains("main.blockedSender.func1"),
        "{page}"
    );
    assert_eq!(exp.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(exp.get("/nope").0, 404);

    // Asked for gzip, as Prometheus does, /metrics is the same exposition compressed.
    // Two reads in a row may straddle a refresh, so retry until they agree.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut resp = agent
            .get(&format!("{}/metrics", exp.url))
            .header("Accept-Encoding", "gzip")
            .call()
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        let compressed = resp.body_mut().read_to_vec().unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut plain,
        )
        .unwrap();
        let (_, direct) = exp.get("/metrics");
        assert!(compressed.len() * 4 < plain.len(), "gzip shrinks the text");
        if plain == direct {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gzip body never matched"
        );
    }
}

#[test]
fn live_go119() {
    check_live(Go::V119);
}

#[test]
fn live_go127() {
    check_live(Go::V127);
}

/// `--scrape.target-budget`: a profile is fetched again no sooner than its fetch time
/// divided by the budget. With a budget of one in a hundred thousand, any real fetch
/// (over 0.6 ms) spaces the heap and goroutine profiles out to the cap, a minute at
/// 1 s scrapes, while the process stats, which cost the target nothing, stay at 1 s.
#[test]
fn target_budget_spaces_out_profile_fetches() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let exp = Exporter::start(&[
        "--target",
        &leaky.url,
        "--scrape.interval",
        "1s",
        "--scrape.target-budget",
        "0.00001",
    ]);
    let m = exp.wait_for(WAIT, "first scrape", ready);
    let t = leaky.url.as_str();
    let at = |m: &Metrics, name: &str, profile: &str| {
        m.get(name, &[("target", t), ("profile", profile)])
    };
    for profile in ["goroutine", "heap"] {
        let gap = at(&m, "pprof_scrape_interval_seconds", profile).unwrap();
        assert!(
            (1.0..=60.0).contains(&gap) && gap > 1.0,
            "{profile}: interval {gap}"
        );
    }
    let goroutine_at = at(&m, "pprof_last_scrape_timestamp_seconds", "goroutine").unwrap();
    // Three more process samples (one per second) come and go without a new
    // goroutine profile.
    let later = exp.wait_for(WAIT, "three more process samples", |m| {
        at(m, "pprof_last_scrape_timestamp_seconds", "process")
            .is_some_and(|p| p >= goroutine_at + 3.0)
    });
    assert_eq!(
        at(&later, "pprof_last_scrape_timestamp_seconds", "goroutine"),
        Some(goroutine_at),
        "goroutine profile fetched again within its spaced-out interval"
    );
    assert_eq!(
        at(&later, "pprof_scrape_interval_seconds", "process"),
        Some(1.0)
    );
    assert!(
        exp.proc.output().contains("fetched less often"),
        "one log line says so: {}",
        exp.proc.output()
    );
}

#[test]
fn custom_path_prefix() {
    let Some(leaky) = Leaky::start(Go::V127, &["-alt-prefix", "/internal/prof"]) else {
        return;
    };
    let exp = Exporter::start(&[
        "--target",
        &leaky.url,
        "--pprof.path-prefix",
        "/internal/prof",
        "--scrape.interval",
        "1s",
    ]);
    exp.wait_for(WAIT, "scrape through the custom prefix", ready);
}

#[test]
fn top_n_folds_into_other_and_reports_it() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let exp = Exporter::start(&[
        "--target",
        &leaky.url,
        "--limits.top",
        "2",
        "--scrape.interval",
        "1s",
    ]);
    let m = exp.wait_for(WAIT, "first scrape", ready);
    assert_eq!(m.select("pprof_goroutines", &[]).count(), 3);
    assert_eq!(
        m.sum("pprof_goroutines", &[]),
        m.get("pprof_profile_goroutines", &[]).unwrap()
    );
    assert_eq!(m.select("pprof_heap_inuse_bytes", &[]).count(), 3);
    assert_eq!(
        m.sum("pprof_heap_inuse_bytes", &[]),
        m.get("pprof_profile_heap_inuse_bytes", &[]).unwrap()
    );
    assert!(
        m.get("pprof_series_dropped", &[("metric", "pprof_goroutines")])
            .unwrap()
            >= 1.0
    );
    assert!(
        m.get(
            "pprof_series_dropped",
            &[("metric", "pprof_heap_inuse_bytes")]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn sigterm_exits_zero() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let mut exp = Exporter::start(&["--target", &leaky.url]);
    exp.wait_for(WAIT, "first scrape", ready);
    let status = Command::new("kill")
        .args(["-TERM", &exp.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = wait_exit(&mut exp.proc, Duration::from_secs(10));
    assert_eq!(code, Some(0), "log:\n{}", exp.proc.output());
    assert!(exp.proc.output().contains("stopped"));
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    for args in [
        vec!["--bogus"],
        vec!["--scrape.interval", "0s"],
        vec!["--scrape.interval", "soon"],
        vec!["--target", "ftp://x"],
        vec!["--web.listen-address", "nowhere"],
        vec!["--limits.top", "0"],
        vec!["--limits.max-body-bytes", "12XB"],
    ] {
        let out = Command::new(exporter_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("pprof-exporter: "), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(exporter_bin()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--target",
        "--scrape.interval",
        "--scrape.timeout",
        "--limits.top",
        "PPROF_EXPORTER_TARGET",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn inspect_reads_a_url_and_reports_bad_input() {
    let Some(leaky) = Leaky::start(Go::V119, &[]) else {
        return;
    };
    let out = Command::new(exporter_bin())
        .args([
            "inspect",
            "--format",
            "json",
            &format!("{}/debug/pprof/heap", leaky.url),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sample_type"], "inuse_space");
    assert_eq!(v["unit"], "bytes");
    assert!(
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "main.retainHeap")
    );

    let out = Command::new(exporter_bin())
        .args(["inspect", "/no/such/file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file"));
    let out = Command::new(exporter_bin())
        .args(["inspect", "--sample-index", "nope"])
        .arg(root().join("tests/fixtures/profiles/heap-go1.19.pb.gz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inuse_space"),
        "lists the types it has"
    );
}
