//! The per-target loop: scrape -> decode -> aggregate, then publish a snapshot.
//!
//! Each target runs one task that fetches its profiles one after another, so a target
//! never sees concurrent requests from the exporter. CPU-heavy decoding runs on the
//! blocking pool so the web server stays responsive. A failed profile replaces that
//! profile's series with nothing (never stale numbers passed off as fresh), counts the
//! failure by reason, and logs one line when the failure starts or changes reason, not
//! on every cycle while the target stays down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

use crate::aggregate::{self, Dropped, Family, GoroutineSummary, HeapSummary, Limits};
use crate::decode::{self, DecodeError, profile::DecodeLimits};
use crate::expose::Hub;
use crate::scrape::{FetchError, Fetcher};

/// The profiles the exporter knows how to scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfileKind {
    /// `/heap` in protobuf form.
    Heap,
    /// `/goroutine` in protobuf form.
    Goroutine,
}

impl ProfileKind {
    /// The `profile` label value.
    pub fn label(self) -> &'static str {
        match self {
            ProfileKind::Heap => "heap",
            ProfileKind::Goroutine => "goroutine",
        }
    }
}

/// Every failure reason, so that error counters exist (at 0) before the first failure
/// and `increase()` sees the first one.
pub const REASONS: [&str; 5] = ["connect", "timeout", "http_status", "too_large", "decode"];

/// How one target is scraped.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Base URL of the target.
    pub url: Url,
    /// Path prefix of the pprof handlers, e.g. `/debug/pprof`.
    pub path_prefix: String,
    /// Add `gc=1` to heap requests.
    pub heap_gc: bool,
    /// Time between cycles.
    pub interval: Duration,
    /// Output limits.
    pub limits: Limits,
    /// Decompression bound.
    pub max_decompressed_bytes: u64,
    /// Goroutine labels promoted to Prometheus labels.
    pub promoted_labels: Vec<String>,
}

impl TargetConfig {
    /// The `target` label value: the URL without a trailing slash.
    pub fn label(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }

    /// The URL of one profile endpoint.
    pub fn profile_url(&self, kind: ProfileKind) -> Url {
        let base = self.url.path().trim_end_matches('/');
        let mut url = self.url.clone();
        url.set_path(&format!("{base}{}/{}", self.path_prefix, kind.label()));
        if kind == ProfileKind::Heap && self.heap_gc {
            url.set_query(Some("gc=1"));
        }
        url
    }
}

/// Scrape bookkeeping for one profile of one target.
#[derive(Debug, Clone, Default)]
pub struct ProfileStatus {
    /// Whether the last attempt succeeded (None before the first attempt).
    pub success: Option<bool>,
    /// Wall-clock time of the last success.
    pub last_success: Option<SystemTime>,
    /// Duration of the last attempt, fetch through aggregation.
    pub duration: Option<Duration>,
    /// Bytes received in the last successful fetch.
    pub size: Option<u64>,
    /// Failures so far, by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// The reason of the current failure streak, for log de-duplication.
    pub failing_reason: Option<&'static str>,
}

/// Top entries shown on the landing page.
#[derive(Debug, Clone, Default)]
pub struct Landing {
    /// (function, flat in-use bytes, cum in-use bytes).
    pub heap: Vec<(String, i64, i64)>,
    /// (function, stack id, goroutines, stack text).
    pub stacks: Vec<(String, String, i64, String)>,
}

/// Everything the expose stage needs from one target.
#[derive(Debug, Clone, Default)]
pub struct TargetSnapshot {
    /// The `target` label value.
    pub label: String,
    /// Per profile: status, families and what limits dropped.
    pub profiles: BTreeMap<ProfileKind, (ProfileStatus, Vec<Family>, Dropped)>,
    /// Landing page tables.
    pub landing: Landing,
}

impl TargetSnapshot {
    /// An empty snapshot for a target not yet scraped.
    pub fn new(label: String, kinds: &[ProfileKind]) -> Self {
        let profiles = kinds
            .iter()
            .map(|k| (*k, (ProfileStatus::default(), Vec::new(), Vec::new())))
            .collect();
        Self {
            label,
            profiles,
            landing: Landing::default(),
        }
    }

    /// 1 when the last attempt of every profile succeeded.
    pub fn up(&self) -> bool {
        self.profiles
            .values()
            .all(|(status, _, _)| status.success == Some(true))
    }
}

/// The result of decoding and aggregating one payload.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The metric families (without the `target` label).
    pub families: Vec<Family>,
    /// What the limits dropped.
    pub dropped: Dropped,
    /// Landing page rows for a heap profile.
    pub heap: Option<Vec<(String, i64, i64)>>,
    /// Landing page rows for a goroutine profile.
    pub stacks: Option<Vec<(String, String, i64, String)>>,
}

/// Why a scrape failed: the fetch or the payload.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

