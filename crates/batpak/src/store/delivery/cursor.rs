//! Guaranteed cursors: every matching committed event exactly once, in
//! global-sequence order, including events committed later.

use crate::coordinate::Region;
use crate::store::index::{IndexEntry, SlotQuery};
use crate::store::read::{Follower, STEP};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A pull-based reader of a region that never skips or repeats an event.
///
/// It remembers the next slot to examine, so each poll continues where the
/// last stopped (it never re-runs the query from the start). `position()`
/// is the global sequence of the last event delivered: pass it to
/// `Store::cursor_from` to resume after a restart.
pub struct Cursor {
    source: Follower,
    region: Region,
    /// First slot not yet examined.
    next_slot: u32,
    position: Option<u64>,
    buffer: VecDeque<IndexEntry>,
    /// `Reader::compactions` when `buffer` was read: a compaction since
    /// may have removed or redacted what it holds, so it is read again.
    buffered_at: u64,
    /// A refill's entries before they join the buffer, kept so a refill
    /// allocates nothing under the index lock.
    scratch: Vec<IndexEntry>,
    /// A refill's matching slots (reused likewise).
    slots: Vec<u32>,
    /// Lists looked at plus slots examined by all refills so far: what
    /// the tests hold to O(1) per delivered event.
    work: u64,
}

impl Cursor {
    pub(crate) fn new(source: Follower, region: &Region, after: Option<u64>) -> Self {
        let next_slot = first_slot_after(&source, after);
        Self {
            source,
            region: region.clone(),
            next_slot,
            position: after,
            buffer: VecDeque::new(),
            buffered_at: 0,
            scratch: Vec::new(),
            slots: Vec::new(),
            work: 0,
        }
    }

    /// Append to `out` the matches of the next windows of [`STEP`] slots,
    /// until one has any; false if nothing new is visible. Each window is
    /// picked and pinned under one short hold of the index read lock, and
    /// its frames are read after it (see `store::read`).
    fn refill_into(&mut self, out: &mut Vec<IndexEntry>) -> bool {
        let reader = self.source.reader();
        let visible = reader.visible();
        let start = out.len();
        while out.len() == start && self.next_slot < visible {
            let to = visible.min(self.next_slot.saturating_add(STEP));
            self.slots.clear();
            // Room for the window, made (and faulted in) before the lock.
            out.reserve((to - self.next_slot) as usize);
            crate::store::read::prefault(out, (to - self.next_slot) as usize);
            let unchained = {
                let index = reader.index();
                // Stable while the read lock is held (compaction raises it
                // under the write lock).
                self.buffered_at = reader.compactions();
                self.work += SlotQuery::range(&index, &self.region, self.next_slot, to)
                    .collect_into(&mut self.slots);
                reader.pin_entries(&index, &self.slots, out)
            };
            reader.reading_frames();
            unchained.read_chains(&mut out[start..]);
            self.next_slot = to;
        }
        out.len() > start
    }

    /// Drop buffered entries read before a compaction (they may name
    /// removed events, or kinds and positions it changed) and continue
    /// after the last event delivered, from the index as it is now.
    fn forget_stale_buffer(&mut self) {
        if self.buffer.is_empty() || self.source.reader().compactions() == self.buffered_at {
            return;
        }
        self.buffer.clear();
        self.next_slot = first_slot_after(&self.source, self.position);
    }

    /// The next matching event, or `None` if there is none yet.
    pub fn poll(&mut self) -> Option<IndexEntry> {
        self.forget_stale_buffer();
        if self.buffer.is_empty() {
            let mut window = std::mem::take(&mut self.scratch);
            let found = self.refill_into(&mut window);
            self.buffer.extend(window.drain(..));
            self.scratch = window;
            if !found {
                return None;
            }
        }
        let e = self.buffer.pop_front()?;
        self.position = Some(e.global_sequence);
        Some(e)
    }

