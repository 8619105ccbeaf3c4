//! What only the PostgreSQL backend does: schemas and migrations, lost
//! connections, session settings, verify, the stable read bound, and the
//! query plans.

use batpak::prelude::*;
use batpak_postgres::{testing, PgConfig, PgProblemKind, PgStore, SCHEMA_VERSION};
use postgres::{Client, NoTls};
use serde_json::json;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const KIND: EventKind = EventKind::custom(1, 1);

fn coord(entity: &str) -> Coordinate {
    Coordinate::new(entity, "s").unwrap()
}

fn admin(cfg: &PgConfig) -> Client {
    Client::connect(&cfg.url, NoTls).expect("admin connection")
}

#[test]
fn open_creates_then_reuses_the_schema_and_two_schemas_share_a_database() {
    let Some(a_cfg) = testing::fresh_config() else {
        return;
    };
    let b_cfg = a_cfg.clone().with_schema(testing::unique_schema("b"));
    let a = PgStore::open(a_cfg.clone()).unwrap();
    assert_eq!(a.schema_version_at_open(), 0, "created");
    let b = PgStore::open(b_cfg).unwrap();
    a.append(&coord("x"), KIND, &1).unwrap();
    b.append(&coord("x"), KIND, &2).unwrap();
    b.append(&coord("x"), KIND, &3).unwrap();
    assert_eq!(a.stream("x").unwrap().len(), 1);
    assert_eq!(b.stream("x").unwrap().len(), 2);
    drop(a);
    let again = PgStore::open(a_cfg).unwrap();
    assert_eq!(again.schema_version_at_open(), SCHEMA_VERSION);
    assert_eq!(again.stats().unwrap().event_count, 1);
}

#[test]
fn a_schema_written_by_a_newer_batpak_is_refused() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    PgStore::open(cfg.clone()).unwrap();
    admin(&cfg)
        .execute(
            &format!(
                "INSERT INTO {}.schema_version (version, description) VALUES (99, 'future')",
                cfg.schema
            ),
            &[],
        )
        .unwrap();
    match PgStore::open(cfg) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (99, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn concurrent_opens_of_a_new_schema_migrate_once() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (cfg, barrier) = (cfg.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(cfg).map(|s| s.schema_version_at_open())
            })
        })
        .collect();
    let mut found: Vec<u32> = opens
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    found.sort_unstable();
    assert_eq!(
        found,
        vec![0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION],
        "exactly one open created the schema"
    );
    let rows = admin(&cfg)
        .query(
            &format!("SELECT version FROM {}.schema_version", cfg.schema),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), SCHEMA_VERSION as usize, "each migration once");
}

#[test]
fn invalid_settings_are_configuration_errors() {
    for cfg in [
        PgConfig::new("postgres://localhost/x").with_schema("Bad-Name"),
        PgConfig::new("postgres://localhost/x").with_pool_size(0),
        PgConfig::new("not a url ::: @@"),
    ] {
        assert!(
            matches!(PgStore::open(cfg), Err(StoreError::Configuration(_))),
            "refused before connecting"
        );
    }
}

#[test]
fn an_unreachable_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there now.
    let cfg = PgConfig::new(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .with_connect_timeout(Duration::from_millis(500));
    match PgStore::open(cfg) {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.is_retryable()),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_lost_connection_is_a_retryable_error_and_the_retry_writes_once() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let app = cfg.schema.clone();
    let sep = if cfg.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}application_name={app}", cfg.url);
    let mut db = admin(&cfg);
    let store = PgStore::open(cfg.with_url(url).with_pool_size(1)).unwrap();
    let c = coord("order");
    store.append(&c, KIND, &"before").unwrap();
    let terminated = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    assert_eq!(terminated.len(), 1, "the store's one connection");
    std::thread::sleep(Duration::from_millis(100));
    let opts = AppendOptions::new().with_idempotency(0xabc);
    let first = store.append_with_options(&c, KIND, &"during", opts);
    match &first {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The pool replaced the broken connection; retrying with the key is safe.
    let retry = store
        .append_with_options(&c, KIND, &"during", opts)
        .unwrap();
    assert_eq!(retry.event_id, 0xabc);
    let again = store
        .append_with_options(&c, KIND, &"during", opts)
        .unwrap();
    assert_eq!(again, retry);
    assert_eq!(store.stream("order").unwrap().len(), 2);
    // Reads repeat themselves on a fresh connection.
    db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&app],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(store.stream("order").unwrap().len(), 2);
}

