//! Compile-fail tests: receipts cannot be forged, invalid typestate
//! transitions and foreign states do not compile.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
