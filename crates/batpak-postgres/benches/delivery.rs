//! Delivery figures of the PostgreSQL backend (issue 12 targets;
//! docs/postgres.md):
//!
//! - `catch_up/*` (criterion): a cursor reading 200,000 stored events from
//!   the start, in one process: all of them, one scope (a quarter), one
//!   entity prefix (a tenth). Target: at least 200,000 events/s.
//! - commit-to-delivery latency to a cursor in another process (this bench
//!   run again as a child), writers paced at 1,000 events/s: the writer
//!   notes the wall clock when each append returns, the child when its
//!   cursor delivers the event. Target: p50 under 5 ms, p99 under 25 ms.
//! - 16 writers with 3 live cursors (child processes following all, one
//!   scope, one kind) against the same writers without, in alternating
//!   windows. Target: at least 80%.
//! - the cost of notifying: single appends and 16 writers with `notify`
//!   on and off, alternating; and, for ADR 0020, what a NOTIFY inside each
//!   transaction costs 16 committing connections;
//! - what the category index costs batches of 256.
//!
//! `cargo bench -p batpak-postgres --bench delivery -- --warm-up-time 1 --measurement-time 3`

use batpak::prelude::*;
use batpak_postgres::{testing, PgConfig, PgStore};
use criterion::{Criterion, Throughput};
use postgres::{Client, NoTls};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROLE: &str = "BATPAK_DELIVERY_BENCH_ROLE";
const STORED: i64 = 200_000;
const KIND: EventKind = EventKind::custom(1, 1);
const WRITERS: usize = 16;

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

/// Fill a new store with `STORED` events in one transaction (rows as an
/// append would leave them, for reading; streams are not needed).
fn stored_events(url: &str) -> PgConfig {
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_catchup"));
    drop(PgStore::open(cfg.clone()).unwrap());
    let mut c = Client::connect(url, NoTls).unwrap();
    c.batch_execute(&format!(
        "INSERT INTO {s}.events (position, event_id, entity, scope, clock, kind, flags,
             timestamp_us, hlc_counter, correlation_id, causation_id, prev_hash, event_hash,
             content_hash, payload)
         SELECT (pg_current_xact_id()::text::bigint << 20) + i, gen_random_uuid(),
                'acct:' || (i % 1000), 'tenant:' || (i % 4), i / 1000, 4097 + (i % 3), 0,
                1700000000000000 + i, 0, gen_random_uuid(), NULL,
                decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex'),
                decode(repeat('ef', 32), 'hex'), '\\x81a16901'::bytea
         FROM generate_series(0, {n}) AS i;
         ANALYZE {s}.events;",
        s = cfg.schema,
        n = STORED - 1
    ))
    .unwrap();
    cfg
}

fn catch_up(c: &mut Criterion, url: &str) {
    let cfg = stored_events(url);
    let store = PgStore::open(cfg).unwrap();
    let mut g = c.benchmark_group("catch_up");
    g.sample_size(10);
    for (name, region, n) in [
        ("all_200k", Region::all(), STORED as usize),
        ("scope_50k", Region::scope("tenant:1"), STORED as usize / 4),
        // acct:1, acct:10..19, acct:100..199: 111 of 1000 entities.
        (
            "prefix_22k",
            Region::entity("acct:1"),
            STORED as usize / 1000 * 111,
        ),
    ] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut cursor = store.cursor_guaranteed(&region);
                let mut got = 0;
                loop {
                    let batch = cursor.poll_batch(4096).unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    got += batch.len();
                }
                assert_eq!(got, n);
            });
        });
    }
    g.finish();
}

