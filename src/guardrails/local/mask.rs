//! The placeholder table of one request, restoring originals into an answer, and the streaming
//! restorer for text deltas.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::Kind;

/// Placeholders of one request: `[EMAIL_1]` → the original. The same original (of the same
/// kind) always gets the same placeholder; numbers count per kind in order of appearance, so
/// an unchanged conversation prefix keeps its placeholders from turn to turn (prompt caches
/// keep working).
#[derive(Default, Clone)]
pub struct Masks {
    /// (placeholder, original), in order of creation.
    entries: Vec<(String, String)>,
    by_original: HashMap<(Kind, String), usize>,
    by_placeholder: HashMap<String, usize>,
    next: [u32; Kind::ALL.len()],
    longest: usize,
}

/// Counts only: the originals are the secrets being protected.
impl fmt::Debug for Masks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masks")
            .field("placeholders", &self.entries.len())
            .finish()
    }
}

impl Masks {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The placeholders, in order of creation (for records and tests; not the originals).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(p, _)| p.as_str())
    }

    /// The placeholder for `original`, made on first sight.
    pub fn placeholder(&mut self, kind: Kind, original: &str) -> &str {
        let key = (kind, original.to_string());
        let i = match self.by_original.get(&key) {
            Some(&i) => i,
            None => {
                let n = &mut self.next[kind as usize];
                *n += 1;
                let placeholder = format!("[{}_{}]", kind.tag(), n);
                self.longest = self.longest.max(placeholder.len());
                let i = self.entries.len();
                self.by_placeholder.insert(placeholder.clone(), i);
                self.entries.push((placeholder, key.1.clone()));
                self.by_original.insert(key, i);
                i
            }
        };
        &self.entries[i].0
    }

    fn original(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder
            .get(placeholder)
            .map(|&i| self.entries[i].1.as_str())
    }

    /// `text` with every known placeholder replaced by its original.
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.restore_with(text, false)
    }

    /// Like [`Masks::restore`], for text that is itself JSON (tool call arguments): the
    /// originals are inserted JSON-escaped, so the text stays valid JSON.
    pub fn restore_json_text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.restore_with(text, true)
    }

    fn restore_with<'t>(&self, text: &'t str, json_escaped: bool) -> Cow<'t, str> {
        if self.is_empty() || !text.contains('[') {
            return Cow::Borrowed(text);
        }
        let mut out = String::new();
        let mut at = 0;
        let mut search = 0;
        while let Some(open) = text[search..].find('[').map(|i| i + search) {
            let end = text[open..]
                .bytes()
                .take(self.longest)
                .position(|b| b == b']')
                .map(|i| open + i + 1);
            let Some(end) = end else {
                search = open + 1;
                continue;
            };
            match self.original(&text[open..end]) {
                Some(original) => {
                    out.push_str(&text[at..open]);
                    if json_escaped {
                        let quoted = Value::String(original.to_string()).to_string();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    } else {
                        out.push_str(original);
                    }
                    at = end;
                    search = end;
                }
                None => search = open + 1,
            }
        }
        if at == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// Restores every string of a JSON answer in place; strings under an `arguments` key are
    /// JSON text (Chat and Responses tool calls) and get escaped originals.
    pub fn restore_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        restore_in(self, value, false);
    }

    /// Whether `tail` (starting at `[`, without `]`) could still become a known placeholder.
    fn could_complete(&self, tail: &str) -> bool {
        tail.len() < self.longest
            && tail[1..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && self.entries.iter().any(|(p, _)| p.starts_with(tail))
    }
}

fn restore_in(masks: &Masks, value: &mut Value, json_text: bool) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(restored) = masks.restore_with(s, json_text) {
                *s = restored;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| restore_in(masks, v, false)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                restore_in(masks, v, key == "arguments");
            }
        }
        _ => {}
    }
}

/// Restores placeholders in a streamed answer, chunk by chunk: `push` returns what can be
/// sent now, holding back a trailing `[…` that may be the start of a placeholder split
/// across chunks; `finish` returns whatever is held. Works on text deltas (and, with
/// [`Restorer::json_text`], on tool argument deltas, which are JSON text).
#[derive(Debug)]
pub struct Restorer {
    masks: Arc<Masks>,
    held: String,
    json_escaped: bool,
}

impl Restorer {
    pub fn new(masks: Arc<Masks>) -> Restorer {
        Restorer {
            masks,
            held: String::new(),
            json_escaped: false,
        }
    }

