//! Accounting around a forwarded request: admission before the call (allow-lists, user
//! checks, rate limits, pricing, budget reservation) and settlement after it.

use pingora::proxy::Session;
use serde_json::{Map, Value};

use super::{end_user, Ctx, Gateway};
use crate::clock;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::ids;
use crate::ledger::limits::{model_allowed, pattern_matches};
use crate::meter::Usage;
use crate::metrics;
use crate::records::{Micros, UsageRecord};

use super::response::ResponseTap;
use crate::route::Route;

/// Session headers of the clients we know (Claude Code, Codex, generic).
const SESSION_HEADERS: &[&str] = &["x-claude-code-session-id", "session-id", "x-session-id"];

/// Whether a budget scoped to the model pattern `p` applies to a request that named
/// `client_model` and was routed to `route`: the pattern may name the client's selector, the
/// routed `provider:model` or bare model, the provider (`anthropic` or `anthropic:*`), or a
/// group or alias that serves the routed model, so that another variant of a group, or its
/// model named directly, is still the group's.
pub(super) fn budget_model_applies(
    router: &crate::route::Router,
    p: &str,
    client_model: &str,
    route: &Route,
) -> bool {
    let provider = route.provider.name.as_str();
    let full = format!("{provider}:{}", route.model);
    let direct = [client_model, full.as_str(), route.model.as_str(), provider];
    pattern_matches(p, &direct) || pattern_matches(p, &router.names_serving(provider, &route.model))
}

