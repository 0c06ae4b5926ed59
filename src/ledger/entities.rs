//! Users, named budgets and the limits that keys and users carry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::budget::Limit;
use super::period::{Alignment, Period};
use crate::error::GatewayError;
use crate::meter::price::{parse_usd, Micros};

/// Spending and rate limits, carried inline by a key or a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// A named budget (`/v1/budgets`) to use instead of the inline `max_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_micros: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_alignment: Option<Alignment>,
    /// Start of rolling windows: when the limit was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_anchor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

impl Limits {
    /// The management API's view of these limits.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "max_budget": self.max_budget_micros.map(crate::meter::price::format_usd),
            "budget_period": self.budget_period.map(period_label),
            "budget_alignment": self.budget_alignment.map(|a| match a { Alignment::Calendar => "calendar", Alignment::Rolling => "rolling" }),
            "budget_id": self.budget_id,
            "rpm_limit": self.rpm,
            "tpm_limit": self.tpm,
        })
    }

    /// The inline spending limit, if any.
    pub fn inline_limit(&self) -> Option<Limit> {
        self.max_budget_micros.map(|m| Limit {
            max_micros: m,
            period: self.budget_period.unwrap_or(Period::Lifetime),
            alignment: self.budget_alignment.unwrap_or_default(),
            anchor: self.budget_anchor.unwrap_or(0),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub metadata: Value,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRecord {
    pub budget_id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub max_budget_micros: Micros,
    pub period: Period,
    #[serde(default)]
    pub alignment: Alignment,
    pub created_at: u64,
}

impl BudgetRecord {
    pub fn limit(&self, anchor: u64) -> Limit {
        Limit {
            max_micros: self.max_budget_micros,
            period: self.period,
            alignment: self.alignment,
            anchor,
        }
    }
}

/// Parses a budget period: `daily`, `weekly`, `monthly`, `lifetime`/`none`, or a duration
/// such as `30d`, `12h`, `90m`, `3600s` or a number of seconds.
pub fn parse_period(v: &Value) -> Result<Period, String> {
    let s = match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n
            .as_u64()
            .map(|n| format!("{n}s"))
            .ok_or("a period must be positive")?,
        _ => return Err("a period is a string such as 'monthly' or '30d'".into()),
    };
    let p = match s.as_str() {
        "daily" | "day" | "1d" => Period::Daily,
        "weekly" | "week" | "7d" => Period::Weekly,
        "monthly" | "month" => Period::Monthly,
        "lifetime" | "none" | "never" => Period::Lifetime,
        _ => {
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().map_err(|_| {
                format!(
                    "'{s}' is not a period (daily, weekly, monthly, lifetime, or e.g. 30d, 12h)"
                )
            })?;
            let mult = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                _ => {
                    return Err(format!(
                        "'{s}': unknown unit '{unit}' (use s, m, h, d or w)"
                    ))
                }
            };
            if n == 0 {
                return Err("a period must be longer than zero".into());
            }
            Period::Seconds(n * mult)
        }
    };
    Ok(p)
}

pub fn period_label(p: Period) -> String {
    match p {
        Period::Lifetime => "lifetime".into(),
        Period::Daily => "daily".into(),
        Period::Weekly => "weekly".into(),
        Period::Monthly => "monthly".into(),
        Period::Seconds(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        Period::Seconds(s) if s % 3600 == 0 => format!("{}h", s / 3600),
        Period::Seconds(s) => format!("{s}s"),
    }
}

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
