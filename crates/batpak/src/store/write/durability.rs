//! Group commit and the poison flag.
//!
//! Appenders that need durability do not hand their event to another thread:
//! each waits here after writing it. The first waiter becomes the leader and
//! syncs the active segment for everyone written so far; waiters that arrive
//! during that sync park, and the next leader covers them. One fsync thus
//! covers every append waiting when it starts.
//!
//! Waking matters as much as syncing on a small machine: waiters park on an
//! address (not on a condition variable that hands a mutex from one waiter to
//! the next), so a leader releases every covered waiter at once and each
//! checks the atomic watermark without taking a lock.

use crate::store::StoreError;
use parking_lot::Mutex;
use parking_lot_core::{DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a leader waits for the rest of its group before it syncs.
const MAX_GATHER: Duration = Duration::from_micros(250);

/// How many slots readers may see. Only [`Durability`] moves it; everyone
/// else can only read it.
#[derive(Debug, Default)]
pub(crate) struct Watermark(AtomicU32);

impl Watermark {
    /// Slots below this are visible.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// What a reader of committed events may do with [`Durability`]: read the
/// visible watermark and sleep until it moves. The reference is private to
/// this module, so a holder cannot publish slots, poison the store or take
/// part in group commit.
#[derive(Clone, Copy)]
pub(crate) struct Visibility<'s>(&'s Durability);

impl Visibility<'_> {
    /// Slots below this are visible.
    #[inline]
    pub(crate) fn visible(self) -> u32 {
        self.0.visible()
    }

    /// See [`Durability::wait_for_visible`].
    pub(crate) fn wait_for_visible(
        self,
        seen: u32,
        deadline: Option<Instant>,
        stop: impl Fn() -> bool,
    ) -> bool {
        self.0.wait_for_visible(seen, deadline, stop)
    }
}

/// Shared durability state of a store.
#[derive(Default)]
pub(crate) struct Durability {
    /// Slots below this are on stable storage.
    synced: AtomicU32,
    /// Slots written to the log (not necessarily synced).
    written: AtomicU32,
    /// A leader is syncing.
    syncing: AtomicBool,
    /// How many slots the previous sync covered: the size of the group the
    /// next leader waits for (see [`Durability::gather`]).
    last_group: AtomicU32,
    /// Appenders between entering the API and finishing their write.
    inflight: AtomicU32,
    /// Bound on `inflight`.
    max_inflight: AtomicU32,
    /// Appenders waiting for `inflight` to drop below the bound.
    room_waiters: AtomicU32,
    /// A leader is waiting in `gather`.
    gathering: AtomicBool,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    /// The writer panicked past its restart budget (`WriterCrashed`).
    crashed: AtomicBool,
    /// Slots readers may see: synced slots in durable mode, written slots
    /// otherwise. Readers get only this (see [`Durability::watermark`]).
    visible: Watermark,
    /// Syncs performed (diagnostics: events per sync shows group commit at work).
    syncs: AtomicU64,
    /// Bumped whenever waiters should re-check (a sync ended, poison).
    epoch: AtomicU32,
    /// Bumped when slots become visible while someone waits for that
    /// (cursors), and on close.
    visibility: AtomicU32,
    visibility_waiters: AtomicU32,
}

/// Counts an appender as in flight until dropped (after its write).
pub(crate) struct InflightGuard<'a>(&'a Durability);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        // SeqCst on both sides of the handshake with `begin_append` (each
        // side writes its word, then reads the other's): weaker orderings
        // let both read stale values, and the waiter would sleep forever.
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
        if self.0.room_waiters.load(Ordering::SeqCst) > 0 {
            // Someone may be waiting for room (back-pressure).
            // SAFETY: the key is the address of `max_inflight`, used only by
            // `begin_append`; unpark touches only parking_lot's table.
            unsafe {
                parking_lot_core::unpark_one(self.0.room_key(), |_| DEFAULT_UNPARK_TOKEN);
            }
        }
        self.0.wake_gatherer();
    }
}

