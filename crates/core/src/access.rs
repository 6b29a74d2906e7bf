//! Who may do what: users with passwords and rights, source networks that get
//! rights without a password (as Tvheadend's access entries do), and the
//! anonymous switch the demo turns on.
//!
//! Front ends ask this module for [`Rights`]; they never read passwords
//! themselves except through [`Access::verify`], which hands the stored
//! password to the protocol's own proof check (HTSP digests, HTTP Basic).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a connection may do. Computed per connection from its address, then
/// replaced when a user proves who they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Watch live channels (HTSP "streaming", HTTP `/stream`).
    pub streaming: bool,
    /// Schedule and play recordings.
    pub dvr: bool,
    pub admin: bool,
    /// See recordings of other users too.
    pub all_dvr: bool,
    /// Hide source details (input URLs) from this user.
    pub anonymize: bool,
    /// Channel tags this user may see; empty = every channel.
    pub channel_tags: Vec<String>,
    /// The authenticated user, if any.
    pub username: Option<String>,
}

impl Rights {
    /// A channel is visible when the user has no tag restriction or the
    /// channel carries one of the allowed tags.
    pub fn may_see_channel<'a>(&self, mut channel_tags: impl Iterator<Item = &'a str>) -> bool {
        self.channel_tags.is_empty()
            || channel_tags.any(|t| self.channel_tags.iter().any(|a| a.eq_ignore_ascii_case(t)))
    }

    /// Rights of two rules that both apply (address ranges overlap).
    pub fn union(mut self, other: &Rights) -> Rights {
        // An unrestricted grant wins over a tag-restricted one.
        let unrestricted = |r: &Rights| (r.streaming || r.dvr) && r.channel_tags.is_empty();
        let tags = if unrestricted(&self) || unrestricted(other) {
            Vec::new()
        } else {
            let mut t = self.channel_tags.clone();
            t.extend(other.channel_tags.iter().cloned());
            t
        };
        self.streaming |= other.streaming;
        self.dvr |= other.dvr;
        self.admin |= other.admin;
        self.all_dvr |= other.all_dvr;
        self.anonymize |= other.anonymize;
        self.channel_tags = tags;
        self
    }

    pub fn any(&self) -> bool {
        self.streaming || self.dvr || self.admin
    }
}

/// `[access]` in the server's TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Everyone, from any address and without a password, may stream and
    /// record. Off by default; the demo turns it on.
    pub anonymous: bool,
    pub users: Vec<UserConfig>,
    /// Address ranges granted rights without a password.
    pub networks: Vec<NetworkConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    pub streaming: bool,
    pub dvr: bool,
    pub admin: bool,
    /// May see every user's recordings (admins always may).
    pub all_dvr: bool,
    pub anonymize: bool,
    /// Tags whose channels this user may see; empty = all channels.
    pub channel_tags: Vec<String>,
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            name: String::new(),
            password: String::new(),
            streaming: true,
            dvr: true,
            admin: false,
            all_dvr: false,
            anonymize: false,
            channel_tags: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// `192.168.1.0/24`, `10.0.0.1`, `fd00::/8`.
    pub cidr: String,
    pub streaming: bool,
    pub dvr: bool,
    pub admin: bool,
    pub channel_tags: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cidr: String::new(),
            streaming: true,
            dvr: false,
            admin: false,
            channel_tags: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("invalid network `{0}` (expected address/prefix, e.g. 192.168.0.0/16)")]
    BadCidr(String),
    #[error("user entry without a name")]
    NamelessUser,
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The compiled access configuration. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    anonymous: bool,
    users: Vec<UserConfig>,
    networks: Vec<(Cidr, Rights)>,
}

