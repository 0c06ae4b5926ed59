//! Everything about talking to a provider that both forwarding paths share: address
//! resolution (async, cached: `HttpPeer::new` with a host name would block the reactor and
//! panic on failure), peer options, and the upstream request header.

use parking_lot::Mutex;
use pingora::connectors::http::v1::Connector as H1Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Provider;
use crate::error::{ErrorKind, GatewayError};

/// Pooled HTTP/1.1 connections to providers (every provider is spoken to over HTTP/1.1).
/// Pingora's general connector would do the same, but its connect future (TLS, h2 and
/// custom protocols inlined) is 8.8 KB, and every request's future carried it; here a
/// pooled connection is looked up first and only a new one pays for a boxed connect.
pub struct UpstreamPool {
    h1: H1Connector,
}

impl UpstreamPool {
    pub fn new(options: Option<ConnectorOptions>) -> Self {
        UpstreamPool {
            h1: H1Connector::new(options),
        }
    }

    /// A pooled connection to `peer`, or a new one; true when it was pooled.
    pub async fn session(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
        if let Some(h1) = self.h1.reused_http_session(peer).await {
            return Ok((HttpSession::H1(h1), true));
        }
        let (h1, reused) = Box::pin(self.h1.get_http_session(peer)).await?;
        Ok((HttpSession::H1(h1), reused))
    }

    /// Returns a finished session to the pool (it is closed if it cannot be reused).
    pub async fn release(&self, up: HttpSession, peer: &HttpPeer) {
        if let HttpSession::H1(h1) = up {
            self.h1
                .release_http_session(h1, peer, peer.options.idle_timeout)
                .await;
        }
    }
}

const DNS_TTL: Duration = Duration::from_secs(60);

/// Resolved addresses of one host and when they were looked up.
type Resolved = (Vec<SocketAddr>, Instant);

/// A small DNS cache: addresses of provider hosts, refreshed after `DNS_TTL`.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(String, u16), Resolved>>,
}

impl Resolver {
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, GatewayError> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some((addrs, at)) = self.cache.lock().get(&key) {
            if at.elapsed() < DNS_TTL && !addrs.is_empty() {
                return Ok(addrs[0]);
            }
        }
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(it) => it.collect(),
            Err(e) => {
                // Serve a stale answer rather than fail while the resolver is down.
                if let Some((addrs, _)) = self.cache.lock().get(&key) {
                    if !addrs.is_empty() {
                        return Ok(addrs[0]);
                    }
                }
                return Err(GatewayError::new(
                    ErrorKind::Upstream,
                    format!("Cannot resolve the provider host '{host}': {e}"),
                ));
            }
        };
        let first = *addrs.first().ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Upstream,
                format!("The provider host '{host}' has no address"),
            )
        })?;
        self.cache.lock().insert(key, (addrs, Instant::now()));
        Ok(first)
    }
}

/// The peer for a provider at a resolved address, with its timeouts. Pingora has one
/// per-read timeout on the proxy path: for a stream it is the idle timeout between chunks
/// (streams send their header at once), for a non-stream the time to first byte (the whole
/// answer is generated before its header). The direct path sets both phases exactly.
pub fn peer_for(p: &Provider, addr: SocketAddr, stream: bool) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, p.tls, p.host.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(p.timeouts.connect);
    o.total_connection_timeout = Some(p.timeouts.connect + Duration::from_secs(5));
    o.read_timeout = Some(if stream {
        p.timeouts.stream_idle
    } else {
        p.timeouts.first_byte
    });
    o.write_timeout = Some(p.timeouts.write);
    o.idle_timeout = Some(p.timeouts.idle);
    peer
}

/// Request headers never forwarded: the client's credentials, hop-by-hop and framing
/// headers (set anew), and headers that would leak the client's identity to the provider.
const DROP: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "host",
    "content-length",
    "transfer-encoding",
    "expect",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// The upstream request header for a client's: a fresh header (no case map: the names
