//! qcow2: the header codec shared by the sniffer and the overlay writer.

pub(crate) mod header;
pub(crate) mod layout;
mod overlay;

pub use overlay::Overlay;
