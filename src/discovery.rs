//! Model discovery: fetches and holds each provider's own model list.
//!
//! Every configured provider is asked for its list (OpenAI kinds `GET {base}/models`,
//! Anthropic `GET /v1/models` following `has_more`/`last_id`, Gemini `GET /v1beta/models`
//! following `nextPageToken`) by a background service: at start, then every
//! `model_discovery.refresh_secs`. A failed fetch keeps the last good list, is counted in
//! `tollgate_model_discovery_failures_total{provider}` and is retried with a back-off from
//! [`FIRST_RETRY`], doubling, capped. `GET /v1/models` may ask for a provider that has no list
//! yet ([`Discovery::ensure`]) and waits for it briefly.
//!
//! Readers (routing on the hot path, listings) see an immutable [`Catalog`] through an
//! `ArcSwap`: one atomic load, no lock, and a hash lookup for a bare model name.
//!
//! Requests go through Pingora's HTTP/1.1 connector (the same TLS settings and `ca_file` as
//! forwarding) with the provider's own headers (`upstream::upstream_get`). Errors and logs
//! name the provider and what failed, never a header or a response body: a provider's 401
//! body may quote part of the key.

use arc_swap::{ArcSwap, Guard};
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::connectors::ConnectorOptions;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::config::{ModelDiscovery, Provider};
use crate::gateway::upstream::{peer_for, upstream_get, Resolver, UpstreamPool};
use crate::metrics;
use crate::providers::ProviderKind;

/// The first retry of a failed fetch comes this long after it; each further failure doubles
/// the wait, up to [`MAX_RETRY`] (or the refresh interval, if shorter).
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// An on-demand fetch is not started again this soon after the last attempt ended, so that
/// clients polling `/v1/models` while a provider is down do not hammer it.
const ON_DEMAND_GAP: Duration = Duration::from_millis(250);
/// Bounds on what one provider may send: pages, models, bytes per page.
const MAX_PAGES: usize = 50;
const MAX_MODELS: usize = 20_000;
const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
/// Longest model id kept (the router refuses longer selectors anyway).
const MAX_ID: usize = 200;

/// One model as its provider describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelInfo {
    /// The provider's own id (Gemini's `models/` prefix removed).
    pub id: String,
    pub display_name: Option<String>,
    /// Creation time, Unix seconds.
    pub created: Option<u64>,
    /// Creation time as the provider wrote it (Anthropic's `created_at`).
    pub created_at: Option<String>,
    /// Input context size in tokens, where the provider says it.
    pub context_window: Option<u64>,
    /// Largest output in tokens, where the provider says it.
    pub max_output_tokens: Option<u64>,
}

/// The lists fetched so far, and which providers list each model name.
#[derive(Debug, Default)]
pub struct Catalog {
    lists: HashMap<String, Arc<[ModelInfo]>>,
    owners: HashMap<String, Vec<String>>,
}

impl Catalog {
    fn build(lists: HashMap<String, Arc<[ModelInfo]>>) -> Catalog {
        let mut owners: HashMap<String, Vec<String>> = HashMap::new();
        for (provider, list) in &lists {
            for m in list.iter() {
                owners
                    .entry(m.id.clone())
                    .or_default()
                    .push(provider.clone());
            }
        }
        for v in owners.values_mut() {
            v.sort();
            v.dedup();
        }
        Catalog { lists, owners }
    }

    /// A provider's list, sorted by id; None until one was fetched.
    pub fn list(&self, provider: &str) -> Option<&[ModelInfo]> {
        self.lists.get(provider).map(|l| &l[..])
    }

    /// The providers (sorted) whose lists contain `model`.
    pub fn owners(&self, model: &str) -> &[String] {
        self.owners.get(model).map_or(&[], |v| &v[..])
    }

    /// What `provider` says about `model`, if it lists it.
    pub fn info(&self, provider: &str, model: &str) -> Option<&ModelInfo> {
        let list = self.lists.get(provider)?;
        list.binary_search_by(|m| m.id.as_str().cmp(model))
            .ok()
            .map(|i| &list[i])
    }
}

