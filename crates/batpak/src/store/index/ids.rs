//! The id table: event id to slot, in one flat array.
//!
//! Owns only the table. Each entry is one `u64`: the slot (plus one; zero
//! marks an empty entry) and a 32-bit tag, the high half of the id's hash.
//! The tag also picks the entry's home bucket, so entries can move (growth,
//! removal) without their ids. A lookup touches the table once and the
//! record of a candidate only when its tag matches: two cache misses for a
//! random id, where a table keeping its control bytes apart from its slots
//! costs three. Open addressing with linear probing, at most three quarters
//! full; removal shifts the rest of a probe run back, so no tombstones
//! accumulate. Hashes come from the caller (seeded per process, see
//! `id_hash`), and the caller confirms each candidate against its record.

use crate::store::huge_pages;

/// Event id to slot.
#[derive(Default)]
pub(crate) struct IdTable {
    entries: Vec<u64>,
    len: usize,
}

const EMPTY: u64 = 0;

#[inline]
fn tag(hash: u64) -> u64 {
    hash & 0xffff_ffff_0000_0000
}

/// The bucket where an entry of tag `tag` belongs in a table of `1 << bits`
/// buckets (Fibonacci hashing of the tag, so entries that share a home
/// still differ in all 32 bits of their tags).
#[inline]
fn home(tag: u64, bits: u32) -> usize {
    ((tag >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

#[inline]
fn slot_of(entry: u64) -> u32 {
    (entry as u32).wrapping_sub(1)
}

#[inline]
fn entry(hash: u64, slot: u32) -> u64 {
    tag(hash) | u64::from(slot + 1)
}

impl IdTable {
    /// A table that holds `n` ids without growing.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let mut t = Self::default();
        t.grow_to(Self::buckets_for(n));
        t
    }

    fn buckets_for(n: usize) -> usize {
        (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(16)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    #[inline]
    fn bits(&self) -> u32 {
        self.entries.len().trailing_zeros()
    }

    /// Entries the table has room for (for memory figures).
    pub(crate) fn buckets(&self) -> usize {
        self.entries.len()
    }

    /// The slot whose id hashes to `hash` and passes `is_it` (called only
    /// for candidates whose hash matches in its high 32 bits).
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = home(tag(hash), self.bits());
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return None;
            }
            if tag(e) == tag(hash) && is_it(slot_of(e)) {
                return Some(slot_of(e));
            }
            i = (i + 1) & mask;
        }
    }

    /// Start loading the entry where a lookup of `hash` begins.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if self.entries.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(e) = self.entries.get(home(tag(hash), self.bits())) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: a prefetch is only a hint to the cache: it reads
            // nothing architecturally and never faults (here the address
            // is inside the table).
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(e).cast::<i8>());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Add `slot` under `hash` (the caller knows the id is not in the table).
    pub(crate) fn insert_unique(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            let old = std::mem::take(&mut self.entries);
            self.grow_to(Self::buckets_for(self.len + 1).max(old.len() * 2));
            for e in old.into_iter().filter(|&e| e != EMPTY) {
                self.place(e);
            }
        }
        self.place(entry(hash, slot));
        self.len += 1;
    }

    fn grow_to(&mut self, buckets: usize) {
        let mut entries = huge_pages::vec_with_capacity(buckets);
        entries.resize(buckets, EMPTY);
        self.entries = entries;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = home(tag(e), self.bits());
        while self.entries[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    /// Remove the entry for `slot` under `hash`. Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let mask = self.mask();
        let want = entry(hash, slot);
        let mut i = home(tag(hash), self.bits());
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return false;
            }
            if e == want {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift deletion: move later members of the run into the
        // hole when their home bucket does not lie (cyclically) after it.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let at_home = home(tag(e), self.bits());
            let dist_home_to_j = j.wrapping_sub(at_home) & mask;
            let dist_hole_to_j = j.wrapping_sub(hole) & mask;
            if dist_home_to_j >= dist_hole_to_j {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model check: random inserts and removals against a map.
    #[test]
    fn agrees_with_a_map_under_inserts_and_removals() {
        let mut t = IdTable::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Hashes of few distinct tags as well, so runs form and collide.
        let hash_of = |slot: u32| -> u64 {
            let h = u64::from(slot).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if slot.is_multiple_of(3) {
                (h & 0xffff_ffff) | (u64::from(slot % 7) << 32)
            } else {
                h
            }
        };
        for slot in 0..20_000u32 {
            t.insert_unique(hash_of(slot), slot);
            model.insert(slot, ());
            if next() % 3 == 0 {
                let victim = (next() % u64::from(slot + 1)) as u32;
                assert_eq!(
                    t.remove(hash_of(victim), victim),
                    model.remove(&victim).is_some()
                );
            }
        }
        for slot in 0..20_000u32 {
            let found = t.find(hash_of(slot), |s| s == slot);
            assert_eq!(found.is_some(), model.contains_key(&slot), "slot {slot}");
        }
        assert_eq!(t.len, model.len());
        assert!(t.len * 4 <= t.buckets() * 3);
        assert!(t.find(12345, |_| true).is_none() || t.len > 0);
        assert!(IdTable::default().find(1, |_| true).is_none());
    }
}
