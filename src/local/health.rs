//! `GET /health`, `/health/live`, `/health/ready`, and Otari's `/health/liveness` and
//! `/health/readiness`: whether this instance can serve, and its deployments' breakers.

use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use super::{Answer, Request};
use crate::state::State;

pub fn health(state: &State, req: &Request<'_>) -> Answer {
    let path = req.path;
    if path == "/health/liveness" {
        // Otari answers its liveness probe with this JSON string.
        return Answer::json(200, &json!("I'm alive!"));
    }
    let readiness_probe = path.ends_with("/ready") || path.ends_with("/readiness");
    let otari_shape = path.ends_with("/readiness");
    let store_open = state.store.get().is_some_and(|st| st.healthy());
    // A shared store (PostgreSQL) that is down under the outage policy means inference is
    // refused: readiness says so, so a load balancer takes this instance out.
    let shared = state.ledger.shared.get();
    let refusing = shared.is_some_and(|c| c.check_outage().is_err());
    let ready = (store_open || state.snapshot_loaded.load(Ordering::Relaxed)) && !refusing;
    let store = match (shared.and_then(|c| c.down_for_ms()), store_open) {
        (Some(_), _) => "unreachable",
        (None, true) => "open",
        (None, false) => "waiting",
    };
    let now = std::time::Instant::now();
    let deployments: Vec<Value> = state
        .router
        .health()
        .iter()
        .map(|h| {
            let snap = h.snapshot(now);
            json!({
                "id": h.id,
                "provider": h.provider,
                "state": snap.state.label(),
                "consecutive_failures": snap.consecutive_failures,
                "retry_in_ms": snap.retry_in.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let providers: Vec<String> = state.router.providers().map(|p| p.name.clone()).collect();
    let mut warnings = Vec::new();
    if providers.is_empty() {
        warnings.push(crate::config::NO_PROVIDER_HINT);
    }
    let mut v = json!({
        "status": if refusing { "unavailable" } else if ready { "ok" } else { "starting" },
        "store": store,
        "store_down_ms": shared.and_then(|c| c.down_for_ms()),
        "keys": state.keys.len(),
        "providers": providers,
        "warnings": warnings,
        // Circuit breakers; an open one is ejected (informational: readiness does not
        // depend on providers, which every instance shares).
        "deployments": deployments,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if otari_shape {
        v["status"] = json!(if ready { "healthy" } else { "unhealthy" });
        v["database"] = json!(if store_open {
            "connected"
        } else {
            "unavailable"
        });
    }
    let status = if readiness_probe && !ready { 503 } else { 200 };
    Answer::json(status, &v)
}
