//! A read-only follower beside an owner that crashes (issue 10, item 3):
//! two real processes. The owner appends (singles and batches, large enough
//! frames that a kill tears them) and is killed with SIGKILL and started
//! again in a loop; every start recovers the torn tail it left. Meanwhile a
//! follower process opened with `open_read_only` refreshes, reads every new
//! event, polls a cursor, queries, and verifies, over and over.
//!
//! The follower must never die of a signal (a segment file shrinking under
//! its memory map would raise `SIGBUS`), must only ever see events that a
//! later full open confirms with the same global sequence, and once the
//! owner is closed, one more `refresh` must bring it to exactly what a full
//! open sees.
//!
//! Seeded: a failure prints `BATPAK_FOLLOW_SEED=<seed>`; rerun with it set.
//! The long run: `BATPAK_FOLLOW_ROUNDS=300 cargo test -p batpak --test
//! read_only_crash -- --ignored --nocapture follower_beside_crashing_owner_long_run`.

mod common;
mod support_crash;

use batpak::prelude::*;
use batpak::store::{CountdownInjector, FaultAction, InjectionPoint};
use common::{coord, KIND_A};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support_crash::*;

const DIR_ENV: &str = "BATPAK_FOLLOW_DIR";
const MODE_ENV: &str = "BATPAK_FOLLOW_MODE";
const CHILD_SEED_ENV: &str = "BATPAK_FOLLOW_CHILD_SEED";
/// When set to n, the owner aborts itself between two frames of its n-th
/// batch of two or more: a batch cut short at the end of the log.
const ABORT_ENV: &str = "BATPAK_FOLLOW_ABORT_AT";
const SEED_ENV: &str = "BATPAK_FOLLOW_SEED";
const ROUNDS_ENV: &str = "BATPAK_FOLLOW_ROUNDS";
/// Only a hang hits this (a debug build on a busy machine is slow).
const PATIENCE: Duration = Duration::from_secs(120);

fn config(dir: &Path, mode: &str) -> StoreConfig {
    let cfg = StoreConfig::new(dir).with_segment_max_bytes(512 * 1024);
    match mode {
        "relaxed" => cfg.with_sync_every_n_events(64),
        _ => cfg,
    }
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).unwrap();
    out.flush().unwrap();
}

// ---- the owner ------------------------------------------------------------

/// Not a test on its own: the owner process the follower test kills.
#[test]
#[ignore = "helper: run as a child process by the follower tests"]
fn follow_owner_process() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("OWNER FAILED: {info}");
        std::process::abort();
    }));
    let mode = std::env::var(MODE_ENV).unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut cfg = config(Path::new(&dir), &mode);
    if let Ok(n) = std::env::var(ABORT_ENV) {
        cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
            InjectionPoint::ItemWritten(1),
            n.parse().unwrap(),
            FaultAction::Crash,
        )));
    }
    let store = Store::open(cfg).unwrap();
    let torn = store.diagnostics().recovery.truncated_tail.is_some();
    say(&format!("OPEN {}\n", u8::from(torn)));
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let store = &store;
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t + 1));
                for i in 0u64.. {
                    let entity = format!("e{}", rng.range(0, 3));
                    // Frames of up to a few pages: a kill can tear them.
                    if rng.chance(1, 3) {
                        let n = rng.range(2, 8) as usize;
                        let tag = format!("{seed:x}-{t}-{i}");
                        let plan: Vec<_> = (0..n)
                            .map(|k| payload(&tag, n, k, rng.range(100, 6000) as usize, i))
                            .collect();
                        let items = plan
                            .iter()
                            .map(|p| {
                                BatchAppendItem::new(
                                    coord(&entity, "s"),
                                    KIND_A,
                                    p,
                                    AppendOptions::new(),
                                    CausationRef::None,
                                )
                                .unwrap()
                            })
                            .collect();
                        let rs = store.append_batch(items).unwrap();
                        let lines: String = rs
                            .iter()
                            .zip(&plan)
                            .map(|(r, p)| Acked::new(r, &entity, p, false).line() + "\n")
                            .collect();
                        say(&lines);
                    } else {
                        let p = payload("", 0, 0, rng.range(0, 9000) as usize, i);
                        let r = store.append(&coord(&entity, "s"), KIND_A, &p).unwrap();
                        say(&(Acked::new(&r, &entity, &p, false).line() + "\n"));
                    }
                }
            });
        }
    });
}

// ---- the follower ---------------------------------------------------------

