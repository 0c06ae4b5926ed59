//! Limits as the management API sets them: limit fields, USD amounts and model allow-lists
//! read from request bodies, and the allow-list check admission makes. The records
//! themselves are in [`crate::records`].

use serde_json::Value;

use crate::error::GatewayError;
use crate::records::{
    money::parse_usd,
    period::{parse_period, Alignment, Period},
    Limits, Micros, ScopedBudget,
};

/// Parses a USD amount given as a JSON number or string into micro-dollars.
pub fn parse_money(v: &Value, field: &str) -> Result<Micros, GatewayError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    parse_usd(&text).ok_or_else(|| {
        GatewayError::invalid(format!(
            "'{field}' must be a non-negative USD amount with at most 6 decimals."
        ))
        .with_param(field.to_string())
    })
}

/// Parses `alert_thresholds`: null (the config's default) or a list of percentages, each
/// 1 to 127 (an empty list: no alerts).
pub fn parse_thresholds(v: &Value) -> Result<Option<Vec<u8>>, GatewayError> {
    let bad = || {
        GatewayError::invalid(
            "'alert_thresholds' is null or a list of percentages from 1 to 127, e.g. [50, 80, 100].",
        )
        .with_param("alert_thresholds")
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                match i.as_u64() {
                    Some(p) if (1..=crate::records::alert::MAX_THRESHOLD as u64).contains(&p) => {
                        out.push(p as u8)
                    }
                    _ => return Err(bad()),
                }
            }
            out.sort_unstable();
            out.dedup();
            Ok(Some(out))
        }
        _ => Err(bad()),
    }
}

/// Applies the limit fields present in `obj` to `limits` (absent = keep, null = clear).
pub fn apply_limits(
    obj: &serde_json::Map<String, Value>,
    limits: &mut Limits,
    now: u64,
) -> Result<(), GatewayError> {
    let bad = |f: &str, m: String| GatewayError::invalid(m).with_param(f.to_string());
    if let Some(v) = obj.get("max_budget") {
        limits.max_budget_micros = if v.is_null() {
            None
        } else {
            Some(parse_money(v, "max_budget")?)
        };
        limits.budget_anchor = Some(now);
    }
    if let Some(v) = obj
        .get("budget_duration")
        .or_else(|| obj.get("budget_period"))
    {
        limits.budget_period = if v.is_null() {
            None
        } else {
            Some(parse_period(v).map_err(|m| bad("budget_duration", m))?)
        };
        limits.budget_anchor = Some(now);
    }
    if let Some(v) = obj.get("budget_alignment") {
        limits.budget_alignment = match v.as_str() {
            None if v.is_null() => None,
            Some("calendar") => Some(Alignment::Calendar),
            Some("rolling") => Some(Alignment::Rolling),
            _ => {
                return Err(bad(
                    "budget_alignment",
                    "'budget_alignment' is 'calendar' or 'rolling'.".into(),
                ))
            }
        };
    }
    if let Some(v) = obj.get("budget_id") {
        limits.budget_id = match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(bad("budget_id", "'budget_id' must be a string.".into())),
        };
    }
    if let Some(v) = obj.get("budgets") {
        limits.budgets = parse_budgets(v, &limits.budgets, now)?;
    }
    // Cost per minute: a budget of one-minute windows, reserved and settled like any other
    // (so it is exact, and refused with a 403 that says when the minute ends).
    if let Some(v) = obj.get("max_cost_per_minute") {
        limits.budgets.retain(|b| b.id != COST_PER_MINUTE);
        if !v.is_null() {
            limits.budgets.push(ScopedBudget {
                id: COST_PER_MINUTE.into(),
                max_micros: parse_money(v, "max_cost_per_minute")?,
                period: Period::Seconds(60),
                alignment: Alignment::Calendar,
                anchor: now,
                model: None,
            });
        }
    }
    if let Some(v) = obj.get("budget_override") {
        limits.budget_override = parse_override(v, limits, now)?;
    }
    if let Some(v) = obj.get("alert_thresholds") {
        limits.alert_thresholds = parse_thresholds(v)?;
    }
    for (f, slot) in [
        ("rpm_limit", &mut limits.rpm),
        ("tpm_limit", &mut limits.tpm),
    ] {
        if let Some(v) = obj.get(f).or_else(|| obj.get(&f[..3])) {
            *slot = match v {
                Value::Null => None,
                Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
                _ => return Err(bad(f, format!("'{f}' must be a positive integer."))),
            };
        }
    }
    Ok(())
}

/// The id of the budget `max_cost_per_minute` sets.
pub const COST_PER_MINUTE: &str = "cost-per-minute";