impl Durability {
    /// `max_inflight` bounds the appenders between entering the API and
    /// finishing their write (back-pressure; `writer.channel_capacity`).
    pub(crate) fn new(recovered: u32, max_inflight: u32) -> Self {
        let d = Self::default();
        d.max_inflight.store(max_inflight.max(1), Ordering::Relaxed);
        d.synced.store(recovered, Ordering::Release);
        d.written.store(recovered, Ordering::Release);
        d.visible.0.store(recovered, Ordering::Release);
        d
    }

    fn room_key(&self) -> usize {
        std::ptr::from_ref(&self.max_inflight) as usize
    }

    /// Mark the caller as an appender that will soon write, first waiting
    /// for room when `max_inflight` appenders are already on their way.
    pub(crate) fn begin_append(&self) -> InflightGuard<'_> {
        let max = self.max_inflight.load(Ordering::Relaxed);
        let mut n = self.inflight.load(Ordering::Acquire);
        loop {
            if n < max {
                match self.inflight.compare_exchange_weak(
                    n,
                    n + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return InflightGuard(self),
                    Err(now) => n = now,
                }
                continue;
            }
            // SeqCst: the handshake with `InflightGuard::drop`.
            self.room_waiters.fetch_add(1, Ordering::SeqCst);
            // SAFETY: as in `InflightGuard::drop`; `validate` only reads an atomic.
            unsafe {
                parking_lot_core::park(
                    self.room_key(),
                    || self.inflight.load(Ordering::SeqCst) >= max,
                    || {},
                    |_, _| {},
                    DEFAULT_PARK_TOKEN,
                    None,
                );
            }
            self.room_waiters.fetch_sub(1, Ordering::AcqRel);
            n = self.inflight.load(Ordering::Acquire);
        }
    }

    /// Record that slots below `n` are written to the log.
    pub(crate) fn note_written(&self, n: u32) {
        self.written.fetch_max(n, Ordering::AcqRel);
    }

    fn gather_key(&self) -> usize {
        std::ptr::from_ref(&self.gathering) as usize
    }

    /// The group is complete: as many writes wait as the previous sync
    /// covered, and nobody is half-way through an append.
    fn group_ready(&self) -> bool {
        let pending = self
            .written
            .load(Ordering::Acquire)
            .saturating_sub(self.synced.load(Ordering::Acquire));
        pending >= self.last_group.load(Ordering::Acquire)
            && self.inflight.load(Ordering::Acquire) == 0
    }

    /// Wake a gathering leader once its group is complete.
    fn wake_gatherer(&self) {
        if self.gathering.load(Ordering::Acquire) && self.group_ready() {
            // SAFETY: the key is the address of `gathering`, used only by
            // `gather`; unpark touches only parking_lot's table.
            unsafe {
                parking_lot_core::unpark_all(self.gather_key(), DEFAULT_UNPARK_TOKEN);
            }
        }
    }

    pub(crate) fn visible(&self) -> u32 {
        self.visible.get()
    }

    /// The readers' view: the watermark and the wait for it to move.
    pub(crate) fn visibility(&self) -> Visibility<'_> {
        Visibility(self)
    }

    /// Make slots below `n` visible (never moves backwards).
    pub(crate) fn publish(&self, n: u32) {
        let before = self.visible.0.fetch_max(n, Ordering::SeqCst);
        if before < n && self.visibility_waiters.load(Ordering::SeqCst) > 0 {
            self.wake_visibility_waiters();
        }
    }

    /// Wake everyone in [`Durability::wait_for_visible`] (new events, or the store closed).
    pub(crate) fn wake_visibility_waiters(&self) {
        self.visibility.fetch_add(1, Ordering::SeqCst);
        epoch::wake_all(&self.visibility);
    }

    /// Sleep until more than `seen` slots are visible, someone calls
    /// [`Durability::wake_visibility_waiters`], or `deadline` passes.
    /// Returns false on timeout, or at once when `stop` holds.
    /// `deadline: None` waits without a time limit.
    ///
    /// `stop` is asked after the wake-up count is read, so a condition set
    /// (with `SeqCst`) before a wake-up is never missed: either this read
    /// saw the count before that wake-up, and the sleep returns at once, or
    /// it saw it after, and `stop` sees the condition. (Asked before
    /// waiting, as cursors once did, a close that landed in between left
    /// the waiter asleep until its timeout.)
    pub(crate) fn wait_for_visible(
        &self,
        seen: u32,
        deadline: Option<Instant>,
        stop: impl Fn() -> bool,
    ) -> bool {
        self.visibility_waiters.fetch_add(1, Ordering::SeqCst);
        let woken = loop {
            let e = self.visibility.load(Ordering::SeqCst);
            if self.visible.0.load(Ordering::SeqCst) > seen {
                break true;
            }
            if stop() {
                break false;
            }
            let timeout = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break false;
                    }
                    Some(deadline - now)
                }
                None => None,
            };
            epoch::wait(&self.visibility, e, timeout);
            if self.visibility.load(Ordering::SeqCst) != e {
                break true;
            }
        };
        self.visibility_waiters.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// Syncs performed so far.
    pub(crate) fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Fail if an earlier I/O failure stopped the writer.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::Acquire) {
            return Err(StoreError::WriterCrashed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            let reason = self.poison_reason.lock().clone().unwrap_or_default();
            return Err(StoreError::Poisoned(reason));
        }
        Ok(())
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.crashed.load(Ordering::Acquire)
    }

    pub(crate) fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Stop the writer for good after a panic past the restart budget.
    pub(crate) fn crash(&self, reason: String) {
        {
            let mut r = self.poison_reason.lock();
            if r.is_none() {
                *r = Some(format!("writer crashed: {reason}"));
            }
        }
        self.crashed.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Take back `note_written` of a write that was undone.
    pub(crate) fn reset_written(&self, n: u32) {
        self.written.store(n, Ordering::Release);
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!(%reason, "batpak writer poisoned; reopen the store to recover");
        {
            let mut r = self.poison_reason.lock();
            if r.is_none() {
                *r = Some(reason);
            }
        }
        self.poisoned.store(true, Ordering::Release);
        // Wake every waiter so it sees the poison instead of waiting forever.
        self.wake_all();
    }

    fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        epoch::wake_all(&self.epoch);
    }

    /// Raise the synced watermark to `n` (its fsync has returned).
    fn advance(&self, n: u32, publish: bool) {
        // Visible first: a waiter released by `synced` (a durable receipt,
        // or `sync()`) must find its events readable when it returns. The
        // fsync already happened, so publishing first shows nothing that is
        // not durable.
        if publish {
            self.publish(n);
        }
        self.synced.fetch_max(n, Ordering::AcqRel);
    }

    /// Record that everything below `n` is durable (a rotation synced a segment).
    pub(crate) fn mark_synced(&self, n: u32, publish: bool) {
        self.advance(n, publish);
        self.wake_all();
    }

    /// Wait (briefly) for the rest of the group before syncing.
    ///
    /// Appenders that a sync releases usually append again at once, but on a
    /// small machine waking them costs more than a sync. So a leader waits
    /// until as many writes are pending as the previous sync covered (and no
    /// append is half-way), up to [`MAX_GATHER`]; it sleeps meanwhile, since
    /// the appenders need the CPU, and the append completing the group wakes
    /// it. A lone appender has a group of one and never waits; when load
    /// drops, one round waits out the timeout and the group shrinks to fit.
    fn gather(&self) {
        if self.group_ready() {
            return;
        }
        let deadline = Instant::now() + MAX_GATHER;
        self.gathering.store(true, Ordering::Release);
        while !self.group_ready() && Instant::now() < deadline {
            // SAFETY: as in `wake_gatherer`; `validate` only reads atomics.
            unsafe {
                parking_lot_core::park(
                    self.gather_key(),
                    || !self.group_ready(),
                    || {},
                    |_, _| {},
                    DEFAULT_PARK_TOKEN,
                    Some(deadline),
                );
            }
        }
        self.gathering.store(false, Ordering::Release);
    }

    /// Block until slots below `target` are durable. `sync_once` performs one
    /// sync and returns how many slots it covered; it runs on the calling
    /// thread when this caller becomes the leader. When `publish` is set
    /// (durable mode), synced slots become visible to readers and leaders
    /// gather their group first.
    pub(crate) fn wait_durable(
        &self,
        target: u32,
        publish: bool,
        sync_once: impl Fn(u32) -> Result<u32, StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            if self.synced.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            self.check()?;
            if self
                .syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let outcome = self.lead(publish, &sync_once);
                self.syncing.store(false, Ordering::Release);
                self.wake_all();
                outcome?;
                continue;
            }
            // Read the epoch before re-checking: a state change after the
            // check also bumps the epoch, so the wait returns at once.
            let seen = self.epoch.load(Ordering::Acquire);
            let still_waiting = self.syncing.load(Ordering::Acquire)
                && self.synced.load(Ordering::Acquire) < target
                && !self.is_poisoned();
            if still_waiting {
                epoch::wait(&self.epoch, seen, None);
            }
        }
    }

    /// One leader round: gather, sync, advance the watermark.
    fn lead(
        &self,
        publish: bool,
        sync_once: &impl Fn(u32) -> Result<u32, StoreError>,
    ) -> Result<(), StoreError> {
        if publish {
            self.gather();
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let already = self.synced.load(Ordering::Acquire);
        match sync_once(already) {
            Ok(covered) => {
                if publish {
                    self.last_group
                        .store(covered.saturating_sub(already).max(1), Ordering::Release);
                }
                self.advance(covered, publish);
                Ok(())
            }
            // The leader panicked past the restart budget: already crashed.
            Err(StoreError::WriterCrashed) => Err(StoreError::WriterCrashed),
            Err(e) => {
                let reason = format!("sync failed: {}", e.display_chain());
                self.poison(reason.clone());
                Err(StoreError::Poisoned(reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Barrier};

    /// A close that lands between a waiter's last check and its sleep: the
    /// flag is set and the wake-up sent before the waiter reads the wake-up
    /// count. The waiter must still return at once (it slept until its
    /// timeout, here forever, when the flag was only checked before).
    #[test]
    fn a_stop_set_before_the_wait_began_is_not_missed() {
        let d = Arc::new(Durability::new(0, 64));
        let closing = Arc::new(AtomicBool::new(false));
        closing.store(true, Ordering::SeqCst);
        d.wake_visibility_waiters();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (d, closing) = (d.clone(), closing.clone());
            std::thread::spawn(move || {
                let woken = d.wait_for_visible(0, None, || closing.load(Ordering::SeqCst));
                tx.send(woken).unwrap();
            })
        };
        let woken = rx.recv_timeout(std::time::Duration::from_secs(30));
        if woken.is_err() {
            // Let the stuck waiter go before failing.
            d.publish(1);
        }
        assert_eq!(woken, Ok(false), "the waiter returned, as stopped");
        waiter.join().unwrap();
        // Without a stop, a waiter sleeps until events become visible.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let d = d.clone();
            std::thread::spawn(move || tx.send(d.wait_for_visible(0, None, || false)).unwrap())
        };
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        d.publish(1);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(true)
        );
        waiter.join().unwrap();
    }

    #[test]
    fn one_sync_covers_all_waiters() {
        let d = Arc::new(Durability::new(0, 64));
        let written = Arc::new(AtomicU32::new(0));
        let syncs = Arc::new(AtomicUsize::new(0));
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (d, written, syncs, barrier) =
                    (d.clone(), written.clone(), syncs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    barrier.wait();
                    d.wait_durable(mine, true, |_| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(written.load(Ordering::SeqCst))
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(d.visible(), threads as u32);
        // Every waiter wrote before any sync began, so the first sync covers all.
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn back_pressure_bounds_appenders_in_flight() {
        let d = Arc::new(Durability::new(0, 2));
        let peak = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (d, peak) = (d.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let g = d.begin_append();
                        peak.fetch_max(d.inflight.load(Ordering::SeqCst), Ordering::SeqCst);
                        std::thread::yield_now();
                        drop(g);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "never more than the bound, and the bound is reached"
        );
        assert_eq!(d.inflight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn failed_sync_poisons_and_reports() {
        let d = Durability::new(0, 64);
        let r = d.wait_durable(1, true, |_| {
            Err(StoreError::Io(std::io::Error::other("EIO")))
        });
        assert!(matches!(r, Err(StoreError::Poisoned(_))));
        assert!(matches!(d.check(), Err(StoreError::Poisoned(m)) if m.contains("EIO")));
        assert_eq!(
            d.visible(),
            0,
            "nothing becomes visible after a failed sync"
        );
        let r = d.wait_durable(1, true, |_| panic!("must not sync when poisoned"));
        assert!(matches!(r, Err(StoreError::Poisoned(_))));
    }

    #[test]
    fn parked_waiters_see_poison() {
        let d = Arc::new(Durability::new(0, 64));
        let gate = Arc::new(Barrier::new(2));
        let leader = {
            let (d, gate) = (d.clone(), gate.clone());
            std::thread::spawn(move || {
                d.wait_durable(1, true, |_| {
                    gate.wait();
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    Err(StoreError::Io(std::io::Error::other("EIO")))
                })
            })
        };
        gate.wait();
        // This waiter parks behind the leader and must be woken by the poison.
        let r = d.wait_durable(2, true, |_| panic!("poisoned store must not sync"));
        assert!(matches!(r, Err(StoreError::Poisoned(_))));
        assert!(matches!(
            leader.join().unwrap(),
            Err(StoreError::Poisoned(_))
        ));
    }
}

/// Waiting on a 32-bit word: one `futex` wake releases every waiter at once
/// (on Linux), instead of one wake-up per thread.
mod epoch {
    use std::sync::atomic::AtomicU32;

    /// Sleep while `word` holds `seen`, at most `timeout` when one is given
    /// (spurious returns are fine).
    pub(super) fn wait(word: &AtomicU32, seen: u32, timeout: Option<std::time::Duration>) {
        #[cfg(target_os = "linux")]
        {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: t.subsec_nanos().into(),
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
            // SAFETY: FUTEX_WAIT reads the aligned u32 behind a live reference
            // and sleeps only while it equals `seen`, with no timeout or a
            // relative one read from `ts`, which outlives the call; no memory
            // is written.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    seen,
                    ts_ptr,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        // SAFETY: the key is the word's address, used only here; `validate`
        // only reads the atomic.
        unsafe {
            use std::sync::atomic::Ordering;
            parking_lot_core::park(
                word.as_ptr() as usize,
                || word.load(Ordering::Acquire) == seen,
                || {},
                |_, _| {},
                parking_lot_core::DEFAULT_PARK_TOKEN,
                timeout.map(|t| std::time::Instant::now() + t),
            );
        }
    }

    /// Wake every thread waiting on `word` (after changing it).
    pub(super) fn wake_all(word: &AtomicU32) {
        #[cfg(target_os = "linux")]
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            );
        }
        #[cfg(not(target_os = "linux"))]
        // SAFETY: as in `wait`.
        unsafe {
            parking_lot_core::unpark_all(
                word.as_ptr() as usize,
                parking_lot_core::DEFAULT_UNPARK_TOKEN,
            );
        }
    }
}
