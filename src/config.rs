//! Config stage: command-line flags (each with an environment variable) parsed into
//! typed values and validated once at start-up.
//!
//! A bad flag is reported as one line on stderr and exit code 64 (`EX_USAGE`) by
//! `main`; nothing here panics on user input.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use url::Url;

use crate::scrape::{BasicAuth, HttpSettings, Secret, TlsClientSettings};

/// Exit code for a usage error (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// The conventional address of a Go service's pprof server.
pub const DEFAULT_TARGET: &str = "http://localhost:6060";

/// Default address of the exporter's own web server.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10060";

/// Go net/http/pprof heap and goroutine profiles as Prometheus metrics, broken down
/// by function and goroutine stack.
#[derive(Debug, Parser)]
#[command(name = "pprof-exporter", version, about, long_about = None)]
pub struct Cli {
    /// A one-off command instead of the exporter daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Daemon settings.
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a profile (file or URL) aggregated by function, like `go tool pprof -top`.
    Inspect(InspectArgs),
}

/// Settings of the exporter daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Base URL of a Go service serving net/http/pprof; repeat the flag (or separate
    /// with commas in the environment variable) for several targets. Default:
    /// http://localhost:6060, unless --target.config.file lists targets or only
    /// --probe.allow is given.
    #[arg(long = "target", env = "PPROF_EXPORTER_TARGET", value_delimiter = ',',
          value_parser = parse_target)]
    pub targets: Vec<Url>,

    /// YAML file with per-target credentials and TLS settings (bearer_token_file,
    /// basic_auth, tls_config), more targets, and the settings for /probe targets.
    #[arg(long = "target.config.file", env = "PPROF_EXPORTER_TARGET_CONFIG_FILE",
          value_parser = parse_path)]
    pub target_config_file: Option<PathBuf>,

    /// Fleet mode: a regular expression, matched against the whole `host:port` of a
    /// /probe?target= request, that admits the target; repeatable. Without it, /probe
    /// is disabled. Anything not matching gets HTTP 403 before any connection.
    #[arg(long = "probe.allow", env = "PPROF_EXPORTER_PROBE_ALLOW", value_parser = parse_allow)]
    pub probe_allow: Vec<AllowPattern>,

    /// How long a probe's result is served again to further probes of the same target
    /// (so that an HA pair of Prometheus servers costs the target one fetch).
    #[arg(long = "probe.cache-ttl", env = "PPROF_EXPORTER_PROBE_CACHE_TTL",
          default_value = "10s", value_parser = parse_duration)]
    pub probe_cache_ttl: Duration,

    /// Most probe targets remembered at once (for caching and growth streaks); targets
    /// not probed for 10 minutes are forgotten.
    #[arg(
        long = "probe.max-targets",
        env = "PPROF_EXPORTER_PROBE_MAX_TARGETS",
        default_value = "1000"
    )]
    pub probe_max_targets: NonZeroUsize,

    /// YAML file securing the exporter's own endpoints: tls_server_config (cert_file,
    /// key_file, client_ca_file, client_auth_type, min_version, max_version) and
    /// basic_auth_users (user: bcrypt hash), in the Prometheus exporter format.
    #[arg(long = "web.config.file", env = "PPROF_EXPORTER_WEB_CONFIG_FILE",
          value_parser = parse_path)]
    pub web_config_file: Option<PathBuf>,

    /// How often each target is scraped.
    #[arg(long = "scrape.interval", env = "PPROF_EXPORTER_SCRAPE_INTERVAL",
          default_value = "15s", value_parser = parse_duration)]
    pub scrape_interval: Duration,

    /// Largest share of the target's time this exporter may take, per profile: a
    /// profile that took d to fetch is fetched again no sooner than d / budget later
    /// (at most ten intervals or a minute later, whichever is longer), however short
    /// --scrape.interval is. At the default 0.0025, a goroutine profile that takes
    /// 50 ms to serve is fetched every 20 s at intervals up to 20 s. A p99 counts the
    /// slowest 1 % of requests; a profile delays the requests that arrive while it is
    /// served and those queued behind it, and its garbage brings the target's next
    /// collection forward, so it must hold the target for well under that share of
    /// its time. 0 turns the guard off.
    #[arg(long = "scrape.target-budget", env = "PPROF_EXPORTER_SCRAPE_TARGET_BUDGET",
          default_value = "0.0025", value_parser = parse_budget)]
    pub target_budget: f64,

    /// Time limit for one profile fetch, body included.
    #[arg(long = "scrape.timeout", env = "PPROF_EXPORTER_SCRAPE_TIMEOUT",
          default_value = "10s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,

    /// Path under the target URL where the pprof handlers are mounted.
    #[arg(long = "pprof.path-prefix", env = "PPROF_EXPORTER_PPROF_PATH_PREFIX",
          default_value = "/debug/pprof", value_parser = parse_prefix)]
    pub path_prefix: String,

    /// Ask the target to run a GC before writing the heap profile (`?gc=1`), so in-use
    /// numbers are current rather than as of the last GC. Costs the target a GC cycle.
    #[arg(long = "heap.gc", env = "PPROF_EXPORTER_HEAP_GC")]
    pub heap_gc: bool,

    /// Series kept per per-function or per-stack metric and target; the rest are
    /// summed into function="(other)".
    #[arg(
        long = "limits.top",
        env = "PPROF_EXPORTER_LIMITS_TOP",
        default_value = "100"
    )]
    pub top: NonZeroUsize,

    /// Longest stack text in pprof_goroutine_stack_info, in bytes (cut at the root end).
    #[arg(
        long = "limits.stack-text-bytes",
        env = "PPROF_EXPORTER_LIMITS_STACK_TEXT_BYTES",
        default_value = "1024"
    )]
    pub stack_text_bytes: NonZeroUsize,

    /// Largest profile body accepted from a target (suffixes KiB, MiB, GiB, kB, MB, GB).
    #[arg(long = "limits.max-body-bytes", env = "PPROF_EXPORTER_LIMITS_MAX_BODY_BYTES",
          default_value = "64MiB", value_parser = parse_size)]
    pub max_body_bytes: u64,

    /// Largest size a profile may inflate to after gunzip.
    #[arg(long = "limits.max-decompressed-bytes",
          env = "PPROF_EXPORTER_LIMITS_MAX_DECOMPRESSED_BYTES",
          default_value = "256MiB", value_parser = parse_size)]
    pub max_decompressed_bytes: u64,

    /// Address the exporter serves /metrics, /healthz and / on (`:PORT` means all
    /// interfaces).
    #[arg(long = "web.listen-address", env = "PPROF_EXPORTER_WEB_LISTEN_ADDRESS",
          default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// How often to fetch the goroutine-leak profile (Go >= 1.26), which costs the target
    /// a GC cycle; 0 turns it off. Targets that answer 404 are re-checked hourly.
    #[arg(long = "goroutine.leak-interval", env = "PPROF_EXPORTER_GOROUTINE_LEAK_INTERVAL",
          default_value = "5m", value_parser = parse_optional_duration)]
    pub leak_interval: Every,

    /// How often to fetch `goroutine?debug=2` for goroutine states and wait times; it
    /// stops the target's world for the whole dump, so it is off (0) by default.
    #[arg(long = "goroutine.states-interval", env = "PPROF_EXPORTER_GOROUTINE_STATES_INTERVAL",
          default_value = "0", value_parser = parse_optional_duration)]
    pub states_interval: Every,

    /// Skip the debug=2 dump while the target has more goroutines than this.
    #[arg(
        long = "goroutine.states-max",
        env = "PPROF_EXPORTER_GOROUTINE_STATES_MAX",
        default_value = "10000"
    )]
    pub states_max: u64,

    /// A goroutine label (set with pprof.Do) to promote to a Prometheus label
    /// `label_<KEY>` on pprof_goroutines; repeatable.
    #[arg(
        long = "goroutine.label",
        env = "PPROF_EXPORTER_GOROUTINE_LABEL",
        value_delimiter = ','
    )]
    pub goroutine_labels: Vec<String>,

    /// How often to read Go's MemStats from `heap?debug=1` (a brief stop-the-world in
    /// the target); 0 turns it off.
    #[arg(long = "memstats.interval", env = "PPROF_EXPORTER_MEMSTATS_INTERVAL",
          default_value = "15s", value_parser = parse_optional_duration)]
    pub memstats_interval: Every,

    /// PID of the target process, for its RSS (default: found by the port a local
    /// target listens on). Only with a single --target.
    #[arg(
        long = "target.pid",
        env = "PPROF_EXPORTER_TARGET_PID",
        conflicts_with = "pid_file"
    )]
    pub pid: Option<u32>,

    /// File holding the target's PID, re-read every scrape. Only with a single --target.
    #[arg(long = "target.pid-file", env = "PPROF_EXPORTER_TARGET_PID_FILE", value_parser = parse_path)]
    pub pid_file: Option<PathBuf>,

    /// How often to read the target's `/proc/<pid>/smaps_rollup` for its proportional
    /// set size and swap; the kernel walks the process's page tables for it, which
    /// costs about 14 µs per resident MB. Its RSS (from `status`) is read every
    /// scrape regardless. 0 turns PSS and swap off.
    #[arg(long = "process.smaps-interval", env = "PPROF_EXPORTER_PROCESS_SMAPS_INTERVAL",
          default_value = "15s", value_parser = parse_optional_duration)]
    pub smaps_interval: Every,

    /// Where the proc filesystem is mounted.
    #[arg(long = "proc.root", env = "PPROF_EXPORTER_PROC_ROOT", default_value = "/proc",
          value_parser = parse_path)]
    pub proc_root: PathBuf,

    /// Log filter: error, warn, info, debug or trace (or a tracing filter directive).
    #[arg(
        long = "log.level",
        env = "PPROF_EXPORTER_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

