//! What to send upstream for a routed request: same format (passthrough with only the edits
//! tollgate must make), or a translation through the chat hub (client → C → provider), and
//! how the answer must be treated on the way back.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::body::RequestJson;
use super::response::{Cross, Format, TapSpec, Translation};
use super::Ctx;
use crate::config::Provider;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::meter::Wire;
use crate::providers::ProviderKind;
use crate::route::Route;
use crate::translate::shared::ToolNames;
use crate::translate::{a2c, c2a, gemini, r2c};

pub struct Plan {
    /// The request path and query after the provider's base path.
    pub path: String,
    pub body: Bytes,
    pub tap: TapSpec,
}

fn wire_of(ep: Endpoint) -> Wire {
    match ep {
        Endpoint::ChatCompletions => Wire::OpenAiChat,
        Endpoint::Messages | Endpoint::CountTokens => Wire::Anthropic,
        Endpoint::Responses => Wire::Responses,
        _ => Wire::OpenAiOther,
    }
}

fn encode(v: &impl serde::Serialize) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))
}

/// The generation format a client endpoint speaks.
fn client_format(ep: Endpoint) -> Option<Format> {
    match ep {
        Endpoint::Messages => Some(Format::Anthropic),
        Endpoint::ChatCompletions => Some(Format::Chat),
        Endpoint::Responses => Some(Format::Responses),
        _ => None,
    }
}

/// The format the provider is spoken to in, for a client of `client` format.
fn upstream_format(client: Format, p: &Provider) -> Format {
    match p.kind {
        ProviderKind::Anthropic => Format::Anthropic,
        ProviderKind::Gemini => Format::Gemini,
        ProviderKind::OpenAi if client == Format::Responses && p.native_responses => {
            Format::Responses
        }
        ProviderKind::OpenAi => Format::Chat,
    }
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

/// Builds the upstream request. `body` is the client's raw body, reused untouched when the
/// request needs no edit (and then never parsed whole); `query` is the client's query string
/// (kept on passthrough).
pub fn plan(
    ctx: &mut Ctx,
    req: &mut RequestJson,
    body: Bytes,
    route: &Route,
    query: Option<&str>,
) -> Result<Plan, GatewayError> {
    let base = TapSpec {
        wire: wire_of(ctx.endpoint),
        dialect: ctx.endpoint.dialect(),
        provider: route.provider.name.clone(),
        hide_usage_chunk: false,
        translation: Translation::None,
        client_stream: ctx.stream,
    };
    let client = client_format(ctx.endpoint);
    let upstream = client.map(|c| upstream_format(c, &route.provider));
    match (client, upstream) {
        (Some(c), Some(u)) if c != u => translated(ctx, req.full(&body)?, route, c, u, base),
        _ => passthrough(ctx, req, body, route, query, base),
    }
}

/// Same format: only the model name, the usage request and E26 are edited; a request that
/// needs none of them is forwarded byte for byte.
fn passthrough(
    ctx: &Ctx,
    req: &mut RequestJson,
    body: Bytes,
    route: &Route,
    query: Option<&str>,
    mut tap: TapSpec,
) -> Result<Plan, GatewayError> {
    let ep = ctx.endpoint;
    let Some(path) = route.provider.kind.endpoint_path(ep) else {
        return Err(GatewayError::invalid(format!(
            "Model '{}' is served by provider '{}' ({} format), which cannot serve this endpoint ({}).",
            ctx.client_model,
            route.provider.name,
            route.provider.kind.as_str(),
            ep.label()
        ))
        .with_param("model"));
    };
    let rename = route.model != ctx.client_model || !req.fields().contains_key("model");
    // Thinking blocks tollgate minted for another provider cannot go to Anthropic (E26);
    // a cheap byte check keeps the usual request untouched.
    let unsigned_thinking =
        ep == Endpoint::Messages && memchr::memmem::find(&body, b"\"signature\":\"\"").is_some();
    // Meter OpenAI streams from the stream itself: ask for the usage chunk, and hide it from
    // a client that did not ask for it.
    let inject_usage =
        ctx.stream && ep == Endpoint::ChatCompletions && !asked_for_usage(req.fields());
    if inject_usage && !rename && !unsigned_thinking && !req.fields().contains_key("stream_options")
    {
        // The usual streamed chat request: the usage request is spliced in after the opening
        // brace (the body is a validated object with a "model" member), not parsed and
        // re-encoded.
        if let Some(at) = body
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .filter(|&i| body[i] == b'{')
        {
            const USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;
            let mut out = bytes::BytesMut::with_capacity(body.len() + USAGE.len());
            out.extend_from_slice(&body[..=at]);
            out.extend_from_slice(USAGE);
            out.extend_from_slice(&body[at + 1..]);
            tap.hide_usage_chunk = true;
            return Ok(Plan {
                path: with_query(path, query),
                body: out.freeze(),
                tap,
            });
        }
    }
    let mut rewrite = rename;
    if rename || unsigned_thinking || inject_usage {
        let full = req.full(&body)?;
        if unsigned_thinking {
            rewrite |= crate::translate::shared::strip_unsigned_thinking(full);
        }
        if inject_usage {
            let opts = full.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
                tap.hide_usage_chunk = true;
                rewrite = true;
            }
        }
    }
    let body = if rewrite {
        let full = req.full(&body)?;
        full.insert("model".into(), Value::String(route.model.clone()));
        encode(full)?
    } else {
        body
    };
    Ok(Plan {
        path: with_query(path, query),
        body,
        tap,
    })
}

