//! [`PgConfig`]: where the store lives (URL, schema), its pool, its limits
//! and its clock, and the validation of all of them.

use batpak::store::codec::{self, AppendLimits};
use batpak::store::{ClockFn, StoreError};
#[cfg(feature = "test-support")]
use std::sync::Arc;
use std::time::Duration;

/// The schema a store uses when none is given.
pub const DEFAULT_SCHEMA: &str = "batpak";

/// A hook run inside an append's transaction, after its rows are written
/// and before `COMMIT` (feature `test-support`): tests pause or kill the
/// process there to prove that nothing of an uncommitted append shows.
#[cfg(feature = "test-support")]
pub type BeforeCommitHook = Arc<dyn Fn() + Send + Sync>;

/// Everything [`crate::PgStore::open`] needs. Build with [`PgConfig::new`]
/// and the `with_*` methods.
///
/// ```
/// use batpak_postgres::PgConfig;
/// let cfg = PgConfig::new("postgres://app@db.internal/events")
///     .with_schema("orders")
///     .with_pool_size(32);
/// assert_eq!(cfg.schema, "orders");
/// ```
#[derive(Clone)]
pub struct PgConfig {
    /// Connection string: a `postgres://` URL or `key=value` pairs.
    pub url: String,
    /// The schema holding the store's tables (default `batpak`). Two stores
    /// in one database use two schemas. Lower-case ASCII letters, digits
    /// and `_`, starting with a letter or `_`, at most 63 bytes.
    pub schema: String,
    /// Most connections the store opens (default 16).
    pub pool_size: u32,
    /// Connections kept open while idle (default 1).
    pub pool_min_idle: u32,
    /// How long an operation waits for a connection before it fails with
    /// `Unavailable` (default 10 s); also the connect timeout.
    pub connect_timeout: Duration,
    /// Largest encoded payload of one event (default 16 MiB).
    pub single_append_max_bytes: u32,
    /// Most items in one batch (1..=4096, default 256).
    pub batch_max_size: u32,
    /// Most payload bytes in one batch (1..=16 MiB, default 1 MiB).
    pub batch_max_bytes: u32,
    /// Attempts of one append when concurrent writers keep winning the race
    /// for its entities, or the server reports a serialization failure or
    /// a deadlock (default 100); past them the append fails `Unavailable`.
    pub max_attempts: u32,
    /// Source of event timestamps (µs since the Unix epoch); `None` = system time.
    pub clock: Option<ClockFn>,
    /// Announce commits with a `NOTIFY` on the store's channel, sent by a
    /// background thread after each commit (default true). Waiting cursors
    /// and subscriptions in every process wake on it; without it they find
    /// new events at their next [`PgConfig::poll_interval`].
    pub notify: bool,
    /// Longest a waiting cursor or lossy subscription goes without reading,
    /// whatever notifications say (default 500 ms): the bound on delivery
    /// latency when a notification is lost or the listening connection is
    /// down. Correctness never depends on it.
    pub poll_interval: Duration,
    /// Rows a cursor reads per round trip (1..=65,536, default 2048).
    pub cursor_page_size: u32,
    /// Buffer of each lossy subscription, in notifications (default 8192).
    pub broadcast_capacity: usize,
    #[cfg(feature = "test-support")]
    pub(crate) before_commit: Option<BeforeCommitHook>,
    /// Transactions per window of a filtered cursor scan (tests only).
    #[cfg(feature = "test-support")]
    pub(crate) cursor_window_xids: Option<i64>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_password(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("pool_min_idle", &self.pool_min_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("single_append_max_bytes", &self.single_append_max_bytes)
            .field("batch_max_size", &self.batch_max_size)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("max_attempts", &self.max_attempts)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("notify", &self.notify)
            .field("poll_interval", &self.poll_interval)
            .field("cursor_page_size", &self.cursor_page_size)
            .field("broadcast_capacity", &self.broadcast_capacity)
            .finish()
    }
}

/// `url` with any password replaced, for logs and debug output.
pub(crate) fn redact_password(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme_len = url.len() - rest.len();
        if let Some(at) = rest.find('@') {
            let creds = &rest[..at];
            if let Some(colon) = creds.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_len],
                    &creds[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl PgConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 16,
            pool_min_idle: 1,
            connect_timeout: Duration::from_secs(10),
            single_append_max_bytes: codec::DEFAULT_SINGLE_APPEND_MAX_BYTES,
            batch_max_size: 256,
            batch_max_bytes: 1024 * 1024,
            max_attempts: 100,
            clock: None,
            notify: true,
            poll_interval: Duration::from_millis(500),
            cursor_page_size: 2048,
            broadcast_capacity: 8192,
            #[cfg(feature = "test-support")]
            before_commit: None,
            #[cfg(feature = "test-support")]
            cursor_window_xids: None,
        }
    }
    /// Set `url`.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }
    /// Set `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
    /// Set `pool_size`.
    #[must_use]
    pub fn with_pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }
    /// Set `pool_min_idle`.
    #[must_use]
    pub fn with_pool_min_idle(mut self, n: u32) -> Self {
        self.pool_min_idle = n;
        self
    }
    /// Set `connect_timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Set `single_append_max_bytes`.
    #[must_use]
    pub fn with_single_append_max_bytes(mut self, n: u32) -> Self {
        self.single_append_max_bytes = n;
        self
    }
    /// Set `batch_max_size`.
    #[must_use]
    pub fn with_batch_max_size(mut self, n: u32) -> Self {
        self.batch_max_size = n;
        self
    }
    /// Set `batch_max_bytes`.
    #[must_use]
    pub fn with_batch_max_bytes(mut self, n: u32) -> Self {
        self.batch_max_bytes = n;
        self
    }
    /// Set `max_attempts`.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Set the timestamp source.
    #[must_use]
    pub fn with_clock(mut self, clock: Option<ClockFn>) -> Self {
        self.clock = clock;
        self
    }
    /// Set `notify`.
    #[must_use]
    pub fn with_notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }
    /// Set `poll_interval`.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
    /// Set `cursor_page_size`.
    #[must_use]
    pub fn with_cursor_page_size(mut self, n: u32) -> Self {
        self.cursor_page_size = n;
        self
    }
    /// Set `broadcast_capacity`.
    #[must_use]
    pub fn with_broadcast_capacity(mut self, n: usize) -> Self {
        self.broadcast_capacity = n;
        self
    }
    /// Test hook (feature `test-support`): run `hook` inside every append's
    /// transaction after its rows are written, before `COMMIT`. Appends then
    /// take an explicit transaction (three round trips instead of one).
    #[cfg(feature = "test-support")]
    #[must_use]
    pub fn with_before_commit(mut self, hook: Option<BeforeCommitHook>) -> Self {
        self.before_commit = hook;
        self
    }

    /// Test hook (feature `test-support`): windows of `xids` transactions
    /// for filtered cursor scans instead of 16,384, so that tests cross
    /// windows with few events.
    #[cfg(feature = "test-support")]
    #[must_use]
    pub fn with_cursor_window_xids(mut self, xids: i64) -> Self {
        self.cursor_window_xids = Some(xids.max(1));
        self
    }

    /// Check every value.
    ///
    /// # Errors
    /// `Configuration` naming the value that is out of range.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |msg: String| Err(StoreError::Configuration(msg));
        if self.url.trim().is_empty() {
            return bad("url is empty".into());
        }
        validate_schema_name(&self.schema)?;
        if self.pool_size == 0 {
            return bad("pool_size must be at least 1".into());
        }
        if self.pool_min_idle > self.pool_size {
            return bad(format!(
                "pool_min_idle ({}) must not exceed pool_size ({})",
                self.pool_min_idle, self.pool_size
            ));
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must not be zero".into());
        }
        if self.single_append_max_bytes == 0
            || self.single_append_max_bytes > codec::MAX_SINGLE_APPEND_BYTES
        {
            return bad(format!(
                "single_append_max_bytes must be 1..={}, got {}",
                codec::MAX_SINGLE_APPEND_BYTES,
                self.single_append_max_bytes
            ));
        }
        if !(1..=4096).contains(&self.batch_max_size) {
            return bad(format!(
                "batch_max_size must be 1..=4096, got {}",
                self.batch_max_size
            ));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.batch_max_bytes) {
            return bad(format!(
                "batch_max_bytes must be 1..=16 MiB, got {}",
                self.batch_max_bytes
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(3600) {
            return bad(format!(
                "poll_interval must be more than zero and at most an hour, got {:?}",
                self.poll_interval
            ));
        }
        if !(1..=65_536).contains(&self.cursor_page_size) {
            return bad(format!(
                "cursor_page_size must be 1..=65536, got {}",
                self.cursor_page_size
            ));
        }
        if self.broadcast_capacity == 0 {
            return bad("broadcast_capacity must be at least 1".into());
        }
        Ok(())
    }

    /// `url` with any password replaced by `***`, for messages and logs.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_password(&self.url)
    }

    pub(crate) fn limits(&self) -> AppendLimits {
        AppendLimits {
            single_append_max_bytes: self.single_append_max_bytes,
            batch_max_size: self.batch_max_size,
            batch_max_bytes: self.batch_max_bytes,
        }
    }

    /// Transactions per window of a filtered cursor scan.
    pub(crate) fn cursor_window(&self) -> i64 {
        #[cfg(feature = "test-support")]
        if let Some(x) = self.cursor_window_xids {
            return x;
        }
        crate::cursor::WINDOW_XIDS
    }

    pub(crate) fn now_us(&self) -> i64 {
        match &self.clock {
            Some(c) => c(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }
}

/// A schema name goes into SQL text, so only plain identifiers are
/// accepted: nothing to quote, nothing to inject, no case folding surprises.
pub(crate) fn validate_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StoreError::Configuration(format!(
            "schema {schema:?} must be 1..=63 lower-case ASCII letters, digits or '_', \
             not start with a digit or 'pg_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["batpak", "orders_2", "_x"] {
            validate_schema_name(good).unwrap();
        }
        for bad in [
            "",
            "Orders",
            "a-b",
            "a;drop",
            "1abc",
            "pg_catalog",
            "x\"y",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(validate_schema_name(bad), Err(StoreError::Configuration(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_values_are_configuration_errors() {
        let base = PgConfig::new("postgres://localhost/x");
        base.validate().unwrap();
        for cfg in [
            base.clone().with_pool_size(0),
            base.clone().with_pool_min_idle(17),
            base.clone().with_batch_max_size(0),
            base.clone().with_batch_max_size(5000),
            base.clone().with_single_append_max_bytes(0),
            base.clone().with_max_attempts(0),
            base.clone().with_connect_timeout(Duration::ZERO),
            base.clone().with_poll_interval(Duration::ZERO),
            base.clone().with_cursor_page_size(0),
            base.clone().with_broadcast_capacity(0),
            PgConfig::new(" "),
        ] {
            assert!(matches!(cfg.validate(), Err(StoreError::Configuration(_))));
        }
    }

    #[test]
    fn passwords_never_reach_debug_output() {
        let cfg = PgConfig::new("postgres://app:s3cret@db/x");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db/x"), "{shown}");
        assert_eq!(
            redact_password("host=db password=s3cret user=app"),
            "host=db password=*** user=app"
        );
    }
}
