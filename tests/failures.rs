//! Fault injection: every way a target can fail or lie, against the real exporter.
//!
//! A small raw-socket server in this file produces the faults a real Go target cannot
//! (connection reset mid-body, stalls, a 1 byte/s trickle, HTTP errors and a redirect
//! loop, bodies that are not profiles, gzip bombs, hand-encoded hostile protobufs,
//! truncated or absurd debug=2 and MemStats texts). For each fault the exporter must:
//! keep answering `/metrics` quickly, report that target with `pprof_up 0` and the
//! right `reason` (or, for the optional text profiles, fail or degrade only that
//! profile), log the failure once, leave a healthy real Go target next to it alone,
//! never panic, and keep its memory within a cap derived from its byte limits.
//! A real Go target serves the 404 and the dying-and-recovering cases.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(120);

/// `--limits.max-body-bytes` of every exporter started here.
const MAX_BODY: u64 = 2 << 20;
/// `--limits.max-decompressed-bytes`.
const MAX_INFLATED: u64 = 8 << 20;
/// Peak RSS (VmHWM) the exporter may reach while served hostile sizes, derived from
/// the limits above. The debug build the suite runs idles at about 17 MB with a
/// target or two. A fetch buffers at most MAX_BODY. Inflating writes at most
/// MAX_INFLATED + 1 bytes, into a Vec that grows by doubling (so up to 2 x
/// MAX_INFLATED of capacity), and freed buffers stay cached in the allocator's
/// per-thread arenas, one per blocking thread that decoded: 17 + 2 + 2 x 8 x 2 =
/// 51 MB. 64 MB leaves room for allocator slack, yet is 16x below the gigabyte the
/// bomb inflates to, and below what a decoder holding a million samples needs.
const RSS_CAP: u64 = 64 << 20;

