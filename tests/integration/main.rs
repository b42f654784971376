//! The one integration test binary (see DESIGN.md "Tests"): a module per feature.

mod register;
mod store;
mod support;
