//! The protocol-neutral description of a broadcast programme and the unit of
//! media that flows through the yard. Every front end speaks in these types.

use bytes::Bytes;

/// 90 kHz clock ticks, the MPEG-TS timestamp unit.
pub const TS_CLOCK_HZ: u64 = 90_000;

/// A codec carried in a transport stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Hevc,
    Mpeg2Video,
    Aac,
    MpegAudio,
    Ac3,
    Eac3,
    /// A stream type we pass through but do not understand (subtitles, data...).
    Other(u8),
}

impl Codec {
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::Hevc | Codec::Mpeg2Video)
    }
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            Codec::Aac | Codec::MpegAudio | Codec::Ac3 | Codec::Eac3
        )
    }
    /// The codec from an ISO/IEC 13818-1 stream_type (and, for private PES,
    /// the descriptor-derived hint passed as `private_hint`).
    pub fn from_stream_type(stream_type: u8) -> Codec {
        match stream_type {
            0x1b => Codec::H264,
            0x24 => Codec::Hevc,
            0x01 | 0x02 => Codec::Mpeg2Video,
            0x0f | 0x11 => Codec::Aac,
            0x03 | 0x04 => Codec::MpegAudio,
            0x81 => Codec::Ac3,
            0x87 => Codec::Eac3,
            other => Codec::Other(other),
        }
    }
}

/// What the demuxer learned about a video elementary stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    /// Frames per second as a fraction (num, den), when the SPS says.
    pub frame_rate: Option<(u32, u32)>,
    /// Sample aspect ratio (num, den).
    pub aspect: Option<(u32, u32)>,
    /// Parameter sets (H.264: SPS + PPS; HEVC: VPS + SPS + PPS) in Annex-B form.
    pub parameter_sets: Bytes,
}

/// What the demuxer learned about an audio elementary stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioParams {
    pub sample_rate: u32,
    pub channels: u8,
    /// AAC: the AudioSpecificConfig (2+ bytes), for front ends that need it.
    pub codec_config: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackParams {
    Video(VideoParams),
    Audio(AudioParams),
    None,
}

/// One elementary stream of a programme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The elementary PID; also the track's identity in a `Frame`.
    pub pid: u16,
    pub stream_type: u8,
    pub codec: Codec,
    /// ISO 639 language code from the PMT, when present.
    pub language: Option<String>,
    /// `None` until the first frames made the parameters known.
    pub params: TrackParams,
}

impl Track {
    /// Parameters are known (or the codec has none we care about).
    pub fn is_ready(&self) -> bool {
        !matches!(self.params, TrackParams::None)
            || !(self.codec.is_video() || self.codec.is_audio())
    }
}

/// A programme (a "service" in DVB terms) of a transport stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    pub program_number: u16,
    pub pmt_pid: u16,
    pub pcr_pid: u16,
    /// From the SDT, when the stream carries one.
    pub service_name: Option<String>,
    pub provider_name: Option<String>,
    pub tracks: Vec<Track>,
}

impl Program {
    pub fn track(&self, pid: u16) -> Option<&Track> {
        self.tracks.iter().find(|t| t.pid == pid)
    }
    /// Every video and audio track has known parameters.
    pub fn is_ready(&self) -> bool {
        !self.tracks.is_empty() && self.tracks.iter().all(Track::is_ready)
    }
}

/// The picture type of a video frame, as the drop policy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A keyframe (IDR / I picture): decoding can start here.
    Key,
    /// A predicted picture others may depend on.
    Predicted,
    /// A picture nothing depends on (B, or non-reference).
    Bidirectional,
    Audio,
    Other,
}

/// One access unit of one elementary stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The track's PID.
    pub pid: u16,
    /// 90 kHz, 33-bit wrapped values unwrapped into a monotonic u64/i64 line
    /// by the demuxer so consumers never see the wrap.
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    /// Duration in 90 kHz ticks when known (audio frame length, video frame rate).
    pub duration: Option<u32>,
    pub kind: FrameKind,
    /// Video: Annex-B (start codes), parameter sets included before keyframes.
    /// AAC: ADTS frames as carried in the TS.
    pub data: Bytes,
}

impl Frame {
    pub fn is_key(&self) -> bool {
        self.kind == FrameKind::Key
    }
}
