//! The test side of the I/O seam (feature `dangerous-test-hooks`): ready
//! injectors, and [`TestIo`], which performs each operation of the seam
//! through the operating system unless the store's injector says
//! otherwise, and keeps a model of what the disk would keep through a
//! power cut (per segment file: bytes written, bytes synced, whether its
//! directory entry is durable).

use super::{FaultAction, FaultInjector, InjectionPoint, IoOp};
use crate::store::config::SyncMode;
use crate::store::log::io::OsIo;
use crate::store::log::{Prealloc, SegmentIo};
use crate::store::{StoreConfig, StoreError};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// An injector that never fires: the store runs on the test disk as it
/// would on the real one.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn on(&self, _point: InjectionPoint) -> FaultAction {
        FaultAction::Continue
    }
}

/// A test disk that behaves as a copy-on-write filesystem (btrfs, ZFS,
/// bcachefs): relaxed mode writes frames with `pwrite` and maps segments
/// read-only, whatever the real filesystem is. Faults, if any, are
/// `inner`'s.
#[derive(Default)]
pub struct CopyOnWriteDisk {
    inner: Option<Arc<dyn FaultInjector>>,
}

impl CopyOnWriteDisk {
    /// A copy-on-write test disk with no faults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy-on-write test disk whose faults `inner` decides.
    #[must_use]
    pub fn with(inner: Arc<dyn FaultInjector>) -> Self {
        Self { inner: Some(inner) }
    }
}

impl FaultInjector for CopyOnWriteDisk {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        self.inner
            .as_ref()
            .map_or(FaultAction::Continue, |i| i.on(point))
    }

    fn copy_on_write(&self) -> Option<bool> {
        Some(true)
    }
}

/// What [`Store::simulate_power_loss`](crate::store::Store::simulate_power_loss) discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Bytes of segment files that were written but not yet synced (now zeros).
    pub bytes_discarded: u64,
    /// New segment files whose directory entry was not yet synced (now gone).
    pub files_removed: usize,
}

/// What the model knows of one segment file.
#[derive(Clone, Copy, Debug)]
struct FileState {
    /// End of the bytes written so far.
    written: u64,
    /// End of the bytes known to be on stable storage.
    synced: u64,
    /// Whether the file's directory entry is durable.
    entry_durable: bool,
}

/// What a crashed store left unsynced, per segment file: its synced length,
/// or `None` when its directory entry may not be durable.
type Ledger = HashMap<PathBuf, Option<u64>>;

/// What simulated crashes left unsynced, by data directory, until the next
/// writable open of that directory takes it (see
/// [`Store::simulate_crash`](crate::store::Store::simulate_crash)).
static CRASH_LEDGERS: Mutex<Vec<(PathBuf, Ledger)>> = Mutex::new(Vec::new());

