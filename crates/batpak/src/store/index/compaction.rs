//! What compaction changes in a live index. Slots never move while the store
//! is open: durability watermarks, cursors and visibility are all counted in
//! slots. A removed event's slot therefore stays in the arena as a *dead*
//! slot, taken out of every list and the id table; the next open (or the
//! checkpoint written by `close`) numbers the survivors afresh.

use super::{DiskPos, Index, RemovedEvent, NO_REF};
use crate::event::EventKind;
use crate::store::StoreError;
use hashbrown::HashMap;

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

    /// How many compactions changed this index since it was built. A reader
    /// that works in steps, releasing the lock in between, compares it to
    /// know whether positions, kinds or lists changed under it.
    pub(crate) fn compactions(&self) -> u64 {
        self.compactions
    }

    /// Apply the outcome of a compaction: `fates` lists every event of the
    /// compacted segments by slot. Runs under the index write lock (appends
    /// and readers wait), so it touches only what changed: each named
    /// record, and in each list that loses or gains slots, the slots from
    /// the first change on (found by binary search, moved with `memmove`).
    /// It never walks lists or maps that no compacted event is in.
    pub(crate) fn apply_compaction(&mut self, fates: &[(u32, Fate)]) -> Result<(), StoreError> {
        // Check everything first, so a refused outcome changes nothing.
        // Fates come in file order, which is normally slot order; only when
        // they do not is a sorted copy needed to find a slot named twice.
        if !fates.windows(2).all(|w| w[0].0 < w[1].0) {
            let mut named: Vec<u32> = fates.iter().map(|&(slot, _)| slot).collect();
            named.sort_unstable();
            if let Some(w) = named.windows(2).find(|w| w[0] == w[1]) {
                return Err(StoreError::internal(format!(
                    "compaction names slot {} twice",
                    w[0]
                )));
            }
        }
        for &(slot, fate) in fates {
            if slot >= self.len() || self.is_dead(slot) {
                return Err(StoreError::internal(format!(
                    "compaction names slot {slot}, which is not a live event"
                )));
            }
            if let Fate::Moved { pos, .. } = fate {
                narrow_pos(pos)?;
            }
        }
        self.compactions += 1;

        let tombstone = EventKind::TOMBSTONE;
        let mut changes = ListChanges::default();
        for &(slot, fate) in fates {
            match fate {
                Fate::Moved { pos, redacted } => {
                    let (segment, offset) = narrow_pos(pos)?;
                    let rec = self.records.get_mut(slot);
                    rec.set_disk_pos(segment, offset, pos.length);
                    self.frame_hints.note(slot, segment, offset);
                    // A redacted event changes kind: out of its kind's list,
                    // into TOMBSTONE's.
                    if redacted && rec.kind() != tombstone {
                        changes.kind_leavers(rec.kind().raw()).push(slot);
                        rec.set_kind(tombstone);
                        changes.tombstoned.push(slot);
                    }
                }
                Fate::Removed { kind } => self.remove_slot(slot, kind, &mut changes),
            }
        }
        changes.apply(self);
        Ok(())
    }

    /// Take a removed event out of the id table, note the lists it leaves,
    /// and remember it (its id keeps answering as an idempotency key).
    fn remove_slot(&mut self, slot: u32, original_kind: EventKind, changes: &mut ListChanges) {
        let rec = *self.records.get(slot);
        let (e, s) = self.coords[rec.coord() as usize];
        changes.entities.entry(e).or_default().push(slot);
        changes.scopes.entry(s).or_default().push(slot);
        changes.kind_leavers(rec.kind().raw()).push(slot);
        if let Some(link) = self.link(slot).copied() {
            if link.corr != NO_REF {
                let corr = self.resolve(slot, link.corr);
                changes.correlations.entry(corr).or_default().push(slot);
            }
            if link.cause != NO_REF {
                let cause = self.resolve(slot, link.cause);
                changes.causations.entry(cause).or_default().push(slot);
            }
        }
        let id = rec.event_id();
        self.by_id.remove(super::id_hash(id), slot);
        self.removed.insert(
            id,
            RemovedEvent {
                coord: rec.coord(),
                kind: original_kind,
                global_seq: self.global_seq(slot),
            },
        );
        self.dead.insert(slot);
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
                entity: self.entities[ent as usize].name,
                scope: self.scopes[sc as usize].name,
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
            let e = out.intern_entity(info.name);
            out.entities[e as usize].tail = info.tail;
        }
        for (&id, r) in &self.removed {
            let (e, s) = self.coords[r.coord as usize];
            let e = out.intern_entity(self.entities[e as usize].name);
            let s = out.intern_scope(self.scopes[s as usize].name);
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

/// A new position as the record stores it (32-bit segment id and offset).
fn narrow_pos(pos: DiskPos) -> Result<(u32, u32), StoreError> {
    let segment = u32::try_from(pos.segment_id)
        .map_err(|_| StoreError::CapacityExhausted(format!("segment id {}", pos.segment_id)))?;
    let offset = u32::try_from(pos.offset)
        .map_err(|_| StoreError::CapacityExhausted(format!("segment offset {}", pos.offset)))?;
    Ok((segment, offset))
}

/// The slots that leave (or join) each list, gathered while the fates are
/// applied, then applied list by list.
#[derive(Default)]
struct ListChanges {
    entities: HashMap<u32, Vec<u32>>,
    scopes: HashMap<u32, Vec<u32>>,
    kinds: HashMap<u16, Vec<u32>>,
    correlations: HashMap<u128, Vec<u32>>,
    causations: HashMap<u128, Vec<u32>>,
    /// Slots redacted now: they join TOMBSTONE's kind list.
    tombstoned: Vec<u32>,
}

impl ListChanges {
    fn kind_leavers(&mut self, kind: u16) -> &mut Vec<u32> {
        self.kinds.entry(kind).or_default()
    }

    fn apply(self, index: &mut Index) {
        for (e, mut gone) in self.entities {
            gone.sort_unstable();
            remove_sorted(&mut index.entities[e as usize].slots, &gone);
        }
        for (s, mut gone) in self.scopes {
            gone.sort_unstable();
            remove_sorted(&mut index.scopes[s as usize].slots, &gone);
        }
        for (k, mut gone) in self.kinds {
            gone.sort_unstable();
            if let Some(list) = index.by_kind.get_mut(&k) {
                remove_sorted(list, &gone);
            }
        }
        for (lists, changes) in [
            (&mut index.by_correlation, self.correlations),
            (&mut index.by_causation, self.causations),
        ] {
            for (id, mut gone) in changes {
                gone.sort_unstable();
                if let Some(list) = lists.get_mut(&id) {
                    remove_sorted(list, &gone);
                    if list.is_empty() {
                        lists.remove(&id);
                    }
                }
            }
        }
        if !self.tombstoned.is_empty() {
            let mut joining = self.tombstoned;
            joining.sort_unstable();
            let list = index.by_kind.entry(EventKind::TOMBSTONE.raw()).or_default();
            insert_sorted(list, &joining);
        }
    }
}

/// Take the slots `gone` (sorted, distinct) out of the sorted `list`. Work:
/// one binary search per removed slot, and one move of the slots after the
/// first removed one (nothing before it is touched). A slot of `gone` that
/// is not in `list` is ignored.
fn remove_sorted(list: &mut Vec<u32>, gone: &[u32]) {
    let Some(&first) = gone.first() else {
        return;
    };
    let mut write = list.partition_point(|&s| s < first);
    let mut read = write;
    for &slot in gone {
        let at = read + list[read..].partition_point(|&s| s < slot);
        list.copy_within(read..at, write);
        write += at - read;
        read = at;
        if list.get(read) == Some(&slot) {
            read += 1;
        }
    }
    let len = list.len();
    list.copy_within(read..len, write);
    write += len - read;
    list.truncate(write);
}

/// Merge the slots `new` (sorted, distinct, none in `list`) into the sorted
/// `list`, from the back: one binary search per new slot, and only the
/// slots after the first insertion point move.
fn insert_sorted(list: &mut Vec<u32>, new: &[u32]) {
    if new.is_empty() {
        return;
    }
    let mut read = list.len();
    list.resize(read + new.len(), 0);
    let mut write = list.len();
    for &slot in new.iter().rev() {
        let at = list[..read].partition_point(|&s| s < slot);
        let run = read - at;
        list.copy_within(at..read, write - run);
        write -= run;
        read = at;
        write -= 1;
        list[write] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::NewRecord;
    use std::collections::BTreeMap;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// `n` events over a few entities, scopes and kinds, many of them linked
    /// (correlation and causation, to events in the store and outside it).
    fn random_index(rng: &mut Rng, n: u32) -> Index {
        let mut idx = Index::new();
        let mut clocks = [0u32; 5];
        for i in 0..n {
            let id = 10_000 + u128::from(i);
            let earlier = |rng: &mut Rng| {
                if i == 0 || rng.below(4) == 0 {
                    500 + u128::from(rng.below(3))
                } else {
                    10_000 + u128::from(rng.below(u64::from(i)))
                }
            };
            let correlation_id = if rng.below(2) == 0 { id } else { earlier(rng) };
            let causation_id = (rng.below(2) == 0).then(|| earlier(rng));
            let e = rng.below(5) as usize;
            idx.insert(&NewRecord {
                event_id: id,
                correlation_id,
                causation_id,
                entity: ["a", "b", "c", "d", "e"][e],
                scope: ["s1", "s2", "s3"][rng.below(3) as usize],
                kind: EventKind::custom(1, rng.below(3) as u16),
                timestamp_us: 1000 * i64::from(i),
                hlc_counter: 0,
                clock: clocks[e],
                event_hash: [1; 32],
                global_seq: u64::from(i),
                segment_id: 1,
                offset: 64 + 100 * u64::from(i),
                length: 100,
            })
            .unwrap();
            clocks[e] += 1;
        }
        idx
    }

    /// Every list, recomputed from the live records.
    fn check_lists(idx: &Index) {
        let live: Vec<u32> = (0..idx.len()).filter(|&s| !idx.is_dead(s)).collect();
        let group = |key: &dyn Fn(u32) -> Option<u128>| {
            let mut m: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
            for &s in &live {
                if let Some(k) = key(s) {
                    m.entry(k).or_default().push(s);
                }
            }
            m
        };
        for (e, info) in idx.entities.iter().enumerate() {
            let want: Vec<u32> = live
                .iter()
                .copied()
                .filter(|&s| idx.entity_of(s) == e as u32)
                .collect();
            assert_eq!(info.slots, want, "entity {}", info.name);
        }
        for (sc, info) in idx.scopes.iter().enumerate() {
            let want: Vec<u32> = live
                .iter()
                .copied()
                .filter(|&s| idx.coords[idx.records.get(s).coord() as usize].1 == sc as u32)
                .collect();
            assert_eq!(info.slots, want, "scope {}", info.name);
        }
        let kinds = group(&|s| Some(u128::from(idx.records.get(s).kind().raw())));
        for (k, list) in &idx.by_kind {
            assert_eq!(
                list,
                kinds.get(&u128::from(*k)).unwrap_or(&Vec::new()),
                "kind {k}"
            );
        }
        for k in kinds.keys() {
            assert!(
                idx.by_kind.contains_key(&(*k as u16)),
                "kind {k} has no list"
            );
        }
        let corr = group(&|s| {
            let e = idx.entry(s);
            e.is_correlated().then_some(e.correlation_id)
        });
        let got: BTreeMap<u128, Vec<u32>> = idx
            .by_correlation
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert_eq!(got, corr);
        let cause = group(&|s| idx.entry(s).causation_id);
        let got: BTreeMap<u128, Vec<u32>> = idx
            .by_causation
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert_eq!(got, cause);
        for s in 0..idx.len() {
            let id = idx.event_id(s);
            let found = idx.slot_of(id);
            if idx.is_dead(s) {
                assert_eq!(found, None);
                assert!(idx.removed.contains_key(&id));
            } else {
                assert_eq!(found, Some(s));
            }
        }
    }

    #[test]
    fn compaction_updates_every_list_it_touches_and_nothing_else() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let n = 1 + rng.below(120) as u32;
            let mut idx = random_index(&mut rng, n);
            check_lists(&idx);
            // Up to three compactions in a row, each over a random subset
            // of the live slots: moved, redacted or removed.
            for generation in 1..=3u64 {
                let mut fates = Vec::new();
                for slot in 0..idx.len() {
                    if idx.is_dead(slot) || rng.below(3) == 0 {
                        continue;
                    }
                    let pos = DiskPos {
                        segment_id: 2 + generation,
                        offset: u64::from(slot) * 7,
                        length: 90,
                    };
                    let fate = match rng.below(3) {
                        0 => Fate::Moved {
                            pos,
                            redacted: false,
                        },
                        1 => Fate::Moved {
                            pos,
                            redacted: true,
                        },
                        _ => Fate::Removed {
                            kind: idx.records.get(slot).kind(),
                        },
                    };
                    fates.push((slot, fate));
                }
                // Fates arrive in file order, not necessarily slot order.
                if rng.below(2) == 0 {
                    fates.reverse();
                }
                idx.apply_compaction(&fates).unwrap();
                assert_eq!(idx.compactions(), generation, "round {round}");
                check_lists(&idx);
                for &(slot, fate) in &fates {
                    if let Fate::Moved { pos, redacted } = fate {
                        assert_eq!(idx.disk_pos(slot), pos);
                        if redacted {
                            assert_eq!(idx.records.get(slot).kind(), EventKind::TOMBSTONE);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_refused_outcome_changes_nothing() {
        let mut idx = random_index(&mut Rng(7), 10);
        let before: Vec<_> = (0..10).map(|s| idx.entry(s)).collect();
        let moved = Fate::Moved {
            pos: DiskPos {
                segment_id: 9,
                offset: 64,
                length: 100,
            },
            redacted: true,
        };
        let removed = Fate::Removed {
            kind: EventKind::custom(1, 0),
        };
        for bad in [
            vec![(0, moved), (3, removed), (3, moved)],
            vec![(0, moved), (10, removed)],
            vec![(
                1,
                Fate::Moved {
                    pos: DiskPos {
                        segment_id: u64::MAX,
                        offset: 0,
                        length: 1,
                    },
                    redacted: false,
                },
            )],
        ] {
            let refused = idx.apply_compaction(&bad);
            // A slot named twice or not live is a defect of the caller (an
            // internal error); a position beyond the index's range is not.
            match &bad[..] {
                [.., (_, Fate::Moved { pos, .. })] if pos.segment_id == u64::MAX => {
                    assert!(matches!(refused, Err(StoreError::CapacityExhausted(_))));
                }
                _ => assert!(
                    matches!(refused, Err(StoreError::Internal(_))),
                    "{refused:?}"
                ),
            }
            let after: Vec<_> = (0..10).map(|s| idx.entry(s)).collect();
            assert_eq!(before, after);
            assert_eq!(idx.compactions(), 0);
            check_lists(&idx);
        }
    }

    #[test]
    fn sorted_list_edits() {
        let mut rng = Rng(99);
        for _ in 0..2000 {
            let list: Vec<u32> = (0..rng.below(40) as u32)
                .filter(|_| rng.below(2) == 0)
                .collect();
            let gone: Vec<u32> = list.iter().copied().filter(|_| rng.below(3) == 0).collect();
            let mut got = list.clone();
            remove_sorted(&mut got, &gone);
            let want: Vec<u32> = list.iter().copied().filter(|s| !gone.contains(s)).collect();
            assert_eq!(got, want);
            let mut back = got.clone();
            insert_sorted(&mut back, &gone);
            assert_eq!(back, list);
        }
    }
}
