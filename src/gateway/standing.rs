//! Telling clients where they stand, on every model answer (both forwarding paths, the tool
//! loop, and the gateway's own refusals):
//! - the rate limits of the key and its user ([`crate::ledger::standing`]) in the client's
//!   dialect: `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset in
//!   RFC 3339) for Messages, `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as
//!   a duration, `1s`, `6m0s`) for the OpenAI shapes; only for limits that exist;
//! - `x-tollgate-cost-usd`: the settled cost of a non-streamed answer;
//! - `x-tollgate-budget-remaining-usd`: the tightest remaining budget of the key and its
//!   user (after this answer's cost when it is known, else before it).
//!
//! The provider's own rate-limit headers describe the gateway's provider key, shared by all
//! its clients, not what binds this client: they are always moved to
//! `x-tollgate-provider-<name>`, so that no client paces itself on another's quota.

use pingora::http::ResponseHeader;

use super::{Ctx, Gateway};
use crate::records::{money::format_usd, period::rfc3339, Micros};
use crate::translate::Format;

/// Headers as the reply functions take them.
pub(super) type Headers = Vec<(&'static str, String)>;

impl Gateway {
    /// The standing headers for an answer to `ctx`'s request; `cost`: its settled cost
    /// (non-streamed answers), None when not known yet. Empty before authentication.
    pub(super) fn standing_headers(&self, ctx: &Ctx, cost: Option<Micros>) -> Headers {
        let Some(key) = ctx.key.as_ref() else {
            return Vec::new();
        };
        let ledger = &self.state.ledger;
        let now_ms = crate::clock::now_millis();
        let users = ledger.users.load();
        let user = ctx.user_id.as_ref().and_then(|u| users.get(u));
        let mut out = Vec::new();
        let rates = ledger.rate_standing(key, user.map(|u| &**u), now_ms);
        let anthropic = ctx.endpoint.format() == Format::Anthropic;
        for (w, names) in [
            (
                rates.requests,
                if anthropic { &ANTHROPIC[0] } else { &OPENAI[0] },
            ),
            (
                rates.tokens,
                if anthropic { &ANTHROPIC[1] } else { &OPENAI[1] },
            ),
        ] {
            let Some(w) = w else { continue };
            let reset = if anthropic {
                rfc3339((now_ms + w.reset_ms).div_ceil(1000))
            } else {
                duration(w.reset_ms)
            };
            out.push((names[0], w.limit.to_string()));
            out.push((names[1], w.remaining.to_string()));
            out.push((names[2], reset));
        }
        if let Some(c) = cost {
            out.push(("x-tollgate-cost-usd", format_usd(c)));
        }
        let now = now_ms / 1000;
        // The turns a tool loop settled already are in the spend; only this one is pending.
        let pending = cost.map(|c| c.saturating_sub(ctx.settled_micros));
        let remaining = match ctx.admission.as_ref() {
            Some(adm) => crate::ledger::standing::budget_remaining(adm, pending, now),
            None => ledger.budget_remaining_of(key, user.map(|u| &**u), now),
        };
        if let Some(r) = remaining {
            out.push(("x-tollgate-budget-remaining-usd", format_usd(r)));
        }
        out
    }

    /// `cost_in_stream: true` on a streamed request: the price its final usage event's cost
    /// is figured at (the deployment's that answers).
    pub(super) fn stream_cost(&self, ctx: &Ctx) -> Option<crate::meter::price::Price> {
        if !(self.state.cfg.cost_in_stream && ctx.stream) {
            return None;
        }
        ctx.admission.as_ref()?.price
    }

    /// Puts the standing headers on a forwarded answer's header (the provider's rate-limit
    /// headers moved aside first).
    pub(super) fn stand(&self, ctx: &Ctx, resp: &mut ResponseHeader, cost: Option<Micros>) {
        move_provider_headers(resp);
        for (k, v) in self.standing_headers(ctx, cost) {
            let _ = resp.insert_header(k, v);
        }
    }
}

/// (limit, remaining, reset) of requests, then tokens.
static OPENAI: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];
static ANTHROPIC: [[&str; 3]; 2] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
];

/// The provider's rate-limit headers, renamed `x-tollgate-provider-<name>`.
pub(super) fn move_provider_headers(resp: &mut ResponseHeader) {
    let names: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n.starts_with("x-ratelimit-") || n.starts_with("anthropic-ratelimit-")
        })
        .cloned()
        .collect();
    for n in names {
        let values: Vec<http::HeaderValue> = resp.headers.get_all(&n).iter().cloned().collect();
        resp.remove_header(&n);
        let moved = format!("x-tollgate-provider-{}", n.as_str());
        for v in values {
            let _ = resp.append_header(moved.clone(), v);
        }
    }
}

/// A reset in OpenAI's style: `250ms`, `1s`, `59s`, `1m5s`, `6m0s` (whole seconds, rounded up,
/// past the first second).
pub(super) fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(1000), "1s");
        assert_eq!(duration(1001), "2s");
        assert_eq!(duration(360_000), "6m0s");
        assert_eq!(duration(65_000), "1m5s");
        assert_eq!(duration(3_600_000), "1h0m0s");
    }

    #[test]
    fn provider_rate_limit_headers_are_moved_aside() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("x-ratelimit-remaining-requests", "4999")
            .unwrap();
        h.insert_header("anthropic-ratelimit-tokens-limit", "80000")
            .unwrap();
        h.insert_header("retry-after", "3").unwrap();
        move_provider_headers(&mut h);
        assert!(h.headers.get("x-ratelimit-remaining-requests").is_none());
        assert_eq!(
            h.headers
                .get("x-tollgate-provider-x-ratelimit-remaining-requests")
                .unwrap(),
            "4999"
        );
        assert_eq!(
            h.headers
                .get("x-tollgate-provider-anthropic-ratelimit-tokens-limit")
                .unwrap(),
            "80000"
        );
        assert_eq!(h.headers.get("retry-after").unwrap(), "3");
    }
}
