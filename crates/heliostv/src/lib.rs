//! HeliosTv front end: serves the yard's channels over the HeliosTv protocol
//! (a control channel of MessagePack messages, plus one data channel per
//! service carrying MPEG-TS or PSI/SI sections), exactly as
//! `shared/reference/heliostv.md` specifies, and the people-facing client
//! behind `switchyard heliostv ...`.
//!
//! `wire`, `session` and `data` are sans-IO; only `server` and `client`
//! touch sockets. This crate must never let one connection disturb another,
//! never panic on network input, never block the yard's producers (it reads
//! through bounded yard readers), and never talk to another front end.
//!
//! Entry points for the server binary:
//! * [`server::run`]`(config, yard, shutdown) -> Result<(), server::Error>`
//!   binds `config.control_listen` / `config.data_listen` and serves;
//! * [`server::serve`]`(control, data, yard, config, shutdown)` serves
//!   already-bound listeners (tests use port 0).
//!
//! [`Config`] is the `[heliostv]` TOML section.
//!
//! For people: [`client::Cli`] (a `clap::Args` with the `list`, `record`
//! and `sections` subcommands) run by [`client::run`]. For tests and load
//! generators: [`client::Client`] and [`client::DataStream`].

pub mod client;
pub mod config;
pub mod data;
pub mod server;
pub mod session;
pub mod wire;

pub use config::Config;
pub use server::{run, serve};
