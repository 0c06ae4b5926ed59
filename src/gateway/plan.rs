//! What to send upstream for a routed request: same format (passthrough with only the edits
//! tollgate must make), or a translation (the pair's [`Pipeline`]), and how the answer must be
//! treated on the way back.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::body::RequestJson;
use super::response::{TapSpec, Translation};
use super::Ctx;
use crate::config::Provider;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::providers::ProviderKind;
use crate::route::Route;
use crate::translate::pipeline::{Pipeline, RequestOptions};
use crate::translate::shared::asked_for_usage;
use crate::translate::Format;

pub struct Plan {
    /// The request path and query after the provider's base path.
    pub path: String,
    pub body: Bytes,
    pub tap: TapSpec,
}

fn encode(v: &impl serde::Serialize) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))
}

/// The format the provider is spoken to in, for a client of `client` format: its kind's,
/// except that an OpenAI provider with the Responses API serves Responses clients natively.
pub(super) fn upstream_format(client: Format, p: &Provider) -> Format {
    if client == Format::Responses && p.kind == ProviderKind::OpenAi && p.native_responses {
        Format::Responses
    } else {
        p.kind.format()
    }
}

/// The provider's format when `endpoint` is the Responses API and `route` translates it
/// (None: another endpoint, or OpenAI's own Responses API, which keeps its own store).
pub fn translated_responses(endpoint: Endpoint, route: &Route) -> Option<Format> {
    if endpoint != Endpoint::Responses {
        return None;
    }
    let upstream = upstream_format(Format::Responses, &route.provider);
    (upstream != Format::Responses).then_some(upstream)
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
    let format = ctx.endpoint.format();
    let base = TapSpec {
        upstream: format,
        client: format,
        provider: route.provider.name.clone(),
        hide_usage_chunk: false,
        translation: Translation::None,
        client_stream: ctx.stream,
        turn: None,
        trace_body_max: crate::traces::full_capture(ctx.trace),
        stream_cost: None,
    };
    let pipeline = ctx
        .endpoint
        .generation_format()
        .and_then(|client| Pipeline::between(client, upstream_format(client, &route.provider)));
    match pipeline {
        Some(p) => translated(ctx, req.full(&body)?, route, p, base),
        None => passthrough(ctx, req, body, route, query, base),
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

/// Client and provider formats differ: the pair's pipeline translates the request, and the
/// tap translates the answer with what it returns.
fn translated(
    ctx: &Ctx,
    req: &mut Map<String, Value>,
    route: &Route,
    pipeline: Pipeline,
    base: TapSpec,
) -> Result<Plan, GatewayError> {
    let opts = RequestOptions {
        upstream_model: &route.model,
        client_model: &ctx.client_model,
        stream: ctx.stream,
        estimated_input: ctx.estimate.input,
        previous_response_id: ctx
            .turn
            .as_ref()
            .and_then(|t| t.previous_response_id.as_deref()),
        stores: ctx.turn.as_ref().is_some_and(|t| t.stores()),
        conversation: ctx
            .turn
            .as_ref()
            .and_then(|t| t.conversation.as_ref())
            .map(|c| c.id.as_str()),
    };
    let t = pipeline.request(req, &opts)?;
    let dropped = t.answer.dropped_tools();
    if !dropped.is_empty() {
        log::info!(
            "request {}: dropped tool types that provider '{}' cannot run: {}",
            ctx.request_id,
            route.provider.name,
            dropped.join(", ")
        );
    }
    Ok(Plan {
        path: t.path,
        body: encode(&t.body)?,
        tap: TapSpec {
            upstream: t.answer.upstream(),
            translation: Translation::Cross(Box::new(t.answer)),
            turn: ctx.turn.clone(),
            ..base
        },
    })
}
