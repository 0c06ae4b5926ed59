//! `tollgate admins`: the web console's named admins. `set` hashes the password here
//! (Argon2id) and sends only the hash.

use clap::Subcommand;
use serde_json::{json, Value};
use std::io::BufRead;

use super::api::{enc, Api};
use super::render::{self, cell, Table};

#[derive(Subcommand, Debug)]
pub enum AdminsCmd {
    /// Create a named admin, or set a new password (which ends their console sessions). The
    /// password is read from the first line of standard input.
    Set { name: String },
    /// List the named admins.
    List,
    /// Delete a named admin (their console sessions end).
    Delete { name: String },
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.chars().count() < 12 {
        return Err("the password must have at least 12 characters".into());
    }
    Ok(pw)
}

pub async fn run(api: &mut Api, cmd: AdminsCmd, as_json: bool) -> Result<(), String> {
    let out = match cmd {
        AdminsCmd::Set { name } => {
            if !crate::ui::admins::valid_name(&name) {
                return Err("a name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into());
            }
            let hash = crate::ui::admins::hash_password(&read_password()?)?;
            let r = api
                .json(
                    "PUT",
                    &format!("/v1/admins/{}", enc(&name)),
                    Some(json!({"password_hash": hash})),
                )
                .await?;
            if as_json {
                render::json(&r)
            } else if r["created"] == json!(true) {
                format!("created admin {}\n", cell(&r["name"]))
            } else {
                format!("set a new password for admin {}\n", cell(&r["name"]))
            }
        }
        AdminsCmd::List => {
            let r = api.json("GET", "/v1/admins", None).await?;
            if as_json {
                render::json(&r["data"])
            } else {
                let mut t = Table::new(&["name"]);
                for a in r["data"].as_array().unwrap_or(&Vec::new()) {
                    t.row(vec![cell(&a["name"])]);
                }
                t.render()
            }
        }
        AdminsCmd::Delete { name } => {
            let r: Value = api
                .json("DELETE", &format!("/v1/admins/{}", enc(&name)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted admin {}\n", cell(&r["name"]))
            }
        }
    };
    render::emit(&out)
}
