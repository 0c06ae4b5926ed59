//! The guardrail stage of the request pipeline (the checks themselves are in
//! [`crate::guardrails`]):
//! - on input, after the body is read and before admission (a refused request costs
//!   nothing): the gateway-only fields are stripped from the body, the request's entries and
//!   the policies that apply are merged, and the checks run concurrently;
//! - on a non-streamed answer (the direct path reads it ahead): its text is checked before
//!   anything reaches the client, and a flagged answer becomes the native refusal; masked
//!   values are restored in it (`restore: true`).
//!
//! `mask` entries (built-in profiles) replace what they find with placeholders in the body
//! before anything else reads it: the service checks and the provider see placeholders only.
//!
//! A request with no gateway-only field and no policy that applies costs a few map lookups.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use super::body::RequestJson;
use super::{Ctx, Gateway};
use crate::error::{ErrorKind, GatewayError};
use crate::guardrails::{
    answer, check, declare, policy, scope, Decision, Mode, RequestGuard, Scope, Stage,
    GATEWAY_FIELDS,
};
use serde_json::Value;
use std::sync::Arc;

/// The request body, encoded again (without its gateway-only fields, or masked).
fn encode(full: &serde_json::Map<String, Value>) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(full)
        .map(Bytes::from)
        .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))
}

/// Gateway-only fields that the tool loop reads (`gateway::tool_loop`).
const TOOL_LOOP_FIELDS: [&str; 4] = [
    "mcp_servers",
    "mcp_server_ids",
    "tools_header",
    "max_tool_iterations",
];

fn has_gateway_fields(req: &RequestJson) -> bool {
    GATEWAY_FIELDS.iter().any(|f| req.fields().contains_key(*f))
}

impl Gateway {
    /// Whether the input stage has anything to do: a gateway-only field in the body, or a
    /// policy that applies to this request (a few map lookups, no allocation; the stage's
    /// future is boxed only past this).
    pub(super) fn guard_wanted(&self, ctx: &Ctx, req: &RequestJson) -> bool {
        has_gateway_fields(req) || self.policies_apply(ctx)
    }

    /// A policy applies: a global one, or one attached to the key or to its user.
    fn policies_apply(&self, ctx: &Ctx) -> bool {
        let settings = &self.state.guardrails.settings;
        if !settings.has_policies() || ctx.endpoint.generation_format().is_none() {
            return false;
        }
        let Some(key) = ctx.key.as_ref() else {
            return false;
        };
        !settings.global.is_empty()
            || !key.guardrail_policies.is_empty()
            || key.user_id.as_ref().is_some_and(|u| {
                let users = self.state.ledger.users.load();
                users
                    .get(u)
                    .is_some_and(|u| !u.guardrail_policies.is_empty())
            })
    }

