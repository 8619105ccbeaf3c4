//! Opening stores for the CLI: read-only for inspection (works beside a
//! running owner, never creates anything), writable for commands that
//! append, a directory (`--dir`) or a PostgreSQL schema (`--url`), and the
//! failures a user can act on ([`AccessError`]).

use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use batpak_postgres::{PgConfig, PgStore};
use std::fmt;
use std::path::{Path, PathBuf};

/// Failures to reach a store that deserve their own message and exit code.
#[derive(Debug)]
pub enum AccessError {
    /// Nothing that looks like a store is there (`place`: a directory or
    /// a PostgreSQL schema).
    NoStore { place: String, why: &'static str },
    /// Another process holds the store's lock.
    Locked(PathBuf),
    /// The store holds no such id; `what` names what was looked for.
    UnknownId {
        id: u128,
        place: String,
        what: &'static str,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::NoStore { place, why } => write!(f, "no store at {place} ({why})"),
            AccessError::Locked(dir) => write!(
                f,
                "the store at {} is locked: another process has it open for writing. \
                 Stop that process first; read-only commands (stats, ls, get, tail, \
                 export, graph, verify, snapshot) work meanwhile",
                dir.display()
            ),
            AccessError::UnknownId { id, place, what } => {
                write!(f, "no {what} {id:032x} in the store at {place}")
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// An invalid combination of arguments (exit code 2, like clap's own).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fail unless `dir` holds a store (a directory with segment files), so a
/// command that opens it for writing never creates one by mistake.
pub fn require_store(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(AccessError::NoStore {
            place: dir.display().to_string(),
            why: "the directory does not exist",
        }
        .into());
    }
    let has_segments = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "seg"));
    if has_segments {
        Ok(())
    } else {
        Err(AccessError::NoStore {
            place: dir.display().to_string(),
            why: "the directory holds no segment files",
        }
        .into())
    }
}

/// Open `dir` for reading without its lock; an absent or empty directory is
/// an error rather than an empty store, so a typo in `--dir` is noticed.
pub fn open_read_only(dir: &Path) -> anyhow::Result<Store> {
    if !dir.exists() {
        return Err(AccessError::NoStore {
            place: dir.display().to_string(),
            why: "the directory does not exist",
        }
        .into());
    }
    if !dir.is_dir() {
        return Err(AccessError::NoStore {
            place: dir.display().to_string(),
            why: "not a directory",
        }
        .into());
    }
    let store = Store::open_read_only(StoreConfig::new(dir))
        .with_context(|| format!("cannot open the store at {} for reading", dir.display()))?;
    // A store creates its first segment when it is first opened for
    // writing, so a directory without segments was never a store.
    if store.diagnostics().segment_count == 0 {
        return Err(AccessError::NoStore {
            place: dir.display().to_string(),
            why: "the directory holds no segment files",
        }
        .into());
    }
    Ok(store)
}

/// `get`, mapping the library's `NotFound` to a message naming the store.
pub fn get_event<S: EventStore>(
    store: &S,
    place: &str,
    id: u128,
    what: &'static str,
) -> anyhow::Result<StoredEvent<serde_json::Value>> {
    match store.get(id) {
        Ok(ev) => Ok(ev),
        Err(StoreError::NotFound(_)) => Err(AccessError::UnknownId {
            id,
            place: place.to_owned(),
            what,
        }
        .into()),
        Err(e) => Err(e).with_context(|| format!("cannot read event {id:032x}")),
    }
}

/// A store opened for inspection: a directory, read-only, or a PostgreSQL
/// schema that must already hold a store.
pub enum Inspected {
    File { store: Store, dir: PathBuf },
    // Boxed: the pool's handle is large, and one of these lives per run.
    Postgres { store: Box<PgStore>, place: String },
}

impl Inspected {
    /// Where the store is, for messages.
    pub fn place(&self) -> String {
        match self {
            Inspected::File { dir, .. } => dir.display().to_string(),
            Inspected::Postgres { place, .. } => place.clone(),
        }
    }
}

/// `url` (password hidden) and schema, for messages.
pub fn postgres_place(config: &PgConfig) -> String {
    format!("{} (schema {})", config.redacted_url(), config.schema)
}

/// Open the store named by `--url` (which must exist) or `--dir` (read-only).
pub fn open_for_inspection(global: &Global) -> anyhow::Result<Inspected> {
    match global.postgres() {
        Some(config) => {
            let place = postgres_place(&config);
            let store = PgStore::open_existing(config)
                .with_context(|| format!("cannot open the store at {place}"))?
                .ok_or_else(|| AccessError::NoStore {
                    place: place.clone(),
                    why: "the schema holds no batpak store",
                })?;
            Ok(Inspected::Postgres {
                store: Box::new(store),
                place,
            })
        }
        None => {
            let dir = global.store_dir();
            let store = open_read_only(&dir)?;
            Ok(Inspected::File { store, dir })
        }
    }
}

/// Open (creating it if needed) the PostgreSQL store of `config` for writing.
pub fn open_postgres_writable(config: PgConfig) -> anyhow::Result<PgStore> {
    let place = postgres_place(&config);
    PgStore::open(config).with_context(|| format!("cannot open the store at {place}"))
}

/// Open (creating if needed) the store in `config.data_dir` for writing.
pub fn open_writable(config: StoreConfig) -> anyhow::Result<Store> {
    let dir = config.data_dir.clone();
    match Store::open(config) {
        Ok(store) => Ok(store),
        Err(StoreError::Locked(_)) => Err(AccessError::Locked(dir).into()),
        Err(e) => Err(e).with_context(|| format!("cannot open the store at {}", dir.display())),
    }
}
