//! `tollgate usage`: spend and tokens for a period, from `/v1/usage`: totals per key (or
//! user, session, model, provider, day), or with `--records` the records themselves; as a table, or
//! `--json` / `--csv` for scripts.

use serde_json::Value;

use super::api::{with_query, Api};
use super::render::{self, cell, csv_line, Table};
use crate::records::period::{parse_time, rfc3339};

#[derive(clap::Args, Debug, Clone)]
pub struct UsageArgs {
    /// Start (2026-11-01, RFC 3339 or Unix seconds) [default: 30 days ago].
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive [default: now].
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    key_id: Option<String>,
    #[arg(long)]
    user_id: Option<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    /// A client session (Claude Code's `x-claude-code-session-id`, Codex's `session-id`).
    #[arg(long)]
    session_id: Option<String>,
    /// Totals per key, user, end_user, session, model, provider, day or hour.
    #[arg(long, default_value = "key", value_name = "DIMENSION")]
    group_by: String,
    /// The records themselves instead of totals.
    #[arg(long)]
    records: bool,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

enum Format {
    Table,
    Json,
    Csv,
}

fn seconds(v: &Option<String>, default: u64) -> Result<u64, String> {
    match v {
        None => Ok(default),
        Some(s) => parse_time(s)
            .ok_or_else(|| format!("'{s}' is not a date, RFC 3339 time or Unix seconds")),
    }
}

pub async fn run(api: &mut Api, a: UsageArgs, as_json: bool) -> Result<(), String> {
    let now = crate::clock::now_secs();
    let from = seconds(&a.from, now.saturating_sub(30 * 86_400))?;
    let to = seconds(&a.to, now + 1)?;
    let format = match (as_json, a.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Table,
    };
    let mut q: Vec<(&str, String)> = vec![
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("key_id", a.key_id.clone().unwrap_or_default()),
        ("user_id", a.user_id.clone().unwrap_or_default()),
        ("model", a.model.clone().unwrap_or_default()),
        ("provider", a.provider.clone().unwrap_or_default()),
        ("session_id", a.session_id.clone().unwrap_or_default()),
    ];
    let period = format!("usage from {} to {}\n\n", rfc3339(from), rfc3339(to));
    if a.records {
        // JSON lines and CSV come from the gateway as they are; the table reads JSON lines.
        q.push((
            "format",
            if matches!(format, Format::Csv) {
                "csv"
            } else {
                "jsonl"
            }
            .into(),
        ));
        let text = api.text(&with_query("/v1/usage", &q)).await?;
        return match format {
            Format::Json | Format::Csv => render::emit(&text),
            Format::Table => render::emit(&format!("{period}{}", records_table(&text)?)),
        };
    }
    q.push(("group_by", a.group_by.clone()));
    let v = api.json("GET", &with_query("/v1/usage", &q), None).await?;
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    let cells = |t: &Value| {
        vec![
            cell(&t["requests"]),
            cell(&t["prompt_tokens"]),
            cell(&t["completion_tokens"]),
            cell(&t["cached_tokens"]),
            cell(&t["total_tokens"]),
            cell(&t["cost"]),
            cell(&t["errors"]),
        ]
    };
    match format {
        Format::Json => render::emit(&render::json(&v)),
        Format::Csv => {
            let mut out = csv_line(
                &[
                    a.group_by.as_str(),
                    "requests",
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "total_tokens",
                    "cost",
                    "errors",
                ]
                .map(String::from),
            );
            for r in &rows {
                let mut line = vec![cell(&r["group"])];
                line.extend(cells(r));
                out.push_str(&csv_line(&line));
            }
            render::emit(&out)
        }
        Format::Table => {
            let mut t = Table::new(&[
                &a.group_by,
                ">requests",
                ">prompt",
                ">completion",
                ">cached",
                ">total",
                ">cost USD",
                ">errors",
            ]);
            for r in &rows {
                let mut line = vec![cell(&r["group"])];
                line.extend(cells(r));
                t.row(line);
            }
            let mut total = vec!["TOTAL".to_string()];
            total.extend(cells(&v["totals"]));
            t.row(total);
            render::emit(&format!("{period}{}", t.render()))
        }
    }
}

/// Usage records (JSON lines) as a table.
fn records_table(jsonl: &str) -> Result<String, String> {
    let mut t = Table::new(&[
        "time",
        "key",
        "user",
        "model",
        ">prompt",
        ">completion",
        ">cost USD",
        ">status",
        ">ms",
    ]);
    for l in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value =
            serde_json::from_str(l).map_err(|e| format!("a usage record is not JSON: {e}"))?;
        t.row(vec![
            cell(&r["timestamp"]),
            cell(&r["key_id"]),
            cell(&r["user_id"]),
            cell(&r["model"]),
            cell(&r["prompt_tokens"]),
            cell(&r["completion_tokens"]),
            cell(&r["cost"]),
            cell(&r["status"]),
            cell(&r["latency_ms"]),
        ]);
    }
    Ok(t.render())
}
