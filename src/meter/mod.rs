//! Token metering from what the upstream sends: usage read from JSON bodies and from SSE
//! streams as they pass (never by buffering a stream). Canonical numbers follow
//! wire-formats §4.1: `input` excludes cache reads and writes, `reasoning` is part of `output`.

use serde_json::Value;

pub mod count;
pub mod price;
pub mod record;

use crate::translate::sse::{SseEvent, SseParser};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens that were neither read from nor written to a cache.
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    /// Reasoning tokens (already counted in `output`).
    pub reasoning: u64,
}

impl Usage {
    pub fn prompt_total(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }

    pub fn total(&self) -> u64 {
        self.prompt_total() + self.output
    }
}

/// The response dialect being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAiChat,
    Anthropic,
    Responses,
    /// Embeddings and moderations: usage in the JSON body, if at all.
    OpenAiOther,
}

/// Where usage numbers are read from: a parsed JSON value, or the numbers of a `usage`
/// object picked out while it was parsed ([`UsageNumbers`]). `num(path)` is the unsigned
/// integer at that path, as `Value::as_u64` would read it.
pub trait UsageFields {
    fn num(&self, path: &[&str]) -> Option<u64>;
}

impl UsageFields for Value {
    fn num(&self, path: &[&str]) -> Option<u64> {
        let mut cur = self;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_u64()
    }
}

/// OpenAI `usage` object (chat, embeddings): prompt counts include cached tokens.
fn from_openai<F: UsageFields + ?Sized>(usage: &F) -> Option<Usage> {
    let prompt = usage.num(&["prompt_tokens"])?;
    let cached = usage
        .num(&["prompt_tokens_details", "cached_tokens"])
        .or_else(|| usage.num(&["prompt_cache_hit_tokens"])) // DeepSeek
        .unwrap_or(0);
    let write = usage
        .num(&["prompt_tokens_details", "cache_write_tokens"])
        .unwrap_or(0);
    Some(Usage {
        input: prompt.saturating_sub(cached + write),
        cache_read: cached,
        cache_write: write,
        output: usage.num(&["completion_tokens"]).unwrap_or(0),
        reasoning: usage
            .num(&["completion_tokens_details", "reasoning_tokens"])
            .unwrap_or(0),
    })
}

/// Responses `usage`: like OpenAI's with other names.
fn from_responses<F: UsageFields + ?Sized>(usage: &F) -> Option<Usage> {
    let input = usage.num(&["input_tokens"])?;
    let cached = usage
        .num(&["input_tokens_details", "cached_tokens"])
        .unwrap_or(0);
    Some(Usage {
        input: input.saturating_sub(cached),
        cache_read: cached,
        cache_write: 0,
        output: usage.num(&["output_tokens"]).unwrap_or(0),
        reasoning: usage
            .num(&["output_tokens_details", "reasoning_tokens"])
            .unwrap_or(0),
    })
}

/// Anthropic `usage`: fields present overwrite `base` (message_delta carries cumulative values).
fn merge_anthropic<F: UsageFields + ?Sized>(base: &mut Usage, usage: &F) -> bool {
    let mut any = false;
    let mut set = |dst: &mut u64, key: &str| {
        if let Some(n) = usage.num(&[key]) {
            *dst = n;
            any = true;
        }
    };
    set(&mut base.input, "input_tokens");
    set(&mut base.cache_read, "cache_read_input_tokens");
    set(&mut base.cache_write, "cache_creation_input_tokens");
    set(&mut base.output, "output_tokens");
    any
}

/// Usage from a complete (non-streamed) response body.
pub fn usage_from_body(wire: Wire, body: &Value) -> Option<Usage> {
    usage_from_fields(wire, body.get("usage")?)
}

/// Usage from a `usage` object (a parsed value or [`UsageNumbers`]).
pub fn usage_from_fields<F: UsageFields + ?Sized>(wire: Wire, usage: &F) -> Option<Usage> {
    match wire {
        Wire::OpenAiChat | Wire::OpenAiOther => from_openai(usage),
        Wire::Responses => from_responses(usage),
        Wire::Anthropic => {
            let mut out = Usage::default();
            merge_anthropic(&mut out, usage).then_some(out)
        }
    }
}

/// Top-level numbers of a `usage` object that any dialect reads.
const TOP_FIELDS: [&str; 7] = [
    "prompt_tokens",
    "completion_tokens",
    "prompt_cache_hit_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
];
/// Its nested detail objects, and the numbers read inside them.
const DETAIL_FIELDS: [&str; 4] = [
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
];
const DETAIL_NUMBERS: [&str; 3] = ["cached_tokens", "cache_write_tokens", "reasoning_tokens"];

/// The numbers of a `usage` object that metering reads, picked out while the JSON is parsed
/// (nothing else of it is built). It reads like the parsed value would: the last of duplicate
/// keys wins, anything that is not an unsigned integer is absent, and a `usage` (or detail)
/// that is not an object has no numbers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UsageNumbers {
    top: [Option<u64>; TOP_FIELDS.len()],
    details: [[Option<u64>; DETAIL_NUMBERS.len()]; DETAIL_FIELDS.len()],
}

