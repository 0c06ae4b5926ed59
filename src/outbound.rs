//! Outbound calls to services other than the providers (guardrail services, search backends,
//! sandboxes, fetched pages, MCP servers): one HTTP client per use, pooled, with timeouts, and
//! an SSRF check on every address it connects to.
//!
//! A URL that a request can influence must not reach the gateway's own network. The check
//! runs in three places, so that no path around it remains:
//! - [`check_url`] before the first request (scheme, and a host given as an IP literal);
//! - the client's resolver: every name is resolved here and each address is checked, which
//!   also covers DNS names that point inside (and rebinding between check and connect);
//! - the redirect policy: each hop's URL is checked again, and hops are counted.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Which inside addresses an outbound call may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// 127.0.0.0/8 and ::1 (a service on the same machine, the usual sidecar).
    pub loopback: bool,
    /// RFC 1918, carrier-grade NAT, link-local (cloud metadata at 169.254.169.254), unique
    /// local IPv6.
    pub private: bool,
}

impl HostPolicy {
    /// Public addresses only.
    pub const PUBLIC: HostPolicy = HostPolicy {
        loopback: false,
        private: false,
    };
    /// Public addresses and this machine (operator-run sidecars).
    pub const LOOPBACK: HostPolicy = HostPolicy {
        loopback: true,
        private: false,
    };
    /// Anything routable: only for URLs the operator wrote.
    pub const ANY: HostPolicy = HostPolicy {
        loopback: true,
        private: true,
    };

    /// Whether `ip` may be connected to; the error names the range.
    pub fn allows(&self, ip: IpAddr) -> Result<(), &'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match class(ip) {
            Class::Public => Ok(()),
            Class::Loopback if self.loopback => Ok(()),
            Class::Private if self.private => Ok(()),
            Class::Loopback => Err("a loopback address"),
            Class::Private => Err("a private or link-local address"),
            Class::Never => Err("an unroutable address"),
        }
    }
}

enum Class {
    Public,
    Loopback,
    Private,
    Never,
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Class::Never
    } else if ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b)) {
        Class::Private
    } else {
        Class::Public
    }
}

fn class_v6(ip: Ipv6Addr) -> Class {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() {
        Class::Never
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
        Class::Private
    } else {
        Class::Public
    }
}

/// Why an outbound URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Checks a URL before any request: http(s) only, and a host given as an IP literal must be
/// allowed by `policy` (names are checked when they are resolved).
pub fn check_url(url: &str, policy: HostPolicy) -> Result<reqwest::Url, Refused> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Refused(format!("invalid URL: {e}")))?;
    check_parsed(&parsed, policy)?;
    Ok(parsed)
}

fn check_parsed(url: &reqwest::Url, policy: HostPolicy) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "URL scheme {:?} is not allowed (http or https only)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused("URLs with credentials are not allowed".into()));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            Err(_) => return Ok(()),
        },
        None => return Err(Refused("URL has no host".into())),
    };
    policy
        .allows(ip)
        .map_err(|what| Refused(format!("{} resolves to {what}", host_of(url))))
}

fn host_of(url: &reqwest::Url) -> String {
    url.host_str().unwrap_or("the host").to_string()
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows;
/// a name with none left fails to resolve (so the connection is never made).
struct CheckedResolver(HostPolicy);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The resolver's work, shared by both reqwest versions.
async fn checked_lookup(host: String, policy: HostPolicy) -> Result<Vec<SocketAddr>, BoxError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match policy.allows(a.ip()) {
            Ok(()) => true,
            Err(what) => {
                refusal = Some(what);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let what = refusal.unwrap_or("no address");
        return Err(Box::new(Refused(format!("{host} resolves to {what}"))));
    }
    Ok(allowed)
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed = checked_lookup(host, policy).await?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl reqwest013::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest013::dns::Name) -> reqwest013::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed = checked_lookup(host, policy).await?;
            Ok(Box::new(allowed.into_iter()) as reqwest013::dns::Addrs)
        })
    }
}

/// How an outbound client behaves.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    pub policy: HostPolicy,
    /// The whole call: connect, send, and the answer read.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Redirects followed (each one checked); 0 refuses them.
    pub max_redirects: usize,
}

impl ClientSettings {
    pub fn new(policy: HostPolicy, timeout: Duration) -> Self {
        ClientSettings {
            policy,
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(5)),
            max_redirects: 0,
        }
    }
}

/// A pooled client whose every connection passes the SSRF check. Build one per use at start
/// (or on first use) and keep it: it holds the keep-alive pool.
pub fn client(settings: ClientSettings) -> reqwest::Client {
    let policy = settings.policy;
    let max = settings.max_redirects;
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            attempt.error(Refused(format!("more than {max} redirects")))
        } else if let Err(e) = check_parsed(attempt.url(), policy) {
            attempt.error(e)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver(policy)))
        .redirect(redirects)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with these settings builds")
}

/// The checked client on reqwest 0.13, the version the MCP SDK's Streamable HTTP client runs
/// on (src/mcp/): the same resolver, no redirects, and no whole-call timeout (an MCP session
/// keeps a stream open; the MCP client bounds each call itself). TLS: rustls with ring and the
/// system's roots, like the rest of the gateway (read once). Cheap to build: one per MCP
/// session, so that its connections live on the runtime that uses them.
pub fn mcp_client(policy: HostPolicy, connect_timeout: Duration) -> reqwest013::Client {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    let tls = TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().unwrap_or_default() {
            let _ = roots.add(c);
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    });
    reqwest013::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls.clone())
        .dns_resolver(Arc::new(CheckedResolver(policy)))
        .redirect(reqwest013::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with these settings builds")
}

/// The refusal inside any failed call (either reqwest version, or an error wrapping one).
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        source = e.source();
    }
    None
}

/// The refusal inside a failed call, if the SSRF check is what failed it.
pub fn refusal(err: &reqwest::Error) -> Option<String> {
    refusal_in(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = HostPolicy::PUBLIC;
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.allows(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(p.allows(good.parse().unwrap()).is_ok(), "{good}");
        }
        assert!(HostPolicy::LOOPBACK
            .allows("127.0.0.1".parse().unwrap())
            .is_ok());
        assert!(HostPolicy::LOOPBACK
            .allows("169.254.169.254".parse().unwrap())
            .is_err());
        assert!(HostPolicy::ANY.allows("10.0.0.1".parse().unwrap()).is_ok());
        assert!(HostPolicy::ANY.allows("0.0.0.0".parse().unwrap()).is_err());
    }

    #[test]
    fn urls() {
        let p = HostPolicy::PUBLIC;
        assert!(check_url("http://example.com/x", p).is_ok());
        assert!(check_url("file:///etc/passwd", p).is_err());
        assert!(check_url("http://127.0.0.1:8080/", p).is_err());
        assert!(check_url("http://[::1]/", p).is_err());
        assert!(check_url("http://localhost/", p).is_err());
        assert!(check_url("http://u:p@example.com/", p).is_err());
        assert!(check_url("http://169.254.169.254/latest/meta-data", p).is_err());
        assert!(check_url("http://127.0.0.1:8080/", HostPolicy::LOOPBACK).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_at_connect() {
        let c = client(ClientSettings::new(
            HostPolicy::PUBLIC,
            Duration::from_secs(2),
        ));
        let err = c.get("http://localhost:9/").send().await.unwrap_err();
        assert!(refusal(&err).is_some(), "{err:?}");
    }
}
