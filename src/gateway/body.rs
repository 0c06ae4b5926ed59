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
    safety_identifier: Option<Value>,
    metadata: Option<Value>,
    stream_options: Option<Value>,
    // The gateway-only fields (`guardrails::GATEWAY_FIELDS`): read when present, null
    // included, since they are stripped before forwarding.
    #[serde(default, deserialize_with = "present")]
    guardrails: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    mcp_servers: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    mcp_server_ids: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    tools_header: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    max_tool_iterations: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    session_label: Option<Value>,
}

/// A field that is present, null included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

pub struct RequestJson {
    fields: Map<String, Value>,
    /// `fields` holds the whole body (not just the peeked fields).
    complete: bool,
}

/// The serde reading of the common fields (full parse for anything unusual).
fn peek_serde(body: &[u8], utf8: bool) -> Result<RequestJson, GatewayError> {
    if utf8 && !too_deep(body, MAX_DEPTH) {
        if let Ok(p) = serde_json::from_slice::<Peek>(body) {
            let mut fields = Map::new();
            for (k, v) in [
                ("model", p.model),
                ("stream", p.stream),
                ("max_tokens", p.max_tokens),
                ("max_completion_tokens", p.max_completion_tokens),
                ("max_output_tokens", p.max_output_tokens),
                ("user", p.user),
                ("safety_identifier", p.safety_identifier),
                ("metadata", p.metadata),
                ("stream_options", p.stream_options),
                ("guardrails", p.guardrails),
                ("mcp_servers", p.mcp_servers),
                ("mcp_server_ids", p.mcp_server_ids),
                ("tools_header", p.tools_header),
                ("max_tool_iterations", p.max_tool_iterations),
                ("session_label", p.session_label),
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

impl RequestJson {
    /// Reads the common fields; falls back to a full parse for anything unusual (invalid
    /// UTF-8, duplicate keys, syntax errors), which also words the error.
    pub fn peek(body: &[u8]) -> Result<RequestJson, GatewayError> {
        // serde skips unknown fields without its nesting limit: check the depth here (the
        // full parse refuses deep bodies with a clear error).
        let utf8 = simdutf8::basic::from_utf8(body).is_ok();
        // The common case, read by a skimmer that validates like serde's skipping parse but
        // finds string ends with memchr, and checks the nesting depth as it goes; anything
        // it does not handle the way serde would (not an object, escaped top-level keys,
        // repeated fields, values at the nesting limit) goes the serde way below.
        if utf8 {
            if let Some(fields) = skim::peek_fields(body) {
                return Ok(RequestJson {
                    fields,
                    complete: false,
                });
            }
        }
        peek_serde(body, utf8)
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

/// The peeked fields in [`Peek`]'s order.
const PEEKED: [&str; 15] = [
    "model",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "user",
    "safety_identifier",
    "metadata",
    "stream_options",
    "guardrails",
    "mcp_servers",
    "mcp_server_ids",
    "tools_header",
    "max_tool_iterations",
    "session_label",
];

/// Peeked fields from this index on are kept when null (the gateway-only fields).
const KEEP_NULL_FROM: usize = 9;

/// A validating skim of a request body: the grammar serde_json accepts when it deserializes
/// [`Peek`] (whitespace, strings with serde's escape and control-character rules but no
/// UTF-8 check, numbers, literals, no trailing commas or bytes), without building anything
/// but the peeked fields. It answers `None` whenever serde's result could differ from a
/// plain reading, and the caller then asks serde.
mod skim {
    use super::{too_deep, PEEKED};
    use serde_json::{Map, Value};

    struct Scanner<'a> {
        b: &'a [u8],
        i: usize,
        /// Arrays and objects open around the current position.
        depth: usize,
    }

    /// Whether any byte is below 0x20 (a branch-free reduction per 64 bytes, which the
    /// compiler turns into vector compares).
    fn has_control(s: &[u8]) -> bool {
        let mut chunks = s.chunks_exact(64);
        for c in &mut chunks {
            if c.iter().fold(0u8, |m, &b| m | u8::from(b < 0x20)) != 0 {
                return true;
            }
        }
        chunks.remainder().iter().any(|&c| c < 0x20)
    }

    impl Scanner<'_> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
                self.i += 1;
            }
        }

        /// A string starting at the quote; whether it had an escape.
        fn string(&mut self) -> Option<bool> {
            /// Runs shorter than this are scanned byte by byte (memchr's set-up costs more).
            const SHORT: usize = 16;
            self.i += 1;
            let mut escaped = false;
            loop {
                let rest = self.b.get(self.i..)?;
                let head = rest.len().min(SHORT);
                let j = match rest[..head]
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                {
                    Some(j) => j,
                    None if head < SHORT => return None, // the body ends inside the string
                    None => {
                        let j = SHORT + memchr::memchr2(b'"', b'\\', &rest[SHORT..])?;
                        if has_control(&rest[SHORT..j]) {
                            return None;
                        }
                        j
                    }
                };
                if rest[j] < 0x20 {
                    return None;
                }
                self.i += j;
                if self.b[self.i] == b'"' {
                    self.i += 1;
                    return Some(escaped);
                }
                escaped = true;
                match *self.b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = self.b.get(self.i + 2..self.i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                }
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            self.i - start
        }

        fn number(&mut self) -> Option<()> {
            if self.peek() == Some(b'-') {
                self.i += 1;
            }
            match self.peek()? {
                b'0' => {
                    self.i += 1;
                    if let Some(b'0'..=b'9') = self.peek() {
                        return None;
                    }
                }
                b'1'..=b'9' => {
                    self.digits();
                }
                _ => return None,
            }
            if self.peek() == Some(b'.') {
                self.i += 1;
                if self.digits() == 0 {
                    return None;
                }
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.i += 1;
                if let Some(b'+' | b'-') = self.peek() {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return None;
                }
            }
            Some(())
        }

        fn literal(&mut self, lit: &[u8]) -> Option<()> {
            if self.b.get(self.i..)?.starts_with(lit) {
                self.i += lit.len();
                Some(())
            } else {
                None
            }
        }

        /// Any value; `None` also beyond the nesting depth that [`too_deep`] allows.
        fn value(&mut self) -> Option<()> {
            match self.peek()? {
                b'{' | b'[' => {
                    if self.depth == super::MAX_DEPTH {
                        return None;
                    }
                    self.depth += 1;
                    let r = self.container();
                    self.depth -= 1;
                    r
                }
                b'"' => self.string().map(|_| ()),
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                b'n' => self.literal(b"null"),
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }

        /// An object or an array (at its opening bracket).
        fn container(&mut self) -> Option<()> {
            match self.peek()? {
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b'}' {
                        self.i += 1;
                        return Some(());
                    }
                    loop {
                        if self.peek()? != b'"' {
                            return None;
                        }
                        self.string()?;
                        self.colon()?;
                        self.value()?;
                        if self.next_or_end(b'}')? {
                            return Some(());
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b']' {
                        self.i += 1;
                        return Some(());
                    }
                    loop {
                        self.value()?;
                        if self.next_or_end(b']')? {
                            return Some(());
                        }
                    }
                }
                _ => None,
            }
        }

        fn colon(&mut self) -> Option<()> {
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            Some(())
        }

        /// After a member: a comma (and the next member's start), or the closing bracket
        /// (`Some(true)`).
        fn next_or_end(&mut self, close: u8) -> Option<bool> {
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                    Some(false)
                }
                c if c == close => {
                    self.i += 1;
                    Some(true)
                }
                _ => None,
            }
        }
    }

    /// Walks a body that is one JSON object, calling `member(key, value range)` for each
    /// member; `None` (ask serde) if it is not one valid object within the nesting limit,
    /// if a key has an escape or a non-ASCII byte (serde decodes and checks keys), or if
    /// `member` says so.
    fn object_members(
        b: &[u8],
        mut member: impl FnMut(&[u8], usize, usize) -> Option<()>,
    ) -> Option<()> {
        let mut s = Scanner { b, i: 0, depth: 1 };
        s.ws();
        if s.peek()? != b'{' {
            return None;
        }
        s.i += 1;
        s.ws();
        if s.peek()? == b'}' {
            s.i += 1;
        } else {
            loop {
                if s.peek()? != b'"' {
                    return None;
                }
                let key_start = s.i + 1;
                if s.string()? {
                    return None;
                }
                let key = &b[key_start..s.i - 1];
                if !key.is_ascii() {
                    return None;
                }
                s.colon()?;
                let start = s.i;
                s.value()?;
                member(key, start, s.i)?;
                if s.next_or_end(b'}')? {
                    break;
                }
            }
        }
        s.ws();
        (s.i == b.len()).then_some(())
    }

    /// The peeked fields of a body that is one JSON object, or `None` (ask serde).
    pub(super) fn peek_fields(b: &[u8]) -> Option<Map<String, Value>> {
        let mut found: [Option<(usize, usize)>; PEEKED.len()] = [None; PEEKED.len()];
        object_members(b, |key, start, end| {
            if let Some(n) = PEEKED.iter().position(|p| p.as_bytes() == key) {
                if found[n].is_some() {
                    return None; // serde refuses repeated fields
                }
                found[n] = Some((start, end));
            }
            Some(())
        })?;
        let mut fields = Map::new();
        for (n, range) in found.iter().enumerate() {
            let Some((start, end)) = *range else { continue };
            let v = &b[start..end];
            if at_field_depth_limit(v) {
                return None;
            }
            match serde_json::from_slice::<Value>(v).ok()? {
                // An Option field: null is absent (but a gateway-only field is present).
                Value::Null if n < super::KEEP_NULL_FROM => {}
                v => {
                    fields.insert(PEEKED[n].to_string(), v);
                }
            }
        }
        Some(fields)
    }

    /// Whether a member value, parsed on its own, would get past the nesting limit that
    /// serde applies to it inside its object (one level less).
    fn at_field_depth_limit(v: &[u8]) -> bool {
        too_deep(v, super::MAX_DEPTH - 2)
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
    use proptest::prelude::*;
    use serde_json::json;

    /// `peek` before the skimmer: serde only.
    fn peek_reference(body: &[u8]) -> Result<RequestJson, GatewayError> {
        peek_serde(body, simdutf8::basic::from_utf8(body).is_ok())
    }

    fn same_as_reference(body: &[u8]) {
        let summary = |r: Result<RequestJson, GatewayError>| r.map(|r| (r.fields, r.complete));
        assert_eq!(
            summary(RequestJson::peek(body)),
            summary(peek_reference(body)),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn skim_reads_like_serde() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut bodies: Vec<String> = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5}"#,
            r#" {"model" : "m" , "metadata" : {"user_id" : "u"} } "#,
            r#"{"model":null,"stream":false,"user":"\u00e9\n","x":"\ud800"}"#,
            r#"{"model":"\ud800"}"#,
            r#"{"mod\u0065l":"m"}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"x":1,"x":2,"model":"m"}"#,
            r#"{"model":"m",}"#,
            r#"{"model":"m"} x"#,
            r#"{"model":01}"#,
            r#"{"max_tokens":1e400}"#,
            r#"{"max_tokens":-0.5E+3,"x":[1,-2,3.25e-1,true,false,null,{}]}"#,
            r#"{"x":"\q"}"#,
            r#"{"x":"\u12g4"}"#,
            r#"{"x":"a"#,
            "{\"x\":\"a\tb\"}",
            "{\"x\":\"a\u{1}b\"}",
            "{\"x\":\"é😀\u{7f}\"}",
            r#"[1,2,3,4,5,6,7,8]"#,
            r#"[1]"#,
            r#"{}"#,
            r#""#,
            r#"{"x":tru}"#,
            r#"{"x":nul}"#,
            r#"{"x":.5}"#,
            r#"{"x":1.}"#,
            r#"{"x":-}"#,
            r#"{"x" 1}"#,
            r#"{"x":1 "y":2}"#,
            r#"{,}"#,
            r#"{"x":[1,]}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [1, 100, 125, 126, 127, 128, 129] {
            bodies.push(format!(r#"{{"model":"m","metadata":{}}}"#, nested(n)));
            bodies.push(format!(r#"{{"model":"m","messages":{}}}"#, nested(n)));
        }
        for b in &bodies {
            same_as_reference(b.as_bytes());
        }
        same_as_reference(b"{\"model\":\"\xff\"}");
    }

    /// Wall time of `peek` against the serde-only reading (release build):
    /// `cargo test --release --lib peek_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn peek_timing() {
        let schema = json!({"type": "object", "properties": {"command": {"type": "string",
            "description": "The command to run"}, "timeout": {"type": "number"}},
            "required": ["command"], "additionalProperties": false});
        let tools: Vec<Value> = (0..40)
            .map(|i| json!({"name": format!("Tool{i}"), "description": "Runs a tool.", "input_schema": schema}))
            .collect();
        let turns: Vec<Value> = (0..60)
            .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": [{"type": "text", "text": format!("turn {i}: fix the build, then run the tests again")},
                    {"type": "tool_use", "id": format!("toolu_{i}"), "name": "Bash", "input": {"command": "cargo test"}}]}))
            .collect();
        let bodies = [
            ("short strings", json!({"model": "claude-x", "max_tokens": 100, "stream": true, "messages": turns, "tools": tools}).to_string()),
            ("one long string", json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x".repeat(80_000)}]}).to_string()),
            ("chat 2 KB", json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x".repeat(2_000)}]}).to_string()),
        ];
        for (name, body) in &bodies {
            let b = body.as_bytes();
            let n = (4_000_000 / b.len()).max(50);
            let time = |f: &dyn Fn(&[u8]) -> Result<RequestJson, GatewayError>| {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    std::hint::black_box(f(std::hint::black_box(b)).unwrap());
                }
                t.elapsed() / n as u32
            };
            let new = time(&|b| RequestJson::peek(b));
            let old = time(&peek_reference);
            println!("{name} ({} bytes): skim {new:?}, serde {old:?}", b.len());
        }
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"model\"",
            "\"stream\"",
            "\"metadata\"",
            "\"user\"",
            "\"max_tokens\"",
            "\"guardrails\"",
            "\"x\"",
            "\"mod\\u0065l\"",
            "\"a\\nb\"",
            "\"\\q\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "\"é\"",
            "\"\t\"",
            "1",
            "-0",
            "01",
            "1.5e3",
            "1.",
            "1e400",
            "true",
            "false",
            "null",
            "nul",
            "\"",
            "\\",
        ])
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "model",
                            "stream",
                            "metadata",
                            "user",
                            "safety_identifier",
                            "user_id",
                            "guardrails",
                            "session_label",
                            "x"
                        ]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn skim_matches_serde_on_token_soup(tokens in prop::collection::vec(token(), 0..24)) {
            same_as_reference(format!("{{{}}}", tokens.concat()).as_bytes());
            same_as_reference(tokens.concat().as_bytes());
        }

        #[test]
        fn skim_matches_serde_on_values(
            v in value(),
            model in value(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let body = json!({"model": model, "messages": [v.clone()], "metadata": v}).to_string();
            same_as_reference(body.as_bytes());
            // and with one byte changed
            let mut broken = body.into_bytes();
            let i = cut.index(broken.len());
            broken[i] = byte;
            same_as_reference(&broken);
        }
    }

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
    fn gateway_only_fields_are_seen_null_included() {
        let body = br#"{"model":"m","guardrails":[{"profile":"p"}],"session_label":null,"x":1}"#;
        same_as_reference(body);
        let r = RequestJson::peek(body).unwrap();
        assert_eq!(r.fields()["guardrails"][0]["profile"], "p");
        assert_eq!(r.fields()["session_label"], Value::Null);
        assert!(!r.fields().contains_key("x"));
        same_as_reference(br#"{"model":"m","mcp_servers":null,"mcp_servers":[]}"#);
        assert_eq!(PEEKED[KEEP_NULL_FROM..], crate::guardrails::GATEWAY_FIELDS);
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
