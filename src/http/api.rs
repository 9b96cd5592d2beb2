//! Routes, handlers, errors and access checks.
//!
//! Every handler is total: user input ends in a 2xx, a 400 with a message naming the
//! parameter, a 401/403, or a 404. `tower-http`'s panic-catching layer turns a bug into a JSON
//! 500 (without the panic message) instead of a dropped connection.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use super::body::{self, HeavyPermit};
use super::conn::ConnControl;
use super::events::{self, Hub};
use super::limits::{Counters, GaugeGuard, HttpLimits, ServerStats};
use super::params::{
    DEFAULT_LIMIT, Filters, HISTORY_PARAMS, Include, MAX_LIMIT, OPERATIONS_PARAMS, Params,
};
use crate::model::{NodeId, OperationRef, ProgressState};
use crate::store::Store;
use crate::view::{Detail, Verbose};

/// The embedded page.
const INDEX_HTML: &str = include_str!("../../assets/index.html");

/// The page's own script and style are inline; it talks only to this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Who may do what.
#[derive(Debug)]
pub(crate) struct Access {
    /// The bearer token, if configured; needed for cancel (no token: cancel is disabled).
    pub(crate) token: Option<Arc<str>>,
    /// Whether reads (every `GET /api/*` but health) need the token too.
    pub(crate) token_for_reads: bool,
    /// Whether to refuse `Host` headers that do not name a loopback address (DNS rebinding).
    pub(crate) host_check: bool,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) hub: Arc<Hub>,
    pub(crate) access: Arc<Access>,
    pub(crate) limits: Arc<HttpLimits>,
    pub(crate) counters: Arc<Counters>,
    /// Permits of the list requests served at once.
    pub(crate) heavy: Arc<Semaphore>,
}

/// An error answered as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let mut response = (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) fn build(state: AppState) -> Router {
    // Every route but the event stream has the request time limit (its answer: a JSON 503).
    let timed = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/api/health", get(health))
        .route("/api/operations", get(list_operations))
        .route("/api/operations/{id}", get(get_operation))
        .route("/api/operations/{id}/text", get(get_operation_text))
        .route("/api/operations/{id}/cancel", post(cancel))
        .route("/api/history", get(history))
        .route("/api/history.jsonl", get(history_jsonl))
        .route("/metrics", get(metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.limits.request_timeout,
        ))
        .layer(middleware::map_response_with_state(
            state.clone(),
            timeout_answer,
        ));
    Router::new()
        .route("/api/events", get(events))
        .merge(timed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(catch_panics())
        .with_state(state)
}

/// The outermost layer: a handler that panics answers a JSON 500 instead of dropping the
/// connection.
fn catch_panics() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(panic_response)
}

/// The answer to a request whose handler panicked. The panic's message stays out of it: it may
/// quote data of the instrumented program.
fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// Turns the empty 503 of `tower-http`'s timeout into a JSON error, and counts it.
async fn timeout_answer(State(app): State<AppState>, response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        Counters::bump(&app.counters.requests_timed_out);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than the server's limit of {} (ServerBuilder::request_timeout)",
                crate::view::format_duration(
                    u64::try_from(app.limits.request_timeout.as_micros()).unwrap_or(u64::MAX)
                )
            ),
        )
        .into_response();
    }
    response
}

/// Host check and the read token.
async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if app.access.host_check {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let refusal = match (hosts.next(), hosts.next()) {
            (Some(host), None) if host_is_loopback(host) => None,
            (Some(_), None) => Some((
                StatusCode::FORBIDDEN,
                "this server listens on loopback only and accepts only a loopback Host header \
                 (localhost, 127.0.0.1, [::1])",
            )),
            (None, _) => Some((
                StatusCode::BAD_REQUEST,
                "missing Host header: this server checks it (DNS rebinding)",
            )),
            (Some(_), Some(_)) => Some((
                StatusCode::BAD_REQUEST,
                "more than one Host header: send exactly one",
            )),
        };
        if let Some((status, message)) = refusal {
            return ApiError::new(status, message).into_response();
        }
    }
    let path = req.uri().path();
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD)
        && path.starts_with("/api/")
        && path != "/api/health";
    if app.access.token_for_reads && is_read {
        let query_token = Params::parse(req.uri().query())
            .ok()
            .and_then(|p| p.get("token").map(str::to_owned));
        if let Err(e) = check_token(&app.access, req.headers(), query_token.as_deref()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

fn host_is_loopback(host: &HeaderValue) -> bool {
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or("", |(name, _port)| name)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks the bearer token (or, for reads, the `token` query parameter).
fn check_token(
    access: &Access,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = access.token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this server has no token, so cancelling is disabled; start it with \
             ServerBuilder::token",
        ));
    };
    let given = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or("");
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim())
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "malformed Authorization header: expected \"Bearer <token>\"",
                    ));
                }
            }
        }
        None => query_token,
    };
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing token: send the header \"Authorization: Bearer <token>\"",
        )),
        Some(given) if token_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token")),
    }
}

