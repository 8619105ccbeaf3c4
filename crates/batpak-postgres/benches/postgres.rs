//! PostgreSQL backend figures against the same server doing bare work, in
//! the same run (issue 11 targets; docs/postgres.md):
//!
//! - `single/append` vs `single/bare_insert_commit` (BEGIN, INSERT of the
//!   same row, COMMIT) and `single/bare_insert_autocommit`;
//! - `writers16/append` vs `writers16/bare_insert_commit`: 16 threads, 16
//!   connections, distinct entities;
//! - `batch/append_batch_256`;
//! - `read/stream_1000` and `read/get`, with their plans printed.
//!
//! The server is the throwaway test cluster (fsync on), or the one named by
//! `BATPAK_TEST_PG_URL`. After criterion's own report the bench prints the
//! ratios the targets are about, read from criterion's estimates.
//!
//! `cargo bench -p batpak-postgres --bench postgres -- --warm-up-time 1 --measurement-time 3`

use batpak::prelude::*;
use batpak::store::codec;
use batpak_postgres::{testing, PgConfig, PgStore};
use criterion::{Criterion, Throughput};
use postgres::{Client, NoTls};
use serde_json::json;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const KIND: EventKind = EventKind::custom(1, 1);
const WRITERS: usize = 16;

fn payload(i: u64) -> serde_json::Value {
    json!({ "sku": "tea", "qty": 2, "i": i, "note": "x".repeat(60) })
}

/// A table with the events table's columns and only its primary key: the
/// row a bare INSERT writes.
fn bare_table(client: &mut Client, schema: &str) {
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.bare (
                 position bigint, event_id uuid PRIMARY KEY, entity text, scope text,
                 clock bigint, kind integer, flags smallint, timestamp_us bigint,
                 hlc_counter integer, correlation_id uuid, causation_id uuid,
                 prev_hash bytea, event_hash bytea, content_hash bytea, payload bytea)"
        ))
        .unwrap();
}

struct BareRow {
    sql: String,
    payload: Vec<u8>,
    hash: [u8; 32],
}

impl BareRow {
    fn new(schema: &str) -> Self {
        let payload = codec::encode_payload(&payload(1)).unwrap();
        Self {
            sql: format!(
                "INSERT INTO {schema}.bare VALUES ($1, $2, $3, 's', $4, 4097, 0, $5, 0, $2, NULL, $6, $6, $6, $7)"
            ),
            hash: codec::content_hash(&payload),
            payload,
        }
    }

    fn insert(
        &self,
        client: &mut Client,
        st: &postgres::Statement,
        n: i64,
        entity: &str,
        autocommit: bool,
    ) {
        let id = uuid::Uuid::from_u128(batpak::id::generate_v7_id());
        let params: [&(dyn postgres::types::ToSql + Sync); 7] = [
            &n,
            &id,
            &entity,
            &n,
            &n,
            &self.hash.as_slice(),
            &self.payload,
        ];
        if autocommit {
            client.execute(st, &params).unwrap();
        } else {
            let mut tx = client.transaction().unwrap();
            tx.execute(st, &params).unwrap();
            tx.commit().unwrap();
        }
    }
}

fn single(c: &mut Criterion, url: &str) {
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_single"));
    let store = PgStore::open(cfg.clone()).unwrap();
    let mut client = Client::connect(url, NoTls).unwrap();
    bare_table(&mut client, &cfg.schema);
    let row = BareRow::new(&cfg.schema);
    let st = client.prepare(&row.sql).unwrap();
    let coord = Coordinate::new("order:1", "s").unwrap();
    let p = payload(1);

    let mut g = c.benchmark_group("single");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append", |b| {
        b.iter(|| store.append(&coord, KIND, &p).unwrap())
    });
    let mut n = 0i64;
    g.bench_function("bare_insert_commit", |b| {
        b.iter(|| {
            n += 1;
            row.insert(&mut client, &st, n, "order:1", false)
        })
    });
    g.bench_function("bare_insert_autocommit", |b| {
        b.iter(|| {
            n += 1;
            row.insert(&mut client, &st, n, "order:1", true)
        })
    });
    g.finish();
}

/// Run `per_thread` operations on each of 16 threads at once; the time from
/// the common start to the last thread's end.
fn sixteen(per_thread: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let start = Barrier::new(WRITERS + 1);
    let mut t0 = None;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let start = &start;
            s.spawn(move || {
                start.wait();
                for i in 0..per_thread {
                    op(w, i);
                }
            });
        }
        start.wait();
        t0 = Some(Instant::now());
    });
    t0.map_or(Duration::ZERO, |t| t.elapsed())
}

