//! What a store holds of the process, and that it lets go: file
//! descriptors (a constant few, however many segments), threads (none left
//! after `close`, `Drop` or a failed open), and bounded shutdown.

mod common;

use batpak::prelude::*;
use common::coord;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_segments(dir.path())).unwrap();
    let c = coord("fd:entity", "fd:scope");
    for i in 0..MANY_SEGMENTS {
        store.append(&c, KIND, &json!({ "i": i })).unwrap();
    }
    assert!(store.diagnostics().segment_count >= MANY_SEGMENTS);
    drop(store);
    run_child("fd_child", &[(FD_CHILD_DIR, dir.path())], Some(256));
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
    assert!(held <= 8, "an open store of 3,000 segments holds {held} descriptors");
    let all = store.query(&Region::all());
    assert_eq!(all.len(), MANY_SEGMENTS);
    for (i, e) in all.iter().enumerate() {
        let ev = store.get(e.event_id).unwrap();
        assert_eq!(ev.event.payload["i"], i);
    }
    for i in 0..50 {
        store.append(&c, KIND, &json!({ "i": MANY_SEGMENTS + i })).unwrap();
    }
    store.sync().unwrap();
    assert!(store.verify().unwrap().is_clean());
    let held = open_fds() - before;
    assert!(held <= 8, "after appends the store holds {held} descriptors");
    store.close().unwrap();
    assert_eq!(open_fds(), before, "close releases every descriptor");

    let ro = Store::open_read_only(tiny_segments(&dir)).expect("read-only open under ulimit -n 256");
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
}
