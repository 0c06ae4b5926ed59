//! The format-pair matrix: given the client's format and the provider's, the pieces that carry
//! one exchange across. The gateway asks [`Pipeline::between`] once per request and gets the
//! request translation; the [`Answer`] it returns then gives the stream transcoder, the whole
//! answer's conversion and the error body's, for that pair. Chat is the hub (see the module
//! documentation of `translate`): every pair is at most two steps, client → Chat → provider
//! for the request and provider → Chat → client for the answer.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::responses_to_chat::ResponsesContext;
use super::shared::{asked_for_usage, ToolNames};
use super::{
    anthropic_to_chat, chat_stream, chat_to_anthropic, chat_to_gemini, chat_to_responses,
    gemini_to_chat, responses_to_chat, upstream_error, Chain, Format, Stamp, StreamTranscoder,
};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage};

/// A pair of different formats that tollgate translates between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    client: Format,
    upstream: Format,
}

/// What the request translation needs besides the request.
#[derive(Debug, Clone)]
pub struct RequestOptions<'a> {
    /// The model name the provider knows.
    pub upstream_model: &'a str,
    /// The model name the client asked for (answers carry it).
    pub client_model: &'a str,
    pub stream: bool,
    /// The request's estimated input tokens (an Anthropic client's `message_start` needs a
    /// number before the provider reports one).
    pub estimated_input: u64,
    /// A Responses request continued this stored response (its answer says so).
    pub previous_response_id: Option<&'a str>,
    /// A Responses request's answer is stored (its answer says `store: true`).
    pub stores: bool,
    /// A Responses request belongs to this conversation (its answer says so).
    pub conversation: Option<&'a str>,
}

/// The translated request.
#[derive(Debug)]
pub struct Translated {
    /// The provider's path for it (after the provider's base path).
    pub path: String,
    pub body: Value,
    /// What the answer side needs.
    pub answer: Answer,
}

impl Pipeline {
    /// The pipeline for a client of format `client` on a provider spoken to in `upstream`:
    /// `None` when they are the same (the exchange passes through) or no client speaks
    /// `client` (Gemini) or no provider is spoken to in `upstream` for it (Responses is,
    /// only to Responses clients).
    pub fn between(client: Format, upstream: Format) -> Option<Pipeline> {
        let translatable =
            client != upstream && client != Format::Gemini && upstream != Format::Responses;
        translatable.then_some(Pipeline { client, upstream })
    }

    /// Client request → provider request.
    pub fn request(
        &self,
        req: &Map<String, Value>,
        opts: &RequestOptions,
    ) -> Result<Translated, GatewayError> {
        let model = opts.upstream_model;
        let stream = opts.stream;
        let mut responses = None;
        // Step 1: the client's request as a chat request, and the tool names it declared.
        let (chat, names) = match self.client {
            Format::Anthropic => {
                let o = anthropic_to_chat::RequestOptions {
                    upstream_model: model.to_string(),
                    stream,
                    // Gemini models all take a reasoning level; OpenAI-compatible ones by name.
                    reasoning_model: self.upstream == Format::Gemini
                        || anthropic_to_chat::is_reasoning_model(model),
                };
                (
                    anthropic_to_chat::request(req, &o)?,
                    anthropic_to_chat::tool_names(req),
                )
            }
            Format::Responses => {
                let o = responses_to_chat::RequestOptions {
                    upstream_model: model.to_string(),
                    stream,
                };
                let (c, mut rctx) = responses_to_chat::request(req, &o)?;
                if opts.stores || opts.previous_response_id.is_some() || opts.conversation.is_some()
                {
                    let echo = std::sync::Arc::make_mut(&mut rctx.echo);
                    if let Some(p) = opts.previous_response_id {
                        echo.insert("previous_response_id".into(), json!(p));
                    }
                    if let Some(c) = opts.conversation {
                        echo.insert("conversation".into(), json!({"id": c}));
                    }
                    if opts.stores {
                        echo.insert("store".into(), json!(true));
                    }
                }
                responses = Some(rctx);
                (c, ToolNames::default())
            }
            _ if self.upstream == Format::Gemini => {
                (Value::Object(req.clone()), chat_to_gemini::tool_names(req))
            }
            _ => (
                Value::Object(req.clone()),
                chat_to_anthropic::tool_names(req),
            ),
        };
        let Value::Object(mut chat) = chat else {
            return Err(GatewayError::new(
                ErrorKind::Internal,
                "translation produced no object",
            ));
        };
        // Step 2: the chat request in the provider's format.
        let (path, body) = match self.upstream {
            Format::Anthropic => {
                let o = chat_to_anthropic::RequestOptions {
                    upstream_model: model.to_string(),
                    stream,
                    default_max_tokens: 4096,
                };
                let a = chat_to_anthropic::request(&chat, &o)?;
                ("/v1/messages".to_string(), a)
            }
            Format::Gemini => {
                let o = chat_to_gemini::RequestOptions {
                    upstream_model: model.to_string(),
                    stream,
                };
                let g = chat_to_gemini::request(&chat, &o)?;
                (chat_to_gemini::path_for(model, stream), g)
            }
            _ => {
                chat.insert("model".into(), Value::String(model.to_string()));
                if stream {
                    chat.insert("stream_options".into(), json!({"include_usage": true}));
                }
                ("/chat/completions".to_string(), Value::Object(chat))
            }
        };
        let answer = Answer {
            client: self.client,
            upstream: self.upstream,
            client_model: opts.client_model.to_string(),
            names,
            responses,
            include_usage: asked_for_usage(req),
            estimated_input: opts.estimated_input,
        };
        Ok(Translated { path, body, answer })
    }
}

