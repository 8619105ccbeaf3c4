//! The async wrapper over the file store: results, concurrency, streams,
//! and that it never blocks the runtime's threads.

use batpak::prelude::*;
use batpak::store::Notification;
use batpak_tokio::{AsyncStore, CursorStream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::runtime::Runtime;

const KIND: EventKind = EventKind::custom(1, 1);

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .unwrap()
}

fn open(dir: &std::path::Path) -> AsyncStore<Store> {
    AsyncStore::new(Store::open(StoreConfig::new(dir)).unwrap()).unwrap()
}

fn coord(entity: &str) -> Coordinate {
    Coordinate::new(entity, "tenant:t").unwrap()
}

async fn next_entry(stream: &mut CursorStream) -> IndexEntry {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream delivers within 10 s")
        .expect("the stream has not ended")
        .expect("no read error")
}

#[test]
fn concurrent_tasks_append_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = open(dir.path());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let c = coord(&format!("task:{t}"));
                    let mut receipts = Vec::new();
                    for i in 0..25u32 {
                        receipts.push(store.append(&c, KIND, i).await.unwrap());
                    }
                    receipts
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap().into_iter().map(|r| r.event_id));
        }
        assert_eq!(ids.len(), 400);
        for (t, chunk) in ids.chunks(25).enumerate() {
            let stream = store.stream(&format!("task:{t}")).await.unwrap();
            let got: Vec<u128> = stream.iter().map(|e| e.event_id).collect();
            assert_eq!(got, chunk, "task {t}'s events, in its order");
        }
        let diag = store.run(|s| s.diagnostics()).await.unwrap();
        assert_eq!(diag.event_count, 400);
        assert!(
            diag.syncs < 400,
            "appends from concurrent tasks share fsyncs: {} syncs for 400 appends",
            diag.syncs
        );
        store.close().await.unwrap();
    });
    let reopened = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(
        reopened.stats().event_count,
        400,
        "close released the store"
    );
}

#[test]
fn a_call_waiting_on_the_store_does_not_hold_a_runtime_thread() {
    // One runtime thread. The call below blocks its pool thread until a
    // second task, on that same runtime thread, sends it a message: if the
    // wrapper blocked the runtime thread, the second task could never run.
    let dir = tempfile::tempdir().unwrap();
    runtime(1).block_on(async {
        let store = open(dir.path());
        let (tx, rx) = flume::bounded::<()>(1);
        let waiting = store.run(move |_| rx.recv_timeout(Duration::from_secs(10)).is_ok());
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send_async(()).await.unwrap();
        });
        assert!(
            waiting.await.unwrap(),
            "the other task ran while the call waited"
        );
        releaser.await.unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn reads_batches_and_reactions_return_what_the_store_returns() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = open(dir.path());
        let c = coord("order:1");
        let root = store.append(&c, KIND, "placed").await.unwrap();
        let reaction = store
            .append_reaction(&c, KIND, "paid", root.event_id, root.event_id)
            .await
            .unwrap();
        let cas = store
            .append_with_options(&c, KIND, "late", AppendOptions::new().with_cas(0))
            .await;
        assert!(
            matches!(
                cas,
                Err(StoreError::SequenceMismatch {
                    expected: 0,
                    actual: 1,
                    ..
                })
            ),
            "{cas:?}"
        );
        let items = vec![
            BatchAppendItem::new(
                coord("order:2"),
                KIND,
                &1,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap(),
            BatchAppendItem::new(
                coord("order:2"),
                KIND,
                &2,
                AppendOptions::new(),
                CausationRef::PriorItem(0),
            )
            .unwrap(),
        ];
        let batch = store.append_batch(items).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(
            store.get(reaction.event_id).await.unwrap().event.payload,
            "paid"
        );
        assert_eq!(store.by_correlation(root.event_id).await.unwrap().len(), 2);
        assert_eq!(store.children(root.event_id).await.unwrap().len(), 1);
        assert_eq!(store.children(batch[0].event_id).await.unwrap().len(), 1);
        assert_eq!(
            store.query(&Region::entity("order:")).await.unwrap().len(),
            4
        );
        assert_eq!(
            store
                .walk_ancestors(reaction.event_id, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.stats().await.unwrap().event_count, 4);
        assert!(matches!(store.get(7).await, Err(StoreError::NotFound(7))));
        store.sync().await.unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn a_panic_in_run_reaches_the_caller_and_the_pool_survives() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = AsyncStore::with_threads(Store::open(StoreConfig::new(dir.path())).unwrap(), 1)
            .unwrap();
        let s = store.clone();
        let joined = tokio::spawn(async move { s.run(|_| -> u32 { panic!("boom") }).await }).await;
        let panic = joined.expect_err("the task panicked").into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom"));
        // The single pool thread still serves calls.
        store.append(&coord("after"), KIND, 1).await.unwrap();
        store.close().await.unwrap();
    });
}

