//! What to send upstream for a routed request: same format (passthrough with only the edits
//! tollgate must make), or a translation between the Anthropic and OpenAI formats, and how the
//! answer must be treated on the way back.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::response::{TapSpec, Translation};
use super::Ctx;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::meter::Wire;
use crate::providers::ProviderKind;
use crate::route::Route;
use crate::translate::{a2c, c2a};

pub struct Plan {
    pub upstream_endpoint: Endpoint,
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

/// Builds the upstream request. `body` is the client's raw body, reused untouched when the
/// request needs no edit.
pub fn plan(
    ctx: &mut Ctx,
    req: &mut Map<String, Value>,
    body: Bytes,
    route: &Route,
) -> Result<Plan, GatewayError> {
    let kind = route.provider.kind;
    let dialect = ctx.endpoint.dialect();
    let base = TapSpec {
        wire: wire_of(ctx.endpoint),
        dialect,
        provider: route.provider.name.clone(),
        hide_usage_chunk: false,
        translation: Translation::None,
        client_stream: ctx.stream,
    };
    match (ctx.endpoint, kind) {
        (Endpoint::Messages, ProviderKind::OpenAi) => {
            let names = a2c::tool_names(req);
            let opts = a2c::RequestOptions {
                upstream_model: route.model.clone(),
                stream: ctx.stream,
                reasoning_model: a2c::is_reasoning_model(&route.model),
            };
            let c = a2c::request(req, &opts)?;
            Ok(Plan {
                upstream_endpoint: Endpoint::ChatCompletions,
                body: encode(&c)?,
                tap: TapSpec {
                    wire: Wire::OpenAiChat,
                    translation: Translation::AnthropicOnChat {
                        client_model: ctx.client_model.clone(),
                        names,
                        estimated_input: ctx.estimate.input,
                    },
                    ..base
                },
            })
        }
        (Endpoint::ChatCompletions, ProviderKind::Anthropic) => {
            let names = c2a::tool_names(req);
            let include_usage = req.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
            let opts = c2a::RequestOptions {
                upstream_model: route.model.clone(),
                stream: ctx.stream,
                default_max_tokens: 4096,
            };
            let a = c2a::request(req, &opts)?;
            Ok(Plan {
                upstream_endpoint: Endpoint::Messages,
                body: encode(&a)?,
                tap: TapSpec {
                    wire: Wire::Anthropic,
                    translation: Translation::ChatOnAnthropic { client_model: ctx.client_model.clone(), names, include_usage },
                    ..base
                },
            })
        }
        (ep, k) if k.endpoint_path(ep).is_some() => {
            let mut rewrite = route.model != ctx.client_model || !req.contains_key("model");
            // Thinking blocks tollgate minted for another provider cannot go to Anthropic (E26);
            // a cheap byte check keeps the usual request untouched.
            if ep == Endpoint::Messages && memchr::memmem::find(&body, b"\"signature\":\"\"").is_some() {
                rewrite |= crate::translate::shared::strip_unsigned_thinking(req);
            }
            let mut tap = base;
            // Meter OpenAI streams from the stream itself: ask for the usage chunk, and hide
            // it from a client that did not ask for it.
            if ctx.stream && ep == Endpoint::ChatCompletions {
                let asked = req.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
                if !asked {
                    let opts = req.entry("stream_options").or_insert_with(|| json!({}));
                    if let Some(o) = opts.as_object_mut() {
                        o.insert("include_usage".into(), Value::Bool(true));
                        tap.hide_usage_chunk = true;
                        rewrite = true;
                    }
                }
            }
            let body = if rewrite {
                req.insert("model".into(), Value::String(route.model.clone()));
                encode(req)?
            } else {
                body
            };
            Ok(Plan { upstream_endpoint: ep, body, tap })
        }
        (ep, k) => Err(GatewayError::invalid(format!(
            "Model '{}' is served by provider '{}' ({} format), which cannot serve this endpoint ({}).",
            ctx.client_model,
            route.provider.name,
            k.as_str(),
            ep.label()
        ))
        .with_param("model")),
    }
}
