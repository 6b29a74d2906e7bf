//! A Matroska / WebM writer, sans-IO: it turns encoded frames into the bytes
//! of a `.webm` (VP8, VP9, AV1, Opus) or `.mkv` (also H.264) file and never
//! touches a file itself.
//!
//! The output is playable as it grows: the Segment starts with an unknown
//! size, so a reader that gets the bytes live (or a recording cut short by a
//! crash) sees a valid file. When the caller can seek, [`MatroskaWriter::finish`]
//! also returns [`Patch`]es that turn it into a seekable file: the Segment's
//! real size, the Duration, and a SeekHead pointing at the Cues written at the
//! end. Space for the patched elements is reserved up front as Void elements,
//! so patching never moves a byte.
//!
//! Clusters are buffered in memory and emitted whole, so every Cluster has a
//! known size; a new one starts at a video keyframe once the current one is a
//! second long, and in any case before the 16-bit block timecode overflows or
//! the cluster grows past a few megabytes. Timecodes are milliseconds
//! (TimecodeScale 1 000 000 ns).

/// Nanoseconds per timecode unit: timecodes are milliseconds.
pub const TIMECODE_SCALE_NS: u64 = 1_000_000;

/// A cluster that starts at a video keyframe needs to be at least this long
/// (ms) before a keyframe closes it, so clusters stay a useful size.
const CLUSTER_MIN_MS: i64 = 1_000;
/// Without a keyframe (audio only, long GOPs) a cluster closes after this long.
const CLUSTER_MAX_MS: i64 = 5_000;
/// A cluster's buffered bytes before it is closed regardless of timing.
const CLUSTER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Bytes reserved for the SeekHead, written as a Void until patched.
const SEEKHEAD_RESERVED: usize = 96;
/// Bytes of a Duration element (2-byte id, 1-byte size, 8-byte float).
const DURATION_LEN: usize = 11;
/// The largest frame accepted; Matroska can hold more, but nothing we record
/// comes near and a bound keeps sizes far from overflow.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const VOID: u32 = 0xEC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DURATION: u32 = 0x4489;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// Which flavour of file: WebM admits only VP8, VP9, AV1 and Opus (and
/// Vorbis, which we never write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocType {
    Webm,
    Matroska,
}

impl DocType {
    fn name(self) -> &'static str {
        match self {
            DocType::Webm => "webm",
            DocType::Matroska => "matroska",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            DocType::Webm => "webm",
            DocType::Matroska => "mkv",
        }
    }
}

/// A track's codec and what its CodecPrivate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackCodec {
    Vp8,
    Vp9,
    /// `av1c`: the AV1CodecConfigurationRecord (at least its 4-byte header).
    Av1 {
        av1c: Vec<u8>,
    },
    /// `avcc`: the AVCDecoderConfigurationRecord (see
    /// [`crate::fmp4::avc_decoder_config`]); frames must be given with 4-byte
    /// length prefixes, not start codes ([`crate::fmp4::annexb_to_length_prefixed`]).
    H264 {
        avcc: Vec<u8>,
    },
    Opus,
}

impl TrackCodec {
    fn codec_id(&self) -> &'static str {
        match self {
            TrackCodec::Vp8 => "V_VP8",
            TrackCodec::Vp9 => "V_VP9",
            TrackCodec::Av1 { .. } => "V_AV1",
            TrackCodec::H264 { .. } => "V_MPEG4/ISO/AVC",
            TrackCodec::Opus => "A_OPUS",
        }
    }

    pub fn is_video(&self) -> bool {
        !matches!(self, TrackCodec::Opus)
    }
}

/// One track of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// 1..=126; frames name their track by this number.
    pub number: u8,
    pub codec: TrackCodec,
    /// Video only.
    pub width: u32,
    pub height: u32,
    /// Audio only.
    pub sample_rate: u32,
    pub channels: u8,
}

impl TrackSpec {
    pub fn video(number: u8, codec: TrackCodec, width: u32, height: u32) -> Self {
        TrackSpec {
            number,
            codec,
            width,
            height,
            sample_rate: 0,
            channels: 0,
        }
    }

