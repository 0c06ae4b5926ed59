//! The store-trait test suite: the same assertions for every backend (sled and PostgreSQL),
//! so that a backend passes only if it behaves exactly like the others. [`run_shared`] adds
//! the shared-store contract (leases, change counters), which only PostgreSQL has.
//!
//! The PostgreSQL runs need a server: `TOLLGATE_TEST_PG_URL` (tests/run.sh starts one and
//! sets it); without it they print a notice and pass.

use std::sync::Arc;

use super::{
    ChangeKind, LeaseRequest, RenewedLease, SharedStore, SpendRow, Store, UsageFilter, WindowCount,
};
use crate::meter::price::Price;
use crate::records::{
    period::Period, BudgetRecord, Charge, Conversation, GroupKind, GroupRecord, KeyRecord, Limits,
    Scope, Settled, StoredResponse, UsageRecord, UserRecord,
};

pub(crate) fn group(id: &str, org: Option<&str>) -> GroupRecord {
    GroupRecord {
        id: id.into(),
        alias: Some(format!("{id} alias")),
        org_id: org.map(String::from),
        limits: Limits {
            max_budget_micros: Some(7),
            rpm: Some(3),
            ..Default::default()
        },
        allowed_models: Some(vec!["gpt-4o*".into()]),
        blocked: false,
        tools: None,
        mcp: None,
        metadata: serde_json::json!({"cost_centre": 42}),
        created_at: 3,
        updated_at: 4,
    }
}

