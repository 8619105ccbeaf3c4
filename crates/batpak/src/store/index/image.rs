//! The index as plain data, for the checkpoint: exported field by field and
//! rebuilt with every reference checked, since the bytes come from disk.
//! (The byte layout itself is `format::checkpoint`'s business.)

use super::records::{Record, RecordArena};
use super::{EntityInfo, EntityTail, Index, Link, ScopeInfo, EXTERNAL_REF, NO_REF};
use crate::coordinate::interned;
use crate::event::EventKind;
use hashbrown::HashMap;

/// An entity: its name and what the next append chains onto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntityImage {
    pub(crate) name: String,
    pub(crate) tail: Option<EntityTail>,
}

/// One event's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordImage {
    pub(crate) event_id: u128,
    pub(crate) wall_ms: u64,
    pub(crate) kind: u16,
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) length: u32,
    pub(crate) coord: u32,
    pub(crate) clock: u32,
    pub(crate) has_links: bool,
}

/// The causal links of one event (`u32::MAX` = none / the event itself;
/// high bit = an index into the external ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkImage {
    pub(crate) slot: u32,
    pub(crate) corr: u32,
    pub(crate) cause: u32,
}

/// Everything but the records, which stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexTables {
    pub(crate) entities: Vec<EntityImage>,
    pub(crate) scopes: Vec<String>,
    pub(crate) coords: Vec<(u32, u32)>,
    pub(crate) external_ids: Vec<u128>,
    pub(crate) seq_runs: Vec<(u32, u64)>,
    pub(crate) links: Vec<LinkImage>,
}

impl Index {
    /// The tables of the index (everything except the records).
    pub(crate) fn tables(&self) -> IndexTables {
        IndexTables {
            entities: self
                .entities
                .iter()
                .map(|e| EntityImage {
                    name: e.name.to_string(),
                    tail: e.tail,
                })
                .collect(),
            scopes: self.scopes.iter().map(|s| s.name.to_string()).collect(),
            coords: self.coords.clone(),
            external_ids: self.external_ids.clone(),
            seq_runs: self.seq_runs.clone(),
            links: self
                .links
                .iter()
                .map(|l| LinkImage {
                    slot: l.slot,
                    corr: l.corr,
                    cause: l.cause,
                })
                .collect(),
        }
    }

    /// Every record, in slot order.
    pub(crate) fn record_images(&self) -> impl Iterator<Item = RecordImage> + '_ {
        (0..self.len()).map(|s| {
            let r = self.records.get(s);
            let pos = r.disk_pos();
            RecordImage {
                event_id: r.event_id(),
                wall_ms: r.wall_ms(),
                kind: r.kind().raw(),
                segment: pos.segment_id as u32,
                offset: pos.offset as u32,
                length: pos.length,
                coord: r.coord(),
                clock: r.clock,
                has_links: r.has_links(),
            }
        })
    }
}

/// Rebuilds an index from its image, refusing anything inconsistent.
pub(crate) struct IndexLoader {
    index: Index,
    tables: IndexTables,
    /// Records flagged as having links.
    with_links: u32,
}

/// The id table of `records`, refusing a repeated id.
fn build_id_table(records: &RecordArena) -> Result<super::ids::IdTable, String> {
    let mut table = super::ids::IdTable::with_capacity(records.len() as usize);
    for slot in 0..records.len() {
        let id = records.get(slot).event_id();
        let hash = super::id_hash(id);
        if table
            .find(hash, |x| records.get(x).event_id() == id)
            .is_some()
        {
            return Err(format!("record {slot}: duplicate event id"));
        }
        table.insert_unique(hash, slot);
    }
    Ok(table)
}

impl IndexLoader {
    pub(crate) fn new(tables: IndexTables) -> Result<Self, String> {
        let mut index = Index::new();
        for e in &tables.entities {
            let name = interned::intern(&e.name);
            let id = index.entities.len() as u32;
            if index.entity_ids.insert(name, id).is_some() {
                return Err(format!("entity {:?} listed twice", e.name));
            }
            index.entity_order.insert(name, id);
            index.entities.push(EntityInfo {
                name,
                slots: Vec::new(),
                tail: e.tail,
            });
        }
        for s in &tables.scopes {
            let name = interned::intern(s);
            let id = index.scopes.len() as u32;
            if index.scope_ids.insert(name, id).is_some() {
                return Err(format!("scope {s:?} listed twice"));
            }
            index.scopes.push(ScopeInfo {
                name,
                slots: Vec::new(),
            });
        }
        for (i, &(e, s)) in tables.coords.iter().enumerate() {
            if e as usize >= index.entities.len() || s as usize >= index.scopes.len() {
                return Err(format!("coordinate {i} names a missing entity or scope"));
            }
            if index.coord_ids.insert((e, s), i as u32).is_some() {
                return Err(format!("coordinate {i} listed twice"));
            }
        }
        index.coords = tables.coords.clone();
        index.coord_names = tables
            .coords
            .iter()
            .map(|&(e, s)| {
                interned::intern_pair(
                    index.entities[e as usize].name,
                    index.scopes[s as usize].name,
                )
            })
            .collect();
        index.external_ids = tables.external_ids.clone();
        Ok(Self {
            index,
            tables,
            with_links: 0,
        })
    }

