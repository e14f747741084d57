//! Where a hand-off's time goes: distlock's own `distlock_handoff_seconds`
//! histogram (from the waiter's wake-up, the watch event, to its confirmed
//! win: the confirmation read, and for a semaphore the promotion's touch)
//! per lock name, read from an in-process recorder.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// The process's metrics recorder, installed once.
pub struct Profile {
    snapshotter: Snapshotter,
}

impl Profile {
    /// Installs an in-process recorder as the global one.
    pub fn install() -> Profile {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("no other recorder in this bench");
        Profile { snapshotter }
    }

    /// The wake-up-to-win samples recorded since the last call, by lock name
    /// (managers opt in to the name label with `with_metric_names(true)`).
    pub fn wake_to_win(&self) -> HashMap<String, Vec<Duration>> {
        let mut by_name: HashMap<String, Vec<Duration>> = HashMap::new();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if key.key().name() != distlock::metrics::HANDOFF_SECONDS {
                continue;
            }
            let Some(name) = key.key().labels().find(|l| l.key() == "name") else {
                continue;
            };
            if let DebugValue::Histogram(xs) = value {
                by_name
                    .entry(name.value().to_owned())
                    .or_default()
                    .extend(xs.iter().map(|x| Duration::from_secs_f64(x.into_inner())));
            }
        }
        by_name
    }
}
