//! Host-to-guest port forwards (a run's SSH forward, a persistent VM's):
//! `[tcp|udp:][ADDR:]HOST:GUEST`, bound to 127.0.0.1 unless an address is given.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Network;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One forward: `address:host` on the host reaches `guest` in the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub protocol: Protocol,
    pub address: Ipv4Addr,
    pub host: u16,
    pub guest: u16,
}

/// What the spec forms are, for messages.
pub const SYNTAX: &str = "[tcp|udp:][ADDR:]HOST:GUEST";

impl Forward {
    /// The SSH forward every VM gets: vmrun's way in.
    pub fn ssh(host: u16) -> Forward {
        Forward {
            protocol: Protocol::Tcp,
            address: Ipv4Addr::LOCALHOST,
            host,
            guest: 22,
        }
    }

    /// QEMU's hostfwd rule, as `-netdev user,hostfwd=RULE` and `hostfwd_add net0 RULE` take it.
    /// In an isolated namespace QEMU listens on the same port on every address of the
    /// namespace, where slirp4netns delivers what reaches the host's side.
    pub fn rule(&self, network: Network) -> String {
        format!("{}-:{}", self.removal_rule(network), self.guest)
    }

    /// What `hostfwd_remove net0 ...` takes to remove this forward.
    pub fn removal_rule(&self, network: Network) -> String {
        match network {
            Network::Outbound => format!("{}::{}", self.protocol.as_str(), self.host),
            Network::None | Network::Host => {
                format!("{}:{}:{}", self.protocol.as_str(), self.address, self.host)
            }
        }
    }

    /// Whether both cannot be bound at once: one protocol, one port, overlapping addresses.
    pub fn clashes_with(&self, other: &Forward) -> bool {
        self.protocol == other.protocol
            && self.host == other.host
            && (self.address == other.address
                || self.address.is_unspecified()
                || other.address.is_unspecified())
    }
}

impl fmt::Display for Forward {
    /// The canonical spec: `tcp:127.0.0.1:8080:80` (parses back to the same forward).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.protocol.as_str(),
            self.address,
            self.host,
            self.guest
        )
    }
}

impl FromStr for Forward {
    type Err = String;

    fn from_str(spec: &str) -> Result<Forward, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (protocol, rest) = match parts.first() {
            Some(&"tcp") => (Protocol::Tcp, &parts[1..]),
            Some(&"udp") => (Protocol::Udp, &parts[1..]),
            _ => (Protocol::Tcp, &parts[..]),
        };
        let (address, host, guest) = match rest {
            [host, guest] => (Ipv4Addr::LOCALHOST, *host, *guest),
            [address, host, guest] => {
                let address = address.parse().map_err(|_| {
                    format!(
                        "invalid forward `{spec}`: `{address}` is not an IPv4 address (or tcp/udp)"
                    )
                })?;
                (address, *host, *guest)
            }
            _ => {
                return Err(format!(
                    "invalid forward `{spec}`: expected {SYNTAX}, e.g. 8080:80 or udp:5353:53"
                ));
            }
        };
        Ok(Forward {
            protocol,
            address,
            host: port(spec, host)?,
            guest: port(spec, guest)?,
        })
    }
}

fn port(spec: &str, text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 && !text.starts_with('+') => Ok(port),
        _ => Err(format!(
            "invalid forward `{spec}`: `{text}` is not a port (1-65535)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Forward {
        spec.parse().unwrap()
    }

    #[test]
    fn every_form() {
        let local = Ipv4Addr::LOCALHOST;
        assert_eq!(
            parse("8080:80"),
            Forward {
                protocol: Protocol::Tcp,
                address: local,
                host: 8080,
                guest: 80
            }
        );
        assert_eq!(
            parse("udp:5353:53"),
            Forward {
                protocol: Protocol::Udp,
                address: local,
                host: 5353,
                guest: 53
            }
        );
        assert_eq!(parse("tcp:2222:22").protocol, Protocol::Tcp);
        let any = parse("0.0.0.0:8080:80");
        assert_eq!(
            (any.protocol, any.address),
            (Protocol::Tcp, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(
            parse("udp:192.168.1.2:1:65535"),
            Forward {
                protocol: Protocol::Udp,
                address: Ipv4Addr::new(192, 168, 1, 2),
                host: 1,
                guest: 65535
            }
        );
    }

    #[test]
    fn display_round_trips_and_rules_are_qemus() {
        for spec in ["8080:80", "udp:5353:53", "10.1.2.3:1:2", "udp:0.0.0.0:9:9"] {
            let f = parse(spec);
            assert_eq!(parse(&f.to_string()), f, "{spec}");
        }
        assert_eq!(parse("8080:80").to_string(), "tcp:127.0.0.1:8080:80");
        assert_eq!(
            parse("8080:80").rule(Network::Host),
            "tcp:127.0.0.1:8080-:80"
        );
        assert_eq!(
            parse("udp:5353:53").removal_rule(Network::None),
            "udp:127.0.0.1:5353"
        );
        assert_eq!(
            Forward::ssh(40022).rule(Network::None),
            "tcp:127.0.0.1:40022-:22"
        );
        assert_eq!(
            parse("0.0.0.0:8080:80").rule(Network::Outbound),
            "tcp::8080-:80"
        );
        assert_eq!(
            parse("udp:5353:53").removal_rule(Network::Outbound),
            "udp::5353"
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("80", "expected [tcp|udp:][ADDR:]HOST:GUEST"),
            ("", "expected"),
            ("a:b:c:d:e", "expected"),
            ("sctp:1:2", "`sctp` is not an IPv4 address"),
            ("localhost:1:2", "`localhost` is not an IPv4 address"),
            ("tcp:::1:2", "expected"),
            ("0:80", "`0` is not a port"),
            ("8080:65536", "`65536` is not a port"),
            ("+80:80", "`+80` is not a port"),
            ("8080:", "`` is not a port"),
            ("tcp:", "expected"),
        ] {
            let err = spec.parse::<Forward>().unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
            assert!(err.contains(&format!("`{spec}`")), "{spec}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_forward_round_trips(udp: bool, address: u32, host in 1u16.., guest in 1u16..) {
            let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
            let forward = Forward { protocol, address: Ipv4Addr::from(address), host, guest };
            proptest::prop_assert_eq!(forward.to_string().parse::<Forward>(), Ok(forward));
        }

        #[test]
        fn no_text_makes_the_parser_panic(spec in "\\PC{0,40}") {
            let _ = spec.parse::<Forward>();
        }
    }

    #[test]
    fn clashes_need_one_protocol_one_port_and_overlapping_addresses() {
        assert!(parse("8080:80").clashes_with(&parse("8080:81")));
        assert!(parse("0.0.0.0:8080:80").clashes_with(&parse("8080:81")));
        assert!(!parse("8080:80").clashes_with(&parse("udp:8080:80")));
        assert!(!parse("8080:80").clashes_with(&parse("8081:80")));
        assert!(!parse("127.0.0.1:8080:80").clashes_with(&parse("10.0.0.1:8080:80")));
    }
}
