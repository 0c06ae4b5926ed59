//! Gemini `generateContent` / `streamGenerateContent` / `countTokens` and model info: the
//! last turn, error envelopes, and the answer (with thinking, safety stops, function calls).

use crate::respond::{tool_args, Events};
use serde_json::{json, Value};

/// `(model, action)` from a Gemini path `.../models/{model}:{action}` (the query is already
/// split off); `action` is empty when there is no `:`.
pub(crate) fn gemini_model(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind("/models/")?;
    let rest = &path[i + "/models/".len()..];
    Some(rest.split_once(':').unwrap_or((rest, "")))
}

/// `last_user` for Gemini: the last turn of `contents`; a `functionResponse` part in it is a
/// tool result (its `result`/`output` string field, else its `response` as compact JSON).
pub(crate) fn gemini_last(req: &Value) -> (String, bool, String) {
    let Some(last) = req["contents"].as_array().and_then(|c| c.last()) else {
        return (String::new(), false, String::new());
    };
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    if let Some(fr) = parts.iter().rev().find_map(|p| p.get("functionResponse")) {
        let r = &fr["response"];
        let out = r["result"]
            .as_str()
            .or(r["output"].as_str())
            .map(String::from)
            .unwrap_or_else(|| r.to_string());
        return (String::new(), true, out);
    }
    let text = parts
        .iter()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("");
    (text, false, String::new())
}

