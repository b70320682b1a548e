//! vmrun: run a project's tests inside throwaway QEMU virtual machines.

pub mod atomic_file;
pub mod bake;
pub mod cli;
pub mod commands;
pub mod config;
pub mod disk;
pub mod error;
pub mod events;
pub mod exit_code;
pub mod external;
pub mod image;
pub mod name;
pub mod path_error;
pub mod paths;
pub mod qemu;
pub mod random;
pub mod run;
pub mod seed;
pub mod ssh;
pub mod store;
pub mod sync;
pub mod tools;
pub mod ui;
pub mod utc;
pub mod vm;
pub mod warm;
