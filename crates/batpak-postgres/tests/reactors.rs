//! Reactor election across real processes (issue 12, item 4): two processes
//! run a reactor of the same name; one leads and acts, the other waits. The
//! leader is killed with SIGKILL mid-stream; the follower takes over, and in
//! the end every trigger has its reactions exactly once, none skipped, and
//! the two never acted at the same time.
//!
//! The test binary runs itself again as the reactor processes
//! (`reactor_child`, selected by `BATPAK_RX_ROLE=reactor`). Each logs every
//! call of its reactor (`react`, the side effect an election must keep
//! single) with a wall-clock time.

mod support;

use batpak::prelude::*;
use batpak_postgres::{testing, PgConfig, PgStore};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{complete_lines, kill, spawn_child, wall_us, LineLog};

const ROLE: &str = "BATPAK_RX_ROLE";
const TRIGGER: EventKind = EventKind::custom(1, 1);
const REACTION: EventKind = EventKind::custom(2, 1);
const NAME: &str = "auditor";

/// Logs each call (`acted <slot> <trigger n> <µs>`) and answers with one
/// reaction, two for every tenth trigger.
struct Logged {
    slot: u64,
    log: Mutex<LineLog>,
}

impl Reactive<serde_json::Value> for Logged {
    fn react(
        &self,
        event: &Event<serde_json::Value>,
    ) -> Vec<(Coordinate, EventKind, serde_json::Value)> {
        let n = event.payload["n"].as_u64().unwrap_or(0);
        self.log
            .lock()
            .unwrap()
            .line(format!("acted {} {n} {}", self.slot, wall_us()));
        let c = Coordinate::new(format!("audit:{}", n % 4), "audit").unwrap();
        let mut out = vec![(c.clone(), REACTION, json!({ "of": n }))];
        if n.is_multiple_of(10) {
            out.push((c, REACTION, json!({ "of": n, "milestone": true })));
        }
        out
    }
}

/// A reactor process. Does nothing in an ordinary test run.
#[test]
fn reactor_child() {
    if std::env::var(ROLE).as_deref() != Ok("reactor") {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let slot: u64 = var("BATPAK_RX_SLOT").parse().unwrap();
    let dir = PathBuf::from(var("BATPAK_RX_DIR"));
    let cfg = PgConfig::new(var("BATPAK_RX_URL"))
        .with_schema(var("BATPAK_RX_SCHEMA"))
        .with_pool_size(4);
    let store = Arc::new(PgStore::open(cfg).unwrap());
    let reactor = Logged {
        slot,
        log: Mutex::new(LineLog::open(&dir.join(format!("acted{slot}.log")))),
    };
    let handle = store
        .react_loop_named(NAME, &Region::entity("order:"), reactor)
        .unwrap();
    let stop = dir.join("stop");
    while !stop.exists() && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!handle.is_finished(), "the reactor stopped on its own");
    drop(store);
    handle.join().unwrap();
}

fn spawn_reactor(dir: &Path, cfg: &PgConfig, slot: u64) -> std::process::Child {
    spawn_child(
        "reactor_child",
        ROLE,
        "reactor",
        &[
            ("BATPAK_RX_SLOT", slot.to_string()),
            ("BATPAK_RX_DIR", dir.display().to_string()),
            ("BATPAK_RX_URL", cfg.url.clone()),
            ("BATPAK_RX_SCHEMA", cfg.schema.clone()),
        ],
        &dir.join(format!("r{slot}.stderr")),
    )
}

/// Every `acted` line: (slot, trigger n, µs).
fn acts(dir: &Path, slots: u64) -> Vec<(u64, u64, u64)> {
    let mut all = Vec::new();
    for slot in 0..slots {
        for line in complete_lines(&dir.join(format!("acted{slot}.log"))) {
            let parts: Vec<u64> = line
                .split(' ')
                .skip(1)
                .map(|p| p.parse().unwrap())
                .collect();
            all.push((parts[0], parts[1], parts[2]));
        }
    }
    all.sort_by_key(|a| a.2);
    all
}

