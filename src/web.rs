//! Security of the exporter's own endpoints: the `--web.config.file` in the format
//! Prometheus exporters share (TLS with an optional client CA, and basic-auth users with
//! bcrypt hashes).
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/pprof-exporter/tls.crt
//!   key_file: /etc/pprof-exporter/tls.key
//!   client_ca_file: /etc/pprof-exporter/ca.crt        # optional
//!   client_auth_type: RequireAndVerifyClientCert      # default with a client CA
//!   min_version: TLS12                                 # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                             # bcrypt hash
//! ```
//!
//! `/healthz` answers without credentials (it says nothing but "ok"), so that kubelet
//! probes need no secret; every other path needs them when users are configured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::tls;

/// Largest web config file read.
const MAX_WEB_CONFIG_BYTES: u64 = 1 << 20;

/// Verified (user, password) pairs kept, so a scrape every few seconds does not cost
/// a bcrypt computation each time.
const AUTH_CACHE_ENTRIES: usize = 64;

/// The YAML document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Accepted for compatibility; the exporter speaks HTTP/1.1 only.
    #[serde(default, rename = "http2")]
    _http2: Option<bool>,
    #[serde(default)]
    headers: HashMap<String, String>,
}

/// The exporter's web security, ready to use.
#[derive(Clone, Default)]
pub struct WebSecurity {
    /// Present when the endpoints are served over TLS.
    pub tls: Option<TlsAcceptor>,
    /// Basic-auth users (empty = no authentication).
    pub auth: Option<Arc<BasicAuthUsers>>,
    /// Extra response headers from `http_server_config.headers`.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map_or(0, |a| a.users.len()))
            .finish()
    }
}

impl WebSecurity {
    /// Loads a web config file; every problem is one clear message naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let raw = tls::read_bounded(path, MAX_WEB_CONFIG_BYTES)?;
        Self::parse(&raw).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the YAML text.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let file: WebConfigFile = serde_yaml_ng::from_slice(raw).map_err(|e| e.to_string())?;
        let tls = file
            .tls_server_config
            .as_ref()
            .map(server_config)
            .transpose()?
            .map(TlsAcceptor::from);
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                if user.is_empty() || user.contains(':') {
                    return Err(format!("basic_auth_users: invalid user name {user:?}"));
                }
                // Parse now so that a broken hash fails at start-up, not at the first
                // request.
                hash.parse::<bcrypt::HashParts>().map_err(|e| {
                    format!("basic_auth_users: the hash of {user:?} is not a bcrypt hash: {e}")
                })?;
            }
            Some(Arc::new(BasicAuthUsers {
                users: file.basic_auth_users,
                verified: Mutex::new(HashMap::new()),
            }))
        };
        let mut headers = Vec::new();
        if let Some(h) = &file.http_server_config {
            for (k, v) in &h.headers {
                let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("http_server_config.headers: invalid name {k:?}"))?;
                let value = hyper::header::HeaderValue::from_str(v)
                    .map_err(|_| format!("http_server_config.headers: invalid value for {k:?}"))?;
                headers.push((name, value));
            }
        }
        Ok(Self { tls, auth, headers })
    }
}

fn tls_version(s: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match s {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!("{s} is not supported (TLS12 or TLS13)")),
        other => Err(format!("unknown TLS version {other:?} (TLS12 or TLS13)")),
    }
}

fn server_config(c: &TlsServerConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    tls::install_crypto_provider();
    let min = tls_version(c.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = tls_version(c.max_version.as_deref().unwrap_or("TLS13"))?;
    let rank = |v: &rustls::SupportedProtocolVersion| u16::from(v.version);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let auth_type = c
        .client_auth_type
        .as_deref()
        .unwrap_or(if c.client_ca_file.is_some() {
            "RequireAndVerifyClientCert"
        } else {
            "NoClientCert"
        });
    let builder = rustls::ServerConfig::builder_with_protocol_versions(&versions);
    let builder = match (auth_type, &c.client_ca_file) {
        ("NoClientCert", _) => builder.with_no_client_auth(),
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in tls::read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca_file: {e}"))?,
            )
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!("client_auth_type {auth_type} needs client_ca_file"));
        }
        ("RequestClientCert" | "RequireAnyClientCert", _) => {
            return Err(format!(
                "client_auth_type {auth_type} is not supported: client certificates are \
                 always verified (use RequireAndVerifyClientCert or VerifyClientCertIfGiven)"
            ));
        }
        (other, _) => return Err(format!("unknown client_auth_type {other:?}")),
    };
    let certs = tls::read_certs(&c.cert_file)?;
    let key = tls::read_key(&c.key_file)?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", c.cert_file.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Basic-auth users and the cache of pairs already verified.
pub struct BasicAuthUsers {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl BasicAuthUsers {
    /// Whether the `Authorization` header value admits the request. Runs bcrypt
    /// (tens of milliseconds) unless the pair was verified before: call it off the
    /// async threads.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        let Some(h) = header else { return false };
        let Some(encoded) = h.strip_prefix(b"Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return false;
        };
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = cache.get(user) {
                if constant_time_eq(known, password) {
                    return true;
                }
            }
        }
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // Spend the same time on unknown users as on known ones.
                let dummy = DUMMY_HASH
                    .get_or_init(|| bcrypt::hash(b"not a password", 10).unwrap_or_default());
                let _ = bcrypt::verify(password, dummy);
                false
            }
        };
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= AUTH_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(user.to_owned(), password.to_vec());
        }
        ok
    }
}

/// A bcrypt hash checked against for unknown users.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        let web = WebSecurity::parse(format!("basic_auth_users:\n  alice: '{hash}'\n").as_bytes())
            .unwrap();
        let auth = web.auth.unwrap();
        let header = |s: &str| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.check(Some(header("alice:hunter2").as_bytes())));
        // Cached now; a wrong password must still fail.
        assert!(auth.check(Some(header("alice:hunter2").as_bytes())));
        assert!(!auth.check(Some(header("alice:hunter3").as_bytes())));
        assert!(!auth.check(Some(header("bob:hunter2").as_bytes())));
        assert!(!auth.check(Some(b"Bearer x")));
        assert!(!auth.check(Some(b"Basic !!!")));
        assert!(!auth.check(None));
    }

    #[test]
    fn config_errors_are_clear() {
        let err = |yaml: &str| WebSecurity::parse(yaml.as_bytes()).unwrap_err();
        assert!(err("basic_auth_users:\n  a: plain\n").contains("not a bcrypt hash"));
        assert!(
            err("tls_server_config:\n  cert_file: /nonexistent/c\n  key_file: /nonexistent/k\n")
                .contains("/nonexistent/c")
        );
        assert!(err("cipher_suites: []\n").contains("unknown field"));
        assert!(WebSecurity::parse(b"").unwrap().tls.is_none());
        assert!(WebSecurity::parse(b"http_server_config:\n  http2: false\n").is_ok());
    }
}