impl UsageFields for UsageNumbers {
    fn num(&self, path: &[&str]) -> Option<u64> {
        let found = match path {
            [k] => TOP_FIELDS.iter().position(|f| f == k).map(|i| self.top[i]),
            [d, k] => DETAIL_FIELDS.iter().position(|f| f == d).and_then(|i| {
                DETAIL_NUMBERS
                    .iter()
                    .position(|f| f == k)
                    .map(|j| self.details[i][j])
            }),
            _ => None,
        };
        debug_assert!(found.is_some(), "usage path {path:?} is not collected");
        found.flatten()
    }
}

mod numbers {
    use super::{UsageNumbers, DETAIL_FIELDS, DETAIL_NUMBERS, TOP_FIELDS};
    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// Which field a key names, found without allocating the key.
    enum Key {
        Top(usize),
        Detail(usize),
        Number(usize),
        Other,
    }

    /// Reads a key of a `usage` object (`in_detail == false`) or of a detail object.
    struct KeySeed {
        in_detail: bool,
    }

    impl<'de> de::DeserializeSeed<'de> for KeySeed {
        type Value = Key;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeySeed {
        type Value = Key;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object key")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
            let pos = |names: &[&str]| names.iter().position(|n| *n == s);
            Ok(if self.in_detail {
                pos(&DETAIL_NUMBERS).map_or(Key::Other, Key::Number)
            } else if let Some(i) = pos(&TOP_FIELDS) {
                Key::Top(i)
            } else {
                pos(&DETAIL_FIELDS).map_or(Key::Other, Key::Detail)
            })
        }
    }

