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
pub const SCHEMA_VERSION: u32 = 2;

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

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events, streams, indexes, all_or_nothing()",
        sql: MIGRATION_1,
    },
    Migration {
        version: 2,
        description: "delivery: the kind-category index, reactor checkpoints",
        sql: MIGRATION_2,
    },
];

/// Version 1. `events` holds every event once; `streams` holds one row per
/// entity with its newest clock, hash, time and position, which appends
/// advance under the row's lock. Text columns use the C collation: byte
/// order, so an entity prefix is an index range, and no locale can reorder
/// or equate entities. Values are checked by the code that writes them
/// and by `verify`, not by CHECK constraints (each would be re-parsed by
/// every append statement).
const MIGRATION_1: &str = r#"
CREATE TABLE {s}.events (
    position        bigint   NOT NULL,
    event_id        uuid     NOT NULL,
    entity          text     COLLATE "C" NOT NULL,
    scope           text     COLLATE "C" NOT NULL,
    clock           bigint   NOT NULL,
    kind            integer  NOT NULL,
    flags           smallint NOT NULL,
    timestamp_us    bigint   NOT NULL,
    hlc_counter     integer  NOT NULL,
    correlation_id  uuid     NOT NULL,
    causation_id    uuid,
    prev_hash       bytea    NOT NULL,
    event_hash      bytea    NOT NULL,
    content_hash    bytea    NOT NULL,
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
    entity        text    COLLATE "C" NOT NULL,
    clock         bigint  NOT NULL,
    event_hash    bytea   NOT NULL,
    timestamp_us  bigint  NOT NULL,
    hlc_counter   integer NOT NULL,
    -- The newest event's position: an append's positions must be above it.
    position      bigint  NOT NULL,
    CONSTRAINT streams_pkey PRIMARY KEY (entity)
) WITH (fillfactor = 70);

