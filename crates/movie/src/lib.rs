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
//!
//! # For the server binary
//!
//! ```ignore
//! // [movie] section of the TOML: movie::Config (see its fields).
//! let library = movie::server::library_from_config(&config.movie, vec![
//!     ("demo-movie.mp4".into(), bytes::Bytes::from_static(DEMO_MOVIE)),
//! ])?;
//! movie::server::serve(config.movie, library, shutdown).await?;
//! ```
//!
//! * [`server::serve`]`(Config, MovieLibrary, CancellationToken) -> Result<(), server::Error>`
//!   binds `config.listen` and runs until the token is cancelled; sessions
//!   then end with Stream End SHUTDOWN (at most 2 s).
//! * [`server::serve_on`]`(Vec<UdpSocket>, Config, MovieLibrary, CancellationToken)`
//!   does the same on P0 sockets bound by the caller (tests use port 0).
//! * Client subcommands: [`client::lead`]`(LeadArgs, CancellationToken)`,
//!   [`client::join`]`(JoinArgs, CancellationToken)` (both `-> Result<Report, CliError>`;
//!   exit with [`client::Report::exit_code`]) and [`client::list`]`(ListArgs)`.
//!   Cancelling the token is the user quitting (Ctrl-C): the client sends
//!   LEAVE and prints its statistics.
//! * `switchyard-bench movie`: [`loadgen::run_local`] (in-process server on
//!   one thread) or [`loadgen::run`] against a running server.
//!
//! # Where the reference's conformance checklist is tested
//!
//! Items 1–4 in `wire::tests`; 5–10, 12–20, 22–27, 29 and 32 in
//! `server_session::tests` (functions named `cNN_…`); 11, 21, 24, 25, 28,
//! 30, 31 and 33 in `client_session::tests`, where clients and server meet on
//! a simulated network; and over real loopback sockets, with
//! [`fault::FaultySocket`] where loss is needed, in `tests/loopback.rs`.

pub mod bitrate;
pub mod client;
pub mod client_session;
pub mod config;
pub mod fault;
pub mod library;
pub mod loadgen;
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
