//! The database schema: tables, indexes, the append function, and the
//! versioned migrations that create and upgrade them (docs/postgres.md).
//!
//! Every statement names the store's schema explicitly (it was validated to
//! be a plain identifier), so nothing depends on `search_path`. Migrations
//! run in one transaction under an advisory lock on the schema's name:
//! concurrent opens of a new store wait for each other, and a schema newer
//! than this code is refused before anything is touched.

use crate::error::store_error;
use batpak::store::StoreError;
use postgres::Client;

/// The newest schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Advisory-lock class of batpak's migrations (the second key is the
/// schema name's hash), chosen to stay clear of an application's own keys.
const MIGRATION_LOCK_CLASS: i32 = 0x6261_7470; // "batp"

/// One migration: the version it brings the schema to, what it does, and
/// its SQL (with `{s}` standing for the schema name).
struct Migration {
    version: u32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "events, streams, indexes, append_events()",
    sql: MIGRATION_1,
}];

/// Version 1. `events` holds every event once; `streams` holds one row per
/// entity with its newest clock, hash and time, which appends advance under
/// the entity's advisory lock. Text columns use the C collation: byte order, so an entity
/// prefix is an index range, and no locale can reorder or equate entities.
const MIGRATION_1: &str = r#"
CREATE TABLE {s}.events (
    position        bigint   NOT NULL,
    event_id        uuid     NOT NULL,
    entity          text     COLLATE "C" NOT NULL,
    scope           text     COLLATE "C" NOT NULL,
    clock           bigint   NOT NULL CHECK (clock >= 0 AND clock <= 4294967295),
    kind            integer  NOT NULL CHECK (kind >= 0 AND kind <= 65535),
    flags           smallint NOT NULL CHECK (flags >= 0 AND flags <= 255),
    timestamp_us    bigint   NOT NULL,
    hlc_counter     integer  NOT NULL CHECK (hlc_counter >= 0 AND hlc_counter <= 65535),
    correlation_id  uuid     NOT NULL,
    causation_id    uuid,
    prev_hash       bytea    NOT NULL CHECK (length(prev_hash) = 32),
    event_hash      bytea    NOT NULL CHECK (length(event_hash) = 32),
    content_hash    bytea    NOT NULL CHECK (length(content_hash) = 32),
    payload         bytea    NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (event_id),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_entity_clock_key UNIQUE (entity, clock)
);
CREATE INDEX events_scope_idx ON {s}.events (scope, position);
CREATE INDEX events_kind_idx ON {s}.events (kind, position);
-- Most events are roots, correlated to themselves: only the others are
-- indexed here; a root is found by its id.
CREATE INDEX events_correlation_idx ON {s}.events (correlation_id, position)
    WHERE correlation_id <> event_id;
CREATE INDEX events_causation_idx ON {s}.events (causation_id, position)
    WHERE causation_id IS NOT NULL;

CREATE TABLE {s}.streams (
    entity        text   COLLATE "C" NOT NULL,
    clock         bigint NOT NULL CHECK (clock >= 0 AND clock <= 4294967295),
    event_hash    bytea  NOT NULL CHECK (length(event_hash) = 32),
    timestamp_us  bigint NOT NULL,
    hlc_counter   integer NOT NULL,
    CONSTRAINT streams_pkey PRIMARY KEY (entity)
) WITH (fillfactor = 70);

