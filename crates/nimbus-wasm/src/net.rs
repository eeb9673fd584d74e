//! Outgoing HTTP (`wasi:http/outgoing-handler`) under the function's network policy:
//! `none` refuses every request; `outbound` reaches other hosts but not this host's
//! loopback, unspecified or link-local addresses (Nimbus's own listeners, the services
//! beside it, cloud metadata), except the `host_services` the function names — as a
//! process function's network namespace allows. Plain-HTTP requests go to the address
//! that was checked (no second lookup to rebind); HTTPS requests are bound to the name by
//! the certificate. `wasi:sockets` stays closed (WASI's default).

use http_body_util::BodyExt;
use nimbus_core::NetworkPolicy;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The policy of one request's store.
pub(crate) struct Egress {
    pub(crate) policy: NetworkPolicy,
    pub(crate) host_services: std::sync::Arc<Vec<SocketAddrV4>>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let policy = self.policy;
        let services = self.host_services.clone();
        Box::new(async move {
            if policy == NetworkPolicy::None {
                return Err(Error::HttpRequestDenied);
            }
            let uri = request.uri().clone();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::lookup_host((host, port)),
            )
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|_| Error::DnsError {
                rcode: Some("lookup failed".into()),
                info_code: None,
            })?
            .collect();
            if addrs.is_empty() {
                return Err(Error::DestinationNotFound);
            }
            if addrs.iter().any(|a| !allowed(a, &services)) {
                tracing::debug!(%host, "outgoing request refused: a host address");
                return Err(Error::DestinationIpProhibited);
            }
            if !https {
                // Pin the checked address: the request goes there, its Host header stays.
                let authority = match addrs[0] {
                    SocketAddr::V4(a) => a.to_string(),
                    SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                };
                let mut parts = uri.into_parts();
                parts.authority = Some(
                    authority
                        .parse()
                        .map_err(|_| Error::HttpRequestUriInvalid)?,
                );
                *request.uri_mut() =
                    http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(|b| b.map_err(Into::into).boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// Whether a component may reach `addr` under `outbound`.
fn allowed(addr: &SocketAddr, services: &[SocketAddrV4]) -> bool {
    if let SocketAddr::V4(v4) = addr {
        if services.contains(v4) {
            return true;
        }
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            !(ip.is_loopback() || ip.is_unspecified() || ip.is_link_local() || ip.is_broadcast())
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return allowed(&SocketAddr::new(IpAddr::V4(v4), addr.port()), services);
            }
            !(ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_refused_unless_named() {
        let svc = vec!["127.0.0.1:5432".parse().unwrap()];
        let ok = |s: &str| allowed(&s.parse().unwrap(), &svc);
        assert!(ok("93.184.216.34:80"));
        assert!(ok("127.0.0.1:5432"));
        assert!(!ok("127.0.0.1:9000"));
        assert!(!ok("127.0.0.2:80"));
        assert!(!ok("0.0.0.0:80"));
        assert!(!ok("169.254.169.254:80"));
        assert!(!ok("[::1]:80"));
        assert!(!ok("[::ffff:127.0.0.1]:80"));
        assert!(!ok("[fe80::1]:80"));
        assert!(ok("[2606:4700::1]:443"));
    }
}
