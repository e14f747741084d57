//! Connecting to etcd from the global flags: a [`LockManager`] for what the
//! public API offers, and a raw `etcd_client::Client` for what it does not
//! (waiters' owners, watch events).

use std::time::Duration;

use distlock::{EtcdConfig, LockManager};
use etcd_client::{Client, ConnectOptions};

use crate::args::Global;
use crate::exit::{self, chain, Failure};

/// The distlock configuration the flags describe.
pub fn config(global: &Global) -> Result<EtcdConfig, Failure> {
    let mut config = EtcdConfig::new(global.endpoints.iter().map(|e| e.trim().to_owned()))
        .dial_timeout(global.timeout)
        .request_timeout(global.timeout);
    if let Some((user, password)) = credentials(global)? {
        config = config.credentials(user, password);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = tls::options(global)? {
        config = config.tls(tls);
    }
    #[cfg(not(feature = "tls"))]
    if global.cacert.is_some() || global.cert.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "this distlock was built without TLS support; \
             install it with `cargo install distlock-cli --features tls`",
        ));
    }
    Ok(config)
}

fn credentials(global: &Global) -> Result<Option<(String, String)>, Failure> {
    match (&global.user, &global.password) {
        (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
        (None, None) => Ok(None),
        _ => Err(Failure::new(
            exit::USAGE,
            "--user and --password must be given together",
        )),
    }
}

/// A lock manager for the flags' etcd and namespace. Unreachable etcd is exit
/// status 69; the whole attempt is bounded by a few `--timeout`s.
pub async fn manager(global: &Global) -> Result<LockManager, Failure> {
    let config = config(global)?;
    let endpoints = global.endpoints.join(",");
    let connecting = LockManager::connect(config, &global.namespace);
    match tokio::time::timeout(bound(global.timeout), connecting).await {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(err)) => Err(Failure::lock(
            &format!("cannot use etcd at {endpoints}"),
            &err,
        )),
        Err(_) => Err(unreachable(&endpoints, "timed out")),
    }
}

/// A raw etcd client with the same settings as [`manager`]'s (credentials,
/// TLS, timeouts, `require_leader`).
pub async fn client(global: &Global) -> Result<Client, Failure> {
    let config = config(global)?;
    let endpoints = global.endpoints.join(",");
    let mut options = ConnectOptions::new()
        .with_connect_timeout(global.timeout)
        .with_timeout(global.timeout)
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (config.user, config.password) {
        options = options.with_user(user, password);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = config.tls {
        options = options.with_tls(tls);
    }
    let connecting = Client::connect(&config.endpoints, Some(options));
    match tokio::time::timeout(bound(global.timeout), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(unreachable(&endpoints, &chain(&err))),
        Err(_) => Err(unreachable(&endpoints, "timed out")),
    }
}

/// A failure for etcd that cannot be reached.
pub fn unreachable(endpoints: &str, why: &str) -> Failure {
    Failure::new(
        exit::UNAVAILABLE,
        format!("cannot reach etcd at {endpoints}: {why}"),
    )
}

/// An etcd request that failed: etcd is unavailable (exit 69).
pub fn etcd_failed(what: &str, err: &etcd_client::Error) -> Failure {
    Failure::new(exit::UNAVAILABLE, format!("{what}: {}", chain(err)))
}

/// The longest a connection attempt may take: dial, first request, slack.
fn bound(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(1)
}

/// TLS from `--cacert`, `--cert`, `--key`. Kept to this one function so that
/// it follows `EtcdConfig`'s TLS settings when those change.
#[cfg(feature = "tls")]
mod tls {
    use etcd_client::{Certificate, Identity, TlsOptions};

    use super::{exit, Failure, Global};

    pub fn options(global: &Global) -> Result<Option<TlsOptions>, Failure> {
        if global.cacert.is_none() && global.cert.is_none() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                Failure::new(exit::USAGE, format!("cannot read {}: {e}", path.display()))
            })
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &global.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&global.cert, &global.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(tls))
    }
}
