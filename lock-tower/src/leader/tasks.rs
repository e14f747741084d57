//! A [`Candidacy`](super::Candidacy)'s two background tasks and the
//! [`State`] they publish: one campaigns (again after each loss), one
//! follows the election's shared watch.

use std::sync::Arc;
use std::time::Duration;

use distlock::{Election, ErrorCode, Leader, LeaderChanges, Leadership};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The first pause after a failed campaign, and the pause after a loss.
const RETRY_MIN: Duration = Duration::from_millis(200);

/// The longest pause between failed campaigns.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the tasks publish; read on every request.
#[derive(Default)]
pub(super) struct State {
    /// This server's leadership, from the campaign's win until the task
    /// sees it lost (readers check `is_held` themselves: the loss deadline
    /// passes on their clock before the task runs).
    pub(super) leading: Option<Arc<Leadership>>,
    /// The leader as last observed (`Some(None)`: nobody leads); `None`
    /// until the first observation.
    pub(super) observed: Option<Option<Leader>>,
}

/// Campaigns with `value` until `stop`, again after each loss; returns the
/// leadership it holds when stopped (for `resign`). Ends when the manager
/// is closed.
pub(super) async fn campaign(
    election: Arc<Election>,
    value: Vec<u8>,
    state: Arc<watch::Sender<State>>,
    stop: CancellationToken,
) -> Option<Arc<Leadership>> {
    let name = election.name().to_owned();
    let mut pause = RETRY_MIN;
    loop {
        let won = tokio::select! {
            // Dropping the campaign withdraws the candidacy.
            _ = stop.cancelled() => return None,
            won = election.campaign(value.clone()) => won,
        };
        let leadership = match won {
            Ok(leadership) => Arc::new(leadership),
            Err(err) if err.code() == ErrorCode::Closed => {
                debug!(election = %name, "the manager is closed; the candidacy ends");
                return None;
            }
            Err(err) => {
                warn!(election = %name, %err, retry_in = ?pause, "campaign failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY_MAX);
                continue;
            }
        };
        pause = RETRY_MIN;
        info!(
            election = %name,
            fencing_token = leadership.fencing_token(),
            "this server leads"
        );
        state.send_modify(|s| s.leading = Some(Arc::clone(&leadership)));
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = leadership.lost() => false,
        };
        state.send_modify(|s| s.leading = None);
        if stopped {
            return Some(leadership);
        }
        warn!(
            election = %name,
            fencing_token = leadership.fencing_token(),
            "this server's leadership was lost; campaigning again"
        );
        // Resigned once the requests it serves have ended (a lost key is
        // deleted only if it is still ours).
        drop(leadership);
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(RETRY_MIN) => {}
        }
    }
}

/// Publishes every leader `changes` reports until `stop` or the manager is
/// gone. A failed watch keeps the last leader: the stream resumes on its
/// own, and a stale leader only costs a client one more redirect.
pub(super) async fn observe(
    mut changes: LeaderChanges,
    state: Arc<watch::Sender<State>>,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => return,
            change = changes.next() => change,
        };
        match change {
            None => return,
            Some(Ok(leader)) => state.send_modify(|s| s.observed = Some(leader)),
            Some(Err(err)) => debug!(%err, "observing the election failed for a while"),
        }
    }
}
