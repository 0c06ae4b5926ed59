//! Citations for Anthropic clients: a text block of the answer that names a search result's
//! URL carries a `web_search_result_location` citation of that result, as Anthropic's own web
//! search does (Claude Code renders them). The rule is plain: the URL appears in the text (the
//! offered `web_search` function asks the model to cite results by URL). tollgate has no
//! encrypted index to give; `encrypted_index` is an opaque token of the result, and echoed
//! citations of this type are stripped before a provider sees them.

use base64::Engine;
use serde_json::{json, Value};

use super::declare::ToolKind;
use super::search::SearchResult;
use super::turns::ToolRun;

/// The type of the citations tollgate writes.
pub const CITATION_TYPE: &str = "web_search_result_location";

/// Anthropic quotes at most this many characters of the cited result.
const CITED_CHARS: usize = 150;

/// The results of the searches in `runs` that succeeded, in order.
pub fn results_of(runs: &[ToolRun]) -> impl Iterator<Item = &SearchResult> {
    runs.iter()
        .filter(|r| r.ok && r.call.ours == Some(ToolKind::WebSearch))
        .flat_map(|r| r.results.iter())
}

/// Whether `text` names `url` (a trailing '/' is optional).
fn names(text: &str, url: &str) -> bool {
    let bare = url.trim_end_matches('/');
    !bare.is_empty() && text.contains(bare)
}

/// The citations of one text block: each result (once per URL) whose URL the text names.
pub fn citations<'a>(
    text: &str,
    results: impl IntoIterator<Item = &'a SearchResult>,
) -> Vec<Value> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for r in results {
        if seen.contains(&r.url.as_str()) || !names(text, &r.url) {
            continue;
        }
        seen.push(&r.url);
        let source = r.text.as_deref().unwrap_or(&r.snippet);
        let cited: String = source.trim().chars().take(CITED_CHARS).collect();
        out.push(json!({
            "type": CITATION_TYPE,
            "url": r.url,
            "title": r.title,
            "encrypted_index": base64::engine::general_purpose::STANDARD.encode(format!("tollgate:{}", r.url)),
            "cited_text": cited,
        }));
    }
    out
}

/// Adds citations to the text blocks of an Anthropic answer.
pub fn cite_answer(answer: &mut Value, runs: &[ToolRun]) {
    let Some(blocks) = answer["content"].as_array_mut() else {
        return;
    };
    for b in blocks.iter_mut().filter(|b| b["type"] == "text") {
        let found = citations(b["text"].as_str().unwrap_or_default(), results_of(runs));
        if !found.is_empty() {
            b["citations"] = Value::Array(found);
        }
    }
}

/// Removes tollgate's citations from an echoed text block (a provider would refuse them).
pub fn strip(block: &mut Value) {
    let Some(cs) = block.get_mut("citations").and_then(Value::as_array_mut) else {
        return;
    };
    cs.retain(|c| c["type"] != CITATION_TYPE);
    if cs.is_empty() {
        if let Some(o) = block.as_object_mut() {
            o.remove("citations");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::turns::Call;

    fn result(n: u32) -> SearchResult {
        SearchResult {
            url: format!("https://docs.example.com/{n}/"),
            title: format!("Page {n}"),
            snippet: format!("snippet {n}"),
            text: (n == 2).then(|| format!("  Full text of page {n}. {}", "x".repeat(300))),
            published: None,
        }
    }

    fn search(results: Vec<SearchResult>, ok: bool) -> ToolRun {
        ToolRun {
            call: Call {
                id: "c1".into(),
                name: "web_search".into(),
                args: Default::default(),
                ours: Some(ToolKind::WebSearch),
            },
            output: String::new(),
            results,
            ok,
            mcp: None,
        }
    }

    #[test]
    fn a_text_block_that_names_a_url_cites_that_result() {
        let runs = [search(vec![result(1), result(2), result(3)], true)];
        let mut answer = json!({"content": [
            {"type": "web_search_tool_result", "content": []},
            {"type": "text", "text": "See https://docs.example.com/2 and https://docs.example.com/1/."},
            {"type": "text", "text": "No sources here."},
        ]});
        cite_answer(&mut answer, &runs);
        let enc = base64::engine::general_purpose::STANDARD
            .encode("tollgate:https://docs.example.com/1/");
        assert_eq!(
            answer["content"][1]["citations"][1],
            json!({"type": "web_search_result_location", "url": "https://docs.example.com/2/",
                   "title": "Page 2", "encrypted_index": base64::engine::general_purpose::STANDARD.encode("tollgate:https://docs.example.com/2/"),
                   "cited_text": format!("Full text of page 2. {}", "x".repeat(129))})
        );
        assert_eq!(answer["content"][1]["citations"][0]["encrypted_index"], enc);
        assert_eq!(
            answer["content"][1]["citations"][0]["cited_text"],
            "snippet 1"
        );
        assert_eq!(
            answer["content"][1]["citations"].as_array().unwrap().len(),
            2
        );
        assert!(answer["content"][2].get("citations").is_none());
        assert!(answer["content"][0].get("citations").is_none());
    }

    #[test]
    fn failed_searches_and_repeats_cite_nothing_twice() {
        let runs = [
            search(vec![result(1)], false),
            search(vec![result(3)], true),
            search(vec![result(3)], true),
        ];
        let found = citations(
            "https://docs.example.com/1 https://docs.example.com/3",
            results_of(&runs),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["url"], "https://docs.example.com/3/");
    }

    #[test]
    fn echoed_citations_are_stripped_and_others_kept() {
        let mut b = json!({"type": "text", "text": "t", "citations": [{"type": CITATION_TYPE}]});
        strip(&mut b);
        assert_eq!(b, json!({"type": "text", "text": "t"}));
        let mut b = json!({"type": "text", "text": "t", "citations": [{"type": "char_location"}, {"type": CITATION_TYPE}]});
        strip(&mut b);
        assert_eq!(b["citations"], json!([{"type": "char_location"}]));
    }
}
