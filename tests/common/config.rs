//! Test configs built as data, written as YAML: no YAML text is pasted together, so a test
//! cannot get an indentation wrong, and each one says only what it changes.
//!
//! ```ignore
//! let cfg = TestConfig::new(&mock.url())
//!     .provider_set("openai", "stream_idle_timeout_ms", 800)
//!     .pricing("openai:gpt-4o-mini", 1, 2);
//! let gw = Gateway::start_with(move |port, dir| cfg.render(port, dir));
//! ```

use super::MASTER;
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// A tollgate config for a test. `listen` and `data_dir` are filled in by [`TestConfig::render`]
/// (the harness picks the port and the directory).
#[derive(Clone, Debug)]
pub struct TestConfig {
    doc: Mapping,
}

fn yaml(v: impl Serialize) -> Value {
    serde_yaml::to_value(v).expect("a config value")
}

impl TestConfig {
    /// The top every test gateway shares, with no providers: the test master key, two worker
    /// threads, no presets (the machine's API keys are never used).
    pub fn empty() -> TestConfig {
        let mut c = TestConfig {
            doc: Mapping::new(),
        };
        // Placeholders, so that the keys come first in the file.
        c = c.set("listen", Value::Null).set("data_dir", Value::Null);
        c.set("master_key", MASTER)
            .set("threads", 2)
            .set("presets", false)
    }

    /// A gateway whose `openai` (models: gpt-4o-mini) and `anthropic` providers both point at
    /// the mock, with a one-second shutdown.
    pub fn new(mock_url: &str) -> TestConfig {
        TestConfig::empty()
            .set("grace_period_seconds", 1)
            .set("graceful_shutdown_timeout_seconds", 1)
            .provider(
                "openai",
                serde_json::json!({
                    "kind": "openai",
                    "base_url": format!("{mock_url}/v1"),
                    "api_key": "sk-openai-provider-key",
                    "models": ["gpt-4o-mini"],
                }),
            )
            .provider(
                "anthropic",
                serde_json::json!({
                    "kind": "anthropic",
                    "base_url": mock_url,
                    "api_key": "sk-ant-provider-key",
                }),
            )
    }

    /// Sets a top-level key (replacing it, in place, if present).
    pub fn set(mut self, key: &str, value: impl Serialize) -> TestConfig {
        self.doc.insert(key.into(), yaml(value));
        self
    }

    /// Removes a top-level key.
    pub fn without(mut self, key: &str) -> TestConfig {
        self.doc.shift_remove(key);
        self
    }

    /// Adds (or replaces) the provider `name` with these fields.
    pub fn provider(mut self, name: &str, fields: impl Serialize) -> TestConfig {
        let providers = self
            .doc
            .entry("providers".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        providers
            .as_mapping_mut()
            .expect("providers is a mapping")
            .insert(name.into(), yaml(fields));
        self
    }

    /// Sets one field of the provider `name`, which must exist.
    pub fn provider_set(mut self, name: &str, key: &str, value: impl Serialize) -> TestConfig {
        self.doc
            .get_mut("providers")
            .and_then(|p| p.get_mut(name))
            .and_then(Value::as_mapping_mut)
            .unwrap_or_else(|| panic!("no provider {name} to set {key} on"))
            .insert(key.into(), yaml(value));
        self
    }

    /// A price per million tokens (dollars) for `model_key` (`provider:model`).
    pub fn pricing(mut self, model_key: &str, input: u64, output: u64) -> TestConfig {
        let pricing = self
            .doc
            .entry("pricing".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        pricing
            .as_mapping_mut()
            .expect("pricing is a mapping")
            .insert(
                model_key.into(),
                yaml(serde_json::json!({"input": input, "output": output})),
            );
        self
    }

    /// A shared PostgreSQL store at `url`, in `schema`, with these extra settings.
    pub fn postgres(self, url: &str, schema: &str, settings: serde_json::Value) -> TestConfig {
        let mut store = serde_json::json!({"kind": "postgres", "url": url, "schema": schema});
        store.as_object_mut().unwrap().extend(
            settings
                .as_object()
                .expect("settings are an object")
                .clone(),
        );
        self.set("store", store)
    }

    /// The config as [`Gateway::start_with`](super::Gateway::start_with) and
    /// [`Gateway::spawn_in`](super::Gateway::spawn_in) take it: port and data dir in, text out.
    pub fn file(self) -> impl Fn(u16, &Path) -> String + Clone + Send + 'static {
        move |port, data_dir| self.render(port, data_dir)
    }

    /// The config's YAML for a gateway on `port` with its data in `data_dir`.
    pub fn render(&self, port: u16, data_dir: &Path) -> String {
        let mut doc = self.doc.clone();
        if doc.contains_key("listen") {
            doc.insert("listen".into(), yaml(format!("127.0.0.1:{port}")));
        }
        if doc.contains_key("data_dir") {
            doc.insert("data_dir".into(), yaml(data_dir.display().to_string()));
        }
        serde_yaml::to_string(&doc).expect("YAML")
    }
}
