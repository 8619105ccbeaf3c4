//! What a store holds of the process, and that it lets go: file
//! descriptors (a constant few, however many segments), threads (none left
//! after `close`, `Drop` or a failed open), and bounded shutdown.

mod common;

use batpak::prelude::*;
use batpak::store::{CountdownInjector, FaultAction, FaultInjector, InjectionPoint, OpenPath};
use common::coord;
use parking_lot::{Condvar, Mutex};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND: EventKind = EventKind::custom(1, 1);

/// Run the `#[ignore]`d test `name` of this binary as a child process, with
/// `env` set and, if `nofile` is given, the descriptor limit lowered to it
/// first (`ulimit -n`, through `sh`). Fails if the child fails.
fn run_child(name: &str, env: &[(&str, &Path)], nofile: Option<u32>) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child {name} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Descriptors this process has open now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The soft limit on open descriptors, from `/proc/self/limits`.
fn nofile_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ---- file descriptors ---------------------------------------------------

const FD_CHILD_DIR: &str = "BATPAK_FD_CHILD_DIR";
const MANY_SEGMENTS: usize = 3000;
/// Smaller than one event's frame: every event gets a segment of its own.
const TINY_SEGMENT: u64 = 128;

fn tiny_segments(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
        .with_segment_max_bytes(TINY_SEGMENT)
        .with_sync_every_n_events(1000)
}

/// A store of 3,000 one-event segments opens, reads, appends, verifies,
/// compacts and closes, writable and read-only, in a process allowed 256
/// descriptors: sealed segments are read through their maps, with no
/// descriptor kept open.
#[test]
fn three_thousand_segments_open_and_read_under_ulimit_256() {
    // Descriptors, not disks, are under test: on a memory-backed file
    // system where there is one, the 12,000 syncs of building the store
    // (rotations and footers) cost nothing.
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    // The child puts a snapshot beside the store, inside `root`.
    let dir = root.path().join("store");
    let store = Store::open(tiny_segments(&dir)).unwrap();
    let c = coord("fd:entity", "fd:scope");
    for i in 0..MANY_SEGMENTS {
        store.append(&c, KIND, &json!({ "i": i })).unwrap();
    }
    assert!(store.diagnostics().segment_count >= MANY_SEGMENTS);
    drop(store);
    run_child("fd_child", &[(FD_CHILD_DIR, &dir)], Some(256));
}

