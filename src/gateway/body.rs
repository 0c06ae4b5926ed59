//! The request body as JSON, parsed only as far as the request needs.
//!
//! Every request needs a handful of top-level fields (`model`, `stream`, the output limit, the
//! end-user id); a same-format request that tollgate forwards unchanged needs nothing else.
//! [`RequestJson::peek`] reads just those fields (the rest of the body is checked for syntax
//! but never built into a tree), and [`RequestJson::full`] parses the whole body the first
//! time a translation or an edit needs it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// The top-level fields read on every request. Anything else is skipped.
#[derive(Deserialize)]
struct Peek {
    model: Option<Value>,
    stream: Option<Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
    max_output_tokens: Option<Value>,
    user: Option<Value>,
    metadata: Option<Value>,
    stream_options: Option<Value>,
}

pub struct RequestJson {
    fields: Map<String, Value>,
    /// `fields` holds the whole body (not just the peeked fields).
    complete: bool,
}

impl RequestJson {
    /// Reads the common fields; falls back to a full parse for anything unusual (invalid
    /// UTF-8, duplicate keys, syntax errors), which also words the error.
    pub fn peek(body: &[u8]) -> Result<RequestJson, GatewayError> {
        // serde skips unknown fields without its nesting limit: check the depth here (the
        // full parse refuses deep bodies with a clear error).
        if std::str::from_utf8(body).is_ok() && !too_deep(body, MAX_DEPTH) {
            if let Ok(p) = serde_json::from_slice::<Peek>(body) {
                let mut fields = Map::new();
                for (k, v) in [
                    ("model", p.model),
                    ("stream", p.stream),
                    ("max_tokens", p.max_tokens),
                    ("max_completion_tokens", p.max_completion_tokens),
                    ("max_output_tokens", p.max_output_tokens),
                    ("user", p.user),
                    ("metadata", p.metadata),
                    ("stream_options", p.stream_options),
                ] {
                    if let Some(v) = v {
                        fields.insert(k.to_string(), v);
                    }
                }
                return Ok(RequestJson {
                    fields,
                    complete: false,
                });
            }
        }
        Ok(RequestJson {
            fields: parse_object(body)?,
            complete: true,
        })
    }

    /// The fields read so far (all of them once [`full`](Self::full) ran).
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The whole body as a JSON object, parsed on first use.
    pub fn full(&mut self, body: &[u8]) -> Result<&mut Map<String, Value>, GatewayError> {
        if !self.complete {
            self.fields = parse_object(body)?;
            self.complete = true;
        }
        Ok(&mut self.fields)
    }
}

/// serde_json's own nesting limit for a full parse.
const MAX_DEPTH: usize = 128;

/// Whether arrays and objects nest deeper than `limit` (strings are skipped with memchr, so
/// the cost is in the few structural bytes).
fn too_deep(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                loop {
                    match body.get(i..).and_then(|r| memchr::memchr2(b'"', b'\\', r)) {
                        Some(j) if body[i + j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                        None => return false,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Parses a body that must be a JSON object, with an error that says what is wrong.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::invalid(
            "The request body is empty; expected a JSON object.",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::invalid(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(GatewayError::invalid(format!(
            "The request body is not valid JSON: {} at line {}, column {}.",
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "invalid data",
                serde_json::error::Category::Io => "read error",
            },
            e.line(),
            e.column()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peek_reads_the_common_fields_only() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5,"metadata":{"user_id":"u"}}"#;
        let mut r = RequestJson::peek(body).unwrap();
        assert_eq!(r.fields()["model"], "m");
        assert_eq!(r.fields()["stream"], true);
        assert_eq!(r.fields()["max_tokens"], 5);
        assert_eq!(r.fields()["metadata"]["user_id"], "u");
        assert!(r.fields().get("messages").is_none(), "not built");
        assert_eq!(r.full(body).unwrap()["messages"][0]["content"], "hi");
    }

    #[test]
    fn unusual_bodies_fall_back_to_the_full_parse() {
        // Duplicate keys: the last one wins, as with a full parse.
        let r = RequestJson::peek(br#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(r.fields()["model"], "b");
        for bad in [
            &b""[..],
            b"[1]",
            b"{\"model\":",
            b"{\"model\":\"\xff\"}",
            b"nul",
        ] {
            let e = RequestJson::peek(bad).err().expect("refused");
            assert_eq!(e.status(), 400);
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        assert!(
            RequestJson::peek(deep.as_bytes()).is_err(),
            "nesting is bounded"
        );
        // Brackets inside strings (escaped quotes too) do not count.
        let text = format!(r#"{{"model":"m","s":"\"{}"}}"#, "[".repeat(500));
        assert_eq!(
            RequestJson::peek(text.as_bytes()).unwrap().fields()["model"],
            "m"
        );
        assert!(too_deep(&b"[".repeat(129), 128) && !too_deep(&b"[".repeat(128), 128));
        assert!(
            !too_deep(b"{\"a\":\"\\", 128),
            "a trailing escape ends the scan"
        );
        assert_eq!(
            RequestJson::peek(br#"{"model":1}"#).unwrap().fields()["model"],
            json!(1)
        );
    }
}