pub(crate) fn settled(id: &str, ts_ms: u64, key: &str, cost: u64) -> Settled {
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

fn spend(scope: Scope, id: &str, window_start: u64, spent: u64) -> SpendRow {
    SpendRow {
        scope,
        id: id.into(),
        window_start,
        spent,
    }
}

fn count(scope: &str, id: &str, window_start: u64, count: u64) -> WindowCount {
    WindowCount {
        scope: scope.into(),
        id: id.into(),
        window_start,
        count,
    }
}

/// Runs every check against a fresh, empty store.
pub async fn run(store: &dyn Store) {
    // keys: insert, overwrite, delete
    let (mut k, _) = KeyRecord::mint(Some("a".into()), None, serde_json::json!({}));
    store.put_key(&k).await.unwrap();
    assert_eq!(store.load_keys().await.unwrap(), vec![k.clone()]);
    k.name = Some("renamed".into());
    k.active = false;
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
    assert_eq!(store.get_meta("absent").await.unwrap(), None);
    assert!(store.put_meta_if_absent("once", b"1").await.unwrap());
    assert!(!store.put_meta_if_absent("once", b"2").await.unwrap());
    assert_eq!(
        store.get_meta("once").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // users, budgets, prices
    let u = UserRecord {
        user_id: "alice".into(),
        alias: None,
        team_id: None,
        limits: Limits {
            max_budget_micros: Some(5),
            ..Default::default()
        },
        allowed_models: None,
        blocked: false,
        metadata: serde_json::json!({}),
        created_at: 1,
        updated_at: 1,
        tools: None,
        mcp: None,
        guardrail_policies: Vec::new(),
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
        alert_thresholds: Some(vec![80]),
    };
    store.put_budget(&b).await.unwrap();
    assert_eq!(store.load_budgets().await.unwrap(), vec![b]);
    assert!(store.delete_budget("b1").await.unwrap());
    // teams and organisations: separate collections, same record shape
    let (org, team) = (group("acme", None), group("eng", Some("acme")));
    store.put_group(GroupKind::Org, &org).await.unwrap();
    store.put_group(GroupKind::Team, &team).await.unwrap();
    assert_eq!(store.load_groups(GroupKind::Org).await.unwrap(), vec![org]);
    let mut team2 = team.clone();
    team2.limits.max_budget_micros = Some(9);
    store.put_group(GroupKind::Team, &team2).await.unwrap();
    assert_eq!(
        store.load_groups(GroupKind::Team).await.unwrap(),
        vec![team2]
    );
    assert!(store.delete_group(GroupKind::Team, "eng").await.unwrap());
    assert!(!store.delete_group(GroupKind::Team, "eng").await.unwrap());
    assert!(store.load_groups(GroupKind::Team).await.unwrap().is_empty());
    assert!(store.delete_group(GroupKind::Org, "acme").await.unwrap());
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
    let m = crate::records::McpServerRecord {
        id: "docs".into(),
        url: "http://127.0.0.1:9/mcp".into(),
        description: Some("Docs".into()),
        transport: Default::default(),
        auth: Some(crate::records::mcp::McpAuth::Header {
            name: "Authorization".into(),
            value: "Bearer t".into(),
        }),
        price_per_call_micros: Some(1000),
        call_timeout_ms: Some(5000),
        created_at: 1,
        updated_at: 2,
    };
    store.put_mcp_server(&m).await.unwrap();
    assert_eq!(store.load_mcp_servers().await.unwrap(), vec![m]);
    assert!(store.delete_mcp_server("docs").await.unwrap());
    assert!(!store.delete_mcp_server("docs").await.unwrap());
    assert!(store.load_mcp_servers().await.unwrap().is_empty());

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
    let mut spent = store.load_spend().await.unwrap();
    spent.sort();
    assert_eq!(
        spent,
        vec![
            spend(Scope::Key, "k1", 0, 12),
            spend(Scope::Key, "k2", 0, 1),
            spend(Scope::User, "alice", 86_400, 13),
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

    // an id repeated inside one batch counts once; concurrent replays count once
    let dup = store
        .append_usage(vec![
            settled("d1", 4_000, "k3", 2),
            settled("d1", 4_000, "k3", 2),
        ])
        .await
        .unwrap();
    assert_eq!(dup.len(), 1);
    let batch: Vec<_> = (0..20)
        .map(|n| settled(&format!("c{n}"), 5_000 + n, "k4", 1))
        .collect();
    let (a, b, c) = tokio::join!(
        store.append_usage(batch.clone()),
        store.append_usage(batch.clone()),
        store.append_usage(batch.clone())
    );
    assert_eq!(
        a.unwrap().len() + b.unwrap().len() + c.unwrap().len(),
        20,
        "each record is new exactly once"
    );
    let spent = store.load_spend().await.unwrap();
    assert!(spent.contains(&spend(Scope::Key, "k4", 0, 20)));
    assert!(spent.contains(&spend(Scope::Key, "k3", 0, 2)));
    // more filters: user, status, endpoint, model
    let page = store
        .query_usage(
            &UsageFilter {
                user_id: Some("alice".into()),
                status: Some(200),
                endpoint: Some("chat_completions".into()),
                model: Some("gpt-4o".into()),
                from_ms: Some(5_000),
                ..Default::default()
            },
            None,
            7,
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 7);
    assert_eq!(page.records[0].id, "c0");
    let rest = store
        .query_usage(
            &UsageFilter {
                from_ms: Some(5_000),
                ..Default::default()
            },
            page.next_cursor.as_deref(),
            100,
        )
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 13);
    assert!(store
        .query_usage(
            &UsageFilter {
                status: Some(500),
                ..Default::default()
            },
            None,
            10
        )
        .await
        .unwrap()
        .records
        .is_empty());
    // import overwrites spend rows
    store
        .import_spend(vec![spend(Scope::Key, "k4", 0, 99)])
        .await
        .unwrap();
    assert!(store
        .load_spend()
        .await
        .unwrap()
        .contains(&spend(Scope::Key, "k4", 0, 99)));
    // end users: recorded, filtered on, and their spend kept under their own scope
    let mut batch: Vec<Settled> = ["eu-1", "eu-2", "eu-1"]
        .iter()
        .enumerate()
        .map(|(n, eu)| {
            let mut s = settled(&format!("e{n}"), 9_000 + n as u64, "k5", 3);
            s.record.end_user = Some(eu.to_string());
            s.charges.push(Charge {
                scope: Scope::EndUser,
                id: crate::records::end_user_id("k5", eu),
                window_start: 0,
                amount: 3,
            });
            s
        })
        .collect();
    batch.push(settled("e3", 9_010, "k5", 1));
    assert_eq!(store.append_usage(batch).await.unwrap().len(), 4);
    let of = |eu: &str| UsageFilter {
        end_user: Some(eu.into()),
        ..Default::default()
    };
    let page = store.query_usage(&of("eu-1"), None, 10).await.unwrap();
    assert_eq!(
        page.records
            .iter()
            .map(|r| (r.id.as_str(), r.end_user.as_deref()))
            .collect::<Vec<_>>(),
        vec![("e0", Some("eu-1")), ("e2", Some("eu-1"))]
    );
    assert!(store
        .query_usage(&of("eu-3"), None, 10)
        .await
        .unwrap()
        .records
        .is_empty());
    let spent = store.load_spend().await.unwrap();
    assert!(spent.contains(&spend(Scope::EndUser, "k5/eu-1", 0, 6)));
    assert!(spent.contains(&spend(Scope::EndUser, "k5/eu-2", 0, 3)));
    // team and organisation spend: their own scopes, every level charged in one append
    let mut t = settled("g1", 9_100, "k6", 5);
    for (scope, id) in [(Scope::Team, "eng"), (Scope::Org, "acme")] {
        t.charges.push(Charge {
            scope,
            id: id.into(),
            window_start: 2_592_000,
            amount: 5,
        });
    }
    assert_eq!(store.append_usage(vec![t]).await.unwrap().len(), 1);
    let spent = store.load_spend().await.unwrap();
    assert!(spent.contains(&spend(Scope::Team, "eng", 2_592_000, 5)));
    assert!(spent.contains(&spend(Scope::Org, "acme", 2_592_000, 5)));
    assert!(spent.contains(&spend(Scope::Key, "k6", 0, 5)));
    store.flush().await.unwrap();
    assert!(store.healthy());
    run_responses(store).await;
    run_traces(store).await;
}

pub(crate) fn stored(id: &str, key: &str, created_at: u64, items: &[&str]) -> StoredResponse {
    let mut r = StoredResponse {
        id: id.into(),
        key_id: key.into(),
        created_at,
        model: "m".into(),
        previous_response_id: None,
        family: "anthropic".into(),
        response: serde_json::json!({"id": id, "object": "response", "output": items
            .iter()
            .skip(1)
            .map(|i| serde_json::json!({"type": "message", "id": i, "role": "assistant"}))
            .collect::<Vec<_>>()}),
        input: items
            .iter()
            .take(1)
            .map(|i| serde_json::json!({"type": "message", "id": i, "role": "user"}))
            .collect(),
        size: 0,
    };
    r.measure();
    r
}

pub(crate) fn trace(
    rid: &str,
    ts_ms: u64,
    key: &str,
    status: u16,
    latency: u64,
) -> crate::records::Trace {
    crate::records::Trace {
        request_id: rid.into(),
        ts_ms,
        key_id: Some(key.into()),
        user_id: None,
        session_id: None,
        endpoint: "chat_completions".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        model: "m".into(),
        provider: Some("p".into()),
        upstream_model: Some("m".into()),
        client_format: "chat".into(),
        upstream_format: Some("chat".into()),
        stream: false,
        status,
        timings: crate::records::trace::Timings {
            first_byte_ms: Some(1),
            last_byte_ms: latency,
            ..Default::default()
        },
        attempts: 1,
        failed_attempts: vec![],
        usage: Default::default(),
        tool_calls: 0,
        client_gone: false,
        guardrail_blocked: None,
        error: None,
        bodies: None,
    }
}

/// Traces: put, newest-first pages with filters, lookup by request id (and key), pruning.
async fn run_traces(store: &dyn Store) {
    use crate::records::TraceFilter;
    let all: Vec<_> = (0..5u64)
        .map(|n| {
            trace(
                &format!("req_{n}"),
                1_000 + n * 10,
                if n % 2 == 0 { "k1" } else { "k2" },
                if n == 3 { 502 } else { 200 },
                n * 100,
            )
        })
        .collect();
    store.put_traces(all.clone()).await.unwrap();
    // A request id reused by another key later.
    let reused = trace("req_0", 2_000, "k2", 200, 5);
    store.put_traces(vec![reused.clone()]).await.unwrap();

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let p = store
            .query_traces(&TraceFilter::default(), cursor.as_deref(), 2)
            .await
            .unwrap();
        seen.extend(p.traces.iter().map(|t| t.ts_ms));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, vec![2_000, 1_040, 1_030, 1_020, 1_010, 1_000]);
    let q = |f: TraceFilter| async move {
        store
            .query_traces(&f, None, 100)
            .await
            .unwrap()
            .traces
            .into_iter()
            .map(|t| t.ts_ms)
            .collect::<Vec<_>>()
    };
    let k1 = TraceFilter {
        key_id: Some("k1".into()),
        ..Default::default()
    };
    assert_eq!(q(k1).await, vec![1_040, 1_020, 1_000]);
    let failed = TraceFilter {
        status: Some(502),
        ..Default::default()
    };
    assert_eq!(q(failed).await, vec![1_030]);
    let window = TraceFilter {
        from_ms: Some(1_010),
        to_ms: Some(1_030),
        ..Default::default()
    };
    assert_eq!(q(window).await, vec![1_020, 1_010]);
    let slow = TraceFilter {
        min_latency_ms: Some(300),
        ..Default::default()
    };
    assert_eq!(q(slow).await, vec![1_040, 1_030]);

    assert_eq!(store.get_trace("req_0", None).await.unwrap(), Some(reused));
    assert_eq!(
        store.get_trace("req_0", Some("k1")).await.unwrap(),
        Some(all[0].clone())
    );
    assert_eq!(store.get_trace("req_1", Some("k1")).await.unwrap(), None);
    assert_eq!(store.get_trace("nope", None).await.unwrap(), None);

    assert_eq!(store.prune_traces(1_025).await.unwrap(), 3);
    assert_eq!(store.get_trace("req_1", None).await.unwrap(), None);
    assert_eq!(q(TraceFilter::default()).await, vec![2_000, 1_040, 1_030]);
    assert_eq!(
        store
            .get_trace("req_0", None)
            .await
            .unwrap()
            .map(|t| t.ts_ms),
        Some(2_000)
    );
}

/// Stored responses: put, get, the item index per key, delete, pruning by age and the
/// per-key cap.
async fn run_responses(store: &dyn Store) {
    let a = stored("resp_a", "k1", 100, &["msg_in_a", "msg_out_a"]);
    let b = stored("resp_b", "k1", 200, &["msg_in_b", "msg_out_b"]);
    let c = stored("resp_c", "k2", 300, &["msg_in_c", "msg_out_a"]);
    store
        .put_responses(vec![a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!(store.get_response("resp_a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_response("resp_x").await.unwrap(), None);
    // items are found per key: the same item id under another key is another item
    let of = |k: &'static str, i: &'static str| async move {
        store.response_of_item(k, i).await.unwrap()
    };
    assert_eq!(of("k1", "msg_out_a").await.as_deref(), Some("resp_a"));
    assert_eq!(of("k2", "msg_out_a").await.as_deref(), Some("resp_c"));
    assert_eq!(of("k1", "msg_in_b").await.as_deref(), Some("resp_b"));
    assert_eq!(of("k2", "msg_in_b").await, None);
    // a newer response holding the same item id takes the index; deleting it does not
    // leave a dangling entry
    let a2 = stored("resp_a2", "k1", 250, &["msg_in_b", "msg_out_a2"]);
    store.put_responses(vec![a2.clone()]).await.unwrap();
    assert_eq!(of("k1", "msg_in_b").await.as_deref(), Some("resp_a2"));
    assert!(store.delete_response("resp_a2").await.unwrap());
    assert!(!store.delete_response("resp_a2").await.unwrap());
    assert_eq!(store.get_response("resp_a2").await.unwrap(), None);
    assert_eq!(of("k1", "msg_out_a2").await, None);
    // replacing a record keeps one copy
    store.put_responses(vec![b.clone()]).await.unwrap();
    assert_eq!(store.get_response("resp_b").await.unwrap(), Some(b.clone()));
    // the per-key cap keeps the newest that fit
    assert_eq!(
        store.trim_responses("k1", a.size + b.size).await.unwrap(),
        0
    );
    assert_eq!(store.trim_responses("k1", b.size + 1).await.unwrap(), 1);
    assert_eq!(store.get_response("resp_a").await.unwrap(), None);
    assert_eq!(of("k1", "msg_out_a").await, None);
    assert!(store.get_response("resp_b").await.unwrap().is_some());
    assert!(store.get_response("resp_c").await.unwrap().is_some());
    // pruning by age
    assert_eq!(store.prune_responses(250).await.unwrap(), 1);
    assert_eq!(store.get_response("resp_b").await.unwrap(), None);
    assert_eq!(of("k1", "msg_in_b").await, None);
    assert_eq!(store.get_response("resp_c").await.unwrap(), Some(c));
    assert_eq!(store.prune_responses(1_000).await.unwrap(), 1);
    assert_eq!(of("k2", "msg_out_a").await, None);
    // conversations: put, replace, get, delete, pruned by their last change
    let mut conv = Conversation {
        id: "conv_1".into(),
        key_id: "k1".into(),
        created_at: 2_000,
        updated_at: 2_000,
        metadata: serde_json::json!({"topic": "t"}),
        items: vec![serde_json::json!({"type": "message", "id": "msg_c1", "role": "user"})],
    };
    let other = Conversation {
        id: "conv_2".into(),
        updated_at: 5_000,
        ..conv.clone()
    };
    store
        .put_conversations(vec![conv.clone(), other.clone()])
        .await
        .unwrap();
    conv.items
        .push(serde_json::json!({"type": "message", "id": "msg_c2"}));
    conv.updated_at = 3_000;
    store.put_conversations(vec![conv.clone()]).await.unwrap();
    assert_eq!(store.get_conversation("conv_1").await.unwrap(), Some(conv));
    assert_eq!(store.get_conversation("conv_x").await.unwrap(), None);
    assert_eq!(store.prune_responses(4_000).await.unwrap(), 1);
    assert_eq!(store.get_conversation("conv_1").await.unwrap(), None);
    assert!(store.delete_conversation("conv_2").await.unwrap());
    assert!(!store.delete_conversation("conv_2").await.unwrap());
}

fn lease(id: &str, max: u64, keep: u64, need: u64, fraction: f64, ttl_ms: u64) -> LeaseRequest {
    LeaseRequest {
        scope: "k".into(),
        id: id.into(),
        window_start: 0,
        max,
        keep,
        need,
        fraction,
        ttl_ms,
    }
}

/// The shared-store contract, with two handles on the same store (two holders, as two
/// instances would have).
pub async fn run_shared(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let (sa, sb) = (a.clone().shared().unwrap(), b.clone().shared().unwrap());
    assert_ne!(sa.holder(), sb.holder());
    // change counters: a write on one handle moves its kind for the other
    let v0: std::collections::HashMap<_, _> = sb.versions().await.unwrap().into_iter().collect();
    assert_eq!(v0.len(), ChangeKind::ALL.len());
    let (k, _) = KeyRecord::mint(Some("x".into()), None, serde_json::json!({}));
    a.put_key(&k).await.unwrap();
    let v1: std::collections::HashMap<_, _> = sb.versions().await.unwrap().into_iter().collect();
    assert!(v1[&ChangeKind::Keys] > v0[&ChangeKind::Keys]);
    assert_eq!(v1[&ChangeKind::Users], v0[&ChangeKind::Users]);
    a.delete_key(&k.id).await.unwrap();
    let v2: std::collections::HashMap<_, _> = sb.versions().await.unwrap().into_iter().collect();
    assert!(v2[&ChangeKind::Keys] > v1[&ChangeKind::Keys]);
    let m = crate::records::McpServerRecord {
        id: "m".into(),
        url: "http://127.0.0.1:9/mcp".into(),
        description: None,
        transport: Default::default(),
        auth: None,
        price_per_call_micros: None,
        call_timeout_ms: None,
        created_at: 0,
        updated_at: 0,
    };
    a.put_mcp_server(&m).await.unwrap();
    let v3: std::collections::HashMap<_, _> = sb.versions().await.unwrap().into_iter().collect();
    assert!(v3[&ChangeKind::McpServers] > v2[&ChangeKind::McpServers]);
    a.delete_mcp_server("m").await.unwrap();
    a.put_group(GroupKind::Team, &group("t", None))
        .await
        .unwrap();
    a.put_group(GroupKind::Org, &group("o", None))
        .await
        .unwrap();
    let v4: std::collections::HashMap<_, _> = sb.versions().await.unwrap().into_iter().collect();
    assert!(v4[&ChangeKind::Teams] > v3[&ChangeKind::Teams]);
    assert!(v4[&ChangeKind::Orgs] > v3[&ChangeKind::Orgs]);
    assert_eq!(v4[&ChangeKind::Users], v3[&ChangeKind::Users]);
    a.delete_group(GroupKind::Team, "t").await.unwrap();
    a.delete_group(GroupKind::Org, "o").await.unwrap();

    // leases: grants only from what is free
    let g = sa
        .lease(&lease("L", 100, 0, 30, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!((g.amount, g.granted, g.spent, g.others), (30, 30, 0, 0));
    let g = sb
        .lease(&lease("L", 100, 0, 80, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!((g.amount, g.granted, g.others), (0, 0, 30), "70 free < 80");
    let g = sb
        .lease(&lease("L", 100, 0, 10, 0.5, 60_000))
        .await
        .unwrap();
    assert_eq!(g.amount, 35, "need 10, or half of the 70 free");
    // spend written lands in S; the holder then keeps less
    a.append_usage(vec![settled("lu1", 10_000, "L", 20)])
        .await
        .unwrap();
    let renewed = sa.renew(60_000).await.unwrap();
    assert_eq!(
        renewed,
        vec![RenewedLease {
            scope: "k".into(),
            id: "L".into(),
            window_start: 0,
            amount: 30,
            spent: 20,
        }]
    );
    let g = sa
        .lease(&lease("L", 100, 10, 0, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!((g.amount, g.spent, g.others), (10, 20, 35));
    // free = 100 - 20 - 10 - 35 = 35
    let g = sb
        .lease(&lease("L", 100, 35, 35, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!(g.amount, 70);
    let g = sb
        .lease(&lease("L", 100, 70, 1, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!(g.amount, 70, "nothing free");
    // expiry: a's lease returns to the pool after its TTL, and is not renewed after it
    sa.lease(&lease("L", 100, 10, 0, 0.0, 150)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sa.renew(60_000).await.unwrap().is_empty());
    let g = sb
        .lease(&lease("L", 100, 70, 10, 0.0, 60_000))
        .await
        .unwrap();
    assert_eq!((g.amount, g.others), (80, 0));
    // a return to zero drops the row
    let g = sb.lease(&lease("L", 100, 0, 0, 0.0, 60_000)).await.unwrap();
    assert_eq!(g.amount, 0);
    assert!(sb.renew(60_000).await.unwrap().is_empty());

    // concurrent lease calls from both holders never grant more than is free
    let mut set = tokio::task::JoinSet::new();
    for n in 0..12 {
        let s: Arc<dyn SharedStore> = if n % 2 == 0 { sa.clone() } else { sb.clone() };
        set.spawn(async move {
            s.lease(&lease("C", 50, 0, 10, 0.0, 60_000))
                .await
                .map(|g| g.granted)
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r.unwrap().unwrap();
    }
    // each holder's later call replaces its own row (keep 0): the rows hold at most 50
    assert!(total >= 20, "granted {total}");
    let g = sa.lease(&lease("C", 50, 0, 0, 0.0, 60_000)).await.unwrap();
    assert!(g.others <= 50);
    sb.release_all().await.unwrap();
    let g = sa.lease(&lease("C", 50, 0, 50, 0.0, 60_000)).await.unwrap();
    assert_eq!((g.amount, g.others), (50, 0), "released leases are free");
    sa.release_all().await.unwrap();

    // rate consumption: batched increments, totals read back
    let t = sa
        .add_consumption(vec![count("rk", "R", 60_000, 3)])
        .await
        .unwrap();
    assert_eq!(t, vec![count("rk", "R", 60_000, 3)]);
    let t = sb
        .add_consumption(vec![
            count("rk", "R", 60_000, 2),
            count("tk", "R", 60_000, 0),
        ])
        .await
        .unwrap();
    assert!(t.contains(&count("rk", "R", 60_000, 5)));
    assert!(t.contains(&count("tk", "R", 60_000, 0)));
    // consumption counts against request leases of the same window
    let mut r = lease("R", 6, 0, 1, 0.0, 60_000);
    r.scope = "rk".into();
    r.window_start = 60_000;
    assert_eq!(sa.lease(&r).await.unwrap().amount, 1);
    assert_eq!(
        sb.lease(&r).await.unwrap().amount,
        0,
        "5 used + 1 leased = 6"
    );
    sa.release_all().await.unwrap();
    // rate and lease rows are not spend: load_spend shows budget accounts only
    assert!(a.load_spend().await.unwrap().iter().all(|r| r.id != "R"));
}

/// A PostgreSQL store in a fresh schema of the test server, or None (with a notice) when
/// `TOLLGATE_TEST_PG_URL` is unset. Returns the settings so a test can open more handles.
pub async fn test_postgres(
    name: &str,
) -> Option<(Arc<super::postgres::PgStore>, super::postgres::PgSettings)> {
    let Ok(url) = std::env::var("TOLLGATE_TEST_PG_URL") else {
        // Loud (past the harness's capture), and a failure where tests/run.sh provides one.
        let what = "TOLLGATE_TEST_PG_URL is not set (tests/run.sh starts a PostgreSQL and sets it)";
        assert!(
            std::env::var_os("TOLLGATE_NO_SKIP").is_none(),
            "{name}: {what}, and TOLLGATE_NO_SKIP is set"
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {what}");
        return None;
    };
    let mut s = super::postgres::PgSettings::new(&url);
    s.schema = format!(
        "t_{}_{}",
        name,
        crate::ids::generate_id("").to_ascii_lowercase()
    )
    .chars()
    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
    .take(63)
    .collect();
    let store = super::postgres::PgStore::open(&s, true)
        .await
        .expect("open the test PostgreSQL");
    Some((Arc::new(store), s))
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_backend_passes_the_suite() {
        let Some((store, settings)) = super::test_postgres("suite").await else {
            return;
        };
        super::run(store.as_ref()).await;
        let other = super::super::postgres::PgStore::open(&settings, false)
            .await
            .unwrap();
        let (a, b): (
            std::sync::Arc<dyn super::Store>,
            std::sync::Arc<dyn super::Store>,
        ) = (store.clone(), std::sync::Arc::new(other));
        super::run_shared(a, b).await;
        store.drop_schema(&settings.schema).await.unwrap();
    }

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
        // sled's flusher thread lets go of the file lock a moment after the last handle drops.
        let mut tries = 0;
        let s = loop {
            match super::super::sled_store::SledStore::open(dir.path()) {
                Ok(s) => break s,
                Err(e) if tries < 50 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        use super::Store;
        assert_eq!(s.load_spend().await.unwrap().len(), 2);
        assert!(s
            .append_usage(vec![super::settled("x", 5, "k", 3)])
            .await
            .unwrap()
            .is_empty());
    }
}