/// Output format of `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns like `go tool pprof -top`.
    Table,
    /// One JSON object.
    Json,
}

/// Arguments of `inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A profile file (gzip or plain protobuf) or an http(s) URL to fetch it from.
    pub source: String,
    /// Sample type to show (name such as inuse_space, or its index); defaults to the
    /// profile's default, like go tool pprof.
    #[arg(long = "sample-index")]
    pub sample_index: Option<String>,
    /// Subtract this base profile (file or URL), like `go tool pprof -base`.
    #[arg(long)]
    pub base: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Show only the first N rows of the table (JSON ignores it).
    #[arg(long)]
    pub top: Option<usize>,
    /// Leave out functions whose |cum| is below this share of the total (the sum of flat
    /// over all functions, as a magnitude), as `go tool pprof -nodefraction` does.
    /// Default 0.005 for the table, as `go tool pprof -top`; 0 (every function) for JSON.
    #[arg(long = "node-fraction", value_parser = parse_fraction)]
    pub node_fraction: Option<f64>,
    /// Time limit when the source is a URL.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest input accepted (file or body).
    #[arg(long = "max-bytes", default_value = "1GiB", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Largest size the input may inflate to.
    #[arg(long = "max-decompressed-bytes", default_value = "4GiB", value_parser = parse_size)]
    pub max_decompressed_bytes: u64,
}

