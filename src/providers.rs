//! Each provider kind's wire details: which format it speaks, where each endpoint lives under
//! its base URL, and how its credential is presented. Presets make well-known services work
//! with only an API key in the environment.

use crate::endpoint::Endpoint;
use crate::translate::Format;

/// How a provider is addressed and authenticated (its URLs, headers and native endpoints).
/// The format it is spoken to in follows from it ([`ProviderKind::format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible API (Chat Completions, Responses, embeddings, ...).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent` (the native API, not its OpenAI-compatible one).
    Gemini,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "openai" | "openai-compatible" => Some(ProviderKind::OpenAi),
            "anthropic" | "anthropic-compatible" => Some(ProviderKind::Anthropic),
            "gemini" | "google" => Some(ProviderKind::Gemini),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// The generation format this kind of provider is spoken to in (an OpenAI provider also
    /// serves Responses natively when configured to: see `gateway::plan`).
    pub fn format(self) -> Format {
        match self {
            ProviderKind::OpenAi => Format::Chat,
            ProviderKind::Anthropic => Format::Anthropic,
            ProviderKind::Gemini => Format::Gemini,
        }
    }

    /// The upstream path (after the base URL's own path) that serves `ep`, or None if this
    /// kind has no such endpoint natively. (Gemini paths carry the model: see
    /// [`crate::translate::chat_to_gemini::path_for`].)
    pub fn endpoint_path(self, ep: Endpoint) -> Option<&'static str> {
        match (self, ep) {
            (ProviderKind::OpenAi, Endpoint::ChatCompletions) => Some("/chat/completions"),
            (ProviderKind::OpenAi, Endpoint::Responses) => Some("/responses"),
            (ProviderKind::OpenAi, Endpoint::Embeddings) => Some("/embeddings"),
            (ProviderKind::OpenAi, Endpoint::Moderations) => Some("/moderations"),
            (ProviderKind::Anthropic, Endpoint::Messages) => Some("/v1/messages"),
            (ProviderKind::Anthropic, Endpoint::CountTokens) => Some("/v1/messages/count_tokens"),
            _ => None,
        }
    }

    /// The header that carries the provider credential, and its value.
    pub fn auth_header(self, key: &str) -> (&'static str, String) {
        match self {
            ProviderKind::OpenAi => ("authorization", format!("Bearer {key}")),
            ProviderKind::Anthropic => ("x-api-key", key.to_string()),
            ProviderKind::Gemini => ("x-goog-api-key", key.to_string()),
        }
    }
}

/// The headers tollgate adds to every request to one provider, built once at config time:
/// `host`, the credential (marked sensitive, so it is never printed by `Debug`) and the
/// configured extra headers.
#[derive(Clone)]
pub struct WireHeaders {
    pub host: http::HeaderValue,
    pub auth: Option<(http::HeaderName, http::HeaderValue)>,
    pub extra: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Default for WireHeaders {
    fn default() -> Self {
        WireHeaders {
            host: http::HeaderValue::from_static("invalid"),
            auth: None,
            extra: Vec::new(),
        }
    }
}

impl WireHeaders {
    /// `auth_header` replaces the kind's own credential header (the key is sent as is).
    pub fn new(
        kind: ProviderKind,
        host: &str,
        port: u16,
        tls: bool,
        api_key: Option<&str>,
        auth_header: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<WireHeaders, String> {
        let host = if (tls && port == 443) || (!tls && port == 80) {
            host.to_string()
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let host = http::HeaderValue::from_str(&host).map_err(|_| "invalid host".to_string())?;
        let auth = match api_key {
            None => None,
            Some(key) => {
                let (name, value) = match auth_header {
                    Some(h) => (h.to_string(), key.to_string()),
                    None => {
                        let (n, v) = kind.auth_header(key);
                        (n.to_string(), v)
                    }
                };
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| "invalid credential header name".to_string())?;
                let mut value = http::HeaderValue::from_str(&value)
                    .map_err(|_| "the API key is not a valid header value".to_string())?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let extra = headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| k.clone())?,
                    http::HeaderValue::from_str(v).map_err(|_| k.clone())?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|k| format!("header '{k}' is not valid"))?;
        Ok(WireHeaders { host, auth, extra })
    }
}

impl std::fmt::Debug for WireHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireHeaders")
            .field("host", &self.host)
            .field("auth", &self.auth.as_ref().map(|(n, _)| n))
            .finish()
    }
}

/// A built-in provider definition.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub kind: ProviderKind,
    pub base_url: &'static str,
    /// Environment variable holding the API key; its presence activates the preset.
    pub key_env: Option<&'static str>,
    /// Environment variable overriding the base URL (activates keyless local servers).
    pub base_env: Option<&'static str>,
    /// Serves the OpenAI Responses API itself (else Responses requests are translated to
    /// Chat Completions).
    pub native_responses: bool,
}

use ProviderKind::{Anthropic, Gemini, OpenAi};

