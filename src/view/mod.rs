//! Text views of snapshots: the verbose report and the one-line active path.
//!
//! Both read a [`ProgressState`](crate::ProgressState) only (from [`Store`](crate::Store),
//! from history, or deserialized from exported JSON), so they work the same live, after the
//! fact and in another process. The output is deterministic: times are UTC, durations and
//! percentages have fixed formats ([`format_timestamp`], [`format_duration`],
//! [`format_percent`]; running times read as a clock, `0:02:15`), and the text is ASCII apart
//! from `›` and `…`.
//!
//! * [`Verbose`] renders the whole tree at one of three [`Detail`] settings, with limits on depth
//!   and on children per parent so a run of 10,000 blocks stays a page long.
//! * [`active_path`] is a status-bar line: where the operation is right now.
//! * [`ProgressStream`] turns snapshots into a machine-readable stream, one JSON object
//!   ([`StreamRecord`], versioned by [`STREAM_VERSION`]) per line per change of a node,
//!   throttled: for CI logs and other programs.
//!
//! ```
//! # fn docs(store: tracing_progress::Store) {
//! use tracing_progress::view::{Detail, Verbose, active_path};
//!
//! let view = Verbose::new(Detail::Normal).max_depth(3).max_children(10);
//! for op in store.active() {
//!     println!("{}", active_path(&op));
//!     print!("{}", view.render(&op));
//! }
//! # }
//! ```

mod active;
mod attempts;
mod fit;
mod lines;
mod stream;
mod text;
mod verbose;

pub use crate::time::{format_duration, format_timestamp};
pub use active::active_path;
pub use stream::{ProgressStream, STREAM_VERSION, StreamRecord};
pub use text::format_percent;
pub use verbose::{Detail, Verbose};
