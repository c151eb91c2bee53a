//! The per-target loop: scrape -> decode -> aggregate, then publish a snapshot.
//!
//! Each target runs one task that fetches its profiles one after another, so a target
//! never sees concurrent requests from the exporter. CPU-heavy decoding runs on the
//! blocking pool so the web server stays responsive. A failed profile replaces that
//! profile's series with nothing (never stale numbers passed off as fresh), counts the
//! failure by reason, and logs one line when the failure starts or changes reason, not
//! on every cycle while the target stays down.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

use crate::aggregate::goroutines::StackId;
use crate::aggregate::{self, Dropped, Family, GoroutineSummary, HeapSummary, Kind, Limits};
use crate::decode::{self, DecodeError, profile::DecodeLimits, stream};
use crate::expose::Hub;
use crate::process::{PidSource, ProcessError, ProcessWatcher};
use crate::scrape::{FetchError, Fetcher};

/// What the exporter collects per target: five pprof endpoints and the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfileKind {
    /// `heap` in protobuf form.
    Heap,
    /// `goroutine` in protobuf form.
    Goroutine,
    /// `goroutineleak` in protobuf form (Go >= 1.26).
    GoroutineLeak,
    /// `goroutine?debug=2` text: states and wait times.
    GoroutineStates,
    /// `heap?debug=1` text, for its MemStats footer.
    MemStats,
    /// The target's `/proc` entries.
    Process,
}

impl ProfileKind {
    /// Every kind, in the order a cycle collects them: the goroutine count comes before
    /// the decision to take a debug=2 dump.
    pub const ALL: [ProfileKind; 6] = [
        ProfileKind::Heap,
        ProfileKind::Goroutine,
        ProfileKind::GoroutineLeak,
        ProfileKind::GoroutineStates,
        ProfileKind::MemStats,
        ProfileKind::Process,
    ];

    /// The `profile` label value.
    pub fn label(self) -> &'static str {
        match self {
            ProfileKind::Heap => "heap",
            ProfileKind::Goroutine => "goroutine",
            ProfileKind::GoroutineLeak => "goroutineleak",
            ProfileKind::GoroutineStates => "goroutine_states",
            ProfileKind::MemStats => "memstats",
            ProfileKind::Process => "process",
        }
    }

    /// Whether a failure of this kind makes `pprof_up` 0. The optional, opt-in and
    /// local extras do not: a target is up when its profiles can be read.
    pub fn required(self) -> bool {
        matches!(self, ProfileKind::Heap | ProfileKind::Goroutine)
    }

    /// The failure reasons this kind can report.
    pub fn reasons(self) -> &'static [&'static str] {
        match self {
            ProfileKind::Process => &PROCESS_REASONS,
            _ => &REASONS,
        }
    }

    /// Endpoint (under the pprof prefix) and query.
    fn endpoint(self, heap_gc: bool) -> (&'static str, Option<&'static str>) {
        match self {
            ProfileKind::Heap => ("heap", heap_gc.then_some("gc=1")),
            ProfileKind::Goroutine => ("goroutine", None),
            ProfileKind::GoroutineLeak => ("goroutineleak", None),
            ProfileKind::GoroutineStates => ("goroutine", Some("debug=2")),
            ProfileKind::MemStats => ("heap", Some("debug=1")),
            ProfileKind::Process => ("", None),
        }
    }
}

/// Every failure reason of a pprof fetch, so that error counters exist (at 0) before
/// the first failure and `increase()` sees the first one.
pub const REASONS: [&str; 6] = [
    "connect",
    "timeout",
    "http_status",
    "too_large",
    "decode",
    "credentials",
];

/// Failure reasons of the process lookup.
pub const PROCESS_REASONS: [&str; 5] = ["not_found", "not_visible", "permission", "pid_file", "io"];

/// How long a target that answered 404 for the goroutine-leak profile is left alone.
pub const LEAK_RECHECK: Duration = Duration::from_secs(3600);

