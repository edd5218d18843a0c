//! What the derives accept and reject at compile time: every supported shape and attribute compiles
//! (and its generated code behaves, `tests/ui/*/pass`), and every mistake is a compile error whose
//! message and span are committed next to it (`tests/ui/*/fail/*.stderr`).
//!
//! Regenerate the `.stderr` files after a deliberate change of a message with
//! `TRYBUILD=overwrite cargo test --test derive_ui`, then read each diff.

#[test]
fn derives_accept_every_supported_shape_and_reject_every_mistake() {
    // One `TestCases` for all four folders: trybuild then builds the dependencies once.
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/event/pass/*.rs");
    cases.compile_fail("tests/ui/event/fail/*.rs");
    cases.pass("tests/ui/aggregate/pass/*.rs");
    cases.compile_fail("tests/ui/aggregate/fail/*.rs");
}
