//! Sans-IO media formats for Switchyard: MPEG-TS packets, PSI/SI tables, PES
//! reassembly, codec parameter parsing, single-program remux, M3U and XMLTV.
//!
//! This crate turns bytes into typed values and back. It must never do I/O,
//! read the clock, spawn tasks, log, or panic on any input: everything here
//! is fed bytes from the network and is fuzzed.
//!
//! The TS demuxer is written here rather than taken from `mpeg2ts-reader`:
//! that crate parses zero-copy but leaves sync recovery over arbitrary
//! chunks, the loss/duplicate/resync counters, 33-bit timestamp unwrapping
//! and the SPTS rewrite to the caller, and its filter-per-PID design
//! allocates boxed consumers we would need to fight to hand out `Bytes`
//! slices of one buffer. The packet layer is small, it is the hot path of
//! every live channel, and owning it keeps the no-allocation-per-packet
//! budget under our control.
//!
//! Map:
//! * [`ts`]: packets, adaptation field, the chunk [`ts::TsAligner`], [`DemuxStats`].
//! * [`psi`]: section reassembly, CRC_32, PAT/PMT/SDT/EIT parse and build.
//! * [`pes`]: PES headers and timestamp unwrapping.
//! * [`video`], [`audio`]: codec headers (H.264, HEVC, MPEG-2; AAC, MPEG audio, AC-3).
//! * [`demux`]: [`Demuxer`] — bytes in, [`DemuxEvent`]s out.
//! * [`remux`]: [`SptsRemuxer`] — one programme of a TS as its own TS.
//! * [`m3u`], [`xmltv`]: playlist and programme guide parsers and writers.
//! * [`webm`]: Matroska/WebM writer (recordings); [`fmp4`]: fragmented MP4
//!   writer for H.264 + AAC (TV in the browser).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod audio;
pub mod bits;
pub mod demux;
pub mod fmp4;
pub mod m3u;
pub mod pes;
pub mod program;
pub mod psi;
pub mod remux;
pub mod ts;
pub mod video;
pub mod webm;
pub mod xmltv;

pub use demux::{DemuxEvent, Demuxer};
pub use program::{AudioParams, Codec, Frame, FrameKind, Program, Track, TrackParams, VideoParams};
pub use remux::{RemuxOptions, RemuxOutput, SptsRemuxer};
pub use ts::DemuxStats;
