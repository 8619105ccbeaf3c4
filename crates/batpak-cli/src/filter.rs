//! Event filters shared by `ls`/`query` and `tail`, and the parsers for the
//! values users type: event ids, kinds, categories and clock ranges.

use batpak::prelude::*;

/// Which events to show. Every filter given must match.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Filters {
    /// Events of entities whose name starts with PREFIX.
    #[arg(long, value_name = "PREFIX", conflicts_with = "entity")]
    pub entity_prefix: Option<String>,
    /// Events of exactly this entity (in the entity's clock order).
    #[arg(long, value_name = "ENTITY")]
    pub entity: Option<String>,
    /// Events in exactly this scope.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Events of this kind: hex (0x1001) or decimal (4097).
    #[arg(long, value_name = "KIND", value_parser = parse_kind, conflicts_with = "category")]
    pub kind: Option<EventKind>,
    /// Events whose kind is in this category (the kind's top 4 bits, 0..=15).
    #[arg(long, value_name = "N", value_parser = parse_category)]
    pub category: Option<u8>,
    /// Events whose entity clock is in LO..HI (inclusive; either end may be omitted).
    #[arg(long, value_name = "LO..HI", value_parser = parse_clock_range)]
    pub clock_range: Option<(u32, u32)>,
    /// Events of the causal tree with this correlation id.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub correlation: Option<u128>,
}

impl Filters {
    /// The region the store can evaluate itself. An exact entity becomes its
    /// prefix here; [`Filters::matches`] adds the exactness.
    pub fn region(&self) -> Region {
        let mut r = match (&self.entity, &self.entity_prefix) {
            (Some(e), _) | (None, Some(e)) => Region::entity(e),
            (None, None) => Region::all(),
        };
        if let Some(s) = &self.scope {
            r = r.with_scope(s);
        }
        if let Some(k) = self.kind {
            r = r.with_fact(KindFilter::Exact(k));
        }
        if let Some(c) = self.category {
            r = r.with_fact_category(c);
        }
        if let Some(range) = self.clock_range {
            r = r.with_clock_range(range);
        }
        r
    }

    /// Whether `e` passes every filter.
    pub fn matches(&self, region: &Region, e: &IndexEntry) -> bool {
        region.matches_event(e.coord.entity(), e.coord.scope(), e.kind)
            && region.matches_clock(e.clock)
            && self.entity.as_deref().is_none_or(|x| x == e.coord.entity())
            && self.correlation.is_none_or(|c| c == e.correlation_id)
    }

    /// The matching events visible now: an exact entity in its stream (clock)
    /// order, everything else in global order. The narrowest index serves
    /// the candidates; the full filter then runs on each.
    pub fn existing<S: EventStore>(&self, store: &S) -> Result<Vec<IndexEntry>, StoreError> {
        let region = self.region();
        let candidates = if let Some(entity) = &self.entity {
            store.stream(entity)?
        } else if let Some(c) = self.correlation {
            store.by_correlation(c)?
        } else {
            store.query(&region)?
        };
        Ok(candidates
            .into_iter()
            .filter(|e| self.matches(&region, e))
            .collect())
    }
}

/// An event id: 32 hex digits, optionally prefixed `event:` or `0x`, and
/// optionally with dashes as in a UUID.
pub fn parse_id(s: &str) -> Result<u128, String> {
    let t = s.trim();
    let t = t.strip_prefix("event:").unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}` is not an event id: expected 32 hex digits (ids in tables are \
             shortened; `ls --full-ids` or `--json` shows them whole)"
        ));
    }
    u128::from_str_radix(&hex, 16).map_err(|e| format!("`{s}`: {e}"))
}

/// A number in hex (`0x…`) or decimal.
fn parse_number(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number (hex like 0x1001 or decimal)"))
}

/// An event kind, hex (`0x1001`) or decimal.
pub fn parse_kind(s: &str) -> Result<EventKind, String> {
    let n = parse_number(s)?;
    u16::try_from(n)
        .map(EventKind::from_raw)
        .map_err(|_| format!("kind `{s}` does not fit in 16 bits"))
}

/// A kind category, 0..=15.
pub fn parse_category(s: &str) -> Result<u8, String> {
    match parse_number(s)? {
        n @ 0..=15 => Ok(n as u8),
        _ => Err(format!("category `{s}` must be 0..=15")),
    }
}

/// `LO..HI`, `LO..=HI`, `LO..` or `..HI`, inclusive.
pub fn parse_clock_range(s: &str) -> Result<(u32, u32), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range: expected LO..HI"))?;
    let hi = hi.strip_prefix('=').unwrap_or(hi);
    let bound = |part: &str, default: u32| -> Result<u32, String> {
        if part.trim().is_empty() {
            return Ok(default);
        }
        part.trim()
            .parse()
            .map_err(|_| format!("`{part}` in `{s}` is not a clock value (0..=4294967295)"))
    };
    let (lo, hi) = (bound(lo, 0)?, bound(hi, u32::MAX)?);
    if lo > hi {
        return Err(format!("empty clock range `{s}`: {lo} > {hi}"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = 0x0190_1234_5678_7abc_8def_0123_4567_89ab_u128;
        let hex = "0190123456787abc8def0123456789ab";
        assert_eq!(parse_id(hex), Ok(id));
        assert_eq!(parse_id(&format!("event:{hex}")), Ok(id));
        assert_eq!(parse_id("01901234-5678-7abc-8def-0123456789ab"), Ok(id));
        assert_eq!(parse_id(&hex.to_uppercase()), Ok(id));
        assert!(parse_id("…0123456789ab").is_err());
        assert!(parse_id("xyz").is_err());
        assert!(parse_id(&format!("{hex}0")).is_err());
    }

    #[test]
    fn kinds_and_ranges() {
        assert_eq!(parse_kind("0x1001").map(|k| k.raw()), Ok(0x1001));
        assert_eq!(parse_kind("4097").map(|k| k.raw()), Ok(0x1001));
        assert!(parse_kind("0x10000").is_err());
        assert_eq!(parse_category("0xF"), Ok(15));
        assert!(parse_category("16").is_err());
        assert_eq!(parse_clock_range("2..5"), Ok((2, 5)));
        assert_eq!(parse_clock_range("2..=5"), Ok((2, 5)));
        assert_eq!(parse_clock_range("3.."), Ok((3, u32::MAX)));
        assert_eq!(parse_clock_range("..3"), Ok((0, 3)));
        assert!(parse_clock_range("5..2").is_err());
        assert!(parse_clock_range("5").is_err());
    }
}
