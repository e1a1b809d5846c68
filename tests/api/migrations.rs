//! Schema migrations: refinery applies them once, in one transaction; databases migrated by
//! csrd's earlier runner (`schema_migrations`) are adopted, not migrated a second time.

use csrd::db::{build_pool, migrate};
use csrd_test_support::*;

const ALL: [&str; 17] = [
    "V1__init",
    "V2__list_indexes",
    "V3__tenant_counts",
    "V4__idempotency_and_failures",
    "V5__idempotency_deleted_csrs",
    "V6__sharded_tenant_counts",
    "V7__batches",
    "V8__kek_usage",
    "V9__audit_log",
    "V10__fair_share",
    "V11__cheaper_appends",
    "V12__custom_certificates",
    "V13__certificate_identity_and_caps",
    "V14__key_delivery",
    "V15__more_key_types",
    "V16__one_index_fewer",
    "V17__lz4_batch_chunks",
];

async fn database() -> Isolation {
    let mut iso = Isolation::new().await;
    iso.uses_broker = false;
    iso
}

#[tokio::test]
async fn a_fresh_database_gets_every_migration_once() {
    let iso = database().await;
    let pool = build_pool(&iso.database_url, 1, "csrd-tests").unwrap();
    let mut client = pool.get().await.unwrap();
    let applied = migrate::migrate(&mut client).await.unwrap();
    assert_eq!(applied, ALL);
    assert!(migrate::migrate(&mut client).await.unwrap().is_empty());
    // The machine's PostgreSQL has lz4, so the batch chunks' items are written with it.
    let method: i8 = client
        .query_one(
            "SELECT attcompression::\"char\" FROM pg_attribute
             WHERE attrelid = 'batch_chunks'::regclass AND attname = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(method as u8, b'l');
}

#[tokio::test]
async fn a_database_from_the_earlier_runner_is_adopted_and_only_new_migrations_run() {
    let iso = database().await;
    let pool = build_pool(&iso.database_url, 1, "csrd-tests").unwrap();
    let mut client = pool.get().await.unwrap();
    // What csrd's own runner left behind: versions 1-4 applied and recorded.
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for (version, sql) in [
        include_str!("../../migrations/V1__init.sql"),
        include_str!("../../migrations/V2__list_indexes.sql"),
        include_str!("../../migrations/V3__tenant_counts.sql"),
        include_str!("../../migrations/V4__idempotency_and_failures.sql"),
    ]
    .into_iter()
    .enumerate()
    {
        client.batch_execute(sql).await.unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, 'old')",
                &[&(version as i32 + 1)],
            )
            .await
            .unwrap();
    }

    let applied = migrate::migrate(&mut client).await.unwrap();
    assert_eq!(applied, ALL[4..]);
    assert!(migrate::migrate(&mut client).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_migrations_take_turns() {
    let iso = database().await;
    let pool = build_pool(&iso.database_url, 4, "csrd-tests").unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut client = pool.get().await.unwrap();
                migrate::migrate(&mut client).await.unwrap()
            })
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap());
    }
    assert_eq!(applied, ALL, "each migration applied exactly once");
}