/// The child's side of the latency run: follow everything from `after`,
/// note when each event arrives, stop at the event of kind `STOP`.
fn latency_child() {
    const STOP: EventKind = EventKind::custom(9, 9);
    let cfg = PgConfig::new(var("BENCH_URL")).with_schema(var("BENCH_SCHEMA"));
    let out = PathBuf::from(var("BENCH_OUT"));
    let after: Option<u64> = var("BENCH_AFTER").parse().ok();
    let store = PgStore::open(cfg).unwrap();
    let mut cursor = store.cursor_from(&Region::all(), after);
    assert!(cursor
        .wait_next(Duration::from_millis(1))
        .unwrap()
        .is_none());
    while !store.is_listening() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::write(out.with_extension("ready"), b"").unwrap();
    let mut seen: Vec<(u128, u64)> = Vec::with_capacity(10_000);
    loop {
        let Some(e) = cursor.wait_next(Duration::from_secs(60)).unwrap() else {
            panic!("no event for a minute");
        };
        let at = wall_us();
        if e.kind == STOP {
            break;
        }
        seen.push((e.event_id, at));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    for (id, at) in seen {
        writeln!(f, "{id} {at}").unwrap();
    }
}

fn spawn_self(role: &str, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, role)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(url: &str) {
    const STOP: EventKind = EventKind::custom(9, 9);
    const RATE: u64 = 1000;
    const SECONDS: u64 = 6;
    const THREADS: u64 = 4;
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_latency"));
    let store = PgStore::open(cfg.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("delivered");
    let after = store.stable_position().unwrap().saturating_sub(1);
    let mut child = spawn_self(
        "latency",
        &[
            ("BENCH_URL", url.to_owned()),
            ("BENCH_SCHEMA", cfg.schema.clone()),
            ("BENCH_OUT", out.display().to_string()),
            ("BENCH_AFTER", after.to_string()),
        ],
    );
    let ready = out.with_extension("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "the cursor process did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // THREADS writers, each paced at RATE / THREADS events/s on a fixed
    // schedule (staggered), so the total is RATE events/s.
    let period = Duration::from_micros(1_000_000 * THREADS / RATE);
    let start = Instant::now() + Duration::from_millis(50);
    let committed: Vec<(u128, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let c = Coordinate::new(format!("w:{t}"), "s").unwrap();
                    let mut out = Vec::new();
                    let mut next = start + period * t as u32 / THREADS as u32;
                    for i in 0..(RATE * SECONDS / THREADS) {
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        next += period;
                        let r = store.append(&c, KIND, &json!({ "i": i })).unwrap();
                        out.push((r.event_id, wall_us()));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = start.elapsed();
    store
        .append(&Coordinate::new("stop", "s").unwrap(), STOP, &"stop")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let delivered: HashMap<u128, u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, at) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(delivered.len(), committed.len(), "every event delivered");
    let mut lat: Vec<u64> = committed
        .iter()
        .map(|(id, at)| delivered[id].saturating_sub(*at))
        .collect();
    lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "\ncommit-to-delivery latency, cursor in another process, {} events at {:.0}/s:\n  \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms \
         (targets: p50 < 5 ms, p99 < 25 ms)",
        lat.len(),
        committed.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 0.999)),
        ms(*lat.last().unwrap()),
    );
}

/// A live cursor for the throughput run: follows its region from `after`
/// and writes how many events it delivered every 100 ms.
fn follow_child() {
    let cfg = PgConfig::new(var("BENCH_URL"))
        .with_schema(var("BENCH_SCHEMA"))
        .with_pool_size(2);
    let region = match var("BENCH_REGION").as_str() {
        "all" => Region::all(),
        "scope" => Region::scope("s1"),
        _ => Region::all().with_fact(KindFilter::Exact(KIND)),
    };
    let out = PathBuf::from(var("BENCH_OUT"));
    let after: Option<u64> = var("BENCH_AFTER").parse().ok();
    let store = PgStore::open(cfg).unwrap();
    let mut cursor = store.cursor_from(&region, after);
    let mut n = 0u64;
    let mut noted = Instant::now();
    loop {
        if cursor
            .wait_next(Duration::from_millis(100))
            .unwrap()
            .is_some()
        {
            n += 1 + cursor.poll_batch(4096).unwrap().len() as u64;
        }
        if noted.elapsed() >= Duration::from_millis(100) {
            std::fs::write(&out, n.to_string()).unwrap();
            noted = Instant::now();
        }
    }
}

/// Appends by 16 threads during `window`, on distinct entities in 4 scopes.
fn sixteen_writers(store: &PgStore, window: Duration) -> u64 {
    let done = AtomicU64::new(0);
    let until = Instant::now() + window;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let done = &done;
            s.spawn(move || {
                let c = Coordinate::new(format!("w:{w}"), format!("s{}", w % 4)).unwrap();
                let kind = if w % 2 == 0 {
                    KIND
                } else {
                    EventKind::custom(1, 2)
                };
                while Instant::now() < until {
                    store.append(&c, kind, &json!({ "w": w })).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.into_inner()
}

fn writers_with_cursors(url: &str) {
    const WINDOW: Duration = Duration::from_secs(2);
    let cfg = PgConfig::new(url)
        .with_schema(testing::unique_schema("bench_live"))
        .with_pool_size(WRITERS as u32)
        .with_pool_min_idle(WRITERS as u32);
    let store = PgStore::open(cfg.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut without, mut with, mut delivered) = (0u64, 0u64, 0u64);
    for round in 0..3 {
        without += sixteen_writers(&store, WINDOW);
        let after = store.stable_position().unwrap().saturating_sub(1);
        let mut children: Vec<(Child, PathBuf)> = ["all", "scope", "kind"]
            .iter()
            .map(|r| {
                let out = dir.path().join(format!("{r}{round}"));
                let child = spawn_self(
                    "follow",
                    &[
                        ("BENCH_URL", url.to_owned()),
                        ("BENCH_SCHEMA", cfg.schema.clone()),
                        ("BENCH_REGION", (*r).to_owned()),
                        ("BENCH_OUT", out.display().to_string()),
                        ("BENCH_AFTER", after.to_string()),
                    ],
                );
                (child, out)
            })
            .collect();
        // Attached and reading before the window opens.
        let deadline = Instant::now() + Duration::from_secs(60);
        while children.iter().any(|(_, out)| !out.exists()) {
            assert!(Instant::now() < deadline, "a cursor process did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        with += sixteen_writers(&store, WINDOW);
        std::thread::sleep(Duration::from_millis(300));
        for (child, out) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
            delivered += std::fs::read_to_string(out.as_path())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let secs = 3.0 * WINDOW.as_secs_f64();
    println!(
        "\n16 writers, alternating {:.0} s windows (3 each): {:.0} appends/s with 3 live cursor \
         processes vs {:.0}/s without = {:.0}% (target >= 80%); the cursors delivered {} events \
         (all + scope + kind)",
        WINDOW.as_secs_f64(),
        with as f64 / secs,
        without as f64 / secs,
        100.0 * with as f64 / without as f64,
        delivered
    );
}

/// What notifying costs an append: single appends and 16 writers with
/// `notify` on and off, alternating.
fn notify_cost(url: &str) {
    let base = PgConfig::new(url)
        .with_schema(testing::unique_schema("bench_notify"))
        .with_pool_size(WRITERS as u32)
        .with_pool_min_idle(WRITERS as u32);
    let on = PgStore::open(base.clone()).unwrap();
    let off = PgStore::open(base.with_notify(false)).unwrap();
    // A listener, so that notifications are delivered somewhere.
    let listener =
        PgStore::open(PgConfig::new(url).with_schema(on.config().schema.clone())).unwrap();
    let _sub = listener.subscribe_lossy(&Region::entity("nobody")).unwrap();
    let c = Coordinate::new("single", "s").unwrap();
    let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
    for i in 0..1500 {
        let t = Instant::now();
        on.append(&c, KIND, &i).unwrap();
        t_on.push(t.elapsed());
        let t = Instant::now();
        off.append(&c, KIND, &i).unwrap();
        t_off.push(t.elapsed());
    }
    t_on.sort_unstable();
    t_off.sort_unstable();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "\nnotify cost, single appends alternating (1500 each): with NOTIFY mean {:?} median {:?}; \
         without mean {:?} median {:?}",
        mean(&t_on),
        t_on[t_on.len() / 2],
        mean(&t_off),
        t_off[t_off.len() / 2]
    );
    let (mut w_on, mut w_off) = (0, 0);
    for _ in 0..3 {
        w_on += sixteen_writers(&on, Duration::from_millis(1500));
        w_off += sixteen_writers(&off, Duration::from_millis(1500));
    }
    println!(
        "notify cost, 16 writers alternating 1.5 s windows: {:.0} appends/s with NOTIFY vs {:.0}/s \
         without = {:.0}%",
        w_on as f64 / 4.5,
        w_off as f64 / 4.5,
        100.0 * w_on as f64 / w_off as f64
    );
}

/// Why the notification is not sent inside the append's transaction: 16
/// connections committing `BEGIN; INSERT; COMMIT` against the same with
/// `SELECT pg_notify(..)` before the COMMIT, in alternating windows.
fn notify_inside_transactions(url: &str) {
    let schema = testing::unique_schema("bench_inside");
    let mut setup = Client::connect(url, NoTls).unwrap();
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id bigserial PRIMARY KEY, w int, body text)"
        ))
        .unwrap();
    let clients: Vec<std::sync::Mutex<Client>> = (0..WRITERS)
        .map(|_| std::sync::Mutex::new(Client::connect(url, NoTls).unwrap()))
        .collect();
    let insert = format!("INSERT INTO {schema}.t (w, body) VALUES ($1, repeat('x', 100))");
    let window = |notify: bool| -> u64 {
        let done = AtomicU64::new(0);
        let until = Instant::now() + Duration::from_millis(1500);
        std::thread::scope(|s| {
            for (w, client) in clients.iter().enumerate() {
                let (done, insert) = (&done, &insert);
                s.spawn(move || {
                    let mut c = client.lock().unwrap();
                    let w = w as i32;
                    while Instant::now() < until {
                        let mut tx = c.transaction().unwrap();
                        tx.execute(insert.as_str(), &[&w]).unwrap();
                        if notify {
                            tx.execute("SELECT pg_notify('batpak_bench_inside', '')", &[])
                                .unwrap();
                        }
                        tx.commit().unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        done.into_inner()
    };
    let (mut inside, mut plain) = (0, 0);
    for _ in 0..3 {
        plain += window(false);
        inside += window(true);
    }
    println!(
        "
16 connections, BEGIN; INSERT; COMMIT, alternating 1.5 s windows: {:.0}/s with a \
         NOTIFY inside each transaction vs {:.0}/s without = {:.0}%",
        inside as f64 / 4.5,
        plain as f64 / 4.5,
        100.0 * inside as f64 / plain as f64
    );
}

/// What the kind-category index (schema version 2) costs appends: batches
/// of 256 alternating between a store with it and one without.
fn index_cost(url: &str) {
    let with =
        PgStore::open(PgConfig::new(url).with_schema(testing::unique_schema("bench_idx"))).unwrap();
    let without_cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_noidx"));
    let without = PgStore::open(without_cfg.clone()).unwrap();
    Client::connect(url, NoTls)
        .unwrap()
        .batch_execute(&format!(
            "DROP INDEX {}.events_category_idx",
            without_cfg.schema
        ))
        .unwrap();
    let batch = |round: u64| -> Vec<BatchAppendItem> {
        (0..256u64)
            .map(|i| {
                BatchAppendItem::new(
                    Coordinate::new(format!("e:{}", i % 16), "s").unwrap(),
                    EventKind::custom(1 + (i % 3) as u8, 1),
                    &json!({ "round": round, "i": i, "note": "x".repeat(60) }),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect()
    };
    let (mut t_with, mut t_without) = (Duration::ZERO, Duration::ZERO);
    let rounds = 200;
    for round in 0..rounds {
        // Each side goes first every other round.
        for side in [round % 2, 1 - round % 2] {
            let (store, total) = if side == 0 {
                (&with, &mut t_with)
            } else {
                (&without, &mut t_without)
            };
            let items = batch(round);
            let t = Instant::now();
            store.append_batch(items).unwrap();
            *total += t.elapsed();
        }
    }
    let rate = |t: Duration| (rounds * 256) as f64 / t.as_secs_f64();
    println!(
        "
category index cost, append_batch of 256 alternating ({rounds} each): {:.0} events/s \
         with the index vs {:.0}/s without = {:.0}%",
        rate(t_with),
        rate(t_without),
        100.0 * rate(t_with) / rate(t_without)
    );
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("latency") => return latency_child(),
        Ok("follow") => return follow_child(),
        _ => {}
    }
    let Some(url) = testing::cluster_url() else {
        return;
    };
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("index_cost") => return index_cost(url),
        Ok("notify_inside") => return notify_inside_transactions(url),
        Ok("live") => {
            latency(url);
            writers_with_cursors(url);
            return notify_cost(url);
        }
        _ => {}
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    catch_up(&mut c, url);
    c.final_summary();
    if std::env::args().all(|a| a != "--list") {
        latency(url);
        writers_with_cursors(url);
        notify_cost(url);
        notify_inside_transactions(url);
        index_cost(url);
    }
}
