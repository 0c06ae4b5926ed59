//! `GET /v1/usage`: usage records with filters, grouping and export.
//!
//! Query: `key_id`, `user_id`, `end_user`, `model`, `provider`, `endpoint`, `session_id`,
//! `status`, `from` / `to` (RFC 3339 or Unix seconds), `group_by` (`key`, `user`,
//! `end_user`, `session`, `model`, `provider`, `day`, `hour`),
//! `format` (`json`, `jsonl`, `csv`), `limit` and `cursor` for pages of records.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::{internal, Reply, Req, Resp};
use crate::error::GatewayError;
use crate::records::{
    money::format_usd,
    period::{parse_time, rfc3339},
    UsageRecord,
};
use crate::state::State;
use crate::store::{Store, UsageFilter};

/// The most records one export or grouping scans.
const MAX_SCAN: usize = 1_000_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
    pub cost_micros: u64,
    pub errors: u64,
}

impl Totals {
    pub fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cached_tokens += r.cached_tokens;
        self.total_tokens += r.total_tokens;
        self.cost_micros += r.cost_micros;
        if r.status >= 400 || r.status == 0 {
            self.errors += 1;
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.total_tokens,
            "cost": format_usd(self.cost_micros),
            "errors": self.errors,
        })
    }
}

/// The group a record falls in for `group_by`.
pub fn group_key(r: &UsageRecord, by: &str) -> String {
    match by {
        "key" => r.key_id.clone().unwrap_or_else(|| "-".into()),
        "user" => r.user_id.clone().unwrap_or_else(|| "-".into()),
        "end_user" => r.end_user.clone().unwrap_or_else(|| "-".into()),
        "session" => r.session_id.clone().unwrap_or_else(|| "-".into()),
        "model" => r.model.clone(),
        "provider" => r.provider.clone(),
        "day" => rfc3339(r.ts_ms / 1000)[..10].to_string(),
        "hour" => format!("{}:00", &rfc3339(r.ts_ms / 1000)[..13]),
        _ => String::new(),
    }
}

pub fn filter_from(req: &Req) -> Result<UsageFilter, GatewayError> {
    let time = |k: &str| -> Result<Option<u64>, GatewayError> {
        match req.q(k) {
            None => Ok(None),
            Some(v) => parse_time(v).map(|s| Some(s * 1000)).ok_or_else(|| {
                GatewayError::invalid(format!(
                    "'{k}' must be a date (2026-11-01), an RFC 3339 UTC time or Unix seconds."
                ))
                .with_param(k.to_string())
            }),
        }
    };
    let s = |k: &str| req.q(k).map(String::from);
    Ok(UsageFilter {
        key_id: s("key_id"),
        user_id: s("user_id"),
        end_user: s("end_user"),
        model: s("model"),
        provider: s("provider"),
        endpoint: s("endpoint"),
        session_id: s("session_id"),
        status: match req.q("status") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                GatewayError::invalid("'status' must be an HTTP status code.").with_param("status")
            })?),
        },
        from_ms: time("from")?,
        to_ms: time("to")?,
    })
}

/// Scans every record matching `f` (bounded by `MAX_SCAN`).
pub async fn scan(
    store: &dyn Store,
    f: &UsageFilter,
    mut each: impl FnMut(UsageRecord),
) -> Result<(), GatewayError> {
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = store
            .query_usage(f, cursor.as_deref(), 5000)
            .await
            .map_err(internal)?;
        seen += page.records.len();
        for r in page.records {
            each(r);
        }
        match page.next_cursor {
            Some(c) if seen < MAX_SCAN => cursor = Some(c),
            _ => return Ok(()),
        }
    }
}

