//! Expose stage: the exporter's web server and the pre-encoded exposition.
//!
//! Endpoints:
//! - `GET /metrics`: every target's last snapshot plus self-metrics, in the Prometheus
//!   text format. Encoded after scrapes (on the blocking pool, at most every 100 ms),
//!   not per request.
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /`: a landing page linking the endpoints, with the current top functions and
//!   stacks of each target as plain HTML tables.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, VARY,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::aggregate::{Family, Kind};
use crate::probe::{ProbeResponse, Prober};
use crate::target::TargetSnapshot;
use crate::web::WebSecurity;

/// Content type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Holds every target's snapshot and the encoded exposition built from them.
#[derive(Debug, Default)]
pub struct Hub {
    targets: Vec<Arc<Mutex<TargetSnapshot>>>,
    /// The exposition, plain and gzip-compressed (Prometheus asks for gzip).
    encoded: RwLock<(Bytes, Bytes)>,
    dirty: tokio::sync::Notify,
    /// Fleet mode, whose own counters are part of the exposition.
    prober: std::sync::OnceLock<Arc<Prober>>,
}

/// gzip-compresses an exposition at the fastest level: text of this kind shrinks about
/// tenfold even so, and it is done once per refresh, not per request. Empty only if
/// compressing failed, which it does not in memory.
fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().map(Bytes::from).unwrap_or_default()
}

/// Whether an `Accept-Encoding` value admits gzip (`gzip` or `*`, without `q=0`).
pub fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// Shortest time between two encodings: with many targets finishing profiles one after
/// another, their refresh requests fold into one encoding.
pub const REFRESH_GAP: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock must not stop the exporter from serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub over the given target snapshots; encodes the initial exposition.
    pub fn new(targets: Vec<Arc<Mutex<TargetSnapshot>>>) -> Self {
        let hub = Self {
            targets,
            encoded: RwLock::new((Bytes::new(), Bytes::new())),
            dirty: tokio::sync::Notify::new(),
            prober: std::sync::OnceLock::new(),
        };
        hub.refresh_now();
        hub
    }

    /// The current encoded exposition.
    pub fn metrics(&self) -> Bytes {
        self.encoded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The current exposition, gzip-compressed.
    pub fn metrics_gzip(&self) -> Bytes {
        self.encoded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Adds fleet mode's counters to the exposition (once, at start-up).
    pub fn set_prober(&self, prober: Arc<Prober>) {
        let _ = self.prober.set(prober);
        self.refresh_now();
    }

    /// Asks for a new encoding after a snapshot changed; [`Hub::run_refresher`] does it
    /// off the thread that serves requests, folding requests that arrive meanwhile.
    pub fn refresh(&self) {
        self.dirty.notify_one();
    }

    /// Re-encodes the exposition from the current snapshots, now. Each target's lock is
    /// held only while its own series are copied.
    pub fn refresh_now(&self) {
        let extra = self
            .prober
            .get()
            .map(|p| p.self_families())
            .unwrap_or_default();
        let encoded = encode_snapshots(true, &extra, self.targets.iter().map(|t| lock(t)));
        let compressed = gzip(&encoded);
        *self.encoded.write().unwrap_or_else(|p| p.into_inner()) = (encoded, compressed);
    }

    /// Encodes on the blocking pool whenever a refresh was asked for, at most once per
    /// [`REFRESH_GAP`], until `shutdown` changes.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.changed() => return,
            }
            let hub = self.clone();
            if tokio::task::spawn_blocking(move || hub.refresh_now())
                .await
                .is_err()
            {
                // The encoder panicked: the previous exposition stays; keep going.
                tracing::error!("encoding /metrics failed; serving the previous exposition");
            }
            tokio::time::sleep(REFRESH_GAP).await;
        }
    }

    /// Renders the landing page.
    pub fn landing_page(&self) -> String {
        let mut html = String::from(concat!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>pprof-exporter</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}",
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}td.n{text-align:right}",
            "code{font-size:90%}</style></head><body><h1>pprof-exporter</h1><p>Version ",
            env!("CARGO_PKG_VERSION"),
            ". <a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p>"
        ));
        for t in &self.targets {
            let snap = lock(t);
            let _ = write!(
                html,
                "<h2>{} — {}</h2>",
                escape(&snap.label),
                if snap.up() { "up" } else { "down" }
            );
            for (kind, (status, _, _)) in &snap.profiles {
                let age = status
                    .last_success
                    .and_then(|t| t.elapsed().ok())
                    .map_or("never".to_owned(), |d| format!("{}s ago", d.as_secs()));
                let _ = write!(
                    html,
                    "<p>{}: last success {age}; errors {}</p>",
                    kind.label(),
                    status.errors.values().sum::<u64>()
                );
            }
            html.push_str("<h3>Top functions by in-use heap</h3><table><tr><th>function</th><th>flat bytes</th><th>cum bytes</th></tr>");
            for (f, flat, cum) in &snap.landing.heap {
                let _ = write!(
                    html,
                    "<tr><td><code>{}</code></td><td class=n>{flat}</td><td class=n>{cum}</td></tr>",
                    escape(f)
                );
            }
            html.push_str("</table><h3>Top goroutine stacks</h3><table><tr><th>goroutines</th><th>function</th><th>stack_id</th><th>stack (root first)</th></tr>");
            for (f, id, n, text) in &snap.landing.stacks {
                let _ = write!(
                    html,
                    "<tr><td class=n>{n}</td><td><code>{}</code></td><td><code>{id}</code></td><td><code>{}</code></td></tr>",
                    escape(f),
                    escape(text)
                );
            }
            html.push_str("</table>");
        }
        html.push_str("</body></html>");
        html
    }
}

/// Encodes target snapshots (their self-metrics and profile families), and with
/// `build_info` the exporter's build info, plus `extra` families without a target
/// label, in the text format. Families of one name are merged across targets, in the
/// order their names were first seen.
pub fn encode_snapshots<S: std::ops::Deref<Target = TargetSnapshot>>(
    build_info: bool,
    extra: &[Family],
    snapshots: impl IntoIterator<Item = S>,
) -> Bytes {
    let mut e = Exposition::default();
    if build_info {
        e.push_family(
            None,
            &Family {
                name: "pprof_exporter_build_info",
                help: "Always 1: the exporter's version.",
                kind: Kind::Gauge,
                series: vec![crate::aggregate::Series {
                    labels: vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
                    value: 1.0,
                }],
            },
        );
    }
    for f in extra {
        e.push_family(None, f);
    }
    for snap in snapshots {
        let snap = &*snap;
        for f in self_families(snap) {
            e.push_family(Some(&snap.label), &f);
        }
        for (_, fams, _) in snap.profiles.values() {
            for f in fams {
                e.push_family(Some(&snap.label), f);
            }
        }
    }
    Bytes::from(e.finish())
}

/// Encodes families for one target in the text format, as `/metrics` would show them
/// (used by the golden tests and the encode benchmark).
pub fn encode(target: &str, families: &[Family]) -> String {
    let mut e = Exposition::default();
    for f in families {
        e.push_family(Some(target), f);
    }
    // Every piece written is a `str`.
    String::from_utf8(e.finish()).unwrap_or_default()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The text exposition under construction, written straight from the families: one
/// buffer of sample lines per family name, in first-seen order, joined under their
/// `# HELP` and `# TYPE` lines at the end. A refresh of 2,000 series allocates a few
/// dozen growing buffers, not an object per series and label.
#[derive(Default)]
struct Exposition {
    groups: Vec<Group>,
    index: HashMap<&'static str, usize>,
}

