//! `tollgate check-config`: validates a configuration file and prints what it resolves to.

use std::path::Path;

use super::load_config;
use crate::store::settings::StoreConfig;

pub fn run(file: &Path) -> i32 {
    let cfg = match load_config(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    println!("{}: OK", file.display());
    println!("  listen: {}", cfg.listen);
    println!("  data_dir: {}", cfg.data_dir.display());
    match &cfg.store {
        StoreConfig::Sled => println!("  store: sled under data_dir"),
        StoreConfig::Postgres(p) => println!(
            "  store: postgres {} schema {} (pool {}, lease ttl {} ms, on outage: {:?})",
            crate::store::postgres::redact_url(&p.pg.url),
            p.pg.schema,
            p.pg.pool_size,
            p.leases.ttl.as_millis(),
            p.leases.on_outage
        ),
    }
    println!("  max_body_bytes: {}", cfg.max_body_bytes);
    for p in cfg.providers.values() {
        println!(
            "  provider {}: {} {}://{}:{}{}{}{}",
            p.name,
            p.kind.as_str(),
            if p.tls { "https" } else { "http" },
            p.host,
            p.port,
            p.base_path,
            if p.api_key.is_some() {
                " (key set)"
            } else {
                " (no key)"
            },
            if p.from_preset { " [preset]" } else { "" }
        );
    }
    for (a, t) in &cfg.aliases {
        println!("  alias {a} -> {t}");
    }
    0
}
