//! QEMU: command lines (pure) and the processes that run them.

pub mod args;
pub mod process;
pub mod serial;
