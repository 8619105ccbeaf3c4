//! Map shapes: a per-thread cache of the key sets that decoded payload
//! maps keep having, so that a map of a known shape is built by cloning a
//! template instead of from its entries (ADR 0036).
//!
//! Owns only how a decoded map's entries become a `serde_json::Map`. It
//! never sees bytes: the payload decoder hands it keys and values already
//! checked. What it builds is equal, entry for entry and in iteration
//! order, to building the map by inserting the entries in turn (the last
//! value of a repeated key wins), whether `serde_json::Map` is a `BTreeMap`
//! or, with `preserve_order`, an `IndexMap`.
//!
//! Why: most maps in an event store have the same few keys event after
//! event. `serde_json::Map` can only be built entry by entry (a search and
//! insert per key) or from a list that it sorts and deduplicates first;
//! cloning a map of the same keys fills its nodes directly. For the
//! benchmarks' 5-key map, build and drop cost ~240 ns either way and ~125
//! ns by clone (a one-off measurement in a throwaway program; no benchmark
//! pins it).

use serde_json::{Map, Value};
use std::cell::RefCell;

/// Maps with more entries than this are built from their entries: the
/// decoder gathers a shaped map's values on the stack before building it,
/// and deep nesting multiplies that space.
pub(super) const MAX_KEYS: usize = 12;

/// Longest key, in bytes, a template keeps: longer keys are more likely
/// data (ids, names) than field names, and a template holds its keys for
/// the life of the thread.
const MAX_KEY_BYTES: usize = 64;

/// Templates per thread, chosen by the shape's fingerprint. With the two
/// limits above, a thread's templates hold at most ~45 KiB (16 templates
/// of 12 keys of 64 bytes: 44,160 bytes with `BTreeMap`).
const SLOTS: usize = 16;

thread_local! {
    static SHAPES: RefCell<Shapes> = RefCell::new(Shapes::default());
}

/// Build the map of `keys[i] -> values[i]` (taking the values). `values`
/// has at least as many elements as `keys`, and `keys.len() <= MAX_KEYS`.
pub(super) fn build(keys: &[&str], values: &mut [Value]) -> Map<String, Value> {
    // One insert costs less than finding a template.
    if keys.len() < 2 {
        return from_entries(keys, values);
    }
    // A thread being torn down has no cache left; a nested borrow cannot
    // happen (building calls nothing that decodes), but is not a reason
    // to fail either. Both fall back to building from the entries.
    SHAPES
        .try_with(|shapes| match shapes.try_borrow_mut() {
            Ok(mut shapes) => shapes.build(keys, values),
            Err(_) => from_entries(keys, values),
        })
        .unwrap_or_else(|_| from_entries(keys, values))
}

/// Build the map by inserting the entries in turn (or the equivalent
/// bulk build for larger maps).
pub(super) fn from_entries(keys: &[&str], values: &mut [Value]) -> Map<String, Value> {
    // A one-off measurement on `serde_json::Map` (a throwaway program, best
    // of 3 runs, per map, keys and values included; no benchmark pins it):
    // inserting cost 73 ns for 2 keys, 127 for 3, 224 for 5 and 637 for 12;
    // collecting and building cost 101, 129, 180 and 428.
    const BULK_BUILD_FROM: usize = 4;
    if keys.len() >= BULK_BUILD_FROM {
        return keys
            .iter()
            .zip(values.iter_mut())
            .map(|(k, v)| ((*k).to_owned(), std::mem::take(v)))
            .collect();
    }
    let mut map = Map::new();
    for (k, v) in keys.iter().zip(values.iter_mut()) {
        map.insert((*k).to_owned(), std::mem::take(v));
    }
    map
}

/// A hash of the key count and each key's length and bytes (short keys
/// whole; for longer ones the first and last 8 bytes). It only picks a
/// slot and recognises a shape seen twice: matching compares the keys.
/// Keys are mixed independently so their multiplies overlap.
fn fingerprint(keys: &[&str]) -> u64 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut h = keys.len() as u64;
    for k in keys {
        let (head, tail) = ends(k.as_bytes());
        let x = (head ^ K1).wrapping_mul(K2) ^ (tail ^ k.len() as u64).wrapping_mul(K1);
        h = h.rotate_left(23) ^ x;
    }
    h ^ (h >> 29)
}

