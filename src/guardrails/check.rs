//! Running the checks of one stage, and what their verdicts decide. Reusable by any stage
//! that has text to check: the input stage (a text per scope), a non-streamed answer, a
//! stream's window (text in, verdicts out).

use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;

use super::service::Guardrails;
use super::{Entry, Outcome, Stage, Verdict};
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
        .filter(|e| e.runs_on(stage))
        .map(|e| (e, text_of(e)))
        .filter(|(_, t)| !t.is_empty())
        .map(|(e, text)| async move {
            let start = Instant::now();
            let reply = g.validate(e, text).await;
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
        let label = metrics::profile_label(&e.profile);
        metrics::GUARDRAIL_VERDICTS
            .with_label_values(&[label.as_str(), stage.as_str(), outcome.as_str()])
            .inc();
        metrics::GUARDRAIL_LATENCY
            .with_label_values(&[label.as_str()])
            .observe(latency.as_secs_f64());
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
    use super::super::{Mode, Settings};
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
