//! Delivery on PostgreSQL (issue 12): guaranteed cursors that never pass an
//! event that commits late below them, wake-ups across store handles (each
//! with its own connections, as another process would have), the polling
//! fallback, reconnection, lossy subscriptions, the plans of cursor pages.
//! Across real processes: `tests/delivery_load.rs`, `tests/reactors.rs`.

use batpak::prelude::*;
use batpak_postgres::{testing, PgConfig, PgStore};
use postgres::{Client, NoTls};
use serde_json::json;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const KIND: EventKind = EventKind::custom(1, 1);
const OTHER: EventKind = EventKind::custom(2, 2);

fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).unwrap()
}

fn admin(cfg: &PgConfig) -> Client {
    Client::connect(&cfg.url, NoTls).expect("admin connection")
}

/// Wait for `cond` with a generous deadline (the machine may be loaded).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Drain `cursor` until it has delivered `n` events (or the deadline).
fn take(cursor: &mut batpak_postgres::PgCursor, n: usize) -> Vec<IndexEntry> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Some(e) = cursor.wait_next(Duration::from_millis(200)).unwrap() {
            got.push(e);
        }
    }
    got
}

/// A writer whose appends pause before COMMIT until told to go on.
fn pausing_store(cfg: &PgConfig) -> (Arc<PgStore>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let hook: batpak_postgres::BeforeCommitHook = Arc::new(move || {
        let _ = paused_tx.send(());
        let _ = go_rx.lock().unwrap().recv();
    });
    let store = PgStore::open(cfg.clone().with_before_commit(Some(hook))).unwrap();
    (Arc::new(store), paused_rx, go_tx)
}

/// The gap problem: an append that began first and commits last has the
/// lower position. A cursor that has delivered the later one's neighbours
/// must still deliver it, in position order, before anything above it.
#[test]
fn a_cursor_never_passes_an_event_that_commits_late_below_it() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let (slow, paused, go) = pausing_store(&cfg);
    let fast = PgStore::open(cfg.clone()).unwrap();
    let mut cursor = fast.cursor_guaranteed(&Region::all());
    let before = fast.append(&coord("fast", "s"), KIND, &"before").unwrap();
    assert_eq!(take(&mut cursor, 1)[0].event_id, before.event_id);

    let writer = {
        let slow = slow.clone();
        std::thread::spawn(move || slow.append(&coord("slow", "s"), KIND, &"late").unwrap())
    };
    paused.recv_timeout(Duration::from_secs(30)).unwrap();
    // Rows written, transaction open: everything committed now is above it.
    let quick: Vec<AppendReceipt> = (0..3)
        .map(|i| fast.append(&coord("fast", "s"), KIND, &i).unwrap())
        .collect();
    assert!(
        cursor
            .wait_next(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "the open transaction holds the cursor back"
    );
    assert!(cursor.stable_below() <= quick[0].sequence);
    go.send(()).unwrap();
    let late = writer.join().unwrap();
    assert!(
        late.sequence < quick[0].sequence,
        "begun first, positioned first"
    );
    let got = take(&mut cursor, 4);
    let ids: Vec<u128> = got.iter().map(|e| e.event_id).collect();
    let mut want = vec![late.event_id];
    want.extend(quick.iter().map(|r| r.event_id));
    assert_eq!(ids, want, "the late commit first, then the rest, once each");
    assert_eq!(cursor.position(), Some(quick[2].sequence));
    assert!(cursor.poll().unwrap().is_none());

    // Resumed from a saved position in a new handle: nothing again.
    let other = PgStore::open(cfg).unwrap();
    let mut resumed = other.cursor_from(&Region::all(), Some(late.sequence));
    let rest: Vec<u128> = take(&mut resumed, 3).iter().map(|e| e.event_id).collect();
    assert_eq!(rest, want[1..].to_vec());
    assert!(resumed.poll().unwrap().is_none());
}

