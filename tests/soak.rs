//! Soak: the exporter against the real Go program for a long time while the program's
//! stack set churns and the program restarts (new PID, new stacks).
//!
//! Runs `SOAK_SECONDS` (default 120; `scripts/soak SECONDS` runs this same test for
//! longer). Each step replaces the program's churning goroutines (`/churn?depths=`,
//! one distinct stack per depth, labelled churn=<depth>) with a new random set and
//! checks, on the first goroutine scrape that started after the change:
//! - stacks that vanished are gone and only current ones are shown (exactly the
//!   current set when the profile fits in `--limits.top`);
//! - `pprof_goroutines` never holds more than `--limits.top` + 1 series.
//!
//! Every `RESTART_EVERY` the program is killed and started again on the same port;
//! the exporter must report the new PID and serve no churn stacks of the old process.
//! The exporter's RSS, open fds and series count are sampled at every step; after a
//! warm-up, the mean of the last third must not exceed the mean of the first third
//! by more than a tolerance (see [`RSS_TOLERANCE`]).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// `--limits.top` for the run: smaller than the largest churn set, so that folding
/// into `(other)` happens in about half the steps.
const TOP: usize = 25;
/// Largest churn set, and the range of depths (each depth is a distinct stack).
const MAX_SET: u64 = 40;
const MAX_DEPTH: u64 = 300;
/// The program is restarted this often.
const RESTART_EVERY: Duration = Duration::from_secs(30);
/// Scrape interval of the exporter.
const INTERVAL: Duration = Duration::from_secs(1);
/// How much the exporter's mean RSS over the last third of the run may exceed its
/// mean over the first third (after warm-up): 1 MiB plus 10%. The exposition and
/// the per-target snapshot are rebuilt every scrape and their size follows the churn
/// set (up to TOP stacks of up to 300 frames), so a few hundred KiB of allocator
/// noise between samples is expected; a leak per vanished stack or per restart
/// (hundreds of stacks and several restarts per run, each stack's text up to 1 KiB)
/// grows without bound and exceeds this within minutes.
const RSS_TOLERANCE: (u64, f64) = (1 << 20, 0.10);

/// A number from a `/proc/<pid>/status` line, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// The churn depths shown for the target, from `label_churn` on the churn stacks.
fn shown_depths(m: &Metrics, target: &str) -> BTreeSet<u64> {
    m.select(
        "pprof_goroutines",
        &[("target", target), ("function", "main.churnPark")],
    )
    .filter_map(|s| s.labels.get("label_churn")?.parse().ok())
    .collect()
}

/// Start time (wall clock, seconds) of the goroutine scrape behind this exposition.
fn goroutine_scrape_start(m: &Metrics) -> Option<f64> {
    let p = [("profile", "goroutine")];
    let done = m.get("pprof_last_scrape_timestamp_seconds", &p)?;
    let took = m.get("pprof_scrape_duration_seconds", &p)?;
    Some(done - took)
}