/// A `--probe.allow` pattern, compiled to match a whole `host:port`.
#[derive(Debug, Clone)]
pub struct AllowPattern {
    /// The pattern as given.
    pub source: String,
    /// The anchored expression.
    pub regex: regex_lite::Regex,
}

impl AllowPattern {
    /// Whether `host_port` matches the whole pattern.
    pub fn matches(&self, host_port: &str) -> bool {
        self.regex.is_match(host_port)
    }
}

/// Parses a `--probe.allow` regular expression; it is anchored at both ends, like
/// Prometheus relabelling regexes.
pub fn parse_allow(s: &str) -> Result<AllowPattern, String> {
    if s.is_empty() {
        return Err("empty --probe.allow pattern".into());
    }
    let regex = regex_lite::Regex::new(&format!("^(?:{s})$"))
        .map_err(|e| format!("invalid --probe.allow pattern {s:?}: {e}"))?;
    Ok(AllowPattern {
        source: s.to_owned(),
        regex,
    })
}

/// Reads a file path argument, for flags that name one.
pub fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

/// Parses a target: an http(s) URL, or `host:port` (taken as http).
pub fn parse_target(s: &str) -> Result<Url, String> {
    let with_scheme = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid target URL {s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("target {s:?} must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("target {s:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("target {s:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// `s` as a number within `range` (NaN is in none).
fn number_in(s: &str, range: impl std::ops::RangeBounds<f64>) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| range.contains(v))
}

/// A share of time: a number from 0 (off) up to, not including, 1.
pub fn parse_budget(s: &str) -> Result<f64, String> {
    number_in(s, 0.0..1.0).ok_or_else(|| {
        format!("{s:?} is not a share of time: give a number from 0 (off) to below 1, e.g. 0.01")
    })
}

/// A share of a total: a number from 0 to 1.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    number_in(s, 0.0..=1.0)
        .ok_or_else(|| format!("{s:?} is not a share: give a number from 0 to 1, e.g. 0.005"))
}

/// Parses a duration such as `15s`, `500ms`, `2m`, `1h` (or `1m30s`); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h)"
                ));
            }
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        total = total.saturating_add(part);
    }
    if total.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(total)
}

/// An interval that can be switched off: `0` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every(pub Option<Duration>);

/// Parses a duration where `0` means "off".
pub fn parse_optional_duration(s: &str) -> Result<Every, String> {
    if s.trim() == "0" {
        return Ok(Every(None));
    }
    parse_duration(s).map(|d| Every(Some(d)))
}

