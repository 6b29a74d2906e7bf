//! The `[heliostv]` section of the server's TOML (reference §17).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every field has the reference's default, so an empty section (or none)
/// runs HeliosTv on 31105/31106 on all interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub enabled: bool,
    /// Control listener addresses (default `[::]:31105` and `0.0.0.0:31105`).
    pub control_listen: Vec<SocketAddr>,
    /// Data listener addresses (default `[::]:31106` and `0.0.0.0:31106`).
    pub data_listen: Vec<SocketAddr>,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Deepest nesting of arrays and maps accepted.
    pub max_nesting: usize,
    /// Largest message sent, in bytes.
    pub max_sent_message: usize,
    pub hello_timeout_ms: u64,
    pub authorize_timeout_ms: u64,
    pub token_lifetime_ms: u64,
    pub max_sessions: usize,
    pub max_entries_per_session: usize,
    pub max_data_connections: usize,
    /// Unsent answers and notifications before a control connection is closed.
    pub control_queue_limit: usize,
    /// Player queue before whole groups of pictures are dropped.
    pub player_queue_limit: usize,
    pub player_stall_timeout_ms: u64,
    /// Recorder queue before the connection is cut (loudly).
    pub recorder_queue_limit: usize,
    pub recorder_stall_timeout_ms: u64,
    pub section_queue_limit: usize,
    /// SO_SNDBUF of data connections in bytes; 0 lets the kernel size it.
    /// A fixed size bounds what a stalled client holds in the kernel on top
    /// of the queue limits above.
    pub data_send_buffer: usize,
    /// Longest delay for batching SERVICES notifications.
    pub services_coalesce_ms: u64,
    /// Invalid tokens from one address within `bad_token_window_ms` ...
    pub bad_token_count: usize,
    pub bad_token_window_ms: u64,
    /// ... get its data connections refused for this long.
    pub bad_token_block_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        let both = |port| {
            vec![
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            ]
        };
        Config {
            enabled: true,
            control_listen: both(31105),
            data_listen: both(31106),
            max_message_size: crate::wire::MAX_MESSAGE_SIZE,
            max_nesting: crate::wire::MAX_NESTING,
            max_sent_message: crate::wire::MAX_SENT_MESSAGE,
            hello_timeout_ms: 10_000,
            authorize_timeout_ms: 10_000,
            token_lifetime_ms: 30_000,
            max_sessions: 256,
            max_entries_per_session: 16,
            max_data_connections: 512,
            control_queue_limit: 1 << 20,
            player_queue_limit: 4 << 20,
            player_stall_timeout_ms: 15_000,
            recorder_queue_limit: 64 << 20,
            recorder_stall_timeout_ms: 30_000,
            section_queue_limit: 1 << 20,
            data_send_buffer: 0,
            services_coalesce_ms: 100,
            bad_token_count: 10,
            bad_token_window_ms: 60_000,
            bad_token_block_ms: 60_000,
        }
    }
}

impl Config {
    pub fn wire_limits(&self) -> crate::wire::Limits {
        crate::wire::Limits {
            max_message: self.max_message_size.max(16),
            max_nesting: self.max_nesting.max(1),
        }
    }

    pub fn session_limits(&self) -> crate::session::Limits {
        crate::session::Limits {
            max_sessions: self.max_sessions,
            max_entries_per_session: self.max_entries_per_session,
            max_data_connections: self.max_data_connections,
            token_lifetime: Duration::from_millis(self.token_lifetime_ms),
            max_sent_message: self.max_sent_message,
            bad_token_count: self.bad_token_count.max(1),
            bad_token_window: Duration::from_millis(self.bad_token_window_ms),
            bad_token_block: Duration::from_millis(self.bad_token_block_ms),
        }
    }

    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }
    pub fn authorize_timeout(&self) -> Duration {
        Duration::from_millis(self.authorize_timeout_ms)
    }
    pub fn player_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.player_stall_timeout_ms)
    }
    pub fn recorder_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.recorder_stall_timeout_ms)
    }
    pub fn services_coalesce(&self) -> Duration {
        Duration::from_millis(self.services_coalesce_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_the_default_and_round_trips() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.control_listen[0].port(), 31105);
        assert_eq!(c.data_listen[1].port(), 31106);
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let c: Config = toml::from_str("control_listen = [\"127.0.0.1:4000\"]").unwrap();
        assert_eq!(c.control_listen, vec!["127.0.0.1:4000".parse().unwrap()]);
    }
}
