//! Limits as the management API sets them: limit fields, USD amounts and model allow-lists
//! read from request bodies, and the allow-list check admission makes. The records
//! themselves are in [`crate::records`].

use serde_json::Value;

use crate::error::GatewayError;
use crate::records::{
    money::parse_usd,
    period::{parse_period, Alignment},
    Limits, Micros,
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
    list.iter().any(|p| {
        let cands = [client_model, full.as_str(), upstream_model];
        match p.strip_suffix('*') {
            Some(prefix) => cands.iter().any(|c| c.starts_with(prefix)),
            None => cands.iter().any(|c| *c == p),
        }
    })
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
