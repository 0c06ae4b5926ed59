//! What a request path means. Classified once per request, before anything else runs.

use crate::translate::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Messages,
    CountTokens,
    Responses,
    Embeddings,
    Moderations,
    Models,
    Model,
    Root,
    Health,
    Metrics,
    /// The management API (`/v1/keys`, `/v1/users`, `/v1/budgets`, `/v1/pricing`, `/v1/usage`,
    /// `/v1/admins`).
    Admin,
    /// A key reading its own standing.
    KeyInfo,
    /// A stored response: `GET`/`DELETE /v1/responses/{id}`, `…/input_items`, `…/cancel`.
    StoredResponse,
    /// The Conversations API (`/v1/conversations…`).
    Conversations,
    /// The gateway-run tools (`GET /v1/tools`).
    Tools,
    /// The web console (`/ui` and below, any method).
    Ui,
    /// A CORS preflight (`OPTIONS` on an inference endpoint or a model listing).
    Preflight,
    /// tollgate's MCP server (Streamable HTTP): the registered servers' tools a key may use.
    Mcp,
    NotFound,
}

impl Endpoint {
    /// Classifies a method and path (without the query string).
    pub fn classify(method: &str, path: &str) -> Endpoint {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        match (method, path) {
            ("POST", "/v1/chat/completions") => Endpoint::ChatCompletions,
            ("POST", "/v1/messages") => Endpoint::Messages,
            ("POST", "/v1/messages/count_tokens") => Endpoint::CountTokens,
            ("POST", "/v1/responses") => Endpoint::Responses,
            ("POST", "/v1/embeddings") => Endpoint::Embeddings,
            ("POST", "/v1/moderations") => Endpoint::Moderations,
            ("GET", "/v1/models") => Endpoint::Models,
            ("GET" | "HEAD", "/") => Endpoint::Root,
            // `/health/liveness` and `/health/readiness` are Otari's paths (for users moving over).
            (
                "GET" | "HEAD",
                "/health" | "/health/live" | "/health/ready" | "/health/liveness"
                | "/health/readiness",
            ) => Endpoint::Health,
            ("GET", "/metrics") => Endpoint::Metrics,
            ("GET", "/v1/key/info") => Endpoint::KeyInfo,
            ("GET" | "DELETE" | "POST", p) if p.starts_with("/v1/responses/") => {
                Endpoint::StoredResponse
            }
            ("GET" | "DELETE" | "POST", p)
                if p == "/v1/conversations" || p.starts_with("/v1/conversations/") =>
            {
                Endpoint::Conversations
            }
            ("GET", "/v1/tools") => Endpoint::Tools,
            (_, p) if p == "/ui" || p.starts_with("/ui/") => Endpoint::Ui,
            ("OPTIONS", p) if crate::gateway::cors::applies(p) => Endpoint::Preflight,
            ("POST" | "GET" | "DELETE", "/mcp") => Endpoint::Mcp,
            (_, p) if is_admin_path(p) => Endpoint::Admin,
            ("GET", p) if p.starts_with("/v1/models/") => Endpoint::Model,
            _ => Endpoint::NotFound,
        }
    }

    /// Endpoints that are forwarded to a provider and carry a JSON body with a `model`.
    pub fn is_inference(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Messages
                | Endpoint::CountTokens
                | Endpoint::Responses
                | Endpoint::Embeddings
                | Endpoint::Moderations
        )
    }

    pub fn is_admin(self) -> bool {
        self == Endpoint::Admin
    }

    /// The format this endpoint's clients speak, and so the envelope of its errors and the
    /// shape of what passes through it (embeddings, moderations and the local endpoints are
    /// OpenAI-shaped: Chat).
    pub fn format(self) -> Format {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Format::Anthropic,
            Endpoint::Responses | Endpoint::StoredResponse | Endpoint::Conversations => {
                Format::Responses
            }
            _ => Format::Chat,
        }
    }

    /// The format of a generation endpoint, whose requests can be translated for a provider
    /// that speaks another one.
    pub fn generation_format(self) -> Option<Format> {
        match self {
            Endpoint::Messages => Some(Format::Anthropic),
            Endpoint::ChatCompletions => Some(Format::Chat),
            Endpoint::Responses => Some(Format::Responses),
            _ => None,
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Moderations => "moderations",
            Endpoint::Models => "models",
            Endpoint::Model => "model",
            Endpoint::Root => "root",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Admin => "admin",
            Endpoint::KeyInfo => "key_info",
            Endpoint::StoredResponse => "stored_response",
            Endpoint::Conversations => "conversations",
            Endpoint::Tools => "tools",
            Endpoint::Ui => "ui",
            Endpoint::Preflight => "preflight",
            Endpoint::Mcp => "mcp",
            Endpoint::NotFound => "not_found",
        }
    }
}

fn is_admin_path(p: &str) -> bool {
    [
        "/v1/keys",
        "/v1/users",
        "/v1/teams",
        "/v1/orgs",
        "/v1/budgets",
        "/v1/pricing",
        "/v1/usage",
        "/v1/traces",
        "/v1/admins",
        "/v1/mcp",
    ]
    .iter()
    .any(|root| {
        p == *root
            || p.strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(
            Endpoint::classify("POST", "/v1/messages"),
            Endpoint::Messages
        );
        assert_eq!(
            Endpoint::classify("POST", "/v1/messages/"),
            Endpoint::Messages
        );
        assert_eq!(
            Endpoint::classify("POST", "/v1/messages/count_tokens"),
            Endpoint::CountTokens
        );
        assert_eq!(
            Endpoint::classify("GET", "/v1/messages"),
            Endpoint::NotFound
        );
        assert_eq!(Endpoint::classify("HEAD", "/"), Endpoint::Root);
        assert_eq!(
            Endpoint::classify("DELETE", "/v1/keys/k_1"),
            Endpoint::Admin
        );
        assert_eq!(Endpoint::classify("GET", "/v1/usage"), Endpoint::Admin);
        assert_eq!(Endpoint::classify("GET", "/v1/usersx"), Endpoint::NotFound);
        assert_eq!(Endpoint::classify("GET", "/v1/key/info"), Endpoint::KeyInfo);
        assert_eq!(Endpoint::classify("POST", "/ui/login"), Endpoint::Ui);
        assert_eq!(Endpoint::classify("GET", "/ui/"), Endpoint::Ui);
        assert_eq!(Endpoint::classify("GET", "/uix"), Endpoint::NotFound);
        assert_eq!(
            Endpoint::classify("GET", "/v1/models/gpt-4o"),
            Endpoint::Model
        );
        assert_eq!(Endpoint::Messages.format(), Format::Anthropic);
        assert_eq!(Endpoint::ChatCompletions.format(), Format::Chat);
        assert_eq!(Endpoint::CountTokens.generation_format(), None);
    }
}
