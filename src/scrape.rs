//! Scrape stage: bounded HTTP fetches of profiles from a target.
//!
//! One [`Fetcher`] per exporter; the per-target loop calls it for one profile at a time,
//! so a target never sees two concurrent requests from us. Every fetch is bounded in
//! time (the whole request, body included) and in bytes (checked against
//! `Content-Length` up front and again while streaming). Redirects are followed only
//! within the same host and port, at most three times.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::redirect;
use thiserror::Error;
use url::Url;

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

/// A reusable HTTP client with the exporter's bounds.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
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
    /// Builds a client. Fails only if the TLS/HTTP stack cannot initialise.
    pub fn new(config: FetchConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("pprof-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(same_host_policy())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .map_err(|e| format!("building HTTP client: {e}"))?;
        Ok(Self { client, config })
    }

    /// The limits this fetcher applies.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// GETs `url` and returns the body, bounded in time and size.
    pub async fn get(&self, url: &Url) -> Result<Bytes, FetchError> {
        let timeout = self.config.timeout;
        // reqwest's own timeout covers the body too; this outer one is a backstop that
        // also bounds anything reqwest does not count (e.g. a stalled redirect chain).
        match tokio::time::timeout(timeout + Duration::from_millis(250), self.get_inner(url)).await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(timeout)),
        }
    }

    async fn get_inner(&self, url: &Url) -> Result<Bytes, FetchError> {
        let limit = self.config.max_body_bytes;
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
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
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(&e))? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn classify(&self, e: &reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(self.config.timeout)
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
