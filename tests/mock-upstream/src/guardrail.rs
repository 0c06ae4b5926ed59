//! A mock guardrail service speaking Otari's `/validate` contract, for tollgate's guardrail
//! tests: `POST /validate` with `{"profile","input_text","validate_kwargs"}` answers
//! `{"profile","result":{"valid","explanation","score"}}`.
//!
//! It flags a text containing the marker (`FLAG-ME`, or the behaviour's `marker`) with
//! `valid:false, score:0.9`, and passes anything else with `valid:true, score:0.1`. A
//! [`Behaviour`] changes that, chosen by `validate_kwargs.mock` (an object) or set per
//! profile (`GuardrailMock::set`, or `POST /__guard/profiles {"profile": {...}}`): slow
//! (`delay_ms`), down (`status`, e.g. 503), `reply: "malformed" | "inconclusive" | "list"`.
//! Every call is logged (`requests()`, `GET /__guard/requests`).

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use crate::http::{read_body, read_head, write_json};

/// The text that is flagged unless a behaviour names another.
pub const MARKER: &str = "FLAG-ME";

/// How the mock answers a profile.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub delay_ms: Option<u64>,
    /// Answer this status (with a JSON error body) instead of a verdict.
    pub status: Option<u16>,
    /// `malformed` (no `valid`), `inconclusive` (`valid: null`), `list` (`result` a list).
    pub reply: Option<String>,
    /// Flag texts containing this instead of [`MARKER`].
    pub marker: Option<String>,
}

/// One `/validate` call received.
#[derive(Clone, Debug)]
pub struct Validation {
    pub profile: String,
    pub input_text: String,
    pub validate_kwargs: Value,
    pub received_at: Instant,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Validation>>,
    profiles: Mutex<HashMap<String, Behaviour>>,
}

pub struct GuardrailMock {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GuardrailMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GuardrailMock {
    pub async fn start() -> GuardrailMock {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("bind guardrail mock")
    }

    pub async fn start_on(addr: &str) -> std::io::Result<GuardrailMock> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s2 = shared.clone();
        let task = crate::accept_loop(listener, move |sock| {
            let s = s2.clone();
            async move {
                let _ = serve(sock, s).await;
            }
        });
        Ok(GuardrailMock { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls received so far.
    pub fn requests(&self) -> Vec<Validation> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// How `profile` is answered from now on.
    pub fn set(&self, profile: &str, b: Behaviour) {
        self.shared
            .profiles
            .lock()
            .unwrap()
            .insert(profile.to_string(), b);
    }
}

async fn serve(sock: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let Some(head) = read_head(&mut rd).await? else {
            return Ok(());
        };
        let (body, _) = read_body(&mut rd, &head).await?;
        let (status, out) = match (head.method.as_str(), head.target.as_str()) {
            ("POST", "/validate") => validate(&shared, &body).await,
            ("GET", "/__guard/requests") => {
                let log = shared.log.lock().unwrap();
                let list: Vec<Value> = log
                    .iter()
                    .map(|v| json!({"profile": v.profile, "input_text": v.input_text, "validate_kwargs": v.validate_kwargs}))
                    .collect();
                (200, json!(list))
            }
            ("POST", "/__guard/reset") => {
                shared.log.lock().unwrap().clear();
                shared.profiles.lock().unwrap().clear();
                (200, json!({"ok": true}))
            }
            ("POST", "/__guard/profiles") => {
                match serde_json::from_slice::<HashMap<String, Behaviour>>(&body) {
                    Ok(p) => {
                        shared.profiles.lock().unwrap().extend(p);
                        (200, json!({"ok": true}))
                    }
                    Err(e) => (400, json!({"error": e.to_string()})),
                }
            }
            _ => (404, json!({"detail": "Not Found"})),
        };
        write_json(&mut wr, status, &[], &out.to_string()).await?;
    }
}

async fn validate(shared: &Shared, body: &[u8]) -> (u16, Value) {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let profile = req["profile"].as_str().unwrap_or("").to_string();
    let text = req["input_text"].as_str().unwrap_or("").to_string();
    let kwargs = req.get("validate_kwargs").cloned().unwrap_or(Value::Null);
    shared.log.lock().unwrap().push(Validation {
        profile: profile.clone(),
        input_text: text.clone(),
        validate_kwargs: kwargs.clone(),
        received_at: Instant::now(),
    });
    let b: Behaviour = match kwargs.get("mock") {
        Some(m) => serde_json::from_value(m.clone()).unwrap_or_default(),
        None => shared
            .profiles
            .lock()
            .unwrap()
            .get(&profile)
            .cloned()
            .unwrap_or_default(),
    };
    if let Some(ms) = b.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = b.status {
        return (status, json!({"detail": "mock guardrail unavailable"}));
    }
    let marker = b.marker.as_deref().unwrap_or(MARKER);
    let flagged = text.contains(marker);
    let result = match b.reply.as_deref() {
        Some("malformed") => json!({"verdict": "maybe"}),
        Some("inconclusive") => json!({"valid": null, "explanation": "unsure", "score": null}),
        _ if flagged => {
            json!({"valid": false, "explanation": format!("found {marker}"), "score": 0.9})
        }
        _ => json!({"valid": true, "explanation": "clean", "score": 0.1}),
    };
    let result = if b.reply.as_deref() == Some("list") {
        json!([result])
    } else {
        result
    };
    (200, json!({"profile": profile, "result": result}))
}
