//! The etcd key layout of distlock locks, read directly for what the public
//! API does not report (the waiters' owners, watch events).
//!
//! Lock `name` in namespace `ns` queues keys `{ns}/locks/{escaped name}/{lease
//! hex}`; `/` is escaped as `%2F` and `%` as `%25`; each key's value is JSON
//! metadata `{"owner":..,"created_ms":..}` (empty for etcdctl and
//! Go clients); the holder is the key with the lowest create revision, which
//! is also its fencing token. The layout itself is `distlock::layout`'s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, KeyValue, SortOrder, SortTarget};

use distlock::layout::{escape, unescape, Keyspace};

use crate::connect::etcd_failed;
use crate::exit::Failure;

/// `{ns}/locks/`: the prefix of every lock of the namespace.
pub fn root(namespace: &str) -> String {
    Keyspace::new(namespace).root().to_owned()
}

/// `{ns}/locks/{escaped name}/`: the queue of one lock.
pub fn queue(namespace: &str, name: &str) -> String {
    Keyspace::new(namespace).queue(name)
}

/// The key `distlock force-unlock` writes (on a short lease) just before it
/// removes holder `token` of lock `name`, so that `distlock watch` can tell a
/// force-unlock from a release: etcd's delete events look the same.
/// `{ns}/force-unlocks/{escaped name}/{token}`, outside the lock keyspace.
pub fn force_marker(namespace: &str, name: &str, token: i64) -> String {
    format!(
        "{}/force-unlocks/{}/{token}",
        namespace.trim_end_matches('/'),
        escape(name)
    )
}

/// How long a force-unlock marker lives.
pub const FORCE_MARKER_TTL_SECS: i64 = 300;

/// One contender key of a lock's queue.
#[derive(Debug, Clone)]
pub struct Contender {
    /// The lock's name.
    pub name: String,
    /// The etcd key.
    pub key: String,
    /// The key's create revision: its place in the queue, and the fencing
    /// token it holds the lock with.
    pub create_revision: i64,
    /// The lease the key lives on (from the key's last segment).
    pub lease: i64,
    /// The owner id from the key's metadata; empty without metadata.
    pub owner: String,
    /// When the contender enqueued, by its own clock, if it said.
    pub since: Option<SystemTime>,
}

impl Contender {
    /// The contender a key of namespace root `root` describes, if it is one.
    pub fn parse(root: &str, key: &[u8], create_revision: i64, value: &[u8]) -> Option<Self> {
        let key = std::str::from_utf8(key).ok()?;
        let (segment, lease) = key.strip_prefix(root)?.split_once('/')?;
        let meta: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
        Some(Contender {
            name: unescape(segment)?,
            key: key.to_owned(),
            create_revision,
            lease: i64::from_str_radix(lease, 16).unwrap_or(0),
            owner: meta["owner"].as_str().unwrap_or_default().to_owned(),
            since: meta["created_ms"]
                .as_u64()
                .filter(|&ms| ms > 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        })
    }

    /// The contender an etcd key-value describes.
    pub fn from_kv(root: &str, kv: &KeyValue) -> Option<Self> {
        Self::parse(root, kv.key(), kv.create_revision(), kv.value())
    }
}

/// The queue of lock `name`, oldest (the holder) first.
pub async fn read_queue(
    client: &mut Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Contender>, Failure> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let response = client
        .get(queue(namespace, name), Some(options))
        .await
        .map_err(|e| etcd_failed("reading the lock's queue", &e))?;
    let root = root(namespace);
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| Contender::from_kv(&root, kv))
        .filter(|c| c.name == name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_library() {
        assert_eq!(root("/shop/"), "/shop/locks/");
        assert_eq!(root(""), "/locks/");
        assert_eq!(queue("/ns", "a/b%"), "/ns/locks/a%2Fb%25/");
        for name in ["a", "a/b", "%", "100%/x/%25", "order:42"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn contenders_parse_with_and_without_metadata() {
        let meta = br#"{"owner":"h/1/2","created_ms":1000,"ttl_ms":30000}"#;
        let c = Contender::parse("/ns/locks/", b"/ns/locks/a%2Fb/694d", 7, meta).unwrap();
        assert_eq!(
            (c.name.as_str(), c.lease, c.owner.as_str()),
            ("a/b", 0x694d, "h/1/2")
        );
        assert_eq!(c.since, Some(UNIX_EPOCH + Duration::from_secs(1)));
        let bare = Contender::parse("/ns/locks/", b"/ns/locks/job/1f", 9, b"").unwrap();
        assert_eq!((bare.owner.as_str(), bare.since), ("", None));
        assert!(Contender::parse("/ns/locks/", b"/other/locks/job/1f", 9, b"").is_none());
    }
}
