//! [`RejectionKind`]: why a layer ([`LockLayer`](crate::LockLayer),
//! [`LeaderOnly`](crate::LeaderOnly)) answered a request itself, and the
//! default answer for each reason.

use http::StatusCode;

use crate::GrpcCode;

/// Why the layer answered a request itself instead of running it (or
/// instead of sending the response the service produced).
///
/// New kinds may be added, so matches need a `_` arm.
///
/// # Default answers
///
/// Each kind has a default HTTP status and gRPC code, which
/// [`LockLayer::status_for`](crate::LockLayer::status_for) and
/// [`LockLayer::grpc_code_for`](crate::LockLayer::grpc_code_for) override:
///
/// | kind | HTTP | gRPC | retry advice |
/// |---|---|---|---|
/// | [`Timeout`](Self::Timeout) (busy past `wait`) | 429 | `ABORTED` | `Retry-After`, `grpc-retry-pushback-ms` |
/// | [`QueueFull`](Self::QueueFull) (`max_waiters`) | 429 | `RESOURCE_EXHAUSTED` | `Retry-After`, `grpc-retry-pushback-ms` |
/// | [`Unavailable`](Self::Unavailable) (etcd outage, closed manager) | 503 | `UNAVAILABLE` | `Retry-After`, `grpc-retry-pushback-ms` |
/// | [`Lost`](Self::Lost), [`MaxHold`](Self::MaxHold) | 503 | `ABORTED` | none; gRPC: `grpc-retry-pushback-ms: -1` (do not retry) |
/// | [`Misconfigured`](Self::Misconfigured) | 500 | `INTERNAL` | none |
/// | [`InvalidKey`](Self::InvalidKey), [`MissingKey`](Self::MissingKey) | 400 | `INVALID_ARGUMENT` | none |
/// | [`NotLeader`](Self::NotLeader) ([`LeaderOnly`](crate::LeaderOnly) on a follower) | 421, `x-distlock-leader: <leader's value>` | `UNAVAILABLE`, `x-distlock-leader` in its metadata | none (send it to the leader) |
/// | [`NoLeader`](Self::NoLeader) ([`LeaderOnly`](crate::LeaderOnly), nobody leads) | 503 | `UNAVAILABLE` | `Retry-After`, `grpc-retry-pushback-ms` |
///
/// Why:
///
/// - **A busy key is not a server failure.** A key held by another request
///   is the layer working as configured, so it must not look like a broken
///   server: tower-http's `TraceLayer` logs every 5xx at `ERROR`, and Envoy
///   and Istio outlier detection (`consecutive_5xx`, `consecutive_gateway_failure`)
///   eject a healthy pod because one order is hot. So `Timeout` and
///   `QueueFull` are a 4xx.
/// - **429, not 409, for both.** The request did not run, so sending it
///   again later is safe; 429 says exactly "too many requests for this now,
///   come back after `Retry-After`" (RFC 6585 §4 defines `Retry-After` for
///   it), and generic retry policies treat it as retryable (urllib3 honours
///   `Retry-After` on 413, 429 and 503; .NET's standard resilience handler
///   retries 408, 429 and 5xx). 409 says "your request
///   conflicts with the resource's state": clients resolve it by re-reading
///   and merging (an ETag mismatch), not by waiting, and no standard gives it
///   a `Retry-After`. One status for both kinds also gives clients one rule.
/// - **gRPC: `ABORTED` for a wait that ran out, `RESOURCE_EXHAUSTED` for a
///   full queue.** `Timeout` is a concurrency conflict on one resource (held
///   by another request, server or job the whole wait), which is what
///   `ABORTED` names (Spanner and Firestore answer lock contention with
///   it); no resource of this server is exhausted. `QueueFull` is this
///   server shedding load by a limit (its per-key waiter queue), which is what
///   `RESOURCE_EXHAUSTED` names. Neither is `UNAVAILABLE`: that code says the
///   *server* cannot serve, and proxies count it as a 5xx (Envoy maps
///   `UNAVAILABLE` to 503, `ABORTED` to 409, `RESOURCE_EXHAUSTED` to 429).
///   Both carry `grpc-retry-pushback-ms`, so a retry policy that lists these
///   codes waits as long as `Retry-After` says.
/// - **An outage is 503 / `UNAVAILABLE`** with `Retry-After`: the lock
///   service really is unavailable, nothing ran, and a later retry may work.
/// - **A lost lock is not transparently retryable.** `Lost` and `MaxHold`
///   cancel a handler that had started: its side effects may be partly done.
///   gRPC `UNAVAILABLE` would be re-sent by the usual retry policies; `ABORTED`
///   asks the client to retry at a higher level (re-read, then decide), and
///   the pushback of -1 asks a retry policy not to re-send. Over HTTP it is a
///   503 without `Retry-After`: a server-side failure, with no advice to
///   simply send it again.
/// - **A configuration fault is 500 / `INTERNAL`**: etcd refused the
///   credentials' access to the key ([`ErrorCode::PermissionDenied`]), or the
///   lock options cannot work ([`ErrorCode::InvalidOptions`],
///   [`ErrorCode::AlreadyHeld`] from non-reentrant options). Retrying does not
///   help; the operator must act. It is logged at `error` level, rate-limited
///   per layer (see [`lock`](crate::lock#logging)).
/// - **A bad or missing key is the client's fault**: 400 / `INVALID_ARGUMENT`.
/// - **A follower is not broken: 421 Misdirected Request** (RFC 9110
///   §15.5.20: this server cannot produce an authoritative response; the
///   client may send the request elsewhere), with the leader's proclaimed
///   value in [`x-distlock-leader`](crate::LEADER_HEADER) so the client
///   knows where. A 4xx keeps `TraceLayer` and outlier detection quiet about
///   healthy followers; no `Retry-After`, as sending it here again does not
///   help. gRPC has no such code: `UNAVAILABLE` (the value in the metadata),
///   which clients behind a load balancer retry on another server. Proxies
///   count `UNAVAILABLE` as a 503 (Envoy's outlier detection too): where that
///   matters, answer with another code
///   (`grpc_code_for(RejectionKind::NotLeader, GrpcCode::FailedPrecondition)`).
/// - **No leader is an outage of the election**: 503 / `UNAVAILABLE` with
///   `Retry-After`: nothing ran, and a leader is normally elected within a
///   TTL.
///
/// [`ErrorCode::PermissionDenied`]: distlock::ErrorCode::PermissionDenied
/// [`ErrorCode::InvalidOptions`]: distlock::ErrorCode::InvalidOptions
/// [`ErrorCode::AlreadyHeld`]: distlock::ErrorCode::AlreadyHeld
///
/// # Example
///
/// ```
/// use distlock_tower::{GrpcCode, RejectionKind};
///
/// assert_eq!(RejectionKind::Timeout.default_status(), 429);
/// assert_eq!(RejectionKind::Timeout.default_grpc_code(), GrpcCode::Aborted);
///
/// fn page_someone(kind: RejectionKind) -> bool {
///     match kind {
///         RejectionKind::Misconfigured | RejectionKind::Unavailable => true,
///         _ => false,
///     }
/// }
/// assert!(!page_someone(RejectionKind::QueueFull));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The lock was not acquired within the layer's
    /// [`wait`](crate::LockLayer::wait): another owner held the key.
    /// Default: 429 + `Retry-After`; gRPC `ABORTED` + `grpc-retry-pushback-ms`.
    Timeout,
    /// The extracted key is not a valid lock name (empty, longer than 1 KiB,
    /// or containing NUL). Default: 400; gRPC `INVALID_ARGUMENT`.
    InvalidKey,
    /// The lock backend failed (the wait ended during an etcd outage), or the
    /// manager was closed. Default: 503 + `Retry-After`; gRPC `UNAVAILABLE` +
    /// `grpc-retry-pushback-ms`.
    Unavailable,
    /// The lock was lost (lease expired, force-unlocked) before the service
    /// produced its response; the service's future was dropped.
    /// Default: 503; gRPC `ABORTED` (a stream cut off mid-way ends with it too).
    Lost,
    /// The request held its key for the layer's
    /// [`max_hold`](crate::LockLayer::max_hold) before the service produced
    /// its response; the service's future was dropped.
    /// Default: 503; gRPC `ABORTED` (a stream cut off mid-way ends with it too).
    MaxHold,
    /// [`max_waiters`](crate::LockLayer::max_waiters) requests already wait
    /// for the key on this server: the request was shed without waiting.
    /// Default: 429 + `Retry-After`; gRPC `RESOURCE_EXHAUSTED` +
    /// `grpc-retry-pushback-ms`.
    QueueFull,
    /// The extractor found no key and the layer
    /// [requires one](crate::LockLayer::require_key).
    /// Default: 400; gRPC `INVALID_ARGUMENT`.
    MissingKey,
    /// The layer cannot lock as configured: etcd denied the credentials
    /// access to the key (`PermissionDenied`), or the lock options are
    /// invalid or forbid the nesting in which the request runs
    /// (`InvalidOptions`, `AlreadyHeld`). Retrying does not help.
    /// Default: 500; gRPC `INTERNAL`; logged at `error` level.
    Misconfigured,
    /// [`LeaderOnly`](crate::LeaderOnly): this server does not lead the
    /// election and knows who does; nothing was forwarded.
    /// [`Rejection::leader`](crate::Rejection::leader) is the leader's
    /// proclaimed value. Default: 421 with the value in `x-distlock-leader`;
    /// gRPC `UNAVAILABLE` with it in the metadata. No retry advice.
    NotLeader,
    /// [`LeaderOnly`](crate::LeaderOnly): nobody leads the election as this
    /// server sees it (the leader just changed or resigned, this server's
    /// own leadership was lost and its key not yet gone, or the leader is
    /// not known yet); nothing was forwarded. Default: 503 + `Retry-After`;
    /// gRPC `UNAVAILABLE` + `grpc-retry-pushback-ms`.
    NoLeader,
}