/// tollgate writes are lower-case, the client's keep their canonical form) with the client's
/// headers minus [`DROP`] and `x-tollgate-*`, then the provider's host, credential and extra
/// headers, all prepared once at config time; `ep_path` is the planned path (and query)
/// after the provider's base path.
pub fn upstream_request(
    client: &RequestHeader,
    p: &Provider,
    ep_path: &str,
    body_len: usize,
) -> pingora::Result<RequestHeader> {
    let mut path = String::with_capacity(p.base_path.len() + ep_path.len());
    path.push_str(&p.base_path);
    path.push_str(ep_path);
    let uri: http::Uri = path.parse().map_err(|_| {
        pingora::Error::explain(pingora::ErrorType::InternalError, "bad upstream path")
    })?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = http::Method::POST;
    parts.uri = uri;
    parts
        .headers
        .reserve(client.headers.len() + 5 + p.wire.extra.len());
    let headers = &mut parts.headers;
    let mut has_version = false;
    for (k, v) in client.headers.iter() {
        let name = k.as_str();
        if DROP.contains(&name) || name.starts_with("x-tollgate-") {
            continue;
        }
        has_version |= name == "anthropic-version";
        headers.append(k.clone(), v.clone());
    }
    provider_headers(headers, p, has_version);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body_len),
    );
    Ok(RequestHeader::from(parts))
}

/// What tollgate adds to every request to `p`: its host, credential, `anthropic-version` for
/// Anthropic kinds (unless the client sent one), its extra headers, and an identity encoding
/// (no compressed bytes reach the parsers).
fn provider_headers(headers: &mut http::HeaderMap, p: &Provider, has_version: bool) {
    let w = &p.wire;
    headers.insert(http::header::HOST, w.host.clone());
    if let Some((k, v)) = &w.auth {
        headers.insert(k.clone(), v.clone());
    }
    if p.kind == crate::providers::ProviderKind::Anthropic && !has_version {
        headers.insert(
            http::HeaderName::from_static("anthropic-version"),
            http::HeaderValue::from_static("2023-06-01"),
        );
    }
    for (k, v) in &w.extra {
        headers.insert(k.clone(), v.clone());
    }
    headers.insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
}

/// A `GET` of tollgate's own to `p` (model discovery): `path_and_query` after the provider's
/// base path, with the provider's headers and nothing from any client.
pub fn upstream_get(p: &Provider, path_and_query: &str) -> pingora::Result<RequestHeader> {
    let path = format!("{}{path_and_query}", p.base_path);
    let uri: http::Uri = path.parse().map_err(|_| {
        pingora::Error::explain(pingora::ErrorType::InternalError, "bad upstream path")
    })?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = http::Method::GET;
    parts.uri = uri;
    provider_headers(&mut parts.headers, p, false);
    parts.headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(RequestHeader::from(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn upstream_request_swaps_credentials_and_keeps_the_rest() {
        let cfg = Config::from_yaml_str(
            "providers:\n  a: {kind: anthropic, base_url: 'http://127.0.0.1:9000/v1', api_key: sk-prov}\n",
            &|_| None,
        )
        .unwrap();
        let p = &cfg.providers["a"];
        let mut h = RequestHeader::build("POST", b"/v1/messages?beta=true", None).unwrap();
        h.insert_header("authorization", "Bearer tg-client")
            .unwrap();
        h.insert_header("x-api-key", "tg-client").unwrap();
        h.insert_header("anthropic-beta", "claude-code-20250219")
            .unwrap();
        h.insert_header("x-forwarded-for", "10.0.0.1").unwrap();
        h.insert_header("x-tollgate-debug", "1").unwrap();
        h.insert_header("accept-encoding", "gzip, br, zstd")
            .unwrap();
        let h = upstream_request(&h, p, "/v1/messages?beta=true", 42).unwrap();
        assert_eq!(h.uri.to_string(), "/v1/messages?beta=true");
        assert_eq!(h.headers["x-api-key"], "sk-prov");
        assert!(h.headers.get("authorization").is_none());
        assert_eq!(h.headers["anthropic-beta"], "claude-code-20250219");
        assert_eq!(h.headers["anthropic-version"], "2023-06-01");
        assert_eq!(h.headers["host"], "127.0.0.1:9000");
        assert_eq!(h.headers["content-length"], "42");
        assert_eq!(
            h.headers["accept-encoding"], "identity",
            "no compressed bytes reach the parsers (E41)"
        );
        assert!(h.headers.get("x-forwarded-for").is_none());
        assert!(h.headers.get("x-tollgate-debug").is_none());
    }
}