-- The lock of an entity: a transaction-level advisory lock on a 64-bit
-- hash of the schema and the entity. Unlike a row lock it needs no row (new
-- entities are locked the same way) and assigns no transaction id.
CREATE FUNCTION {s}.lock_entities(p_entities text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_key bigint;
BEGIN
    -- One order for every caller: appends never deadlock on each other.
    FOR v_key IN
        SELECT DISTINCT hashtextextended('{s}' || chr(31) || x.entity, 0)
        FROM unnest(p_entities) AS x(entity) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
END
$fn$;

-- One append or batch, atomically. The caller planned clocks, times and
-- hashes from the entity states it expects (p_expected: newest clock, -1
-- for none); this checks idempotency keys first, then the states under the
-- entities' locks, then writes.
-- Outcome 0: written at positions (xid << 20) + item index; 1: an
-- idempotency key is taken (its event's row); 2: an entity is not in the
-- expected state (its actual newest clock, hash and time; NULL clock for
-- none). Outcomes 1 and 2 write nothing and take no transaction id.
-- Optimistic callers (p_lock_first = false) run it alone, in one round
-- trip; a stale expectation is then found before any lock is taken.
-- Callers that lost races call it inside their own transaction with
-- p_lock_first = true: the locks taken before the checks are held until
-- COMMIT, so after outcome 2 the states it reported cannot move, and the
-- caller's second call with a plan made from them succeeds.
CREATE FUNCTION {s}.append_events(
    p_lock_first boolean,
    p_keys uuid[],
    p_entities text[],
    p_expected bigint[],
    p_new_clock bigint[],
    p_new_hash bytea[],
    p_new_ts bigint[],
    p_new_hlc integer[],
    e_id uuid[],
    e_entity text[],
    e_scope text[],
    e_clock bigint[],
    e_kind integer[],
    e_flags smallint[],
    e_ts bigint[],
    e_hlc integer[],
    e_corr uuid[],
    e_cause uuid[],
    e_prev bytea[],
    e_hash bytea[],
    e_content bytea[],
    e_payload bytea[]
) RETURNS TABLE (
    outcome integer,
    r_event_id uuid,
    r_entity text,
    r_scope text,
    r_kind integer,
    r_clock bigint,
    r_hash bytea,
    r_ts bigint,
    r_hlc integer,
    r_position bigint
)
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_xid bigint;
BEGIN
    -- Every statement below must see what committed before it started.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'batpak appends need READ COMMITTED, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF p_lock_first THEN
        PERFORM {s}.lock_entities(p_entities);
    END IF;

    IF cardinality(p_keys) > 0 THEN
        RETURN QUERY
            SELECT 1, e.event_id, e.entity::text, e.scope::text, e.kind, e.clock,
                   NULL::bytea, NULL::bigint, NULL::integer, e.position
            FROM {s}.events e WHERE e.event_id = ANY (p_keys);
        IF FOUND THEN RETURN; END IF;
    END IF;

    IF NOT p_lock_first THEN
        -- Without locks first: a stale expectation costs no lock wait.
        RETURN QUERY
            SELECT 2, NULL::uuid, x.entity, NULL::text, NULL::integer,
                   s.clock, s.event_hash, s.timestamp_us, s.hlc_counter, NULL::bigint
            FROM unnest(p_entities, p_expected) AS x(entity, expected)
            LEFT JOIN {s}.streams s ON s.entity = x.entity
            WHERE s.clock IS DISTINCT FROM nullif(x.expected, -1);
        IF FOUND THEN RETURN; END IF;
        PERFORM {s}.lock_entities(p_entities);
    END IF;

    -- Under the locks. This statement's snapshot is newer than the locks,
    -- and a lock is released only after its holder's commit is visible, so
    -- it sees every append of these entities that will ever precede ours.
    RETURN QUERY
        SELECT 2, NULL::uuid, x.entity, NULL::text, NULL::integer,
               s.clock, s.event_hash, s.timestamp_us, s.hlc_counter, NULL::bigint
        FROM unnest(p_entities, p_expected) AS x(entity, expected)
        LEFT JOIN {s}.streams s ON s.entity = x.entity
        WHERE s.clock IS DISTINCT FROM nullif(x.expected, -1);
    IF FOUND THEN RETURN; END IF;

    -- The top-level transaction id (also inside a subtransaction), assigned
    -- here, after the locks: every earlier append of these entities has
    -- committed with a smaller one. Unique and never reused (64 bits with
    -- the epoch); positions stay positive bigints while it is below 2^43.
    v_xid := pg_current_xact_id()::text::bigint;
    IF v_xid >= (1::bigint << 43) THEN
        RAISE EXCEPTION 'transaction id % is past the range of batpak positions', v_xid
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF cardinality(e_id) > (1 << 20) THEN
        RAISE EXCEPTION 'a batch of % events is over 2^20', cardinality(e_id)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    UPDATE {s}.streams s
        SET clock = n.clock, event_hash = n.hash, timestamp_us = n.ts, hlc_counter = n.hlc
        FROM unnest(p_entities, p_expected, p_new_clock, p_new_hash, p_new_ts, p_new_hlc)
             AS n(entity, expected, clock, hash, ts, hlc)
        WHERE s.entity = n.entity AND n.expected >= 0;
    INSERT INTO {s}.streams (entity, clock, event_hash, timestamp_us, hlc_counter)
        SELECT n.entity, n.clock, n.hash, n.ts, n.hlc
        FROM unnest(p_entities, p_expected, p_new_clock, p_new_hash, p_new_ts, p_new_hlc)
             AS n(entity, expected, clock, hash, ts, hlc)
        WHERE n.expected < 0;
    INSERT INTO {s}.events (position, event_id, entity, scope, clock, kind, flags,
                            timestamp_us, hlc_counter, correlation_id, causation_id,
                            prev_hash, event_hash, content_hash, payload)
        SELECT (v_xid << 20) + (e.ord - 1), e.id, e.entity, e.scope, e.clock, e.kind, e.flags,
               e.ts, e.hlc, e.corr, e.cause, e.prev, e.hash, e.content, e.payload
        FROM unnest(e_id, e_entity, e_scope, e_clock, e_kind, e_flags, e_ts, e_hlc,
                    e_corr, e_cause, e_prev, e_hash, e_content, e_payload)
             WITH ORDINALITY
             AS e(id, entity, scope, clock, kind, flags, ts, hlc, corr, cause, prev, hash,
                  content, payload, ord);
    RETURN QUERY SELECT 0, NULL::uuid, NULL::text, NULL::text, NULL::integer, NULL::bigint,
                        NULL::bytea, NULL::bigint, NULL::integer, v_xid << 20;
END
$fn$;
"#;

/// Create the schema or bring it to [`SCHEMA_VERSION`]; returns the version
/// it was at before (0 for a new store).
///
/// # Errors
/// `SchemaTooNew` when a newer batpak wrote it; `Unavailable` or `Backend`
/// when the database refuses.
pub(crate) fn migrate(client: &mut Client, schema: &str) -> Result<u32, StoreError> {
    let mut tx = client.transaction().map_err(store_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &schema],
    )
    .map_err(store_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .map_err(store_error)?;
    let row = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
            &[],
        )
        .map_err(store_error)?;
    let found: i32 = row.get(0);
    let found = u32::try_from(found).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(&m.sql.replace("{s}", schema))
            .map_err(store_error)?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_version (version, description) VALUES ($1, $2)"),
            &[&(m.version as i32), &m.description],
        )
        .map_err(store_error)?;
        tracing::info!(
            schema,
            version = m.version,
            "batpak: applied schema migration"
        );
    }
    tx.commit().map_err(store_error)?;
    Ok(found)
}

