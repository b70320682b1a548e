//! vmrun: run a project's tests inside throwaway QEMU virtual machines.

pub mod cli;
pub mod commands;
pub mod error;
pub mod exit_code;
pub mod tools;
