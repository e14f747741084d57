//! The lock workers' elections, next to their locks: candidates campaign
//! for one of two elections in the four ways (wait, timeout, try, cancelled
//! wait) or through `run_while_leader`; a leader works on the fenced store
//! with its leadership's token, now and then proclaims a new value, and
//! resigns. An observer per process and election records every change of
//! leader it is told of, and its last view once the run is quiet.
//!
//! Every value a candidate proposes is unique, `{process}/{pid}/{campaign}/{n}`
//! (`n` = 0 for the campaign, then one per proclaim), so the checker can
//! tell which campaign and proclaim an observed value came from, and the
//! driver which process a candidate key belongs to.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{Election, ErrorCode, Leader, Leadership, LockManager, LockOptions};

use crate::history::Event;
use crate::prims::{self, attempt, Held, How};
use crate::work::{record_end, Ctx, End, Pending, Stopped};
use crate::worker::ChildArgs;
use crate::Rng;

/// The elections' names (an election's store key is its name: no lock has
/// one of these names).
pub const ELECTIONS: [&str; 2] = ["e0", "e1"];

/// The acquisition kind of a `--broken` worker that acts as the leader it
/// read, without campaigning.
pub const USURP: &str = "elect.usurp";

/// When the observers record their last view: no campaign waits past
/// `stop_at` by more than a 2-s timeout, a leader that wins after it has a
/// short section (see `prims::length`), and a section running at it lasts
/// at most TTL + 1 s more; so by then every leader has resigned.
pub fn quiet_at(args: &ChildArgs) -> u64 {
    args.stop_at + (args.ttl + Duration::from_secs(3)).as_micros() as u64
}

/// One task's handles on the elections.
pub struct Elections {
    list: Vec<(String, Election)>,
}

impl Elections {
    /// Handles on every election of [`ELECTIONS`].
    pub fn new(manager: &LockManager, options: &LockOptions) -> Elections {
        let list = ELECTIONS
            .iter()
            .map(|&name| {
                let election = manager
                    .new_election(name, options.clone())
                    .expect("a valid election");
                (name.to_owned(), election)
            })
            .collect();
        Elections { list }
    }
}

/// The value of campaign `campaign`'s `n`th proposal (see the module docs).
fn proposal(ctx: &Ctx, campaign: u64, n: u32) -> String {
    format!("{}/{}/{campaign}/{n}", ctx.name, std::process::id())
}

/// One round of a task: a campaign for `e0` (75 %) or `e1`, as a section
/// when it leads. 20 % of the rounds go through `run_while_leader`, the rest
/// wait, time out, try or are cancelled as the other primitives' rounds.
/// Half of a `--broken` worker's rounds act as the current leader without
/// campaigning (see [`usurp`]).
pub async fn election_round(ctx: &Ctx, args: &ChildArgs, h: &Elections, rng: &mut Rng) {
    let i = if rng.below(4) < 3 { 0 } else { 1 } % h.list.len();
    let (key, election) = &h.list[i];
    let campaign = ctx.next_id();
    let value = proposal(ctx, campaign, 0);
    if ctx.broken && rng.below(2) == 0 && usurp(ctx, args, key, election, rng).await {
        return;
    }
    if rng.below(100) < 20 {
        return run_while_leader(ctx, args, key, election, campaign, value, rng).await;
    }
    let how = How::pick(rng, false);
    let kind = match how {
        How::Wait => "elect.campaign",
        How::Timeout(_) => "elect.campaign_timeout",
        How::Try => "elect.try_campaign",
        How::Cancel(_) => "elect.cancel",
    };
    let proposed = value.clone();
    let got = attempt(ctx, args, key, kind, how, false, Some(&value), |how| {
        Box::pin(async move {
            Ok(match how {
                How::Try => election.try_campaign(proposed).await?.map(Held::Leader),
                How::Timeout(d) => {
                    Some(Held::Leader(election.campaign_timeout(proposed, d).await?))
                }
                _ => Some(Held::Leader(election.campaign(proposed).await?)),
            })
        })
    })
    .await;
    let Some((Held::Leader(leading), token, sec, _)) = got else {
        return;
    };
    let work = lead(ctx, args, Some(&leading), key, token, sec, campaign, rng);
    let end = if ctx.broken {
        work.await
    } else {
        let lost = leading.lost();
        tokio::select! {
            end = work => end,
            _ = lost => End::Lost,
        }
    };
    record_end(ctx, key, token, sec, &end);
    let id = ctx.next_id();
    let ev = |phase: &str| {
        Event::new("release", phase)
            .id(id)
            .key(key)
            .sec(sec)
            .kind("elect")
    };
    ctx.rec.record(ev("invoke").limit(args.ttl));
    match leading.resign().await {
        Ok(()) => ctx.rec.record(ev("ok").outcome("ok")),
        Err(e) => ctx.rec.record(
            ev("fail")
                .outcome(&format!("{:?}", e.code()))
                .detail(e.to_string()),
        ),
    };
}

