//! The model list endpoints in three formats (OpenAI, Anthropic, Gemini), with paging and
//! injected failures controlled by [`ModelsControl`].

use crate::gemini::{gemini_error, gemini_model_info};
use crate::http::{write_json, Head};
use crate::Shared;
use serde_json::{json, Value};
use std::time::Duration;

/// How the model list endpoints answer (`POST /__mock/models`, or [`MockServer::set_models`]).
/// The three formats: OpenAI `GET /v1/models` (one page), Anthropic `GET /v1/models` when
/// `anthropic-version` is sent (`limit`/`after_id` paging, `has_more`/`last_id`), Gemini
/// `GET /v1beta/models` (`pageSize`/`pageToken` paging, `nextPageToken`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ModelsControl {
    /// The next N list requests fail (each one counts down).
    pub fail: u32,
    /// Status of a failing answer (default 503); 0 closes the connection without an answer.
    pub status: Option<u16>,
    /// Delay before a failing answer (a slow provider).
    pub delay_ms: u64,
    /// Limit the failures to one format: `openai`, `anthropic` or `gemini`.
    pub format: Option<String>,
    /// Replace a format's model ids (the default lists are [`OPENAI_MODELS`],
    /// [`ANTHROPIC_MODELS`], [`GEMINI_MODELS`]).
    pub openai: Option<Vec<String>>,
    pub anthropic: Option<Vec<String>>,
    pub gemini: Option<Vec<String>>,
    /// Largest page for the paged formats (default 2 for Anthropic, 1 for Gemini, so that
    /// paging is always exercised).
    pub page_size: Option<usize>,
}

/// The OpenAI-format list: `(id, context_window)` (as Groq gives it; 0: not said).
pub const OPENAI_MODELS: &[(&str, u64)] = &[
    ("gpt-4.1", 0),
    ("gpt-4o-mini", 0),
    ("llama-3.3-70b-versatile", 131072),
    ("mock-model", 0),
    ("text-embedding-3-small", 0),
];
/// The Anthropic-format list: `(id, display_name, created_at)`.
pub const ANTHROPIC_MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-05-01T00:00:00Z"),
    (
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "2026-02-17T00:00:00Z",
    ),
];
/// The Gemini-format list: `(id, displayName, generation methods)`.
pub const GEMINI_MODELS: &[(&str, &str, &[&str])] = &[
    (
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        &["generateContent", "countTokens"],
    ),
    (
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        &["generateContent", "countTokens"],
    ),
    (
        "aqa",
        "Model that performs Attributed Question-Answering.",
        &["generateAnswer"],
    ),
    (
        "text-embedding-004",
        "Text Embedding 004",
        &["embedContent"],
    ),
];

/// The format of a model list request, if it is one: Gemini's `GET .../v1beta/models`, else
/// `GET .../models` (Anthropic when `anthropic-version` is sent, else OpenAI).
pub(crate) fn list_format(head: &Head, path: &str) -> Option<&'static str> {
    let p = path.trim_end_matches('/');
    if head.method != "GET" || !p.ends_with("/models") {
        return None;
    }
    Some(if p.ends_with("/v1beta/models") {
        "gemini"
    } else if head.get("anthropic-version").is_some() {
        "anthropic"
    } else {
        "openai"
    })
}

