//! Image sources and the images vmrun builds from them.

pub mod debian;
pub mod download;
pub mod mbr;
pub mod source;