/// A round through `run_while_leader`: the section is its work, cancelled
/// by the library if leadership is lost; the call resigns when the work
/// ends, and its outcome is recorded as the section's release.
async fn run_while_leader(
    ctx: &Ctx,
    args: &ChildArgs,
    key: &str,
    election: &Election,
    campaign: u64,
    value: String,
    rng: &mut Rng,
) {
    let clock = ctx.rec.clock();
    let id = ctx.next_id();
    let release = ctx.next_id();
    let ev = |phase: &str| {
        Event::new("acquire", phase)
            .id(id)
            .key(key)
            .kind("elect.run_while_leader")
    };
    let mut invoke = ev("invoke").limit(Duration::from_micros(
        args.stop_at.saturating_sub(clock.now()),
    ));
    invoke.value = Some(value.clone());
    ctx.rec.record(invoke);
    let started = AtomicBool::new(false);
    let run = election.run_while_leader(value, |leading: Arc<Leadership>| {
        let started = &started;
        async move {
            started.store(true, Ordering::SeqCst);
            let token = leading.fencing_token();
            let sec = ctx.next_id();
            ctx.rec.record(ev("ok").outcome("ok").token(token).sec(sec));
            // Records the section's end also when the library drops the
            // work because leadership was lost.
            let mut ending = Ending {
                ctx,
                key,
                token,
                sec,
                release,
                ttl: args.ttl,
                end: None,
            };
            ending.end =
                Some(lead(ctx, args, Some(&*leading), key, token, sec, campaign, rng).await);
        }
    });
    // The campaign is given up when the run stops; the work, once it runs,
    // is not.
    let stop = clock.instant_at(args.stop_at);
    let stopped = async {
        tokio::time::sleep_until(stop.into()).await;
        if started.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        r = run => Some(r),
        _ = stopped => None,
    };
    if !started.load(Ordering::SeqCst) {
        let e = match outcome {
            None => ev("fail").outcome("cancelled"),
            Some(Ok(())) => ev("fail").outcome("error").detail("ran without leading"),
            Some(Err(e)) => ev("fail")
                .outcome("error")
                .detail(format!("{:?}: {e}", e.code())),
        };
        ctx.rec.record(e);
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    }
    let ev = |phase: &str| {
        Event::new("release", phase)
            .id(release)
            .key(key)
            .kind("elect")
    };
    match outcome {
        Some(Ok(())) => ctx.rec.record(ev("ok").outcome("ok")),
        Some(Err(e)) => ctx.rec.record(
            ev("fail")
                .outcome(&format!("{:?}", e.code()))
                .detail(e.to_string()),
        ),
        None => unreachable!("the work's call is not given up"),
    };
}

/// Records the end of a `run_while_leader` section and its release's
/// invoke (the call resigns next) when dropped: lost if the work did not
/// finish.
struct Ending<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    token: u64,
    sec: u64,
    release: u64,
    ttl: Duration,
    end: Option<End>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        let end = self.end.take().unwrap_or(End::Lost);
        record_end(self.ctx, self.key, self.token, self.sec, &end);
        self.ctx.rec.record(
            Event::new("release", "invoke")
                .id(self.release)
                .key(self.key)
                .sec(self.sec)
                .kind("elect")
                .limit(self.ttl),
        );
    }
}

/// `--broken`: reads the leader and, if there is one, acts as it (its
/// token, no campaign, no leadership to lose) for a section. Whether it did.
async fn usurp(ctx: &Ctx, args: &ChildArgs, key: &str, election: &Election, rng: &mut Rng) -> bool {
    let Ok(Some(leader)) = election.leader().await else {
        return false;
    };
    let (id, sec, token) = (ctx.next_id(), ctx.next_id(), leader.fencing_token);
    let ev = |phase: &str| Event::new("acquire", phase).id(id).key(key).kind(USURP);
    ctx.rec.record(ev("invoke").limit(Duration::ZERO));
    ctx.rec.record(ev("ok").outcome("ok").token(token).sec(sec));
    let end = lead(ctx, args, None, key, token, sec, 0, rng).await;
    record_end(ctx, key, token, sec, &end);
    true
}

