//! One etcd watch stream per manager, carrying every wait for a deleted key.
//!
//! Each wait is one watcher on the shared stream, with a watch id chosen by
//! us so responses can be routed back; it is cancelled on etcd as soon as it
//! fired or its waiter went away. Compared with a stream per wait, a wait costs
//! one message on an open stream instead of a new HTTP/2 stream. When the
//! stream breaks, every pending wait fails transiently (its caller re-checks
//! and waits again) and the next wait opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::error::{LockError, Result};

enum Command {
    Watch {
        id: i64,
        key: String,
        from: i64,
        fired: oneshot::Sender<()>,
    },
    Cancel {
        id: i64,
    },
}

/// The shared watch stream of one etcd backend.
pub(crate) struct WatchHub {
    client: Client,
    next_id: AtomicI64,
    /// Commands to the task that owns the stream; replaced when it died.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

/// Cancels a wait on the stream when the waiter goes away.
struct CancelOnDrop {
    id: i64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Cancel { id: self.id });
    }
}

fn broken() -> LockError {
    LockError::backend(
        "etcd watch stream broke",
        std::io::Error::other("watch stream closed"),
        true,
    )
}

impl WatchHub {
    pub(crate) fn new(client: Client) -> Self {
        WatchHub {
            client,
            next_id: AtomicI64::new(1),
            commands: Mutex::new(None),
        }
    }

    /// Resolves once `key` may have been deleted at or after revision `from`
    /// (a delete event, or etcd cancelling the watch, e.g. after compaction).
    pub(crate) async fn wait_deleted(&self, key: &str, from: i64) -> Result<()> {
        let (fired, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let commands = self.commands();
        let watch = Command::Watch {
            id,
            key: key.to_owned(),
            from,
            fired,
        };
        commands.send(watch).map_err(|_| broken())?;
        let _cancel = CancelOnDrop { id, commands };
        rx.await.map_err(|_| broken())
    }

    /// The live stream task's command channel, starting a task if needed.
    fn commands(&self) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = slot.as_ref().filter(|c| !c.is_closed()) {
            return live.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.client.clone(), rx));
        *slot = Some(tx.clone());
        tx
    }
}

/// Owns the stream: opens it with the first watch, forwards commands, routes
/// responses to their waiters. Ends (dropping every pending waiter) when the
/// stream breaks or the hub is gone.
async fn run(mut client: Client, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut waiting: HashMap<i64, oneshot::Sender<()>> = HashMap::new();
    let mut stream: Option<WatchStream> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Watch { id, key, from, fired }) => {
                    let options = WatchOptions::new()
                        .with_start_revision(from)
                        .with_filters([WatchFilterType::NoPut])
                        .with_watch_id(id);
                    let sent = match stream.as_mut() {
                        Some(s) => s.watch(key, Some(options)).await.map(|_| ()),
                        None => client.watch(key, Some(options)).await.map(|s| stream = Some(s)),
                    };
                    if let Err(err) = sent {
                        debug!(%err, "watch request failed; dropping the stream");
                        return;
                    }
                    waiting.insert(id, fired);
                }
                Some(Command::Cancel { id }) => {
                    // Still pending: the waiter left early; cancel on etcd.
                    if waiting.remove(&id).is_some() {
                        if let Some(s) = stream.as_mut() {
                            if s.cancel(id).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            },
            message = async { stream.as_mut()?.message().await.transpose() }, if stream.is_some() => {
                let resp = match message {
                    Some(Ok(resp)) => resp,
                    Some(Err(err)) => {
                        debug!(%err, "watch stream failed");
                        return;
                    }
                    None => return,
                };
                let deleted = resp.events().iter().any(|e| e.event_type() == EventType::Delete);
                if deleted || resp.canceled() {
                    if let Some(fired) = waiting.remove(&resp.watch_id()) {
                        let _ = fired.send(());
                        if !resp.canceled() {
                            if let Some(s) = stream.as_mut() {
                                let _ = s.cancel(resp.watch_id()).await;
                            }
                        }
                    }
                }
            }
        }
    }
}
