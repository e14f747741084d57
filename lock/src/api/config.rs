//! [`EtcdConfig`]: how to reach etcd.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::backend::etcd::{map_error, DEFAULT_REQUEST_TIMEOUT};
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::MAX_DURATION;

/// How [`LockManager::connect`](crate::LockManager::connect) reaches etcd.
///
/// etcd 3.4 or newer is required; `connect` checks the server's version and
/// fails with a clear error on older servers.
///
/// **Authentication.** With [`credentials`](EtcdConfig::credentials) the
/// client authenticates at connect and again whenever etcd says the token
/// expired (etcd's `--auth-token-ttl`, 300 s by default), for every request,
/// lease keep-alive and watch. A request the user's roles do not allow fails
/// with [`ErrorCode::PermissionDenied`]; so does connecting with a wrong
/// password. The user needs read-write access to the manager's namespace
/// prefix (`etcdctl role grant-permission --prefix=true ROLE readwrite /ns/`).
///
/// **TLS** (feature `tls`): use `https://` endpoints and give the CA that
/// signed etcd's certificate with `ca_certificate`, plus a client
/// certificate with `client_identity` when etcd runs with
/// `--client-cert-auth`.
///
/// # Example
///
/// ```
/// use distlock::EtcdConfig;
/// use std::time::Duration;
///
/// let config = EtcdConfig::new(["http://127.0.0.1:2379"])
///     .dial_timeout(Duration::from_secs(2))
///     .credentials("app", "secret");
/// assert_eq!(config.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// How long to wait for a connection. Default 5 s.
    pub dial_timeout: Duration,
    /// How long one etcd request may take before it counts as a (transient)
    /// failure. Default 5 s. It also bounds a silent watch stream: while
    /// waiters are queued, a stream that said nothing for this long is asked
    /// for a progress notification and replaced if none comes within as long
    /// again, so a stalled stream delays a hand-off by at most about twice
    /// this plus a re-check.
    pub request_timeout: Duration,
    /// User name for etcd authentication.
    pub user: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// TLS settings (CA, client identity, server name); requires the `tls`
    /// feature. Usually set with [`ca_certificate`](EtcdConfig::ca_certificate)
    /// and [`client_identity`](EtcdConfig::client_identity).
    #[cfg(feature = "tls")]
    pub tls: Option<etcd_client::TlsOptions>,
}

impl EtcdConfig {
    /// A configuration for these endpoints with default settings.
    ///
    /// ```
    /// let config = distlock::EtcdConfig::new(["http://127.0.0.1:2379"]);
    /// assert_eq!(config.dial_timeout, std::time::Duration::from_secs(5));
    /// ```
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user: None,
            password: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Sets the connection timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = distlock::EtcdConfig::new(["http://127.0.0.1:2379"]).dial_timeout(Duration::from_secs(1));
    /// assert_eq!(c.dial_timeout, Duration::from_secs(1));
    /// ```
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = distlock::EtcdConfig::new(["http://127.0.0.1:2379"]).request_timeout(Duration::from_secs(2));
    /// assert_eq!(c.request_timeout, Duration::from_secs(2));
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets user name and password.
    ///
    /// ```
    /// let c = distlock::EtcdConfig::new(["http://127.0.0.1:2379"]).credentials("app", "pw");
    /// assert_eq!(c.user.as_deref(), Some("app"));
    /// ```
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Sets TLS options (replacing any set by
    /// [`ca_certificate`](EtcdConfig::ca_certificate) or
    /// [`client_identity`](EtcdConfig::client_identity)).
    ///
    /// ```
    /// use distlock::EtcdConfig;
    /// use etcd_client::{Certificate, TlsOptions};
    ///
    /// let ca = Certificate::from_pem(b"-----BEGIN CERTIFICATE-----\n...");
    /// let c = EtcdConfig::new(["https://etcd.internal:2379"])
    ///     .tls(TlsOptions::new().ca_certificate(ca).domain_name("etcd.internal"));
    /// assert!(c.tls.is_some());
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: etcd_client::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM text, as in etcd's
    /// `--trusted-ca-file`) for etcd's server certificate, instead of the
    /// system's roots.
    ///
    /// ```no_run
    /// use distlock::{EtcdConfig, LockManager};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = EtcdConfig::new(["https://10.0.0.1:2379"])
    ///     .ca_certificate(std::fs::read("/etc/etcd/ca.pem")?);
    /// let manager = LockManager::connect(config, "/aio").await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        let ca = etcd_client::Certificate::from_pem(pem);
        self.tls = Some(self.tls.unwrap_or_default().ca_certificate(ca));
        self
    }