/// The most budgets one entity may have besides its inline one.
pub const MAX_BUDGETS: usize = 16;

const BUDGET_FIELDS: &[&str] = &[
    "id",
    "max_budget",
    "budget_duration",
    "budget_period",
    "period",
    "budget_alignment",
    "model",
];

/// Parses `budgets` (a list that replaces the current one; null clears it). An entry that
/// names the `id` of a current budget keeps that budget's id and, unless its period
/// changes, its anchor (a rolling window goes on); a new entry gets a fresh id.
fn parse_budgets(
    v: &Value,
    current: &[ScopedBudget],
    now: u64,
) -> Result<Vec<ScopedBudget>, GatewayError> {
    let bad = |f: String, m: String| GatewayError::invalid(m).with_param(f);
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) if a.len() <= MAX_BUDGETS => a,
        _ => {
            return Err(bad(
                "budgets".into(),
                format!("'budgets' must be a list of at most {MAX_BUDGETS} budgets ({{max_budget, budget_duration, budget_alignment, model}}) or null."),
            ))
        }
    };
    let mut out: Vec<ScopedBudget> = Vec::with_capacity(list.len());
    for (i, b) in list.iter().enumerate() {
        let f = |name: &str| format!("budgets[{i}].{name}");
        let Some(o) = b.as_object() else {
            return Err(bad(
                format!("budgets[{i}]"),
                "Each budget must be an object.".into(),
            ));
        };
        if let Some(k) = o.keys().find(|k| !BUDGET_FIELDS.contains(&k.as_str())) {
            return Err(bad(
                f(k),
                format!(
                    "Unknown field '{k}' in a budget. Allowed: {}.",
                    BUDGET_FIELDS.join(", ")
                ),
            ));
        }
        let max = o
            .get("max_budget")
            .ok_or_else(|| bad(f("max_budget"), "Each budget needs 'max_budget'.".into()))
            .and_then(|m| parse_money(m, &f("max_budget")))?;
        let period = match o
            .get("budget_duration")
            .or_else(|| o.get("budget_period"))
            .or_else(|| o.get("period"))
        {
            None => Period::Lifetime,
            Some(p) => parse_period(p).map_err(|m| bad(f("budget_duration"), m))?,
        };
        let alignment = match o.get("budget_alignment").map(|a| a.as_str()) {
            None | Some(Some("calendar")) => Alignment::Calendar,
            Some(Some("rolling")) => Alignment::Rolling,
            _ => {
                return Err(bad(
                    f("budget_alignment"),
                    "'budget_alignment' is 'calendar' or 'rolling'.".into(),
                ))
            }
        };
        let model =
            match o.get("model") {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) if !m.is_empty() && m.len() <= 256 => Some(m.clone()),
                _ => return Err(bad(
                    f("model"),
                    "'model' must be a model name, a 'prefix*' pattern, a provider, or a group."
                        .into(),
                )),
            };
        let id = match o.get("id") {
            None | Some(Value::Null) => crate::ids::generate_id("bud_"),
            Some(Value::String(id))
                if !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                id.clone()
            }
            _ => {
                return Err(bad(
                    f("id"),
                    "A budget's 'id' is 1-64 letters, digits or -_.".into(),
                ))
            }
        };
        if out.iter().any(|b| b.id == id) {
            return Err(bad(f("id"), format!("Two budgets have the id '{id}'.")));
        }
        let anchor = current
            .iter()
            .find(|c| c.id == id && c.period == period && c.alignment == alignment)
            .map_or(now, |c| c.anchor);
        out.push(ScopedBudget {
            id,
            max_micros: max,
            period,
            alignment,
            anchor,
            model,
        });
    }
    Ok(out)
}

/// Parses `budget_override`: `{max_budget, periods}` puts `max_budget` in place of the inline
/// budget's until `periods` budget windows (the current one first) have ended; null ends it.
fn parse_override(
    v: &Value,
    limits: &Limits,
    now: u64,
) -> Result<Option<crate::records::BudgetOverride>, GatewayError> {
    let bad = |f: &str, m: &str| GatewayError::invalid(m.to_string()).with_param(f.to_string());
    let o = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(bad(
                "budget_override",
                "'budget_override' must be {max_budget, periods} or null.",
            ))
        }
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["max_budget", "periods"].contains(&k.as_str()))
    {
        return Err(bad(
            &format!("budget_override.{k}"),
            "A budget override takes 'max_budget' and 'periods'.",
        ));
    }
    let max = o
        .get("max_budget")
        .ok_or_else(|| {
            bad(
                "budget_override.max_budget",
                "The override needs 'max_budget'.",
            )
        })
        .and_then(|m| parse_money(m, "budget_override.max_budget"))?;
    let periods = o
        .get("periods")
        .and_then(Value::as_u64)
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| {
            bad(
                "budget_override.periods",
                "'periods' is how many budget windows the override lasts: 1 to 1000.",
            )
        })?;
    let period = limits.budget_period.unwrap_or(Period::Lifetime);
    let (alignment, anchor) = (
        limits.budget_alignment.unwrap_or_default(),
        limits.budget_anchor.unwrap_or(0),
    );
    let mut until = now;
    for _ in 0..periods {
        match crate::records::period::window(period, alignment, anchor, until).1 {
            Some(end) => until = end,
            None => {
                return Err(bad(
                    "budget_override",
                    "A lifetime budget has no periods to override; raise it, or top it up.",
                ))
            }
        }
    }
    Ok(Some(crate::records::BudgetOverride {
        max_micros: max,
        until,
    }))
}

