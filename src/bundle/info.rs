//! What `vmrun open --info` shows of a bundle: its header for people, or as JSON. Every text
//! in it came from the bundle, so control characters are made visible before they are shown.

use std::fmt::Write as _;

use super::read::Sealed;
use crate::guest_text::line;
use crate::human_size::human_size;
use crate::ssh::sh_quote;

/// Whether the bundle's seal was checked against the image it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Yes,
    /// The image it names is not stored here: the seal could not be checked.
    ImageMissing,
    Mismatch,
}

impl Verified {
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::Yes => "verified",
            Verified::ImageMissing => "image missing",
            Verified::Mismatch => "mismatch",
        }
    }
}

/// The header for people, one `field: value` a line.
pub fn info_text(sealed: &Sealed, verified: Verified) -> String {
    let h = &sealed.header;
    let m = &h.machine;
    let command: Vec<String> = h.command.iter().map(|arg| line(sh_quote(arg))).collect();
    let phases: Vec<String> = h
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", line(&p.phase), p.seconds))
        .collect();
    let mut out = String::new();
    let mut field = |name: &str, value: String| writeln!(out, "{name:<12} {value}").unwrap();
    field("run", h.run_id.clone());
    field(
        "image",
        format!("{} ({})", line(&h.image.name), h.image.key),
    );
    field("qemu", line(&h.qemu_version));
    let machine = format!("{}, {} cpus, {} MiB", m.accel, m.cpus, m.memory_mib);
    field("machine", machine);
    field("boot", m.boot.as_str().to_owned());
    field("network", m.network.as_str().to_owned());
    field("command", command.join(" "));
    field("outcome", line(&h.outcome));
    field("captured at", line(&h.captured_at));
    field("phases", phases.join(", "));
    for file in &h.files {
        field(file.name.name(), human_size(file.size));
    }
    field("bundle", human_size(sealed.bundle_bytes));
    let seal = match verified {
        Verified::Yes => "verified with the stored image's key",
        Verified::ImageMissing => "not checked: the image is not stored here",
        Verified::Mismatch => "DOES NOT MATCH: changed, or made for another image",
    };
    field("seal", seal.to_owned());
    out
}

/// The header's fields, with `seal` and `bundle_bytes`.
pub fn info_json(sealed: &Sealed, verified: Verified) -> serde_json::Value {
    let mut value = serde_json::to_value(&sealed.header).expect("header serializes");
    value["seal"] = verified.as_str().into();
    value["bundle_bytes"] = sealed.bundle_bytes.into();
    value
}
