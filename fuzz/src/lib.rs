//! Fuzz targets for batpak: one per decoder of bytes read from disk, and a
//! model-based target that runs random operation sequences against a real
//! store (see `docs/fuzzing.md`).
//!
//! Every target is a plain `fn(&[u8])` that panics when a property fails,
//! so the same bodies run under a coverage-guided fuzzer (the AFL harness
//! in `fuzz/afl`, outside the workspace) and under the seeded random driver
//! in [`driver`], which `cargo test` runs briefly and `fuzz-run` runs for
//! as long as asked. This crate is test code: panicking is how it reports.
//!
//! It owns the properties and the inputs; it must not reach into batpak
//! beyond the public API and the doc-hidden `batpak::store::fuzzing`
//! entry points (which only forward to the decoders).

pub mod alloc;
pub mod decoders;
pub mod driver;
pub mod input;
pub mod model;
pub mod samples;

/// A fuzz target: panics when a property fails.
pub type Target = fn(&[u8]);

/// Every target, by name (the name is also its regression folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", decoders::frame),
    ("event", decoders::event),
    ("segment_header", decoders::segment_header),
    ("footer", decoders::footer),
    ("checkpoint", decoders::checkpoint),
    ("removed", decoders::removed),
    ("intent", decoders::intent),
    ("payload", decoders::payload),
    ("native_cache", decoders::native_cache),
    ("model", model::model),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}
