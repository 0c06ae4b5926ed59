//! Running the checks of one stage, and what their verdicts decide. Reusable by any stage
//! that has text to check: the input stage (a text per scope), a non-streamed answer, a
//! stream's window (text in, verdicts out).

use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;

use super::local::{mask_request_into, Masks};
use super::service::{Guardrails, Reply};
use super::{Entry, Mode, Outcome, Stage, Verdict};
use crate::error::{ErrorKind, GatewayError};
use crate::metrics;

/// The message of a guardrail refusal (Otari's).
pub const BLOCKED_MESSAGE: &str = "Request blocked by guardrail policy.";

/// What the verdicts of a stage decide.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Pass,
    /// A check in `block` mode flagged the text: 403 `guardrail_violation` (or, on an
    /// answer, the native refusal).
    Blocked(GatewayError),
    /// A check that fails closed got no verdict: 502.
    Unavailable(GatewayError),
}

/// Runs, concurrently, every entry that runs on `stage`, each on `text_of(entry)` (an empty
/// text is not sent: there is nothing to check). Verdicts come back in entry order, marked
/// `blocked` where they refuse; each is counted in the metrics, and a check without a verdict
/// is logged.
pub async fn run<'a>(
    g: &Guardrails,
    entries: &'a [Entry],
    stage: Stage,
    text_of: impl Fn(&Entry) -> &'a str,
    request_id: &str,
) -> Vec<Verdict> {
    let checks = entries
        .iter()
        // A `mask` entry's input stage is the masking itself (`gateway::guard`).
        .filter(|e| e.runs_on(stage) && !(stage == Stage::Input && e.mode == Mode::Mask))
        .map(|e| (e, text_of(e)))
        .filter(|(_, t)| !t.is_empty())
        .map(|(e, text)| async move {
            let start = Instant::now();
            // The built-in profiles run here, in process: their texts are never sent.
            let reply = match g.settings.local.detector(&e.profile) {
                Some(d) => Ok(local_reply(d.check([text]))),
                None => g.validate(e, text).await,
            };
            (e, reply, start.elapsed())
        });
    let mut verdicts = Vec::new();
    for (e, reply, latency) in join_all(checks).await {
        let (valid, explanation, score, outcome) = match reply {
            Ok(r) => {
                let outcome = match r.valid {
                    Some(true) => Outcome::Valid,
                    Some(false) => Outcome::Flagged,
                    None => Outcome::Inconclusive,
                };
                (r.valid, r.explanation, r.score, outcome)
            }
            Err(why) => {
                log::warn!(
                    "request {request_id}: guardrail '{}' ({}) had no verdict: {}; {}",
                    e.profile.escape_debug(),
                    stage.as_str(),
                    why.0,
                    if e.fails_closed() {
                        "failing closed"
                    } else {
                        "failing open (valid: null)"
                    }
                );
                (None, Value::Null, None, Outcome::Unavailable)
            }
        };
        count(&e.profile, stage, outcome, latency);
        let mut v = Verdict {
            profile: e.profile.clone(),
            mode: e.mode,
            stage,
            valid,
            explanation,
            score,
            latency,
            outcome,
            blocked: false,
        };
        v.blocked = v.blocks(e);
        verdicts.push(v);
    }
    verdicts
}

