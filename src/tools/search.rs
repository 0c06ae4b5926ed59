//! Web search backends: SearXNG's JSON API, Brave Search and Tavily, behind one call that
//! returns at most `max_results` results, filtered by the domain lists.
//!
//! The backend URL is the operator's (any address, loopback and private included); pages
//! that results point at are another matter (see `fetch`).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::settings::{Backend, WebSearchConfig, MAX_RESULTS_CAP};
use super::ToolError;
use crate::outbound::{self, ClientSettings, HostPolicy};

/// One search result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchResult {
    pub url: String,
    pub title: String,
    /// The backend's snippet.
    pub snippet: String,
    /// The page's text, when the backend extracted it (or tollgate fetched it).
    pub text: Option<String>,
    pub published: Option<String>,
}

/// What one search asks for: the query and the declaration's overrides, already merged with
/// the configuration (overrides can only narrow the domain lists).
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub max_results: usize,
    pub allowed_domains: Vec<String>,
    pub blocked_domains: Vec<String>,
    /// Extra scalar parameters for the backend (SearXNG query parameters, Tavily fields).
    pub provider_options: Map<String, Value>,
}

/// A search backend and its pooled client.
pub struct Searcher {
    pub cfg: WebSearchConfig,
    client: reqwest::Client,
    pages: super::fetch::Fetcher,
}

impl Searcher {
    pub fn new(cfg: WebSearchConfig) -> Searcher {
        let client = outbound::client(ClientSettings::new(HostPolicy::ANY, cfg.timeout));
        // Result pages are anyone's URLs: public addresses only, unless the operator says.
        let pages = super::fetch::Fetcher::new(if cfg.allow_private_hosts {
            HostPolicy::ANY
        } else {
            HostPolicy::PUBLIC
        });
        Searcher { cfg, client, pages }
    }

