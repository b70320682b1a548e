//! Throttled `Event::Bytes`: a download delivers many small reads; the UI needs a few updates.

use std::time::{Duration, Instant};

use crate::events::{Event, Sink};

/// Emit once this many more bytes have arrived...
const EVERY_BYTES: u64 = 64 * 1024;
/// ...or this much time has passed with some progress, whichever comes first.
const EVERY: Duration = Duration::from_millis(100);

pub(super) struct Progress<'a> {
    sink: Sink<'a>,
    total: Option<u64>,
    shown: u64,
    shown_at: Instant,
}

impl<'a> Progress<'a> {
    /// Starts at `done` (more than 0 when resuming) and says so at once.
    pub fn start(sink: Sink<'a>, done: u64, total: Option<u64>, now: Instant) -> Progress<'a> {
        sink(Event::Bytes { done, total });
        Progress {
            sink,
            total,
            shown: done,
            shown_at: now,
        }
    }

    pub fn advance(&mut self, done: u64, now: Instant) {
        let due = done >= self.shown + EVERY_BYTES || now.duration_since(self.shown_at) >= EVERY;
        if due && done > self.shown {
            self.show(done, now);
        }
    }

    /// The last update: always shows `done` unless it is already on screen.
    pub fn finish(&mut self, done: u64, now: Instant) {
        if done != self.shown {
            self.show(done, now);
        }
    }

    fn show(&mut self, done: u64, now: Instant) {
        (self.sink)(Event::Bytes {
            done,
            total: self.total,
        });
        self.shown = done;
        self.shown_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn dones(events: &Mutex<Vec<Event>>) -> Vec<u64> {
        let events = events.lock().unwrap();
        let dones = events.iter().map(|e| match e {
            Event::Bytes {
                done,
                total: Some(1_000_000),
            } => *done,
            other => panic!("unexpected {other:?}"),
        });
        dones.collect()
    }

    #[test]
    fn emits_every_64_kib_within_the_same_instant() {
        let events = Mutex::new(Vec::new());
        let sink = |e: Event| events.lock().unwrap().push(e);
        let now = Instant::now();
        let mut progress = Progress::start(&sink, 0, Some(1_000_000), now);
        for done in (1000..=200_000).step_by(1000) {
            progress.advance(done, now);
        }
        progress.finish(200_000, now);
        assert_eq!(dones(&events), [0, 66_000, 132_000, 198_000, 200_000]);
    }

    #[test]
    fn emits_after_100_ms_with_little_progress() {
        let events = Mutex::new(Vec::new());
        let sink = |e: Event| events.lock().unwrap().push(e);
        let t0 = Instant::now();
        let mut progress = Progress::start(&sink, 500, Some(1_000_000), t0);
        progress.advance(600, t0 + Duration::from_millis(50));
        progress.advance(700, t0 + Duration::from_millis(100));
        progress.advance(700, t0 + Duration::from_millis(300)); // no progress: nothing new to show
        progress.finish(700, t0 + Duration::from_millis(301));
        assert_eq!(dones(&events), [500, 700]);
    }
}