/// The pool sets READ COMMITTED on every connection (the append protocol
/// needs a fresh snapshot per statement), so a server or URL default of
/// SERIALIZABLE changes nothing: concurrent appends to one entity all land.
#[test]
fn appends_work_whatever_the_default_isolation() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let sep = if cfg.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}options=-c%20default_transaction_isolation%3Dserializable",
        cfg.url
    );
    let cfg = cfg.with_url(url);
    let level: String = admin(&cfg)
        .query_one("SHOW default_transaction_isolation", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        level, "serializable",
        "the URL's default reaches the server"
    );
    let store = Arc::new(PgStore::open(cfg).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    store
                        .append(&coord("shared"), KIND, &json!([t, i]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.stream("shared").unwrap().len(), 80);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn verify_finds_every_kind_of_tampering() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg.clone()).unwrap();
    for e in ["a", "b", "c", "d"] {
        for i in 0..4 {
            store.append(&coord(e), KIND, &json!({ "i": i })).unwrap();
        }
    }
    let clean = store.verify().unwrap();
    assert!(clean.is_clean(), "{clean}");
    assert_eq!((clean.events_checked, clean.entities_checked), (16, 4));
    let s = &cfg.schema;
    let mut db = admin(&cfg);
    // a: payloads changed behind the store's back: one still decodes (to
    // the number 2), one does not.
    db.execute(
        &format!("UPDATE {s}.events SET payload = '\\x02' WHERE entity = 'a' AND clock = 2"),
        &[],
    )
    .unwrap();
    db.execute(
        &format!("UPDATE {s}.events SET payload = '\\xc1' WHERE entity = 'a' AND clock = 3"),
        &[],
    )
    .unwrap();
    // b: an event removed from the middle.
    db.execute(
        &format!("DELETE FROM {s}.events WHERE entity = 'b' AND clock = 1"),
        &[],
    )
    .unwrap();
    // c: a flag flipped (the payload still matches its hash).
    db.execute(
        &format!("UPDATE {s}.events SET flags = 1 WHERE entity = 'c' AND clock = 0"),
        &[],
    )
    .unwrap();
    // d: its streams row no longer at its newest event.
    db.execute(
        &format!("UPDATE {s}.streams SET clock = 1 WHERE entity = 'd'"),
        &[],
    )
    .unwrap();
    let report = store.verify().unwrap();
    let found = |entity: &str, want: fn(&PgProblemKind) -> bool| {
        report
            .problems()
            .iter()
            .any(|p| p.entity == entity && want(&p.kind))
    };
    assert!(
        found("a", |k| matches!(k, PgProblemKind::ContentHashMismatch)),
        "{report}"
    );
    assert!(
        found("a", |k| matches!(k, PgProblemKind::PayloadUnreadable(_))),
        "{report}"
    );
    assert!(
        found("b", |k| matches!(
            k,
            PgProblemKind::ClockGap { expected: 1 }
        )),
        "{report}"
    );
    assert!(
        found("b", |k| matches!(k, PgProblemKind::BrokenLink)),
        "{report}"
    );
    assert!(
        found("c", |k| matches!(k, PgProblemKind::EventHashMismatch)),
        "{report}"
    );
    assert!(
        found("d", |k| matches!(k, PgProblemKind::StreamRowMismatch(_))),
        "{report}"
    );
    assert!(!report.is_clean());
    // The damaged payload is an error to readers, not a panic.
    let bad = store.stream("a").unwrap()[3].event_id;
    assert!(matches!(store.get(bad), Err(StoreError::Backend(_))));
}

