//! The store-trait test suite: the same assertions for every backend (sled now, PostgreSQL
//! later), so that a backend passes only if it behaves exactly like the others.

use super::{Store, UsageFilter};
use crate::auth::KeyRecord;
use crate::ledger::budget::Scope;
use crate::ledger::entities::{BudgetRecord, Limits, UserRecord};
use crate::ledger::period::Period;
use crate::ledger::{Charge, Settled};
use crate::meter::price::Price;
use crate::meter::record::UsageRecord;

fn settled(id: &str, ts_ms: u64, key: &str, cost: u64) -> Settled {
    Settled {
        record: UsageRecord {
            id: id.into(),
            ts_ms,
            key_id: Some(key.into()),
            user_id: Some("alice".into()),
            model: "gpt-4o".into(),
            provider: "openai".into(),
            endpoint: "chat_completions".into(),
            cost_micros: cost,
            status: 200,
            ..Default::default()
        },
        charges: vec![
            Charge {
                scope: Scope::Key,
                id: key.into(),
                window_start: 0,
                amount: cost,
            },
            Charge {
                scope: Scope::User,
                id: "alice".into(),
                window_start: 86_400,
                amount: cost,
            },
        ],
    }
}

/// Runs every check against a fresh, empty store.
pub async fn run(store: &dyn Store) {
    // keys
    let (k, _) = KeyRecord::mint(Some("a".into()), None, serde_json::json!({}));
    store.put_key(&k).await.unwrap();
    assert_eq!(store.load_keys().await.unwrap(), vec![k.clone()]);
    assert!(store.delete_key(&k.id).await.unwrap());
    assert!(!store.delete_key(&k.id).await.unwrap());
    // meta
    store.put_meta("m", b"v").await.unwrap();
    assert_eq!(
        store.get_meta("m").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    // users, budgets, prices
    let u = UserRecord {
        user_id: "alice".into(),
        alias: None,
        limits: Limits {
            max_budget_micros: Some(5),
            ..Default::default()
        },
        allowed_models: None,
        blocked: false,
        metadata: serde_json::json!({}),
        created_at: 1,
        updated_at: 1,
    };
    store.put_user(&u).await.unwrap();
    assert_eq!(store.load_users().await.unwrap(), vec![u]);
    assert!(store.delete_user("alice").await.unwrap());
    let b = BudgetRecord {
        budget_id: "b1".into(),
        name: None,
        max_budget_micros: 10,
        period: Period::Monthly,
        alignment: Default::default(),
        created_at: 2,
    };
    store.put_budget(&b).await.unwrap();
    assert_eq!(store.load_budgets().await.unwrap(), vec![b]);
    assert!(store.delete_budget("b1").await.unwrap());
    let p = Price {
        input: 1,
        output: 2,
        cache_read: None,
        cache_write: Some(3),
    };
    store.put_price("openai:gpt-x", &p).await.unwrap();
    assert_eq!(
        store.load_prices().await.unwrap(),
        vec![("openai:gpt-x".to_string(), p)]
    );
    assert!(store.delete_price("openai:gpt-x").await.unwrap());

    // usage: idempotent, with spend
    let fresh = store
        .append_usage(vec![
            settled("u1", 1_000, "k1", 7),
            settled("u2", 2_000, "k1", 5),
        ])
        .await
        .unwrap();
    assert_eq!(fresh.len(), 2);
    let again = store
        .append_usage(vec![
            settled("u1", 1_000, "k1", 7),
            settled("u3", 3_000, "k2", 1),
        ])
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .map(|s| s.record.id.as_str())
            .collect::<Vec<_>>(),
        vec!["u3"],
        "replays never count twice"
    );
    let mut spend = store.load_spend().await.unwrap();
    spend.sort();
    assert_eq!(
        spend,
        vec![
            (Scope::Key, "k1".to_string(), 0, 12),
            (Scope::Key, "k2".to_string(), 0, 1),
            (Scope::User, "alice".to_string(), 86_400, 13),
        ]
    );
    // queries: filters, time range and cursor paging
    let all = store
        .query_usage(&UsageFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(
        all.records
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        vec!["u1", "u2", "u3"]
    );
    let f = UsageFilter {
        key_id: Some("k1".into()),
        ..Default::default()
    };
    let p1 = store.query_usage(&f, None, 1).await.unwrap();
    assert_eq!(p1.records[0].id, "u1");
    let p2 = store
        .query_usage(&f, p1.next_cursor.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(p2.records[0].id, "u2");
    assert!(p2.next_cursor.is_none(), "no cursor after the last match");
    let ranged = store
        .query_usage(
            &UsageFilter {
                from_ms: Some(1_500),
                to_ms: Some(3_000),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(ranged.records.len(), 1);
    // retention
    assert_eq!(store.prune_usage(2_500).await.unwrap(), 2);
    assert_eq!(
        store
            .query_usage(&UsageFilter::default(), None, 10)
            .await
            .unwrap()
            .records
            .len(),
        1
    );
    // a pruned id is gone from the idempotency index too, but spend stays
    assert_eq!(store.load_spend().await.unwrap().len(), 3);
    store.flush().await.unwrap();
    assert!(store.healthy());
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sled_backend_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::sled_store::SledStore::open(dir.path()).unwrap();
        super::run(&s).await;
    }

    #[tokio::test]
    async fn sled_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = super::super::sled_store::SledStore::open(dir.path()).unwrap();
            use super::Store;
            s.append_usage(vec![super::settled("x", 5, "k", 3)])
                .await
                .unwrap();
        }
        let s = super::super::sled_store::SledStore::open(dir.path()).unwrap();
        use super::Store;
        assert_eq!(s.load_spend().await.unwrap().len(), 2);
        assert!(s
            .append_usage(vec![super::settled("x", 5, "k", 3)])
            .await
            .unwrap()
            .is_empty());
    }
}