    /// Authenticates this client to etcd with a certificate and its private
    /// key (both PEM), for etcd started with `--client-cert-auth`.
    ///
    /// ```no_run
    /// use distlock::{EtcdConfig, LockManager};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = EtcdConfig::new(["https://10.0.0.1:2379"])
    ///     .ca_certificate(std::fs::read("/etc/etcd/ca.pem")?)
    ///     .client_identity(
    ///         std::fs::read("/etc/etcd/client.pem")?,
    ///         std::fs::read("/etc/etcd/client-key.pem")?,
    ///     );
    /// let manager = LockManager::connect(config, "/aio").await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn client_identity(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        let identity = etcd_client::Identity::from_pem(cert_pem, key_pem);
        self.tls = Some(self.tls.unwrap_or_default().identity(identity));
        self
    }

    /// Connects, with `require_leader` so that requests through a member that
    /// lost its cluster fail instead of being served stale, and checks that
    /// the server is recent enough.
    pub(crate) async fn connect(self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                "no etcd endpoints given",
            ));
        }
        for (what, timeout) in [
            ("dial_timeout", self.dial_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if timeout.is_zero() || timeout > MAX_DURATION {
                return Err(LockError::new(
                    ErrorCode::InvalidOptions,
                    format!("{what} must be longer than zero and at most a year, got {timeout:?}"),
                ));
            }
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        match (self.user, self.password) {
            (Some(user), Some(password)) => {
                // Tokens expire (`--auth-token-ttl`): re-authenticate when etcd
                // says so. The watch hub does the same for its stream.
                options = options
                    .with_user(user, password)
                    .with_auto_token_refresh(true)
            }
            (None, None) => {}
            _ => {
                return Err(LockError::new(
                    ErrorCode::InvalidOptions,
                    "etcd user and password must be given together",
                ))
            }
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls {
            options = options.with_tls(tls);
        }
        let endpoints = self.endpoints;
        let connecting = Client::connect(&endpoints, Some(options));
        let client = match tokio::time::timeout(
            self.dial_timeout + self.request_timeout,
            connecting,
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                let mapped = map_error("connect", err);
                return Err(LockError::with_source(
                    mapped.code(),
                    format!("cannot connect to etcd at {endpoints:?}"),
                    mapped,
                ));
            }
            Err(elapsed) => {
                return Err(LockError::with_source(
                    ErrorCode::Backend,
                    format!("connecting to etcd at {endpoints:?} timed out"),
                    elapsed,
                ))
            }
        };
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timeouts that cannot be meant (or would overflow a deadline) are
    /// refused before connecting, with `InvalidOptions`.
    #[tokio::test]
    async fn absurd_timeouts_are_refused() {
        let endpoints = ["http://127.0.0.1:9"];
        for config in [
            EtcdConfig::new(endpoints).request_timeout(Duration::MAX),
            EtcdConfig::new(endpoints).request_timeout(Duration::ZERO),
            EtcdConfig::new(endpoints).dial_timeout(MAX_DURATION + Duration::from_secs(1)),
        ] {
            let Err(err) = config.connect().await else {
                panic!("connected with an absurd timeout");
            };
            assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
        }
    }
}
