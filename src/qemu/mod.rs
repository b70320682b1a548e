//! QEMU: command lines (pure) and the processes that run them.

pub mod accel;
pub mod args;
pub mod json_stream;
pub mod port;
pub mod process;
pub mod qga;
pub mod qmp;
pub mod serial;
