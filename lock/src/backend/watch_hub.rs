//! One etcd watch stream per manager, carrying every wait for a deleted key.
//!
//! A wait is one watcher on the shared stream, with a watch id chosen by us
//! so responses can be routed back (client-chosen ids need etcd 3.4+,
//! checked at connect) — or it joins a watcher that waits for the same key
//! from an earlier revision (see [`Group`]): the K readers of one manager
//! behind a writer share one watcher, and its one event wakes them all at
//! once rather than one event each, spread over a millisecond. A watcher is
//! cancelled on etcd shortly after it fired or its last waiter went away
//! (with the others of that moment, after the reads that the waiters it
//! woke make: see [`Stream::cancel_later`]). Compared with a stream per
//! wait, a wait costs one message on an open stream instead of a new HTTP/2
//! stream, or none.
//!
//! Failure handling, in the stream task ([`run`]):
//! - **Broken stream.** Every pending wait fails transiently (its caller
//!   re-checks and waits again) and the next wait opens a new stream.
//! - **Silent stream.** A stream can stall without breaking (a stuck member,
//!   a half-dead connection that HTTP/2 keep-alive has not caught yet). While
//!   waits are pending, a stream silent for a request timeout is asked for a
//!   progress notification (etcd 3.4+ answers at once); no answer within
//!   another request timeout counts as broken.
//! - **Expired auth token.** etcd checks a watch's permission with the token
//!   the stream was opened with, so once that token expired (etcd's
//!   `--auth-token-ttl`, 300 s by default) every new watch on the stream is
//!   cancelled with "permission denied" / "invalid auth token". The task then
//!   re-authenticates, reopens the stream and registers the pending watches
//!   again. A watch refused again on the fresh stream is a real denial: its
//!   waiter gets `PermissionDenied`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::errors::map_error;
use super::watch_groups::{Fired, ReadAheads, Waits};
use super::{ReadAfter, Woken};
use crate::error::{ErrorCode, LockError, Result};

enum Command {
    Watch {
        id: i64,
        key: Vec<u8>,
        from: i64,
        /// Fire on puts too, not only on deletes.
        puts: bool,
        fired: Fired,
        then: Option<ReadAfter>,
    },
    Cancel {
        id: i64,
    },
}

/// The shared watch stream of one etcd backend.
pub(crate) struct WatchHub {
    client: Client,
    request_timeout: Duration,
    next_id: AtomicI64,
    /// The reads made for waits that fired (see `Group::wake`).
    read: ReadAheads,
    /// Commands to the task that owns the stream; replaced when it died.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

/// Cancels a wait on the stream when the waiter goes away before it is
/// told (once told, the stream task holds nothing of it).
struct CancelOnDrop {
    id: i64,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Cancel { id: self.id });
        }
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
    pub(crate) fn new(client: Client, request_timeout: Duration, read: ReadAheads) -> Self {
        WatchHub {
            client,
            request_timeout,
            next_id: AtomicI64::new(1),
            read,
            commands: Mutex::new(None),
        }
    }

    /// Resolves once `key` may have been deleted (or, with `puts`, changed)
    /// at or after revision `from` (an event, or etcd cancelling the watch,
    /// e.g. after compaction).
    pub(crate) async fn wait(&self, key: &[u8], from: i64, puts: bool) -> Result<()> {
        self.wait_then(key, from, puts, None).await.map(drop)
    }

    /// [`wait`](WatchHub::wait), then the read `then` asks for, made with
    /// the other waits the same event wakes (see `Group::wake`): `None` if
    /// it was not asked for or did not answer.
    pub(crate) async fn wait_then(
        &self,
        key: &[u8],
        from: i64,
        puts: bool,
        then: Option<ReadAfter>,
    ) -> Result<Woken> {
        let (fired, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let commands = self.commands();
        let watch = Command::Watch {
            id,
            key: key.to_vec(),
            from,
            puts,
            fired,
            then,
        };
        commands.send(watch).map_err(|_| broken())?;
        let mut cancel = CancelOnDrop {
            id,
            commands: Some(commands),
        };
        let told = rx.await;
        cancel.commands = None;
        told.map_err(|_| broken())?
    }

    /// The live stream task's command channel, starting a task if needed.
    fn commands(&self) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = slot.as_ref().filter(|c| !c.is_closed()) {
            return live.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let read = Arc::clone(&self.read);
        tokio::spawn(run(self.client.clone(), self.request_timeout, read, rx));
        *slot = Some(tx.clone());
        tx
    }
}

/// Why the stream task gives up its stream.
enum Broken {
    /// Drop the stream; pending waits fail transiently.
    Transient,
    /// Every pending wait fails with this error.
    Fail(LockError),
}

/// The stream and what the task knows about its liveness.
struct Stream {
    client: Client,
    request_timeout: Duration,
    stream: Option<WatchStream>,
    /// When the stream last proved alive (a message), or was last asked for
    /// an answer (a new watch, while no progress request is outstanding).
    last_heard: Instant,
    /// When a progress request is due back, if one is outstanding.
    progress_due: Option<Instant>,
    /// Watches sent on this stream that etcd has not yet answered with a
    /// "created" (or refused) response, oldest first. etcd answers creates in
    /// order, which identifies a refusal that carries no watch id.
    unanswered: VecDeque<i64>,
    /// Watches of this stream to cancel on etcd at `cancel_at` (see
    /// [`Stream::cancel_later`]).
    deferred: Vec<i64>,
    cancel_at: Option<Instant>,
}

