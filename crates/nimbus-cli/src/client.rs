//! HTTP client for the nimbus API (`docs/api.md`) and the errors it reports.

use anyhow::{Context, Result};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// An error reply from the server: `{"type": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Builds the error from a non-success reply, tolerating bodies that are not Nimbus JSON.
    pub fn from_reply(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "type")]
            kind: Option<String>,
            message: Option<String>,
            #[serde(rename = "Type")]
            kind_aws: Option<String>,
            #[serde(rename = "Message")]
            message_aws: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let header_kind = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            // the header may carry a suffix: `Type:http://…`
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let kind = parsed
            .as_ref()
            .and_then(|b| b.kind.clone())
            .or(header_kind)
            .or_else(|| parsed.as_ref().and_then(|b| b.kind_aws.clone()))
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        let message = parsed
            .and_then(|b| b.message.or(b.message_aws))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body).trim().to_string();
                if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("request failed")
                        .to_lowercase()
                } else {
                    text.chars().take(500).collect()
                }
            });
        Self {
            status: status.as_u16(),
            kind,
            message,
        }
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self.kind.as_str() {
            "ResourceNotFoundException" => Some("run `nimbus ls` to see the deployed functions"),
            "ResourceConflictException" => {
                Some("another change to this function is in progress; retry in a moment")
            }
            "TooManyRequestsException" => Some(
                "the function is at its concurrency limit; retry later or raise its `concurrency`",
            ),
            "RequestTooLargeException" => {
                Some("invoke payloads are limited to 6 MB and code packages to 50 MB zipped")
            }
            "ServiceException" => Some("the server logs have the details"),
            "MissingAuthenticationTokenException" | "IncompleteSignatureException" => Some(
                "this server requires an access key: set NIMBUS_ACCESS_KEY_ID and NIMBUS_SECRET_ACCESS_KEY, \
                 or NIMBUS_CREDENTIALS_FILE=DATA_DIR/credentials (the server wrote that file with its \
                 bootstrap admin key at its first start; the CLI reads ./.nimbus/credentials by itself)",
            ),
            "UnrecognizedClientException" => Some(
                "this server does not know that access key id: check NIMBUS_ACCESS_KEY_ID or the \
                 credentials file, or ask an admin for a key (`nimbus keys create`)",
            ),
            "InvalidSignatureException" => Some(
                "the secret key does not match the access key id, or this machine's clock is more \
                 than 15 minutes off the server's",
            ),
            "AccessDeniedException" => Some(
                "the key's policy does not allow this: ask an admin for a key that does \
                 (`nimbus keys create --policy …`), or for AddPermission on the function",
            ),
            _ => None,
        }
    }
}

/// The server could not be reached at all.
#[derive(Debug)]
pub struct Unreachable {
    pub endpoint: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach nimbus at {} — start it with `nimbus serve` or `nimbus up`",
            self.endpoint
        )
    }
}

impl std::error::Error for Unreachable {}

/// The reply of an invocation: status, body and the Lambda headers that matter to the CLI.
#[derive(Debug)]
pub struct InvokeReply {
    pub body: bytes::Bytes,
    /// `X-Amz-Function-Error` (`Unhandled`, `Handled`) when the function failed.
    pub function_error: Option<String>,
    /// `X-Amz-Log-Result`, base64 of the log tail.
    pub log_result: Option<String>,
}

/// One page of `GET /v1/functions/{name}/logs`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LogsPage {
    #[serde(default)]
    pub logs: Vec<LogEntry>,
    pub next: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct LogEntry {
    pub seq: i64,
    /// The function (set by the server; `nimbus logs --all` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub ts_ms: i64,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The filters of a log read (each optional; see `GET /v1/functions/{name}/logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub level: Option<String>,
    pub request_id: Option<String>,
    pub grep: Option<String>,
}

#[cfg(feature = "tls")]
fn tls_options(
    builder: reqwest::ClientBuilder,
    _scheme: &str,
    ca_cert: Option<&Path>,
    own_server: bool,
) -> Result<reqwest::ClientBuilder> {
    let mut builder = builder.use_rustls_tls();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| {
                format!(
                    "{}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
                    path.display()
                )
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if own_server {
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

#[cfg(not(feature = "tls"))]
fn tls_options(
    builder: reqwest::ClientBuilder,
    scheme: &str,
    ca_cert: Option<&Path>,
    _own_server: bool,
) -> Result<reqwest::ClientBuilder> {
    if scheme == "https" || ca_cert.is_some() {
        anyhow::bail!("https:// endpoints and --ca-cert need nimbus built with the `tls` feature");
    }
    Ok(builder)
}

/// Whether a connection failed in the TLS handshake (bad certificate, not TLS) rather
/// than in reaching the host.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return true;
        }
        source = s.source();
    }
    false
}

