//! The server: configuration, its own thread and runtime, and the handle that stops it.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use tokio::sync::{Semaphore, oneshot, watch};

use super::api::{self, Access, AppState};
use super::events::{Hub, HubLimits};
use super::limits::{Counters, HttpLimits, ServerStats};
use crate::store::Store;

/// The port used when [`ServerBuilder::bind`] is not called: `127.0.0.1:7878`.
pub const DEFAULT_PORT: u16 = 7878;

/// How long a graceful shutdown waits for open requests before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Name of the server's thread.
const THREAD_NAME: &str = "tracing-progress-http";

/// A running HTTP server; see the [module docs](super) for the endpoints.
///
/// [`Server::builder`] configures one and [`ServerBuilder::spawn`] starts it on its own
/// thread; [`Server::spawn`] does both with the defaults. [`shutdown`](Self::shutdown), or
/// dropping the `Server`, stops it gracefully (open requests get up to two seconds, event
/// streams end) and waits for its thread.
///
/// ```no_run
/// use tracing_progress::http::Server;
/// use tracing_subscriber::prelude::*;
///
/// let (layer, store) = tracing_progress::layer();
/// tracing_subscriber::registry().with(layer).init();
/// let server = Server::builder(store)
///     .bind(([127, 0, 0, 1], 0))
///     .token("s3cret")
///     .spawn()?;
/// println!("progress at {}", server.url());
/// // ... run the program; dropping `server` stops it.
/// # Ok::<(), tracing_progress::http::ServeError>(())
/// ```
#[must_use = "dropping the Server stops it"]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Server {
    /// A builder for a server over `store` (loopback port [`DEFAULT_PORT`], no token).
    pub fn builder(store: Store) -> ServerBuilder {
        ServerBuilder {
            store,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            token: None,
            token_for_reads: None,
            host_check: true,
            poll_interval: Duration::from_millis(200),
            replay_capacity: 256,
            limits: HttpLimits::default(),
        }
    }

    /// Starts a server with the defaults: `127.0.0.1:7878`, no token (read-only).
    pub fn spawn(store: Store) -> Result<Server, ServeError> {
        Server::builder(store).spawn()
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, e.g. `http://127.0.0.1:7878/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// What the server's bounds did so far: connections open, refused, evicted, closed idle;
    /// requests timed out; event streams open, refused and dropped as stuck. `GET /api/health`
    /// answers the same figures as its `server` object.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    /// Stops the server gracefully and waits for its thread to end.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Configures a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    store: Store,
    addr: SocketAddr,
    token: Option<String>,
    token_for_reads: Option<bool>,
    host_check: bool,
    poll_interval: Duration,
    replay_capacity: usize,
    limits: HttpLimits,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_for_reads", &self.token_for_reads)
            .field("host_check", &self.host_check)
            .field("poll_interval", &self.poll_interval)
            .field("replay_capacity", &self.replay_capacity)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The address to listen on; default `127.0.0.1:7878` ([`DEFAULT_PORT`]). Port 0 picks a
    /// free port ([`Server::local_addr`] tells which). An address that is not loopback
    /// needs a [`token`](Self::token).
    ///
    /// ```
    /// # fn docs(store: tracing_progress::Store) -> Result<(), Box<dyn std::error::Error>> {
    /// use tracing_progress::http::Server;
    /// let any_port = Server::builder(store.clone()).bind(([127, 0, 0, 1], 0));
    /// let from_text = Server::builder(store).bind("[::1]:9000".parse::<std::net::SocketAddr>()?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn bind(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.addr = addr.into();
        self
    }

    /// The bearer token clients send as `Authorization: Bearer <token>`: visible ASCII, no
    /// spaces. With a token, `POST .../cancel` works for those who send it; without one,
    /// cancelling is disabled (403). It is required to listen on a non-loopback address,
    /// where it also protects every read (see [`require_token_for_reads`](Self::require_token_for_reads)).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Whether reading (every `GET /api/...` but `/api/health`) needs the token too. The
    /// default is yes for a non-loopback address and no for loopback. Reads accept the token
    /// in the header or, for `EventSource`, which cannot send headers, as `?token=`.
    #[must_use]
    pub fn require_token_for_reads(mut self, yes: bool) -> Self {
        self.token_for_reads = Some(yes);
        self
    }

    /// Accepts any `Host` header. By default a server on a loopback address answers only
    /// requests whose `Host` is `localhost`, `*.localhost` or a loopback IP, so that a web page
    /// elsewhere cannot read it through DNS rebinding. Turn this off behind a reverse proxy
    /// that rewrites `Host`.
    #[must_use]
    pub fn allow_any_host(mut self) -> Self {
        self.host_check = false;
        self
    }

    /// Shortest time between two pushes of the event stream (default 200 ms; at least 10 ms).
    /// The stream wakes on the store's change signal, never by polling; changes within the
    /// interval are coalesced into one push.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How many final states the event stream keeps for clients that reconnect with
    /// `Last-Event-ID` (default 256, at least 1). A client further behind gets a `missed`
    /// event and should reload the history.
    #[must_use]
    pub fn replay_capacity(mut self, n: usize) -> Self {
        self.replay_capacity = n;
        self
    }

    /// Connections open at most (default 64, at least 1). At the bound, a new connection
    /// closes the one idle the longest (no request in flight: one that never finished its
    /// headers, or a keep-alive connection between requests); when all are busy it waits,
    /// and clients beyond it wait in the kernel's listen backlog, holding no descriptor of this
    /// process. A client on loopback therefore cannot use up the program's file descriptors.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// Time a client has to send a whole request head, also the longest wait for the next
    /// request on a keep-alive connection (default 10 s). Against clients that send their
    /// headers a byte at a time ("slowloris").
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// Time a connection may stay open with no request in flight before it is closed (default
    /// 30 s). An open event stream is a request in flight.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// Time a request may take, streaming its answer included (default 30 s): waiting longer
    /// for its head answers a JSON 503, and a body still being written then is cut off. Event
    /// streams are exempt (they are capped by [`max_event_streams`](Self::max_event_streams)).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_timeout = timeout;
        self
    }

    /// Event streams open at once (default 32); more are answered 503 with `Retry-After`.
    #[must_use]
    pub fn max_event_streams(mut self, n: usize) -> Self {
        self.limits.max_event_streams = n;
        self
    }

    /// List requests (`/api/operations`, `/api/history`, `/api/history.jsonl`) served at once
    /// (default 2, at least 1); more wait for a turn within the request timeout. Lists are
    /// streamed, so each costs memory for one operation at a time, but CPU for all of it.
    #[must_use]
    pub fn max_heavy_requests(mut self, n: usize) -> Self {
        self.limits.max_heavy_requests = n;
        self
    }

    /// An event-stream client that has been behind the newest event this long without taking
    /// it (it stopped reading, or reads slower than events come) is dropped and its connection
    /// closed (default 30 s); [`ServerStats::event_clients_dropped`] counts them. Its browser
    /// reconnects with `Last-Event-ID` and misses nothing still in the replay buffer.
    #[must_use]
    pub fn stuck_client_timeout(mut self, timeout: Duration) -> Self {
        self.limits.stuck_client_timeout = timeout;
        self
    }

    /// Bytes of events one client takes into its own queue at a time beyond its first batch
    /// (default 256 KiB). Events are serialized once and shared by every client; the rest wait,
    /// shared, in the server's buffer.
    #[must_use]
    pub fn max_client_queue_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_client_queue_bytes = bytes;
        self
    }

    fn access(&self, for_addr: Option<SocketAddr>) -> Result<Access, ServeError> {
        let token = match &self.token {
            None => None,
            Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ServeError::InvalidToken);
            }
            Some(t) => Some(Arc::<str>::from(t.as_str())),
        };
        let loopback = for_addr.is_none_or(|a| a.ip().is_loopback());
        if let Some(addr) = for_addr
            && !loopback
            && token.is_none()
        {
            return Err(ServeError::TokenRequired { addr });
        }
        let token_for_reads = self.token_for_reads.unwrap_or(!loopback);
        if token_for_reads && token.is_none() {
            return Err(ServeError::TokenRequired {
                addr: for_addr.unwrap_or(self.addr),
            });
        }
        Ok(Access {
            token,
            token_for_reads,
            host_check: self.host_check && for_addr.is_some() && loopback,
        })
    }

    fn state(&self, access: Access) -> AppState {
        let counters = Arc::new(Counters::default());
        let hub_limits = HubLimits {
            poll_interval: self.poll_interval,
            replay_capacity: self.replay_capacity,
            stuck_client_timeout: self.limits.stuck_client_timeout,
            max_client_queue_bytes: self.limits.max_client_queue_bytes,
        };
        AppState {
            store: self.store.clone(),
            hub: Hub::new(self.store.clone(), hub_limits, counters.clone()),
            access: Arc::new(access),
            limits: Arc::new(self.limits.clone()),
            heavy: Arc::new(Semaphore::new(self.limits.max_heavy_requests.max(1))),
            counters,
        }
    }

    /// The configured routes as an [`axum::Router`], to serve from your own runtime; the
    /// address and host check do not apply (your server decides). Fails on an invalid token,
    /// or when reads need a token and none is set.
    pub fn into_router(self) -> Result<Router, ServeError> {
        let access = self.access(None)?;
        Ok(api::build(self.state(access)))
    }

    /// Starts the server on its own thread (`tracing-progress-http`) with its own
    /// single-threaded tokio runtime. The thread's default subscriber is
    /// [`NoSubscriber`](tracing::subscriber::NoSubscriber), so the server's own spans and
    /// events (axum's, hyper's) never reach the progress layer or your logs.
    ///
    /// Fails at once, before any thread starts, if the address is not loopback and no token
    /// is set ([`ServeError::TokenRequired`]), if the token is invalid, or if the address
    /// cannot be bound.
    pub fn spawn(self) -> Result<Server, ServeError> {
        let access = self.access(Some(self.addr))?;
        let addr = self.addr;
        let bind_err = |source| ServeError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = std_listener.local_addr().map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let state = self.state(access);
        let hub = state.hub.clone();
        let counters = state.counters.clone();
        let serve_counters = counters.clone();
        let limits = self.limits.clone();
        let router = api::build(state);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let _no_tracing =
                    tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
                runtime.block_on(async move {
                    let (down_tx, down_rx) = watch::channel(false);
                    let signal_hub = hub.clone();
                    tokio::spawn(async move {
                        // A dropped handle stops the server too.
                        let _ = stop_rx.await;
                        signal_hub.shut_down();
                        down_tx.send_replace(true);
                    });
                    let serve =
                        super::conn::serve(listener, router, limits, serve_counters, down_rx);
                    let deadline = async {
                        hub.wait_shut_down().await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = deadline => {}
                    }
                });
                // Dropping the runtime here ends whatever the grace period left running.
                drop(runtime);
            })
            .map_err(ServeError::Thread)?;
        Ok(Server {
            addr: local_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            counters,
        })
    }
}