pub fn record_json(r: &UsageRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    // Storage leaves empty fields out; the API shows every field.
    if let Some(m) = v.as_object_mut() {
        for (k, d) in [
            ("key_id", Value::Null),
            ("user_id", Value::Null),
            ("end_user", Value::Null),
            ("session_id", Value::Null),
            ("error", Value::Null),
            ("ttft_ms", Value::Null),
            ("stream", json!(false)),
            ("estimated", json!(false)),
        ] {
            m.entry(k).or_insert(d);
        }
        for k in [
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost_micros",
            "latency_ms",
        ] {
            m.entry(k).or_insert(json!(0));
        }
    }
    v["timestamp"] = json!(rfc3339(r.ts_ms / 1000));
    v["cost"] = json!(format_usd(r.cost_micros));
    v
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "timestamp",
    "key_id",
    "user_id",
    "end_user",
    "endpoint",
    "provider",
    "model",
    "upstream_model",
    "session_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
    "status",
    "error",
    "latency_ms",
    "ttft_ms",
    "stream",
    "estimated",
];

fn csv_field(s: &str) -> String {
    // Also defuse spreadsheet formulas in user-controlled text.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn csv_row(r: &UsageRecord) -> String {
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    let cells = [
        r.id.clone(),
        rfc3339(r.ts_ms / 1000),
        o(&r.key_id),
        o(&r.user_id),
        o(&r.end_user),
        r.endpoint.clone(),
        r.provider.clone(),
        r.model.clone(),
        r.upstream_model.clone(),
        o(&r.session_id),
        r.prompt_tokens.to_string(),
        r.completion_tokens.to_string(),
        r.cached_tokens.to_string(),
        r.total_tokens.to_string(),
        format_usd(r.cost_micros),
        r.status.to_string(),
        o(&r.error),
        r.latency_ms.to_string(),
        r.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
        r.stream.to_string(),
        r.estimated.to_string(),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    if req.method != "GET" || req.segs.len() > 1 {
        return Err(super::no_route(req));
    }
    let f = filter_from(req)?;
    let store = super::store_of(state)?;
    let format = req.q("format").unwrap_or("json");
    if let Some(by) = req.q("group_by") {
        if ![
            "key", "user", "end_user", "session", "model", "provider", "day", "hour",
        ]
        .contains(&by)
        {
            return Err(GatewayError::invalid(
                "'group_by' is one of key, user, end_user, session, model, provider, day, hour.",
            )
            .with_param("group_by"));
        }
        let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
        let mut total = Totals::default();
        scan(store.as_ref(), &f, |r| {
            groups.entry(group_key(&r, by)).or_default().add(&r);
            total.add(&r);
        })
        .await?;
        let data: Vec<Value> = groups
            .iter()
            .map(|(g, t)| {
                let mut v = t.json();
                v["group"] = json!(g);
                v
            })
            .collect();
        return Ok(Resp::json(
            200,
            json!({"object": "usage.summary", "group_by": by, "data": data, "totals": total.json()}),
        ));
    }
    match format {
        "jsonl" | "csv" => {
            let mut out = String::new();
            if format == "csv" {
                out.push_str(&CSV_COLUMNS.join(","));
                out.push('\n');
            }
            scan(store.as_ref(), &f, |r| {
                if format == "csv" {
                    out.push_str(&csv_row(&r));
                } else {
                    out.push_str(&record_json(&r).to_string());
                    out.push('\n');
                }
            })
            .await?;
            let ct = if format == "csv" {
                "text/csv; charset=utf-8"
            } else {
                "application/x-ndjson"
            };
            Ok(Resp {
                status: 200,
                content_type: ct,
                body: out.into(),
            })
        }
        "json" => {
            let page = store
                .query_usage(&f, req.q("cursor"), req.limit()?)
                .await
                .map_err(internal)?;
            let mut totals = Totals::default();
            page.records.iter().for_each(|r| totals.add(r));
            let data: Vec<Value> = page.records.iter().map(record_json).collect();
            Ok(Resp::json(
                200,
                json!({"object": "list", "data": data, "next_cursor": page.next_cursor, "page_totals": totals.json()}),
            ))
        }
        _ => Err(GatewayError::invalid("'format' is json, jsonl or csv.").with_param("format")),
    }
}
