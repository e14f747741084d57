//! The etcd key layout of distlock's queues, read directly for what the
//! public API does not report (the waiters' owners, every reader, lease
//! expiries of holders, watch events, the elections of a namespace) and for
//! removing one holder among several (`force-unlock TOKEN`).
//!
//! Lock `name` in namespace `ns` queues its entries under `{ns}/locks/{escaped
//! name}/`: an exclusive entry (a lock, a write lock; etcdctl's and Go's
//! mutex keys too) is `{lease hex}`, a reader is `r/{lease hex}.{n hex}`.
//! Semaphore `name` queues its permits under `{ns}/semaphores/{escaped
//! name}/{lease hex}.{n hex}`, a key space of its own. `/` in names is escaped
//! as `%2F` and `%` as `%25`, so a name is one path segment. Each key's value
//! is JSON metadata `{"owner":..,"created_ms":..}` (empty for etcdctl and Go
//! clients), with `permits` in a semaphore's entries and `shared: true` in a
//! write lock downgraded to a read lock. Entries hold in create-revision
//! order: a lock's oldest entry if it is exclusive, else every shared entry
//! before its first exclusive one; a semaphore's oldest `permits` entries. An
//! entry's create revision is its fencing token. Election `name` keeps its
//! candidates under `{ns}/elections/{escaped name}/{lease hex}`, each holding
//! exactly its proclaimed value (etcd's own layout, no metadata); the oldest
//! leads. The layout itself is `distlock::layout`'s.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget};
use etcd_client::{Txn, TxnOp};

use distlock::layout::{escape, unescape, Keyspace};

use crate::connect::etcd_failed;
use crate::exit::Failure;

/// `{ns}/locks/`: the prefix of every lock of the namespace.
pub fn root(namespace: &str) -> String {
    Keyspace::new(namespace).root().to_owned()
}

/// `{ns}/semaphores/`: the prefix of every semaphore of the namespace.
pub fn semaphore_root(namespace: &str) -> String {
    Keyspace::new(namespace).semaphore_root()
}

/// `{ns}/elections/`: the prefix of every election of the namespace.
pub fn election_root(namespace: &str) -> String {
    Keyspace::new(namespace).election_root()
}

/// The key `distlock force-unlock` writes (on a short lease) just before it
/// removes holder `token` of lock or semaphore `name`, so that `distlock
/// watch` can tell a force-unlock from a release: etcd's delete events look
/// the same. `{ns}/force-unlocks/{escaped name}/{token}`, outside the queues'
/// key spaces (a token is a create revision: it names one key of etcd).
pub fn force_marker(namespace: &str, name: &str, token: i64) -> String {
    format!(
        "{}/force-unlocks/{}/{token}",
        namespace.trim_end_matches('/'),
        escape(name)
    )
}

/// How long a force-unlock marker lives.
pub const FORCE_MARKER_TTL_SECS: i64 = 300;

/// The two kinds of queue: a lock's (exclusive and read entries) and a
/// semaphore's (permits). A lock and a semaphore of one name are unrelated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// `{ns}/locks/`.
    Lock,
    /// `{ns}/semaphores/`.
    Semaphore,
}

impl Space {
    /// The key prefix of queue `name` of this kind in `namespace`.
    pub fn queue(self, namespace: &str, name: &str) -> String {
        let keys = Keyspace::new(namespace);
        match self {
            Space::Lock => keys.queue(name),
            Space::Semaphore => keys.semaphore(name),
        }
    }
}

/// What an entry of a queue asks for, from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A lock's exclusive entry: `{queue}{lease hex}`.
    Exclusive,
    /// A lock's reader: `{queue}r/{lease hex}.{n hex}`.
    Read,
    /// A semaphore's permit: `{queue}{lease hex}.{n hex}`.
    Permit,
}

/// One entry (a key) of a lock's or a semaphore's queue.
#[derive(Debug, Clone)]
pub struct Contender {
    /// The lock's or semaphore's name.
    pub name: String,
    /// What the entry asks for.
    pub mode: Mode,
    /// The etcd key.
    pub key: String,
    /// The key's create revision: its place in the queue, and the fencing
    /// token it holds with.
    pub create_revision: i64,
    /// The lease the key lives on (from the key's last segment; 0 if that
    /// is not a lease id).
    pub lease: i64,
    /// The owner id from the key's metadata; empty without metadata.
    pub owner: String,
    /// When the contender enqueued, by its own clock, if it said.
    pub since: Option<SystemTime>,
    /// An exclusive entry that holds shared now: a write lock downgraded to
    /// a read lock.
    pub downgraded: bool,
    /// A semaphore's number of permits, as this entry counts them.
    pub permits: Option<u32>,
}

