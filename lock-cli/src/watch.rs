//! `distlock watch [PREFIX]`: lock and semaphore events as they happen.
//!
//! One etcd watch over `{ns}/locks/` and `{ns}/semaphores/` (one key range)
//! from the revision after a snapshot read. Each queue's holders follow the
//! core's rules ([`keys::holding`]): a lock's oldest entry if exclusive,
//! else its leading readers; a semaphore's oldest N. Each put of a new key is
//! an acquisition (it holds at once) or a new waiter; each delete of a holder
//! is a release, followed by a hand-off to every waiter that holds now; a
//! waiter's key that goes is a waiter giving up. A write lock downgraded in
//! place (its key rewritten with `shared`) is a downgrade, and hands the read
//! side on to the readers behind it. Lines for readers say `read`, lines for
//! semaphores `permit`, after the name: a lock and a semaphore of one name
//! are unrelated.
//!
//! etcd's delete events don't say why a key went. A deleted holder is
//! `force-unlocked` when `distlock force-unlock` left its marker for it
//! (force-unlocks by other tools show as releases), else `released`. A
//! release is marked `lease gone` when the holder's lease no longer exists:
//! it expired (a crashed or cut-off holder), or the holder revoked it by
//! closing its manager (`distlock hold` does so right after releasing); the
//! two cannot be told apart from events.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse};

use crate::args::Global;
use crate::connect::{self, etcd_failed};
use crate::exit::{self, Failure};
use crate::keys::{self, Contender, Mode, Roots, Space};
use crate::show;

/// A queue: a lock's or a semaphore's, by name.
type Id = (Space, String);

/// One queue's entries, by create revision.
type Queue = BTreeMap<i64, Contender>;

/// What the watch knows: every queue under the prefix, and when each current
/// holder took hold (as seen here, or its enqueue time from the snapshot).
struct State {
    roots: Roots,
    prefix: String,
    queues: HashMap<Id, Queue>,
    by_key: HashMap<String, (Id, i64)>,
    held_since: HashMap<String, SystemTime>,
}