/// Talks to one nimbus server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    endpoint: String,
    credentials: Option<crate::credentials::Credentials>,
}

impl Client {
    #[cfg(test)]
    pub fn new(endpoint: &str) -> Result<Self> {
        Self::with_ca(endpoint, None)
    }

    /// A client that also trusts the PEM certificates in `ca_cert` for `https://` endpoints.
    pub fn with_ca(endpoint: &str, ca_cert: Option<&Path>) -> Result<Self> {
        Self::build(endpoint, ca_cert, false)
    }

    /// A client for the server this process itself just bound on a loopback address
    /// (`nimbus up`): with TLS, the certificate is not checked, as no one else can hold
    /// that socket and its certificate need not name the loopback address.
    pub fn for_own_server(endpoint: &str) -> Result<Self> {
        Self::build(endpoint, None, true)
    }

    fn build(endpoint: &str, ca_cert: Option<&Path>, own_server: bool) -> Result<Self> {
        let base = Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .with_context(|| {
                format!("invalid endpoint {endpoint:?}: use a URL such as http://127.0.0.1:8080")
            })?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nimbus-cli/", env!("CARGO_PKG_VERSION")));
        let builder = tls_options(builder, base.scheme(), ca_cert, own_server)?;
        let http = builder.build().context("cannot create the HTTP client")?;
        Ok(Self {
            http,
            base,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials: None,
        })
    }

    /// Signs every request with `credentials` (SigV4) from now on.
    pub fn with_credentials(
        mut self,
        credentials: Option<crate::credentials::Credentials>,
    ) -> Self {
        self.credentials = credentials;
        self
    }

