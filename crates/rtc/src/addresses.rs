//! Which local addresses become host candidates when none are configured.

use std::net::{IpAddr, Ipv4Addr};

/// 127.0.0.1 plus every non-loopback IPv4 interface address. IPv6 is left out of
/// detection on purpose: link-local and temporary addresses make useless
/// candidates; configure IPv6 addresses explicitly.
pub(crate) fn detect() -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    match if_addrs::get_if_addrs() {
        Ok(ifaces) => {
            for i in ifaces {
                let ip = i.ip();
                if usable(ip) && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        Err(e) => tracing::warn!("cannot list network interfaces: {e}; using 127.0.0.1 only"),
    }
    out
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detection_starts_with_loopback_and_has_no_duplicates() {
        let a = super::detect();
        assert_eq!(a.first(), Some(&"127.0.0.1".parse().unwrap()));
        let mut b = a.clone();
        b.dedup();
        assert_eq!(a, b);
        assert!(a.iter().all(|ip| ip.is_ipv4()));
    }
}
