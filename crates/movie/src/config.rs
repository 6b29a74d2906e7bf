//! The `[movie]` section of Switchyard's configuration (§13 of the
//! reference), and the protocol timers, which only tests change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

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
    /// Optional inclusive range of session ports, written `"40000-40099"`
    /// as in the reference (`"40000"` is a range of one). The two-number
    /// array `[40000, 40099]` of earlier versions is still accepted.
    #[serde(
        serialize_with = "port_range::serialize",
        deserialize_with = "port_range::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
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
    /// T_WINDOW, written `"30 s"` (see [`parse_duration`]).
    #[serde(with = "duration")]
    pub registration_window: Duration,
    pub max_sessions: usize,
    pub max_pending_per_ip: usize,
    /// Members per session, leader included.
    pub max_members: usize,
    pub late_join: bool,
    pub session_list: bool,
    /// T_MEMBER, written `"5 s"`; above zero.
    #[serde(with = "duration")]
    pub member_timeout: Duration,
    /// T_PAUSE_MAX, written `"600 s"`.
    #[serde(with = "duration")]
    pub pause_max: Duration,
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
            registration_window: Duration::from_secs(30),
            max_sessions: 16,
            max_pending_per_ip: 4,
            max_members: 32,
            late_join: true,
            session_list: true,
            member_timeout: Duration::from_secs(5),
            pause_max: Duration::from_secs(600),
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
    #[error("movie.session_ports \"{0}-{1}\" must be an ascending range of ports from 1024")]
    PortRange(u16, u16),
    #[error("movie.listen must name at least one address")]
    NoListen,
    #[error("movie.max_members must be at least 1")]
    MaxMembers,
    #[error("movie.member_timeout must be above 0 s, or every member is dropped at once")]
    MemberTimeout,
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
        if self.member_timeout.is_zero() {
            return Err(ConfigError::MemberTimeout);
        }
        Ok(())
    }
}

/// Reads a duration in the reference's notation: a whole number and a unit
/// (`us`, `ms`, `s` or `min`), with or without a space: `"30 s"`,
/// `"200ms"`. A bare number is refused rather than guessed at, because the
/// keys held milliseconds before they took the reference's names.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || {
        format!(
            "{text:?} is not a duration; write a whole number and a unit (us, ms, s or min), e.g. \"30 s\""
        )
    };
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| wrong())?;
    let micros_per_unit: u64 = match unit.trim_start() {
        "us" | "µs" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "min" => 60_000_000,
        _ => return Err(wrong()),
    };
    n.checked_mul(micros_per_unit)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// Writes a duration as [`parse_duration`] reads it, in the largest unit
/// that keeps it exact, so `--print-config` shows `"30 s"` as §13 does.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000_000) {
        format!("{} s", micros / 1_000_000)
    } else if micros.is_multiple_of(1_000) {
        format!("{} ms", micros / 1_000)
    } else {
        format!("{micros} us")
    }
}

mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"30 s\" or \"200 ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "the bare number {v} is not a duration; add a unit, e.g. \"{v} s\" or \"{v} ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "the bare number {v} is not a duration; add a unit, e.g. \"{v} s\" or \"{v} ms\""
                )))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Reads a session port range: `"40000-40099"` (§13), `"40000"`, or the
/// earlier `[40000, 40099]`. Whether the range is usable is left to
/// [`Config::validate`], which names the key.
pub fn parse_port_range(text: &str) -> Result<[u16; 2], String> {
    let port = |p: &str| {
        p.trim().parse::<u16>().map_err(|_| {
            format!("{text:?} is not a port range; write two ports 0 to 65535 as \"40000-40099\"")
        })
    };
    match text.split_once('-') {
        Some((a, b)) => Ok([port(a)?, port(b)?]),
        None => port(text).map(|p| [p, p]),
    }
}

mod port_range {
    use super::*;

    pub fn serialize<S: Serializer>(r: &Option<[u16; 2]>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some([a, b]) => s.serialize_str(&format!("{a}-{b}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u16; 2]>, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = [u16; 2];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port range such as \"40000-40099\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<[u16; 2], E> {
                parse_port_range(v).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u16; 2], A::Error> {
                let wrong = || {
                    de::Error::custom(
                        "a port range array holds exactly two ports, e.g. [40000, 40099]; \"40000-40099\" is the usual form",
                    )
                };
                let a: u16 = seq.next_element()?.ok_or_else(wrong)?;
                let b: u16 = seq.next_element()?.ok_or_else(wrong)?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(wrong());
                }
                Ok([a, b])
            }
        }
        d.deserialize_any(Visit).map(Some)
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