/// Every region kind, read in small pages and across many filter windows,
/// delivers exactly what `query` lists, in order.
#[test]
fn cursors_follow_region_rules_in_small_pages_and_windows() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(
        cfg.with_cursor_page_size(3)
            // A window of 2 transactions: filtered regions cross many.
            .with_cursor_window_xids(2),
    )
    .unwrap();
    for i in 0..60u32 {
        let kind = match i % 3 {
            0 => OTHER,
            1 => KIND,
            _ => EventKind::custom(3, 1),
        };
        let scope = if i % 5 == 0 { "s2" } else { "s1" };
        if i % 7 == 0 {
            let items = (0..3)
                .map(|k| {
                    BatchAppendItem::new(
                        coord(&format!("order:{}", k % 2), scope),
                        kind,
                        &json!([i, k]),
                        AppendOptions::new(),
                        CausationRef::None,
                    )
                    .unwrap()
                })
                .collect();
            store.append_batch(items).unwrap();
        } else {
            let entity = if i % 2 == 0 { "order:1" } else { "user:7" };
            store.append(&coord(entity, scope), kind, &i).unwrap();
        }
    }
    for region in [
        Region::all(),
        Region::entity("order:"),
        Region::entity("order:1"),
        Region::entity("nothing"),
        Region::scope("s2"),
        Region::all().with_fact(KindFilter::Exact(OTHER)),
        Region::all().with_fact_category(3),
        Region::entity("order:").with_clock_range((3, 7)),
        Region::entity("order")
            .with_scope("s1")
            .with_fact(KindFilter::Exact(KIND)),
        Region::scope("s1").with_fact_category(2),
    ] {
        let want: Vec<u128> = store
            .query(&region)
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect();
        let mut c = store.cursor_guaranteed(&region);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got: Vec<u128> = Vec::new();
        while got.len() < want.len() && Instant::now() < deadline {
            got.extend(c.poll_batch(7).unwrap().iter().map(|e| e.event_id));
            if got.len() < want.len() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(got, want, "{region:?}");
        assert!(c.poll().unwrap().is_none(), "{region:?}");
        // Resumed halfway: the rest, nothing twice.
        if want.len() > 2 {
            let mid = store.query(&region).unwrap()[want.len() / 2 - 1].global_sequence;
            let mut r = store.cursor_from(&region, Some(mid));
            let rest: Vec<u128> = r
                .poll_batch(1000)
                .unwrap()
                .iter()
                .map(|e| e.event_id)
                .collect();
            assert_eq!(rest, want[want.len() / 2..].to_vec(), "{region:?} resumed");
        }
    }
    assert!(store
        .cursor_from(&Region::all(), Some(u64::MAX - 1))
        .poll()
        .unwrap()
        .is_none());
}

/// A commit by another handle (its own pool and connections, as another
/// process has) wakes a waiting cursor through NOTIFY: its fallback poll is
/// a minute away, so nothing else could wake it in time.
#[test]
fn wait_next_wakes_on_another_handles_commit_and_times_out() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let reader = PgStore::open(cfg.clone().with_poll_interval(Duration::from_secs(60))).unwrap();
    let writer = PgStore::open(cfg).unwrap();
    let mut cursor = reader.cursor_guaranteed(&Region::entity("late"));
    let t = Instant::now();
    assert!(cursor
        .wait_next(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "waited the timeout"
    );
    eventually("the reader to listen", || reader.is_listening());
    let appended = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let r = writer.append(&coord("late", "s"), KIND, &1).unwrap();
        (writer, r)
    });
    let t = Instant::now();
    let got = cursor
        .wait_next(Duration::from_secs(30))
        .unwrap()
        .expect("woken by the commit");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "woken by the notification, not a timeout: {:?}",
        t.elapsed()
    );
    let (writer, r) = appended.join().unwrap();
    assert_eq!(got.event_id, r.event_id);
    // Closing the store ends a waiting cursor at once.
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        EventStore::close(reader).unwrap();
    });
    let t = Instant::now();
    assert!(cursor.wait_next(Duration::MAX).unwrap().is_none());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "close wakes waiting cursors"
    );
    closer.join().unwrap();
    drop(writer);
}

