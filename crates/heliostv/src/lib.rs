//! HeliosTv front end: serves the yard's channels over the HeliosTv protocol
//! (control channel of MessagePack messages, data channels of MPEG-TS or
//! PSI/SI sections), as `/work/shared/reference/heliostv.md` specifies.
//!
//! `wire` and `session` are sans-IO; only `server` (and the people-facing
//! `client`) touch sockets. This crate must never let one connection disturb
//! another, never panic on network input, and never talk to another front end.

pub mod wire;
pub mod session;