/// The first and last (up to) 8 bytes of `b` as numbers; under 8 bytes, a
/// mix of all of them (wyhash's reads).
fn ends(b: &[u8]) -> (u64, u64) {
    fn word<const N: usize>(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        if let Some(src) = b.get(at..at + N) {
            w[..N].copy_from_slice(src);
        }
        u64::from_le_bytes(w)
    }
    match b.len() {
        0 => (0, 0),
        1..=3 => {
            let (first, mid, last) = (b[0], b[b.len() / 2], b[b.len() - 1]);
            (
                u64::from(first) | u64::from(mid) << 8 | u64::from(last) << 16,
                0,
            )
        }
        4..=7 => (word::<4>(b, 0), word::<4>(b, b.len() - 4)),
        n => (word::<8>(b, 0), word::<8>(b, n - 8)),
    }
}

#[derive(Default)]
struct Shapes {
    slots: [Slot; SLOTS],
    #[cfg(test)]
    templates_made: usize,
}

#[derive(Default)]
struct Slot {
    template: Option<Template>,
    /// Fingerprint of the last shape that found this slot without a
    /// matching template: a shape gets a template when it comes twice in a
    /// row, so maps whose keys are data cost a fingerprint each and make a
    /// template only when the same map is decoded twice running (reading
    /// one event again). Such keys then stay in the thread's cache until
    /// another shape takes the slot.
    candidate: u64,
}

/// A map with a shape's keys and `Null` values, and for each of its
/// entries (in the map's own order) the index of that key in the input.
struct Template {
    fingerprint: u64,
    map: Map<String, Value>,
    input_index: [u8; MAX_KEYS],
}

impl Shapes {
    fn build(&mut self, keys: &[&str], values: &mut [Value]) -> Map<String, Value> {
        let fingerprint = fingerprint(keys);
        let slot = &mut self.slots[(fingerprint % SLOTS as u64) as usize];
        if let Some(t) = &slot.template {
            if t.fingerprint == fingerprint && t.matches(keys) {
                return t.fill(values);
            }
        }
        let map = from_entries(keys, values);
        if slot.candidate != fingerprint {
            slot.candidate = fingerprint;
        } else if let Some(t) = Template::of(&map, keys, fingerprint) {
            slot.template = Some(t);
            #[cfg(test)]
            {
                self.templates_made += 1;
            }
        }
        map
    }
}

impl Template {
    /// The template of `map`, just built from `keys`; none when a key
    /// repeats (the map has fewer entries than keys) or is too long.
    fn of(map: &Map<String, Value>, keys: &[&str], fingerprint: u64) -> Option<Template> {
        if map.len() != keys.len() || keys.len() > MAX_KEYS {
            return None;
        }
        if keys.iter().any(|k| k.len() > MAX_KEY_BYTES) {
            return None;
        }
        let mut input_index = [0u8; MAX_KEYS];
        for (at, k) in map.keys().enumerate() {
            let i = keys.iter().position(|x| x == k)?;
            input_index[at] = u8::try_from(i).ok()?;
        }
        Some(Template {
            fingerprint,
            map: map.keys().map(|k| (k.clone(), Value::Null)).collect(),
            input_index,
        })
    }

    fn matches(&self, keys: &[&str]) -> bool {
        self.map.len() == keys.len()
            && self
                .map
                .keys()
                .zip(&self.input_index)
                .all(|(k, &i)| keys.get(usize::from(i)) == Some(&k.as_str()))
    }

