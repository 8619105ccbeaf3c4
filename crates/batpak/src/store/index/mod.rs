//! The in-memory index: every event's compact record, found by id, by entity
//! (in clock order), by scope, by kind, by correlation and by causation.
//!
//! Owns only memory. It never reads or writes files; the write path and
//! recovery feed it records, and the read path turns them into public
//! [`IndexEntry`] values on the way out.
//!
//! Records live in commit order in a chunked arena, so a record's *slot*
//! (its position in that order) is also its global-sequence order. Every list
//! (per entity, scope, kind, ...) holds 4-byte slots, and references between
//! events (correlation, causation) are slots too when the target is in the
//! store. (The correlation and causation lookups are keyed by id.)

mod compaction;
mod entry;
mod frame_hints;
mod ids;
mod image;
mod query;
mod records;
mod rollback;

pub(crate) use compaction::Fate;
pub use entry::{ClockKey, DiskPos, IndexEntry};
pub(crate) use frame_hints::FrameGuess;
pub(crate) use image::{EntityImage, IndexLoader, IndexTables, LinkImage, RecordImage};
pub(crate) use query::SlotQuery;

use crate::coordinate::interned::{self, Names};
use crate::coordinate::{Coordinate, Region};
use crate::event::{EventKind, HashChain};
use crate::store::StoreError;
use hashbrown::HashMap;
use records::{Record, RecordArena, MAX_COORDS};
use std::collections::BTreeMap;

/// Most events one open store can index: slot numbers use 31 bits (the top
/// bit marks references to ids outside the store).
pub(crate) const MAX_SLOTS: u32 = (1 << 31) - 1;
const NO_REF: u32 = u32::MAX;
const EXTERNAL_REF: u32 = 1 << 31;

/// An event as the write path or recovery hands it to the index.
pub(crate) struct NewRecord<'a> {
    pub(crate) event_id: u128,
    pub(crate) correlation_id: u128,
    pub(crate) causation_id: Option<u128>,
    pub(crate) entity: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) kind: EventKind,
    pub(crate) timestamp_us: i64,
    pub(crate) hlc_counter: u16,
    pub(crate) clock: u32,
    pub(crate) event_hash: [u8; 32],
    pub(crate) global_seq: u64,
    pub(crate) segment_id: u64,
    pub(crate) offset: u64,
    pub(crate) length: u32,
}

/// A stored event found by its id (an idempotency key): live, or removed by
/// compaction and remembered in the durable removed-event record.
pub(crate) struct KeyHit<'a> {
    pub(crate) entity: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) kind: EventKind,
    pub(crate) global_seq: u64,
    /// All zero for a removed event.
    pub(crate) disk_pos: DiskPos,
    /// `None` for a removed event.
    pub(crate) slot: Option<u32>,
}

/// What the durable record keeps of an event that compaction removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemovedEvent {
    coord: u32,
    kind: EventKind,
    global_seq: u64,
}

/// What the write path needs to know about an entity's newest event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntityTail {
    pub(crate) clock: u32,
    pub(crate) event_hash: [u8; 32],
    pub(crate) timestamp_us: i64,
    pub(crate) hlc_counter: u16,
}

struct EntityInfo {
    /// Interned for the life of the process (`coordinate::interned`).
    name: &'static str,
    /// Slots in clock order (which is also slot order).
    slots: Vec<u32>,
    /// The newest event's clock, hash, timestamp and HLC counter: what the
    /// next append of this entity continues from, even when compaction
    /// removed that event. (Other events' hashes are read from their frames.)
    tail: Option<EntityTail>,
}

/// The causal links of a non-root event.
#[derive(Clone, Copy)]
struct Link {
    slot: u32,
    /// `NO_REF` = the event itself, else a slot or external reference.
    corr: u32,
    /// `NO_REF` = none, else a slot or external reference.
    cause: u32,
}

struct ScopeInfo {
    name: &'static str,
    slots: Vec<u32>,
}

