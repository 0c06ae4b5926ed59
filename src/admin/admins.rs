//! `/v1/admins`: named console admins. `PUT /v1/admins/{name}` with `{"password_hash": PHC}`
//! creates one or sets its password (an Argon2 hash made by the client: the password itself
//! never crosses the API); `DELETE` removes one; `GET` lists the names. A change ends that
//! admin's console sessions.

use serde_json::json;

use super::{internal, no_route, not_found, store_of, Reply, Req, Resp};
use crate::error::GatewayError;
use crate::state::State;
use crate::ui::admins;

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    let store = store_of(state)?;
    let mut all = admins::load(store.as_ref()).await.map_err(internal)?;
    match (req.method.as_str(), req.seg(1), req.segs.len()) {
        ("GET", None, 1) => {
            let data: Vec<_> = all
                .keys()
                .map(|n| json!({"object": "admin", "name": n}))
                .collect();
            Ok(Resp::json(200, json!({"object": "list", "data": data})))
        }
        ("PUT", Some(name), 2) => {
            req.only(&["password_hash"])?;
            if !admins::valid_name(name) {
                return Err(GatewayError::invalid(
                    "An admin's name is 1 to 64 letters, digits, '.', '_', '-' or '@'.",
                ));
            }
            let hash = req
                .body
                .get("password_hash")
                .and_then(|v| v.as_str())
                .filter(|h| admins::valid_hash(h))
                .ok_or_else(|| {
                    GatewayError::invalid(
                        "'password_hash' must be an Argon2 PHC string (tollgate admins set makes one).",
                    )
                    .with_param("password_hash")
                })?;
            let created = all.insert(name.to_string(), hash.to_string()).is_none();
            admins::save(store.as_ref(), &all).await.map_err(internal)?;
            state.console.sessions.revoke_admin(name);
            Ok(Resp::json(
                if created { 201 } else { 200 },
                json!({"object": "admin", "name": name, "created": created}),
            ))
        }
        ("DELETE", Some(name), 2) => {
            if all.remove(name).is_none() {
                return Err(not_found("admin", name));
            }
            admins::save(store.as_ref(), &all).await.map_err(internal)?;
            state.console.sessions.revoke_admin(name);
            Ok(Resp::json(
                200,
                json!({"object": "admin", "name": name, "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}