struct Group {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    lines: Vec<u8>,
}

impl Exposition {
    /// Writes the series of `f`, each with a `target` label first when one is given.
    fn push_family(&mut self, target: Option<&str>, f: &Family) {
        // An empty family says nothing (e.g. no last-success timestamp before the
        // first success), and the format has no way to show one.
        if f.series.is_empty() {
            return;
        }
        let i = *self.index.entry(f.name).or_insert_with(|| {
            self.groups.push(Group {
                name: f.name,
                help: f.help,
                kind: f.kind,
                lines: Vec::new(),
            });
            self.groups.len() - 1
        });
        let out = &mut self.groups[i].lines;
        for s in &f.series {
            out.extend_from_slice(f.name.as_bytes());
            let mut sep = b'{';
            if let Some(t) = target {
                label(out, sep, "target", t);
                sep = b',';
            }
            for (k, v) in &s.labels {
                label(out, sep, k, v);
                sep = b',';
            }
            if sep == b',' {
                out.push(b'}');
            }
            out.push(b' ');
            value(out, s.value);
            out.push(b'\n');
        }
    }

    /// The exposition of every family pushed.
    fn finish(self) -> Vec<u8> {
        let size: usize = (self.groups.iter())
            .map(|g| 2 * g.name.len() + 2 * g.help.len() + g.lines.len() + 32)
            .sum();
        let mut out = Vec::with_capacity(size);
        for g in self.groups {
            if !g.help.is_empty() {
                out.extend_from_slice(b"# HELP ");
                out.extend_from_slice(g.name.as_bytes());
                out.push(b' ');
                escaped(&mut out, g.help, false);
                out.push(b'\n');
            }
            out.extend_from_slice(b"# TYPE ");
            out.extend_from_slice(g.name.as_bytes());
            out.extend_from_slice(match g.kind {
                Kind::Gauge => b" gauge\n",
                Kind::Counter => b" counter\n",
            });
            out.extend_from_slice(&g.lines);
        }
        out
    }
}

