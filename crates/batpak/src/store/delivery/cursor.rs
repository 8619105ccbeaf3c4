//! Guaranteed cursors: every matching committed event exactly once, in
//! global-sequence order, including events committed later.

use crate::coordinate::Region;
use crate::store::index::{IndexEntry, SlotQuery};
use crate::store::Shared;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Slots examined per refill: bounds the work and memory of one refill
/// whatever the backlog, while keeping the per-event cost constant.
const WINDOW: u32 = 64 * 1024;

/// A pull-based reader of a region that never skips or repeats an event.
///
/// It remembers the next slot to examine, so each poll continues where the
/// last stopped (it never re-runs the query from the start). `position()`
/// is the global sequence of the last event delivered: pass it to
/// `Store::cursor_from` to resume after a restart.
pub struct Cursor {
    shared: Arc<Shared>,
    region: Region,
    /// First slot not yet examined.
    next_slot: u32,
    position: Option<u64>,
    buffer: VecDeque<IndexEntry>,
}

impl Cursor {
    pub(crate) fn new(shared: Arc<Shared>, region: &Region, after: Option<u64>) -> Self {
        let next_slot = match after {
            Some(seq) => shared.index.read().first_slot_after_seq(seq),
            None => 0,
        };
        Self {
            shared,
            region: region.clone(),
            next_slot,
            position: after,
            buffer: VecDeque::new(),
        }
    }

    /// Fill the buffer with up to a window's matches; false if nothing new
    /// is visible.
    fn refill(&mut self) -> bool {
        let visible = self.shared.durability.visible();
        while self.buffer.is_empty() && self.next_slot < visible {
            let to = visible.min(self.next_slot.saturating_add(WINDOW));
            let index = self.shared.index.read();
            let slots = SlotQuery::range(&index, &self.region, self.next_slot, to).collect();
            self.buffer.extend(self.shared.entries(&index, &slots));
            self.next_slot = to;
        }
        !self.buffer.is_empty()
    }

    /// The next matching event, or `None` if there is none yet.
    pub fn poll(&mut self) -> Option<IndexEntry> {
        if self.buffer.is_empty() && !self.refill() {
            return None;
        }
        let e = self.buffer.pop_front()?;
        self.position = Some(e.global_sequence);
        Some(e)
    }

    /// Up to `max` next matching events (possibly none).
    pub fn poll_batch(&mut self, max: usize) -> Vec<IndexEntry> {
        let mut out = Vec::with_capacity(max.min(1024));
        while out.len() < max {
            match self.poll() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// The next matching event, waiting up to `timeout` for one to be
    /// committed; `None` on timeout or once the store has closed. Waiting
    /// sleeps until new events become visible (no busy polling). A timeout
    /// too long to express as a point in time (`Duration::MAX`) waits until
    /// an event arrives or the store closes.
    pub fn wait_next(&mut self, timeout: Duration) -> Option<IndexEntry> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let seen = self.shared.durability.visible();
            if let Some(e) = self.poll() {
                return Some(e);
            }
            if self.shared.is_closed() || !self.shared.durability.wait_for_visible(seen, deadline) {
                // One last look: events may have become visible just now.
                return self.poll();
            }
        }
    }

    /// Global sequence of the last event delivered (or the `after` it was
    /// created with); `None` before the first.
    #[must_use]
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The region this cursor reads.
    #[must_use]
    pub fn region(&self) -> &Region {
        &self.region
    }
}
