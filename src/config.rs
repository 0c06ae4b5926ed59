//! Configuration: YAML via serde, `${ENV}` expansion, and validation whose errors name the
//! field and say what is wrong.
//!
//! The file is read once at start. Everything the hot path needs is resolved here (provider
//! presets merged, base URLs parsed, credentials read from the environment) so that requests
//! never look at the environment or re-parse anything.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::providers::{self, ProviderKind};

/// A configuration problem, with the dotted path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file as written by the operator. Unknown keys are rejected so that a typo is an
/// error, not a silent fallback to a default (Pingora's own YAML ignores them).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub master_key: Option<String>,
    pub bootstrap_key: Option<bool>,
    pub max_body_bytes: Option<u64>,
    pub pingora_conf: Option<PathBuf>,
    pub threads: Option<usize>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    pub presets: Option<bool>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    pub prefix_routes: Option<Vec<RawPrefixRoute>>,
    /// `true`/`false`, or `{format: text|json, path: stderr|FILE, queue_lines}`.
    pub access_log: Option<crate::access::settings::RawAccessLog>,
    pub require_pricing: Option<bool>,
    /// Price overrides: `provider:model` (or `model`, or `prefix*`) → prices per million tokens.
    #[serde(default)]
    pub pricing: BTreeMap<String, crate::meter::price::Price>,
    pub reject_user_mismatch: Option<bool>,
    pub usage_retention_days: Option<u64>,
    pub default_max_output_tokens: Option<u64>,
    pub count_tokens: Option<CountTokensMode>,
    pub stream_keepalive_ms: Option<u64>,
    pub cost_in_stream: Option<bool>,
    pub ca_file: Option<PathBuf>,
    /// The store: sled (default) or PostgreSQL (see `store::settings`).
    pub store: Option<crate::store::settings::RawStore>,
    /// Concurrency and client-side limits (see [`Limits`]).
    pub limits: Option<RawLimits>,
    /// Several deployments behind one model name (see `balance::settings`).
    #[serde(default)]
    pub deployments: BTreeMap<String, Vec<crate::balance::settings::RawDeployment>>,
    /// Other models to try when every deployment of a model failed.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Attempts, retry budget and circuit breakers.
    pub failover: Option<crate::balance::settings::RawFailover>,
    /// Fetching each provider's model list (see [`ModelDiscovery`]).
    pub model_discovery: Option<RawModelDiscovery>,
    /// Stored Responses (see `responses::settings`).
    pub responses: Option<crate::responses::settings::RawResponses>,
    /// `tools:` (gateway-run web search and code execution).
    pub tools: Option<crate::tools::settings::RawTools>,
    /// Guardrail service, policies and cache (see `guardrails::policy`).
    pub guardrails: Option<crate::guardrails::policy::RawGuardrails>,
    /// Request traces (see `traces::settings`).
    pub traces: Option<crate::traces::settings::RawTraces>,
    /// OpenTelemetry export (see `otel::settings`).
    pub otel: Option<crate::otel::settings::RawOtel>,
    /// Budget alerts (see `alerts::settings`).
    pub alerts: Option<crate::alerts::settings::RawAlerts>,
    /// The web console (see `ui::settings`).
    pub ui: Option<crate::ui::settings::RawUi>,
    /// CORS for browser-based API clients (see `gateway::cors`).
    pub cors: Option<crate::gateway::cors::RawCors>,
    /// MCP servers registered in the file (see `mcp::settings`).
    pub mcp_servers: Option<Vec<crate::mcp::settings::RawMcpServer>>,
    /// tollgate's own MCP endpoint, `/mcp` (see `mcp::settings`).
    pub mcp_gateway: Option<crate::mcp::settings::RawMcpGateway>,
}

/// `model_discovery:` as written; every field is optional.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawModelDiscovery {
    pub enabled: Option<bool>,
    pub refresh_secs: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// Model discovery: each provider's own model list, fetched in the background and merged into