/// Why a fetch failed. Never holds a header or a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Resolve,
    Connect,
    Timeout,
    Io,
    Status(u16),
    TooLarge,
    /// Not JSON, or not the list shape of the provider's kind.
    Shape,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Resolve => write!(f, "host name did not resolve"),
            FetchError::Connect => write!(f, "connection failed"),
            FetchError::Timeout => write!(f, "timed out"),
            FetchError::Io => write!(f, "connection broke"),
            FetchError::Status(s) => write!(f, "answered HTTP {s}"),
            FetchError::TooLarge => write!(f, "list larger than {MAX_PAGE_BYTES} bytes"),
            FetchError::Shape => write!(f, "answer is not a model list"),
        }
    }
}

/// Per-provider fetch bookkeeping (touched by the background loop, fetches and `ensure`).
struct SlotState {
    /// A fetch is running.
    busy: bool,
    /// When the background loop starts the next fetch.
    due: Instant,
    /// Failures since the last success.
    failures: u32,
    /// When the last attempt ended.
    last_end: Option<Instant>,
}

struct Slot {
    provider: Arc<Provider>,
    state: Mutex<SlotState>,
    /// Woken (every waiter) at the end of each attempt.
    done: Notify,
}

pub struct Discovery {
    settings: ModelDiscovery,
    slots: Vec<Slot>,
    catalog: ArcSwap<Catalog>,
    /// Wakes the background loop (an on-demand fetch, an attempt that ended).
    wake: Notify,
    pool: UpstreamPool,
    resolver: Resolver,
}

impl Discovery {
    pub fn new(
        settings: ModelDiscovery,
        providers: impl IntoIterator<Item = Arc<Provider>>,
        connector: Option<ConnectorOptions>,
    ) -> Discovery {
        let now = Instant::now();
        let slots = providers
            .into_iter()
            .map(|provider| Slot {
                provider,
                state: Mutex::new(SlotState {
                    busy: false,
                    due: now,
                    failures: 0,
                    last_end: None,
                }),
                done: Notify::new(),
            })
            .collect();
        Discovery {
            settings,
            slots,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            wake: Notify::new(),
            pool: UpstreamPool::new(connector),
            resolver: Resolver::default(),
        }
    }

    /// The current catalog (one atomic load).
    pub fn catalog(&self) -> Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Fetches the lists of providers (all, or only `only`) that have none yet, and waits
    /// for them at most `wait`. A fetch already under way is waited for, not repeated; one
    /// that just failed is not repeated within [`ON_DEMAND_GAP`].
    pub async fn ensure(&self, only: Option<&str>, wait: Duration) {
        let mut waits = Vec::new();
        let mut kicked = false;
        let catalog = self.catalog.load_full();
        for slot in &self.slots {
            let name = slot.provider.name.as_str();
            if only.is_some_and(|o| o != name) || catalog.lists.contains_key(name) {
                continue;
            }
            let mut done = Box::pin(slot.done.notified());
            done.as_mut().enable();
            let mut st = slot.state.lock();
            if !st.busy {
                if st.last_end.is_some_and(|t| t.elapsed() < ON_DEMAND_GAP) {
                    continue;
                }
                st.due = Instant::now();
                kicked = true;
            }
            waits.push(done);
        }
        if waits.is_empty() {
            return;
        }
        if kicked {
            self.wake.notify_one();
        }
        let _ = tokio::time::timeout(wait, async {
            for w in waits {
                w.await;
            }
        })
        .await;
    }

