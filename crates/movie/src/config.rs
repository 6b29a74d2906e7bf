//! The `[movie]` section of Switchyard's configuration (§13 of the
//! reference), and the protocol timers, which only tests change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::MAX_CHUNK_SIZE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub enabled: bool,
    /// P0 addresses. IPv6 addresses are bound with `IPV6_V6ONLY`, so
    /// `[::]:31107` and `0.0.0.0:31107` (the default, §13) can be listed
    /// together.
    pub listen: Vec<SocketAddr>,
    /// The movie folder (§7.4). Optional here, unlike in the reference,
    /// because the server always offers its embedded demo movie as well.
    /// `movies_dir` was this key's first name and is still accepted.
    #[serde(alias = "movies_dir")]
    pub library: Option<PathBuf>,
    /// Optional inclusive range of session ports, e.g. `[40000, 40099]`.
    pub session_ports: Option<[u16; 2]>,
    /// Bytes per Movie Data, 1 to 1391.
    pub chunk_size: u16,
    /// D of the interval rule (§6.4), in microseconds.
    pub default_interval_us: u32,
    /// Derive D per movie from its bit rate, so that it streams in real
    /// time (§6.4); a movie whose bit rate cannot be read keeps
    /// `default_interval_us`.
    pub interval_from_bitrate: bool,
    pub min_interval_us: u32,
    pub max_interval_us: u32,
    /// T_WINDOW.
    pub registration_window_ms: u64,
    pub max_sessions: usize,
    pub max_pending_per_ip: usize,
    /// Members per session, leader included.
    pub max_members: usize,
    pub late_join: bool,
    pub session_list: bool,
    /// T_MEMBER.
    pub member_timeout_ms: u64,
    /// T_PAUSE_MAX.
    pub pause_max_ms: u64,
    /// The reference's fixed timers; not part of the file format.
    #[serde(skip)]
    pub timers: ServerTimers,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            listen: vec![
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 31107)),
                SocketAddr::from(([0, 0, 0, 0], 31107)),
            ],
            library: None,
            session_ports: None,
            chunk_size: 1316,
            default_interval_us: 10_000,
            interval_from_bitrate: false,
            min_interval_us: 1_000,
            max_interval_us: 1_000_000,
            registration_window_ms: 30_000,
            max_sessions: 16,
            max_pending_per_ip: 4,
            max_members: 32,
            late_join: true,
            session_list: true,
            member_timeout_ms: 5_000,
            pause_max_ms: 600_000,
            timers: ServerTimers::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("movie.chunk_size must be 1 to 1391, not {0}")]
    ChunkSize(u16),
    #[error(
        "movie.min_interval_us ({min}) must be at least 1 and not above movie.max_interval_us ({max})"
    )]
    Interval { min: u32, max: u32 },
    #[error("movie.session_ports [{0}, {1}] must be an ascending range of ports from 1024")]
    PortRange(u16, u16),
    #[error("movie.listen must name at least one address")]
    NoListen,
    #[error("movie.max_members must be at least 1")]
    MaxMembers,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(ConfigError::ChunkSize(self.chunk_size));
        }
        if self.min_interval_us == 0 || self.min_interval_us > self.max_interval_us {
            return Err(ConfigError::Interval {
                min: self.min_interval_us,
                max: self.max_interval_us,
            });
        }
        if let Some([a, b]) = self.session_ports
            && (a < 1024 || a > b)
        {
            return Err(ConfigError::PortRange(a, b));
        }
        if self.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        if self.max_members == 0 {
            return Err(ConfigError::MaxMembers);
        }
        Ok(())
    }

    pub fn registration_window(&self) -> Duration {
        Duration::from_millis(self.registration_window_ms)
    }

    pub fn member_timeout(&self) -> Duration {
        Duration::from_millis(self.member_timeout_ms)
    }

    pub fn pause_max(&self) -> Duration {
        Duration::from_millis(self.pause_max_ms)
    }
}

/// Server-side timers of §9.2 that the configuration file does not expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimers {
    /// T_RTX_H.
    pub rtx_handshake: Duration,
    /// T_RTX_S.
    pub rtx_stream: Duration,
    /// N_H and N_S.
    pub transmissions: u32,
    /// T_ALLOC.
    pub alloc: Duration,
    /// T_RECORD.
    pub record: Duration,
    /// T_JOIN_LEAD.
    pub join_lead: Duration,
    /// Session List answers per second per source address.
    pub list_rate: u32,
}

impl Default for ServerTimers {
    fn default() -> Self {
        ServerTimers {
            rtx_handshake: Duration::from_secs(1),
            rtx_stream: Duration::from_millis(200),
            transmissions: 5,
            alloc: Duration::from_secs(5),
            record: Duration::from_secs(30),
            join_lead: Duration::from_secs(1),
            list_rate: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_gives_the_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.validate().is_ok());
        let c: Config = toml::from_str("library = \"/srv/movies\"\nlisten = [\"[::]:31107\", \"0.0.0.0:31107\"]\nsession_ports = [40000, 40099]").unwrap();
        assert_eq!(c.library, Some(PathBuf::from("/srv/movies")));
        assert_eq!(c.session_ports, Some([40000, 40099]));
        assert_eq!(c.listen.len(), 2);
        assert!(toml::from_str::<Config>("movie_folder = \"x\"").is_err());
        let round: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn reference_key_names_and_defaults_of_section_13() {
        let c = Config::default();
        let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["[::]:31107", "0.0.0.0:31107"]);
        assert!(!c.interval_from_bitrate);
        assert_eq!(c.library, None, "the embedded demo movie needs no folder");
        // The first name of the library key still works, and is written
        // back under the reference's name.
        let old: Config = toml::from_str("movies_dir = \"/srv/movies\"").unwrap();
        assert_eq!(old.library, Some(PathBuf::from("/srv/movies")));
        let written = toml::to_string(&old).unwrap();
        assert!(written.contains("library = \"/srv/movies\""), "{written}");
        assert!(!written.contains("movies_dir"), "{written}");
        assert!(toml::from_str::<Config>("library = \"a\"\nmovies_dir = \"b\"").is_err());
        let c: Config = toml::from_str("interval_from_bitrate = true").unwrap();
        assert!(c.interval_from_bitrate);
    }

    #[test]
    fn validation_names_the_bad_key() {
        let c = Config {
            chunk_size: 1392,
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "movie.chunk_size must be 1 to 1391, not 1392"
        );
        let c = Config {
            session_ports: Some([80, 90]),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
