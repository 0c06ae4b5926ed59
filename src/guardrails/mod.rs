//! Guardrails: checks of a request's prompt (and of its answer) by a guardrail service,
//! before the provider is called or before the answer is returned. The contract is Otari's
//! (`POST {url}/validate`), so a service written for Otari works unchanged.
//!
//! One stage of the request pipeline (`gateway::guard` calls it), in parts with one job each:
//! - [`declare`]: the request's own `guardrails` list, validated;
//! - [`policy`]: the operator's settings and named policies, and the merge with a request's
//!   entries (a request may add checks, never weaken one);
//! - [`scope`]: the text a check looks at in each client format;
//! - [`service`]: the `/validate` client and its optional verdict cache;
//! - [`check`]: the checks of one stage run concurrently, and what their verdicts decide;
//! - [`answer`]: a non-streamed answer's text, and the native refusal that replaces it;
//! - [`stream`]: a streamed answer's events and text, and the endings a check writes;
//! - [`local`]: the built-in profiles (`pii`, `deny_patterns`), run in process, and masking;
//! - [`restore`]: masked values put back into a streamed answer.

pub mod answer;
pub mod check;
pub mod declare;
pub mod local;
pub mod policy;
pub mod restore;
pub mod scope;
pub mod service;
pub mod stream;

use serde_json::{Map, Value};
use std::time::Duration;

pub use check::Decision;
pub use policy::Settings;
pub use service::Guardrails;

/// What a flagged check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Note the verdict, let the request through.
    Monitor,
    /// Refuse the request (or replace the answer).
    Block,
    /// Replace what was found with a placeholder (in-process profiles only).
    Mask,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Block => "block",
            Mode::Mask => "mask",
        }
    }
}

/// What a check does when it gets no verdict (service down, timed out, malformed reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OnUnavailable {
    /// Fail open: the request goes through with `valid: null`.
    Monitor,
    /// Fail closed (when the check's mode is `block`): 502.
    Block,
}

/// Which part of the request a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The latest user message (Otari's only scope): Responses' `input`.
    LastUser,
    /// Every user message.
    AllUser,
    /// Tool results: where prompt injection reaches agents (files and pages they read).
    ToolResults,
    /// System prompt, every message and every tool result.
    Full,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::LastUser => "last_user",
            Scope::AllUser => "all_user",
            Scope::ToolResults => "tool_results",
            Scope::Full => "full",
        }
    }
}

/// When a check runs: on the prompt, on the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Input,
    Output,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Input => "input",
            Stage::Output => "output",
        }
    }
}

/// One check to run on a request, after the merge of policies and the request's list.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub profile: String,
    pub mode: Mode,
    pub input: bool,
    pub output: bool,
    pub on_unavailable: OnUnavailable,
    /// The service to ask (None: the configured `guardrails.url`).
    pub url: Option<String>,
    /// The URL was written by the operator (a policy), not by the request: it may reach
    /// private addresses.
    pub operator: bool,
    pub validate_kwargs: Map<String, Value>,
    pub scope: Scope,
    /// On streams: delay delivery by one window, so that flagged text never reaches the
    /// client.
    pub hold_back: bool,
    /// On streams: check every this many characters (None: `guardrails.output_window_chars`).
    pub output_window_chars: Option<usize>,
    /// `mask`: put the originals back into the answer.
    pub restore: bool,
}

impl Entry {
    /// A check with Otari's defaults: monitor, input, fail closed, last user message.
    pub fn new(profile: &str) -> Entry {
        Entry {
            profile: profile.to_string(),
            mode: Mode::Monitor,
            input: true,
            output: false,
            on_unavailable: OnUnavailable::Block,
            url: None,
            operator: false,
            validate_kwargs: Map::new(),
            scope: Scope::LastUser,
            hold_back: false,
            output_window_chars: None,
            restore: false,
        }
    }

    pub fn runs_on(&self, stage: Stage) -> bool {
        match stage {
            Stage::Input => self.input,
            Stage::Output => self.output,
        }
    }

