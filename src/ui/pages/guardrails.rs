//! Guardrails: the configured service, policies (and which apply to every request), and the
//! recent verdicts from the usage records.

use serde_json::{json, Value};

use super::{Audience, Page};
use crate::guardrails::{Entry, OnUnavailable};
use crate::state::State;

pub const PAGE: Page = Page {
    slug: "guardrails",
    title: "Guardrails",
    audience: Audience::Operators,
    body: r#"<section class="cards" id="cards"></section>
<section><h2>Policies</h2><p>Attach them to keys or users with <code>guardrail_policies</code>; the global ones apply to every request.</p><div id="policies"></div></section>
<section><h2>Recent verdicts (last 24 hours)</h2><div id="verdicts"></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/guardrails.js"),
};

/// A service URL without what could be a secret in it (user info, query).
fn shown_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            let _ = p.set_username("");
            let _ = p.set_password(None);
            p.set_query(None);
            p.to_string()
        }
        Err(_) => "(invalid URL)".into(),
    }
}

fn entry(e: &Entry) -> Value {
    json!({
        "profile": e.profile,
        "mode": e.mode.as_str(),
        "on": match (e.input, e.output) { (true, true) => "both", (false, true) => "output", _ => "input" },
        "scope": e.scope.as_str(),
        "on_unavailable": match e.on_unavailable { OnUnavailable::Block => "block", OnUnavailable::Monitor => "monitor" },
        "url": e.url.as_deref().map(shown_url),
        "hold_back": e.hold_back,
        "restore": e.restore,
    })
}

/// `GET /ui/api/guardrails`: the settings as the page shows them.
pub fn view(state: &State) -> Value {
    let g = &state.cfg.guardrails;
    let policies: Vec<Value> = g
        .policies
        .iter()
        .map(|(name, entries)| {
            json!({
                "name": name,
                "global": g.global.contains(name),
                "entries": entries.iter().map(entry).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "url": g.url.as_deref().map(shown_url),
        "timeout_ms": g.timeout.as_millis() as u64,
        "cache_ttl_secs": g.cache_ttl.map(|d| d.as_secs()),
        "global": g.global,
        "policies": policies,
    })
}
