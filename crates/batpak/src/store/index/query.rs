//! Region queries over a range of slots: read the cheapest candidates (the
//! lists of the entities under a prefix, a scope's list, a kind's lists, or
//! every slot of the range), then filter them. The cost of choosing is
//! bounded by the range's length, so a query over a short range (a cursor's
//! refill on a live tail) stays cheap however many entities a prefix spans.
//!
//! Reads the index only; the caller holds the lock.

use super::Index;
use crate::coordinate::{KindFilter, Region};
use std::ops::Bound;

/// A plan that reads candidate lists: its cost and the parts of the lists
/// inside the range.
type ListPlan<'a> = Option<(u64, Vec<&'a [u32]>)>;

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

    /// The parts of `lists` inside the range, with what reading them
    /// costs (one unit per list looked at, one per slot in range), or
    /// `None` once that reaches `budget`: then another plan is cheaper, and
    /// the lists not yet looked at never are.
    fn within_budget(
        &self,
        lists: impl Iterator<Item = &'a [u32]>,
        budget: u64,
        work: &mut u64,
    ) -> ListPlan<'a> {
        let mut cost = 0u64;
        let mut picked = Vec::new();
        for list in lists {
            *work += 1;
            let part = self.in_range(list);
            cost += 1 + part.len() as u64;
            if cost >= budget {
                return None;
            }
            if !part.is_empty() {
                picked.push(part);
            }
        }
        if picked.len() > 1 {
            // Several lists are merged by sorting what they hold.
            cost += picked.iter().map(|p| p.len() as u64).sum::<u64>();
            if cost >= budget {
                return None;
            }
        }
        Some((cost, picked))
    }

    /// The lists of the entities under the prefix.
    fn prefix_lists(&self, budget: u64, work: &mut u64) -> ListPlan<'a> {
        let prefix = self.region.entity_prefix.as_deref()?;
        let idx = self.index;
        let lists = idx
            .entity_order
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(_, &e)| idx.entities[e as usize].slots.as_slice());
        self.within_budget(lists, budget, work)
    }

    fn kind_lists(&self, budget: u64, work: &mut u64) -> ListPlan<'a> {
        let idx = self.index;
        match self.region.fact? {
            KindFilter::Exact(k) => self.within_budget(
                std::iter::once(idx.by_kind.get(&k.raw()).map_or(&[][..], Vec::as_slice)),
                budget,
                work,
            ),
            KindFilter::Category(c) => self.within_budget(
                idx.by_kind
                    .iter()
                    .filter(|(k, _)| crate::event::EventKind::from_raw(**k).category() == c)
                    .map(|(_, v)| v.as_slice()),
                budget,
                work,
            ),
            KindFilter::Any => None,
        }
    }

    fn scope_list(&self, budget: u64, work: &mut u64) -> ListPlan<'a> {
        let scope = self.region.scope.as_deref()?;
        let idx = self.index;
        let list = idx
            .scope_ids
            .get(scope)
            .map_or(&[][..], |&s| idx.scopes[s as usize].slots.as_slice());
        self.within_budget(std::iter::once(list), budget, work)
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
        let mut out = Vec::new();
        self.collect_into(&mut out);
        out
    }

    /// Run the query, appending the matching slots to `out`. Returns the
    /// work done: candidate lists looked at plus slots examined.
    ///
    /// Plans: scan every slot of the range (cost: its length), or read the
    /// narrowest candidate lists (the entities under the prefix, the scope,
    /// the kind) inside the range. The cheapest wins, and gathering a plan's
    /// lists stops as soon as it costs more than the best so far, so a
    /// prefix over many entities costs at most the range's length: a cursor
    /// following a live tail pays for the few new slots, not for every
    /// entity under its prefix.
    pub(crate) fn collect_into(self, out: &mut Vec<u32>) -> u64 {
        if self.from >= self.to {
            return 0;
        }
        let mut work = 0;
        let mut budget = u64::from(self.to - self.from);
        let mut best: Option<Vec<&'a [u32]>> = None;
        let plans: [fn(&Self, u64, &mut u64) -> ListPlan<'a>; 3] =
            [Self::prefix_lists, Self::scope_list, Self::kind_lists];
        for plan in plans {
            if let Some((cost, lists)) = plan(&self, budget, &mut work) {
                budget = cost;
                best = Some(lists);
            }
        }
        let start = out.len();
        match best {
            None => {
                work += u64::from(self.to - self.from);
                out.extend((self.from..self.to).filter(|&s| self.matches(s)));
            }
            Some(lists) => {
                for list in &lists {
                    work += list.len() as u64;
                    out.extend(list.iter().copied().filter(|&s| self.matches(s)));
                }
                if lists.len() > 1 {
                    out[start..].sort_unstable();
                }
            }
        }
        work
    }
}
