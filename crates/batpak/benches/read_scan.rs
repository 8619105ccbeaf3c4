//! Read-path throughput (issue 14, item 4): entity stream scans, a region
//! query over everything, a guaranteed cursor over everything, and random
//! `get`, on one store of 200,000 events (~120-byte payloads) over 100
//! entities in 8 MiB segments (all but the last sealed). Public API only,
//! so the same file measures any version of the store.
//!
//! `cargo bench -p batpak --bench read_scan -- --warm-up-time 1 --measurement-time 3`
//!
//! With `BATPAK_BENCH_CPU_TIME=1` each iteration is timed by the calling
//! thread's CPU time (user + system, page faults included) instead of the
//! wall clock: on a shared, oversubscribed machine the wall clock also
//! counts the time other processes held the core, and swings by 2x from one
//! run to the next.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};
use std::hint::black_box;

const EVENTS: u64 = 200_000;
const ENTITIES: usize = 100;

fn reads<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let dir = tempfile::tempdir().unwrap();
    let ids = build_store(dir.path(), EVENTS, ENTITIES, 8 * 1024 * 1024);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut g = c.benchmark_group("read_scan");

    // Every entity's stream once per iteration: 200k entries.
    let names: Vec<String> = (0..ENTITIES).map(|i| format!("order:{i}")).collect();
    assert_eq!(
        store.stream(&names[42]).len() as u64,
        EVENTS / ENTITIES as u64
    );
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("stream_all_entities_200k", |b| {
        b.iter(|| {
            let mut n = 0;
            for name in &names {
                n += black_box(store.stream(name)).len();
            }
            n
        })
    });

    g.bench_function("query_all_200k", |b| {
        b.iter(|| black_box(store.query(&Region::all())).len())
    });

    g.bench_function("cursor_all_200k", |b| {
        b.iter(|| {
            let mut cursor = store.cursor_guaranteed(&Region::all());
            let mut n = 0;
            loop {
                let batch = cursor.poll_batch(4096);
                if batch.is_empty() {
                    break;
                }
                n += black_box(batch).len();
            }
            assert_eq!(n as u64, EVENTS);
            n
        })
    });

    g.throughput(Throughput::Elements(1));
    let sealed = &ids[..ids.len() * 9 / 10];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("get_random_sealed", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            store
                .get(sealed[(x % sealed.len() as u64) as usize])
                .unwrap()
        })
    });
    g.finish();
}

/// The calling thread's CPU time, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        for v in values.iter_mut() {
            *v /= 1000.0;
        }
        "µs (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let n = match throughput {
            Throughput::Elements(n) => *n as f64,
            _ => 1.0,
        };
        for v in values.iter_mut() {
            // Millions of elements per CPU second.
            *v = n * 1e3 / *v;
        }
        "Melem/s (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn main() {
    if std::env::var_os("BATPAK_BENCH_CPU_TIME").is_some() {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args();
        reads(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        reads(&mut c);
        c.final_summary();
    }
}
