//! Concurrency: hundreds of clients on the exporter's endpoints while it scrapes a real
//! Go target and two failing ones, then SIGTERM in the middle of that load.
//!
//! Checks: every request is answered (no deadlock between scrapes and the server),
//! latency stays bounded (p50/p99/max are printed), every answer is a complete, valid
//! exposition, and on SIGTERM requests in flight finish or their connection closes
//! cleanly while the process exits 0 within its drain time, even with a client that
//! never finishes its request.
//!
//! The load is described by [`Load`] (paths and client counts), so other endpoints
//! (e.g. a fleet `/probe?target=`) can be driven the same way by adding paths.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The exporter's drain limit after SIGTERM (see main.rs), plus start-up slack.
const EXIT_DEADLINE: Duration = Duration::from_secs(12);

/// What a request must look like to count as answered.
#[derive(Clone, Copy)]
struct Check {
    path: &'static str,
    /// The status every answer must have.
    status: u16,
    /// A text every answer must contain.
    must_contain: &'static str,
}

/// A load: `clients` threads, each sending `requests` GETs in turn to each path
/// (a new connection per request, as Prometheus servers spread over many scrapes do).
struct Load {
    checks: Vec<Check>,
    clients: usize,
    requests: usize,
}

/// The outcome of one request.
#[derive(Debug)]
struct Outcome {
    path: &'static str,
    started: Instant,
    latency: Duration,
    /// Ok(status) with a complete body, or the error.
    result: Result<u16, String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into()
}

