//! Renders engine events for a person: indicatif spinners and bars on a terminal, plain
//! timestamped lines otherwise (CI logs), always on stderr so stdout stays the guest's.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::Event;

pub struct Ui {
    started: Instant,
    terminal: bool,
    current: Mutex<Option<ProgressBar>>,
    /// When the last plain progress line was written: byte counts are printed every few
    /// seconds, not for every chunk.
    last_bytes_line: Mutex<Option<Instant>>,
}

/// How often a plain log gets a line about bytes done.
const PLAIN_BYTES_EVERY: Duration = Duration::from_secs(5);

impl Ui {
    /// Chooses the form from whether stderr is a terminal.
    pub fn for_stderr() -> Ui {
        Ui {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            current: Mutex::new(None),
            last_bytes_line: Mutex::new(None),
        }
    }

    pub fn render(&self, event: Event) {
        if self.terminal {
            self.render_terminal(event);
        } else if self.plain_line_due(&event) {
            self.line(&plain_line(&event));
        }
    }

    fn plain_line_due(&self, event: &Event) -> bool {
        let Event::Bytes { done, total } = event else {
            return true;
        };
        let mut last = self
            .last_bytes_line
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= PLAIN_BYTES_EVERY) || Some(*done) == *total;
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    fn line(&self, text: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let _ = writeln!(std::io::stderr(), "[{elapsed:>7.1}s] {text}");
    }

    fn render_terminal(&self, event: Event) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::PhaseStarted(phase) => {
                let bar = ProgressBar::new_spinner().with_message(phase);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                *current = Some(bar);
            }
            Event::PhaseFinished { phase, elapsed } => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
                eprintln!("✓ {phase} ({:.1}s)", elapsed.as_secs_f64());
            }
            Event::Detail(text) => match current.as_ref() {
                Some(bar) => bar.set_message(format!("{} · {text}", phase_of(bar))),
                None => eprintln!("  {text}"),
            },
            Event::Bytes { done, total } => {
                if let Some(bar) = current.as_ref() {
                    if let Some(total) = total.filter(|t| bar.length() != Some(*t)) {
                        bar.set_length(total);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} \
                                 {bytes_per_sec} eta {eta}",
                            )
                            .expect("valid template"),
                        );
                        bar.set_prefix(phase_of(bar));
                    }
                    bar.set_position(done);
                }
            }
            Event::Notice(text) => match current.as_ref() {
                Some(bar) => bar.println(format!("note: {text}")),
                None => eprintln!("note: {text}"),
            },
        }
    }
}

/// The phase name a spinner shows, without any detail appended to it.
fn phase_of(bar: &ProgressBar) -> String {
    let message = bar.message();
    message.split(" · ").next().unwrap_or_default().to_owned()
}

/// One event as a plain log line.
fn plain_line(event: &Event) -> String {
    match event {
        Event::PhaseStarted(phase) => format!("{phase} ..."),
        Event::PhaseFinished { phase, elapsed } => {
            format!("{phase}: done in {:.1}s", elapsed.as_secs_f64())
        }
        Event::Detail(text) => format!("  {text}"),
        Event::Bytes {
            done,
            total: Some(total),
        } => format!("  {} of {} MiB", done >> 20, total >> 20),
        Event::Bytes { done, total: None } => format!("  {} MiB", done >> 20),
        Event::Notice(text) => format!("note: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines() {
        assert_eq!(plain_line(&Event::PhaseStarted("boot".into())), "boot ...");
        assert_eq!(
            plain_line(&Event::PhaseFinished {
                phase: "boot".into(),
                elapsed: Duration::from_millis(1250)
            }),
            "boot: done in 1.2s"
        );
        assert_eq!(
            plain_line(&Event::Bytes {
                done: 3 << 20,
                total: Some(10 << 20)
            }),
            "  3 of 10 MiB"
        );
        assert_eq!(
            plain_line(&Event::Notice("using TCG".into())),
            "note: using TCG"
        );
    }
}