/// `distlock watch [PREFIX]`: runs until Ctrl-C (exit 0) or until etcd fails
/// (exit 69).
pub async fn run(global: &Global, prefix: &str) -> Result<i32, Failure> {
    let mut client = connect::client(global).await?;
    let mut state = State {
        roots: Roots::new(&global.namespace),
        prefix: prefix.to_owned(),
        queues: HashMap::new(),
        by_key: HashMap::new(),
        held_since: HashMap::new(),
    };
    let mut revision = state.load(&mut client).await?;
    say(&format!(
        "watching {}{prefix}* and {}{prefix}* from revision {revision} (Ctrl-C to stop)",
        state.roots.locks, state.roots.semaphores
    ));
    state.print_holders();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let options = WatchOptions::new()
            .with_range(state.range_end())
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut stream = client
            .watch(state.roots.locks.clone(), Some(options))
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
                    say(&format!(
                        "{}  (history compacted; state re-read at revision {revision})",
                        show::clock(SystemTime::now())
                    ));
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
    /// The end of the one key range that holds `{ns}/locks/` and
    /// `{ns}/semaphores/`: the end of the latter's prefix (keys in between
    /// that are in neither are ignored).
    fn range_end(&self) -> String {
        let mut end = self.roots.semaphores.clone();
        end.pop(); // the trailing `/`; `0` sorts right after it
        end.push('0');
        end
    }

    /// Reads every queue afresh; returns the revision read at.
    async fn load(&mut self, client: &mut Client) -> Result<i64, Failure> {
        let options = GetOptions::new().with_range(self.range_end());
        let response = client
            .get(self.roots.locks.clone(), Some(options))
            .await
            .map_err(|e| etcd_failed("reading the locks and semaphores", &e))?;
        self.queues.clear();
        self.by_key.clear();
        for kv in response.kvs() {
            if let Some(c) = self.contender(kv) {
                self.insert(c);
            }
        }
        let mut seen = HashMap::new();
        for (id, queue) in &self.queues {
            for holder in queue.values().take(keys::holding(id.0, queue.values())) {
                let since = self.held_since.get(&holder.key).copied().or(holder.since);
                seen.insert(holder.key.clone(), since.unwrap_or_else(SystemTime::now));
            }
        }
        self.held_since = seen;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// The entry a key-value of ours describes, if its name is under the prefix.
    fn contender(&self, kv: &KeyValue) -> Option<Contender> {
        Contender::from_kv(&self.roots, kv).filter(|c| c.name.starts_with(&self.prefix))
    }

    fn print_holders(&self) {
        let mut ids: Vec<&Id> = self.queues.keys().collect();
        ids.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        for id in ids {
            let queue = &self.queues[id];
            let holding = keys::holding(id.0, queue.values());
            for holder in queue.values().take(holding) {
                line(
                    "held",
                    &id.1,
                    format!(
                        "{}owner={} token={} for {}{} waiters={}",
                        tag(holder),
                        show::owner(&holder.owner),
                        holder.create_revision,
                        show::since(self.held_since.get(&holder.key).copied()),
                        self.stats(id, holder),
                        queue.len() - holding
                    ),
                );
            }
        }
    }

    /// How many hold the queue now, after a line about `entry`: ` readers=N`
    /// for a reader (the readers among the holders), ` permits=H/N` for a
    /// permit, nothing for an exclusive entry.
    fn stats(&self, id: &Id, entry: &Contender) -> String {
        self.stats_of(id, entry, &self.holders(id))
    }

    /// [`stats`](Self::stats) with these `holders` (create revisions).
    fn stats_of(&self, id: &Id, entry: &Contender, holders: &[i64]) -> String {
        let queue = self.queues.get(id);
        match entry.mode {
            Mode::Permit => {
                let permits = queue
                    .and_then(|q| q.values().find_map(|c| c.permits))
                    .or(entry.permits)
                    .unwrap_or(0);
                format!(" permits={}/{permits}", holders.len())
            }
            _ if entry.shared() => {
                let shared = |rev: &&i64| {
                    queue
                        .and_then(|q| q.get(rev))
                        .is_some_and(Contender::shared)
                };
                format!(" readers={}", holders.iter().filter(shared).count())
            }
            _ => String::new(),
        }
    }

    /// The create revisions of the queue's holders.
    fn holders(&self, id: &Id) -> Vec<i64> {
        self.queues.get(id).map_or(Vec::new(), |q| {
            q.keys()
                .copied()
                .take(keys::holding(id.0, q.values()))
                .collect()
        })
    }

    fn insert(&mut self, c: Contender) {
        let id = (c.space(), c.name.clone());
        self.by_key
            .insert(c.key.clone(), (id.clone(), c.create_revision));
        self.queues
            .entry(id)
            .or_default()
            .insert(c.create_revision, c);
    }

    async fn apply(&mut self, client: &mut Client, namespace: &str, response: &WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put if kv.create_revision() != kv.mod_revision() => self.rewritten(kv),
                EventType::Put => self.added(kv),
                EventType::Delete => {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let Some((id, revision)) = self.by_key.remove(&key) else {
                        continue;
                    };
                    self.removed(client, namespace, &id, revision).await;
                }
            }
        }
    }

    /// A new key: an acquisition, or a new waiter.
    fn added(&mut self, kv: &KeyValue) {
        let Some(c) = self.contender(kv) else { return };
        let id = (c.space(), c.name.clone());
        let ahead = self.queues.get(&id).map_or(0, Queue::len);
        let (key, rev) = (c.key.clone(), c.create_revision);
        let (tag, owner) = (tag(&c), show::owner(&c.owner).to_owned());
        self.insert(c);
        if self.holders(&id).contains(&rev) {
            self.held_since.insert(key.clone(), SystemTime::now());
            let stats = self.stats(&id, &self.queues[&id][&rev]);
            line(
                "acquired",
                &id.1,
                format!("{tag}owner={owner} token={rev}{stats}"),
            );
        } else {
            line(
                "waiting",
                &id.1,
                format!("{tag}owner={owner} ({ahead} ahead)"),
            );
        }
    }

    /// A key we know was written again: a write lock downgraded to a read
    /// lock (which admits the readers behind it), or a permit's touch (no
    /// news).
    fn rewritten(&mut self, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some((id, rev)) = self.by_key.get(&key).cloned() else {
            return;
        };
        let Some(now) = Contender::from_kv(&self.roots, kv) else {
            return;
        };
        let before = self.holders(&id);
        let Some(entry) = self.queues.get_mut(&id).and_then(|q| q.get_mut(&rev)) else {
            return;
        };
        let downgraded = now.downgraded && !entry.downgraded;
        entry.downgraded = now.downgraded;
        entry.permits = now.permits.or(entry.permits);
        if downgraded {
            let entry = &self.queues[&id][&rev];
            line(
                "downgraded",
                &id.1,
                format!(
                    "owner={} token={rev} (write lock to read lock){}",
                    show::owner(&entry.owner),
                    self.stats_of(&id, entry, &before)
                ),
            );
        }
        self.handed_off(&id, &before);
    }

    /// A line for each entry that holds now but did not in `before`.
    fn handed_off(&mut self, id: &Id, before: &[i64]) {
        for rev in self.holders(id) {
            if before.contains(&rev) {
                continue;
            }
            let next = &self.queues[id][&rev];
            self.held_since.insert(next.key.clone(), SystemTime::now());
            line(
                "handed off",
                &id.1,
                format!(
                    "{}to owner={} token={} after waiting {}{}",
                    tag(next),
                    show::owner(&next.owner),
                    next.create_revision,
                    show::since(next.since),
                    self.stats(id, next)
                ),
            );
        }
    }

    /// An entry's key is gone: a release (of some kind) if it held, and a
    /// hand-off to each waiter that holds now.
    async fn removed(&mut self, client: &mut Client, namespace: &str, id: &Id, revision: i64) {
        let before = self.holders(id);
        let Some(gone) = self.queues.get_mut(id).and_then(|q| q.remove(&revision)) else {
            return;
        };
        if self.queues.get(id).is_some_and(Queue::is_empty) {
            self.queues.remove(id);
        }
        if !before.contains(&revision) {
            line(
                "gave up",
                &id.1,
                format!(
                    "{}owner={} after waiting {}",
                    tag(&gone),
                    show::owner(&gone.owner),
                    show::since(gone.since)
                ),
            );
            return;
        }
        let held = show::since(self.held_since.remove(&gone.key));
        let (kind, note) = why_gone(client, namespace, &gone).await;
        // Who still holds of those who did: before any hand-off.
        let staying: Vec<i64> = before.iter().copied().filter(|&r| r != revision).collect();
        line(
            kind,
            &id.1,
            format!(
                "{}owner={} token={} held {held}{}{note}",
                tag(&gone),
                show::owner(&gone.owner),
                gone.create_revision,
                self.stats_of(id, &gone, &staying)
            ),
        );
        self.handed_off(id, &before);
    }
}

/// The word after the name that tells what an entry is: `read ` for a
/// reader (and a downgraded write lock), `permit ` for a semaphore's
/// permit, nothing for an exclusive entry (a lock, a write lock).
fn tag(entry: &Contender) -> &'static str {
    match entry.mode_name() {
        "read" => "read ",
        "permit" => "permit ",
        _ => "",
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

/// Prints a line of the watch; once nobody reads the output any more (a
/// closed pipe), ends `distlock` with status 0, as `watch | head` expects.
/// The watch holds nothing in etcd, so there is nothing to release first.
fn say(line: &str) {
    if !show::emit(line) {
        std::process::exit(exit::SUCCESS);
    }
}

/// One event line: `02:31:07.123  acquired        order:42  owner=... token=...`.
fn line(kind: &str, name: &str, detail: String) {
    say(&format!(
        "{}  {kind:<14}  {name}  {detail}",
        show::clock(SystemTime::now())
    ));
}
