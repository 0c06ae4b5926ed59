//! `tollgate users`: users (budgets and limits over all their keys) through `/v1/users`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::{metadata, set, LimitArgs};
use super::render::{self, cell, time, Table};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Create a user.
    Create {
        /// 1-128 letters, digits or -_.@
        user_id: String,
        #[command(flatten)]
        fields: UserFields,
    },
    /// List users with their spend.
    List,
    /// Show one user: limits, keys and current spend.
    Show { user_id: String },
    /// Change a user's alias, limits or state.
    Update {
        user_id: String,
        #[command(flatten)]
        fields: UserFields,
    },
    /// Delete a user; their keys stop working (they stay listed, inactive).
    Delete { user_id: String },
}

#[derive(clap::Args, Debug, Clone)]
pub struct UserFields {
    /// A display name.
    #[arg(long)]
    alias: Option<String>,
    /// Refuse every request of the user (true) or allow them again (false).
    #[arg(long, value_name = "BOOL")]
    blocked: Option<bool>,
    /// Free-form JSON object kept with the user.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// The team the user belongs to ("" to detach them).
    #[arg(long)]
    team: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

impl UserFields {
    fn body(&self) -> Result<Map<String, Value>, String> {
        let mut b = Map::new();
        set(&mut b, "alias", self.alias.as_ref().map(|v| json!(v)));
        if let Some(t) = &self.team {
            b.insert(
                "team_id".into(),
                if t.is_empty() { Value::Null } else { json!(t) },
            );
        }
        set(&mut b, "blocked", self.blocked.map(Value::Bool));
        set(&mut b, "metadata", metadata(&self.metadata)?);
        self.limits.apply(&mut b);
        Ok(b)
    }
}

pub async fn run(api: &mut Api, cmd: UsersCmd, as_json: bool) -> Result<(), String> {
    let out = match cmd {
        UsersCmd::Create { user_id, fields } => {
            let mut body = fields.body()?;
            body.insert("user_id".into(), json!(user_id));
            let u = api
                .json("POST", "/v1/users", Some(Value::Object(body)))
                .await?;
            if as_json {
                render::json(&u)
            } else {
                format!("created user {}\n{}", cell(&u["user_id"]), details(&u))
            }
        }
        UsersCmd::List => {
            let users = api.list_all("/v1/users", &[]).await?;
            if as_json {
                render::json(&Value::Array(users))
            } else {
                let mut t = Table::new(&[
                    "user_id",
                    "alias",
                    "blocked",
                    ">keys",
                    ">spend USD",
                    "budget_id",
                    "created",
                ]);
                for u in &users {
                    t.row(vec![
                        cell(&u["user_id"]),
                        cell(&u["alias"]),
                        cell(&u["blocked"]),
                        u["keys"].as_array().map_or(0, Vec::len).to_string(),
                        render::spend(&u["standing"]),
                        cell(&u["limits"]["budget_id"]),
                        time(&u["created_at"]),
                    ]);
                }
                t.render()
            }
        }
        UsersCmd::Show { user_id } => {
            let u = api
                .json("GET", &format!("/v1/users/{}", enc(&user_id)), None)
                .await?;
            if as_json {
                render::json(&u)
            } else {
                details(&u)
            }
        }
        UsersCmd::Update { user_id, fields } => {
            let body = fields.body()?;
            if body.is_empty() {
                return Err(
                    "nothing to update: give a flag such as --max-budget (see --help)".into(),
                );
            }
            let u = api
                .json(
                    "PATCH",
                    &format!("/v1/users/{}", enc(&user_id)),
                    Some(Value::Object(body)),
                )
                .await?;
            if as_json {
                render::json(&u)
            } else {
                format!("updated user {}\n{}", cell(&u["user_id"]), details(&u))
            }
        }
        UsersCmd::Delete { user_id } => {
            let r = api
                .json("DELETE", &format!("/v1/users/{}", enc(&user_id)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted user {}\n", cell(&r["user_id"]))
            }
        }
    };
    render::emit(&out)
}

fn details(u: &Value) -> String {
    let l = &u["limits"];
    let s = &u["standing"];
    let mut t = Table::new(&["field", "value"]);
    for (f, v) in [
        ("user_id", cell(&u["user_id"])),
        ("alias", cell(&u["alias"])),
        ("blocked", cell(&u["blocked"])),
        ("keys", cell(&u["keys"])),
        ("created", time(&u["created_at"])),
        ("max_budget", cell(&l["max_budget"])),
        ("budget_period", cell(&l["budget_period"])),
        ("budget_alignment", cell(&l["budget_alignment"])),
        ("budget_id", cell(&l["budget_id"])),
        ("rpm_limit", cell(&l["rpm_limit"])),
        ("tpm_limit", cell(&l["tpm_limit"])),
        ("allowed_models", cell(&u["allowed_models"])),
        ("tools", cell(&u["tools"])),
        ("mcp", cell(&u["mcp"])),
        ("spend", cell(&s["spend"])),
        ("remaining", cell(&s["remaining"])),
        ("resets_at", cell(&s["resets_at"])),
    ] {
        t.row(vec![f.to_string(), v]);
    }
    t.render()
}
