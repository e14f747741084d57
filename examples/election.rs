//! Leader election: three replica processes campaign to run the scheduler;
//! one leads, the leader is killed (SIGKILL: no resign, no lease revoke),
//! another takes over within the TTL; it proclaims a new value, then
//! resigns and the third leads at once. An observer (this process) prints
//! every change.
//!
//! `cargo run -p distlock-examples --example election` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distlock::{EtcdConfig, Leader, Leadership, LockManager, LockOptions};
use tokio::process::{Child, Command};
use tokio::time::sleep;

const NAMESPACE: &str = "/election-example";
const ELECTION: &str = "scheduler";
/// How long a killed leader's candidacy outlives it: the failover bound.
const TTL: Duration = Duration::from_secs(3);

fn opts() -> LockOptions {
    LockOptions::default().ttl(TTL) // renewed every TTL/3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("replica") {
        let id: u32 = args
            .next()
            .and_then(|a| a.parse().ok())
            .expect("replica id");
        let endpoints: Vec<String> = args.collect();
        return replica(id, endpoints).await;
    }

    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let observer = LockManager::connect(EtcdConfig::new(etcd.endpoints()), NAMESPACE).await?;
    let election = observer.new_election(ELECTION, opts())?;
    let mut changes = election.observe();

    println!(
        "== three replicas campaign for `{ELECTION}` (TTL {TTL:?}); the first to campaign leads"
    );
    let started = Instant::now();
    let mut replicas: Vec<Child> = (1..=3)
        .map(|id| spawn_replica(id, &etcd.endpoints()))
        .collect();

    let mut killed_at = None;
    let mut previous: Option<Leader> = None;
    loop {
        let change = tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .map_err(|_| "no change for 30 s")?
            .ok_or("the observer ended")?;
        let now = match change {
            Ok(now) => now,
            Err(e) => {
                say("observer", format!("watch failing for now: {e}"));
                continue;
            }
        };
        let at = format!("t={:.2}s", started.elapsed().as_secs_f64());
        match (&previous, &now) {
            (_, None) => say("observer", format!("{at} nobody leads")),
            (Some(p), Some(n)) if p.fencing_token == n.fencing_token => say(
                "observer",
                format!("{at} the leader proclaims `{}`", text(&n.value)),
            ),
            (_, Some(n)) => {
                let after = killed_at
                    .take()
                    .map(|k: Instant| format!(", {:.2}s after the kill", k.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                say(
                    "observer",
                    format!(
                        "{at} new leader `{}` (fencing token {}){after}",
                        text(&n.value),
                        n.fencing_token
                    ),
                );
            }
        }
        // The story: kill the first leader once it has worked a little.
        if previous.is_none() && now.is_some() && replicas[0].id().is_some() {
            sleep(Duration::from_millis(1200)).await;
            replicas[0].kill().await?;
            killed_at = Some(Instant::now());
            say(
                "demo",
                "killed replica 1 with SIGKILL: its candidacy stays until its lease runs out",
            );
        }
        let done = previous.is_some() && now.is_none();
        previous = now;
        if done {
            break;
        }
    }
    for mut replica in replicas {
        let _ = replica.wait().await;
    }
    observer.close().await;
    println!("== done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One replica: campaigns, then works as the scheduler while it leads.
/// Replica 1 works until it is killed; the others work a few ticks,
/// proclaim, and resign.
async fn replica(
    id: u32,
    endpoints: Vec<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let who = format!("replica {id}");
    let manager = LockManager::connect(EtcdConfig::new(endpoints), NAMESPACE).await?;
    let election = manager.new_election(ELECTION, opts())?;
    sleep(Duration::from_millis(300) * (id - 1)).await; // campaign in order 1, 2, 3
    let value = format!("replica-{id} (pid {})", std::process::id());
    say(&who, format!("campaigns as `{value}`"));
    let forever = id == 1;
    let worked = election
        .run_while_leader(value.clone(), |leading: Arc<Leadership>| async move {
            let token = leading.fencing_token();
            say(&who, format!("leads (fencing token {token}); scheduling"));
            for tick in 1.. {
                sleep(Duration::from_millis(400)).await;
                say(
                    &who,
                    format!("tick {tick}: scheduled jobs with token {token}"),
                );
                if !forever && tick == 3 {
                    break;
                }
            }
            leading.proclaim(format!("{value}, draining")).await?;
            sleep(Duration::from_millis(300)).await;
            say(&who, "resigns: the next candidate leads at once");
            Ok::<_, distlock::LockError>(())
        })
        .await;
    match worked {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => say(&format!("replica {id}"), format!("stopped: {e}")),
    }
    manager.close().await;
    Ok(())
}

fn spawn_replica(id: u32, endpoints: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .arg("replica")
        .arg(id.to_string())
        .args(endpoints)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a replica process")
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn say(who: &str, what: impl std::fmt::Display) {
    println!("  [{who:>9}] {what}");
}
