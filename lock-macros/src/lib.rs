//! Procedural macros for `distlock`.
//!
//! The `#[distributed_lock]` attribute lands in its own issue; this crate is
//! the package it will live in and exports nothing yet.
