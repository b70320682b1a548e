//! Images that travel: `images export` writes a baked image (its disk layers, keys,
//! manifest and warm state) to one file, and `images import` stores such a file in another
//! home, so that runs there resume the warm state without a bake.
//!
//! The layers are kept, not flattened: the export holds the source the image was baked from,
//! the baked layer and the warm layer, byte for byte, and an import gives each layer a
//! backing name that is valid in the new home (the source under `sources/imported/`, by
//! digest, named absolutely as a bake names it; the warm layer's `../disk.qcow2`, relative, so
//! it holds in staging and in the store alike). The guest sees the disk it was saved with.
//!
//! An export is untrusted input: [`format`] bounds and checks its header before anything is
//! written, only [`member`]'s fixed names are ever written, each file's digest is checked as it
//! arrives, and the layers pass the checks every image from outside passes.

mod error;
mod export;
pub mod format;
mod import;
mod input;
pub mod member;

pub use error::{Error, Fault};
pub use export::{Exported, Output, export};
pub use import::{Imported, import};
pub use input::Input;

#[cfg(test)]
mod tests;
