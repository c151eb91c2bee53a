//! The monitoring files shipped beside the exporter: Prometheus rules and their unit
//! tests, the example scrape configurations, and the Grafana dashboard.
//!
//! promtool (Debian's `prometheus` package) checks the rules, runs
//! `deploy/prometheus/rules_test.yml`, validates both example configurations, parses
//! every dashboard query and evaluates each one against synthetic series of every
//! exported metric with the recording rules loaded. The dashboard JSON is also linted
//! here: descriptions, units, legends, data sources, template variables and selectors.
//!
//! The dashboard is read through `tests/dashboard/mod.rs`, which `tests/dashboard_live.rs`
//! shares to run the same queries against a real Prometheus.

mod common;
mod dashboard;
use common::*;
use dashboard::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";
const CONFIG_STATIC: &str = "deploy/prometheus/prometheus.yml";
const CONFIG_KUBERNETES: &str = "deploy/prometheus/prometheus-kubernetes.yml";
const DOCS: &str = "docs/dashboard.md";

/// The data source every panel, target and variable must use.
const DATASOURCE: &str = "${datasource}";

/// Query variables: every selector of every panel query filters on each of them.
const QUERY_VARIABLES: [&str; 4] = ["namespace", "pod", "container", "target"];

/// Exported metrics without a `target` label: one series per exporter process, not per
/// target. A `target=~"$target"` matcher on them would drop them as soon as a target is
/// chosen, so selectors filter them on the other variables only and reach the chosen
/// targets through a join.
const WITHOUT_TARGET_LABEL: [&str; 1] = ["pprof_exporter_build_info"];

/// Rows the dashboard must have.
const ROWS: [&str; 5] = [
    "Overview",
    "Goroutines",
    "Heap",
    "Memory accounting",
    "Exporter health",
];

