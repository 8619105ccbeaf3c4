//! End-to-end tests of the `batpak` binary: every subcommand run as a
//! process on real stores in temporary directories, failures included.
//! Stores are built and checked through the library itself.

use batpak::event::FLAG_REQUIRES_ACK;
use batpak::prelude::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn batpak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batpak"))
        .args(args)
        .output()
        .expect("run batpak")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Stdout of a run that must succeed.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "batpak failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// Stderr of a run that must fail with `code`.
fn fails(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn ndjson(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn hex(id: u128) -> String {
    format!("{id:032x}")
}

/// Ids of the fixture's events, in append order.
struct Fixture {
    /// order:1@tenant:a, root of tree A.
    a1: u128,
    /// stock:tea@tenant:a, caused by a1, flagged.
    a2: u128,
    /// order:1@tenant:a, caused by a2 (order:1 clock 1).
    a3: u128,
    /// order:2@tenant:b, root of tree B.
    b1: u128,
    /// order:1@tenant:b, caused by b1 (order:1 clock 2).
    b2: u128,
}

impl Fixture {
    fn all(&self) -> Vec<u128> {
        vec![self.a1, self.a2, self.a3, self.b1, self.b2]
    }
}

fn populate(dir: &Path) -> Fixture {
    let store = Store::open(StoreConfig::new(dir)).expect("open");
    let c = |e: &str, s: &str| Coordinate::new(e, s).expect("coordinate");
    let a1 = store
        .append(
            &c("order:1", "tenant:a"),
            EventKind::custom(1, 1),
            &json!({"sku": "tea"}),
        )
        .expect("append")
        .event_id;
    let a2 = store
        .append_with_options(
            &c("stock:tea", "tenant:a"),
            EventKind::custom(2, 1),
            &json!({"reserved": 2, "note": "quote \" and <tag>"}),
            AppendOptions::new()
                .with_correlation(a1)
                .with_causation(a1)
                .with_flags(FLAG_REQUIRES_ACK),
        )
        .expect("append")
        .event_id;
    let a3 = store
        .append_reaction(
            &c("order:1", "tenant:a"),
            EventKind::custom(1, 2),
            &json!({"paid": true}),
            a1,
            a2,
        )
        .expect("append")
        .event_id;
    let b1 = store
        .append(
            &c("order:2", "tenant:b"),
            EventKind::custom(1, 1),
            &json!([1, 2, 3]),
        )
        .expect("append")
        .event_id;
    let b2 = store
        .append_reaction(
            &c("order:1", "tenant:b"),
            EventKind::custom(1, 3),
            &json!(null),
            b1,
            b1,
        )
        .expect("append")
        .event_id;
    store.close().expect("close");
    Fixture { a1, a2, a3, b1, b2 }
}

fn fixture() -> (tempfile::TempDir, Fixture) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = populate(&tmp.path().join("store"));
    (tmp, f)
}

fn ids_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| v["event_id"].as_str().expect("event_id").to_string())
        .collect()
}

#[test]
fn demo_runs_twice_and_honours_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let positional = tmp.path().join("positional");
    let first = ok(&batpak(&["demo", path(&positional)]));
    assert!(first.contains("order:1001"));
    let second = ok(&batpak(&["demo", path(&positional)]));
    assert!(second.contains("rerun"), "{second}");

    let via_dir = tmp.path().join("via-dir");
    ok(&batpak(&["--dir", path(&via_dir), "demo"]));
    let stats: Value =
        serde_json::from_str(&ok(&batpak(&["--dir", path(&via_dir), "stats", "--json"])))
            .expect("json");
    assert_eq!(stats["event_count"], 6);
}

#[test]
fn inspection_of_a_missing_store_fails_without_creating_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope");
    let d = path(&missing);
    let id = hex(1);
    for args in [
        vec!["stats"],
        vec!["ls"],
        vec!["query", "--json"],
        vec!["get", &id],
        vec!["tail", "--timeout", "0"],
        vec!["export"],
        vec!["graph", &id],
    ] {
        let mut full = vec!["--dir", d];
        full.extend(args.iter().copied());
        let err = fails(&batpak(&full), 4);
        assert!(err.contains("no store at"), "{args:?}: {err}");
    }
    assert!(!missing.exists(), "an inspection command created the store");

    // An existing directory that never held a store is no store either.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = fails(&batpak(&["--dir", path(&empty), "stats"]), 4);
    assert!(err.contains("no segment files"), "{err}");
}

#[test]
fn stats_as_table_and_json() {
    let (tmp, _) = fixture();
    let dir = tmp.path().join("store");
    let table = ok(&batpak(&["--dir", path(&dir), "stats"]));
    for label in [
        "events",
        "next sequence",
        "entities",
        "segments",
        "index memory",
    ] {
        assert!(table.contains(label), "{label} missing: {table}");
    }
    assert!(!table.contains('\x1b'), "colour codes in piped output");
    let v: Value = serde_json::from_str(&ok(&batpak(&["stats", "--dir", path(&dir), "--json"])))
        .expect("json");
    assert_eq!(v["event_count"], 5);
    assert_eq!(v["next_global_sequence"], 5);
    assert_eq!(
        v["entity_count"], 3,
        "order:1 spans two scopes but is one entity"
    );
    assert!(v["recovery"]["open_path"].is_string());
    assert!(v["index_heap_bytes"].as_u64().is_some_and(|b| b > 0));
}

