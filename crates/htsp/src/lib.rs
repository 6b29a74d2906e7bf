//! HTSP, Tvheadend's native protocol, served from the yard so that Kodi's
//! `pvr.hts` and other HTSP clients see Switchyard as a Tvheadend server.
//!
//! `wire` turns bytes into htsmsg values and back, `session` is the per
//! connection state machine; both are sans-IO. Only `server` touches sockets
//! and the clock. This crate must never panic on anything a client sends, and
//! must never let one connection's behaviour stall another's.

pub mod wire;
pub mod session;
pub mod queue;
pub mod streaming;
