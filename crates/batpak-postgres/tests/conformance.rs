//! The conformance checks against PostgreSQL: every check gets a fresh
//! schema in the throwaway cluster of this test process (or in the server
//! named by `BATPAK_TEST_PG_URL`).

use batpak_conformance::{Harness, Settings};
use batpak_postgres::{testing, PgConfig, PgStore};

struct Postgres {
    config: PgConfig,
}

impl Harness for Postgres {
    type Store = PgStore;
    const NAME: &'static str = "postgres";
    const DENSE_SEQUENCES: bool = false;

    fn new() -> Option<Self> {
        testing::fresh_config().map(|config| Self {
            config: config.with_pool_size(8),
        })
    }

    fn open(&self, settings: &Settings) -> PgStore {
        let mut cfg = self.config.clone().with_clock(settings.clock.clone());
        if let Some(n) = settings.single_append_max_bytes {
            cfg = cfg.with_single_append_max_bytes(n);
        }
        if let Some(n) = settings.batch_max_size {
            cfg = cfg.with_batch_max_size(n);
        }
        if let Some(n) = settings.batch_max_bytes {
            cfg = cfg.with_batch_max_bytes(n);
        }
        if let Some(n) = settings.broadcast_capacity {
            cfg = cfg.with_broadcast_capacity(n);
        }
        PgStore::open(cfg).expect("open store")
    }
}

batpak_conformance::conformance_tests!(Postgres);