/// Why a [`Server`] did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The address is not loopback (or reads were set to need a token) and no token is set:
    /// anyone who can reach the address could read every operation.
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token is empty or has characters other than visible ASCII.
    InvalidToken,
    /// The address could not be bound (in use, not local, no permission).
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The tokio runtime could not be built.
    Runtime(io::Error),
    /// The server thread could not be started.
    Thread(io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::TokenRequired { addr } if addr.ip().is_loopback() => write!(
                f,
                "refusing to serve on {addr}: reads were set to need a token but none is set; \
                 set one with ServerBuilder::token"
            ),
            ServeError::TokenRequired { addr } => write!(
                f,
                "refusing to serve on {addr} without a token: it is not a loopback address, so \
                 anyone who can reach it could read every operation; set one with \
                 ServerBuilder::token, or bind 127.0.0.1"
            ),
            ServeError::InvalidToken => {
                f.write_str("invalid token: it must be non-empty visible ASCII without spaces")
            }
            ServeError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServeError::Runtime(e) => write!(f, "cannot start the server's tokio runtime: {e}"),
            ServeError::Thread(e) => write!(f, "cannot start the server thread: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Bind { source, .. } => Some(source),
            ServeError::Runtime(e) | ServeError::Thread(e) => Some(e),
            ServeError::TokenRequired { .. } | ServeError::InvalidToken => None,
        }
    }
}

/// The routes over `store` with the defaults (no token: read-only, cancelling disabled), to
/// serve from your own axum server and runtime.
///
/// ```no_run
/// # async fn docs(store: tracing_progress::Store) -> std::io::Result<()> {
/// let app = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "hello" }))
///     .merge(tracing_progress::http::router(store));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
///
/// The page loads `api/...` relative to its own address, so merge the router at the root for
/// the page; the API alone also works nested under a prefix. The event stream's poller runs as
/// a task on your runtime while clients are connected, and the handlers run under whatever
/// subscriber your runtime's threads have (give them
/// [`NoSubscriber`](tracing::subscriber::NoSubscriber) if the progress layer should not see
/// them). Configure a token with
/// [`ServerBuilder::into_router`].
pub fn router(store: Store) -> Router {
    let builder = Server::builder(store);
    let access = Access {
        token: None,
        token_for_reads: false,
        host_check: false,
    };
    api::build(builder.state(access))
}
