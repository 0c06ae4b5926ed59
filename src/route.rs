//! Model selector → (provider, upstream model).
//!
//! Resolution order:
//! 1. an alias (exact name) is replaced by its target, once (aliases do not chain);
//! 2. `provider:model` or `provider/model`, when the part before the first separator is a
//!    configured provider: the prefix is stripped before forwarding (so
//!    `openrouter/meta-llama/llama-3` goes to `openrouter` as `meta-llama/llama-3`, while a bare
//!    `meta-llama/llama-3` is not mistaken for a provider);
//! 2. a name under `deployments:` is a group: its deployments in the order
//!    [`crate::balance::order`] gives (priority, weight, health);
//! 3. `provider:model` or `provider/model`, ... (below);
//! 4. a model listed under a provider's `models`;
//! 5. prefix rules (`claude-` → anthropic, `gpt-` → openai, ...), first match wins, skipping
//!    rules whose provider is not configured;
//! 6. with model discovery on, a name in exactly one provider's discovered list goes there; a
//!    name that several list is refused (400) with the candidates.
//!
//! [`Router::candidates`] adds what a failed attempt may move on to: the group's other
//! deployments, then the `fallbacks:` of the selector (other models, any format), at most
//! `failover.max_attempts` in all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::balance::{self, Deployment, Health};
use crate::config::{Config, PrefixRoute, Provider};
use crate::discovery::{Discovery, ModelInfo};
use crate::error::{ErrorKind, GatewayError};

#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<Provider>,
    /// The model name sent upstream.
    pub model: String,
    /// The breaker of the deployment (a provider on its own is one deployment).
    pub health: Arc<Health>,
    /// Reached through `fallbacks:` (another model than the one asked for).
    pub fallback: bool,
}

impl Deployment {
    fn route(&self, fallback: bool) -> Route {
        Route {
            provider: self.provider.clone(),
            model: self.model.clone(),
            health: self.health.clone(),
            fallback,
        }
    }
}

pub struct Router {
    providers: BTreeMap<String, Arc<Provider>>,
    /// One breaker per provider, for routes outside deployment groups.
    provider_health: HashMap<String, Arc<Health>>,
    groups: HashMap<String, Vec<Arc<Deployment>>>,
    fallbacks: HashMap<String, Vec<String>>,
    max_attempts: usize,
    aliases: HashMap<String, String>,
    listed: HashMap<String, String>,
    prefixes: Vec<PrefixRoute>,
    /// The providers' own model lists, when `model_discovery` is on.
    discovery: Option<Arc<Discovery>>,
}

