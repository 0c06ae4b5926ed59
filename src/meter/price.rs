//! Prices and cost in integer micro-dollars (never floats). Prices are given in USD per
//! million tokens and stored as micro-dollars per million tokens; a request's cost is the
//! exact sum of tokens × price, divided once and rounded up to the next micro-dollar.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;

use super::Usage;
use crate::records::money::{format_usd, parse_usd, Micros, MICROS_PER_USD};

/// Micro-dollars as a JSON number in USD (for API output only; accounting never uses it).
pub fn usd_json(m: Micros) -> serde_json::Value {
    serde_json::Value::Number(
        serde_json::Number::from_f64(m as f64 / MICROS_PER_USD as f64).unwrap_or(0.into()),
    )
}

/// Deserializes a USD amount from a YAML/JSON number or string without float rounding:
/// numbers are re-read from their shortest decimal form.
pub fn de_usd<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        U(u64),
        F(f64),
        S(String),
    }
    let text = match Num::deserialize(d)? {
        Num::U(u) => u.to_string(),
        Num::F(f) if f.is_finite() && f >= 0.0 => format!("{f}"),
        Num::F(_) => return Err(serde::de::Error::custom("must be a non-negative amount")),
        Num::S(s) => s,
    };
    parse_usd(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "'{text}' is not a USD amount with at most 6 decimals"
        ))
    })
}

/// Serializes micro-dollars as a USD decimal string, so that the value round-trips exactly.
pub fn ser_usd<S: serde::Serializer>(m: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_usd(*m))
}

fn ser_usd_opt<S: serde::Serializer>(m: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => ser_usd(m, s),
        None => s.serialize_none(),
    }
}

fn de_usd_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
    de_usd(d).map(Some)
}

/// Per-million-token prices in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Price {
    #[serde(deserialize_with = "de_usd", serialize_with = "ser_usd")]
    pub input: Micros,
    #[serde(deserialize_with = "de_usd", serialize_with = "ser_usd")]
    pub output: Micros,
    /// Defaults to the input price when absent.
    #[serde(
        default,
        deserialize_with = "de_usd_opt",
        serialize_with = "ser_usd_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_read: Option<Micros>,
    /// Defaults to the input price when absent.
    #[serde(
        default,
        deserialize_with = "de_usd_opt",
        serialize_with = "ser_usd_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write: Option<Micros>,
}

impl Price {
    /// Exact cost of `u`, rounded up to the micro-dollar.
    pub fn cost(&self, u: &Usage) -> Micros {
        let p = |n: u64, price: Micros| n as u128 * price as u128;
        let total = p(u.input, self.input)
            + p(u.cache_read, self.cache_read.unwrap_or(self.input))
            + p(u.cache_write, self.cache_write.unwrap_or(self.input))
            + p(u.output, self.output);
        total.div_ceil(1_000_000).min(u64::MAX as u128) as u64
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "input": format_usd(self.input),
            "output": format_usd(self.output),
            "cache_read": format_usd(self.cache_read.unwrap_or(self.input)),
            "cache_write": format_usd(self.cache_write.unwrap_or(self.input)),
            "unit": "USD per million tokens",
        })
    }
}

/// A price table keyed by `provider:model`, `model`, or a prefix pattern ending in `*`.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    exact: HashMap<String, Price>,
    /// (prefix, price), longest first.
    prefixes: Vec<(String, Price)>,
}

impl PriceTable {
    pub fn insert(&mut self, key: &str, price: Price) {
        let key = normalize_key(key);
        if let Some(p) = key.strip_suffix('*') {
            self.prefixes.retain(|(k, _)| k != p);
            self.prefixes.push((p.to_string(), price));
            self.prefixes
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        } else {
            self.exact.insert(key, price);
        }
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let key = normalize_key(key);
        if let Some(p) = key.strip_suffix('*') {
            let before = self.prefixes.len();
            self.prefixes.retain(|(k, _)| k != p);
            before != self.prefixes.len()
        } else {
            self.exact.remove(&key).is_some()
        }
    }