    /// The background loop: starts each due fetch as its own task, sleeps until the next one
    /// is due or something wakes it.
    async fn run(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        loop {
            let now = Instant::now();
            let mut next = now + self.settings.refresh;
            for i in 0..self.slots.len() {
                let mut st = self.slots[i].state.lock();
                if st.busy {
                    continue;
                }
                if st.due <= now {
                    st.busy = true;
                    tokio::spawn(self.clone().attempt(i));
                } else {
                    next = next.min(st.due);
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One fetch of slot `i`, and what follows from it.
    async fn attempt(self: Arc<Self>, i: usize) {
        let slot = &self.slots[i];
        let p = &slot.provider;
        let result = self.fetch(p).await;
        let now = Instant::now();
        {
            let mut st = slot.state.lock();
            st.busy = false;
            st.last_end = Some(now);
            match &result {
                Ok(_) => {
                    st.failures = 0;
                    st.due = now + self.settings.refresh;
                }
                Err(_) => {
                    st.failures = st.failures.saturating_add(1);
                    st.due = now + retry_after(st.failures, self.settings.refresh);
                }
            }
        }
        match result {
            Ok(list) => {
                let n = list.len();
                let had = self.catalog().lists.get(&p.name).map(|l| l.len());
                let list: Arc<[ModelInfo]> = list.into();
                self.catalog.rcu(|old| {
                    let mut lists = old.lists.clone();
                    lists.insert(p.name.clone(), list.clone());
                    Catalog::build(lists)
                });
                metrics::DISCOVERED_MODELS
                    .with_label_values(&[&p.name])
                    .set(n as i64);
                if had != Some(n) {
                    log::info!("model discovery: provider '{}' lists {n} models", p.name);
                }
            }
            Err(e) => {
                metrics::DISCOVERY_FAILURES
                    .with_label_values(&[&p.name])
                    .inc();
                let failures = slot.state.lock().failures;
                let kept = match self.catalog().lists.get(&p.name) {
                    Some(l) => format!("keeping the last list ({} models)", l.len()),
                    None => "no list yet".to_string(),
                };
                log::warn!(
                    "model discovery: provider '{}' {e} ({kept}); retrying in {} s",
                    p.name,
                    retry_after(failures, self.settings.refresh).as_secs()
                );
            }
        }
        slot.done.notify_waiters();
        self.wake.notify_one();
    }

    /// Fetches a provider's whole list, following its pages.
    async fn fetch(&self, p: &Provider) -> Result<Vec<ModelInfo>, FetchError> {
        let mut out: Vec<ModelInfo> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let path = list_path(p.kind, cursor.as_deref());
            let page = self.get_json(p, &path).await?;
            let (models, next) = parse_page(p.kind, &page).ok_or(FetchError::Shape)?;
            out.extend(models);
            if out.len() >= MAX_MODELS {
                break;
            }
            match next {
                Some(n) if cursor.as_deref() != Some(n.as_str()) => cursor = Some(n),
                _ => break,
            }
        }
        out.truncate(MAX_MODELS);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// One `GET`, bounded by the configured timeout, parsed as JSON.
    async fn get_json(&self, p: &Provider, path: &str) -> Result<Value, FetchError> {
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.get(p, path)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn get(&self, p: &Provider, path: &str) -> Result<Value, FetchError> {
        let addr = self
            .resolver
            .resolve(&p.host, p.port)
            .await
            .map_err(|_| FetchError::Resolve)?;
        let mut peer = peer_for(p, addr, false);
        peer.options.read_timeout = Some(self.settings.timeout);
        let req = upstream_get(p, path).map_err(|_| FetchError::Shape)?;
        let io = |e: Box<pingora::Error>| match e.etype() {
            pingora::ErrorType::ConnectTimedout | pingora::ErrorType::ReadTimedout => {
                FetchError::Timeout
            }
            _ => FetchError::Io,
        };
        let (mut up, _) = self
            .pool
            .session(&peer)
            .await
            .map_err(|_| FetchError::Connect)?;
        up.write_request_header(Box::new(req)).await.map_err(io)?;
        up.finish_request_body().await.map_err(io)?;
        loop {
            up.read_response_header().await.map_err(io)?;
            if !up
                .response_header()
                .is_some_and(|h| h.status.is_informational())
            {
                break;
            }
        }
        let status = up.response_header().map_or(0, |h| h.status.as_u16());
        let mut body = Vec::new();
        while let Some(chunk) = up.read_response_body().await.map_err(io)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_PAGE_BYTES {
                up.shutdown().await;
                return Err(FetchError::TooLarge);
            }
            if up.response_done() {
                break;
            }
        }
        self.pool.release(up, &peer).await;
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        serde_json::from_slice(&body).map_err(|_| FetchError::Shape)
    }
}

/// The wait before the next attempt after `failures` failures in a row.
pub fn retry_after(failures: u32, refresh: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY).min(refresh)
}

/// The list path (after the provider's base path) of a kind, for the page after `cursor`.
fn list_path(kind: ProviderKind, cursor: Option<&str>) -> String {
    match kind {
        ProviderKind::OpenAi => "/models".to_string(),
        ProviderKind::Anthropic => match cursor {
            Some(c) => format!("/v1/models?limit=1000&after_id={}", encode(c)),
            None => "/v1/models?limit=1000".to_string(),
        },
        ProviderKind::Gemini => match cursor {
            Some(c) => format!("/v1beta/models?pageSize=1000&pageToken={}", encode(c)),
            None => "/v1beta/models?pageSize=1000".to_string(),
        },
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The models of one page and the cursor of the next (None: last page). None when the page
/// does not have the kind's list shape.
pub fn parse_page(kind: ProviderKind, v: &Value) -> Option<(Vec<ModelInfo>, Option<String>)> {
    match kind {
        ProviderKind::OpenAi => {
            // `{"object":"list","data":[...]}`; a few compatible servers answer a bare array.
            let items = v.get("data").and_then(Value::as_array).or(v.as_array())?;
            Some((items.iter().filter_map(openai_model).collect(), None))
        }
        ProviderKind::Anthropic => {
            let items = v.get("data")?.as_array()?;
            let next = if v.get("has_more").and_then(Value::as_bool) == Some(true) {
                text(v, &["last_id"])
            } else {
                None
            };
            Some((items.iter().filter_map(anthropic_model).collect(), next))
        }
        ProviderKind::Gemini => {
            let items = match v.get("models") {
                Some(m) => m.as_array()?.as_slice(),
                // An empty page has no `models` at all.
                None if v.is_object() => &[],
                None => return None,
            };
            let next = text(v, &["nextPageToken"]);
            Some((items.iter().filter_map(gemini_model).collect(), next))
        }
    }
}

fn text(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn number(v: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64))
        .filter(|n| *n > 0)
}

/// A model id tollgate can route: not empty, not too long, no control characters.
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(char::is_control)
}

fn openai_model(m: &Value) -> Option<ModelInfo> {
    let id = m.get("id")?.as_str()?;
    if !usable_id(id) {
        return None;
    }
    // Context and output limits under the names compatible servers use (Groq, OpenRouter,
    // Together, Mistral, vLLM, ...).
    let top = m.get("top_provider").unwrap_or(&Value::Null);
    Some(ModelInfo {
        id: id.to_string(),
        display_name: text(m, &["display_name", "name"]),
        created: number(m, &["created"]),
        created_at: None,
        context_window: number(
            m,
            &[
                "context_window",
                "context_length",
                "max_context_length",
                "max_model_len",
                "max_input_tokens",
            ],
        )
        .or_else(|| number(top, &["context_length"])),
        max_output_tokens: number(m, &["max_completion_tokens", "max_output_tokens"])
            .or_else(|| number(top, &["max_completion_tokens"])),
    })
}

fn anthropic_model(m: &Value) -> Option<ModelInfo> {
    let id = m.get("id")?.as_str()?;
    if !usable_id(id) {
        return None;
    }
    let created_at = text(m, &["created_at"]);
    Some(ModelInfo {
        id: id.to_string(),
        display_name: text(m, &["display_name"]),
        created: created_at
            .as_deref()
            .and_then(crate::records::period::parse_time),
        created_at,
        context_window: number(m, &["max_input_tokens", "context_window"]),
        max_output_tokens: number(m, &["max_tokens", "max_output_tokens"]),
    })
}

fn gemini_model(m: &Value) -> Option<ModelInfo> {
    let name = m.get("name")?.as_str()?;
    let id = name.strip_prefix("models/").unwrap_or(name);
    if !usable_id(id) {
        return None;
    }
    // Only what tollgate can call: content generation and embeddings (not `aqa`, ...).
    if let Some(methods) = m
        .get("supportedGenerationMethods")
        .and_then(Value::as_array)
    {
        let usable = methods
            .iter()
            .any(|x| matches!(x.as_str(), Some("generateContent" | "embedContent")));
        if !usable {
            return None;
        }
    }
    Some(ModelInfo {
        id: id.to_string(),
        display_name: text(m, &["displayName"]),
        created: None,
        created_at: None,
        context_window: number(m, &["inputTokenLimit"]),
        max_output_tokens: number(m, &["outputTokenLimit"]),
    })
}

/// Runs [`Discovery`]'s loop as a Pingora background service (only when enabled).
pub struct DiscoveryService(pub Arc<Discovery>);

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.clone().run(shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_lists_with_the_limits_compatible_servers_give() {
        let v = json!({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
            {"id": "llama-3.3-70b-versatile", "context_window": 131072, "max_completion_tokens": 32768},
            {"id": "x/y", "name": "X: Y", "context_length": 8192, "top_provider": {"max_completion_tokens": 1024}},
            {"id": ""}, {"id": "bad\nid"}, {"object": "model"}
        ]});
        let (m, next) = parse_page(ProviderKind::OpenAi, &v).unwrap();
        assert_eq!(next, None);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].created, Some(1721172741));
        assert_eq!(m[1].context_window, Some(131072));
        assert_eq!(m[1].max_output_tokens, Some(32768));
        assert_eq!(m[2].display_name.as_deref(), Some("X: Y"));
        assert_eq!(m[2].max_output_tokens, Some(1024));
        let bare = json!([{"id": "a"}]);
        assert_eq!(parse_page(ProviderKind::OpenAi, &bare).unwrap().0.len(), 1);
        assert!(parse_page(ProviderKind::OpenAi, &json!({"error": "x"})).is_none());
    }

