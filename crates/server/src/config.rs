//! The configuration file: one TOML document, every key with a default, so
//! `switchyard` with no file runs the demo. Unknown keys and bad values stop
//! start-up with the file, line and key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub web: WebConfig,
    pub tv: yard::TvConfig,
    /// Users, passwords and rights for TV (HTSP, HTTP streams, DVR).
    pub access: yard::access::AccessConfig,
    pub htsp: htsp::Config,
    pub heliostv: heliostv::Config,
    pub movie: movie::Config,
    /// The WebRTC media plane shared by Galène and OWT.
    pub rtc: rtc::Config,
    pub galene: galene::Config,
    pub owt: owt::Config,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the web port (HTTPS unless `plain_http`).
    pub listen: SocketAddr,
    /// Serve plain HTTP (the `--http` flag sets this and listens on loopback).
    pub plain_http: bool,
    /// PEM certificate chain and key; generated self-signed into the data
    /// folder when absent.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The URL clients should use to reach this server, for playlists
    /// (default: taken from each request's Host header).
    pub public_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            plain_http: false,
            cert: None,
            key: None,
            public_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start);
            let line = start
                .map(|s| text.get(..s).unwrap_or("").matches('\n').count() + 1)
                .unwrap_or(1);
            // toml names an unknown key but not the key of a bad value.
            let message = match start.and_then(|s| key_at(text, s)) {
                Some(key) => format!("{key}: {}", e.message()),
                None => e.message().to_string(),
            };
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                message,
            }
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// The dotted key (`tv.grace_secs`) of the `key = value` line holding `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with(['#', '[']) {
        return None;
    }
    let table = before
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|h| h.trim_start_matches('[').split(']').next())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_demo() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert!(c.tv.demo);
        assert_eq!(c.web.listen.port(), 8443);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Config::parse(
            "[web]\nplain_http = true\n\n[tv]\nfrobnicate = 1\n",
            Path::new("my.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("my.toml:5:"), "{err}");
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn bad_value_names_line() {
        let err = Config::parse("[web]\nlisten = \"nowhere\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2: web.listen:"), "{err}");
    }

    #[test]
    fn movie_keys_use_the_reference_notation_and_bad_values_name_the_key() {
        let c = Config::parse(
            "[movie]\nsession_ports = \"40000-40099\"\nregistration_window = \"10 s\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(c.movie.session_ports, Some([40000, 40099]));
        let printed = c.to_toml();
        for line in [
            "session_ports = \"40000-40099\"",
            "registration_window = \"10 s\"",
            "member_timeout = \"5 s\"",
            "pause_max = \"600 s\"",
        ] {
            assert!(
                printed.lines().any(|l| l == line),
                "no {line:?} in\n{printed}"
            );
        }
        let err = Config::parse(
            "[movie]\nlate_join = true\nmember_timeout = 5000\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "m.toml:3: movie.member_timeout: the bare number 5000 is not a duration"
            ),
            "{err}"
        );
        let err = Config::parse("[movie]\nsession_ports = \"1-2-3\"\n", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("m.toml:2: movie.session_ports: \"1-2-3\" is not a port range"),
            "{err}"
        );
    }

    #[test]
    fn printed_config_parses_back() {
        let c = Config::default();
        let again = Config::parse(&c.to_toml(), Path::new("p.toml")).unwrap();
        assert_eq!(c, again);
    }
}