/// The SQL of every statement the store runs, with its schema filled in.
pub(crate) struct Sql {
    pub(crate) schema: String,
    pub(crate) append: String,
    pub(crate) get: String,
    pub(crate) stream: String,
    pub(crate) stream_events: String,
    pub(crate) by_correlation: String,
    pub(crate) children: String,
    pub(crate) walk: String,
    pub(crate) stats: String,
    pub(crate) tails: String,
    pub(crate) keys: String,
}

/// Columns of an index entry, in the order `read::entry` expects.
pub(crate) const ENTRY_COLUMNS: &str = "position, event_id, entity, scope, clock, kind, \
     timestamp_us, correlation_id, causation_id, prev_hash, event_hash";
/// An entry's columns followed by the rest of a stored event's.
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, entity, scope, clock, kind, \
     timestamp_us, correlation_id, causation_id, prev_hash, event_hash, \
     flags, hlc_counter, content_hash, payload";

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = schema;
        let params = (1..=22)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            schema: s.to_owned(),
            append: format!("SELECT * FROM {s}.append_events({params})"),
            get: format!("SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1"),
            stream: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.events WHERE entity = $1 ORDER BY clock"
            ),
            stream_events: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE entity = $1 ORDER BY clock"
            ),
            // The root through its id, the rest through the partial index.
            by_correlation: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.events
                 WHERE (correlation_id = $1 AND correlation_id <> event_id)
                    OR (event_id = $1 AND correlation_id = $1)
                 ORDER BY position"
            ),
            children: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.events WHERE causation_id = $1 ORDER BY position"
            ),
            walk: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE entity = $1 AND clock <= $2 ORDER BY clock DESC LIMIT $3"
            ),
            // Clocks are dense, so an entity's event count is its newest
            // clock + 1: counting streams, not events.
            stats: format!(
                "SELECT coalesce(sum(clock + 1), 0)::bigint,
                        (SELECT coalesce(max(position) + 1, 0) FROM {s}.events)
                 FROM {s}.streams"
            ),
            tails: format!(
                "SELECT entity, clock, event_hash, timestamp_us, hlc_counter
                 FROM {s}.streams WHERE entity = ANY ($1)"
            ),
            keys: format!(
                "SELECT event_id, entity, scope, kind, position FROM {s}.events
                 WHERE event_id = ANY ($1)"
            ),
        }
    }
}
