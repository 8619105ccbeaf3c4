//! Taking back the records of a write that panicked half-way (SPEC §5.5).
//!
//! The write path inserts a call's records one by one; a panic can stop it
//! anywhere, even inside [`Index::insert`]. While a write runs, an undo log
//! remembers each entity tail it replaced; [`Index::roll_back_to`] removes
//! every trace of slots at or past a length, whichever structures they
//! reached, and restores the tails.

use super::{EntityTail, Index, NO_REF};

impl Index {
    /// Start remembering replaced entity tails (a write begins).
    pub(crate) fn begin_undo(&mut self) {
        let mut log = self
            .undo
            .take()
            .or_else(|| self.undo_spare.take())
            .unwrap_or_default();
        log.clear();
        self.undo = Some(log);
        self.undo_base = self.len();
    }

    /// Stop remembering (the write completed or was rolled back).
    pub(crate) fn end_undo(&mut self) {
        if let Some(log) = &mut self.undo {
            log.clear();
        }
        // Keep the allocation for the next write.
        self.undo_spare = self.undo.take();
    }

    pub(super) fn note_tail_change(&mut self, entity: u32, old: Option<EntityTail>) {
        if let Some(log) = &mut self.undo {
            log.push((entity, old));
        }
    }

    /// Remove every slot at or past `len`, and restore the tails the current
    /// write replaced. Tolerates records that reached only some structures.
    pub(crate) fn roll_back_to(&mut self, len: u32) {
        let end = self.records.len();
        for slot in (len..end).rev() {
            let rec = *self.records.get(slot);
            let id = rec.event_id();
            self.by_id.remove(super::id_hash(id), slot);
            let (e, s) = self.coords[rec.coord() as usize];
            pop_from(&mut self.entities[e as usize].slots, len);
            pop_from(&mut self.scopes[s as usize].slots, len);
            if let Some(list) = self.by_kind.get_mut(&rec.kind().raw()) {
                pop_from(list, len);
            }
            let link = self.link(slot).copied();
            if let Some(l) = link {
                if l.corr != NO_REF {
                    let corr = self.resolve(slot, l.corr);
                    if let Some(list) = self.by_correlation.get_mut(&corr) {
                        pop_from(list, len);
                    }
                }
                if l.cause != NO_REF {
                    let cause = self.resolve(slot, l.cause);
                    if let Some(list) = self.by_causation.get_mut(&cause) {
                        pop_from(list, len);
                    }
                }
            }
        }
        self.by_correlation.retain(|_, l| !l.is_empty());
        self.by_causation.retain(|_, l| !l.is_empty());
        let keep = self.links.partition_point(|l| l.slot < len);
        self.links.truncate(keep);
        let runs = self.seq_runs.partition_point(|&(first, _)| first < len);
        self.seq_runs.truncate(runs);
        self.records.truncate(len);
        self.frame_hints.truncate(len);
        // The log belongs to the write that began at `undo_base`; an older
        // write's log (the failed call panicked before inserting) is not ours.
        if self.undo_base == len {
            if let Some(mut log) = self.undo.take() {
                while let Some((entity, tail)) = log.pop() {
                    self.entities[entity as usize].tail = tail;
                }
                self.undo = Some(log);
            }
        }
    }
}

/// Drop the trailing entries of a sorted slot list that are `>= len`.
fn pop_from(list: &mut Vec<u32>, len: u32) {
    let keep = list.partition_point(|&s| s < len);
    list.truncate(keep);
}
