//! Model selector → (provider, upstream model).
//!
//! Resolution order:
//! 1. an alias (exact name) is replaced by its target, once (aliases do not chain);
//! 2. `provider:model` or `provider/model`, when the part before the first separator is a
//!    configured provider: the prefix is stripped before forwarding (so
//!    `openrouter/meta-llama/llama-3` goes to `openrouter` as `meta-llama/llama-3`, while a bare
//!    `meta-llama/llama-3` is not mistaken for a provider);
//! 3. a model listed under a provider's `models`;
//! 4. prefix rules (`claude-` → anthropic, `gpt-` → openai, ...), first match wins, skipping
//!    rules whose provider is not configured.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Config, PrefixRoute, Provider};
use crate::error::{ErrorKind, GatewayError};

#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<Provider>,
    /// The model name sent upstream.
    pub model: String,
}

pub struct Router {
    providers: BTreeMap<String, Arc<Provider>>,
    aliases: HashMap<String, String>,
    listed: HashMap<String, String>,
    prefixes: Vec<PrefixRoute>,
}

/// The longest selector accepted; longer ones are refused before any lookup.
const MAX_SELECTOR: usize = 256;

impl Router {
    pub fn new(cfg: &Config) -> Router {
        let providers: BTreeMap<String, Arc<Provider>> = cfg
            .providers
            .iter()
            .map(|(n, p)| (n.clone(), Arc::new(p.clone())))
            .collect();
        let mut listed = HashMap::new();
        for (name, p) in &providers {
            for m in &p.models {
                listed.entry(m.clone()).or_insert_with(|| name.clone());
            }
        }
        Router {
            providers,
            aliases: cfg.aliases.clone().into_iter().collect(),
            listed,
            prefixes: cfg.prefix_routes.clone(),
        }
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    pub fn resolve(&self, selector: &str) -> Result<Route, GatewayError> {
        if selector.is_empty() {
            return Err(GatewayError::invalid("'model' must not be empty.").with_param("model"));
        }
        if selector.len() > MAX_SELECTOR || selector.chars().any(|c| c.is_control()) {
            return Err(
                GatewayError::invalid("'model' is not a valid model name.").with_param("model")
            );
        }
        let target = self
            .aliases
            .get(selector)
            .map(String::as_str)
            .unwrap_or(selector);
        if let Some(r) = self.explicit(target) {
            return r;
        }
        if let Some(p) = self.listed.get(target).and_then(|n| self.providers.get(n)) {
            return Ok(Route {
                provider: p.clone(),
                model: target.to_string(),
            });
        }
        for rule in &self.prefixes {
            if target.starts_with(&rule.prefix) {
                if let Some(p) = self.providers.get(&rule.provider) {
                    return Ok(Route {
                        provider: p.clone(),
                        model: target.to_string(),
                    });
                }
            }
        }
        Err(self.unknown(selector))
    }

    fn explicit(&self, target: &str) -> Option<Result<Route, GatewayError>> {
        let i = target.find([':', '/'])?;
        let (prov, model) = (&target[..i], &target[i + 1..]);
        let p = self.providers.get(prov)?;
        if model.is_empty() {
            return Some(Err(GatewayError::invalid(format!(
                "Model selector '{target}' names provider '{prov}' but no model: write '{prov}:<model>'."
            ))
            .with_param("model")));
        }
        Some(Ok(Route {
            provider: p.clone(),
            model: model.to_string(),
        }))
    }

    fn unknown(&self, selector: &str) -> GatewayError {
        let mut msg = format!(
            "Model '{}' is not available on this gateway.",
            truncate(selector, 80)
        );
        if let Some(i) = selector.find([':', '/']) {
            let prov = &selector[..i];
            if crate::providers::preset(prov).is_some() {
                msg.push_str(&format!(
                    " Provider '{prov}' is known but not configured: set its API key or add it under 'providers'."
                ));
            }
        }
        let known = self.known_models(20);
        let providers = self
            .providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.providers.is_empty() {
            msg.push_str(" No providers are configured: set a provider API key (e.g. OPENAI_API_KEY) or add one under 'providers'.");
        } else if known.is_empty() {
            msg.push_str(&format!(
                " Use 'provider:model' with a configured provider ({providers})."
            ));
        } else {
            msg.push_str(&format!(
                " Use 'provider:model' with a configured provider ({providers}), or one of: {}.",
                known.join(", ")
            ));
        }
        GatewayError::new(ErrorKind::NotFound, msg)
            .with_param("model")
            .with_code("model_not_found")
    }

    /// Models this gateway can name: aliases and listed models (bounded, sorted).
    pub fn known_models(&self, limit: usize) -> Vec<String> {
        let listed = self.listed.iter().map(|(m, p)| format!("{p}:{m}"));
        let mut v: Vec<String> = self.aliases.keys().cloned().chain(listed).collect();
        v.sort();
        v.dedup();
        v.truncate(limit);
        v
    }

    /// Every model id for listings: listed models as `provider:model`, plus aliases.
    pub fn model_ids(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        for (name, p) in &self.providers {
            for m in &p.models {
                v.push((format!("{name}:{m}"), name.clone()));
            }
        }
        for (alias, target) in &self.aliases {
            let owner = self
                .resolve(target)
                .map(|r| r.provider.name.clone())
                .unwrap_or_else(|_| "tollgate".into());
            v.push((alias.clone(), owner));
        }
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(yaml: &str) -> Router {
        let cfg = Config::from_yaml_str(yaml, &|_| None).unwrap();
        Router::new(&cfg)
    }

    const Y: &str = "
providers:
  openai: {kind: openai, base_url: 'http://127.0.0.1:1/v1', api_key: a}
  anthropic: {kind: anthropic, base_url: 'http://127.0.0.1:2', api_key: b}
  openrouter: {kind: openai, base_url: 'http://127.0.0.1:3/api/v1', api_key: c, models: [meta-llama/llama-3]}
aliases:
  fast: 'openrouter/meta-llama/llama-3'
  sonnet: 'anthropic:claude-sonnet-4-6'
";

    #[test]
    fn selectors() {
        let r = router(Y);
        let t = |s: &str| r.resolve(s).map(|r| (r.provider.name.clone(), r.model));
        assert_eq!(
            t("openai:gpt-4o").unwrap(),
            ("openai".into(), "gpt-4o".into())
        );
        assert_eq!(
            t("openai/gpt-4o").unwrap(),
            ("openai".into(), "gpt-4o".into())
        );
        assert_eq!(
            t("openrouter/meta-llama/llama-3").unwrap(),
            ("openrouter".into(), "meta-llama/llama-3".into())
        );
        assert_eq!(
            t("meta-llama/llama-3").unwrap(),
            ("openrouter".into(), "meta-llama/llama-3".into())
        );
        assert_eq!(
            t("fast").unwrap(),
            ("openrouter".into(), "meta-llama/llama-3".into())
        );
        assert_eq!(
            t("sonnet").unwrap(),
            ("anthropic".into(), "claude-sonnet-4-6".into())
        );
        assert_eq!(
            t("claude-opus-4-8").unwrap(),
            ("anthropic".into(), "claude-opus-4-8".into())
        );
        assert_eq!(t("gpt-4.1").unwrap(), ("openai".into(), "gpt-4.1".into()));
        assert_eq!(t("o3-mini").unwrap(), ("openai".into(), "o3-mini".into()));
    }

    #[test]
    fn unknown_models_say_what_exists() {
        let r = router(Y);
        let e = r.resolve("llama-9").unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.message.contains("fast"), "{}", e.message);
        assert!(e.message.contains("openai"), "{}", e.message);
        let e = r.resolve("groq:llama").unwrap_err();
        assert!(
            e.message.contains("'groq' is known but not configured"),
            "{}",
            e.message
        );
        assert_eq!(r.resolve("openai:").unwrap_err().status(), 400);
        assert_eq!(r.resolve("").unwrap_err().status(), 400);
    }

    #[test]
    fn unknown_model_message_names_configured_providers_even_without_listed_models() {
        let r = router(
            "providers:\n  openai: {kind: openai, base_url: 'http://127.0.0.1:1/v1', api_key: a}\n",
        );
        let e = r.resolve("claude-x").unwrap_err();
        assert!(
            e.message.contains("configured provider (openai)"),
            "{}",
            e.message
        );
        let r = router("presets: false\n");
        assert!(r
            .resolve("x")
            .unwrap_err()
            .message
            .contains("No providers are configured"));
    }

    #[test]
    fn prefix_rules_skip_unconfigured_providers() {
        let r = router("providers:\n  anthropic: {kind: anthropic, base_url: 'http://127.0.0.1:2', api_key: b}\n");
        assert!(r.resolve("gpt-4o").is_err());
        assert!(r.resolve("claude-x").is_ok());
    }
}
