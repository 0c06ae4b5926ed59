//! The HTTP side: one management request to the running gateway, with the master key as a
//! bearer token. Errors are one line and never carry the key.

use std::time::Duration;

use super::api::{printable, Reply};

pub struct HttpApi {
    base: String,
    master_key: Option<String>,
    http: reqwest::Client,
}

/// Why a request got no HTTP answer.
pub enum HttpError {
    /// Nothing listens at the address: the request was never sent.
    Refused(String),
    Other(String),
}

impl HttpApi {
    pub fn new(base: &str, master_key: Option<String>) -> Result<HttpApi, String> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| format!("--url '{}' is not a URL: {e}", printable(base)))?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // An export of a large usage table takes a while; a stuck gateway must not hang
            // the command forever.
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("tollgate-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment is for the outside world, not for a local gateway.
        if is_local(&url) {
            b = b.no_proxy();
        }
        Ok(HttpApi {
            base: base.to_string(),
            master_key,
            http: b.build().map_err(|e| e.to_string())?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method target` (target: `/v1/...?query`) with an optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, HttpError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::Other(e.to_string()))?;
        let mut req = self.http.request(method, format!("{}{target}", self.base));
        if let Some(k) = &self.master_key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| self.failure(&e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.failure(&e))?;
        Ok(Reply {
            status,
            body: body.to_vec(),
        })
    }

    fn failure(&self, e: &reqwest::Error) -> HttpError {
        let line = format!(
            "cannot reach the gateway at {}: {}",
            printable(&self.base),
            root_cause(e)
        );
        if refused(e) {
            HttpError::Refused(line)
        } else {
            HttpError::Other(line)
        }
    }
}

fn is_local(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    })
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

fn refused(e: &reqwest::Error) -> bool {
    io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused)
}

/// The innermost cause, which says what happened ("Connection refused (os error 111)")
/// rather than which layer noticed it.
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    printable(&cur.to_string())
}