#[test]
fn ls_and_query_filters() {
    let (tmp, f) = fixture();
    let dir = tmp.path().join("store");
    let d = path(&dir);
    let list = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--dir", d, "ls", "--json"];
        args.extend_from_slice(extra);
        ids_of(&ndjson(&ok(&batpak(&args))))
    };
    let h = |ids: &[u128]| ids.iter().map(|&i| hex(i)).collect::<Vec<_>>();
    let root = hex(f.a1);

    assert_eq!(list(&[]), h(&f.all()));
    assert_eq!(list(&["--entity", "order:1"]), h(&[f.a1, f.a3, f.b2]));
    assert_eq!(
        list(&["--entity-prefix", "order:"]),
        h(&[f.a1, f.a3, f.b1, f.b2])
    );
    assert_eq!(list(&["--scope", "tenant:b"]), h(&[f.b1, f.b2]));
    assert_eq!(list(&["--kind", "0x1001"]), h(&[f.a1, f.b1]));
    assert_eq!(list(&["--kind", "4097"]), h(&[f.a1, f.b1]));
    assert_eq!(list(&["--category", "2"]), h(&[f.a2]));
    assert_eq!(list(&["--clock-range", "1..1"]), h(&[f.a3]));
    assert_eq!(list(&["--clock-range", "1.."]), h(&[f.a3, f.b2]));
    assert_eq!(list(&["--correlation", &root]), h(&[f.a1, f.a2, f.a3]));
    assert_eq!(
        list(&["--correlation", &root, "--entity", "order:1"]),
        h(&[f.a1, f.a3])
    );
    assert_eq!(list(&["--limit", "2"]), h(&[f.a1, f.a2]));
    assert_eq!(list(&["--newest-first", "--limit", "1"]), h(&[f.b2]));

    let lines = ndjson(&ok(&batpak(&[
        "--dir",
        d,
        "query",
        "--json",
        "--category",
        "2",
    ])));
    assert_eq!(lines.len(), 1);
    let e = &lines[0];
    assert_eq!(e["causation_id"], json!(root));
    assert_eq!(e["correlation_id"], json!(root));
    assert_eq!(e["kind"], 0x2001);
    assert_eq!(e["entity"], "stock:tea");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    let table = ok(&batpak(&["--dir", d, "ls"]));
    assert!(table.starts_with("seq"), "{table}");
    for col in [
        "entity",
        "scope",
        "kind",
        "clock",
        "time",
        "id",
        "caused by",
    ] {
        assert!(table.lines().next().is_some_and(|l| l.contains(col)));
    }
    assert!(table.contains("stock:tea") && table.contains("0x2001"));
    assert!(table.contains("5 events"));
    assert!(!table.contains('\x1b'));
    let wide = ok(&batpak(&["--dir", d, "ls", "--full-ids"]));
    assert!(wide.contains(&hex(f.b2)));

    let err = fails(
        &batpak(&["--dir", d, "ls", "--kind", "1", "--category", "1"]),
        2,
    );
    assert!(err.contains("cannot be used with"), "{err}");
    fails(&batpak(&["--dir", d, "ls", "--clock-range", "5..2"]), 2);
}