/// Compares in constant time: both sides are hashed to fixed-length digests first, so neither
/// the position of the first difference nor a length mismatch changes the time taken.
fn token_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

fn params(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
    let params = Params::parse(raw).map_err(ApiError::bad_request)?;
    params.check(allowed).map_err(ApiError::bad_request)?;
    Ok(params)
}

fn parse_id(path: Result<Path<String>, PathRejection>) -> Result<NodeId, ApiError> {
    let Path(raw) =
        path.map_err(|e| ApiError::bad_request(format!("operation id in the path: {e}")))?;
    raw.parse::<NodeId>()
        .map_err(|e| ApiError::bad_request(format!("operation id in the path: {e}")))
}

/// `ID` (this program's operation) or `ID@RUN` (one of a history file's other runs).
fn parse_ref(path: Result<Path<String>, PathRejection>) -> Result<OperationRef, ApiError> {
    let Path(raw) =
        path.map_err(|e| ApiError::bad_request(format!("operation id in the path: {e}")))?;
    raw.parse::<OperationRef>()
        .map_err(|e| ApiError::bad_request(format!("operation id in the path: {e}")))
}

fn lookup(store: &Store, r: OperationRef) -> Result<Arc<ProgressState>, ApiError> {
    store.get_ref(r).ok_or_else(|| {
        ApiError::not_found(format!(
            "no operation with id {r} (unknown, or no longer kept in history)"
        ))
    })
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn health(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<impl Serialize>, ApiError> {
    params(q.as_deref(), &["token"])?;
    #[derive(Serialize)]
    struct Health {
        ok: bool,
        active: usize,
        history: usize,
        history_bytes: usize,
        cancel_enabled: bool,
        token_required_for_reads: bool,
        server: ServerStats,
    }
    let stats = app.store.stats();
    Ok(Json(Health {
        ok: true,
        active: stats.active,
        history: stats.history,
        history_bytes: stats.history_bytes,
        cancel_enabled: app.access.token.is_some(),
        token_required_for_reads: app.access.token_for_reads,
        server: app.counters.snapshot(),
    }))
}

/// Waits for one of the permits of heavy (list) requests; the request timeout bounds the wait.
async fn heavy_permit(app: &AppState) -> Result<HeavyPermit, ApiError> {
    let permit = app.heavy.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    })?;
    Ok(HeavyPermit {
        _permit: permit,
        _gauge: GaugeGuard::try_acquire(&app.counters, |c| &c.heavy_in_flight, usize::MAX),
    })
}

fn deadline(app: &AppState, started: Instant) -> Instant {
    started + app.limits.request_timeout
}

fn json_stream(body: axum::body::Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn list_operations(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    list(app, q, OPERATIONS_PARAMS, None).await
}

async fn history(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    list(app, q, HISTORY_PARAMS, Some(Include::History)).await
}

/// A streamed JSON array of operations: the filters `allowed` names, `include` forced if given.
async fn list(
    app: AppState,
    q: Option<String>,
    allowed: &[&str],
    include: Option<Include>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(q.as_deref()).map_err(ApiError::bad_request)?;
    let mut filters =
        Filters::parse(&params, allowed, Some(DEFAULT_LIMIT)).map_err(ApiError::bad_request)?;
    if let Some(include) = include {
        filters.include = include;
    }
    let permit = heavy_permit(&app).await?;
    let body = body::operations_array(
        app.store.clone(),
        filters,
        permit,
        deadline(&app, started),
        app.counters.clone(),
    );
    Ok(json_stream(body))
}

async fn history_jsonl(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(q.as_deref()).map_err(ApiError::bad_request)?;
    let filters =
        Filters::parse(&params, HISTORY_PARAMS, Some(MAX_LIMIT)).map_err(ApiError::bad_request)?;
    let permit = heavy_permit(&app).await?;
    let (body, truncated) = body::history_lines(
        app.store.clone(),
        filters,
        permit,
        deadline(&app, started),
        app.counters.clone(),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8"),
            (
                header::HeaderName::from_static("x-truncated"),
                if truncated { "true" } else { "false" },
            ),
        ],
        body,
    )
        .into_response())
}

