//! Fleet mode: `GET /probe?target=host:port` scrapes that target on request and
//! answers with its metrics, so one exporter serves many Go services that Prometheus
//! discovers itself.
//!
//! Safety first: a target must match one of the `--probe.allow` patterns (whole
//! `host:port`), checked before anything else; without patterns the endpoint is off.
//! Each target is scraped by one request at a time (later probes of the same target
//! wait for it), and a result is served again for `--probe.cache-ttl`, so two
//! Prometheus servers of an HA pair cost the target one fetch per interval. State per
//! target (when each profile is due, growth streaks) is kept for targets probed in the
//! last [`FORGET_AFTER`], at most `--probe.max-targets` of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use crate::aggregate::{Family, Kind};
use crate::config::{AllowPattern, parse_target};
use crate::scrape::Fetcher;
use crate::target::{TargetConfig, TargetSnapshot, TargetState};

/// Targets not probed for this long are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Time kept back from Prometheus's scrape timeout for encoding and the network.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// What a probe request gets.
#[derive(Debug)]
pub enum ProbeResponse {
    /// The target's metrics (fresh, or from the cache).
    Metrics(Bytes),
    /// HTTP 400: no or unparseable `target`.
    BadRequest(String),
    /// HTTP 403: probing is off or the target is not allowed.
    Forbidden(String),
    /// HTTP 503: too many targets, or the target's previous probe is still running.
    Busy(String),
}

/// The outcomes counted in `pprof_probe_requests_total`.
const OUTCOMES: [&str; 5] = ["scraped", "cached", "bad_request", "forbidden", "busy"];

struct Entry {
    state: TargetState,
    snapshot: Mutex<TargetSnapshot>,
    cached: Option<(Instant, Bytes)>,
}

struct Slot {
    last_used: Instant,
    entry: Arc<tokio::sync::Mutex<Entry>>,
}

/// The fleet endpoint's state.
pub struct Prober {
    allow: Vec<AllowPattern>,
    template: TargetConfig,
    fetcher: Fetcher,
    ttl: Duration,
    max_targets: usize,
    slots: Mutex<HashMap<String, Slot>>,
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field(
                "allow",
                &self.allow.iter().map(|a| &a.source).collect::<Vec<_>>(),
            )
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `host:port` of a URL, the string `--probe.allow` patterns match (IPv6 in brackets).
pub fn host_port(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{host}:{port}"))
}

impl Prober {
    /// A prober; `template` supplies everything but the URL (its process lookup is
    /// ignored: probed targets are remote). With no patterns every probe is refused.
    pub fn new(
        allow: Vec<AllowPattern>,
        template: TargetConfig,
        fetcher: Fetcher,
        ttl: Duration,
        max_targets: usize,
    ) -> Self {
        let mut template = template;
        template.process = None;
        // Heap and goroutine profiles are fetched on every probe past the cache time.
        template.interval = ttl;
        Self {
            allow,
            template,
            fetcher,
            ttl,
            max_targets,
            slots: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(OUTCOMES.iter().map(|o| (*o, 0)).collect()),
        }
    }

    /// Whether any pattern is configured.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }

    fn count(&self, outcome: &'static str) {
        *lock(&self.outcomes).entry(outcome).or_default() += 1;
    }

