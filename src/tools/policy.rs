//! The key's and user's tool policy applied to one request: a declared tool the caller may
//! not use refuses the request (403) before anything is sent; calls beyond a tool's
//! `max_calls` get a `[tool error] call limit reached` result instead of running (free, and
//! the model can still answer with what it has).

use super::declare::ToolKind;
use super::turns::{Call, ToolRun};
use crate::error::{ErrorKind, GatewayError};
use crate::records::tool_policy::{grant, ToolGrant};
use crate::records::{KeyRecord, UserRecord};

/// What a key (and its user: the stricter wins) may do with `kind`.
pub fn effective(kind: ToolKind, key: &KeyRecord, user: Option<&UserRecord>) -> ToolGrant {
    let k = grant(key.tools.as_ref(), kind.function());
    match user {
        Some(u) => k.and(grant(u.tools.as_ref(), kind.function())),
        None => k,
    }
}

/// Refuses the first of `kinds` the caller may not use.
pub fn check(
    kinds: &[ToolKind],
    key: &KeyRecord,
    user: Option<&UserRecord>,
) -> Result<CallLimits, GatewayError> {
    let mut limits = CallLimits::default();
    for &kind in kinds {
        let g = effective(kind, key, user);
        if !g.allowed {
            return Err(GatewayError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "This key may not use the gateway tool '{}' (its tools policy, or its user's).",
                    kind.function()
                ),
            )
            .with_code("tool_not_allowed")
            .with_param("tools"));
        }
        limits.max[slot(kind)] = g.max_calls;
    }
    Ok(limits)
}

fn slot(kind: ToolKind) -> usize {
    match kind {
        ToolKind::WebSearch => 0,
        ToolKind::CodeExecution => 1,
        ToolKind::Mcp => 2,
    }
}

/// The per-request call caps and the calls made so far.
#[derive(Debug, Default)]
pub struct CallLimits {
    max: [Option<u32>; 3],
    used: [u32; 3],
}

impl CallLimits {
    /// For each of `calls`, in order: None when it may run (and is counted), or the result
    /// the model reads instead.
    pub fn admit(&mut self, calls: &[Call]) -> Vec<Option<ToolRun>> {
        calls
            .iter()
            .map(|c| {
                let kind = c.ours?;
                let i = slot(kind);
                match self.max[i] {
                    Some(max) if self.used[i] >= max => Some(ToolRun {
                        call: c.clone(),
                        output: format!(
                            "{} call limit reached: this request may make at most {max} {} call(s).",
                            super::TOOL_ERROR,
                            kind.function()
                        ),
                        results: vec![],
                        ok: false,
                        mcp: None,
                    }),
                    _ => {
                        self.used[i] += 1;
                        None
                    }
                }
            })
            .collect()
    }
}

/// The runs of one turn in call order: the refused ones from `verdicts`, the others from
/// `ran` (the admitted calls' runs, in order).
pub fn merge(verdicts: Vec<Option<ToolRun>>, ran: Vec<ToolRun>) -> Vec<ToolRun> {
    let mut ran = ran.into_iter();
    verdicts
        .into_iter()
        .filter_map(|v| v.or_else(|| ran.next()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn call(id: &str, kind: ToolKind) -> Call {
        Call {
            id: id.into(),
            name: kind.function().into(),
            args: Map::new(),
            ours: Some(kind),
        }
    }

    #[test]
    fn calls_past_the_cap_are_refused_in_order() {
        let mut l = CallLimits::default();
        l.max[slot(ToolKind::WebSearch)] = Some(2);
        let first = l.admit(&[call("a", ToolKind::WebSearch)]);
        assert!(first[0].is_none());
        let calls = [
            call("b", ToolKind::WebSearch),
            call("c", ToolKind::CodeExecution),
            call("d", ToolKind::WebSearch),
        ];
        let v = l.admit(&calls);
        assert!(v[0].is_none() && v[1].is_none());
        let refused = v[2].as_ref().unwrap();
        assert!(!refused.ok);
        assert!(refused
            .output
            .starts_with("[tool error] call limit reached"));
        let ran: Vec<ToolRun> = ["b", "c"]
            .iter()
            .map(|id| ToolRun {
                call: call(id, ToolKind::WebSearch),
                output: String::new(),
                results: vec![],
                ok: true,
                mcp: None,
            })
            .collect();
        let ids: Vec<String> = merge(v, ran).into_iter().map(|r| r.call.id).collect();
        assert_eq!(ids, ["b", "c", "d"]);
    }
}
