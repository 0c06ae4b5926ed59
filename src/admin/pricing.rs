//! `/v1/pricing`: the price table (shipped defaults, config, and API overrides).

use serde_json::{json, Value};
use std::collections::HashMap;

use super::{internal, no_route, store_of, Reply, Req, Resp};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::price::Price;
use crate::records::money::parse_usd;
use crate::state::State;

fn money(v: Option<&Value>, field: &str, required: bool) -> Result<Option<u64>, GatewayError> {
    match v {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(GatewayError::invalid(format!(
            "'{field}' (USD per million tokens) is required."
        ))
        .with_param(field.to_string())),
        Some(v) => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            parse_usd(&text).map(Some).ok_or_else(|| {
                GatewayError::invalid(format!("'{field}' must be a non-negative USD amount."))
                    .with_param(field.to_string())
            })
        }
    }
}

fn entry(key: &str, p: &Price, source: &str) -> Value {
    let mut v = p.to_json();
    v["model_key"] = json!(key);
    v["source"] = json!(source);
    v
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    let ledger = &state.ledger;
    let key = req.segs[1..].join("/");
    match (req.method.as_str(), key.is_empty()) {
        ("GET", true) => {
            let overrides = ledger.overrides.load();
            let data: Vec<Value> = ledger
                .prices
                .load()
                .entries()
                .iter()
                .map(|(k, p)| {
                    entry(
                        k,
                        p,
                        if overrides.contains_key(k) {
                            "api"
                        } else {
                            "default"
                        },
                    )
                })
                .collect();
            Ok(Resp::json(200, json!({"object": "list", "data": data})))
        }
        ("GET", false) => {
            let (prov, model) = key.split_once([':', '/']).unwrap_or(("", key.as_str()));
            match ledger.prices.load().lookup(prov, model) {
                Some(p) => Ok(Resp::json(200, entry(&key, &p, "effective"))),
                None => Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("No price for '{key}'."),
                )),
            }
        }
        ("POST" | "PUT", _) => {
            req.only(&["model_key", "input", "output", "cache_read", "cache_write"])?;
            let k = match (
                req.body.get("model_key").and_then(Value::as_str),
                key.is_empty(),
            ) {
                (Some(k), _) => k.to_string(),
                (None, false) => key.clone(),
                (None, true) => {
                    return Err(GatewayError::invalid(
                        "'model_key' (provider:model, model, or prefix*) is required.",
                    )
                    .with_param("model_key"))
                }
            };
            if k.is_empty() || k.len() > 256 {
                return Err(
                    GatewayError::invalid("'model_key' is not valid.").with_param("model_key")
                );
            }
            let p = Price {
                input: money(req.body.get("input"), "input", true)?.unwrap_or(0),
                output: money(req.body.get("output"), "output", true)?.unwrap_or(0),
                cache_read: money(req.body.get("cache_read"), "cache_read", false)?,
                cache_write: money(req.body.get("cache_write"), "cache_write", false)?,
            };
            store_of(state)?.put_price(&k, &p).await.map_err(internal)?;
            let mut o: HashMap<String, Price> = HashMap::clone(&ledger.overrides.load());
            o.insert(k.clone(), p);
            ledger.set_overrides(o);
            Ok(Resp::json(200, entry(&k, &p, "api")))
        }
        ("DELETE", false) => {
            let mut o: HashMap<String, Price> = HashMap::clone(&ledger.overrides.load());
            if o.remove(&key).is_none() {
                return Err(GatewayError::new(ErrorKind::NotFound, format!("No API-set price for '{key}' (shipped defaults cannot be deleted, only overridden).")));
            }
            store_of(state)?
                .delete_price(&key)
                .await
                .map_err(internal)?;
            ledger.set_overrides(o);
            Ok(Resp::json(200, json!({"model_key": key, "deleted": true})))
        }
        _ => Err(no_route(req)),
    }
}
