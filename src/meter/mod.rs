//! Token metering from what the upstream sends: usage read from JSON bodies and from SSE
//! streams as they pass (never by buffering a stream). Canonical numbers (docs/translation.md,
//! "Shared rules"): `input` excludes cache reads and writes, `reasoning` is part of `output`.

use serde_json::Value;

pub mod count;
pub mod price;

use crate::records::UsageRecord;
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

    /// Writes these counts into a usage record's token fields.
    pub fn record_into(&self, r: &mut UsageRecord) {
        r.prompt_tokens = self.prompt_total();
        r.completion_tokens = self.output;
        r.cached_tokens = self.cache_read;
        r.cache_write_tokens = self.cache_write;
        r.reasoning_tokens = self.reasoning;
        r.total_tokens = self.total();
    }

    /// The counts a usage record holds (the inverse of [`Usage::record_into`]).
    pub fn of_record(r: &UsageRecord) -> Usage {
        Usage {
            input: r
                .prompt_tokens
                .saturating_sub(r.cached_tokens + r.cache_write_tokens),
            cache_read: r.cached_tokens,
            cache_write: r.cache_write_tokens,
            output: r.completion_tokens,
            reasoning: r.reasoning_tokens,
        }
    }
}

pub use crate::translate::Format;

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

/// Gemini `usageMetadata`: input excludes cached tokens and includes tool-use prompt tokens;
/// output = candidates + thoughts; reasoning = thoughts.
fn from_gemini<F: UsageFields + ?Sized>(m: &F) -> Option<Usage> {
    let prompt = m.num(&["promptTokenCount"]);
    let candidates = m.num(&["candidatesTokenCount"]);
    let thoughts = m.num(&["thoughtsTokenCount"]);
    let tool = m.num(&["toolUsePromptTokenCount"]);
    if prompt.is_none() && candidates.is_none() && thoughts.is_none() && tool.is_none() {
        return None;
    }
    let cached = m.num(&["cachedContentTokenCount"]).unwrap_or(0);
    let thoughts = thoughts.unwrap_or(0);
    Some(Usage {
        input: prompt.unwrap_or(0).saturating_sub(cached) + tool.unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
        output: candidates.unwrap_or(0) + thoughts,
        reasoning: thoughts,
    })
}

/// Usage from a complete (non-streamed) answer body, or a stream chunk, in `format`
/// (embeddings and moderations answer in the Chat format's `usage`).
pub fn usage_from_body(format: Format, body: &Value) -> Option<Usage> {
    match format {
        Format::Gemini => from_gemini(body.get("usageMetadata")?),
        _ => usage_from_fields(format, body.get("usage")?),
    }
}

