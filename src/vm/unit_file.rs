//! The VM's unit file, rendered from its record (`super::unit` renders; this writes): a new
//! file at create, or one replacing the old in a rename when the record changes.

use std::fs;
use std::path::Path;

use super::{Error, STOP_TIMEOUT, VmLayout, VmRecord, Vms, console, machine, unit};
use crate::path_error::PathError;
use crate::tools;

impl Vms {
    /// Renders the unit from the record: a new file (`create`), or one replacing the old in
    /// a rename.
    pub(super) fn write_unit(
        &self,
        layout: &VmLayout,
        record: &VmRecord,
        create: bool,
    ) -> Result<(), Error> {
        let mkdir = tools::find("mkdir")?;
        let resume = self.warm_state_to_resume(record)?;
        let vmrun = std::env::current_exe()
            .map_err(PathError::at("find", Path::new("vmrun's own executable")))?;
        let spec = unit::UnitSpec {
            vm: record.name.clone(),
            prepare: vec![mkdir.into(), "-p".into(), layout.runtime.clone().into()],
            run: console::exec_start(
                &vmrun,
                &layout.serial_log(),
                machine::qemu_argv(record, layout, resume.as_ref())?,
            ),
            stop: vec![
                vmrun.into(),
                "vm".into(),
                "powerdown".into(),
                "--qmp".into(),
                layout.qmp_socket().into(),
                "--agent".into(),
                layout.agent_socket().into(),
            ],
            qemu_log: layout.qemu_log(),
            stop_timeout: STOP_TIMEOUT,
        };
        let text = unit::render(&spec)?;
        fs::create_dir_all(&self.unit_dir).map_err(PathError::at("create", &self.unit_dir))?;
        let path = &layout.unit_file;
        if create {
            use std::io::Write;
            let mut file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::UnitTaken { path: path.clone() });
                }
                other => other.map_err(PathError::at("create", path))?,
            };
            Ok(file
                .write_all(text.as_bytes())
                .map_err(PathError::at("write", path))?)
        } else {
            Ok(crate::atomic_file::write(path, text.as_bytes())?)
        }
    }

    /// Saves a changed record and the unit rendered from it, and tells systemd.
    pub(super) fn save_and_reload(
        &self,
        layout: &VmLayout,
        record: &VmRecord,
    ) -> Result<(), Error> {
        record.save(&layout.record())?;
        self.write_unit(layout, record, false)?;
        self.systemctl.daemon_reload()?;
        Ok(())
    }
}