#[test]
fn get_shows_one_event() {
    let (tmp, f) = fixture();
    let dir = tmp.path().join("store");
    let d = path(&dir);
    let id = hex(f.a2);
    let human = ok(&batpak(&["--dir", d, "get", &id]));
    for needle in [
        id.as_str(),
        "stock:tea",
        "0x2001",
        "requires-ack",
        "prev hash",
        "event hash",
        "\"reserved\": 2",
    ] {
        assert!(human.contains(needle), "{needle} missing: {human}");
    }

    let uuid = format!(
        "event:{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    );
    let v: Value =
        serde_json::from_str(&ok(&batpak(&["--dir", d, "get", &uuid, "--json"]))).expect("json");
    assert_eq!(v["event_id"], json!(id));
    assert_eq!(v["causation_id"], json!(hex(f.a1)));
    assert_eq!(v["flags"], 1);
    assert_eq!(v["global_sequence"], 1);
    assert_eq!(v["payload"]["note"], "quote \" and <tag>");
    assert_eq!(v["event_hash"].as_str().map(str::len), Some(64));

    let err = fails(&batpak(&["--dir", d, "get", &hex(42)]), 4);
    assert!(err.contains("no event"), "{err}");
    let err = fails(&batpak(&["--dir", d, "get", "…abcdef"]), 2);
    assert!(err.contains("32 hex digits"), "{err}");
}

#[test]
fn writes_to_a_locked_store_fail_clearly_while_reads_work() {
    let (tmp, f) = fixture();
    let dir = tmp.path().join("store");
    let d = path(&dir);
    let export = tmp.path().join("export.ndjson");
    ok(&batpak(&["--dir", d, "export", "--out", path(&export)]));

    let owner = Store::open(StoreConfig::new(&dir)).expect("hold the lock");
    let err = fails(&batpak(&["--dir", d, "import", "--in", path(&export)]), 3);
    assert!(
        err.contains("locked") && err.contains("another process"),
        "{err}"
    );
    fails(&batpak(&["demo", d]), 3);

    // Inspection opens read-only and so works beside the owner.
    let lines = ndjson(&ok(&batpak(&["--dir", d, "ls", "--json"])));
    assert_eq!(lines.len(), 5);
    ok(&batpak(&["--dir", d, "get", &hex(f.b1)]));
    drop(owner);
}

#[test]
fn export_import_round_trip_preserves_ids_and_causal_links() {
    let (tmp, f) = fixture();
    let src = tmp.path().join("store");
    let dst = tmp.path().join("copy");
    let file = tmp.path().join("out").join("export.ndjson");
    std::fs::create_dir(tmp.path().join("out")).expect("mkdir");

    let stdout_export = ok(&batpak(&["--dir", path(&src), "export"]));
    let summary: Value = serde_json::from_str(&ok(&batpak(&[
        "--dir",
        path(&src),
        "--json",
        "export",
        "--out",
        path(&file),
    ])))
    .expect("json");
    assert_eq!(summary["exported"], 5);
    let written = std::fs::read_to_string(&file).expect("export file");
    assert_eq!(written, stdout_export);
    let lines = ndjson(&written);
    assert_eq!(
        ids_of(&lines),
        f.all().into_iter().map(hex).collect::<Vec<_>>()
    );
    for (seq, l) in lines.iter().enumerate() {
        assert_eq!(l["v"], 1);
        assert_eq!(l["global_sequence"], seq);
        for key in [
            "correlation_id",
            "causation_id",
            "entity",
            "scope",
            "kind",
            "flags",
            "timestamp_us",
            "clock",
            "payload",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }

    let import = |dir: &Path| -> Value {
        let out = ok(&batpak(&[
            "--dir",
            path(dir),
            "import",
            "--json",
            "--in",
            path(&file),
        ]));
        serde_json::from_str(&out).expect("json")
    };
    let first = import(&dst);
    assert_eq!(
        (first["imported"].clone(), first["already_present"].clone()),
        (json!(5), json!(0))
    );
    let again = import(&dst);
    assert_eq!(
        (again["imported"].clone(), again["already_present"].clone()),
        (json!(0), json!(5))
    );

    // Through stdin as well, and in human form.
    let mut child = Command::new(env!("CARGO_BIN_EXE_batpak"))
        .args(["--dir", path(&dst), "import"])
        .stdin(std::fs::File::open(&file).expect("open export"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let status = child.wait().expect("wait");
    assert!(status.success());
    let mut human = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut human)
        .expect("read");
    assert!(
        human.contains("imported 0 events") && human.contains("5 already present"),
        "{human}"
    );

    let a = Store::open_read_only(StoreConfig::new(&src)).expect("open src");
    let b = Store::open_read_only(StoreConfig::new(&dst)).expect("open copy");
    assert_eq!(b.stats().event_count, 5);
    for id in f.all() {
        let x = a.get(id).expect("original");
        let y = b.get(id).expect("imported");
        assert_eq!(y.coordinate, x.coordinate);
        let (hx, hy) = (&x.event.header, &y.event.header);
        assert_eq!(hy.correlation_id, hx.correlation_id);
        assert_eq!(hy.causation_id, hx.causation_id);
        assert_eq!(hy.event_kind, hx.event_kind);
        assert_eq!(hy.flags, hx.flags);
        assert_eq!(hy.position.sequence, hx.position.sequence, "entity clock");
        assert_eq!(y.event.payload, x.event.payload);
    }
    assert_eq!(b.by_correlation(f.a1).len(), 3);
    assert_eq!(b.children(f.a2).len(), 1);
}

#[test]
fn import_reports_bad_input_by_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let good = json!({"v":1,"event_id":hex(7),"correlation_id":hex(7),"causation_id":null,
        "entity":"e","scope":"s","kind":4097,"flags":0,"timestamp_us":0,"clock":0,
        "global_sequence":0,"payload":{}});
    let cases = [
        (format!("{good}\nnot json\n"), "line 2"),
        (
            format!("{}\n", good.to_string().replace("\"v\":1", "\"v\":2")),
            "version 2",
        ),
        (
            format!("{}\n", good.to_string().replace(&hex(7), "zz")),
            "not an event id",
        ),
    ];
    for (i, (input, needle)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("bad{i}.ndjson"));
        std::fs::write(&file, input).expect("write");
        let err = fails(
            &batpak(&["--dir", path(&dir), "import", "--in", path(&file)]),
            1,
        );
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let err = fails(
        &batpak(&[
            "--dir",
            path(&dir),
            "import",
            "--in",
            path(&tmp.path().join("none")),
        ]),
        1,
    );
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn tail_prints_existing_then_follows_the_owner() {
    let (tmp, f) = fixture();
    let dir = tmp.path().join("store");
    let d = path(&dir);

    // Existing events only: --max stops it, --timeout ends an idle follow.
    let two = ndjson(&ok(&batpak(&["--dir", d, "tail", "--json", "--max", "2"])));
    assert_eq!(ids_of(&two), vec![hex(f.a1), hex(f.a2)]);
    let last = ok(&batpak(&[
        "--dir",
        d,
        "tail",
        "-n",
        "1",
        "--timeout",
        "0.3",
    ]));
    assert!(
        last.contains("order:1") && last.contains("tenant:b"),
        "{last}"
    );
    assert_eq!(last.lines().count(), 2, "header and one event: {last}");
    // A timeout beyond what a clock can hold is no limit, not a panic.
    let huge = ndjson(&ok(&batpak(&[
        "--dir",
        d,
        "tail",
        "--json",
        "--max",
        "1",
        "--timeout",
        "1e30",
    ])));
    assert_eq!(ids_of(&huge), vec![hex(f.a1)]);

    let owner = Store::open(StoreConfig::new(&dir)).expect("owner");
    let mut child = Command::new(env!("CARGO_BIN_EXE_batpak"))
        .args([
            "--dir",
            d,
            "tail",
            "--json",
            "--new-only",
            "--scope",
            "tenant:a",
            "--max",
            "3",
            "--timeout",
            "30",
            "--interval-ms",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    // Append only once tail says it follows, so the events are new to it.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("following") {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "tail ended before following");
    }
    let started = Instant::now();
    let mut appended = Vec::new();
    for i in 0..4 {
        // The second event is in another scope and must be skipped.
        let scope = if i == 1 { "tenant:z" } else { "tenant:a" };
        let coord = Coordinate::new(format!("late:{i}"), scope).expect("coordinate");
        let r = owner
            .append(&coord, EventKind::custom(3, 1), &json!({ "i": i }))
            .expect("append");
        if i != 1 {
            appended.push(hex(r.event_id));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = child.wait_with_output().expect("wait tail");
    assert!(out.status.success(), "tail failed");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "tail waited for its timeout instead of stopping at --max"
    );
    let lines = ndjson(&String::from_utf8(out.stdout).expect("utf-8"));
    assert_eq!(ids_of(&lines), appended);
    owner.close().expect("close");
}

/// Tags open and close in order (a well-formedness check that needs no XML parser).
fn assert_balanced_tags(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "empty tag <{tag}>");
        if tag.starts_with('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.as_str()),
                "misnested </{name}>"
            );
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}

#[test]
fn graph_as_dot_svg_and_json() {
    let (tmp, f) = fixture();
    let dir = tmp.path().join("store");
    let d = path(&dir);
    let (a1, a2, a3) = (hex(f.a1), hex(f.a2), hex(f.a3));

    let dot = ok(&batpak(&["--dir", d, "graph", &a1]));
    assert!(dot.starts_with("digraph"), "{dot}");
    for id in [&a1, &a2, &a3] {
        assert!(
            dot.contains(&format!("\"{id}\" [")),
            "node {id} missing: {dot}"
        );
    }
    assert!(dot.contains(&format!("\"{a1}\" -> \"{a2}\"")), "{dot}");
    assert!(dot.contains(&format!("\"{a2}\" -> \"{a3}\"")), "{dot}");
    assert!(!dot.contains(&hex(f.b1)), "another tree leaked in");
    assert_eq!(dot.matches("->").count(), 2);

    // From a non-root event: the same tree, that event highlighted.
    let around = ok(&batpak(&["--dir", d, "graph", &a3]));
    assert!(around.contains(&format!("\"{a2}\" -> \"{a3}\"")));
    assert!(around.contains("penwidth"));

    let svg = ok(&batpak(&["--dir", d, "graph", &a2, "--svg"]));
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_balanced_tags(&svg);
    assert_eq!(svg.matches("<line ").count(), 2);
    assert!(svg.contains("stock:tea"));

    let file = tmp.path().join("g.svg");
    ok(&batpak(&[
        "--dir",
        d,
        "graph",
        &a1,
        "--svg",
        "--out",
        path(&file),
    ]));
    assert_balanced_tags(&std::fs::read_to_string(&file).expect("svg file"));

    let v: Value =
        serde_json::from_str(&ok(&batpak(&["--dir", d, "--json", "graph", &a1]))).expect("json");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["edges"][1], json!({"cause": a2, "effect": a3}));
    assert_eq!(v["nodes"][2]["depth"], 2);

    let err = fails(&batpak(&["--dir", d, "graph", &hex(99)]), 4);
    assert!(err.contains("no correlation id or event"), "{err}");
}

#[test]
fn bench_reports_every_figure() {
    let v: Value =
        serde_json::from_str(&ok(&batpak(&["bench", "--events", "2000", "--json"]))).expect("json");
    for key in [
        "durable_appends_per_sec",
        "relaxed_appends_per_sec",
        "durable_batch256_appends_per_sec",
        "random_gets_per_sec",
        "stream_scan_entries_per_sec",
        "cursor_scan_entries_per_sec",
        "open_ms",
        "fdatasync_per_sec",
    ] {
        assert!(
            v[key].as_f64().is_some_and(|x| x > 0.0),
            "{key} missing or not positive: {v}"
        );
    }
    assert!(v["open_path"].is_string());

    let table = ok(&batpak(&["bench", "--events", "300"]));
    for label in [
        "durable appends",
        "durable batch appends",
        "relaxed appends",
        "random get",
        "stream scan",
        "cursor scan",
        "reopen",
        "fdatasync reference",
    ] {
        assert!(table.contains(label), "{label} missing: {table}");
    }
}

/// A store with many small sealed segments: 300 events over 3 entities.
fn segmented(dir: &Path) {
    let store = Store::open(StoreConfig::new(dir).with_segment_max_bytes(4096)).unwrap();
    for i in 0..300u64 {
        let entity = format!("acct:{}", i % 3);
        let kind = if i % 4 == 0 {
            EventKind::custom(2, 2)
        } else {
            EventKind::custom(1, 1)
        };
        store
            .append(
                &Coordinate::new(&entity, "bank").unwrap(),
                kind,
                &json!({"i": i, "pad": "x".repeat(40)}),
            )
            .unwrap();
    }
    store.close().unwrap();
}

#[test]
fn verify_reports_clean_and_damaged_stores_by_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    segmented(dir.path());
    let out = ok(&batpak(&["verify", "--dir", path(dir.path())]));
    assert!(out.contains("clean"), "{out}");
    let v: Value = serde_json::from_str(&ok(&batpak(&[
        "verify",
        "--json",
        "--dir",
        path(dir.path()),
    ])))
    .unwrap();
    assert_eq!(v["clean"], true);
    assert_eq!(v["events_checked"], 300);
    // Flip one byte inside a frame of the first segment.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[64 + 200] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    let out = batpak(&["verify", "--json", "--dir", path(dir.path())]);
    fails(&out, 5);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    assert!(problems[0]["file"]
        .as_str()
        .unwrap()
        .ends_with(segs[0].file_name().unwrap().to_str().unwrap()));
}

#[test]
fn compact_packs_segments_up_to_the_target() {
    let dir = tempfile::tempdir().unwrap();
    segmented(dir.path());
    fails(
        &batpak(&[
            "compact",
            "--target-segment-bytes",
            "0",
            "--dir",
            path(dir.path()),
        ]),
        2,
    );
    let merge = || -> Value {
        serde_json::from_str(&ok(&batpak(&[
            "compact",
            "--json",
            "--target-segment-bytes",
            "16384",
            "--dir",
            path(dir.path()),
        ])))
        .unwrap()
    };
    let v = merge();
    let (before, after) = (
        v["segments_before"].as_u64().unwrap(),
        v["segments_after"].as_u64().unwrap(),
    );
    // Segments of 4 KiB, four to a 16 KiB target (the last sealed segment
    // and the active one may be partly full).
    assert!(before >= 15 && after <= before / 4 + 2, "{v}");
    assert_eq!(v["segments_removed"].as_u64().unwrap(), before - after);
    // Packed: a second run has nothing to do.
    let again = merge();
    assert_eq!(again["segments_removed"], 0, "{again}");
    assert_eq!(again["segments_after"].as_u64().unwrap(), after);
    let store = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.stats().event_count, 300);
    drop(store);
    ok(&batpak(&["verify", "--dir", path(dir.path())]));
}

#[test]
fn compact_merges_and_drops_by_filter() {
    let dir = tempfile::tempdir().unwrap();
    segmented(dir.path());
    // Filters need a filtering strategy, and the reverse.
    fails(
        &batpak(&[
            "compact",
            "--drop-kind",
            "0x2002",
            "--dir",
            path(dir.path()),
        ]),
        2,
    );
    fails(
        &batpak(&[
            "compact",
            "--strategy",
            "retention",
            "--dir",
            path(dir.path()),
        ]),
        2,
    );
    let v: Value = serde_json::from_str(&ok(&batpak(&[
        "compact",
        "--json",
        "--strategy",
        "retention",
        "--drop-kind",
        "0x2002",
        "--min-segments",
        "1",
        "--dir",
        path(dir.path()),
    ])))
    .unwrap();
    let removed = v["events_removed"].as_u64().unwrap();
    assert!(removed > 0 && removed <= 75, "{v}");
    let store = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.stats().event_count as u64, 300 - removed);
    // Only kind 2:2 went.
    assert_eq!(
        store.by_fact(EventKind::custom(2, 2)).len() as u64,
        75 - removed
    );
    drop(store);
    let v: Value = serde_json::from_str(&ok(&batpak(&[
        "compact",
        "--json",
        "--strategy",
        "tombstone",
        "--drop-entity-prefix",
        "acct:1",
        "--min-segments",
        "1",
        "--dir",
        path(dir.path()),
    ])))
    .unwrap();
    assert!(v["events_tombstoned"].as_u64().unwrap() > 0, "{v}");
    ok(&batpak(&["verify", "--dir", path(dir.path())]));
}