/// Notifications are only wake-ups: a writer that sends none (or whose
/// notifications are lost) is found by the reader's bounded polling.
#[test]
fn without_notifications_waiting_cursors_find_commits_by_polling() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let silent = PgStore::open(cfg.clone().with_notify(false)).unwrap();
    let deaf = PgStore::open(cfg.clone().with_poll_interval(Duration::from_secs(60))).unwrap();
    let polling = PgStore::open(cfg.with_poll_interval(Duration::from_millis(100))).unwrap();
    let mut deaf_cursor = deaf.cursor_guaranteed(&Region::all());
    let mut polling_cursor = polling.cursor_guaranteed(&Region::all());
    assert!(deaf_cursor
        .wait_next(Duration::from_millis(1))
        .unwrap()
        .is_none());
    assert!(polling_cursor
        .wait_next(Duration::from_millis(1))
        .unwrap()
        .is_none());
    // A listener that (re)connects wakes everyone once: let that pass.
    eventually("both readers to listen", || {
        deaf.is_listening() && polling.is_listening()
    });
    // Both wait before the silent commit happens.
    let polling_wait = std::thread::spawn(move || {
        let t = Instant::now();
        let got = polling_cursor.wait_next(Duration::from_secs(30)).unwrap();
        (got, t.elapsed())
    });
    let append = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        silent.append(&coord("quiet", "s"), KIND, &1).unwrap()
    });
    // Nothing announces the commit and this reader's fallback is a minute
    // away: it is not woken, and finds the event only in the last look it
    // takes when its time is up.
    let t0 = Instant::now();
    let woke = deaf_cursor.wait_next(Duration::from_millis(1500)).unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let r = append.join().unwrap();
    assert_eq!(woke.map(|e| e.event_id), Some(r.event_id));
    let (got, waited) = polling_wait.join().unwrap();
    assert_eq!(
        got.map(|e| e.event_id),
        Some(r.event_id),
        "found by polling"
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");
}

/// The listening connection and every pooled connection of a reader are
/// killed by the server: the cursor keeps its place (nothing lost, nothing
/// twice), the listener reconnects, and wake-ups work again.
#[test]
fn a_dropped_connection_reconnects_without_losing_the_cursors_place() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let app = format!("reader_{}", cfg.schema);
    let sep = if cfg.url.contains('?') { '&' } else { '?' };
    let reader_cfg = cfg
        .clone()
        .with_url(format!("{}{sep}application_name={app}", cfg.url))
        .with_poll_interval(Duration::from_secs(60));
    let reader = PgStore::open(reader_cfg).unwrap();
    let writer = PgStore::open(cfg.clone()).unwrap();
    let mut cursor = reader.cursor_guaranteed(&Region::all());
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(writer.append(&coord("e", "s"), KIND, &i).unwrap().event_id);
    }
    let mut seen: Vec<u128> = take(&mut cursor, 5).iter().map(|e| e.event_id).collect();
    // Waiting once starts the reader's listener.
    assert!(cursor
        .wait_next(Duration::from_millis(1))
        .unwrap()
        .is_none());
    eventually("the reader to listen", || reader.is_listening());
    let mut admin = admin(&cfg);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name LIKE $1 || '%'",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "the listener and a pooled connection: {killed}"
    );
    eventually("the listener to notice", || {
        !reader.is_listening() || killed > 0
    });
    for i in 5..10 {
        written.push(writer.append(&coord("e", "s"), KIND, &i).unwrap().event_id);
    }
    // A read on a killed pooled connection is repeated on a fresh one.
    seen.extend(take(&mut cursor, 5).iter().map(|e| e.event_id));
    assert_eq!(seen, written, "nothing lost, nothing twice");
    eventually("the listener to reconnect", || reader.is_listening());
    let r = writer.append(&coord("e", "s"), KIND, &"after").unwrap();
    let t = Instant::now();
    let got = cursor.wait_next(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(got.event_id, r.event_id);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "woken again after reconnecting"
    );
}

