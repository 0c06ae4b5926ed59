//! Each provider kind's wire details: which dialect it speaks, where each endpoint lives under
//! its base URL, and how its credential is presented. Presets make well-known
//! OpenAI-compatible services work with only an API key in the environment.

use crate::endpoint::Endpoint;

/// The wire dialect of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible API (Chat Completions, Responses, embeddings, ...).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "openai" | "openai-compatible" => Some(ProviderKind::OpenAi),
            "anthropic" | "anthropic-compatible" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The upstream path (after the base URL's own path) that serves `ep`, or None if this
    /// kind has no such endpoint natively.
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
        }
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
}

const fn def(
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    key_env: Option<&'static str>,
    base_env: Option<&'static str>,
) -> Preset {
    Preset {
        name,
        kind,
        base_url,
        key_env,
        base_env,
    }
}

use ProviderKind::{Anthropic, OpenAi};

/// Well-known providers. OpenAI-compatible services are the `openai` kind with their own base URL.
pub const PRESETS: &[Preset] = &[
    def(
        "openai",
        OpenAi,
        "https://api.openai.com/v1",
        Some("OPENAI_API_KEY"),
        None,
    ),
    def(
        "anthropic",
        Anthropic,
        "https://api.anthropic.com",
        Some("ANTHROPIC_API_KEY"),
        None,
    ),
    def(
        "groq",
        OpenAi,
        "https://api.groq.com/openai/v1",
        Some("GROQ_API_KEY"),
        None,
    ),
    def(
        "mistral",
        OpenAi,
        "https://api.mistral.ai/v1",
        Some("MISTRAL_API_KEY"),
        None,
    ),
    def(
        "deepseek",
        OpenAi,
        "https://api.deepseek.com/v1",
        Some("DEEPSEEK_API_KEY"),
        None,
    ),
    def(
        "together",
        OpenAi,
        "https://api.together.xyz/v1",
        Some("TOGETHER_API_KEY"),
        None,
    ),
    def(
        "openrouter",
        OpenAi,
        "https://openrouter.ai/api/v1",
        Some("OPENROUTER_API_KEY"),
        None,
    ),
    def(
        "fireworks",
        OpenAi,
        "https://api.fireworks.ai/inference/v1",
        Some("FIREWORKS_API_KEY"),
        None,
    ),
    def(
        "xai",
        OpenAi,
        "https://api.x.ai/v1",
        Some("XAI_API_KEY"),
        None,
    ),
    def(
        "perplexity",
        OpenAi,
        "https://api.perplexity.ai",
        Some("PERPLEXITY_API_KEY"),
        None,
    ),
    def(
        "cerebras",
        OpenAi,
        "https://api.cerebras.ai/v1",
        Some("CEREBRAS_API_KEY"),
        None,
    ),
    def(
        "deepinfra",
        OpenAi,
        "https://api.deepinfra.com/v1/openai",
        Some("DEEPINFRA_API_KEY"),
        None,
    ),
    def(
        "moonshot",
        OpenAi,
        "https://api.moonshot.ai/v1",
        Some("MOONSHOT_API_KEY"),
        None,
    ),
    def(
        "sambanova",
        OpenAi,
        "https://api.sambanova.ai/v1",
        Some("SAMBANOVA_API_KEY"),
        None,
    ),
    def(
        "nebius",
        OpenAi,
        "https://api.studio.nebius.com/v1",
        Some("NEBIUS_API_KEY"),
        None,
    ),
    def(
        "ollama",
        OpenAi,
        "http://127.0.0.1:11434/v1",
        None,
        Some("OLLAMA_BASE_URL"),
    ),
    def(
        "vllm",
        OpenAi,
        "http://127.0.0.1:8001/v1",
        None,
        Some("VLLM_BASE_URL"),
    ),
    def(
        "lmstudio",
        OpenAi,
        "http://127.0.0.1:1234/v1",
        None,
        Some("LMSTUDIO_BASE_URL"),
    ),
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_ten_presets_with_unique_names() {
        assert!(PRESETS.len() >= 10);
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
    fn credentials_go_in_the_kind_specific_header() {
        assert_eq!(
            OpenAi.auth_header("k"),
            ("authorization", "Bearer k".to_string())
        );
        assert_eq!(Anthropic.auth_header("k"), ("x-api-key", "k".to_string()));
    }
}
