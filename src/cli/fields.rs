//! Command-line flags that become fields of a management request body. A flag left out
//! leaves the field alone; `--clear FIELD` sets it to null (removes the limit).

use serde_json::{json, Map, Value};

/// Spending and rate limits, shared by keys and users.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Budget in USD, e.g. 5 or 12.50.
    #[arg(long, value_name = "USD")]
    pub max_budget: Option<String>,
    /// daily, weekly, monthly, lifetime, or a duration such as 30d or 12h.
    #[arg(long, value_name = "PERIOD")]
    pub budget_duration: Option<String>,
    /// calendar (UTC boundaries) or rolling (from when the limit was set).
    #[arg(long, value_name = "ALIGNMENT", value_parser = ["calendar", "rolling"])]
    pub budget_alignment: Option<String>,
    /// A named budget (see `tollgate budgets`) to share.
    #[arg(long, value_name = "BUDGET_ID")]
    pub budget_id: Option<String>,
    /// Requests per minute.
    #[arg(long, value_name = "N")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[arg(long, value_name = "N")]
    pub tpm_limit: Option<u64>,
    /// Models this may use: selectors, provider:model, or prefix* (comma-separated).
    #[arg(long, value_name = "MODELS", value_delimiter = ',')]
    pub allowed_models: Option<Vec<String>>,
    /// Gateway tool policy, JSON merged by tool, e.g.
    /// '{"web_search":{"max_calls":3},"code_execution":{"allowed":false}}'.
    #[arg(long, value_name = "JSON", value_parser = tool_policy)]
    pub tools: Option<Value>,
    /// MCP policy, JSON merged by server: which registered MCP servers and tools (names or
    /// `*` patterns) this may use through /mcp, and calls per minute by tool, e.g.
    /// '{"docs":{"tools":["search*"],"rate_limits":{"search*":30}}}'.
    #[arg(long, value_name = "JSON", value_parser = tool_policy)]
    pub mcp: Option<Value>,
    /// Guardrail policies (named under `guardrails.policies` in the config) run on every
    /// request (comma-separated).
    #[arg(long, value_name = "POLICIES", value_delimiter = ',')]
    pub guardrail_policies: Option<Vec<String>>,
    /// Removes a setting (repeatable): max_budget, budget_duration, budget_alignment,
    /// budget_id, rpm_limit, tpm_limit, allowed_models, tools, mcp, guardrail_policies; for keys
    /// also expires_at, name, user_id.
    #[arg(long, value_name = "FIELD", value_parser = CLEARABLE)]
    pub clear: Vec<String>,
}

const CLEARABLE: [&str; 13] = [
    "user_id",
    "max_budget",
    "budget_duration",
    "budget_alignment",
    "budget_id",
    "rpm_limit",
    "tpm_limit",
    "allowed_models",
    "tools",
    "mcp",
    "guardrail_policies",
    "expires_at",
    "name",
];

impl LimitArgs {
    pub fn apply(&self, body: &mut Map<String, Value>) {
        set(
            body,
            "max_budget",
            self.max_budget.as_ref().map(|v| json!(v)),
        );
        set(
            body,
            "budget_duration",
            self.budget_duration.as_ref().map(|v| json!(v)),
        );
        set(
            body,
            "budget_alignment",
            self.budget_alignment.as_ref().map(|v| json!(v)),
        );
        set(body, "budget_id", self.budget_id.as_ref().map(|v| json!(v)));
        set(body, "rpm_limit", self.rpm_limit.map(|v| json!(v)));
        set(body, "tpm_limit", self.tpm_limit.map(|v| json!(v)));
        set(
            body,
            "allowed_models",
            self.allowed_models.as_ref().map(|v| json!(v)),
        );
        set(body, "tools", self.tools.clone());
        set(body, "mcp", self.mcp.clone());
        set(
            body,
            "guardrail_policies",
            self.guardrail_policies.as_ref().map(|v| json!(v)),
        );
        for f in &self.clear {
            body.insert(f.clone(), Value::Null);
        }
    }
}

/// Parses `--tools` as a JSON object (the server validates its entries).
fn tool_policy(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err("--tools must be a JSON object, e.g. '{\"web_search\":{\"max_calls\":3}}'".into()),
    }
}

/// Puts `v` under `k` when the flag was given.
pub fn set(body: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        body.insert(k.to_string(), v);
    }
}

/// Parses `--metadata` as a JSON object.
pub fn metadata(s: &Option<String>) -> Result<Option<Value>, String> {
    match s {
        None => Ok(None),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err("--metadata must be a JSON object, e.g. '{\"team\":\"a\"}'".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_flags_become_fields_and_clear_sets_null() {
        let a = LimitArgs {
            max_budget: Some("5".into()),
            rpm_limit: Some(60),
            allowed_models: Some(vec!["gpt-4o*".into(), "claude*".into()]),
            guardrail_policies: Some(vec!["agents".into()]),
            clear: vec!["tpm_limit".into()],
            ..Default::default()
        };
        let mut b = Map::new();
        a.apply(&mut b);
        assert_eq!(
            Value::Object(b),
            json!({"max_budget": "5", "rpm_limit": 60, "allowed_models": ["gpt-4o*", "claude*"],
                "guardrail_policies": ["agents"], "tpm_limit": null})
        );
    }

    #[test]
    fn tools_flag_takes_a_json_object() {
        let v = tool_policy(r#"{"web_search":{"max_calls":3}}"#).unwrap();
        let a = LimitArgs {
            tools: Some(v),
            ..Default::default()
        };
        let mut b = Map::new();
        a.apply(&mut b);
        assert_eq!(b["tools"], json!({"web_search": {"max_calls": 3}}));
        assert!(tool_policy("[1]").is_err());
        assert!(tool_policy("web_search").is_err());
    }
}