#[test]
fn snapshot_copies_a_store_even_while_another_process_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    segmented(dir.path());
    let dest = out.path().join("copy");
    ok(&batpak(&[
        "snapshot",
        path(&dest),
        "--dir",
        path(dir.path()),
    ]));
    let copy = Store::open_read_only(StoreConfig::new(&dest)).unwrap();
    assert_eq!(copy.stats().event_count, 300);
    drop(copy);
    // A non-empty destination is refused.
    fails(
        &batpak(&["snapshot", path(&dest), "--dir", path(dir.path())]),
        1,
    );
    // A directory that is not a store is not turned into one.
    let empty = tempfile::tempdir().unwrap();
    fails(
        &batpak(&[
            "snapshot",
            path(&out.path().join("x")),
            "--dir",
            path(empty.path()),
        ]),
        4,
    );
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
    fails(&batpak(&["compact", "--dir", path(empty.path())]), 4);
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
    // While this process holds the store, the CLI copies what it committed.
    let owner = Store::open(StoreConfig::new(dir.path())).unwrap();
    owner
        .append(
            &Coordinate::new("late", "bank").unwrap(),
            EventKind::custom(1, 1),
            &1,
        )
        .unwrap();
    let dest2 = out.path().join("live");
    let v: Value = serde_json::from_str(&ok(&batpak(&[
        "snapshot",
        "--json",
        path(&dest2),
        "--dir",
        path(dir.path()),
    ])))
    .unwrap();
    assert_eq!(v["owner_running"], true);
    assert_eq!(v["events"], 301);
    drop(owner);
    let copy = Store::open(StoreConfig::new(&dest2)).unwrap();
    assert_eq!(copy.stats().event_count, 301);
}

