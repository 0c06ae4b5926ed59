//! Writes the answers tollgate makes itself (errors, and the `crate::local` and
//! `crate::admin` answers) to the Pingora session.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::error::GatewayError;
use crate::translate::Format;

pub async fn send(
    s: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let head_only = s.req_header().method == http::Method::HEAD;
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("x-request-id", request_id)?;
    for (k, v) in extra {
        // Appended: an answer may set several cookies.
        h.append_header(*k, v.as_str())?;
    }
    s.write_response_header(Box::new(h), head_only).await?;
    if !head_only {
        s.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

pub async fn send_json(
    s: &mut Session,
    status: u16,
    v: &serde_json::Value,
    request_id: &str,
) -> pingora::Result<()> {
    send(
        s,
        status,
        "application/json",
        Bytes::from(v.to_string()),
        request_id,
        &[],
    )
    .await
}

pub async fn send_error(
    s: &mut Session,
    format: Format,
    e: &GatewayError,
    request_id: &str,
) -> pingora::Result<()> {
    send_error_with(s, format, e, request_id, Vec::new()).await
}

/// [`send_error`] with more headers (the standing headers of a model request).
pub async fn send_error_with(
    s: &mut Session,
    format: Format,
    e: &GatewayError,
    request_id: &str,
    mut extra: Vec<(&'static str, String)>,
) -> pingora::Result<()> {
    if let Some(ra) = e.retry_after {
        extra.push(("retry-after", ra.to_string()));
    }
    send(
        s,
        e.status(),
        "application/json",
        e.body(format),
        request_id,
        &extra,
    )
    .await
}
