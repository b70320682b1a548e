//! vmrun: run a project's tests inside throwaway QEMU virtual machines.

pub mod cli;
pub mod commands;
pub mod disk;
pub mod error;
pub mod events;
pub mod exit_code;
pub mod external;
pub mod image;
pub mod paths;
pub mod qemu;
pub mod seed;
pub mod tools;
pub mod ui;
