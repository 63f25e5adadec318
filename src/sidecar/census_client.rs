//! Reading `/census` from the local Supervisor's HTTP gateway.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::sidecar::census::Census;

/// A census of a ring of hundreds is well under a megabyte; anything larger is not a census.
const MAX_CENSUS_BYTES: usize = 16 * 1024 * 1024;

/// The gateway's bearer token; kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct GatewayToken(String);

impl FromStr for GatewayToken {
    type Err = std::convert::Infallible;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Ok(Self(token.to_owned()))
    }
}

impl fmt::Debug for GatewayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayToken(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    // hyper's own message is only "client error (Connect)": the reason is in its sources.
    #[error("cannot connect to the supervisor: {}", with_sources(.0))]
    Connect(hyper_util::client::legacy::Error),
    #[error("request to the supervisor failed: {}", with_sources(.0))]
    Request(hyper_util::client::legacy::Error),
    #[error("no answer from the supervisor within {0:?}")]
    Timeout(Duration),
    #[error("the supervisor answered HTTP {0}{hint}", hint = status_hint(*.0))]
    Status(StatusCode),
    #[error("reading the census body failed: {0}")]
    Body(String),
    #[error("the body is not a census: {0}")]
    Parse(#[source] serde_json::Error),
}

fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn status_hint(status: StatusCode) -> &'static str {
    if status == StatusCode::UNAUTHORIZED {
        " (the gateway wants a bearer token: set HABITAT_BOOTSTRAP_GATEWAY_TOKEN)"
    } else {
        ""
    }
}

impl CensusError {
    /// The `kind` label of the poll-error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            CensusError::Connect(_) => "connect",
            CensusError::Request(_) => "request",
            CensusError::Timeout(_) => "timeout",
            CensusError::Status(_) => "status",
            CensusError::Body(_) => "body",
            CensusError::Parse(_) => "parse",
        }
    }
}

#[derive(Clone)]
pub struct CensusClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    url: Uri,
    authorization: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for CensusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CensusClient")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CensusClient {
    /// `timeout` bounds one whole fetch: connecting, headers and body.
    pub fn new(url: &str, token: Option<GatewayToken>, timeout: Duration) -> anyhow::Result<Self> {
        let uri: Uri =
            url.parse().map_err(|err| anyhow::anyhow!("--census-url {url:?} is not a URL: {err}"))?;
        // The gateway is reached on the pod's loopback; plain HTTP is all it needs.
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            anyhow::bail!("--census-url {url:?} must be an http:// URL, e.g. http://127.0.0.1:9631/census");
        }
        let http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
        Ok(Self {
            http,
            url: uri,
            authorization: token.map(|GatewayToken(token)| format!("Bearer {token}")),
            timeout,
        })
    }

    pub fn url(&self) -> &Uri {
        &self.url
    }

    pub async fn fetch(&self) -> Result<Census, CensusError> {
        let body = tokio::time::timeout(self.timeout, self.fetch_body())
            .await
            .map_err(|_| CensusError::Timeout(self.timeout))??;
        Census::from_json(&body).map_err(CensusError::Parse)
    }

    async fn fetch_body(&self) -> Result<Bytes, CensusError> {
        let mut request = Request::get(self.url.clone()).header(header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Empty::new()).expect("a GET with a parsed URI and valid headers");
        let response = self.http.request(request).await.map_err(|err| {
            if err.is_connect() { CensusError::Connect(err) } else { CensusError::Request(err) }
        })?;
        if !response.status().is_success() {
            return Err(CensusError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_CENSUS_BYTES)
            .collect()
            .await
            .map_err(|err| CensusError::Body(err.to_string()))?;
        Ok(body.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let timeout = Duration::from_secs(1);
        assert!(CensusClient::new("http://127.0.0.1:9631/census", None, timeout).is_ok());
        for bad in ["https://127.0.0.1:9631/census", "127.0.0.1:9631", "not a url", "/census"] {
            assert!(CensusClient::new(bad, None, timeout).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token: GatewayToken = "s3cret".parse().unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let client = CensusClient::new("http://127.0.0.1:1/census", Some(token), Duration::ZERO).unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }
}
