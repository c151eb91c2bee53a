//! The dashboard and the rules against the real parts: the leaky Go program (Go 1.27,
//! leaking a goroutine every 200 ms), the exporter scraping it with every collector on,
//! and a real Prometheus (Debian's) scraping the exporter every second with
//! `deploy/prometheus/rules.yml` loaded.
//!
//! Through Prometheus's HTTP API the test then requires, at one evaluation time:
//! - every query of every dashboard panel to return data, once with every variable on
//!   "All" and once with the values the dashboard's own variable queries offer, and the
//!   alert annotation's query to find the alerts the leak raises;
//! - every rule group of rules.yml loaded, every rule evaluated with health "ok" and no
//!   error, and every recording rule to produce series;
//! - the alerts that the leak must trigger (leaked goroutines, a stack that grows at
//!   every scrape) to be pending or firing, and the target-down alerts to be silent.
//!
//! Prometheus scrapes the one exporter under two jobs: one as a static target (like
//! `deploy/prometheus/prometheus.yml`) and one with the namespace, pod and container
//! labels that the Kubernetes pod discovery of `prometheus-kubernetes.yml` attaches, so
//! both label shapes go through every query and join.
//!
//! Everything is polled until it holds or a deadline passes; nothing waits a fixed time.

mod common;
mod dashboard;
use common::*;
use dashboard::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const RULES: &str = "deploy/prometheus/rules.yml";

/// How long the exporter may take to collect every profile once.
const EXPORTER_WAIT: Duration = Duration::from_secs(30);
/// How long Prometheus may take to become ready.
const PROMETHEUS_READY: Duration = Duration::from_secs(30);
/// How long the queries, rules and alerts may take to all hold at once. The slowest
/// condition is the growth-streak alert: 20 growing exporter scrapes at 1 s.
const SETTLE: Duration = Duration::from_secs(70);

/// Grafana's time variables for a Prometheus that scrapes every second: the rate
/// window spans several scrapes, as Grafana's `$__rate_interval` (at least four scrape
/// intervals) would.
const LIVE_DURATIONS: Durations = Durations {
    rate_interval: "10s",
    interval: "2s",
    range: "5m",
};

/// Labels of the second scrape job, as the Kubernetes sidecar job would set them.
const POD_LABELS: [(&str, &str); 3] = [
    ("namespace", "shop"),
    ("pod", "leaky-0"),
    ("container", "pprof-exporter"),
];

/// Alerts the steadily leaking target must raise within the run (pending counts: their
/// `for` durations are minutes), and alerts that must stay silent.
const MUST_BE_ACTIVE: [&str; 2] = ["PprofGoroutinesLeaked", "PprofGoroutineStackGrowing"];
const MUST_BE_INACTIVE: [&str; 2] = ["PprofTargetDown", "PprofProfileScrapeFailing"];