/// A payload whose serialization panics.
struct Exploding;

impl serde::Serialize for Exploding {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("exploding payload")
    }
}

#[test]
fn a_panic_in_a_laned_append_reaches_its_caller_and_the_lane_survives() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        // Durable receipts by default: single appends take the append lane.
        let store = open(dir.path());
        let s = store.clone();
        let joined =
            tokio::spawn(async move { s.append(&coord("boom"), KIND, Exploding).await }).await;
        let panic = joined.expect_err("the task panicked").into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"exploding payload"));
        // The lane still answers, and nothing of the panicked append was written.
        store.append(&coord("after"), KIND, 1).await.unwrap();
        assert!(store.stream("boom").await.unwrap().is_empty());
        store.close().await.unwrap();
    });
}

#[test]
fn close_refuses_while_other_handles_live() {
    let dir = tempfile::tempdir().unwrap();
    runtime(1).block_on(async {
        let store = open(dir.path());
        let other = store.clone();
        assert!(matches!(
            store.close().await,
            Err(StoreError::Configuration(_))
        ));
        // The remaining handle still works and closes.
        other.append(&coord("x"), KIND, 1).await.unwrap();
        other.close().await.unwrap();
    });
}

#[test]
fn a_cursor_stream_delivers_every_event_in_order_including_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = open(dir.path());
        let mut expected = Vec::new();
        for i in 0..5u32 {
            let entity = if i % 2 == 0 { "in:a" } else { "other:b" };
            let r = store.append(&coord(entity), KIND, i).await.unwrap();
            if i % 2 == 0 {
                expected.push(r.event_id);
            }
        }
        let mut stream = store.cursor_stream(&Region::entity("in:"), None).unwrap();
        assert_eq!(stream.position(), None);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(next_entry(&mut stream).await.event_id);
        }
        // Appended after the stream started, while it waits.
        for i in 0..3u32 {
            expected.push(
                store
                    .append(&coord("in:c"), KIND, i)
                    .await
                    .unwrap()
                    .event_id,
            );
        }
        for _ in 0..3 {
            got.push(next_entry(&mut stream).await.event_id);
        }
        assert_eq!(got, expected);
        let position = stream.position();
        assert!(position.is_some());
        drop(stream);
        // Resume after the saved position: only what came later.
        let late = store.append(&coord("in:d"), KIND, 9).await.unwrap();
        let mut resumed = store
            .cursor_stream(&Region::entity("in:"), position)
            .unwrap();
        assert_eq!(next_entry(&mut resumed).await.event_id, late.event_id);
        store.close().await.unwrap();
        // The wrapper closed while `resumed` was alive: its reader stopped,
        // so the stream ends.
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while resumed.next().await.is_some() {}
        })
        .await;
        assert!(end.is_ok(), "the stream ended after close");
    });
}

#[test]
fn a_subscription_stream_receives_new_events() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = open(dir.path());
        store.append(&coord("sub:old"), KIND, 0).await.unwrap();
        let mut notes = store.subscribe(&Region::entity("sub:")).await.unwrap();
        let r = store.append(&coord("sub:new"), KIND, 1).await.unwrap();
        store.append(&coord("nope"), KIND, 2).await.unwrap();
        let n: Notification = tokio::time::timeout(Duration::from_secs(10), notes.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n.event_id, r.event_id,
            "only events from now on, of the region"
        );
        assert_eq!(notes.dropped(), 0);
        store.close().await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), notes.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "the subscription ends with the store"
        );
    });
}

