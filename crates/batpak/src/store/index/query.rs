//! Region queries over the index: pick the narrowest list of candidate slots
//! (one entity's stream, the entities under a prefix, a scope, a kind), then
//! filter it. Unrelated entities are never walked.

use super::Index;
use crate::coordinate::{KindFilter, Region};
use std::ops::Bound;

/// The slots in `from..to` matching a region, in slot (= global sequence) order.
pub(crate) struct SlotQuery<'a> {
    index: &'a Index,
    region: &'a Region,
    from: u32,
    to: u32,
}

impl<'a> SlotQuery<'a> {
    pub(crate) fn range(index: &'a Index, region: &'a Region, from: u32, to: u32) -> Self {
        Self {
            index,
            region,
            from,
            to: to.min(index.len()),
        }
    }

    fn in_range<'s>(&self, sorted: &'s [u32]) -> &'s [u32] {
        let lo = sorted.partition_point(|&s| s < self.from);
        let hi = sorted.partition_point(|&s| s < self.to);
        &sorted[lo..hi.max(lo)]
    }

    /// Candidate lists for the entity prefix, or `None` when there is no prefix.
    fn prefix_lists(&self) -> Option<Vec<&'a [u32]>> {
        let prefix = self.region.entity_prefix.as_deref()?;
        let idx = self.index;
        Some(
            idx.entity_order
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .map(|(_, &e)| idx.entities[e as usize].slots.as_slice())
                .collect(),
        )
    }

    fn kind_lists(&self) -> Option<Vec<&'a [u32]>> {
        let idx = self.index;
        match self.region.fact? {
            KindFilter::Exact(k) => Some(vec![idx
                .by_kind
                .get(&k.raw())
                .map_or(&[][..], Vec::as_slice)]),
            KindFilter::Category(c) => Some(
                idx.by_kind
                    .iter()
                    .filter(|(k, _)| crate::event::EventKind::from_raw(**k).category() == c)
                    .map(|(_, v)| v.as_slice())
                    .collect(),
            ),
            KindFilter::Any => None,
        }
    }

    fn scope_list(&self) -> Option<&'a [u32]> {
        let scope = self.region.scope.as_deref()?;
        let idx = self.index;
        Some(
            idx.scope_ids
                .get(scope)
                .map_or(&[][..], |&s| idx.scopes[s as usize].slots.as_slice()),
        )
    }

    fn matches(&self, slot: u32) -> bool {
        let idx = self.index;
        if idx.is_dead(slot) {
            return false;
        }
        let rec = idx.records.get(slot);
        let (e, s) = idx.coords[rec.coord() as usize];
        let r = self.region;
        r.entity_prefix
            .as_deref()
            .is_none_or(|p| idx.entities[e as usize].name.starts_with(p))
            && r.scope
                .as_deref()
                .is_none_or(|sc| &*idx.scopes[s as usize].name == sc)
            && r.fact.is_none_or(|f| f.matches(rec.kind()))
            && r.matches_clock(rec.clock)
    }

    /// Run the query.
    pub(crate) fn collect(self) -> Vec<u32> {
        if self.from >= self.to {
            return Vec::new();
        }
        // Gather the candidate list sets and pick the one with the fewest slots.
        let mut best: Option<Vec<&'a [u32]>> = None;
        let mut consider = |lists: Vec<&'a [u32]>| {
            let n: usize = lists.iter().map(|l| l.len()).sum();
            if best
                .as_ref()
                .is_none_or(|b| b.iter().map(|l| l.len()).sum::<usize>() > n)
            {
                best = Some(lists);
            }
        };
        if let Some(l) = self.prefix_lists() {
            consider(l);
        }
        if let Some(l) = self.scope_list() {
            consider(vec![l]);
        }
        if let Some(l) = self.kind_lists() {
            consider(l);
        }
        let mut out = Vec::new();
        match best {
            None => out.extend((self.from..self.to).filter(|&s| self.matches(s))),
            Some(lists) => {
                for list in &lists {
                    out.extend(
                        self.in_range(list)
                            .iter()
                            .copied()
                            .filter(|&s| self.matches(s)),
                    );
                }
                if lists.len() > 1 {
                    out.sort_unstable();
                }
            }
        }
        out
    }
}
