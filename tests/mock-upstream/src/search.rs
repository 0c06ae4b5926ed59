//! Mock web search backends, one server answering in the three shapes tollgate speaks:
//! SearXNG (`GET /search?q=&format=json`), Brave (`GET /res/v1/web/search`, key in
//! `x-subscription-token`) and Tavily (`POST /search` with a JSON body, key as a Bearer).
//! It also serves pages (`/page/{n}`, HTML) and redirects (`/redirect?to=URL`) for page
//! fetching, and records every query (`GET /__mock/queries`). Failure modes: see `backend`.
//!
//! Results for query Q: a page on this server (no extracted text: a fetch is needed), then
//! results on `docs.alpha.invalid`, `www.beta.invalid` and `blocked.gamma.invalid` (names that
//! never resolve) whose text SearXNG and Tavily give (`extracted_content`, `raw_content`).

use crate::backend::{Backend, Handler, Reply, Req};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const BRAVE_KEY: &str = "brave-test-key";
pub const TAVILY_KEY: &str = "tavily-test-key";

pub struct SearchServer {
    backend: Backend,
    queries: Arc<Mutex<Vec<String>>>,
}

fn results(q: &str, own: SocketAddr) -> Vec<Value> {
    let mut out = vec![json!({
        "url": format!("http://{own}/page/1"),
        "title": format!("Local page about {q}"),
        "content": format!("A snippet of the local page about {q}."),
    })];
    for (i, host) in [
        "docs.alpha.invalid",
        "www.beta.invalid",
        "blocked.gamma.invalid",
        "docs.alpha.invalid",
        "www.beta.invalid",
        "blocked.gamma.invalid",
        "docs.alpha.invalid",
    ]
    .iter()
    .enumerate()
    {
        let n = i + 2;
        out.push(json!({
            "url": format!("https://{host}/{n}"),
            "title": format!("Result {n} for {q}"),
            "content": format!("Snippet {n} about {q}."),
            "extracted_content": format!("Full text {n} about {q}: search-result-marker-{n}."),
            "publishedDate": "2026-01-02",
        }));
    }
    out
}

fn page(n: &str) -> Vec<u8> {
    format!("<html><head><title>Page {n}</title><style>p{{}}</style></head><body><h1>Page {n}</h1><p>The fetched text of page {n}: page-text-marker-{n}.</p></body></html>").into_bytes()
}

impl SearchServer {
    pub async fn start() -> SearchServer {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("bind search mock")
    }

    pub async fn start_on(addr: &str) -> std::io::Result<SearchServer> {
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let own: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (q2, own2) = (queries.clone(), own.clone());
        let handler: Handler = Arc::new(move |req: Req| {
            let (queries, own) = (q2.clone(), own2.clone());
            Box::pin(async move {
                let own = own.lock().unwrap().expect("address set");
                answer(req, own, &queries)
            })
        });
        let backend = Backend::start(addr, handler).await?;
        *own.lock().unwrap() = Some(backend.addr);
        Ok(SearchServer { backend, queries })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.backend.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// The queries received so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    /// `down`, `slow`, `503`, `malformed`, or None.
    pub fn set_mode(&self, mode: Option<&str>) {
        *self.backend.mode.lock().unwrap() = mode.map(String::from);
    }
}

fn answer(req: Req, own: SocketAddr, queries: &Mutex<Vec<String>>) -> Reply {
    let unauthorized = || Reply::Json(401, json!({"error": "bad key"}).to_string());
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/search") => {
            let q = req.param("q").unwrap_or_default().to_string();
            if req.param("format") != Some("json") {
                return Reply::Json(403, json!({"error": "format"}).to_string());
            }
            queries.lock().unwrap().push(q.clone());
            Reply::Json(
                200,
                json!({"query": q, "results": results(&q, own)}).to_string(),
            )
        }
        ("GET", "/res/v1/web/search") => {
            if req.header("x-subscription-token") != Some(BRAVE_KEY) {
                return unauthorized();
            }
            let q = req.param("q").unwrap_or_default().to_string();
            queries.lock().unwrap().push(q.clone());
            let items: Vec<Value> = results(&q, own)
                .into_iter()
                .map(|r| json!({"url": r["url"], "title": r["title"], "description": r["content"], "page_age": r["publishedDate"]}))
                .collect();
            Reply::Json(
                200,
                json!({"type": "search", "web": {"results": items}}).to_string(),
            )
        }
        ("POST", "/search") => {
            if req.header("authorization") != Some(&format!("Bearer {TAVILY_KEY}")) {
                return unauthorized();
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let q = body["query"].as_str().unwrap_or_default().to_string();
            queries.lock().unwrap().push(q.clone());
            let max = body["max_results"].as_u64().unwrap_or(5) as usize;
            let items: Vec<Value> = results(&q, own)
                .into_iter()
                .take(max)
                .map(|r| json!({"url": r["url"], "title": r["title"], "content": r["content"], "raw_content": r["extracted_content"], "score": 0.5}))
                .collect();
            Reply::Json(200, json!({"query": q, "results": items}).to_string())
        }
        ("GET", "/__mock/queries") => Reply::Json(200, json!(*queries.lock().unwrap()).to_string()),
        ("GET", p) if p.starts_with("/page/") => {
            Reply::Raw(200, "text/html; charset=utf-8", vec![], page(&p[6..]))
        }
        ("GET", "/redirect") => {
            let to = req.param("to").unwrap_or("/page/1").to_string();
            Reply::Raw(302, "text/plain", vec![("location", to)], Vec::new())
        }
        _ => Reply::Json(404, json!({"error": "no route"}).to_string()),
    }
}