/// Usage from the usage object of an answer in `format`: `usage`, or Gemini's
/// `usageMetadata`. [`UsageNumbers`] holds the numbers of a `usage` object only: Gemini
/// answers, which are never passed through, are read from a parsed value.
pub fn usage_from_fields<F: UsageFields + ?Sized>(format: Format, usage: &F) -> Option<Usage> {
    match format {
        Format::Chat => from_openai(usage),
        Format::Responses => from_responses(usage),
        Format::Anthropic => {
            let mut out = Usage::default();
            merge_anthropic(&mut out, usage).then_some(out)
        }
        Format::Gemini => from_gemini(usage),
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
    use super::{EventFields, Skip};
    use super::{UsageNumbers, DETAIL_NUMBERS};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
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
            // A match (dispatch on length, then compare) is cheaper than scanning the name
            // lists; `key_positions_follow_the_name_lists` checks it against them.
            Ok(if self.in_detail {
                match s {
                    "cached_tokens" => Key::Number(0),
                    "cache_write_tokens" => Key::Number(1),
                    "reasoning_tokens" => Key::Number(2),
                    _ => Key::Other,
                }
            } else {
                match s {
                    "prompt_tokens" => Key::Top(0),
                    "completion_tokens" => Key::Top(1),
                    "prompt_cache_hit_tokens" => Key::Top(2),
                    "input_tokens" => Key::Top(3),
                    "output_tokens" => Key::Top(4),
                    "cache_read_input_tokens" => Key::Top(5),
                    "cache_creation_input_tokens" => Key::Top(6),
                    "prompt_tokens_details" => Key::Detail(0),
                    "completion_tokens_details" => Key::Detail(1),
                    "input_tokens_details" => Key::Detail(2),
                    "output_tokens_details" => Key::Detail(3),
                    _ => Key::Other,
                }
            })
        }
    }

    #[test]
    fn key_positions_follow_the_name_lists() {
        use super::{DETAIL_FIELDS, TOP_FIELDS};
        use serde::de::Visitor as _;
        let key = |in_detail: bool, s: &str| {
            KeySeed { in_detail }
                .visit_str::<serde_json::Error>(s)
                .unwrap()
        };
        for (i, n) in TOP_FIELDS.iter().enumerate() {
            assert!(matches!(key(false, n), Key::Top(j) if j == i), "{n}");
            assert!(matches!(key(true, n), Key::Other), "{n}");
        }
        for (i, n) in DETAIL_FIELDS.iter().enumerate() {
            assert!(matches!(key(false, n), Key::Detail(j) if j == i), "{n}");
        }
        for (i, n) in DETAIL_NUMBERS.iter().enumerate() {
            assert!(matches!(key(true, n), Key::Number(j) if j == i), "{n}");
            assert!(matches!(key(false, n), Key::Other), "{n}");
        }
        assert!(matches!(key(false, "usage"), Key::Other));
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
                while seq.next_element::<Skip>()?.is_some() {}
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
            while m.next_entry::<Skip, Skip>()?.is_some() {}
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
                        m.next_value::<Skip>()?;
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
                        m.next_value::<Skip>()?;
                    }
                }
            }
            Ok(out)
        }
        skip_other_values!(UsageNumbers::default());
    }

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
            d.deserialize_any(SkipVisitor)
        }
    }

    struct SkipVisitor;

    impl<'de> Visitor<'de> for SkipVisitor {
        type Value = Skip;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
            Ok(Skip)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Skip, A::Error> {
            while m.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(Skip)
        }
        skip_other_values!(Skip);
    }

    /// Which top-level field of a stream event a key names.
    enum EventKey {
        Type,
        Error,
        Usage,
        Message,
        Response,
        Other,
    }

    struct EventKeySeed;

    impl<'de> de::DeserializeSeed<'de> for EventKeySeed {
        type Value = EventKey;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventKey, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for EventKeySeed {
        type Value = EventKey;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object key")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<EventKey, E> {
            Ok(match s {
                "type" => EventKey::Type,
                "error" => EventKey::Error,
                "usage" => EventKey::Usage,
                "message" => EventKey::Message,
                "response" => EventKey::Response,
                _ => EventKey::Other,
            })
        }
    }

    /// A string value (anything else reads as none).
    struct LenientString(Option<String>);

    impl<'de> Deserialize<'de> for LenientString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LenientString, D::Error> {
            d.deserialize_any(LenientStringVisitor)
        }
    }

    struct LenientStringVisitor;

    impl<'de> Visitor<'de> for LenientStringVisitor {
        type Value = LenientString;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<LenientString, E> {
            Ok(LenientString(Some(s.to_string())))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<LenientString, A::Error> {
            while m.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(LenientString(None))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_unit<E: de::Error>(self) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_none<E: de::Error>(self) -> Result<LenientString, E> {
            Ok(LenientString(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientString, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(LenientString(None))
        }
    }

    /// A `usage` value: its numbers unless it is null (`None`).
    struct OptUsage(Option<UsageNumbers>);

    impl<'de> Deserialize<'de> for OptUsage {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OptUsage, D::Error> {
            Option::<UsageNumbers>::deserialize(d).map(OptUsage)
        }
    }

    /// An object's `usage` (`message.usage`, `response.usage`); none if it is not an object
    /// or has no (or a null) `usage`.
    struct InnerUsage(Option<UsageNumbers>);

    impl<'de> Deserialize<'de> for InnerUsage {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InnerUsage, D::Error> {
            d.deserialize_any(InnerUsageVisitor)
        }
    }

    struct InnerUsageVisitor;

    impl<'de> Visitor<'de> for InnerUsageVisitor {
        type Value = InnerUsage;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<InnerUsage, E> {
            Ok(InnerUsage(None))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<InnerUsage, A::Error> {
            let mut usage = None;
            while let Some(k) = m.next_key_seed(EventKeySeed)? {
                match k {
                    EventKey::Usage => usage = m.next_value::<OptUsage>()?.0,
                    _ => {
                        m.next_value::<Skip>()?;
                    }
                }
            }
            Ok(InnerUsage(usage))
        }
        skip_other_values!(InnerUsage(None));
    }

    impl<'de> Deserialize<'de> for EventFields {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventFields, D::Error> {
            d.deserialize_any(EventVisitor)
        }
    }

    struct EventVisitor;

    impl<'de> Visitor<'de> for EventVisitor {
        type Value = EventFields;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<EventFields, E> {
            Ok(EventFields::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<EventFields, A::Error> {
            // As a parsed object reads: the last of duplicate keys wins.
            let mut out = EventFields::default();
            while let Some(k) = m.next_key_seed(EventKeySeed)? {
                match k {
                    EventKey::Type => out.ty = m.next_value::<LenientString>()?.0,
                    EventKey::Error => {
                        m.next_value::<Skip>()?;
                        out.has_error = true;
                    }
                    EventKey::Usage => out.usage = m.next_value::<OptUsage>()?.0,
                    EventKey::Message => out.message_usage = m.next_value::<InnerUsage>()?.0,
                    EventKey::Response => out.response_usage = m.next_value::<InnerUsage>()?.0,
                    EventKey::Other => {
                        m.next_value::<Skip>()?;
                    }
                }
            }
            Ok(out)
        }
        skip_other_values!(EventFields::default());
    }
}

/// Any JSON value, skipped without building it, with the same nesting limit as a parse into
/// `Value` (serde's `IgnoredAny` has none).
struct Skip;

/// What metering reads of a stream event, picked out while it is parsed (nothing else is
/// built); read like the parsed value would be (last duplicate wins).
#[derive(Debug, Default)]
struct EventFields {
    /// `type`, if it is a string.
    ty: Option<String>,
    /// An `error` key is present (whatever its value).
    has_error: bool,
    /// `usage`, unless absent or null.
    usage: Option<UsageNumbers>,
    /// `message.usage` (Anthropic `message_start`), unless absent or null.
    message_usage: Option<UsageNumbers>,
    /// `response.usage` (Responses terminal events), unless absent or null.
    response_usage: Option<UsageNumbers>,
}

/// Whether every mention of `usage` in an event is a key `"usage"` with the value `null`,
/// written exactly `"usage":null`, and no `\u` escape could spell a key another way. Then
/// the event has no top-level usage other than null: a top-level `usage` key is written
/// `"usage"` followed by its value, and inside a string the quote before it would be
/// escaped (which makes it part of another key, or no key at all).
/// Substring searches run on every stream event: SIMD finders built once (`str::contains`
/// builds a two-way searcher per call).
pub(crate) mod finders {
    use memchr::memmem::Finder;
    use once_cell::sync::Lazy;
    pub static USAGE: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("usage"));
    pub static QUOTED_USAGE: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("\"usage\""));
    pub static ERROR: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("\"error\""));
    pub static MESSAGE: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("\"message_"));
    pub static NO_CHOICES: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("\"choices\":[]"));
    pub static ESCAPE_U: Lazy<Finder<'static>> = Lazy::new(|| Finder::new("\\u"));
}

pub(crate) fn has(f: &memchr::memmem::Finder<'static>, d: &str) -> bool {
    f.find(d.as_bytes()).is_some()
}

fn null_usage_only(data: &str) -> bool {
    let b = data.as_bytes();
    !has(&finders::ESCAPE_U, data)
        && finders::USAGE
            .find_iter(b)
            .all(|i| i > 0 && b[i - 1] == b'"' && b[i + 5..].starts_with(b"\":null"))
}

/// Watches a stream go by and keeps the usage it reports and whether it ended properly.
#[derive(Debug)]
pub struct StreamMeter {
    format: Format,
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
    pub fn new(format: Format) -> Self {
        StreamMeter {
            format,
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
        parser.feed(bytes, &mut |ev| self.on_event(&ev));
        self.parser = parser;
    }

    pub fn finish(&mut self) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.on_event(&ev));
        self.parser = parser;
    }

    /// One event of the stream (for a caller that parses the stream itself).
    pub fn on_event(&mut self, ev: &SseEvent) {
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
        // OpenAI chunks of a stream with include_usage all say `"usage":null`; for these
        // formats only a top-level error key or a non-null usage matter, so such a chunk is
        // not parsed either (see `null_usage_only`).
        let d = ev.data.as_str();
        let interesting = match self.format {
            Format::Chat => {
                (has(&finders::USAGE, d) && !null_usage_only(d)) || has(&finders::ERROR, d)
            }
            // Only message_start, message_delta, message_stop and error events count; their
            // type is in the data (`"type":"message_...`) or the event name.
            Format::Anthropic => {
                matches!(
                    name,
                    Some("message_start" | "message_delta" | "message_stop" | "error")
                ) || has(&finders::MESSAGE, d)
                    || has(&finders::ERROR, d)
            }
            Format::Responses => {
                name == Some("error")
                    || d.contains("response.completed")
                    || d.contains("response.failed")
                    || d.contains("response.incomplete")
                    || has(&finders::ERROR, d)
            }
            // No client speaks Gemini, so its streams are never passed through: read simply.
            Format::Gemini => {
                self.on_gemini_chunk(d);
                return;
            }
        };
        if !interesting {
            return;
        }
        // Only the fields read below are picked out (most events carry text that is never
        // needed here); a null usage reads as absent, which merges nothing either way.
        let Ok(v) = serde_json::from_str::<EventFields>(&ev.data) else {
            return;
        };
        let ty = v.ty.as_deref().or(name).unwrap_or("");
        match self.format {
            Format::Chat => {
                if v.has_error {
                    self.errored = true;
                }
                if let Some(us) = v.usage.as_ref().and_then(from_openai) {
                    self.usage = us;
                    self.saw_usage = true;
                }
            }
            Format::Anthropic => match ty {
                "message_start" => {
                    if let Some(us) = v.message_usage.as_ref() {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_delta" => {
                    if let Some(us) = v.usage.as_ref() {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_stop" => self.completed = true,
                "error" => self.errored = true,
                _ => {}
            },
            Format::Responses => match ty {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(us) = v.response_usage.as_ref().and_then(from_responses) {
                        self.usage = us;
                        self.saw_usage = true;
                    }
                    self.completed = ty == "response.completed";
                    self.errored |= ty == "response.failed";
                }
                "error" => self.errored = true,
                _ => {}
            },
            Format::Gemini => {}
        }
    }

    /// A Gemini chunk: cumulative usage (the last wins), an error, and the finish reason,
    /// after which the stream is whole (Gemini has no terminator).
    fn on_gemini_chunk(&mut self, d: &str) {
        let Ok(v) = serde_json::from_str::<Value>(d) else {
            return;
        };
        if v.get("error").is_some_and(|e| e.is_object()) {
            self.errored = true;
        }
        if let Some(us) = usage_from_body(Format::Gemini, &v) {
            self.usage = us;
            self.saw_usage = true;
        }
        if v.pointer("/candidates/0/finishReason").is_some() {
            self.completed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_stream_usage_chunk() {
        let mut m = StreamMeter::new(Format::Chat);
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
        let mut m = StreamMeter::new(Format::Anthropic);
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
        let mut m = StreamMeter::new(Format::Anthropic);
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
            for wire in [Format::Chat, Format::Responses, Format::Anthropic] {
                assert_eq!(
                    usage_from_fields(wire, &n),
                    usage_from_fields(wire, &v),
                    "{wire:?} {text}"
                );
            }
        }
        assert!(serde_json::from_str::<UsageNumbers>(r#"{"prompt_tokens":1"#).is_err());
        // The nesting limit of a parse into Value applies to skipped fields too.
        for depth in [100, 126, 127, 128, 200] {
            let text = format!(
                r#"{{"prompt_tokens":1,"x":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                serde_json::from_str::<UsageNumbers>(&text).is_ok(),
                serde_json::from_str::<Value>(&text).is_ok(),
                "depth {depth}"
            );
        }
    }

    /// The event reading before `EventFields`: a parse into `Value`.
    fn on_event_reference(m: &mut StreamMeter, name: Option<&str>, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
        match m.format {
            Format::Chat => {
                if v.get("error").is_some() {
                    m.errored = true;
                }
                if let Some(us) = v
                    .get("usage")
                    .filter(|u| !u.is_null())
                    .and_then(from_openai)
                {
                    m.usage = us;
                    m.saw_usage = true;
                }
            }
            Format::Anthropic => match ty {
                "message_start" => {
                    if let Some(us) = v.pointer("/message/usage") {
                        m.saw_usage |= merge_anthropic(&mut m.usage, us);
                    }
                }
                "message_delta" => {
                    if let Some(us) = v.get("usage") {
                        m.saw_usage |= merge_anthropic(&mut m.usage, us);
                    }
                }
                "message_stop" => m.completed = true,
                "error" => m.errored = true,
                _ => {}
            },
            Format::Responses => match ty {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(us) = v.pointer("/response/usage").and_then(from_responses) {
                        m.usage = us;
                        m.saw_usage = true;
                    }
                    m.completed = ty == "response.completed";
                    m.errored |= ty == "response.failed";
                }
                "error" => m.errored = true,
                _ => {}
            },
            Format::Gemini => unreachable!("Gemini streams are not read through EventFields"),
        }
    }

    #[test]
    fn stream_events_read_like_the_parsed_value() {
        let deep = format!(
            r#"{{"usage":{{"prompt_tokens":1}},"x":{}{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        let events: Vec<(Option<&str>, String)> = [
            (None, r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#),
            (None, r#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#),
            (None, r#"{"choices":[{"delta":{"content":"\"usage\":null"}}],"usage":null}"#),
            (None, r#"{"x\"usage":null,"usage":{"prompt_tokens":4}}"#),
            (None, r#"{"x\"usage":null}"#),
            (None, r#"{"\u0065rror":1,"usage":null}"#),
            (None, r#"{"us\u0061ge":{"prompt_tokens":6},"usage":null}"#),
            (None, r#"{"usage":null,"us\u0061ge":{"prompt_tokens":6}}"#),
            (None, r#"{"usage" :null}"#),
            (None, r#"{"usage":nullx}"#),
            (None, r#"{"usage":null,"usage":{"prompt_tokens":3}}"#),
            (None, r#"{"prompt_usage":null,"usage":null}"#),
            (None, r#"usage"#),
            (None, r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#),
            (None, r#"{"usage":{"prompt_tokens":10},"usage":null}"#),
            (None, r#"{"usage":null,"usage":{"prompt_tokens":2,"completion_tokens":1}}"#),
            (None, r#"{"error":null}"#),
            (None, r#"{"error":{"message":"boom"},"usage":5}"#),
            (None, r#"[{"usage":{"prompt_tokens":1}}]"#),
            (None, r#""usage""#),
            (None, r#"{"usage":{"prompt_tokens":1}"#),
            (None, r#"{"usage":{"prompt_tokens":1}} trailing"#),
            (Some("message_start"), r#"{"type":"message_start","message":{"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}"#),
            (Some("message_start"), r#"{"message":{"usage":{"input_tokens":3}}}"#),
            (Some("message_start"), r#"{"type":"message_start","message":[{"usage":{"input_tokens":3}}]}"#),
            (Some("message_start"), r#"{"type":"message_start","message":{"usage":null}}"#),
            (Some("message_start"), r#"{"type":"message_start","message":{"usage":{"input_tokens":3}},"message":{}}"#),
            (Some("message_delta"), r#"{"type":"message_delta","usage":{"output_tokens":9}}"#),
            (Some("message_delta"), r#"{"type":"message_delta","usage":null}"#),
            (Some("message_delta"), r#"{"type":7,"usage":{"output_tokens":4}}"#),
            (None, r#"{"type":"message_delta","type":"ping","usage":{"output_tokens":4}}"#),
            (Some("message_stop"), r#"{"type":"message_stop"}"#),
            (Some("error"), r#"{"type":"error","error":{"type":"overloaded_error"}}"#),
            (None, r#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":2,"input_tokens_details":{"cached_tokens":3}}}}"#),
            (None, r#"{"type":"response.failed","response":{"usage":null,"error":{"code":"x"}}}"#),
            (None, r#"{"type":"response.incomplete","response":"usage"}"#),
            (None, r#"{"type":"error","message":"x"}"#),
            (None, deep.as_str()),
        ]
        .into_iter()
        .map(|(n, d)| (n, d.to_string()))
        .collect();
        for wire in [Format::Chat, Format::Anthropic, Format::Responses] {
            // each event alone, and all of them in a row
            for chosen in events
                .iter()
                .map(|e| vec![e.clone()])
                .chain([events.clone()])
            {
                let mut a = StreamMeter::new(wire);
                let mut b = StreamMeter::new(wire);
                for (name, data) in &chosen {
                    a.on_event(&SseEvent {
                        event: name.map(String::from),
                        data: data.clone(),
                    });
                    b.events += 1;
                    on_event_reference(&mut b, *name, data);
                }
                let state =
                    |m: &StreamMeter| (m.usage, m.saw_usage, m.completed, m.errored, m.events);
                assert_eq!(state(&a), state(&b), "{wire:?} {chosen:?}");
            }
        }
    }

    #[test]
    fn bodies() {
        let b = json!({"usage": {"prompt_tokens": 7, "completion_tokens": 2}});
        assert_eq!(usage_from_body(Format::Chat, &b).unwrap().total(), 9);
        let b =
            json!({"usage": {"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 1}});
        assert_eq!(usage_from_body(Format::Anthropic, &b).unwrap().total(), 10);
        let b = json!({"usage": {"input_tokens": 7, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 3}}});
        assert_eq!(
            usage_from_body(Format::Responses, &b).unwrap(),
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