    /// A check without a verdict refuses the request.
    pub fn fails_closed(&self) -> bool {
        self.mode == Mode::Block && self.on_unavailable == OnUnavailable::Block
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Flagged,
    /// The service answered `valid: null`.
    Inconclusive,
    /// No verdict: no URL, the service down or slow, a malformed reply.
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Flagged => "flagged",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// What one check said.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub profile: String,
    pub mode: Mode,
    pub stage: Stage,
    /// `false`: flagged; `null`: inconclusive or unavailable.
    pub valid: Option<bool>,
    pub explanation: Value,
    pub score: Option<f64>,
    pub latency: Duration,
    pub outcome: Outcome,
    /// This verdict refused the request or replaced the answer.
    pub blocked: bool,
}

impl Verdict {
    /// Whether this verdict, from `entry`, refuses the request.
    pub fn blocks(&self, entry: &Entry) -> bool {
        match self.outcome {
            Outcome::Flagged => entry.mode == Mode::Block,
            Outcome::Unavailable => entry.fails_closed(),
            Outcome::Valid | Outcome::Inconclusive => false,
        }
    }
}

/// How a stream's output checks run (see [`RequestGuard::stream_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// Characters of answer text between two checks.
    pub window: usize,
    /// Text is delivered only once a check covering it passed.
    pub hold_back: bool,
    /// A check may cut the stream: its closing events wait for the end-of-stream check.
    pub blocks: bool,
}

/// The guardrail state of one request: its checks and what they said so far.
#[derive(Debug, Default)]
pub struct RequestGuard {
    pub entries: Vec<Entry>,
    pub verdicts: Vec<Verdict>,
    /// The request was masked, and these placeholders are restored in the answer.
    pub restore: Option<std::sync::Arc<local::Masks>>,
}

impl RequestGuard {
    /// Some check runs on the answer.
    pub fn checks_output(&self) -> bool {
        self.entries.iter().any(|e| e.output)
    }

    /// The answer is read on its way (checked, or masked values restored in it).
    pub fn reads_answer(&self) -> bool {
        self.checks_output() || self.restore.is_some()
    }

    /// How a stream's output checks run: the smallest window of the output entries, held
    /// back when a blocking one asks for it, and whether any of them may cut the stream.
    pub fn stream_plan(&self, default_window: usize) -> StreamPlan {
        let out = || self.entries.iter().filter(|e| e.output);
        let blocking = || out().filter(|e| e.mode == Mode::Block);
        StreamPlan {
            window: out()
                .map(|e| e.output_window_chars.unwrap_or(default_window))
                .min()
                .unwrap_or(default_window)
                .max(1),
            hold_back: blocking().any(|e| e.hold_back),
            blocks: blocking().next().is_some(),
        }
    }

    /// Notes the verdicts of one of a stream's checks: one verdict per entry is kept, the
    /// most serious so far (a stream is checked many times; the record says how it ended).
    pub fn note_stream_verdicts(&mut self, verdicts: Vec<Verdict>) {
        fn rank(v: &Verdict) -> (bool, u8) {
            let o = match v.outcome {
                Outcome::Valid => 0,
                Outcome::Inconclusive => 1,
                Outcome::Unavailable => 2,
                Outcome::Flagged => 3,
            };
            (v.blocked, o)
        }
        for v in verdicts {
            let same = self
                .verdicts
                .iter_mut()
                .find(|x| x.stage == v.stage && x.profile == v.profile && x.mode == v.mode);
            match same {
                Some(x) if rank(&v) >= rank(x) => *x = v,
                Some(_) => {}
                None => self.verdicts.push(v),
            }
        }
    }

    /// The `x-tollgate-guardrails` header: `[{"profile","mode","valid","score"}]`, in ASCII
    /// (non-ASCII characters escaped) so that it is a valid header value.
    pub fn header(&self) -> Option<String> {
        if self.verdicts.is_empty() {
            return None;
        }
        let list: Vec<Value> = self
            .verdicts
            .iter()
            .map(|v| {
                serde_json::json!({
                    "profile": v.profile,
                    "mode": v.mode.as_str(),
                    "valid": v.valid,
                    "score": v.score,
                })
            })
            .collect();
        Some(ascii_json(&Value::Array(list)))
    }