async fn get_operation(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<impl Serialize>, ApiError> {
    params(q.as_deref(), &["token"])?;
    let r = parse_ref(path)?;
    Ok(Json(lookup(&app.store, r)?))
}

/// Content type of `/metrics` (the Prometheus text format 0.0.4).
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics exporter's figures for a Prometheus that scrapes this process (see
/// `crate::metrics`). Rendering reads the running operations, so it holds a heavy permit and
/// runs off the async workers.
async fn metrics(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    params(q.as_deref(), &["token"])?;
    let _permit = heavy_permit(&app).await?;
    let store = app.store.clone();
    let text = tokio::task::spawn_blocking(move || store.metrics_text())
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    match text {
        Some(text) => Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()),
        None => Err(ApiError::not_found(
            "no metrics: build the layer with Builder::metrics (feature `metrics`)",
        )),
    }
}

async fn get_operation_text(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q.as_deref(), &["detail", "token"])?;
    let detail = match params.get("detail") {
        None | Some("verbose") => Detail::Verbose,
        Some("normal") => Detail::Normal,
        Some("summary") => Detail::Summary,
        Some(other) => {
            let other: String = other.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "parameter detail: {other:?} is not one of summary, normal, verbose"
            )));
        }
    };
    let r = parse_ref(path)?;
    let state = lookup(&app.store, r)?;
    let text = Verbose::new(detail).render(&state);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn cancel(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<impl Serialize>, ApiError> {
    check_token(&app.access, &headers, None)?;
    params(q.as_deref(), &[])?;
    let id = parse_id(path)?;
    match app.store.cancel(id) {
        Ok(()) => {
            #[derive(Serialize)]
            struct Cancelled {
                id: NodeId,
                cancel_requested: bool,
            }
            Ok(Json(Cancelled {
                id,
                cancel_requested: true,
            }))
        }
        Err(_) => Err(match app.store.get(id) {
            Some(state) => ApiError::not_found(format!(
                "operation {id} is not running: it already finished ({})",
                state.status
            )),
            None => ApiError::not_found(format!(
                "no operation with id {id} (unknown, or no longer kept in history)"
            )),
        }),
    }
}

async fn events(
    State(app): State<AppState>,
    control: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q.as_deref(), &["last_event_id", "token"])?;
    let parse = |what: &str, v: &str| {
        v.trim().parse::<u64>().map_err(|_| {
            let v: String = v.chars().take(64).collect();
            ApiError::bad_request(format!("{what}: {v:?} is not an event id from this server"))
        })
    };
    let last = match headers.get("last-event-id") {
        Some(v) => Some(parse(
            "header Last-Event-ID",
            v.to_str().unwrap_or("not text"),
        )?),
        None => params
            .get("last_event_id")
            .map(|v| parse("parameter last_event_id", v))
            .transpose()?,
    };
    let Some(slot) = GaugeGuard::try_acquire(
        &app.counters,
        |c| &c.event_streams_open,
        app.limits.max_event_streams,
    ) else {
        Counters::bump(&app.counters.event_streams_refused);
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams open (at most {}; ServerBuilder::max_event_streams)",
                app.limits.max_event_streams
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(response);
    };
    let control = control.map(|c| c.0);
    if let Some(c) = &control {
        c.mark_streaming();
    }
    let stream = events::client_stream(app.hub.clone(), last, control, slot);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!(
        "no endpoint {method} {path}; see the tracing_progress::http docs for the list"
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bug in a handler is a JSON 500 that does not repeat the panic's message.
    #[tokio::test]
    async fn a_panicking_handler_is_a_json_500() {
        use tower::ServiceExt;

        async fn boom() -> &'static str {
            panic!("secret data of the program")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(catch_panics());
        let request = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("a request")
        };
        let response = app
            .clone()
            .oneshot(request("/boom"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
        // The service goes on answering.
        let response = app.oneshot(request("/fine")).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn errors_are_json_with_the_status() {
        let response = ApiError::bad_request("parameter x: \"bad\"").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let response = ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response();
        assert_eq!(
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(HeaderValue::as_bytes),
            Some(&b"Bearer"[..])
        );
    }

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "localhost:7878",
            "LOCALHOST:1",
            "app.localhost:80",
            "127.0.0.1:7878",
            "127.1.2.3",
            "[::1]:7878",
            "[::1]",
        ] {
            assert!(host_is_loopback(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "example.com",
            "evil.com:7878",
            "10.0.0.1:7878",
            "[::2]:1",
            "",
            "[::1",
        ] {
            assert!(!host_is_loopback(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn tokens() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
    }
}
