//! Errors with their exit codes, and writing to stdout without panicking.

use std::io::{self, Write};

/// Exit codes other than 0 (success); see the `--help` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Anything else: an unexpected answer, a file that cannot be written.
    Failure = 1,
    /// Bad arguments, or a parameter the server rejected (400).
    Usage = 2,
    /// The server cannot be reached, or the connection was lost.
    Unreachable = 3,
    /// No such operation (404).
    NotFound = 4,
    /// The token is missing or wrong, or the server does not allow the action (401, 403).
    Auth = 5,
    /// `--timeout` passed before the operation finished.
    Timeout = 6,
    /// `wait`: the operation failed.
    OperationFailed = 7,
    /// `wait`: the operation was cancelled.
    Cancelled = 8,
    /// `wait`: the operation completed, with failures below it.
    CompletedWithFailures = 9,
}

/// Why the command stopped early.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Printed as one line on stderr; the process exits with the code.
    Failed { exit: Exit, message: String },
    /// Stdout was closed (`| head`): stop quietly.
    StdoutClosed,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError::Failed {
            exit,
            message: one_line(&message.into()),
        }
    }

    pub(crate) fn failure(message: impl Into<String>) -> Self {
        CliError::new(Exit::Failure, message)
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError::new(Exit::Usage, message)
    }
}

/// Control characters escaped, so a message from the server stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::StdoutClosed
    } else {
        CliError::failure(format!("cannot write to stdout: {e}"))
    }
}

/// Writes `text` to stdout and flushes it.
pub(crate) fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `text` and a newline (unless it ends with one) to stdout.
pub(crate) fn print_line(text: &str) -> Result<(), CliError> {
    if text.ends_with('\n') {
        print(text)
    } else {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        print(&line)
    }
}
