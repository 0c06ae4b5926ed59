//! Prometheus metrics. Label values are bounded: endpoints and statuses are fixed sets,
//! providers come from the config, and model labels are capped (beyond the cap a model is
//! counted as "other"). Nothing secret is ever a label.

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    Encoder, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};
use std::collections::HashSet;

const MAX_MODEL_LABELS: usize = 200;

pub static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_requests_total",
        "Requests by endpoint, provider, model and status",
        &["endpoint", "provider", "model", "status"]
    )
    .unwrap()
});

pub static LATENCY: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "tollgate_request_duration_seconds",
        "Time from request start to the end of the response",
        &["endpoint", "provider"],
        vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            300.0, 600.0
        ]
    )
    .unwrap()
});

pub static UPSTREAM_TTFB: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "tollgate_upstream_ttfb_seconds",
        "Time from request start to the first response byte from the upstream",
        &["provider"],
        vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
    )
    .unwrap()
});

pub static INFLIGHT_STREAMS: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!("tollgate_inflight_streams", "Streaming responses in flight").unwrap()
});

pub static INFLIGHT_REQUESTS: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!("tollgate_inflight_requests", "Proxied requests in flight").unwrap()
});

pub static UPSTREAM_ERRORS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_upstream_errors_total",
        "Upstream failures by provider and kind (connect, timeout, reset, status)",
        &["provider", "kind"]
    )
    .unwrap()
});

/// Calls to registered servers, through `/mcp` and from tool loops (`mcp_server_ids`), by
/// server (the registry bounds the set) and outcome (`ok`, `tool_error`, `rate_limited`,
/// `refused`, `timeout`, `failed`).
pub static MCP_CALLS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_mcp_calls_total",
        "MCP tool calls to registered servers (through /mcp and tool loops) by server and outcome",
        &["server", "outcome"]
    )
    .unwrap()
});

pub static MCP_CALL_LATENCY: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "tollgate_mcp_call_duration_seconds",
        "Time of an MCP tool call to a registered server, by server",
        &["server"],
        vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
    )
    .unwrap()
});

pub static AUTH_FAILURES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_auth_failures_total",
        "Refused credentials by reason",
        &["reason"]
    )
    .unwrap()
});

pub static TOKENS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_tokens_total",
        "Tokens metered by provider, model and kind (input, output, cached)",
        &["provider", "model", "kind"]
    )
    .unwrap()
});

pub static USAGE_WRITES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_usage_records_written_total",
        "Usage records made durable, by destination (store or spool)",
        &["to"]
    )
    .unwrap()
});

pub static BUDGET_REJECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_budget_rejections_total",
        "Requests refused by a budget, by scope",
        &["scope"]
    )
    .unwrap()
});

pub static RATE_LIMITED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_rate_limited_total",
        "Requests refused by a rate limit",
        &["kind"]
    )
    .unwrap()
});

pub static KEY_TOKENS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_key_tokens_total",
        "Tokens metered by key id and model (bounded labels)",
        &["key_id", "model"]
    )
    .unwrap()
});

pub static SPEND: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_spend_microdollars_total",
        "Metered spend in micro-dollars by key id and model (bounded labels)",
        &["key_id", "model"]
    )
    .unwrap()
});

pub static DEPLOYMENT_STATE: Lazy<IntGaugeVec> = Lazy::new(|| {
    register_int_gauge_vec!(
        "tollgate_deployment_state",
        "Circuit breaker of each deployment: 0 closed (serving), 1 half-open (probing), 2 open (ejected)",
        &["deployment", "provider"]
    )
    .unwrap()
});

pub static DEPLOYMENT_EJECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_deployment_ejections_total",
        "Times a deployment's circuit breaker opened",
        &["deployment"]
    )
    .unwrap()
});

pub static UPSTREAM_ATTEMPTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_upstream_attempts_total",
        "Attempts by deployment and outcome (ok, status_429, status_5xx, connect, timeout, io)",
        &["deployment", "outcome"]
    )
    .unwrap()
});

pub static RETRIES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_retries_total",
        "Failed attempts retried elsewhere, by kind (deployment: same model; fallback: another model) and reason",
        &["kind", "reason"]
    )
    .unwrap()
});

pub static RETRIES_DENIED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_retries_denied_total",
        "Retries not made although another deployment was left, by reason (budget, deadline)",
        &["reason"]
    )
    .unwrap()
});

pub static DISCOVERY_FAILURES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_model_discovery_failures_total",
        "Model list fetches that failed, by provider (the last good list is kept)",
        &["provider"]
    )
    .unwrap()
});

pub static DISCOVERED_MODELS: Lazy<IntGaugeVec> = Lazy::new(|| {
    register_int_gauge_vec!(
        "tollgate_model_discovery_models",
        "Models in each provider's last fetched list",
        &["provider"]
    )
    .unwrap()
});

pub static GUARDRAIL_VERDICTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_guardrail_verdicts_total",
        "Guardrail checks by profile, stage (input, output) and outcome (valid, flagged, inconclusive, unavailable)",
        &["profile", "stage", "outcome"]
    )
    .unwrap()
});

pub static GUARDRAIL_LATENCY: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "tollgate_guardrail_latency_seconds",
        "Time a guardrail check took, by profile",
        &["profile"],
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .unwrap()
});

pub static TOOL_CALLS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_tool_calls_total",
        "Gateway-run tool calls (web search, code execution) made by the tool loop, by endpoint",
        &["endpoint"]
    )
    .unwrap()
});