impl Gateway {
    pub(super) async fn admit(
        &self,
        s: &Session,
        ctx: &mut Ctx,
        req: &Map<String, Value>,
        route: &Route,
        body_len: usize,
    ) -> Result<(), GatewayError> {
        let key = ctx.key.clone().expect("authenticated");
        let ledger = &self.state.ledger;
        let end_user = end_user::end_user(req)?;
        ctx.end_user = end_user.map(String::from);
        ctx.session_id = SESSION_HEADERS
            .iter()
            .find_map(|h| s.get_header(*h).and_then(|v| v.to_str().ok()))
            .filter(|v| v.len() <= 128)
            .map(String::from);
        let user = key
            .user_id
            .as_ref()
            .and_then(|u| ledger.users.load().get(u).cloned());
        ctx.user_id = key.user_id.clone();
        let allowed = key
            .allowed_models
            .clone()
            .or_else(|| user.as_ref().and_then(|u| u.allowed_models.clone()));
        // The team's and the organisation's lists bound every key under them.
        let (team, org) = ledger.hierarchy(&key, user.as_deref());
        let permitted = |list: &Option<Vec<String>>| {
            model_allowed(list, &ctx.client_model, &route.provider.name, &route.model)
        };
        if !permitted(&allowed)
            || !team.as_ref().is_none_or(|t| permitted(&t.allowed_models))
            || !org.as_ref().is_none_or(|o| permitted(&o.allowed_models))
        {
            return Err(GatewayError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "Model '{}' is not permitted for this API key.",
                    ctx.client_model
                ),
            )
            .with_param("model")
            .with_code("model_not_allowed"));
        }
        // A named end user is attribution. It is refused only when the operator asked for
        // it: a key bound to a user, with reject_user_mismatch on, and a body naming another.
        if let Some(owner) = key.user_id.as_deref() {
            let reject = key
                .reject_user_mismatch
                .unwrap_or(self.state.cfg.reject_user_mismatch);
            if reject && end_user::names_other_user(req, owner) {
                return Err(GatewayError::new(
                    ErrorKind::PermissionDenied,
                    "The user named in the request does not match the API key's user (reject_user_mismatch is on for this key).",
                )
                .with_code("user_mismatch"));
            }
        }
        if ctx.endpoint == Endpoint::CountTokens {
            return Ok(()); // never billed, never rate limited
        }
        // A pessimistic estimate: ~4 bytes per token of JSON, and the whole output allowance.
        ctx.estimate = Usage {
            input: (body_len as u64 / 4).max(1),
            output: super::max_output_tokens(req, self.state.cfg.default_max_output_tokens),
            ..Default::default()
        };
        let price = ledger
            .prices
            .load()
            .lookup(&route.provider.name, &route.model);
        let matches =
            |p: &str| budget_model_applies(&self.state.router, p, &ctx.client_model, route);
        match ledger
            .admit_async(
                &key,
                user.as_deref(),
                end_user,
                Some(&matches),
                price,
                &ctx.estimate,
                clock::now_secs(),
            )
            .await
        {
            Ok(a) => {
                ctx.admission = Some(a);
                Ok(())
            }
            Err(e) => {
                match e.kind {
                    ErrorKind::BudgetExceeded => metrics::BUDGET_REJECTIONS
                        .with_label_values(&["budget"])
                        .inc(),
                    ErrorKind::RateLimited => {
                        metrics::RATE_LIMITED.with_label_values(&["rate"]).inc()
                    }
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// Settles the request (also when it failed or the client went away) and queues its
    /// usage record. Runs in `logging`.
    pub(crate) fn settle(&self, s: &Session, ctx: &mut Ctx) {
        let status = s.response_written().map_or(0, |r| r.status.as_u16());
        self.settle_with_status(ctx, status);
    }

    /// [`Self::settle`] with the status the client got (the tool loop settles its turns
    /// before anything is written).
    pub(super) fn settle_with_status(&self, ctx: &mut Ctx, status: u16) {
        let Some(key) = ctx.key.as_ref() else { return };
        if !ctx.endpoint.is_inference() || ctx.endpoint == Endpoint::CountTokens {
            return;
        }
        let now_ms = clock::now_millis();
        let (usage, estimated) = metered(ctx, ctx.tap.as_ref());
        let mut rec = UsageRecord {
            id: ids::generate_id("use_"),
            ts_ms: now_ms,
            request_id: ctx.request_id.clone(),
            key_id: Some(key.id.clone()),
            user_id: ctx.user_id.clone(),
            end_user: ctx.end_user.clone(),
            endpoint: ctx.endpoint.label().to_string(),
            provider: ctx.provider_name().to_string(),
            model: ctx.client_model.clone(),
            upstream_model: ctx
                .route
                .as_ref()
                .map(|r| r.model.clone())
                .unwrap_or_default(),
            session_id: ctx.session_id.clone(),
            status,
            error: ctx.error.clone(),
            latency_ms: ctx.start.elapsed().as_millis() as u64,
            ttft_ms: ctx.upstream_ttfb.map(|t| t.as_millis() as u64),
            stream: ctx.stream,
            estimated,
            tool_iteration: ctx.tool_iteration,
            tool_calls: ctx.tool_calls,
            guardrails: ctx.guard.as_ref().map(|g| g.outcomes()).unwrap_or_default(),
            ..Default::default()
        };
        usage.record_into(&mut rec);
        let ledger = &self.state.ledger;
        let model_label = metrics::model_label(&ctx.client_model);
        match ctx.admission.as_mut() {
            Some(adm) => {
                ledger.settle(adm, rec, clock::now_secs());
            }
            None => ledger.queue.push(crate::records::Settled {
                record: rec,
                charges: vec![],
            }),
        }
        let cost = ctx
            .admission
            .as_ref()
            .map_or(0, |adm| adm.price.map_or(0, |p| p.cost(&usage)) + adm.extra);
        ctx.settled_micros += cost;
        if let Some(p) = ctx.phases.as_mut() {
            p.cost_micros += cost;
        }
        if usage.total() > 0 || cost > 0 {
            let key_label = metrics::key_label(&key.id);
            let labels = [key_label.as_str(), model_label.as_str()];
            if usage.total() > 0 {
                metrics::KEY_TOKENS
                    .with_label_values(&labels)
                    .inc_by(usage.total());
            }
            if cost > 0 {
                metrics::SPEND.with_label_values(&labels).inc_by(cost);
            }
        }
    }

    /// What a request whose answer is read through `tap` will be settled at: its token cost
    /// and the gateway tool calls billed with it (None: nothing is priced).
    pub(super) fn settled_cost(&self, ctx: &Ctx, tap: &ResponseTap) -> Option<Micros> {
        let adm = ctx.admission.as_ref()?;
        let (usage, _) = metered(ctx, Some(tap));
        Some(adm.price.map_or(0, |p| p.cost(&usage)) + adm.extra)
    }
}

/// The usage a request is billed for, and whether it is estimated: what the upstream
/// reported, else (an answer without usage) the prompt estimate and the output forwarded;
/// a broken stream at least what the client received.
fn metered(ctx: &Ctx, tap: Option<&ResponseTap>) -> (Usage, bool) {
    let reported = tap.and_then(|t| t.reported_usage());
    // No usage from the upstream: estimate what it may have billed. Nothing, if it never
    // answered; the prompt plus what was forwarded, if it did.
    let (mut usage, mut estimated) = match reported {
        Some(u) => (u, false),
        None if tap.is_some_and(|t| (200..300).contains(&t.status)) => {
            let out = tap.map_or(0, |t| t.estimated_output());
            (
                Usage {
                    input: ctx.estimate.input,
                    output: out,
                    ..Default::default()
                },
                true,
            )
        }
        None => (Usage::default(), false),
    };
    // A broken stream is billed for what the client received (it retries, and the retry is
    // billed as its own request).
    if let Some(out) = tap.and_then(|t| t.delivered_output(usage.output)) {
        if out > usage.output {
            usage.output = out;
            estimated = true;
        }
    }
    (usage, estimated)
}
