//! Tower middleware for `distlock`.
//!
//! The `LockLayer` lands in its own issue; this crate is the package it will
//! live in and exports nothing yet.