    /// A request for `query` with the configured limits, narrowed by a declaration's
    /// overrides (`max_results`, `allowed_domains`, `blocked_domains`, `provider_options`).
    pub fn request(&self, query: &str, overrides: Option<&Map<String, Value>>) -> SearchRequest {
        let list = |key: &str| -> Vec<String> {
            overrides
                .and_then(|o| o.get(key))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|d| d.trim().trim_start_matches("*.").to_ascii_lowercase())
                        .filter(|d| !d.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let max_results = overrides
            .and_then(|o| o.get("max_results"))
            .and_then(Value::as_u64)
            .map_or(self.cfg.max_results, |n| n as usize)
            .clamp(1, MAX_RESULTS_CAP);
        // The operator's allow-list bounds any per-request one.
        let mut allowed = list("allowed_domains");
        if !self.cfg.allowed_domains.is_empty() {
            if allowed.is_empty() {
                allowed = self.cfg.allowed_domains.clone();
            } else {
                allowed.retain(|d| in_domains(d, &self.cfg.allowed_domains));
                if allowed.is_empty() {
                    allowed = self.cfg.allowed_domains.clone();
                }
            }
        }
        let mut blocked = self.cfg.blocked_domains.clone();
        blocked.extend(list("blocked_domains"));
        let provider_options = overrides
            .and_then(|o| o.get("provider_options"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        SearchRequest {
            query: query.to_string(),
            max_results,
            allowed_domains: allowed,
            blocked_domains: blocked,
            provider_options,
        }
    }

    /// Whether the backend accepts connections (checked before a stream opens, so that an
    /// unreachable backend is a 502 and not a stream that fails later).
    pub async fn probe(&self) -> Result<(), ToolError> {
        let down = || ToolError::Unreachable("the search backend is unreachable".into());
        let url = reqwest::Url::parse(&self.cfg.url).map_err(|_| down())?;
        let host = url.host_str().ok_or_else(down)?.to_string();
        let port = url.port_or_known_default().ok_or_else(down)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(down()),
        }
    }

    /// Runs a search: the backend's results, filtered and cut to `max_results`.
    pub async fn search(&self, req: &SearchRequest) -> Result<Vec<SearchResult>, ToolError> {
        if req.query.trim().is_empty() {
            return Err(ToolError::Failed("the search query is empty".into()));
        }
        let raw = match self.cfg.backend {
            Backend::Searxng => self.searxng(req).await?,
            Backend::Brave => self.brave(req).await?,
            Backend::Tavily => self.tavily(req).await?,
        };
        let mut results: Vec<SearchResult> = raw
            .into_iter()
            .filter(|r| domain_ok(&r.url, &req.allowed_domains, &req.blocked_domains))
            .take(req.max_results)
            .collect();
        // Snippets only: the pages' own text, fetched.
        self.pages.fill(&mut results).await;
        Ok(results)
    }

    async fn searxng(&self, req: &SearchRequest) -> Result<Vec<SearchResult>, ToolError> {
        let mut url = reqwest::Url::parse(&format!("{}/search", self.cfg.url))
            .map_err(|e| ToolError::Failed(format!("search URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("q", &req.query).append_pair("format", "json");
            for (k, v) in &req.provider_options {
                if k != "q" && k != "format" {
                    q.append_pair(k, &scalar(v));
                }
            }
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            url: String,
            #[serde(default)]
            title: String,
            #[serde(default)]
            content: Option<String>,
            #[serde(default)]
            extracted_content: Option<String>,
            #[serde(default, alias = "publishedDate")]
            published_date: Option<String>,
        }
        let body = send(self.client.get(url)).await?;
        let a: Answer = parse(&body)?;
        Ok(a.results
            .into_iter()
            .map(|i| SearchResult {
                url: i.url,
                title: i.title,
                snippet: i.content.unwrap_or_default(),
                text: i.extracted_content.filter(|t| !t.is_empty()),
                published: i.published_date,
            })
            .collect())
    }

    async fn brave(&self, req: &SearchRequest) -> Result<Vec<SearchResult>, ToolError> {
        let mut url = reqwest::Url::parse(&self.cfg.url)
            .map_err(|e| ToolError::Failed(format!("search URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("q", &req.query)
            .append_pair("count", &MAX_RESULTS_CAP.to_string());
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            web: Option<Web>,
        }
        #[derive(Deserialize)]
        struct Web {
            #[serde(default)]
            results: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            url: String,
            #[serde(default)]
            title: String,
            #[serde(default)]
            description: String,
            #[serde(default)]
            page_age: Option<String>,
        }
        let key = self.cfg.api_key.as_deref().unwrap_or_default();
        let rb = self
            .client
            .get(url)
            .header("accept", "application/json")
            .header("x-subscription-token", key);
        let a: Answer = parse(&send(rb).await?)?;
        Ok(a.web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .map(|i| SearchResult {
                url: i.url,
                title: i.title,
                snippet: i.description,
                text: None,
                published: i.page_age,
            })
            .collect())
    }

    async fn tavily(&self, req: &SearchRequest) -> Result<Vec<SearchResult>, ToolError> {
        let mut body = json!({
            "query": req.query,
            "max_results": MAX_RESULTS_CAP.min(req.max_results + req.blocked_domains.len()),
        });
        if !req.allowed_domains.is_empty() {
            body["include_domains"] = json!(req.allowed_domains);
        }
        if !req.blocked_domains.is_empty() {
            body["exclude_domains"] = json!(req.blocked_domains);
        }
        for (k, v) in &req.provider_options {
            if k != "query" && k != "api_key" {
                body[k] = v.clone();
            }
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            url: String,
            #[serde(default)]
            title: String,
            #[serde(default)]
            content: String,
            #[serde(default)]
            raw_content: Option<String>,
            #[serde(default)]
            published_date: Option<String>,
        }
        let key = self.cfg.api_key.as_deref().unwrap_or_default();
        let rb = self
            .client
            .post(&self.cfg.url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string());
        let a: Answer = parse(&send(rb).await?)?;
        Ok(a.results
            .into_iter()
            .map(|i| SearchResult {
                url: i.url,
                title: i.title,
                snippet: i.content,
                text: i.raw_content.filter(|t| !t.is_empty()),
                published: i.published_date,
            })
            .collect())
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sends a backend call: a connection that cannot be made is `Unreachable` (the request is
/// refused with a 502); any other failure is the tool's error, for the model to see.
async fn send(rb: reqwest::RequestBuilder) -> Result<bytes::Bytes, ToolError> {
    let res = rb.send().await.map_err(|e| backend_error("search", &e))?;
    let status = res.status();
    if !status.is_success() {
        return Err(ToolError::Failed(format!(
            "the search backend answered HTTP {}",
            status.as_u16()
        )));
    }
    res.bytes().await.map_err(|e| backend_error("search", &e))
}

/// A failed call to a backend, without its URL (which may hold an operator's key).
pub(super) fn backend_error(what: &str, e: &reqwest::Error) -> ToolError {
    if let Some(r) = outbound::refusal(e) {
        return ToolError::Failed(format!("the {what} backend was refused: {r}"));
    }
    if e.is_connect() {
        ToolError::Unreachable(format!("the {what} backend is unreachable"))
    } else if e.is_timeout() {
        ToolError::Failed(format!("the {what} backend did not answer in time"))
    } else {
        ToolError::Failed(format!("the {what} backend failed"))
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ToolError> {
    serde_json::from_slice(body)
        .map_err(|_| ToolError::Failed("the search backend sent a malformed answer".into()))
}

/// Whether `host` is `domain` or one of its subdomains, for any domain of `list`.
fn in_domains(host: &str, list: &[String]) -> bool {
    list.iter().any(|d| {
        host == d
            || host
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// Whether a result's URL passes the lists (an unparsable URL never does).
fn domain_ok(url: &str, allowed: &[String], blocked: &[String]) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()))
    else {
        return false;
    };
    (allowed.is_empty() || in_domains(&host, allowed)) && !in_domains(&host, blocked)
}

/// The results as the model reads them: numbered, title, URL, text cut to `max_chars`.
pub fn render(results: &[SearchResult], max_chars: usize) -> String {
    if results.is_empty() {
        return "No results.".to_string();
    }
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        let text = r.text.as_deref().unwrap_or(&r.snippet);
        let cut: String = text.chars().take(max_chars).collect();
        out.push_str(&format!("[{}] {}\nURL: {}\n", i + 1, r.title, r.url));
        if let Some(p) = &r.published {
            out.push_str(&format!("Published: {p}\n"));
        }
        out.push_str(cut.trim());
        out.push_str("\n\n");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_lists() {
        let allowed = vec!["example.com".to_string()];
        let blocked = vec!["bad.example.com".to_string()];
        assert!(domain_ok("https://example.com/a", &allowed, &blocked));
        assert!(domain_ok("https://docs.example.com/a", &allowed, &blocked));
        assert!(!domain_ok("https://notexample.com/", &allowed, &blocked));
        assert!(!domain_ok("https://x.bad.example.com/", &allowed, &blocked));
        assert!(!domain_ok("not a url", &[], &[]));
        assert!(domain_ok("https://any.org/", &[], &blocked));
    }

    #[test]
    fn overrides_narrow_the_configuration() {
        let s = Searcher::new(WebSearchConfig {
            backend: Backend::Searxng,
            url: "http://127.0.0.1:1".into(),
            api_key: None,
            max_results: 5,
            allowed_domains: vec!["example.com".into()],
            blocked_domains: vec!["spam.com".into()],
            allow_private_hosts: false,
            max_text_chars: 100,
            timeout: std::time::Duration::from_secs(1),
        });
        let o = json!({"max_results": 50, "allowed_domains": ["docs.example.com", "evil.org"],
            "blocked_domains": ["old.example.com"], "provider_options": {"engines": "wikipedia", "x": {"nested": 1}}});
        let r = s.request("rust", o.as_object());
        assert_eq!(r.max_results, MAX_RESULTS_CAP);
        assert_eq!(r.allowed_domains, ["docs.example.com"]);
        assert_eq!(r.blocked_domains, ["spam.com", "old.example.com"]);
        assert_eq!(r.provider_options.len(), 1);
        let r = s.request("rust", None);
        assert_eq!(r.max_results, 5);
        assert_eq!(r.allowed_domains, ["example.com"]);
    }

    #[test]
    fn rendering_cuts_text() {
        let r = vec![SearchResult {
            url: "https://a.org".into(),
            title: "A".into(),
            snippet: "x".repeat(50),
            ..Default::default()
        }];
        let out = render(&r, 10);
        assert!(out.starts_with("[1] A\nURL: https://a.org\n"));
        assert!(out.ends_with(&"x".repeat(10)));
        assert!(!out.contains(&"x".repeat(11)));
        assert_eq!(render(&[], 10), "No results.");
    }
}
