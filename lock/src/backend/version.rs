//! Which etcd servers distlock works with, checked at connect.

use std::time::Duration;

use etcd_client::Client;

use super::errors::map_error;
use crate::error::{LockError, Result};

/// The oldest etcd version distlock works with: watch ids chosen by the
/// client (which the shared watch stream routes by) came with etcd 3.4.
pub(crate) const MIN_ETCD_VERSION: (u32, u32) = (3, 4);

/// `(major, minor)` of a version string such as `3.4.23` or `3.5.1-rc.0`.
pub(crate) fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Fails unless the etcd server `client` talks to is at least
/// [`MIN_ETCD_VERSION`]: older servers ignore the watch ids distlock picks,
/// so its waiters would never hear of a release.
pub(crate) async fn check_server_version(client: &Client, timeout: Duration) -> Result<()> {
    let status = match tokio::time::timeout(timeout, client.clone().status()).await {
        Ok(result) => result.map_err(|e| map_error("status", e))?,
        Err(elapsed) => {
            return Err(LockError::backend(
                format!("etcd status got no answer within {timeout:?}"),
                elapsed,
                true,
            ))
        }
    };
    let version = status.version();
    match parse_version(version) {
        Some(v) if v >= MIN_ETCD_VERSION => Ok(()),
        _ => Err(LockError::backend_for_good(format!(
            "etcd {version} is not supported: distlock needs etcd {}.{} or newer \
                 (its shared watch stream relies on watch ids chosen by the client)",
            MIN_ETCD_VERSION.0, MIN_ETCD_VERSION.1
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DEFAULT_REQUEST_TIMEOUT;
    use distlock_tests::Etcd;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("3.4.23"), Some((3, 4)));
        assert_eq!(parse_version("3.5.1"), Some((3, 5)));
        assert_eq!(parse_version("v3.10.0-rc.1"), Some((3, 10)));
        assert_eq!(parse_version("3.3.27"), Some((3, 3)));
        assert!(parse_version("3.3.27").unwrap() < MIN_ETCD_VERSION);
        assert!(parse_version("3.10.0").unwrap() > MIN_ETCD_VERSION);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("garbage"), None);
    }

    #[tokio::test]
    async fn the_test_server_is_recent_enough() {
        let etcd = Etcd::start().await;
        let client = Client::connect(etcd.endpoints(), None).await.unwrap();
        check_server_version(&client, DEFAULT_REQUEST_TIMEOUT)
            .await
            .unwrap();
    }
}