/// Not a test on its own: the read-only follower process. Reads until a
/// line arrives on stdin, then refreshes once more and reports what it holds.
#[test]
#[ignore = "helper: run as a child process by the follower tests"]
fn follow_reader_process() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("FOLLOWER FAILED: {info}");
        std::process::abort();
    }));
    let finish = Arc::new(AtomicBool::new(false));
    {
        let finish = finish.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            finish.store(true, Ordering::Release);
        });
    }
    let store = Store::open_read_only(StoreConfig::new(&dir)).unwrap();
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let report = |cursor: &mut Cursor| {
        let mut lines = String::new();
        for e in cursor.poll_batch(100_000) {
            // Read the frame back: its bytes come from the mapped segment.
            let ev = store.get(e.event_id).unwrap();
            assert_eq!(ev.event.header.event_id, e.event_id);
            lines.push_str(&format!(
                "SEEN {} {} {}\n",
                e.event_id,
                e.global_sequence,
                digest(&ev.event.payload)
            ));
        }
        say(&lines);
    };
    let mut loops = 0u64;
    while !finish.load(Ordering::Acquire) {
        store.refresh().unwrap();
        report(&mut cursor);
        // What the CLI's `stats`, `ls` and `verify` do: count, list and read
        // every file whole.
        let _ = store.stats();
        let listed = store.query(&Region::all());
        if let Some(last) = listed.last() {
            store.get(last.event_id).unwrap();
        }
        if loops.is_multiple_of(4) {
            // A bystander's verify may meet a file being replaced (an
            // error is fine); it must not meet a signal.
            let _ = store.verify();
        }
        loops += 1;
    }
    say("FINISHING\n");
    store.refresh().unwrap();
    report(&mut cursor);
    say(&format!(
        "DONE {} {}\n",
        store.query(&Region::all()).len(),
        loops
    ));
}

// ---- the parent -----------------------------------------------------------