/// `GET /v1/models` and bare-name routing (`src/discovery.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDiscovery {
    pub enabled: bool,
    /// Time between two fetches of a provider's list that succeeded.
    pub refresh: Duration,
    /// Bound on each request of a fetch (one page).
    pub timeout: Duration,
}

impl Default for ModelDiscovery {
    fn default() -> Self {
        ModelDiscovery {
            enabled: true,
            refresh: Duration::from_secs(600),
            timeout: Duration::from_millis(5000),
        }
    }
}

fn build_model_discovery(raw: Option<RawModelDiscovery>) -> Result<ModelDiscovery, ConfigError> {
    let d = ModelDiscovery::default();
    let Some(r) = raw else { return Ok(d) };
    let refresh = match r.refresh_secs {
        Some(n) if !(1..=86_400 * 7).contains(&n) => {
            return Err(ConfigError::new(
                "model_discovery.refresh_secs",
                format!("must be between 1 and 604800, got {n}"),
            ))
        }
        Some(n) => Duration::from_secs(n),
        None => d.refresh,
    };
    let timeout = match r.timeout_ms {
        Some(n) if !(1..=300_000).contains(&n) => {
            return Err(ConfigError::new(
                "model_discovery.timeout_ms",
                format!("must be between 1 and 300000, got {n}"),
            ))
        }
        Some(n) => Duration::from_millis(n),
        None => d.timeout,
    };
    Ok(ModelDiscovery {
        enabled: r.enabled.unwrap_or(d.enabled),
        refresh,
        timeout,
    })
}

/// `limits:` as written; every field is optional.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_inflight: Option<usize>,
    pub max_inflight_per_key: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub client_read_timeout_ms: Option<u64>,
}

/// How `/v1/messages/count_tokens` is answered.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CountTokensMode {
    /// Always counted locally (BPE).
    Local,
    /// Always forwarded (Anthropic-kind providers; others are counted locally).
    Upstream,
    /// Forwarded to Anthropic-kind providers, with the local count when that fails or takes
    /// longer than a second.
    #[default]
    Auto,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    /// Time to the response header (overrides `read_timeout_ms` for that phase).
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest silence between two body chunks of a response (overrides `read_timeout_ms`).
    pub stream_idle_timeout_ms: Option<u64>,
    /// The provider serves the OpenAI Responses API itself (`openai` kind). When false,
    /// Responses requests are translated to Chat Completions.
    pub native_responses: Option<bool>,
    /// The header that carries the credential, as is (e.g. `api-key` for Azure OpenAI),
    /// instead of the kind's own (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`).
    pub auth_header: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawPrefixRoute {
    pub prefix: String,
    pub provider: String,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub master_key: Option<String>,
    pub bootstrap_key: bool,
    pub max_body_bytes: usize,
    pub pingora_conf: Option<PathBuf>,
    pub threads: usize,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub providers: BTreeMap<String, Provider>,
    pub aliases: BTreeMap<String, String>,
    pub prefix_routes: Vec<PrefixRoute>,
    /// None: no access lines (see `access::settings`).
    pub access_log: Option<crate::access::settings::AccessLog>,
    /// Refuse unpriced models with 402 before any upstream call.
    pub require_pricing: bool,
    pub pricing: BTreeMap<String, crate::meter::price::Price>,
    /// Refuse (403) requests on a key bound to a user whose body names another user. Off by
    /// default: OpenAI apps send their end-user id in `user` routinely, and that is
    /// attribution, not impersonation.
    pub reject_user_mismatch: bool,
    /// Usage records older than this are deleted (0 keeps them forever).
    pub usage_retention_days: u64,
    /// Output tokens assumed for budget reservations when a request sets no maximum.
    pub default_max_output_tokens: u64,
    pub count_tokens: CountTokensMode,
    /// Keep-alive interval of translated streams while the provider is silent.
    pub stream_keepalive: Duration,
    /// Put the request's cost in a stream's final usage event (`tollgate_cost_usd`). Off by
    /// default: a strict client may reject a field it does not know.
    pub cost_in_stream: bool,
    /// A PEM bundle that replaces the OS trust store for upstream TLS.
    pub ca_file: Option<PathBuf>,
    pub store: crate::store::settings::StoreConfig,
    pub limits: Limits,
    pub failover: crate::balance::settings::FailoverConfig,
    pub model_discovery: ModelDiscovery,
    pub responses: crate::responses::settings::ResponsesConfig,
    pub tools: crate::tools::settings::ToolsConfig,
    pub guardrails: crate::guardrails::Settings,
    pub traces: crate::traces::settings::TraceSettings,
    /// OpenTelemetry export; None: off (see `otel::settings`).
    pub otel: Option<crate::otel::settings::OtelSettings>,
    pub alerts: crate::alerts::settings::AlertSettings,
    pub ui: crate::ui::settings::UiConfig,
    pub cors: crate::gateway::cors::CorsConfig,
    /// Registered MCP servers and the `/mcp` endpoint's settings.
    pub mcp: crate::mcp::settings::McpSettings,
}