    /// Add the next record (in slot order).
    pub(crate) fn push(&mut self, r: RecordImage) -> Result<(), String> {
        let idx = &mut self.index;
        if r.coord as usize >= idx.coords.len() {
            let slot = idx.records.len();
            return Err(format!("record {slot} names coordinate {}", r.coord));
        }
        idx.frame_hints.note(idx.records.len(), r.segment, r.offset);
        idx.records.push(Record::new(
            r.event_id,
            r.wall_ms,
            EventKind::from_raw(r.kind),
            r.segment,
            r.offset,
            r.length,
            r.coord,
            r.clock,
            r.has_links,
        ));
        self.with_links += u32::from(r.has_links);
        Ok(())
    }

    /// The per-entity, per-scope and per-kind lists, checking that each
    /// entity's clocks increase.
    fn build_lists(&mut self, records: &RecordArena) -> Result<(), String> {
        let idx = &mut self.index;
        let mut kinds: Vec<(u16, Vec<u32>)> = Vec::new();
        let mut kind_at: HashMap<u16, usize> = HashMap::new();
        let mut last: Option<(u16, usize)> = None;
        for slot in 0..records.len() {
            let rec = records.get(slot);
            let (e, s) = idx.coords[rec.coord() as usize];
            let info = &mut idx.entities[e as usize];
            if let Some(&prev) = info.slots.last() {
                if records.get(prev).clock >= rec.clock {
                    return Err(format!(
                        "record {slot}: entity clock {} does not increase",
                        rec.clock
                    ));
                }
            }
            info.slots.push(slot);
            idx.scopes[s as usize].slots.push(slot);
            // Kinds usually repeat: the previous record's list is checked
            // before hashing (and a hostile image with thousands of kinds
            // still costs one lookup per record).
            let kind = rec.kind().raw();
            let at = match last {
                Some((k, at)) if k == kind => at,
                _ => *kind_at.entry(kind).or_insert_with(|| {
                    kinds.push((kind, Vec::new()));
                    kinds.len() - 1
                }),
            };
            last = Some((kind, at));
            kinds[at].1.push(slot);
        }
        idx.by_kind = kinds.into_iter().collect();
        Ok(())
    }

