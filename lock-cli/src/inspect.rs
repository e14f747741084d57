//! `list` and `info`: locks (held exclusively or by readers) and semaphores;
//! `list` also shows elections.
//!
//! The public API reports each lock ([`LockInfo`]) and semaphore
//! ([`SemaphoreInfo`]); what it does not report is read from etcd directly
//! ([`keys`]): every reader of a lock and every waiter, with their owners,
//! the lease expiries of a semaphore's holders, and the elections of a
//! namespace (each one's leader, its expiry, and how many campaign).

use std::collections::HashMap;
use std::time::SystemTime;

use distlock::{LockInfo, LockManager, SemaphoreInfo};
use etcd_client::Client;
use serde_json::Value;

use crate::args::Global;
use crate::connect;
use crate::exit::{self, Failure};
use crate::keys::{self, Candidate, Contender, Space};
use crate::show;

/// Lease expiries, by lease id.
type Expiries = HashMap<i64, Option<SystemTime>>;

/// `distlock list [PREFIX] [--json]`: every held lock, every semaphore in
/// use and every election with candidates whose name starts with PREFIX, by
/// name (a lock before a semaphore before an election of the same name).
pub async fn list(global: &Global, prefix: &str, json: bool) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let read = async {
        let locks = manager.list_locks(prefix).await?;
        let semaphores = manager.list_semaphores(prefix).await?;
        Ok::<_, distlock::LockError>((locks, semaphores))
    };
    let read = read.await;
    manager.close().await;
    let (locks, semaphores) = read.map_err(|e| Failure::lock("listing locks", &e))?;
    let mut client = connect::client(global).await?;
    let elections = keys::read_elections(&mut client, &global.namespace, prefix).await?;
    let leases = semaphores
        .iter()
        .flat_map(|s| &s.holders)
        .map(|h| keys::lease_of(&h.key))
        .chain(
            elections
                .values()
                .filter_map(|c| c.first())
                .map(|l| l.lease),
        );
    let expiries = keys::expiries(&mut client, leases).await?;
    // (name, lock before semaphore before election, JSON, table row)
    let mut all: Vec<(&str, u8, Value, Vec<String>)> = Vec::new();
    for lock in &locks {
        all.push((&lock.name, 0, show::info_json(lock), lock_row(lock)));
    }
    for sem in &semaphores {
        let json = show::semaphore_json(sem, &expiries);
        all.push((&sem.name, 1, json, semaphore_row(sem, &expiries)));
    }
    for (name, candidates) in &elections {
        let Some(leader) = candidates.first() else {
            continue;
        };
        let expires = expiries.get(&leader.lease).copied().flatten();
        let json = show::election_json(
            name,
            Some(show::leader_key_json(
                &leader.value,
                leader.create_revision as u64,
                Some(&leader.key),
                expires,
            )),
            candidates.len(),
        );
        all.push((name, 2, json, election_row(name, candidates, expires)));
    }
    all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    if json {
        let all: Vec<Value> = all.into_iter().map(|(_, _, json, _)| json).collect();
        println!("{}", pretty(&Value::Array(all)));
        return Ok(exit::SUCCESS);
    }
    if all.is_empty() {
        println!(
            "no locks held under {}{prefix}, no semaphores in use under {}{prefix}, \
             no elections under {}{prefix}",
            keys::root(&global.namespace),
            keys::semaphore_root(&global.namespace),
            keys::election_root(&global.namespace)
        );
        return Ok(exit::SUCCESS);
    }
    let rows: Vec<Vec<String>> = all.into_iter().map(|(_, _, _, row)| row).collect();
    let header = [
        "NAME",
        "KIND",
        "HOLDERS",
        "OWNER",
        "TOKEN",
        "HELD FOR",
        "EXPIRES IN",
        "WAITERS",
    ];
    print!("{}", show::table(&header, &rows));
    Ok(exit::SUCCESS)
}