/// The index. Not internally synchronised: the store wraps it in a lock.
#[derive(Default)]
pub(crate) struct Index {
    records: RecordArena,
    /// Global sequence of each slot, as runs of consecutive numbers:
    /// `(first slot, its sequence)`. Usually a single run.
    seq_runs: Vec<(u32, u64)>,
    by_id: ids::IdTable,
    /// Likely frame positions, for prefetching (see `frame_hints`).
    frame_hints: frame_hints::FrameHints,
    entities: Vec<EntityInfo>,
    entity_ids: HashMap<&'static str, u32>,
    /// Entity names in order, for prefix queries.
    entity_order: BTreeMap<&'static str, u32>,
    scopes: Vec<ScopeInfo>,
    scope_ids: HashMap<&'static str, u32>,
    /// Coordinate id -> (entity id, scope id).
    coords: Vec<(u32, u32)>,
    /// Coordinate id -> its interned names: what a coordinate handed out
    /// points at (copying it touches no reference count).
    coord_names: Vec<&'static Names>,
    coord_ids: HashMap<(u32, u32), u32>,
    by_kind: HashMap<u16, Vec<u32>>,
    /// Links of events that have a causation or a foreign correlation, by slot (sorted).
    links: Vec<Link>,
    /// Events whose correlation id is not their own id, by correlation id.
    by_correlation: HashMap<u128, Vec<u32>>,
    /// Events with a causation id, by that id.
    by_causation: HashMap<u128, Vec<u32>>,
    /// Ids referenced by correlation/causation that are not events in the store.
    external_ids: Vec<u128>,
    /// Events removed by compaction: their ids stay reserved for idempotency.
    removed: HashMap<u128, RemovedEvent>,
    /// Slots of events removed by a compaction since open (see `compaction`).
    dead: compaction::DeadSlots,
    /// Compactions applied since the index was built (see `compaction`).
    compactions: u64,
    /// While a write runs: the entity tails it replaced (see `rollback`).
    undo: Option<Vec<(u32, Option<EntityTail>)>>,
    undo_spare: Option<Vec<(u32, Option<EntityTail>)>>,
    /// Record count when the undo log began.
    undo_base: u32,
}

/// The id table's hasher, seeded once per process. Event ids are chosen by
/// callers (an idempotency key becomes the event id), so a fixed mixer would
/// let a client pick ids that all land in one bucket and make every lookup
/// and insert walk all of them. Only this in-memory table depends on the
/// seed: no file stores a hash of an id (the checkpoint's id table is
/// rebuilt at load).
///
/// foldhash (hashbrown's default hasher, which every other map of the index
/// already uses) hashes a `u128` with two multiplies and has no known
/// seed-independent collisions.
static ID_HASHER: std::sync::LazyLock<hashbrown::DefaultHashBuilder> =
    std::sync::LazyLock::new(Default::default);

#[inline]
fn id_hash(id: u128) -> u64 {
    use std::hash::BuildHasher;
    ID_HASHER.hash_one(id)
}