/// The `mask` entries of a request (built-in profiles), in order, on `body` (the request in
/// the client's `format`): each match is replaced by its typed placeholder, one table for
/// all of them. A verdict per entry says what it masked (kinds and counts of distinct
/// values, never the values); nothing blocks.
pub fn mask(
    g: &Guardrails,
    entries: &[Entry],
    format: crate::translate::Format,
    body: &mut Value,
) -> (Masks, Vec<Verdict>) {
    let mut masks = Masks::default();
    let mut verdicts = Vec::new();
    for e in entries.iter().filter(|e| e.mode == Mode::Mask) {
        let Some(d) = g.settings.local.detector(&e.profile) else {
            continue;
        };
        let start = Instant::now();
        let before = masks.len();
        mask_request_into(format, body, d, &mut masks);
        // Placeholders are `[KIND_n]`: count the new ones by kind.
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for p in masks.placeholders().skip(before) {
            let kind = p
                .trim_matches(|c| c == '[' || c == ']')
                .rsplit_once('_')
                .map_or(p, |(k, _)| k)
                .to_ascii_lowercase();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        let found = !kinds.is_empty();
        let explanation = if found {
            let listed: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            format!("{}: masked {}", e.profile, listed.join(", "))
        } else {
            format!("{}: nothing found", e.profile)
        };
        let outcome = if found {
            Outcome::Flagged
        } else {
            Outcome::Valid
        };
        let latency = start.elapsed();
        count(&e.profile, Stage::Input, outcome, latency);
        verdicts.push(Verdict {
            profile: e.profile.clone(),
            mode: Mode::Mask,
            stage: Stage::Input,
            valid: Some(!found),
            explanation: Value::String(explanation),
            score: Some(if found { 1.0 } else { 0.0 }),
            latency,
            outcome,
            blocked: false,
        });
    }
    (masks, verdicts)
}

fn count(profile: &str, stage: Stage, outcome: Outcome, latency: std::time::Duration) {
    let label = metrics::profile_label(profile);
    metrics::GUARDRAIL_VERDICTS
        .with_label_values(&[label.as_str(), stage.as_str(), outcome.as_str()])
        .inc();
    metrics::GUARDRAIL_LATENCY
        .with_label_values(&[label.as_str()])
        .observe(latency.as_secs_f64());
}

/// A built-in check's verdict as a service reply (its explanation lists kinds and counts,
/// never the text found).
fn local_reply(v: super::local::Verdict) -> Reply {
    Reply {
        valid: Some(v.valid),
        explanation: Value::String(v.explanation),
        score: Some(v.score),
    }
}

/// What `verdicts` decide: a flag in block mode first, then a check that fails closed.
pub fn decide(verdicts: &[Verdict]) -> Decision {
    let flagged: Vec<Value> = verdicts
        .iter()
        .filter(|v| v.blocked && v.outcome == Outcome::Flagged)
        .map(|v| json!({"profile": v.profile, "explanation": v.explanation, "score": v.score}))
        .collect();
    if !flagged.is_empty() {
        return Decision::Blocked(
            GatewayError::new(ErrorKind::PermissionDenied, BLOCKED_MESSAGE)
                .with_code("guardrail_violation")
                .with_member("guardrails", Value::Array(flagged)),
        );
    }
    if let Some(v) = verdicts
        .iter()
        .find(|v| v.blocked && v.outcome == Outcome::Unavailable)
    {
        return Decision::Unavailable(
            GatewayError::new(
                ErrorKind::Upstream,
                format!(
                    "The guardrail service for profile '{}' is unavailable, and the check blocks when it cannot run (on_unavailable: block).",
                    v.profile.escape_debug()
                ),
            )
            .with_code("guardrail_unavailable"),
        );
    }
    Decision::Pass
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;
    use std::time::Duration;

    fn verdict(outcome: Outcome, blocked: bool) -> Verdict {
        Verdict {
            profile: "p".into(),
            mode: Mode::Block,
            stage: Stage::Input,
            valid: (outcome == Outcome::Flagged).then_some(false),
            explanation: json!("why"),
            score: Some(0.9),
            latency: Duration::ZERO,
            outcome,
            blocked,
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(&[]), Decision::Pass);
        assert_eq!(decide(&[verdict(Outcome::Flagged, false)]), Decision::Pass);
        let Decision::Blocked(e) = decide(&[
            verdict(Outcome::Unavailable, true),
            verdict(Outcome::Flagged, true),
        ]) else {
            panic!("a flag decides first")
        };
        assert_eq!(e.status(), 403);
        assert_eq!(e.code, Some("guardrail_violation"));
        assert_eq!(e.message, BLOCKED_MESSAGE);
        let Decision::Unavailable(e) = decide(&[verdict(Outcome::Unavailable, true)]) else {
            panic!("fails closed")
        };
        assert_eq!(e.status(), 502);
    }

    #[tokio::test]
    async fn built_in_profiles_run_in_process_and_never_echo_what_they_found() {
        let g = Guardrails::new(Settings::default());
        let mut e = Entry::new("pii");
        e.mode = Mode::Block;
        let key = "AKIAIOSFODNN7EXAMPLE";
        let text = format!("my key is {key}");
        let v = run(&g, &[e], Stage::Input, |_| text.as_str(), "r").await;
        assert_eq!(v[0].outcome, Outcome::Flagged);
        assert!(v[0].blocked);
        assert_eq!(v[0].explanation, json!("pii: 1 aws_key"));
        let Decision::Blocked(err) = decide(&v) else {
            panic!("blocks")
        };
        assert!(!format!("{err:?}").contains(key));
        // A `mask` entry masks; its input stage is not a check.
        let mut m = Entry::new("pii");
        m.mode = Mode::Mask;
        assert!(run(&g, &[m.clone()], Stage::Input, |_| text.as_str(), "r")
            .await
            .is_empty());
        let mut body = json!({"model": "m", "messages": [{"role": "user",
            "content": "mail jane@example.com or john@example.com, key AKIAIOSFODNN7EXAMPLE"}]});
        let (masks, v) = mask(&g, &[m], crate::translate::Format::Chat, &mut body);
        assert_eq!(masks.len(), 3);
        assert_eq!(
            body["messages"][0]["content"],
            "mail [EMAIL_1] or [EMAIL_2], key [AWS_KEY_1]"
        );
        assert_eq!(v[0].explanation, json!("pii: masked 2 email, 1 aws_key"));
        assert_eq!(v[0].valid, Some(false));
        assert!(!v[0].blocked);
    }

    #[tokio::test]
    async fn empty_texts_and_other_stages_are_not_checked() {
        let g = Guardrails::new(Settings::default());
        let mut out = Entry::new("o");
        out.input = false;
        out.output = true;
        let entries = vec![Entry::new("a"), out];
        let v = run(&g, &entries, Stage::Input, |_| "", "r").await;
        assert!(v.is_empty());
        // No URL configured: unavailable, and (block + block) only when in block mode.
        let v = run(&g, &entries, Stage::Input, |_| "text", "r").await;
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].outcome, Outcome::Unavailable);
        assert!(!v[0].blocked, "monitor mode fails open");
    }
}
