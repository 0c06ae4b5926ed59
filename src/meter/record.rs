//! The usage record: one per request that reached (or tried to reach) a provider.

use serde::{Deserialize, Serialize};

use super::price::Micros;
use super::Usage;

/// Stored compactly: empty options, zero counts and false flags are left out (a record is
/// written per request), and read back as their defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct UsageRecord {
    /// Unique id (also the idempotency key when records are replayed).
    pub id: String,
    /// Milliseconds since the Unix epoch, at the end of the request.
    pub ts_ms: u64,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub endpoint: String,
    pub provider: String,
    /// The model the client asked for.
    pub model: String,
    pub upstream_model: String,
    /// Claude Code's `x-claude-code-session-id`, or another client's session header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// All prompt tokens (uncached + cache read + cache write).
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub completion_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_micros: Micros,
    /// HTTP status sent to the client (0: the client went away first).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Tokens were estimated because the upstream reported none.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl UsageRecord {
    pub fn set_usage(&mut self, u: &Usage) {
        self.prompt_tokens = u.prompt_total();
        self.completion_tokens = u.output;
        self.cached_tokens = u.cache_read;
        self.cache_write_tokens = u.cache_write;
        self.reasoning_tokens = u.reasoning;
        self.total_tokens = u.total();
    }

    pub fn usage(&self) -> Usage {
        Usage {
            input: self
                .prompt_tokens
                .saturating_sub(self.cached_tokens + self.cache_write_tokens),
            cache_read: self.cached_tokens,
            cache_write: self.cache_write_tokens,
            output: self.completion_tokens,
            reasoning: self.reasoning_tokens,
        }
    }
}