    /// The input stage (when [`Self::guard_wanted`]). Returns the body to forward: the
    /// client's own bytes, or the body re-encoded without the gateway-only fields. A flagged
    /// request in block mode is a 403, a check that fails closed without a verdict a 502.
    pub(super) async fn guard_input(
        &self,
        ctx: &mut Ctx,
        req: &mut RequestJson,
        body: Bytes,
    ) -> Result<Bytes, GatewayError> {
        let gateway_fields = has_gateway_fields(req);
        let g = &self.state.guardrails;
        let format = ctx.endpoint.generation_format();
        let policies = self.policies_apply(ctx);
        let declared = match (format, req.fields().get("guardrails")) {
            (Some(_), Some(v)) => declare::parse(v, g.settings.request_urls())?,
            _ => Vec::new(),
        };
        if gateway_fields {
            let full = req.full(&body)?;
            let mut kept = serde_json::Map::new();
            for f in GATEWAY_FIELDS {
                // Anthropic's MCP connector on an Anthropic route: the provider runs it.
                if f == "mcp_servers" && ctx.mcp_native {
                    continue;
                }
                // The tool loop's own fields are handed to it (it reads them if it runs).
                if let (Some(v), true) = (full.remove(f), TOOL_LOOP_FIELDS.contains(&f)) {
                    kept.insert(f.to_string(), v);
                }
            }
            if !kept.is_empty() {
                ctx.tool_loop_fields = Some(kept);
            }
        }
        let policy_entries = match (policies, ctx.key.as_ref()) {
            (true, Some(key)) => {
                let users = self.state.ledger.users.load();
                let user = key.user_id.as_ref().and_then(|u| users.get(u));
                g.settings.policy_entries(key, user.map(|u| &**u))
            }
            _ => Vec::new(),
        };
        let entries = policy::merge(policy_entries, declared);
        let Some(format) = format.filter(|_| !entries.is_empty()) else {
            return if gateway_fields {
                encode(req.full(&body)?)
            } else {
                Ok(body)
            };
        };
        let full = req.full(&body)?;
        // Masking first: the checks below, and the provider, see placeholders only.
        let mut verdicts = Vec::new();
        let mut masks = None;
        if entries.iter().any(|e| e.mode == Mode::Mask) {
            let mut v = Value::Object(std::mem::take(full));
            let (m, mv) = check::mask(g, &entries, format, &mut v);
            if let Value::Object(map) = v {
                *full = map;
            }
            verdicts = mv;
            masks = (!m.is_empty()).then_some(m);
        }
        let body = if gateway_fields || masks.is_some() {
            encode(full)?
        } else {
            body
        };
        // One text per scope that an input check reads.
        let mut texts: Vec<(Scope, String)> = Vec::new();
        for e in entries.iter().filter(|e| e.input && e.mode != Mode::Mask) {
            if !texts.iter().any(|(s, _)| *s == e.scope) {
                texts.push((e.scope, scope::text(full, format, e.scope)));
            }
        }
        let text_of = |e: &crate::guardrails::Entry| -> &str {
            texts
                .iter()
                .find(|(s, _)| *s == e.scope)
                .map_or("", |(_, t)| t.as_str())
        };
        verdicts.extend(check::run(g, &entries, Stage::Input, text_of, &ctx.request_id).await);
        let decision = check::decide(&verdicts);
        let restores = entries.iter().any(|e| e.mode == Mode::Mask && e.restore);
        let restore = masks.filter(|_| restores).map(Arc::new);
        ctx.guard = Some(Box::new(RequestGuard {
            entries,
            verdicts,
            restore,
        }));
        match decision {
            Decision::Pass => Ok(body),
            Decision::Blocked(e) | Decision::Unavailable(e) => Err(e),
        }
    }

    /// The output checks of a non-streamed answer (`answer`: the client's body, whole).
    /// Returns the body to send: the answer, its native refusal, or the 502 of a check that
    /// fails closed (and then edits `resp`'s status).
    pub(super) async fn guard_answer(
        &self,
        ctx: &mut Ctx,
        resp: &mut ResponseHeader,
        answer: Bytes,
    ) -> Bytes {
        let format = ctx.endpoint.format();
        let Ok(mut parsed) = serde_json::from_slice::<serde_json::Value>(&answer) else {
            return answer; // not a JSON answer: nothing the checks could read
        };
        let text = answer::text(&parsed, format);
        let Some(guard) = ctx.guard.as_mut() else {
            return answer;
        };
        let verdicts = check::run(
            &self.state.guardrails,
            &guard.entries,
            Stage::Output,
            |_| text.as_str(),
            &ctx.request_id,
        )
        .await;
        let decision = check::decide(&verdicts);
        guard.verdicts.extend(verdicts);
        match decision {
            Decision::Pass => match &guard.restore {
                // The masked values go back where the model wrote their placeholders.
                Some(masks) => {
                    masks.restore_value(&mut parsed);
                    Bytes::from(parsed.to_string())
                }
                None => answer,
            },
            Decision::Blocked(_) => {
                answer::refuse(&mut parsed, format);
                Bytes::from(parsed.to_string())
            }
            Decision::Unavailable(e) => {
                let _ = resp.set_status(e.status());
                let _ = resp.insert_header("content-type", "application/json");
                ctx.error = Some(e.message.clone());
                e.body(format)
            }
        }
    }
}
