//! An HTTP API over a [`Store`](crate::Store), a live event stream, and a web page (feature
//! `http`).
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! let (layer, store) = tracing_progress::layer();
//! tracing_subscriber::registry().with(layer).init();
//! let server = tracing_progress::http::Server::builder(store).spawn()?; // 127.0.0.1:7878
//! println!("open {}", server.url());
//! // ... the program runs; dropping `server` stops it gracefully.
//! # Ok::<(), tracing_progress::http::ServeError>(())
//! ```
//!
//! The server runs on its own thread with its own single-threaded tokio runtime, so it needs no
//! runtime from the program, and that thread's default subscriber is
//! [`NoSubscriber`](tracing::subscriber::NoSubscriber): the server's own spans never feed back
//! into the progress layer. To serve the routes from your own axum server, use [`router`] or
//! [`ServerBuilder::into_router`].
//!
//! # Endpoints
//!
//! All answers are JSON unless said otherwise; every error is `{"error": "..."}` saying what
//! was wrong. Operations are [`ProgressState`](crate::ProgressState) snapshots in the crate's
//! versioned JSON shape.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | the live page (HTML, embedded, no external resources): running operations, a pause toggle, the last finished operation when nothing runs, history |
//! | `GET /api/health` | `{"ok":true,"active":2,"history":17,"history_bytes":81920,"cancel_enabled":true,"token_required_for_reads":false,"server":{...}}` (never needs the token; `server` is [`ServerStats`]) |
//! | `GET /api/operations` | `{"operations":[...],"truncated":false}`: running operations (oldest first), filtered |
//! | `GET /api/operations/{id}` | one operation, running or from history, with its whole tree; `{id}` is `ID` or, for another run's operation read from the history file, `ID@RUN` (its `run` field) |
//! | `GET /api/operations/{id}/text` | `text/plain`: the [`view::Verbose`](crate::view::Verbose) rendering; `?detail=summary\|normal\|verbose` |
//! | `POST /api/operations/{id}/cancel` | `{"id":7,"cancel_requested":true}`; needs the token |
//! | `GET /api/history` | `{"operations":[...],"truncated":true}`: finished operations, newest first |
//! | `GET /api/history.jsonl` | `application/x-ndjson`: finished operations, one per line, oldest first; header `x-truncated: true` when more matched than the limit |
//! | `GET /metrics` | `text/plain; version=0.0.4`: the metrics exporter's figures in Prometheus text format (feature `metrics`, [`Builder::metrics`](crate::Builder)); 404 without it. Rendered off the async workers under a heavy-request permit |
//! | `GET /api/events` | `text/event-stream`: live changes (below) |
//!
//! Filters of `/api/operations`, `/api/history` and `/api/history.jsonl` (an empty value is
//! the same as none; an unknown parameter, or a repeated one other than `meta`, is a 400):
//!
//! | parameter | meaning |
//! |---|---|
//! | `status=failed` | `pending`, `running`, `completed` (with failures below or not), `completed_with_failures`, `failed`, `cancelled` |
//! | `type=setlist_processing` | operation type, exact |
//! | `name=setlist` | name contains this, case-insensitive |
//! | `since=...`, `until=...` | when the operation finished (now, for a running one) is in the range, ends included. Unix milliseconds (`1767225600000`), RFC 3339 (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`; parsed by `jiff`, which also takes ISO 8601 forms such as `2026-01-01T00:00Z` or `+0100`) or a date (`2026-01-01`, midnight UTC) |
//! | `limit=20` | at most this many, 0 to 10,000; default 100 (10,000 for `.jsonl`); `truncated` says whether more matched |
//! | `include=history` | `/api/operations` only: `active` (default), `history`, or `all` (running first, then finished) |
//! | `meta=block_id=block-002`, `meta=size>=100` | a node of the operation has this metadata field with this value: `=` (numbers as numbers, the rest as text), or `>`, `>=`, `<`, `<=` with a number; repeatable, all must hold ([`MetaFilter`](crate::MetaFilter)); a bad one is a 400 saying what is wrong; `<` and `>` are sent %-encoded (`meta=size%3E%3D100`) |
//!
//! The lists are streamed: written one operation at a time as the client reads, so a request
//! costs memory for one operation whatever the answer's size (an operation that history evicts
//! while the answer is written is left out).
//!
//! Status codes: 400 for a bad parameter or id (`{"error":"parameter status: invalid status
//! \"done\": expected one of pending, running, completed, completed_with_failures, failed,
//! cancelled"}`), for a missing
//! or repeated `Host` header; 404 for an unknown id or path, 401 for a missing or wrong token,
//! 403 for cancelling on a server without a token or a foreign `Host`; 503 for a request over
//! the time limit or an event stream over the cap (with `Retry-After`).
//!
//! # Live events
//!
//! `GET /api/events` is a Server-Sent Events stream. One producer per server reads the store
//! (on the store's change signal, at most every 200 ms; [`ServerBuilder::poll_interval`]) and every client
//! reads from it. Each event has an `id:`, a sequence number that grows by one per change:
//!
//! | event | data |
//! |---|---|
//! | `snapshot` | the latest state of a running operation that started or changed |
//! | `finished` | the final state of an operation that ended |
//! | `missed` | `{"reason":"history","count":n}` or `{"reason":"replay_buffer","after_id":n}`: final states were lost; reload `/api/history` |
//! | `ready` | `{"id":n,"active":k}`: the initial batch is complete |
//!
//! A new client first gets one `snapshot` per running operation, then `ready`. A client that
//! reconnects with `Last-Event-ID` (browsers' `EventSource` does this by itself; or
//! `?last_event_id=`) also gets every `finished` it missed, from a buffer of the last 256
//! ([`ServerBuilder::replay_capacity`]). A slow client skips intermediate snapshots, never a
//! final state. Each event is serialized once and its bytes are shared by every client (the
//! replay buffer, the clients' queues and hyper's write buffers hold references); a client that
//! stops reading is dropped once it has been behind for [`ServerBuilder::stuck_client_timeout`],
//! and its browser reconnects with `Last-Event-ID`.
//!
//! # Security
//!
//! * The default address is `127.0.0.1:7878` ([`DEFAULT_PORT`]); port 0 picks a free one.
//! * With a token ([`ServerBuilder::token`]) clients send `Authorization: Bearer <token>`.
//!   Cancelling needs it; without a token cancelling is disabled (403), so a server without one
//!   is read-only.
//! * A non-loopback address is refused without a token ([`ServeError::TokenRequired`]), and
//!   there reads need the token too ([`ServerBuilder::require_token_for_reads`]); `EventSource`
//!   may send it as `?token=`.
//! * On loopback, a request must carry exactly one `Host` header naming a loopback address
//!   (a web page elsewhere cannot read the API through DNS rebinding; none or two are refused
//!   with 400); [`ServerBuilder::allow_any_host`].
//! * The token is compared in constant time: both sides are hashed (SHA-256) to fixed-length
//!   digests first, so neither a length mismatch nor the first differing byte shows in the time.
//!
//! # Bounds
//!
//! Nothing a client does can use up the program's memory, descriptors or threads:
//!
//! | bound | default | when reached |
//! |---|---|---|
//! | [`max_connections`](ServerBuilder::max_connections) | 64 | the connection idle the longest is closed for the new one; if all are busy the new one waits, and clients after it wait in the kernel's backlog with no descriptor of the program |
//! | [`header_read_timeout`](ServerBuilder::header_read_timeout) | 10 s | a client that has not sent a whole request head (or the next one, on keep-alive) is closed |
//! | [`idle_timeout`](ServerBuilder::idle_timeout) | 30 s | a connection with no request in flight is closed |
//! | [`request_timeout`](ServerBuilder::request_timeout) | 30 s | JSON 503; a body still being written is cut off (its connection closed a second later if its client does not read); event streams are exempt |
//! | [`max_event_streams`](ServerBuilder::max_event_streams) | 32 | 503 with `Retry-After: 5` |
//! | [`stuck_client_timeout`](ServerBuilder::stuck_client_timeout) | 30 s | an event client behind the newest event that long is dropped |
//! | [`max_client_queue_bytes`](ServerBuilder::max_client_queue_bytes) | 256 KiB | an event client takes more on its next turn |
//! | [`max_heavy_requests`](ServerBuilder::max_heavy_requests) | 2 | list requests wait for a turn (within the request time limit) |
//! | list `limit` | 100 (10,000 for `.jsonl`, at most 10,000) | `truncated`, `x-truncated` |
//!
//! A list body also pauses after each chunk three times as long as the chunk took, so one list
//! request uses at most a quarter of a core. What a loopback client can still do: hold the
//! connection slots (with requests in flight, so they are not evicted) until their time limits
//! pass, keep up to 32 event streams open (and be dropped when it stops reading), and make the
//! server spend up to a quarter of a core per list request it is allowed (two by default).
//! [`Server::stats`] and `GET /api/health` count every bound that was hit ([`ServerStats`]).
//! [`router`] and [`ServerBuilder::into_router`] keep the per-request bounds (time limit,
//! heavy requests, event streams, per-client queue); the connection bounds belong to the
//! server that serves them, and a stuck event client there ends its stream at its next turn
//! instead of having its connection closed.
//!
//! # curl
//!
//! ```text
//! curl -s localhost:7878/api/operations
//! curl -s 'localhost:7878/api/operations?include=all&status=failed&limit=5'
//! curl -s 'localhost:7878/api/history?type=setlist_processing&since=2026-01-01T00:00:00Z'
//! curl -s localhost:7878/api/history.jsonl > history.jsonl
//! curl -s localhost:7878/api/operations/42/text
//! curl -sN localhost:7878/api/events
//! curl -sN -H 'Last-Event-ID: 130' localhost:7878/api/events
//! curl -s -X POST -H "Authorization: Bearer $TOKEN" localhost:7878/api/operations/42/cancel
//! ```

mod api;
mod body;
mod conn;
mod events;
mod limits;
mod params;
mod server;

pub use limits::ServerStats;
pub use server::{DEFAULT_PORT, ServeError, Server, ServerBuilder, router};