/// Every metric the exporter publishes (the metric contract): name, the labels of one
/// plausible series besides the target's identity, and its values in promtool's series
/// notation. The dashboard and the rules may only name these and the recorded `pprof:`
/// series.
const EXPORTED: &[(&str, &str, &str)] = &[
    ("pprof_up", "", "1x40"),
    (
        "pprof_scrape_duration_seconds",
        r#"profile="heap""#,
        "0.2x40",
    ),
    (
        "pprof_scrape_errors_total",
        r#"profile="goroutineleak",reason="http_status""#,
        "0+1x40",
    ),
    ("pprof_scrape_success", r#"profile="heap""#, "1x40"),
    ("pprof_profile_size_bytes", r#"profile="heap""#, "65536x40"),
    (
        "pprof_last_scrape_timestamp_seconds",
        r#"profile="heap""#,
        "0+15x40",
    ),
    (
        "pprof_series_dropped",
        r#"metric="pprof_heap_inuse_bytes""#,
        "12x40",
    ),
    ("pprof_exporter_build_info", r#"version="0.1.0""#, "1x40"),
    (
        "pprof_heap_inuse_bytes",
        r#"function="main.load""#,
        "1000000+1000x40",
    ),
    (
        "pprof_heap_inuse_objects",
        r#"function="main.load""#,
        "100x40",
    ),
    (
        "pprof_heap_alloc_bytes_total",
        r#"function="main.load""#,
        "0+100000x40",
    ),
    (
        "pprof_heap_alloc_objects_total",
        r#"function="main.load""#,
        "0+100x40",
    ),
    (
        "pprof_heap_inuse_cum_bytes",
        r#"function="main.main""#,
        "2000000x40",
    ),
    (
        "pprof_heap_inuse_cum_objects",
        r#"function="main.main""#,
        "200x40",
    ),
    (
        "pprof_heap_alloc_cum_bytes_total",
        r#"function="main.main""#,
        "0+200000x40",
    ),
    (
        "pprof_heap_alloc_cum_objects_total",
        r#"function="main.main""#,
        "0+200x40",
    ),
    ("pprof_profile_heap_inuse_bytes", "", "2000000x40"),
    ("pprof_profile_heap_inuse_objects", "", "200x40"),
    ("pprof_profile_heap_alloc_bytes_total", "", "0+200000x40"),
    ("pprof_profile_heap_alloc_objects_total", "", "0+200x40"),
    // Two series of one stack that differ by a promoted pprof.Do label.
    (
        "pprof_goroutines",
        r#"function="main.serve",stack_id="aa",label_tenant="a""#,
        "70x40",
    ),
    (
        "pprof_goroutines",
        r#"function="main.serve",stack_id="aa",label_tenant="b""#,
        "30x40",
    ),
    (
        "pprof_goroutines",
        r#"function="(other)",stack_id="(other)""#,
        "5x40",
    ),
    (
        "pprof_goroutine_stack_info",
        r#"function="main.serve",stack_id="aa",stack="main.main;main.serve""#,
        "1x40",
    ),
    ("pprof_profile_goroutines", "", "105x40"),
    ("pprof_profile_goroutine_stacks", "", "2x40"),
    (
        "pprof_goroutines_leaked",
        r#"function="main.serve",stack_id="aa""#,
        "3x40",
    ),
    (
        "pprof_goroutines_by_state",
        r#"function="main.serve",state="chan receive",leaked="true""#,
        "3x40",
    ),
    (
        "pprof_goroutines_by_state",
        r#"function="main.serve",state="IO wait",leaked="false""#,
        "97x40",
    ),
    (
        "pprof_goroutine_wait_seconds_max",
        r#"function="main.serve",state="chan receive""#,
        "60+15x40",
    ),
    (
        "pprof_goroutines_growth_streak",
        r#"function="main.serve",stack_id="aa""#,
        "1+1x40",
    ),
    ("pprof_go_memstats_heap_alloc_bytes", "", "30000000x40"),
    ("pprof_go_memstats_heap_inuse_bytes", "", "32000000x40"),
    ("pprof_go_memstats_heap_idle_bytes", "", "16000000x40"),
    ("pprof_go_memstats_heap_released_bytes", "", "8000000x40"),
    ("pprof_go_memstats_heap_sys_bytes", "", "48000000x40"),
    ("pprof_go_memstats_heap_objects", "", "300000x40"),
    ("pprof_go_memstats_sys_bytes", "", "60000000x40"),
    ("pprof_go_memstats_stack_inuse_bytes", "", "1000000x40"),
    ("pprof_go_memstats_stack_sys_bytes", "", "1000000x40"),
    ("pprof_go_memstats_next_gc_bytes", "", "40000000x40"),
    ("pprof_go_memstats_gc_cycles_total", "", "0+1x40"),
    ("pprof_go_memstats_alloc_bytes_total", "", "0+1000000x40"),
    ("pprof_go_memstats_go_accounted_bytes", "", "52000000x40"),
    ("pprof_process_resident_memory_bytes", "", "70000000x40"),
    (
        "pprof_process_resident_memory_anon_bytes",
        "",
        "55000000x40",
    ),
    (
        "pprof_process_resident_memory_file_bytes",
        "",
        "15000000x40",
    ),
    ("pprof_process_resident_memory_shmem_bytes", "", "0x40"),
    ("pprof_process_virtual_memory_bytes", "", "900000000x40"),
    ("pprof_process_threads", "", "12x40"),
    ("pprof_process_open_fds", "", "40x40"),
];

/// Identity labels of the synthetic targets: two sidecars with the same target URL in
/// two pods (so joins must include instance), and one target outside Kubernetes.
const SYNTHETIC_TARGETS: [&str; 3] = [
    r#"job="pprof-exporter-sidecar",instance="10.0.0.7:10060",namespace="shop",pod="cart-0",container="pprof-exporter",target="http://localhost:6060""#,
    r#"job="pprof-exporter-sidecar",instance="10.0.0.8:10060",namespace="shop",pod="cart-1",container="pprof-exporter",target="http://localhost:6060""#,
    r#"job="pprof-exporter",instance="localhost:10060",target="http://localhost:6060""#,
];

/// `identity` (a label list) without its `target="..."` pair.
fn identity_without_target(identity: &str) -> String {
    identity
        .split(',')
        .filter(|pair| !pair.starts_with("target="))
        .collect::<Vec<_>>()
        .join(",")
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes `queries` as recording rules `dashboard:query_<index>` in a group named
/// `dashboard`, to `dir/dashboard-queries.yml`, and returns the path.
fn write_queries_as_rules(dir: &Path, queries: &[(String, String)]) -> PathBuf {
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        assert!(
            !expr.contains('$'),
            "{title}: unreplaced variable in {expr}"
        );
        file.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let path = dir.join("dashboard-queries.yml");
    std::fs::write(&path, &file).unwrap();
    path
}

/// Runs promtool with `args` from the repository root; `None` when promtool is missing.
/// Returns whether it succeeded and everything it printed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let bin = require_tool("promtool")?;
    let out = Command::new(bin)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Names recorded by rules.yml (`- record: NAME`), in file order.
fn recorded_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Alert names of rules.yml (`- alert: NAME`), in file order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Metric names (`pprof_...`, `pprof:...`) that occur in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("pprof") {
        let start = i + off;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |e| start + e);
        let name = &text[start..end];
        if boundary && (name.starts_with("pprof_") || name.starts_with("pprof:")) {
            names.insert(name.trim_end_matches(':').to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

/// Problems with the template variables of one query: each must be the whole value of
/// a `=~` matcher (`label=~"$var"`), never of `=` or `!=`, so that multi-value
/// selections and "All" work.
fn variable_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if expr.contains("=\"$") {
        problems.push("matches a variable with = instead of =~".to_owned());
    }
    let mut from = 0;
    while let Some(off) = expr[from..].find('$') {
        let at = from + off;
        let name = expr[at + 1..].trim_start_matches('{');
        let is_variable = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if is_variable && !name.starts_with("__") && !expr[..at].ends_with("=~\"") {
            problems.push(format!("variable at byte {at} is not inside a =~ matcher"));
        }
        from = at + 1;
    }
    problems
}

/// Problems with the selectors of one query: each metric (`pprof_...`, `pprof:...`,
/// `ALERTS`) must be followed by a `{...}` selector with `VAR=~"$VAR"` for every query
/// variable, and every variable must be used after `=~`, never after `=` or `!=`.
fn selector_problems(expr: &str) -> Vec<String> {
    let mut problems = variable_problems(expr);
    // Each metric name carries the four matchers.
    let chars: Vec<(usize, char)> = expr.char_indices().collect();
    let mut k = 0;
    let mut in_string = false;
    while k < chars.len() {
        let (pos, c) = chars[k];
        if in_string {
            if c == '\\' {
                k += 1;
            } else if c == '"' {
                in_string = false;
            }
            k += 1;
            continue;
        }
        if c == '"' {
            in_string = true;
            k += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = pos;
            while k < chars.len()
                && (chars[k].1.is_ascii_alphanumeric() || chars[k].1 == '_' || chars[k].1 == ':')
            {
                k += 1;
            }
            let end = chars.get(k).map_or(expr.len(), |x| x.0);
            let word = &expr[start..end];
            let is_metric =
                word.starts_with("pprof_") || word.starts_with("pprof:") || word == "ALERTS";
            if !is_metric {
                continue;
            }
            let tail = expr[end..].trim_start();
            let Some(body) = tail.strip_prefix('{') else {
                problems.push(format!("{word} has no label selector"));
                continue;
            };
            let Some(close) = body.find('}') else {
                problems.push(format!("{word} has an unclosed selector"));
                continue;
            };
            let selector = &body[..close];
            let per_exporter = WITHOUT_TARGET_LABEL.contains(&word);
            if per_exporter && selector.contains("target=~") {
                problems.push(format!(
                    "{word} has no target label, so {word}{{{selector}}} matches nothing once a target is chosen"
                ));
            }
            for var in QUERY_VARIABLES {
                if per_exporter && var == "target" {
                    continue;
                }
                if !selector.contains(&format!("{var}=~\"${var}\"")) {
                    problems.push(format!(
                        "{word}{{{selector}}} does not filter on {var}=~\"${var}\""
                    ));
                }
            }
            // Skip the selector.
            let skip_to = end + (expr[end..].len() - tail.len()) + 1 + close + 1;
            while k < chars.len() && chars[k].0 < skip_to {
                k += 1;
            }
            continue;
        }
        k += 1;
    }
    problems
}

/// Datasource references anywhere in `v`, with the JSON path that leads to each.
fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((p.clone(), child));
                }
                datasource_refs(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasource_refs(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn substitution_replaces_grafana_variables() {
    assert_eq!(
        substitute_variables(r#"rate(x{pod=~"$pod", target=~"${target}"}[$__rate_interval])"#),
        r#"rate(x{pod=~".*", target=~".*"}[1m])"#
    );
    assert_eq!(
        substitute_variables(r#"x{a=~"${a:regex}",b=~"end$"}[$__range]"#),
        r#"x{a=~".*",b=~"end$"}[1h]"#
    );
    let chosen = substitute(
        r#"rate(x{target=~"$target"}[$__rate_interval]) / $__interval"#,
        Durations {
            rate_interval: "10s",
            interval: "2s",
            range: "5m",
        },
        |name| {
            assert_eq!(name, "target");
            grafana_regex(&["http://127.0.0.1:6060".to_owned(), "a|b".to_owned()])
        },
    );
    assert_eq!(
        chosen,
        r#"rate(x{target=~"(http://127\\.0\\.0\\.1:6060|a\\|b)"}[10s]) / 2s"#
    );
}

#[test]
fn query_variables_are_read_in_order() {
    let vars = query_variables(&dashboard());
    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, QUERY_VARIABLES);
    for v in &vars {
        assert!(v.selector.starts_with("pprof_up"), "{v:?}");
        assert_eq!(v.label, v.name, "{v:?}");
    }
}

#[test]
fn selector_lint_catches_bad_queries() {
    let good = r#"sum(pprof_up{namespace=~"$namespace", pod=~"$pod", container=~"$container", target=~"$target"})"#;
    assert_eq!(selector_problems(good), Vec::<String>::new());
    assert!(
        !selector_problems("sum(pprof_up)").is_empty(),
        "a metric without a selector"
    );
    assert!(!selector_problems(&good.replace(r#"pod=~"$pod""#, r#"pod="$pod""#)).is_empty());
    assert!(!selector_problems(&good.replace(r#", container=~"$container""#, "")).is_empty());
    // Per-exporter metrics have no target label: filtering them on it is the bug.
    let info = r#"pprof_exporter_build_info{namespace=~"$namespace", pod=~"$pod", container=~"$container"}"#;
    assert_eq!(selector_problems(info), Vec::<String>::new());
    assert!(
        !selector_problems(&info.replace('}', r#", target=~"$target"}"#)).is_empty(),
        "a target matcher on a metric without target"
    );
    // A label value that merely mentions a metric name is not a metric.
    assert_eq!(
        selector_problems(&good.replace("pprof_up{", r#"pprof_up{metric="pprof_goroutines", "#)),
        Vec::<String>::new()
    );
}

#[test]
fn promtool_check_rules() {
    let Some((ok, out)) = promtool(&["check", "rules", RULES]) else {
        return;
    };
    assert!(ok, "promtool check rules {RULES} failed:\n{out}");
    let rules = read(RULES);
    let expected = recorded_names(&rules).len() + alert_names(&rules).len();
    assert!(
        out.contains(&format!("SUCCESS: {expected} rules found")),
        "expected {expected} rules:\n{out}"
    );
}

#[test]
fn promtool_test_rules() {
    let Some((ok, out)) = promtool(&["test", "rules", RULES_TEST]) else {
        return;
    };
    assert!(
        ok && out.contains("SUCCESS"),
        "promtool test rules {RULES_TEST} failed:\n{out}"
    );
}

#[test]
fn every_alert_is_unit_tested_both_ways_and_annotated() {
    let rules = read(RULES);
    let tests = read(RULES_TEST);
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 9, "alerts: {alerts:?}");
    for alert in &alerts {
        // Blocks of `- alertname: X` with `exp_alerts: []` are silent cases; others fire.
        let blocks: Vec<&str> = tests
            .split("- alertname: ")
            .skip(1)
            .filter(|b| b.lines().next().map(str::trim) == Some(alert.as_str()))
            .collect();
        let silent = blocks
            .iter()
            .filter(|b| b.contains("exp_alerts: []"))
            .count();
        assert!(silent > 0, "{alert} has no case where it must stay silent");
        assert!(blocks.len() > silent, "{alert} has no case where it fires");
    }
    // Each alert rule carries a severity and the three annotations.
    for block in rules.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap_or_default().trim();
        for needle in [
            "severity: ",
            "summary: ",
            "description: ",
            "runbook: ",
            "for: ",
        ] {
            assert!(block.contains(needle), "alert {name} lacks {needle:?}");
        }
    }
}

#[test]
fn rules_only_name_exported_or_recorded_metrics() {
    let rules = read(RULES);
    let recorded: BTreeSet<String> = recorded_names(&rules).into_iter().collect();
    let exported: BTreeSet<&str> = EXPORTED.iter().map(|m| m.0).collect();
    for name in metric_names(&rules) {
        assert!(
            exported.contains(name.as_str()) || recorded.contains(&name),
            "{RULES} names {name}, which is neither exported nor recorded"
        );
    }
    for name in &recorded {
        assert!(
            name.starts_with("pprof:"),
            "recorded name {name} outside the pprof: namespace"
        );
    }
}

#[test]
fn promtool_check_static_config() {
    let Some((ok, out)) = promtool(&["check", "config", CONFIG_STATIC]) else {
        return;
    };
    assert!(ok, "promtool check config {CONFIG_STATIC} failed:\n{out}");
    // The rule file it loads was found and checked too.
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}

#[test]
fn promtool_check_kubernetes_config() {
    let Some((ok, out)) = promtool(&["check", "config", CONFIG_KUBERNETES]) else {
        return;
    };
    if ok {
        assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
        return;
    }
    // Debian builds promtool without Kubernetes discovery. Anything else is a real error.
    assert!(
        out.contains("field kubernetes_sd_configs not found"),
        "promtool check config {CONFIG_KUBERNETES} failed:\n{out}"
    );
    eprintln!(
        "NOTE: this promtool lacks Kubernetes discovery; checking the rest of {CONFIG_KUBERNETES}"
    );
    let config = read(CONFIG_KUBERNETES);
    let jobs = config.matches("- job_name:").count();
    assert_eq!(
        config
            .matches("kubernetes_sd_configs:\n      - role: pod\n")
            .count(),
        jobs,
        "every job should discover pods"
    );
    let swapped = config.replace(
        "kubernetes_sd_configs:\n      - role: pod\n",
        "static_configs:\n      - targets: [\"pod.invalid:10060\"]\n",
    );
    let dir = scratch("kubernetes-config");
    std::fs::write(dir.join("prometheus-kubernetes.yml"), swapped).unwrap();
    std::fs::copy(root().join(RULES), dir.join("rules.yml")).unwrap();
    let path = dir.join("prometheus-kubernetes.yml");
    let Some((ok, out)) = promtool(&["check", "config", path.to_str().unwrap()]) else {
        return;
    };
    assert!(
        ok,
        "{CONFIG_KUBERNETES} without its discovery blocks is invalid:\n{out}"
    );
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}

#[test]
fn dashboard_lint() {
    let d = dashboard();
    let mut problems: Vec<String> = Vec::new();

    // Import flow and data source.
    let inputs = d["__inputs"].as_array().cloned().unwrap_or_default();
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "__inputs lacks DS_PROMETHEUS: {inputs:?}"
    );
    let mut refs = Vec::new();
    datasource_refs(&d, String::new(), &mut refs);
    assert!(refs.len() > 40, "only {} datasource references", refs.len());
    for (path, r) in &refs {
        let uid = match r {
            Value::String(s) => Some(s.as_str()),
            Value::Object(m) => m.get("uid").and_then(Value::as_str),
            _ => None,
        };
        if uid != Some(DATASOURCE) {
            problems.push(format!("{path}: datasource {r} is not {DATASOURCE}"));
        }
    }

    // Template variables.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds_var = vars.iter().find(|v| v["name"] == "datasource");
    assert!(
        ds_var.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no datasource variable of type datasource for prometheus"
    );
    for want in QUERY_VARIABLES {
        assert!(
            vars.iter().any(|v| v["name"] == want),
            "variable {want} missing"
        );
    }
    for v in vars {
        let name = v["name"].as_str().unwrap_or_default();
        // A data source variable picks one data source: multi and All do not apply.
        if v["type"] == "datasource" {
            continue;
        }
        if v["multi"] != true || v["includeAll"] != true || v["allValue"] != ".*" {
            problems.push(format!(
                "variable {name} must be multi, includeAll, allValue \".*\""
            ));
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        if !query.starts_with("label_values(pprof_up") {
            problems.push(format!(
                "variable {name} does not list values of pprof_up: {query}"
            ));
        }
        for problem in variable_problems(query) {
            problems.push(format!("variable {name}: {problem} in {query}"));
        }
    }

    // Panels.
    let all = panels(&d);
    let titles: Vec<&str> = all
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default())
        .collect();
    for row in ROWS {
        assert!(
            all.iter().any(|p| p["type"] == "row" && p["title"] == row),
            "row {row} missing; panels: {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    let mut rects: Vec<(&str, i64, i64, i64, i64)> = Vec::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default();
        let kind = p["type"].as_str().unwrap_or_default();
        if title.trim().is_empty() {
            problems.push(format!("a {kind} panel has no title"));
        }
        if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
            problems.push(format!("{title}: duplicate or missing id"));
        }
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap_or(-1),
            g["y"].as_i64().unwrap_or(-1),
            g["w"].as_i64().unwrap_or(0),
            g["h"].as_i64().unwrap_or(0),
        );
        if x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > 24 {
            problems.push(format!("{title}: bad gridPos {g}"));
        }
        rects.push((title, x, y, w, h));
        if kind == "row" {
            continue;
        }
        if p["description"]
            .as_str()
            .is_none_or(|s| s.trim().len() < 40)
        {
            problems.push(format!(
                "{title}: no description (or one too short to say how to read it)"
            ));
        }
        if kind == "text" {
            continue;
        }
        if p["datasource"]["uid"] != DATASOURCE {
            problems.push(format!("{title}: datasource is not {DATASOURCE}"));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{title}: no unit"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no queries"));
        }
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                problems.push(format!("{title}: empty query"));
            }
            for problem in selector_problems(expr) {
                problems.push(format!("{title}: {problem} in {expr}"));
            }
            if kind == "timeseries" {
                let legend = t["legendFormat"].as_str().unwrap_or_default();
                if legend.is_empty() || legend == "__auto" {
                    problems.push(format!("{title}: query {} has no legend", t["refId"]));
                }
            }
        }
        if kind == "timeseries" && p["options"]["legend"]["showLegend"] != true {
            problems.push(format!("{title}: legend hidden"));
        }
    }
    // Panels must not overlap (those of a collapsed row are laid out below it).
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            if a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4 {
                problems.push(format!("panels {:?} and {:?} overlap", a.0, b.0));
            }
        }
    }

    // Annotations use the same selectors.
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            for problem in selector_problems(expr) {
                problems.push(format!("annotation {}: {problem}", a["name"]));
            }
        }
    }

    // Only exported metrics and series recorded by rules.yml.
    let recorded: BTreeSet<String> = recorded_names(&read(RULES)).into_iter().collect();
    let exported: BTreeSet<&str> = EXPORTED.iter().map(|m| m.0).collect();
    for (title, expr) in raw_queries(&d) {
        for name in metric_names(&expr) {
            if !exported.contains(name.as_str()) && !recorded.contains(&name) {
                problems.push(format!("{title}: {name} is neither exported nor recorded"));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
    assert!(raw_queries(&d).len() >= 30, "expected at least 30 queries");
}

#[test]
fn dashboard_reads_every_metric_family_it_promises() {
    let d = dashboard();
    let text: String = raw_queries(&d).into_iter().map(|(_, e)| e + "\n").collect();
    let used = metric_names(&text);
    // Metrics deliberately left to Explore: single MemStats values that the panels
    // already show in a more useful combination.
    let not_graphed = [
        "pprof_go_memstats_heap_objects",
        "pprof_go_memstats_stack_sys_bytes",
        "pprof_go_memstats_gc_cycles_total",
        "pprof_go_memstats_alloc_bytes_total",
        "pprof_go_memstats_go_accounted_bytes",
        "pprof_go_memstats_sys_bytes",
        "pprof_process_virtual_memory_bytes",
        "pprof_heap_alloc_cum_objects_total",
        "pprof_profile_heap_inuse_objects",
        "pprof_profile_heap_alloc_bytes_total",
        "pprof_profile_heap_alloc_objects_total",
        "pprof_profile_goroutines",
    ];
    for (name, _, _) in EXPORTED {
        if !not_graphed.contains(name) {
            assert!(used.contains(*name), "no panel reads {name}");
        }
    }
}

#[test]
fn dashboard_queries_parse() {
    let d = dashboard();
    let mut queries = panel_queries(&d);
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            queries.push((
                format!("annotation {}", a["name"]),
                substitute_variables(expr),
            ));
        }
    }
    assert!(queries.len() >= 30);
    let dir = scratch("parse");
    let path = write_queries_as_rules(&dir, &queries);
    let Some((ok, out)) = promtool(&["check", "rules", path.to_str().unwrap()]) else {
        return;
    };
    assert!(ok, "some dashboard query does not parse:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );

    // The same check rejects a broken query, so the success above means something.
    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        "groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: \"sum(pprof_up{\"\n",
    )
    .unwrap();
    let Some((ok, _)) = promtool(&["check", "rules", broken.to_str().unwrap()]) else {
        return;
    };
    assert!(!ok, "promtool accepted a broken query");
}

/// Evaluates every panel query with promtool's rule tests: synthetic series for every
/// exported metric on three targets (two pods sharing a target URL, one without
/// Kubernetes labels), rules.yml loaded, each query recorded (with "All" and with one
/// pod chosen), and each recorded series required to exist. Catches joins that match many-to-many, wrong label names and
/// selectors that match nothing.
#[test]
fn dashboard_queries_return_data() {
    let d = dashboard();
    // Every query twice: all variables on "All", and one pod chosen, as Grafana
    // interpolates a selected value (regex-escaped).
    let mut queries: Vec<(String, String)> = panel_queries(&d)
        .into_iter()
        .map(|(title, expr)| (format!("{title} (All)"), expr))
        .collect();
    for (title, expr) in raw_queries(&d) {
        let one = substitute(&expr, PROMTOOL_DURATIONS, |name| {
            let value = match name {
                "namespace" => "shop",
                "pod" => "cart-0",
                "container" => "pprof-exporter",
                "target" => "http://localhost:6060",
                other => panic!("{title}: unknown variable {other}"),
            };
            grafana_regex(&[value.to_owned()])
        });
        queries.push((format!("{title} (pod cart-0)"), one));
    }
    let dir = scratch("evaluate");

    write_queries_as_rules(&dir, &queries);

    let mut test = format!(
        "rule_files:\n  - {}\n  - dashboard-queries.yml\nevaluation_interval: 15s\ngroup_eval_order:\n  - pprof-exporter.recording\n  - pprof-exporter.alerts\n  - dashboard\ntests:\n  - interval: 15s\n    input_series:\n",
        serde_json::to_string(root().join(RULES).to_str().unwrap()).unwrap()
    );
    for identity in SYNTHETIC_TARGETS {
        for (name, labels, values) in EXPORTED {
            let identity = if WITHOUT_TARGET_LABEL.contains(name) {
                identity_without_target(identity)
            } else {
                identity.to_owned()
            };
            let sep = if labels.is_empty() { "" } else { "," };
            let series = format!("{name}{{{identity}{sep}{labels}}}");
            test.push_str(&format!(
                "      - series: {}\n        values: '{values}'\n",
                serde_json::to_string(&series).unwrap()
            ));
        }
    }
    test.push_str("    promql_expr_test:\n");
    for (i, (title, _)) in queries.iter().enumerate() {
        // absent() returns a sample exactly when the query returned nothing.
        test.push_str(&format!("      # {title}\n      - expr: absent(dashboard:query_{i})\n        eval_time: 9m\n        exp_samples: []\n"));
    }
    let path = dir.join("dashboard-queries-test.yml");
    std::fs::write(&path, &test).unwrap();
    let Some((ok, out)) = promtool(&["test", "rules", path.to_str().unwrap()]) else {
        return;
    };
    if !ok {
        let failing: Vec<String> = queries
            .iter()
            .enumerate()
            .filter(|(i, _)| out.contains(&format!("absent(dashboard:query_{i})")))
            .map(|(i, (t, e))| format!("query_{i} {t}: {e}"))
            .collect();
        panic!(
            "dashboard queries without data:\n{}\n\npromtool:\n{out}",
            failing.join("\n")
        );
    }
}

#[test]
fn docs_cover_every_alert_panel_and_recording_rule() {
    let docs = read(DOCS);
    let rules = read(RULES);
    for alert in alert_names(&rules) {
        assert!(
            docs.contains(&format!("`{alert}`")),
            "{DOCS} does not describe alert {alert}"
        );
    }
    for record in recorded_names(&rules) {
        assert!(
            docs.contains(&format!("`{record}`")),
            "{DOCS} does not list recording rule {record}"
        );
    }
    for p in panels(&dashboard()) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            docs.contains(title),
            "{DOCS} does not mention panel or row {title:?}"
        );
    }
    for file in [
        CONFIG_STATIC,
        CONFIG_KUBERNETES,
        RULES,
        RULES_TEST,
        DASHBOARD,
    ] {
        assert!(docs.contains(file), "{DOCS} does not mention {file}");
    }
}
