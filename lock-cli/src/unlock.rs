//! `distlock force-unlock [--semaphore] NAME [TOKEN]`: remove one holder.
//!
//! A lock held exclusively has one holder; a lock held by readers and a
//! semaphore may have several, and TOKEN (the fencing token `info` shows)
//! says which one goes. Exactly that holder's key is deleted, fenced by its
//! create revision (the token), so a holder that took over meanwhile keeps
//! what it holds. The head of a lock's queue goes through the public API
//! ([`LockManager::force_unlock_token`]); another reader, or a semaphore's
//! permit, which the API cannot remove, by the same fenced delete on etcd.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use distlock::LockManager;
use etcd_client::{Client, PutOptions};
use serde_json::json;

use crate::args::Global;
use crate::connect;
use crate::exit::{self, Failure};
use crate::keys::{self, Contender, Space};
use crate::show;

/// What to remove: `name`'s holder with `token` (or its only holder), in a
/// lock's queue or, with `semaphore`, a semaphore's.
pub struct Request<'a> {
    pub name: &'a str,
    pub token: Option<u64>,
    pub semaphore: bool,
    pub yes: bool,
}

/// Runs `force-unlock`: exit 1 when nobody holds it, no holder has the
/// token, the operator says no, or it was released meanwhile; 2 when a
/// token is needed or cannot be asked for.
pub async fn force_unlock(global: &Global, request: Request<'_>) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let outcome = force_unlock_with(global, &manager, &request).await;
    manager.close().await;
    outcome
}

async fn force_unlock_with(
    global: &Global,
    manager: &LockManager,
    request: &Request<'_>,
) -> Result<i32, Failure> {
    let Request {
        name,
        token,
        semaphore,
        yes,
    } = *request;
    let (space, what) = match semaphore {
        true => (Space::Semaphore, format!("semaphore {name}")),
        false => (Space::Lock, name.to_owned()),
    };
    // The API checks the name (bad input is exit 2) and says whether it is held.
    let in_use = match space {
        Space::Lock => manager.lock_info(name).await.map(|i| i.is_some()),
        Space::Semaphore => manager.semaphore_info(name).await.map(|i| i.is_some()),
    };
    let not_held = || {
        match space {
            Space::Lock => println!("{name}: not held"),
            Space::Semaphore => println!("{name}: no semaphore in use"),
        }
        Ok(exit::FAILURE)
    };
    if !in_use.map_err(|e| Failure::lock(&format!("reading {what}"), &e))? {
        return not_held();
    }
    let mut client = connect::client(global).await?;
    let queue = keys::read_queue(&mut client, &global.namespace, space, name).await?;
    let holders = &queue[..keys::holding(space, &queue)];
    let tokens = || {
        let all: Vec<String> = holders
            .iter()
            .map(|h| h.create_revision.to_string())
            .collect();
        all.join(", ")
    };
    let target = match (token, holders) {
        (_, []) => return not_held(),
        (Some(token), _) => match holders.iter().find(|h| h.create_revision as u64 == token) {
            Some(target) => target,
            None => {
                println!(
                    "{name}: no holder has token {token} (the holders' tokens: {})",
                    tokens()
                );
                return Ok(exit::FAILURE);
            }
        },
        (None, [only]) => only,
        (None, _) => {
            let flag = if semaphore { "--semaphore " } else { "" };
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "{what} has {} holders (tokens {}): say which one to remove, \
                     e.g. `distlock force-unlock {flag}{name} {}`",
                    holders.len(),
                    tokens(),
                    holders[0].create_revision
                ),
            ));
        }
    };
    let token = target.create_revision;
    let holder = format!("{}, token {token}", show::owner(&target.owner));
    let whose = match target.mode_name() {
        "permit" => format!("a permit of {what}"),
        "read" => format!("a read lock of {what}"),
        _ => what.clone(),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::new(
                exit::USAGE,
                "stdin is not a terminal, so I cannot ask: add --yes to force-unlock",
            ));
        }
        let question = format!(
            "Force-unlock {whose}, held by {} for {} (token {token})? Its holder loses it. [y/N] ",
            show::owner(&target.owner),
            show::since(target.since),
        );
        if !confirm(&question) {
            println!("not unlocked");
            return Ok(exit::FAILURE);
        }
    }
    if let Err(failure) = mark(&mut client, &global.namespace, name, token).await {
        eprintln!(
            "distlock: warning: `distlock watch` will show this as a release: {}",
            failure.message
        );
    }
    let removed = remove(manager, &mut client, space, &queue, target).await?;
    if removed {
        println!("force-unlocked {whose} (was held by {holder})");
        Ok(exit::SUCCESS)
    } else {
        println!("{name}: released meanwhile (token {token} is gone); not unlocked");
        Ok(exit::FAILURE)
    }
}

/// Deletes `target`'s key, fenced by its create revision: through the API
/// when it heads a lock's queue, directly otherwise.
async fn remove(
    manager: &LockManager,
    client: &mut Client,
    space: Space,
    queue: &[Contender],
    target: &Contender,
) -> Result<bool, Failure> {
    let heads_a_lock = space == Space::Lock && queue.first().is_some_and(|h| h.key == target.key);
    if heads_a_lock {
        return manager
            .force_unlock_token(&target.name, target.create_revision as u64)
            .await
            .map_err(|e| Failure::lock("force-unlocking", &e));
    }
    keys::delete_fenced(client, &target.key, target.create_revision).await
}

/// Writes the force-unlock marker that `distlock watch` looks for.
async fn mark(client: &mut Client, namespace: &str, name: &str, token: i64) -> Result<(), Failure> {
    let lease = client
        .lease_grant(keys::FORCE_MARKER_TTL_SECS, None)
        .await
        .map_err(|e| connect::etcd_failed("granting the marker's lease", &e))?;
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let value = json!({"token": token, "at_ms": at_ms, "pid": std::process::id()}).to_string();
    client
        .put(
            keys::force_marker(namespace, name, token),
            value,
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .map_err(|e| connect::etcd_failed("writing the marker", &e))?;
    Ok(())
}

/// Asks a yes/no question on the terminal; anything but `y`/`yes` is no.
fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
