//! Connections: an r2d2 pool of rust-postgres clients, each with its own
//! cache of prepared statements (ADR 0017).
//!
//! A statement prepared once per connection turns every later call into a
//! single round trip (bind and execute), which is what an append costs. The
//! manager also fixes the session settings the store's guarantees rest on.

use crate::config::PgConfig;
use postgres::{Client, NoTls, Statement};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A connection of the pool: the client and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
    last_used: Instant,
    /// The server ended the session (or the socket failed): the pool
    /// drops this connection instead of handing it out again.
    pub(crate) broken: bool,
}

impl Conn {
    /// The statement for `sql`, prepared on this connection the first time.
    pub(crate) fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Note a successful use: a connection used this recently needs no
    /// round trip to prove it is alive when it is next checked out.
    pub(crate) fn touch(&mut self) {
        self.last_used = Instant::now();
    }
}

/// Connections idle longer than this are pinged before use, so one that the
/// server or a proxy closed meanwhile is replaced instead of failing a call.
const PING_AFTER_IDLE: Duration = Duration::from_secs(2);

pub(crate) struct Manager {
    config: postgres::Config,
}

impl Manager {
    pub(crate) fn new(cfg: &PgConfig) -> Result<Self, postgres::Error> {
        let mut config: postgres::Config = cfg.url.parse()?;
        if config.get_application_name().is_none() {
            config.application_name("batpak");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(cfg.connect_timeout);
        }
        Ok(Self { config })
    }

    /// A connection outside the pool for one of the store's own threads,
    /// named `<application name> <role>` in `pg_stat_activity` (the
    /// listener, the notifier, a reactor's lock), with the pool's session
    /// settings.
    pub(crate) fn connect_as(&self, role: &str) -> Result<Conn, postgres::Error> {
        let mut config = self.config.clone();
        let base = config.get_application_name().unwrap_or("batpak").to_owned();
        config.application_name(&format!("{base} {role}"));
        open(&config)
    }
}

/// Connect with `config` and fix the session settings the guarantees rest on.
fn open(config: &postgres::Config) -> Result<Conn, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    // The append protocol takes a fresh snapshot per statement after
    // locking (READ COMMITTED; see docs/postgres.md), and a receipt
    // must mean the commit record is flushed: never accept `off`.
    // Statements are prepared once per connection; planning the append
    // statement anew on every call (a "custom" plan) would cost more
    // than running it, and its generic plan is the same index lookups.
    client.batch_execute(
        "SET default_transaction_isolation TO 'read committed';
         SET plan_cache_mode TO force_generic_plan;
         DO $$ BEGIN
           IF current_setting('synchronous_commit') = 'off' THEN
             PERFORM set_config('synchronous_commit', 'on', false);
           END IF;
         END $$;",
    )?;
    Ok(Conn {
        client,
        statements: HashMap::new(),
        last_used: Instant::now(),
        broken: false,
    })
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        open(&self.config)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        if conn.last_used.elapsed() > PING_AFTER_IDLE {
            conn.client.batch_execute("")?;
            conn.touch();
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

pub(crate) type Pool = r2d2::Pool<Manager>;

pub(crate) fn build(cfg: &PgConfig) -> Result<Pool, batpak::store::StoreError> {
    let manager = Manager::new(cfg).map_err(|e| {
        batpak::store::StoreError::Configuration(format!(
            "invalid connection string {}: {e}",
            crate::config::redact_password(&cfg.url)
        ))
    })?;
    r2d2::Pool::builder()
        .max_size(cfg.pool_size)
        .min_idle(Some(cfg.pool_min_idle))
        .connection_timeout(cfg.connect_timeout)
        .test_on_check_out(true)
        // r2d2 logs connection errors itself; the caller gets them as
        // `Unavailable` from the checkout.
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build(manager)
        .map_err(crate::error::pool_error)
}
