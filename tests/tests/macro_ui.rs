//! Compile-time errors of `#[distributed_lock]`, checked with `trybuild`
//! against the expected messages in `tests/ui/*.stderr`.
//!
//! After an intended change to a message, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p distlock-tests --test macro_ui` and
//! review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