fn limit_args() -> Vec<String> {
    [
        "--scrape.interval",
        "1s",
        "--scrape.timeout",
        "5s",
        "--limits.max-body-bytes",
        &MAX_BODY.to_string(),
        "--limits.max-decompressed-bytes",
        &MAX_INFLATED.to_string(),
        "--goroutine.leak-interval",
        "0",
        "--goroutine.states-interval",
        "1s",
        "--memstats.interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_exporter(targets: &[String], extra: &[&str]) -> Exporter {
    let mut args = limit_args();
    for t in targets {
        args.extend(["--target".to_owned(), t.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Exporter::start(&args)
}

// ---------------------------------------------------------------------------------
// Hand-encoded protobuf profiles (field numbers from proto/profile.proto).

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        varint(&mut out, v);
    }
    out
}

/// A profile as plain parts, so a test can break exactly one thing before encoding.
#[derive(Clone)]
struct Wire {
    strings: Vec<String>,
    /// (type, unit) string indices.
    sample_types: Vec<(i64, i64)>,
    /// (id, name string index).
    functions: Vec<(u64, i64)>,
    mappings: Vec<u64>,
    /// (id, mapping id, function id per line).
    locations: Vec<(u64, u64, Vec<u64>)>,
    /// (location ids, values).
    samples: Vec<(Vec<u64>, Vec<i64>)>,
}

impl Wire {
    /// A small valid profile: `main.hostile` called by `main.main`, one sample with
    /// `value` per type.
    fn new(types: &[&str], unit: &str, value: i64) -> Wire {
        let mut strings = vec![String::new(), unit.to_owned()];
        let mut sample_types = Vec::new();
        for t in types {
            strings.push((*t).to_owned());
            sample_types.push((strings.len() as i64 - 1, 1));
        }
        strings.push("main.hostile".into());
        strings.push("main.main".into());
        let n = strings.len() as i64;
        Wire {
            strings,
            sample_types,
            functions: vec![(1, n - 2), (2, n - 1)],
            mappings: vec![1],
            locations: vec![(1, 1, vec![1]), (2, 1, vec![2])],
            samples: vec![(vec![1, 2], vec![value; types.len()])],
        }
    }

    fn heap() -> Wire {
        Wire::new(
            &[
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space",
            ],
            "bytes",
            4096,
        )
    }

    fn goroutine() -> Wire {
        Wire::new(&["goroutine"], "count", 3)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, u) in &self.sample_types {
            let mut vt = Vec::new();
            field_varint(&mut vt, 1, *t as u64);
            field_varint(&mut vt, 2, *u as u64);
            field_bytes(&mut out, 1, &vt);
        }
        for (locs, values) in &self.samples {
            let mut s = Vec::new();
            field_bytes(&mut s, 1, &packed(locs.iter().copied()));
            // Negative int64 values are encoded as their two's complement, as prost
            // and Go do.
            field_bytes(&mut s, 2, &packed(values.iter().map(|v| *v as u64)));
            field_bytes(&mut out, 2, &s);
        }
        for id in &self.mappings {
            let mut m = Vec::new();
            field_varint(&mut m, 1, *id);
            field_bytes(&mut out, 3, &m);
        }
        for (id, mapping, lines) in &self.locations {
            let mut l = Vec::new();
            field_varint(&mut l, 1, *id);
            field_varint(&mut l, 2, *mapping);
            for f in lines {
                let mut line = Vec::new();
                field_varint(&mut line, 1, *f);
                field_varint(&mut line, 2, 7);
                field_bytes(&mut l, 4, &line);
            }
            field_bytes(&mut out, 4, &l);
        }
        for (id, name) in &self.functions {
            let mut f = Vec::new();
            field_varint(&mut f, 1, *id);
            field_varint(&mut f, 2, *name as u64);
            field_bytes(&mut out, 5, &f);
        }
        for s in &self.strings {
            field_bytes(&mut out, 6, s.as_bytes());
        }
        out
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Breaks one thing in a valid heap or goroutine profile.
fn hostile_profile(case: &str, goroutine: bool) -> Option<Vec<u8>> {
    let mut w = if goroutine {
        Wire::goroutine()
    } else {
        Wire::heap()
    };
    let n_types = w.sample_types.len();
    match case {
        "proto-valid" => {}
        "proto-string-ref" => w.functions[0].1 = 99,
        "proto-function-ref" => w.locations[0].2 = vec![77],
        "proto-location-ref" => w.samples[0].0.push(55),
        "proto-mapping-ref" => w.locations[0].1 = 9,
        "proto-duplicate-function" => w.functions[1].0 = 1,
        "proto-duplicate-location" => {
            w.locations[1].0 = 1;
            w.samples[0].0 = vec![1];
        }
        "proto-zero-function" => {
            w.functions[0].0 = 0;
            w.locations[0].2 = vec![0];
        }
        "proto-zero-location" => {
            w.locations[0].0 = 0;
            w.samples[0].0 = vec![0, 2];
        }
        "proto-negative" => w.samples[0].1 = vec![-5; n_types],
        "proto-extra-values" => w.samples[0].1 = vec![1; n_types + 1],
        "proto-empty" => return Some(gzip(&[])),
        _ => return None,
    }
    Some(gzip(&w.encode()))
}

/// A valid profile of [`TINY_SAMPLES`] samples of 8 bytes each on the wire (heap
/// samples carry their four values and no location, goroutine samples one location
/// and a count), a few KiB gzipped. Built as gzip members (the profile head, then
/// one block of samples repeated), since protobuf fields concatenate.
fn tiny_samples(goroutine: bool) -> &'static [u8] {
    static HEAP: OnceLock<Vec<u8>> = OnceLock::new();
    static GOROUTINE: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if goroutine { &GOROUTINE } else { &HEAP };
    cell.get_or_init(|| {
        let w = if goroutine {
            Wire::goroutine()
        } else {
            Wire::heap()
        };
        let mut head = w.clone();
        head.samples.clear();
        let mut s = Vec::new();
        if goroutine {
            field_bytes(&mut s, 1, &packed([1]));
        }
        field_bytes(&mut s, 2, &packed(vec![1; w.sample_types.len()]));
        let mut block = Vec::new();
        for _ in 0..TINY_SAMPLES / 100 {
            field_bytes(&mut block, 2, &s);
        }
        assert_eq!(block.len(), 8 * TINY_SAMPLES / 100);
        let mut out = gzip(&head.encode());
        out.extend(gzip(&block).repeat(100));
        out
    })
}

/// Samples in the tiny-samples profile: a million, 8 MB inflated, just under
/// MAX_INFLATED, so they reach the protobuf decoder.
const TINY_SAMPLES: usize = 1_000_000;

/// A gzip bomb: one gzip member of 1 MiB of zeros (about 1 KiB), repeated 1024 times.
/// A gzip reader reads every member, so the 1 MiB body inflates to 1 GiB.
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| gzip(&vec![0u8; 1 << 20]).repeat(1024))
}

// ---------------------------------------------------------------------------------
// The fault server.

/// What the fault server does with one request.
enum Reply {
    /// A complete response.
    Full {
        status: &'static str,
        headers: Vec<String>,
        body: Vec<u8>,
    },
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// Reads the request, then says nothing until the client gives up.
    StallBeforeHeaders,
    /// Headers and part of the body, then nothing until the client gives up.
    StallMidBody,
    /// One body byte per second, for as long as the client listens.
    Trickle,
}

fn ok(body: Vec<u8>) -> Reply {
    Reply::Full {
        status: "200 OK",
        headers: Vec::new(),
        body,
    }
}

