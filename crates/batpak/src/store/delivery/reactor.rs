//! Reactors: a thread that reads a region through a guaranteed cursor and
//! appends each reaction the reactor returns (SPEC §4.6).

use crate::coordinate::Region;
use crate::event::Reactive;
use crate::store::{Cursor, Shared, Store, StoreError};
use parking_lot::{Condvar, Mutex};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an idle reactor checks whether its store still exists.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// The idempotency key of output `index` of the reaction to `trigger`: the
/// same on every run, so reprocessing a trigger never duplicates its outputs.
/// (FNV-1a, not blake3: the key must not change with the `blake3` feature.)
pub fn reaction_key(trigger: u128, index: usize) -> u128 {
    let mut bytes = [0u8; 18 + 16 + 8];
    bytes[..18].copy_from_slice(b"batpak.reaction.v1");
    bytes[18..34].copy_from_slice(&trigger.to_le_bytes());
    bytes[34..].copy_from_slice(&(index as u64).to_le_bytes());
    crate::store::projection::key_hash(&bytes)
}

/// Retry delays for a trigger whose answer failed for a passing reason.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long closing (or dropping) a store waits for a reactor that is
/// still inside the user's `react` before it gives up on joining it.
const JOIN_LIMIT: Duration = Duration::from_secs(10);

thread_local! {
    /// On a reactor thread: the address of its store's shared state.
    static REACTOR_OF: Cell<usize> = const { Cell::new(0) };
}

/// A store's reactor threads that have not ended, so that closing can
/// wait for them (SPEC §5.2: `close` joins every thread the store started).
#[derive(Default)]
pub(crate) struct ReactorThreads {
    running: Mutex<usize>,
    ended: Condvar,
}

impl ReactorThreads {
    /// Wait, up to [`JOIN_LIMIT`], until every reactor thread of `shared`
    /// has ended, but for the calling thread itself (a reactor whose
    /// `react` drops the last handle of its own store).
    pub(crate) fn wait_ended(&self, shared: &Shared) {
        let own = REACTOR_OF.with(Cell::get) == std::ptr::from_ref(shared) as usize;
        let others_end = usize::from(own);
        let deadline = Instant::now() + JOIN_LIMIT;
        let mut running = self.running.lock();
        while *running > others_end {
            if self.ended.wait_until(&mut running, deadline).timed_out() {
                tracing::warn!(
                    running = *running - others_end,
                    "batpak: a reactor is still inside `react`; the store closes without it"
                );
                return;
            }
        }
    }

    fn started(&self) {
        *self.running.lock() += 1;
    }

    fn ended(&self) {
        *self.running.lock() -= 1;
        self.ended.notify_all();
    }
}

/// Counts a reactor thread as running until dropped (at the end of the
/// thread, before the reactor value it owns is dropped).
struct Running(Arc<Shared>);

impl Running {
    fn start(shared: Arc<Shared>) -> Self {
        shared.reactors.started();
        Self(shared)
    }

    /// The store's shared state, marking the calling thread as its reactor.
    fn shared(&self) -> &Shared {
        REACTOR_OF.with(|r| r.set(Arc::as_ptr(&self.0) as usize));
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        REACTOR_OF.with(|r| r.set(0));
        self.0.reactors.ended();
    }
}