fn writers16(c: &mut Criterion, url: &str) {
    let cfg = PgConfig::new(url)
        .with_schema(testing::unique_schema("bench_w16"))
        .with_pool_size(WRITERS as u32)
        .with_pool_min_idle(WRITERS as u32);
    let store = Arc::new(PgStore::open(cfg.clone()).unwrap());
    let coords: Vec<Coordinate> = (0..WRITERS)
        .map(|w| Coordinate::new(format!("writer:{w}"), "s").unwrap())
        .collect();
    let p = payload(1);
    let mut setup = Client::connect(url, NoTls).unwrap();
    bare_table(&mut setup, &cfg.schema);
    let row = BareRow::new(&cfg.schema);
    let clients: Vec<Mutex<(Client, postgres::Statement)>> = (0..WRITERS)
        .map(|_| {
            let mut c = Client::connect(url, NoTls).unwrap();
            let st = c.prepare(&row.sql).unwrap();
            Mutex::new((c, st))
        })
        .collect();
    let next = std::sync::atomic::AtomicI64::new(0);

    let mut g = c.benchmark_group("writers16");
    g.sample_size(10);
    g.throughput(Throughput::Elements(WRITERS as u64));
    g.bench_function("append", |b| {
        b.iter_custom(|iters| {
            sixteen(iters, &|w, _| {
                store.append(&coords[w], KIND, &p).unwrap();
            })
        })
    });
    g.bench_function("bare_insert_commit", |b| {
        b.iter_custom(|iters| {
            sixteen(iters, &|w, _| {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut guard = clients[w].lock().unwrap();
                let (client, st) = &mut *guard;
                row.insert(client, st, n, coords[w].entity(), false);
            })
        })
    });
    g.finish();
}