/// A PostgreSQL store for `--url` tests: its URL and schema, or `None`
/// when PostgreSQL is not available (the helper said so; under CI=true it
/// fails instead).
fn postgres_store() -> Option<(String, String)> {
    let cfg = batpak_postgres::testing::fresh_config()?;
    Some((cfg.url.clone(), cfg.schema.clone()))
}

/// Export lines without the store-specific `global_sequence`.
fn portable(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.as_object_mut().expect("object").remove("global_sequence");
            l
        })
        .collect()
}

#[test]
fn moving_between_backends_keeps_every_id_clock_time_and_hash() {
    let Some((url, schema)) = postgres_store() else {
        return;
    };
    let (tmp, f) = fixture();
    let src = tmp.path().join("store");
    let back = tmp.path().join("back");
    let from_file = tmp.path().join("from-file.ndjson");
    let from_pg = tmp.path().join("from-pg.ndjson");
    let pg = ["--url", url.as_str(), "--schema", schema.as_str()];

    ok(&batpak(&[
        "--dir",
        path(&src),
        "export",
        "--out",
        path(&from_file),
    ]));
    let lines = ndjson(&std::fs::read_to_string(&from_file).expect("export"));
    for key in ["hlc_counter", "content_hash", "prev_hash", "event_hash"] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "{key}");
    }
    let import = |args: &[&str], file: &Path| -> Value {
        let mut full = args.to_vec();
        full.extend(["--json", "import", "--in", path(file)]);
        serde_json::from_str(&ok(&batpak(&full))).expect("json")
    };
    let first = import(&pg, &from_file);
    assert_eq!(
        (first["imported"].clone(), first["already_present"].clone()),
        (json!(5), json!(0))
    );
    let again = import(&pg, &from_file);
    assert_eq!(
        (again["imported"].clone(), again["already_present"].clone()),
        (json!(0), json!(5))
    );

    let mut full = pg.to_vec();
    full.extend(["export", "--out", path(&from_pg)]);
    ok(&batpak(&full));
    let pg_lines = ndjson(&std::fs::read_to_string(&from_pg).expect("export"));
    assert_eq!(
        portable(&pg_lines),
        portable(&lines),
        "PostgreSQL kept everything"
    );
    assert!(pg_lines
        .windows(2)
        .all(|w| w[0]["global_sequence"].as_u64() < w[1]["global_sequence"].as_u64()));

    // And back into a directory.
    import(&["--dir", path(&back)], &from_pg);
    let again = tmp.path().join("again.ndjson");
    ok(&batpak(&[
        "--dir",
        path(&back),
        "export",
        "--out",
        path(&again),
    ]));
    let back_lines = ndjson(&std::fs::read_to_string(&again).expect("export"));
    assert_eq!(
        portable(&back_lines),
        portable(&lines),
        "the round trip kept everything"
    );

    let a = Store::open_read_only(StoreConfig::new(&src)).expect("open src");
    let b = Store::open_read_only(StoreConfig::new(&back)).expect("open copy");
    for id in f.all() {
        assert_eq!(b.get(id).expect("copy"), a.get(id).expect("original"));
    }
    let mut verify = pg.to_vec();
    verify.push("verify");
    assert!(ok(&batpak(&verify)).contains("clean"));
    assert!(ok(&batpak(&["--dir", path(&back), "verify"])).contains("clean"));

    // An import that would break a chain is refused and names the line.
    let gap = tmp.path().join("gap.ndjson");
    let text = std::fs::read_to_string(&from_file).expect("export");
    let without_first: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&gap, without_first.join("\n")).expect("write");
    let err = fails(
        &batpak(&[
            "--dir",
            path(&tmp.path().join("gapped")),
            "import",
            "--in",
            path(&gap),
        ]),
        1,
    );
    assert!(err.contains("does not continue its chain"), "{err}");
}

