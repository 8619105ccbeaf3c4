//! The same wrapper over the PostgreSQL backend: appends from concurrent
//! tasks, per-call durability, a cursor stream and a subscription stream,
//! and a clean close. Runs in the throwaway cluster of this test process
//! (or the server in `BATPAK_TEST_PG_URL`); skipped without PostgreSQL
//! unless `CI` is set.

use batpak::prelude::*;
use batpak_postgres::{testing, PgStore};
use batpak_tokio::AsyncStore;
use futures_util::StreamExt;
use std::time::Duration;

#[test]
fn the_wrapper_runs_the_postgres_backend() {
    let Some(config) = testing::fresh_config() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is required in CI"
        );
        eprintln!("no PostgreSQL: skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    // Opened outside the runtime: the synchronous client must not run on
    // a runtime thread, which is what the wrapper is for.
    let pg = PgStore::open(config.with_pool_size(8)).unwrap();
    let second = PgStore::open(testing::fresh_config().unwrap()).unwrap();
    rt.block_on(async {
        let store = AsyncStore::with_threads(pg, 8).unwrap();
        let mut cursor = store.cursor_stream(&Region::entity("pg:"), None).unwrap();
        let mut notes = store.subscribe(&Region::entity("pg:")).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let c = Coordinate::new(format!("pg:{t}"), "s").unwrap();
                    let mut ids = Vec::new();
                    for i in 0..5u32 {
                        let durability = if i % 2 == 0 {
                            Durability::Relaxed
                        } else {
                            Durability::Durable
                        };
                        let opts = AppendOptions::new().with_durability(durability);
                        let r = store
                            .append_with_options(&c, EventKind::custom(1, 1), i, opts)
                            .await
                            .unwrap();
                        ids.push(r.event_id);
                    }
                    ids
                })
            })
            .collect();
        let mut all = std::collections::BTreeSet::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 40);
        assert_eq!(store.query(&Region::entity("pg:")).await.unwrap().len(), 40);
        let mut seen = std::collections::BTreeSet::new();
        let mut last = None;
        while seen.len() < 40 {
            let entry = tokio::time::timeout(Duration::from_secs(30), cursor.next())
                .await
                .expect("the cursor stream delivers")
                .unwrap()
                .unwrap();
            assert!(last < Some(entry.global_sequence), "in position order");
            last = Some(entry.global_sequence);
            seen.insert(entry.event_id);
        }
        assert_eq!(seen, all, "every event once");
        let first = tokio::time::timeout(Duration::from_secs(30), notes.next())
            .await
            .expect("the subscription hears commits")
            .unwrap();
        assert!(all.contains(&first.event_id));
        drop(cursor);
        // The last handle dropped on a runtime thread: the pool stops and
        // the store is dropped cleanly.
        let other = store.clone();
        assert!(matches!(
            store.close().await,
            Err(StoreError::Configuration(_))
        ));
        drop(other);

        let store = AsyncStore::with_threads(second, 2).unwrap();
        let c = Coordinate::new("pg:close", "s").unwrap();
        store.append(&c, EventKind::custom(1, 1), 1).await.unwrap();
        store.close().await.unwrap();
    });
}