/// `sep` (`{` or `,`), then `name="value"` with the value escaped.
fn label(out: &mut Vec<u8>, sep: u8, name: &str, value: &str) {
    out.push(sep);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escaped(out, value, true);
    out.push(b'"');
}

/// `text` with backslash and newline escaped (and the double quote, in a label value),
/// as the text format asks.
fn escaped(out: &mut Vec<u8>, text: &str, quote: bool) {
    let mut rest = text.as_bytes();
    while let Some(i) = rest
        .iter()
        .position(|&b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(match rest[i] {
            b'\n' => b"\\n",
            b'\\' => b"\\\\",
            _ => b"\\\"",
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// A sample value as the text format takes it: plain decimal notation with the fewest
/// digits that read back as the same float, or `NaN`, `+Inf`, `-Inf`.
fn value(out: &mut Vec<u8>, v: f64) {
    use std::io::Write as _;
    // Counts and byte sizes are whole numbers, which print as integers alike.
    if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        let _ = write!(out, "{}", v as i64);
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The exporter's own metrics about one target.
fn self_families(snap: &TargetSnapshot) -> Vec<Family> {
    let mut up = Family::new(
        "pprof_up",
        Kind::Gauge,
        "1 if the last scrape of every profile of this target succeeded, else 0.",
    );
    up.push(Vec::new(), if snap.up() { 1.0 } else { 0.0 });
    let mut success = Family::new(
        "pprof_scrape_success",
        Kind::Gauge,
        "1 if the last scrape of this profile succeeded, else 0.",
    );
    let mut duration = Family::new(
        "pprof_scrape_duration_seconds",
        Kind::Gauge,
        "Time the last scrape of this profile took: fetch, decode and aggregation.",
    );
    let mut errors = Family::new(
        "pprof_scrape_errors_total",
        Kind::Counter,
        "Failed scrapes by reason: connect, timeout, http_status, too_large, decode.",
    );
    let mut skipped = Family::new(
        "pprof_scrape_skipped_total",
        Kind::Counter,
        "Collections skipped on purpose, e.g. a debug=2 dump while the goroutine count is above --goroutine.states-max.",
    );
    let mut spacing = Family::new(
        "pprof_scrape_interval_seconds",
        Kind::Gauge,
        "Time between fetches of this profile: its interval, or longer while --scrape.target-budget spaces out a profile that is slow to serve.",
    );
    let mut size = Family::new(
        "pprof_profile_size_bytes",
        Kind::Gauge,
        "Size of the last profile received, as sent (compressed).",
    );
    let mut last = Family::new(
        "pprof_last_scrape_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last successful scrape of this profile; the series of a profile are as old as this.",
    );
    let mut dropped = Family::new(
        "pprof_series_dropped",
        Kind::Gauge,
        "Series that --limits.top folded into function=\"(other)\" (or left out, for cumulative metrics) in the last scrape.",
    );
    for (kind, (status, _, drops)) in &snap.profiles {
        let p = || ("profile", kind.label().to_owned());
        if let Some(ok) = status.success {
            success.push(vec![p()], if ok { 1.0 } else { 0.0 });
        }
        if let Some(d) = status.duration {
            duration.push(vec![p()], d.as_secs_f64());
        }
        for &reason in kind.reasons() {
            let n = status.errors.get(reason).copied().unwrap_or(0);
            errors.push(vec![p(), ("reason", reason.to_owned())], n as f64);
        }
        if let Some(g) = status.spacing {
            spacing.push(vec![p()], g.as_secs_f64());
        }
        if let Some(s) = status.size {
            size.push(vec![p()], s as f64);
        }
        if let Some(t) = status.last_success {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            last.push(vec![p()], secs);
        }
        for (reason, n) in &status.skipped {
            skipped.push(vec![p(), ("reason", (*reason).to_owned())], *n as f64);
        }
        for (metric, n) in drops {
            dropped.push(vec![("metric", (*metric).to_owned())], *n as f64);
        }
    }
    vec![
        up, success, duration, errors, skipped, spacing, size, last, dropped,
    ]
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Everything the web server needs.
#[derive(Debug, Clone)]
pub struct WebContext {
    /// The daemon targets' exposition.
    pub hub: Arc<Hub>,
    /// Fleet mode, when enabled.
    pub prober: Option<Arc<Prober>>,
    /// TLS, basic auth and extra headers.
    pub security: WebSecurity,
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// Routes one request.
pub async fn handle<B>(ctx: &WebContext, req: &Request<B>) -> Response<Full<Bytes>> {
    let mut resp = route(ctx, req).await;
    for (k, v) in &ctx.security.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

async fn route<B>(ctx: &WebContext, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n",
        );
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return response(StatusCode::OK, PLAIN, "ok\n");
    }
    if let Some(users) = &ctx.security.auth {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let users = users.clone();
        // bcrypt takes tens of milliseconds: keep it off the thread serving requests.
        let ok = tokio::task::spawn_blocking(move || users.check(header.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            let mut resp = response(StatusCode::UNAUTHORIZED, PLAIN, "unauthorized\n");
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"pprof-exporter\""),
            );
            return resp;
        }
    }
    match path {
        "/metrics" => {
            let gzip_ok = req
                .headers()
                .get(ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(accepts_gzip);
            let compressed = ctx.hub.metrics_gzip();
            // Empty only if compressing failed: the plain text then serves.
            if gzip_ok && !compressed.is_empty() {
                let mut resp = response(StatusCode::OK, TEXT_FORMAT, compressed);
                resp.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                resp.headers_mut()
                    .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                return resp;
            }
            response(StatusCode::OK, TEXT_FORMAT, ctx.hub.metrics())
        }
        "/probe" => {
            let Some(prober) = &ctx.prober else {
                return response(
                    StatusCode::FORBIDDEN,
                    PLAIN,
                    "probing is disabled: start the exporter with --probe.allow\n",
                );
            };
            let scrape_timeout = req
                .headers()
                .get("x-prometheus-scrape-timeout-seconds")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0 && *v < 86_400.0)
                .map(Duration::from_secs_f64);
            let outcome = prober.probe(req.uri().query(), scrape_timeout).await;
            // The probe counters changed.
            ctx.hub.refresh();
            match outcome {
                ProbeResponse::Metrics(body) => response(StatusCode::OK, TEXT_FORMAT, body),
                ProbeResponse::BadRequest(m) => {
                    response(StatusCode::BAD_REQUEST, PLAIN, format!("{m}\n"))
                }
                ProbeResponse::Forbidden(m) => {
                    response(StatusCode::FORBIDDEN, PLAIN, format!("{m}\n"))
                }
                ProbeResponse::Busy(m) => {
                    response(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{m}\n"))
                }
            }
        }
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            ctx.hub.landing_page(),
        ),
        _ => response(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` flips, then lets open connections finish for up to
/// `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    ctx: WebContext,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of fds and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let ctx = ctx.clone();
        // Counted before the handshake, so a shutdown waits for it too.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service_ctx = ctx.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = service_ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, &req).await) }
            });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                b
            };
            let result = match &ctx.security.tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!("connections drained"),
        _ = tokio::time::sleep(drain) => info!("drain time limit reached; closing open connections"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same families through `prometheus`'s own text encoder: per series objects,
    /// merged by name in first-seen order, a `target` label first.
    fn crate_encoded(targets: &[(Option<&str>, &[Family])]) -> String {
        use prometheus::Encoder as _;
        use prometheus::proto::{self, MetricFamily, MetricType};
        let pair = |k: &str, v: &str| {
            let mut l = proto::LabelPair::default();
            l.set_name(k.to_owned());
            l.set_value(v.to_owned());
            l
        };
        let mut list: Vec<MetricFamily> = Vec::new();
        let mut index = HashMap::new();
        for (target, families) in targets {
            for f in families.iter().filter(|f| !f.series.is_empty()) {
                let i = *index.entry(f.name).or_insert_with(|| {
                    let mut mf = MetricFamily::default();
                    mf.set_name(f.name.to_owned());
                    mf.set_help(f.help.to_owned());
                    mf.set_field_type(match f.kind {
                        Kind::Gauge => MetricType::GAUGE,
                        Kind::Counter => MetricType::COUNTER,
                    });
                    list.push(mf);
                    list.len() - 1
                });
                for s in &f.series {
                    let mut labels: Vec<_> = target.iter().map(|t| pair("target", t)).collect();
                    labels.extend(s.labels.iter().map(|(k, v)| pair(k, v)));
                    let mut m = proto::Metric::from_label(labels);
                    if f.kind == Kind::Gauge {
                        let mut g = proto::Gauge::default();
                        g.set_value(s.value);
                        m.set_gauge(g);
                    } else {
                        let mut c = proto::Counter::default();
                        c.set_value(s.value);
                        m.set_counter(c);
                    }
                    list[i].mut_metric().push(m);
                }
            }
        }
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&list, &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_exposition_is_what_the_prometheus_crate_writes() {
        // Label values and help with every character the format escapes, values of
        // every shape but the infinities (which the crate writes as `inf`).
        const NAMES: [&str; 4] = ["pprof_a", "pprof_b_bytes", "pprof_c_total", "pprof_d"];
        const HELPS: [&str; 4] = ["", "plain help", "back\\slash and\nnewline", "a \"quote\""];
        let texts = [
            "",
            "main.main",
            "a\"b",
            "c\\d",
            "e\nf",
            "\\\"\n",
            "ünï",
            "x y{z}=,",
        ];
        let values = [
            0.0,
            -0.0,
            1.0,
            -7.0,
            2.5,
            1e15,
            1e16,
            1e21,
            1e-7,
            123456789.125,
            f64::NAN,
            f64::MAX,
            f64::MIN_POSITIVE,
            9007199254740993.0,
            -1e300,
        ];
        let mut rng = crate::synth::Rng::new(38);
        let mut next = |n: usize| rng.below(n);
        for round in 0..200 {
            let mut targets: Vec<(Option<String>, Vec<Family>)> = Vec::new();
            for t in 0..1 + next(3) {
                let label = (t > 0 || round % 2 == 0).then(|| texts[next(texts.len())].to_owned());
                let mut families = Vec::new();
                for _ in 0..next(6) {
                    let n = next(NAMES.len());
                    let mut f = Family::new(
                        NAMES[n],
                        if n % 2 == 0 {
                            Kind::Gauge
                        } else {
                            Kind::Counter
                        },
                        HELPS[n],
                    );
                    for _ in 0..next(4) {
                        let labels = (0..next(3))
                            .map(|i| {
                                (
                                    ["fn", "stack_id", "le"][i],
                                    texts[next(texts.len())].to_owned(),
                                )
                            })
                            .collect();
                        f.push(labels, values[next(values.len())]);
                    }
                    families.push(f);
                }
                targets.push((label, families));
            }
            let view: Vec<(Option<&str>, &[Family])> = targets
                .iter()
                .map(|(t, f)| (t.as_deref(), &f[..]))
                .collect();
            let mut ours = Exposition::default();
            for (t, families) in &view {
                for f in families.iter() {
                    ours.push_family(*t, f);
                }
            }
            let text = String::from_utf8(ours.finish()).unwrap();
            assert_eq!(text, crate_encoded(&view), "round {round}");
        }
        let mut inf = Family::new("pprof_a", Kind::Gauge, "");
        inf.push(vec![], f64::INFINITY);
        inf.push(vec![], f64::NEG_INFINITY);
        assert_eq!(
            encode("t", &[inf]),
            "# TYPE pprof_a gauge\npprof_a{target=\"t\"} +Inf\npprof_a{target=\"t\"} -Inf\n"
        );
    }

    #[test]
    fn gzip_negotiation() {
        for yes in [
            "gzip",
            "gzip, deflate",
            "deflate;q=1, GZIP;q=0.5",
            "*",
            "br, gzip",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
        let text = "pprof_up{target=\"a\"} 1\n".repeat(1000);
        let z = gzip(text.as_bytes());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut back)
            .unwrap();
        assert_eq!(back, text);
    }
}