/// The value of `name` in a query string (not decoded: the mock's cursors need none).
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Answers a model list request from [`ModelsControl`]; returns (status, keep-alive).
pub(crate) async fn list_models(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    format: &str,
    query: Option<&str>,
) -> std::io::Result<(u16, bool)> {
    let (fail, c) = {
        let mut c = shared.models.lock().unwrap();
        let applies = c.format.as_deref().is_none_or(|f| f == format);
        let fail = applies && c.fail > 0;
        if fail {
            c.fail -= 1;
        }
        (fail, c.clone())
    };
    if fail {
        tokio::time::sleep(Duration::from_millis(c.delay_ms)).await;
        let status = c.status.unwrap_or(503);
        if status == 0 {
            return Ok((0, false));
        }
        let body = match format {
            "gemini" => gemini_error(status, "mock injected list failure"),
            "anthropic" => {
                json!({"type": "error", "error": {"type": "api_error", "message": "mock injected list failure"}})
            }
            _ => {
                json!({"error": {"message": "mock injected list failure", "type": "server_error", "param": null, "code": null}})
            }
        };
        write_json(wr, status, &[], &body.to_string()).await?;
        return Ok((status, true));
    }
    let ids = |custom: &Option<Vec<String>>, default: Vec<&str>| -> Vec<String> {
        custom
            .clone()
            .unwrap_or_else(|| default.into_iter().map(String::from).collect())
    };
    let body = match format {
        "openai" => {
            let data: Vec<Value> = ids(&c.openai, OPENAI_MODELS.iter().map(|m| m.0).collect())
                .iter()
                .map(|id| {
                    let mut m = json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"});
                    if let Some((_, cw)) = OPENAI_MODELS.iter().find(|m| m.0 == id).filter(|m| m.1 > 0) {
                        m["context_window"] = json!(cw);
                    }
                    m
                })
                .collect();
            json!({"object": "list", "data": data})
        }
        "anthropic" => {
            let all = ids(&c.anthropic, ANTHROPIC_MODELS.iter().map(|m| m.0).collect());
            let size = query_param(query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(20)
                .min(c.page_size.unwrap_or(2))
                .max(1);
            let start = match query_param(query, "after_id") {
                Some(after) => all
                    .iter()
                    .position(|id| id == after)
                    .map_or(all.len(), |i| i + 1),
                None => 0,
            };
            let page = &all[start.min(all.len())..(start + size).min(all.len())];
            let data: Vec<Value> = page
                .iter()
                .map(|id| {
                    let (display, created) = ANTHROPIC_MODELS
                        .iter()
                        .find(|m| m.0 == id)
                        .map_or((id.as_str(), "2025-01-01T00:00:00Z"), |m| (m.1, m.2));
                    json!({"type": "model", "id": id, "display_name": display, "created_at": created})
                })
                .collect();
            json!({"data": data, "has_more": start + size < all.len(), "first_id": page.first(), "last_id": page.last()})
        }
        _ => {
            let all = ids(&c.gemini, GEMINI_MODELS.iter().map(|m| m.0).collect());
            let size = query_param(query, "pageSize")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(50)
                .min(c.page_size.unwrap_or(1))
                .max(1);
            // The page token is the index of the page's first model, disguised.
            let start = query_param(query, "pageToken")
                .and_then(|t| t.strip_prefix("page-"))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let end = (start + size).min(all.len());
            let models: Vec<Value> = all[start.min(end)..end]
                .iter()
                .map(|id| {
                    let (display, methods) = GEMINI_MODELS
                        .iter()
                        .find(|m| m.0 == id)
                        .map_or((id.as_str(), &["generateContent"][..]), |m| (m.1, m.2));
                    let mut m = gemini_model_info(id, display);
                    m["supportedGenerationMethods"] = json!(methods);
                    m
                })
                .collect();
            let mut v = json!({"models": models});
            if end < all.len() {
                v["nextPageToken"] = json!(format!("page-{end}"));
            }
            v
        }
    };
    write_json(wr, 200, &[], &body.to_string()).await?;
    Ok((200, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn model_lists_in_three_formats_with_paging_and_failures() {
        let m = MockServer::start().await;
        let v = call(&m, "GET", "/v1/models", &[], None).await.json();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"llama-3.3-70b-versatile") && ids.contains(&"mock-model"));
        // Anthropic: pages of 2 at most, followed by after_id.
        let ant = [("anthropic-version", "2023-06-01")];
        let v = call(&m, "GET", "/v1/models?limit=1000", &ant, None)
            .await
            .json();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["has_more"], true);
        assert_eq!(v["data"][0]["display_name"], "Claude Haiku 4.5");
        let after = format!(
            "/v1/models?limit=1000&after_id={}",
            v["last_id"].as_str().unwrap()
        );
        let v = call(&m, "GET", &after, &ant, None).await.json();
        assert_eq!(v["data"][0]["id"], "claude-sonnet-4-6");
        assert_eq!(v["has_more"], false);
        // Gemini: one model a page, followed by pageToken.
        let mut token = String::new();
        let mut names = Vec::new();
        loop {
            let target = format!("/v1beta/models?pageSize=1000&pageToken={token}");
            let v = call(&m, "GET", &target, &[], None).await.json();
            names.extend(
                v["models"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["name"].as_str().unwrap().to_string()),
            );
            match v["nextPageToken"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        assert_eq!(names.len(), GEMINI_MODELS.len());
        // Failures: the next 2 Anthropic list calls fail; OpenAI ones are untouched.
        m.set_models(ModelsControl {
            fail: 2,
            format: Some("anthropic".into()),
            ..Default::default()
        });
        assert_eq!(call(&m, "GET", "/v1/models", &[], None).await.status, 200);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 503);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 503);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 200);
        assert_eq!(m.list_requests().len(), 4 + 2 + GEMINI_MODELS.len() + 1);
        assert!(m.requests().is_empty(), "list calls are logged apart");
    }
}
