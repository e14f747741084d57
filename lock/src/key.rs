//! Lock names and the etcd key layout.
//!
//! Lock `name` in namespace `ns` keeps its queue under
//! `{ns}/locks/{escaped name}/`, one key per contender:
//! `{ns}/locks/{escaped name}/{lease id in hex}`. `/` and `%` in names are
//! escaped (`%2F`, `%25`) so that the queue of lock `a` (prefix `.../a/`) never
//! contains the keys of lock `a/b`. For names without those two characters this
//! is exactly the layout of etcd's `concurrency.Mutex` and of
//! `etcdctl lock {ns}/locks/{name}`, so Go services and etcdctl contend on the
//! same locks.

use crate::error::{ErrorCode, LockError, Result};

/// The longest accepted lock name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 1024;

/// The name of the queue under `root` that `key` is in: the escaped segment
/// after `root`, unescaped.
pub(crate) fn name_under(root: &str, key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(root.as_bytes())?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    unescape(std::str::from_utf8(&rest[..slash]).ok()?)
}

/// A key for logs and [`LockInfo`](crate::LockInfo): as text, with bytes
/// that are not UTF-8 shown as U+FFFD.
pub(crate) fn shown(key: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(key)
}

/// Checks the name of a lock, semaphore, read-write lock or election:
/// non-empty, at most 1 KiB, no NUL. Any other UTF-8 is fine.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |msg: String| Err(LockError::new(ErrorCode::InvalidKey, msg));
    if name.is_empty() {
        return invalid("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return invalid(format!(
            "the name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if name.contains('\0') {
        return invalid("the name contains a NUL character".into());
    }
    Ok(())
}

/// Escapes `%` and `/` so a name is one path segment.
///
/// ```
/// assert_eq!(distlock::layout::escape("a/b%c"), "a%2Fb%25c");
/// ```
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; `None` for a segment that [`escape`] cannot produce.
///
/// ```
/// assert_eq!(distlock::layout::unescape("a%2Fb%25c").as_deref(), Some("a/b%c"));
/// assert_eq!(distlock::layout::unescape("a%2"), None);
/// ```
pub fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The key layout of one namespace, for tools that read distlock's keys
/// directly (the `distlock` command does).
///
/// ```
/// use distlock::layout::Keyspace;
/// let keys = Keyspace::new("/shop/");
/// assert_eq!(keys.root(), "/shop/locks/");
/// assert_eq!(keys.queue("order/42"), "/shop/locks/order%2F42/");
/// assert_eq!(keys.name_of("/shop/locks/order%2F42/694d0001").as_deref(), Some("order/42"));
/// ```
#[derive(Debug, Clone)]
pub struct Keyspace {
    /// `{ns}/`
    namespace: String,
    /// `{ns}/locks/`
    root: String,
}

impl Keyspace {
    /// The keyspace of namespace `ns`; trailing slashes are ignored, so `/aio`
    /// and `/aio/` are the same namespace.
    ///
    /// ```
    /// use distlock::layout::Keyspace;
    /// assert_eq!(Keyspace::new("/aio").root(), Keyspace::new("/aio/").root());
    /// ```
    pub fn new(ns: &str) -> Self {
        let namespace = format!("{}/", ns.trim_end_matches('/'));
        Keyspace {
            root: format!("{namespace}locks/"),
            namespace,
        }
    }