/// Polls `/metrics` until the goroutine scrape shown started after `after` and was a
/// success; fails if that takes longer than two cycles and a margin.
fn first_scrape_after(exp: &Exporter, after: f64) -> (Metrics, Duration) {
    let start = Instant::now();
    let limit = INTERVAL * 2 + Duration::from_secs(5);
    loop {
        let m = exp.metrics();
        if goroutine_scrape_start(&m).is_some_and(|s| s > after)
            && m.get("pprof_scrape_success", &[("profile", "goroutine")]) == Some(1.0)
        {
            return (m, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "no successful goroutine scrape started within {limit:?} of the change; log:\n{}",
            exp.proc.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_churn(leaky_url: &str, depths: &BTreeSet<u64>) {
    let list: Vec<String> = depths.iter().map(u64::to_string).collect();
    let (code, body) = http_get(&format!("{leaky_url}/churn?depths={}", list.join(",")));
    assert_eq!(code, 200, "{body}");
}

fn mean(xs: &[u64]) -> f64 {
    xs.iter().sum::<u64>() as f64 / xs.len().max(1) as f64
}

#[test]
fn soak_churning_and_restarting_target() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let duration = Duration::from_secs(seconds);
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_u64);
    // Deterministic, so that a failing run can be repeated with its seed.
    let mut rng = pprof_exporter::synth::Rng::new(seed);

    let Some(mut leaky) = Leaky::start(Go::V127, &["-addr", "127.0.0.1:0"]) else {
        return;
    };
    let port = leaky.port();
    let target = leaky.url.clone();
    let exp = Exporter::start(&[
        "--target",
        &target,
        "--scrape.interval",
        "1s",
        "--limits.top",
        &TOP.to_string(),
        "--goroutine.label",
        "churn",
        "--goroutine.states-interval",
        "2s",
        "--goroutine.leak-interval",
        "10s",
        "--memstats.interval",
        "2s",
    ]);
    let pid = exp.proc.pid();
    let mut program_pid = leaky.proc.pid();
    exp.wait_for(Duration::from_secs(30), "first scrape", |m| {
        m.get("pprof_process_id", &[]) == Some(f64::from(program_pid))
    });

    let started = Instant::now();
    let mut last_restart = Instant::now();
    let (mut steps, mut restarts, mut folded_steps) = (0u64, 0u64, 0u64);
    let mut rss_kib: Vec<(Duration, u64)> = Vec::new();
    let mut fds: Vec<(Duration, u64)> = Vec::new();
    let mut series: Vec<u64> = Vec::new();
    let mut reaction = Duration::ZERO;
    let mut last_report = 0;
    while started.elapsed() < duration {
        if last_restart.elapsed() >= RESTART_EVERY {
            // Same port, new process: nothing of the old one may stay visible.
            drop(leaky);
            leaky = Leaky::start(Go::V127, &["-addr", &format!("127.0.0.1:{port}")]).unwrap();
            program_pid = leaky.proc.pid();
            restarts += 1;
            last_restart = Instant::now();
            let after = now_unix();
            let deadline = Instant::now() + Duration::from_secs(30);
            let m = loop {
                let m = exp.metrics();
                if m.get("pprof_process_id", &[]) == Some(f64::from(program_pid))
                    && goroutine_scrape_start(&m).is_some_and(|s| s > after)
                    && m.get("pprof_up", &[]) == Some(1.0)
                {
                    break m;
                }
                assert!(
                    Instant::now() < deadline,
                    "restart not picked up:\n{}",
                    m.text
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(
                shown_depths(&m, &target).is_empty(),
                "churn stacks of the old process still shown after restart {restarts}"
            );
        }

        let size = 1 + rng.below(MAX_SET as usize) as u64;
        let depths: BTreeSet<u64> = (0..size)
            .map(|_| rng.below(MAX_DEPTH as usize) as u64)
            .collect();
        let changed = now_unix();
        set_churn(&leaky.url, &depths);
        let (m, took) = first_scrape_after(&exp, changed);
        reaction = reaction.max(took);
        steps += 1;

        let shown = shown_depths(&m, &target);
        let stacks = m.get("pprof_profile_goroutine_stacks", &[]).unwrap() as usize;
        let per_stack = m.select("pprof_goroutines", &[]).count();
        let dropped = m
            .get("pprof_series_dropped", &[("metric", "pprof_goroutines")])
            .unwrap_or(0.0) as usize;
        assert!(
            shown.is_subset(&depths),
            "step {steps}: stacks shown that are not in the current set: {:?}",
            shown.difference(&depths).collect::<Vec<_>>()
        );
        assert!(
            per_stack <= TOP + 1,
            "step {steps}: {per_stack} pprof_goroutines series, limit {TOP}"
        );
        if stacks <= TOP {
            assert_eq!(shown, depths, "step {steps}: every current stack shown");
            assert_eq!(per_stack, stacks);
            assert_eq!(dropped, 0);
        } else {
            folded_steps += 1;
            assert_eq!(per_stack, TOP + 1, "step {steps}: top {TOP} plus (other)");
            assert_eq!(dropped, stacks - TOP, "step {steps}");
        }
        assert_eq!(m.get("pprof_process_id", &[]), Some(f64::from(program_pid)));

        let at = started.elapsed();
        rss_kib.push((at, status_kib(pid, "VmRSS:")));
        fds.push((at, open_fds(pid)));
        series.push(m.samples.len() as u64);
        if at.as_secs() / 60 > last_report {
            last_report = at.as_secs() / 60;
            eprintln!(
                "soak {}s: {steps} steps, {restarts} restarts, RSS {} KiB, {} fds, {} series",
                at.as_secs(),
                rss_kib.last().unwrap().1,
                fds.last().unwrap().1,
                series.last().unwrap()
            );
        }
    }

    // Warm-up: the first fifth of the run (allocator pools, HTTP connections, the first
    // restart's new connection) is left out of the trend.
    let warm: Vec<usize> = (0..rss_kib.len())
        .filter(|&i| rss_kib[i].0 >= duration / 5)
        .collect();
    assert!(
        warm.len() >= 9,
        "too few samples after warm-up: {}",
        warm.len()
    );
    let third = warm.len() / 3;
    let (first, last) = (&warm[..third], &warm[warm.len() - third..]);
    let values = |idx: &[usize], xs: &[(Duration, u64)]| -> Vec<u64> {
        idx.iter().map(|&i| xs[i].1).collect()
    };
    let (rss_first, rss_last) = (
        mean(&values(first, &rss_kib)),
        mean(&values(last, &rss_kib)),
    );
    let (fd_first, fd_last) = (
        *values(first, &fds).iter().max().unwrap(),
        *values(last, &fds).iter().max().unwrap(),
    );
    let rss_all: Vec<u64> = rss_kib.iter().map(|x| x.1).collect();
    let fd_all: Vec<u64> = fds.iter().map(|x| x.1).collect();
    eprintln!(
        "soak {seconds}s (seed {seed}): {steps} churn steps ({folded_steps} folded past top {TOP}), {restarts} restarts, \
         about {} scrape cycles; slowest change-to-scrape {reaction:?}; \
         exporter RSS KiB min {} max {} first {} last {} (mean first third {rss_first:.0}, last third {rss_last:.0}); \
         open fds min {} max {} (max first third {fd_first}, last third {fd_last}); series min {} max {}; VmHWM {} KiB",
        started.elapsed().as_secs() / INTERVAL.as_secs().max(1),
        rss_all.iter().min().unwrap(),
        rss_all.iter().max().unwrap(),
        rss_all.first().unwrap(),
        rss_all.last().unwrap(),
        fd_all.iter().min().unwrap(),
        fd_all.iter().max().unwrap(),
        series.iter().min().unwrap(),
        series.iter().max().unwrap(),
        status_kib(pid, "VmHWM:"),
    );
    let allowed = rss_first * (1.0 + RSS_TOLERANCE.1) + (RSS_TOLERANCE.0 / 1024) as f64;
    assert!(
        rss_last <= allowed,
        "exporter RSS grew: mean {rss_first:.0} KiB in the first third, {rss_last:.0} KiB in the last (allowed {allowed:.0})"
    );
    // Open fds: the listener, the runtime's own, one pooled connection per target and
    // the test's request; the peak must not creep up.
    assert!(
        fd_last <= fd_first + 2,
        "exporter open fds grew: {fd_first} -> {fd_last}"
    );
    assert!(restarts >= 1 || seconds < RESTART_EVERY.as_secs() * 2);
    let log = exp.proc.output();
    assert!(!log.contains("panicked"), "{log}");
}