    /// The verdicts as usage-record entries.
    pub fn outcomes(&self) -> Vec<crate::records::GuardrailOutcome> {
        self.verdicts
            .iter()
            .map(|v| crate::records::GuardrailOutcome {
                profile: v.profile.clone(),
                stage: v.stage.as_str().to_string(),
                verdict: v.outcome.as_str().to_string(),
                blocked: v.blocked,
                latency_ms: v.latency.as_millis() as u64,
            })
            .collect()
    }

    /// The profiles whose verdict blocked, for the access log.
    pub fn blocked_profiles(&self) -> Option<String> {
        let p: Vec<&str> = self
            .verdicts
            .iter()
            .filter(|v| v.blocked)
            .map(|v| v.profile.as_str())
            .collect();
        (!p.is_empty()).then(|| p.join(","))
    }
}

/// JSON with every non-ASCII character written as a `\u` escape (a header value must be
/// visible ASCII; control characters are already escaped by serde).
pub fn ascii_json(v: &Value) -> String {
    let s = v.to_string();
    if s.is_ascii() {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The top-level request fields that are for the gateway only: never forwarded (Otari's
/// `guardrails` and its built-in tool and session fields).
pub const GATEWAY_FIELDS: [&str; 6] = [
    "guardrails",
    "mcp_servers",
    "mcp_server_ids",
    "tools_header",
    "max_tool_iterations",
    "session_label",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_is_ascii_json() {
        let g = RequestGuard {
            restore: None,
            entries: vec![],
            verdicts: vec![Verdict {
                profile: "injection-é".into(),
                mode: Mode::Monitor,
                stage: Stage::Input,
                valid: Some(true),
                explanation: Value::Null,
                score: Some(0.25),
                latency: Duration::from_millis(3),
                outcome: Outcome::Valid,
                blocked: false,
            }],
        };
        let h = g.header().unwrap();
        assert!(h.is_ascii(), "{h}");
        let v: Value = serde_json::from_str(&h).unwrap();
        assert_eq!(
            v,
            json!([{"profile": "injection-é", "mode": "monitor", "valid": true, "score": 0.25}])
        );
        assert_eq!(ascii_json(&json!("😀")), "\"\\ud83d\\ude00\"");
    }

    #[test]
    fn a_stream_keeps_the_most_serious_verdict_per_entry() {
        let v = |outcome, blocked| Verdict {
            profile: "p".into(),
            mode: Mode::Block,
            stage: Stage::Output,
            valid: None,
            explanation: Value::Null,
            score: None,
            latency: Duration::ZERO,
            outcome,
            blocked,
        };
        let mut g = RequestGuard::default();
        g.note_stream_verdicts(vec![v(Outcome::Valid, false)]);
        g.note_stream_verdicts(vec![v(Outcome::Flagged, true)]);
        g.note_stream_verdicts(vec![v(Outcome::Valid, false)]);
        assert_eq!(g.verdicts.len(), 1);
        assert_eq!(g.verdicts[0].outcome, Outcome::Flagged);
        // No output entry: nothing to plan, the default window.
        let plan = g.stream_plan(1000);
        assert_eq!(
            (plan.window, plan.hold_back, plan.blocks),
            (1000, false, false)
        );
    }

    #[test]
    fn what_blocks() {
        let mut e = Entry::new("p");
        let v = |outcome| Verdict {
            profile: "p".into(),
            mode: Mode::Block,
            stage: Stage::Input,
            valid: None,
            explanation: Value::Null,
            score: None,
            latency: Duration::ZERO,
            outcome,
            blocked: false,
        };
        assert!(!v(Outcome::Flagged).blocks(&e), "monitor never blocks");
        e.mode = Mode::Block;
        assert!(v(Outcome::Flagged).blocks(&e));
        assert!(v(Outcome::Unavailable).blocks(&e));
        assert!(!v(Outcome::Inconclusive).blocks(&e));
        e.on_unavailable = OnUnavailable::Monitor;
        assert!(!v(Outcome::Unavailable).blocks(&e));
    }
}