#[test]
#[ignore = "helper: run as a child process with a low descriptor limit"]
fn fd_child() {
    let Some(dir) = std::env::var_os(FD_CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    assert_eq!(nofile_limit(), 256, "the parent lowered the limit");
    let before = open_fds();
    let c = coord("fd:entity", "fd:scope");

    let store = Store::open(tiny_segments(&dir)).expect("writable open under ulimit -n 256");
    assert!(store.diagnostics().segment_count >= MANY_SEGMENTS);
    let held = open_fds() - before;
    assert!(
        held <= 8,
        "an open store of 3,000 segments holds {held} descriptors"
    );
    let all = store.query(&Region::all());
    assert_eq!(all.len(), MANY_SEGMENTS);
    for (i, e) in all.iter().enumerate() {
        let ev = store.get(e.event_id).unwrap();
        assert_eq!(ev.event.payload["i"], i);
    }
    for i in 0..50 {
        store
            .append(&c, KIND, &json!({ "i": MANY_SEGMENTS + i }))
            .unwrap();
    }
    store.sync().unwrap();
    assert!(store.verify().unwrap().is_clean());
    let held = open_fds() - before;
    assert!(
        held <= 8,
        "after appends the store holds {held} descriptors"
    );
    store.close().unwrap();
    assert_eq!(open_fds(), before, "close releases every descriptor");

    let ro =
        Store::open_read_only(tiny_segments(&dir)).expect("read-only open under ulimit -n 256");
    let held = open_fds() - before;
    assert!(held <= 8, "a read-only store holds {held} descriptors");
    let all = ro.query(&Region::all());
    assert_eq!(all.len(), MANY_SEGMENTS + 50);
    for (i, e) in all.iter().enumerate().step_by(7) {
        assert_eq!(ro.get(e.event_id).unwrap().event.payload["i"], i);
    }
    assert_eq!(ro.refresh().unwrap(), 0);
    drop(ro);
    assert_eq!(open_fds(), before);

    // Snapshot and compaction open the files they need, one at a time.
    let store = Store::open(tiny_segments(&dir)).unwrap();
    let copy = dir.with_file_name("snapshot");
    store.snapshot(&copy).unwrap();
    let merged = store
        .compact(&CompactionConfig {
            strategy: CompactionStrategy::Merge,
            min_segments: 1,
        })
        .unwrap();
    assert!(merged.segments_removed > 0, "{merged:?}");
    assert_eq!(store.query(&Region::all()).len(), MANY_SEGMENTS + 50);
    store.close().unwrap();
    assert_eq!(open_fds(), before);
    let snapshot = Store::open_read_only(tiny_segments(&copy)).unwrap();
    assert_eq!(snapshot.query(&Region::all()).len(), MANY_SEGMENTS + 50);
}

// ---- threads --------------------------------------------------------------

const THREADS_CHILD_DIR: &str = "BATPAK_THREADS_CHILD_DIR";

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// Wait until the process has exactly the threads `before` listed (by
/// count: a thread that has just started may not carry its name yet). A
/// joined thread can still be listed for a moment while the kernel
/// finishes its exit, hence the wait; one that never ends fails the test.
fn assert_threads_back_to(before: &[String], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = thread_names();
        if now.len() == before.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: threads {now:?}, before the store {before:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// No thread outlives a failed open, `close` or `Drop`. In a process of its
/// own, so that other tests' stores do not count.
#[test]
fn no_store_thread_outlives_a_failed_open_close_or_drop() {
    let dir = tempfile::tempdir().unwrap();
    run_child("threads_child", &[(THREADS_CHILD_DIR, dir.path())], None);
}

#[test]
#[ignore = "helper: run as a child process, alone"]
fn threads_child() {
    let Some(dir) = std::env::var_os(THREADS_CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let before = thread_names();
    let relaxed = |dir: &Path| StoreConfig::new(dir).with_sync_every_n_events(10);
    // A store starts three threads (a durable one's flusher serves calls
    // that ask for `Durability::Relaxed`); fail the
    // open right after each of them started.
    for (cfg, threads) in [(relaxed(&dir), 3), (StoreConfig::new(&dir), 3)] {
        for nth in 1..=threads {
            let mut cfg = cfg.clone();
            cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
                InjectionPoint::StoreThreadStarted,
                nth,
                FaultAction::Fail,
            )));
            let opened = Store::open(cfg);
            assert!(
                matches!(opened, Err(StoreError::FaultInjected(_))),
                "open must fail after thread {nth}: {:?}",
                opened.err()
            );
            assert_threads_back_to(
                &before,
                &format!("open failed after thread {nth} of {threads}"),
            );
        }
    }
    let store = Store::open(relaxed(&dir)).expect("the lock was released");
    let mut expected = before.clone();
    expected.extend(["batpak-flusher", "batpak-grower", "batpak-sealer"].map(String::from));
    expected.sort();
    eventually("the store's threads run, named", || {
        thread_names() == expected
    });
    store.append(&coord("t", "s"), KIND, &1).unwrap();
    store.close().unwrap();
    assert_threads_back_to(&before, "after close");
    let store = Store::open(relaxed(&dir)).unwrap();
    store.append(&coord("t", "s"), KIND, &2).unwrap();
    drop(store);
    assert_threads_back_to(&before, "after drop");
    assert_eq!(
        Store::open(relaxed(&dir)).unwrap().stream("t").len(),
        2,
        "both appends survived"
    );
}

// ---- a fault injector that holds one point --------------------------------

/// Holds the first pass of `point` until [`HoldAt::release`]; counts passes.
struct HoldAt {
    point: InjectionPoint,
    passes: AtomicUsize,
    /// (holding now, released)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl HoldAt {
    fn new(point: InjectionPoint) -> Arc<Self> {
        Arc::new(Self {
            point,
            passes: AtomicUsize::new(0),
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        })
    }

    /// Wait until the first pass is being held.
    fn wait_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = self.state.lock();
        while !s.0 {
            assert!(
                !self.cv.wait_until(&mut s, deadline).timed_out(),
                "{:?} never reached",
                self.point
            );
        }
    }

    fn release(&self) {
        self.state.lock().1 = true;
        self.cv.notify_all();
    }

    fn passes(&self) -> usize {
        self.passes.load(Ordering::SeqCst)
    }
}