fn status(status: &'static str, body: &[u8]) -> Reply {
    Reply::Full {
        status,
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures").join(path)).unwrap()
}

/// Which pprof endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Heap,
    Goroutine,
    States,
    MemStats,
    Other,
}

fn endpoint_of(path_and_query: &str) -> Endpoint {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    match (path.rsplit('/').next().unwrap_or(""), query) {
        ("heap", "debug=1") => Endpoint::MemStats,
        ("heap", _) => Endpoint::Heap,
        ("goroutine", "debug=2") => Endpoint::States,
        ("goroutine", _) => Endpoint::Goroutine,
        _ => Endpoint::Other,
    }
}

/// The real payload a Go 1.27 target serves at `endpoint`.
fn valid(endpoint: Endpoint) -> Reply {
    match endpoint {
        Endpoint::Heap => ok(fixture("profiles/heap-go1.27.pb.gz")),
        Endpoint::Goroutine => ok(fixture("profiles/goroutine-go1.27.pb.gz")),
        Endpoint::States => ok(fixture("text/goroutine-debug2-go1.27.txt")),
        Endpoint::MemStats => ok(fixture("text/heap-debug1-go1.27.txt")),
        Endpoint::Other => status("404 Not Found", b"404 page not found\n"),
    }
}

/// Hostile debug=2 text: absurd ids, wait times past u64, a stack far deeper than Go
/// prints, an unterminated label set, a final record cut short.
fn absurd_dump() -> Vec<u8> {
    let mut s = String::new();
    s.push_str("goroutine 1 [chan receive, 18446744073709551615 minutes]:\nmain.main()\n\t/x.go:1 +0x1\n\n");
    s.push_str("goroutine 99999999999999999999999 [select, 99999999999999999999999 minutes]:\nmain.f()\n\t/x.go:1 +0x1\n\n");
    s.push_str("goroutine 2 [IO wait, locked to thread] {k: \"unterminated}:\n");
    for i in 0..40_000 {
        s.push_str(&format!("main.deep{}(0x1)\n\t/x.go:{i} +0x1\n", i % 7));
    }
    s.push_str("created by main.main in goroutine 18446744073709551616\n\t/x.go:1 +0x1\n\n");
    s.push_str("goroutine 3 [sleep]:\nmain.cut(");
    s.into_bytes()
}

fn absurd_memstats() -> Vec<u8> {
    let ring: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    format!(
        "heap profile: 0: 0 [0: 0] @ heap/8192\n\n# runtime.MemStats\n\
         # Alloc = 99999999999999999999999999\n# Sys = -5\n# HeapAlloc = 1e9\n\
         # HeapIdle = 18446744073709551615\n# HeapReleased = 18446744073709551615\n\
         # Stack = 1 / \n# PauseNs = [{}]\n# NumGC = 18446744073709551615\n\
         # GCCPUFraction = NaN\n# DebugGC = maybe\n# = \n#  = 7\n# MaxRSS = 0x10\n",
        ring.join(" ")
    )
    .into_bytes()
}

/// The reply for `case` at `path_and_query`.
fn reply(case: &str, path_and_query: &str) -> Reply {
    let endpoint = endpoint_of(path_and_query);
    let proto = matches!(endpoint, Endpoint::Heap | Endpoint::Goroutine);
    if let Some(body) = hostile_profile(case, endpoint == Endpoint::Goroutine) {
        return ok(body);
    }
    match case {
        "500" => status("500 Internal Server Error", b"could not write profile\n"),
        "401" => status("401 Unauthorized", b"Unauthorized\n"),
        "redirect-loop" => Reply::Full {
            status: "302 Found",
            headers: vec![format!("Location: /{case}/{path_and_query}")],
            body: Vec::new(),
        },
        "html" => ok(b"<!DOCTYPE html><html><body>login</body></html>".to_vec()),
        "garbage" => ok(vec![0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]),
        "gzip-garbage" => ok(gzip(&[0xff; 4096])),
        "truncated-gzip" => {
            let real = fixture("profiles/heap-go1.27.pb.gz");
            ok(real[..real.len() / 2].to_vec())
        }
        "reset" => Reply::ResetMidBody,
        "stall-headers" => Reply::StallBeforeHeaders,
        "stall-body" => Reply::StallMidBody,
        "trickle" => Reply::Trickle,
        "bomb" => ok(gzip_bomb().to_vec()),
        "oversize" => ok(vec![0x0a; MAX_BODY as usize + 1]),
        "tiny-samples" if proto => ok(tiny_samples(endpoint == Endpoint::Goroutine).to_vec()),
        "tiny-samples" => valid(endpoint),
        "debug2-truncated" if endpoint == Endpoint::States => {
            let full = fixture("text/goroutine-debug2-go1.27.txt");
            ok(full[..full.len() / 2].to_vec())
        }
        "debug2-absurd" if endpoint == Endpoint::States => ok(absurd_dump()),
        "memstats-truncated" if endpoint == Endpoint::MemStats => {
            let full = fixture("text/heap-debug1-go1.27.txt");
            let at = full
                .windows(13)
                .position(|w| w == b"# HeapIdle = ")
                .unwrap();
            ok(full[..at + "# HeapIdle = 43".len()].to_vec())
        }
        "memstats-absurd" if endpoint == Endpoint::MemStats => ok(absurd_memstats()),
        "memstats-missing" if endpoint == Endpoint::MemStats => {
            // A proto heap profile where the text was expected: no MemStats block.
            ok(fixture("profiles/heap-go1.27.pb.gz"))
        }
        c if c.starts_with("debug2-") || c.starts_with("memstats-") || c == "control" => {
            valid(endpoint)
        }
        _ => status("404 Not Found", b"404 page not found\n"),
    }
}

