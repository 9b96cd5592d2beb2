//! A blocking client of the HTTP API: the address, the token, and answers mapped to errors.

use std::io::{self, BufRead};
use std::time::Duration;

use serde::Deserialize;
use tracing_progress::ProgressState;
use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use crate::error::{CliError, Exit, one_line};

/// Connecting (and resolving the host name) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Waiting for the answer's head, and for each read of its body, gives up after this long
/// (the event stream sends a keep-alive every 15 s).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read into memory.
const MAX_BODY: u64 = 1 << 30;

/// A client of one server.
pub(crate) struct Client {
    /// `http://host:port` plus any path prefix, without a trailing slash.
    base: String,
    token: Option<String>,
    agent: Agent,
}

/// A query string: name and value pairs, encoded when sent.
pub(crate) type Query = Vec<(&'static str, String)>;

impl Client {
    /// A client of the server at `addr` (`http://host:port`, `host:port`, or a port).
    pub(crate) fn new(addr: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = parse_addr(addr)?;
        let token = match token {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(CliError::usage(
                    "invalid token: a token is visible ASCII without spaces",
                ));
            }
            Some(t) => Some(t),
        };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            // Plain HTTP to the program's own server: never through a proxy from the environment.
            .proxy(None)
            .max_redirects(0)
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(READ_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .user_agent(concat!("tracing-progress-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            base,
            token,
            agent: config.into(),
        })
    }

    /// The server's address as given to requests.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path?query`; a non-2xx answer is an error carrying the API's message.
    pub(crate) fn get(&self, path: &str, query: &Query) -> Result<Response<Body>, CliError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in query {
            req = req.query(name, value);
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req.call().map_err(|e| self.unreachable(&e))?;
        self.check(resp)
    }

    /// `GET path?query`, the answer as text.
    pub(crate) fn get_text(&self, path: &str, query: &Query) -> Result<String, CliError> {
        let mut resp = self.get(path, query)?;
        self.read_text(&mut resp)
    }

    /// `POST path` with an empty body.
    pub(crate) fn post_text(&self, path: &str) -> Result<String, CliError> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req.send_empty().map_err(|e| self.unreachable(&e))?;
        let mut resp = self.check(resp)?;
        self.read_text(&mut resp)
    }

    /// One operation, as text and parsed.
    pub(crate) fn operation(&self, id: u64) -> Result<(ProgressState, String), CliError> {
        let text = self.get_text(&format!("/api/operations/{id}"), &Vec::new())?;
        let state = parse_state(&text)?;
        Ok((state, text))
    }

    /// Opens the event stream, resuming after `last_event_id`.
    pub(crate) fn events(&self, last_event_id: Option<u64>) -> Result<Response<Body>, CliError> {
        let mut req = self
            .agent
            .get(format!("{}/api/events", self.base))
            .header("Accept", "text/event-stream");
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req.call().map_err(|e| self.unreachable(&e))?;
        self.check(resp)
    }

    fn read_text(&self, resp: &mut Response<Body>) -> Result<String, CliError> {
        resp.body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.lost(&e))
    }

    /// A 2xx answer as it is; any other as an error with the API's `{"error": "..."}` text.
    fn check(&self, mut resp: Response<Body>) -> Result<Response<Body>, CliError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        #[derive(Deserialize)]
        struct ApiError {
            error: String,
        }
        let message = match serde_json::from_str::<ApiError>(&body) {
            Ok(e) => e.error,
            Err(_) => {
                let first = body.lines().map(str::trim).find(|l| !l.is_empty());
                match first {
                    Some(line) => line.chars().take(200).collect(),
                    None => status
                        .canonical_reason()
                        .unwrap_or("no explanation")
                        .to_owned(),
                }
            }
        };
        Err(match status.as_u16() {
            400 => CliError::usage(format!("the server rejected the request: {message}")),
            401 => CliError::new(
                Exit::Auth,
                format!(
                    "authentication failed: {message} (give the server's token with --token or \
                     TRACING_PROGRESS_TOKEN)"
                ),
            ),
            403 => CliError::new(Exit::Auth, format!("not allowed: {message}")),
            404 => CliError::new(Exit::NotFound, message),
            code => CliError::failure(format!("the server answered {code}: {message}")),
        })
    }

    /// The request could not be made or answered.
    fn unreachable(&self, e: &ureq::Error) -> CliError {
        CliError::new(
            Exit::Unreachable,
            format!(
                "cannot reach the tracing-progress server at {}: {} (is the program running with \
                 its HTTP server? set --addr or TRACING_PROGRESS_ADDR)",
                self.base,
                describe(e)
            ),
        )
    }

    /// The connection broke while reading an answer.
    pub(crate) fn lost(&self, e: &dyn std::fmt::Display) -> CliError {
        CliError::new(
            Exit::Unreachable,
            format!("lost the connection to the server at {}: {e}", self.base),
        )
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(t) => format!("no answer in time ({t})"),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        other => other.to_string(),
    }
}