#[test]
fn lossy_subscriptions_hear_every_handle_and_count_what_they_drop() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let reader = PgStore::open(cfg.clone().with_broadcast_capacity(2)).unwrap();
    let roomy = PgStore::open(cfg.clone()).unwrap();
    let writer = PgStore::open(cfg).unwrap();
    let before = writer.append(&coord("e", "s"), KIND, &"before").unwrap();
    let tiny = reader.subscribe_lossy(&Region::entity("e")).unwrap();
    let other_scope = reader.subscribe_lossy(&Region::scope("elsewhere")).unwrap();
    let keeper = roomy.subscribe_lossy(&Region::all()).unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(writer.append(&coord("e", "s"), KIND, &i).unwrap());
    }
    // The keeper reads as they come; it loses nothing.
    let mut kept = Vec::new();
    while kept.len() < 10 {
        let n = keeper
            .recv_timeout(Duration::from_secs(60))
            .expect("the keeper hears every commit");
        assert_ne!(n.event_id, before.event_id, "committed before subscribing");
        kept.push(n.sequence);
    }
    assert_eq!(kept, written.iter().map(|r| r.sequence).collect::<Vec<_>>());
    eventually("the slow subscriber's drops", || tiny.dropped() == 8);
    let got: Vec<u64> = std::iter::from_fn(|| tiny.receiver().try_recv().ok())
        .map(|n| n.sequence)
        .collect();
    assert_eq!(got, vec![written[0].sequence, written[1].sequence]);
    assert_eq!(other_scope.dropped(), 0, "drops are per subscriber");
    assert!(other_scope.receiver().try_recv().is_err());
    // A batch arrives whole and in order.
    let items = (0..5)
        .map(|i| {
            BatchAppendItem::new(
                coord("b", "elsewhere"),
                KIND,
                &i,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect();
    let receipts = writer.append_batch(items).unwrap();
    let batch: Vec<u128> = (0..5)
        .map(|_| {
            keeper
                .recv_timeout(Duration::from_secs(60))
                .unwrap()
                .event_id
        })
        .collect();
    assert_eq!(
        batch,
        receipts.iter().map(|r| r.event_id).collect::<Vec<_>>()
    );
    assert_eq!(reader.subscriber_count(), 2);
    drop(tiny);
    writer.append(&coord("e", "s"), KIND, &"after").unwrap();
    eventually("the dropped subscriber to be removed", || {
        reader.subscriber_count() == 1
    });
    // Closing the store ends the subscriptions.
    EventStore::close(roomy).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while keeper.recv_timeout(Duration::from_millis(100)).is_some() {
        assert!(Instant::now() < deadline);
    }
    assert!(keeper.recv().is_none(), "ended with the store");
}

/// Each region kind a single index serves is read as one index range in
/// position order (no sort, no scan of the table).
#[test]
fn cursor_pages_read_index_ranges() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg.clone()).unwrap();
    let items: Vec<BatchAppendItem> = (0..2000)
        .map(|i| {
            BatchAppendItem::new(
                coord(&format!("acct:{}", i % 400), &format!("tenant:{}", i % 40)),
                EventKind::custom([1, 2, 3, 5, 8, 12, 14, 15][i % 8], (i % 50) as u16),
                &i,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect();
    for chunk in items.chunks(250) {
        store.append_batch(chunk.to_vec()).unwrap();
    }
    admin(&cfg)
        .batch_execute(&format!("ANALYZE {}.events", cfg.schema))
        .unwrap();
    for (region, index) in [
        (Region::all(), "events_position_key"),
        (Region::scope("tenant:3"), "events_scope_idx"),
        (
            Region::all().with_fact(KindFilter::Exact(EventKind::custom(3, 3))),
            "events_kind_idx",
        ),
        (Region::all().with_fact_category(5), "events_category_idx"),
    ] {
        let plan = store
            .cursor_guaranteed(&region)
            .explain_next_page()
            .unwrap();
        assert!(plan.contains(index), "{region:?}:\n{plan}");
        assert!(!plan.contains("Sort"), "{region:?}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{region:?}:\n{plan}");
    }
    // A filtered region reads a bounded window of the position index.
    let plan = store
        .cursor_guaranteed(&Region::entity("acct:1"))
        .explain_next_page()
        .unwrap();
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("upto") || plan.contains("w.upto"), "{plan}");
}

/// A subscription hears what commits from now on, even while an older
/// transaction holds the stable bound back: events that had committed above
/// the bound before it subscribed are not news to it, and the held-back
/// transaction's event, which commits after it subscribed, is.
#[test]
fn a_subscription_skips_what_committed_before_it_while_the_bound_is_held_back() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let (slow, paused, go) = pausing_store(&cfg);
    let fast = PgStore::open(cfg).unwrap();
    let writer = {
        let slow = slow.clone();
        std::thread::spawn(move || slow.append(&coord("slow", "s"), KIND, &"held").unwrap())
    };
    paused.recv_timeout(Duration::from_secs(30)).unwrap();
    // Committed above the bound the open transaction holds back.
    let before = fast.append(&coord("fast", "s"), KIND, &"before").unwrap();
    let sub = fast.subscribe_lossy(&Region::all()).unwrap();
    go.send(()).unwrap();
    let held = writer.join().unwrap();
    let after = fast.append(&coord("fast", "s"), KIND, &"after").unwrap();
    let mut heard = Vec::new();
    eventually("the subscriber to hear the later commits", || {
        while let Ok(n) = sub.receiver().try_recv() {
            heard.push(n.event_id);
        }
        heard.len() >= 2
    });
    assert_eq!(
        heard,
        vec![held.event_id, after.event_id],
        "in position order, without {:x}, which committed before subscribing",
        before.event_id
    );
    assert_eq!(sub.dropped(), 0);
}