/// Releases the hold when dropped, so a failing test ends instead of
/// waiting forever for a thread that is held. Declare it after the store.
struct ReleaseOnDrop(Arc<HoldAt>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl FaultInjector for HoldAt {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point == self.point && self.passes.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut s = self.state.lock();
            s.0 = true;
            self.cv.notify_all();
            while !s.1 {
                self.cv.wait(&mut s);
            }
        }
        FaultAction::Continue
    }
}

/// Wait (up to 30 s) for `done`, polling; fail with `what` otherwise.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- bounded close ---------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Ending {
    Close,
    Drop,
}

/// `close` and `Drop` do not wait for every queued footer: the sealer
/// finishes the footer in hand and at most `shutdown_drain_limit` more, and
/// the next open finds every event and seals the rest.
///
/// The first footer is held (its thread holding the maintenance lock) while
/// 30 one-event segments queue up behind it, and is let go only once the
/// store is seen closed: a cursor's wait ends when the store closes, which
/// comes after the sealer was told to stop. So exactly `1 + limit` footers
/// are written; the code before this change wrote all of them.
#[test]
fn close_and_drop_leave_queued_footers_to_the_next_open() {
    const SEGMENTS: usize = 30;
    for (limit, ending) in [(0, Ending::Close), (2, Ending::Close), (2, Ending::Drop)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || {
            StoreConfig::new(dir.path())
                .with_segment_max_bytes(TINY_SEGMENT)
                .with_shutdown_drain_limit(limit)
        };
        let hold = HoldAt::new(InjectionPoint::FooterWritten);
        let mut held_cfg = cfg();
        held_cfg.fault_injector = Some(hold.clone());
        let store = Store::open(held_cfg).unwrap();
        let _release = ReleaseOnDrop(hold.clone());
        let c = coord("close:entity", "s");
        for i in 0..SEGMENTS {
            store.append(&c, KIND, &json!({ "i": i })).unwrap();
        }
        hold.wait_held();
        let d = store.diagnostics();
        // The segment created at open was too small for any event.
        let sealed = d.segment_count - 1;
        assert!(sealed >= SEGMENTS);
        assert_eq!(d.footers_pending, sealed, "all wait behind the held footer");
        let mut cursor = store.cursor_guaranteed(&Region::entity("nobody"));
        let releaser = {
            let hold = hold.clone();
            std::thread::spawn(move || {
                let closed = cursor.wait_next(Duration::from_secs(60)).is_none();
                hold.release();
                closed
            })
        };
        match ending {
            Ending::Close => {
                store.close().unwrap();
            }
            Ending::Drop => drop(store),
        }
        assert!(releaser.join().unwrap(), "the cursor saw the store close");
        assert_eq!(
            hold.passes(),
            1 + limit,
            "{ending:?} with drain limit {limit}: footers written"
        );

        // The next open finds everything and seals the rest.
        let store = Store::open(cfg()).unwrap();
        let d = store.diagnostics();
        let expected_path = match ending {
            Ending::Close => OpenPath::Checkpoint,
            Ending::Drop => OpenPath::Footers,
        };
        assert_eq!(d.recovery.open_path, expected_path);
        let all = store.query(&Region::all());
        assert_eq!(all.len(), SEGMENTS);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(store.get(e.event_id).unwrap().event.payload["i"], i);
        }
        eventually("the sealer catches up after reopening", || {
            store.diagnostics().footers_pending == 0
        });
        store.close().unwrap();
        common::remove_checkpoint(dir.path());
        let store = Store::open(cfg()).unwrap();
        let r = store.diagnostics().recovery;
        assert_eq!(
            (r.segments_from_footers, r.footers_rejected),
            (sealed, 0),
            "every sealed segment has its footer: {r:?}"
        );
        assert_eq!(store.query(&Region::all()).len(), SEGMENTS);
    }
}