/// Gemini's error `status` for an HTTP status.
pub(crate) fn gemini_status(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

pub(crate) fn gemini_error(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": gemini_status(code)}})
}

pub(crate) fn gemini_model_info(id: &str, display: &str) -> Value {
    json!({
        "name": format!("models/{id}"), "displayName": display, "version": "001",
        "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    })
}

/// Gemini triggers, from the last user text and the request headers.
pub(crate) struct GeminiOpts {
    /// `THINK`: a `thought:true` part before the answer.
    pub(crate) think: bool,
    /// `BLOCK_ME`: no candidates, `promptFeedback.blockReason:"SAFETY"`.
    pub(crate) blocked: bool,
    /// `SAFETY_STOP`: some text, then `finishReason:"SAFETY"`.
    pub(crate) safety_stop: bool,
    /// `x-mock-gemini-ids`: put an `id` in `functionCall` parts (Gemini 2.5 omits it).
    pub(crate) ids: bool,
}

/// Thought tokens reported (`thoughtsTokenCount`, outside `candidatesTokenCount`) with `THINK`.
pub(crate) const THOUGHT_TOKENS: u64 = 5;

pub(crate) fn gemini_events(
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    o: GeminiOpts,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let thoughts = if o.think { THOUGHT_TOKENS } else { 0 };
    let mut usage = json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c + thoughts, "cachedContentTokenCount": 0});
    if o.think {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    let partial_usage = json!({"promptTokenCount": p, "totalTokenCount": p});
    let envelope = |candidate: Option<Value>, usage: Option<&Value>| {
        let mut v = json!({"modelVersion": model, "responseId": "mock-resp-1"});
        if let Some(c) = candidate {
            v["candidates"] = json!([c]);
        }
        if let Some(u) = usage {
            v["usageMetadata"] = u.clone();
        }
        v
    };
    let candidate = |parts: Vec<Value>, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    let blocked_ratings = json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]);
    if o.blocked {
        let mut v = envelope(None, Some(&partial_usage));
        v["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": blocked_ratings});
        return if stream {
            Events::Chunks(vec![v])
        } else {
            Events::Json(v)
        };
    }
    let thought = json!({"text": "pondering", "thought": true});
    let call = tool.map(|name| {
        let args: Value = serde_json::from_str(tool_args(name)).unwrap();
        let mut fc = json!({"name": name, "args": args});
        if o.ids {
            fc["id"] = json!("call_mock1");
        }
        let mut part = json!({"functionCall": fc});
        if o.think {
            part["thoughtSignature"] = json!("bW9jay10aG91Z2h0LXNpZ25hdHVyZQ==");
        }
        part
    });
    let texts: Vec<String> = if o.safety_stop {
        pieces.iter().take(2).cloned().collect()
    } else {
        pieces.to_vec()
    };
    if !stream {
        let mut parts = Vec::new();
        if o.think {
            parts.push(thought);
        }
        match call {
            Some(cp) => parts.push(cp),
            None if !texts.is_empty() => parts.push(json!({"text": texts.concat()})),
            None => {}
        }
        let mut cand = candidate(parts, Some(if o.safety_stop { "SAFETY" } else { "STOP" }));
        if o.safety_stop {
            cand["safetyRatings"] = blocked_ratings;
        }
        return Events::Json(envelope(Some(cand), Some(&usage)));
    }
    let mut chunks: Vec<Vec<Value>> = Vec::new();
    if o.think {
        chunks.push(vec![thought]);
    }
    match call {
        // A function call arrives whole, never split.
        Some(cp) => chunks.push(vec![cp]),
        None => chunks.extend(texts.iter().map(|t| vec![json!({"text": t})])),
    }
    let n = chunks.len();
    let mut out: Vec<Value> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let last = i + 1 == n && !o.safety_stop;
            let u = if last {
                Some(&usage)
            } else if i == 0 {
                Some(&partial_usage)
            } else {
                None
            };
            envelope(Some(candidate(parts, last.then_some("STOP"))), u)
        })
        .collect();
    if o.safety_stop {
        // Like real Gemini: the stopping chunk has no content.
        out.push(envelope(
            Some(json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": blocked_ratings})),
            Some(&usage),
        ));
    } else if n == 0 {
        out.push(envelope(
            Some(candidate(vec![], Some("STOP"))),
            Some(&usage),
        ));
    }
    Events::Chunks(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    // ---------- Gemini ----------

    const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
    const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

    fn gemini_req(text: &str) -> Value {
        json!({"systemInstruction": {"parts": [{"text": "sys"}]},
               "contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    fn gemini_text(chunks: &[Value]) -> String {
        chunks
            .iter()
            .flat_map(|c| {
                c["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|p| p["thought"] != true)
            .filter_map(|p| p["text"].as_str().map(String::from))
            .collect()
    }

    #[tokio::test]
    async fn gemini_generate_text() {
        let m = MockServer::start().await;
        let r = post(&m, GEN, &[("x-goog-api-key", "g-key")], gemini_req("hi")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["modelVersion"], "gemini-2.5-flash");
        assert_eq!(v["responseId"], "mock-resp-1");
        let c = &v["candidates"][0];
        assert_eq!(c["content"]["role"], "model");
        assert_eq!(c["content"]["parts"][0]["text"], TEXT);
        assert_eq!(c["finishReason"], "STOP");
        let u = &v["usageMetadata"];
        assert_eq!(u["cachedContentTokenCount"], 0);
        assert!(u.get("thoughtsTokenCount").is_none());
        assert_eq!(
            u["totalTokenCount"].as_u64().unwrap(),
            u["promptTokenCount"].as_u64().unwrap() + u["candidatesTokenCount"].as_u64().unwrap()
        );
        let rec = m.requests().pop().unwrap();
        assert_eq!(rec.header("x-goog-api-key"), Some("g-key"));
        assert_eq!(rec.path, GEN);
    }

    #[tokio::test]
    async fn gemini_stream_sse() {
        let m = MockServer::start().await;
        let r = post(&m, STREAM, &[], gemini_req("hi")).await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(!r.body.contains("[DONE]"));
        assert!(r.body.contains("\r\n\r\n"));
        let ev: Vec<Value> = r
            .sse()
            .into_iter()
            .map(|(n, d)| {
                assert!(n.is_none());
                d
            })
            .collect();
        assert!(ev.len() > 2);
        assert_eq!(gemini_text(&ev), TEXT);
        for (i, c) in ev.iter().enumerate() {
            assert_eq!(c["modelVersion"], "gemini-2.5-flash");
            assert_eq!(c["candidates"][0]["index"], 0);
            let last = i + 1 == ev.len();
            assert_eq!(c["candidates"][0].get("finishReason").is_some(), last);
        }
        assert_eq!(
            ev[0]["usageMetadata"]["totalTokenCount"],
            ev[0]["usageMetadata"]["promptTokenCount"]
        );
        let u = &ev.last().unwrap()["usageMetadata"];
        assert_eq!(ev.last().unwrap()["candidates"][0]["finishReason"], "STOP");
        assert!(u["candidatesTokenCount"].as_u64().unwrap() > 0);
        let rec = m.requests().pop().unwrap();
        assert_eq!(
            rec.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        );
        assert_eq!(rec.query.as_deref(), Some("alt=sse"));
    }

    #[tokio::test]
    async fn gemini_stream_without_alt_sse_is_json_array() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            &[],
            gemini_req("hi"),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("application/json"));
        let arr = r.json();
        let arr = arr.as_array().unwrap();
        assert_eq!(gemini_text(arr), TEXT);
        assert_eq!(arr[0]["modelVersion"], "gemini-2.5-pro");
    }

    #[tokio::test]
    async fn gemini_function_call() {
        let m = MockServer::start().await;
        let mut body = gemini_req("CALL_TOOL please");
        body["tools"] = json!([{"functionDeclarations": [{"name": "read_file"}, {"name": "Bash", "parameters": {}}]}]);
        let ev: Vec<Value> = post(&m, STREAM, &[], body.clone())
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(ev.len(), 1);
        let c = &ev[0]["candidates"][0];
        assert_eq!(c["finishReason"], "STOP");
        assert_eq!(
            c["content"]["parts"][0]["functionCall"],
            json!({"name": "Bash", "args": {"command": "echo hello-from-mock-tool"}})
        );
        assert!(ev[0]["usageMetadata"]["candidatesTokenCount"].is_u64());
        // Non-streamed, with ids asked for, and exec_command's argument rule.
        body["tools"] = json!([{"functionDeclarations": [{"name": "exec_command"}]}]);
        let v = post(&m, GEN, &[("x-mock-gemini-ids", "1")], body)
            .await
            .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"id": "call_mock1", "name": "exec_command", "args": {"cmd": "echo hello-from-mock-tool"}})
        );
    }

    #[tokio::test]
    async fn gemini_function_response() {
        let m = MockServer::start().await;
        let turn = |response: Value| {
            json!({"contents": [
                {"role": "user", "parts": [{"text": "CALL_TOOL"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "Bash", "args": {"command": "x"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "Bash", "response": response}}]}]})
        };
        let v = post(
            &m,
            GEN,
            &[],
            turn(json!({"result": "hello-from-mock-tool"})),
        )
        .await
        .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Tool said: hello-from-mock-tool"
        );
        let v = post(&m, GEN, &[], turn(json!({"output": "out"})))
            .await
            .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Tool said: out"
        );
        let ev: Vec<Value> = post(&m, STREAM, &[], turn(json!({"a": 1})))
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(gemini_text(&ev), "Tool said: {\"a\":1}");
    }

    #[tokio::test]
    async fn gemini_safety_triggers() {
        let m = MockServer::start().await;
        for target in [GEN, STREAM] {
            let r = post(&m, target, &[], gemini_req("BLOCK_ME")).await;
            assert_eq!(r.status, 200);
            let v = if target == GEN {
                r.json()
            } else {
                r.sse().pop().unwrap().1
            };
            assert!(v.get("candidates").is_none());
            assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
        }
        let v = post(&m, GEN, &[], gemini_req("SAFETY_STOP")).await.json();
        assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
        assert!(!v["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty());
        let ev: Vec<Value> = post(&m, STREAM, &[], gemini_req("SAFETY_STOP"))
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert!(!gemini_text(&ev).is_empty());
        assert_eq!(
            ev.last().unwrap()["candidates"][0]["finishReason"],
            "SAFETY"
        );
        assert!(ev.last().unwrap()["usageMetadata"].is_object());
    }

    #[tokio::test]
    async fn gemini_think() {
        let m = MockServer::start().await;
        let ev: Vec<Value> = post(
            &m,
            STREAM,
            &[("x-mock-usage", "10,7")],
            gemini_req("THINK hard"),
        )
        .await
        .sse()
        .into_iter()
        .map(|x| x.1)
        .collect();
        assert_eq!(
            ev[0]["candidates"][0]["content"]["parts"][0],
            json!({"text": "pondering", "thought": true})
        );
        assert_eq!(gemini_text(&ev), TEXT);
        let u = &ev.last().unwrap()["usageMetadata"];
        assert_eq!(u["promptTokenCount"], 10);
        assert_eq!(u["candidatesTokenCount"], 7);
        assert_eq!(u["thoughtsTokenCount"], THOUGHT_TOKENS);
        assert_eq!(u["totalTokenCount"], 17 + THOUGHT_TOKENS);
        let v = post(&m, GEN, &[], gemini_req("THINK")).await.json();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0]["thought"], true);
        assert_eq!(parts[1]["text"], TEXT);
    }

    #[tokio::test]
    async fn gemini_errors() {
        let m = MockServer::start().await;
        for (code, status) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (429, "RESOURCE_EXHAUSTED"),
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
        ] {
            let c = code.to_string();
            let r = post(&m, STREAM, &[("x-mock-status", &c)], gemini_req("hi")).await;
            assert_eq!(r.status, code);
            assert_eq!(
                r.json(),
                json!({"error": {"code": code, "message": format!("mock injected {code}"), "status": status}})
            );
        }
        let r = post(
            &m,
            STREAM,
            &[("x-mock-fault", "event-error")],
            gemini_req("hi"),
        )
        .await;
        let ev = r.sse();
        assert!(ev.len() > 1);
        assert_eq!(
            ev.last().unwrap().1,
            json!({"error": {"code": 503, "message": "mock overloaded", "status": "UNAVAILABLE"}})
        );
        // A one-chunk stream still gets its error.
        let mut body = gemini_req("CALL_TOOL");
        body["tools"] = json!([{"functionDeclarations": [{"name": "f"}]}]);
        let ev = post(&m, STREAM, &[("x-mock-fault", "event-error")], body)
            .await
            .sse();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].1["error"]["status"], "UNAVAILABLE");
        // Unknown Gemini method: Gemini envelope.
        let r = post(&m, "/v1beta/models/x:embedContent", &[], json!({})).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn gemini_default_fault_and_split_writes() {
        let m = MockServer::start().await;
        m.set_default_fault(Some(Fault {
            status: Some(429),
            times: Some(1),
            ..Default::default()
        }));
        assert_eq!(post(&m, GEN, &[], gemini_req("hi")).await.status, 429);
        assert_eq!(post(&m, GEN, &[], gemini_req("hi")).await.status, 200);
        let ev: Vec<Value> = post(
            &m,
            STREAM,
            &[("x-mock-split-writes", "0"), ("x-mock-pieces", "3")],
            gemini_req("hi"),
        )
        .await
        .sse()
        .into_iter()
        .map(|x| x.1)
        .collect();
        assert_eq!(gemini_text(&ev), "tok tok tok ");
        assert_eq!(
            ev.last().unwrap()["usageMetadata"]["candidatesTokenCount"],
            3
        );
    }

    #[tokio::test]
    async fn gemini_count_and_models() {
        let m = MockServer::start().await;
        let v = post(
            &m,
            "/v1beta/models/gemini-2.5-flash:countTokens",
            &[],
            gemini_req("hello"),
        )
        .await
        .json();
        assert!(v["totalTokens"].as_u64().unwrap() > 0);
        let v = call(&m, "GET", "/v1beta/models", &[], None).await.json();
        assert_eq!(v["models"][0]["name"], "models/gemini-2.5-flash");
        assert_eq!(v["models"][0]["displayName"], "Gemini 2.5 Flash");
        assert_eq!(
            v["models"][0]["supportedGenerationMethods"],
            json!(["generateContent", "countTokens"])
        );
        let v = call(&m, "GET", "/v1beta/models?pageSize=50&key=k", &[], None)
            .await
            .json();
        assert_eq!(v["models"].as_array().unwrap().len(), 1);
        let v = call(&m, "GET", "/v1beta/models/gemini-2.5-pro", &[], None)
            .await
            .json();
        assert_eq!(v["name"], "models/gemini-2.5-pro");
        // The OpenAI models route is untouched.
        let v = call(&m, "GET", "/v1/models", &[], None).await.json();
        assert_eq!(v["object"], "list");
    }
}
