#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(docsrs, deny(rustdoc::broken_intra_doc_links))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_op_in_unsafe_fn)]

mod estimate;
mod export;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod layer;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod model;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub mod process;
#[cfg(feature = "resources")]
mod resources;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
mod store;
#[cfg(feature = "terminal")]
#[cfg_attr(docsrs, doc(cfg(feature = "terminal")))]
pub mod terminal;
mod time;
pub mod view;

pub use layer::layer;
pub use layer::span_ext::{ProgressSpanExt, is_cancelled};
pub use layer::{BuildError, Builder, FailOn, ProgressLayer, classify::TrackRule};
pub use model::{Attempt, Attempts};
pub use model::{
    CancelReason, ErrorInfo, ErrorOrigin, Estimate, EstimateBasis, EventLevel, FailureSummary,
    FieldValue, FoldedChildren, HandledErrors, Metadata, NodeId, OperationId, OperationMetrics,
    OperationRef, ParseError, ProgressLevel, ProgressState, RecentEvent, ResourceUsage, RunId,
    SCHEMA_VERSION, Status, Timing,
};
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use otel::OtelExport;
pub use store::{
    CancelError, Changes, HistoryQuery, MetaFilter, ProgressHandle, SetupWarning, Store,
    StoreStats, Subscription,
};

/// Brings [`ProgressSpanExt`] into scope without adding names: `use tracing_progress::prelude::*;`.
pub mod prelude {
    pub use crate::ProgressSpanExt as _;
}
