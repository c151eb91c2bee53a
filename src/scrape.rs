//! Scrape stage: bounded HTTP fetches of profiles from a target.
//!
//! One [`Fetcher`] per target; the per-target loop calls it for one profile at a time,
//! so a target never sees two concurrent requests from us. Every fetch is bounded in
//! time (the whole request, body included) and in bytes (checked against
//! `Content-Length` up front and again while streaming). Redirects are followed only
//! within the same host and port, at most three times.
//!
//! Targets may need credentials ([`HttpSettings`]): a bearer token or basic-auth
//! password read from a file at every fetch (so rotated secrets are picked up), a custom
//! CA, a client certificate, or no certificate check at all. Credentials never appear in
//! logs, errors or `Debug` output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::redirect;
use serde::Deserialize;
use thiserror::Error;
use url::Url;

use crate::tls;

/// Why a fetch failed; [`FetchError::reason`] is the `reason` label of
/// `pprof_scrape_errors_total`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No TCP/TLS connection could be made (refused, unreachable, DNS).
    #[error("connect: {0}")]
    Connect(String),
    /// The request, headers or body did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The target answered with a non-success status.
    #[error("HTTP {status}: {message}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The start of the body, which for Go's pprof handlers explains the error.
        message: String,
    },
    /// The body is larger than the configured limit.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The connection broke while reading the response.
    #[error("reading response: {0}")]
    Body(String),
    /// A redirect went to another host, or looped.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// A credential file could not be read.
    #[error("credentials: {0}")]
    Credentials(String),
}

impl FetchError {
    /// The metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Timeout(_) => "timeout",
            FetchError::HttpStatus { .. } | FetchError::Redirect(_) => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Body(_) => "connect",
            FetchError::Credentials(_) => "credentials",
        }
    }
}

/// HTTP client settings.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Time limit for a whole fetch.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_body_bytes: u64,
}

/// A password given inline; shown as `<secret>` by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Basic authentication towards a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password given inline (prefer `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password, re-read at every fetch.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// TLS settings towards a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientSettings {
    /// PEM CA bundle that replaces the system roots for this target.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for testing: it defeats TLS.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// How to reach one target: credentials and TLS. The field names follow Prometheus's
/// own scrape configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// File holding a bearer token, re-read at every fetch.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// TLS settings for https targets.
    #[serde(default)]
    pub tls_config: TlsClientSettings,
}

impl HttpSettings {
    /// Checks the settings without reading any file: exclusive options and pairs that
    /// belong together. The PEM files are read and checked once, when the target's
    /// [`Fetcher`] is built at start-up (a broken CA file stops the exporter there,
    /// rather than failing every scrape).
    pub fn validate(&self) -> Result<(), String> {
        if self.bearer_token_file.is_some() && self.basic_auth.is_some() {
            return Err("bearer_token_file and basic_auth are mutually exclusive".into());
        }
        if let Some(b) = &self.basic_auth {
            if b.username.is_empty() {
                return Err("basic_auth needs a username".into());
            }
            if b.password.is_some() && b.password_file.is_some() {
                return Err("basic_auth: password and password_file are mutually exclusive".into());
            }
        }
        let t = &self.tls_config;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err("tls_config: cert_file and key_file go together".into());
        }
        Ok(())
    }

    /// The `Authorization` header value, read from the files now; None without
    /// credentials.
    fn authorization(&self) -> Result<Option<HeaderValue>, FetchError> {
        let value = if let Some(path) = &self.bearer_token_file {
            let token = tls::read_secret(path).map_err(FetchError::Credentials)?;
            format!("Bearer {token}")
        } else if let Some(b) = &self.basic_auth {
            use base64::Engine as _;
            let password = match (&b.password, &b.password_file) {
                (_, Some(path)) => tls::read_secret(path).map_err(FetchError::Credentials)?,
                (Some(p), None) => p.0.clone(),
                (None, None) => String::new(),
            };
            let raw = format!("{}:{password}", b.username);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        } else {
            return Ok(None);
        };
        let mut header = HeaderValue::from_str(&value).map_err(|_| {
            FetchError::Credentials("credential contains characters not allowed in a header".into())
        })?;
        header.set_sensitive(true);
        Ok(Some(header))
    }
}

