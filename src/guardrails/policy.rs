//! The operator's side: the `guardrails:` settings (service URL, timeout, cache, named
//! policies, the global ones), and the merge of the policies that apply to a request with
//! the request's own entries.
//!
//! The merge rule: a policy's entries always run; a request may add entries but not weaken
//! one. Two entries for the same profile and scope become one, with the stricter `mode`
//! (block > mask > monitor) and `on_unavailable` (block > monitor), both stages if either
//! asks, `hold_back` if either asks, the smaller `output_window_chars`, and the operator's
//! `url`, `validate_kwargs` and `restore` (a request cannot point a policy's check at a
//! service of its own, nor change its thresholds, nor have masked values put back). An entry for the same profile
//! with another scope is another check: both run.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use super::local::LocalChecks;
use super::{declare, Entry, Mode};
use crate::config::ConfigError;
use crate::error::GatewayError;
use crate::outbound::HostPolicy;
use crate::records::{KeyRecord, UserRecord};
use std::sync::Arc;

/// `guardrails:` as written.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrails {
    pub url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub allow_private_urls: Option<bool>,
    pub cache: Option<RawCache>,
    pub output_window_chars: Option<usize>,
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub global: Vec<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub ttl_secs: Option<u64>,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The default service (`guardrails.url`, else `TOLLGATE_GUARDRAILS_URL`).
    pub url: Option<String>,
    /// Each service call, connect included.
    pub timeout: Duration,
    /// A request's `url` may reach private ranges (loopback always may).
    pub allow_private_urls: bool,
    /// Verdicts are cached this long (None: no cache).
    pub cache_ttl: Option<Duration>,
    pub policies: BTreeMap<String, Vec<Entry>>,
    /// Policies applied to every request.
    pub global: Vec<String>,
    /// A stream's output checks run every this many characters (an entry may ask for
    /// fewer).
    pub output_window_chars: usize,
    /// The built-in profiles (`pii`, and `deny_patterns` from the config), compiled once.
    pub local: Arc<LocalChecks>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: None,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            allow_private_urls: false,
            cache_ttl: None,
            policies: BTreeMap::new(),
            global: Vec::new(),
            output_window_chars: DEFAULT_WINDOW_CHARS,
            local: Arc::new(LocalChecks::new(&[]).expect("no patterns")),
        }
    }
}

pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_WINDOW_CHARS: usize = 1_000;
const DEFAULT_CACHE_TTL_SECS: u64 = 300;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Validates `guardrails:` (`env` reads `TOLLGATE_GUARDRAILS_URL`).
pub fn build(
    raw: Option<RawGuardrails>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let url = raw
        .url
        .or_else(|| env("TOLLGATE_GUARDRAILS_URL"))
        .filter(|u| !u.is_empty());
    if let Some(u) = &url {
        crate::outbound::check_url(u, HostPolicy::ANY)
            .map_err(|e| ConfigError::new("guardrails.url", e.to_string()))?;
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > 600_000 {
        return Err(ConfigError::new(
            "guardrails.timeout_ms",
            "must be between 1 and 600000",
        ));
    }
    let window = raw.output_window_chars.unwrap_or(DEFAULT_WINDOW_CHARS);
    if window == 0 || window as u64 > declare::MAX_WINDOW {
        return Err(ConfigError::new(
            "guardrails.output_window_chars",
            format!("must be between 1 and {}", declare::MAX_WINDOW),
        ));
    }
    let local = LocalChecks::new(&raw.deny_patterns)
        .map_err(|e| ConfigError::new("guardrails.deny_patterns", e))?;
    let cache = raw.cache.unwrap_or_default();
    let cache_ttl = match (cache.enabled.unwrap_or(false), cache.ttl_secs) {
        (_, Some(0)) => {
            return Err(ConfigError::new(
                "guardrails.cache.ttl_secs",
                "must be greater than 0",
            ))
        }
        (true, ttl) => Some(Duration::from_secs(ttl.unwrap_or(DEFAULT_CACHE_TTL_SECS))),
        (false, _) => None,
    };
    let mut policies = BTreeMap::new();
    for (name, list) in raw.policies {
        let field = format!("guardrails.policies.{name}");
        if !valid_name(&name) {
            return Err(ConfigError::new(
                field,
                "policy names may hold only letters, digits, '-' and '_' (at most 64)",
            ));
        }
        if list.is_empty() {
            return Err(ConfigError::new(field, "a policy needs at least one entry"));
        }
        let entries = list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                declare::parse_policy_entry(v).map_err(|m| {
                    let (f, m) = m.split_once(": ").unwrap_or(("", &m));
                    let f = if f.is_empty() {
                        String::new()
                    } else {
                        format!(".{f}")
                    };
                    ConfigError::new(format!("{field}[{i}]{f}"), m.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        policies.insert(name, entries);
    }
    for (i, g) in raw.global.iter().enumerate() {
        if !policies.contains_key(g) {
            return Err(ConfigError::new(
                format!("guardrails.global[{i}]"),
                format!("no policy named '{g}' under guardrails.policies"),
            ));
        }
    }
    Ok(Settings {
        url,
        timeout: Duration::from_millis(timeout_ms),
        allow_private_urls: raw.allow_private_urls.unwrap_or(false),
        cache_ttl,
        policies,
        global: raw.global,
        output_window_chars: window,
        local: Arc::new(local),
    })
}

impl Settings {
    /// Where a request's own `url` may point.
    pub fn request_urls(&self) -> HostPolicy {
        HostPolicy {
            loopback: true,
            private: self.allow_private_urls,
        }
    }

    /// Some policy is configured (else no key or user can have one: the request's own list
    /// is all there is).
    pub fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    /// The entries of the policies that apply to a request of `key` (global, the user's,
    /// the key's), merged.
    pub fn policy_entries(&self, key: &KeyRecord, user: Option<&UserRecord>) -> Vec<Entry> {
        let names = self
            .global
            .iter()
            .chain(user.map_or(&[][..], |u| &u.guardrail_policies[..]))
            .chain(key.guardrail_policies.iter());
        let mut out = Vec::new();
        for n in names {
            // A name removed from the config since it was attached is skipped (the admin
            // API refuses unknown names; the config may change at a restart).
            for e in self.policies.get(n).into_iter().flatten() {
                merge_one(&mut out, e.clone());
            }
        }
        out
    }

    /// Parses `guardrail_policies` for the management API: absent → None (keep), null →
    /// clear, else a list of configured policy names.
    pub fn parse_names(&self, v: Option<&Value>) -> Result<Option<Vec<String>>, GatewayError> {
        let bad = |m: String| GatewayError::invalid(m).with_param("guardrail_policies");
        match v {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(Vec::new())),
            Some(Value::Array(a)) => {
                let mut names = Vec::new();
                for n in a {
                    let Some(n) = n.as_str() else {
                        return Err(bad(
                            "'guardrail_policies' must be a list of policy names.".into()
                        ));
                    };
                    if !self.policies.contains_key(n) {
                        let known: Vec<&str> = self.policies.keys().map(String::as_str).collect();
                        return Err(bad(format!(
                            "No guardrail policy named '{}'. Configured: {}.",
                            n.escape_debug(),
                            if known.is_empty() {
                                "none (see guardrails.policies in the config)".to_string()
                            } else {
                                known.join(", ")
                            }
                        )));
                    }
                    if !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
                Ok(Some(names))
            }
            Some(_) => Err(bad(
                "'guardrail_policies' must be a list of policy names or null.".into(),
            )),
        }
    }
}

/// How strict a mode is, for the merge.
fn strictness(m: Mode) -> u8 {
    match m {
        Mode::Monitor => 0,
        Mode::Mask => 1,
        Mode::Block => 2,
    }
}

/// Adds `e` to `out`, merged into an entry for the same profile and scope if there is one.
fn merge_one(out: &mut Vec<Entry>, e: Entry) {
    let Some(x) = out
        .iter_mut()
        .find(|x| x.profile == e.profile && x.scope == e.scope)
    else {
        out.push(e);
        return;
    };
    if strictness(e.mode) > strictness(x.mode) {
        x.mode = e.mode;
    }
    x.on_unavailable = x.on_unavailable.max(e.on_unavailable);
    x.input |= e.input;
    x.output |= e.output;
    x.hold_back |= e.hold_back;
    x.output_window_chars = match (x.output_window_chars, e.output_window_chars) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // The operator's service and thresholds win; between equals, the first one set.
    if e.operator && !x.operator {
        x.url = e.url;
        x.validate_kwargs = e.validate_kwargs;
        x.restore = e.restore;
        x.operator = true;
    } else if e.operator == x.operator {
        if x.url.is_none() {
            x.url = e.url;
        }
        x.restore |= e.restore;
    }
}

/// The checks of a request: the policies' entries, then the request's own merged in.
pub fn merge(policy: Vec<Entry>, request: Vec<Entry>) -> Vec<Entry> {
    let mut out = policy;
    for e in request {
        merge_one(&mut out, e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{OnUnavailable, Scope};
    use super::*;
    use serde_json::json;

    fn settings(yaml: &str) -> Result<Settings, ConfigError> {
        let raw: RawGuardrails = serde_yaml::from_str(yaml).unwrap();
        build(Some(raw), &|_| None)
    }

    #[test]
    fn defaults_and_env() {
        let s = build(None, &|_| None).unwrap();
        assert_eq!(s.url, None);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.cache_ttl, None);
        assert!(!s.has_policies());
        let s = build(None, &|n| {
            (n == "TOLLGATE_GUARDRAILS_URL").then(|| "http://10.1.1.1:8000".to_string())
        })
        .unwrap();
        assert_eq!(s.url.as_deref(), Some("http://10.1.1.1:8000"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |y: &str| settings(y).unwrap_err().field;
        assert_eq!(err("timeout_ms: 0"), "guardrails.timeout_ms");
        assert_eq!(err("url: 'ftp://x'"), "guardrails.url");
        assert_eq!(
            err("cache: {enabled: true, ttl_secs: 0}"),
            "guardrails.cache.ttl_secs"
        );
        assert_eq!(err("global: [nope]"), "guardrails.global[0]");
        assert_eq!(
            err("policies: {strict: [{profile: p, mode: maybe}]}"),
            "guardrails.policies.strict[0].mode"
        );
        assert_eq!(err("policies: {strict: []}"), "guardrails.policies.strict");
        assert_eq!(
            err("policies: {'bad name': [{profile: p}]}"),
            "guardrails.policies.bad name"
        );
        let s = settings(
            "cache: {enabled: true}\npolicies: {strict: [{profile: p, mode: block}]}\nglobal: [strict]",
        )
        .unwrap();
        assert_eq!(s.cache_ttl, Some(Duration::from_secs(300)));
        assert_eq!(s.policies["strict"][0].mode, Mode::Block);
        assert!(s.policies["strict"][0].operator);
    }

    fn req(v: Value) -> Vec<Entry> {
        declare::parse(&v, HostPolicy::LOOPBACK).unwrap()
    }

    #[test]
    fn a_request_cannot_weaken_a_policy() {
        let s = settings(
            "policies: {strict: [{profile: inj, mode: block, url: 'http://10.0.0.1:1', validate_kwargs: {t: 0.5}}]}",
        )
        .unwrap();
        let policy = s.policies["strict"].clone();
        let merged = merge(
            policy,
            req(
                json!([{"profile": "inj", "mode": "monitor", "on_unavailable": "monitor",
                "url": "http://127.0.0.1:9", "validate_kwargs": {"t": 0.99}, "on": ["output"]}]),
            ),
        );
        assert_eq!(merged.len(), 1);
        let e = &merged[0];
        assert_eq!(e.mode, Mode::Block);
        assert_eq!(e.on_unavailable, OnUnavailable::Block);
        assert_eq!(e.url.as_deref(), Some("http://10.0.0.1:1"));
        assert_eq!(e.validate_kwargs["t"], 0.5);
        assert!(e.input && e.output, "the union of the stages");
    }

    #[test]
    fn a_request_can_strengthen_and_add() {
        let s = settings("policies: {watch: [{profile: inj, on_unavailable: monitor}]}").unwrap();
        let merged = merge(
            s.policies["watch"].clone(),
            req(
                json!([{"profile": "inj", "mode": "block", "on_unavailable": "block"},
                {"profile": "inj", "scope": "tool_results"}, {"profile": "tox"}]),
            ),
        );
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].mode, Mode::Block);
        assert_eq!(merged[0].on_unavailable, OnUnavailable::Block);
        assert!(merged[0].operator);
        assert_eq!(merged[1].scope, Scope::ToolResults);
        assert_eq!(merged[2].profile, "tox");
    }

    #[test]
    fn stream_settings_merge_to_the_stricter() {
        let s = settings(
            "output_window_chars: 400\npolicies: {out: [{profile: leak, mode: block, on: [output], output_window_chars: 300}]}",
        )
        .unwrap();
        assert_eq!(s.output_window_chars, 400);
        let merged = merge(
            s.policies["out"].clone(),
            req(
                json!([{"profile": "leak", "hold_back": true, "output_window_chars": 100},
                {"profile": "other", "on": ["output"]}]),
            ),
        );
        assert!(merged[0].hold_back);
        assert_eq!(merged[0].output_window_chars, Some(100));
        let g = super::super::RequestGuard {
            restore: None,
            entries: merged,
            verdicts: vec![],
        };
        let plan = g.stream_plan(s.output_window_chars);
        assert_eq!(
            (plan.window, plan.hold_back, plan.blocks),
            (100, true, true)
        );
        // A request cannot widen the window (nor drop hold_back).
        let merged = merge(
            s.policies["out"].clone(),
            req(json!([{"profile": "leak", "hold_back": false, "output_window_chars": 5000}])),
        );
        assert_eq!(merged[0].output_window_chars, Some(300));
        assert_eq!(
            settings("output_window_chars: 0").unwrap_err().field,
            "guardrails.output_window_chars"
        );
    }

    #[test]
    fn deny_patterns_compile_once_and_a_bad_one_is_named() {
        let s = settings("deny_patterns: ['project falcon', '(?-i)SECRET-[0-9]+']").unwrap();
        let deny = s.local.detector("deny_patterns").unwrap();
        assert!(!deny.check(["About Project Falcon"]).valid);
        let e = settings("deny_patterns: [ok, 'bad(']").unwrap_err();
        assert_eq!(e.field, "guardrails.deny_patterns");
        assert!(e.message.contains("\"bad(\""), "{}", e.message);
    }

    #[test]
    fn policies_apply_globally_per_user_and_per_key() {
        let s = settings(
            "policies: {g: [{profile: a}], u: [{profile: b}], k: [{profile: c}, {profile: a, mode: block}]}\nglobal: [g]",
        )
        .unwrap();
        let (mut key, _) = KeyRecord::mint(None, None, json!({}));
        assert_eq!(s.policy_entries(&key, None).len(), 1);
        key.guardrail_policies = vec!["k".into(), "gone".into()];
        let user = UserRecord {
            user_id: "u1".into(),
            alias: None,
            team_id: None,
            limits: Default::default(),
            allowed_models: None,
            blocked: false,
            metadata: json!({}),
            created_at: 0,
            updated_at: 0,
            guardrail_policies: vec!["u".into()],
            tools: None,
            mcp: None,
        };
        let e = s.policy_entries(&key, Some(&user));
        let profiles: Vec<&str> = e.iter().map(|e| e.profile.as_str()).collect();
        assert_eq!(profiles, ["a", "b", "c"]);
        assert_eq!(e[0].mode, Mode::Block, "the key's stricter entry wins");
    }

    #[test]
    fn names_for_the_management_api() {
        let s = settings("policies: {strict: [{profile: p}]}").unwrap();
        assert_eq!(s.parse_names(None).unwrap(), None);
        assert_eq!(s.parse_names(Some(&Value::Null)).unwrap(), Some(vec![]));
        assert_eq!(
            s.parse_names(Some(&json!(["strict", "strict"]))).unwrap(),
            Some(vec!["strict".to_string()])
        );
        let e = s.parse_names(Some(&json!(["lax"]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guardrail_policies"));
        assert!(e.message.contains("strict"));
        assert!(s.parse_names(Some(&json!("strict"))).is_err());
    }
}
