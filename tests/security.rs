//! Production settings with real parts: the exporter's own endpoints behind TLS, client
//! certificates and basic auth (`--web.config.file`); https targets that want a custom
//! CA, a client certificate, a bearer token or basic auth (`--target.config.file`); and
//! fleet mode (`/probe`) with its allow-list, cache and deadline. Certificates are made
//! fresh for each run; the targets are real Go programs serving net/http/pprof.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const WAIT: Duration = Duration::from_secs(30);

/// A throwaway PKI: one CA, a server certificate for localhost and 127.0.0.1, and a
/// client certificate, all as PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(name: &str) -> Pki {
    let dir = scratch(name);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pprof-exporter test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "pprof-exporter test server",
    );
    let (client_cert, client_key) = leaf(vec!["client".into()], "pprof-exporter test client");
    let write = |file: &str, text: &str| {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.crt", &ca.pem()),
        server_cert: write("server.crt", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.crt", &client_cert),
        client_key: write("client.key", &client_key),
        dir,
    }
}

/// An HTTP/1.1 GET over TLS, trusting only `ca`; returns status, headers and body, or
/// the TLS/IO error.
fn tls_get(
    addr: &str,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    authorization: Option<&str>,
) -> Result<(u16, String, String), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    pprof_exporter::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // Peers that close without close_notify still delivered the whole response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, head.to_owned(), body.to_owned()))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The authtarget Go program with the given flags; returns it and its base URL.
fn auth_target(args: &[&str]) -> Option<(Proc, String)> {
    let bin = build_go_program(Go::V127, "authtarget")?;
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let (proc, line) = Proc::spawn(cmd, "listening on ", WAIT);
    let url = line.split("listening on ").nth(1)?.trim().to_owned();
    Some((proc, url))
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn own_endpoints_need_tls_a_client_certificate_and_basic_auth() {
    let Some(leaky) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let pki = pki("web-config");
    // Cost 4 keeps the test fast; the exporter accepts any bcrypt cost.
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    let web_config = pki.dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hash}'\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let exporter = Exporter::start(&[
        "--target",
        &leaky.url,
        "--web.config.file",
        web_config.to_str().unwrap(),
    ]);
    let addr = exporter.url.trim_start_matches("http://").to_owned();
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));

    // Plain HTTP on the TLS port gets no metrics.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !String::from_utf8_lossy(&raw).contains("pprof_"),
        "plain HTTP must not be served"
    );
    // TLS without a client certificate: the handshake (or the first read) fails.
    let no_cert = tls_get(
        &addr,
        "/metrics",
        &pki.ca,
        None,
        Some(&basic("prometheus", "correct horse")),
    );
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served: {no_cert:?}"
    );
    // With a certificate but no or wrong credentials: 401 with a challenge.
    for auth in [
        None,
        Some(basic("prometheus", "wrong")),
        Some(basic("nobody", "correct horse")),
    ] {
        let (status, head, _) =
            tls_get(&addr, "/metrics", &pki.ca, client, auth.as_deref()).unwrap();
        assert_eq!(status, 401, "auth {auth:?}: {head}");
        assert!(
            head.to_lowercase().contains("www-authenticate: basic"),
            "{head}"
        );
    }
    // /healthz needs no credentials, so that kubelet probes work.
    let (status, _, body) = tls_get(&addr, "/healthz", &pki.ca, client, None).unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    // The right credentials: metrics, with the configured extra header.
    let good = basic("prometheus", "correct horse");
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, head, body) =
            tls_get(&addr, "/metrics", &pki.ca, client, Some(&good)).unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{head}"
        );
        let m = Metrics::parse(&body);
        if m.get("pprof_up", &[("target", &leaky.url)]) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "pprof_up never 1:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = exporter.proc.output();
    assert!(
        !log.contains("correct horse") && !log.contains(&hash),
        "{log}"
    );
}