/// A leader's section: like a lock's (short, long or longer than the TTL;
/// a store access in the middle, a second one at the end of a long one),
/// the store accesses fenced with the leadership's token; 40 % of the
/// leaders proclaim a new value after their first access.
#[allow(clippy::too_many_arguments)]
fn lead<'a>(
    ctx: &'a Ctx,
    args: &'a ChildArgs,
    leading: Option<&'a Leadership>,
    key: &'a str,
    token: u64,
    sec: u64,
    campaign: u64,
    rng: &'a mut Rng,
) -> impl Future<Output = End> + 'a {
    let length = prims::length(ctx, args, rng);
    let proclaim = leading.is_some() && rng.below(100) < 40;
    async move {
        let long = length >= Duration::from_millis(300);
        let holds = || leading.is_none_or(Leadership::is_held);
        tokio::time::sleep(length / 2).await;
        if !ctx.broken && !holds() {
            return End::Lost;
        }
        let first = ctx.increment_as(sec, key, token, Some("elect")).await;
        if first == Err(Stopped::Fenced) && !ctx.broken {
            return End::Lost;
        }
        if let Some(leading) = leading.filter(|_| proclaim && first.is_ok()) {
            let value = proposal(ctx, campaign, 1);
            let id = ctx.next_id();
            let ev = |phase: &str| {
                Event::new("proclaim", phase)
                    .id(id)
                    .sec(sec)
                    .key(key)
                    .token(token)
            };
            let mut invoke = ev("invoke").limit(args.ttl);
            invoke.value = Some(value.clone());
            // The section is dropped mid-proclaim when leadership is lost
            // (the `lost()` branch, or `run_while_leader` cancelling it).
            let pending = Pending::invoked(&ctx.rec, invoke);
            let proclaimed = leading.proclaim(value).await;
            pending.done();
            if let Err(e) = proclaimed {
                ctx.rec.record(
                    ev("fail")
                        .outcome(&format!("{:?}", e.code()))
                        .detail(e.to_string()),
                );
                if e.code() == ErrorCode::Expired && !ctx.broken {
                    return End::Lost;
                }
            } else {
                ctx.rec.record(ev("ok").outcome("ok"));
            }
        }
        tokio::time::sleep(length / 2).await;
        // As every section: no access after one that went unanswered.
        if long && first != Err(Stopped::Unknown) {
            if !ctx.broken && !holds() {
                return End::Lost;
            }
            let _ = ctx.increment_as(sec, key, token, Some("elect")).await;
        }
        End::Done
    }
}

/// A process's observers, one per election, each recording every change it
/// is told of (`observe`/`info`) and keeping its last view.
pub struct Observers {
    list: Vec<Observing>,
    /// The handles observed (kept for as long as the observers run).
    _elections: Elections,
}

/// The last view: `None` before the first item; then the leader, if any.
type View = Arc<Mutex<Option<Option<Leader>>>>;

struct Observing {
    key: String,
    last: View,
    task: tokio::task::JoinHandle<()>,
}

/// An `observe` event of `phase` for `view` of election `key`.
fn view_event(key: &str, phase: &str, view: Option<&Option<Leader>>) -> Event {
    let mut e = Event::new("observe", phase).key(key);
    match view {
        Some(Some(leader)) => {
            e.token = Some(leader.fencing_token);
            e.value = Some(String::from_utf8_lossy(&leader.value).into_owned());
            e.outcome = Some("leader".into());
        }
        Some(None) => e.outcome = Some("none".into()),
        None => e.outcome = Some("unknown".into()),
    }
    e
}

impl Observers {
    /// Starts observing every election of `h`.
    pub fn start(ctx: &Ctx, h: Elections) -> Observers {
        let list = h
            .list
            .iter()
            .map(|(key, election)| {
                let last: View = Arc::default();
                let mut changes = election.observe();
                let (ctx, key2, last2) = (ctx.clone(), key.clone(), last.clone());
                let task = tokio::spawn(async move {
                    while let Some(item) = changes.next().await {
                        match item {
                            Ok(view) => {
                                ctx.rec.record(view_event(&key2, "info", Some(&view)));
                                *last2.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
                            }
                            Err(e) => {
                                ctx.rec.record(
                                    Event::new("observe", "info")
                                        .key(&key2)
                                        .outcome("error")
                                        .detail(format!("{:?}: {e}", e.code())),
                                );
                            }
                        }
                    }
                });
                Observing {
                    key: key.clone(),
                    last,
                    task,
                }
            })
            .collect();
        Observers {
            list,
            _elections: h,
        }
    }

    /// Records each observer's last view (`observe`/`final`) and stops it.
    pub fn finish(self, ctx: &Ctx) {
        for o in self.list {
            let last = o.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            ctx.rec.record(view_event(&o.key, "final", last.as_ref()));
            o.task.abort();
        }
    }
}
