//! Switchyard's Galène front end: the JSON-over-WebSocket signalling of Galène
//! (protocol version "2"), its group files and tokens, the HTTP endpoints
//! Galène clients read (`/group/NAME/.status`, `/public-groups.json`), the
//! disk recorder with its `/recordings/NAME/` browser, and WHIP ingest at
//! `/group/NAME/.whip`.
//!
//! Entry point for the server: [`GaleneState::new`] then [`router`], merged
//! into the web router; [`Config`] lives under `[galene]`.
//!
//! A Galène group is a [`yard::room::Room`], shared with the OWT portal; media
//! goes through the shared [`rtc::Sfu`]. `wire` and `session` are sans-IO;
//! only `server` touches sockets and the clock. This crate must never let a
//! client's input panic the process, affect another client's connection, or
//! grant more than the group file, token or an operator granted.

pub mod groups;
pub mod recorder;
mod recordings;
pub mod server;
pub mod session;
mod whip;
pub mod wire;

pub use server::{Config, Error, GaleneState, router};
