//! HTSP, Tvheadend's native protocol, served from the yard so that Kodi's
//! `pvr.hts` and other HTSP clients see Switchyard as a Tvheadend server.
//!
//! `wire` (the htsmsg codec), `session` (one connection's state machine),
//! `streaming` (frames → `muxpkt`), `queue` (output queues and drop policy)
//! and `tickets` are sans-IO; only `server` touches sockets and the clock.
//! This crate must never panic on anything a client sends, and must never let
//! one connection's behaviour stall another's or the channel's producer.
//!
//! The server calls [`server::run`] (or [`server::serve`] with a bound
//! listener) with an [`HtspContext`] built from the yard, the recorder and
//! the access rules. The HTTP side uses [`HtspContext::check_ticket`] for
//! `?ticket=` URLs and [`HtspContext::dvr_file`] for `/dvrfile/{id}`. Load
//! clients can speak HTSP with the public [`wire`] codec.

pub mod queue;
pub mod server;
pub mod session;
pub mod streaming;
pub mod tickets;
pub mod wire;

pub use server::{Config, DvrFileError, Error, HtspContext, run, serve};
