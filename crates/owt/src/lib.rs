//! The Open WebRTC Toolkit front end: OWT's Client–Portal protocol 1.1 over Socket.IO
//! (Engine.IO 3 for socket.io-client 2.x and Engine.IO 4 for 3.x/4.x, on the same endpoint)
//! and OWT's management REST API, serving OWT SDK apps on the same SFU ([`rtc::Sfu`]) and
//! the same rooms ([`yard::room::Rooms`]) as the Galène front end, so an OWT room and a
//! Galène group of the same name are one conference.
//!
//! This crate must never speak another front end's protocol, never keep published media
//! itself (streams live in the SFU, members and chat in the yard's rooms), and never let one
//! client's bad input (forged token, bad SDP, unknown ids) disturb another session.
//!
//! # Entry point
//!
//! [`build`]`(config, yard, sfu, shutdown) -> Result<(axum::Router, OwtState), Error>` (call
//! inside the tokio runtime) returns a router holding `/socket.io/` (with the credentialed
//! CORS socket.io-client 2 needs) and the REST API under `/v1/…` and `/v1.1/…`, to be merged
//! into the web router; its background tasks stop with `shutdown`. [`serve`] runs it alone
//! on a listener. The management service id and key come from [`Config`] or from
//! `owt-keys.json` in the yard's data folder (generated and printed once); REST-created
//! rooms are kept in `owt-rooms.json` there.
//!
//! # Layout
//!
//! * [`wire`]: typed requests, notifications, acks, StreamInfo 1.1 (sans-IO);
//! * [`token`]: login tokens and reconnection tickets (HMAC-SHA256, single use, expiry);
//! * [`room`]: OWT room configurations (roles, limits, stored-but-inert options);
//! * [`session`]: the portal state machine for every connection (sans-IO);
//! * [`rest`]: MAuth and the management routes;
//! * [`server`]: socketioxide handlers, the SFU and room plumbing, deadlines;
//! * [`client`]: client-side EIO4 frames, for load generators and tests.

pub mod client;
pub mod rest;
pub mod room;
pub mod server;
pub mod session;
pub mod token;
pub mod wire;

pub use server::{Keys, OwtState, build, serve};

use serde::{Deserialize, Serialize};

/// `[owt]` in the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve Socket.IO at `/socket.io/` and the REST API at `/v1/…` on the web port.
    pub enabled: bool,
    /// Management API service id; empty = the one in `owt-keys.json` in the data folder
    /// (generated and printed once when absent).
    pub service_id: String,
    /// Management API service key; empty = from `owt-keys.json`.
    pub service_key: String,
    /// `host` written into tokens (`name:port` clients connect to); empty = the Host
    /// header of the token request.
    pub public_host: String,
    /// Tokens tell clients to use TLS (the web port is HTTPS unless `--http`).
    pub secure: bool,
    /// Longest `text` message, in characters.
    pub text_limit: usize,
    /// A socket that has not logged in after this long is closed.
    pub login_timeout_s: u64,
    /// How long a participant whose transport dropped waits for `relogin`.
    pub reconnection_timeout_s: u64,
    /// Reconnection ticket lifetime.
    pub ticket_lifetime_s: u64,
    /// Engine.IO heartbeat, announced in the open packet.
    pub ping_interval_s: u64,
    pub ping_timeout_s: u64,
    /// Upper bound of the random delay before a 401, as OWT does (0 = none).
    pub mauth_failure_delay_ms: u64,
    /// Rooms that exist at start (id = name), besides those created over REST.
    pub rooms: Vec<String>,
    /// Keep keys and rooms in the data folder.
    pub persist: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            service_id: String::new(),
            service_key: String::new(),
            public_host: String::new(),
            secure: true,
            text_limit: 2048,
            login_timeout_s: 180,
            reconnection_timeout_s: 60,
            ticket_lifetime_s: 600,
            ping_interval_s: 25,
            ping_timeout_s: 20,
            mauth_failure_delay_ms: 1000,
            rooms: vec!["public".into()],
            persist: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data folder {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("web server: {0}")]
    Io(std::io::Error),
}
