//! What a guest may reach on the network, and the isolated network namespace that enforces
//! the default.
//!
//! QEMU's user networking maps the guest's gateway (10.0.2.2) to the host's 127.0.0.1 and
//! makes every other connection as an ordinary socket of the host: the guest reaches the
//! host's loopback services, the host's own addresses and the cloud metadata service. With
//! [`Network::Outbound`] QEMU runs in its own user and network namespace instead, whose only
//! way out is slirp4netns (a user-mode stack in the host's namespace started with
//! `--disable-host-loopback`), and whose routing table makes the host's addresses and the
//! link-local range unreachable ([`isolate`]).

pub mod blocked;
pub mod forward;
pub mod isolate;
pub mod slirp4netns;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the guest may reach. `vmrun test` (`test.network`), bakes and persistent VMs
/// (`vm create --network`) take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Nothing: QEMU's `restrict=on`. Only vmrun's own forwards reach the guest.
    None,
    /// The outside world (package mirrors, registries), but not the host's loopback, the
    /// host's own addresses, nor 169.254.0.0/16 (cloud metadata).
    #[default]
    Outbound,
    /// Everything QEMU's user networking reaches, the host's 127.0.0.1 included (as 10.0.2.2):
    /// opened on purpose, for tests that use a service on the host.
    Host,
}

impl Network {
    pub const NAMES: &'static str = "none, outbound or host";

    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Outbound => "outbound",
            Network::Host => "host",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        match s {
            "none" => Ok(Network::None),
            "outbound" => Ok(Network::Outbound),
            "host" => Ok(Network::Host),
            other => Err(format!(
                "unknown network `{other}`: expected {}",
                Network::NAMES
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for network in [Network::None, Network::Outbound, Network::Host] {
            assert_eq!(network.as_str().parse::<Network>().unwrap(), network);
        }
        assert_eq!(Network::default(), Network::Outbound);
        let err = "open".parse::<Network>().unwrap_err();
        assert!(
            err.contains("`open`") && err.contains("none, outbound or host"),
            "{err}"
        );
    }
}
