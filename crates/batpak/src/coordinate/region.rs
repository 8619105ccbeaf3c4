use crate::event::EventKind;
use std::sync::Arc;

/// Which event kinds a [`Region`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KindFilter {
    /// Exactly this kind.
    Exact(EventKind),
    /// Every kind whose top four bits are this category.
    Category(u8),
    /// Every kind.
    Any,
}

impl KindFilter {
    /// Whether `kind` passes this filter.
    #[must_use]
    pub fn matches(&self, kind: EventKind) -> bool {
        match *self {
            KindFilter::Exact(k) => k == kind,
            KindFilter::Category(c) => kind.category() == c,
            KindFilter::Any => true,
        }
    }
}

/// One predicate type for queries, cursors and subscriptions.
///
/// Every field that is `Some` must match: `entity_prefix` is a prefix match on the
/// entity, `scope` is exact, `fact` filters by kind, and `clock_range` is an
/// inclusive range on the entity clock.
///
/// ```
/// use batpak::prelude::*;
/// let r = Region::entity("order:").with_scope("tenant:a").with_fact_category(1);
/// assert!(r.matches_event("order:7", "tenant:a", EventKind::DATA));
/// assert!(!r.matches_event("order:7", "tenant:b", EventKind::DATA));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// Entity prefix (`"order:"` matches `"order:1"` and `"order:22"`).
    pub entity_prefix: Option<Arc<str>>,
    /// Exact scope.
    pub scope: Option<Arc<str>>,
    /// Kind filter.
    pub fact: Option<KindFilter>,
    /// Inclusive entity-clock range `(min, max)`.
    pub clock_range: Option<(u32, u32)>,
}

impl Region {
    /// Every event.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Events whose entity starts with `prefix`.
    #[must_use]
    pub fn entity(prefix: impl AsRef<str>) -> Self {
        Self {
            entity_prefix: Some(Arc::from(prefix.as_ref())),
            ..Self::default()
        }
    }

    /// Events in exactly this scope.
    #[must_use]
    pub fn scope(scope: impl AsRef<str>) -> Self {
        Self::all().with_scope(scope)
    }

    /// Restrict to exactly this scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl AsRef<str>) -> Self {
        self.scope = Some(Arc::from(scope.as_ref()));
        self
    }

    /// Restrict by kind.
    #[must_use]
    pub fn with_fact(mut self, filter: KindFilter) -> Self {
        self.fact = Some(filter);
        self
    }

    /// Restrict to one kind category.
    #[must_use]
    pub fn with_fact_category(self, category: u8) -> Self {
        self.with_fact(KindFilter::Category(category))
    }

    /// Restrict to entity clocks in `min..=max`.
    #[must_use]
    pub fn with_clock_range(mut self, range: (u32, u32)) -> Self {
        self.clock_range = Some(range);
        self
    }

    /// Whether an event at (`entity`, `scope`) of `kind` matches. Ignores
    /// `clock_range`, which needs the clock (see [`Region::matches_clock`]).
    #[must_use]
    pub fn matches_event(&self, entity: &str, scope: &str, kind: EventKind) -> bool {
        self.entity_prefix
            .as_deref()
            .is_none_or(|p| entity.starts_with(p))
            && self.scope.as_deref().is_none_or(|s| s == scope)
            && self.fact.is_none_or(|f| f.matches(kind))
    }

    /// Whether an entity clock lies inside `clock_range` (always true without one).
    #[must_use]
    pub fn matches_clock(&self, clock: u32) -> bool {
        self.clock_range
            .is_none_or(|(lo, hi)| lo <= clock && clock <= hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_predicates() {
        let k = EventKind::custom(2, 5);
        assert!(Region::all().matches_event("a", "b", k));
        assert!(Region::entity("ord").matches_event("order", "s", k));
        assert!(!Region::entity("order:1").matches_event("order:", "s", k));
        assert!(Region::scope("s").matches_event("x", "s", k));
        assert!(!Region::scope("s").matches_event("x", "s2", k));
        assert!(Region::all()
            .with_fact(KindFilter::Exact(k))
            .matches_event("x", "s", k));
        assert!(!Region::all()
            .with_fact(KindFilter::Exact(EventKind::DATA))
            .matches_event("x", "s", k));
        assert!(Region::all()
            .with_fact_category(2)
            .matches_event("x", "s", k));
        assert!(!Region::all()
            .with_fact_category(1)
            .matches_event("x", "s", k));
        let r = Region::all().with_clock_range((2, 4));
        assert!(
            !r.matches_clock(1) && r.matches_clock(2) && r.matches_clock(4) && !r.matches_clock(5)
        );
        assert!(
            r.matches_event("x", "s", k),
            "matches_event ignores clock_range"
        );
    }
}
