//! The destinations an isolated guest must not reach, as routes of its namespace: the host's
//! own addresses (services listening on every interface) and the link-local range (cloud
//! metadata at 169.254.169.254). Unreachable routes make a connection fail at once with
//! "no route to host", instead of timing out.

use std::io;
use std::net::Ipv4Addr;

/// 169.254.0.0/16: link-local, where clouds serve instance metadata and credentials.
pub const LINK_LOCAL: (Ipv4Addr, u8) = (Ipv4Addr::new(169, 254, 0, 0), 16);

/// `ip -batch` lines that make the link-local range and each of `host_addresses`
/// unreachable. Loopback addresses are left out: in the namespace they are its own.
pub fn route_batch(host_addresses: &[Ipv4Addr]) -> String {
    let mut batch = format!("route add unreachable {}/{}\n", LINK_LOCAL.0, LINK_LOCAL.1);
    let mut seen = Vec::new();
    for address in host_addresses {
        if address.is_loopback() || address.is_link_local() || seen.contains(address) {
            continue;
        }
        seen.push(*address);
        batch.push_str(&format!("route add unreachable {address}/32\n"));
    }
    batch
}

/// The IPv4 addresses of the host's interfaces, read in the host's network namespace.
/// (IPv6 needs no list: the isolated namespace has no IPv6 route out at all.)
pub fn host_addresses() -> io::Result<Vec<Ipv4Addr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*entry };
        // SAFETY: ifa_addr, when set, points at a sockaddr whose family says its real type.
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            addresses.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_each_host_address_once_loopback_left_out() {
        let batch = route_batch(&[
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(172, 17, 0, 1),
            Ipv4Addr::new(192, 0, 2, 2),
        ]);
        assert_eq!(
            batch,
            "route add unreachable 169.254.0.0/16\n\
             route add unreachable 192.0.2.2/32\n\
             route add unreachable 172.17.0.1/32\n"
        );
    }

    #[test]
    fn the_host_has_a_loopback_address() {
        assert!(host_addresses().unwrap().contains(&Ipv4Addr::LOCALHOST));
    }
}