/// The gap problem: a transaction that began first but commits last gets
/// the lower position. Plain reads see what committed; the stable read holds
/// back everything from the oldest open transaction on, then delivers both
/// in position order, so a reader resuming after what it saw misses nothing.
#[test]
fn stable_reads_never_pass_an_event_that_can_still_commit_below() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let hook: batpak_postgres::BeforeCommitHook = Arc::new(move || {
        let _ = paused_tx.send(());
        let _ = go_rx.lock().unwrap().recv();
    });
    let slow = Arc::new(PgStore::open(cfg.clone().with_before_commit(Some(hook))).unwrap());
    let fast = PgStore::open(cfg).unwrap();
    let seen = fast.read_stable(&Region::all(), None, 100).unwrap();
    assert!(seen.entries.is_empty());

    let writer = {
        let slow = slow.clone();
        std::thread::spawn(move || slow.append(&coord("slow"), KIND, &"first begun").unwrap())
    };
    paused_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // The slow append holds its transaction open, rows written, uncommitted.
    let quick = fast
        .append(&coord("fast"), KIND, &"committed first")
        .unwrap();
    assert_eq!(
        fast.query(&Region::all()).unwrap().len(),
        1,
        "plain reads see commits"
    );
    let held = fast.read_stable(&Region::all(), None, 100).unwrap();
    assert!(held.entries.is_empty(), "{held:?}");
    assert!(held.stable_below <= quick.sequence);

    go_tx.send(()).unwrap();
    let slow_receipt = writer.join().unwrap();
    assert!(
        slow_receipt.sequence < quick.sequence,
        "begun first, committed last, positioned first"
    );
    // The bound is cluster-wide: a transaction another test of this binary
    // has open (they share the cluster) may hold it back a little longer.
    // Whenever it passes, both events come, in position order.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let after = fast.read_stable(&Region::all(), None, 100).unwrap();
        if after.stable_below > quick.sequence {
            break after;
        }
        assert!(
            after
                .entries
                .iter()
                .all(|e| e.event_id == slow_receipt.event_id),
            "nothing above the bound: {after:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the stable bound never passed the committed events"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let got: Vec<u128> = after.entries.iter().map(|e| e.event_id).collect();
    assert_eq!(got, vec![slow_receipt.event_id, quick.event_id]);
    assert!(after.stable_below > quick.sequence);
    // Resuming after the last delivered position finds nothing new, and the
    // limit pages through in order.
    let last = after.entries.last().unwrap().global_sequence;
    assert!(fast
        .read_stable(&Region::all(), Some(last), 100)
        .unwrap()
        .entries
        .is_empty());
    let first_page = fast.read_stable(&Region::all(), None, 1).unwrap();
    assert_eq!(first_page.entries[0].event_id, slow_receipt.event_id);
    let scoped = fast
        .read_stable(&Region::entity("fast"), None, 100)
        .unwrap();
    assert_eq!(scoped.entries.len(), 1);
}

/// Reads use indexes (the plans the benchmark reports too).
#[test]
fn reads_use_indexes() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg.clone()).unwrap();
    let root = store.append(&coord("root"), KIND, &0).unwrap();
    for b in 0..20 {
        let items = (0..200)
            .map(|i| {
                BatchAppendItem::new(
                    Coordinate::new(format!("e{}", i % 50), format!("s{}", b % 4)).unwrap(),
                    EventKind::custom(1 + (i % 3) as u8, 1),
                    &json!({ "i": i }),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        store.append_batch(items).unwrap();
    }
    store
        .append_reaction(&coord("child"), KIND, &1, root.event_id, root.event_id)
        .unwrap();
    let mut db = admin(&cfg);
    let s = &cfg.schema;
    db.batch_execute(&format!("ANALYZE {s}.events")).unwrap();
    let id = format!("'{}'", uuid::Uuid::from_u128(root.event_id));
    for (what, sql) in [
        ("get", format!("SELECT * FROM {s}.events WHERE event_id = {id}")),
        ("stream", format!("SELECT * FROM {s}.events WHERE entity = 'e7' ORDER BY clock")),
        (
            "by_correlation",
            format!(
                "SELECT * FROM {s}.events WHERE (correlation_id = {id} AND correlation_id <> event_id)
                 OR (event_id = {id} AND correlation_id = {id}) ORDER BY position"
            ),
        ),
        (
            "children",
            format!("SELECT * FROM {s}.events WHERE causation_id = {id} ORDER BY position"),
        ),
        (
            "scope",
            format!("SELECT * FROM {s}.events WHERE scope = 'nope' ORDER BY position"),
        ),
    ] {
        let plan: Vec<String> = db
            .query(&format!("EXPLAIN {sql}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{what} does not use an index:\n{plan}");
    }
    assert_eq!(store.by_correlation(root.event_id).unwrap().len(), 2);
}

/// An append that keeps losing races to busy writers stops hoping: after two
/// stale answers it takes the entities' locks first, positions its events by
/// an id taken after the locks, and then wins: three attempts are enough.
/// Without that, a batch over entities that others append to all the time
/// can lose every attempt.
#[test]
fn a_batch_over_busy_entities_gets_through() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = Arc::new(PgStore::open(cfg.clone().with_max_attempts(3)).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..6)
        .map(|i| {
            // Other handles, like other processes: their appends move the
            // entities behind this handle's back.
            let other = PgStore::open(cfg.clone()).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    other
                        .append(&coord(&format!("hot{}", (i + n) % 6)), KIND, &n)
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for round in 0..15 {
        let items = (0..6)
            .map(|e| {
                BatchAppendItem::new(
                    coord(&format!("hot{e}")),
                    KIND,
                    &json!({ "round": round }),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        store.append_batch(items).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let others: u64 = busy.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(others > 0);
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.stats().unwrap().event_count as u64, others + 90);
}