fn spawn_child(
    test: &str,
    dir: &Path,
    mode: &str,
    seed: u64,
    abort_at: Option<u64>,
) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_ENV, dir)
    .env(MODE_ENV, mode)
    .env(CHILD_SEED_ENV, seed.to_string());
    if let Some(n) = abort_at {
        cmd.env(ABORT_ENV, n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
}

/// An event the follower saw: (sequence, payload digest) by id.
fn parse_seen(line: &str) -> Option<(u128, u64, u64)> {
    let at = line.find("SEEN ")?;
    let mut p = line[at + 5..].split_whitespace();
    Some((
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    ))
}

#[derive(Default)]
struct Tally {
    kills: usize,
    acked: usize,
    torn_tails: usize,
    seen_while_crashing: usize,
    follower_loops: u64,
}

fn follower_beside_crashing_owner(mode: &str, rounds: usize, seed: u64) -> Tally {
    let _guard = OnFailure(format!("{SEED_ENV}={seed} (mode {mode})"));
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    // The follower needs a store to open.
    Store::open(config(dir.path(), mode))
        .unwrap()
        .close()
        .unwrap();
    let (mut follower, follower_out) =
        spawn_child("follow_reader_process", dir.path(), mode, 0, None);
    let mut tally = Tally::default();
    let mut acked: Vec<Acked> = Vec::new();
    let mut seen_lines: Vec<String> = Vec::new();
    for _ in 0..rounds {
        // SIGKILL rarely lands inside a frame's copy; half of the owners
        // abort themselves in the middle of a batch instead.
        let abort_at = rng.chance(1, 2).then(|| rng.range(1, 4));
        let (mut owner, out) = spawn_child(
            "follow_owner_process",
            dir.path(),
            mode,
            rng.next_u64(),
            abort_at,
        );
        let deadline = Instant::now() + PATIENCE;
        let mut lines = Vec::new();
        while !lines.iter().any(|l: &String| l.contains("OPEN")) {
            match out.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(5, 60)));
        let _ = owner.kill();
        let status = owner.wait().unwrap();
        let by_itself = abort_at.is_some() && status.signal() == Some(libc::SIGABRT);
        if status.signal() != Some(libc::SIGKILL) && !by_itself {
            panic!(
                "the owner did not die by our SIGKILL but {status:?}:\n{}",
                stderr_of(&mut owner)
            );
        }
        lines.extend(out.iter());
        assert!(
            lines.iter().any(|l| l.contains("OPEN")),
            "the owner never opened the store"
        );
        acked.extend(lines.iter().filter_map(|l| Acked::parse(l)));
        tally.torn_tails += usize::from(lines.iter().any(|l| l.contains("OPEN 1")));
        tally.kills += 1;
        // The follower must still be alive and reading.
        if let Some(status) = follower.try_wait().unwrap() {
            panic!(
                "the follower died while the owner was killed and reopened ({status:?}, signal {:?}):\n{}",
                status.signal(),
                stderr_of(&mut follower)
            );
        }
        seen_lines.extend(follower_out.try_iter());
    }
    // A full open: what the store holds. It cuts the last owner's torn tail
    // too, with the follower still reading.
    let store = Store::open(config(dir.path(), mode)).unwrap();
    tally.torn_tails += usize::from(store.diagnostics().recovery.truncated_tail.is_some());
    let checked = check_store(&store, &acked);
    let entries = store.query(&Region::all());
    let held: HashMap<u128, (u64, u64)> = entries
        .iter()
        .map(|e| {
            let p = store.get(e.event_id).unwrap().event.payload;
            (e.event_id, (e.global_sequence, digest(&p)))
        })
        .collect();
    store.close().unwrap();
    tally.acked = acked.len();

    // Let the follower finish: one more refresh after the owner closed.
    // (It may have died already: the status below tells.)
    let _ = follower.stdin.take().unwrap().write_all(b"finish\n");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = follower.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the follower did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    seen_lines.extend(follower_out.iter());
    assert!(
        status.success(),
        "the follower died ({status:?}, signal {:?}):\n{}",
        status.signal(),
        stderr_of(&mut follower)
    );
    let finishing = seen_lines
        .iter()
        .position(|l| l.contains("FINISHING"))
        .expect("the follower reported its last refresh");
    tally.seen_while_crashing = seen_lines[..finishing]
        .iter()
        .filter(|l| l.contains("SEEN "))
        .count();
    let mut seen: BTreeMap<u128, (u64, u64)> = BTreeMap::new();
    for line in &seen_lines {
        if let Some((id, seq, digest)) = parse_seen(line) {
            assert!(
                seen.insert(id, (seq, digest)).is_none(),
                "the follower's cursor delivered {id:032x} twice"
            );
            assert_eq!(
                held.get(&id),
                Some(&(seq, digest)),
                "the follower saw event {id:032x} (sequence {seq}), which the store does not hold as seen"
            );
        }
    }
    let done = seen_lines
        .iter()
        .find_map(|l| l.split_once("DONE ").map(|(_, r)| r.to_owned()))
        .expect("the follower reported DONE");
    let mut done = done.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    let (count, loops) = (done.next().unwrap(), done.next().unwrap());
    tally.follower_loops = loops;
    let missed: Vec<(u64, DiskPos)> = entries
        .iter()
        .filter(|e| !seen.contains_key(&e.event_id))
        .map(|e| (e.global_sequence, e.disk_pos))
        .collect();
    assert!(
        missed.is_empty(),
        "the follower's cursor missed {} events (sequence, position): {missed:?}",
        missed.len()
    );
    assert_eq!(
        count as usize, checked.events,
        "after the owner closed, the follower's refresh holds another set of events than a full open"
    );
    tally
}

fn run(name: &str, rounds: usize) {
    let seed = seed_from_env(SEED_ENV);
    let started = Instant::now();
    for mode in ["durable", "relaxed"] {
        let t = follower_beside_crashing_owner(mode, rounds, seed);
        println!(
            "{name} ({mode}): seed {seed}, {} kills ({} reopens cut a torn tail), {} acknowledged, {} events seen while the owner crashed, {} follower loops, {:.1?}",
            t.kills,
            t.torn_tails,
            t.acked,
            t.seen_while_crashing,
            t.follower_loops,
            started.elapsed()
        );
        assert!(
            t.seen_while_crashing > 0,
            "the follower never saw an event while the owner was crashing"
        );
    }
}

#[test]
fn follower_beside_an_owner_killed_and_reopened_in_a_loop() {
    run("follower_beside_an_owner_killed_and_reopened_in_a_loop", 8);
}

/// The long run: `BATPAK_FOLLOW_ROUNDS` kills per mode (default 300).
#[test]
#[ignore = "long: BATPAK_FOLLOW_ROUNDS kills per mode (default 300)"]
fn follower_beside_crashing_owner_long_run() {
    let rounds = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    run("follower_beside_crashing_owner_long_run", rounds);
}
