//! [`EtcdConfig`]: how to reach etcd.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::backend::etcd::DEFAULT_REQUEST_TIMEOUT;
use crate::error::{ErrorCode, LockError, Result};

/// How [`LockManager::connect`](crate::LockManager::connect) reaches etcd.
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
    /// failure. Default 5 s.
    pub request_timeout: Duration,
    /// User name for etcd authentication.
    pub user: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// TLS settings (CA, client identity); requires the `tls` feature.
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

    /// Sets TLS options.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: etcd_client::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects, with `require_leader` so that requests through a member that
    /// lost its cluster fail instead of being served stale.
    pub(crate) async fn connect(self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                "no etcd endpoints given",
            ));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        match (self.user, self.password) {
            (Some(user), Some(password)) => options = options.with_user(user, password),
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
        let connecting = Client::connect(&self.endpoints, Some(options));
        match tokio::time::timeout(self.dial_timeout + self.request_timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(LockError::with_source(
                ErrorCode::Backend,
                format!("cannot connect to etcd at {:?}", self.endpoints),
                err,
            )),
            Err(elapsed) => Err(LockError::with_source(
                ErrorCode::Backend,
                format!("connecting to etcd at {:?} timed out", self.endpoints),
                elapsed,
            )),
        }
    }
}