/// A reusable HTTP client with the exporter's bounds and one target's settings.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
    settings: std::sync::Arc<HttpSettings>,
}

/// Follows at most three redirects, and only to the same scheme, host and port: a
/// profile endpoint has no business sending us elsewhere, and credentials given for
/// one target must never reach another host.
fn same_host_policy() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        let same = first.scheme() == attempt.url().scheme()
            && first.host_str() == attempt.url().host_str()
            && first.port_or_known_default() == attempt.url().port_or_known_default();
        if !same {
            let msg = format!("redirect to another host refused: {}", attempt.url());
            attempt.error(msg)
        } else if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else {
            attempt.follow()
        }
    })
}

impl Fetcher {
    /// Builds a client without credentials or TLS settings.
    pub fn new(config: FetchConfig) -> Result<Self, String> {
        Self::with_settings(config, HttpSettings::default())
    }

    /// Builds a client for targets reached with `settings`. Fails if a PEM file cannot
    /// be read or the TLS stack refuses it.
    pub fn with_settings(config: FetchConfig, settings: HttpSettings) -> Result<Self, String> {
        tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        let t = &settings.tls_config;
        if let Some(ca) = &t.ca_file {
            let certs = tls::read_certs(ca)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            let mut pem = tls::read_bounded(cert, tls::MAX_PEM_BYTES)?;
            tls::certs_in(cert, &pem)?;
            let key_pem = tls::read_bounded(key, tls::MAX_PEM_BYTES)?;
            tls::key_in(key, &key_pem)?;
            pem.push(b'\n');
            pem.extend(key_pem);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            builder = builder.identity(identity);
        }
        if t.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .user_agent(concat!("pprof-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(same_host_policy())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .map_err(|e| format!("building HTTP client: {}", error_chain(&e)))?;
        Ok(Self {
            client,
            config,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// The limits this fetcher applies.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// GETs `url` and returns the body, bounded in time and size.
    pub async fn get(&self, url: &Url) -> Result<Bytes, FetchError> {
        self.get_before(url, None).await
    }

    /// Like [`Fetcher::get`], but also done by `deadline` if one is given (a probe must
    /// answer within the caller's own scrape timeout).
    pub async fn get_before(
        &self,
        url: &Url,
        deadline: Option<Instant>,
    ) -> Result<Bytes, FetchError> {
        let mut timeout = self.config.timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if timeout.is_zero() {
            return Err(FetchError::Timeout(timeout));
        }
        // reqwest's own timeout covers the body too; this outer one is a backstop that
        // also bounds anything reqwest does not count (e.g. a stalled redirect chain).
        match tokio::time::timeout(
            timeout + Duration::from_millis(250),
            self.get_inner(url, timeout),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(timeout)),
        }
    }

    async fn get_inner(&self, url: &Url, timeout: Duration) -> Result<Bytes, FetchError> {
        let limit = self.config.max_body_bytes;
        let mut request = self.client.get(url.clone()).timeout(timeout);
        if let Some(auth) = self.settings.authorization()? {
            request = request.header(AUTHORIZATION, auth);
        }
        let mut resp = request
            .send()
            .await
            .map_err(|e| self.classify(&e, timeout))?;
        let status = resp.status();
        if !status.is_success() {
            let mut message = String::new();
            // Go's pprof handlers explain errors in a short text body; read a little.
            if let Ok(Some(chunk)) = resp.chunk().await {
                message = String::from_utf8_lossy(&chunk[..chunk.len().min(200)])
                    .trim()
                    .replace(['\n', '\r'], " ");
            }
            return Err(FetchError::HttpStatus {
                status: status.as_u16(),
                message,
            });
        }
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let mut body =
            BytesMut::with_capacity(resp.content_length().unwrap_or(64 << 10).min(limit) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(&e, timeout))? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn classify(&self, e: &reqwest::Error, timeout: Duration) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(timeout)
        } else if e.is_connect() {
            FetchError::Connect(error_chain(e))
        } else if e.is_redirect() {
            FetchError::Redirect(error_chain(e))
        } else {
            FetchError::Body(error_chain(e))
        }
    }
}

/// An error with its causes, on one line: reqwest's top-level message alone
/// ("error sending request") rarely says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
