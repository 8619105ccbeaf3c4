//! Fault injection for crash and failure tests (feature `dangerous-test-hooks`).
//!
//! The store calls its configured [`FaultInjector`] at named points of the
//! write path, rotation, sync, footer and checkpoint writing, compaction,
//! snapshot and the read path; the injector
//! answers whether to go on, fail with [`StoreError::FaultInjected`], panic,
//! or abort the whole process (a crash, as far as the files are concerned).
//! Never enable this feature in production builds.
//!
//! [`StoreError::FaultInjected`]: crate::store::StoreError::FaultInjected

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A place in the store's code where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InjectionPoint {
    /// A batch passed validation; nothing is written yet.
    BatchValidated,
    /// Item `n` of a batch (or a single append, item 0) was copied into the log.
    ItemWritten(usize),
    /// Every frame of an append is in the log; the index is not updated yet.
    FramesWritten,
    /// The index holds the new events; they are not visible or synced yet.
    Indexed,
    /// A group-commit leader is about to write the buffered frames.
    BeforeFlush,
    /// The buffered frames are written; the fsync has not run.
    BeforeSync,
    /// The fsync returned successfully (return `Fail` to simulate `EIO`).
    Sync,
    /// A segment is full and about to be synced and sealed.
    BeforeRotate,
    /// The sealer wrote a sealed segment's footer (the next segment already
    /// exists: footers are written after rotation, in the background).
    FooterWritten,
    /// A new segment file was created and synced; the directory is not synced yet.
    SegmentCreated,
    /// The checkpoint's temporary file is written and synced.
    CheckpointWritten,
    /// The checkpoint was renamed into place; the directory is not synced yet.
    CheckpointRenamed,
    /// Compaction: a new segment is written and synced.
    CompactionSegmentWritten,
    /// Compaction: the next removed-event record is written; not committed yet.
    CompactionPrepared,
    /// Compaction: right after the commit point (the intent is durable).
    CompactionCommitted,
    /// Compaction: before each step of installing the new files.
    CompactionInstalling,
    /// Snapshot: the segment files are copied; the rest is not.
    SnapshotCopied,
    /// A writable open started one of its threads (in this order: the
    /// flusher; the grower; the sealer). `Fail` makes
    /// the open fail right there, as a later start-up step failing would.
    StoreThreadStarted,
    /// A reader picked its events and pinned their frames under the index
    /// lock, released the lock, and is about to read the frames. Only
    /// `Panic` and `Crash` act here (a read has no error to return); an
    /// injector may also block, to hold a reader at this point.
    ReadingFrames,
}

/// What to do at an injection point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Carry on normally.
    Continue,
    /// Return `StoreError::FaultInjected` from the operation.
    Fail,
    /// Panic on the calling thread.
    Panic,
    /// Abort the process immediately (no destructors, no flushing): a crash.
    Crash,
}

/// Name kept from the original crate's API.
pub type CountdownAction = FaultAction;

/// Decides what happens at each injection point.
pub trait FaultInjector: Send + Sync {
    /// Called every time the store passes `point`.
    fn on(&self, point: InjectionPoint) -> FaultAction;
}

/// Fires `action` on the `n`-th time (counting from 1) the store passes
/// `point`, and lets every other pass continue.
#[derive(Debug)]
pub struct CountdownInjector {
    point: InjectionPoint,
    remaining: AtomicU64,
    action: FaultAction,
}

impl CountdownInjector {
    /// Fire `action` on the `nth` pass of `point` (1 = the first pass).
    #[must_use]
    pub fn new(point: InjectionPoint, nth: u64, action: FaultAction) -> Self {
        Self {
            point,
            remaining: AtomicU64::new(nth.max(1)),
            action,
        }
    }

    /// Whether the fault has fired.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

impl FaultInjector for CountdownInjector {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point != self.point {
            return FaultAction::Continue;
        }
        let prev = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
        match prev {
            Ok(1) => self.action,
            _ => FaultAction::Continue,
        }
    }
}

/// Fires `action` at every point with probability `p`, from a seeded
/// generator, so a failing random run can be replayed.
#[derive(Debug)]
pub struct ProbabilisticInjector {
    threshold: u64,
    action: FaultAction,
    state: Mutex<u64>,
}

impl ProbabilisticInjector {
    /// `p` in `0.0..=1.0`; `seed` makes the sequence of decisions reproducible.
    #[must_use]
    pub fn new(p: f64, seed: u64, action: FaultAction) -> Self {
        Self {
            threshold: (p.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            action,
            state: Mutex::new(seed | 1),
        }
    }
}

impl FaultInjector for ProbabilisticInjector {
    fn on(&self, _point: InjectionPoint) -> FaultAction {
        let mut s = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // xorshift64*: small, seedable, good enough to pick crash points.
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if r < self.threshold {
            self.action
        } else {
            FaultAction::Continue
        }
    }
}

/// What [`Store::simulate_power_loss`](crate::store::Store::simulate_power_loss) discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PowerLoss {
    /// Bytes of segment files that were written but not yet synced (now zeros).
    pub bytes_discarded: u64,
    /// New segment files whose directory entry was not yet synced (now gone).
    pub files_removed: usize,
}

/// What simulated crashes left unsynced, by data directory, until the next
/// writable open of that directory takes it (see
/// [`Store::simulate_crash`](crate::store::Store::simulate_crash)): per
/// segment id, its synced length, or `None` when its directory entry may not
/// be durable.
type CrashLedger = std::collections::BTreeMap<u64, Option<u64>>;

static CRASH_LEDGERS: Mutex<Vec<(std::path::PathBuf, CrashLedger)>> = Mutex::new(Vec::new());

fn ledger_key(dir: &std::path::Path) -> std::path::PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

pub(crate) fn record_crash_ledger(dir: &std::path::Path, ledger: CrashLedger) {
    let key = ledger_key(dir);
    let mut all = CRASH_LEDGERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(d, _)| *d != key);
    all.push((key, ledger));
}

pub(crate) fn take_crash_ledger(dir: &std::path::Path) -> CrashLedger {
    let key = ledger_key(dir);
    let mut all = CRASH_LEDGERS.lock().unwrap_or_else(|p| p.into_inner());
    match all.iter().position(|(d, _)| *d == key) {
        Some(i) => all.swap_remove(i).1,
        None => CrashLedger::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_fires_once_on_the_nth_pass() {
        let f = CountdownInjector::new(InjectionPoint::ItemWritten(2), 2, FaultAction::Fail);
        assert_eq!(f.on(InjectionPoint::ItemWritten(1)), FaultAction::Continue);
        assert_eq!(f.on(InjectionPoint::ItemWritten(2)), FaultAction::Continue);
        assert!(!f.fired());
        assert_eq!(f.on(InjectionPoint::ItemWritten(2)), FaultAction::Fail);
        assert!(f.fired());
        assert_eq!(f.on(InjectionPoint::ItemWritten(2)), FaultAction::Continue);
    }

    #[test]
    fn probabilistic_is_reproducible() {
        let run = || {
            let f = ProbabilisticInjector::new(0.3, 42, FaultAction::Fail);
            (0..100)
                .map(|_| f.on(InjectionPoint::Sync))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let fails = a.iter().filter(|x| **x == FaultAction::Fail).count();
        assert!((10..60).contains(&fails), "{fails}");
    }
}