-- Called once per append statement: whether to write (no idempotency key
-- was taken), or, when the entities were not all in the expected state,
-- abort the whole statement (SQLSTATE BP001) so that nothing of it stays.
CREATE FUNCTION {s}.all_or_nothing(fresh boolean, advanced bigint, entities integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    IF NOT fresh THEN
        RETURN false;
    END IF;
    IF advanced <> entities THEN
        RAISE EXCEPTION 'batpak: % of % entities were not in the expected state',
            entities - advanced, entities
            USING ERRCODE = 'BP001';
    END IF;
    RETURN true;
END
$fn$;
"#;

/// Version 2, for delivery (ADR 0020). Cursors over a kind category read
/// one index range in position order, as those over a scope or a kind do.
/// `reactors` holds the checkpoint of each named reactor: the position of
/// a trigger up to which every trigger of its region has been answered,
/// written only by the reactor that holds the name's advisory lock.
///
/// On an existing store the index is built while the migration's
/// transaction blocks appends; for a large store, build it first with
/// `CREATE INDEX CONCURRENTLY events_category_idx ON <schema>.events
/// ((kind >> 12), position)` and the migration finds it.
const MIGRATION_2: &str = r#"
CREATE INDEX IF NOT EXISTS events_category_idx ON {s}.events ((kind >> 12), position);
CREATE TABLE {s}.reactors (
    name        text        COLLATE "C" NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reactors_pkey PRIMARY KEY (name)
);
"#;

/// One append or batch, atomically, in one statement: one round trip,
/// committed by itself (or inside the caller's transaction). The caller
/// planned clocks, times and hashes from the entity states it expects
/// (`$3`: newest clock per entity, -1 for none).
///
/// 1. `keys`: events whose id is one of the idempotency keys. If any
///    exists, nothing is written and their rows are returned (outcome 1).
/// 2. `locked`: the existing rows of the entities, locked in entity order
///    (so appends never deadlock on each other).
/// 3. `advanced`: each existing row advanced only if it is at the expected
///    clock and its newest position is below this transaction's (a row
///    updated concurrently is re-checked at its newest version); new
///    entities inserted only if still absent.
/// 4. `gate`: all of them advanced, or the statement aborts (BP001) and
///    nothing stays; the caller re-reads the states and plans again.
/// 5. `written`: the events at positions (top-level xid << 20) + item index.
///
/// Returns outcome 0 with the first position, or the outcome-1 rows.
/// Parameters: $1 keys uuid[]; $2..$8 per entity: names, expected clock,
/// new clock, hash, timestamp, HLC counter; $9..$22 per event: id, entity,
/// scope, clock, kind, flags, timestamp, HLC counter, correlation,
/// causation, prev hash, hash, content hash, payload.
pub(crate) const APPEND: &str = r#"
WITH keys AS (
    SELECT e.event_id, e.entity::text AS entity, e.scope::text AS scope, e.kind, e.position
    FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT * FROM {s}.events e WHERE e.event_id = k.id OFFSET 0
    ) e
),
locked AS (
    SELECT l.ctid AS row_id, l.entity, l.clock, l.position
    FROM unnest($2::text[]) AS x(entity)
    CROSS JOIN LATERAL (
        SELECT s.ctid, s.entity, s.clock, s.position
        FROM {s}.streams s WHERE s.entity = x.entity FOR UPDATE
    ) l
    WHERE NOT EXISTS (SELECT 1 FROM keys)
),
updated AS (
    UPDATE {s}.streams s
    SET clock = n.clock, event_hash = n.hash, timestamp_us = n.ts, hlc_counter = n.hlc,
        position = (pg_current_xact_id()::text::bigint << 20) + n.last_item
    FROM locked l
    JOIN unnest($2::text[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bigint[],
                $7::integer[], $8::bigint[])
         AS n(entity, expected, clock, hash, ts, hlc, last_item)
      ON n.entity = l.entity
    WHERE s.ctid = l.row_id
      AND l.clock = n.expected
      AND l.position < (pg_current_xact_id()::text::bigint << 20)
    RETURNING s.entity
),
created AS (
    INSERT INTO {s}.streams (entity, clock, event_hash, timestamp_us, hlc_counter, position)
    SELECT n.entity, n.clock, n.hash, n.ts, n.hlc,
           (pg_current_xact_id()::text::bigint << 20) + n.last_item
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bigint[],
                $7::integer[], $8::bigint[])
         AS n(entity, expected, clock, hash, ts, hlc, last_item)
    WHERE n.expected < 0 AND NOT EXISTS (SELECT 1 FROM keys)
    ON CONFLICT (entity) DO NOTHING
    RETURNING entity
),
gate AS (
    SELECT {s}.all_or_nothing(
        NOT EXISTS (SELECT 1 FROM keys),
        (SELECT count(*) FROM updated) + (SELECT count(*) FROM created),
        cardinality($2::text[])) AS go
),
written AS (
    INSERT INTO {s}.events (position, event_id, entity, scope, clock, kind, flags,
                            timestamp_us, hlc_counter, correlation_id, causation_id,
                            prev_hash, event_hash, content_hash, payload)
    SELECT (pg_current_xact_id()::text::bigint << 20) + (e.ord - 1), e.id, e.entity, e.scope,
           e.clock, e.kind, e.flags, e.ts, e.hlc, e.corr, e.cause, e.prev, e.hash, e.content,
           e.payload
    FROM unnest($9::uuid[], $10::text[], $11::text[], $12::bigint[], $13::integer[],
                $14::smallint[], $15::bigint[], $16::integer[], $17::uuid[], $18::uuid[],
                $19::bytea[], $20::bytea[], $21::bytea[], $22::bytea[])
         WITH ORDINALITY
         AS e(id, entity, scope, clock, kind, flags, ts, hlc, corr, cause, prev, hash, content,
              payload, ord)
    WHERE (SELECT go FROM gate)
    RETURNING position
)
SELECT 0 AS outcome, NULL::uuid, NULL::text, NULL::text, NULL::integer,
       (SELECT min(position) FROM written)
WHERE (SELECT go FROM gate)
UNION ALL
SELECT 1, k.event_id, k.entity, k.scope, k.kind, k.position FROM keys k
"#;

