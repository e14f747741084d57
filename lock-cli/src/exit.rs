//! Exit statuses, and the error type that carries one.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success (`hold`, `elect`: the command's own status is passed through) |
//! | 1 | `info` / `force-unlock`: the lock is not held; `leader`: nobody leads; other failures |
//! | 2 | bad input: unknown flag, bad duration, invalid lock or election name, TTL or value |
//! | 69 | etcd cannot be reached (`EX_UNAVAILABLE`) |
//! | 75 | `hold`: the lock stayed busy past `--wait` (`EX_TEMPFAIL`); `elect`: another candidate led past `--wait`; the command did not run |
//! | 76 | `hold`: the lock was lost while the command ran; `elect`: the leadership was; the command was stopped |
//! | 126 / 127 | `hold`, `elect`: the command could not be executed / was not found |
//! | 128 + N | `hold`, `elect`: the command was killed by signal N; also signal N (SIGINT 130, SIGHUP 129, SIGQUIT 131, SIGTERM 143) reached distlock while it waited for the lock or to lead |

use distlock::{ErrorCode, LockError};

/// Success.
pub const SUCCESS: i32 = 0;
/// A generic failure, "not held" for `info` and `force-unlock`, and "nobody
/// leads" for `leader`.
pub const FAILURE: i32 = 1;
/// Bad input (clap uses the same status for usage errors).
pub const USAGE: i32 = 2;
/// etcd cannot be reached.
pub const UNAVAILABLE: i32 = 69;
/// `hold`: the lock stayed busy past `--wait` (`elect`: another led).
pub const BUSY: i32 = 75;
/// `hold`: the lock was lost while the command ran (`elect`: the leadership).
pub const LOST: i32 = 76;
/// `hold`, `elect`: the command exists but cannot be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// `hold`, `elect`: the command was not found.
pub const NOT_FOUND: i32 = 127;

/// A failure to report on stderr, with the exit status to end with.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: i32,
    /// The message, without the `distlock: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with this status and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failure for a distlock error, with the status its code calls for.
    pub fn lock(context: &str, err: &LockError) -> Self {
        let code = match err.code() {
            ErrorCode::InvalidKey | ErrorCode::InvalidOptions => USAGE,
            ErrorCode::Backend => UNAVAILABLE,
            _ => FAILURE,
        };
        Failure::new(code, format!("{context}: {}", chain(err)))
    }
}

/// An error and its sources, `: `-separated, without repeats (many errors
/// repeat their source's text in their own).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