// ---- growth never waits for the maintenance lock --------------------------

/// While a compaction holds the maintenance lock (held at one of its
/// injection points), the writer rotates: the new segment's footer job
/// waits for the lock. The new active segment must still grow ahead of the
/// writer, off the append path: its file grows past its first allocation
/// before any append reaches it, and no append grows it. Before this change
/// the growth request queued behind that footer job, so the file stayed at
/// its first allocation and the appends grew it themselves, zero-filling and
/// syncing under the writer lock.
#[test]
fn growth_does_not_wait_behind_footers_while_maintenance_runs() {
    // Twice the first allocation of a new segment (2 MiB).
    const SEGMENT: u64 = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let hold = HoldAt::new(InjectionPoint::CompactionSegmentWritten);
    let mut cfg = StoreConfig::new(dir.path()).with_segment_max_bytes(SEGMENT);
    cfg.fault_injector = Some(hold.clone());
    let store = Store::open(cfg).unwrap();
    assert!(store.diagnostics().durable_receipts, "zero-filling growth");
    let pad = "g".repeat(1024);
    let mut n = 0u64;
    let mut batch = |store: &Store| -> Vec<AppendReceipt> {
        let items = (0..64)
            .map(|_| {
                n += 1;
                BatchAppendItem::new(
                    coord(&format!("grow:{}", n % 8), "s"),
                    KIND,
                    &json!({ "n": n, "pad": pad }),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        store.append_batch(items).unwrap()
    };
    let in_segment = |rs: &[AppendReceipt]| rs.last().unwrap().disk_pos.segment_id;
    while in_segment(&batch(&store)) < 2 {}

    std::thread::scope(|s| {
        // Dropped (releasing the compaction) before the scope waits for it,
        // also when an assertion below fails.
        let release = ReleaseOnDrop(hold.clone());
        let compaction = s.spawn(|| {
            // Retention rewrites every sealed segment (a Merge would leave a
            // lone sealed segment alone and never reach the held point).
            store.compact(&CompactionConfig {
                strategy: CompactionStrategy::Retention(Box::new(|_| true)),
                min_segments: 1,
            })
        });
        hold.wait_held();
        // Rotate into segment 3 while the compaction holds the lock.
        while in_segment(&batch(&store)) < 3 {}
        let path = dir.path().join(format!("{:020}.seg", 3));
        let first_allocation = 2 * 1024 * 1024;
        eventually(
            "segment 3 never grew ahead of the writer while maintenance held its lock",
            || std::fs::metadata(&path).unwrap().len() > first_allocation,
        );
        let d = store.diagnostics();
        let on_append = d.grown_on_append;
        assert!(d.grown_ahead > 0);
        // Write well past the first allocation, still in segment 3.
        loop {
            let rs = batch(&store);
            let last = rs.last().unwrap().disk_pos;
            assert_eq!(last.segment_id, 3);
            if last.offset > first_allocation + 256 * 1024 {
                break;
            }
        }
        assert_eq!(
            store.diagnostics().grown_on_append,
            on_append,
            "an append grew the segment itself"
        );
        drop(release);
        compaction.join().unwrap().unwrap();
    });
    let written = n;
    store.close().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.query(&Region::all()).len() as u64, written);
    assert!(store.verify().unwrap().is_clean());
}