/// The common case of [`APPEND`], as a much smaller plan: one event, no
/// idempotency key. The entity's row is advanced only from the expected
/// state (`$2`: newest clock, -1 for none) and only below this transaction's
/// position, or created if absent; the event is written only if one of them
/// happened. No row returned means the entity was not in the expected state
/// and nothing was written (one entity: nothing to undo).
///
/// Parameters: $1 entity, $2 expected clock, $3 clock, $4 event hash,
/// $5 timestamp, $6 HLC counter, $7 event id, $8 scope, $9 kind, $10 flags,
/// $11 correlation, $12 causation, $13 prev hash, $14 content hash,
/// $15 payload.
pub(crate) const APPEND_ONE: &str = r#"
WITH updated AS (
    UPDATE {s}.streams s
    SET clock = $3, event_hash = $4, timestamp_us = $5, hlc_counter = $6,
        position = pg_current_xact_id()::text::bigint << 20
    WHERE s.entity = $1::text AND s.clock = $2::bigint
      AND s.position < (pg_current_xact_id()::text::bigint << 20)
    RETURNING 1
),
created AS (
    INSERT INTO {s}.streams (entity, clock, event_hash, timestamp_us, hlc_counter, position)
    SELECT $1, $3, $4, $5, $6, pg_current_xact_id()::text::bigint << 20
    WHERE $2::bigint < 0
    ON CONFLICT (entity) DO NOTHING
    RETURNING 1
)
INSERT INTO {s}.events (position, event_id, entity, scope, clock, kind, flags,
                        timestamp_us, hlc_counter, correlation_id, causation_id,
                        prev_hash, event_hash, content_hash, payload)
SELECT pg_current_xact_id()::text::bigint << 20, $7, $1, $8, $3, $9, $10, $5, $6, $11, $12,
       $13, $4, $14, $15
WHERE EXISTS (SELECT 1 FROM updated) OR EXISTS (SELECT 1 FROM created)
RETURNING position
"#;

/// The existing rows of some entities, locked in entity order, with their
/// newest event: what an append that lost races plans from, inside its own
/// transaction, before it runs [`APPEND`] there.
pub(crate) const LOCK_TAILS: &str = "SELECT entity, clock, event_hash, timestamp_us, hlc_counter \
     FROM {s}.streams WHERE entity = ANY ($1) ORDER BY entity FOR UPDATE";

/// The writing transaction's id, as the statements above use it.
const TRANSACTION_ID: &str = "pg_current_xact_id()::text::bigint";

/// An id newer than every lock an append that lost races holds: run inside
/// a savepoint after [`LOCK_TAILS`], it writes one of the locked rows (no
/// change), which gives the subtransaction its own id, and returns that id
/// (32 bits, from the new row version's `xmin`) with the top-level one
/// (64 bits, epoch-extended). The top-level id was taken when the first row
/// was locked; a competitor that got a newer one may have committed to a
/// row locked after it. The subtransaction's id is newer than both, so
/// positions based on it are above every position on the locked rows, and
/// still at or above the top-level id, which is what stable reads rely on
/// (ADR 0018).
pub(crate) const CLAIM_LATE_ID: &str = "UPDATE {s}.streams SET clock = clock WHERE entity = $1      RETURNING xmin::text::bigint, pg_current_xact_id()::text::bigint";

/// The version of the store in `schema`, or `None` when there is none.
pub(crate) fn version(client: &mut Client, schema: &str) -> Result<Option<u32>, StoreError> {
    let row = client
        .query_one(
            "SELECT to_regclass(quote_ident($1) || '.schema_version')::text",
            &[&schema],
        )
        .map_err(store_error)?;
    let table: Option<String> = row.try_get(0).map_err(store_error)?;
    if table.is_none() {
        return Ok(None);
    }
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
            &[],
        )
        .map_err(store_error)?;
    let v: i32 = row.try_get(0).map_err(store_error)?;
    Ok(Some(u32::try_from(v).unwrap_or(0)).filter(|&v| v > 0))
}

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
    let found: i32 = row.try_get(0).map_err(store_error)?;
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
    pub(crate) append_one: String,
    pub(crate) lock_tails: String,
    /// [`APPEND`] and [`APPEND_ONE`] at a position base given as the last
    /// parameter (a subtransaction's id; see [`CLAIM_LATE_ID`]).
    pub(crate) append_at: String,
    pub(crate) append_one_at: String,
    pub(crate) claim_late_id: String,
    pub(crate) get: String,
    pub(crate) stream: String,
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
        Self {
            schema: s.to_owned(),
            append: APPEND.replace("{s}", s),
            append_one: APPEND_ONE.replace("{s}", s),
            lock_tails: LOCK_TAILS.replace("{s}", s),
            append_at: APPEND
                .replace("{s}", s)
                .replace(TRANSACTION_ID, "$23::bigint"),
            append_one_at: APPEND_ONE
                .replace("{s}", s)
                .replace(TRANSACTION_ID, "$16::bigint"),
            claim_late_id: CLAIM_LATE_ID.replace("{s}", s),
            get: format!("SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1"),
            stream: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.events WHERE entity = $1 ORDER BY clock"
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