/// How long the cancel of a watch that fired (or whose waiter left) waits,
/// to be sent with the others of that moment.
const CANCEL_DELAY: Duration = Duration::from_millis(50);

fn watch_options(id: i64, from: i64, puts: bool) -> WatchOptions {
    let options = WatchOptions::new()
        .with_start_revision(from)
        .with_watch_id(id);
    if puts {
        options
    } else {
        options.with_filters([WatchFilterType::NoPut])
    }
}

impl Stream {
    /// Runs one request on the stream, bounded by the request timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> std::result::Result<T, Broken> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                debug!(%err, what, "watch stream request failed");
                let err = map_error(what, err);
                Err(if err.is_transient() {
                    Broken::Transient
                } else {
                    Broken::Fail(err)
                })
            }
            Err(_) => {
                debug!(what, "watch stream request got no answer in time");
                Err(Broken::Transient)
            }
        }
    }

    /// Registers a watch, opening the stream with it if there is none.
    async fn watch(
        &mut self,
        id: i64,
        key: &[u8],
        from: i64,
        puts: bool,
    ) -> std::result::Result<(), Broken> {
        let options = Some(watch_options(id, from, puts));
        match self.stream.take() {
            Some(mut stream) => {
                self.bounded("watch", stream.watch(key, options)).await?;
                self.stream = Some(stream);
            }
            None => {
                let mut client = self.client.clone();
                // Opening waits for etcd's first answer: bounded too.
                let stream = self.bounded("watch", client.watch(key, options)).await?;
                self.stream = Some(stream);
                self.unanswered.clear();
                self.progress_due = None;
                // The old stream's watches went with it.
                self.deferred.clear();
                self.cancel_at = None;
            }
        }
        self.unanswered.push_back(id);
        // A new watch expects an answer: count the silence from now, unless
        // a progress request is outstanding (new watches must not postpone
        // the verdict on a stalled stream forever).
        if self.progress_due.is_none() {
            self.last_heard = Instant::now();
        }
        Ok(())
    }

    /// Re-authenticates and reopens the stream with every pending watch.
    async fn reopen(&mut self, waiting: &Waits) -> std::result::Result<(), Broken> {
        self.stream = None;
        let client = self.client.clone();
        self.bounded("authenticate", client.refresh_token()).await?;
        for (&id, group) in &waiting.groups {
            self.watch(id, &group.key, group.from, group.puts).await?;
        }
        Ok(())
    }

    async fn cancel(&mut self, id: i64) -> std::result::Result<(), Broken> {
        if let Some(mut stream) = self.stream.take() {
            self.bounded("watch cancel", stream.cancel(id)).await?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Cancels a watch on etcd soon rather than now. One release wakes
    /// every waiter behind it (K readers), and K cancels sent at that moment
    /// are served by etcd ahead of the reads those waiters make next: with
    /// 64 readers in 8 managers, the first reads took ~4 ms instead of ~1.
    /// A watch kept a moment longer costs etcd one idle watcher; an event it
    /// still sends finds no waiter and is dropped.
    fn cancel_later(&mut self, id: i64) {
        if self.stream.is_some() {
            self.deferred.push(id);
            self.cancel_at
                .get_or_insert_with(|| Instant::now() + CANCEL_DELAY);
        }
    }

    /// Sends the cancels that [`cancel_later`](Self::cancel_later) held back.
    async fn cancel_deferred(&mut self) -> std::result::Result<(), Broken> {
        self.cancel_at = None;
        for id in std::mem::take(&mut self.deferred) {
            self.cancel(id).await?;
        }
        Ok(())
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.progress_due = None;
    }

    /// When the liveness check is next due.
    fn check_at(&self) -> Instant {
        self.progress_due
            .unwrap_or(self.last_heard + self.request_timeout)
    }

    /// The liveness check: asks a silent stream for progress, or gives up on
    /// one that did not answer.
    async fn check(&mut self) -> std::result::Result<(), Broken> {
        if self.progress_due.is_some() {
            debug!(
                "etcd watch stream silent for {:?} after a progress request; reopening",
                self.request_timeout
            );
            return Err(Broken::Transient);
        }
        if let Some(mut stream) = self.stream.take() {
            self.bounded("watch progress", stream.request_progress())
                .await?;
            self.stream = Some(stream);
        }
        self.progress_due = Some(Instant::now() + self.request_timeout);
        Ok(())
    }
}

/// Whether etcd cancelled a watch for want of permission, which is also what
/// an expired auth token looks like (etcd 3.4 says "permission denied", 3.5
/// "invalid auth token").
fn refused(resp: &WatchResponse) -> bool {
    let reason = resp.cancel_reason();
    resp.canceled() && (reason.contains("permission denied") || reason.contains("auth"))
}

/// Owns the stream: opens it with the first watch, forwards commands, routes
/// responses to their waiters, checks that it stays alive. Ends (failing
/// every pending waiter) when the stream breaks or the hub is gone.
async fn run(
    client: Client,
    request_timeout: Duration,
    read: ReadAheads,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut waiting = Waits::default();
    let mut stream = Stream {
        client,
        request_timeout,
        stream: None,
        last_heard: Instant::now(),
        progress_due: None,
        unanswered: VecDeque::new(),
        deferred: Vec::new(),
        cancel_at: None,
    };
    let outcome = loop {
        let check_at = stream.check_at();
        let step = tokio::select! {
            command = commands.recv() => match command {
                None => break Ok(()),
                Some(command) => {
                    // With the others queued meanwhile: one turn of this
                    // loop (and of its timers) for a burst of commands.
                    let mut step = obey(command, &mut stream, &mut waiting).await;
                    while let (Ok(()), Ok(next)) = (&step, commands.try_recv()) {
                        step = obey(next, &mut stream, &mut waiting).await;
                    }
                    step
                }
            },
            message = async { stream.stream.as_mut()?.message().await.transpose() },
                if stream.stream.is_some() =>
            {
                match message {
                    Some(Ok(resp)) => {
                        stream.heard();
                        route(resp, &mut stream, &mut waiting, &read).await
                    }
                    Some(Err(err)) => {
                        debug!(%err, "watch stream failed");
                        Err(Broken::Transient)
                    }
                    None => Err(Broken::Transient),
                }
            }
            _ = tokio::time::sleep_until(check_at),
                if stream.stream.is_some() && !waiting.is_empty() =>
            {
                stream.check().await
            }
            _ = tokio::time::sleep_until(stream.cancel_at.unwrap_or(check_at)),
                if stream.cancel_at.is_some() =>
            {
                stream.cancel_deferred().await
            }
        };
        if let Err(broken) = step {
            break Err(broken);
        }
    };
    if let Err(Broken::Fail(err)) = outcome {
        for (_, group) in waiting.groups {
            group.fail(|| LockError::with_source(err.code(), "etcd watch failed", err.to_string()));
        }
    }
    // Otherwise the pending senders drop: their waits fail transiently.
}

/// Carries out one command.
async fn obey(
    command: Command,
    stream: &mut Stream,
    waiting: &mut Waits,
) -> std::result::Result<(), Broken> {
    match command {
        Command::Watch {
            id,
            key,
            from,
            puts,
            fired,
            then,
        } => match waiting.add(id, key.clone(), from, puts, fired, then) {
            Some(watch) => stream.watch(watch, &key, from, puts).await,
            None => Ok(()),
        },
        Command::Cancel { id } => {
            // Still pending: the waiter left early; cancel on etcd once no
            // other wait needs the watcher.
            if let Some(watch) = waiting.leave(id) {
                stream.cancel_later(watch);
            }
            Ok(())
        }
    }
}

/// Handles one response: wakes the waiter of a delete or a cancelled watch,
/// and recovers from watches refused because the stream's token expired.
async fn route(
    resp: WatchResponse,
    stream: &mut Stream,
    waiting: &mut Waits,
    read: &ReadAheads,
) -> std::result::Result<(), Broken> {
    let mut id = resp.watch_id();
    if resp.created() {
        let sent = stream.unanswered.pop_front();
        match sent {
            // etcd 3.4 refuses a watch with watch id -1: it is the oldest
            // unanswered one.
            Some(sent) if id == -1 => id = sent,
            Some(sent) if sent == id => {}
            _ => {
                return Err(Broken::Fail(LockError::new(
                    ErrorCode::Backend,
                    format!(
                        "etcd answered watch {sent:?} as watch {id}: the server ignores \
                         watch ids chosen by the client (etcd older than 3.4?)"
                    ),
                )))
            }
        }
    }
    debug!(
        id,
        created = resp.created(),
        canceled = resp.canceled(),
        reason = resp.cancel_reason(),
        events = resp.events().len(),
        "watch response"
    );
    if refused(&resp) {
        let Some(group) = waiting.groups.get_mut(&id) else {
            return Ok(());
        };
        if group.reauthenticated {
            let group = waiting.take(id).expect("just found");
            let denied = format!(
                "etcd refused to watch {}: {}",
                crate::key::shown(&group.key),
                resp.cancel_reason()
            );
            group.fail(|| LockError::new(ErrorCode::PermissionDenied, denied.clone()));
            return Ok(());
        }
        debug!(
            key = %crate::key::shown(&group.key),
            reason = resp.cancel_reason(),
            "watch refused; re-authenticating and reopening the stream"
        );
        group.reauthenticated = true;
        return stream.reopen(waiting).await;
    }
    // Put events come only on watches that asked for them.
    let fired = resp
        .events()
        .iter()
        .any(|e| matches!(e.event_type(), EventType::Delete | EventType::Put));
    if fired || resp.canceled() {
        if let Some(group) = waiting.take(id) {
            group.wake(read);
            if !resp.canceled() {
                stream.cancel_later(id);
            }
        }
    }
    Ok(())
}