#[test]
fn handles_and_streams_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + Unpin>() {}
    send_sync::<AsyncStore<Store>>();
    send::<CursorStream>();
    send::<batpak_tokio::SubscriptionStream>();
}

/// Appends to a durable file store go through the append lane: each is
/// answered only once a sync covered it, so every receipt a task got
/// before a power cut survives it, and each event is visible to a read as
/// soon as its receipt arrives.
#[test]
fn every_answered_append_is_visible_and_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let answered = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<u128>::new()));
    runtime(2).block_on(async {
        let store = open(dir.path());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (store, answered) = (store.clone(), answered.clone());
                tokio::spawn(async move {
                    let c = coord(&format!("cut:{t}"));
                    for i in 0..10_000u32 {
                        let Ok(r) = store.append(&c, KIND, i).await else {
                            return;
                        };
                        let seen = store.get(r.event_id).await;
                        assert!(seen.is_ok(), "a receipt's event is readable: {seen:?}");
                        answered.lock().push(r.event_id);
                    }
                })
            })
            .collect();
        // Cut the power once a few hundred appends were answered (how many
        // only changes how many ids the check below covers).
        // A task that ended early failed: stop waiting and let its panic
        // surface below.
        while answered.lock().len() < 300 && !tasks.iter().any(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before_cut: Vec<u128> = answered.lock().clone();
        store
            .run(|s| s.simulate_power_loss().map(drop))
            .await
            .unwrap()
            .unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        drop(store);
        let reopened = Store::open(StoreConfig::new(dir.path())).unwrap();
        for id in &before_cut {
            assert!(
                reopened.get(*id).is_ok(),
                "event {id:032x} was answered before the cut and must survive it"
            );
        }
    });
}

/// Appends answered together by one sync still keep their own rules: of
/// concurrent CAS appends on one entity exactly one wins each round, the
/// others get their own conflict; concurrent retries of one idempotency key
/// write one event and all get its receipt.
#[test]
fn laned_appends_keep_their_own_cas_idempotency_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    runtime(2).block_on(async {
        let store = open(dir.path());
        let c = coord("contested");
        for round in 0..20u32 {
            let expect = round.checked_sub(1);
            // Joined in one task: one poll queues all eight, so they reach
            // the lane together (at most the first runs before the rest
            // are queued) and share its round and its sync.
            let contenders = (0..8).map(|t| {
                let (store, c) = (store.clone(), c.clone());
                async move {
                    let opts = match expect {
                        Some(seq) => AppendOptions::new().with_cas(seq),
                        None => AppendOptions::new().with_cas_empty(),
                    };
                    store.append_with_options(&c, KIND, t, opts).await
                }
            });
            let mut wins = 0;
            for outcome in futures_util::future::join_all(contenders).await {
                match outcome {
                    Ok(_) => wins += 1,
                    Err(e) => assert!(
                        matches!(
                            e,
                            StoreError::SequenceMismatch { .. } | StoreError::StreamNotEmpty { .. }
                        ),
                        "round {round}: {e:?}"
                    ),
                }
            }
            assert_eq!(wins, 1, "round {round}: one CAS winner");
        }
        assert_eq!(store.stream("contested").await.unwrap().len(), 20);

        let key = 0xfeed_u128;
        let retries = (0..8).map(|_| {
            let store = store.clone();
            async move {
                let opts = AppendOptions::new().with_idempotency(key);
                store
                    .append_with_options(&coord("once"), KIND, "x", opts)
                    .await
                    .unwrap()
            }
        });
        let receipts = futures_util::future::join_all(retries).await;
        assert!(receipts.windows(2).all(|w| w[0] == w[1]), "{receipts:?}");
        assert_eq!(store.stream("once").await.unwrap().len(), 1);
        store.close().await.unwrap();
    });
}
