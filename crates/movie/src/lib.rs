//! The movie protocol (UDP, port 31107): a leader opens a session on its own
//! port, members register, the leader picks a movie from the server's
//! library and the server streams it, paced, to every member; plus the
//! command-line client people use to lead, join and list sessions.
//!
//! This crate must never read a file outside the configured movie folder,
//! never send Movie Data to an endpoint that has not acknowledged its Stream
//! Start, and never panic or stall a session on anything a peer sends.
//! `wire`, `server_session` and `client_session` are sans-IO (no sockets, no
//! clock reads); only `server` and `client` touch the network.

pub mod client;
pub mod client_session;
pub mod config;
pub mod fault;
pub mod library;
pub mod server;
pub mod server_session;
pub mod wire;

pub use config::{Config, ConfigError, ServerTimers};
pub use library::{LibraryError, Movie, MovieLibrary};

/// A datagram a state machine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: std::net::SocketAddr,
    pub payload: bytes::Bytes,
}