/// Whether the pattern `p` (exact, or `prefix*`) names one of `cands`.
pub fn pattern_matches(p: &str, cands: &[&str]) -> bool {
    match p.strip_suffix('*') {
        Some(prefix) => cands.iter().any(|c| c.starts_with(prefix)),
        None => cands.contains(&p),
    }
}

/// Parses `allowed_models` (absent → None meaning "keep"; null → Some(None) "clear").
pub fn parse_allowed_models(
    v: Option<&Value>,
) -> Result<Option<Option<Vec<String>>>, GatewayError> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= 256 => out.push(s.to_string()),
                    _ => {
                        return Err(GatewayError::invalid(
                            "'allowed_models' must be a list of model names.",
                        )
                        .with_param("allowed_models"))
                    }
                }
            }
            Ok(Some(Some(out)))
        }
        Some(_) => Err(GatewayError::invalid(
            "'allowed_models' must be a list of model names or null.",
        )
        .with_param("allowed_models")),
    }
}

/// Whether `allowed` (None = anything) permits the routed model. Entries match the client's
/// selector, the resolved `provider:model`, the bare upstream model, or a `prefix*` pattern.
pub fn model_allowed(
    allowed: &Option<Vec<String>>,
    client_model: &str,
    provider: &str,
    upstream_model: &str,
) -> bool {
    let Some(list) = allowed else { return true };
    let full = format!("{provider}:{upstream_model}");
    let cands = [client_model, full.as_str(), upstream_model];
    list.iter().any(|p| pattern_matches(p, &cands))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::period::{period_label, Period};
    use serde_json::json;

    #[test]
    fn periods() {
        assert_eq!(parse_period(&json!("monthly")).unwrap(), Period::Monthly);
        assert_eq!(
            parse_period(&json!("30d")).unwrap(),
            Period::Seconds(30 * 86_400)
        );
        assert_eq!(parse_period(&json!(3600)).unwrap(), Period::Seconds(3600));
        assert!(parse_period(&json!("0d")).is_err());
        assert!(parse_period(&json!("5y")).is_err());
        assert_eq!(period_label(Period::Seconds(2 * 86_400)), "2d");
    }

    #[test]
    fn limits_apply_and_clear() {
        let mut l = Limits::default();
        let obj = json!({"max_budget": 10.5, "budget_duration": "daily", "rpm_limit": 60})
            .as_object()
            .unwrap()
            .clone();
        apply_limits(&obj, &mut l, 100).unwrap();
        assert_eq!(l.max_budget_micros, Some(10_500_000));
        assert_eq!(l.inline_limit().unwrap().period, Period::Daily);
        assert_eq!(l.rpm, Some(60));
        let obj = json!({"max_budget": null, "rpm_limit": null})
            .as_object()
            .unwrap()
            .clone();
        apply_limits(&obj, &mut l, 100).unwrap();
        assert!(l.inline_limit().is_none() && l.rpm.is_none());
        let obj = json!({"max_budget": -1}).as_object().unwrap().clone();
        assert_eq!(
            apply_limits(&obj, &mut l, 100)
                .unwrap_err()
                .param
                .as_deref(),
            Some("max_budget")
        );
    }

    #[test]
    fn allow_lists() {
        let a = Some(vec![
            "openai:gpt-4o*".to_string(),
            "claude-sonnet-4-6".to_string(),
        ]);
        assert!(model_allowed(&a, "gpt-4o-mini", "openai", "gpt-4o-mini"));
        assert!(model_allowed(
            &a,
            "sonnet",
            "anthropic",
            "claude-sonnet-4-6"
        ));
        assert!(!model_allowed(&a, "gpt-4.1", "openai", "gpt-4.1"));
        assert!(model_allowed(&None, "x", "y", "z"));
        assert!(!model_allowed(&Some(vec![]), "x", "y", "z"));
    }
}