pub static ACCESS_LOG_DROPPED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_access_log_dropped_total",
        "Access lines not written, by reason (queue_full: the writer fell behind; write_error)",
        &["reason"]
    )
    .unwrap()
});

pub static STORE_UP: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "tollgate_store_up",
        "1 when this process holds a store that answers, else 0 (checked by the usage writer each second)"
    )
    .unwrap()
});

pub static USAGE_WRITE_LAG: Lazy<prometheus::Gauge> = Lazy::new(|| {
    prometheus::register_gauge!(
        "tollgate_usage_write_lag_seconds",
        "Age of the oldest usage record not yet in the store (0 when every record is)"
    )
    .unwrap()
});

pub static TRACES_WRITTEN: Lazy<prometheus::IntCounter> = Lazy::new(|| {
    prometheus::register_int_counter!("tollgate_traces_written_total", "Request traces stored")
        .unwrap()
});

pub static TRACES_DROPPED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_traces_dropped_total",
        "Request traces not stored, by reason (queue_full: the writer fell behind; write_error)",
        &["reason"]
    )
    .unwrap()
});

static SEEN_MODELS: Lazy<Mutex<HashSet<String>>> = Lazy::new(|| Mutex::new(HashSet::new()));
static SEEN_KEYS: Lazy<Mutex<HashSet<String>>> = Lazy::new(|| Mutex::new(HashSet::new()));
static SEEN_PROFILES: Lazy<Mutex<HashSet<String>>> = Lazy::new(|| Mutex::new(HashSet::new()));

/// Guardrail profiles counted by name (requests name their own; beyond this, "other").
const MAX_PROFILE_LABELS: usize = 50;

/// `value` while fewer than `cap` distinct values have been seen, else "other".
fn bounded(seen: &Mutex<HashSet<String>>, value: &str, cap: usize) -> String {
    if value.is_empty() {
        return "none".into();
    }
    let mut seen = seen.lock();
    if seen.contains(value) {
        return value.to_string();
    }
    if seen.len() < cap {
        seen.insert(value.to_string());
        value.to_string()
    } else {
        "other".into()
    }
}

/// The label to use for a model (capped).
pub fn model_label(model: &str) -> String {
    bounded(&SEEN_MODELS, model, MAX_MODEL_LABELS)
}

/// The label to use for a key id (capped; ids are public, secrets never are labels).
pub fn key_label(key_id: &str) -> String {
    bounded(&SEEN_KEYS, key_id, MAX_MODEL_LABELS)
}

/// The label to use for a guardrail profile (capped: a request names its own profiles).
pub fn profile_label(profile: &str) -> String {
    bounded(&SEEN_PROFILES, profile, MAX_PROFILE_LABELS)
}

/// Registers every metric so that `/metrics` lists them from the start.
/// Budget alert webhooks accepted by a target, by target (named in the config).
pub static ALERTS_SENT: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_alerts_sent_total",
        "Budget alert webhooks a target accepted, by target",
        &["target"]
    )
    .unwrap()
});

/// Budget alert webhook calls that failed, by target and whether it will be retried
/// (`retry`) or was given up on after the last attempt (`gave_up`).
pub static ALERTS_FAILED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_alerts_failed_total",
        "Budget alert webhook calls that failed, by target and outcome (retry, gave_up)",
        &["target", "outcome"]
    )
    .unwrap()
});

/// Budget alerts claimed by this instance and not yet sent to every target.
pub static ALERTS_PENDING: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "tollgate_alerts_pending",
        "Budget alerts claimed by this instance and not yet delivered"
    )
    .unwrap()
});

/// Registers the alert metrics (only when alerts are configured).
pub fn init_alerts() {
    Lazy::force(&ALERTS_SENT);
    Lazy::force(&ALERTS_FAILED);
    Lazy::force(&ALERTS_PENDING);
}

pub fn init() {
    Lazy::force(&REQUESTS);
    Lazy::force(&LATENCY);
    Lazy::force(&UPSTREAM_TTFB);
    Lazy::force(&INFLIGHT_STREAMS);
    Lazy::force(&INFLIGHT_REQUESTS);
    Lazy::force(&UPSTREAM_ERRORS);
    Lazy::force(&AUTH_FAILURES);
    Lazy::force(&TOKENS);
    Lazy::force(&USAGE_WRITES);
    Lazy::force(&BUDGET_REJECTIONS);
    Lazy::force(&RATE_LIMITED);
    Lazy::force(&SPEND);
    Lazy::force(&KEY_TOKENS);
    Lazy::force(&DEPLOYMENT_STATE);
    Lazy::force(&DEPLOYMENT_EJECTIONS);
    Lazy::force(&UPSTREAM_ATTEMPTS);
    Lazy::force(&RETRIES);
    Lazy::force(&RETRIES_DENIED);
    Lazy::force(&DISCOVERY_FAILURES);
    Lazy::force(&DISCOVERED_MODELS);
    Lazy::force(&GUARDRAIL_VERDICTS);
    Lazy::force(&GUARDRAIL_LATENCY);
    Lazy::force(&TOOL_CALLS);
    Lazy::force(&ACCESS_LOG_DROPPED);
    Lazy::force(&STORE_UP);
    Lazy::force(&USAGE_WRITE_LAG);
    Lazy::force(&TRACES_WRITTEN);
    Lazy::force(&TRACES_DROPPED);
}

/// The Prometheus text exposition of the default registry.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::with_capacity(8192);
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    buf
}