/// A Prometheus server on a loopback port, with its own storage, killed on drop.
struct Prometheus {
    proc: Proc,
    url: String,
    agent: ureq::Agent,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (written to `dir`) on a free port, and polls
    /// `/-/ready` until it answers 200. `None` when Prometheus is not installed.
    fn start(dir: &Path, config: &str) -> Option<Prometheus> {
        let bin = require_tool("prometheus")?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        // Prometheus cannot report a port it picked itself, so take a free one from
        // the kernel and hand it over; if something else binds it in between,
        // Prometheus exits and the next attempt takes another.
        for attempt in 1..=3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={listen}"))
                .current_dir(dir);
            let (proc, _) = Proc::spawn(cmd, "Starting Prometheus", PROMETHEUS_READY);
            let mut prom = Prometheus {
                proc,
                url: format!("http://{listen}"),
                agent: agent.clone(),
            };
            let deadline = Instant::now() + PROMETHEUS_READY;
            loop {
                if let Ok((200, _)) = prom.get("/-/ready", &[]) {
                    return Some(prom);
                }
                if let Ok(Some(status)) = prom.proc.child.try_wait() {
                    let log = prom.proc.output();
                    assert!(
                        attempt < 3 && log.contains("address already in use"),
                        "Prometheus exited ({status}) before it was ready; log:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Prometheus not ready within {PROMETHEUS_READY:?}; log:\n{}",
                    prom.proc.output()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!("every attempt either returns or fails")
    }

    /// GET `path` with query parameters; the status and body, or the transport error.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, String), String> {
        let mut req = self.agent.get(format!("{}{path}", self.url));
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {path}: body: {e}"))?;
        Ok((status, body))
    }

    /// The `data` of an API response, or what went wrong (HTTP status, Prometheus's
    /// error type and message).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let (status, body) = self.get(path, params)?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: {status}, not JSON ({e}): {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!(
                "{status} {}: {}",
                v["errorType"].as_str().unwrap_or_default(),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(v["data"].clone())
    }

    /// Instant query at `time`: the result vector (a scalar becomes one element).
    fn query(&self, expr: &str, time: f64) -> Result<Vec<Value>, String> {
        let data = self.api(
            "/api/v1/query",
            &[("query", expr), ("time", &format!("{time:.3}"))],
        )?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Values of `label` on the series that match `selector`, as Grafana's
    /// `label_values(selector, label)` asks for them.
    fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>, String> {
        let data = self.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", selector)],
        )?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }
}

/// The Prometheus configuration: the exporter at `exporter` scraped every second under
/// two jobs (see the module header), rules.yml evaluated every second.
fn prometheus_config(exporter: &str) -> String {
    let rules = root().join(RULES);
    let pod_labels: String = POD_LABELS
        .iter()
        .map(|(k, v)| format!("          {k}: {v}\n"))
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: pprof-exporter\n    static_configs:\n      - targets: [\"{exporter}\"]\n\
         \x20 - job_name: pprof-exporter-sidecar\n    static_configs:\n      - targets: [\"{exporter}\"]\n        labels:\n{pod_labels}",
        rules = serde_json::to_string(rules.to_str().unwrap()).unwrap(),
    )
}

/// Rule groups of rules.yml: group name to the names of its rules (record or alert), in
/// file order. rules.yml keeps one `- name:`, `- record:` or `- alert:` per line.
fn expected_groups() -> BTreeMap<String, Vec<String>> {
    let path = root().join(RULES);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- name:") {
            let name = name.trim().to_owned();
            groups.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(rule) = line
            .strip_prefix("- record:")
            .or_else(|| line.strip_prefix("- alert:"))
        {
            let group = current
                .as_ref()
                .unwrap_or_else(|| panic!("{RULES}: rule {rule} before any group"));
            groups.get_mut(group).unwrap().push(rule.trim().to_owned());
        }
    }
    assert!(!groups.is_empty(), "{RULES} has no groups");
    groups
}

/// Problems with `/api/v1/rules` against rules.yml: a missing group or rule, a rule
/// not (yet) evaluated with health "ok", an evaluation error, and the alert states
/// required by [`MUST_BE_ACTIVE`] and [`MUST_BE_INACTIVE`].
fn rule_problems(prom: &Prometheus, expected: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let data = match prom.api("/api/v1/rules", &[]) {
        Ok(d) => d,
        Err(e) => return vec![format!("/api/v1/rules: {e}")],
    };
    let mut problems = Vec::new();
    let mut alert_states = BTreeMap::new();
    let loaded: BTreeMap<&str, &Value> = data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| (g["name"].as_str().unwrap_or_default(), g))
        .collect();
    for (group, names) in expected {
        let Some(g) = loaded.get(group.as_str()) else {
            problems.push(format!("rule group {group} is not loaded"));
            continue;
        };
        let rules = g["rules"].as_array().cloned().unwrap_or_default();
        let got: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        if got != *names {
            problems.push(format!("group {group} has rules {got:?}, want {names:?}"));
        }
        for r in &rules {
            let name = r["name"].as_str().unwrap_or_default();
            if r["health"] != "ok" {
                problems.push(format!("rule {group}/{name}: health {}", r["health"]));
            }
            if let Some(err) = r["lastError"].as_str().filter(|e| !e.is_empty()) {
                problems.push(format!("rule {group}/{name}: lastError {err}"));
            }
            if r["type"] == "alerting" {
                alert_states.insert(
                    name.to_owned(),
                    r["state"].as_str().unwrap_or("").to_owned(),
                );
            }
        }
    }
    if loaded.len() != expected.len() {
        problems.push(format!(
            "Prometheus has groups {:?}, rules.yml {:?}",
            loaded.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        ));
    }
    for alert in MUST_BE_ACTIVE {
        let state = alert_states.get(alert).map_or("missing", String::as_str);
        if state != "pending" && state != "firing" {
            problems.push(format!("alert {alert} is {state}, want pending or firing"));
        }
    }
    for alert in MUST_BE_INACTIVE {
        let state = alert_states.get(alert).map_or("missing", String::as_str);
        if state != "inactive" {
            problems.push(format!("alert {alert} is {state}, want inactive"));
        }
    }
    problems
}