/// Concurrency and slow-client limits. Excess requests are refused at once (429 per key,
/// 503 overall, both with `retry-after`): nothing queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Forwarded requests in flight in this process (0 = no limit).
    pub max_inflight: usize,
    /// Forwarded requests in flight per virtual key (0 = no limit).
    pub max_inflight_per_key: usize,
    /// Largest request header block (request line and headers), answered with 431.
    pub max_header_bytes: usize,
    /// From the first byte of a request to the end of its header block (slowloris).
    pub header_timeout: Duration,
    /// Whole-body deadline for reading a request body.
    pub body_timeout: Duration,
    /// Longest silence while reading a request body.
    pub client_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight: 4096,
            max_inflight_per_key: 256,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(120),
            client_read_timeout: Duration::from_secs(30),
        }
    }
}

fn build_limits(raw: Option<RawLimits>) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let Some(r) = raw else { return Ok(d) };
    let ms = |v: Option<u64>, def: Duration, f: &str| -> Result<Duration, ConfigError> {
        match v {
            Some(0) => Err(ConfigError::new(
                format!("limits.{f}"),
                "must be greater than 0",
            )),
            Some(n) => Ok(Duration::from_millis(n)),
            None => Ok(def),
        }
    };
    let max_header_bytes = r.max_header_bytes.unwrap_or(d.max_header_bytes);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        return Err(ConfigError::new(
            "limits.max_header_bytes",
            format!("must be between 1024 and 1048576 (Pingora's own cap), got {max_header_bytes}"),
        ));
    }
    Ok(Limits {
        max_inflight: r.max_inflight.unwrap_or(d.max_inflight),
        max_inflight_per_key: r.max_inflight_per_key.unwrap_or(d.max_inflight_per_key),
        max_header_bytes,
        header_timeout: ms(r.header_timeout_ms, d.header_timeout, "header_timeout_ms")?,
        body_timeout: ms(r.body_timeout_ms, d.body_timeout, "body_timeout_ms")?,
        client_read_timeout: ms(
            r.client_read_timeout_ms,
            d.client_read_timeout,
            "client_read_timeout_ms",
        )?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRoute {
    pub prefix: String,
    pub provider: String,
}

/// One upstream provider, ready for the hot path.
#[derive(Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix of the base URL without a trailing slash ("" or "/v1" or "/openai/v1").
    pub base_path: String,
    /// The provider credential. Never logged: `Debug` below redacts it.
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub models: Vec<String>,
    pub timeouts: Timeouts,
    /// True when the provider came from a built-in preset rather than the file.
    pub from_preset: bool,
    /// `openai` kind only: `/responses` is served natively (else translated to chat).
    pub native_responses: bool,
    /// A header of its own for the credential, sent as is (lower-case name).
    pub auth_header: Option<String>,
    /// Host, credential and extra headers, ready to copy into each upstream request.
    pub wire: providers::WireHeaders,
}

impl Provider {
    /// Rebuilds [`Provider::wire`] after the credential or headers changed.
    pub fn refresh_wire(&mut self) -> Result<(), String> {
        self.wire = providers::WireHeaders::new(
            self.kind,
            &self.host,
            self.port,
            self.tls,
            self.api_key.as_deref(),
            self.auth_header.as_deref(),
            &self.headers,
        )?;
        Ok(())
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field(
                "base",
                &format!(
                    "{}://{}:{}{}",
                    if self.tls { "https" } else { "http" },
                    self.host,
                    self.port,
                    self.base_path
                ),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("models", &self.models)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Per read on the upstream socket (`read_timeout_ms`): the default of the two below.
    pub read: Duration,
    /// From the request sent to the response header (a non-streaming answer is generated
    /// whole before its header: this bounds the generation time).
    pub first_byte: Duration,
    /// Longest silence between two chunks of a response body (a stalled stream).
    pub stream_idle: Duration,
    pub write: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub idle: Duration,
    /// Whole-request deadline, enforced by the gateway (Pingora has none on the peer).
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        // LLM streams are long and have long silent phases (thinking, big prompts):
        // minutes, not seconds.
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(600),
            first_byte: Duration::from_secs(600),
            stream_idle: Duration::from_secs(300),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(55),
            total: Duration::from_secs(3600),
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Said at start and in `/health` when no provider is configured.
pub const NO_PROVIDER_HINT: &str = "no provider is configured: every model request will fail. \
Put a provider's API key in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, \
GROQ_API_KEY, ... or OLLAMA_BASE_URL; see conf/tollgate.yaml for all presets) and restart, \
or add one under `providers:` in the config";
pub const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;
const MAX_MAX_BODY: u64 = 1024 * 1024 * 1024;

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Self::from_yaml_str(&text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; `env` looks up variables (injectable for tests).
    pub fn from_yaml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded = expand_env(text, env)?;
        let raw: RawConfig = if expanded.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(&expanded).map_err(|e| {
                let loc = e
                    .location()
                    .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                    .unwrap_or_default();
                ConfigError::new("", format!("invalid YAML{loc}: {e}"))
            })?
        };
        Self::validate(raw, env)
    }

    fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let listen = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "listen",
                format!("'{listen}' is not an address:port such as 127.0.0.1:8000"),
            ));
        }
        let max_body = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body == 0 || max_body > MAX_MAX_BODY {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_MAX_BODY}, got {max_body}"),
            ));
        }
        if let Some(mk) = &raw.master_key {
            if mk.len() < 16 {
                return Err(ConfigError::new(
                    "master_key",
                    "must be at least 16 characters (or leave it out to have one generated)",
                ));
            }
        }
        let threads = raw.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if threads == 0 || threads > 1024 {
            return Err(ConfigError::new("threads", "must be between 1 and 1024"));
        }

        let mut providers = BTreeMap::new();
        for (name, p) in &raw.providers {
            let field = format!("providers.{name}");
            if !valid_provider_name(name) {
                return Err(ConfigError::new(
                    field,
                    "provider names may hold only letters, digits, '-' and '_'",
                ));
            }
            let prov = build_provider(name, p, env, &field)?;
            providers.insert(name.clone(), prov);
        }
        if raw.presets.unwrap_or(true) {
            for preset in providers::PRESETS {
                if providers.contains_key(preset.name) {
                    continue;
                }
                // A preset is active when its credential is in the environment (keyless
                // local servers need an explicit base-URL variable).
                let key = preset.key_env.and_then(env).filter(|k| !k.is_empty());
                let base = preset.base_env.and_then(env).filter(|b| !b.is_empty());
                let active = match (preset.key_env, preset.base_env) {
                    (Some(_), _) => key.is_some(),
                    (None, Some(_)) => base.is_some(),
                    (None, None) => false,
                };
                if !active {
                    continue;
                }
                let rp = RawProvider {
                    kind: Some(preset.kind.as_str().to_string()),
                    base_url: Some(base.unwrap_or_else(|| preset.base_url.to_string())),
                    api_key: key,
                    ..Default::default()
                };
                let mut prov =
                    build_provider(preset.name, &rp, env, &format!("presets.{}", preset.name))?;
                prov.from_preset = true;
                providers.insert(preset.name.to_string(), prov);
            }
        }

        for (alias, target) in &raw.aliases {
            if target.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("aliases.{alias}"),
                    "target must be a model selector such as 'anthropic:claude-sonnet-4-6'",
                ));
            }
        }
        let prefix_routes = match raw.prefix_routes {
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    if r.prefix.is_empty() {
                        return Err(ConfigError::new(
                            format!("prefix_routes[{i}].prefix"),
                            "must not be empty",
                        ));
                    }
                    Ok(PrefixRoute {
                        prefix: r.prefix.trim_end_matches('*').to_string(),
                        provider: r.provider,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => default_prefix_routes(),
        };
        // A route to an unconfigured provider is allowed (the provider may come from the
        // environment on another machine); the router skips it and says so in its error.

        Ok(Config {
            listen,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            master_key: raw.master_key,
            bootstrap_key: raw.bootstrap_key.unwrap_or(true),
            max_body_bytes: max_body as usize,
            pingora_conf: raw.pingora_conf,
            threads,
            grace_period_seconds: raw.grace_period_seconds.unwrap_or(30),
            graceful_shutdown_timeout_seconds: raw.graceful_shutdown_timeout_seconds.unwrap_or(10),
            aliases: raw.aliases,
            prefix_routes,
            access_log: crate::access::settings::build(raw.access_log)?,
            require_pricing: raw.require_pricing.unwrap_or(false),
            pricing: raw.pricing,
            reject_user_mismatch: raw.reject_user_mismatch.unwrap_or(false),
            usage_retention_days: raw.usage_retention_days.unwrap_or(90),
            default_max_output_tokens: match raw.default_max_output_tokens {
                Some(0) => {
                    return Err(ConfigError::new(
                        "default_max_output_tokens",
                        "must be greater than 0",
                    ))
                }
                Some(n) => n,
                None => 4096,
            },
            count_tokens: raw.count_tokens.unwrap_or_default(),
            cost_in_stream: raw.cost_in_stream.unwrap_or(false),
            store: crate::store::settings::build(raw.store)?,
            ca_file: match raw.ca_file {
                Some(p) if !p.is_file() => {
                    return Err(ConfigError::new(
                        "ca_file",
                        format!("{} is not a readable file", p.display()),
                    ))
                }
                other => other,
            },
            stream_keepalive: match raw.stream_keepalive_ms {
                Some(0) => {
                    return Err(ConfigError::new(
                        "stream_keepalive_ms",
                        "must be greater than 0",
                    ))
                }
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(15),
            },
            limits: build_limits(raw.limits)?,
            model_discovery: build_model_discovery(raw.model_discovery)?,
            responses: crate::responses::settings::build(raw.responses)?,
            tools: crate::tools::settings::build(raw.tools, env)?,
            guardrails: crate::guardrails::policy::build(raw.guardrails, env)?,
            traces: crate::traces::settings::build(raw.traces)?,
            otel: crate::otel::settings::build(raw.otel, env)?,
            alerts: crate::alerts::settings::build(raw.alerts)?,
            ui: crate::ui::settings::build(raw.ui)?,
            cors: crate::gateway::cors::build(raw.cors)?,
            mcp: crate::mcp::settings::build(raw.mcp_servers, raw.mcp_gateway)?,
            failover: crate::balance::settings::build(
                raw.deployments,
                raw.fallbacks,
                raw.failover,
                &providers,
                env,
            )?,
            providers,
        })
    }
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn default_prefix_routes() -> Vec<PrefixRoute> {
    let r = |p: &str, prov: &str| PrefixRoute {
        prefix: p.to_string(),
        provider: prov.to_string(),
    };
    vec![
        r("claude-", "anthropic"),
        r("gpt-", "openai"),
        r("chatgpt-", "openai"),
        r("o1", "openai"),
        r("o3", "openai"),
        r("o4", "openai"),
        r("text-embedding-", "openai"),
        r("omni-moderation", "openai"),
        r("gemini-", "gemini"),
    ]
}

fn build_provider(
    name: &str,
    p: &RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    field: &str,
) -> Result<Provider, ConfigError> {
    let preset = providers::preset(name);
    // Azure OpenAI is the OpenAI dialect with its key in `api-key`.
    let azure = p
        .kind
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case("azure"));
    let kind = match p.kind.as_deref() {
        Some(_) if azure => ProviderKind::OpenAi,
        Some(k) => ProviderKind::parse(k).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.kind"),
                format!("unknown kind '{k}': expected one of openai, anthropic, gemini, azure"),
            )
        })?,
        None => preset.map(|p| p.kind).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.kind"),
                "missing: say 'openai' (any OpenAI-compatible API), 'anthropic' or 'gemini'",
            )
        })?,
    };
    let base_url = match (&p.base_url, preset) {
        (Some(u), _) => u.clone(),
        (None, Some(pr)) => pr
            .base_env
            .and_then(env)
            .unwrap_or_else(|| pr.base_url.to_string()),
        (None, None) => {
            return Err(ConfigError::new(
                format!("{field}.base_url"),
                "missing: the provider's API root, e.g. https://api.example.com/v1",
            ))
        }
    };
    let (tls, host, port, mut base_path) =
        parse_base_url(&base_url).map_err(|m| ConfigError::new(format!("{field}.base_url"), m))?;
    if kind == ProviderKind::Anthropic && base_path.ends_with("/v1") {
        // Anthropic clients append /v1/messages to the root; accept both spellings.
        base_path.truncate(base_path.len() - 3);
    }
    let api_key = match (&p.api_key, &p.api_key_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field,
                "set api_key or api_key_env, not both",
            ));
        }
        (Some(k), None) => Some(k.clone()),
        (None, Some(var)) => Some(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, None) => preset
            .and_then(|pr| pr.key_env)
            .and_then(env)
            .filter(|v| !v.is_empty()),
    };
    if let Some(k) = &api_key {
        if k.contains(['\r', '\n']) {
            return Err(ConfigError::new(
                format!("{field}.api_key"),
                "must not contain line breaks",
            ));
        }
    }
    let mut headers = Vec::new();
    for (k, v) in &p.headers {
        if http::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::header::HeaderValue::from_str(v).is_err()
        {
            return Err(ConfigError::new(
                format!("{field}.headers.{k}"),
                "not a valid HTTP header name and value",
            ));
        }
        headers.push((k.to_ascii_lowercase(), v.clone()));
    }
    let d = Timeouts::default();
    let ms = |v: Option<u64>, def: Duration, f: &str| -> Result<Duration, ConfigError> {
        match v {
            Some(0) => Err(ConfigError::new(
                format!("{field}.{f}"),
                "must be greater than 0",
            )),
            Some(n) => Ok(Duration::from_millis(n)),
            None => Ok(def),
        }
    };
    let read = ms(p.read_timeout_ms, d.read, "read_timeout_ms")?;
    // An explicit read_timeout_ms sets both phases; the specific options override it.
    let (fb_def, idle_def) = if p.read_timeout_ms.is_some() {
        (read, read)
    } else {
        (d.first_byte, d.stream_idle)
    };
    let timeouts = Timeouts {
        connect: ms(p.connect_timeout_ms, d.connect, "connect_timeout_ms")?,
        read,
        first_byte: ms(p.first_byte_timeout_ms, fb_def, "first_byte_timeout_ms")?,
        stream_idle: ms(p.stream_idle_timeout_ms, idle_def, "stream_idle_timeout_ms")?,
        write: ms(p.write_timeout_ms, d.write, "write_timeout_ms")?,
        idle: ms(p.idle_timeout_ms, d.idle, "idle_timeout_ms")?,
        total: ms(p.total_timeout_ms, d.total, "total_timeout_ms")?,
    };
    let mut prov = Provider {
        name: name.to_string(),
        kind,
        tls,
        host,
        port,
        base_path,
        api_key,
        headers,
        models: p.models.clone(),
        timeouts,
        from_preset: false,
        native_responses: kind == ProviderKind::OpenAi
            && p.native_responses
                .unwrap_or_else(|| preset.is_none_or(|pr| pr.native_responses)),
        auth_header: match (&p.auth_header, azure) {
            (Some(h), _) => {
                if http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        format!("{field}.auth_header"),
                        "not a valid HTTP header name",
                    ));
                }
                Some(h.to_ascii_lowercase())
            }
            (None, true) => Some("api-key".to_string()),
            (None, false) => None,
        },
        wire: Default::default(),
    };
    prov.refresh_wire()
        .map_err(|m| ConfigError::new(field, m))?;
    Ok(prov)
}

