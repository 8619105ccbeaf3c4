//! How database failures become [`StoreError`]s: a lost or refused
//! connection is `Unavailable` (retryable), a race the append loop resolves
//! itself is a [`Race`], anything else is `Backend`. Never a panic.

use batpak::store::StoreError;
use postgres::error::SqlState;

/// The SQLSTATE the append statement aborts with when an entity was not in
/// the expected state (schema.rs).
const STALE: &str = "BP001";

/// What a failed statement means for the append loop.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An entity was not in the expected state (the statement aborted with
    /// BP001, or lost a unique index on an entity's row or clock): re-read
    /// the states and plan again. Nothing of the attempt was written.
    Stale,
    /// Another writer won a race the loop can retry: a key committed
    /// meanwhile, a serialization failure, a deadlock. Nothing of the
    /// attempt was written.
    Race(&'static str),
    /// Give up with this error.
    Fatal(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fatal(e)
    }
}

/// A database error whose message says what the server said (the client's
/// own `Display` is only "db error"); its source is the client's error.
#[derive(Debug)]
pub(crate) struct DbFailure(pub(crate) postgres::Error);

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "{} {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for DbFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The store error for a failed database call.
pub(crate) fn store_error(e: postgres::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(Box::new(DbFailure(e)))
    } else {
        StoreError::Backend(Box::new(DbFailure(e)))
    }
}

/// Sort a failed append statement into a race to retry or a final error.
pub(crate) fn classify_write(e: postgres::Error) -> Failure {
    if let Some(code) = e.code() {
        if *code == SqlState::UNIQUE_VIOLATION {
            let constraint = e
                .as_db_error()
                .and_then(|d| d.constraint())
                .unwrap_or_default();
            // Keys, new entities and clocks are decided by these unique
            // indexes: losing one of them means another writer got there
            // first, and nothing of this attempt was written.
            return match constraint {
                "events_pkey" => Failure::Race("an idempotency key committed meanwhile"),
                "streams_pkey" | "events_entity_clock_key" => Failure::Stale,
                _ => Failure::Fatal(StoreError::Backend(Box::new(DbFailure(e)))),
            };
        }
        if code.code() == STALE {
            return Failure::Stale;
        }
        if *code == SqlState::T_R_SERIALIZATION_FAILURE {
            return Failure::Race("serialization failure");
        }
        if *code == SqlState::T_R_DEADLOCK_DETECTED {
            return Failure::Race("deadlock");
        }
    }
    Failure::Fatal(store_error(e))
}

/// The error ended the session: the socket failed or closed, or the server
/// sent a FATAL error (it closes the connection after one). The connection
/// must not be used again.
pub(crate) fn ends_session(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            matches!(db.severity(), "FATAL" | "PANIC") || db.code().code().starts_with("08")
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// A connection that is gone or refused, or a server that cannot do the
/// work now: worth trying again later.
fn is_unavailable(e: &postgres::Error) -> bool {
    if ends_session(e) {
        return true;
    }
    match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            // 08 connection exception, 53 insufficient resources (disk
            // full, out of memory, too many connections), 57P01..57P05
            // admin or crash shutdown, cannot connect now, idle timeouts,
            // 40 transaction rollback (serialization failure, deadlock),
            // 58 system error (I/O).
            class == "08"
                || class == "53"
                || class == "40"
                || class == "58"
                || (class == "57" && code.code() != "57014")
        }
        // No SQLSTATE: the client failed (I/O, a closed socket, a timeout)
        // rather than the server refusing the statement.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// The error for an r2d2 checkout that found no connection in time.
pub(crate) fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}