/// Resolves the dashboard's query variables one after the other, as Grafana does, and
/// selects every value each offers. Returns the interpolated value per variable, or
/// the problem (a variable with no value, an API error).
fn resolve_variables(
    prom: &Prometheus,
    vars: &[QueryVariable],
) -> Result<BTreeMap<String, (Vec<String>, String)>, String> {
    let mut chosen: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for v in vars {
        let selector = substitute(&v.selector, LIVE_DURATIONS, |name| {
            chosen.get(name).map(|c| c.1.clone()).unwrap_or_else(|| {
                panic!(
                    "variable {} refers to {name}, not resolved before it",
                    v.name
                )
            })
        });
        let values = prom
            .label_values(&selector, &v.label)
            .map_err(|e| format!("variable {}: {selector}: {e}", v.name))?;
        if values.is_empty() {
            return Err(format!("variable {} offers no value ({selector})", v.name));
        }
        let regex = grafana_regex(&values);
        chosen.insert(v.name.clone(), (values, regex));
    }
    Ok(chosen)
}

/// Queries that returned no data or failed, at one evaluation time, as
/// "row / panel [variables]: problem: query".
fn query_problems(
    prom: &Prometheus,
    queries: &[(String, String, String)],
    label: &str,
    time: f64,
    results: &mut BTreeMap<(String, String), Vec<Value>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (row, title, expr) in queries {
        match prom.query(expr, time) {
            Ok(r) if r.is_empty() => {
                problems.push(format!("{row} / {title} [{label}]: no data: {expr}"))
            }
            Ok(r) => {
                results
                    .entry((title.clone(), label.to_owned()))
                    .or_default()
                    .extend(r);
            }
            Err(e) => problems.push(format!("{row} / {title} [{label}]: {e}: {expr}")),
        }
    }
    problems
}

