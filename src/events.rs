//! What the engine reports while it works. The engine emits events; `ui` renders them.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A named phase began (e.g. "bootstrap Debian bookworm").
    PhaseStarted(String),
    /// The phase that began last ended.
    PhaseFinished { phase: String, elapsed: Duration },
    /// A line of detail inside the current phase.
    Detail(String),
    /// Bytes done in the current phase (a download), out of `total` when known.
    Bytes { done: u64, total: Option<u64> },
    /// Something the user should know that is not a failure (a fallback, a cache hit).
    Notice(String),
}

/// Where events go. `&dyn Fn` keeps the engine free of any UI type.
pub type Sink<'a> = &'a (dyn Fn(Event) + Sync);

/// Runs `work` as a phase, emitting its start and, on success, its end with the time it took.
pub fn phase<T, E>(sink: Sink, name: &str, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    sink(Event::PhaseStarted(name.to_owned()));
    let started = std::time::Instant::now();
    let value = work()?;
    sink(Event::PhaseFinished {
        phase: name.to_owned(),
        elapsed: started.elapsed(),
    });
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn phase_emits_start_and_finish_only_on_success() {
        let seen = Mutex::new(Vec::new());
        let sink = |e: Event| seen.lock().unwrap().push(e);
        assert_eq!(phase(&sink, "one", || Ok::<_, ()>(7)), Ok(7));
        assert_eq!(phase(&sink, "two", || Err::<(), _>("boom")), Err("boom"));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], Event::PhaseStarted("one".into()));
        assert!(matches!(&seen[1], Event::PhaseFinished { phase, .. } if phase == "one"));
        assert_eq!(seen[2], Event::PhaseStarted("two".into()));
    }
}
