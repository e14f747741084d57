//! `distlock watch [PREFIX]`: lock events as they happen.
//!
//! One etcd watch on `{ns}/locks/` from the revision after a snapshot read.
//! Each put of a new key is an acquisition (empty queue) or a new waiter; each
//! delete of a queue head is a release, followed by a hand-off when someone
//! waited; a waiter's key that goes is a waiter giving up.
//!
//! etcd's delete events don't say why a key went. A deleted head is
//! `force-unlocked` when `distlock force-unlock` left its marker for it
//! (force-unlocks by other tools show as releases), else `released`. A
//! release is marked `lease gone` when the holder's lease no longer exists:
//! it expired (a crashed or cut-off holder), or the holder revoked it by
//! closing its manager (`distlock hold` does so right after releasing); the
//! two cannot be told apart from events.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};

use crate::args::Global;
use crate::connect::{self, etcd_failed};
use crate::exit::{self, Failure};
use crate::keys::{self, Contender};
use crate::show;

/// One lock's queue, by create revision.
type Queue = BTreeMap<i64, Contender>;

/// What the watch knows: every queue under the prefix, and when each current
/// holder took its lock (as seen here, or its enqueue time from the snapshot).
struct State {
    root: String,
    prefix: String,
    queues: HashMap<String, Queue>,
    by_key: HashMap<String, (String, i64)>,
    held_since: HashMap<String, SystemTime>,
}

/// `distlock watch [PREFIX]`: runs until Ctrl-C (exit 0) or until etcd fails
/// (exit 69).
pub async fn run(global: &Global, prefix: &str) -> Result<i32, Failure> {
    let mut client = connect::client(global).await?;
    let mut state = State {
        root: keys::root(&global.namespace),
        prefix: prefix.to_owned(),
        queues: HashMap::new(),
        by_key: HashMap::new(),
        held_since: HashMap::new(),
    };
    let mut revision = state.load(&mut client).await?;
    println!(
        "watching {}{prefix}* from revision {revision} (Ctrl-C to stop)",
        state.root
    );
    state.print_holders();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut stream = client
            .watch(state.root.clone(), Some(options))
            .await
            .map_err(|e| etcd_failed("starting the watch", &e))?;
        loop {
            let message = tokio::select! {
                _ = &mut interrupted => return Ok(exit::SUCCESS),
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(connect::unreachable(
                        &global.endpoints.join(","),
                        "the watch stream ended",
                    ))
                }
                Err(e) => return Err(etcd_failed("watching", &e)),
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    // Events we have not seen were compacted away: start over.
                    revision = state.load(&mut client).await?;
                    println!(
                        "{}  (history compacted; state re-read at revision {revision})",
                        show::clock(SystemTime::now())
                    );
                    state.print_holders();
                    break;
                }
                return Err(Failure::new(
                    exit::UNAVAILABLE,
                    format!("etcd cancelled the watch: {}", response.cancel_reason()),
                ));
            }
            if let Some(header) = response.header() {
                revision = revision.max(header.revision());
            }
            state.apply(&mut client, &global.namespace, &response).await;
        }
    }
}

