//! `list`, `info` and `force-unlock`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use distlock::{LockInfo, LockManager};
use etcd_client::PutOptions;
use serde_json::{json, Value};

use crate::args::Global;
use crate::connect;
use crate::exit::{self, Failure};
use crate::keys;
use crate::show;

/// `distlock list [PREFIX] [--json]`.
pub async fn list(global: &Global, prefix: &str, json: bool) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let locks = manager.list_locks(prefix).await;
    manager.close().await;
    let locks = locks.map_err(|e| Failure::lock("listing locks", &e))?;
    if json {
        let all: Vec<Value> = locks.iter().map(show::info_json).collect();
        println!("{}", pretty(&Value::Array(all)));
        return Ok(exit::SUCCESS);
    }
    if locks.is_empty() {
        println!(
            "no locks held under {}{prefix}",
            keys::root(&global.namespace)
        );
        return Ok(exit::SUCCESS);
    }
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                show::owner(&l.owner).to_owned(),
                l.fencing_token.to_string(),
                show::since(l.create_time),
                show::until(l.expire_time),
                l.waiters.to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "OWNER",
        "TOKEN",
        "HELD FOR",
        "EXPIRES IN",
        "WAITERS",
    ];
    print!("{}", show::table(&header, &rows));
    Ok(exit::SUCCESS)
}

/// `distlock info NAME [--json]`: exit 1 when nobody holds the lock.
pub async fn info(global: &Global, name: &str, json: bool) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let info = manager.lock_info(name).await;
    manager.close().await;
    let Some(info) = info.map_err(|e| Failure::lock("reading the lock", &e))? else {
        if json {
            println!("null");
        } else {
            println!("{name}: not held");
        }
        return Ok(exit::FAILURE);
    };
    // The public API counts the waiters; their owners are in their keys.
    let mut client = connect::client(global).await?;
    let waiting: Vec<keys::Contender> = keys::read_queue(&mut client, &global.namespace, name)
        .await?
        .into_iter()
        .filter(|c| c.create_revision > info.fencing_token as i64)
        .collect();
    if json {
        let mut object = show::info_json(&info);
        object["waiting"] = waiting
            .iter()
            .map(|w| json!({"owner": w.owner, "key": w.key, "since": show::timestamp(w.since)}))
            .collect();
        println!("{}", pretty(&object));
        return Ok(exit::SUCCESS);
    }
    print_info(&info, &waiting);
    Ok(exit::SUCCESS)
}

fn print_info(info: &LockInfo, waiting: &[keys::Contender]) {
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
    println!("waiters:     {}", info.waiters);
    for (i, w) in waiting.iter().enumerate() {
        println!(
            "  {}. {}  waiting {}  ({})",
            i + 1,
            show::owner(&w.owner),
            show::since(w.since),
            w.key
        );
    }
}

/// `distlock force-unlock NAME [--yes]`: exit 1 when nobody holds the lock or
/// the operator says no.
pub async fn force_unlock(global: &Global, name: &str, yes: bool) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let outcome = force_unlock_with(global, &manager, name, yes).await;
    manager.close().await;
    outcome
}

async fn force_unlock_with(
    global: &Global,
    manager: &LockManager,
    name: &str,
    yes: bool,
) -> Result<i32, Failure> {
    let read = |e| Failure::lock("reading the lock", &e);
    let Some(info) = manager.lock_info(name).await.map_err(read)? else {
        println!("{name}: not held");
        return Ok(exit::FAILURE);
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::new(
                exit::USAGE,
                "stdin is not a terminal, so I cannot ask: add --yes to force-unlock",
            ));
        }
        let question = format!(
            "Force-unlock `{name}`, held by {} for {} (token {})? Its holder loses it. [y/N] ",
            show::owner(&info.owner),
            show::since(info.create_time),
            info.fencing_token
        );
        if !confirm(&question) {
            println!("not unlocked");
            return Ok(exit::FAILURE);
        }
        // The holder may have changed while we asked: remove only the one we named.
        match manager.lock_info(name).await.map_err(read)? {
            Some(now) if now.fencing_token == info.fencing_token => {}
            Some(now) => {
                return Err(Failure::new(
                    exit::FAILURE,
                    format!(
                    "`{name}` changed hands while you were asked (now {}, token {}); not unlocked",
                    show::owner(&now.owner),
                    now.fencing_token
                ),
                ))
            }
            None => {
                println!("{name}: released meanwhile, nothing to do");
                return Ok(exit::FAILURE);
            }
        }
    }
    if let Err(failure) = mark(global, name, info.fencing_token as i64).await {
        eprintln!(
            "distlock: warning: `distlock watch` will show this as a release: {}",
            failure.message
        );
    }
    // Fenced by the token shown: a holder that took over since is left alone.
    let removed = manager
        .force_unlock_token(name, info.fencing_token)
        .await
        .map_err(|e| Failure::lock("force-unlocking", &e))?;
    if removed {
        println!(
            "force-unlocked {name} (was held by {}, token {})",
            show::owner(&info.owner),
            info.fencing_token
        );
        Ok(exit::SUCCESS)
    } else {
        println!("{name}: released or taken over meanwhile; not unlocked");
        Ok(exit::FAILURE)
    }
}

/// Writes the force-unlock marker that `distlock watch` looks for.
async fn mark(global: &Global, name: &str, token: i64) -> Result<(), Failure> {
    let mut client = connect::client(global).await?;
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
            keys::force_marker(&global.namespace, name, token),
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

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