/// One row of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModel {
    pub id: String,
    /// The provider it routes to (`tollgate` for an alias that does not resolve).
    pub owner: String,
    /// What the provider says about the model (discovered lists only).
    pub info: Option<ModelInfo>,
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
        let fo = &cfg.failover;
        let provider_health = providers
            .keys()
            .map(|n| (n.clone(), Arc::new(Health::new(n, n, fo.policy.breaker))))
            .collect();
        let groups = fo
            .groups
            .iter()
            .map(|(g, specs)| {
                let deps = specs
                    .iter()
                    .map(|d| {
                        Arc::new(Deployment {
                            provider: Arc::new(d.provider.clone()),
                            model: d.model.clone(),
                            weight: d.weight,
                            priority: d.priority,
                            health: Arc::new(Health::new(
                                &d.id,
                                &d.provider.name,
                                fo.policy.breaker,
                            )),
                        })
                    })
                    .collect();
                (g.clone(), deps)
            })
            .collect();
        let r = Router {
            providers,
            provider_health,
            groups,
            fallbacks: fo.fallbacks.clone().into_iter().collect(),
            max_attempts: fo.policy.max_attempts,
            aliases: cfg.aliases.clone().into_iter().collect(),
            listed,
            prefixes: cfg.prefix_routes.clone(),
            discovery: None,
        };
        for (from, to) in &r.fallbacks {
            for t in to {
                if let Err(e) = r.resolve(t) {
                    log::warn!("fallback '{t}' of '{from}' does not resolve: {}", e.message);
                }
            }
        }
        r
    }

    fn route_to(&self, p: &Arc<Provider>, model: &str) -> Route {
        Route {
            provider: p.clone(),
            model: model.to_string(),
            health: self.provider_health[&p.name].clone(),
            fallback: false,
        }
    }

    fn alias<'a>(&'a self, selector: &'a str) -> &'a str {
        self.aliases
            .get(selector)
            .map(String::as_str)
            .unwrap_or(selector)
    }

    /// The group and alias names under which `provider:model` is served: a deployment group
    /// holding it, and an alias whose target is such a group or that exact model. A budget
    /// scoped to one of these names applies however the client named the model.
    pub fn names_serving(&self, provider: &str, model: &str) -> Vec<&str> {
        let full = format!("{provider}:{model}");
        let mut out: Vec<&str> = self
            .groups
            .iter()
            .filter(|(_, deps)| {
                deps.iter()
                    .any(|d| d.provider.name == provider && d.model == model)
            })
            .map(|(g, _)| g.as_str())
            .collect();
        let groups = out.clone();
        for (alias, target) in &self.aliases {
            let to_group = groups.contains(&target.as_str());
            let to_model = *target == full
                || target
                    .strip_prefix(provider)
                    .and_then(|t| t.strip_prefix('/'))
                    == Some(model);
            if to_group || to_model {
                out.push(alias.as_str());
            }
        }
        out
    }

    /// Every route a request for `selector` may try, in order: the first, and the ones a
    /// failed attempt moves on to (none, and no allocation, for a plain route).
    pub fn candidates(&self, selector: &str) -> Result<(Route, Vec<Route>), GatewayError> {
        let target = self.alias(selector);
        let fallbacks = if self.fallbacks.is_empty() {
            None
        } else {
            self.fallbacks
                .get(selector)
                .or_else(|| self.fallbacks.get(target))
        };
        let group = if self.groups.is_empty() {
            None
        } else {
            self.groups.get(target)
        };
        if group.is_none() && fallbacks.is_none() {
            return Ok((self.resolve(selector)?, Vec::new()));
        }
        let mut all: Vec<Route> = match group {
            Some(g) => balance::order(g, Instant::now(), &mut rand::thread_rng())
                .into_iter()
                .map(|d| d.route(false))
                .collect(),
            None => vec![self.resolve(selector)?],
        };
        if let Some(fb) = fallbacks {
            self.add_fallbacks(fb, &mut all);
        }
        // Ejected deployments only after every healthy candidate, fallbacks included.
        let now = Instant::now();
        let (mut up, down): (Vec<Route>, Vec<Route>) =
            all.into_iter().partition(|r| r.health.available(now));
        up.extend(down);
        up.truncate(self.max_attempts);
        let first = up.remove(0);
        Ok((first, up))
    }

    /// Appends the routes of `fallbacks` (each a selector or a group) not already in `out`.
    fn add_fallbacks(&self, fallbacks: &[String], out: &mut Vec<Route>) {
        for f in fallbacks {
            let target = self.alias(f);
            let routes: Vec<Route> = match self.groups.get(target) {
                Some(g) => balance::order(g, Instant::now(), &mut rand::thread_rng())
                    .into_iter()
                    .map(|d| d.route(true))
                    .collect(),
                None => match self.resolve(f) {
                    Ok(mut r) => {
                        r.fallback = true;
                        vec![r]
                    }
                    Err(_) => continue,
                },
            };
            for r in routes {
                let same = |x: &Route| Arc::ptr_eq(&x.health, &r.health) && x.model == r.model;
                if !out.iter().any(same) {
                    out.push(r);
                }
            }
        }
    }

    /// Every breaker: providers on their own, then the deployments of each group.
    pub fn health(&self) -> Vec<Arc<Health>> {
        let mut v: Vec<Arc<Health>> = self.provider_health.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (_, deps) in groups {
            v.extend(deps.iter().map(|d| d.health.clone()));
        }
        v
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
        let target = self.alias(selector);
        if let Some(group) = (!self.groups.is_empty())
            .then(|| self.groups.get(target))
            .flatten()
        {
            let d = balance::order(group, Instant::now(), &mut rand::thread_rng())[0];
            return Ok(d.route(false));
        }
        if let Some(r) = self.explicit(target) {
            return r;
        }
        if let Some(p) = self.listed.get(target).and_then(|n| self.providers.get(n)) {
            return Ok(self.route_to(p, target));
        }
        for rule in &self.prefixes {
            if target.starts_with(&rule.prefix) {
                if let Some(p) = self.providers.get(&rule.provider) {
                    return Ok(self.route_to(p, target));
                }
            }
        }
        if let Some(d) = &self.discovery {
            let catalog = d.catalog();
            match catalog.owners(target) {
                [] => {}
                [one] => {
                    if let Some(p) = self.providers.get(one) {
                        return Ok(self.route_to(p, target));
                    }
                }
                several => return Err(ambiguous(selector, target, several)),
            }
        }
        Err(self.unknown(selector))
    }

    /// Adds the providers' discovered model lists to routing and listings.
    pub fn set_discovery(&mut self, d: Arc<Discovery>) {
        self.discovery = Some(d);
    }

    pub fn discovery(&self) -> Option<&Arc<Discovery>> {
        self.discovery.as_ref()
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
        Some(Ok(self.route_to(p, model)))
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
        let mut v: Vec<String> = self
            .aliases
            .keys()
            .chain(self.groups.keys())
            .cloned()
            .chain(listed)
            .collect();
        v.sort();
        v.dedup();
        v.truncate(limit);
        v
    }

    /// Every row of `GET /v1/models`, sorted by id. Without discovery: [`Router::model_ids`].
    /// With it: each provider's configured and discovered models as `provider:model`, and
    /// also bare when the bare name routes to that same provider and model; groups and
    /// aliases. Rows carry what the provider said about the model.
    pub fn model_entries(&self) -> Vec<ListedModel> {
        let Some(d) = &self.discovery else {
            return self
                .model_ids()
                .into_iter()
                .map(|(id, owner)| ListedModel {
                    id,
                    owner,
                    info: None,
                })
                .collect();
        };
        let catalog = d.catalog();
        let mut rows: BTreeMap<String, ListedModel> = BTreeMap::new();
        let mut add = |id: String, owner: &str, info: Option<&ModelInfo>| {
            let row = rows.entry(id).or_insert_with_key(|id| ListedModel {
                id: id.clone(),
                owner: owner.to_string(),
                info: None,
            });
            if row.info.is_none() {
                row.info = info.cloned();
            }
        };
        for (name, p) in &self.providers {
            let configured = p.models.iter().map(String::as_str);
            let discovered = catalog
                .list(name)
                .unwrap_or(&[])
                .iter()
                .map(|m| m.id.as_str());
            for m in configured.chain(discovered) {
                let info = catalog.info(name, m);
                add(format!("{name}:{m}"), name, info);
                if self
                    .resolve(m)
                    .is_ok_and(|r| r.provider.name == *name && r.model == m)
                {
                    add(m.to_string(), name, info);
                }
            }
        }
        for (group, deps) in &self.groups {
            let d = &deps[0];
            add(
                group.clone(),
                &d.provider.name,
                catalog.info(&d.provider.name, &d.model),
            );
        }
        for alias in self.aliases.keys() {
            match self.resolve(alias) {
                Ok(r) => add(
                    alias.clone(),
                    &r.provider.name,
                    catalog.info(&r.provider.name, &r.model),
                ),
                Err(_) => add(alias.clone(), "tollgate", None),
            }
        }
        rows.into_values().collect()
    }

    /// Every model id for listings: listed models as `provider:model`, plus aliases.
    pub fn model_ids(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        for (name, p) in &self.providers {
            for m in &p.models {
                v.push((format!("{name}:{m}"), name.clone()));
            }
        }
        for (group, deps) in &self.groups {
            v.push((group.clone(), deps[0].provider.name.clone()));
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

fn ambiguous(selector: &str, target: &str, owners: &[String]) -> GatewayError {
    let candidates: Vec<String> = owners.iter().map(|p| format!("{p}:{target}")).collect();
    GatewayError::invalid(format!(
        "Model '{}' is offered by several providers: {}. Name one (e.g. '{}'), or add an alias.",
        truncate(selector, 80),
        candidates.join(", "),
        candidates[0]
    ))
    .with_param("model")
    .with_code("ambiguous_model")
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

    const G: &str = "
providers:
  east: {kind: openai, base_url: 'http://127.0.0.1:1/v1', api_key: a}
  west: {kind: openai, base_url: 'http://127.0.0.1:2/v1', api_key: b}
  az: {kind: azure, base_url: 'http://127.0.0.1:3/openai/v1', api_key: c}
  anthropic: {kind: anthropic, base_url: 'http://127.0.0.1:4', api_key: d}
deployments:
  gpt-4.1:
    - {provider: east, weight: 3}
    - {provider: west}
    - {provider: az, model: gpt41-prod, priority: 1, api_key: c2, first_byte_timeout_ms: 2000}
fallbacks:
  claude-sonnet-4-6: [gpt-4.1, 'anthropic:claude-sonnet-4-6', nope:x]
failover: {max_attempts: 4}
";

    #[test]
    fn groups_list_every_deployment_then_fallbacks() {
        let r = router(G);
        let (first, rest) = r.candidates("gpt-4.1").unwrap();
        assert!(["east", "west"].contains(&first.provider.name.as_str()));
        assert_eq!(rest.len(), 2);
        let standby = &rest[1];
        assert_eq!(standby.provider.name, "az");
        assert_eq!(standby.model, "gpt41-prod");
        assert_eq!(standby.provider.api_key.as_deref(), Some("c2"));
        assert_eq!(standby.provider.auth_header.as_deref(), Some("api-key"));
        assert_eq!(
            standby.provider.timeouts.first_byte,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(standby.health.id, "gpt-4.1/az");
        assert!(rest.iter().all(|x| !x.fallback));

        // A plain route with fallbacks: the group's deployments, in order, capped; the
        // selector that does not resolve is skipped; the primary is not repeated.
        let (first, rest) = r.candidates("claude-sonnet-4-6").unwrap();
        assert_eq!(first.provider.name, "anthropic");
        assert_eq!(rest.len(), 3, "max_attempts 4 = the first + 3");
        assert!(rest.iter().all(|x| x.fallback));
        assert!(rest.iter().all(|x| x.provider.name != "anthropic"));

        // No group, no fallback: nothing to move on to.
        let (_, rest) = r.candidates("east:gpt-4o").unwrap();
        assert!(rest.is_empty());
        assert!(r.known_models(50).contains(&"gpt-4.1".to_string()));
    }

    #[test]
    fn a_second_key_on_the_same_provider_is_its_own_deployment() {
        let cfg = Config::from_yaml_str(
            "providers:\n  anthropic: {kind: anthropic, base_url: 'http://127.0.0.1:4', api_key: primary}\ndeployments:\n  claude-sonnet-4-6:\n    - {provider: anthropic}\n    - {provider: anthropic, api_key_env: BACKUP, priority: 1}\n",
            &|v| (v == "BACKUP").then(|| "backup".to_string()),
        )
        .unwrap();
        let r = Router::new(&cfg);
        let (first, rest) = r.candidates("claude-sonnet-4-6").unwrap();
        assert_eq!(first.provider.api_key.as_deref(), Some("primary"));
        assert_eq!(first.health.id, "claude-sonnet-4-6/anthropic");
        assert_eq!(rest[0].provider.api_key.as_deref(), Some("backup"));
        assert_eq!(rest[0].health.id, "claude-sonnet-4-6/anthropic#2");
        assert!(!Arc::ptr_eq(&first.health, &rest[0].health));
    }

    #[test]
    fn deployment_config_errors_name_the_field() {
        let bad = |extra: &str| {
            Config::from_yaml_str(&format!("{G}{extra}"), &|_| None)
                .unwrap_err()
                .to_string()
        };
        let e = Config::from_yaml_str(
            "providers:\n  a: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}\ndeployments:\n  m: [{provider: b}]\n",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("deployments.m[0].provider"), "{e}");
        assert!(bad("limits: {}\nfailover2: 1\n").contains("failover2"));
        let e = Config::from_yaml_str(
            "providers:\n  a: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}\ndeployments:\n  m: [{provider: a, weight: 0}]\n",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("weight"), "{e}");
    }
}