/// Serves `reply(case, path)` for requests to `/<case>/<path>`, forever, one thread
/// per connection; returns the base URL.
fn fault_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_connection(stream));
        }
    });
    format!("http://{addr}")
}

/// Reads the request line one byte at a time, so that the headers behind it stay
/// unread in the socket: closing a socket with unread data makes the kernel send a
/// reset instead of a clean end, which is how the reset case is produced.
fn read_request_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte).ok()? == 0 || line.len() > 8192 {
            return None;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).ok()
}

fn serve_connection(mut stream: TcpStream) {
    // A backstop only: clients close stalled connections at their own timeout.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let Some(request) = read_request_line(&mut stream) else {
        return;
    };
    let target = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (case, rest) = target
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((&target, ""));
    let reply = reply(case, rest);
    if matches!(reply, Reply::ResetMidBody) {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
        );
        let _ = stream.write_all(&fixture("profiles/heap-go1.27.pb.gz")[..2000]);
        let _ = stream.flush();
        // Dropped with the request headers unread: the kernel answers with RST.
        return;
    }
    // Consume the rest of the request head.
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let head = |status: &str, len: usize, extra: &[String]| {
        let mut h = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n"
        );
        for e in extra {
            h.push_str(e);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h
    };
    let wait_for_close = |reader: &mut BufReader<TcpStream>| {
        let mut sink = [0u8; 64];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let _ = stream.write_all(head(status, body.len(), &headers).as_bytes());
            let _ = stream.write_all(&body);
        }
        Reply::StallBeforeHeaders => wait_for_close(&mut reader),
        Reply::StallMidBody => {
            let _ = stream.write_all(head("200 OK", 100_000, &[]).as_bytes());
            let _ = stream.write_all(&fixture("profiles/heap-go1.27.pb.gz")[..2000]);
            wait_for_close(&mut reader);
        }
        Reply::Trickle => {
            let body = fixture("profiles/heap-go1.27.pb.gz");
            let _ = stream.write_all(head("200 OK", body.len(), &[]).as_bytes());
            for b in body {
                if stream.write_all(&[b]).is_err() || stream.flush().is_err() {
                    break;
                }
                // The fault itself: one byte per second.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Reply::ResetMidBody => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------
// Observations.

fn errors(m: &Metrics, target: &str, reason: &str) -> f64 {
    m.sum(
        "pprof_scrape_errors_total",
        &[("target", target), ("reason", reason)],
    )
}

/// Polls `/metrics` until `pred` holds, timing every request; fails after `timeout`.
/// Returns the metrics and every request's latency.
fn poll_timed(
    exp: &Exporter,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Metrics) -> Result<(), String>,
) -> (Metrics, Vec<Duration>) {
    let deadline = Instant::now() + timeout;
    let mut latencies = Vec::new();
    loop {
        let start = Instant::now();
        let (code, body) = exp.get("/metrics");
        latencies.push(start.elapsed());
        assert_eq!(code, 200, "GET /metrics: {body}");
        let m = Metrics::parse(&body);
        let missing = match pred(&m) {
            Ok(()) => return (m, latencies),
            Err(missing) => missing,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {missing}\n/metrics:\n{}\nlog:\n{}",
            m.text,
            exp.proc.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Peak resident set of a process, from `VmHWM` in `/proc/<pid>/status`, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

fn assert_no_panic(exp: &Exporter) {
    let log = exp.proc.output();
    assert!(!log.contains("panicked"), "the exporter panicked:\n{log}");
}

/// How a faulty target must show up.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `pprof_up 0`, heap and goroutine failing with this reason, and a log line
    /// containing the text.
    Down(&'static str, &'static str),
    /// Accepted: `pprof_up 1` (the fault is in a part the exporter does not use).
    Up,
    /// `pprof_up 1`; the optional text profile fails with this reason, and a log line
    /// says why.
    ProfileFails(&'static str, &'static str, &'static str),
    /// `pprof_up 1`; the optional text profile still succeeds on what it could read.
    ProfileDegrades(&'static str),
}

/// Faults of the connection and the HTTP exchange.
const NETWORK_FAULTS: &[(&str, Expect)] = &[
    ("reset", Expect::Down("connect", "reading response")),
    ("stall-headers", Expect::Down("timeout", "timed out")),
    ("stall-body", Expect::Down("timeout", "timed out")),
    ("trickle", Expect::Down("timeout", "timed out")),
    ("401", Expect::Down("http_status", "HTTP 401")),
    (
        "500",
        Expect::Down("http_status", "HTTP 500: could not write profile"),
    ),
    (
        "redirect-loop",
        Expect::Down("http_status", "more than 3 redirects"),
    ),
];

/// Faults of the payload: not a profile, too big, broken debug=2 and MemStats texts.
const PAYLOAD_FAULTS: &[(&str, Expect)] = &[
    (
        "html",
        Expect::Down("decode", "text starting \"<!DOCTYPE html>"),
    ),
    ("garbage", Expect::Down("decode", "protobuf")),
    ("gzip-garbage", Expect::Down("decode", "protobuf")),
    ("truncated-gzip", Expect::Down("decode", "gzip")),
    (
        "bomb",
        Expect::Down("too_large", "decompressed size exceeds"),
    ),
    (
        "oversize",
        Expect::Down("too_large", "body exceeds the limit"),
    ),
    ("control", Expect::Up),
    (
        "debug2-truncated",
        Expect::ProfileDegrades("goroutine_states"),
    ),
    ("debug2-absurd", Expect::ProfileDegrades("goroutine_states")),
    ("memstats-truncated", Expect::ProfileDegrades("memstats")),
    ("memstats-absurd", Expect::ProfileDegrades("memstats")),
    (
        "memstats-missing",
        Expect::ProfileFails("memstats", "decode", "no runtime.MemStats block"),
    ),
];

/// Hand-encoded protobuf profiles, each with one thing broken.
const PROTO_FAULTS: &[(&str, Expect)] = &[
    (
        "proto-string-ref",
        Expect::Down("decode", "outside the table"),
    ),
    (
        "proto-function-ref",
        Expect::Down("decode", "unknown function 77"),
    ),
    (
        "proto-location-ref",
        Expect::Down("decode", "unknown location 55"),
    ),
    (
        "proto-duplicate-function",
        Expect::Down("decode", "duplicate function id 1"),
    ),
    (
        "proto-duplicate-location",
        Expect::Down("decode", "duplicate location id 1"),
    ),
    (
        "proto-zero-function",
        Expect::Down("decode", "function with id 0"),
    ),
    (
        "proto-zero-location",
        Expect::Down("decode", "location with id 0"),
    ),
    ("proto-extra-values", Expect::Down("decode", "values for")),
    ("proto-empty", Expect::Down("decode", "sample type")),
    ("proto-negative", Expect::Down("decode", "negative")),
    // Mappings are not used, and `go tool pprof` also accepts a location whose
    // mapping id is unknown (it leaves the mapping unset).
    ("proto-mapping-ref", Expect::Up),
    ("proto-valid", Expect::Up),
];

/// No profile of `target` failed for any reason but `reason` (the process lookup has
/// reasons of its own and is left out).
fn assert_only_reason(m: &Metrics, target: &str, reason: &str, log: &str) {
    for s in m.select("pprof_scrape_errors_total", &[("target", target)]) {
        if s.labels["profile"] != "process" && s.labels["reason"] != reason {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&format!("target={target} ")))
                .collect();
            assert_eq!(
                s.value,
                0.0,
                "{target}: unexpected errors {s:?}; log:\n{}",
                lines.join("\n")
            );
        }
    }
}

#[test]
fn network_faults_are_reported_by_reason_and_healthy_targets_are_unaffected() {
    run_faults(NETWORK_FAULTS);
}

#[test]
fn payload_faults_are_reported_by_reason_and_healthy_targets_are_unaffected() {
    run_faults(PAYLOAD_FAULTS);
}

#[test]
fn hostile_protobufs_are_reported_by_reason_and_healthy_targets_are_unaffected() {
    run_faults(PROTO_FAULTS);
}

/// One exporter scraping every fault of `list` and a healthy real Go target (plus, for
/// the network faults, a dead port and the Go target under a wrong prefix).
fn run_faults(list: &[(&str, Expect)]) {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let _ = gzip_bomb();
    let faults = fault_server();
    let mut cases: Vec<(String, Expect)> = list
        .iter()
        .map(|(case, e)| (format!("{faults}/{case}"), *e))
        .collect();
    let network = std::ptr::eq(list, NETWORK_FAULTS);
    let text = list.iter().any(|(case, _)| *case == "control");
    if network {
        cases.push((dead_url(), Expect::Down("connect", "connect")));
        // The real Go target with a wrong prefix answers 404.
        cases.push((
            format!("{}/wrong", leaky.url),
            Expect::Down("http_status", "HTTP 404"),
        ));
    }
    let mut targets: Vec<String> = cases.iter().map(|(u, _)| u.clone()).collect();
    targets.push(leaky.url.clone());
    let exp = start_exporter(&targets, &[]);
    let control = format!("{faults}/control");

    // Every faulty target fails at least three times (timeouts take a few cycles), and
    // every text-profile case has been collected at least twice.
    let settled = |m: &Metrics| {
        let unsettled: Vec<&str> = cases
            .iter()
            .filter(|(url, e)| !match e {
                Expect::Down(reason, _) => errors(m, url, reason) >= 3.0,
                Expect::Up => m.get("pprof_up", &[("target", url)]) == Some(1.0),
                Expect::ProfileFails(profile, reason, _) => {
                    m.sum(
                        "pprof_scrape_errors_total",
                        &[("target", url), ("profile", profile), ("reason", reason)],
                    ) >= 2.0
                }
                Expect::ProfileDegrades(profile) => {
                    m.get(
                        "pprof_scrape_success",
                        &[("target", url), ("profile", profile)],
                    ) == Some(1.0)
                }
            })
            .map(|(url, _)| url.as_str())
            .collect();
        let healthy = m.get("pprof_up", &[("target", &leaky.url)]) == Some(1.0)
            && (!text
                || m.get(
                    "pprof_scrape_success",
                    &[("target", &control), ("profile", "goroutine_states")],
                ) == Some(1.0));
        if unsettled.is_empty() && healthy {
            Ok(())
        } else {
            Err(format!("healthy: {healthy}; unsettled: {unsettled:?}"))
        }
    };
    let (m, mut latencies) = poll_timed(&exp, WAIT, "every fault reported", settled);
    // A few more cycles with everything failing at once, to sample latency under load.
    let until = Instant::now() + Duration::from_secs(5);
    let mut m = m;
    while Instant::now() < until {
        let (m2, l) = poll_timed(&exp, WAIT, "metrics", |_| Ok(()));
        latencies.extend(l);
        m = m2;
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = exp.proc.output();
    promtool_check_metrics(&m.text);

    for (url, expect) in &cases {
        let t = ("target", url.as_str());
        match *expect {
            Expect::Down(reason, text) => {
                assert_eq!(m.get("pprof_up", &[t]), Some(0.0), "{url}");
                for profile in ["heap", "goroutine"] {
                    let p = ("profile", profile);
                    assert!(
                        m.sum("pprof_scrape_errors_total", &[t, p, ("reason", reason)]) >= 1.0,
                        "{url} {profile}: no {reason} error"
                    );
                    assert_eq!(m.get("pprof_scrape_success", &[t, p]), Some(0.0));
                    assert_eq!(
                        m.select("pprof_last_scrape_timestamp_seconds", &[t, p])
                            .count(),
                        0,
                        "{url}: never succeeded, so no timestamp"
                    );
                }
                assert_only_reason(&m, url, reason, &log);
                assert_eq!(
                    m.select("pprof_heap_inuse_bytes", &[t]).count(),
                    0,
                    "{url}: per-function series from a failed target"
                );
                assert_eq!(m.select("pprof_goroutines", &[t]).count(), 0);
                // One log line per profile for the whole failure streak, with the cause.
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("scrape failed") && l.contains(&format!("target={url} "))
                    })
                    .collect();
                let mut per_profile: BTreeMap<String, usize> = BTreeMap::new();
                for l in &lines {
                    let profile = l
                        .split("profile=")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next();
                    *per_profile.entry(profile.unwrap().to_owned()).or_default() += 1;
                }
                for profile in ["heap", "goroutine"] {
                    assert!(
                        per_profile.contains_key(&format!("\"{profile}\"")),
                        "{url}: {per_profile:?}"
                    );
                }
                assert!(
                    per_profile.values().all(|&n| n == 1),
                    "{url}: expected one line per profile: {per_profile:?}\n{log}"
                );
                assert!(
                    lines
                        .iter()
                        .any(|l| l.contains(&format!("reason=\"{reason}\"")) && l.contains(text)),
                    "{url}: no log line with reason {reason} and {text:?}:\n{}",
                    lines.join("\n")
                );
            }
            Expect::Up => {
                assert_eq!(m.get("pprof_up", &[t]), Some(1.0), "{url}");
                assert!(
                    m.sum("pprof_profile_heap_inuse_bytes", &[t]) > 0.0,
                    "{url}: heap served"
                );
                assert!(m.sum("pprof_profile_goroutines", &[t]) > 0.0, "{url}");
                for profile in ["heap", "goroutine"] {
                    assert_eq!(
                        m.sum("pprof_scrape_errors_total", &[t, ("profile", profile)]),
                        0.0,
                        "{url}"
                    );
                }
            }
            Expect::ProfileFails(profile, reason, text) => {
                assert_eq!(m.get("pprof_up", &[t]), Some(1.0), "{url}");
                let p = ("profile", profile);
                assert_eq!(m.get("pprof_scrape_success", &[t, p]), Some(0.0), "{url}");
                for s in m.select("pprof_scrape_errors_total", &[t, p]) {
                    assert!(
                        (s.labels["reason"] == reason) == (s.value > 0.0),
                        "{url}: {s:?}"
                    );
                }
                assert!(log.contains(text), "{url}: {text:?} not logged");
            }
            Expect::ProfileDegrades(profile) => {
                assert_eq!(m.get("pprof_up", &[t]), Some(1.0), "{url}");
                let p = ("profile", profile);
                assert_eq!(m.sum("pprof_scrape_errors_total", &[t, p]), 0.0, "{url}");
            }
        }
    }

    if text {
        degraded_text_profiles(&m, &faults);
    }

    // The healthy target next to them is fully served.
    let t = ("target", leaky.url.as_str());
    assert_eq!(m.get("pprof_up", &[t]), Some(1.0));
    assert_eq!(
        m.sum("pprof_goroutines", &[t, ("function", "main.selectForever")]),
        5.0
    );
    assert_eq!(m.sum("pprof_scrape_errors_total", &[t]), 0.0);
    report_latency(&exp, latencies, cases.len());
}

/// What the degraded text profiles still show.
fn degraded_text_profiles(m: &Metrics, faults: &str) {
    let url = |case: &str| format!("{faults}/{case}");
    let control = url("control");
    let full_states = m.sum("pprof_goroutines_by_state", &[("target", &control)]);
    assert!(full_states > 0.0);
    let cut_states = m.sum(
        "pprof_goroutines_by_state",
        &[("target", &url("debug2-truncated"))],
    );
    assert!(
        cut_states > 0.0 && cut_states < full_states,
        "half a dump counts some but not all goroutines: {cut_states} of {full_states}"
    );
    let absurd = url("debug2-absurd");
    let absurd_t = ("target", absurd.as_str());
    // Goroutine 1 and the deep goroutine 2 are complete; the cut goroutine 3 is not,
    // and the header with an id past u64 is not a header.
    assert_eq!(m.sum("pprof_goroutines_by_state", &[absurd_t]), 2.0);
    for s in m.select("pprof_goroutine_wait_seconds_max", &[absurd_t]) {
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
    }
    let cut = url("memstats-truncated");
    let cut_t = ("target", cut.as_str());
    assert!(
        m.get("pprof_go_memstats_heap_alloc_bytes", &[cut_t])
            .is_some()
    );
    assert_eq!(
        m.get("pprof_go_memstats_heap_idle_bytes", &[cut_t]),
        None,
        "a field cut mid-line is left out, not read as 43"
    );
    assert_eq!(m.get("pprof_go_memstats_gc_cycles_total", &[cut_t]), None);
    let absurd = url("memstats-absurd");
    let absurd_t = ("target", absurd.as_str());
    for name in [
        "pprof_go_memstats_alloc_bytes_total",
        "pprof_go_memstats_sys_bytes",
        "pprof_go_memstats_heap_alloc_bytes",
        "pprof_go_memstats_gc_cpu_fraction",
        "pprof_go_memstats_max_rss_bytes",
        "pprof_go_memstats_last_gc_pause_seconds",
    ] {
        assert_eq!(
            m.get(name, &[absurd_t]),
            None,
            "{name} from an unreadable value"
        );
    }
    assert_eq!(
        m.get("pprof_go_memstats_gc_cycles_total", &[absurd_t]),
        Some(u64::MAX as f64)
    );
}

fn report_latency(exp: &Exporter, mut latencies: Vec<Duration>, targets: usize) {
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    eprintln!(
        "/metrics over {} requests with {targets} faulty targets: p50 {p50:?}, p99 {p99:?}, max {max:?}; exporter VmHWM {} KiB",
        latencies.len(),
        vm_hwm(exp.proc.pid()) / 1024
    );
    // Generous: the machine is shared and the exporter re-encodes the exposition after
    // every profile of every target (see the report printed above), but a fetch or a
    // decode blocking the server would hold it for the whole 5 s scrape timeout.
    assert!(max < Duration::from_secs(4), "slow /metrics: max {max:?}");
    assert_no_panic(exp);
}

/// One exporter per hostile size, with a healthy target beside it: the reason (None:
/// decoded in full), and the peak RSS against `cap` when one is given.
fn memory_case(case: &str, reason: Option<&str>, cap: Option<u64>) {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    // Built before the exporter asks, so that building never looks like a stall.
    let _ = (gzip_bomb(), tiny_samples(false), tiny_samples(true));
    let faults = fault_server();
    let url = format!("{faults}/{case}");
    let exp = start_exporter(&[url.clone(), leaky.url.clone()], &[]);
    let t = ("target", url.as_str());
    let (m, latencies) = poll_timed(&exp, WAIT, case, |m| {
        let healthy = m.get("pprof_up", &[("target", &leaky.url)]) == Some(1.0);
        let done = match reason {
            // Several failed cycles, each holding the largest buffers it can.
            Some(r) => errors(m, &url, r) >= 4.0,
            // Both profiles decoded and aggregated in full.
            None => {
                m.get("pprof_up", &[t]) == Some(1.0)
                    && m.get("pprof_profile_goroutines", &[t]) == Some(TINY_SAMPLES as f64)
                    && m.get("pprof_profile_heap_inuse_bytes", &[t]) == Some(TINY_SAMPLES as f64)
            }
        };
        if done && healthy {
            Ok(())
        } else {
            Err(format!("done {done}, healthy neighbour {healthy}"))
        }
    });
    let hwm = vm_hwm(exp.proc.pid());
    let max = latencies.iter().max().unwrap();
    eprintln!(
        "{case}: exporter VmHWM {} KiB (cap {} KiB), /metrics max {max:?}",
        hwm / 1024,
        RSS_CAP / 1024
    );
    match reason {
        Some(r) => {
            assert_eq!(m.get("pprof_up", &[t]), Some(0.0));
            assert_only_reason(&m, &url, r, &exp.proc.output());
        }
        None => assert_eq!(m.get("pprof_up", &[t]), Some(1.0)),
    }
    assert_eq!(m.get("pprof_up", &[("target", &leaky.url)]), Some(1.0));
    assert!(*max < Duration::from_secs(2), "slow /metrics: {max:?}");
    if let Some(cap) = cap {
        assert!(
            hwm < cap,
            "{case}: peak RSS {} KiB over the cap of {} KiB",
            hwm / 1024,
            cap / 1024
        );
    }
    assert_no_panic(&exp);
}

#[test]
fn a_gzip_bomb_is_refused_within_the_memory_cap() {
    memory_case("bomb", Some("too_large"), Some(RSS_CAP));
}

#[test]
fn an_oversized_body_is_refused_within_the_memory_cap() {
    memory_case("oversize", Some("too_large"), Some(RSS_CAP));
}

/// A million samples in 8 MB are decoded and aggregated in full, without slowing
/// `/metrics` or the neighbour, and within the same memory cap: samples are aggregated
/// as they are read off the wire, never all held at once.
#[test]
fn millions_of_tiny_samples_are_decoded_in_full() {
    memory_case("tiny-samples", None, Some(RSS_CAP));
}

#[test]
fn a_target_that_dies_loses_its_series_and_recovers() {
    let Some(leaky) = Leaky::start(Go::V127, &["-addr", "127.0.0.1:0"]) else {
        return;
    };
    let url = leaky.url.clone();
    let port = leaky.port();
    let exp = Exporter::start(&["--target", &url, "--scrape.interval", "1s"]);
    exp.wait_for(WAIT, "up", |m| {
        m.get("pprof_up", &[]) == Some(1.0) && m.select("pprof_goroutines", &[]).count() > 0
    });
    drop(leaky);
    let m = exp.wait_for(WAIT, "down", |m| {
        m.get("pprof_up", &[]) == Some(0.0) && m.sum("pprof_scrape_errors_total", &[]) >= 2.0
    });
    assert_eq!(
        m.select("pprof_goroutines", &[]).count(),
        0,
        "stale series after the target died"
    );
    assert_eq!(m.select("pprof_heap_inuse_bytes", &[]).count(), 0);
    assert!(m.sum("pprof_scrape_errors_total", &[("reason", "connect")]) >= 2.0);
    // The last success stays visible, so staleness can be graphed.
    assert!(
        m.get(
            "pprof_last_scrape_timestamp_seconds",
            &[("profile", "heap")]
        )
        .is_some()
    );

    // Same port, new process: the exporter picks it up again and says so once.
    let Some(_again) = Leaky::start(Go::V127, &["-addr", &format!("127.0.0.1:{port}")]) else {
        return;
    };
    exp.wait_for(WAIT, "recovered", |m| {
        m.get("pprof_up", &[]) == Some(1.0) && m.select("pprof_goroutines", &[]).count() > 0
    });
    assert!(exp.proc.output().contains("scrape recovered"));
    assert_no_panic(&exp);
}