/// A lock's row: `lock` and 1 holder, or `read` and its readers; the
/// (oldest) holder's owner, token and times.
fn lock_row(lock: &LockInfo) -> Vec<String> {
    let (kind, holders) = match lock.readers {
        0 => ("lock", 1),
        readers => ("read", readers),
    };
    vec![
        lock.name.clone(),
        kind.to_owned(),
        holders.to_string(),
        show::owner(&lock.owner).to_owned(),
        lock.fencing_token.to_string(),
        show::since(lock.create_time),
        show::until(lock.expire_time),
        lock.waiters.to_string(),
    ]
}

/// A semaphore's row: `semaphore`, permits held of all, and its oldest
/// holder's owner, token and times.
fn semaphore_row(sem: &SemaphoreInfo, expiries: &Expiries) -> Vec<String> {
    let oldest = sem.holders.first();
    let expires = oldest.and_then(|h| expiries.get(&keys::lease_of(&h.key)).copied().flatten());
    vec![
        sem.name.clone(),
        "semaphore".to_owned(),
        format!("{}/{}", sem.holders.len(), sem.permits),
        show::owner(oldest.map_or("-", |h| &h.owner)).to_owned(),
        oldest.map_or("-".into(), |h| h.fencing_token.to_string()),
        show::since(oldest.and_then(|h| h.create_time)),
        show::until(expires),
        sem.waiters.to_string(),
    ]
}

/// An election's row: `election`, 1 holder (the leader), whose value is the
/// owner (quoted: it is not an owner id), its token and lease expiry; its
/// waiting candidates. When it was elected is not in etcd.
fn election_row(name: &str, candidates: &[Candidate], expires: Option<SystemTime>) -> Vec<String> {
    let leader = candidates.first();
    vec![
        name.to_owned(),
        "election".to_owned(),
        "1".to_owned(),
        leader.map_or("-".into(), |l| show::value(&l.value)),
        leader.map_or("-".into(), |l| l.create_revision.to_string()),
        "-".to_owned(),
        show::until(expires),
        candidates.len().saturating_sub(1).to_string(),
    ]
}

/// `distlock info NAME [--semaphore] [--json]`: exit 1 when nobody holds
/// the lock (or the semaphore is not in use).
pub async fn info(
    global: &Global,
    name: &str,
    semaphore: bool,
    json: bool,
) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let outcome = if semaphore {
        semaphore_info(global, &manager, name, json).await
    } else {
        lock_info(global, &manager, name, json).await
    };
    manager.close().await;
    outcome
}

async fn lock_info(
    global: &Global,
    manager: &LockManager,
    name: &str,
    json: bool,
) -> Result<i32, Failure> {
    let info = manager.lock_info(name).await;
    let Some(info) = info.map_err(|e| Failure::lock("reading the lock", &e))? else {
        if json {
            println!("null");
        } else {
            let other = manager
                .semaphore_info(name)
                .await
                .ok()
                .flatten()
                .map_or(String::new(), |_| {
                    format!(" (a semaphore `{name}` is in use: distlock info --semaphore {name})")
                });
            println!("{name}: not held{other}");
        }
        return Ok(exit::FAILURE);
    };
    // The public API counts the readers and the waiters; who they are is
    // in their keys.
    let mut client = connect::client(global).await?;
    let queue = keys::read_queue(&mut client, &global.namespace, Space::Lock, name).await?;
    let held = keys::holding(Space::Lock, &queue);
    let (holders, waiting) = queue.split_at(held);
    let expiries = holder_expiries(&mut client, &info, holders).await?;
    if json {
        let mut object = show::info_json(&info);
        object["holders"] = holders.iter().map(|h| holder_json(h, &expiries)).collect();
        object["waiting"] = waiting.iter().map(show::waiter_json).collect();
        println!("{}", pretty(&object));
        return Ok(exit::SUCCESS);
    }
    print_lock(&info, holders, &expiries, waiting);
    Ok(exit::SUCCESS)
}

/// The lease expiries of `holders`: the API's for the holder it reports,
/// etcd's for the other readers.
async fn holder_expiries(
    client: &mut Client,
    info: &LockInfo,
    holders: &[Contender],
) -> Result<Expiries, Failure> {
    let others = holders
        .iter()
        .filter(|h| h.key != info.key)
        .map(|h| h.lease);
    let mut expiries = keys::expiries(client, others).await?;
    if let Some(head) = holders.iter().find(|h| h.key == info.key) {
        expiries.insert(head.lease, info.expire_time);
    }
    Ok(expiries)
}

