//! Sans-IO media formats for Switchyard: MPEG-TS packets, PSI/SI tables, PES
//! reassembly, codec parameter parsing, single-program remux, M3U and XMLTV.
//!
//! This crate turns bytes into typed values and back. It must never do I/O,
//! read the clock, spawn tasks or panic on any input: everything here is fed
//! bytes from the network and is fuzzed.

pub mod program;

pub use program::{AudioParams, Codec, Frame, FrameKind, Program, Track, TrackParams, VideoParams};