impl Index {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of records (visible or not).
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.records.len()
    }

    pub(crate) fn slot_of(&self, id: u128) -> Option<u32> {
        let records = &self.records;
        self.by_id
            .find(id_hash(id), |slot| records.get(slot).event_id() == id)
    }

    /// [`Self::slot_of`], handing `prefetch` the likely frame of the
    /// candidate slot before its record is read, so the two loads overlap.
    ///
    /// An id the store generated names its slot (`id::slot_hint`, ADR
    /// 0037): its record is read first, and when it holds the id, the id
    /// table is not consulted. That saves one cache miss in a row, the
    /// table's. The table's entry starts loading at the same time, so an id
    /// whose hint is wrong (an idempotency key, a survivor of compaction
    /// renumbered by the next open) waits no longer than it would without
    /// hints.
    #[inline]
    pub(crate) fn slot_of_prefetching(
        &self,
        id: u128,
        mut prefetch: impl FnMut(FrameGuess),
    ) -> Option<u32> {
        let (records, hints) = (&self.records, &self.frame_hints);
        let mut candidate = |slot: u32| {
            records.prefetch(slot);
            if let Some(guess) = hints.guess(slot) {
                prefetch(guess);
            }
            records.get(slot).event_id() == id
        };
        let hash = id_hash(id);
        let hinted = crate::id::slot_hint(id);
        // A dead slot (removed by compaction) keeps its record but has
        // left the id table: the hint must not find it either.
        if hinted < self.len() && !self.is_dead(hinted) {
            self.by_id.prefetch(hash);
            if candidate(hinted) {
                return Some(hinted);
            }
        }
        self.by_id.find(hash, candidate)
    }

    /// Find a live or removed event by id.
    pub(crate) fn find_key(&self, id: u128) -> Option<KeyHit<'_>> {
        let (coord, kind, global_seq, disk_pos, slot) = match self.slot_of(id) {
            Some(slot) => {
                let rec = self.records.get(slot);
                (
                    rec.coord(),
                    rec.kind(),
                    self.global_seq(slot),
                    rec.disk_pos(),
                    Some(slot),
                )
            }
            None => {
                let r = self.removed.get(&id)?;
                (r.coord, r.kind, r.global_seq, DiskPos::default(), None)
            }
        };
        let (e, s) = self.coords[coord as usize];
        Some(KeyHit {
            entity: self.entities[e as usize].name,
            scope: self.scopes[s as usize].name,
            kind,
            global_seq,
            disk_pos,
            slot,
        })
    }

    /// Remember an event removed by compaction (from the durable record).
    pub(crate) fn insert_removed(
        &mut self,
        id: u128,
        entity: &str,
        scope: &str,
        kind: EventKind,
        global_seq: u64,
        tail: EntityTail,
    ) {
        let e = self.intern_entity(entity);
        let s = self.intern_scope(scope);
        let coord = self.intern_coord(e, s);
        let info = &mut self.entities[e as usize];
        if info.tail.is_none_or(|t| t.clock < tail.clock) {
            info.tail = Some(tail);
        }
        self.removed.insert(
            id,
            RemovedEvent {
                coord,
                kind,
                global_seq,
            },
        );
    }

    #[inline]
    pub(crate) fn global_seq(&self, slot: u32) -> u64 {
        let i = self.seq_runs.partition_point(|&(first, _)| first <= slot) - 1;
        let (first, seq) = self.seq_runs[i];
        seq + u64::from(slot - first)
    }

    /// The first slot whose global sequence is greater than `seq`.
    pub(crate) fn first_slot_after_seq(&self, seq: u64) -> u32 {
        // Runs are sorted by slot and by sequence alike.
        let i = self.seq_runs.partition_point(|&(_, s)| s <= seq);
        if i == 0 {
            return 0;
        }
        let (first, run_seq) = self.seq_runs[i - 1];
        let run_end = self.seq_runs.get(i).map_or(self.len(), |r| r.0);
        let past = u64::from(first).saturating_add(seq - run_seq + 1);
        u32::try_from(past).map_or(run_end, |s| s.min(run_end))
    }

    /// Entity, scope and kind of a slot, without building a coordinate.
    pub(crate) fn coordinate_parts(&self, slot: u32) -> (&str, &str, EventKind) {
        let rec = self.records.get(slot);
        let (e, s) = self.coords[rec.coord() as usize];
        (
            self.entities[e as usize].name,
            self.scopes[s as usize].name,
            rec.kind(),
        )
    }

    #[inline]
    pub(crate) fn event_id(&self, slot: u32) -> u128 {
        self.records.get(slot).event_id()
    }

    #[inline]
    pub(crate) fn coordinate(&self, slot: u32) -> Coordinate {
        Coordinate::from_interned(self.coord_names[self.records.get(slot).coord() as usize])
    }

    pub(crate) fn disk_pos(&self, slot: u32) -> DiskPos {
        self.records.get(slot).disk_pos()
    }

    fn entity_of(&self, slot: u32) -> u32 {
        self.coords[self.records.get(slot).coord() as usize].0
    }

    /// The newest event of `entity`, if it has any.
    pub(crate) fn entity_tail(&self, entity: &str) -> Option<EntityTail> {
        self.entities[*self.entity_ids.get(entity)? as usize].tail
    }

    /// Entities whose tail hash is not known (a footer keeps the hash of
    /// each entity's last entry in the segment only; when recovery discards
    /// an unfinished batch, an earlier entry becomes the tail): each with
    /// its newest slot, whose frame holds the hash.
    pub(crate) fn tails_without_hash(&self) -> Vec<(u32, u32)> {
        self.entities
            .iter()
            .enumerate()
            .filter(|(_, e)| e.tail.is_some_and(|t| t.event_hash == [0; 32]))
            .filter_map(|(i, e)| Some((i as u32, *e.slots.last()?)))
            .collect()
    }

    /// Fill in the tail hash found by [`Index::tails_without_hash`].
    pub(crate) fn set_tail_hash(&mut self, entity: u32, hash: [u8; 32]) {
        if let Some(t) = &mut self.entities[entity as usize].tail {
            t.event_hash = hash;
        }
    }

    /// Slots of `entity` in clock order (all of them; callers filter visibility).
    pub(crate) fn entity_slots(&self, entity: &str) -> &[u32] {
        self.entity_ids
            .get(entity)
            .map_or(&[], |&e| self.entities[e as usize].slots.as_slice())
    }

    fn intern_entity(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.entity_ids.get(name) {
            return id;
        }
        let id = self.entities.len() as u32;
        let name = interned::intern(name);
        self.entities.push(EntityInfo {
            name,
            slots: Vec::new(),
            tail: None,
        });
        self.entity_ids.insert(name, id);
        self.entity_order.insert(name, id);
        id
    }

    fn intern_scope(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.scope_ids.get(name) {
            return id;
        }
        let id = self.scopes.len() as u32;
        let name = interned::intern(name);
        self.scopes.push(ScopeInfo {
            name,
            slots: Vec::new(),
        });
        self.scope_ids.insert(name, id);
        id
    }

    fn intern_coord(&mut self, entity: u32, scope: u32) -> u32 {
        let next = self.coords.len() as u32;
        *self.coord_ids.entry((entity, scope)).or_insert_with(|| {
            self.coords.push((entity, scope));
            self.coord_names.push(interned::intern_pair(
                self.entities[entity as usize].name,
                self.scopes[scope as usize].name,
            ));
            next
        })
    }

    fn reference(&mut self, id: u128) -> u32 {
        match self.slot_of(id) {
            Some(slot) => slot,
            None => {
                self.external_ids.push(id);
                EXTERNAL_REF | (self.external_ids.len() as u32 - 1)
            }
        }
    }

    #[inline]
    fn resolve(&self, slot: u32, reference: u32) -> u128 {
        if reference == NO_REF {
            self.event_id(slot)
        } else if reference & EXTERNAL_REF != 0 {
            self.external_ids[(reference & !EXTERNAL_REF) as usize]
        } else {
            self.event_id(reference)
        }
    }

    /// Add a record. Records arrive in commit order with increasing global
    /// sequences and per-entity clocks.
    pub(crate) fn insert(&mut self, new: &NewRecord<'_>) -> Result<u32, StoreError> {
        let slot = self.len();
        if slot >= MAX_SLOTS {
            return Err(StoreError::CapacityExhausted(format!("{MAX_SLOTS} events")));
        }
        let segment = u32::try_from(new.segment_id)
            .map_err(|_| StoreError::CapacityExhausted(format!("segment id {}", new.segment_id)))?;
        let offset = u32::try_from(new.offset)
            .map_err(|_| StoreError::CapacityExhausted(format!("segment offset {}", new.offset)))?;
        let entity = self.intern_entity(new.entity);
        let scope = self.intern_scope(new.scope);
        let coord = self.intern_coord(entity, scope);
        if coord >= MAX_COORDS {
            return Err(StoreError::CapacityExhausted(format!(
                "{MAX_COORDS} coordinates"
            )));
        }
        // Correlation defaults to the event itself (NO_REF); causation NO_REF means none.
        let corr = if new.correlation_id == new.event_id {
            NO_REF
        } else {
            self.reference(new.correlation_id)
        };
        let cause = new.causation_id.map_or(NO_REF, |c| self.reference(c));
        let wall_ms = u64::try_from(new.timestamp_us).unwrap_or(0) / 1000;
        self.records.push(Record::new(
            new.event_id,
            wall_ms,
            new.kind,
            segment,
            offset,
            new.length,
            coord,
            new.clock,
            corr != NO_REF || cause != NO_REF,
        ));
        self.frame_hints.note(slot, segment, offset);
        if corr != NO_REF || cause != NO_REF {
            self.links.push(Link { slot, corr, cause });
        }
        match self.seq_runs.last() {
            Some(&(first, seq)) if seq + u64::from(slot - first) == new.global_seq => {}
            _ => self.seq_runs.push((slot, new.global_seq)),
        }
        self.by_id.insert_unique(id_hash(new.event_id), slot);
        let old_tail = self.entities[entity as usize].tail;
        self.note_tail_change(entity, old_tail);
        let info = &mut self.entities[entity as usize];
        info.slots.push(slot);
        info.tail = Some(EntityTail {
            clock: new.clock,
            event_hash: new.event_hash,
            timestamp_us: new.timestamp_us,
            hlc_counter: new.hlc_counter,
        });
        self.scopes[scope as usize].slots.push(slot);
        self.by_kind.entry(new.kind.raw()).or_default().push(slot);
        if corr != NO_REF {
            self.by_correlation
                .entry(new.correlation_id)
                .or_default()
                .push(slot);
        }
        if let Some(c) = new.causation_id {
            self.by_causation.entry(c).or_default().push(slot);
        }
        Ok(slot)
    }

    /// The previous event of the same entity, if it is in the index.
    pub(crate) fn predecessor(&self, slot: u32) -> Option<u32> {
        let slots = &self.entities[self.entity_of(slot) as usize].slots;
        let clock = self.records.get(slot).clock as usize;
        // Clocks are dense unless events were removed; fall back to a search.
        let pos = if slots.get(clock) == Some(&slot) {
            clock
        } else {
            slots.binary_search(&slot).ok()?
        };
        pos.checked_sub(1).map(|p| slots[p])
    }

    /// The causal links of `slot`, if it has any.
    #[inline]
    fn link(&self, slot: u32) -> Option<&Link> {
        if !self.records.get(slot).has_links() {
            return None;
        }
        self.links
            .binary_search_by_key(&slot, |l| l.slot)
            .ok()
            .map(|i| &self.links[i])
    }

    /// Ask the CPU to start loading the record of `slot` (a read is about
    /// to build its entry). A hint only: a slot past the end is ignored.
    #[inline]
    pub(crate) fn prefetch_record(&self, slot: u32) {
        if slot < self.len() {
            self.records.prefetch(slot);
        }
    }

    /// The public view of one record. Its `hash_chain` is left zero: hashes
    /// live in the frames, and the read path fills them in.
    #[inline]
    pub(crate) fn entry(&self, slot: u32) -> IndexEntry {
        let rec = self.records.get(slot);
        let link = self.link(slot);
        IndexEntry {
            event_id: rec.event_id(),
            correlation_id: self.resolve(slot, link.map_or(NO_REF, |l| l.corr)),
            causation_id: link
                .filter(|l| l.cause != NO_REF)
                .map(|l| self.resolve(slot, l.cause)),
            coord: self.coordinate(slot),
            kind: rec.kind(),
            wall_ms: rec.wall_ms(),
            clock: rec.clock,
            hash_chain: HashChain::default(),
            disk_pos: rec.disk_pos(),
            global_sequence: self.global_seq(slot),
        }
    }

    /// Heap bytes held by the index (capacities, not lengths), for diagnostics.
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        fn vec_bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * size_of::<T>()
        }
        fn map_bytes<K, V>(m: &HashMap<K, V>) -> usize {
            m.capacity() * (size_of::<(K, V)>() + 1)
        }
        fn lists<K>(m: &HashMap<K, Vec<u32>>) -> usize {
            m.values().map(vec_bytes).sum::<usize>()
        }
        self.records.heap_bytes()
            + vec_bytes(&self.seq_runs)
            + self.by_id.buckets() * size_of::<u64>()
            + self.frame_hints.bytes()
            + self
                .entities
                .iter()
                .map(|e| size_of::<EntityInfo>() + vec_bytes(&e.slots) + e.name.len() + 16)
                .sum::<usize>()
            + map_bytes(&self.entity_ids)
            + self.entity_order.len() * (size_of::<(&str, u32)>() + 8)
            + self
                .scopes
                .iter()
                .map(|s| size_of::<ScopeInfo>() + vec_bytes(&s.slots) + s.name.len() + 16)
                .sum::<usize>()
            + map_bytes(&self.scope_ids)
            + vec_bytes(&self.coords)
            + vec_bytes(&self.coord_names)
            + self.coord_names.len() * size_of::<Names>()
            + map_bytes(&self.coord_ids)
            + map_bytes(&self.by_kind)
            + lists(&self.by_kind)
            + map_bytes(&self.by_correlation)
            + lists(&self.by_correlation)
            + map_bytes(&self.by_causation)
            + lists(&self.by_causation)
            + vec_bytes(&self.external_ids)
            + vec_bytes(&self.links)
            + map_bytes(&self.removed)
            + self.dead.heap_bytes()
    }

    pub(crate) fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Slots of events correlated to `id` (the root itself when it is in the
    /// store and self-correlated, then every event naming `id` as correlation).
    pub(crate) fn correlation_slots(&self, id: u128) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(root) = self.slot_of(id) {
            if self.link(root).is_none_or(|l| l.corr == NO_REF) {
                out.push(root);
            }
        }
        if let Some(list) = self.by_correlation.get(&id) {
            out.extend_from_slice(list);
        }
        out.sort_unstable();
        out
    }

    pub(crate) fn causation_slots(&self, id: u128) -> &[u32] {
        self.by_causation.get(&id).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn query_slots(&self, region: &Region, visible: u32) -> Vec<u32> {
        SlotQuery::range(self, region, 0, visible).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mixer the id table used before it was seeded.
    fn unseeded_mixer(id: u128) -> u64 {
        let x = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
        let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        x ^ (x >> 32)
    }

    /// Keys a client can choose so that the unseeded mixer gives all of them
    /// one hash: it folds the high half into the low half with an xor, so
    /// any high half paired with the low half that cancels it collides.
    fn colliding_keys(n: u64) -> Vec<u128> {
        const TARGET: u64 = 0x5eed_f100d;
        (1..=n)
            .map(|hi| (u128::from(hi) << 64) | u128::from(TARGET ^ hi.rotate_left(29)))
            .collect()
    }

    fn record(id: u128, seq: u64) -> NewRecord<'static> {
        NewRecord {
            event_id: id,
            correlation_id: id,
            causation_id: None,
            entity: "flood",
            scope: "s",
            kind: EventKind::custom(1, 1),
            timestamp_us: 0,
            hlc_counter: 0,
            clock: seq as u32,
            event_hash: [0; 32],
            global_seq: seq,
            segment_id: 1,
            offset: 32 + seq * 100,
            length: 100,
        }
    }

    /// Key comparisons made while looking every key up once.
    fn comparisons(table: &ids::IdTable, keys: &[u128], hash: impl Fn(u128) -> u64) -> u64 {
        let mut compared = 0;
        for (slot, &key) in keys.iter().enumerate() {
            let found = table.find(hash(key), |s| {
                compared += 1;
                keys[s as usize] == key
            });
            assert_eq!(found, Some(slot as u32));
        }
        compared
    }

    #[test]
    fn keys_colliding_under_a_fixed_mixer_stay_one_comparison_away() {
        let n = 4000u64;
        let keys = colliding_keys(n);
        let first = unseeded_mixer(keys[0]);
        assert!(keys.iter().all(|&k| unseeded_mixer(k) == first));

        let mut index = Index::new();
        for (seq, &key) in keys.iter().enumerate() {
            index.insert(&record(key, seq as u64)).unwrap();
        }
        for (slot, &key) in keys.iter().enumerate() {
            assert_eq!(index.slot_of(key), Some(slot as u32));
        }
        let seeded = comparisons(&index.by_id, &keys, id_hash);

        // The same keys in a table hashed by the fixed mixer: every lookup
        // compares against the keys inserted before it.
        let mut fixed = ids::IdTable::default();
        for slot in 0..keys.len() as u32 {
            fixed.insert_unique(unseeded_mixer(keys[slot as usize]), slot);
        }
        let flooded = comparisons(&fixed, &keys, unseeded_mixer);

        assert!(
            flooded >= n * n / 2,
            "the fixed mixer is flooded: {flooded}"
        );
        // One comparison per lookup, plus the rare false match of a 32-bit
        // tag within a probe run.
        assert!(seeded <= n + n / 4, "{seeded} comparisons for {n} lookups");
    }
    /// The lookup that prefetches finds what `slot_of` finds, and the
    /// frame it hands out to prefetch is the record's own when frames are
    /// of one size, also after a compaction moved them.
    #[test]
    fn lookups_guess_the_frame_of_the_record_they_find() {
        let mut index = Index::new();
        let ids: Vec<u128> = (0..200u128).map(|i| 0xabc0_0000 + i).collect();
        for (seq, &id) in ids.iter().enumerate() {
            index.insert(&record(id, seq as u64)).unwrap();
        }
        let guessed = |index: &Index, id: u128| {
            let mut guess = None;
            let slot = index.slot_of_prefetching(id, |g| guess = Some(g));
            assert_eq!(slot, index.slot_of(id));
            let pos = index.disk_pos(slot.unwrap());
            (guess, pos)
        };
        for &id in &ids {
            let (guess, pos) = guessed(&index, id);
            let guess = guess.expect("a guess for frames of one size");
            assert_eq!(
                (
                    u64::from(guess.segment),
                    u64::from(guess.offset),
                    guess.length
                ),
                (pos.segment_id, pos.offset, pos.length)
            );
        }
        // Compaction moves every event to segment 5, 80 bytes apart.
        let fates: Vec<(u32, Fate)> = (0..ids.len() as u32)
            .map(|slot| {
                let pos = DiskPos {
                    segment_id: 5,
                    offset: 32 + u64::from(slot) * 80,
                    length: 80,
                };
                (
                    slot,
                    Fate::Moved {
                        pos,
                        redacted: false,
                    },
                )
            })
            .collect();
        index.apply_compaction(&fates).unwrap();
        for &id in &ids {
            let (guess, pos) = guessed(&index, id);
            let guess = guess.unwrap();
            assert_eq!(
                (u64::from(guess.segment), u64::from(guess.offset)),
                (5, pos.offset)
            );
        }
        assert_eq!(
            index.slot_of_prefetching(0xdead, |_| panic!("no candidate")),
            None
        );
    }
}