/// `(name, kind, base URL, key variable, base-URL variable, native Responses API)`.
type Row = (
    &'static str,
    ProviderKind,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

/// Well-known providers. OpenAI-compatible services are the `openai` kind with their own
/// base URL; only OpenAI itself (and Azure-style deployments configured by hand) serve the
/// Responses API, so the others get it translated to Chat Completions.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("openai", OpenAi, "https://api.openai.com/v1", Some("OPENAI_API_KEY"), None, true),
    ("anthropic", Anthropic, "https://api.anthropic.com", Some("ANTHROPIC_API_KEY"), None, false),
    ("gemini", Gemini, "https://generativelanguage.googleapis.com", Some("GEMINI_API_KEY"), None, false),
    ("groq", OpenAi, "https://api.groq.com/openai/v1", Some("GROQ_API_KEY"), None, false),
    ("mistral", OpenAi, "https://api.mistral.ai/v1", Some("MISTRAL_API_KEY"), None, false),
    ("deepseek", OpenAi, "https://api.deepseek.com/v1", Some("DEEPSEEK_API_KEY"), None, false),
    ("together", OpenAi, "https://api.together.xyz/v1", Some("TOGETHER_API_KEY"), None, false),
    ("openrouter", OpenAi, "https://openrouter.ai/api/v1", Some("OPENROUTER_API_KEY"), None, false),
    ("fireworks", OpenAi, "https://api.fireworks.ai/inference/v1", Some("FIREWORKS_API_KEY"), None, false),
    ("xai", OpenAi, "https://api.x.ai/v1", Some("XAI_API_KEY"), None, false),
    ("perplexity", OpenAi, "https://api.perplexity.ai", Some("PERPLEXITY_API_KEY"), None, false),
    ("cerebras", OpenAi, "https://api.cerebras.ai/v1", Some("CEREBRAS_API_KEY"), None, false),
    ("deepinfra", OpenAi, "https://api.deepinfra.com/v1/openai", Some("DEEPINFRA_API_KEY"), None, false),
    ("moonshot", OpenAi, "https://api.moonshot.ai/v1", Some("MOONSHOT_API_KEY"), None, false),
    ("sambanova", OpenAi, "https://api.sambanova.ai/v1", Some("SAMBANOVA_API_KEY"), None, false),
    ("nebius", OpenAi, "https://api.studio.nebius.com/v1", Some("NEBIUS_API_KEY"), None, false),
    ("dashscope", OpenAi, "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", Some("DASHSCOPE_API_KEY"), None, false),
    ("zai", OpenAi, "https://api.z.ai/api/paas/v4", Some("ZAI_API_KEY"), None, false),
    ("nvidia", OpenAi, "https://integrate.api.nvidia.com/v1", Some("NVIDIA_API_KEY"), None, false),
    ("hyperbolic", OpenAi, "https://api.hyperbolic.xyz/v1", Some("HYPERBOLIC_API_KEY"), None, false),
    ("novita", OpenAi, "https://api.novita.ai/v3/openai", Some("NOVITA_API_KEY"), None, false),
    ("huggingface", OpenAi, "https://router.huggingface.co/v1", Some("HF_TOKEN"), None, false),
    ("ollama", OpenAi, "http://127.0.0.1:11434/v1", None, Some("OLLAMA_BASE_URL"), false),
    ("vllm", OpenAi, "http://127.0.0.1:8001/v1", None, Some("VLLM_BASE_URL"), false),
    ("lmstudio", OpenAi, "http://127.0.0.1:1234/v1", None, Some("LMSTUDIO_BASE_URL"), false),
];

pub const PRESETS: &[Preset] = &{
    let mut out = [Preset {
        name: "",
        kind: OpenAi,
        base_url: "",
        key_env: None,
        base_env: None,
        native_responses: false,
    }; ROWS.len()];
    let mut i = 0;
    while i < ROWS.len() {
        let (name, kind, base_url, key_env, base_env, native_responses) = ROWS[i];
        out[i] = Preset {
            name,
            kind,
            base_url,
            key_env,
            base_env,
            native_responses,
        };
        i += 1;
    }
    out
};

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset list as `conf/tollgate.yaml` documents it, one comment line per preset (a
/// test keeps the file equal to this).
pub fn presets_comment() -> String {
    let mut out = String::new();
    for p in PRESETS {
        let activation = match (p.key_env, p.base_env) {
            (Some(k), _) => k.to_string(),
            (None, Some(b)) => format!("{b} (keyless)"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "#   {:<12} {:<28} {}\n",
            p.name, activation, p.base_url
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_twenty_presets_with_unique_names() {
        assert!(PRESETS.len() >= 20);
        let mut names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PRESETS.len());
        for p in PRESETS {
            assert!(
                crate::config::parse_base_url(p.base_url).is_ok(),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn the_annotated_config_lists_every_preset() {
        let conf = include_str!("../conf/tollgate.yaml");
        let begin = "# presets (name, activated by, base URL):\n";
        let start = conf.find(begin).expect("preset list in conf/tollgate.yaml") + begin.len();
        let end = start + conf[start..].find("presets: true").expect("presets: true");
        let listed = &conf[start..end];
        let want = presets_comment();
        assert_eq!(
            listed, want,
            "conf/tollgate.yaml's preset list differs from the code; it should read:\n{want}"
        );
    }

    #[test]
    fn credentials_go_in_the_kind_specific_header() {
        assert_eq!(
            OpenAi.auth_header("k"),
            ("authorization", "Bearer k".to_string())
        );
        assert_eq!(Anthropic.auth_header("k"), ("x-api-key", "k".to_string()));
        assert_eq!(Gemini.auth_header("k"), ("x-goog-api-key", "k".to_string()));
    }
}