impl Store {
    /// Start a thread that feeds every event of `region` (from the start of
    /// history, then as they are committed) to `reactor` and appends each
    /// output as a reaction: correlated to the trigger's correlation id,
    /// caused by the trigger, with an idempotency key derived from (trigger
    /// id, output index), so a restart neither duplicates nor skips
    /// reactions. It resumes after the last trigger already answered, and
    /// never skips one: an I/O failure or a writer panic is retried, any
    /// other failure (the store stopped writing, or the reactor's output
    /// cannot be stored: a reserved kind, an oversized payload) stops the
    /// thread, so a restart resumes at that trigger. A trigger that
    /// compaction removed meanwhile is passed over. The thread holds no
    /// strong reference to the store and ends when the store is closed or
    /// dropped; closing and dropping wait for it to end (a reactor inside
    /// `react` finishes that call; after 10 s the close goes on without it).
    ///
    /// # Errors
    /// `Io` if the thread cannot be spawned.
    pub fn react_loop<R>(
        self: &Arc<Self>,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<serde_json::Value> + Send + 'static,
    {
        // The thread reads and appends through the shared state, never
        // through a `Store`: `Arc::try_unwrap` on the caller's store works
        // whenever it runs. Closing or dropping the store sets `closing`
        // first, which ends the thread and refuses its later appends.
        let resume = self.last_answered_trigger(region);
        let mut cursor = self.cursor_from(region, resume);
        let mut builder = std::thread::Builder::new().name("batpak-reactor".into());
        if let Some(size) = self.shared.config.writer.stack_size {
            builder = builder.stack_size(size);
        }
        // Counted before the thread starts, so a close that begins at once
        // still waits for it.
        let running = Running::start(self.shared.clone());
        let handle = builder.spawn(move || {
            // Locals drop in reverse order: the thread stops counting as
            // running before the reactor is dropped, which may drop the
            // last handle of this very store (if the reactor kept one).
            let reactor = reactor;
            let running = running;
            serve(running.shared(), &reactor, &mut cursor);
        })?;
        Ok(handle)
    }

    /// The global sequence of the newest trigger in `region` whose first
    /// reaction exists: the reactor resumes after it. Triggers are answered
    /// in order, all outputs of one before the next, so every earlier
    /// trigger is answered too (re-answering one is harmless anyway).
    fn last_answered_trigger(&self, region: &Region) -> Option<u64> {
        let reader = self.shared.reader();
        let index = reader.index();
        let visible = reader.visible();
        let slots = index.query_slots(region, visible);
        slots.iter().rev().find_map(|&slot| {
            let trigger = index.event_id(slot);
            index
                .find_key(reaction_key(trigger, 0))
                .is_some()
                .then(|| index.global_seq(slot))
                .and_then(|seq| seq.checked_sub(1))
        })
    }
}

/// The reactor thread: answer every trigger the cursor delivers until the
/// store closes. A trigger is never skipped: a passing failure is retried,
/// a lasting one stops the reactor (a restart resumes at that trigger).
/// Only a trigger compaction removed is passed over.
fn serve<R: Reactive<serde_json::Value>>(shared: &Shared, reactor: &R, cursor: &mut Cursor) {
    while !shared.is_closing() {
        if let Some(entry) = cursor.wait_next(IDLE_CHECK) {
            if !answer_until_done(shared, reactor, entry.event_id) {
                return;
            }
        }
    }
}

/// Answer `trigger`, retrying passing failures; false when the reactor
/// must stop (the store is closing, or the trigger cannot be answered).
fn answer_until_done<R: Reactive<serde_json::Value>>(
    shared: &Shared,
    reactor: &R,
    trigger: u128,
) -> bool {
    let mut backoff = RETRY_FIRST;
    while !shared.is_closing() {
        let id = || format!("{trigger:032x}");
        match answer(shared, reactor, trigger) {
            Ok(()) | Err(StoreError::NotFound(_)) => return true,
            // The store is closing: it refuses the rest.
            Err(_) if shared.is_closing() => return false,
            Err(e @ (StoreError::Io(_) | StoreError::WriterPanicked(_))) => {
                tracing::warn!(error = %e.display_chain(), trigger = %id(), "batpak reactor retries a trigger");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(error = %e.display_chain(), trigger = %id(), "batpak reactor stopped: it cannot answer this trigger");
                return false;
            }
        }
    }
    false
}

/// Run the reactor on one trigger and append its outputs (the code every
/// backend shares, so the reactions are the same events whoever answers).
fn answer<R: Reactive<serde_json::Value>>(
    shared: &Shared,
    reactor: &R,
    trigger: u128,
) -> Result<(), StoreError> {
    super::feed::answer_with(
        |id| shared.reader().get(id),
        |coord, kind, payload, opts| shared.append_one(coord, kind, payload, 1, opts),
        reactor,
        trigger,
    )
}

#[cfg(test)]
mod tests {
    use super::reaction_key;

    #[test]
    fn reaction_keys_are_stable_and_distinct() {
        assert_eq!(reaction_key(1, 0), reaction_key(1, 0));
        assert_ne!(reaction_key(1, 0), reaction_key(1, 1));
        assert_ne!(reaction_key(1, 0), reaction_key(2, 0));
        // Pinned: changing the derivation would re-run every reaction.
        assert_eq!(
            reaction_key(0, 0),
            0x7d03_8935_59a4_08b8_7413_d43c_3f71_a104
        );
    }
}