#[test]
fn inspection_commands_take_a_postgres_url() {
    let Some((url, schema)) = postgres_store() else {
        return;
    };
    let (tmp, f) = fixture();
    let file = tmp.path().join("export.ndjson");
    ok(&batpak(&[
        "--dir",
        path(&tmp.path().join("store")),
        "export",
        "--out",
        path(&file),
    ]));
    let pg = |args: &[&str]| -> Output {
        let mut full = vec!["--url", url.as_str(), "--schema", schema.as_str()];
        full.extend(args.iter().copied());
        batpak(&full)
    };
    ok(&pg(&["import", "--in", path(&file)]));

    let stats: Value = serde_json::from_str(&ok(&pg(&["--json", "stats"]))).expect("json");
    assert_eq!(stats["event_count"], 5);
    assert_eq!(stats["entity_count"], 3, "order:1 spans two scopes");
    assert!(stats["stable_position"].as_u64() >= stats["next_position"].as_u64());

    let listed = ndjson(&ok(&pg(&["--json", "ls", "--scope", "tenant:a"])));
    assert_eq!(ids_of(&listed), vec![hex(f.a1), hex(f.a2), hex(f.a3)]);
    let stream = ndjson(&ok(&pg(&["--json", "ls", "--entity", "order:1"])));
    assert_eq!(ids_of(&stream), vec![hex(f.a1), hex(f.a3), hex(f.b2)]);

    let got: Value = serde_json::from_str(&ok(&pg(&["--json", "get", &hex(f.a2)]))).expect("json");
    assert_eq!(got["causation_id"], hex(f.a1));
    assert_eq!(got["flags"], FLAG_REQUIRES_ACK);
    assert!(got["global_sequence"].is_u64());
    assert!(
        got["segment_id"].is_null(),
        "no disk position in PostgreSQL"
    );
    let human = ok(&pg(&["get", &hex(f.a2)]));
    assert!(human.contains("position"), "{human}");

    let graph: Value =
        serde_json::from_str(&ok(&pg(&["--json", "graph", &hex(f.a3)]))).expect("json");
    assert_eq!(graph["nodes"].as_array().expect("nodes").len(), 3);
    assert!(ok(&pg(&["graph", &hex(f.a1)])).starts_with("digraph"));

    let err = fails(&pg(&["get", &hex(12345)]), 4);
    assert!(err.contains("no event"), "{err}");
    let err = fails(
        &batpak(&["--url", url.as_str(), "--schema", "no_such_store", "stats"]),
        4,
    );
    assert!(err.contains("no batpak store"), "{err}");
    for cmd in [vec!["compact"], vec!["snapshot", "x"]] {
        let err = fails(&pg(&cmd), 2);
        assert!(err.contains("--url works with"), "{cmd:?}: {err}");
    }
    fails(&batpak(&["--url", url.as_str(), "--dir", "x", "stats"]), 2);

    // Damage behind the store's back: verify exits 5 and names it.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    db.execute(
        &format!("UPDATE {schema}.events SET flags = 7 WHERE event_id = $1"),
        &[&uuid::Uuid::from_u128(f.b1)],
    )
    .expect("update");
    let out = pg(&["--json", "verify"]);
    fails(&out, 5);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["clean"], false);
    assert_eq!(v["problems"][0]["event_id"], hex(f.b1));
    assert_eq!(v["problems"][0]["kind"], "EventHashMismatch");
}

