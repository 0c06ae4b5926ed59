//! Limits: the spending limit of an account, the inline limits a key or user carries, and
//! the user and named-budget records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::money::{format_usd, Micros};
use super::period::{period_label, window, Alignment, Period};

/// A spending limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub max_micros: Micros,
    pub period: Period,
    #[serde(default)]
    pub alignment: Alignment,
    /// Start of the first rolling window (creation time).
    pub anchor: u64,
    /// The alert thresholds of this budget (unset: the config's `alerts.thresholds`).
    /// Derived from the records each time, never stored.
    #[serde(skip)]
    pub alerts: super::alert::AlertMask,
}

impl Limit {
    pub fn window(&self, now: u64) -> (u64, Option<u64>) {
        window(self.period, self.alignment, self.anchor, now)
    }
}

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
    /// More budgets besides the inline one (daily and monthly at once, or one for some
    /// models only); each is its own account, all must admit a request they apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<ScopedBudget>,
    /// A temporary limit in place of the inline `max_budget`, until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_override: Option<BudgetOverride>,
    /// The prepaid top-ups of a lifetime budget, oldest first: the audit trail. Kept in the
    /// record, so a top-up and the raise it makes are one write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_ups: Vec<TopUp>,
    /// Budget alert thresholds in percent for this key's or user's spending limit (None:
    /// the config's `alerts.thresholds`; empty: no alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<u8>>,
}

/// A temporary `max_budget` (a raise, or a cut) that ends with a budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetOverride {
    pub max_micros: Micros,
    /// The override applies before this time (the end of its last window).
    pub until: u64,
}

/// One prepaid top-up: who added how much to a lifetime budget, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUp {
    pub id: String,
    pub amount_micros: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who made it: `master key`, a console admin (`admin:<name>`), or `cli` (the store
    /// opened directly).
    pub by: String,
    pub at: u64,
    /// The lifetime budget after this top-up.
    pub max_after: Micros,
}

impl TopUp {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "object": "top_up",
            "id": self.id,
            "amount": format_usd(self.amount_micros),
            "note": self.note,
            "by": self.by,
            "created_at": self.at,
            "max_budget_after": format_usd(self.max_after),
        })
    }
}

/// One of an entity's several budgets, optionally only for some models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedBudget {
    /// Stable within its owner: the account of this budget is `{owner}#{id}` (alerts and
    /// spend rows name it so).
    pub id: String,
    pub max_micros: Micros,
    pub period: Period,
    #[serde(default)]
    pub alignment: Alignment,
    /// Start of rolling windows: when the budget was set.
    pub anchor: u64,
    /// Only requests for these models count (a `prefix*` pattern, a `provider:model`, a
    /// provider's name, or a group or alias name); None: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl ScopedBudget {
    pub fn limit(&self) -> Limit {
        Limit {
            max_micros: self.max_micros,
            period: self.period,
            alignment: self.alignment,
            anchor: self.anchor,
            // The config's thresholds (the budget has no list of its own yet).
            alerts: super::alert::AlertMask::UNSET,
        }
    }

    /// The account id of this budget of `owner`. Owner ids never contain '#'.
    pub fn account_id(&self, owner: &str) -> String {
        format!("{owner}#{}", self.id)
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "max_budget": format_usd(self.max_micros),
            "budget_period": period_label(self.period),
            "budget_alignment": alignment_label(self.alignment),
            "model": self.model,
        })
    }
}

fn alignment_label(a: Alignment) -> &'static str {
    match a {
        Alignment::Calendar => "calendar",
        Alignment::Rolling => "rolling",
    }
}

impl Limits {
    /// The management API's view of these limits.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "max_budget": self.max_budget_micros.map(format_usd),
            "budget_period": self.budget_period.map(period_label),
            "budget_alignment": self.budget_alignment.map(alignment_label),
            "budget_id": self.budget_id,
            "rpm_limit": self.rpm,
            "tpm_limit": self.tpm,
            "budgets": self.budgets.iter().map(ScopedBudget::to_json).collect::<Vec<_>>(),
            "budget_override": self.budget_override.map(|o| serde_json::json!({
                "max_budget": format_usd(o.max_micros),
                "until": super::period::rfc3339(o.until),
                "active": crate::clock::now_secs() < o.until,
            })),
            "top_ups": self.top_ups.len(),
            "alert_thresholds": self.alert_thresholds,
        })
    }

    /// The inline spending limit, if any (a live override's amount in place of the
    /// configured one).
    pub fn inline_limit(&self) -> Option<Limit> {
        let max = match self.budget_override {
            Some(o) if crate::clock::now_secs() < o.until => Some(o.max_micros),
            _ => self.max_budget_micros,
        };
        max.map(|m| Limit {
            max_micros: m,
            period: self.budget_period.unwrap_or(Period::Lifetime),
            alignment: self.budget_alignment.unwrap_or_default(),
            anchor: self.budget_anchor.unwrap_or(0),
            alerts: super::alert::AlertMask::of(self.alert_thresholds.as_deref()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    #[serde(default)]
    pub alias: Option<String>,
    /// The team this user belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
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
    /// Which gateway tools this user's keys may use, and calls per request (None: the
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<super::tool_policy::ToolPolicy>,
    /// Which registered MCP servers and tools the keys of this user may use (see
    /// [`super::KeyRecord::mcp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<super::mcp::McpPolicy>,
    /// Guardrail policies (named in the config's `guardrails.policies`) run on the requests
    /// of every key of this user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrail_policies: Vec<String>,
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
    /// Alert thresholds in percent of this budget (None: the config's default; empty: no
    /// alerts). Wins over the thresholds of the key or user that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<u8>>,
}

impl BudgetRecord {
    pub fn limit(&self, anchor: u64) -> Limit {
        Limit {
            max_micros: self.max_budget_micros,
            period: self.period,
            alignment: self.alignment,
            anchor,
            alerts: super::alert::AlertMask::of(self.alert_thresholds.as_deref()),
        }
    }
}