fn sample_value(sample: &Value) -> f64 {
    let v = if sample.is_array() {
        &sample[1]
    } else {
        &sample["value"][1]
    };
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Checks on what some panels show, beyond having data: numbers the leaky program
/// fixes. Each names the panel it reads.
fn value_problems(results: &BTreeMap<(String, String), Vec<Value>>, target: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |title: &str| {
        results
            .get(&(title.to_owned(), "chosen".to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let function_of = |s: &Value| s["metric"]["function"].as_str().unwrap_or("").to_owned();

    // One target chosen: "Targets up" shows up = scraped = 1.
    let up: Vec<f64> = get("Targets up").iter().map(sample_value).collect();
    if up != [1.0, 1.0] {
        problems.push(format!(
            "Targets up shows {up:?} for one chosen target, want up 1 of 1"
        ));
    }
    // leaky's blocked senders can never be woken: the runtime reports them leaked.
    let leaked: f64 = get("Leaked goroutines").iter().map(sample_value).sum();
    if leaked < 20.0 {
        problems.push(format!(
            "Leaked goroutines shows {leaked}, want at least leaky's 20 senders"
        ));
    }
    // The leaking stack grows at every scrape, so it has a growth streak.
    if !get("Goroutine growth streak by stack")
        .iter()
        .any(|s| function_of(s) == "main.blockedSender.func1" && sample_value(s) >= 1.0)
    {
        problems
            .push("Goroutine growth streak shows no streak for main.blockedSender.func1".into());
    }
    // The stack table carries readable stack text for the same stack.
    if !get("Top goroutine stacks").iter().any(|s| {
        s["metric"]["stack"]
            .as_str()
            .is_some_and(|t| t.contains("main.blockedSender.func1"))
            && s["metric"]["target"] == target
    }) {
        problems.push("Top goroutine stacks has no stack text for main.blockedSender.func1".into());
    }
    // Heap held by leaky's retaining functions shows by function.
    if !get("Heap in use by function (bytes)")
        .iter()
        .any(|s| function_of(s) == "main.retainHeap" && sample_value(s) > 0.0)
    {
        problems.push("Heap in use by function shows nothing for main.retainHeap".into());
    }
    // The states dump sees the leak mark too.
    if !get("Goroutines by state")
        .iter()
        .any(|s| s["metric"]["leaked"] == "true" && sample_value(s) > 0.0)
    {
        problems.push("Goroutines by state shows no leaked=\"true\" goroutines".into());
    }
    problems
}

#[test]
fn every_panel_and_rule_works_against_a_real_prometheus() {
    let started = Instant::now();
    if require_tool("prometheus").is_none() {
        return;
    }
    let Some(leaky) = Leaky::start(Go::V127, &["-leak-every", "200ms"]) else {
        return;
    };
    let exporter = Exporter::start(&[
        "--target",
        &leaky.url,
        "--scrape.interval",
        "1s",
        "--goroutine.leak-interval",
        "1s",
        "--goroutine.states-interval",
        "2s",
        "--memstats.interval",
        "1s",
        "--goroutine.label",
        "worker",
    ]);
    let collected = [
        "heap",
        "goroutine",
        "goroutineleak",
        "goroutine_states",
        "memstats",
        "process",
    ];
    exporter.wait_for(EXPORTER_WAIT, "every profile collected once", |m| {
        collected
            .iter()
            .all(|p| m.get("pprof_scrape_success", &[("profile", p)]) == Some(1.0))
    });

    let dir = scratch("prometheus");
    let exporter_addr = exporter.url.trim_start_matches("http://").to_owned();
    let Some(prom) = Prometheus::start(&dir, &prometheus_config(&exporter_addr)) else {
        return;
    };
    let ready_at = started.elapsed();

    let d = dashboard();
    let rows: BTreeMap<String, String> = panels_by_row(&d)
        .into_iter()
        .map(|(row, title)| (title, row))
        .collect();
    let raw = raw_queries(&d);
    // (row, title, query with Grafana variables): every panel query, and the alert
    // annotation. Alerts only fire after their `for` (minutes), so the annotation is
    // run with pending alerts admitted: that still proves its selectors match the
    // labels real alerts carry.
    let mut queries: Vec<(String, String, String)> = raw
        .iter()
        .map(|(title, expr)| (rows[title].clone(), title.clone(), expr.clone()))
        .collect();
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        let Some(expr) = a["expr"].as_str() else {
            continue;
        };
        assert!(
            expr.contains(r#"alertstate="firing""#),
            "annotation {}: expected a firing-alerts query: {expr}",
            a["name"]
        );
        queries.push((
            "Annotations".to_owned(),
            format!(
                "{} (pending or firing)",
                a["name"].as_str().unwrap_or_default()
            ),
            expr.replace(r#"alertstate="firing""#, r#"alertstate=~"firing|pending""#),
        ));
    }
    let vars = query_variables(&d);
    let expected = expected_groups();
    let recorded: Vec<String> = expected
        .values()
        .flatten()
        .filter(|n| n.contains(':'))
        .cloned()
        .collect();
    assert!(!recorded.is_empty(), "rules.yml records nothing");
    let all: Vec<(String, String, String)> = queries
        .iter()
        .map(|(row, title, expr)| {
            let q = substitute(expr, LIVE_DURATIONS, |_| ".*".to_owned());
            (row.clone(), title.clone(), q)
        })
        .collect();

    let deadline = Instant::now() + SETTLE;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let time = now_unix();
        let mut problems = Vec::new();
        let mut results = BTreeMap::new();

        problems.extend(query_problems(&prom, &all, "all", time, &mut results));
        match resolve_variables(&prom, &vars) {
            Ok(chosen) => {
                // The variables offer exactly what the sidecar job labels carry.
                for (name, value) in POD_LABELS {
                    if chosen[name].0 != [value] {
                        problems.push(format!(
                            "variable {name} offers {:?}, want [{value}]",
                            chosen[name].0
                        ));
                    }
                }
                if chosen["target"].0 != [leaky.url.clone()] {
                    problems.push(format!(
                        "variable target offers {:?}, want [{}]",
                        chosen["target"].0, leaky.url
                    ));
                }
                let specific: Vec<(String, String, String)> = queries
                    .iter()
                    .map(|(row, title, expr)| {
                        let q = substitute(expr, LIVE_DURATIONS, |name| {
                            chosen
                                .get(name)
                                .map(|c| c.1.clone())
                                .unwrap_or_else(|| panic!("{title}: unknown variable ${name}"))
                        });
                        (row.clone(), title.clone(), q)
                    })
                    .collect();
                problems.extend(query_problems(
                    &prom,
                    &specific,
                    "chosen",
                    time,
                    &mut results,
                ));
                problems.extend(value_problems(&results, &leaky.url));
            }
            Err(e) => problems.push(e),
        }
        for name in &recorded {
            match prom.query(name, time) {
                Ok(r) if r.is_empty() => problems.push(format!("recording rule {name}: no series")),
                Ok(_) => {}
                Err(e) => problems.push(format!("recording rule {name}: {e}")),
            }
        }
        problems.extend(rule_problems(&prom, &expected));

        if problems.is_empty() {
            let distinct: BTreeSet<&str> = raw.iter().map(|(t, _)| t.as_str()).collect();
            eprintln!(
                "{} queries of {} panels and the alert annotation returned data with all and \
                 with chosen variables; \
                 {} rule groups healthy; Prometheus ready after {:.1?}, all held after {:.1?} \
                 ({rounds} rounds)",
                raw.len(),
                distinct.len(),
                expected.len(),
                ready_at,
                started.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?} ({rounds} rounds), still:\n{}\n\nPrometheus log:\n{}\nexporter log:\n{}",
            problems.join("\n"),
            prom.proc.output(),
            exporter.proc.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
