//! What happens when the writer panics (SPEC §5.5, [`RestartPolicy`]).
//!
//! "The writer" is whoever holds the writer lock or leads a sync. A panic
//! there is caught; the store takes back what the failed call wrote (frames
//! and index records), so the log, the index and the writer's counters are
//! as they were before the call, and counts a restart. Within the policy's
//! budget the failing call gets `WriterPanicked` and everyone else carries
//! on; past it the writer stops for good: every write, and `close`, report
//! `WriterCrashed`. Nothing acknowledged is touched either way.

use super::{Failure, Writer};
use crate::store::config::RestartPolicy;
use crate::store::{BatchStage, Shared, StoreError};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The writer's state before a call, to return to if the call panics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    pub(crate) segment_id: u64,
    pub(crate) write_pos: u64,
    pub(crate) written: u32,
    pub(crate) next_seq: u64,
}

impl Mark {
    pub(crate) fn of(w: &Writer) -> Self {
        Self {
            segment_id: w.active.segment().id(),
            write_pos: w.active.write_pos(),
            written: w.written,
            next_seq: w.next_seq,
        }
    }
}

/// Restarts so far, against the policy's budget.
pub(crate) struct Restarts {
    policy: RestartPolicy,
    recent: Mutex<VecDeque<Instant>>,
}

impl Restarts {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Count a restart; `false` when it is past the budget.
    fn allow(&self) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        match self.policy {
            RestartPolicy::Once => {
                recent.push_back(now);
                recent.len() <= 1
            }
            RestartPolicy::Bounded {
                max_restarts,
                within_ms,
            } => {
                let window = Duration::from_millis(within_ms);
                while recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    recent.pop_front();
                }
                recent.push_back(now);
                recent.len() <= max_restarts as usize
            }
        }
    }

    /// Restarts counted so far (within the window, for `Bounded`).
    pub(crate) fn count(&self) -> usize {
        self.recent.lock().len()
    }
}

/// The panic's message, for the error.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl Shared {
    /// The writer panicked during a call holding the writer lock: undo what
    /// the call did, count the restart, and say what the caller gets.
    pub(crate) fn restart_after_panic(
        &self,
        w: &mut Writer,
        before: Mark,
        panic: Box<dyn Any + Send>,
    ) -> Failure {
        let message = panic_message(panic.as_ref());
        {
            let mut index = self.index.write();
            index.roll_back_to(before.written);
            index.end_undo();
        }
        w.written = before.written;
        w.next_seq = before.next_seq;
        self.durability.reset_written(before.written);
        self.roll_back(w, &before);
        Failure::at(0, BatchStage::Writing, self.count_restart(message))
    }

    /// Test hook: the writer panics now, between calls, as if a write had
    /// panicked before changing anything; it is handled exactly as a panic
    /// caught inside an append is (`restart_after_panic`).
    /// `Ok` once it was counted, within the budget or past it (then later
    /// writes get `WriterCrashed`); `WriterCrashed` (or the store's
    /// `Poisoned`) when the writer had already stopped; `ReadOnly` without a
    /// writer.
    #[cfg(feature = "dangerous-test-hooks")]
    pub(crate) fn panic_writer_for_test(&self) -> Result<(), StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        self.durability.check()?;
        let mut w = writer.lock();
        if self.is_closing() {
            return Err(StoreError::WriterCrashed);
        }
        // What `append_drafts` does with a caught panic, given the payload a
        // panic would carry (the failing call's error goes to nobody).
        let before = Mark::of(&w);
        let _counted = self.restart_after_panic(&mut w, before, Box::new("panic_writer_for_test"));
        Ok(())
    }

    /// Count a restart after a panic with `message`: the error for the call
    /// that panicked (`WriterPanicked`, or `WriterCrashed` past the budget).
    pub(crate) fn count_restart(&self, message: String) -> StoreError {
        let restarts = &self.restarts;
        if restarts.allow() {
            tracing::error!(%message, restarts = restarts.count(), "batpak: the writer panicked; the call was undone and the writer restarted");
            StoreError::WriterPanicked(message)
        } else {
            tracing::error!(%message, "batpak: the writer panicked past its restart budget; writes stop");
            self.durability.crash(message);
            StoreError::WriterCrashed
        }
    }

    /// After the writer crashed: make what it wrote durable, best effort
    /// (the written state is consistent: every failed call was undone).
    pub(crate) fn sync_after_crash(&self) {
        let Some(writer) = self.writer.as_ref() else {
            return;
        };
        let synced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut w = writer.lock();
            w.active.flush_pending()?;
            w.active.segment().sync(self.log.sync_mode())
        }));
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e.display_chain(), "batpak: sync after a writer crash failed")
            }
            Err(_) => tracing::warn!("batpak: sync after a writer crash panicked"),
        }
    }
}