    /// `{ns}/`: the prefix of every key of the namespace (locks, semaphores).
    ///
    /// ```
    /// assert_eq!(distlock::layout::Keyspace::new("/aio").namespace(), "/aio/");
    /// ```
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}/semaphores/`: the prefix of every semaphore of the namespace.
    ///
    /// ```
    /// assert_eq!(distlock::layout::Keyspace::new("/aio").semaphore_root(), "/aio/semaphores/");
    /// ```
    pub fn semaphore_root(&self) -> String {
        format!("{}semaphores/", self.namespace)
    }

    /// `{ns}/elections/`: the prefix of every election of the namespace.
    ///
    /// ```
    /// assert_eq!(distlock::layout::Keyspace::new("/aio").election_root(), "/aio/elections/");
    /// ```
    pub fn election_root(&self) -> String {
        format!("{}elections/", self.namespace)
    }

    /// `{ns}/elections/{escaped name}/`: the candidates of one election, each
    /// `{lease hex}` holding exactly its proclaimed value — etcd's own
    /// layout (`concurrency.Election`, `etcdctl elect {ns}/elections/{name}`).
    ///
    /// ```
    /// let keys = distlock::layout::Keyspace::new("/aio");
    /// assert_eq!(keys.election("scheduler"), "/aio/elections/scheduler/");
    /// ```
    pub fn election(&self, name: &str) -> String {
        format!("{}{}/", self.election_root(), escape(name))
    }

    /// `{ns}/semaphores/{escaped name}/`: the queue of one semaphore, a key
    /// space of its own (a semaphore and a lock of one name are unrelated).
    ///
    /// ```
    /// let keys = distlock::layout::Keyspace::new("/aio");
    /// assert_eq!(keys.semaphore("crawl:a/b"), "/aio/semaphores/crawl:a%2Fb/");
    /// ```
    pub fn semaphore(&self, name: &str) -> String {
        format!("{}{}/", self.semaphore_root(), escape(name))
    }

    /// `{ns}/locks/`: the prefix of every lock of the namespace.
    ///
    /// ```
    /// assert_eq!(distlock::layout::Keyspace::new("/aio").root(), "/aio/locks/");
    /// ```
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `{ns}/locks/{escaped name}/`: the queue of one lock.
    ///
    /// ```
    /// assert_eq!(distlock::layout::Keyspace::new("/aio").queue("a"), "/aio/locks/a/");
    /// ```
    pub fn queue(&self, name: &str) -> String {
        format!("{}{}/", self.root, escape(name))
    }

    /// `{queue}{lease hex}`: an exclusive entry's key (a mutex, a writer) —
    /// one per (name, lease) per manager, as etcdctl's and Go's.
    pub(crate) fn contender(queue: &str, lease: i64) -> String {
        format!("{queue}{lease:x}")
    }

    /// `{queue}r/{lease hex}.{n hex}`: a reader's (shared) entry, unique to
    /// one acquisition. It sorts after every exclusive entry's key, so a
    /// reader finds the exclusive entries ahead of it with one range read
    /// ([`exclusive_range`](Self::exclusive_range)); etcdctl and Go see it
    /// as a contender like any other, so their mutexes exclude readers.
    pub(crate) fn reader(queue: &str, lease: i64, n: u64) -> String {
        format!("{queue}r/{lease:x}.{n:x}")
    }

    /// Whether `key` is a reader's entry of `queue` (see
    /// [`reader`](Self::reader)).
    pub(crate) fn is_reader(queue: &str, key: &str) -> bool {
        key.strip_prefix(queue)
            .is_some_and(|rest| rest.starts_with("r/"))
    }

    /// `{semaphore queue}{lease hex}.{n hex}`: one permit's key, unique to one
    /// acquisition.
    pub(crate) fn permit(queue: &str, lease: i64, n: u64) -> String {
        format!("{queue}{lease:x}.{n:x}")
    }

    /// The keys of the exclusive entries of `queue`: `[{queue}0, {queue}g)`,
    /// which holds every lowercase-hex lease id and no reader's key.
    pub(crate) fn exclusive_range(queue: &str) -> (String, String) {
        (format!("{queue}0"), format!("{queue}g"))
    }

    /// The lease of a contender key in `queue`, if it is one.
    pub(crate) fn lease_of(queue: &str, key: &[u8]) -> Option<i64> {
        let hex = key.strip_prefix(queue.as_bytes())?;
        i64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    }

    /// The lock name a contender key belongs to, if the key is in this keyspace
    /// and well formed.
    ///
    /// ```
    /// let keys = distlock::layout::Keyspace::new("/aio");
    /// assert_eq!(keys.name_of("/aio/locks/a/1f").as_deref(), Some("a"));
    /// assert_eq!(keys.name_of("/other/locks/a/1f"), None);
    /// ```
    pub fn name_of(&self, key: &str) -> Option<String> {
        self.name_of_key(key.as_bytes())
    }

    /// [`name_of`](Self::name_of) for a key as etcd stores it, in bytes:
    /// another client may put a key that is not UTF-8 under a queue.
    pub(crate) fn name_of_key(&self, key: &[u8]) -> Option<String> {
        name_under(&self.root, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contender_keys_name_their_lease() {
        let queue = Keyspace::new("/ns").queue("a/b");
        let key = Keyspace::contender(&queue, 0x694d_0001);
        assert_eq!(
            Keyspace::lease_of(&queue, key.as_bytes()),
            Some(0x694d_0001)
        );
        assert_eq!(Keyspace::lease_of(&queue, b"/ns/locks/other/1"), None);
        assert_eq!(
            Keyspace::lease_of(&queue, format!("{queue}zz").as_bytes()),
            None
        );
        let foreign = [queue.as_bytes(), b"\xff\xfe"].concat();
        assert_eq!(Keyspace::lease_of(&queue, &foreign), None);
        let ks = Keyspace::new("/ns");
        assert_eq!(ks.name_of_key(&foreign).as_deref(), Some("a/b"));
        assert_eq!(ks.name_of_key(b"/ns/locks/\xff/1"), None);
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_name("").unwrap_err().code(), ErrorCode::InvalidKey);
        assert_eq!(
            validate_name("a\0b").unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1))
                .unwrap_err()
                .code(),
            ErrorCode::InvalidKey
        );
        for ok in [
            "a",
            "a/b",
            "%",
            "order:42",
            "ünïcode ✓",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn escaping_round_trips_and_keeps_plain_names() {
        for name in ["a", "a/b", "a%2Fb", "%", "/", "100%/x/%25", "order:42"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
            assert!(!escape(name).contains('/'));
        }
        assert_eq!(escape("order:42"), "order:42");
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn readers_sort_after_every_exclusive_entry() {
        let queue = Keyspace::new("/ns").queue("doc");
        let (start, end) = Keyspace::exclusive_range(&queue);
        for exclusive in [
            Keyspace::contender(&queue, 0),
            Keyspace::contender(&queue, i64::MAX),
            Keyspace::contender(&queue, 0x694d_beef),
        ] {
            assert!(start <= exclusive && exclusive < end, "{exclusive}");
        }
        let reader = Keyspace::reader(&queue, 0x694d_beef, 7);
        assert!(reader >= end && reader.starts_with(&queue), "{reader}");
        assert_eq!(Keyspace::lease_of(&queue, reader.as_bytes()), None);
        let ks = Keyspace::new("/ns");
        assert_eq!(ks.name_of(&reader).as_deref(), Some("doc"));
        let permit = Keyspace::permit(&ks.semaphore("s"), 0x10, 2);
        assert_eq!(permit, "/ns/semaphores/s/10.2");
    }

    #[test]
    fn lock_a_never_sees_keys_of_lock_a_slash_b() {
        let ks = Keyspace::new("/ns/");
        let a = ks.queue("a");
        let ab_key = Keyspace::contender(&ks.queue("a/b"), 0x1234);
        assert!(!ab_key.starts_with(&a));
        assert_eq!(a, "/ns/locks/a/");
        assert_eq!(Keyspace::contender(&a, 0xabc), "/ns/locks/a/abc");
        assert_eq!(ks.name_of(&ab_key).as_deref(), Some("a/b"));
        assert_eq!(ks.name_of("/other/locks/a/1"), None);
    }
}