impl State {
    /// Reads every queue afresh; returns the revision read at.
    async fn load(&mut self, client: &mut Client) -> Result<i64, Failure> {
        let response = client
            .get(self.root.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd_failed("reading the locks", &e))?;
        self.queues.clear();
        self.by_key.clear();
        let mut seen = HashMap::new();
        for kv in response.kvs() {
            if let Some(c) = Contender::from_kv(&self.root, kv) {
                if c.name.starts_with(&self.prefix) {
                    self.insert(c);
                }
            }
        }
        for queue in self.queues.values() {
            if let Some(head) = queue.values().next() {
                let since = self.held_since.get(&head.key).copied().or(head.since);
                seen.insert(head.key.clone(), since.unwrap_or_else(SystemTime::now));
            }
        }
        self.held_since = seen;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    fn print_holders(&self) {
        let mut names: Vec<&String> = self.queues.keys().collect();
        names.sort();
        for name in names {
            let queue = &self.queues[name];
            if let Some(head) = queue.values().next() {
                line(
                    "held",
                    name,
                    format!(
                        "owner={} token={} for {} waiters={}",
                        show::owner(&head.owner),
                        head.create_revision,
                        show::since(self.held_since.get(&head.key).copied()),
                        queue.len() - 1
                    ),
                );
            }
        }
    }

    fn insert(&mut self, c: Contender) {
        self.by_key
            .insert(c.key.clone(), (c.name.clone(), c.create_revision));
        self.queues
            .entry(c.name.clone())
            .or_default()
            .insert(c.create_revision, c);
    }

    async fn apply(&mut self, client: &mut Client, namespace: &str, response: &WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if kv.create_revision() != kv.mod_revision() {
                        continue; // a rewrite of a key we know, not a new contender
                    }
                    let Some(c) = Contender::from_kv(&self.root, kv) else {
                        continue;
                    };
                    if !c.name.starts_with(&self.prefix) {
                        continue;
                    }
                    let ahead = self.queues.get(&c.name).map_or(0, Queue::len);
                    let (name, owner, token) = (c.name.clone(), c.owner.clone(), c.create_revision);
                    if ahead == 0 {
                        self.held_since.insert(c.key.clone(), SystemTime::now());
                        line(
                            "acquired",
                            &name,
                            format!("owner={} token={token}", show::owner(&owner)),
                        );
                    } else {
                        line(
                            "waiting",
                            &name,
                            format!("owner={} ({ahead} ahead)", show::owner(&owner)),
                        );
                    }
                    self.insert(c);
                }
                EventType::Delete => {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let Some((name, revision)) = self.by_key.remove(&key) else {
                        continue;
                    };
                    self.removed(client, namespace, &name, revision).await;
                }
            }
        }
    }

    /// A contender's key is gone: a release (of some kind) if it held the lock.
    async fn removed(&mut self, client: &mut Client, namespace: &str, name: &str, revision: i64) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let was_head = queue.keys().next() == Some(&revision);
        let Some(gone) = queue.remove(&revision) else {
            return;
        };
        let next = queue.values().next().cloned();
        if queue.is_empty() {
            self.queues.remove(name);
        }
        if !was_head {
            line(
                "gave up",
                name,
                format!(
                    "owner={} after waiting {}",
                    show::owner(&gone.owner),
                    show::since(gone.since)
                ),
            );
            return;
        }
        let held = show::since(self.held_since.remove(&gone.key));
        let (kind, note) = why_gone(client, namespace, &gone).await;
        line(
            kind,
            name,
            format!(
                "owner={} token={} held {held}{note}",
                show::owner(&gone.owner),
                gone.create_revision
            ),
        );
        if let Some(next) = next {
            self.held_since.insert(next.key.clone(), SystemTime::now());
            line(
                "handed off",
                name,
                format!(
                    "to owner={} token={} after waiting {}",
                    show::owner(&next.owner),
                    next.create_revision,
                    show::since(next.since)
                ),
            );
        }
    }
}

/// Why a holder's key went: `force-unlocked` or `released`, and a note when
/// its lease is gone too.
async fn why_gone(
    client: &mut Client,
    namespace: &str,
    gone: &Contender,
) -> (&'static str, &'static str) {
    let marker = keys::force_marker(namespace, &gone.name, gone.create_revision);
    if client
        .get(marker, Some(GetOptions::new().with_count_only()))
        .await
        .is_ok_and(|r| r.count() > 0)
    {
        return ("force-unlocked", "");
    }
    if gone.lease != 0 {
        if let Ok(ttl) = client.lease_time_to_live(gone.lease, None).await {
            if ttl.ttl() <= 0 {
                return ("released", " (lease gone: expired, or revoked on close)");
            }
        }
    }
    ("released", "")
}

/// One event line: `02:31:07.123  acquired        order:42  owner=... token=...`.
fn line(kind: &str, name: &str, detail: String) {
    println!(
        "{}  {kind:<14}  {name}  {detail}",
        show::clock(SystemTime::now())
    );
}