/// Turns a goroutine label key into a valid Prometheus label name, `label_<key>`.
pub fn promoted_label_name(key: &str) -> String {
    let body: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("label_{body}")
}

/// Parses a byte size: a plain number or one with a suffix (KiB, MiB, GiB, kB, MB, GB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if v == 0 {
        return Err(format!("size {s:?} must be greater than zero"));
    }
    Ok(v)
}

/// Parses a listen address; `:PORT` means every IPv4 interface.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("invalid listen address {s:?}: expected HOST:PORT or :PORT"))
}

/// Normalises a path prefix to start with `/` and not end with one.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    if trimmed.contains(['?', '#', ' ']) {
        return Err(format!("invalid path prefix {s:?}"));
    }
    Ok(if trimmed.starts_with('/') || trimmed.is_empty() {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    })
}

/// One entry of `targets:` in the target config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    url: String,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    tls_config: TlsClientSettings,
}

/// The `--target.config.file` document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    #[serde(default)]
    targets: Vec<TargetEntry>,
    /// Settings for every /probe target.
    #[serde(default)]
    pub probe: HttpSettings,
}

/// Largest target config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl TargetFile {
    /// Reads and parses the file (without reading the secrets it names).
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let raw = crate::tls::read_bounded(path, MAX_CONFIG_BYTES)?;
        Self::parse(&raw).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the YAML text.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let file: TargetFile = serde_yaml_ng::from_slice(raw).map_err(|e| e.to_string())?;
        file.probe.validate().map_err(|e| format!("probe: {e}"))?;
        Ok(file)
    }
}

/// A target to scrape and how to reach it.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// The URL, without any user info.
    pub url: Url,
    /// Credentials and TLS settings.
    pub http: HttpSettings,
}

/// Moves `user:password@` out of a target URL into basic-auth settings, so that the
/// password never reaches the `target` label or a log line.
pub fn split_userinfo(url: &Url) -> (Url, Option<BasicAuth>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let auth = BasicAuth {
        username: decode(url.username()),
        password: url.password().map(|p| Secret(decode(p))),
        password_file: None,
    };
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    (clean, Some(auth))
}

