//! `/v1/messages/count_tokens`: never a generation call, never billed. Anthropic-kind
//! providers count exactly; everything else is counted here with a real BPE tokenizer. In
//! `auto` mode (the default) the provider's count is used when it answers within a second,
//! else the local one, so Claude Code's `/context` (14 parallel calls) never waits long.

use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::time::Duration;

use super::upstream::{peer_for, upstream_request};
use super::{Ctx, Gateway};
use crate::config::CountTokensMode;
use crate::providers::ProviderKind;
use crate::route::Route;

const UPSTREAM_BUDGET: Duration = Duration::from_secs(1);

impl Gateway {
    /// The answer to a count_tokens request, or None to forward it as a normal request.
    pub(super) async fn count_tokens(
        &self,
        ctx: &Ctx,
        req: &Map<String, Value>,
        body: &Bytes,
        route: &Route,
    ) -> Option<Bytes> {
        let local = || {
            let n = crate::meter::count::count_anthropic_request(req);
            Bytes::from(json!({"input_tokens": n}).to_string())
        };
        let anthropic = route.provider.kind == ProviderKind::Anthropic;
        match (self.state.cfg.count_tokens, anthropic) {
            (CountTokensMode::Local, _) | (_, false) => Some(local()),
            (CountTokensMode::Upstream, true) => None,
            (CountTokensMode::Auto, true) => {
                let mut upstream = req.clone();
                upstream.insert("model".into(), Value::String(route.model.clone()));
                let b = serde_json::to_vec(&upstream)
                    .map(Bytes::from)
                    .unwrap_or_else(|_| body.clone());
                match tokio::time::timeout(UPSTREAM_BUDGET, self.count_upstream(ctx, route, b))
                    .await
                {
                    Ok(Some(answer)) => Some(answer),
                    _ => {
                        crate::metrics::UPSTREAM_ERRORS
                            .with_label_values(&[
                                route.provider.name.as_str(),
                                "count_tokens_fallback",
                            ])
                            .inc();
                        Some(local())
                    }
                }
            }
        }
    }

    /// Asks the provider; None on any failure or a non-2xx answer.
    async fn count_upstream(&self, ctx: &Ctx, route: &Route, body: Bytes) -> Option<Bytes> {
        let addr = self
            .state
            .resolver
            .resolve(&route.provider.host, route.provider.port)
            .await
            .ok()?;
        let peer = peer_for(&route.provider, addr, false);
        let client = ctx.client_header.as_ref()?;
        let path = match client.uri.query() {
            Some(q) => format!("/v1/messages/count_tokens?{q}"),
            None => "/v1/messages/count_tokens".to_string(),
        };
        let req = upstream_request(client, &route.provider, &path, body.len()).ok()?;
        let (mut up, _) = self.state.connector.session(&peer).await.ok()?;
        up.set_read_timeout(Some(UPSTREAM_BUDGET));
        up.set_write_timeout(Some(UPSTREAM_BUDGET));
        let ok = async {
            up.write_request_header(Box::new(req)).await.ok()?;
            up.write_request_body(body, true).await.ok()?;
            up.finish_request_body().await.ok()?;
            up.read_response_header().await.ok()?;
            let status = up.response_header()?.status.as_u16();
            let mut out = Vec::new();
            while let Some(chunk) = up.read_response_body().await.ok()? {
                out.extend_from_slice(&chunk);
                if out.len() > 64 * 1024 {
                    return None;
                }
            }
            let v: Value = serde_json::from_slice(&out).ok()?;
            ((200..300).contains(&status) && v.get("input_tokens").is_some())
                .then(|| Bytes::from(out))
        }
        .await;
        match ok {
            Some(b) => {
                self.state.connector.release(up, &peer).await;
                Some(b)
            }
            None => {
                up.shutdown().await;
                None
            }
        }
    }
}