    fn fill(&self, values: &mut [Value]) -> Map<String, Value> {
        let mut map = self.map.clone();
        for (slot, &i) in map.values_mut().zip(&self.input_index) {
            if let Some(v) = values.get_mut(usize::from(i)) {
                super::payload::put(slot, std::mem::take(v));
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    fn inserted(keys: &[&str], values: &[Value]) -> Map<String, Value> {
        let mut map = Map::new();
        for (k, v) in keys.iter().zip(values) {
            map.insert((*k).to_owned(), v.clone());
        }
        map
    }

    fn entries(map: &Map<String, Value>) -> Vec<(String, Value)> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Builds in `shapes` and checks the map against insertion in turn
    /// (same entries, same iteration order).
    fn build_checked(shapes: &mut Shapes, keys: &[&str], vals: &[Value]) -> Map<String, Value> {
        let built = shapes.build(keys, &mut vals.to_vec());
        assert_eq!(entries(&built), entries(&inserted(keys, vals)), "{keys:?}");
        built
    }

    #[test]
    fn a_shape_seen_twice_gets_a_template_and_builds_the_same_map() {
        let mut shapes = Shapes::default();
        let keys = ["total", "customer", "items", "at", "note"];
        for round in 0..4 {
            let vals: Vec<Value> = values(5).into_iter().map(|v| json!([v, round])).collect();
            build_checked(&mut shapes, &keys, &vals);
        }
        assert_eq!(shapes.templates_made, 1);
    }

    #[test]
    fn keys_in_another_order_or_another_set_do_not_use_the_template() {
        let mut shapes = Shapes::default();
        let a = ["a", "b", "c"];
        build_checked(&mut shapes, &a, &values(3));
        build_checked(&mut shapes, &a, &values(3));
        assert_eq!(shapes.templates_made, 1);
        for keys in [
            &["b", "a", "c"][..],
            &["a", "b", "d"],
            &["a", "b", "cc"],
            &["a", "b"],
            &["a", "b", "c", "d"],
        ] {
            build_checked(&mut shapes, keys, &values(keys.len()));
        }
        build_checked(&mut shapes, &a, &values(3));
    }

    /// Keys that share their length and first and last 8 bytes share a
    /// fingerprint, and so a slot: only the byte comparison tells them apart.
    #[test]
    fn keys_with_equal_fingerprints_are_told_apart_by_their_bytes() {
        let mut shapes = Shapes::default();
        let (x, y) = ("customer_X_address", "customer_Y_address");
        assert_eq!(fingerprint(&["id", x]), fingerprint(&["id", y]));
        for _ in 0..3 {
            build_checked(&mut shapes, &["id", x], &values(2));
        }
        assert_eq!(shapes.templates_made, 1);
        let built = build_checked(&mut shapes, &["id", y], &values(2));
        assert!(built.contains_key(y));
    }

    #[test]
    fn repeated_keys_keep_the_last_value_and_get_no_template() {
        let mut shapes = Shapes::default();
        let keys = ["k", "j", "k", "i", "k"];
        for _ in 0..3 {
            let built = build_checked(&mut shapes, &keys, &values(5));
            assert_eq!(built["k"], json!(4));
        }
        assert_eq!(shapes.templates_made, 0);
    }

    /// Maps whose keys are data never repeat a shape: no templates, so
    /// the cache costs them a fingerprint per map and nothing more.
    #[test]
    fn maps_keyed_by_data_make_no_templates() {
        let mut shapes = Shapes::default();
        for i in 0..1000 {
            let (a, b) = (format!("user-{i}"), format!("user-{}", i + 1));
            build_checked(&mut shapes, &[a.as_str(), b.as_str()], &values(2));
        }
        assert_eq!(shapes.templates_made, 0);
    }

    #[test]
    fn keys_over_the_limit_get_no_template() {
        let mut shapes = Shapes::default();
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        for _ in 0..3 {
            build_checked(&mut shapes, &["a", long.as_str()], &values(2));
        }
        assert_eq!(shapes.templates_made, 0);
        let at_limit = "y".repeat(MAX_KEY_BYTES);
        for _ in 0..3 {
            build_checked(&mut shapes, &["a", at_limit.as_str()], &values(2));
        }
        assert_eq!(shapes.templates_made, 1);
    }

    /// A map built by a thread-local destructor that runs after the cache's
    /// own (destructors run newest first, and this one is registered
    /// before the cache) is built from its entries; a panic here would
    /// abort the test process.
    #[test]
    fn a_thread_being_torn_down_builds_from_entries() {
        struct BuildOnDrop;
        impl Drop for BuildOnDrop {
            fn drop(&mut self) {
                assert!(SHAPES.try_with(|_| ()).is_err(), "the cache is gone");
                let keys = ["a", "b", "c"];
                for _ in 0..3 {
                    let built = build(&keys, &mut values(3));
                    assert_eq!(entries(&built), entries(&inserted(&keys, &values(3))));
                }
            }
        }
        thread_local! {
            static LATE: RefCell<Option<BuildOnDrop>> = const { RefCell::new(None) };
        }
        std::thread::spawn(|| {
            LATE.with(|late| *late.borrow_mut() = Some(BuildOnDrop));
            build(&["a", "b", "c"], &mut values(3));
            assert!(SHAPES.try_with(|_| ()).is_ok());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_thread_cache_builds_the_same_maps() {
        let keys = ["b", "a", "d", "c", "e", "f"];
        for _ in 0..3 {
            let vals = values(6);
            let built = build(&keys, &mut vals.clone());
            assert_eq!(entries(&built), entries(&inserted(&keys, &vals)));
        }
    }
}