/// The gap up to which `--scrape.target-budget` may space a profile's fetches out even
/// when ten intervals are shorter. At 1 s scrapes, a cap of ten intervals would cut the
/// budget short for any profile that takes over 25 ms to serve (at the default 0.0025);
/// a minute keeps it for profiles up to 150 ms, and still bounds the wait after a
/// fetch that timed out.
pub const LONGEST_SPACING: Duration = Duration::from_secs(60);

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
    /// Largest share of the target's time a profile may take (0 = no limit): see
    /// [`TargetConfig::next_fetch_after`].
    pub target_budget: f64,
    /// Output limits.
    pub limits: Limits,
    /// Decompression bound.
    pub max_decompressed_bytes: u64,
    /// Goroutine label keys promoted to Prometheus labels.
    pub promoted_labels: Vec<String>,
    /// The Prometheus label names of `promoted_labels`, in the same order.
    pub promoted_label_names: Vec<&'static str>,
    /// Interval of the goroutine-leak profile (None = off).
    pub leak_interval: Option<Duration>,
    /// Interval of the debug=2 dump (None = off).
    pub states_interval: Option<Duration>,
    /// Skip the debug=2 dump above this many goroutines.
    pub states_max: u64,
    /// Interval of the MemStats read (None = off).
    pub memstats_interval: Option<Duration>,
    /// How to find the target's process (None = not local, not collected).
    pub process: Option<PidSource>,
    /// Interval of the target's `smaps_rollup` read (None = off).
    pub smaps_interval: Option<Duration>,
    /// Mount point of procfs.
    pub proc_root: PathBuf,
}

impl TargetConfig {
    /// The `target` label value: the URL without a trailing slash.
    pub fn label(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }

    /// The URL of one profile endpoint.
    pub fn profile_url(&self, kind: ProfileKind) -> Url {
        let (endpoint, query) = kind.endpoint(self.heap_gc);
        let base = self.url.path().trim_end_matches('/');
        let mut url = self.url.clone();
        url.set_path(&format!("{base}{}/{endpoint}", self.path_prefix));
        url.set_query(query);
        url
    }

    /// How often `kind` is collected, or None when it is off.
    pub fn interval_of(&self, kind: ProfileKind) -> Option<Duration> {
        match kind {
            ProfileKind::Heap | ProfileKind::Goroutine => Some(self.interval),
            ProfileKind::GoroutineLeak => self.leak_interval,
            ProfileKind::GoroutineStates => self.states_interval,
            ProfileKind::MemStats => self.memstats_interval,
            ProfileKind::Process => self.process.as_ref().map(|_| self.interval),
        }
    }

    /// How long after a fetch that took `fetch` the profile `kind` may be fetched
    /// again: its interval, stretched to `fetch / target_budget` so the target spends
    /// at most that share of its time serving it, but never past ten intervals or
    /// [`LONGEST_SPACING`], whichever is longer.
    pub fn next_fetch_after(&self, kind: ProfileKind, fetch: Duration) -> Duration {
        let interval = self.interval_of(kind).unwrap_or(self.interval);
        if self.target_budget <= 0.0 || kind == ProfileKind::Process {
            return interval;
        }
        let spaced = Duration::try_from_secs_f64(fetch.as_secs_f64() / self.target_budget)
            .unwrap_or(Duration::MAX);
        let longest = interval.saturating_mul(10).max(LONGEST_SPACING);
        spaced.min(longest).max(interval)
    }

    /// The kinds this target collects.
    pub fn kinds(&self) -> Vec<ProfileKind> {
        ProfileKind::ALL
            .into_iter()
            .filter(|k| self.interval_of(*k).is_some())
            .collect()
    }