/// Splits `scheme://host[:port][/path]`. Only http and https are accepted.
pub fn parse_base_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("'{url}' must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "'{url}' has no host (credentials in URLs are not allowed)"
        ));
    }
    if path.contains(['?', '#']) {
        return Err(format!("'{url}' must not carry a query or fragment"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        // IPv6 literal
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("'{url}': unclosed '['"))?;
        let host = &stripped[..end];
        let port = match &stripped[end + 1..] {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("'{url}': bad port"))?,
            ),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("'{url}': port '{p}' is not a number"))?,
        None if tls => 443,
        None => 80,
    };
    Ok((tls, host, port, path.trim_end_matches('/').to_string()))
}

/// Where a YAML comment starts on `line` (a `#` at the start or after white space, outside
/// quotes), if anywhere.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Replaces `${NAME}` and `${NAME:-default}`; `$$` stands for a literal `$`. An unset variable
/// without a default is an error naming the variable (a silent empty string hides mistakes).
/// Comments are left alone, so commented-out examples never need their variables.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = match comment_start(line) {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        out.push_str(&expand_line(code, env).map_err(|mut e| {
            e.message = format!("line {}: {}", n + 1, e.message);
            e
        })?);
        out.push_str(comment);
    }
    Ok(out)
}

fn expand_line(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('{') {
            let end = a.find('}').ok_or_else(|| {
                ConfigError::new("", "unclosed '${' in config (write $$ for a literal $)")
            })?;
            let expr = &a[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::new(
                    "",
                    format!("'${{{expr}}}' is not a valid variable reference"),
                ));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(ConfigError::new(
                        "",
                        format!("environment variable {name} is not set (use ${{{name}:-default}} for an optional one)"),
                    ))
                }
            }
            rest = &a[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        let env = env_of(&[("A", "x")]);
        assert_eq!(
            expand_env("k: ${A} ${B:-d} $$x $y", &env).unwrap(),
            "k: x d $x $y"
        );
        let err = expand_env("k: ${MISSING}", &env).unwrap_err();
        assert!(err.message.contains("MISSING"), "{err}");
        // comments are not expanded; quoted '#' is not a comment
        assert_eq!(
            expand_env("a: 1 # uses ${NOPE}\nb: '#${A}'\n", &env).unwrap(),
            "a: 1 # uses ${NOPE}\nb: '#x'\n"
        );
    }

    #[test]
    fn presets_activate_from_environment() {
        let env = env_of(&[("OPENAI_API_KEY", "sk-1"), ("GROQ_API_KEY", "gk")]);
        let c = Config::from_yaml_str("", &env).unwrap();
        assert!(c.providers.contains_key("openai"));
        assert!(c.providers.contains_key("groq"));
        assert!(!c.providers.contains_key("anthropic"));
        assert_eq!(c.providers["groq"].host, "api.groq.com");
        assert_eq!(c.providers["groq"].base_path, "/openai/v1");
        assert_eq!(c.listen, DEFAULT_LISTEN);
    }

    #[test]
    fn errors_name_the_field() {
        let env = env_of(&[]);
        let e = Config::from_yaml_str(
            "providers:\n  x:\n    kind: foo\n    base_url: http://a\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "providers.x.kind");
        let e = Config::from_yaml_str("providers:\n  x:\n    kind: openai\n", &env).unwrap_err();
        assert_eq!(e.field, "providers.x.base_url");
        let e = Config::from_yaml_str("listen: nope\n", &env).unwrap_err();
        assert_eq!(e.field, "listen");
        let e = Config::from_yaml_str("lisen: 1\n", &env).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let e = Config::from_yaml_str(
            "providers:\n  x:\n    kind: openai\n    base_url: http://a\n    api_key_env: NOPE\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "providers.x.api_key_env");
    }

    #[test]
    fn anthropic_base_url_drops_v1() {
        let env = env_of(&[]);
        let c = Config::from_yaml_str(
            "providers:\n  a:\n    kind: anthropic\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.providers["a"].base_path, "");
        assert_eq!(c.providers["a"].port, 9);
        assert!(!format!("{:?}", c.providers["a"]).contains("\"k\""));
    }

    #[test]
    fn shipped_configs_are_valid() {
        let env = env_of(&[("OPENAI_API_KEY", "sk-a"), ("ANTHROPIC_API_KEY", "sk-b")]);
        let c = Config::from_yaml_str(include_str!("../conf/tollgate.yaml"), &env).unwrap();
        assert_eq!(c.count_tokens, CountTokensMode::Auto);
        assert!(c.providers.contains_key("openai") && c.providers.contains_key("anthropic"));
        let c = Config::from_yaml_str(include_str!("../proxy.yaml"), &env_of(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert!(c.providers.is_empty());
    }

    #[test]
    fn model_discovery_defaults_and_bounds() {
        let env = env_of(&[]);
        let c = Config::from_yaml_str("", &env).unwrap();
        assert_eq!(c.model_discovery, ModelDiscovery::default());
        assert!(c.model_discovery.enabled);
        assert_eq!(c.model_discovery.refresh, Duration::from_secs(600));
        assert_eq!(c.model_discovery.timeout, Duration::from_millis(5000));
        let c = Config::from_yaml_str("model_discovery: {enabled: false}\n", &env).unwrap();
        assert!(!c.model_discovery.enabled);
        let e = Config::from_yaml_str("model_discovery: {refresh_secs: 0}\n", &env).unwrap_err();
        assert_eq!(e.field, "model_discovery.refresh_secs");
        let e = Config::from_yaml_str("model_discovery: {timeout_ms: 0}\n", &env).unwrap_err();
        assert_eq!(e.field, "model_discovery.timeout_ms");
        let e = Config::from_yaml_str("model_discovery: {refresh: 5}\n", &env).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn parses_base_urls() {
        assert_eq!(
            parse_base_url("https://api.openai.com/v1/").unwrap(),
            (true, "api.openai.com".into(), 443, "/v1".into())
        );
        assert_eq!(
            parse_base_url("http://[::1]:8080").unwrap(),
            (false, "::1".into(), 8080, "".into())
        );
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("http://u:p@x").is_err());
    }
}