    /// The error toml reports for `text` as a `[movie]` section.
    fn refused(text: &str) -> String {
        toml::from_str::<Config>(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_toml_gives_the_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.validate().is_ok());
        let c: Config = toml::from_str("library = \"/srv/movies\"\nlisten = [\"[::]:31107\", \"0.0.0.0:31107\"]\nsession_ports = \"40000-40099\"").unwrap();
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
        assert_eq!(c.session_ports, None);
        assert_eq!(c.library, None, "the embedded demo movie needs no folder");
        assert_eq!(c.chunk_size, 1316);
        assert_eq!(c.default_interval_us, 10_000);
        assert!(!c.interval_from_bitrate);
        assert_eq!(c.min_interval_us, 1_000);
        assert_eq!(c.max_interval_us, 1_000_000);
        assert_eq!(c.registration_window, Duration::from_secs(30));
        assert_eq!(c.max_sessions, 16);
        assert_eq!(c.max_pending_per_ip, 4);
        assert_eq!(c.max_members, 32);
        assert!(c.late_join);
        assert!(c.session_list);
        assert_eq!(c.member_timeout, Duration::from_secs(5));
        assert_eq!(c.pause_max, Duration::from_secs(600));

        // Written out, the defaults use §13's names and notation.
        let written = toml::to_string(&c).unwrap();
        for line in [
            "listen = [\"[::]:31107\", \"0.0.0.0:31107\"]",
            "chunk_size = 1316",
            "default_interval_us = 10000",
            "interval_from_bitrate = false",
            "min_interval_us = 1000",
            "max_interval_us = 1000000",
            "registration_window = \"30 s\"",
            "max_sessions = 16",
            "max_pending_per_ip = 4",
            "max_members = 32",
            "late_join = true",
            "session_list = true",
            "member_timeout = \"5 s\"",
            "pause_max = \"600 s\"",
        ] {
            assert!(
                written.lines().any(|l| l == line),
                "no {line:?} in\n{written}"
            );
        }
        assert!(!written.contains("_ms"), "{written}");
        assert!(
            !written.contains("session_ports"),
            "unset, so not written:\n{written}"
        );
    }

    #[test]
    fn every_section_13_key_parses_in_the_reference_form() {
        let c: Config = toml::from_str(
            r#"
            listen = ["127.0.0.1:41107"]
            session_ports = "40000-40099"
            library = "/srv/movies"
            chunk_size = 1000
            default_interval_us = 20000
            interval_from_bitrate = true
            min_interval_us = 500
            max_interval_us = 500000
            registration_window = "10 s"
            max_sessions = 3
            max_pending_per_ip = 2
            max_members = 5
            late_join = false
            session_list = false
            member_timeout = "2500 ms"
            pause_max = "10 min"
            "#,
        )
        .unwrap();
        let want = Config {
            enabled: true,
            listen: vec!["127.0.0.1:41107".parse().unwrap()],
            session_ports: Some([40000, 40099]),
            library: Some(PathBuf::from("/srv/movies")),
            chunk_size: 1000,
            default_interval_us: 20_000,
            interval_from_bitrate: true,
            min_interval_us: 500,
            max_interval_us: 500_000,
            registration_window: Duration::from_secs(10),
            max_sessions: 3,
            max_pending_per_ip: 2,
            max_members: 5,
            late_join: false,
            session_list: false,
            member_timeout: Duration::from_millis(2500),
            pause_max: Duration::from_secs(600),
            timers: ServerTimers::default(),
        };
        assert_eq!(c, want);
        assert!(c.validate().is_ok());
        let written = toml::to_string(&c).unwrap();
        assert!(
            written.contains("session_ports = \"40000-40099\""),
            "{written}"
        );
        assert!(
            written.contains("member_timeout = \"2500 ms\""),
            "{written}"
        );
        assert!(written.contains("pause_max = \"600 s\""), "{written}");
        assert_eq!(toml::from_str::<Config>(&written).unwrap(), c);
    }