impl RejectionKind {
    /// The HTTP status the layer answers this kind with, unless
    /// [`LockLayer::status_for`](crate::LockLayer::status_for) says
    /// otherwise (see the [table](RejectionKind#default-answers)).
    ///
    /// ```
    /// use distlock_tower::RejectionKind;
    /// assert_eq!(RejectionKind::QueueFull.default_status(), 429);
    /// assert_eq!(RejectionKind::Unavailable.default_status(), 503);
    /// assert_eq!(RejectionKind::Misconfigured.default_status(), 500);
    /// ```
    pub fn default_status(self) -> StatusCode {
        match self {
            RejectionKind::Timeout | RejectionKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            RejectionKind::Unavailable
            | RejectionKind::Lost
            | RejectionKind::MaxHold
            | RejectionKind::NoLeader => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::NotLeader => StatusCode::MISDIRECTED_REQUEST,
            RejectionKind::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::InvalidKey | RejectionKind::MissingKey => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC code the layer answers this kind with, unless
    /// [`LockLayer::grpc_code_for`](crate::LockLayer::grpc_code_for) says
    /// otherwise (see the [table](RejectionKind#default-answers)).
    ///
    /// ```
    /// use distlock_tower::{GrpcCode, RejectionKind};
    /// assert_eq!(RejectionKind::QueueFull.default_grpc_code(), GrpcCode::ResourceExhausted);
    /// assert_eq!(RejectionKind::Lost.default_grpc_code(), GrpcCode::Aborted);
    /// ```
    pub fn default_grpc_code(self) -> GrpcCode {
        match self {
            RejectionKind::Timeout | RejectionKind::Lost | RejectionKind::MaxHold => {
                GrpcCode::Aborted
            }
            RejectionKind::QueueFull => GrpcCode::ResourceExhausted,
            RejectionKind::Unavailable | RejectionKind::NotLeader | RejectionKind::NoLeader => {
                GrpcCode::Unavailable
            }
            RejectionKind::Misconfigured => GrpcCode::Internal,
            RejectionKind::InvalidKey | RejectionKind::MissingKey => GrpcCode::InvalidArgument,
        }
    }

    /// Whether the request did not run and may succeed if sent again later:
    /// its answer then carries `Retry-After` (HTTP) or
    /// `grpc-retry-pushback-ms` (gRPC). True for `Timeout`, `QueueFull`,
    /// `Unavailable` and `NoLeader`; not for `NotLeader`, which should go to
    /// the leader instead.
    ///
    /// ```
    /// use distlock_tower::RejectionKind;
    /// assert!(RejectionKind::Timeout.advises_retry());
    /// assert!(!RejectionKind::Lost.advises_retry()); // it may have done part of its work
    /// assert!(!RejectionKind::Misconfigured.advises_retry());
    /// ```
    pub fn advises_retry(self) -> bool {
        matches!(
            self,
            RejectionKind::Timeout
                | RejectionKind::QueueFull
                | RejectionKind::Unavailable
                | RejectionKind::NoLeader
        )
    }

    /// Whether the request was cancelled after its handler had started, so
    /// that part of its work may be done: `Lost` and `MaxHold`. A gRPC
    /// answer then asks retry policies not to re-send it
    /// (`grpc-retry-pushback-ms: -1`).
    pub(crate) fn interrupted(self) -> bool {
        matches!(self, RejectionKind::Lost | RejectionKind::MaxHold)
    }

    /// A short message for the client; it names neither the key nor
    /// backend details.
    pub(crate) fn message(self) -> &'static str {
        match self {
            RejectionKind::Timeout => {
                "resource busy: its lock was not acquired in time; retry later"
            }
            RejectionKind::InvalidKey => "invalid lock key for this request",
            RejectionKind::Lost => {
                "the resource's lock was lost while handling the request; \
                 it may have been partly carried out"
            }
            RejectionKind::Unavailable => "the lock service is unavailable; retry later",
            RejectionKind::MaxHold => {
                "the request held the resource's lock for as long as it may; \
                 it may have been partly carried out"
            }
            RejectionKind::QueueFull => "resource busy: too many requests wait for it; retry later",
            RejectionKind::MissingKey => "this request must name the resource it locks",
            RejectionKind::Misconfigured => "the server cannot lock the resource as configured",
            RejectionKind::NotLeader => "this server does not lead; send the request to the leader",
            RejectionKind::NoLeader => "no server leads right now; retry later",
        }
    }

    /// The variant's name (for logs; the enum is not `Ord`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            RejectionKind::Timeout => "Timeout",
            RejectionKind::InvalidKey => "InvalidKey",
            RejectionKind::Unavailable => "Unavailable",
            RejectionKind::Lost => "Lost",
            RejectionKind::MaxHold => "MaxHold",
            RejectionKind::QueueFull => "QueueFull",
            RejectionKind::MissingKey => "MissingKey",
            RejectionKind::Misconfigured => "Misconfigured",
            RejectionKind::NotLeader => "NotLeader",
            RejectionKind::NoLeader => "NoLeader",
        }
    }
}