fn append_triggers(store: &PgStore, range: std::ops::Range<u64>, pace: Duration) {
    for n in range {
        store
            .append(
                &Coordinate::new(format!("order:{n}"), "shop").unwrap(),
                TRIGGER,
                &json!({ "n": n }),
            )
            .unwrap();
        std::thread::sleep(pace);
    }
}

#[test]
fn a_follower_takes_over_when_the_leader_is_killed() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut children = vec![spawn_reactor(dir.path(), &cfg, 0)];
    // The first one has the lead before the second starts.
    append_triggers(&store, 0..20, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acts(dir.path(), 2).len() < 20 {
        assert!(Instant::now() < deadline, "the first reactor did not act");
        std::thread::sleep(Duration::from_millis(20));
    }
    children.push(spawn_reactor(dir.path(), &cfg, 1));
    // Triggers keep coming while the leader is killed in the middle of them.
    let writer = {
        let store = PgStore::open(cfg.clone()).unwrap();
        std::thread::spawn(move || append_triggers(&store, 20..200, Duration::from_millis(5)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acts(dir.path(), 2).len() < 100 {
        assert!(Instant::now() < deadline, "the leader stopped acting");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Both are up; only the leader acted.
    let before_kill = acts(dir.path(), 2);
    assert!(
        before_kill.iter().all(|a| a.0 == 0),
        "the follower acted while the leader lived"
    );
    let killed_at = wall_us();
    kill(&mut children[0]);
    writer.join().unwrap();

    // Every trigger answered: one reaction each, two for every tenth.
    let expected = 200 + 20;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stream("audit:0").unwrap().len()
        + store.stream("audit:1").unwrap().len()
        + store.stream("audit:2").unwrap().len()
        + store.stream("audit:3").unwrap().len()
        < expected
    {
        assert!(Instant::now() < deadline, "the follower did not take over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reactions = store.query(&Region::scope("audit")).unwrap();
    assert_eq!(reactions.len(), expected, "no reaction written twice");
    let mut per_trigger: HashMap<u128, usize> = HashMap::new();
    for r in &reactions {
        *per_trigger.entry(r.causation_id.unwrap()).or_default() += 1;
    }
    let triggers = store.query(&Region::entity("order:")).unwrap();
    assert_eq!(triggers.len(), 200);
    for t in &triggers {
        let n = store.get(t.event_id).unwrap().event.payload["n"]
            .as_u64()
            .unwrap();
        let want = if n.is_multiple_of(10) { 2 } else { 1 };
        assert_eq!(per_trigger.get(&t.event_id), Some(&want), "trigger {n}");
    }

    // The two never acted at the same time: the follower's first act came
    // after the leader was killed, and the leader acted on nothing after.
    let all = acts(dir.path(), 2);
    let first_follower = all.iter().find(|a| a.0 == 1).expect("the follower acted");
    assert!(
        first_follower.2 > killed_at,
        "the follower acted before the kill"
    );
    assert!(all
        .iter()
        .filter(|a| a.0 == 0)
        .all(|a| a.2 < first_follower.2));
    // After the takeover it went on where the checkpoint said: at most the
    // triggers the leader answered after its last checkpoint came again.
    let by_leader: HashSet<u64> = all.iter().filter(|a| a.0 == 0).map(|a| a.1).collect();
    let again: Vec<u64> = all
        .iter()
        .filter(|a| a.0 == 1 && by_leader.contains(&a.1))
        .map(|a| a.1)
        .collect();
    assert!(
        again.len() <= 1,
        "answered again after the takeover: {again:?}"
    );
    let answered: HashSet<u64> = all.iter().map(|a| a.1).collect();
    assert_eq!(answered, (0..200).collect::<HashSet<u64>>(), "none skipped");
    eprintln!(
        "leader acted on {} triggers, the follower on {} ({} again after the takeover)",
        by_leader.len(),
        all.iter().filter(|a| a.0 == 1).count(),
        again.len()
    );
    let checkpoint = store.reactor_checkpoint(NAME).unwrap().unwrap();
    assert_eq!(checkpoint, triggers.last().unwrap().global_sequence);

    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let stderr = dir.path().join("r1.stderr");
    support::wait_success(
        &mut children[1],
        Duration::from_secs(60),
        "the follower",
        &stderr,
    );
}