fn holder_json(holder: &Contender, expiries: &Expiries) -> Value {
    show::holder_json(
        &holder.owner,
        &holder.key,
        holder.mode_name(),
        holder.since,
        expiries.get(&holder.lease).copied().flatten(),
        holder.create_revision as u64,
    )
}

fn print_lock(info: &LockInfo, holders: &[Contender], expiries: &Expiries, waiting: &[Contender]) {
    let at = |t: Option<SystemTime>| show::timestamp(t).as_str().unwrap_or("-").to_owned();
    println!("name:        {}", info.name);
    println!("owner:       {}", show::owner(&info.owner));
    println!("key:         {}", info.key);
    println!("token:       {}", info.fencing_token);
    println!(
        "held for:    {} (since {})",
        show::since(info.create_time),
        at(info.create_time)
    );
    println!(
        "expires in:  {} (at {}, unless renewed)",
        show::until(info.expire_time),
        at(info.expire_time)
    );
    if info.readers > 0 {
        println!(
            "readers:     {} (held for reading; the oldest above)",
            info.readers
        );
        print_holders(holders, expiries);
    }
    println!("waiters:     {}", info.waiters);
    print_waiting(waiting);
}

/// `  1. OWNER  token N  held 3.0s  expires in 27.0s  (KEY)`, one per holder.
fn print_holders(holders: &[Contender], expiries: &Expiries) {
    for (i, h) in holders.iter().enumerate() {
        println!(
            "  {}. {}  token {}  held {}  expires in {}  ({})",
            i + 1,
            show::owner(&h.owner),
            h.create_revision,
            show::since(h.since),
            show::until(expiries.get(&h.lease).copied().flatten()),
            h.key
        );
    }
}

/// `  1. OWNER  waiting 2.5s  (KEY)`, one per waiter in queue order; `to
/// read` for a reader in a lock's queue.
fn print_waiting(waiting: &[Contender]) {
    for (i, w) in waiting.iter().enumerate() {
        let to_read = if w.mode == keys::Mode::Read {
            " to read"
        } else {
            ""
        };
        println!(
            "  {}. {}  waiting {}{to_read}  ({})",
            i + 1,
            show::owner(&w.owner),
            show::since(w.since),
            w.key
        );
    }
}

async fn semaphore_info(
    global: &Global,
    manager: &LockManager,
    name: &str,
    json: bool,
) -> Result<i32, Failure> {
    let info = manager.semaphore_info(name).await;
    let Some(info) = info.map_err(|e| Failure::lock("reading the semaphore", &e))? else {
        if json {
            println!("null");
        } else {
            let other = manager
                .lock_info(name)
                .await
                .ok()
                .flatten()
                .map_or(String::new(), |_| {
                    format!(" (a lock `{name}` is held: distlock info {name})")
                });
            println!("{name}: no semaphore in use{other}");
        }
        return Ok(exit::FAILURE);
    };
    let mut client = connect::client(global).await?;
    let queue = keys::read_queue(&mut client, &global.namespace, Space::Semaphore, name).await?;
    let held = keys::holding(Space::Semaphore, &queue);
    let (holders, waiting) = queue.split_at(held);
    let leases = info.holders.iter().map(|h| keys::lease_of(&h.key));
    let expiries = keys::expiries(&mut client, leases).await?;
    if json {
        let mut object = show::semaphore_json(&info, &expiries);
        object["waiting"] = waiting.iter().map(show::waiter_json).collect();
        println!("{}", pretty(&object));
        return Ok(exit::SUCCESS);
    }
    println!("semaphore:   {}", info.name);
    println!(
        "permits:     {} of {} held",
        info.holders.len(),
        info.permits
    );
    print_holders(holders, &expiries);
    println!("waiters:     {}", info.waiters);
    print_waiting(waiting);
    Ok(exit::SUCCESS)
}

pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
