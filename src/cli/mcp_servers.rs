//! `tollgate mcp-servers`: the MCP servers registered in tollgate (`/v1/mcp/servers`). Those
//! of the config file are listed and shown, never changed here.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::api::{enc, Api};
use super::fields::set;
use super::render::{self, cell, time, Table};

#[derive(Subcommand, Debug)]
pub enum McpServersCmd {
    /// Register a server.
    Create {
        /// The server's name: its id, and the prefix of its tools (`name__tool`).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: ServerFields,
    },
    /// List the registered servers (config and API).
    List,
    /// Show one server (credentials are never shown, only whether one is set).
    Show { name: String },
    /// Change a server registered through the API.
    Update {
        name: String,
        #[command(flatten)]
        fields: ServerFields,
    },
    /// Remove a server registered through the API.
    Delete { name: String },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServerFields {
    /// The server's MCP URL (required to create; `--url` is the gateway's).
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long, value_parser = ["streamable_http", "sse"])]
    transport: Option<String>,
    /// The credential tollgate presents, as JSON: '{"type":"header","name":"Authorization",
    /// "value":"Bearer …"}' or '{"type":"oauth","token_url":…,"client_id":…,
    /// "client_secret":…,"scope":…}'; 'null' removes it.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    auth: Option<Value>,
    /// USD billed to the calling key per successful call.
    #[arg(long, value_name = "USD")]
    price_per_call: Option<String>,
    #[arg(long, value_name = "MS")]
    call_timeout_ms: Option<u64>,
}

fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

impl ServerFields {
    fn body(&self) -> Map<String, Value> {
        let mut b = Map::new();
        set(&mut b, "url", self.server_url.as_ref().map(|v| json!(v)));
        set(
            &mut b,
            "description",
            self.description.as_ref().map(|v| json!(v)),
        );
        set(
            &mut b,
            "transport",
            self.transport.as_ref().map(|v| json!(v)),
        );
        if let Some(a) = &self.auth {
            b.insert("auth".into(), a.clone());
        }
        set(
            &mut b,
            "price_per_call",
            self.price_per_call.as_ref().map(|v| json!(v)),
        );
        set(
            &mut b,
            "call_timeout_ms",
            self.call_timeout_ms.map(|v| json!(v)),
        );
        b
    }
}

pub async fn run(api: &mut Api, cmd: McpServersCmd, as_json: bool) -> Result<(), String> {
    let one = |s: &Value, verb: &str| {
        if as_json {
            render::json(s)
        } else {
            format!("{verb} MCP server {}\n{}", cell(&s["id"]), details(s))
        }
    };
    let path = |name: &str| format!("/v1/mcp/servers/{}", enc(name));
    let out = match cmd {
        McpServersCmd::Create { name, fields } => {
            let mut body = fields.body();
            body.insert("name".into(), json!(name));
            one(
                &api.json("POST", "/v1/mcp/servers", Some(Value::Object(body)))
                    .await?,
                "registered",
            )
        }
        McpServersCmd::List => {
            let list = api.list_all("/v1/mcp/servers", &[]).await?;
            if as_json {
                render::json(&Value::Array(list))
            } else {
                let mut t = Table::new(&["name", "url", "auth", ">USD/call", "source"]);
                for s in &list {
                    t.row(vec![
                        cell(&s["id"]),
                        cell(&s["url"]),
                        cell(&s["auth"]["type"]),
                        cell(&s["price_per_call"]),
                        cell(&s["source"]),
                    ]);
                }
                t.render()
            }
        }
        McpServersCmd::Show { name } => {
            let s = api.json("GET", &path(&name), None).await?;
            if as_json {
                render::json(&s)
            } else {
                details(&s)
            }
        }
        McpServersCmd::Update { name, fields } => {
            let body = fields.body();
            if body.is_empty() {
                return Err(
                    "nothing to update: give a flag such as --server-url (see --help)".into(),
                );
            }
            let s = api
                .json("PATCH", &path(&name), Some(Value::Object(body)))
                .await?;
            one(&s, "updated")
        }
        McpServersCmd::Delete { name } => {
            let r = api.json("DELETE", &path(&name), None).await?;
            if as_json {
                render::json(&r)
            } else {
                format!("deleted MCP server {}\n", cell(&r["id"]))
            }
        }
    };
    render::emit(&out)
}

fn details(s: &Value) -> String {
    let mut t = Table::new(&["field", "value"]);
    for (f, v) in [
        ("name", cell(&s["id"])),
        ("url", cell(&s["url"])),
        ("description", cell(&s["description"])),
        ("transport", cell(&s["transport"])),
        ("auth", cell(&s["auth"])),
        ("price_per_call", cell(&s["price_per_call"])),
        ("call_timeout_ms", cell(&s["call_timeout_ms"])),
        ("source", cell(&s["source"])),
        ("created", time(&s["created_at"])),
    ] {
        t.row(vec![f.to_string(), v]);
    }
    t.render()
}
