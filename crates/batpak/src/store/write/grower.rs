//! Growing the active segment ahead of the writer, on a thread of its own
//! (`batpak-grower`), so that an append rarely has to allocate blocks itself
//! (in durable mode: write zeros and sync them) while holding the writer
//! lock.
//!
//! This thread does nothing else. Footers are written by another thread
//! because a footer needs the maintenance lock, which a long `verify` or
//! `compact` holds; growth needs only the segment's own growth lock, so it
//! must never queue behind a footer. Only the newest request matters (a
//! later one is for the same segment and further, or for the segment that
//! replaced it), so requests are a single slot, not a queue.

use crate::store::log::{GrowthCounters, Segment};
use crate::store::Shared;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Default)]
struct Slot {
    wanted: Option<(Arc<Segment>, u64)>,
    stop: bool,
}

/// Where the writer asks for growth, and the thread waits for it.
#[derive(Default)]
pub(crate) struct Grower {
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Grower {
    /// Ask for `segment` to be grown to `len` bytes (replacing an older request).
    pub(crate) fn request(&self, segment: Arc<Segment>, len: u64) {
        let mut slot = self.slot.lock();
        if slot.stop {
            return;
        }
        slot.wanted = Some((segment, len));
        drop(slot);
        self.cv.notify_one();
    }

    /// End the thread after the growth step in progress (if any).
    pub(crate) fn stop(&self) {
        let mut slot = self.slot.lock();
        slot.stop = true;
        slot.wanted = None;
        drop(slot);
        self.cv.notify_one();
    }

    /// Start the thread. It holds the shared state, not the `Store`, and
    /// ends when [`Grower::stop`] is called.
    pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
        let mut builder = std::thread::Builder::new().name("batpak-grower".into());
        if let Some(size) = shared.config.writer.stack_size {
            builder = builder.stack_size(size);
        }
        builder.spawn(move || run(&shared.grower, shared.log.growth()))
    }

    /// The next request, waiting for one; `None` once stopped.
    fn next(&self) -> Option<(Arc<Segment>, u64)> {
        let mut slot = self.slot.lock();
        loop {
            if slot.stop {
                return None;
            }
            if let Some(wanted) = slot.wanted.take() {
                return Some(wanted);
            }
            self.cv.wait(&mut slot);
        }
    }
}

/// The thread touches only its request slot, the segments handed to it and
/// the growth counters.
fn run(grower: &Grower, growth: &GrowthCounters) {
    while let Some((segment, len)) = grower.next() {
        match segment.grow(len) {
            Ok(true) => growth.note_ahead(),
            Ok(false) => {}
            // A full disk shows up again, as an error of the append that
            // needs the space; a segment sealed meanwhile needs no growth.
            Err(e) => {
                tracing::debug!(segment_id = segment.id(), error = %e.display_chain(), "batpak: growing ahead failed");
            }
        }
    }
}
