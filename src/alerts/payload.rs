//! What a webhook carries: the body (generic JSON or Slack's `text` + `blocks`), the
//! HMAC-SHA256 signature header over `timestamp.body`, and the alert id as idempotency key.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::settings::Format;
use crate::records::{money::format_usd, period::rfc3339, AlertRecord};

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
/// The alert id: the same on every retry and from every instance.
pub const ID_HEADER: &str = "x-tollgate-alert-id";

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for m in msg {
        inner.update(m);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The signature header's value for `body` sent at `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let ts = t.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[ts.as_bytes(), b".", body]);
    format!("t={ts},v1={}", hex(&mac))
}

fn who(a: &AlertRecord) -> String {
    let scope = a.scope.as_str();
    match &a.budget_id {
        Some(b) => format!("{scope} '{}' (budget '{b}')", a.account_id),
        None => format!("{scope} '{}'", a.account_id),
    }
}

/// The generic JSON body.
pub fn json_body(a: &AlertRecord) -> Value {
    json!({
        "type": "budget.threshold",
        "alert_id": a.id,
        "threshold_percent": a.threshold,
        "scope": a.scope,
        "account_id": a.account_id,
        "budget_id": a.budget_id,
        "max_budget": format_usd(a.limit_micros),
        "spend": format_usd(a.spent_micros),
        "max_budget_micros": a.limit_micros,
        "spend_micros": a.spent_micros,
        "window_start": rfc3339(a.window_start),
        "window_end": a.window_end.map(rfc3339),
        "crossed_at": rfc3339(a.crossed_at),
    })
}

/// Slack's incoming-webhook body: `text` (the notification) and `blocks`.
pub fn slack_body(a: &AlertRecord) -> Value {
    let text = format!(
        "Budget alert: {} reached {} % of its ${} budget (spent ${}).",
        who(a),
        a.threshold,
        format_usd(a.limit_micros),
        format_usd(a.spent_micros)
    );
    let period = match a.window_end {
        Some(end) => format!("{} to {}", rfc3339(a.window_start), rfc3339(end)),
        None => format!("since {}", rfc3339(a.window_start)),
    };
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{text}*")}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("period {period} · alert id `{}`", a.id)}
            ]}
        ]
    })
}

pub fn body(format: Format, a: &AlertRecord) -> Vec<u8> {
    let v = match format {
        Format::Json => json_body(a),
        Format::Slack => slack_body(a),
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Scope;

    #[test]
    fn hmac_matches_rfc_4231_vectors() {
        // Test case 2: key "Jefe", data "what do ya want for nothing?".
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let s = signature("Jefe", 12, b"what do ya want for nothing?");
        // "12" + "." + body, so not the RFC value above
        assert!(s.starts_with("t=12,v1="));
        assert_eq!(s.len(), "t=12,v1=".len() + 64);
        let mac = hmac_sha256(b"Jefe", &[b"12.what do ya want for nothing?"]);
        assert_eq!(&s["t=12,v1=".len()..], hex(&mac));
        assert_ne!(s, signature("Jefe", 13, b"what do ya want for nothing?"));
    }

    fn alert() -> AlertRecord {
        AlertRecord {
            id: "alert_x".into(),
            scope: Scope::Key,
            account_id: "key_1".into(),
            budget_id: None,
            window_start: 0,
            window_end: Some(86_400),
            threshold: 80,
            limit_micros: 10_000_000,
            spent_micros: 8_000_001,
            crossed_at: 100,
            delivered: vec![],
            failed: vec![],
            attempts: 0,
            sent_at: None,
        }
    }

    #[test]
    fn slack_bodies_have_text_and_blocks() {
        let v: Value = serde_json::from_slice(&body(Format::Slack, &alert())).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.contains("key 'key_1'") && text.contains("80 %"),
            "{text}"
        );
        assert!(text.contains("$10.00"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert_eq!(blocks[1]["type"], "context");
        assert!(blocks[1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("alert_x"));
    }

    #[test]
    fn json_bodies_carry_the_alert_id_and_numbers() {
        let v: Value = serde_json::from_slice(&body(Format::Json, &alert())).unwrap();
        assert_eq!(v["alert_id"], "alert_x");
        assert_eq!(v["threshold_percent"], 80);
        assert_eq!(v["scope"], "key");
        assert_eq!(v["spend_micros"], 8_000_001);
        assert_eq!(v["window_end"], "1970-01-02T00:00:00Z");
    }
}