fn ledger_key(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

struct Inner {
    injector: Option<Arc<dyn FaultInjector>>,
    /// Set by `Halt` and `Tear`: the store's disk is gone.
    halted: AtomicBool,
    files: Mutex<HashMap<PathBuf, FileState>>,
    /// What a crashed store left unsynced, for files found at this open.
    inherited: Mutex<Ledger>,
}

/// The seam's test implementation (see the module docs).
#[derive(Clone)]
pub(crate) struct TestIo {
    inner: Arc<Inner>,
}

/// What a test asked for at a write.
enum WriteFate {
    Whole,
    Half,
}

impl TestIo {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, FileState>> {
        self.inner
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn halt(&self) -> StoreError {
        self.inner.halted.store(true, Ordering::Release);
        StoreError::FaultInjected("the store's disk halted".into())
    }

    /// Ask the injector about `point`: `Ok(false)` to go on, `Ok(true)` for
    /// a torn write, else the failure.
    fn ask(&self, point: InjectionPoint) -> Result<bool, StoreError> {
        if self.inner.halted.load(Ordering::Acquire) {
            return Err(StoreError::FaultInjected(format!(
                "{point:?} after the store's disk halted"
            )));
        }
        let Some(injector) = &self.inner.injector else {
            return Ok(false);
        };
        match injector.on(point) {
            FaultAction::Continue => Ok(false),
            FaultAction::Fail => Err(StoreError::FaultInjected(format!("{point:?}"))),
            FaultAction::Panic => panic!("fault injected: {point:?}"),
            FaultAction::Crash => std::process::abort(),
            FaultAction::Halt => Err(self.halt()),
            FaultAction::Tear => Ok(true),
        }
    }

    /// Before an operation: its named point (if any), then the operation.
    fn before(&self, point: Option<InjectionPoint>, op: IoOp) -> Result<WriteFate, StoreError> {
        let mut torn = false;
        for p in point.into_iter().chain([InjectionPoint::Io(op)]) {
            torn |= self.ask(p)?;
        }
        Ok(if torn {
            WriteFate::Half
        } else {
            WriteFate::Whole
        })
    }

    fn wrote(&self, path: &Path, end: u64) {
        if let Some(f) = self.files().get_mut(path) {
            f.written = f.written.max(end);
        }
    }

    /// Start modelling a segment file found on disk: all of it durable,
    /// unless a crashed store left it otherwise.
    fn found(&self, path: &Path, file: &File) {
        if !is_segment(path) || self.files().contains_key(path) {
            return;
        }
        let len = file.metadata().map_or(0, |m| m.len());
        let left = self
            .inner
            .inherited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(path);
        let state = match left {
            None => FileState {
                written: len,
                synced: len,
                entry_durable: true,
            },
            Some(Some(synced)) => FileState {
                written: len,
                synced: synced.min(len),
                entry_durable: true,
            },
            Some(None) => FileState {
                written: len,
                synced: 0,
                entry_durable: false,
            },
        };
        self.files().insert(path.to_path_buf(), state);
    }

    /// Do to the segment files what a power cut now would: bytes not yet
    /// synced become zeros (the files keep their length) and files whose
    /// directory entry was never synced disappear. The caller has stopped
    /// every writer.
    pub(crate) fn power_loss(&self) -> Result<PowerLoss, StoreError> {
        use std::os::unix::fs::FileExt;
        let files: Vec<(PathBuf, FileState)> =
            self.files().iter().map(|(p, s)| (p.clone(), *s)).collect();
        let mut loss = PowerLoss::default();
        let mut dirs = std::collections::BTreeSet::new();
        for (path, state) in files {
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
            if !state.entry_durable {
                match std::fs::remove_file(&path) {
                    Ok(()) => loss.files_removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            let f = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let len = f.metadata()?.len();
            if state.synced < len {
                let mut lost = vec![0u8; (len - state.synced) as usize];
                f.read_exact_at(&mut lost, state.synced)?;
                // Count written bytes, not preallocated zeros.
                loss.bytes_discarded += lost
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |p| p as u64 + 1);
                lost.fill(0);
                f.write_all_at(&lost, state.synced)?;
                f.sync_all()?;
            }
        }
        for dir in dirs {
            // A staging directory (compaction's, a snapshot's) may be gone:
            // nothing of it is left to lose.
            match File::open(&dir) {
                Ok(d) => d.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(loss)
    }

    /// What a power cut after a crash now would leave of each segment file
    /// of `dir`, as a crashed process leaves it for the next one: synced
    /// lengths, and `None` for a file whose directory entry may not be
    /// durable (a segment file this store never opened is one being
    /// created). Recorded for the next writable open of `dir`.
    pub(crate) fn record_crash(&self, dir: &Path) -> Result<(), StoreError> {
        let mut ledger: Ledger = self
            .files()
            .iter()
            .map(|(p, s)| (p.clone(), s.entry_durable.then_some(s.synced)))
            .collect();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if is_segment(&path) {
                ledger.entry(path).or_insert(None);
            }
        }
        let key = ledger_key(dir);
        let mut all = CRASH_LEDGERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|(d, _)| *d != key);
        all.push((key, ledger));
        Ok(())
    }
}

fn take_crash_ledger(dir: &Path) -> Ledger {
    let key = ledger_key(dir);
    let mut all = CRASH_LEDGERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match all.iter().position(|(d, _)| *d == key) {
        Some(i) => all.swap_remove(i).1,
        None => Ledger::new(),
    }
}

impl SegmentIo for TestIo {
    fn for_store(config: &StoreConfig, writable: bool) -> Self {
        // A writable open continues from what a crashed store left; a
        // read-only one modifies nothing and takes nothing.
        let inherited = if writable {
            take_crash_ledger(&config.data_dir)
        } else {
            Ledger::new()
        };
        Self {
            inner: Arc::new(Inner {
                injector: config.fault_injector.clone(),
                halted: AtomicBool::new(false),
                files: Mutex::new(HashMap::new()),
                inherited: Mutex::new(inherited),
            }),
        }
    }

    fn create_new(&self, path: &Path) -> Result<File, StoreError> {
        self.before(None, IoOp::Create)?;
        let file = OsIo.create_new(path)?;
        if is_segment(path) {
            self.files().insert(
                path.to_path_buf(),
                FileState {
                    written: 0,
                    synced: 0,
                    entry_durable: false,
                },
            );
        }
        Ok(file)
    }

    fn open(&self, path: &Path, write: bool) -> Result<File, StoreError> {
        let file = OsIo.open(path, write)?;
        self.found(path, &file);
        Ok(file)
    }

    fn write_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        offset: u64,
        point: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        match self.before(point, IoOp::Write)? {
            WriteFate::Whole => {
                OsIo.write_at(file, path, buf, offset, None)?;
                self.wrote(path, offset + buf.len() as u64);
                Ok(())
            }
            WriteFate::Half => {
                let half = &buf[..buf.len() / 2];
                OsIo.write_at(file, path, half, offset, None)?;
                self.wrote(path, offset + half.len() as u64);
                Err(self.halt())
            }
        }
    }

    fn wrote_mapped(&self, path: &Path, offset: u64, bytes: &mut [u8]) -> Result<(), StoreError> {
        match self.before(None, IoOp::WriteMapped) {
            Ok(WriteFate::Whole) => {
                self.wrote(path, offset + bytes.len() as u64);
                Ok(())
            }
            Ok(WriteFate::Half) => {
                let half = bytes.len() / 2;
                bytes[half..].fill(0);
                self.wrote(path, offset + half as u64);
                Err(self.halt())
            }
            // The copy did not happen.
            Err(e) => {
                bytes.fill(0);
                Err(e)
            }
        }
    }

    fn allocate(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
        how: Prealloc,
    ) -> Result<(), StoreError> {
        self.before(None, IoOp::Allocate)?;
        OsIo.allocate(file, path, offset, len, how)
    }

    fn sync(
        &self,
        file: &File,
        path: &Path,
        mode: SyncMode,
        before: Option<InjectionPoint>,
        after: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        self.before(before, IoOp::Sync)?;
        // What the sync covers is what was written before it started.
        let covered = self.files().get(path).map(|f| f.written);
        OsIo.sync(file, path, mode, None, None)?;
        if let (Some(end), Some(f)) = (covered, self.files().get_mut(path)) {
            f.synced = f.synced.max(end);
        }
        match after {
            Some(p) => self.ask(p).map(|_| ()),
            None => Ok(()),
        }
    }

    fn sync_dir(&self, dir: &Path, point: Option<InjectionPoint>) -> Result<(), StoreError> {
        self.before(point, IoOp::SyncDir)?;
        // Entries changed after the sync starts are not covered.
        let inside: Vec<PathBuf> = self
            .files()
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        OsIo.sync_dir(dir, None)?;
        let mut files = self.files();
        for p in inside {
            if let Some(f) = files.get_mut(&p) {
                f.entry_durable = true;
            }
        }
        Ok(())
    }

    fn rename(
        &self,
        from: &Path,
        to: &Path,
        point: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        self.before(point, IoOp::Rename)?;
        OsIo.rename(from, to, None)?;
        let mut files = self.files();
        files.remove(to);
        if let Some(mut f) = files.remove(from) {
            if is_segment(to) {
                f.entry_durable = false;
                files.insert(to.to_path_buf(), f);
            }
        }
        Ok(())
    }

    fn remove(&self, path: &Path, point: Option<InjectionPoint>) -> Result<(), StoreError> {
        self.before(point, IoOp::Remove)?;
        OsIo.remove(path, None)?;
        self.files().remove(path);
        Ok(())
    }

    fn at(&self, point: InjectionPoint) -> Result<(), StoreError> {
        match self.ask(point) {
            Ok(false) => Ok(()),
            Ok(true) => Err(self.halt()),
            Err(e) => Err(e),
        }
    }

    fn copy_on_write(&self, dir: &Path) -> bool {
        self.inner
            .injector
            .as_ref()
            .and_then(|i| i.copy_on_write())
            .unwrap_or_else(|| OsIo.copy_on_write(dir))
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

    fn io_with(dir: &Path, injector: Arc<dyn FaultInjector>) -> TestIo {
        let mut cfg = StoreConfig::new(dir);
        cfg.fault_injector = Some(injector);
        TestIo::for_store(&cfg, true)
    }

    /// The model follows writes, syncs and directory syncs, and a power cut
    /// discards exactly what they did not make durable.
    #[test]
    fn a_power_cut_discards_what_was_not_synced() {
        let d = tempfile::tempdir().unwrap();
        let io = io_with(d.path(), Arc::new(NoFaults));
        let a = d.path().join("a.seg");
        let f = io.create_new(&a).unwrap();
        io.write_at(&f, &a, &[1; 100], 0, None).unwrap();
        io.sync(&f, &a, SyncMode::SyncData, None, None).unwrap();
        io.sync_dir(d.path(), None).unwrap();
        io.write_at(&f, &a, &[2; 50], 100, None).unwrap();
        let b = d.path().join("b.seg");
        let g = io.create_new(&b).unwrap();
        io.write_at(&g, &b, &[3; 10], 0, None).unwrap();
        io.sync(&g, &b, SyncMode::SyncData, None, None).unwrap();
        let cut = io.power_loss().unwrap();
        assert_eq!(cut.bytes_discarded, 50);
        assert_eq!(cut.files_removed, 1, "b's entry was never synced");
        let left = std::fs::read(&a).unwrap();
        assert_eq!(left.len(), 150, "files keep their length");
        assert!(left[..100].iter().all(|&x| x == 1));
        assert!(left[100..].iter().all(|&x| x == 0));
        assert!(!b.exists());
    }

    /// A torn write writes its first half and halts the disk: every later
    /// operation fails without touching the files.
    #[test]
    fn a_torn_write_writes_half_and_halts() {
        let d = tempfile::tempdir().unwrap();
        let io = io_with(
            d.path(),
            Arc::new(CountdownInjector::new(
                InjectionPoint::Io(IoOp::Write),
                2,
                FaultAction::Tear,
            )),
        );
        let a = d.path().join("a.seg");
        let f = io.create_new(&a).unwrap();
        io.write_at(&f, &a, &[1; 10], 0, None).unwrap();
        assert!(io.write_at(&f, &a, &[2; 10], 10, None).is_err());
        assert!(io.write_at(&f, &a, &[3; 10], 20, None).is_err());
        assert!(io.sync(&f, &a, SyncMode::SyncData, None, None).is_err());
        assert!(io.at(InjectionPoint::Indexed).is_err());
        let mut mapped = [4u8; 8];
        assert!(io.wrote_mapped(&a, 30, &mut mapped).is_err());
        assert_eq!(
            mapped, [0; 8],
            "a mapped write after the halt did not happen"
        );
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, [[1u8; 10].as_slice(), &[2; 5]].concat());
    }
}