impl DaemonArgs {
    /// The targets to scrape: `--target` flags and the config file's `targets:`, with
    /// their settings; the default target when neither gives one and fleet mode is off.
    pub fn resolve_targets(&self, file: &TargetFile) -> Result<Vec<ResolvedTarget>, String> {
        let mut out: Vec<ResolvedTarget> = Vec::new();
        let push = |out: &mut Vec<ResolvedTarget>, url: Url, http: HttpSettings| {
            let (url, userinfo) = split_userinfo(&url);
            let mut http = http;
            if let Some(auth) = userinfo {
                if http.basic_auth.is_some() || http.bearer_token_file.is_some() {
                    return Err(format!(
                        "target {url}: credentials both in the URL and in the config file"
                    ));
                }
                http.basic_auth = Some(auth);
            }
            http.validate().map_err(|e| format!("target {url}: {e}"))?;
            if out.iter().any(|t| t.url == url) {
                return Err(format!("target {url} is given twice"));
            }
            out.push(ResolvedTarget { url, http });
            Ok(())
        };
        // The file's targets, as written (user info included), with their settings.
        let mut entries: Vec<(Url, HttpSettings)> = Vec::new();
        for e in &file.targets {
            let http = HttpSettings {
                bearer_token_file: e.bearer_token_file.clone(),
                basic_auth: e.basic_auth.clone(),
                tls_config: e.tls_config.clone(),
            };
            entries.push((parse_target(&e.url)?, http));
        }
        let mut flag_urls: Vec<Url> = self.targets.clone();
        if flag_urls.is_empty() && entries.is_empty() && self.probe_allow.is_empty() {
            flag_urls.push(parse_target(DEFAULT_TARGET)?);
        }
        for url in flag_urls {
            // A --target that the file also lists takes the file's settings.
            let clean = split_userinfo(&url).0;
            let http = match entries
                .iter()
                .position(|(u, _)| split_userinfo(u).0 == clean)
            {
                Some(i) => entries.remove(i).1,
                None => HttpSettings::default(),
            };
            push(&mut out, url, http)?;
        }
        for (url, http) in entries {
            push(&mut out, url, http)?;
        }
        if (self.pid.is_some() || self.pid_file.is_some()) && out.len() != 1 {
            return Err("--target.pid and --target.pid-file need exactly one target".into());
        }
        Ok(out)
    }

    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            if !seen.insert(split_userinfo(t).0) {
                return Err(format!("--target {} is given twice", split_userinfo(t).0));
            }
        }
        if (self.pid.is_some() || self.pid_file.is_some()) && self.targets.len() > 1 {
            return Err("--target.pid and --target.pid-file need exactly one --target".into());
        }
        let mut names = std::collections::HashSet::new();
        for key in &self.goroutine_labels {
            if key.is_empty() {
                return Err("--goroutine.label needs a label key".into());
            }
            if !names.insert(promoted_label_name(key)) {
                return Err(format!(
                    "--goroutine.label {key:?} is given twice (after sanitising)"
                ));
            }
        }
        if self.max_decompressed_bytes < self.max_body_bytes {
            return Err(
                "--limits.max-decompressed-bytes must be at least --limits.max-body-bytes".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.005"), Ok(0.005));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "NaN", "inf", "half", ""] {
            assert!(parse_fraction(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn budgets() {
        assert_eq!(parse_budget("0.01"), Ok(0.01));
        assert_eq!(parse_budget("0"), Ok(0.0));
        for bad in ["", "1", "1.5", "-0.1", "NaN", "inf", "1%", "x"] {
            assert!(parse_budget(bad).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["pprof-exporter"]).unwrap();
        assert_eq!(cli.daemon.target_budget, 0.0025);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "0s", "15", "s", "1x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn optional_durations_and_label_names() {
        assert_eq!(parse_optional_duration("0"), Ok(Every(None)));
        assert_eq!(
            parse_optional_duration("5m"),
            Ok(Every(Some(Duration::from_secs(300))))
        );
        assert!(parse_optional_duration("0s").is_err());
        assert_eq!(promoted_label_name("worker"), "label_worker");
        assert_eq!(promoted_label_name("req-id.v2"), "label_req_id_v2");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        for bad in ["", "0", "1TiB", "x", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("localhost:6060").unwrap().as_str(),
            "http://localhost:6060/"
        );
        assert_eq!(parse_target("https://svc:443/app").unwrap().path(), "/app");
        for bad in ["ftp://x", "http://", "http://x/?a=1", "::::"] {
            assert!(parse_target(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_and_prefix() {
        assert_eq!(parse_listen(":10060").unwrap().to_string(), "0.0.0.0:10060");
        assert!(parse_listen("localhost").is_err());
        assert_eq!(parse_prefix("internal/prof/").unwrap(), "/internal/prof");
        assert_eq!(parse_prefix("/debug/pprof").unwrap(), "/debug/pprof");
        assert!(parse_prefix("/a?b").is_err());
    }

    #[test]
    fn flag_and_file_targets_merge() {
        let file = TargetFile::parse(
            b"targets:\n  - url: http://a:1\n    bearer_token_file: /t\n  - url: http://u:p@b:2\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["x", "--target", "c:3", "--target", "a:1"]).unwrap();
        let t = cli.daemon.resolve_targets(&file).unwrap();
        let urls: Vec<&str> = t.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://c:3/", "http://a:1/", "http://b:2/"]);
        assert_eq!(t[0].http, HttpSettings::default());
        assert_eq!(t[1].http.bearer_token_file, Some(PathBuf::from("/t")));
        let auth = t[2].http.basic_auth.as_ref().unwrap();
        assert_eq!(
            (
                auth.username.as_str(),
                auth.password.as_ref().unwrap().0.as_str()
            ),
            ("u", "p")
        );
        // No default target beside file targets; a target listed twice is an error.
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(none.daemon.resolve_targets(&file).unwrap().len(), 2);
        let twice = TargetFile::parse(b"targets:\n  - url: http://a:1\n  - url: a:1\n").unwrap();
        assert!(
            none.daemon
                .resolve_targets(&twice)
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn defaults_parse_and_validate() {
        let cli = Cli::try_parse_from(["pprof-exporter"]).unwrap();
        assert!(cli.command.is_none());
        let targets = cli.daemon.resolve_targets(&TargetFile::default()).unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].url.as_str(), "http://localhost:6060/");
        assert_eq!(cli.daemon.listen.port(), 10060);
        assert_eq!(cli.daemon.scrape_interval, Duration::from_secs(15));
        assert_eq!(cli.daemon.smaps_interval.0, Some(Duration::from_secs(15)));
        let off = Cli::try_parse_from(["x", "--process.smaps-interval", "0"]).unwrap();
        assert_eq!(off.daemon.smaps_interval.0, None);
        cli.daemon.validate().unwrap();
        let dup = Cli::try_parse_from(["x", "--target", "a:1", "--target", "a:1"]).unwrap();
        assert!(dup.daemon.validate().is_err());
    }
}
