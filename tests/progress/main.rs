//! Integration tests of the layer and store, one binary (less linking) with a module per topic.

#[path = "../support/mod.rs"]
mod support;

mod async_drops;
mod attempts;
mod bad_input;
mod composition;
mod concurrency;
mod failures;
mod folding;
mod planned;
mod properties;
mod recent_events;
mod rules;
mod snapshot_reuse;
mod snapshot_stress;
mod store_api;
mod tree_shape;