    /// Attach sequences and links, check them, and return the index.
    pub(crate) fn finish(mut self) -> Result<Index, String> {
        let records = std::mem::take(&mut self.index.records);
        // The id table costs a cache miss per event; on a large image it is
        // built on a second thread while this one builds the lists.
        let by_id = if records.len() < 65_536 {
            self.build_lists(&records)?;
            build_id_table(&records)?
        } else {
            std::thread::scope(|scope| {
                let ids = scope.spawn(|| build_id_table(&records));
                let lists = self.build_lists(&records);
                let ids = ids
                    .join()
                    .map_err(|_| String::from("building the id table panicked"))?;
                lists.and(ids)
            })?
        };
        self.index.by_id = by_id;
        self.index.records = records;
        let n = self.index.records.len();
        let runs = std::mem::take(&mut self.tables.seq_runs);
        if n > 0 && runs.first().map(|r| r.0) != Some(0) {
            return Err(String::from("sequence runs do not start at slot 0"));
        }
        for w in runs.windows(2) {
            let (a, b) = (w[0], w[1]);
            let run_len = u64::from(b.0.saturating_sub(a.0));
            if b.0 <= a.0 || b.0 > n || a.1.checked_add(run_len).is_none_or(|end| end > b.1) {
                return Err(String::from("sequence runs are not increasing"));
            }
        }
        if let Some(&(first, seq)) = runs.last() {
            if first >= n.max(1) || seq.checked_add(u64::from(n - first)).is_none() {
                return Err(String::from("last sequence run is out of range"));
            }
        }
        self.index.seq_runs = runs;
        let ext = self.index.external_ids.len() as u32;
        let valid_ref =
            |r: u32| r == NO_REF || (r & EXTERNAL_REF != 0 && (r & !EXTERNAL_REF) < ext) || r < n;
        let mut prev_slot = None;
        let links = std::mem::take(&mut self.tables.links);
        for l in &links {
            if l.slot >= n
                || prev_slot.is_some_and(|p| p >= l.slot)
                || !valid_ref(l.corr)
                || !valid_ref(l.cause)
            {
                return Err(format!("link of record {} is invalid", l.slot));
            }
            if !self.index.records.get(l.slot).has_links()
                || (l.corr == NO_REF && l.cause == NO_REF)
            {
                return Err(format!(
                    "link of record {} does not match its record",
                    l.slot
                ));
            }
            prev_slot = Some(l.slot);
        }
        if self.with_links as usize != links.len() {
            return Err(String::from(
                "records flagged with links have no link entry",
            ));
        }
        let mut by_correlation: HashMap<u128, Vec<u32>> = HashMap::new();
        let mut by_causation: HashMap<u128, Vec<u32>> = HashMap::new();
        for l in &links {
            let idx = &self.index;
            if l.corr != NO_REF {
                by_correlation
                    .entry(idx.resolve(l.slot, l.corr))
                    .or_default()
                    .push(l.slot);
            }
            if l.cause != NO_REF {
                by_causation
                    .entry(idx.resolve(l.slot, l.cause))
                    .or_default()
                    .push(l.slot);
            }
        }
        self.index.links = links
            .into_iter()
            .map(|l| Link {
                slot: l.slot,
                corr: l.corr,
                cause: l.cause,
            })
            .collect();
        self.index.by_correlation = by_correlation;
        self.index.by_causation = by_causation;
        Ok(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::NewRecord;

    fn sample() -> Index {
        let mut idx = Index::new();
        let mut ids = Vec::new();
        for i in 0..20u32 {
            let id = 1000 + u128::from(i);
            let corr = if i % 3 == 0 {
                id
            } else {
                ids.first().copied().unwrap_or(7)
            };
            let cause = (i % 4 == 1).then(|| ids.last().copied().unwrap_or(99_999));
            idx.insert(&NewRecord {
                event_id: id,
                correlation_id: corr,
                causation_id: cause,
                entity: ["a", "b", "c"][i as usize % 3],
                scope: ["s1", "s2"][i as usize % 2],
                kind: EventKind::custom(1, (i % 2) as u16),
                timestamp_us: 1_000_000 * i64::from(i),
                hlc_counter: 0,
                clock: i / 3,
                event_hash: [i as u8; 32],
                global_seq: u64::from(i) + if i > 10 { 5 } else { 0 },
                segment_id: 1,
                offset: 64 + 100 * u64::from(i),
                length: 100,
            })
            .unwrap();
            ids.push(id);
        }
        idx
    }

    fn rebuild(idx: &Index) -> Result<Index, String> {
        let mut l = IndexLoader::new(idx.tables())?;
        for r in idx.record_images() {
            l.push(r)?;
        }
        l.finish()
    }

    #[test]
    fn image_round_trip_keeps_every_answer() {
        let a = sample();
        let b = rebuild(&a).unwrap();
        assert_eq!(a.len(), b.len());
        for s in 0..a.len() {
            assert_eq!(a.entry(s), b.entry(s));
        }
        assert_eq!(a.tables(), b.tables());
        assert_eq!(a.correlation_slots(1000), b.correlation_slots(1000));
        assert_eq!(a.causation_slots(1000), b.causation_slots(1000));
        assert_eq!(
            a.entity_tail("b").map(|t| t.event_hash),
            b.entity_tail("b").map(|t| t.event_hash)
        );
        assert_eq!(b.global_seq(15), a.global_seq(15));
    }

    #[test]
    fn inconsistent_images_are_refused() {
        let a = sample();
        let mut t = a.tables();
        t.coords[0] = (99, 0);
        assert!(IndexLoader::new(t).is_err());

        let mut t = a.tables();
        t.links[0].corr = EXTERNAL_REF | 500;
        let mut l = IndexLoader::new(t).unwrap();
        for r in a.record_images() {
            l.push(r).unwrap();
        }
        assert!(l.finish().is_err());

        let mut l = IndexLoader::new(a.tables()).unwrap();
        let mut recs: Vec<_> = a.record_images().collect();
        recs[5].coord = 1_000;
        assert!(recs.into_iter().try_for_each(|r| l.push(r)).is_err());

        let mut l = IndexLoader::new(a.tables()).unwrap();
        let mut recs: Vec<_> = a.record_images().collect();
        recs[6].event_id = recs[2].event_id;
        recs.into_iter().try_for_each(|r| l.push(r)).unwrap();
        assert!(l.finish().err().unwrap().contains("duplicate event id"));

        // A clock that goes backwards within an entity.
        let mut l = IndexLoader::new(a.tables()).unwrap();
        let mut recs: Vec<_> = a.record_images().collect();
        let last_a = recs.iter().rposition(|r| r.coord == recs[0].coord).unwrap();
        recs[last_a].clock = 0;
        recs.into_iter().try_for_each(|r| l.push(r)).unwrap();
        assert!(l.finish().err().unwrap().contains("clock"));

        let mut t = a.tables();
        t.seq_runs = vec![(0, 10), (0, 5)];
        let mut l = IndexLoader::new(t).unwrap();
        a.record_images().try_for_each(|r| l.push(r)).unwrap();
        assert!(l.finish().is_err());
    }
}
