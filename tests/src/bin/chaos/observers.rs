//! The observers rule: what each election observer was told is what
//! happened (see [`check`] and docs/chaos.md). Its unit tests, on whole
//! histories, are with the checker's.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checker::{who, Section, Violation};
use crate::history::Event;

/// What the elections' observers saw (see [`check`]).
#[derive(Debug, Default)]
pub struct Observed {
    /// Observers (one per process and election).
    pub observers: u64,
    /// Changes they were told of (a new leader, a new value, no leader).
    pub changes: u64,
    /// Error items (the watch failed for a while, or an observer fell behind).
    pub errors: u64,
    /// Leaders' sections (campaigns won).
    pub leaders: u64,
    /// Of those, the ones whose token some observer saw.
    pub leaders_seen: u64,
}

/// What a candidate proposed: a campaign's value, or a proclaimed one.
struct Proposal<'e> {
    /// When it was asked for.
    t: u64,
    /// The leadership's token, if the campaign won.
    token: Option<u64>,
    /// Which campaign (the value up to its last `/`: see `elect.rs`).
    campaign: &'e str,
    /// 0 for the campaign's value, then one per proclaim.
    n: u64,
    event: &'e Event,
}

/// The observers rule. For each observer (a process's stream of one
/// election's changes, in order):
///
/// - the leaders' tokens never decrease, and a token it saw go never comes
///   back;
/// - each leader it was told of is a value a candidate proposed (a
///   campaign's, or a proclaim's) before it was seen, with that
///   leadership's token, and one leadership's values come in the order it
///   proclaimed them;
/// - no change contradicts a leader's section that held throughout the
///   time the change can have happened: a leader (or no leader) whose state
///   is newer than the proposal of its value (and than the previous
///   change's) yet older than its sighting, while another section of the
///   election held from before that to after it (not cut off by a fault,
///   nor near a paused etcd leader's resume);
/// - its last view, recorded once the run is quiet, is the election's final
///   state (the driver's read after every worker exited); a worker that was
///   not killed must record one.
pub fn check(
    events: &[Event],
    leaders: &BTreeMap<&str, Vec<&Section>>,
    solid: &dyn Fn(&Section) -> bool,
    died: &HashMap<String, u64>,
    v: &mut Vec<Violation>,
) -> Observed {
    let mut out = Observed::default();
    let mut won: HashMap<(&str, u64), u64> = HashMap::new();
    for e in events.iter().filter(|e| {
        e.op == "acquire"
            && e.phase == "ok"
            && e.kind.as_deref().is_some_and(|k| k.starts_with("elect."))
    }) {
        if let (Some(id), Some(token)) = (e.id, e.token) {
            won.insert((e.p.as_str(), id), token);
        }
    }
    fn split(value: &str) -> Option<(&str, u64)> {
        let (campaign, n) = value.rsplit_once('/')?;
        Some((campaign, n.parse().ok()?))
    }
    let mut proposals: HashMap<(&str, &str), Proposal> = HashMap::new();
    let mut campaign_of: HashMap<(&str, u64), &str> = HashMap::new();
    for e in events.iter().filter(|e| e.phase == "invoke") {
        let campaign =
            e.op == "acquire" && e.kind.as_deref().is_some_and(|k| k.starts_with("elect."));
        if !campaign && e.op != "proclaim" {
            continue;
        }
        let (Some(key), Some(value)) = (e.key.as_deref(), e.value.as_deref()) else {
            continue;
        };
        let Some((which, n)) = split(value) else {
            continue;
        };
        let token = if campaign {
            e.id.and_then(|id| won.get(&(e.p.as_str(), id)).copied())
        } else {
            e.token
        };
        if let (true, Some(token)) = (campaign, token) {
            campaign_of.insert((key, token), which);
        }
        proposals.insert(
            (key, value),
            Proposal {
                t: e.t,
                token,
                campaign: which,
                n,
                event: e,
            },
        );
    }
    let finals: HashMap<&str, &Event> = events
        .iter()
        .filter(|e| e.op == "final" && e.kind.as_deref() == Some("election"))
        .filter_map(|e| Some((e.key.as_deref()?, e)))
        .collect();
    let started: HashMap<&str, u64> = events
        .iter()
        .filter(|e| e.op == "proc" && e.phase == "start")
        .map(|e| (e.p.as_str(), e.t))
        .collect();
    let mut streams: BTreeMap<(&str, &str), Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.op == "observe") {
        if let Some(key) = e.key.as_deref() {
            streams.entry((e.p.as_str(), key)).or_default().push(e);
        }
    }
    let none: Vec<&Section> = Vec::new();
    let mut seen: HashSet<(&str, u64)> = HashSet::new();
    for ((p, key), stream) in &streams {
        out.observers += 1;
        let sections = leaders.get(key).unwrap_or(&none);
        let mut flag = |what: String, mut with: Vec<Event>, e: &Event| {
            with.insert(0, e.clone());
            v.push(Violation {
                rule: "observers",
                what: format!("{key}: {p}'s observer {what}"),
                events: with,
            });
        };
        // A section that held from before `from` to after `to`, other than
        // the one with `token`.
        let held_throughout = |from: u64, to: u64, token: Option<u64>| {
            sections
                .iter()
                .copied()
                .find(|s| Some(s.token) != token && s.start <= from && s.end >= to && solid(s))
        };
        let acquired = |s: &Section| {
            events
                .iter()
                .find(|e| {
                    e.op == "acquire" && e.phase == "ok" && e.p == s.p && e.sec == Some(s.sec)
                })
                .cloned()
                .unwrap_or_default()
        };
        // The earliest time the state of the next change can be from.
        let mut bound = started.get(p).copied().unwrap_or(0);
        let mut highest: Option<u64> = None;
        let mut current: Option<u64> = None;
        let mut current_n = 0;
        let mut gone: HashSet<u64> = HashSet::new();
        let mut last_final = None;
        for e in stream {
            if e.phase == "final" {
                last_final = Some(*e);
                continue;
            }
            match e.outcome.as_deref() {
                Some("leader") => {
                    out.changes += 1;
                    let token = e.token.unwrap_or(0);
                    let value = e.value.as_deref().unwrap_or("");
                    seen.insert((key, token));
                    if let Some(h) = highest.filter(|h| token < *h) {
                        flag(format!("saw token {token} after token {h}"), vec![], e);
                    }
                    if current != Some(token) {
                        if gone.contains(&token) {
                            flag(
                                format!("saw token {token} lead again after it had gone"),
                                vec![],
                                e,
                            );
                        }
                        gone.extend(current);
                        current_n = 0;
                    }
                    match proposals.get(&(*key, value)) {
                        None => flag(
                            format!("saw {value:?} (token {token}), which no candidate proposed"),
                            vec![],
                            e,
                        ),
                        Some(pr) => {
                            let with = vec![pr.event.clone()];
                            if pr.t > e.t {
                                flag(
                                    format!("saw {value:?} before it was proposed"),
                                    with.clone(),
                                    e,
                                );
                            }
                            let other = campaign_of
                                .get(&(*key, token))
                                .is_some_and(|c| *c != pr.campaign);
                            match pr.token {
                                Some(t) if t != token => flag(
                                    format!("saw {value:?} with token {token}, but its leadership's token is {t}"),
                                    with.clone(),
                                    e,
                                ),
                                None if other => flag(
                                    format!("saw {value:?} with token {token}, which another campaign won"),
                                    with.clone(),
                                    e,
                                ),
                                _ => {}
                            }
                            if pr.n < current_n {
                                flag(
                                    format!(
                                        "saw {value:?} after a later proclaim of that leadership"
                                    ),
                                    with,
                                    e,
                                );
                            }
                            current_n = current_n.max(pr.n);
                            bound = bound.max(pr.t);
                        }
                    }
                    if let Some(s) = held_throughout(bound, e.t, Some(token)) {
                        flag(
                            format!(
                                "saw token {token} lead at {:.3} s, while {} (token {}) led from {:.3} s to {:.3} s",
                                e.t as f64 / 1e6,
                                who(s),
                                s.token,
                                s.start as f64 / 1e6,
                                s.end as f64 / 1e6
                            ),
                            vec![acquired(s)],
                            e,
                        );
                    }
                    highest = highest.max(Some(token));
                    current = Some(token);
                }
                Some("none") => {
                    out.changes += 1;
                    if let Some(s) = held_throughout(bound, e.t, None) {
                        flag(
                            format!(
                                "saw no leader at {:.3} s, while {} (token {}) led from {:.3} s to {:.3} s",
                                e.t as f64 / 1e6,
                                who(s),
                                s.token,
                                s.start as f64 / 1e6,
                                s.end as f64 / 1e6
                            ),
                            vec![acquired(s)],
                            e,
                        );
                    }
                    gone.extend(current.take());
                }
                _ => out.errors += 1,
            }
        }
        match (last_final, finals.get(key)) {
            (Some(mine), Some(fin)) => {
                let view = |e: &Event| (e.outcome.clone(), e.token, e.value.clone());
                if view(mine) != view(fin) {
                    let show = |e: &Event| match e.outcome.as_deref() {
                        Some("leader") => format!(
                            "{:?} (token {})",
                            e.value.as_deref().unwrap_or(""),
                            e.token.unwrap_or(0)
                        ),
                        other => other.unwrap_or("nothing").to_owned(),
                    };
                    flag(
                        format!(
                            "ended on {}, but the final state is {}",
                            show(mine),
                            show(fin)
                        ),
                        vec![(*fin).clone()],
                        mine,
                    );
                }
            }
            (None, _) if !died.contains_key(*p) => {
                if let Some(e) = stream.last() {
                    flag("recorded no last view".to_owned(), vec![], e);
                }
            }
            _ => {}
        }
    }
    for s in leaders.values().flatten() {
        if s.kind == crate::elect::USURP {
            continue;
        }
        out.leaders += 1;
        if seen.contains(&(s.key.as_str(), s.token)) {
            out.leaders_seen += 1;
        }
    }
    out
}
