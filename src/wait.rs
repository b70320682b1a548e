//! Every wait in vmrun: for SSH, a migration, the guest agent, a console verdict, a process.
//! Each has its own deadline, and each also ends at once when what it waits on cannot come
//! any more: the QEMU it waits on exited, or SIGINT/SIGTERM asked vmrun to stop. [`Watch`]
//! is that second part, checked by [`Watch::until`] (the one polling loop) and by the waits
//! that sleep in a system call of their own (a socket's poll, a channel's receive) between
//! two looks.

use std::time::{Duration, Instant};

use crate::qemu::process::{Exited, QemuProcess};
use crate::signals;

/// The longest a wait sleeps between two looks at what it watches.
pub const SLICE: Duration = Duration::from_millis(100);

/// Why a wait ended before what it waited for came.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum Stop {
    #[error("stopped by {}", signals::name(*.0))]
    Signal(i32),
    #[error(transparent)]
    QemuExited(#[from] Exited),
    /// A QEMU that vmrun watches without being its parent (a persistent VM's, which systemd
    /// runs) is gone: how it ended, in systemd's words.
    #[error("QEMU exited ({0})")]
    Ended(String),
}

impl Stop {
    /// vmrun's exit code for ending this way: 128 + the signal, or a VM failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::Signal(signal) => signals::exit_code(*signal),
            Stop::QemuExited(_) | Stop::Ended(_) => crate::exit_code::VM_FAILED,
        }
    }
}

/// What ends a wait early besides its deadline: always a stop request, and the exit of the
/// QEMU the wait depends on, when there is one.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    qemu: Option<&'a QemuProcess>,
    /// For a QEMU that is not vmrun's child: says when it is gone.
    gone: Option<&'a dyn Fn() -> Option<Stop>>,
    /// Stop requests that came before the wait and do not end it (see [`Watch::past_stop`]).
    tolerated: u32,
}

impl<'a> Watch<'a> {
    /// A wait that depends on no VM (a download, a process of its own).
    pub fn signals() -> Watch<'static> {
        Watch {
            qemu: None,
            gone: None,
            tolerated: 0,
        }
    }

    /// A wait on something `qemu` does or runs.
    pub fn qemu(qemu: &'a QemuProcess) -> Watch<'a> {
        Watch {
            qemu: Some(qemu),
            gone: None,
            tolerated: 0,
        }
    }

    /// A wait on a QEMU that vmrun did not start itself: `gone` says when it is gone (it is
    /// asked at every look, so it should be cheap or remember its last answer a while).
    pub fn until_gone(gone: &'a dyn Fn() -> Option<Stop>) -> Watch<'a> {
        Watch {
            qemu: None,
            gone: Some(gone),
            tolerated: 0,
        }
    }

    /// This wait, going on past the stop requests that came so far: what an interrupted run
    /// still does before it ends (saving its VM for `--capture-failures`). Another request
    /// ends it.
    pub fn past_stop(self) -> Watch<'a> {
        Watch {
            tolerated: signals::count(),
            ..self
        }
    }

    /// `Err` once the wait must end early. A stop request wins over QEMU's exit: the user
    /// asked for the stop.
    pub fn check(&self) -> Result<(), Stop> {
        if signals::count() > self.tolerated
            && let Some(signal) = signals::received()
        {
            return Err(Stop::Signal(signal));
        }
        if let Some(exited) = self.qemu.and_then(QemuProcess::exited) {
            return Err(Stop::QemuExited(exited));
        }
        match self.gone.and_then(|gone| gone()) {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Sleeps `duration` (at most until `deadline`), looking every [`SLICE`].
    pub fn sleep(&self, duration: Duration) -> Result<(), Stop> {
        let until = Instant::now() + duration;
        loop {
            self.check()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(SLICE));
        }
    }

    /// Asks `probe` every `every` until it gives a value: `Ok(Some(value))`; `Ok(None)` once
    /// `deadline` passed without one; `Err` when the probe fails or the wait is stopped.
    /// The probe is asked at least once, and not again once the deadline has passed.
    pub fn until<T, E: From<Stop>>(
        &self,
        deadline: Instant,
        every: Duration,
        mut probe: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        loop {
            self.check()?;
            let asked = Instant::now();
            if let Some(value) = probe()? {
                return Ok(Some(value));
            }
            self.sleep(
                (asked + every)
                    .min(deadline)
                    .saturating_duration_since(Instant::now()),
            )?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use crate::qemu::process::fake;

    #[test]
    fn until_returns_the_probes_value() {
        let asked = Cell::new(0);
        let got = Watch::signals().until(
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(1),
            || {
                asked.set(asked.get() + 1);
                Ok::<_, Stop>((asked.get() == 3).then_some("ready"))
            },
        );
        assert_eq!(got, Ok(Some("ready")));
        assert_eq!(asked.get(), 3);
    }

    #[test]
    fn until_gives_up_at_the_deadline() {
        let asked = Cell::new(0);
        let started = Instant::now();
        let got = Watch::signals().until(
            started + Duration::from_millis(150),
            Duration::from_millis(40),
            || {
                asked.set(asked.get() + 1);
                Ok::<Option<()>, Stop>(None)
            },
        );
        assert_eq!(got, Ok(None));
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(
            (4..=6).contains(&asked.get()),
            "asked {} times",
            asked.get()
        );
    }

    #[test]
    fn a_probe_error_ends_the_wait() {
        let got: Result<Option<()>, Stop> =
            Watch::signals().until(Instant::now() + Duration::from_secs(10), SLICE, || {
                Err(Stop::Signal(libc::SIGTERM))
            });
        assert_eq!(got, Err(Stop::Signal(libc::SIGTERM)));
    }

    #[test]
    fn qemus_exit_ends_a_wait_at_once_with_its_status_and_log() {
        let (_dir, qemu) = fake("echo 'qemu: could not load kernel' >&2; sleep 0.3; kill -9 $$");
        let started = Instant::now();
        let got = Watch::qemu(&qemu).until(
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(10),
            || Ok::<Option<()>, Stop>(None),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let Err(Stop::QemuExited(exited)) = got else {
            panic!("not stopped by QEMU's exit: {got:?}");
        };
        let text = exited.to_string();
        assert!(text.starts_with("QEMU exited (signal 9)\n"), "{text}");
        assert!(text.ends_with("qemu: could not load kernel"), "{text}");
    }

    #[test]
    fn a_running_qemu_does_not_stop_a_wait() {
        let (_dir, qemu) = fake("exec sleep 30");
        assert_eq!(Watch::qemu(&qemu).check(), Ok(()));
        assert_eq!(Watch::qemu(&qemu).sleep(Duration::from_millis(20)), Ok(()));
    }
}
