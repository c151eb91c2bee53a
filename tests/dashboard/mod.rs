//! Reading the Grafana dashboard the way Grafana would: its panels (those of collapsed
//! rows included), their PromQL queries, its template variables, and Grafana's
//! variable substitution, so that the queries can be run by promtool or by a real
//! Prometheus.
//!
//! Shared by `tests/rules.rs` (lint and promtool evaluation on synthetic series) and
//! `tests/dashboard_live.rs` (a real Prometheus scraping the real exporter).
#![allow(dead_code)]

use serde_json::Value;

use crate::common::root;

/// The dashboard file, relative to the repository root.
pub const DASHBOARD: &str = "dashboards/pprof-exporter.json";

/// The parsed dashboard.
pub fn dashboard() -> Value {
    let path = root().join(DASHBOARD);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

/// Every panel of the dashboard, rows included, and the panels nested in collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dashboard["panels"]
        .as_array()
        .expect("dashboard has panels")
    {
        all.push(p);
        if let Some(nested) = p["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// The row each panel sits in, by panel title, in dashboard order: a panel belongs to
/// the nearest row above it (or to the row that holds it, when collapsed).
pub fn panels_by_row(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for p in panels(dashboard) {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        if p["type"] == "row" {
            row = title;
        } else {
            out.push((row.clone(), title));
        }
    }
    out
}

/// Values for Grafana's built-in time variables.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    /// `$__rate_interval`.
    pub rate_interval: &'static str,
    /// `$__interval`.
    pub interval: &'static str,
    /// `$__range`.
    pub range: &'static str,
}

/// What promtool's rule tests use: 15 s samples over 10 minutes.
pub const PROMTOOL_DURATIONS: Durations = Durations {
    rate_interval: "1m",
    interval: "1m",
    range: "1h",
};

/// Replaces Grafana's variables in a query so that Prometheus can run it:
/// `$__rate_interval`, `$__interval` and `$__range` from `durations`, and every
/// dashboard variable (`$name`, `${name}` or `${name:format}`) by `value_of(name)`,
/// which must already be in the form Grafana interpolates (e.g. `.*` for "All").
/// Any other built-in (`$__...`) panics, so a new one cannot slip through unnoticed.
pub fn substitute(expr: &str, durations: Durations, value_of: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {expr:?}"));
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match name {
            "" => out.push('$'),
            "__rate_interval" => out.push_str(durations.rate_interval),
            "__interval" => out.push_str(durations.interval),
            "__range" => out.push_str(durations.range),
            n if n.starts_with("__") => panic!("unexpected Grafana variable ${n} in {expr:?}"),
            n => out.push_str(&value_of(n)),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// [`substitute`] with [`PROMTOOL_DURATIONS`] and every dashboard variable set to
/// "All", which Grafana sends as `.*`. The dashboard only uses variables inside `=~`
/// matchers, where `.*` matches anything, an absent label included.
pub fn substitute_variables(expr: &str) -> String {
    substitute(expr, PROMTOOL_DURATIONS, |_| ".*".to_owned())
}

/// Every query of every panel of `dashboard` (the parsed dashboard JSON), as
/// (panel title, PromQL expression) with Grafana's variables replaced by
/// [`substitute_variables`]: `$__rate_interval` by `1m`, each template variable by `.*`.
///
/// Rows are skipped; panels inside collapsed rows are included. The annotation query
/// is not a panel query and is not returned.
pub fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    raw_queries(dashboard)
        .into_iter()
        .map(|(title, expr)| (title, substitute_variables(&expr)))
        .collect()
}

/// Like [`panel_queries`], without substitution.
pub fn raw_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for p in panels(dashboard) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                queries.push((title.clone(), expr.to_owned()));
            }
        }
    }
    queries
}

/// One query variable of the dashboard: `label_values(SELECTOR, LABEL)`.
#[derive(Debug, Clone)]
pub struct QueryVariable {
    pub name: String,
    /// The series selector, with Grafana variables still in it.
    pub selector: String,
    /// The label whose values the variable offers.
    pub label: String,
}

/// The dashboard's query variables in the order Grafana resolves them (each may refer
/// to those before it). Panics on a query variable that is not `label_values(...)`.
pub fn query_variables(dashboard: &Value) -> Vec<QueryVariable> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default()
            .trim();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(...): {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {name}: label_values without a label: {query}"));
        out.push(QueryVariable {
            name,
            selector: selector.trim().to_owned(),
            label: label.trim().to_owned(),
        });
    }
    out
}

/// How Grafana interpolates the selected values of a multi-value variable into a
/// Prometheus query: regex metacharacters escaped (with the backslash doubled, since
/// the value lands inside a PromQL string), one value as is, several as `(a|b)`.
pub fn grafana_regex(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            let mut s = String::with_capacity(v.len());
            for c in v.chars() {
                match c {
                    '\\' => s.push_str(r"\\\\"),
                    '$' | '^' | '*' | '+' | '?' | '.' | '(' | ')' | '|' | '{' | '}' | '[' | ']' => {
                        s.push_str(r"\\");
                        s.push(c);
                    }
                    c => s.push(c),
                }
            }
            s
        })
        .collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join("|")),
    }
}