    /// Up to `max` next matching events (possibly none).
    pub fn poll_batch(&mut self, max: usize) -> Vec<IndexEntry> {
        self.forget_stale_buffer();
        let mut out = Vec::with_capacity(max.min(4 * STEP as usize));
        while out.len() < max {
            if self.buffer.is_empty() {
                // Straight into the result; what the window holds beyond
                // `max` waits in the buffer.
                if !self.refill_into(&mut out) {
                    break;
                }
                if out.len() > max {
                    self.buffer.extend(out.drain(max..));
                }
                continue;
            }
            let take = (max - out.len()).min(self.buffer.len());
            out.extend(self.buffer.drain(..take));
        }
        if let Some(last) = out.last() {
            self.position = Some(last.global_sequence);
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
            let seen = self.source.reader().visible();
            if let Some(e) = self.poll() {
                return Some(e);
            }
            let closed = || self.source.is_closed();
            if !self
                .source
                .reader()
                .wait_for_visible(seen, deadline, closed)
            {
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

/// The first slot after the event of global sequence `after` (all of
/// them without one).
fn first_slot_after(source: &Follower, after: Option<u64>) -> u32 {
    after.map_or(0, |seq| source.reader().index().first_slot_after_seq(seq))
}

/// The events available now: `next` is [`Cursor::poll`], so iteration ends
/// when the cursor has caught up, and continues with newer events if
/// iterated again. Blocking: [`Cursor::wait_next`].
impl Iterator for Cursor {
    type Item = IndexEntry;

    fn next(&mut self) -> Option<IndexEntry> {
        self.poll()
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;
    use serde_json::json;

    const KIND: EventKind = EventKind::custom(1, 1);

    fn relaxed(dir: &std::path::Path) -> Store {
        Store::open(StoreConfig::new(dir).with_sync_every_n_events(1000)).unwrap()
    }

    fn append(store: &Store, entity: &str) {
        let c = Coordinate::new(entity, "s").unwrap();
        store.append(&c, KIND, &json!({})).unwrap();
    }

    /// SPEC §4.4: O(1) amortised work per delivered event for a prefix
    /// region too. Each refill of a live tail sees one new slot; reading
    /// the lists of the 5,000 entities under the prefix instead would cost
    /// 5,000 units per event.
    #[test]
    fn a_prefix_cursor_on_a_live_tail_does_constant_work_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = relaxed(dir.path());
        for i in 0..5000 {
            append(&store, &format!("acct:{i}"));
        }
        let mut cursor = store.cursor_guaranteed(&Region::entity("acct:"));
        assert_eq!(cursor.poll_batch(10_000).len(), 5000);
        let backlog = cursor.work;
        // Catching up costs about one unit per slot, not per entity per window.
        assert!(backlog <= 3 * 5000, "backlog work {backlog}");
        const TAIL: u64 = 500;
        for i in 0..TAIL {
            // Events outside the prefix interleave with the tail's.
            append(&store, "other");
            let entity = format!("acct:{}", i * 7 % 5000);
            append(&store, &entity);
            let e = cursor.poll().expect("the new event");
            assert_eq!(e.coord.entity(), entity);
            assert!(cursor.poll().is_none());
        }
        let per_event = (cursor.work - backlog) / TAIL;
        assert!(
            per_event <= 8,
            "{per_event} units of work per delivered event"
        );
    }

    /// The other side of the choice: a prefix over few entities in a long
    /// log reads their lists, not every slot.
    #[test]
    fn a_narrow_prefix_cursor_reads_its_lists_not_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = relaxed(dir.path());
        for i in 0..20_000 {
            append(&store, &format!("other:{}", i % 100));
            if i % 1000 == 0 {
                append(&store, &format!("acct:{}", i / 1000 % 3));
            }
        }
        let mut cursor = store.cursor_guaranteed(&Region::entity("acct:"));
        assert_eq!(cursor.poll_batch(100).len(), 20);
        assert!(cursor.poll().is_none());
        // About 20 windows of 1,024 slots, each a few list lookups, plus
        // the 20 events; a scan would examine all 20,020 slots.
        assert!(cursor.work < 500, "work {}", cursor.work);
    }
}