    #[test]
    fn durations_take_a_unit_with_or_without_a_space() {
        for (text, want) in [
            ("30 s", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("200 ms", Duration::from_millis(200)),
            ("1500ms", Duration::from_millis(1500)),
            ("250 us", Duration::from_micros(250)),
            ("2 min", Duration::from_secs(120)),
            ("0 s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for d in [
            Duration::from_secs(600),
            Duration::from_millis(2500),
            Duration::from_micros(1_000_001),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_millis(200)), "200 ms");
        for bad in ["30", "s", "-1 s", "1.5 s", "30 sec", "30 s later", ""] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. \"30 s\""), "{bad}: {err}");
        }
        assert!(
            parse_duration("18446744073709551615 s")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn a_bad_duration_is_refused_naming_the_key() {
        for key in ["registration_window", "member_timeout", "pause_max"] {
            let err = refused(&format!("{key} = \"30 parsecs\""));
            assert!(err.contains(key), "{err}");
            assert!(err.contains("\"30 parsecs\" is not a duration"), "{err}");
            // A bare number was milliseconds under the old name: refused
            // rather than read as seconds or milliseconds.
            let err = refused(&format!("{key} = 30"));
            assert!(err.contains(key), "{err}");
            assert!(
                err.contains("the bare number 30 is not a duration; add a unit"),
                "{err}"
            );
        }
        // The old `_ms` names are gone; the refusal lists the new ones.
        let err = refused("registration_window_ms = 30000");
        assert!(
            err.contains("unknown field `registration_window_ms`"),
            "{err}"
        );
        assert!(err.contains("`registration_window`"), "{err}");

        let c: Config = toml::from_str("member_timeout = \"0 s\"").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "movie.member_timeout must be above 0 s, or every member is dropped at once"
        );
    }

    #[test]
    fn session_ports_take_the_reference_form_one_port_or_the_old_array() {
        let ports = |text: &str| toml::from_str::<Config>(text).map(|c| c.session_ports);
        assert_eq!(
            ports("session_ports = \"40000-40099\""),
            Ok(Some([40000, 40099]))
        );
        assert_eq!(
            ports("session_ports = \"40000 - 40099\""),
            Ok(Some([40000, 40099]))
        );
        assert_eq!(ports("session_ports = \"40000\""), Ok(Some([40000, 40000])));
        assert_eq!(
            ports("session_ports = [40000, 40099]"),
            Ok(Some([40000, 40099]))
        );
        for bad in [
            "session_ports = \"40000-70000\"",
            "session_ports = \"ports\"",
            "session_ports = \"40000-\"",
        ] {
            let err = refused(bad);
            assert!(err.contains("session_ports"), "{err}");
            assert!(err.contains("is not a port range"), "{err}");
        }
        let err = refused("session_ports = [40000]");
        assert!(err.contains("exactly two ports"), "{err}");
        let err = refused("session_ports = [40000, 40001, 40002]");
        assert!(err.contains("exactly two ports"), "{err}");
        let err = refused("session_ports = 40000");
        assert!(
            err.contains("a port range such as \"40000-40099\""),
            "{err}"
        );

        for (text, msg) in [
            (
                "session_ports = \"80-90\"",
                "movie.session_ports \"80-90\" must be an ascending range of ports from 1024",
            ),
            (
                "session_ports = \"40099-40000\"",
                "movie.session_ports \"40099-40000\" must be an ascending range of ports from 1024",
            ),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            assert_eq!(c.validate().unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn the_library_keeps_its_first_name_as_an_alias() {
        let old: Config = toml::from_str("movies_dir = \"/srv/movies\"").unwrap();
        assert_eq!(old.library, Some(PathBuf::from("/srv/movies")));
        let written = toml::to_string(&old).unwrap();
        assert!(written.contains("library = \"/srv/movies\""), "{written}");
        assert!(!written.contains("movies_dir"), "{written}");
        assert!(toml::from_str::<Config>("library = \"a\"\nmovies_dir = \"b\"").is_err());
    }

    #[test]
    fn validation_names_the_bad_key() {
        let check = |text: &str, msg: &str| {
            let c: Config = toml::from_str(text).unwrap();
            assert_eq!(c.validate().unwrap_err().to_string(), msg, "{text}");
        };
        check(
            "chunk_size = 1392",
            "movie.chunk_size must be 1 to 1391, not 1392",
        );
        check(
            "chunk_size = 0",
            "movie.chunk_size must be 1 to 1391, not 0",
        );
        check(
            "min_interval_us = 0",
            "movie.min_interval_us (0) must be at least 1 and not above movie.max_interval_us (1000000)",
        );
        check(
            "min_interval_us = 2000\nmax_interval_us = 1000",
            "movie.min_interval_us (2000) must be at least 1 and not above movie.max_interval_us (1000)",
        );
        check("listen = []", "movie.listen must name at least one address");
        check("max_members = 0", "movie.max_members must be at least 1");
        // Type errors are toml's, shown on the key's line.
        for text in [
            "chunk_size = \"big\"",
            "late_join = \"yes\"",
            "listen = [\"nowhere\"]",
            "max_sessions = -1",
        ] {
            let err = refused(text);
            let key = text.split(' ').next().unwrap();
            assert!(err.contains(key), "{err}");
        }
    }
}