/// `tail --url` lists what is stable, then follows commits of any writer
/// (here another connection pool, as another process would be), woken by
/// their notifications.
#[test]
fn tail_follows_a_postgres_store_written_by_another_process() {
    let Some((url, schema)) = postgres_store() else {
        return;
    };
    let writer = batpak_postgres::PgStore::open(
        batpak_postgres::PgConfig::new(url.clone()).with_schema(schema.clone()),
    )
    .expect("writer");
    let append = |entity: &str, scope: &str, i: u32| {
        let coord = Coordinate::new(entity, scope).expect("coordinate");
        hex(
            EventStore::append(&writer, &coord, EventKind::custom(3, 1), &json!({ "i": i }))
                .expect("append")
                .event_id,
        )
    };
    let existing = [append("a:1", "tenant:a", 0), append("a:2", "tenant:a", 1)];
    append("z:1", "tenant:z", 2);
    let pg = |args: &[&str]| -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_batpak"));
        c.args(["--url", url.as_str(), "--schema", schema.as_str()])
            .args(args);
        c
    };
    let listed = ndjson(&ok(&pg(&[
        "tail", "--json", "--scope", "tenant:a", "--max", "2",
    ])
    .output()
    .expect("tail")));
    assert_eq!(ids_of(&listed), existing.to_vec());
    let last = ndjson(&ok(&pg(&[
        "tail",
        "--json",
        "--scope",
        "tenant:a",
        "-n",
        "1",
        "--timeout",
        "0.3",
    ])
    .output()
    .expect("tail")));
    assert_eq!(ids_of(&last), vec![existing[1].clone()]);

    let mut child = pg(&[
        "tail",
        "--json",
        "--new-only",
        "--scope",
        "tenant:a",
        "--max",
        "3",
        "--timeout",
        "60",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn tail");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("following") {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "tail ended before following");
    }
    let started = Instant::now();
    let mut appended = Vec::new();
    for i in 0..4 {
        // The second event is in another scope and must be skipped.
        let scope = if i == 1 { "tenant:z" } else { "tenant:a" };
        let id = append(&format!("late:{i}"), scope, i);
        if i != 1 {
            appended.push(id);
        }
    }
    let out = child.wait_with_output().expect("wait tail");
    assert!(out.status.success(), "tail failed");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "tail waited for its timeout instead of stopping at --max"
    );
    let lines = ndjson(&String::from_utf8(out.stdout).expect("utf-8"));
    assert_eq!(ids_of(&lines), appended);
}