/// The answer side of a translated exchange: who speaks what, and what the answer must
/// restore (the client's tool names, a Responses client's tools and echoed fields).
#[derive(Debug, Clone)]
pub struct Answer {
    client: Format,
    upstream: Format,
    client_model: String,
    /// Tool names between the client and the chat hub.
    names: ToolNames,
    responses: Option<ResponsesContext>,
    /// A chat client asked for the usage chunk.
    include_usage: bool,
    estimated_input: u64,
}

impl Answer {
    pub fn client(&self) -> Format {
        self.client
    }

    pub fn upstream(&self) -> Format {
        self.upstream
    }

    /// Tool types of a Responses request that were dropped because the provider cannot run
    /// them.
    pub fn dropped_tools(&self) -> &[String] {
        self.responses.as_ref().map_or(&[], |r| &r.dropped)
    }

    /// Tool names for a stage: they belong to whichever stage faces the client.
    fn names_for(&self, facing_client: bool) -> ToolNames {
        if facing_client {
            self.names.clone()
        } else {
            ToolNames::default()
        }
    }

    /// The provider's stream → Chat chunks (None when the provider speaks Chat).
    fn upstream_stage(&self, stamp: &Stamp) -> Option<Box<dyn StreamTranscoder>> {
        let last = self.client == Format::Chat;
        let include = if last { self.include_usage } else { true };
        let names = self.names_for(last);
        let model = &self.client_model;
        match self.upstream {
            Format::Anthropic => Some(Box::new(anthropic_to_chat::AnthropicToChatStream::new(
                model, include, names, stamp,
            ))),
            Format::Gemini => Some(Box::new(gemini_to_chat::GeminiToChatStream::new(
                model, include, names, stamp,
            ))),
            _ => None,
        }
    }

    /// Chat chunks → the client's stream (None when the client speaks Chat).
    fn client_stage(&self, stamp: &Stamp) -> Option<Box<dyn StreamTranscoder>> {
        match self.client {
            Format::Anthropic => Some(Box::new(chat_to_anthropic::ChatToAnthropicStream::new(
                &self.client_model,
                self.estimated_input,
                self.names.clone(),
                stamp,
            ))),
            Format::Responses => Some(Box::new(chat_to_responses::ChatToResponsesStream::new(
                self.responses.clone().unwrap_or_default(),
                stamp,
            ))),
            _ => None,
        }
    }

    /// The stream transcoder: the provider's events → the client's.
    pub fn stream(&self, stamp: &Stamp) -> Option<Box<dyn StreamTranscoder>> {
        match (self.upstream_stage(stamp), self.client_stage(stamp)) {
            (Some(a), Some(b)) => Some(Box::new(Chain::new(a, b))),
            (Some(t), None) | (None, Some(t)) => Some(t),
            (None, None) => None,
        }
    }

    /// A whole provider answer → the client's body (its stream if it asked for one), and
    /// the usage the provider reported.
    pub fn convert(&self, v: &Value, client_stream: bool, stamp: &Stamp) -> (Bytes, Option<Usage>) {
        let (body, usage, _) = self.convert_keeping(v, client_stream, stamp);
        (body, usage)
    }

    /// [`Answer::convert`], and the Responses object of a Responses client's answer (what
    /// the stored responses keep).
    pub fn convert_keeping(
        &self,
        v: &Value,
        client_stream: bool,
        stamp: &Stamp,
    ) -> (Bytes, Option<Usage>, Option<Value>) {
        let mut kept = None;
        let last = self.client == Format::Chat;
        let model = &self.client_model;
        let chat = match self.upstream {
            Format::Anthropic => {
                anthropic_to_chat::response(v, model, &self.names_for(last), stamp.now)
            }
            Format::Gemini => gemini_to_chat::response(v, model, &self.names_for(last), stamp),
            _ => v.clone(),
        };
        let usage = usage_from_body(self.upstream, v);
        let body = match (self.client, client_stream) {
            (Format::Anthropic, s) => {
                let msg = chat_to_anthropic::response(&chat, model, &self.names);
                if s {
                    chat_to_anthropic::message_to_events(&msg).freeze()
                } else {
                    Bytes::from(msg.to_string())
                }
            }
            (Format::Responses, s) => {
                let rctx = self.responses.clone().unwrap_or_default();
                if s {
                    let (events, object) =
                        chat_to_responses::response_to_events_and_object(&chat, &rctx, stamp);
                    kept = object;
                    events.freeze()
                } else {
                    let object = chat_to_responses::response(&chat, &rctx, stamp);
                    let body = Bytes::from(object.to_string());
                    kept = Some(object);
                    body
                }
            }
            (_, true) => chat_stream::completion_to_chunks(&chat, self.include_usage).freeze(),
            (_, false) => Bytes::from(chat.to_string()),
        };
        (body, usage, kept)
    }

    /// A provider's error body (answered with HTTP `status`) → the error the client sees.
    pub fn error(&self, status: u16, body: &Value) -> GatewayError {
        upstream_error::from_body(self.upstream, status, body)
    }
}