fn batch(c: &mut Criterion, url: &str) {
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_batch"));
    let store = PgStore::open(cfg).unwrap();
    let items = || -> Vec<BatchAppendItem> {
        (0..256u64)
            .map(|i| {
                BatchAppendItem::new(
                    Coordinate::new(format!("order:{}", i % 16), "s").unwrap(),
                    KIND,
                    &payload(i),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect()
    };
    let mut g = c.benchmark_group("batch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(256));
    g.bench_function("append_batch_256", |b| {
        b.iter_batched(
            items,
            |it| store.append_batch(it).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn reads(c: &mut Criterion, url: &str) {
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_read"));
    let store = PgStore::open(cfg.clone()).unwrap();
    // One entity of 1000 events among 20,000 others.
    for round in 0..80u64 {
        let items = (0..256u64)
            .map(|i| {
                BatchAppendItem::new(
                    Coordinate::new(format!("other:{}", (round * 256 + i) % 500), "s").unwrap(),
                    KIND,
                    &payload(i),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        store.append_batch(items).unwrap();
    }
    let hot = Coordinate::new("order:hot", "s").unwrap();
    let mut ids = Vec::new();
    for chunk in 0..4u64 {
        let items = (0..250u64)
            .map(|i| {
                BatchAppendItem::new(
                    hot.clone(),
                    KIND,
                    &payload(chunk * 250 + i),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        ids.extend(
            store
                .append_batch(items)
                .unwrap()
                .iter()
                .map(|r| r.event_id),
        );
    }
    let mut client = Client::connect(url, NoTls).unwrap();
    client
        .batch_execute(&format!("ANALYZE {}.events", cfg.schema))
        .unwrap();
    let id = uuid::Uuid::from_u128(ids[500]);
    for (what, sql) in [
        (
            "stream (1000 events)",
            format!(
                "SELECT * FROM {}.events WHERE entity = 'order:hot' ORDER BY clock",
                cfg.schema
            ),
        ),
        (
            "get by id",
            format!(
                "SELECT * FROM {}.events WHERE event_id = '{id}'",
                cfg.schema
            ),
        ),
    ] {
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        println!("plan of {what}:\n  {}", plan.join("\n  "));
    }
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("stream_1000", |b| {
        b.iter(|| assert_eq!(store.stream("order:hot").unwrap().len(), 1000))
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7) % ids.len();
            store.get(ids[i]).unwrap()
        })
    });
    g.finish();
}

/// Criterion's mean time per iteration, in ns, from its saved estimates.
fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The latency target, measured so that the shared disk's moods hit both
/// sides alike: appends and bare transactions alternate, one each per round.
fn paired_latency(url: &str) {
    let cfg = PgConfig::new(url).with_schema(testing::unique_schema("bench_pair"));
    let store = PgStore::open(cfg.clone()).unwrap();
    let mut client = Client::connect(url, NoTls).unwrap();
    bare_table(&mut client, &cfg.schema);
    let row = BareRow::new(&cfg.schema);
    let st = client.prepare(&row.sql).unwrap();
    let coord = Coordinate::new("order:1", "s").unwrap();
    let p = payload(1);
    let (mut ours, mut bare, mut auto) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..2000i64 {
        let t = Instant::now();
        store.append(&coord, KIND, &p).unwrap();
        let a = t.elapsed();
        let t = Instant::now();
        row.insert(&mut client, &st, 2 * n, "order:1", false);
        let b = t.elapsed();
        let t = Instant::now();
        row.insert(&mut client, &st, 2 * n + 1, "order:1", true);
        let c = t.elapsed();
        if n >= 200 {
            ours.push(a);
            bare.push(b);
            auto.push(c);
        }
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (mo, mb, ma) = (mean(&ours), mean(&bare), mean(&auto));
    let (do_, db, da) = (median(&mut ours), median(&mut bare), median(&mut auto));
    println!(
        "  single append, alternating with the bare row (1800 rounds): mean {mo:?} vs \
         BEGIN+INSERT+COMMIT {mb:?} = {:.2}x (target <= 1.5x); median {do_:?} vs {db:?} = {:.2}x; \
         an autocommit INSERT: mean {ma:?}, median {da:?}",
        mo.as_secs_f64() / mb.as_secs_f64(),
        do_.as_secs_f64() / db.as_secs_f64()
    );
}

/// The 16-writer target, measured in alternating 1.5 s windows (3 each).
fn paired_writers(url: &str) {
    let cfg = PgConfig::new(url)
        .with_schema(testing::unique_schema("bench_pairw"))
        .with_pool_size(WRITERS as u32)
        .with_pool_min_idle(WRITERS as u32);
    let store = PgStore::open(cfg.clone()).unwrap();
    let coords: Vec<Coordinate> = (0..WRITERS)
        .map(|w| Coordinate::new(format!("writer:{w}"), "s").unwrap())
        .collect();
    let p = payload(1);
    let mut setup = Client::connect(url, NoTls).unwrap();
    bare_table(&mut setup, &cfg.schema);
    let row = BareRow::new(&cfg.schema);
    let clients: Vec<Mutex<(Client, postgres::Statement)>> = (0..WRITERS)
        .map(|_| {
            let mut c = Client::connect(url, NoTls).unwrap();
            let st = c.prepare(&row.sql).unwrap();
            Mutex::new((c, st))
        })
        .collect();
    let next = std::sync::atomic::AtomicI64::new(0);
    let window = |op: &(dyn Fn(usize) + Sync)| -> u64 {
        let done = std::sync::atomic::AtomicU64::new(0);
        let until = Instant::now() + Duration::from_millis(1500);
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let done = &done;
                s.spawn(move || {
                    while Instant::now() < until {
                        op(w);
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        done.into_inner()
    };
    let (mut ours, mut bare, mut auto) = (0u64, 0u64, 0u64);
    let bare_op = |w: usize, autocommit: bool| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut guard = clients[w].lock().unwrap();
        let (client, st) = &mut *guard;
        row.insert(client, st, n, coords[w].entity(), autocommit);
    };
    for _ in 0..3 {
        ours += window(&|w| {
            store.append(&coords[w], KIND, &p).unwrap();
        });
        bare += window(&|w| bare_op(w, false));
        auto += window(&|w| bare_op(w, true));
    }
    let secs = 4.5;
    println!(
        "  16 writers, alternating 1.5 s windows: {:.0} appends/s vs {:.0} bare BEGIN+INSERT+COMMIT/s \
         = {:.0}% (target >= 60%); vs {:.0} autocommit INSERTs/s = {:.0}%",
        ours as f64 / secs,
        bare as f64 / secs,
        100.0 * ours as f64 / bare as f64,
        auto as f64 / secs,
        100.0 * ours as f64 / auto as f64
    );
}

fn ratios() {
    println!("\nissue 11 targets, from criterion's runs above:");
    if let (Some(ours), Some(bare), auto) = (
        mean_ns("single", "append"),
        mean_ns("single", "bare_insert_commit"),
        mean_ns("single", "bare_insert_autocommit"),
    ) {
        println!(
            "  single append latency {:.0} µs = {:.2}x bare INSERT+COMMIT ({:.0} µs; target <= 1.5x){}",
            ours / 1e3,
            ours / bare,
            bare / 1e3,
            auto.map_or(String::new(), |a| format!(
                "; {:.2}x an autocommit INSERT ({:.0} µs)",
                ours / a,
                a / 1e3
            ))
        );
    }
    if let (Some(ours), Some(bare)) = (
        mean_ns("writers16", "append"),
        mean_ns("writers16", "bare_insert_commit"),
    ) {
        // Each iteration is one operation on each of 16 threads.
        let rate = |ns: f64| WRITERS as f64 * 1e9 / ns;
        println!(
            "  16 writers: {:.0} appends/s = {:.0}% of bare INSERT+COMMIT from 16 connections ({:.0}/s; target >= 60%)",
            rate(ours),
            100.0 * bare / ours,
            rate(bare)
        );
    }
    if let Some(b) = mean_ns("batch", "append_batch_256") {
        println!(
            "  append_batch of 256: {:.0} events/s (target >= 50,000)",
            256.0 * 1e9 / b
        );
    }
    if let (Some(s), Some(g)) = (mean_ns("read", "stream_1000"), mean_ns("read", "get")) {
        println!(
            "  stream of 1000 events: {:.2} ms; get by id: {:.0} µs",
            s / 1e6,
            g / 1e3
        );
    }
}

fn main() {
    let Some(url) = testing::cluster_url() else {
        return;
    };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    single(&mut c, url);
    writers16(&mut c, url);
    batch(&mut c, url);
    reads(&mut c, url);
    c.final_summary();
    ratios();
    if std::env::args().all(|a| a != "--list") {
        println!("\nthe same targets, with both sides interleaved:");
        paired_latency(url);
        paired_writers(url);
    }
}
