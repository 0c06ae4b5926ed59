//! `keys.snapshot.json`: the key index (hashes only) and the master key hash, readable without
//! the store's lock so that a process taking over during an upgrade authenticates at once.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::{unhex, KeyIndex};
use crate::ids::hex;
use crate::ledger::budget::Counter;
use crate::ledger::Ledger;
use crate::records::{BudgetRecord, GroupKind, GroupRecord, KeyRecord, Scope, UserRecord};

pub const FILE: &str = "keys.snapshot.json";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    written_at: u64,
    master_hash: Option<String>,
    keys: Vec<KeyRecord>,
    #[serde(default)]
    users: Vec<UserRecord>,
    #[serde(default)]
    budgets: Vec<BudgetRecord>,
    #[serde(default)]
    teams: Vec<GroupRecord>,
    #[serde(default)]
    orgs: Vec<GroupRecord>,
    /// Spend counters, so budgets hold while a new process waits for the store.
    #[serde(default)]
    counters: Vec<(Scope, String, Counter)>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes the snapshot atomically (temp file, fsync, rename) with owner-only permissions.
pub fn write(data_dir: &Path, index: &KeyIndex, ledger: Option<&Ledger>) -> std::io::Result<()> {
    let snap = Snapshot {
        version: 1,
        written_at: crate::clock::now_secs(),
        master_hash: index.master_hash().map(|h| hex(&h)),
        keys: index.all(),
        users: ledger
            .map(|l| {
                l.users
                    .load()
                    .values()
                    .map(|u| UserRecord::clone(u))
                    .collect()
            })
            .unwrap_or_default(),
        budgets: ledger
            .map(|l| {
                l.budgets
                    .load()
                    .values()
                    .map(|b| BudgetRecord::clone(b))
                    .collect()
            })
            .unwrap_or_default(),
        teams: ledger
            .map(|l| groups(l, GroupKind::Team))
            .unwrap_or_default(),
        orgs: ledger
            .map(|l| groups(l, GroupKind::Org))
            .unwrap_or_default(),
        counters: ledger.map(|l| l.counters()).unwrap_or_default(),
    };
    let bytes = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(data_dir))?;
    Ok(())
}

fn groups(l: &Ledger, kind: GroupKind) -> Vec<GroupRecord> {
    l.groups(kind)
        .load()
        .values()
        .map(|g| GroupRecord::clone(g))
        .collect()
}

/// Loads the snapshot into `index` (and `ledger`). Returns false when there is none.
pub fn load(data_dir: &Path, index: &KeyIndex, ledger: Option<&Ledger>) -> std::io::Result<bool> {
    let bytes = match std::fs::read(path(data_dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    if let Some(h) = snap.master_hash.as_deref().and_then(unhex) {
        // A master key from the config file wins; the caller sets it after loading.
        if index.master_hash().is_none() {
            index.set_master(Some(h));
        }
    }
    index.replace(snap.keys);
    if let Some(l) = ledger {
        l.replace_budgets(snap.budgets);
        l.replace_users(snap.users);
        l.replace_groups(GroupKind::Team, snap.teams);
        l.replace_groups(GroupKind::Org, snap.orgs);
        for (scope, id, c) in snap.counters {
            l.seed_spend(scope, &id, c.window_start, c.spent);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let idx = KeyIndex::new();
        let (rec, secret) = KeyRecord::mint(Some("n".into()), None, serde_json::Value::Null);
        idx.replace([rec]);
        idx.set_master(Some(crate::auth::hash_key("tgm-x")));
        write(dir.path(), &idx, None).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(
            !text.contains(&secret),
            "the snapshot must not hold secrets"
        );
        let idx2 = KeyIndex::new();
        assert!(load(dir.path(), &idx2, None).unwrap());
        assert!(idx2.check(&secret, 1).is_ok());
        assert!(idx2.is_master("tgm-x"));
        assert!(!load(tempfile::tempdir().unwrap().path(), &KeyIndex::new(), None).unwrap());
    }
}
