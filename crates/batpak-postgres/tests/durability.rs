//! Per-call durability on PostgreSQL: a `Relaxed` call commits with
//! `synchronous_commit = off`, so its COMMIT does not wait for the WAL to be
//! made safe; a durable call does. Made observable with a synchronous
//! standby that never comes: every commit that waits for its WAL to be safe
//! then waits until the setting is removed, and only those.
//!
//! This changes a server setting, so it runs only against the throwaway
//! cluster of its own test process (one test in this file), never against
//! a server named by `BATPAK_TEST_PG_URL`.

use batpak::prelude::*;
use batpak_postgres::{testing, PgStore};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STANDBY: &str = "batpak_absent_standby";

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect as the cluster's owner")
}

fn set_standby(url: &str, value: Option<&str>) {
    let mut c = admin(url);
    match value {
        Some(v) => c
            .batch_execute(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = '{v}'"
            ))
            .unwrap(),
        None => c
            .batch_execute("ALTER SYSTEM RESET synchronous_standby_names")
            .unwrap(),
    }
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The reload reaches sessions asynchronously: wait until a new one sees it.
    let want = value.unwrap_or("");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: String = admin(url)
            .query_one("SHOW synchronous_standby_names", &[])
            .unwrap()
            .get(0);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the setting never applied: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the standby requirement however the test ends, so that commits
/// blocked by it finish.
struct Reset<'a>(&'a str);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        set_standby(self.0, None);
    }
}

fn append_on_a_thread(
    store: &Arc<PgStore>,
    entity: &str,
    durability: Durability,
) -> mpsc::Receiver<Result<AppendReceipt, StoreError>> {
    let (tx, rx) = mpsc::channel();
    let store = store.clone();
    let coord = Coordinate::new(entity, "s").unwrap();
    std::thread::spawn(move || {
        let opts = AppendOptions::new().with_durability(durability);
        let _ = tx.send(store.append_with_options(&coord, EventKind::custom(1, 1), &1, opts));
    });
    rx
}

#[test]
fn a_relaxed_call_commits_without_waiting_for_its_wal_to_be_safe() {
    if std::env::var(testing::URL_VAR).is_ok_and(|v| !v.trim().is_empty()) {
        eprintln!("a shared server: skipped (this test changes a server setting)");
        return;
    }
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let url = testing::cluster_url().expect("the cluster runs").to_owned();
    let store = Arc::new(PgStore::open(config.with_pool_size(4)).unwrap());
    store
        .append(
            &Coordinate::new("warm", "s").unwrap(),
            EventKind::custom(1, 1),
            &0,
        )
        .unwrap();

    set_standby(&url, Some(STANDBY));
    let reset = Reset(&url);
    let relaxed = append_on_a_thread(&store, "relaxed", Durability::Relaxed)
        .recv_timeout(Duration::from_secs(20))
        .expect("a relaxed commit does not wait for the standby")
        .unwrap();
    assert!(store.get(relaxed.event_id).is_ok(), "visible at commit");
    let durable = append_on_a_thread(&store, "durable", Durability::Durable);
    assert!(
        durable.recv_timeout(Duration::from_secs(1)).is_err(),
        "a durable commit waits for its WAL to be safe (the setting is in force)"
    );
    drop(reset);
    let durable = durable
        .recv_timeout(Duration::from_secs(30))
        .expect("released once the requirement is gone")
        .unwrap();
    assert!(store.get(durable.event_id).is_ok());
}