impl ScrapeError {
    fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Fetch(e) => e.reason(),
            ScrapeError::Decode(DecodeError::TooLarge { .. }) => "too_large",
            ScrapeError::Decode(_) => "decode",
        }
    }
}

/// Decodes and aggregates a profile payload: pure, run on the blocking pool.
pub fn process(
    kind: ProfileKind,
    body: &[u8],
    cfg: &TargetConfig,
) -> Result<Processed, DecodeError> {
    let raw = decode::gunzip_bounded(body, cfg.max_decompressed_bytes)?;
    if !decode::is_gzip(body) && raw.first() == Some(&b'<') {
        return Err(DecodeError::NotAProfile(decode::describe_payload(&raw)));
    }
    let profile = decode::decode_profile(&raw, DecodeLimits::default())?;
    match kind {
        ProfileKind::Heap => {
            let summary = HeapSummary::from_profile(&profile)
                .map_err(|e| DecodeError::NotAProfile(e.to_string()))?;
            let (families, dropped) = summary.families(&cfg.limits);
            let heap = summary
                .top_inuse(10)
                .into_iter()
                .map(|(n, f, c)| (n.to_owned(), f, c))
                .collect();
            Ok(Processed {
                families,
                dropped,
                heap: Some(heap),
                stacks: None,
            })
        }
        ProfileKind::Goroutine => {
            if profile.sample_index("goroutine").is_none() {
                return Err(DecodeError::NotAProfile(
                    "not a goroutine profile: no \"goroutine\" sample type".into(),
                ));
            }
            let summary: GoroutineSummary = aggregate::by_stack(&profile, &cfg.promoted_labels);
            let names: Vec<&'static str> = Vec::new();
            let (families, dropped) = aggregate::goroutine_families(&summary, &names, &cfg.limits);
            let stacks = summary
                .stacks
                .iter()
                .take(10)
                .map(|g| {
                    (
                        g.function.clone(),
                        g.id.to_string(),
                        g.count,
                        aggregate::goroutines::stack_text(&g.frames, cfg.limits.stack_text),
                    )
                })
                .collect();
            Ok(Processed {
                families,
                dropped,
                heap: None,
                stacks: Some(stacks),
            })
        }
    }
}

/// Runs one target until `shutdown` changes.
pub async fn run(
    cfg: Arc<TargetConfig>,
    fetcher: Fetcher,
    snapshot: Arc<Mutex<TargetSnapshot>>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kinds = [ProfileKind::Heap, ProfileKind::Goroutine];
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        for kind in kinds {
            let started = Instant::now();
            let outcome = scrape_one(&cfg, &fetcher, kind).await;
            let elapsed = started.elapsed();
            record(&cfg, &snapshot, kind, outcome, elapsed);
            hub.refresh();
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

async fn scrape_one(
    cfg: &Arc<TargetConfig>,
    fetcher: &Fetcher,
    kind: ProfileKind,
) -> Result<(Processed, u64), ScrapeError> {
    let body = fetcher.get(&cfg.profile_url(kind)).await?;
    let size = body.len() as u64;
    let cfg2 = cfg.clone();
    let processed = tokio::task::spawn_blocking(move || process(kind, &body, &cfg2))
        .await
        .map_err(|e| DecodeError::Invalid(format!("decoder task failed: {e}")))??;
    Ok((processed, size))
}

fn record(
    cfg: &TargetConfig,
    snapshot: &Mutex<TargetSnapshot>,
    kind: ProfileKind,
    outcome: Result<(Processed, u64), ScrapeError>,
    elapsed: Duration,
) {
    let mut snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
    let label = snap.label.clone();
    let snap = &mut *snap;
    let (status, families, dropped) = snap.profiles.entry(kind).or_default();
    status.duration = Some(elapsed);
    match outcome {
        Ok((processed, size)) => {
            if let Some(reason) = status.failing_reason.take() {
                info!(target = %label, profile = kind.label(), previous_reason = reason, "scrape recovered");
            }
            status.success = Some(true);
            status.last_success = Some(SystemTime::now());
            status.size = Some(size);
            *families = processed.families;
            *dropped = processed.dropped;
            if let Some(h) = processed.heap {
                snap.landing.heap = h;
            }
            if let Some(s) = processed.stacks {
                snap.landing.stacks = s;
            }
        }
        Err(e) => {
            let reason = e.reason();
            *status.errors.entry(reason).or_default() += 1;
            if status.failing_reason != Some(reason) {
                warn!(target = %label, profile = kind.label(), reason, url = %cfg.profile_url(kind), error = %e, "scrape failed");
            }
            status.failing_reason = Some(reason);
            status.success = Some(false);
            families.clear();
            dropped.clear();
            match kind {
                ProfileKind::Heap => snap.landing.heap.clear(),
                ProfileKind::Goroutine => snap.landing.stacks.clear(),
            }
        }
    }
}
