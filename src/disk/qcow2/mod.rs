//! qcow2: the header codec shared by the sniffer and the overlay writer, and the features
//! vmrun refuses.

pub(crate) mod features;
pub(crate) mod header;
pub(crate) mod layout;
mod overlay;
mod rebase;

pub use overlay::Overlay;
pub use rebase::set_backing_name;
