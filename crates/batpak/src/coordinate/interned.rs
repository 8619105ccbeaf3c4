//! Process-wide interning of the entity and scope names a store indexes.
//!
//! Owns one table of names for the whole process. Every store's index
//! interns the names of the coordinates it holds here, so the coordinates
//! it hands out (in every `IndexEntry`, `Notification` and `StoredEvent`)
//! point at names that live as long as the process: copying one is copying
//! a pointer, with no reference count to touch and nothing to free (ADR
//! 0021). Names are never removed; the table grows with the distinct names
//! the process has indexed, not with how often they are read or how many
//! times a store is opened. It knows nothing about stores or events.

use hashbrown::HashMap;
use std::sync::{LazyLock, Mutex};

/// An interned (entity, scope) pair.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) entity: &'static str,
    pub(crate) scope: &'static str,
}

#[derive(Default)]
struct Table {
    /// Every interned name, keyed by itself.
    names: hashbrown::HashSet<&'static str>,
    /// Every interned pair, keyed by the addresses of its two names (which
    /// are unique, as each name is interned once).
    pairs: HashMap<(usize, usize), &'static Names>,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);

fn table() -> std::sync::MutexGuard<'static, Table> {
    // The table is only ever extended by whole entries: a panic while it
    // was held cannot have left it inconsistent.
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `name`, interned: the same `&'static str` for equal names.
pub(crate) fn intern(name: &str) -> &'static str {
    let mut t = table();
    if let Some(&s) = t.names.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(Box::from(name));
    t.names.insert(s);
    s
}

/// The pair of two names from [`intern`], interned.
pub(crate) fn intern_pair(entity: &'static str, scope: &'static str) -> &'static Names {
    let key = (entity.as_ptr() as usize, scope.as_ptr() as usize);
    let mut t = table();
    if let Some(&p) = t.pairs.get(&key) {
        return p;
    }
    let p: &'static Names = Box::leak(Box::new(Names { entity, scope }));
    t.pairs.insert(key, p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_intern_to_one_copy() {
        let a = intern(&String::from("order:interned-test"));
        let b = intern("order:interned-test");
        assert!(std::ptr::eq(a, b));
        let s = intern("tenant:interned-test");
        assert!(std::ptr::eq(intern_pair(a, s), intern_pair(b, s)));
        assert!(!std::ptr::eq(intern_pair(a, s), intern_pair(s, a)));
        assert_eq!(intern_pair(a, s).entity, "order:interned-test");
    }
}
