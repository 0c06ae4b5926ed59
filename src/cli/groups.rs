//! `tollgate teams` and `tollgate orgs`: teams and organisations (budgets and limits over
//! everything under them) through `/v1/teams` and `/v1/orgs`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::{metadata, set, LimitArgs};
use super::render::{self, cell, time, Table};
use crate::records::GroupKind;

#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// Create one.
    Create {
        /// 1-128 letters, digits or -_.@
        id: String,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// List them with their spend.
    List {
        /// Teams only: those of this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Show one: limits, members and current spend.
    Show { id: String },
    /// Change its alias, organisation, limits or state.
    Update {
        id: String,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// Delete one. With members it is refused unless --cascade: then a team's service keys
    /// are deactivated and its users left without a team; an organisation's teams go too.
    Delete {
        id: String,
        #[arg(long)]
        cascade: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct GroupFields {
    /// A display name.
    #[arg(long)]
    alias: Option<String>,
    /// Teams only: the organisation the team belongs to ("" to detach it).
    #[arg(long)]
    org: Option<String>,
    /// Refuse every request under it (true) or allow them again (false).
    #[arg(long, value_name = "BOOL")]
    blocked: Option<bool>,
    /// Free-form JSON object kept with it.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

impl GroupFields {
    fn body(&self, kind: GroupKind) -> Result<Map<String, Value>, String> {
        let mut b = Map::new();
        set(&mut b, "alias", self.alias.as_ref().map(|v| json!(v)));
        if let Some(o) = &self.org {
            if kind == GroupKind::Org {
                return Err("--org is for teams".into());
            }
            b.insert(
                "org_id".into(),
                if o.is_empty() { Value::Null } else { json!(o) },
            );
        }
        set(&mut b, "blocked", self.blocked.map(Value::Bool));
        set(&mut b, "metadata", metadata(&self.metadata)?);
        self.limits.apply(&mut b);
        Ok(b)
    }
}

fn id_field(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Team => "team_id",
        GroupKind::Org => "org_id",
    }
}

pub async fn run(
    api: &mut Api,
    kind: GroupKind,
    cmd: GroupsCmd,
    as_json: bool,
) -> Result<(), String> {
    let (noun, base, idf) = (
        kind.noun(),
        format!("/v1/{}", kind.plural()),
        id_field(kind),
    );
    let out = match cmd {
        GroupsCmd::Create { id, fields } => {
            let mut body = fields.body(kind)?;
            body.insert(idf.into(), json!(id));
            let g = api.json("POST", &base, Some(Value::Object(body))).await?;
            if as_json {
                render::json(&g)
            } else {
                format!("created {noun} {}\n{}", cell(&g[idf]), details(kind, &g))
            }
        }
        GroupsCmd::List { org } => {
            if org.is_some() && kind == GroupKind::Org {
                return Err("--org is for teams".into());
            }
            let q: Vec<(&str, String)> = org.map(|o| ("org_id", o)).into_iter().collect();
            let all = api.list_all(&base, &q).await?;
            if as_json {
                render::json(&Value::Array(all))
            } else {
                let members = match kind {
                    GroupKind::Team => ">users",
                    GroupKind::Org => ">teams",
                };
                let mut t = Table::new(&[
                    idf,
                    "alias",
                    "org_id",
                    "blocked",
                    members,
                    ">spend USD",
                    "max_budget",
                    "created",
                ]);
                for g in &all {
                    let n = match kind {
                        GroupKind::Team => &g["users"],
                        GroupKind::Org => &g["teams"],
                    };
                    t.row(vec![
                        cell(&g[idf]),
                        cell(&g["alias"]),
                        if kind == GroupKind::Team {
                            cell(&g["org_id"])
                        } else {
                            String::new()
                        },
                        cell(&g["blocked"]),
                        n.as_array().map_or(0, Vec::len).to_string(),
                        render::spend(&g["standing"]),
                        cell(&g["limits"]["max_budget"]),
                        time(&g["created_at"]),
                    ]);
                }
                t.render()
            }
        }
        GroupsCmd::Show { id } => {
            let g = api
                .json("GET", &format!("{base}/{}", enc(&id)), None)
                .await?;
            if as_json {
                render::json(&g)
            } else {
                details(kind, &g)
            }
        }
        GroupsCmd::Update { id, fields } => {
            let body = fields.body(kind)?;
            if body.is_empty() {
                return Err(
                    "nothing to update: give a flag such as --max-budget (see --help)".into(),
                );
            }
            let g = api
                .json(
                    "PATCH",
                    &format!("{base}/{}", enc(&id)),
                    Some(Value::Object(body)),
                )
                .await?;
            if as_json {
                render::json(&g)
            } else {
                format!("updated {noun} {}\n{}", cell(&g[idf]), details(kind, &g))
            }
        }
        GroupsCmd::Delete { id, cascade } => {
            let q = if cascade { "?cascade=true" } else { "" };
            let r = api
                .json("DELETE", &format!("{base}/{}{q}", enc(&id)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted {noun} {}\n", cell(&r[idf]))
            }
        }
    };
    render::emit(&out)
}

fn details(kind: GroupKind, g: &Value) -> String {
    let l = &g["limits"];
    let s = &g["standing"];
    let idf = id_field(kind);
    let mut rows = vec![(idf, cell(&g[idf])), ("alias", cell(&g["alias"]))];
    match kind {
        GroupKind::Team => {
            rows.push(("org_id", cell(&g["org_id"])));
            rows.push(("users", cell(&g["users"])));
            rows.push(("keys", cell(&g["keys"])));
        }
        GroupKind::Org => rows.push(("teams", cell(&g["teams"]))),
    }
    rows.extend([
        ("blocked", cell(&g["blocked"])),
        ("created", time(&g["created_at"])),
        ("max_budget", cell(&l["max_budget"])),
        ("budget_period", cell(&l["budget_period"])),
        ("budget_id", cell(&l["budget_id"])),
        ("rpm_limit", cell(&l["rpm_limit"])),
        ("tpm_limit", cell(&l["tpm_limit"])),
        ("allowed_models", cell(&g["allowed_models"])),
        ("spend", cell(&s["spend"])),
        ("remaining", cell(&s["remaining"])),
        ("resets_at", cell(&s["resets_at"])),
    ]);
    let mut t = Table::new(&["field", "value"]);
    for (f, v) in rows {
        t.row(vec![f.to_string(), v]);
    }
    t.render()
}
