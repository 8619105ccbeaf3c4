//! Errors that read well: each `Display` describes its own layer, the
//! cause is `source()`, so printing the chain shows every cause once; I/O
//! errors say what was done to which file; `is_retryable` sorts them.

use batpak::prelude::*;
use batpak::store::{BatchStage, IoContext};
use std::error::Error;

/// What anyhow's `{:#}` prints: each error of the chain, joined by ": ".
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

fn boxed(msg: &str) -> Box<dyn Error + Send + Sync> {
    Box::new(std::io::Error::other(msg.to_owned()))
}

/// One of every variant that has a cause.
fn with_causes() -> Vec<(StoreError, &'static str)> {
    vec![
        (
            StoreError::from(std::io::Error::other("cause-io")),
            "cause-io",
        ),
        (
            StoreError::io(
                "sync segment",
                "/data/000001.seg",
                std::io::Error::other("cause-sync"),
            ),
            "cause-sync",
        ),
        (
            StoreError::from(Coordinate::new("", "s").unwrap_err()),
            "entity",
        ),
        (StoreError::Serialization(boxed("cause-ser")), "cause-ser"),
        (StoreError::CacheFailed(boxed("cause-cache")), "cause-cache"),
        (StoreError::Unavailable(boxed("cause-down")), "cause-down"),
        (StoreError::Backend(boxed("cause-denied")), "cause-denied"),
        (
            StoreError::BatchFailed {
                item_index: 2,
                stage: BatchStage::Validation,
                source: Box::new(StoreError::InvalidBatch("cause-batch".into())),
            },
            "cause-batch",
        ),
    ]
}

#[test]
fn display_describes_its_own_layer_and_the_chain_shows_each_cause_once() {
    for (e, cause) in with_causes() {
        let source = e.source().expect("has a cause");
        assert!(
            !e.to_string().contains(&source.to_string()),
            "{e:?}: Display repeats its source"
        );
        let printed = chain(&e);
        assert_eq!(
            printed.matches(cause).count(),
            1,
            "{e:?}: the cause appears once in {printed:?}"
        );
    }
}

#[test]
fn a_nested_chain_reads_top_down_with_the_path_and_operation_once() {
    let e = StoreError::BatchFailed {
        item_index: 3,
        stage: BatchStage::Writing,
        source: Box::new(StoreError::io(
            "write segment",
            "/data/000007.seg",
            std::io::Error::from_raw_os_error(28),
        )),
    };
    let printed = chain(&e);
    assert!(
        printed.starts_with(
            "batch failed at item 3 during Writing: IO error: write segment /data/000007.seg: "
        ),
        "{printed}"
    );
    assert_eq!(printed.matches("/data/000007.seg").count(), 1, "{printed}");
    assert_eq!(printed.matches("(os error 28)").count(), 1, "{printed}");
    assert_eq!(
        e.display_chain().to_string(),
        printed,
        "the library's own printer"
    );
    let ctx: &IoContext = e
        .io_context()
        .expect("the context survives the batch wrapper");
    assert_eq!(ctx.operation(), "write segment");
    assert_eq!(ctx.path(), std::path::Path::new("/data/000007.seg"));
    assert_eq!(ctx.io_error().raw_os_error(), Some(28));
    match &e {
        StoreError::BatchFailed { source, .. } => match source.as_ref() {
            StoreError::Io(io) => assert_eq!(
                io.kind(),
                std::io::ErrorKind::StorageFull,
                "the kind stays matchable"
            ),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_real_io_failure_names_its_operation_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let data_dir = file.join("store");
    let err = Store::open(StoreConfig::new(&data_dir))
        .err()
        .expect("a store cannot live under a file");
    let ctx = err
        .io_context()
        .unwrap_or_else(|| panic!("no context: {err:?}"));
    assert_eq!(ctx.path(), data_dir.as_path());
    assert_eq!(ctx.operation(), "stat directory");
    let printed = chain(&err);
    assert_eq!(
        printed.matches(&*data_dir.to_string_lossy()).count(),
        1,
        "{printed}"
    );
    assert!(
        printed.starts_with("IO error: stat directory "),
        "{printed}"
    );
}

#[test]
fn a_failed_segment_creation_names_the_segment() {
    // A directory where the first segment file belongs: the error says which file.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let c = Coordinate::new("e", "s").unwrap();
        store.append(&c, EventKind::custom(1, 1), &1).unwrap();
        store.close().unwrap();
    }
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment file");
    std::fs::remove_file(&segment).unwrap();
    std::fs::create_dir(&segment).unwrap();
    std::fs::write(segment.join("x"), b"x").unwrap();
    let err = Store::open(StoreConfig::new(dir.path()))
        .err()
        .expect("a directory is not a segment");
    // The listing skips the entry (not a file); creating the first
    // segment then meets it.
    let ctx = err
        .io_context()
        .unwrap_or_else(|| panic!("no context: {err:?}"));
    assert_eq!(ctx.path(), segment.as_path(), "{err:?}");
    assert_eq!(ctx.operation(), "create");
    assert!(chain(&err).contains("File exists"), "{err}");
}

#[test]
fn only_transient_failures_are_retryable() {
    let retryable = [
        StoreError::Unavailable(boxed("reset")),
        StoreError::WriterPanicked("boom".into()),
        StoreError::BatchFailed {
            item_index: 0,
            stage: BatchStage::Writing,
            source: Box::new(StoreError::Unavailable(boxed("reset"))),
        },
    ];
    for e in &retryable {
        assert!(e.is_retryable(), "{e:?}");
    }
    let not = [
        StoreError::SequenceMismatch {
            entity: "e".into(),
            expected: 1,
            actual: 2,
        },
        StoreError::Backend(boxed("denied")),
        StoreError::Poisoned("sync failed".into()),
        StoreError::WriterCrashed,
        StoreError::io("write segment", "/x", std::io::Error::other("EIO")),
        StoreError::NotFound(1),
        StoreError::BatchFailed {
            item_index: 0,
            stage: BatchStage::Validation,
            source: Box::new(StoreError::InvalidBatch("x".into())),
        },
    ];
    for e in &not {
        assert!(!e.is_retryable(), "{e:?}");
    }
}
