//! docs/guide.md quotes crates/batpak/examples/aggregate.rs: every `rust`
//! block of the guide (except those marked `ignore`) must appear in the
//! example verbatim, so the guide cannot drift from code that compiles and
//! that CI runs.

#[test]
fn every_guide_block_is_in_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("../../docs/guide.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/aggregate.rs")).unwrap();
    let mut blocks = 0;
    let mut rest = guide.as_str();
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + "```rust\n".len()..];
        let end = body.find("```").expect("closed block");
        assert!(
            example.contains(&body[..end]),
            "guide block not in the example:\n{}",
            &body[..end]
        );
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(
        blocks >= 6,
        "the guide quotes the example ({blocks} blocks)"
    );
}