/// The lease id an entry's key names: its last segment, up to a `.`, in hex
/// (0 when it is not one).
pub fn lease_of(key: &str) -> i64 {
    lease_in(key.rsplit('/').next().unwrap_or_default())
}

fn lease_in(segment: &str) -> i64 {
    let hex = segment.split('.').next().unwrap_or_default();
    i64::from_str_radix(hex, 16).unwrap_or(0)
}

/// The two roots of a namespace's queues.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `{ns}/locks/`.
    pub locks: String,
    /// `{ns}/semaphores/`.
    pub semaphores: String,
}

impl Roots {
    /// The roots of `namespace`.
    pub fn new(namespace: &str) -> Self {
        Roots {
            locks: root(namespace),
            semaphores: semaphore_root(namespace),
        }
    }
}

impl Contender {
    /// The entry a key describes, if it is in one of `roots`' queues.
    pub fn parse(roots: &Roots, key: &[u8], create_revision: i64, value: &[u8]) -> Option<Self> {
        let key = std::str::from_utf8(key).ok()?;
        let (mode, segment, last) = if let Some(rest) = key.strip_prefix(&roots.locks) {
            let (segment, tail) = rest.split_once('/')?;
            match tail.strip_prefix("r/") {
                // The core counts every key under `{queue}r/` as a reader.
                Some(reader) => (Mode::Read, segment, reader),
                // Anything else under the queue is an exclusive entry, as
                // for the core, etcdctl and Go (a foreign key included).
                None => (Mode::Exclusive, segment, tail),
            }
        } else if let Some(rest) = key.strip_prefix(&roots.semaphores) {
            let (segment, tail) = rest.split_once('/')?;
            (Mode::Permit, segment, tail)
        } else {
            return None;
        };
        let meta: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
        Some(Contender {
            name: unescape(segment)?,
            mode,
            key: key.to_owned(),
            create_revision,
            lease: lease_in(last),
            owner: meta["owner"].as_str().unwrap_or_default().to_owned(),
            since: meta["created_ms"]
                .as_u64()
                .filter(|&ms| ms > 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            downgraded: mode == Mode::Exclusive && meta["shared"].as_bool() == Some(true),
            permits: meta["permits"].as_u64().and_then(|p| u32::try_from(p).ok()),
        })
    }

    /// The entry an etcd key-value describes.
    pub fn from_kv(roots: &Roots, kv: &KeyValue) -> Option<Self> {
        Self::parse(roots, kv.key(), kv.create_revision(), kv.value())
    }

    /// Which kind of queue it is in.
    pub fn space(&self) -> Space {
        match self.mode {
            Mode::Permit => Space::Semaphore,
            Mode::Exclusive | Mode::Read => Space::Lock,
        }
    }

    /// Whether it holds together with readers: a reader, or a downgraded
    /// write lock.
    pub fn shared(&self) -> bool {
        self.mode == Mode::Read || self.downgraded
    }

    /// `exclusive`, `read` (a downgraded write lock too) or `permit`: the
    /// `mode` of `info --json` and the word `watch` prints.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Permit => "permit",
            _ if self.shared() => "read",
            _ => "exclusive",
        }
    }
}

/// How many of a queue's entries (oldest first) hold, by the core's rules:
/// a lock's oldest entry if it is exclusive, else its leading shared
/// entries; a semaphore's oldest `permits` (as its entries count them; none
/// when none says).
pub fn holding<'a>(space: Space, queue: impl IntoIterator<Item = &'a Contender>) -> usize {
    let mut queue = queue.into_iter().peekable();
    match space {
        Space::Lock => match queue.peek() {
            None => 0,
            Some(head) if !head.shared() => 1,
            Some(_) => queue.take_while(|c| c.shared()).count(),
        },
        Space::Semaphore => {
            let entries: Vec<&Contender> = queue.collect();
            let permits = entries.iter().find_map(|c| c.permits).unwrap_or(0);
            (permits as usize).min(entries.len())
        }
    }
}

/// The queue of lock or semaphore `name`, oldest first.
pub async fn read_queue(
    client: &mut Client,
    namespace: &str,
    space: Space,
    name: &str,
) -> Result<Vec<Contender>, Failure> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let response = client
        .get(space.queue(namespace, name), Some(options))
        .await
        .map_err(|e| etcd_failed("reading the queue", &e))?;
    let roots = Roots::new(namespace);
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| Contender::from_kv(&roots, kv))
        .filter(|c| c.name == name && c.space() == space)
        .collect())
}

