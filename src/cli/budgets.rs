//! `tollgate budgets`: named budgets that keys and users share by `--budget-id`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::set;
use super::render::{self, cell, time, Table};

#[derive(Subcommand, Debug)]
pub enum BudgetsCmd {
    /// Create a budget.
    Create {
        /// Its id (default: generated).
        budget_id: Option<String>,
        #[command(flatten)]
        fields: BudgetFields,
    },
    /// List budgets and how many keys and users share each.
    List,
    /// Show one budget.
    Show { budget_id: String },
    /// Change a budget's amount, period, alignment or name.
    Update {
        budget_id: String,
        #[command(flatten)]
        fields: BudgetFields,
    },
    /// Delete a budget that no key or user refers to.
    Delete { budget_id: String },
}

#[derive(clap::Args, Debug, Clone)]
pub struct BudgetFields {
    #[arg(long)]
    name: Option<String>,
    /// The amount in USD (required to create).
    #[arg(long, value_name = "USD")]
    max_budget: Option<String>,
    /// daily, weekly, monthly (the default), lifetime, or a duration such as 30d.
    #[arg(long, value_name = "PERIOD")]
    budget_duration: Option<String>,
    /// calendar (UTC boundaries, the default) or rolling.
    #[arg(long, value_name = "ALIGNMENT", value_parser = ["calendar", "rolling"])]
    budget_alignment: Option<String>,
}

impl BudgetFields {
    fn body(&self) -> Map<String, Value> {
        let mut b = Map::new();
        set(&mut b, "name", self.name.as_ref().map(|v| json!(v)));
        set(
            &mut b,
            "max_budget",
            self.max_budget.as_ref().map(|v| json!(v)),
        );
        set(
            &mut b,
            "budget_duration",
            self.budget_duration.as_ref().map(|v| json!(v)),
        );
        set(
            &mut b,
            "budget_alignment",
            self.budget_alignment.as_ref().map(|v| json!(v)),
        );
        b
    }
}

pub async fn run(api: &mut Api, cmd: BudgetsCmd, as_json: bool) -> Result<(), String> {
    let one = |b: &Value, verb: &str| {
        if as_json {
            render::json(b)
        } else {
            format!("{verb} budget {}\n{}", cell(&b["budget_id"]), details(b))
        }
    };
    let out = match cmd {
        BudgetsCmd::Create { budget_id, fields } => {
            let mut body = fields.body();
            set(&mut body, "budget_id", budget_id.map(|v| json!(v)));
            one(
                &api.json("POST", "/v1/budgets", Some(Value::Object(body)))
                    .await?,
                "created",
            )
        }
        BudgetsCmd::List => {
            let list = api.list_all("/v1/budgets", &[]).await?;
            if as_json {
                render::json(&Value::Array(list))
            } else {
                let mut t = Table::new(&[
                    "budget_id",
                    "name",
                    ">max USD",
                    "period",
                    "alignment",
                    ">keys",
                    ">users",
                ]);
                for b in &list {
                    t.row(vec![
                        cell(&b["budget_id"]),
                        cell(&b["name"]),
                        cell(&b["max_budget"]),
                        cell(&b["budget_period"]),
                        cell(&b["budget_alignment"]),
                        cell(&b["key_count"]),
                        cell(&b["user_count"]),
                    ]);
                }
                t.render()
            }
        }
        BudgetsCmd::Show { budget_id } => {
            let b = api
                .json("GET", &format!("/v1/budgets/{}", enc(&budget_id)), None)
                .await?;
            if as_json {
                render::json(&b)
            } else {
                details(&b)
            }
        }
        BudgetsCmd::Update { budget_id, fields } => {
            let body = fields.body();
            if body.is_empty() {
                return Err(
                    "nothing to update: give a flag such as --max-budget (see --help)".into(),
                );
            }
            let b = api
                .json(
                    "PATCH",
                    &format!("/v1/budgets/{}", enc(&budget_id)),
                    Some(Value::Object(body)),
                )
                .await?;
            one(&b, "updated")
        }
        BudgetsCmd::Delete { budget_id } => {
            let r = api
                .json("DELETE", &format!("/v1/budgets/{}", enc(&budget_id)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted budget {}\n", cell(&r["budget_id"]))
            }
        }
    };
    render::emit(&out)
}

fn details(b: &Value) -> String {
    let mut t = Table::new(&["field", "value"]);
    for (f, v) in [
        ("budget_id", cell(&b["budget_id"])),
        ("name", cell(&b["name"])),
        ("max_budget", cell(&b["max_budget"])),
        ("budget_period", cell(&b["budget_period"])),
        ("budget_alignment", cell(&b["budget_alignment"])),
        ("keys", cell(&b["key_count"])),
        ("users", cell(&b["user_count"])),
        ("created", time(&b["created_at"])),
    ] {
        t.row(vec![f.to_string(), v]);
    }
    t.render()
}