    /// The PID source for a target on this machine: by the port of a loopback URL.
    /// Remote targets' processes are not ours to read.
    pub fn local_pid_source(url: &Url) -> Option<PidSource> {
        let local = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        local.then(|| PidSource::Port(url.port_or_known_default().unwrap_or(80)))
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
    /// Collections skipped on purpose, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// False once the target answered 404 for an optional profile.
    pub unsupported: bool,
    /// Time from the last fetch to the next: the interval, or longer when the fetch
    /// was slow enough for `--scrape.target-budget` to space fetches out.
    pub spacing: Option<Duration>,
    /// Whether the first spacing-out has been logged.
    pub spaced_out_logged: bool,
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

    /// 1 when the last attempt of every required profile succeeded.
    pub fn up(&self) -> bool {
        self.profiles
            .iter()
            .filter(|(k, _)| k.required())
            .all(|(_, (status, _, _))| status.success == Some(true))
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
    /// Goroutines per stack (id, function, count), for the growth streak.
    pub stack_counts: Option<Vec<(StackId, String, i64)>>,
    /// The goroutine total, for the debug=2 guard.
    pub goroutine_total: Option<i64>,
}

impl Processed {
    fn families(families: Vec<Family>, dropped: Dropped) -> Self {
        Self {
            families,
            dropped,
            heap: None,
            stacks: None,
            stack_counts: None,
            goroutine_total: None,
        }
    }
}

/// Why a scrape failed: the fetch or the payload.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Process(#[from] ProcessError),
}

impl ScrapeError {
    fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Fetch(e) => e.reason(),
            ScrapeError::Process(e) => e.reason(),
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
    match kind {
        ProfileKind::GoroutineStates => {
            let dump = decode::goroutine_text::parse_goroutines(&raw)?;
            let (families, dropped) = aggregate::states::state_families(&dump, &cfg.limits);
            return Ok(Processed::families(families, dropped));
        }
        ProfileKind::MemStats => {
            let stats = decode::memstats::parse_memstats(&raw)?;
            return Ok(Processed::families(
                aggregate::memstats::memstats_families(&stats),
                Vec::new(),
            ));
        }
        ProfileKind::Process => {
            return Err(DecodeError::Invalid("process is not a profile".into()));
        }
        ProfileKind::Heap | ProfileKind::Goroutine | ProfileKind::GoroutineLeak => {}
    }
    if !decode::is_gzip(body) && raw.first() == Some(&b'<') {
        return Err(DecodeError::NotAProfile(decode::describe_payload(&raw)));
    }
    // Samples are aggregated as they are read off the wire: a profile of a million
    // tiny samples costs the aggregation, not a copy of every sample.
    let limits = DecodeLimits::default();
    match kind {
        ProfileKind::Heap => {
            let summary = read_stream(&raw, |d| {
                HeapSummary::from_stream(d, limits).map_err(|e| match e {
                    aggregate::heap::StreamError::Decode(e) => e,
                    aggregate::heap::StreamError::NotHeap(e) => {
                        DecodeError::NotAProfile(e.to_string())
                    }
                })
            })?;
            let (families, dropped) = summary.families(&cfg.limits);
            let heap = summary
                .top_inuse(10)
                .into_iter()
                .map(|(n, f, c)| (n.to_owned(), f, c))
                .collect();
            Ok(Processed {
                heap: Some(heap),
                ..Processed::families(families, dropped)
            })
        }
        ProfileKind::GoroutineLeak => {
            let summary = read_stream(&raw, |d| goroutines_from_stream(d, &[], limits))?;
            refuse_negative_counts(&summary)?;
            let (families, dropped) = aggregate::leaked_families(&summary, &cfg.limits);
            Ok(Processed::families(families, dropped))
        }
        _ => {
            let summary: GoroutineSummary = read_stream(&raw, |d| {
                if d.sample_index("goroutine").is_none() {
                    return Err(DecodeError::NotAProfile(
                        "not a goroutine profile: no \"goroutine\" sample type".into(),
                    ));
                }
                goroutines_from_stream(d, &cfg.promoted_labels, limits)
            })?;
            refuse_negative_counts(&summary)?;
            let (families, dropped) =
                aggregate::goroutine_families(&summary, &cfg.promoted_label_names, &cfg.limits);
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
            // Promoted labels split one stack into several groups; the streak is per stack.
            let mut counts: Vec<(StackId, String, i64)> = Vec::with_capacity(summary.stacks.len());
            let mut position: HashMap<StackId, usize> =
                HashMap::with_capacity(summary.stacks.len());
            for g in &summary.stacks {
                match position.get(&g.id) {
                    Some(&i) => counts[i].2 += g.count,
                    None => {
                        position.insert(g.id, counts.len());
                        counts.push((g.id, g.function.clone(), g.count));
                    }
                }
            }
            Ok(Processed {
                stacks: Some(stacks),
                stack_counts: Some(counts),
                goroutine_total: Some(summary.total),
                ..Processed::families(families, dropped)
            })
        }
    }
}

/// Opens an uncompressed profile and runs `f` over it. A malformed message is reported
/// as such even when `f` found another problem first, as a decode-then-check would.
fn read_stream<T>(
    raw: &[u8],
    f: impl FnOnce(&stream::Decoder<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    match stream::open(raw).and_then(|d| f(&d)) {
        Err(e @ DecodeError::NotAProfile(_)) => {
            match stream::wire_error_first(raw, Err::<(), _>(DecodeError::Invalid(String::new()))) {
                Err(wire @ DecodeError::Protobuf(_)) => Err(wire),
                _ => Err(e),
            }
        }
        other => stream::wire_error_first(raw, other),
    }
}

/// Groups a goroutine profile's samples by stack as they are read.
fn goroutines_from_stream(
    d: &stream::Decoder<'_>,
    promote: &[String],
    limits: DecodeLimits,
) -> Result<GoroutineSummary, DecodeError> {
    let value_index = d.default_index().unwrap_or(0);
    let mut acc = aggregate::goroutines::StackAccumulator::new(&d.functions, promote);
    d.samples(limits, |s| {
        let count = s.values.get(value_index).copied().unwrap_or(0);
        acc.add(count, s.frames, |key| {
            s.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        });
    })?;
    Ok(acc.finish())
}

/// The Go runtime never writes a negative goroutine count; a profile that has one is
/// not what it claims to be, and a negative gauge would mislead every sum over it.
fn refuse_negative_counts(summary: &GoroutineSummary) -> Result<(), DecodeError> {
    if let Some(g) = summary.stacks.iter().find(|g| g.count < 0) {
        return Err(DecodeError::NotAProfile(format!(
            "invalid goroutine profile: negative count ({}) for {}",
            g.count, g.function
        )));
    }
    if summary.total < 0 {
        return Err(DecodeError::NotAProfile(format!(
            "invalid goroutine profile: negative total ({})",
            summary.total
        )));
    }
    Ok(())
}

/// What one collection produced.
enum Outcome {
    Done(Result<(Processed, u64), ScrapeError>),
    /// The target does not serve this optional profile (HTTP 404).
    Unsupported,
    /// Skipped on purpose, with a reason.
    Skipped(&'static str),
}

/// The scrape state of one target that outlives a cycle: when each profile is due,
/// the process watcher, growth streaks and the last goroutine count.
pub struct TargetState {
    cfg: Arc<TargetConfig>,
    fetcher: Fetcher,
    next_due: HashMap<ProfileKind, Instant>,
    watcher: Option<ProcessWatcher>,
    growth: GrowthTracker,
    goroutine_total: Option<i64>,
}

impl TargetState {
    /// Fresh state: every profile is due.
    pub fn new(cfg: Arc<TargetConfig>, fetcher: Fetcher) -> Self {
        let watcher = cfg.process.clone().map(|source| {
            ProcessWatcher::new(cfg.proc_root.clone(), source).with_rollup_every(cfg.smaps_interval)
        });
        Self {
            cfg,
            fetcher,
            next_due: HashMap::new(),
            watcher,
            growth: GrowthTracker::default(),
            goroutine_total: None,
        }
    }

    /// The target's configuration.
    pub fn config(&self) -> &Arc<TargetConfig> {
        &self.cfg
    }

    /// Collects every profile that is due, one after another, recording each into
    /// `snapshot` and calling `after` once per profile. Fetches end by `deadline` when
    /// one is given. Returns early (false) when `stop` says so.
    pub async fn cycle(
        &mut self,
        snapshot: &Mutex<TargetSnapshot>,
        deadline: Option<Instant>,
        mut after: impl FnMut(),
        stop: Option<&watch::Receiver<bool>>,
    ) -> bool {
        let cfg = self.cfg.clone();
        for kind in cfg.kinds() {
            let now = Instant::now();
            if self.next_due.get(&kind).is_some_and(|due| now < *due) {
                continue;
            }
            let interval = cfg.interval_of(kind).unwrap_or(cfg.interval);
            // Slightly early is due: ticks jitter, and waiting a whole extra cycle for a
            // few milliseconds would stretch every interval.
            self.next_due
                .insert(kind, now + interval.saturating_sub(cfg.interval / 4));
            let started = Instant::now();
            let mut spacing = interval;
            let outcome = match kind {
                ProfileKind::Process => {
                    let Some(w) = self.watcher.take() else {
                        continue;
                    };
                    let (w, result) = match tokio::task::spawn_blocking(move || {
                        let mut w = w;
                        let r = w.sample();
                        (w, r)
                    })
                    .await
                    {
                        Ok(x) => x,
                        Err(_) => continue,
                    };
                    self.watcher = Some(w);
                    Outcome::Done(
                        result
                            .map(|stats| {
                                (
                                    Processed::families(
                                        crate::process::process_families(&stats),
                                        Vec::new(),
                                    ),
                                    0,
                                )
                            })
                            .map_err(ScrapeError::from),
                    )
                }
                ProfileKind::GoroutineStates
                    if self
                        .goroutine_total
                        .is_none_or(|n| n > cfg.states_max as i64) =>
                {
                    Outcome::Skipped("too_many_goroutines")
                }
                _ => {
                    let (result, fetch_time) =
                        scrape_one(&cfg, &self.fetcher, kind, deadline).await;
                    let gap = cfg.next_fetch_after(kind, fetch_time);
                    if gap > interval {
                        self.next_due
                            .insert(kind, now + gap.saturating_sub(cfg.interval / 4));
                    }
                    spacing = gap;
                    match result {
                        Err(ScrapeError::Fetch(FetchError::HttpStatus { status: 404, .. }))
                            if kind == ProfileKind::GoroutineLeak =>
                        {
                            self.next_due.insert(kind, now + LEAK_RECHECK);
                            spacing = LEAK_RECHECK;
                            Outcome::Unsupported
                        }
                        other => Outcome::Done(other),
                    }
                }
            };
            let outcome = match outcome {
                Outcome::Done(Ok((mut processed, size))) => {
                    if let Some(total) = processed.goroutine_total {
                        self.goroutine_total = Some(total);
                    }
                    if let Some(counts) = processed.stack_counts.take() {
                        processed
                            .families
                            .push(self.growth.update(&counts, cfg.limits.top));
                    }
                    Outcome::Done(Ok((processed, size)))
                }
                Outcome::Done(Err(e)) => {
                    if kind == ProfileKind::Goroutine {
                        self.goroutine_total = None;
                    }
                    Outcome::Done(Err(e))
                }
                other => other,
            };
            record(&cfg, snapshot, kind, outcome, started.elapsed(), spacing);
            after();
            if stop.is_some_and(|s| *s.borrow()) {
                return false;
            }
        }
        true
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
    let interval = cfg.interval;
    let mut state = TargetState::new(cfg, fetcher);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let stop = shutdown.clone();
        if !state
            .cycle(&snapshot, None, || hub.refresh(), Some(&stop))
            .await
        {
            return;
        }
    }
}

/// Fetches and processes one profile; also returns how long the fetch itself took
/// (the target's share of the work, for [`TargetConfig::next_fetch_after`]).
async fn scrape_one(
    cfg: &Arc<TargetConfig>,
    fetcher: &Fetcher,
    kind: ProfileKind,
    deadline: Option<Instant>,
) -> (Result<(Processed, u64), ScrapeError>, Duration) {
    let started = Instant::now();
    let fetched = fetcher.get_before(&cfg.profile_url(kind), deadline).await;
    let fetch_time = started.elapsed();
    let result = match fetched {
        Ok(body) => process_body(cfg, kind, body).await,
        Err(e) => Err(e.into()),
    };
    (result, fetch_time)
}

async fn process_body(
    cfg: &Arc<TargetConfig>,
    kind: ProfileKind,
    body: bytes::Bytes,
) -> Result<(Processed, u64), ScrapeError> {
    let size = body.len() as u64;
    let cfg2 = cfg.clone();
    let processed = tokio::task::spawn_blocking(move || process(kind, &body, &cfg2))
        .await
        .map_err(|e| DecodeError::Invalid(format!("decoder task failed: {e}")))??;
    Ok((processed, size))
}

/// Per stack, how many consecutive scrapes its goroutine count grew. Any scrape without
/// growth resets the streak (a leak that stops ends its streak), and a stack that
/// disappears is forgotten, so memory is bounded by the stacks of the last profile.
#[derive(Debug, Default)]
pub struct GrowthTracker {
    last: HashMap<StackId, (i64, u64)>,
}

impl GrowthTracker {
    /// Updates the streaks from one profile's (stack, function, count) and returns the
    /// `pprof_goroutines_growth_streak` family, limited to the `top` longest streaks.
    pub fn update(&mut self, counts: &[(StackId, String, i64)], top: usize) -> Family {
        let mut next = HashMap::with_capacity(counts.len());
        for (id, _, count) in counts {
            let streak = match self.last.get(id) {
                Some(&(prev, streak)) if *count > prev => streak + 1,
                _ => 0,
            };
            next.insert(*id, (*count, streak));
        }
        self.last = next;
        let mut ranked: Vec<(u64, &StackId, &String)> = counts
            .iter()
            .map(|(id, f, _)| (self.last[id].1, id, f))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        ranked.truncate(top);
        let mut family = Family::new(
            "pprof_goroutines_growth_streak",
            Kind::Gauge,
            "Consecutive scrapes in which this stack's goroutine count grew; a scrape without growth resets it to 0.",
        );
        for (streak, id, function) in ranked {
            family.push(
                vec![("function", function.clone()), ("stack_id", id.to_string())],
                streak as f64,
            );
        }
        family
    }
}

fn record(
    cfg: &TargetConfig,
    snapshot: &Mutex<TargetSnapshot>,
    kind: ProfileKind,
    outcome: Outcome,
    elapsed: Duration,
    spacing: Duration,
) {
    let mut snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
    let label = snap.label.clone();
    let snap = &mut *snap;
    let (status, families, dropped) = snap.profiles.entry(kind).or_default();
    let interval = cfg.interval_of(kind).unwrap_or(cfg.interval);
    // Once per profile: a fetch time that hovers around the threshold would otherwise
    // log at every crossing.
    if kind != ProfileKind::GoroutineLeak && spacing > interval && !status.spaced_out_logged {
        status.spaced_out_logged = true;
        info!(target = %label, profile = kind.label(), every = ?spacing, budget = cfg.target_budget,
              "profile is slow to serve; fetched less often to keep within --scrape.target-budget");
    }
    status.spacing = Some(spacing);
    let outcome = match outcome {
        Outcome::Done(r) => r,
        Outcome::Unsupported => {
            if !status.unsupported {
                info!(target = %label, profile = kind.label(), recheck = ?LEAK_RECHECK,
                      "target does not serve this profile (Go older than 1.26?); not an error");
            }
            status.unsupported = true;
            status.success = None;
            families.clear();
            dropped.clear();
            return;
        }
        Outcome::Skipped(reason) => {
            let n = status.skipped.entry(reason).or_default();
            if *n == 0 {
                info!(target = %label, profile = kind.label(), reason, "collection skipped");
            }
            *n += 1;
            families.clear();
            dropped.clear();
            return;
        }
    };
    status.duration = Some(elapsed);
    status.unsupported = false;
    match outcome {
        Ok((processed, size)) => {
            if let Some(reason) = status.failing_reason.take() {
                info!(target = %label, profile = kind.label(), previous_reason = reason, "scrape recovered");
            }
            status.success = Some(true);
            status.last_success = Some(SystemTime::now());
            status.size = (kind != ProfileKind::Process).then_some(size);
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
                let what = if kind == ProfileKind::Process {
                    "process lookup failed".to_owned()
                } else {
                    cfg.profile_url(kind).to_string()
                };
                warn!(target = %label, profile = kind.label(), reason, url = %what, error = %e, "scrape failed");
            }
            status.failing_reason = Some(reason);
            status.success = Some(false);
            families.clear();
            dropped.clear();
            match kind {
                ProfileKind::Heap => snap.landing.heap.clear(),
                ProfileKind::Goroutine => snap.landing.stacks.clear(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_streak_rises_holds_resets_and_forgets() {
        let a = StackId(1);
        let b = StackId(2);
        let mut g = GrowthTracker::default();
        let streak = |f: &Family, id: StackId| {
            f.series
                .iter()
                .find(|s| s.labels[1].1 == id.to_string())
                .map(|s| s.value)
        };
        let step = |g: &mut GrowthTracker, ca: i64| {
            g.update(&[(a, "f".into(), ca), (b, "g".into(), 1)], 10)
        };
        assert_eq!(streak(&step(&mut g, 1), a), Some(0.0));
        assert_eq!(streak(&step(&mut g, 2), a), Some(1.0));
        assert_eq!(streak(&step(&mut g, 5), a), Some(2.0));
        assert_eq!(streak(&step(&mut g, 5), a), Some(0.0), "no growth resets");
        assert_eq!(streak(&step(&mut g, 6), a), Some(1.0));
        let f = step(&mut g, 3);
        assert_eq!(streak(&f, a), Some(0.0));
        assert_eq!(streak(&f, b), Some(0.0));
        // a disappears: forgotten; when it returns it starts over.
        g.update(&[(b, "g".into(), 1)], 10);
        assert_eq!(g.last.len(), 1);
        assert_eq!(streak(&step(&mut g, 9), a), Some(0.0));
        // The limit keeps the longest streaks.
        assert_eq!(step(&mut g, 10).series.len(), 2);
        assert_eq!(
            g.update(&[(a, "f".into(), 11), (b, "g".into(), 1)], 1)
                .series
                .len(),
            1
        );
    }

    #[test]
    fn slow_profiles_are_spaced_out_by_the_budget() {
        let cfg = TargetConfig {
            url: "http://127.0.0.1:6060".parse().unwrap(),
            path_prefix: "/debug/pprof".into(),
            heap_gc: false,
            interval: Duration::from_secs(1),
            target_budget: 0.01,
            limits: Limits {
                top: 10,
                stack_text: 100,
            },
            max_decompressed_bytes: 1 << 20,
            promoted_labels: Vec::new(),
            promoted_label_names: Vec::new(),
            leak_interval: Some(Duration::from_secs(300)),
            states_interval: None,
            states_max: 10_000,
            memstats_interval: Some(Duration::from_secs(15)),
            process: None,
            smaps_interval: Some(Duration::from_secs(15)),
            proc_root: "/proc".into(),
        };
        let ms = Duration::from_millis;
        let g = ProfileKind::Goroutine;
        // Fast enough: the interval.
        assert_eq!(cfg.next_fetch_after(g, ms(3)), ms(1000));
        assert_eq!(cfg.next_fetch_after(g, ms(10)), ms(1000));
        // 50 ms at 1%: every 5 s; 200 ms: every 20 s, past ten intervals.
        assert_eq!(cfg.next_fetch_after(g, ms(50)), ms(5000));
        assert_eq!(cfg.next_fetch_after(g, ms(200)), ms(20_000));
        // Never past a minute at intervals under 6 s, even for a fetch that timed out,
        assert_eq!(cfg.next_fetch_after(g, ms(10_000)), LONGEST_SPACING);
        // nor past ten intervals at longer ones.
        let long = TargetConfig {
            interval: Duration::from_secs(15),
            ..cfg.clone()
        };
        assert_eq!(long.next_fetch_after(g, ms(10_000)), ms(150_000));
        assert_eq!(long.next_fetch_after(g, ms(50)), ms(15_000));
        assert_eq!(long.next_fetch_after(g, ms(300)), ms(30_000));
        // Each profile by its own interval.
        assert_eq!(
            cfg.next_fetch_after(ProfileKind::MemStats, ms(50)),
            ms(15_000)
        );
        assert_eq!(
            cfg.next_fetch_after(ProfileKind::GoroutineLeak, ms(4000)),
            ms(400_000)
        );
        // Reading /proc costs the target nothing; 0 turns the guard off.
        assert_eq!(cfg.next_fetch_after(ProfileKind::Process, ms(50)), ms(1000));
        let off = TargetConfig {
            target_budget: 0.0,
            ..cfg
        };
        assert_eq!(off.next_fetch_after(g, ms(50)), ms(1000));
    }

    #[test]
    fn urls_and_local_pid_sources() {
        let url: Url = "http://127.0.0.1:6060/app".parse().unwrap();
        assert!(matches!(
            TargetConfig::local_pid_source(&url),
            Some(PidSource::Port(6060))
        ));
        let remote: Url = "http://10.1.2.3:6060".parse().unwrap();
        assert!(TargetConfig::local_pid_source(&remote).is_none());
        let localhost: Url = "http://localhost".parse().unwrap();
        assert!(matches!(
            TargetConfig::local_pid_source(&localhost),
            Some(PidSource::Port(80))
        ));
    }
}