    pub fn opus(number: u8, sample_rate: u32, channels: u8) -> Self {
        TrackSpec {
            number,
            codec: TrackCodec::Opus,
            width: 0,
            height: 0,
            sample_rate,
            channels,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebmError {
    #[error("{0} can not be stored in WebM (use Matroska)")]
    NotWebm(&'static str),
    #[error("track number {0} is invalid or used twice")]
    BadTrackNumber(u8),
    #[error("no tracks")]
    NoTracks,
    #[error("no track number {0}")]
    UnknownTrack(u8),
    #[error("frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    #[error("the file is already finished")]
    Finished,
}

/// Bytes to overwrite at an absolute file offset once writing is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What [`MatroskaWriter::finish`] returns: `tail` is appended to the file,
/// then `patches` (if the output is seekable) make it seekable and give it a
/// duration. Without the patches the file is still valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub tail: Vec<u8>,
    pub patches: Vec<Patch>,
    /// Duration of the file in milliseconds.
    pub duration_ms: i64,
}

struct Cluster {
    timecode: i64,
    /// SimpleBlocks (and the Timecode element), without the Cluster header.
    body: Vec<u8>,
    /// A video keyframe opens this cluster (a cue point).
    starts_key: bool,
    last_ms: i64,
}

struct Cue {
    time: i64,
    track: u8,
    /// Cluster offset from the Segment's data start.
    position: u64,
}

/// The writer. Call [`header`](Self::header) once, then [`frame`](Self::frame)
/// for each frame in (roughly) increasing time, then [`finish`](Self::finish).
pub struct MatroskaWriter {
    doc: DocType,
    tracks: Vec<TrackSpec>,
    /// Bytes handed out so far.
    position: u64,
    /// Absolute offset of the Segment's data (after its id and size).
    segment_start: u64,
    /// Absolute offsets of placeholders.
    segment_size_at: u64,
    seekhead_at: u64,
    duration_at: u64,
    info_at: u64,
    tracks_at: u64,
    header_done: bool,
    finished: bool,
    cluster: Option<Cluster>,
    cues: Vec<Cue>,
    /// Per track: (last timecode, last gap between two frames).
    last: Vec<(u8, i64, i64)>,
    has_video: bool,
}

impl MatroskaWriter {
    pub fn new(doc: DocType, tracks: Vec<TrackSpec>) -> Result<Self, WebmError> {
        if tracks.is_empty() {
            return Err(WebmError::NoTracks);
        }
        for (i, t) in tracks.iter().enumerate() {
            if t.number == 0
                || t.number > 126
                || tracks.iter().skip(i + 1).any(|u| u.number == t.number)
            {
                return Err(WebmError::BadTrackNumber(t.number));
            }
            if doc == DocType::Webm && matches!(t.codec, TrackCodec::H264 { .. }) {
                return Err(WebmError::NotWebm("H.264"));
            }
        }
        let has_video = tracks.iter().any(|t| t.codec.is_video());
        Ok(MatroskaWriter {
            doc,
            tracks,
            position: 0,
            segment_start: 0,
            segment_size_at: 0,
            seekhead_at: 0,
            duration_at: 0,
            info_at: 0,
            tracks_at: 0,
            header_done: false,
            finished: false,
            cluster: None,
            cues: Vec::new(),
            last: Vec::new(),
            has_video,
        })
    }

    pub fn doc_type(&self) -> DocType {
        self.doc
    }

    /// The EBML header, the Segment start, Info and Tracks. Only the first
    /// call returns bytes.
    pub fn header(&mut self) -> Vec<u8> {
        if self.header_done {
            return Vec::new();
        }
        self.header_done = true;
        let mut out = Vec::new();
        let mut ebml = Vec::new();
        uint_element(&mut ebml, id::EBML_VERSION, 1);
        uint_element(&mut ebml, id::EBML_READ_VERSION, 1);
        uint_element(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
        uint_element(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
        bytes_element(&mut ebml, id::DOC_TYPE, self.doc.name().as_bytes());
        uint_element(&mut ebml, id::DOC_TYPE_VERSION, 4);
        uint_element(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
        master(&mut out, id::EBML, &ebml);

        write_id(&mut out, id::SEGMENT);
        self.segment_size_at = out.len() as u64;
        // 8-byte "unknown" size, patched with the real one when seekable.
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        self.segment_start = out.len() as u64;

        self.seekhead_at = out.len() as u64;
        void(&mut out, SEEKHEAD_RESERVED);

        self.info_at = out.len() as u64;
        let mut info = Vec::new();
        uint_element(&mut info, id::TIMECODE_SCALE, TIMECODE_SCALE_NS);
        bytes_element(&mut info, id::MUXING_APP, b"switchyard");
        bytes_element(&mut info, id::WRITING_APP, b"switchyard");
        let duration_in_info = info.len();
        void(&mut info, DURATION_LEN);
        let info_header = element_header_len(id::INFO, info.len());
        self.duration_at = self.info_at + (info_header + duration_in_info) as u64;
        master(&mut out, id::INFO, &info);

        self.tracks_at = out.len() as u64;
        let mut tracks = Vec::new();
        for t in &self.tracks {
            let mut e = Vec::new();
            uint_element(&mut e, id::TRACK_NUMBER, u64::from(t.number));
            uint_element(&mut e, id::TRACK_UID, 0x5357_0000 + u64::from(t.number));
            let video = t.codec.is_video();
            uint_element(&mut e, id::TRACK_TYPE, if video { 1 } else { 2 });
            uint_element(&mut e, id::FLAG_LACING, 0);
            bytes_element(&mut e, id::CODEC_ID, t.codec.codec_id().as_bytes());
            match &t.codec {
                TrackCodec::H264 { avcc } => bytes_element(&mut e, id::CODEC_PRIVATE, avcc),
                TrackCodec::Av1 { av1c } => bytes_element(&mut e, id::CODEC_PRIVATE, av1c),
                TrackCodec::Opus => {
                    bytes_element(
                        &mut e,
                        id::CODEC_PRIVATE,
                        &opus_head(t.channels, t.sample_rate),
                    );
                    uint_element(&mut e, id::CODEC_DELAY, 0);
                    // Opus decoders need 80 ms to converge after a seek.
                    uint_element(&mut e, id::SEEK_PRE_ROLL, 80_000_000);
                }
                TrackCodec::Vp8 | TrackCodec::Vp9 => {}
            }
            if video {
                let mut v = Vec::new();
                uint_element(&mut v, id::PIXEL_WIDTH, u64::from(t.width));
                uint_element(&mut v, id::PIXEL_HEIGHT, u64::from(t.height));
                master(&mut e, id::VIDEO, &v);
            } else {
                let mut a = Vec::new();
                float_element(&mut a, id::SAMPLING_FREQUENCY, f64::from(t.sample_rate));
                uint_element(&mut a, id::CHANNELS, u64::from(t.channels.max(1)));
                master(&mut e, id::AUDIO, &a);
            }
            master(&mut tracks, id::TRACK_ENTRY, &e);
        }
        master(&mut out, id::TRACKS, &tracks);
        self.position = out.len() as u64;
        out
    }

    /// Adds one frame at `time_ms`. Returns the bytes of a completed cluster
    /// (often empty: the current cluster is still being filled). Audio frames
    /// are always keyframes; `keyframe` matters for video.
    pub fn frame(
        &mut self,
        track: u8,
        time_ms: i64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<Vec<u8>, WebmError> {
        if self.finished {
            return Err(WebmError::Finished);
        }
        let spec = self
            .tracks
            .iter()
            .find(|t| t.number == track)
            .ok_or(WebmError::UnknownTrack(track))?;
        if data.len() > MAX_FRAME_BYTES {
            return Err(WebmError::FrameTooLarge(data.len()));
        }
        let video = spec.codec.is_video();
        let mut out = self.header();
        let video_key = video && keyframe;
        let close = match &self.cluster {
            None => false,
            Some(c) => {
                let age = time_ms.saturating_sub(c.timecode);
                let rel_ok = (-32_768..=32_767).contains(&age);
                !rel_ok
                    || c.body.len() + data.len() > CLUSTER_MAX_BYTES
                    || (video_key && age >= CLUSTER_MIN_MS)
                    || (!self.has_video && age >= CLUSTER_MAX_MS)
                    || age >= CLUSTER_MAX_MS * 2
            }
        };
        if close {
            out.extend(self.close_cluster());
        }
        let cluster = self.cluster.get_or_insert_with(|| {
            let mut body = Vec::new();
            uint_element(&mut body, id::TIMECODE, time_ms.max(0) as u64);
            Cluster {
                timecode: time_ms.max(0),
                body,
                starts_key: video_key || !self.has_video,
                last_ms: time_ms,
            }
        });
        let rel = time_ms
            .saturating_sub(cluster.timecode)
            .clamp(-32_768, 32_767) as i16;
        let flags = if keyframe || !video { 0x80 } else { 0 };
        let block_len = 4 + data.len();
        write_id(&mut cluster.body, id::SIMPLE_BLOCK);
        write_size(&mut cluster.body, block_len as u64);
        cluster.body.push(0x80 | track);
        cluster.body.extend_from_slice(&rel.to_be_bytes());
        cluster.body.push(flags);
        cluster.body.extend_from_slice(data);
        cluster.last_ms = cluster.last_ms.max(time_ms);
        match self.last.iter_mut().find(|(t, _, _)| *t == track) {
            Some(entry) => {
                let gap = time_ms.saturating_sub(entry.1);
                if gap > 0 {
                    entry.2 = gap.min(1_000);
                }
                entry.1 = entry.1.max(time_ms);
            }
            None => self.last.push((track, time_ms, 0)),
        }
        Ok(out)
    }

    fn close_cluster(&mut self) -> Vec<u8> {
        let Some(c) = self.cluster.take() else {
            return Vec::new();
        };
        let position = self.position.saturating_sub(self.segment_start);
        if c.starts_key {
            let track = self
                .tracks
                .iter()
                .find(|t| t.codec.is_video() == self.has_video)
                .map_or(1, |t| t.number);
            self.cues.push(Cue {
                time: c.timecode,
                track,
                position,
            });
        }
        let mut out = Vec::with_capacity(c.body.len() + 12);
        master(&mut out, id::CLUSTER, &c.body);
        self.position += out.len() as u64;
        out
    }

    /// Duration so far, in milliseconds: the end of the latest frame.
    pub fn duration_ms(&self) -> i64 {
        self.last
            .iter()
            .map(|(_, t, gap)| t.saturating_add(*gap))
            .max()
            .unwrap_or(0)
    }

    /// Ends the file: the last cluster and the Cues, plus the patches that
    /// fill in the Segment size, the Duration and the SeekHead.
    pub fn finish(&mut self) -> Finish {
        if self.finished {
            return Finish {
                tail: Vec::new(),
                patches: Vec::new(),
                duration_ms: self.duration_ms(),
            };
        }
        let mut tail = self.header();
        tail.extend(self.close_cluster());
        self.finished = true;
        let cues_at = self.position;
        let mut cues = Vec::new();
        for c in &self.cues {
            let mut point = Vec::new();
            uint_element(&mut point, id::CUE_TIME, c.time.max(0) as u64);
            let mut pos = Vec::new();
            uint_element(&mut pos, id::CUE_TRACK, u64::from(c.track));
            uint_element(&mut pos, id::CUE_CLUSTER_POSITION, c.position);
            master(&mut point, id::CUE_TRACK_POSITIONS, &pos);
            master(&mut cues, id::CUE_POINT, &point);
        }
        let have_cues = !cues.is_empty();
        if have_cues {
            let mut element = Vec::new();
            master(&mut element, id::CUES, &cues);
            self.position += element.len() as u64;
            tail.extend(element);
        }
        let duration_ms = self.duration_ms();
        let mut patches = Vec::new();

        // Segment size: everything after the size field.
        let size = self.position.saturating_sub(self.segment_start);
        let mut seg = vec![0x01];
        seg.extend_from_slice(size.to_be_bytes().get(1..).unwrap_or_default());
        patches.push(Patch {
            offset: self.segment_size_at,
            bytes: seg,
        });

        let mut dur = Vec::new();
        float_element(&mut dur, id::DURATION, duration_ms as f64);
        patches.push(Patch {
            offset: self.duration_at,
            bytes: dur,
        });

        let rel = |abs: u64| abs.saturating_sub(self.segment_start);
        let mut entries = vec![
            (id::INFO, rel(self.info_at)),
            (id::TRACKS, rel(self.tracks_at)),
        ];
        if have_cues {
            entries.push((id::CUES, rel(cues_at)));
        }
        let mut seekhead = Vec::new();
        for (element, pos) in entries {
            let mut seek = Vec::new();
            let mut idb = Vec::new();
            write_id(&mut idb, element);
            bytes_element(&mut seek, id::SEEK_ID, &idb);
            uint_element(&mut seek, id::SEEK_POSITION, pos);
            master(&mut seekhead, id::SEEK, &seek);
        }
        let mut block = Vec::new();
        master(&mut block, id::SEEK_HEAD, &seekhead);
        if block.len() + 2 <= SEEKHEAD_RESERVED {
            let rest = SEEKHEAD_RESERVED - block.len();
            void(&mut block, rest);
            patches.push(Patch {
                offset: self.seekhead_at,
                bytes: block,
            });
        }
        Finish {
            tail,
            patches,
            duration_ms,
        }
    }
}

/// The OpusHead identification header (RFC 7845 §5.1) Matroska wants as
/// CodecPrivate; RTP does not carry the encoder's pre-skip, so it is 0.
fn opus_head(channels: u8, sample_rate: u32) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels.clamp(1, 2));
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

fn write_id(out: &mut Vec<u8>, id: u32) {
    let b = id.to_be_bytes();
    let skip = if id >= 0x0100_0000 {
        0
    } else if id >= 0x1_0000 {
        1
    } else if id >= 0x100 {
        2
    } else {
        3
    };
    out.extend_from_slice(b.get(skip..).unwrap_or(&b));
}

fn id_len(id: u32) -> usize {
    let mut v = Vec::new();
    write_id(&mut v, id);
    v.len()
}

/// Length of an EBML variable-size integer holding `n` (all-ones is reserved
/// for "unknown", so each length holds one value less).
fn size_len(n: u64) -> usize {
    let mut len = 1;
    while len < 8 && n >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    len
}

fn write_size(out: &mut Vec<u8>, n: u64) {
    let len = size_len(n);
    let marked = n | (1u64 << (7 * len));
    let b = marked.to_be_bytes();
    out.extend_from_slice(b.get(8 - len..).unwrap_or(&b));
}

fn element_header_len(id: u32, size: usize) -> usize {
    id_len(id) + size_len(size as u64)
}

fn master(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn bytes_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    master(out, id, body);
}

fn uint_element(out: &mut Vec<u8>, id: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8).min(7) as usize;
    master(out, id, b.get(skip..).unwrap_or(&b));
}

fn float_element(out: &mut Vec<u8>, id: u32, v: f64) {
    master(out, id, &v.to_be_bytes());
}

/// A Void element of exactly `total` bytes (at least 2).
fn void(out: &mut Vec<u8>, total: usize) {
    let total = total.max(2);
    // id (1) + size (1 byte up to 126 of data, else 8 bytes)
    let (size_bytes, data) = if total - 2 <= 126 {
        (1, total - 2)
    } else {
        (8, total - 9)
    };
    write_id(out, id::VOID);
    if size_bytes == 1 {
        out.push(0x80 | data as u8);
    } else {
        let mut b = vec![0x01];
        b.extend_from_slice((data as u64).to_be_bytes().get(1..).unwrap_or_default());
        out.extend_from_slice(&b);
    }
    out.extend(std::iter::repeat_n(0u8, data));
}

/// The size of a VP8 keyframe from its uncompressed header (RFC 6386 §9.1).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let b: &[u8; 10] = crate::bits::array_at(frame, 0)?;
    if b[0] & 1 != 0 || b[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([b[6], b[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([b[8], b[9]]) & 0x3fff);
    Some((w, h))
}

/// The size of a VP9 keyframe from its uncompressed header (VP9 bitstream
/// specification §6.2).
pub fn vp9_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = crate::bits::BitReader::new(frame);
    if r.bits(2)? != 2 {
        return None;
    }
    let lo = r.bits(1)?;
    let hi = r.bits(1)?;
    let profile = (hi << 1) | lo;
    if profile == 3 {
        r.bits(1)?;
    }
    if r.flag()? {
        return None; // show_existing_frame
    }
    if r.flag()? {
        return None; // not a keyframe
    }
    r.bits(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        r.bits(1)?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        r.bits(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        r.bits(1)?;
    }
    let w = r.bits(16)? + 1;
    let h = r.bits(16)? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_minimal_and_avoid_the_unknown_marker() {
        let enc = |n| {
            let mut v = Vec::new();
            write_size(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        assert_eq!(enc(127), [0x40, 0x7F]);
        assert_eq!(enc(16382), [0x7F, 0xFE]);
        assert_eq!(enc(16383), [0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn void_has_the_requested_length() {
        for n in [2usize, 3, 100, 128, 129, 200] {
            let mut v = Vec::new();
            void(&mut v, n);
            assert_eq!(v.len(), n, "{n}");
        }
    }

    #[test]
    fn webm_refuses_h264() {
        let t = TrackSpec::video(1, TrackCodec::H264 { avcc: vec![1] }, 2, 2);
        assert!(matches!(
            MatroskaWriter::new(DocType::Webm, vec![t]),
            Err(WebmError::NotWebm(_))
        ));
    }

    #[test]
    fn vp8_size() {
        let f = [0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        assert_eq!(vp8_keyframe_size(&f), Some((640, 480)));
        assert_eq!(vp8_keyframe_size(&[0x11, 0, 0]), None);
    }
}