/// An operation snapshot from the API's JSON.
pub(crate) fn parse_state(text: &str) -> Result<ProgressState, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::failure(format!(
            "unexpected answer from the server (not an operation of a schema this client \
             knows): {e}"
        ))
    })
}

/// Normalizes `--addr`: `http://host:port[/prefix]`, `host:port`, `:port` or `port`.
pub(crate) fn parse_addr(addr: &str) -> Result<String, CliError> {
    let given = addr.trim();
    let bad = |why: &str| CliError::usage(format!("--addr {}: {why}", one_line(given)));
    if given.is_empty() {
        return Err(bad("empty; expected a URL like http://127.0.0.1:7878"));
    }
    let rest = match given.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad(
                "https is not supported: the API serves plain HTTP (use http://)",
            ));
        }
        Some(_) => return Err(bad("unsupported scheme: expected http://HOST:PORT")),
        None => given,
    };
    let rest = rest.trim_end_matches('/');
    let rest = match rest.strip_prefix(':').unwrap_or(rest) {
        port if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("127.0.0.1:{port}")
        }
        _ => rest.to_owned(),
    };
    let base = format!("http://{rest}");
    let uri: Uri = base
        .parse()
        .map_err(|e| bad(&format!("not a valid address ({e})")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host; expected a URL like http://127.0.0.1:7878"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed here"));
    }
    Ok(base)
}

/// One Server-Sent Event.
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) id: Option<u64>,
    pub(crate) data: String,
}

/// Reads events until the stream ends; stops early when `on_event` returns false.
pub(crate) fn read_events(
    mut reader: impl BufRead,
    mut on_event: impl FnMut(SseEvent) -> bool,
) -> io::Result<()> {
    let mut line = String::new();
    let mut current = SseEvent::default();
    let mut has_data = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            let event = std::mem::take(&mut current);
            if has_data && !on_event(event) {
                return Ok(());
            }
            has_data = false;
            continue;
        }
        if l.starts_with(':') {
            continue;
        }
        let (field, value) = match l.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (l, ""),
        };
        match field {
            "event" => current.event = value.to_owned(),
            "data" => {
                if has_data {
                    current.data.push('\n');
                }
                current.data.push_str(value);
                has_data = true;
            }
            "id" => current.id = value.trim().parse().ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for (given, want) in [
            ("http://127.0.0.1:7878", "http://127.0.0.1:7878"),
            ("HTTP://localhost:1/", "http://localhost:1"),
            ("localhost:9000", "http://localhost:9000"),
            ("9000", "http://127.0.0.1:9000"),
            (":9000", "http://127.0.0.1:9000"),
            ("[::1]:7878", "http://[::1]:7878"),
            ("http://host:80/prefix/", "http://host:80/prefix"),
        ] {
            assert_eq!(parse_addr(given).ok().as_deref(), Some(want), "{given}");
        }
        for bad in [
            "",
            "https://x:1",
            "ftp://x",
            "http://",
            "http://x:1/?a=b",
            "a b",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events() {
        let stream = "retry: 1000\n\n: keep-alive\n\nevent: snapshot\nid: 3\ndata: {\"a\":1}\n\n\
                      event: ready\r\nid: 4\r\ndata: x\r\ndata: y\r\n\r\n";
        let mut got = Vec::new();
        read_events(stream.as_bytes(), |e| {
            got.push((e.event, e.id, e.data));
            true
        })
        .unwrap();
        assert_eq!(
            got,
            [
                ("snapshot".to_owned(), Some(3), "{\"a\":1}".to_owned()),
                ("ready".to_owned(), Some(4), "x\ny".to_owned()),
            ]
        );
    }
}
