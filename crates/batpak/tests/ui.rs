//! Compile-fail tests: receipts cannot be forged, invalid typestate
//! transitions and foreign states do not compile, and `#[derive(TypedEvent)]`
//! refuses a type without a kind or with version 0.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
