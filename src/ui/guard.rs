//! The console's defences, in one place: security headers on every answer, the session
//! cookie's attributes, the `Origin` check and the CSRF token, and who the client is
//! (`X-Forwarded-*` believed only from a trusted proxy).

use std::net::IpAddr;
use subtle::ConstantTimeEq;

use super::settings::UiConfig;

pub const SESSION_COOKIE: &str = "tg_session";
/// The login form's double-submit token (there is no session yet to hold one).
pub const LOGIN_COOKIE: &str = "tg_login";

/// No inline script or style, nothing from elsewhere, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The headers every console answer carries.
pub fn security_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-security-policy", CSP.to_string()),
        ("x-content-type-options", "nosniff".into()),
        ("x-frame-options", "DENY".into()),
        ("referrer-policy", "same-origin".into()),
        ("cache-control", "no-store".into()),
    ]
}

/// Where the request came from, as far as it can be believed.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The IP the login limit counts against.
    pub ip: Option<IpAddr>,
    /// The browser reached us over TLS (cookies get `Secure`).
    pub tls: bool,
}

impl Client {
    pub fn of(peer: Option<IpAddr>, headers: &http::HeaderMap, cfg: &UiConfig) -> Client {
        let trusted = peer.is_some_and(|p| cfg.trusted_proxies.contains(&p));
        if !trusted {
            return Client {
                ip: peer,
                tls: false,
            };
        }
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        // The proxy appends the address it saw: the last entry is the one it vouches for.
        let forwarded_ip = header("x-forwarded-for")
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        let tls =
            header("x-forwarded-proto").is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Client {
            ip: forwarded_ip.or(peer),
            tls,
        }
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/ui`, Secure over TLS; `max_age`
/// 0 deletes it, `None` makes it last for the browser session.
pub fn set_cookie(name: &str, value: &str, tls: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if tls {
        c.push_str("; Secure");
    }
    c
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A state-changing request must say where it comes from, and that must be this console:
/// `Origin`'s host and port equal to `Host`. A missing `Origin` is refused (browsers send
/// it on every POST, PATCH and DELETE).
pub fn same_origin(headers: &http::HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (get("origin"), get("host")) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Compares a presented token with the expected one in constant time.
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    let p = presented.unwrap_or("");
    !expected.is_empty() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
}

/// Text for HTML: the five characters that could open markup or leave an attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origin_must_match_host() {
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let cfg = UiConfig {
            trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
            ..UiConfig::default()
        };
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4, 5.6.7.8"),
        ]);
        let c = Client::of(Some("10.0.0.1".parse().unwrap()), &h, &cfg);
        assert!(c.tls);
        assert_eq!(c.ip, Some("5.6.7.8".parse().unwrap()));
        let c = Client::of(Some("10.0.0.2".parse().unwrap()), &h, &cfg);
        assert!(!c.tls);
        assert_eq!(c.ip, Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn cookies_and_escaping() {
        let h = headers(&[("cookie", "a=1; tg_session=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(
            set_cookie("x", "v", true, Some(0)),
            "x=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
        assert_eq!(
            escape("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        assert!(!token_matches(None, "t"));
        assert!(!token_matches(Some(""), ""));
        assert!(token_matches(Some("t"), "t"));
    }
}
