//! A filling disk (issue 6, item 6): the store runs on a small tmpfs
//! (mounted by the test; skipped with a message where that is not allowed)
//! and appends until the disk is full. The failing append must report a
//! clear error, no success may be reported for data that is not there,
//! later appends must fail clearly too (or succeed for real), and after
//! reopening — read-only on the full disk, writable on a copy — every
//! acknowledged event is intact (see `support_crash::check_store`).
//!
//! Seeded: a failure prints `BATPAK_DISK_FULL_SEED=<seed>`; rerun with it set.

mod common;
mod support_crash;

use batpak::prelude::*;
use common::{coord, KIND_A};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use support_crash::*;

const SEED_ENV: &str = "BATPAK_DISK_FULL_SEED";
const ENTITIES: u64 = 5;

// ---- a small tmpfs --------------------------------------------------------

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) where mounting is not possible: not Linux,
    /// not root, no permission.
    fn mount(size: &str) -> Option<Self> {
        if !cfg!(target_os = "linux") {
            println!("skipped: tmpfs needs Linux");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                println!(
                    "skipped: cannot mount a tmpfs ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a failing test left a store open): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

// ---- writing until the disk is full ---------------------------------------

/// An append that failed: what it was and why.
#[derive(Debug)]
struct Failed {
    /// The `x` of its payload(s).
    x: u64,
    batch: bool,
    error: String,
    /// The call returned `Poisoned`: it may have reached the log before the
    /// writer stopped, so it may reappear after a reopen.
    poisoned: bool,
}

/// What a clear disk-full error is: ENOSPC itself, or the writer refusing
/// to go on after it (`Poisoned`), possibly wrapped in `BatchFailed`.
fn clear_error(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::Io(io)
            if io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(libc::ENOSPC) =>
        {
            Some("ENOSPC")
        }
        StoreError::Poisoned(_) => Some("Poisoned"),
        StoreError::BatchFailed { source, .. } => clear_error(source),
        _ => None,
    }
}

fn is_poisoned(e: &StoreError) -> bool {
    match e {
        StoreError::Poisoned(_) => true,
        StoreError::BatchFailed { source, .. } => is_poisoned(source),
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mix {
    Singles,
    Batches,
    Both,
}

/// Appends with payloads `x` = 0, 1, 2, … (a batch shares one `x`), and
/// records what was acknowledged and what failed.
struct Writer<'a> {
    store: &'a Store,
    rng: Rng,
    next_x: u64,
    /// Keyed appends: every single append uses an idempotency key.
    keyed: bool,
    max_pad: u64,
    acked: Vec<Acked>,
    failed: Vec<Failed>,
}

impl<'a> Writer<'a> {
    fn new(store: &'a Store, seed: u64, max_pad: u64) -> Self {
        Self {
            store,
            rng: Rng::new(seed),
            next_x: 0,
            keyed: false,
            max_pad,
            acked: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn entity(&mut self) -> String {
        format!("e{}", self.rng.range(0, ENTITIES - 1))
    }

    /// One append of `mix`; `Err` (recorded in `failed`) if it failed.
    fn attempt(&mut self, mix: Mix) -> Result<(), StoreError> {
        let x = self.next_x;
        self.next_x += 1;
        let batch = match mix {
            Mix::Singles => false,
            Mix::Batches => true,
            Mix::Both => self.rng.chance(1, 3),
        };
        let result = if batch {
            let n = self.rng.range(2, 16) as usize;
            let tag = format!("b{x}");
            let plan: Vec<_> = (0..n)
                .map(|k| {
                    let entity = self.entity();
                    let p = payload(&tag, n, k, self.rng.range(0, self.max_pad) as usize, x);
                    (entity, p)
                })
                .collect();
            let items = plan
                .iter()
                .map(|(entity, p)| {
                    BatchAppendItem::new(
                        coord(entity, "s"),
                        KIND_A,
                        p,
                        AppendOptions::new(),
                        CausationRef::None,
                    )
                    .unwrap()
                })
                .collect();
            self.store.append_batch(items).map(|rs| {
                assert_eq!(rs.len(), n);
                for (r, (entity, p)) in rs.iter().zip(&plan) {
                    self.acked.push(Acked::new(r, entity, p, false));
                }
            })
        } else {
            let entity = self.entity();
            let p = payload("", 0, 0, self.rng.range(0, self.max_pad) as usize, x);
            let opts = if self.keyed {
                AppendOptions::new().with_idempotency(u128::from(x) + 1)
            } else {
                AppendOptions::new()
            };
            self.store
                .append_with_options(&coord(&entity, "s"), KIND_A, &p, opts)
                .map(|r| self.acked.push(Acked::new(&r, &entity, &p, self.keyed)))
        };
        result.inspect_err(|e| {
            self.failed.push(Failed {
                x,
                batch,
                error: e.to_string(),
                poisoned: is_poisoned(e),
            });
        })
    }

    /// Append until an append fails; that failure must be a clear error.
    /// Returns how many appends succeeded.
    fn until_full(&mut self, mix: Mix, limit: usize) -> usize {
        for n in 0..limit {
            if let Err(e) = self.attempt(mix) {
                assert!(
                    clear_error(&e).is_some(),
                    "append {n} failed with an unclear error: {e:?}"
                );
                return n;
            }
        }
        panic!("{limit} appends never filled the disk");
    }

    /// A few more appends on the full disk: each fails clearly, or succeeds
    /// for real (it found room the first one did not, e.g. a smaller
    /// payload, or a partly created segment file that was removed).
    fn after_full(&mut self, mix: Mix, tries: usize) -> (usize, usize) {
        let (mut failed, mut ok) = (0, 0);
        for _ in 0..tries {
            match self.attempt(mix) {
                Ok(()) => ok += 1,
                Err(e) => {
                    assert!(
                        clear_error(&e).is_some(),
                        "an append on a full disk failed with an unclear error: {e:?}"
                    );
                    failed += 1;
                }
            }
        }
        (failed, ok)
    }

    /// While the store is still open: every acknowledged event reads back.
    fn check_live(&self) {
        for a in &self.acked {
            let ev = self
                .store
                .get(a.event_id)
                .unwrap_or_else(|e| panic!("acknowledged {a:?} unreadable while open: {e}"));
            assert_eq!(digest(&ev.event.payload), a.digest, "{a:?}");
        }
    }
}

/// After a reopen: everything `check_store` checks, and no failed append
/// left a trace (a `Poisoned` one may have reached the log; batches are
/// all-or-nothing regardless).
fn check_reopened(store: &Store, acked: &[Acked], failed: &[Failed]) -> Checked {
    let checked = check_store(store, acked);
    for f in failed {
        if !f.poisoned {
            assert!(
                !checked.payload_x.contains(&f.x),
                "a failed append reappeared after reopen: {f:?}"
            );
        }
    }
    assert_verify_clean(store, "after reopening");
    checked
}

/// Copy every file of `from` into a fresh directory on the normal disk.
fn copy_out(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
        }
    }
    to
}

/// One scenario: a tmpfs of `size`, a store with `cfg`, appends of `mix`
/// until full; then the checks of the module doc.
fn fill_and_check(name: &str, size: &str, mix: Mix, cfg: impl Fn(&Path) -> StoreConfig) {
    let seed = seed_from_env(SEED_ENV);
    let _guard = OnFailure(format!("{SEED_ENV}={seed} ({name})"));
    let Some(fs) = Tmpfs::mount(size) else {
        return;
    };
    let dir: PathBuf = fs.path().join("store");
    let store = Store::open(cfg(&dir)).unwrap();
    let mut w = Writer::new(&store, seed, 3000);
    let before = w.until_full(mix, 1_000_000);
    let first_error = w.failed[0].error.clone();
    let (later_failed, later_ok) = w.after_full(mix, 5);
    w.check_live();
    let poisoned = store.diagnostics().poisoned;
    let Writer { acked, failed, .. } = w;
    let closed = store.close().err();
    assert!(
        closed.as_ref().is_none_or(|e| clear_error(e).is_some()),
        "close on a full disk: {closed:?}"
    );

    // Read-only, on the full disk.
    let ro = Store::open_read_only(cfg(&dir)).expect("read-only open of a full disk");
    let checked = check_reopened(&ro, &acked, &failed);
    drop(ro);

    // Writable, on a copy with room to spare: the store goes on.
    let copy = copy_out(&dir);
    let store = Store::open(cfg(copy.path())).expect("open of the copy");
    check_reopened(&store, &acked, &failed);
    let mut more = acked.clone();
    for i in 0..20u64 {
        let p = payload("", 0, 0, 100, 1_000_000 + i);
        let r = store.append(&coord("after", "s"), KIND_A, &p).unwrap();
        more.push(Acked::new(&r, "after", &p, false));
    }
    store.close().unwrap();
    let store = Store::open(cfg(copy.path())).unwrap();
    let again = check_reopened(&store, &more, &failed);
    assert_eq!(again.events, checked.events + 20);
    drop(store);

    // Writable, in place on the full disk: opens (and finds everything) or
    // refuses clearly.
    let in_place = match Store::open(cfg(&dir)) {
        Ok(store) => {
            check_reopened(&store, &acked, &failed);
            let r = store.append(&coord("after", "s"), KIND_A, &"x");
            let what = match &r {
                Ok(_) => "opened, and an append succeeded".to_owned(),
                Err(e) => {
                    assert!(clear_error(e).is_some(), "append after reopen: {e:?}");
                    format!("opened, append failed: {e}")
                }
            };
            drop(store);
            what
        }
        Err(e) => {
            assert!(clear_error(&e).is_some(), "open on a full disk: {e:?}");
            format!("open refused: {e}")
        }
    };
    println!(
        "{name}: seed {seed}: {before} appends fit ({} events, {} batches, {} segments); \
         first failure: {first_error}; afterwards {later_failed} failed, {later_ok} succeeded; \
         poisoned: {poisoned:?}; close: {:?}; in place: {in_place}",
        checked.events,
        checked.batches,
        common::segment_files(&dir).len(),
        closed.map(|e| e.to_string()),
    );
}

fn durable_default(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
}

fn durable_small(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir).with_segment_max_bytes(64 * 1024)
}

fn relaxed_small(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
        .with_segment_max_bytes(64 * 1024)
        .with_sync_every_n_events(16)
}

#[test]
fn single_appends_until_the_disk_is_full() {
    fill_and_check(
        "single_appends_until_the_disk_is_full",
        "4m",
        Mix::Singles,
        durable_default,
    );
}

#[test]
fn batches_until_the_disk_is_full() {
    fill_and_check(
        "batches_until_the_disk_is_full",
        "4m",
        Mix::Batches,
        durable_default,
    );
}

/// Small segments: the failure lands on a rotation (segment creation and
/// its preallocation) as often as inside a segment.
#[test]
fn small_segments_until_the_disk_is_full() {
    for (i, size) in ["1m", "2m"].into_iter().enumerate() {
        for mix in [Mix::Singles, Mix::Batches, Mix::Both] {
            fill_and_check(
                &format!("small_segments_until_the_disk_is_full ({size}, {mix:?}, round {i})"),
                size,
                mix,
                durable_small,
            );
        }
    }
}

/// Relaxed mode (`sync_every_n_events`): blocks are reserved with
/// `fallocate` and frames written through the mapping.
#[test]
fn relaxed_mode_until_the_disk_is_full() {
    for mix in [Mix::Singles, Mix::Both] {
        fill_and_check(
            &format!("relaxed_mode_until_the_disk_is_full ({mix:?})"),
            "2m",
            mix,
            relaxed_small,
        );
    }
}

/// Another file takes the space while the store is open; once it is
/// removed, the store (or a reopened one) goes on, and nothing
/// acknowledged is lost.
#[test]
fn disk_filled_by_another_file_while_the_store_is_open() {
    // Default segments grow up to 8 MiB ahead of the writer: their tmpfs
    // leaves room for that before the filler takes the rest.
    let durable_small = durable_small as fn(&Path) -> StoreConfig;
    for (name, size, max_pad, cfg) in [
        ("small segments", "8m", 1500, durable_small),
        ("default segments", "16m", 8000, durable_default),
        ("relaxed", "8m", 1500, relaxed_small),
    ] {
        filled_by_another_file(name, size, max_pad, cfg);
    }
}

fn filled_by_another_file(name: &str, size: &str, max_pad: u64, cfg: fn(&Path) -> StoreConfig) {
    let seed = seed_from_env(SEED_ENV);
    let _guard = OnFailure(format!(
        "{SEED_ENV}={seed} (filled by another file, {name})"
    ));
    let Some(fs) = Tmpfs::mount(size) else {
        return;
    };
    let dir = fs.path().join("store");
    let store = Store::open(cfg(&dir)).unwrap();
    let mut w = Writer::new(&store, seed, max_pad);
    w.keyed = true;
    for _ in 0..100 {
        w.attempt(Mix::Both)
            .expect("room to spare before the filler");
    }
    // Take the rest of the disk.
    let filler_path = fs.path().join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut filled = 0u64;
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    assert!(filled > 0);
    let before = w.until_full(Mix::Both, 1_000_000);
    let first_error = w.failed.last().unwrap().error.clone();
    let (later_failed, later_ok) = w.after_full(Mix::Both, 3);
    w.check_live();

    // Room again: the store goes on, or says it needs reopening.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    let failed_singles: Vec<u64> = w.failed.iter().filter(|f| !f.batch).map(|f| f.x).collect();
    let mut recovered = 0;
    let mut still_failing = Vec::new();
    for _ in 0..20 {
        match w.attempt(Mix::Both) {
            Ok(()) => recovered += 1,
            Err(e) => {
                assert!(clear_error(&e).is_some(), "after freeing space: {e:?}");
                still_failing.push(e.to_string());
            }
        }
    }
    let poisoned = store.diagnostics().poisoned;
    assert!(
        recovered == 20 || poisoned.is_some(),
        "space is free again, but appends fail without the store being poisoned: {still_failing:?}"
    );
    w.check_live();
    let Writer {
        mut acked, failed, ..
    } = w;
    drop(store);

    // Reopen in place (there is room now): everything acknowledged is
    // there, and a failed keyed append retried now lands exactly once.
    let store = Store::open(cfg(&dir)).unwrap();
    check_reopened(&store, &acked, &failed);
    for x in &failed_singles {
        let entity = "retried";
        let p = payload("", 0, 0, 10, *x);
        let opts = AppendOptions::new().with_idempotency(u128::from(*x) + 1);
        match store.append_with_options(&coord(entity, "s"), KIND_A, &p, opts) {
            Ok(r) => acked.push(Acked::new(&r, entity, &p, true)),
            // The first attempt did land (it failed with `Poisoned` after
            // reaching the log): then the key is taken by its entity.
            Err(StoreError::IdempotencyConflict { .. }) => {
                assert!(failed.iter().any(|f| f.x == *x && f.poisoned));
            }
            Err(e) => panic!("retry of failed append {x}: {e}"),
        }
    }
    // The segment's growth ahead of the writer may have taken the room
    // again: then only the checkpoint fails to be written (everything is
    // synced before it), with a clear error.
    if let Err(e) = store.close() {
        assert_eq!(clear_error(&e), Some("ENOSPC"), "close: {e:?}");
    }
    let store = Store::open(cfg(&dir)).unwrap();
    let checked = check_store(&store, &acked);
    println!(
        "disk filled by another file ({name}): seed {seed}: filler {filled} bytes; {before} appends \
         fit; first failure: {first_error}; then {later_failed} failed, {later_ok} succeeded; after \
         freeing space: {recovered} of 20 succeeded (poisoned: {poisoned:?}); {} events after \
         reopening, {} failed singles retried",
        checked.events,
        failed_singles.len(),
    );
}

/// What a full disk leaves when a rotation fails at once: the next segment
/// file exists but is empty (created, no room for its first block). A
/// writable open removes it; a read-only open must not call it damage.
/// (No tmpfs needed: the empty file is made by hand.)
#[test]
fn read_only_open_after_a_failed_segment_creation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(durable_small(dir.path())).unwrap();
    let mut acked = Vec::new();
    for i in 0..150u64 {
        let entity = format!("e{}", i % 3);
        let p = payload("", 0, 0, 600, i);
        let r = store.append(&coord(&entity, "s"), KIND_A, &p).unwrap();
        acked.push(Acked::new(&r, &entity, &p, false));
    }
    store.close().unwrap();
    let newest = acked.last().unwrap().segment_id;
    std::fs::File::create(dir.path().join(format!("{:020}.seg", newest + 1))).unwrap();

    let ro = Store::open_read_only(durable_small(dir.path())).unwrap();
    let d = ro.diagnostics().recovery;
    assert!(
        d.damaged.is_empty(),
        "an empty newest segment is reported as damage: {:?}",
        d.damaged
    );
    check_store(&ro, &acked);
    drop(ro);
    let store = Store::open(durable_small(dir.path())).unwrap();
    assert!(store.diagnostics().recovery.damaged.is_empty());
    check_store(&store, &acked);
}