    /// Visitor methods for the JSON values a reader does not use: each is skipped and reads
    /// as `$empty`.
    macro_rules! skip_other_values {
        ($empty:expr) => {
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($empty)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok($empty)
            }
        };
    }

    /// Any JSON value, kept only if it is an unsigned integer (`Value::as_u64`).
    struct Lenient(Option<u64>);

    impl<'de> Deserialize<'de> for Lenient {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lenient, D::Error> {
            d.deserialize_any(LenientVisitor)
        }
    }

    struct LenientVisitor;

    impl<'de> Visitor<'de> for LenientVisitor {
        type Value = Lenient;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Lenient, E> {
            Ok(Lenient(Some(n)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Lenient, A::Error> {
            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Lenient(None))
        }
        skip_other_values!(Lenient(None));
    }

    /// A detail object's numbers (none if it is not an object).
    struct Details([Option<u64>; DETAIL_NUMBERS.len()]);

    impl<'de> Deserialize<'de> for Details {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Details, D::Error> {
            d.deserialize_any(DetailsVisitor)
        }
    }

    struct DetailsVisitor;

    impl<'de> Visitor<'de> for DetailsVisitor {
        type Value = Details;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Details, E> {
            Ok(Details(Default::default()))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Details, A::Error> {
            let mut out = Details(Default::default());
            while let Some(k) = m.next_key_seed(KeySeed { in_detail: true })? {
                match k {
                    Key::Number(j) => out.0[j] = m.next_value::<Lenient>()?.0,
                    _ => {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
        skip_other_values!(Details(Default::default()));
    }

    impl<'de> Deserialize<'de> for UsageNumbers {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UsageNumbers, D::Error> {
            d.deserialize_any(NumbersVisitor)
        }
    }

    struct NumbersVisitor;

    impl<'de> Visitor<'de> for NumbersVisitor {
        type Value = UsageNumbers;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<UsageNumbers, E> {
            Ok(UsageNumbers::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UsageNumbers, A::Error> {
            let mut out = UsageNumbers::default();
            while let Some(k) = m.next_key_seed(KeySeed { in_detail: false })? {
                match k {
                    Key::Top(i) => out.top[i] = m.next_value::<Lenient>()?.0,
                    // A repeated detail object replaces the earlier one whole.
                    Key::Detail(i) => out.details[i] = m.next_value::<Details>()?.0,
                    _ => {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
        skip_other_values!(UsageNumbers::default());
    }
}

/// Watches a stream go by and keeps the usage it reports and whether it ended properly.
#[derive(Debug)]
pub struct StreamMeter {
    wire: Wire,
    parser: SseParser,
    pub usage: Usage,
    pub saw_usage: bool,
    /// The dialect's terminal event was seen (`[DONE]`, `message_stop`, `response.completed`).
    pub completed: bool,
    /// An in-stream error event was seen.
    pub errored: bool,
    pub events: u64,
}

impl StreamMeter {
    pub fn new(wire: Wire) -> Self {
        StreamMeter {
            wire,
            parser: SseParser::new(),
            usage: Usage::default(),
            saw_usage: false,
            completed: false,
            errored: false,
            events: 0,
        }
    }

    pub fn observe(&mut self, bytes: &[u8]) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(bytes, &mut |ev| self.on_event(ev));
        self.parser = parser;
    }

    pub fn finish(&mut self) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.on_event(ev));
        self.parser = parser;
    }

    fn on_event(&mut self, ev: SseEvent) {
        self.events += 1;
        let name = ev.event.as_deref();
        if ev.data == "[DONE]" {
            self.completed = true;
            return;
        }
        if name == Some("ping") {
            return;
        }
        // Only parse what can carry usage or end the stream: most events are text deltas.
        let interesting = ev.data.contains("usage")
            || ev.data.contains("\"error\"")
            || matches!(name, Some("message_stop") | Some("error"))
            || ev.data.contains("response.completed")
            || ev.data.contains("response.failed")
            || ev.data.contains("response.incomplete");
        if !interesting {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
        match self.wire {
            Wire::OpenAiChat | Wire::OpenAiOther => {
                if v.get("error").is_some() {
                    self.errored = true;
                }
                if let Some(us) = v
                    .get("usage")
                    .filter(|u| !u.is_null())
                    .and_then(from_openai)
                {
                    self.usage = us;
                    self.saw_usage = true;
                }
            }
            Wire::Anthropic => match ty {
                "message_start" => {
                    if let Some(us) = v.pointer("/message/usage") {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_delta" => {
                    if let Some(us) = v.get("usage") {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_stop" => self.completed = true,
                "error" => self.errored = true,
                _ => {}
            },
            Wire::Responses => match ty {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(us) = v.pointer("/response/usage").and_then(from_responses) {
                        self.usage = us;
                        self.saw_usage = true;
                    }
                    self.completed = ty == "response.completed";
                    self.errored |= ty == "response.failed";
                }
                "error" => self.errored = true,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_stream_usage_chunk() {
        let mut m = StreamMeter::new(Wire::OpenAiChat);
        m.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\ndata: [DONE]\n\n");
        assert!(m.completed && m.saw_usage);
        assert_eq!(
            m.usage,
            Usage {
                input: 6,
                cache_read: 4,
                cache_write: 0,
                output: 3,
                reasoning: 0
            }
        );
    }

    #[test]
    fn anthropic_stream_usage_merges_start_and_delta() {
        let mut m = StreamMeter::new(Wire::Anthropic);
        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for b in s.as_bytes().chunks(7) {
            m.observe(b);
        }
        assert!(m.completed);
        assert_eq!(
            m.usage,
            Usage {
                input: 20,
                cache_read: 5,
                cache_write: 2,
                output: 9,
                reasoning: 0
            }
        );
        assert_eq!(m.usage.total(), 36);
    }

    #[test]
    fn truncated_stream_is_not_completed() {
        let mut m = StreamMeter::new(Wire::Anthropic);
        m.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20}}}\n\n");
        m.finish();
        assert!(!m.completed);
        assert_eq!(m.usage.input, 20);
    }

    #[test]
    fn usage_numbers_read_like_the_parsed_value() {
        let usages = [
            r#"{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":1},"completion_tokens_details":{"reasoning_tokens":2}}"#,
            r#"{"prompt_tokens":10,"prompt_cache_hit_tokens":6,"completion_tokens":1}"#,
            r#"{"input_tokens":7,"output_tokens":2,"input_tokens_details":{"cached_tokens":3},"output_tokens_details":{"reasoning_tokens":1}}"#,
            r#"{"input_tokens":20,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":9}"#,
            r#"{"output_tokens":9}"#,
            r#"{"prompt_tokens":-1,"completion_tokens":2.5,"input_tokens":"7","output_tokens":null}"#,
            r#"{"prompt_tokens":{"a":1},"completion_tokens":[1,2],"prompt_tokens_details":5}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2,"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":{"x":[{"y":"z"}]}}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":"x","input_tokens":3,"input_tokens":4}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551616,"input_tokens":1e2}"#,
            r#"{"pro\u006dpt_tokens":5,"completion_tokens":1,"other":{"prompt_tokens":99}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"5"#,
            r#""usage""#,
            r#"true"#,
        ];
        for text in usages {
            let v: Value = serde_json::from_str(text).unwrap();
            let n: UsageNumbers = serde_json::from_str(text).unwrap();
            for wire in [
                Wire::OpenAiChat,
                Wire::OpenAiOther,
                Wire::Responses,
                Wire::Anthropic,
            ] {
                assert_eq!(
                    usage_from_fields(wire, &n),
                    usage_from_fields(wire, &v),
                    "{wire:?} {text}"
                );
            }
        }
        assert!(serde_json::from_str::<UsageNumbers>(r#"{"prompt_tokens":1"#).is_err());
    }

    #[test]
    fn bodies() {
        let b = json!({"usage": {"prompt_tokens": 7, "completion_tokens": 2}});
        assert_eq!(usage_from_body(Wire::OpenAiChat, &b).unwrap().total(), 9);
        let b =
            json!({"usage": {"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 1}});
        assert_eq!(usage_from_body(Wire::Anthropic, &b).unwrap().total(), 10);
        let b = json!({"usage": {"input_tokens": 7, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 3}}});
        assert_eq!(
            usage_from_body(Wire::Responses, &b).unwrap(),
            Usage {
                input: 4,
                cache_read: 3,
                cache_write: 0,
                output: 2,
                reasoning: 0
            }
        );
    }
}