/// When each of `leases` runs out unless renewed (`None`: gone, or not a
/// lease), asking each distinct lease once.
pub async fn expiries(
    client: &mut Client,
    leases: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, Option<SystemTime>>, Failure> {
    let mut out = HashMap::new();
    for lease in leases {
        if lease == 0 || out.contains_key(&lease) {
            out.entry(lease).or_insert(None);
            continue;
        }
        let ttl = client
            .lease_time_to_live(lease, None)
            .await
            .map_err(|e| etcd_failed("reading a lease", &e))?
            .ttl();
        let expiry = u64::try_from(ttl)
            .ok()
            .filter(|&s| s > 0)
            .and_then(|s| SystemTime::now().checked_add(Duration::from_secs(s)));
        out.insert(lease, expiry);
    }
    Ok(out)
}

/// One candidate of an election: a key `{ns}/elections/{escaped
/// name}/{lease hex}` holding exactly the value it proclaims (etcd's own
/// layout: no metadata).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The etcd key.
    pub key: String,
    /// Its create revision: its place in the queue, and the fencing token
    /// it leads with.
    pub create_revision: i64,
    /// The lease the key lives on (0 if the key does not name one).
    pub lease: i64,
    /// The proclaimed value.
    pub value: Vec<u8>,
}

impl Candidate {
    fn from_kv(kv: &KeyValue) -> Self {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        Candidate {
            lease: lease_of(&key),
            key,
            create_revision: kv.create_revision(),
            value: kv.value().to_vec(),
        }
    }
}

/// The keys under `prefix`, oldest first.
async fn read_oldest_first(client: &mut Client, prefix: String) -> Result<Vec<KeyValue>, Failure> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let mut response = client
        .get(prefix, Some(options))
        .await
        .map_err(|e| etcd_failed("reading the elections", &e))?;
    Ok(response.take_kvs())
}

