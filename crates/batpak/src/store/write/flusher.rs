//! Background sync. In relaxed mode (`every_n_events > 1`) the appender
//! that crosses N events kicks this thread, and it also syncs when idle, so
//! no acknowledged event stays unsynced for more than [`IDLE_SYNC`] plus one
//! fsync (well under the 100 ms SPEC §3.5 allows). In durable mode a call
//! that asked for `Durability::Relaxed` kicks it: the sync that makes such
//! an event durable also makes it visible, so it then offers it to the
//! subscribers.

use crate::store::Shared;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const IDLE_SYNC: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Signal {
    kicked: bool,
    stop: bool,
}

/// The handle appenders use to wake the flusher thread.
#[derive(Default)]
pub(crate) struct Flusher {
    signal: Mutex<Signal>,
    cv: Condvar,
}

impl Flusher {
    pub(crate) fn kick(&self) {
        self.signal.lock().kicked = true;
        self.cv.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.signal.lock().stop = true;
        self.cv.notify_one();
    }

    /// Start the thread. It holds the shared state, not the `Store`, and ends
    /// when [`Flusher::stop`] is called.
    pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
        let mut builder = std::thread::Builder::new().name("batpak-flusher".into());
        if let Some(size) = shared.config.writer.stack_size {
            builder = builder.stack_size(size);
        }
        builder.spawn(move || run(&shared))
    }
}

fn run(shared: &Shared) {
    let Some(flusher) = shared.flusher.as_ref() else {
        return;
    };
    loop {
        {
            let mut s = flusher.signal.lock();
            if !s.kicked && !s.stop {
                flusher.cv.wait_for(&mut s, IDLE_SYNC);
            }
            if s.stop {
                return;
            }
            s.kicked = false;
        }
        if shared.durability.is_poisoned() {
            return;
        }
        // A failure poisons the store and is reported to the next caller.
        if shared.sync_all_written().is_ok() && shared.config.durable_receipts() {
            shared.dispatch();
        }
    }
}
