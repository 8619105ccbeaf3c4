//! What compaction changes in a live index. Slots never move while the store
//! is open: durability watermarks, cursors and visibility are all counted in
//! slots. A removed event's slot therefore stays in the arena as a *dead*
//! slot, taken out of every list and the id table; the next open (or the
//! checkpoint written by `close`) numbers the survivors afresh.

use super::{DiskPos, Index, RemovedEvent};
use crate::event::EventKind;
use crate::store::StoreError;
use hashbrown::HashSet;

/// What happened to one event of the compacted segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Kept (possibly redacted) at a new position.
    Moved { pos: DiskPos, redacted: bool },
    /// Removed from the log; remembered in the removed-event record with
    /// its original kind (what a retry of its append names).
    Removed { kind: EventKind },
}

/// Set of dead slots.
#[derive(Default)]
pub(super) struct DeadSlots {
    bits: Vec<u64>,
    count: u32,
}

impl DeadSlots {
    #[inline]
    pub(super) fn contains(&self, slot: u32) -> bool {
        self.bits
            .get((slot >> 6) as usize)
            .is_some_and(|w| w & (1 << (slot & 63)) != 0)
    }

    fn insert(&mut self, slot: u32) -> bool {
        let word = (slot >> 6) as usize;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let bit = 1u64 << (slot & 63);
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.count += u32::from(fresh);
        fresh
    }

    pub(super) fn count(&self) -> u32 {
        self.count
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.bits.capacity() * 8
    }
}

impl Index {
    /// Whether compaction removed `slot` while the store was open.
    #[inline]
    pub(crate) fn is_dead(&self, slot: u32) -> bool {
        self.dead.contains(slot)
    }

    /// Slots removed by compaction since open (they still count in `len`).
    pub(crate) fn dead_count(&self) -> u32 {
        self.dead.count()
    }

    /// Apply the outcome of a compaction: `fates` lists every event of the
    /// compacted segments by slot. Runs under the index write lock, so it
    /// touches each affected record and list once.
    pub(crate) fn apply_compaction(&mut self, fates: &[(u32, Fate)]) -> Result<(), StoreError> {
        let tombstone = EventKind::TOMBSTONE;
        let mut redacted: Vec<u32> = Vec::new();
        let mut removed: Vec<(u32, EventKind)> = Vec::new();
        let mut kinds_touched: HashSet<u16> = HashSet::new();
        for &(slot, fate) in fates {
            if slot >= self.len() || self.is_dead(slot) {
                return Err(StoreError::Configuration(format!(
                    "compaction names slot {slot}, which is not a live event"
                )));
            }
            match fate {
                Fate::Moved { pos, redacted: r } => {
                    let segment = u32::try_from(pos.segment_id).map_err(|_| {
                        StoreError::CapacityExhausted(format!("segment id {}", pos.segment_id))
                    })?;
                    let offset = u32::try_from(pos.offset).map_err(|_| {
                        StoreError::CapacityExhausted(format!("segment offset {}", pos.offset))
                    })?;
                    let rec = self.records.get_mut(slot);
                    rec.set_disk_pos(segment, offset, pos.length);
                    if r && rec.kind() != tombstone {
                        kinds_touched.insert(rec.kind().raw());
                        rec.set_kind(tombstone);
                        redacted.push(slot);
                    }
                }
                Fate::Removed { kind } => {
                    kinds_touched.insert(self.records.get(slot).kind().raw());
                    removed.push((slot, kind));
                }
            }
        }
        // Redacted events change kind: out of their kind's list, into TOMBSTONE's.
        if !redacted.is_empty() {
            let redacted_set: HashSet<u32> = redacted.iter().copied().collect();
            for k in &kinds_touched {
                if let Some(list) = self.by_kind.get_mut(k) {
                    list.retain(|s| !redacted_set.contains(s));
                }
            }
            let list = self.by_kind.entry(tombstone.raw()).or_default();
            list.extend_from_slice(&redacted);
            list.sort_unstable();
        }
        if removed.is_empty() {
            return Ok(());
        }
        // Removed events leave every list and the id table; their ids are
        // remembered (idempotency keys keep answering with them).
        let mut entities = HashSet::new();
        let mut scopes = HashSet::new();
        for &(slot, kind) in &removed {
            self.dead.insert(slot);
            let rec = *self.records.get(slot);
            let (e, s) = self.coords[rec.coord() as usize];
            entities.insert(e);
            scopes.insert(s);
            let id = rec.event_id();
            let records = &self.records;
            if let Ok(entry) = self
                .by_id
                .find_entry(super::id_hash(id), |&x| records.get(x).event_id() == id)
            {
                entry.remove();
            }
            self.removed.insert(
                id,
                RemovedEvent {
                    coord: rec.coord(),
                    kind,
                    global_seq: self.global_seq(slot),
                },
            );
        }
        let dead = &self.dead;
        for e in entities {
            self.entities[e as usize]
                .slots
                .retain(|&s| !dead.contains(s));
        }
        for s in scopes {
            self.scopes[s as usize].slots.retain(|&x| !dead.contains(x));
        }
        for k in kinds_touched {
            if let Some(list) = self.by_kind.get_mut(&k) {
                list.retain(|&s| !dead.contains(s));
            }
        }
        self.by_correlation.retain(|_, list| {
            list.retain(|&s| !dead.contains(s));
            !list.is_empty()
        });
        self.by_causation.retain(|_, list| {
            list.retain(|&s| !dead.contains(s));
            !list.is_empty()
        });
        Ok(())
    }

    /// A copy without dead slots, numbered afresh, for the checkpoint.
    pub(crate) fn without_dead(&self) -> Result<Index, StoreError> {
        let mut out = Index::new();
        for slot in 0..self.len() {
            if self.is_dead(slot) {
                continue;
            }
            let e = self.entry(slot);
            let rec = self.records.get(slot);
            let (ent, sc) = self.coords[rec.coord() as usize];
            out.insert(&super::NewRecord {
                event_id: e.event_id,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                entity: &self.entities[ent as usize].name,
                scope: &self.scopes[sc as usize].name,
                kind: e.kind,
                timestamp_us: i64::try_from(e.wall_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
                hlc_counter: 0,
                clock: e.clock,
                event_hash: [0; 32],
                global_seq: e.global_sequence,
                segment_id: e.disk_pos.segment_id,
                offset: e.disk_pos.offset,
                length: e.disk_pos.length,
            })?;
        }
        // Tails (what each entity's next append continues from) and the
        // removed events carry over unchanged.
        for info in &self.entities {
            let e = out.intern_entity(&info.name);
            out.entities[e as usize].tail = info.tail;
        }
        for (&id, r) in &self.removed {
            let (e, s) = self.coords[r.coord as usize];
            let e = out.intern_entity(&self.entities[e as usize].name);
            let s = out.intern_scope(&self.scopes[s as usize].name);
            let coord = out.intern_coord(e, s);
            out.removed.insert(
                id,
                RemovedEvent {
                    coord,
                    kind: r.kind,
                    global_seq: r.global_seq,
                },
            );
        }
        Ok(out)
    }
}