    /// For deltas of JSON text (`input_json_delta.partial_json`, `function.arguments`).
    pub fn json_text(masks: Arc<Masks>) -> Restorer {
        Restorer {
            json_escaped: true,
            ..Restorer::new(masks)
        }
    }

    /// The restored text that can be delivered after `chunk`.
    pub fn push(&mut self, chunk: &str) -> String {
        if self.held.is_empty() && !chunk.contains('[') {
            return chunk.to_string();
        }
        self.held.push_str(chunk);
        let cut = match self.held.rfind('[') {
            Some(open)
                if !self.held[open..].contains(']')
                    && self.masks.could_complete(&self.held[open..]) =>
            {
                open
            }
            _ => self.held.len(),
        };
        let ready: String = self.held.drain(..cut).collect();
        self.masks
            .restore_with(&ready, self.json_escaped)
            .into_owned()
    }

    /// Everything still held (an incomplete placeholder stays as it was written).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.masks
            .restore_with(&rest, self.json_escaped)
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<Masks> {
        let mut m = Masks::default();
        m.placeholder(Kind::Email, "jane@example.com");
        m.placeholder(Kind::Card, "4111 1111 1111 1111");
        for i in 0..11 {
            m.placeholder(Kind::Phone, &format!("+1 415 555 26{i:02}"));
        }
        m.placeholder(Kind::PrivateKey, "-----BEGIN PRIVATE KEY-----\n\"x\"");
        Arc::new(m)
    }

    #[test]
    fn debug_never_shows_originals() {
        let shown = format!("{:?}", table());
        assert!(
            !shown.contains("jane") && !shown.contains("4111"),
            "{shown}"
        );
    }

    #[test]
    fn restore_replaces_known_placeholders_only() {
        let m = table();
        assert_eq!(
            m.restore("Hi [EMAIL_1], card [CARD_1]; [EMAIL_9] [link](x) [EMAIL_1"),
            "Hi jane@example.com, card 4111 1111 1111 1111; [EMAIL_9] [link](x) [EMAIL_1"
        );
        assert!(matches!(
            m.restore("no placeholders [here]"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_text_gets_escaped_originals() {
        let m = table();
        let args = r#"{"key":"[PRIVATE_KEY_1]","to":"[EMAIL_1]"}"#;
        let restored = m.restore_json_text(args);
        let parsed: Value = serde_json::from_str(&restored).unwrap();
        assert_eq!(parsed["key"], "-----BEGIN PRIVATE KEY-----\n\"x\"");
        let mut answer = serde_json::json!({"content": "to [EMAIL_1]", "tool_calls": [{"function": {"arguments": args}}]});
        m.restore_value(&mut answer);
        assert_eq!(answer["content"], "to jane@example.com");
        let args: Value = serde_json::from_str(
            answer["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["to"], "jane@example.com");
    }

    /// Every way of splitting an answer into two or three chunks restores to the same text.
    #[test]
    fn restorer_across_every_split_point() {
        let m = table();
        let answer = "Mail [EMAIL_1] or call [PHONE_10] / [PHONE_1], not [PHONE_99] [x] [";
        let expected = m.restore(answer).into_owned();
        let n = answer.len();
        for i in 0..=n {
            for j in i..=n {
                let mut r = Restorer::new(m.clone());
                let mut out = r.push(&answer[..i]);
                out += &r.push(&answer[i..j]);
                out += &r.push(&answer[j..]);
                out += &r.finish();
                assert_eq!(out, expected, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn restorer_holds_only_possible_placeholders() {
        let m = table();
        let mut r = Restorer::new(m.clone());
        assert_eq!(r.push("see [EMA"), "see ");
        assert_eq!(r.push("IL_1] and [link"), "jane@example.com and [link");
        assert_eq!(r.push("] [PHONE_1"), "] ");
        // `[PHONE_1` could still become `[PHONE_10]`.
        assert_eq!(r.push("0]"), "+1 415 555 2609");
        assert_eq!(r.push(" [CARD_"), " ");
        assert_eq!(r.finish(), "[CARD_");
    }

    #[test]
    fn json_restorer_escapes() {
        let mut r = Restorer::json_text(table());
        let mut out = r.push(r#"{"k":"[PRIVATE_"#);
        out += &r.push(r#"KEY_1]"}"#);
        out += &r.finish();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["k"], "-----BEGIN PRIVATE KEY-----\n\"x\"");
    }
}