/// Events written at payload versions 2 and 3 move through an export, into
/// a directory and (when PostgreSQL is here) a PostgreSQL store and back,
/// with their versions and hashes; a line without `payload_version` is 1.
#[test]
fn payload_versions_survive_export_and_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("store");
    let ids: Vec<u128> = {
        let store = Store::open(StoreConfig::new(&src)).expect("open");
        let c = Coordinate::new("cart:1", "shop").expect("coordinate");
        let ids = [
            (1, json!({"name": "tea"})),
            (2, json!({"title": "cup"})),
            (3, json!({"title": "pot", "unit": "box"})),
        ]
        .into_iter()
        .map(|(version, payload)| {
            store
                .append_versioned(
                    &c,
                    EventKind::custom(6, 1),
                    &payload,
                    version,
                    AppendOptions::new(),
                )
                .expect("append")
                .event_id
        })
        .collect();
        store.close().expect("close");
        ids
    };
    let file = tmp.path().join("export.ndjson");
    ok(&batpak(&[
        "--dir",
        path(&src),
        "export",
        "--out",
        path(&file),
    ]));
    let lines = ndjson(&std::fs::read_to_string(&file).expect("export"));
    let versions: Vec<Value> = lines.iter().map(|l| l["payload_version"].clone()).collect();
    assert_eq!(versions, [Value::Null, json!(2), json!(3)]);

    let mut stores = vec![tmp.path().join("copy")];
    let copy_args = |dir: &Path| vec!["--dir".to_string(), path(dir).to_string()];
    let mut places: Vec<Vec<String>> = vec![copy_args(&stores[0])];
    if let Some((url, schema)) = postgres_store() {
        places.push(vec!["--url".into(), url, "--schema".into(), schema]);
        stores.push(tmp.path().join("back"));
        places.push(copy_args(&stores[1]));
    }
    // Each place imports the previous one's export (the first: the source's).
    let mut input = file.clone();
    for (i, place) in places.iter().enumerate() {
        let mut args: Vec<&str> = place.iter().map(String::as_str).collect();
        args.extend(["--json", "import", "--in", path(&input)]);
        let summary: Value = serde_json::from_str(&ok(&batpak(&args))).expect("json");
        assert_eq!(summary["imported"], 3, "{place:?}");
        let out = tmp.path().join(format!("export-{i}.ndjson"));
        let mut args: Vec<&str> = place.iter().map(String::as_str).collect();
        args.extend(["export", "--out", path(&out)]);
        ok(&batpak(&args));
        let again = ndjson(&std::fs::read_to_string(&out).expect("export"));
        assert_eq!(
            portable(&again),
            portable(&lines),
            "{place:?} kept everything"
        );
        input = out;
    }
    let original = Store::open_read_only(StoreConfig::new(&src)).expect("open src");
    for dir in &stores {
        let copy = Store::open_read_only(StoreConfig::new(dir)).expect("open copy");
        for (id, version) in ids.iter().zip([1u16, 2, 3]) {
            let v = copy.get_versioned(*id).expect("versioned");
            assert_eq!(v.payload_version, version);
            assert_eq!(v, original.get_versioned(*id).expect("original"));
        }
        assert!(ok(&batpak(&["--dir", path(dir), "verify"])).contains("clean"));
    }
}