impl Access {
    pub fn new(config: &AccessConfig) -> Result<Access, AccessError> {
        let mut networks = Vec::new();
        for n in &config.networks {
            let cidr = Cidr::parse(&n.cidr).ok_or_else(|| AccessError::BadCidr(n.cidr.clone()))?;
            networks.push((
                cidr,
                Rights {
                    streaming: n.streaming,
                    dvr: n.dvr,
                    admin: n.admin,
                    all_dvr: n.admin,
                    anonymize: false,
                    channel_tags: n.channel_tags.clone(),
                    username: None,
                },
            ));
        }
        if config.users.iter().any(|u| u.name.is_empty()) {
            return Err(AccessError::NamelessUser);
        }
        Ok(Access {
            anonymous: config.anonymous,
            users: config.users.clone(),
            networks,
        })
    }

    /// Everyone may do everything but administration (the demo).
    pub fn open() -> Access {
        Access {
            anonymous: true,
            ..Access::default()
        }
    }

    /// Rights a connection from `peer` has before anyone logs in.
    pub fn for_address(&self, peer: IpAddr) -> Rights {
        let mut rights = if self.anonymous {
            Rights {
                streaming: true,
                dvr: true,
                all_dvr: true,
                ..Rights::default()
            }
        } else {
            Rights::default()
        };
        for (cidr, r) in &self.networks {
            if cidr.contains(peer) {
                rights = rights.union(r);
            }
        }
        rights
    }

    /// Looks `username` up and lets `proof` check the stored password (the
    /// protocol knows how: HTSP hashes it with its challenge, HTTP Basic
    /// compares). Returns the user's rights when the proof holds.
    pub fn verify(&self, username: &str, proof: impl FnOnce(&str) -> bool) -> Option<Rights> {
        let user = self.users.iter().find(|u| u.name == username)?;
        if !proof(&user.password) {
            return None;
        }
        Some(Rights {
            streaming: user.streaming,
            dvr: user.dvr,
            admin: user.admin,
            all_dvr: user.all_dvr || user.admin,
            anonymize: user.anonymize,
            channel_tags: user.channel_tags.clone(),
            username: Some(user.name.clone()),
        })
    }

    /// Whether any password-based user exists (for UI hints).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccessConfig {
        AccessConfig {
            anonymous: false,
            users: vec![UserConfig {
                name: "kodi".into(),
                password: "secret".into(),
                channel_tags: vec!["News".into()],
                ..UserConfig::default()
            }],
            networks: vec![NetworkConfig {
                cidr: "192.168.1.0/24".into(),
                ..NetworkConfig::default()
            }],
        }
    }

    #[test]
    fn network_rights_without_password() {
        let a = Access::new(&cfg()).unwrap();
        assert!(a.for_address("192.168.1.77".parse().unwrap()).streaming);
        assert!(
            a.for_address("::ffff:192.168.1.77".parse().unwrap())
                .streaming
        );
        assert!(!a.for_address("192.168.2.1".parse().unwrap()).streaming);
        assert!(!a.for_address("127.0.0.1".parse().unwrap()).any());
    }

    #[test]
    fn anonymous_grants_streaming_and_dvr() {
        let a = Access::open();
        let r = a.for_address("10.1.2.3".parse().unwrap());
        assert!(r.streaming && r.dvr && !r.admin);
    }

    #[test]
    fn password_check_and_tags() {
        let a = Access::new(&cfg()).unwrap();
        assert!(a.verify("kodi", |p| p == "wrong").is_none());
        assert!(a.verify("nobody", |_| true).is_none());
        let r = a.verify("kodi", |p| p == "secret").unwrap();
        assert_eq!(r.username.as_deref(), Some("kodi"));
        assert!(r.may_see_channel(["news"].into_iter()));
        assert!(!r.may_see_channel(["Sport"].into_iter()));
    }

    #[test]
    fn bad_cidr_is_an_error() {
        let mut c = cfg();
        c.networks[0].cidr = "300.1.1.1/8".into();
        assert!(matches!(Access::new(&c), Err(AccessError::BadCidr(_))));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
    }
}
