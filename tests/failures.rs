//! Failure paths: a dead target, HTTP errors, bodies that are not profiles. The daemon
//! keeps serving, reports the failure with the right reason, logs it once, never
//! passes stale series off as fresh, and leaves healthy targets alone. A real Go target
//! serves the 404 and the recovery cases; a small raw-socket server produces the faults
//! a real target cannot (500, garbage bytes, cut-off gzip).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// Serves canned responses chosen by the first path segment, forever, on its own thread.
fn fault_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond(stream));
        }
    });
    format!("http://{addr}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn respond(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let case = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let real = std::fs::read(root().join("tests/fixtures/profiles/heap-go1.27.pb.gz")).unwrap();
    let (status, body): (&str, Vec<u8>) = match case {
        "500" => (
            "500 Internal Server Error",
            b"could not write profile\n".to_vec(),
        ),
        "html" => (
            "200 OK",
            b"<!DOCTYPE html><html><body>login</body></html>".to_vec(),
        ),
        "garbage" => ("200 OK", vec![0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]),
        "gzipgarbage" => ("200 OK", gzip(&[0xff; 4096])),
        "truncated" => ("200 OK", real[..real.len() / 2].to_vec()),
        _ => ("404 Not Found", b"404 page not found\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// A port with nothing listening: bind, note the port, close.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn errors(m: &Metrics, target: &str, reason: &str) -> f64 {
    m.sum(
        "pprof_scrape_errors_total",
        &[("target", target), ("reason", reason)],
    )
}

#[test]
fn faults_are_reported_by_reason_and_healthy_targets_are_unaffected() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let faults = fault_server();
    let dead = dead_url();
    let cases = [
        (dead.clone(), "connect"),
        (format!("{faults}/500"), "http_status"),
        (format!("{faults}/html"), "decode"),
        (format!("{faults}/garbage"), "decode"),
        (format!("{faults}/gzipgarbage"), "decode"),
        (format!("{faults}/truncated"), "decode"),
        // The real Go target with a wrong prefix answers 404.
        (format!("{}/wrong", leaky.url), "http_status"),
    ];
    let mut args = vec![
        "--scrape.interval".to_owned(),
        "1s".to_owned(),
        "--scrape.timeout".to_owned(),
        "2s".to_owned(),
    ];
    for (url, _) in &cases {
        args.extend(["--target".to_owned(), url.clone()]);
    }
    args.extend(["--target".to_owned(), leaky.url.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exp = Exporter::start(&args);

    // Wait until every faulty target has failed three times: enough cycles to see
    // whether the log repeats itself.
    let m = exp.wait_for(WAIT, "three failed cycles on every faulty target", |m| {
        cases
            .iter()
            .all(|(url, reason)| errors(m, url, reason) >= 6.0)
            && m.get("pprof_up", &[("target", &leaky.url)]) == Some(1.0)
    });
    let log = exp.proc.output();
    for (url, reason) in &cases {
        let t = ("target", url.as_str());
        assert_eq!(m.get("pprof_up", &[t]), Some(0.0), "{url}");
        for other in ["connect", "timeout", "http_status", "too_large", "decode"] {
            if other != *reason {
                assert_eq!(
                    errors(&m, url, other),
                    0.0,
                    "{url}: unexpected {other} errors"
                );
            }
        }
        assert_eq!(
            m.select("pprof_heap_inuse_bytes", &[t]).count(),
            0,
            "{url}: per-function series from a failed target"
        );
        assert_eq!(m.select("pprof_goroutines", &[t]).count(), 0);
        assert_eq!(
            m.get("pprof_scrape_success", &[t, ("profile", "heap")]),
            Some(0.0)
        );
        assert_eq!(
            m.select(
                "pprof_last_scrape_timestamp_seconds",
                &[t, ("profile", "heap")]
            )
            .count(),
            0
        );
        // One log line per profile for the whole failure streak, not one per cycle.
        let mut per_profile: std::collections::BTreeMap<String, usize> = Default::default();
        for l in log
            .lines()
            .filter(|l| l.contains("scrape failed") && l.contains(&format!("target={url} ")))
        {
            let profile = l
                .split("profile=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            *per_profile.entry(profile.to_owned()).or_default() += 1;
        }
        assert!(
            per_profile.contains_key("\"heap\"") && per_profile.contains_key("\"goroutine\""),
            "{url}: {per_profile:?}"
        );
        assert!(
            per_profile.values().all(|&n| n == 1),
            "{url}: expected one line per profile: {per_profile:?}\n{log}"
        );
    }
    // The healthy target next to them is fully served.
    let t = ("target", leaky.url.as_str());
    assert_eq!(
        m.sum("pprof_goroutines", &[t, ("function", "main.selectForever")]),
        5.0
    );
    assert!(
        log.contains("reason=\"http_status\"") && log.contains("HTTP 500: could not write profile"),
        "{log}"
    );
    assert!(
        log.contains("text starting \"<!DOCTYPE html>"),
        "names what it got instead: {log}"
    );
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
}