/// The candidates of election `name`, oldest (the leader) first.
pub async fn read_election(
    client: &mut Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Candidate>, Failure> {
    let prefix = Keyspace::new(namespace).election(name);
    let kvs = read_oldest_first(client, prefix).await?;
    Ok(kvs.iter().map(Candidate::from_kv).collect())
}

/// Every election of `namespace` whose name starts with `prefix`, by name,
/// each with its candidates oldest (the leader) first.
pub async fn read_elections(
    client: &mut Client,
    namespace: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Vec<Candidate>>, Failure> {
    let root = election_root(namespace);
    let kvs = read_oldest_first(client, root.clone()).await?;
    let mut elections: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for kv in &kvs {
        let name = election_of(&root, kv.key());
        if let Some(name) = name.filter(|n| n.starts_with(prefix)) {
            elections
                .entry(name)
                .or_default()
                .push(Candidate::from_kv(kv));
        }
    }
    Ok(elections)
}

/// The name of the election a key under `root` (`{ns}/elections/`) is a
/// candidate of: its first segment, unescaped.
fn election_of(root: &str, key: &[u8]) -> Option<String> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(root)?;
    let (segment, _) = rest.split_once('/')?;
    unescape(segment)
}

/// Deletes `key` if its create revision is still `token` (a key made since
/// under the same name is left alone); whether it was deleted.
pub async fn delete_fenced(client: &mut Client, key: &str, token: i64) -> Result<bool, Failure> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, token)])
        .and_then([TxnOp::delete(key, None)]);
    let response = client
        .txn(txn)
        .await
        .map_err(|e| etcd_failed("deleting the key", &e))?;
    Ok(response.succeeded())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: &str, value: &str) -> Option<Contender> {
        Contender::parse(&Roots::new("/ns"), key.as_bytes(), 7, value.as_bytes())
    }

    #[test]
    fn layout_matches_the_library() {
        assert_eq!(root("/shop/"), "/shop/locks/");
        assert_eq!(root(""), "/locks/");
        assert_eq!(semaphore_root("/shop"), "/shop/semaphores/");
        assert_eq!(Space::Lock.queue("/ns", "a/b%"), "/ns/locks/a%2Fb%25/");
        assert_eq!(
            Space::Semaphore.queue("/ns", "a/b"),
            "/ns/semaphores/a%2Fb/"
        );
        for name in ["a", "a/b", "%", "100%/x/%25", "order:42"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn contenders_parse_with_and_without_metadata() {
        let c = parse(
            "/ns/locks/a%2Fb/694d",
            r#"{"owner":"h/1/2","created_ms":1000,"acquisition":"1"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.lease, c.owner.as_str(), c.mode),
            ("a/b", 0x694d, "h/1/2", Mode::Exclusive)
        );
        assert_eq!(c.since, Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!(
            (c.space(), c.shared(), c.mode_name()),
            (Space::Lock, false, "exclusive")
        );
        let bare = parse("/ns/locks/job/1f", "").unwrap();
        assert_eq!((bare.owner.as_str(), bare.since), ("", None));
        assert!(parse("/other/locks/job/1f", "").is_none());
        assert!(parse("/ns/elections/job/1f", "").is_none());
        assert!(parse("/ns/locks/%zz/1f", "").is_none());
    }

    #[test]
    fn a_readers_key_is_a_reader_of_its_lock_not_a_lock_named_r() {
        let r = parse("/ns/locks/doc/r/694d.2a", r#"{"owner":"h/1/2"}"#).unwrap();
        assert_eq!(
            (r.name.as_str(), r.mode, r.lease, r.mode_name()),
            ("doc", Mode::Read, 0x694d, "read")
        );
        assert!(r.shared());
        // A lock named `r` is a lock named `r`, and a reader of it is its reader.
        let plain = parse("/ns/locks/r/694d", "").unwrap();
        assert_eq!((plain.name.as_str(), plain.mode), ("r", Mode::Exclusive));
        let reader = parse("/ns/locks/r/r/1.1", "").unwrap();
        assert_eq!((reader.name.as_str(), reader.mode), ("r", Mode::Read));
        // Lock `doc/r` is escaped: its entries are not `doc`'s readers.
        let slash = parse("/ns/locks/doc%2Fr/694d", "").unwrap();
        assert_eq!(
            (slash.name.as_str(), slash.mode),
            ("doc/r", Mode::Exclusive)
        );
        // A write lock downgraded in place holds shared.
        let down = parse("/ns/locks/doc/694d", r#"{"owner":"h","shared":true}"#).unwrap();
        assert_eq!(
            (down.mode, down.shared(), down.mode_name()),
            (Mode::Exclusive, true, "read")
        );
    }

    #[test]
    fn permits_parse_in_their_own_key_space() {
        let p = parse(
            "/ns/semaphores/crawl%2Fa/694d.3",
            r#"{"owner":"h","permits":2}"#,
        )
        .unwrap();
        assert_eq!(
            (p.name.as_str(), p.mode, p.lease, p.permits, p.space()),
            ("crawl/a", Mode::Permit, 0x694d, Some(2), Space::Semaphore)
        );
        assert_eq!(p.mode_name(), "permit");
        assert_eq!(lease_of("/ns/semaphores/crawl%2Fa/694d.3"), 0x694d);
        assert_eq!(lease_of("/ns/locks/doc/r/1f.2"), 0x1f);
        assert_eq!(lease_of("/ns/locks/doc/1f"), 0x1f);
        assert_eq!(lease_of("/ns/locks/doc/zz"), 0);
    }

    #[test]
    fn election_keys_name_their_election() {
        let root = election_root("/ns");
        assert_eq!(root, "/ns/elections/");
        let name = |key: &str| election_of(&root, key.as_bytes());
        assert_eq!(
            name("/ns/elections/scheduler/694d").as_deref(),
            Some("scheduler")
        );
        assert_eq!(
            name("/ns/elections/jobs%2Fnightly/694d").as_deref(),
            Some("jobs/nightly")
        );
        assert_eq!(
            name("/ns/elections/scheduler"),
            None,
            "not a candidate's key"
        );
        assert_eq!(name("/ns/elections/%zz/1"), None, "not an escaped name");
        assert_eq!(name("/ns/locks/scheduler/694d"), None);
        let key = format!("{}694d", Keyspace::new("/ns").election("a/b"));
        assert_eq!(name(&key).as_deref(), Some("a/b"));
        assert_eq!(lease_of(&key), 0x694d);
    }

    #[test]
    fn holders_follow_the_cores_rules() {
        let entry = |key: &str, value: &str| parse(key, value).unwrap();
        let w = entry("/ns/locks/d/1", "");
        let r1 = entry("/ns/locks/d/r/2.1", "");
        let r2 = entry("/ns/locks/d/r/3.1", "");
        let down = entry("/ns/locks/d/4", r#"{"shared":true}"#);
        assert_eq!(holding(Space::Lock, [&w, &r1, &r2]), 1);
        assert_eq!(holding(Space::Lock, [&r1, &r2, &w, &r1]), 2);
        assert_eq!(holding(Space::Lock, [&down, &r1, &w]), 2);
        assert_eq!(holding(Space::Lock, []), 0);
        let p = entry("/ns/semaphores/s/1.1", r#"{"permits":2}"#);
        assert_eq!(holding(Space::Semaphore, [&p, &p, &p]), 2);
        assert_eq!(holding(Space::Semaphore, [&p]), 1);
        let unknown = entry("/ns/semaphores/s/1.1", "");
        assert_eq!(holding(Space::Semaphore, [&unknown]), 0);
    }
}
