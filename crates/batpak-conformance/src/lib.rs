//! # batpak-conformance
//!
//! The behavioural contract every batpak backend keeps (SPEC §3 and §4), as
//! checks generic over [`batpak::store::EventStore`], and a macro that turns
//! them into one `#[test]` per check for a backend:
//!
//! ```ignore
//! struct MyHarness { /* where a store lives */ }
//! impl batpak_conformance::Harness for MyHarness { /* ... */ }
//! batpak_conformance::conformance_tests!(MyHarness);
//! ```
//!
//! The file store runs them from this crate's own tests
//! (`tests/file_store.rs`), the PostgreSQL backend from
//! `batpak-postgres/tests/conformance.rs`, unchanged. Where the backends
//! differ on purpose the harness says so ([`Harness::DENSE_SEQUENCES`]) and
//! the check asserts the weaker, shared promise plus the stronger one where
//! it holds; `docs/postgres.md` lists every such difference.
//!
//! This crate owns no behaviour of its own: only the checks, the harness
//! trait and their helpers.

pub mod checks;
pub mod delivery;
pub mod typed;

#[doc(hidden)]
pub use checks::*;
#[doc(hidden)]
pub use delivery::*;
#[doc(hidden)]
pub use typed::{
    event_iterators_match_the_listings, typed_events_round_trip_with_their_versions,
    typed_reads_refuse_what_does_not_fit, upcasters_apply_on_every_read_path,
    versioned_events_import_with_their_versions,
};

use batpak::prelude::*;
use batpak::store::ClockFn;

/// Settings a check needs a store opened with; `None` keeps the backend's default.
#[derive(Clone, Default)]
pub struct Settings {
    /// `single_append_max_bytes`.
    pub single_append_max_bytes: Option<u32>,
    /// `batch.max_size`.
    pub batch_max_size: Option<u32>,
    /// `batch.max_bytes`.
    pub batch_max_bytes: Option<u32>,
    /// The store's clock (µs since the Unix epoch).
    pub clock: Option<ClockFn>,
    /// Buffer of each lossy subscription (`broadcast_capacity`).
    pub broadcast_capacity: Option<usize>,
}

/// A backend under test: where one store lives, and how to open it.
pub trait Harness: Sized {
    /// The backend's store.
    type Store: EventFeed + 'static;
    /// The backend's name, for messages.
    const NAME: &'static str;
    /// Global sequences are numbered densely from 0 (the file store); a
    /// backend with sparse positions (PostgreSQL) only promises strictly
    /// increasing ones.
    const DENSE_SEQUENCES: bool;
    /// A new, empty place for a store, or `None` when the backend cannot
    /// run here (the harness printed why; under `CI=true` it panics instead).
    fn new() -> Option<Self>;
    /// Open, or reopen after the previous handle was dropped, the store at
    /// this place.
    fn open(&self, settings: &Settings) -> Self::Store;
}

/// Run `check` against a fresh place of `H` (or skip, see [`Harness::new`]).
/// The delivery checks are in [`delivery`]; the macro runs them as well.
pub fn run<H: Harness>(name: &str, check: fn(&H)) {
    match H::new() {
        Some(h) => check(&h),
        None => eprintln!("{}: {name} skipped", H::NAME),
    }
}

/// One `#[test]` per conformance check, for the harness type given.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty) => {
        $crate::__for_each_check!($crate::__conformance_test, $harness);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($harness:ty; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::run::<$harness>(stringify!($check), $crate::$check::<$harness>);
            }
        )*
    };
}

/// The list of checks, kept in one place so that no check is left out of
/// the macro.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_check {
    ($m:path, $harness:ty) => {
        $m!($harness;
            append_get_round_trip_and_header_fields,
            clocks_sequences_and_chain_per_entity,
            identical_payloads_get_distinct_hashes,
            queries_follow_region_rules,
            reactions_build_the_causal_graph,
            options_set_ids_links_and_flags,
            payload_contract_is_serde_json_value,
            refused_payloads_and_kinds_write_nothing,
            unknown_ids_are_not_found,
            reopen_preserves_everything,
            clock_never_goes_backwards_per_entity,
            concurrent_appends_are_ordered,
            cas_rules,
            cas_races_have_exactly_one_winner_per_round,
            idempotent_retry_returns_the_original_receipt,
            idempotency_survives_restart,
            concurrent_retries_of_one_key_write_once,
            a_batch_appends_in_order_with_chains_and_flags,
            causal_links_in_batches,
            invalid_batches_write_nothing,
            per_item_cas_makes_a_multi_stream_conditional_append,
            retried_batches_return_their_receipts,
            readers_see_a_batch_all_at_once,
            concurrent_batches_on_shared_entities_stay_dense,
            a_receipt_commits_with_the_real_sequence_and_hash,
            bypasses_are_flagged_and_audited_atomically,
            projections_fold_relevant_events,
            hashes_are_the_codecs,
            imports_keep_ids_clocks_times_and_hashes,
            cursor_delivers_every_event_once_in_order_under_concurrent_writers,
            cursors_follow_region_rules,
            a_saved_position_resumes_in_a_new_handle,
            wait_next_wakes_on_an_append_and_times_out,
            lossy_subscribers_drop_alone_and_hear_batches_whole,
            reactors_answer_every_trigger_once_and_resume_after_a_restart,
            a_reactor_never_skips_a_trigger_it_cannot_answer,
            watchers_emit_each_change_and_end_with_the_store,
            typed_events_round_trip_with_their_versions,
            upcasters_apply_on_every_read_path,
            typed_reads_refuse_what_does_not_fit,
            versioned_events_import_with_their_versions,
            event_iterators_match_the_listings,
            per_call_durability_keeps_every_other_rule,
        );
    };
}