    #[test]
    fn anthropic_pages_follow_last_id_while_has_more() {
        let v = json!({"data": [
            {"type": "model", "id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6", "created_at": "2026-02-17T00:00:00Z"}
        ], "has_more": true, "first_id": "claude-sonnet-4-6", "last_id": "claude-sonnet-4-6"});
        let (m, next) = parse_page(ProviderKind::Anthropic, &v).unwrap();
        assert_eq!(next.as_deref(), Some("claude-sonnet-4-6"));
        assert_eq!(m[0].display_name.as_deref(), Some("Claude Sonnet 4.6"));
        assert_eq!(m[0].created_at.as_deref(), Some("2026-02-17T00:00:00Z"));
        assert_eq!(
            m[0].created.map(crate::records::period::rfc3339).as_deref(),
            Some("2026-02-17T00:00:00Z")
        );
        let last = json!({"data": [], "has_more": false, "last_id": null});
        assert_eq!(parse_page(ProviderKind::Anthropic, &last).unwrap().1, None);
    }

    #[test]
    fn gemini_pages_follow_next_page_token_and_keep_callable_models() {
        let v = json!({"models": [
            {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"]},
            {"name": "models/aqa", "supportedGenerationMethods": ["generateAnswer"]},
            {"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]}
        ], "nextPageToken": "tok=="});
        let (m, next) = parse_page(ProviderKind::Gemini, &v).unwrap();
        assert_eq!(next.as_deref(), Some("tok=="));
        let ids: Vec<_> = m.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["gemini-2.5-flash", "text-embedding-004"]);
        assert_eq!(m[0].context_window, Some(1048576));
        assert_eq!(m[0].max_output_tokens, Some(65536));
        assert_eq!(
            parse_page(ProviderKind::Gemini, &json!({}))
                .unwrap()
                .0
                .len(),
            0
        );
        assert_eq!(
            list_path(ProviderKind::Gemini, Some("tok==")),
            "/v1beta/models?pageSize=1000&pageToken=tok%3D%3D"
        );
    }

    #[test]
    fn retries_back_off_from_a_few_seconds_and_are_capped() {
        let r = Duration::from_secs(600);
        assert_eq!(retry_after(1, r), Duration::from_secs(2));
        assert_eq!(retry_after(2, r), Duration::from_secs(4));
        assert_eq!(retry_after(5, r), Duration::from_secs(32));
        assert_eq!(retry_after(40, r), MAX_RETRY);
        assert_eq!(
            retry_after(40, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_catalog_knows_who_lists_a_name() {
        let m = |id: &str| ModelInfo {
            id: id.into(),
            ..Default::default()
        };
        let mut lists: HashMap<String, Arc<[ModelInfo]>> = HashMap::new();
        lists.insert("a".into(), vec![m("x"), m("y")].into());
        lists.insert("b".into(), vec![m("y")].into());
        let c = Catalog::build(lists);
        assert_eq!(c.owners("x"), ["a"]);
        assert_eq!(c.owners("y"), ["a", "b"]);
        assert!(c.owners("z").is_empty());
        assert!(c.info("a", "y").is_some() && c.info("b", "x").is_none());
    }
}