    /// The price of `model` at `provider`: `provider:model`, then `model`, then the longest
    /// matching prefix pattern (with or without the provider).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        let mut full = String::with_capacity(provider.len() + 1 + model.len());
        full.push_str(provider);
        full.push(':');
        full.push_str(model);
        if let Some(p) = self.exact.get(&full).or_else(|| self.exact.get(model)) {
            return Some(*p);
        }
        self.prefixes
            .iter()
            .find(|(k, _)| full.starts_with(k.as_str()) || model.starts_with(k.as_str()))
            .map(|(_, p)| *p)
    }

    pub fn entries(&self) -> Vec<(String, Price)> {
        let mut v: Vec<(String, Price)> = self.exact.iter().map(|(k, p)| (k.clone(), *p)).collect();
        v.extend(self.prefixes.iter().map(|(k, p)| (format!("{k}*"), *p)));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `provider/model` is accepted as a spelling of `provider:model` (first separator only).
fn normalize_key(k: &str) -> String {
    let k = k.trim();
    match (k.find(':'), k.find('/')) {
        (None, Some(i)) => format!("{}:{}", &k[..i], &k[i + 1..]),
        _ => k.to_string(),
    }
}

/// The shipped default table's file format (`conf/pricing.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingFile {
    /// The date the prices were checked (they change; override them in the config).
    pub as_of: String,
    pub models: std::collections::BTreeMap<String, Price>,
}

impl PricingFile {
    pub fn parse(text: &str) -> Result<PricingFile, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn into_table(self) -> PriceTable {
        let mut t = PriceTable::default();
        for (k, p) in self.models {
            t.insert(&k, p);
        }
        t
    }
}

/// The default price table, compiled in from `conf/pricing.yaml`.
pub fn default_table() -> PriceTable {
    PricingFile::parse(include_str!("../../conf/pricing.yaml"))
        .expect("conf/pricing.yaml is valid")
        .into_table()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_with_cached_tokens_rounds_up_once() {
        let p: Price = serde_yaml::from_str(
            "{input: 3.00, output: 15.00, cache_read: 0.30, cache_write: 3.75}",
        )
        .unwrap();
        let u = Usage {
            input: 1000,
            cache_read: 10_000,
            cache_write: 2000,
            output: 500,
            reasoning: 0,
        };
        // 1000*3 + 10000*0.3 + 2000*3.75 + 500*15 = 3000 + 3000 + 7500 + 7500 = 21000 micro-dollars
        assert_eq!(p.cost(&u), 21_000);
        let one = Usage {
            input: 1,
            ..Default::default()
        };
        assert_eq!(p.cost(&one), 3, "3 micro-dollars per token exactly");
        let cheap: Price = serde_yaml::from_str("{input: 0.1, output: 0.4}").unwrap();
        assert_eq!(
            cheap.cost(&one),
            1,
            "a fraction of a micro-dollar rounds up"
        );
        assert_eq!(
            cheap.cost(&Usage {
                input: 7,
                output: 3,
                ..Default::default()
            }),
            2
        ); // 0.7 + 1.2 = 1.9 -> 2
    }

    #[test]
    fn lookup_precedence() {
        let mut t = PriceTable::default();
        let p = |i| Price {
            input: i,
            output: i,
            cache_read: None,
            cache_write: None,
        };
        t.insert("claude-sonnet-4*", p(1));
        t.insert("claude-sonnet-4-6", p(2));
        t.insert("anthropic/claude-sonnet-4-6", p(3));
        t.insert("claude-*", p(4));
        assert_eq!(t.lookup("anthropic", "claude-sonnet-4-6").unwrap().input, 3);
        assert_eq!(t.lookup("bedrock", "claude-sonnet-4-6").unwrap().input, 2);
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-5-2025")
                .unwrap()
                .input,
            1
        );
        assert_eq!(t.lookup("anthropic", "claude-haiku").unwrap().input, 4);
        assert!(t.lookup("openai", "gpt-9").is_none());
    }

    #[test]
    fn shipped_table_parses_and_covers_the_common_families() {
        let t = default_table();
        for (prov, model) in [
            ("openai", "gpt-4o"),
            ("openai", "gpt-4.1-mini"),
            ("anthropic", "claude-sonnet-4-6"),
            ("anthropic", "claude-haiku-4-5-20251001"),
            ("gemini", "gemini-2.5-flash"),
            ("mistral", "mistral-large-latest"),
            ("deepseek", "deepseek-chat"),
        ] {
            assert!(t.lookup(prov, model).is_some(), "{prov}:{model}");
        }
    }
}
