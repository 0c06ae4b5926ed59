//! `/mcp`: tollgate's MCP endpoint, answered inside `request_filter` on the gateway's own
//! port. The key is checked here; the JSON-RPC body (small: read whole, at most
//! [`crate::admin::MAX_BODY`]) goes to rmcp's Streamable HTTP service in process
//! ([`crate::mcp::serve`]), and its answer — JSON, or an SSE stream of progress
//! notifications and the result — is written back frame by frame as it comes.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::ctx::Ctx;
use super::{read_admin_body, Failure, Flow, Gateway};

/// Request headers the MCP service reads; the caller's credentials are not among them.
const PASSED: [&str; 6] = [
    "content-type",
    "accept",
    "mcp-protocol-version",
    "mcp-session-id",
    "last-event-id",
    "host",
];

impl Gateway {
    pub(super) async fn mcp(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        let key = self.authenticate(s)?;
        ctx.key = Some(key.clone());
        let body = if s.req_header().method == http::Method::POST {
            read_admin_body(s).await?
        } else {
            Bytes::new()
        };
        let h = s.req_header();
        let mut req = http::Request::builder()
            .method(h.method.clone())
            .uri(h.uri.clone());
        for (name, value) in h.headers.iter() {
            if PASSED.contains(&name.as_str()) {
                req = req.header(name, value);
            }
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| crate::error::GatewayError::invalid(format!("Bad MCP request: {e}")))?;
        let service = crate::mcp::serve::service(self.state.clone(), key, ctx.request_id.clone());
        let (parts, mut body) = service.handle(req).await.into_parts();
        let mut resp = ResponseHeader::build(parts.status.as_u16(), Some(parts.headers.len() + 1))?;
        for (name, value) in parts.headers.iter() {
            resp.append_header(name.clone(), value.clone())?;
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        s.write_response_header(Box::new(resp), false).await?;
        loop {
            let frame = tokio::select! {
                biased;
                f = body.frame() => f,
                r = s.as_downstream_mut().read_body_or_idle(true) => {
                    // The client went away: dropping the body cancels the call in rmcp.
                    let e = r.err().unwrap_or_else(|| Error::new(ErrorType::ConnectionClosed));
                    return Err(Failure::Io(e));
                }
            };
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        s.write_response_body(Some(data), false).await?;
                    }
                }
                // The body's error type is Infallible.
                Some(Err(never)) => match never {},
                None => break,
            }
        }
        s.write_response_body(Some(Bytes::new()), true).await?;
        Ok(Flow::Done)
    }
}
