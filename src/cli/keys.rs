//! `tollgate keys`: virtual keys through `/v1/keys`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::{metadata, set, LimitArgs};
use super::render::{self, cell, time, Table};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key and print its secret (shown once).
    Create {
        #[command(flatten)]
        fields: KeyFields,
    },
    /// List keys (never their secrets).
    List {
        /// Only the keys of this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Show one key: limits, allow-list and current spend.
    Show { id: String },
    /// Replace a key's secret; the old one stops working at once.
    Rotate { id: String },
    /// Revoke (delete) a key.
    Revoke { id: String },
    /// Change a key's name, owner, expiry, limits or state.
    Update {
        id: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Turn the key off (false) or on (true) without deleting it.
        #[arg(long, value_name = "BOOL")]
        active: Option<bool>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct KeyFields {
    #[arg(long)]
    name: Option<String>,
    /// The user the key belongs to (its budgets and limits apply too).
    #[arg(long)]
    user: Option<String>,
    /// Expiry: a date (2027-01-01), an RFC 3339 UTC time, or Unix seconds.
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// Free-form JSON object kept with the key.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// Refuse requests whose body names a user other than the key's.
    #[arg(long, value_name = "BOOL")]
    reject_user_mismatch: Option<bool>,
    /// This key's trace settings, e.g. '{"capture":"full","sample":0.1}' (null: the config's).
    #[arg(long, value_name = "JSON")]
    traces: Option<String>,
    /// The team the key belongs to directly (a service key; "" to detach it).
    #[arg(long)]
    team: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

impl KeyFields {
    fn body(&self) -> Result<Map<String, Value>, String> {
        let mut b = Map::new();
        set(&mut b, "name", self.name.as_ref().map(|v| json!(v)));
        set(&mut b, "user_id", self.user.as_ref().map(|v| json!(v)));
        if let Some(t) = &self.team {
            b.insert(
                "team_id".into(),
                if t.is_empty() { Value::Null } else { json!(t) },
            );
        }
        set(
            &mut b,
            "expires_at",
            self.expires_at.as_ref().map(|v| json!(v)),
        );
        set(&mut b, "metadata", metadata(&self.metadata)?);
        set(
            &mut b,
            "reject_user_mismatch",
            self.reject_user_mismatch.map(Value::Bool),
        );
        if let Some(t) = &self.traces {
            let v: Value = serde_json::from_str(t)
                .map_err(|_| "--traces must be JSON, e.g. '{\"capture\":\"full\"}'".to_string())?;
            b.insert("traces".into(), v);
        }
        self.limits.apply(&mut b);
        Ok(b)
    }
}

pub async fn run(api: &mut Api, cmd: KeysCmd, as_json: bool) -> Result<(), String> {
    // A command that shows a secret prints it alone on the line after what it did.
    let with_secret = |k: &Value, what: String| {
        if as_json {
            render::json(k)
        } else {
            format!("{what}\n{}\n", cell(&k["key"]))
        }
    };
    let out = match cmd {
        KeysCmd::Create { fields } => {
            let k = api
                .json("POST", "/v1/keys", Some(Value::Object(fields.body()?)))
                .await?;
            let what = format!(
                "created key {} ({})",
                cell(&k["id"]),
                k["name"].as_str().unwrap_or("unnamed")
            );
            with_secret(&k, what)
        }
        KeysCmd::List { user } => {
            let q = [("user_id", user.unwrap_or_default())];
            let keys = api.list_all("/v1/keys", &q).await?;
            if as_json {
                render::json(&Value::Array(keys))
            } else {
                let mut t = Table::new(&[
                    "id",
                    "name",
                    "user",
                    "prefix",
                    "active",
                    "expires",
                    ">spend USD",
                    "created",
                ]);
                for k in &keys {
                    t.row(vec![
                        cell(&k["id"]),
                        cell(&k["name"]),
                        cell(&k["user_id"]),
                        cell(&k["prefix"]),
                        cell(&k["active"]),
                        time(&k["expires_at"]),
                        render::spend(&k["standing"]),
                        time(&k["created_at"]),
                    ]);
                }
                t.render()
            }
        }
        KeysCmd::Show { id } => {
            let k = api
                .json("GET", &format!("/v1/keys/{}", enc(&id)), None)
                .await?;
            if as_json {
                render::json(&k)
            } else {
                details(&k)
            }
        }
        KeysCmd::Rotate { id } => {
            let k = api
                .json("POST", &format!("/v1/keys/{}/rotate", enc(&id)), None)
                .await?;
            let what = format!(
                "rotated key {}; the old secret no longer works",
                cell(&k["id"])
            );
            with_secret(&k, what)
        }
        KeysCmd::Revoke { id } => {
            let r = api
                .json("DELETE", &format!("/v1/keys/{}", enc(&id)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("revoked {}\n", cell(&r["id"]))
            }
        }
        KeysCmd::Update { id, fields, active } => {
            let mut body = fields.body()?;
            set(&mut body, "active", active.map(Value::Bool));
            if body.is_empty() {
                return Err(
                    "nothing to update: give a flag such as --max-budget (see --help)".into(),
                );
            }
            let k = api
                .json(
                    "PATCH",
                    &format!("/v1/keys/{}", enc(&id)),
                    Some(Value::Object(body)),
                )
                .await?;
            if as_json {
                render::json(&k)
            } else {
                format!("updated key {}\n{}", cell(&k["id"]), details(&k))
            }
        }
    };
    render::emit(&out)
}

/// One key as `field  value` lines.
fn details(k: &Value) -> String {
    let l = &k["limits"];
    let s = &k["standing"];
    let mut t = Table::new(&["field", "value"]);
    for (f, v) in [
        ("id", cell(&k["id"])),
        ("name", cell(&k["name"])),
        ("user", cell(&k["user_id"])),
        ("prefix", cell(&k["prefix"])),
        ("active", cell(&k["active"])),
        ("created", time(&k["created_at"])),
        ("expires", time(&k["expires_at"])),
        ("max_budget", cell(&l["max_budget"])),
        ("budget_period", cell(&l["budget_period"])),
        ("budget_alignment", cell(&l["budget_alignment"])),
        ("budget_id", cell(&l["budget_id"])),
        ("rpm_limit", cell(&l["rpm_limit"])),
        ("tpm_limit", cell(&l["tpm_limit"])),
        ("allowed_models", cell(&k["allowed_models"])),
        ("tools", cell(&k["tools"])),
        ("mcp", cell(&k["mcp"])),
        ("spend", cell(&s["spend"])),
        ("remaining", cell(&s["remaining"])),
        ("resets_at", cell(&s["resets_at"])),
    ] {
        t.row(vec![f.to_string(), v]);
    }
    t.render()
}
