//! The management API as the commands see it: the running gateway over HTTP, or, when none
//! is running, the same API answered in this process on the store (see `offline`). The first
//! request decides which; a refused connection means the request was never sent, so it is
//! safe to answer it from the store instead.

use serde_json::Value;

use super::client::{HttpApi, HttpError};
use super::offline::{OpenError, Store};
use super::target::Target;

/// An answer of the management API.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API's error as one line: `404 not_found: No key with id 'key_x'.`
    pub fn error_line(&self) -> String {
        let v: Option<Value> = serde_json::from_slice(&self.body).ok();
        let err = v.as_ref().map(|v| &v["error"]);
        let message = err
            .and_then(|e| e["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&self.body);
                let first = text.lines().next().unwrap_or("").trim();
                if first.is_empty() {
                    "(no message)".to_string()
                } else {
                    first.chars().take(300).collect()
                }
            });
        let mut line = format!("{} {}: {}", self.status, reason(self.status), message);
        if let Some(p) = err.and_then(|e| e["param"].as_str()) {
            line.push_str(&format!(" (field: {p})"));
        }
        printable(&line)
    }
}

/// The status's reason as a token: `not_found`, `unauthorized`, `conflict`.
fn reason(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
}

/// `s` on one line, without control characters (terminal escapes in a name or an answer),
/// and without credentials in a URL's user-info part.
pub fn printable(s: &str) -> String {
    let s = match (s.find("://"), s.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !s[scheme + 3..at].contains('/') => {
            format!("{}://{}", &s[..scheme], &s[at + 1..])
        }
        _ => s.to_string(),
    };
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

enum Backend {
    Gateway(HttpApi),
    Store(Box<Store>),
}

pub struct Api {
    target: Target,
    backend: Option<Backend>,
}

impl Api {
    pub fn new(target: Target) -> Api {
        Api {
            target,
            backend: None,
        }
    }

    /// Sends one request; an Err is a line saying why there is no answer at all.
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        match &self.backend {
            Some(Backend::Gateway(h)) => {
                return h.call(method, target, body.as_ref()).await.map_err(line)
            }
            Some(Backend::Store(s)) => return Ok(s.call(method, target, body).await),
            None => {}
        }
        let http = HttpApi::new(&self.target.url, self.target.master_key.clone())?;
        match http.call(method, target, body.as_ref()).await {
            Err(HttpError::Refused(why)) if !self.target.url_given => {
                let store = self.open_store(&why).await?;
                let reply = store.call(method, target, body).await;
                self.backend = Some(Backend::Store(Box::new(store)));
                Ok(reply)
            }
            other => {
                if self.target.verbose {
                    eprintln!("tollgate: using the gateway at {}", printable(http.base()));
                }
                self.backend = Some(Backend::Gateway(http));
                other.map_err(line)
            }
        }
    }

    /// No gateway listens: the config's store, when nothing else holds it.
    async fn open_store(&self, why: &str) -> Result<Store, String> {
        let Some(cfg) = &self.target.config else {
            return Err(format!(
                "{why} (start it, give --url, or give --config to work on its store directly)"
            ));
        };
        match Store::open(cfg).await {
            Ok(s) => {
                if self.target.verbose {
                    eprintln!(
                        "tollgate: no gateway at {}; working on the store {} directly",
                        printable(&self.target.url),
                        s.describe()
                    );
                }
                Ok(s)
            }
            Err(OpenError::Held(what)) => Err(format!(
                "{why}, and another process holds the store {what}: is the gateway listening on another address? Give --url."
            )),
            Err(OpenError::Failed(e)) => Err(format!("{why}, and the store cannot be opened: {e}")),
        }
    }

    /// A successful answer's JSON; an API error as its one line.
    pub async fn json(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let r = self.ok_reply(method, target, body).await?;
        serde_json::from_slice(&r.body).map_err(|e| format!("the answer is not JSON: {e}"))
    }

    /// A successful answer's body as text (CSV, JSON lines).
    pub async fn text(&mut self, target: &str) -> Result<String, String> {
        let r = self.ok_reply("GET", target, None).await?;
        String::from_utf8(r.body).map_err(|_| "the answer is not UTF-8".to_string())
    }

    async fn ok_reply(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let r = self.send(method, target, body).await?;
        if r.ok() {
            return Ok(r);
        }
        let mut e = r.error_line();
        if r.status == 401 && self.target.master_key.is_none() {
            e.push_str(" (set TOLLGATE_MASTER_KEY or give --master-key)");
        }
        Err(e)
    }

    /// Every item of a paged list (`limit`/`after`), in id order.
    pub async fn list_all(
        &mut self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", "1000".into()));
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
            let page = self.json("GET", &with_query(path, &q), None).await?;
            if let Some(items) = page["data"].as_array() {
                out.extend(items.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) if page["has_more"].as_bool() == Some(true) => after = Some(c.to_string()),
                _ => return Ok(out),
            }
        }
    }
}

fn line(e: HttpError) -> String {
    match e {
        HttpError::Refused(l) | HttpError::Other(l) => l,
    }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&...` with the values encoded (empty values left out).
pub fn with_query(path: &str, q: &[(&str, String)]) -> String {
    let parts: Vec<String> = q
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if parts.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_is_one_readable_line() {
        let r = Reply {
            status: 404,
            body: br#"{"error":{"message":"No key with id 'key_x'.","type":"invalid_request_error","param":null,"code":null}}"#.to_vec(),
        };
        assert_eq!(r.error_line(), "404 not_found: No key with id 'key_x'.");
        let r = Reply {
            status: 400,
            body: br#"{"error":{"message":"'rpm_limit' must be a positive integer.\nreally","param":"rpm_limit"}}"#.to_vec(),
        };
        assert_eq!(
            r.error_line(),
            "400 bad_request: 'rpm_limit' must be a positive integer. really (field: rpm_limit)"
        );
        let r = Reply {
            status: 502,
            body: b"<html>\nbad gateway".to_vec(),
        };
        assert_eq!(r.error_line(), "502 bad_gateway: <html>");
    }

    #[test]
    fn printable_drops_credentials_and_control_characters() {
        assert_eq!(printable("https://u:pw@host:1/x"), "https://host:1/x");
        assert_eq!(printable("a\u{1b}[31mb"), "a [31mb");
        assert_eq!(printable("http://host/a@b"), "http://host/a@b");
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query(
                "/v1/usage",
                &[
                    ("from", "2026-11-01T00:00:00Z".into()),
                    ("key_id", String::new()),
                    ("model", "a b&c".into())
                ]
            ),
            "/v1/usage?from=2026-11-01T00:00:00Z&model=a%20b%26c"
        );
    }
}
