//! `tollgate pricing`: the price table (USD per million tokens) through `/v1/pricing`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::set;
use super::render::{self, cell, Table};

#[derive(Subcommand, Debug)]
pub enum PricingCmd {
    /// List every price: shipped defaults, the config's, and those set here.
    List {
        /// Only prices set through the API (`tollgate pricing set`).
        #[arg(long)]
        overrides: bool,
    },
    /// Show the price that applies to a model (provider:model or model).
    Show { model_key: String },
    /// Set a price (provider:model, model, or prefix*); it applies at once.
    Set {
        model_key: String,
        /// USD per million input tokens.
        #[arg(long, value_name = "USD")]
        input: String,
        /// USD per million output tokens.
        #[arg(long, value_name = "USD")]
        output: String,
        /// USD per million cached input tokens read (default: the input price).
        #[arg(long, value_name = "USD")]
        cache_read: Option<String>,
        /// USD per million input tokens written to the cache (default: the input price).
        #[arg(long, value_name = "USD")]
        cache_write: Option<String>,
    },
    /// Remove a price set here (the shipped or configured one applies again).
    Delete { model_key: String },
}

pub async fn run(api: &mut Api, cmd: PricingCmd, as_json: bool) -> Result<(), String> {
    let out = match cmd {
        PricingCmd::List { overrides } => {
            let v = api.json("GET", "/v1/pricing", None).await?;
            let mut list: Vec<Value> = v["data"].as_array().cloned().unwrap_or_default();
            if overrides {
                list.retain(|p| p["source"] == "api");
            }
            list.sort_by(|a, b| cell(&a["model_key"]).cmp(&cell(&b["model_key"])));
            if as_json {
                render::json(&Value::Array(list))
            } else {
                let mut t = Table::new(&[
                    "model_key",
                    ">input",
                    ">output",
                    ">cache_read",
                    ">cache_write",
                    "source",
                ]);
                for p in &list {
                    t.row(vec![
                        cell(&p["model_key"]),
                        cell(&p["input"]),
                        cell(&p["output"]),
                        cell(&p["cache_read"]),
                        cell(&p["cache_write"]),
                        cell(&p["source"]),
                    ]);
                }
                format!("USD per million tokens\n{}", t.render())
            }
        }
        PricingCmd::Show { model_key } => {
            let p = api
                .json("GET", &format!("/v1/pricing/{}", enc(&model_key)), None)
                .await?;
            if as_json {
                render::json(&p)
            } else {
                line(&p)
            }
        }
        PricingCmd::Set {
            model_key,
            input,
            output,
            cache_read,
            cache_write,
        } => {
            let mut b = Map::new();
            b.insert("model_key".into(), json!(model_key));
            b.insert("input".into(), json!(input));
            b.insert("output".into(), json!(output));
            set(&mut b, "cache_read", cache_read.map(|v| json!(v)));
            set(&mut b, "cache_write", cache_write.map(|v| json!(v)));
            let p = api
                .json("POST", "/v1/pricing", Some(Value::Object(b)))
                .await?;
            if as_json {
                render::json(&p)
            } else {
                format!("set {}", line(&p))
            }
        }
        PricingCmd::Delete { model_key } => {
            let r = api
                .json("DELETE", &format!("/v1/pricing/{}", enc(&model_key)), None)
                .await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted the price set for {}\n", cell(&r["model_key"]))
            }
        }
    };
    render::emit(&out)
}

/// `openai:gpt-4o: input 2.50, output 10.00, cache read 1.25, cache write 2.50 USD/M tokens`
fn line(p: &Value) -> String {
    format!(
        "{}: input {}, output {}, cache read {}, cache write {} USD per million tokens\n",
        cell(&p["model_key"]),
        cell(&p["input"]),
        cell(&p["output"]),
        cell(&p["cache_read"]),
        cell(&p["cache_write"]),
    )
}