    /// An IAM query-protocol call (`Action=…&Version=2010-05-08`, signed for service
    /// `iam`): the HTTP status and the XML body, errors included.
    pub async fn iam(&self, params: &[(&str, &str)]) -> Result<(u16, String)> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Version", "2010-05-08");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let mut req = self
            .http
            .post(self.url(&[]))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(form.finish())
            .build()
            .with_context(|| format!("cannot build a request to {}", self.endpoint))?;
        self.sign_for(&mut req, "iam")?;
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| self.transport_error(e))?;
        Ok((status, body))
    }

    /// A Step Functions call in AWS's JSON 1.0 protocol (`POST /`, `X-Amz-Target:
    /// target` such as `AWSStepFunctions.StartExecution`, signed for service `states`):
    /// the reply's JSON, or an [`ApiError`] whose `kind` is the error code of the reply's
    /// `__type` (`StateMachineDoesNotExist`, `InvalidDefinition`, …).
    pub async fn aws_json(&self, target: &str, body: &Value) -> Result<Value> {
        let mut req = self
            .http
            .post(self.url(&[]))
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .header("x-amz-target", target)
            .body(serde_json::to_vec(body)?)
            .build()
            .with_context(|| format!("cannot build a request to {}", self.endpoint))?;
        self.sign_for(&mut req, "states")?;
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the server at {} sent a reply to {target} that is not JSON",
                    self.endpoint
                )
            });
        }
        let mut err = ApiError::from_reply(status, &headers, &bytes);
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(t) = parsed.as_ref().and_then(|v| v["__type"].as_str()) {
            err.kind = t.rsplit('#').next().unwrap_or(t).to_string();
        }
        Err(err.into())
    }

    fn sign(&self, req: &mut reqwest::Request) -> Result<()> {
        self.sign_for(req, "lambda")
    }

    /// Adds `host`, `x-amz-date`, `x-amz-content-sha256` and `authorization` (SigV4 for
    /// `service`). The payload hash is the body's, or for a streamed body the
    /// `x-amz-content-sha256` the caller set.
    fn sign_for(&self, req: &mut reqwest::Request, service: &str) -> Result<()> {
        let Some(c) = &self.credentials else {
            return Ok(());
        };
        let url = req.url().clone();
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => anyhow::bail!("cannot sign a request without a host: {url}"),
        };
        let payload = match req.body().and_then(|b| b.as_bytes()) {
            Some(bytes) => nimbus_auth::sigv4::payload_hash(bytes),
            None => match req.headers().get("x-amz-content-sha256") {
                Some(v) => v.to_str().unwrap_or_default().to_string(),
                None => nimbus_auth::sigv4::EMPTY_SHA256.to_string(),
            },
        };
        let mut headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        headers.push(("host".into(), host.clone()));
        let signing = nimbus_auth::sigv4::Request {
            method: req.method().as_str(),
            path: url.path(),
            query: url.query().unwrap_or(""),
            headers: &headers,
            payload_sha256: &payload,
        };
        let added = nimbus_auth::sigv4::sign(
            &signing,
            &c.access_key_id,
            &c.secret_access_key,
            nimbus_core::arn::REGION,
            service,
            time::OffsetDateTime::now_utc(),
        );
        let h = req.headers_mut();
        h.insert(reqwest::header::HOST, host.parse()?);
        for (k, v) in added {
            h.insert(k, v.parse()?);
        }
        Ok(())
    }

    /// The endpoint URL with `segments` appended, each percent-encoded as one path segment.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    /// Sends a request; connection failures become [`Unreachable`] and non-success replies [`ApiError`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let mut req = req
            .build()
            .with_context(|| format!("cannot build a request to {}", self.endpoint))?;
        self.sign(&mut req)?;
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError::from_reply(status, &headers, &body).into())
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() && is_tls_failure(&e) {
            anyhow::Error::new(e).context(format!(
                "TLS with {} failed (for a private CA, pass its certificate with --ca-cert or NIMBUS_CA_CERT)",
                self.endpoint
            ))
        } else if e.is_connect() {
            anyhow::Error::new(Unreachable {
                endpoint: self.endpoint.clone(),
            })
        } else {
            anyhow::Error::new(e).context(format!("request to {} failed", self.endpoint))
        }
    }

    /// Sends a request and parses the JSON reply.
    pub async fn json(&self, req: RequestBuilder) -> Result<Value> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the server at {} sent a reply that is not JSON",
                self.endpoint
            )
        })
    }

    /// `GET /v1/ready` (public, unsigned): the HTTP status (200, or 503 when failing) and
    /// the report. An error when no server answers within `timeout`.
    pub async fn readiness(&self, timeout: Duration) -> Result<(u16, Value)> {
        let resp = self
            .request(Method::GET, &["v1", "ready"])
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        let v = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the server at {} sent a readiness reply that is not JSON",
                self.endpoint
            )
        })?;
        Ok((status, v))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn list_functions(&self) -> Result<Value> {
        self.json(self.request(Method::GET, &["v1", "functions"]))
            .await
    }

    /// `PUT /v1/functions/{name}` with an already serialised body of `len` bytes whose
    /// SHA-256 (hex) is `sha256` (the body may be a stream, so the signature needs it).
    pub async fn put_function(
        &self,
        name: &str,
        body: reqwest::Body,
        len: u64,
        sha256: &str,
    ) -> Result<Value> {
        let req = self
            .request(Method::PUT, &["v1", "functions", name])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header("x-amz-content-sha256", sha256)
            .body(body);
        self.json(req).await
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "functions", name]))
            .await?;
        Ok(())
    }

    /// `GET /v1/functions/{name}/logs`, or `GET /v1/logs` (every function) for `None`.
    fn logs_request(&self, name: Option<&str>, after: i64, filter: &LogFilter) -> RequestBuilder {
        let req = match name {
            Some(n) => self.request(Method::GET, &["v1", "functions", n, "logs"]),
            None => self.request(Method::GET, &["v1", "logs"]),
        };
        let mut query = vec![("after", after.to_string())];
        for (k, v) in [
            ("since", &filter.since),
            ("until", &filter.until),
            ("level", &filter.level),
            ("request_id", &filter.request_id),
            ("grep", &filter.grep),
        ] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        req.query(&query)
    }

    /// One page of log lines of `name` (every function readable for `None`) matching `filter`.
    pub async fn logs_page(
        &self,
        name: Option<&str>,
        after: i64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogsPage> {
        let req = self
            .logs_request(name, after, filter)
            .query(&[("limit", limit.to_string())]);
        let v = self.json(req).await?;
        serde_json::from_value(v).context("the server sent a logs reply in an unexpected shape")
    }

    /// The live tail (`follow=true`, server-sent events) from `after` on.
    pub async fn follow_logs(
        &self,
        name: Option<&str>,
        after: i64,
        filter: &LogFilter,
    ) -> Result<Response> {
        let req = self
            .logs_request(name, after, filter)
            .query(&[("follow", "true")])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        self.send(req).await
    }

    /// Queues an asynchronous invocation; returns its request id and whether the
    /// idempotency key made it a replay of an earlier one.
    pub async fn invoke_async(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<(String, bool)> {
        let mut req = self
            .request(
                Method::POST,
                &["2015-03-31", "functions", name, "invocations"],
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Amz-Invocation-Type", "Event")
            .body(payload);
        if let Some(q) = qualifier {
            req = req.query(&[("Qualifier", q)]);
        }
        if let Some(k) = idempotency_key {
            req = req.header("X-Nimbus-Idempotency-Key", k);
        }
        let resp = self.send(req).await?;
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let id = header("x-amzn-requestid").unwrap_or_default();
        Ok((id, header("x-nimbus-idempotent-replay").is_some()))
    }

    pub async fn invoke(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
        tail: bool,
    ) -> Result<InvokeReply> {
        let mut req = self
            .request(
                Method::POST,
                &["2015-03-31", "functions", name, "invocations"],
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload);
        if let Some(q) = qualifier {
            req = req.query(&[("Qualifier", q)]);
        }
        if tail {
            req = req.header("X-Amz-Log-Type", "Tail");
        }
        let resp = self.send(req).await?;
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let function_error = header("x-amz-function-error");
        let log_result = header("x-amz-log-result");
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        Ok(InvokeReply {
            body,
            function_error,
            log_result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_from_nimbus_json() {
        let body = br#"{"type":"ResourceNotFoundException","message":"function not found: hello","Type":"User","Message":"function not found: hello"}"#;
        let e = ApiError::from_reply(StatusCode::NOT_FOUND, &HeaderMap::new(), body);
        assert_eq!(
            e.to_string(),
            "function not found: hello (ResourceNotFoundException)"
        );
        assert!(e.hint().is_some());
    }

    #[test]
    fn api_error_from_foreign_replies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-ErrorType",
            "TooManyRequestsException:http://x".parse().unwrap(),
        );
        let e = ApiError::from_reply(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            b"{\"Message\":\"slow down\"}",
        );
        assert_eq!(e.to_string(), "slow down (TooManyRequestsException)");
        let e = ApiError::from_reply(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"upstream exploded\n",
        );
        assert_eq!(e.to_string(), "upstream exploded (HTTP 502)");
        let e = ApiError::from_reply(StatusCode::NOT_FOUND, &HeaderMap::new(), b"");
        assert_eq!(e.to_string(), "not found (HTTP 404)");
    }

    #[test]
    fn urls_encode_segments_and_keep_prefixes() {
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            c.url(&["v1", "functions", "hello"]).as_str(),
            "http://127.0.0.1:8080/v1/functions/hello"
        );
        assert_eq!(
            c.url(&["2015-03-31", "functions", "a b/c", "invocations"])
                .as_str(),
            "http://127.0.0.1:8080/2015-03-31/functions/a%20b%2Fc/invocations"
        );
        // Without the `tls` feature https:// endpoints are refused up front.
        let c = Client::new("https://example.com/nimbus/");
        if cfg!(feature = "tls") {
            let c = c.unwrap();
            assert_eq!(
                c.url(&["v1", "functions"]).as_str(),
                "https://example.com/nimbus/v1/functions"
            );
            assert_eq!(c.endpoint, "https://example.com/nimbus");
        } else {
            assert!(c.is_err());
        }
        assert!(
            Client::with_ca("http://127.0.0.1:1", Some(Path::new("/nonexistent.pem"))).is_err()
        );
        assert!(Client::new("127.0.0.1:8080").is_err());
        assert!(Client::new("ftp://x").is_err());
    }

    #[test]
    fn unreachable_message() {
        let e = Unreachable {
            endpoint: "http://127.0.0.1:8080".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach nimbus at http://127.0.0.1:8080 — start it with `nimbus serve` or `nimbus up`"
        );
    }
}
