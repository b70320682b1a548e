//! QEMU: command lines (pure) and the processes that run them.

pub mod accel;
pub mod args;
pub mod process;
pub mod serial;