    /// Checks a `/probe` query string; Ok is the normalised target URL. No connection
    /// is made here.
    pub fn admit(&self, query: Option<&str>) -> Result<Url, ProbeResponse> {
        let raw = query
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "target")
                    .map(|(_, v)| v.into_owned())
            })
            .filter(|t| !t.is_empty());
        let Some(raw) = raw else {
            return Err(ProbeResponse::BadRequest(
                "missing target parameter: /probe?target=host:port".into(),
            ));
        };
        if !self.enabled() {
            return Err(ProbeResponse::Forbidden(
                "probing is disabled: start the exporter with --probe.allow".into(),
            ));
        }
        let url = parse_target(&raw).map_err(ProbeResponse::BadRequest)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ProbeResponse::BadRequest(
                "credentials in the target are not accepted; use --target.config.file".into(),
            ));
        }
        let Some(hp) = host_port(&url) else {
            return Err(ProbeResponse::BadRequest(format!(
                "target {raw:?} has no host"
            )));
        };
        if !self.allow.iter().any(|a| a.matches(&hp)) {
            return Err(ProbeResponse::Forbidden(format!(
                "target {hp} does not match any --probe.allow pattern"
            )));
        }
        Ok(url)
    }

    /// Answers one probe. `scrape_timeout` is Prometheus's own limit for this request
    /// (its `X-Prometheus-Scrape-Timeout-Seconds` header), if it sent one.
    pub async fn probe(
        &self,
        query: Option<&str>,
        scrape_timeout: Option<Duration>,
    ) -> ProbeResponse {
        let (response, cached) = self.probe_inner(query, scrape_timeout).await;
        self.count(match &response {
            ProbeResponse::Metrics(_) if cached => "cached",
            ProbeResponse::Metrics(_) => "scraped",
            ProbeResponse::BadRequest(_) => "bad_request",
            ProbeResponse::Forbidden(_) => "forbidden",
            ProbeResponse::Busy(_) => "busy",
        });
        response
    }

    /// The response, and whether it came from the cache.
    async fn probe_inner(
        &self,
        query: Option<&str>,
        scrape_timeout: Option<Duration>,
    ) -> (ProbeResponse, bool) {
        let url = match self.admit(query) {
            Ok(u) => u,
            Err(r) => return (r, false),
        };
        let mut budget = self.fetcher.config().timeout;
        if let Some(t) = scrape_timeout {
            budget = budget.min(
                t.saturating_sub(TIMEOUT_MARGIN)
                    .max(Duration::from_millis(500)),
            );
        }
        let deadline = Instant::now() + budget;
        let entry = match self.slot(&url) {
            Ok(e) => e,
            Err(r) => return (r, false),
        };
        let Ok(mut entry) = tokio::time::timeout_at(deadline.into(), entry.lock()).await else {
            let msg = format!("the previous probe of {url} is still running");
            return (ProbeResponse::Busy(msg), false);
        };
        if let Some((at, body)) = &entry.cached {
            if at.elapsed() < self.ttl {
                return (ProbeResponse::Metrics(body.clone()), true);
            }
        }
        let entry = &mut *entry;
        entry
            .state
            .cycle(&entry.snapshot, Some(deadline), || {}, None)
            .await;
        let body = crate::expose::encode_snapshots(false, &[], [&*lock(&entry.snapshot)]);
        entry.cached = Some((Instant::now(), body.clone()));
        (ProbeResponse::Metrics(body), false)
    }

    /// The state slot of `url`, created if new; forgets idle targets first.
    fn slot(&self, url: &Url) -> Result<Arc<tokio::sync::Mutex<Entry>>, ProbeResponse> {
        let key = url.as_str().to_owned();
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get_mut(&key) {
            s.last_used = now;
            return Ok(s.entry.clone());
        }
        slots.retain(|_, s| {
            now.duration_since(s.last_used) < FORGET_AFTER || Arc::strong_count(&s.entry) > 1
        });
        if slots.len() >= self.max_targets {
            // Make room by forgetting the least recently probed idle target.
            let oldest = slots
                .iter()
                .filter(|(_, s)| Arc::strong_count(&s.entry) == 1)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    slots.remove(&k);
                }
                None => {
                    return Err(ProbeResponse::Busy(format!(
                        "{} probe targets are in use (--probe.max-targets)",
                        self.max_targets
                    )));
                }
            }
        }
        let mut cfg = self.template.clone();
        cfg.url = url.clone();
        let cfg = Arc::new(cfg);
        let snapshot = TargetSnapshot::new(cfg.label(), &cfg.kinds());
        let entry = Arc::new(tokio::sync::Mutex::new(Entry {
            state: TargetState::new(cfg, self.fetcher.clone()),
            snapshot: Mutex::new(snapshot),
            cached: None,
        }));
        slots.insert(
            key,
            Slot {
                last_used: now,
                entry: entry.clone(),
            },
        );
        Ok(entry)
    }

    /// `pprof_probe_requests_total` and `pprof_probe_targets`, for the exporter's own
    /// /metrics.
    pub fn self_families(&self) -> Vec<Family> {
        let mut requests = Family::new(
            "pprof_probe_requests_total",
            Kind::Counter,
            "Requests to /probe by outcome: scraped, cached (answered from the cache), bad_request, forbidden (not allowed by --probe.allow), busy.",
        );
        for (outcome, n) in lock(&self.outcomes).iter() {
            requests.push(vec![("outcome", (*outcome).to_owned())], *n as f64);
        }
        let mut targets = Family::new(
            "pprof_probe_targets",
            Kind::Gauge,
            "Probe targets whose state is kept.",
        );
        targets.push(Vec::new(), lock(&self.slots).len() as f64);
        vec![requests, targets]
    }
}
