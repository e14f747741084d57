//! How etcd's errors map to [`LockError`]s: which are transient, which
//! mean a lease is gone, which are refusals for good.

use tonic::Code;

use crate::error::{ErrorCode, LockError};

/// Maps an etcd error: a lease the server does not know is `Expired`; a
/// refused permission or failed authentication is `PermissionDenied` (for
/// good); any other backend error is transient when it may go away by itself
/// (no leader, no connection, a change of auth settings in flight).
pub(crate) fn map_error(what: &str, err: etcd_client::Error) -> LockError {
    use etcd_client::Error as E;
    if is_not_found(&err) {
        return LockError::with_source(
            ErrorCode::Expired,
            format!("etcd {what}: lease not found"),
            err,
        );
    }
    if is_denied(&err) {
        return LockError::with_source(
            ErrorCode::PermissionDenied,
            format!("etcd {what} refused"),
            err,
        );
    }
    let transient = match &err {
        E::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Aborted
            | Code::Cancelled
            | Code::ResourceExhausted => true,
            // "invalid auth token" reaches us only when re-authenticating did
            // not help (`EtcdConfig` clients refresh and retry once) or the
            // client never refreshes (a `Client` built without
            // `with_auto_token_refresh`): retrying would not help, and a
            // release that retries forever would hang.
            Code::Unauthenticated => false,
            // Raced with a change of users or roles: the next try reads them.
            Code::InvalidArgument => status.message().contains("auth store is old"),
            _ => false,
        },
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    LockError::backend(format!("etcd {what} failed"), err, transient)
}

pub(crate) fn is_not_found(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(s) if s.code() == Code::NotFound)
}

/// Whether etcd refused a request for good: the user may not touch the key
/// (`permission denied`), or cannot authenticate (wrong user or password,
/// no user name while auth is on).
fn is_denied(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    match status.code() {
        Code::PermissionDenied => true,
        Code::InvalidArgument => {
            let message = status.message();
            message.contains("authentication failed") || message.contains("user name is empty")
        }
        _ => false,
    }
}

/// Whether an error says that a lease does not exist (any more): a `NotFound`
/// status, or etcd-client's keep-alive finding a TTL of 0 on the first answer.
pub(crate) fn is_lease_gone(err: &etcd_client::Error) -> bool {
    is_not_found(err)
        || matches!(err, etcd_client::Error::LeaseKeepAliveError(m) if m == "lease not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn errors_are_classified() {
        let denied = map_error(
            "txn",
            status(Code::PermissionDenied, "etcdserver: permission denied"),
        );
        assert_eq!(denied.code(), ErrorCode::PermissionDenied);
        assert!(!denied.is_transient());
        let bad_password = map_error(
            "authenticate",
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
        );
        assert_eq!(bad_password.code(), ErrorCode::PermissionDenied);
        let expired_token = map_error(
            "txn",
            status(Code::Unauthenticated, "etcdserver: invalid auth token"),
        );
        // Refused even after re-authenticating: not worth retrying.
        assert_eq!(expired_token.code(), ErrorCode::Backend);
        assert!(!expired_token.is_transient());
        let old_auth = map_error(
            "txn",
            status(
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
        );
        assert!(old_auth.is_transient());
        let malformed = map_error(
            "txn",
            status(Code::InvalidArgument, "etcdserver: key is not provided"),
        );
        assert_eq!(malformed.code(), ErrorCode::Backend);
        assert!(!malformed.is_transient());
        let gone = map_error(
            "txn",
            status(Code::NotFound, "etcdserver: requested lease not found"),
        );
        assert_eq!(gone.code(), ErrorCode::Expired);
        assert!(is_lease_gone(&etcd_client::Error::LeaseKeepAliveError(
            "lease not found".into()
        )));
        assert!(!is_lease_gone(&etcd_client::Error::LeaseKeepAliveError(
            "channel closed".into()
        )));
    }
}