/// One GET; a body is complete only if it contains `check.must_contain`.
fn request(base: &str, check: Check) -> Outcome {
    let started = Instant::now();
    let result = match agent().get(format!("{base}{}", check.path)).call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            match resp
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_string()
            {
                Ok(body) if status != check.status || body.contains(check.must_contain) => {
                    Ok(status)
                }
                Ok(body) => Err(format!("incomplete body of {} bytes", body.len())),
                Err(e) => Err(format!("body: {e}")),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    Outcome {
        path: check.path,
        started,
        latency: started.elapsed(),
        result,
    }
}

impl Load {
    /// Runs the load to completion; returns every outcome.
    fn run(&self, base: &str) -> Vec<Outcome> {
        let barrier = Arc::new(Barrier::new(self.clients));
        let threads: Vec<_> = (0..self.clients)
            .map(|_| {
                let (base, checks, n) = (base.to_owned(), self.checks.clone(), self.requests);
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut out = Vec::new();
                    for _ in 0..n {
                        for c in &checks {
                            out.push(request(&base, *c));
                        }
                    }
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }

    /// Runs the load until `stop` is set; returns every outcome.
    fn run_until(
        &self,
        base: &str,
        stop: Arc<AtomicBool>,
        started: Arc<AtomicUsize>,
    ) -> Vec<Outcome> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..self.clients)
            .map(|_| {
                let (base, checks) = (base.to_owned(), self.checks.clone());
                let (stop, started, out) = (stop.clone(), started.clone(), out.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        for c in &checks {
                            started.fetch_add(1, Ordering::SeqCst);
                            let o = request(&base, *c);
                            out.lock().unwrap().push(o);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(out).unwrap().into_inner().unwrap()
    }
}

const METRICS: Check = Check {
    path: "/metrics",
    status: 200,
    // A body cut short of its Content-Length is a read error in the client; this
    // checks that what arrived is the exposition and not some other page.
    must_contain: "pprof_exporter_build_info",
};

/// Starts the exporter on a real Go target plus a dead port and a wrong path prefix
/// (HTTP 404), every collection at one second, and waits until all three are known.
fn exporter_with_failing_targets(leaky: &Leaky) -> (Exporter, Vec<String>) {
    let dead = dead_url();
    let wrong = format!("{}/wrong", leaky.url);
    // Fleet mode too: the live target and the dead port may be probed, with a short
    // cache so that probes keep scraping during the load.
    let port = |u: &str| u.rsplit(':').next().unwrap().to_owned();
    let allow = format!(r"127\.0\.0\.1:({}|{})", port(&leaky.url), port(&dead));
    let exp = Exporter::start(&[
        "--probe.allow",
        &allow,
        "--probe.cache-ttl",
        "1s",
        "--target",
        &leaky.url,
        "--target",
        &dead,
        "--target",
        &wrong,
        "--scrape.interval",
        "1s",
        "--goroutine.states-interval",
        "1s",
        "--memstats.interval",
        "1s",
    ]);
    exp.wait_for(Duration::from_secs(60), "scrapes done", |m| {
        m.get("pprof_up", &[("target", &leaky.url)]) == Some(1.0)
            && m.sum("pprof_scrape_errors_total", &[("target", &dead)]) >= 2.0
            && m.sum("pprof_scrape_errors_total", &[("target", &wrong)]) >= 2.0
    });
    (exp, vec![leaky.url.clone(), dead, wrong])
}

/// A `/probe` of `target` (the strings live for the rest of the test process).
fn probe(target: &str, status: u16, must_contain: String) -> Check {
    Check {
        path: Box::leak(
            format!("/probe?target={}", target.trim_start_matches("http://")).into_boxed_str(),
        ),
        status,
        must_contain: Box::leak(must_contain.into_boxed_str()),
    }
}

#[test]
fn hundreds_of_concurrent_scrapes_are_answered_quickly_while_targets_fail() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let (exp, targets) = exporter_with_failing_targets(&leaky);
    let load = Load {
        checks: vec![
            METRICS,
            // A live target, a dead one (still HTTP 200, with pprof_up 0), and one
            // outside the allow-list.
            probe(
                &targets[0],
                200,
                format!("pprof_up{{target=\"{}\"}} 1", targets[0]),
            ),
            probe(
                &targets[1],
                200,
                format!("pprof_up{{target=\"{}\"}} 0", targets[1]),
            ),
            probe("127.0.0.2:6060", 403, "--probe.allow".into()),
        ],
        clients: 200,
        requests: 5,
    };
    let start = Instant::now();
    let outcomes = load.run(&exp.url);
    let wall = start.elapsed();

    let expected = |path: &str| load.checks.iter().find(|c| c.path == path).unwrap().status;
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.result != Ok(expected(o.path)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        outcomes.len(),
        failed.first()
    );
    assert_eq!(
        outcomes.len(),
        load.clients * load.requests * load.checks.len()
    );
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    eprintln!(
        "{} GETs of /metrics and /probe from {} threads in {wall:?}: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        outcomes.len(),
        load.clients
    );
    // Generous bounds for a shared 2-core machine with 200 client threads and a debug
    // build: the exposition is pre-encoded and probes mostly hit the cache, so only a
    // blocked server (or probes queueing without bound) could take longer.
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
    assert!(max < Duration::from_secs(10), "max {max:?}");

    // Scrapes went on during the load: every target was scraped again, and the
    // exposition afterwards is complete and valid.
    let m = exp.metrics();
    promtool_check_metrics(&m.text);
    assert_eq!(m.get("pprof_up", &[("target", &targets[0])]), Some(1.0));
    for t in &targets[1..] {
        assert_eq!(m.get("pprof_up", &[("target", t)]), Some(0.0));
    }
    let log = exp.proc.output();
    assert!(!log.contains("panicked"), "{log}");
}

/// A raw connection that sends half a request head and never the rest.
fn half_request(base: &str) -> TcpStream {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s
}

#[test]
fn sigterm_under_load_drains_and_exits_zero() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let (mut exp, targets) = exporter_with_failing_targets(&leaky);
    // A client stuck mid-request, and an idle keep-alive connection after a complete
    // exchange: neither may hold the process past its drain time.
    let stuck = half_request(&exp.url);
    let mut idle = TcpStream::connect(exp.url.trim_start_matches("http://")).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);

    let load = Load {
        checks: vec![
            METRICS,
            probe(
                &targets[0],
                200,
                format!("pprof_up{{target=\"{}\"}} 1", targets[0]),
            ),
        ],
        clients: 200,
        requests: 0,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let runner = {
        let (url, stop, started) = (exp.url.clone(), stop.clone(), started.clone());
        std::thread::spawn(move || load.run_until(&url, stop, started))
    };
    // SIGTERM once the load is well under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::SeqCst) < 1000 {
        assert!(Instant::now() < deadline, "load did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let term_at = Instant::now();
    let pid = exp.proc.pid();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = exp.proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            term_at.elapsed() < EXIT_DEADLINE,
            "still running {EXIT_DEADLINE:?} after SIGTERM; log:\n{}",
            exp.proc.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exit_after = term_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let outcomes = runner.join().unwrap();

    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    // In flight at SIGTERM: started before it. Each either completed with a whole,
    // valid exposition or failed as a connection error; none got a truncated body
    // passed off as complete, an error status, or a hang.
    let in_flight: Vec<&Outcome> = outcomes.iter().filter(|o| o.started < term_at).collect();
    let completed_after = in_flight
        .iter()
        .filter(|o| o.result == Ok(200) && o.started + o.latency > term_at)
        .count();
    let in_flight_failed = in_flight.iter().filter(|o| o.result.is_err()).count();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for o in &outcomes {
        match &o.result {
            Ok(200) => {}
            Ok(code) => panic!("HTTP {code} during shutdown: {o:?}"),
            Err(e) => {
                assert!(
                    !e.starts_with("incomplete body"),
                    "a cut body was accepted as complete: {o:?}"
                );
                *errors.entry(e.chars().take(60).collect()).or_default() += 1;
            }
        }
    }
    eprintln!(
        "SIGTERM after {} requests: exit 0 after {exit_after:?}; {} requests started before it, {completed_after} of them completed after it, {in_flight_failed} failed; all errors: {errors:?}",
        started.load(Ordering::SeqCst),
        in_flight.len()
    );
    drop(stuck);
    let log = exp.proc.output();
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