fn asked_for_usage(req: &Map<String, Value>) -> bool {
    req.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Client and provider formats differ: client → C → provider for the request; the tap
/// runs provider → C → client on the answer.
fn translated(
    ctx: &Ctx,
    req: &mut Map<String, Value>,
    route: &Route,
    client: Format,
    upstream: Format,
    base: TapSpec,
) -> Result<Plan, GatewayError> {
    let model = route.model.clone();
    let stream = ctx.stream;
    let mut responses = None;
    // Step 1: the client's request as a chat request.
    let (chat, names) = match client {
        Format::Anthropic => {
            let opts = a2c::RequestOptions {
                upstream_model: model.clone(),
                stream,
                // Gemini models all take a reasoning level; OpenAI-compatible ones by name.
                reasoning_model: upstream == Format::Gemini || a2c::is_reasoning_model(&model),
            };
            (a2c::request(req, &opts)?, a2c::tool_names(req))
        }
        Format::Responses => {
            let opts = r2c::RequestOptions {
                upstream_model: model.clone(),
                stream,
            };
            let (c, rctx) = r2c::request(req, &opts)?;
            if !rctx.dropped.is_empty() {
                log::info!(
                    "request {}: dropped tool types that provider '{}' cannot run: {}",
                    ctx.request_id,
                    route.provider.name,
                    rctx.dropped.join(", ")
                );
            }
            responses = Some(rctx);
            (c, ToolNames::default())
        }
        _ if upstream == Format::Gemini => (Value::Object(req.clone()), gemini::tool_names(req)),
        _ => (Value::Object(req.clone()), c2a::tool_names(req)),
    };
    let chat = match chat {
        Value::Object(m) => m,
        _ => {
            return Err(GatewayError::new(
                ErrorKind::Internal,
                "translation produced no object",
            ))
        }
    };
    // Step 2: the chat request in the provider's format.
    let (path, body) = match upstream {
        Format::Anthropic => {
            let opts = c2a::RequestOptions {
                upstream_model: model.clone(),
                stream,
                default_max_tokens: 4096,
            };
            let a = c2a::request(&chat, &opts)?;
            ("/v1/messages".to_string(), encode(&a)?)
        }
        Format::Gemini => {
            let opts = gemini::RequestOptions {
                upstream_model: model.clone(),
                stream,
            };
            let g = gemini::request(&chat, &opts)?;
            (gemini::path_for(&model, stream), encode(&g)?)
        }
        _ => {
            let mut chat = chat;
            chat.insert("model".into(), Value::String(model.clone()));
            if stream {
                chat.insert("stream_options".into(), json!({"include_usage": true}));
            }
            ("/chat/completions".to_string(), encode(&chat)?)
        }
    };
    let cross = Cross {
        client,
        upstream,
        client_model: ctx.client_model.clone(),
        names,
        responses,
        include_usage: asked_for_usage(req),
        estimated_input: ctx.estimate.input,
    };
    Ok(Plan {
        path,
        body,
        tap: TapSpec {
            wire: match upstream {
                Format::Anthropic => Wire::Anthropic,
                _ => Wire::OpenAiChat,
            },
            translation: Translation::Cross(Box::new(cross)),
            ..base
        },
    })
}