#[test]
fn bad_web_and_target_configs_exit_with_one_clear_line() {
    let dir = scratch("bad-configs");
    let cases: Vec<(&str, String, &str)> = vec![
        ("--web.config.file", "basic_auth_users:\n  a: notahash\n".into(), "not a bcrypt hash"),
        ("--web.config.file", "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n".into(), "/nonexistent.crt"),
        ("--web.config.file", "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n".into(), "not supported"),
        ("--web.config.file", "unknown_key: 1\n".into(), "unknown field"),
        ("--target.config.file", "targets:\n  - url: http://127.0.0.1:1\n    bearer_token_file: /t\n    basic_auth: {username: u}\n".into(), "mutually exclusive"),
        ("--target.config.file", "targets:\n  - url: https://127.0.0.1:1\n    tls_config: {ca_file: /nonexistent-ca.pem}\n".into(), "/nonexistent-ca.pem"),
        ("--target.config.file", "targets:\n  - url: ftp://x\n".into(), "http or https"),
        ("--target.config.file", "probe:\n  tls_config: {cert_file: /c}\n".into(), "go together"),
    ];
    for (i, (flag, yaml, expect)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(exporter_bin())
            .args([
                *flag,
                path.to_str().unwrap(),
                "--web.listen-address",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag} {yaml:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(expect),
            "{flag} {yaml:?}: expected {expect:?} in {stderr}"
        );
    }
    let out = Command::new(exporter_bin())
        .args(["--probe.allow", "(", "--web.listen-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--probe.allow"));
}

#[test]
fn https_targets_with_ca_client_certificate_token_and_basic_auth() {
    let pki = pki("targets");
    let tls_args = |extra: &[&str]| {
        let mut v = vec![
            "-cert".to_owned(),
            pki.server_cert.display().to_string(),
            "-key".to_owned(),
            pki.server_key.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // T1: TLS, client certificates required, bearer token.
    let a1 = tls_args(&["-client-ca", pki.ca.to_str().unwrap(), "-token", "tok-3f9a"]);
    let Some((_t1, url1)) = auth_target(&a1.iter().map(String::as_str).collect::<Vec<_>>()) else {
        return;
    };
    // T2: TLS, basic auth.
    let a2 = tls_args(&["-user", "scraper", "-password", "pw-77c1"]);
    let (_t2, url2) = auth_target(&a2.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    // T3: plain http, basic auth given in the URL.
    let (_t3, url3) = auth_target(&["-user", "u3", "-password", "pw-url-51d0"]).unwrap();
    assert!(url1.starts_with("https://") && url3.starts_with("http://"));
    let (p1, p2) = (host_port(&url1), host_port(&url2));
    let p1_port = p1.rsplit(':').next().unwrap();
    let p2_port = p2.rsplit(':').next().unwrap();

    let token = pki.dir.join("token");
    std::fs::write(&token, "tok-3f9a\n").unwrap();
    let wrong = pki.dir.join("wrong-token");
    std::fs::write(&wrong, "tok-wrong-0000").unwrap();
    let password = pki.dir.join("password");
    std::fs::write(&password, "pw-77c1").unwrap();
    let (ca, cc, ck) = (
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    );
    let config = pki.dir.join("targets.yml");
    std::fs::write(
        &config,
        format!(
            "targets:
  - url: https://127.0.0.1:{p1_port}
    bearer_token_file: {token}
    tls_config: {{ca_file: {ca}, cert_file: {cc}, key_file: {ck}}}
  - url: https://localhost:{p1_port}
    bearer_token_file: {wrong}
    tls_config: {{ca_file: {ca}, cert_file: {cc}, key_file: {ck}}}
  - url: https://127.0.0.1:{p2_port}
    basic_auth: {{username: scraper, password_file: {password}}}
    tls_config: {{insecure_skip_verify: true}}
  - url: https://localhost:{p2_port}
",
            token = token.display(),
            wrong = wrong.display(),
            password = password.display(),
        ),
    )
    .unwrap();
    let url3_creds = url3.replace("http://", "http://u3:pw-url-51d0@");
    let exporter = Exporter::start(&[
        "--target.config.file",
        config.to_str().unwrap(),
        "--target",
        &url3_creds,
        "--scrape.interval",
        "1s",
        "--memstats.interval",
        "0",
        "--goroutine.leak-interval",
        "0",
    ]);
    let good = [
        format!("https://127.0.0.1:{p1_port}"),
        format!("https://127.0.0.1:{p2_port}"),
        url3.clone(),
    ];
    let m = exporter.wait_for(WAIT, "all targets scraped once", |m| {
        m.select("pprof_scrape_success", &[("profile", "goroutine")])
            .count()
            == 5
            && good
                .iter()
                .all(|t| m.get("pprof_up", &[("target", t)]) == Some(1.0))
    });
    for t in &good {
        assert!(
            m.sum(
                "pprof_goroutines",
                &[("target", t), ("function", "main.parked")]
            ) >= 5.0,
            "{t}: the parked goroutines are in the profile"
        );
    }
    let bad_token = format!("https://localhost:{p1_port}");
    let no_ca = format!("https://localhost:{p2_port}");
    assert_eq!(m.get("pprof_up", &[("target", &bad_token)]), Some(0.0));
    assert!(
        m.get(
            "pprof_scrape_errors_total",
            &[
                ("target", &bad_token),
                ("profile", "heap"),
                ("reason", "http_status")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(m.get("pprof_up", &[("target", &no_ca)]), Some(0.0));
    assert!(
        m.get(
            "pprof_scrape_errors_total",
            &[
                ("target", &no_ca),
                ("profile", "heap"),
                ("reason", "connect")
            ]
        )
        .unwrap()
            >= 1.0,
        "an unknown CA is a connection failure"
    );
    // No secret anywhere: not in labels, the landing page or the log.
    let (_, landing) = exporter.get("/");
    let log = exporter.proc.output();
    for secret in ["tok-3f9a", "tok-wrong-0000", "pw-77c1", "pw-url-51d0"] {
        assert!(!m.text.contains(secret), "{secret} in /metrics");
        assert!(!landing.contains(secret), "{secret} on the landing page");
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(
        log.contains("401"),
        "the failure is logged with its status:\n{log}"
    );

    // A rotated token file is picked up without a restart.
    std::fs::write(&wrong, "tok-3f9a").unwrap();
    exporter.wait_for(WAIT, "the rotated token to work", |m| {
        m.get("pprof_up", &[("target", &bad_token)]) == Some(1.0)
    });
}

/// A listener that accepts connections and never answers: a target that stalls.
fn stalling_target() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten().take(16) {
            held.push(s);
        }
    });
    (addr, h)
}

#[test]
fn fleet_probes_are_allow_listed_cached_and_bounded() {
    let Some(a) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let b = Leaky::start(Go::V127, &[]).unwrap();
    let pki = pki("fleet");
    let (tls_target, tls_url) = auth_target(&[
        "-cert",
        pki.server_cert.to_str().unwrap(),
        "-key",
        pki.server_key.to_str().unwrap(),
        "-token",
        "probe-tok-91",
    ])
    .unwrap();
    let token = pki.dir.join("token");
    std::fs::write(&token, "probe-tok-91").unwrap();
    let config = pki.dir.join("probe.yml");
    std::fs::write(
        &config,
        format!(
            "probe:\n  bearer_token_file: {}\n  tls_config: {{ca_file: {}}}\n",
            token.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    // A port we hold ourselves, outside the allow-list: proof of no connection.
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    let forbidden_addr = forbidden.local_addr().unwrap().to_string();
    let (stall_addr, _stall) = stalling_target();
    let ports: Vec<String> = [
        host_port(&a.url),
        host_port(&b.url),
        host_port(&tls_url),
        stall_addr.clone(),
    ]
    .iter()
    .map(|hp| hp.rsplit(':').next().unwrap().to_owned())
    .collect();
    let allow = format!(r"127\.0\.0\.1:({})", ports.join("|"));
    let exporter = Exporter::start(&[
        "--probe.allow",
        &allow,
        "--probe.cache-ttl",
        "30s",
        "--target.config.file",
        config.to_str().unwrap(),
    ]);

    // Allowed target: its metrics, labelled with the target.
    let (status, body) = exporter.get(&format!("/probe?target={}", host_port(&a.url)));
    assert_eq!(status, 200, "{body}");
    let m = Metrics::parse(&body);
    assert_eq!(
        m.get("pprof_up", &[("target", &a.url)]),
        Some(1.0),
        "{body}"
    );
    assert!(m.sum("pprof_goroutines", &[("target", &a.url)]) > 0.0);
    assert!(m.sum("pprof_heap_inuse_bytes", &[("target", &a.url)]) > 0.0);
    promtool_check_metrics(&body);

    // An https target with the probe settings from the config file.
    let (status, body) = exporter.get(&format!("/probe?target={tls_url}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        Metrics::parse(&body).get("pprof_up", &[("target", &tls_url)]),
        Some(1.0),
        "{body}\n{}",
        tls_target.output()
    );

    // Outside the allow-list: 403, and nothing connected to the port.
    forbidden.set_nonblocking(true).unwrap();
    for t in [
        forbidden_addr.clone(),
        format!("http://{forbidden_addr}/"),
        format!("localhost:{}", ports[0]), // allowed port, but not the allowed host
    ] {
        let (status, body) = exporter.get(&format!("/probe?target={t}"));
        assert_eq!(status, 403, "{t}: {body}");
        assert!(body.contains("--probe.allow"), "{body}");
    }
    match forbidden.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a refused probe connected to the target: {other:?}"),
    }
    // Bad requests.
    for q in ["", "?target=", "?target=ftp://x", "?other=1"] {
        let (status, _) = exporter.get(&format!("/probe{q}"));
        assert_eq!(status, 400, "/probe{q}");
    }

    // An HA pair probing b at the same moment costs b one scrape. The counters reach
    // /metrics with the next encoding, so wait for the requests so far to show.
    let outcome = |m: &Metrics, o: &str| {
        m.get("pprof_probe_requests_total", &[("outcome", o)])
            .unwrap_or(-1.0)
    };
    let before = exporter.wait_for(WAIT, "the probes so far counted", |m| {
        outcome(m, "scraped") == 2.0
            && outcome(m, "forbidden") == 3.0
            && outcome(m, "bad_request") == 4.0
    });
    let url_b = format!("{}/probe?target={}", exporter.url, host_port(&b.url));
    let pair: Vec<_> = (0..2)
        .map(|_| {
            let u = url_b.clone();
            std::thread::spawn(move || http_get(&u))
        })
        .collect();
    let bodies: Vec<(u16, String)> = pair.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(bodies.iter().all(|(s, _)| *s == 200));
    assert_eq!(bodies[0].1, bodies[1].1, "both got the same scrape");
    let after = exporter.wait_for(WAIT, "the pair counted", |m| {
        outcome(m, "scraped") + outcome(m, "cached")
            == outcome(&before, "scraped") + outcome(&before, "cached") + 2.0
    });
    assert_eq!(
        outcome(&after, "scraped") - outcome(&before, "scraped"),
        1.0
    );
    assert_eq!(outcome(&after, "cached") - outcome(&before, "cached"), 1.0);
    assert_eq!(outcome(&after, "forbidden"), 3.0);
    assert_eq!(outcome(&after, "bad_request"), 4.0);
    assert_eq!(after.get("pprof_probe_targets", &[]), Some(3.0));

    // A stalling target: the probe answers within Prometheus's own timeout, with the
    // failure in the metrics rather than as an HTTP error.
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(WAIT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&format!("{}/probe?target={stall_addr}", exporter.url))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .call()
        .unwrap();
    let took = started.elapsed();
    let body = resp.body_mut().read_to_string().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        took < Duration::from_secs(3),
        "probe took {took:?} with a 2 s scrape timeout"
    );
    let target = format!("http://{stall_addr}");
    let m = Metrics::parse(&body);
    assert_eq!(
        m.get("pprof_up", &[("target", &target)]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        m.get(
            "pprof_scrape_errors_total",
            &[
                ("target", &target),
                ("profile", "heap"),
                ("reason", "timeout")
            ]
        ),
        Some(1.0),
        "{body}"
    );
    assert!(!exporter.proc.output().contains("probe-tok-91"));

    // Without --probe.allow, probing is off.
    let plain = Exporter::start(&["--target", &a.url]);
    let (status, body) = plain.get(&format!("/probe?target={}", host_port(&a.url)));
    assert_eq!(status, 403, "{body}");
}
