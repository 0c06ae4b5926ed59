//! The stored-response endpoints, as OpenAI answers them: `GET /v1/responses/{id}`,
//! `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` (a list object paged
//! with `limit`, `after` and `order`) and `POST /v1/responses/{id}/cancel` (only background
//! responses can be cancelled, and tollgate runs none).

use serde_json::{json, Value};

use super::{Reader, Responses};
use crate::error::{ErrorKind, GatewayError};
use crate::local::{Answer, Request};
use crate::translate::Format;

fn not_found(id: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!("Response with id '{id}' not found."),
    )
}

fn error(e: GatewayError) -> Answer {
    Answer::error(Format::Responses, &e)
}

/// The value of `name` in a query string (no decoding: ids and numbers need none).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Answers a request under `/v1/responses/`.
pub async fn answer(responses: &Responses, reader: Reader<'_>, req: &Request<'_>) -> Answer {
    let rest = req
        .path
        .trim_end_matches('/')
        .strip_prefix("/v1/responses/")
        .unwrap_or("");
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, action),
        None => (rest, ""),
    };
    let result = match (req.method, action) {
        ("GET", "") => responses
            .get(reader, id)
            .await
            .and_then(|r| r.ok_or_else(|| not_found(id)))
            .map(|r| Answer::json(200, &r.response)),
        ("DELETE", "") => match responses.delete(reader, id).await {
            Ok(true) => Ok(Answer::json(
                200,
                &json!({"id": id, "object": "response.deleted", "deleted": true}),
            )),
            Ok(false) => Err(not_found(id)),
            Err(e) => Err(e),
        },
        ("GET", "input_items") => match responses.get(reader, id).await {
            Ok(Some(r)) => list_page(&r.input, req.query).map(|v| Answer::json(200, &v)),
            Ok(None) => Err(not_found(id)),
            Err(e) => Err(e),
        },
        ("POST", "cancel") => match responses.get(reader, id).await {
            Ok(Some(_)) => Err(GatewayError::invalid(
                "Only responses created with background: true can be cancelled.",
            )),
            Ok(None) => Err(not_found(id)),
            Err(e) => Err(e),
        },
        _ => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!(
                "No route for {} {}.",
                req.method,
                crate::local::printable(req.path)
            ),
        )),
    };
    result.unwrap_or_else(error)
}

/// One page of input items, as OpenAI's list objects: `order` `desc` (the default) lists
/// the newest first; `after` is the id of the last item of the previous page.
pub(super) fn list_page(items: &[Value], query: Option<&str>) -> Result<Value, GatewayError> {
    let limit = match query_param(query, "limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(
                    GatewayError::invalid("'limit' must be an integer between 1 and 100.")
                        .with_param("limit"),
                )
            }
        },
    };
    let ordered: Vec<&Value> = match query_param(query, "order") {
        None | Some("desc") => items.iter().rev().collect(),
        Some("asc") => items.iter().collect(),
        Some(_) => {
            return Err(
                GatewayError::invalid("'order' must be 'asc' or 'desc'.").with_param("order")
            )
        }
    };
    let id_of = |i: &Value| i.get("id").and_then(Value::as_str).map(String::from);
    let start = match query_param(query, "after") {
        Some(after) => match ordered
            .iter()
            .position(|i| id_of(i).as_deref() == Some(after))
        {
            Some(p) => p + 1,
            None => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Item with id '{after}' not found."),
                )
                .with_param("after"))
            }
        },
        None => 0,
    };
    let page: Vec<Value> = ordered
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let has_more = start + page.len() < ordered.len();
    Ok(json!({
        "object": "list",
        "data": page,
        "first_id": page.first().and_then(id_of),
        "last_id": page.last().and_then(id_of),
        "has_more": has_more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_page_both_ways() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("i{i}")})).collect();
        let p = list_page(&items, Some("limit=2")).unwrap();
        assert_eq!(p["data"], json!([{"id": "i4"}, {"id": "i3"}]));
        assert_eq!(
            (p["first_id"].as_str(), p["last_id"].as_str()),
            (Some("i4"), Some("i3"))
        );
        assert_eq!(p["has_more"], true);
        let p = list_page(&items, Some("limit=2&after=i3")).unwrap();
        assert_eq!(p["data"], json!([{"id": "i2"}, {"id": "i1"}]));
        let p = list_page(&items, Some("order=asc&after=i2&limit=10")).unwrap();
        assert_eq!(p["data"], json!([{"id": "i3"}, {"id": "i4"}]));
        assert_eq!(p["has_more"], false);
        assert_eq!(p["object"], "list");
        assert!(list_page(&items, Some("limit=0")).is_err());
        assert!(list_page(&items, Some("order=up")).is_err());
        assert_eq!(
            list_page(&items, Some("after=nope")).unwrap_err().status(),
            404
        );
    }
}
