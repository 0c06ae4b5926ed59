//! Gateway-run tools: the search backends and the sandbox client against the mock backends
//! (tests/mock-upstream: SearXNG, Brave and Tavily shapes, the reference sandbox), with their
//! failure modes; then the real gateway running tool loops.

mod common;

use mock_upstream::{SandboxServer, SearchServer, BRAVE_KEY, TAVILY_KEY};
use std::sync::Arc;
use std::time::Duration;
use tollgate::tools::sandbox::Sandbox;
use tollgate::tools::search::Searcher;
use tollgate::tools::settings::{Backend, CodeExecutionConfig, WebSearchConfig};
use tollgate::tools::ToolError;

fn search_cfg(backend: Backend, url: String, key: Option<&str>) -> WebSearchConfig {
    WebSearchConfig {
        backend,
        url,
        api_key: key.map(String::from),
        max_results: 5,
        allowed_domains: vec![],
        blocked_domains: vec![],
        allow_private_hosts: false,
        max_text_chars: 1500,
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn searxng_brave_and_tavily_shapes() {
    let m = SearchServer::start().await;
    let cases = [
        (Backend::Searxng, m.url(), None),
        (
            Backend::Brave,
            format!("{}/res/v1/web/search", m.url()),
            Some(BRAVE_KEY),
        ),
        (
            Backend::Tavily,
            format!("{}/search", m.url()),
            Some(TAVILY_KEY),
        ),
    ];
    for (backend, url, key) in cases {
        let s = Searcher::new(search_cfg(backend, url, key));
        let req = s.request("rust pingora", None);
        let res = s.search(&req).await.unwrap();
        assert_eq!(res.len(), 5, "{backend:?}");
        assert_eq!(res[1].title, "Result 2 for rust pingora", "{backend:?}");
        assert_eq!(res[1].url, "https://docs.example.org/2");
        // Brave gives snippets only; SearXNG and Tavily the page text too.
        match backend {
            Backend::Brave => assert_eq!(res[1].text, None),
            _ => assert_eq!(
                res[1].text.as_deref(),
                Some("Full text 2 about rust pingora: search-result-marker-2.")
            ),
        }
    }
    assert_eq!(m.queries(), vec!["rust pingora"; 3]);
}

#[tokio::test]
async fn wrong_key_is_a_tool_error() {
    let m = SearchServer::start().await;
    let s = Searcher::new(search_cfg(
        Backend::Brave,
        format!("{}/res/v1/web/search", m.url()),
        Some("wrong"),
    ));
    let e = s.search(&s.request("q", None)).await.unwrap_err();
    assert_eq!(
        e,
        ToolError::Failed("the search backend answered HTTP 401".into())
    );
}

#[tokio::test]
async fn results_are_capped_and_filtered_by_domain() {
    let m = SearchServer::start().await;
    let mut cfg = search_cfg(Backend::Searxng, m.url(), None);
    cfg.blocked_domains = vec!["example.net".into()];
    let s = Searcher::new(cfg);
    let o =
        serde_json::json!({"max_results": 3, "allowed_domains": ["example.org", "example.com"]});
    let res = s.search(&s.request("q", o.as_object())).await.unwrap();
    let urls: Vec<&str> = res.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://docs.example.org/2",
            "https://www.example.com/3",
            "https://docs.example.org/5"
        ]
    );
    let all = s.search(&s.request("q", None)).await.unwrap();
    assert!(all.iter().all(|r| !r.url.contains("example.net")));
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn search_failure_modes() {
    let m = SearchServer::start().await;
    let s = Searcher::new(search_cfg(Backend::Searxng, m.url(), None));
    let req = s.request("q", None);
    for (mode, want) in [
        ("503", "the search backend answered HTTP 503"),
        ("malformed", "the search backend sent a malformed answer"),
        ("slow", "the search backend did not answer in time"),
        ("down", "the search backend failed"),
    ] {
        m.set_mode(Some(mode));
        let e = s.search(&req).await.unwrap_err();
        assert_eq!(e, ToolError::Failed(want.into()), "{mode}");
    }
    // Nothing listening: unreachable (the request is refused with a 502).
    let port = common::free_port();
    let s = Searcher::new(search_cfg(
        Backend::Searxng,
        format!("http://127.0.0.1:{port}"),
        None,
    ));
    let e = s.search(&req).await.unwrap_err();
    assert!(matches!(e, ToolError::Unreachable(_)), "{e:?}");
}

fn sandbox(url: String, timeout: Duration) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(CodeExecutionConfig { url, timeout }))
}

#[tokio::test]
async fn sandbox_runs_code_and_deletes_its_session() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(20));
    let session = client.open().await.unwrap();
    let out = session.exec("print(6 * 7)").await.unwrap();
    assert_eq!(out.stdout, "42\n");
    assert!(!out.failed());
    // A session keeps its directory between calls of one request.
    session
        .exec("open('f.txt', 'w').write('kept')")
        .await
        .unwrap();
    let out = session.exec("print(open('f.txt').read())").await.unwrap();
    assert_eq!(out.stdout, "kept\n");
    let out = session.exec("raise SystemExit(3)").await.unwrap();
    assert!(out.failed());
    assert!(out.render().starts_with("[tool error] return code: 3"));
    let out = session.exec("1/0").await.unwrap();
    assert!(out.render().contains("ZeroDivisionError"));
    let id = session.id().to_string();
    session.close().await;
    assert_eq!(sb.deleted(), vec![id]);
    assert!(sb.open_sessions().is_empty());
}

#[tokio::test]
async fn a_dropped_session_is_deleted() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(20));
    let session = client.open().await.unwrap();
    let id = session.id().to_string();
    drop(session);
    for _ in 0..100 {
        if sb.deleted() == vec![id.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.deleted(), vec![id]);
}

#[tokio::test]
async fn sandbox_timeout_and_failure_modes() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(1));
    let session = client.open().await.unwrap();
    let out = session.exec("import time; time.sleep(5)").await.unwrap();
    assert_eq!(out.return_code, 124);
    assert!(out.failed());
    for (mode, want) in [
        ("503", "the sandbox answered HTTP 503"),
        ("malformed", "the sandbox sent a malformed answer"),
    ] {
        sb.set_mode(Some(mode));
        let e = session.exec("print(1)").await.unwrap_err();
        assert_eq!(e, ToolError::Failed(want.into()), "{mode}");
    }
    sb.set_mode(Some("503"));
    assert!(matches!(client.open().await, Err(ToolError::Failed(_))));
    sb.set_mode(None);
    session.close().await;
    assert!(sb.open_sessions().is_empty());
    let port = common::free_port();
    let down = sandbox(format!("http://127.0.0.1:{port}"), Duration::from_secs(1));
    assert!(matches!(down.open().await, Err(ToolError::Unreachable(_))));
}
