//! Masking over a request body in each client format: every text the model reads, and
//! nothing else (structure, ids, images, tool definitions, signed thinking).

use serde_json::Value;

use super::{Detector, Masks};
use crate::translate::Format;

/// Masks the texts of `body` (a request in `format`) in place and returns the placeholder
/// table. Gemini is no client format: its bodies are left alone.
pub fn mask_request(format: Format, body: &mut Value, detector: &Detector) -> Masks {
    let mut masks = Masks::default();
    mask_request_into(format, body, detector, &mut masks);
    masks
}

/// Like [`mask_request`], adding to an existing table (several masking profiles on one
/// request share one numbering).
pub fn mask_request_into(format: Format, body: &mut Value, detector: &Detector, masks: &mut Masks) {
    let mut m = Masker {
        detector,
        masks,
        changed: false,
    };
    match format {
        Format::Chat => m.chat(body),
        Format::Anthropic => m.anthropic(body),
        Format::Responses => m.responses(body),
        Format::Gemini => {}
    }
}

struct Masker<'a> {
    detector: &'a Detector,
    masks: &'a mut Masks,
    /// Whether a text was masked (so JSON text is serialized again only when it changed).
    changed: bool,
}

impl Masker<'_> {
    fn text(&mut self, v: Option<&mut Value>) {
        if let Some(Value::String(s)) = v {
            if let Some(masked) = self.detector.mask_text(s, self.masks) {
                *s = masked;
                self.changed = true;
            }
        }
    }

    /// Every string inside a JSON value (tool inputs); keys and structure unchanged.
    fn leaves(&mut self, v: &mut Value) {
        match v {
            Value::String(_) => self.text(Some(v)),
            Value::Array(items) => items.iter_mut().for_each(|i| self.leaves(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.leaves(i)),
            _ => {}
        }
    }

    /// A string holding JSON text (tool call arguments): its strings are masked and it is
    /// serialized again, so it stays valid JSON; text that does not parse is masked as text.
    fn json_text(&mut self, v: Option<&mut Value>) {
        let Some(Value::String(s)) = v else { return };
        if self.detector.scan(s).is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(s) {
            Ok(mut parsed) => {
                let before = self.changed;
                self.changed = false;
                self.leaves(&mut parsed);
                if self.changed {
                    *s = parsed.to_string();
                }
                self.changed |= before;
            }
            Err(_) => {
                if let Some(masked) = self.detector.mask_text(s, self.masks) {
                    *s = masked;
                }
            }
        }
    }

    /// A content that is a string or a list of parts whose text parts have one of `types`.
    fn content(&mut self, v: Option<&mut Value>, types: &[&str]) {
        match v {
            Some(Value::String(_)) => self.text(v),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if part
                        .get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| types.contains(&t))
                    {
                        self.text(part.get_mut("text"));
                    }
                }
            }
            _ => {}
        }
    }

    fn chat(&mut self, body: &mut Value) {
        let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
            return;
        };
        for msg in messages {
            self.content(msg.get_mut("content"), &["text"]);
            if let Some(calls) = msg.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    self.json_text(
                        call.get_mut("function")
                            .and_then(|f| f.get_mut("arguments")),
                    );
                }
            }
            self.json_text(
                msg.get_mut("function_call")
                    .and_then(|f| f.get_mut("arguments")),
            );
        }
    }

    fn anthropic(&mut self, body: &mut Value) {
        self.content(body.get_mut("system"), &["text"]);
        let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
            return;
        };
        for msg in messages {
            match msg.get_mut("content") {
                Some(Value::Array(blocks)) => {
                    for block in blocks {
                        self.anthropic_block(block);
                    }
                }
                other => self.text(other),
            }
        }
    }

    fn anthropic_block(&mut self, block: &mut Value) {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => self.text(block.get_mut("text")),
            Some("tool_use") => {
                if let Some(input) = block.get_mut("input") {
                    self.leaves(input);
                }
            }
            Some("tool_result") => self.content(block.get_mut("content"), &["text"]),
            Some("document") => {
                if let Some(source) = block.get_mut("source") {
                    if source.get("type").and_then(Value::as_str) == Some("text") {
                        self.text(source.get_mut("data"));
                    }
                }
            }
            // thinking and redacted_thinking are signed; images and the rest are not text.
            _ => {}
        }
    }

    fn responses(&mut self, body: &mut Value) {
        self.text(body.get_mut("instructions"));
        let input = body.get_mut("input");
        let Some(Value::Array(items)) = input else {
            self.text(input);
            return;
        };
        const PARTS: &[&str] = &["input_text", "output_text", "text"];
        for item in items {
            let kind = item.get("type").and_then(Value::as_str);
            match kind {
                Some("message") | None => self.content(item.get_mut("content"), PARTS),
                Some("function_call") => self.json_text(item.get_mut("arguments")),
                Some("function_call_output") | Some("custom_tool_call_output") => {
                    self.content(item.get_mut("output"), PARTS)
                }
                Some("custom_tool_call") => self.text(item.get_mut("input")),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn fixtures() -> Vec<(PathBuf, Format)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guardrails");
        let mut out: Vec<(PathBuf, Format)> = std::fs::read_dir(&dir)
            .expect("tests/fixtures/guardrails")
            .map(|e| e.unwrap().path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                let format = if name.starts_with("mask_chat") {
                    Format::Chat
                } else if name.starts_with("mask_anthropic") {
                    Format::Anthropic
                } else if name.starts_with("mask_responses") {
                    Format::Responses
                } else {
                    return None;
                };
                Some((p, format))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Each fixture: `input` (a request), `expected` (the masked request), `placeholders` (the
    /// table, in order), and `answer`/`restored` (an answer text and its restored form).
    #[test]
    fn golden_mask_and_restore() {
        let pii = Detector::pii();
        let all = fixtures();
        for format in [Format::Chat, Format::Anthropic, Format::Responses] {
            assert!(
                all.iter().any(|(_, f)| *f == format),
                "a fixture for {format:?}"
            );
        }
        for (path, format) in all {
            let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut body = case["input"].clone();
            let masks = mask_request(format, &mut body, &pii);
            assert_eq!(body, case["expected"], "{}", path.display());
            let placeholders: Vec<&str> = masks.placeholders().collect();
            let want: Vec<&str> = case["placeholders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(placeholders, want, "{}", path.display());
            if let Some(answer) = case["answer"].as_str() {
                assert_eq!(
                    masks.restore(answer),
                    case["restored"].as_str().unwrap(),
                    "{}",
                    path.display()
                );
            }
            // Masking the masked body finds nothing more: placeholders are not PII.
            let again = mask_request(format, &mut body, &pii);
            assert!(again.is_empty(), "{}", path.display());
        }
    }

    #[test]
    fn restoring_the_masked_texts_gives_back_the_request() {
        let pii = Detector::pii();
        let input = json!({"model": "m", "system": "owner a@b.io", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111, a@b.io"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "send", "input": {"to": "c@d.io", "n": 3}}]}]});
        let mut body = input.clone();
        let masks = mask_request(Format::Anthropic, &mut body, &pii);
        assert_ne!(body, input);
        masks.restore_value(&mut body);
        assert_eq!(body, input);
    }

    #[test]
    fn gemini_is_left_alone() {
        let mut body = json!({"contents": [{"parts": [{"text": "a@b.io"}]}]});
        let before = body.clone();
        assert!(mask_request(Format::Gemini, &mut body, &Detector::pii()).is_empty());
        assert_eq!(body, before);
    }
}
