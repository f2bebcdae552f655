//! Helpers shared by the tests of every crate (a dev-dependency only):
//! golden-file comparison and the one polling helper.

pub mod golden;
pub mod poll;

pub use golden::assert_golden;
pub use poll::{eventually, eventually_blocking};
