//! A VM made from its image's warm state: its first start resumes the saved machine instead
//! of booting (seconds instead of a minute under TCG), and gets what a run's clone gets: the
//! host's clock and fresh randomness ([`warm::refresh_clone`]). systemd starts QEMU waiting
//! for the state (`-incoming defer`); vmrun hands it the state file over QEMU's monitor, lets
//! the guest run, and rewrites the unit so that later starts boot the VM's own disk. A resume
//! that fails boots that disk instead, saying why: it was synced before the state was saved.

use std::fs;

use super::record::WarmStart;
use super::{Error, VmLayout, VmRecord, Vms};
use crate::error_line::one_line;
use crate::events::{self, Event, Sink};
use crate::path_error::PathError;
use crate::qemu::qmp::Qmp;
use crate::store::{self, Store};
use crate::wait::Watch;
use crate::warm::{self, StateFile, WarmState};

impl Vms {
    /// The warm state the VM's next start resumes; `None` when it boots.
    pub(super) fn warm_state_to_resume(
        &self,
        record: &VmRecord,
    ) -> Result<Option<WarmState>, Error> {
        if record.warm != Some(WarmStart { resume: true }) {
            return Ok(None);
        }
        let image = Store::new(&self.home)
            .entry(&record.image_key)?
            .ok_or_else(|| store::Error::NoEntry {
                key: record.image_key.clone(),
            })?;
        // The VM holds its store entry, whose warm state was there at create.
        let dir = image.dir.join(warm::DIR);
        let missing = PathError::at("read", &dir)(std::io::ErrorKind::NotFound.into());
        Ok(Some(WarmState::load(&image.dir)?.ok_or(missing)?))
    }

    /// After systemd started QEMU for a first start that resumes: loads the state, lets the
    /// guest run and refreshes it; then records that later starts boot. When that fails, QEMU
    /// is ended and the VM booted from the same disk.
    pub(super) fn resume_first_start(
        &self,
        layout: &VmLayout,
        record: &VmRecord,
        sink: Sink,
    ) -> Result<(), Error> {
        let phase = format!("resume VM {} from the image's warm state", record.name);
        let resumed = events::phase(sink, &phase, || self.resume(layout, record));
        let booted = VmRecord {
            warm: Some(WarmStart { resume: false }),
            ..record.clone()
        };
        self.save_and_reload(layout, &booted)?;
        let Err(why) = resumed else {
            return Ok(());
        };
        sink(Event::Notice(format!(
            "resuming the warm state failed ({}); booting the VM's disk instead",
            one_line(&why)
        )));
        // A QEMU waiting for its state, or one whose guest runs: either way it goes now.
        if let Ok(mut qmp) = Qmp::connect(&layout.qmp_socket()) {
            let _ = qmp.execute("quit", None);
        }
        self.systemctl.stop(&layout.unit())?;
        let failed = self.systemctl.show(&layout.unit())?.active_state == "failed";
        self.start_unit(layout, &booted, failed, sink)
    }

    fn resume(&self, layout: &VmLayout, record: &VmRecord) -> Result<(), Error> {
        let warm = self
            .warm_state_to_resume(record)?
            .expect("a first start that resumes has a warm state");
        let state = fs::File::open(&warm.state).map_err(PathError::at("open", &warm.state))?;
        let watch = Watch::signals();
        warm::resume(
            &layout.qmp_socket(),
            StateFile::Handed(&state),
            true,
            &watch,
        )?;
        warm::refresh_clone(&layout.agent_socket())?;
        Ok(())
    }
}
