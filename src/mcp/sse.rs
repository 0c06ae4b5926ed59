//! The older HTTP+SSE MCP transport (protocol 2024-11-05) as an rmcp `Transport`: a GET opens
//! the server's event stream, whose first `endpoint` event names the URL that each client
//! message is POSTed to; the server's messages arrive as `message` events. The SDK has no
//! client for it; this only moves the SDK's messages (JSON-RPC is rmcp's).

use crate::mcp::client::{McpError, ServerSpec};
use crate::outbound::{self, HostPolicy};
use futures_util::StreamExt;
use http::HeaderMap;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleClient;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages read ahead of the SDK (the stream is paused, not dropped, when it fills).
const READ_AHEAD: usize = 64;

pub(crate) struct SseTransport {
    http: reqwest013::Client,
    endpoint: Arc<reqwest013::Url>,
    headers: Arc<HeaderMap>,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: JoinHandle<()>,
}

/// A POST the server did not accept.
#[derive(Debug)]
pub(crate) struct SendError(String);

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SendError {}

impl SseTransport {
    /// Opens the event stream and waits for the `endpoint` event; the endpoint (resolved
    /// against the stream's URL) passes the same SSRF check as the URL itself.
    pub(crate) async fn open(
        http: reqwest013::Client,
        url: reqwest013::Url,
        spec: &ServerSpec,
        policy: HostPolicy,
    ) -> Result<SseTransport, McpError> {
        let unreachable = |reason: String| McpError::Unreachable {
            server: spec.name.clone(),
            reason,
        };
        let headers = spec.headers.header_map();
        let answer = http
            .get(url.clone())
            .header(http::header::ACCEPT, "text/event-stream")
            .headers(headers.clone())
            .send()
            .await
            .map_err(|e| match outbound::refusal_in(&e) {
                Some(reason) => McpError::Refused {
                    server: spec.name.clone(),
                    reason,
                },
                None => unreachable(format!(
                    "the event stream could not be opened ({})",
                    kind_of(&e)
                )),
            })?;
        if !answer.status().is_success() {
            return Err(unreachable(format!(
                "the event stream answered HTTP {}",
                answer.status().as_u16()
            )));
        }
        let mut events = sse_stream::SseStream::from_bytes_stream(answer.bytes_stream());
        let endpoint = loop {
            match events.next().await {
                Some(Ok(event)) if event.event.as_deref() == Some("endpoint") => {
                    break event.data.unwrap_or_default();
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Err(unreachable(
                        "the event stream ended before naming its endpoint".into(),
                    ))
                }
            }
        };
        let endpoint = url
            .join(endpoint.trim())
            .map_err(|_| unreachable("the server named an invalid endpoint".into()))?;
        let endpoint =
            outbound::check_url(endpoint.as_str(), policy).map_err(|r| McpError::Refused {
                server: spec.name.clone(),
                reason: format!("its message endpoint: {r}"),
            })?;
        let (sender, incoming) = mpsc::channel(READ_AHEAD);
        let server = spec.name.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if event.event.as_deref().unwrap_or("message") != "message" {
                    continue;
                }
                let Some(data) = event.data else { continue };
                match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                    Ok(message) => {
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => log::debug!("MCP server {server:?} sent an unreadable message: {e}"),
                }
            }
        });
        Ok(SseTransport {
            http,
            endpoint: Arc::new(endpoint),
            headers: Arc::new(headers),
            incoming,
            reader,
        })
    }
}

/// What kind of failure a reqwest error is, without its URL.
fn kind_of(e: &reqwest013::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SendError;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let http = self.http.clone();
        let endpoint = self.endpoint.clone();
        let headers = self.headers.clone();
        async move {
            let body = serde_json::to_vec(&item).map_err(|e| SendError(e.to_string()))?;
            let answer = http
                .post(endpoint.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .headers((*headers).clone())
                .body(body)
                .send()
                .await
                .map_err(|e| SendError(format!("message not sent ({})", kind_of(&e))))?;
            if !answer.status().is_success() {
                return Err(SendError(format!(
                    "message refused with HTTP {}",
                    answer.status().as_u16()
                )));
            }
            Ok(())
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.incoming.recv()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.reader.abort();
        self.incoming.close();
        std::future::ready(Ok(()))
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
