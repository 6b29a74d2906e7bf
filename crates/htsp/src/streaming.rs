//! One subscription's media path, sans-IO: the yard's `Program` and `Frame`s
//! in, `subscriptionStart` / `muxpkt` / status messages out (reference §8).
//!
//! It holds back `subscriptionStart` until the first video stream has its
//! dimensions, starts every start on a keyframe, normalises timestamps so a
//! subscription begins near zero and never goes backwards, and converts to
//! microseconds unless the client asked for 90 kHz.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use media::{Codec, Frame, FrameKind, Program, Track, TrackParams};

use crate::wire::{Msg, Value};

/// How far before the first keyframe the timeline starts, 90 kHz ticks: room
/// for audio that was muxed slightly earlier than the picture.
const START_BACKOFF: i64 = 90_000;
/// A jump larger than this (90 kHz) in one stream's input timestamps is a
/// discontinuity (an input restarting), not media time.
const DISCONTINUITY: i64 = 10 * 90_000;

/// What the subscription produces.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOut {
    /// A message for the subscription queue (start, stop, status).
    Msg(Msg),
    /// A `muxpkt`, with what the queue's drop policy needs to know.
    Packet(Packet),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub msg: Msg,
    /// `None` for audio and other never-dropped streams.
    pub video: Option<FrameKind>,
    pub payload_len: usize,
    /// In the subscription timebase.
    pub dts: i64,
}

/// The HTSP codec name of a track (Tvheadend's stream type table).
pub fn codec_name(codec: Codec) -> Option<&'static str> {
    Some(match codec {
        Codec::H264 => "H264",
        Codec::Hevc => "HEVC",
        Codec::Mpeg2Video => "MPEG2VIDEO",
        Codec::Aac => "AAC",
        Codec::MpegAudio => "MPEG2AUDIO",
        Codec::Ac3 => "AC3",
        Codec::Eac3 => "EAC3",
        Codec::Other(_) => return None,
    })
}

/// The sampling-frequency index HTSP sends as `rate` (§8.2).
pub fn rate_index(hz: u32) -> Option<u32> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    RATES
        .iter()
        .position(|r| *r == hz)
        .map(|i| i as u32)
        .filter(|i| *i != 0)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Where the channel comes from, for `sourceinfo`.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    pub service: String,
    pub provider: Option<String>,
    pub network_type: String,
    pub mux: String,
    /// Hide source details (anonymised users).
    pub anonymize: bool,
}

pub struct StreamConverter {
    id: u32,
    ninety_khz: bool,
    source: SourceInfo,
    program: Option<Arc<Program>>,
    /// pid → stream index, stable for the subscription.
    indexes: BTreeMap<u16, u32>,
    next_index: u32,
    started: bool,
    /// `subscriptionStop` was sent and no new start yet.
    stopped: bool,
    /// Input 90 kHz value that maps to output 0.
    reference: Option<i64>,
    last_in: HashMap<u16, i64>,
    last_out: HashMap<u16, i64>,
    /// Largest output timestamp so far (continuity across restarts).
    high_water: i64,
    disabled: HashSet<u32>,
}

impl StreamConverter {
    pub fn new(subscription_id: u32, ninety_khz: bool, source: SourceInfo) -> StreamConverter {
        StreamConverter {
            id: subscription_id,
            ninety_khz,
            source,
            program: None,
            indexes: BTreeMap::new(),
            next_index: 1,
            started: false,
            stopped: false,
            reference: None,
            last_in: HashMap::new(),
            last_out: HashMap::new(),
            high_water: 0,
            disabled: HashSet::new(),
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// 90 kHz → the subscription timebase (µs truncated, or 90 kHz).
    pub fn to_timebase(&self, ticks: i64) -> i64 {
        if self.ninety_khz {
            ticks
        } else {
            ticks.saturating_mul(100) / 9
        }
    }

    fn base(&self, method: &str) -> Msg {
        Msg::new()
            .with("method", method)
            .with("subscriptionId", self.id)
    }

    /// `enable` is applied before `disable` (§6.23).
    pub fn filter(&mut self, enable: &[u32], disable: &[u32]) {
        for i in enable {
            self.disabled.remove(i);
        }
        for i in disable {
            self.disabled.insert(*i);
        }
    }

    fn deliverable(t: &Track) -> bool {
        codec_name(t.codec).is_some()
    }

    fn first_video(p: &Program) -> Option<&Track> {
        p.tracks.iter().find(|t| t.codec.is_video())
    }

    /// Ready to start: the first video stream knows its size (Kodi drops a
    /// video stream without one), or there is no video and audio is known.
    fn ready(p: &Program) -> bool {
        match Self::first_video(p) {
            Some(v) => matches!(&v.params, TrackParams::Video(vp) if vp.width > 0 && vp.height > 0),
            None => p
                .tracks
                .iter()
                .any(|t| t.codec.is_audio() && !matches!(t.params, TrackParams::None)),
        }
    }

    fn index_of(&mut self, pid: u16) -> u32 {
        if let Some(i) = self.indexes.get(&pid) {
            return *i;
        }
        let i = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        self.indexes.insert(pid, i);
        i
    }

    pub fn on_program(&mut self, p: Arc<Program>) -> Vec<StreamOut> {
        let mut out = Vec::new();
        let changed_tracks = self.program.as_ref().is_some_and(|old| {
            let key = |p: &Program| {
                p.tracks
                    .iter()
                    .map(|t| (t.pid, t.codec))
                    .collect::<Vec<_>>()
            };
            key(old) != key(&p)
        });
        if self.started && changed_tracks {
            out.push(StreamOut::Msg(
                self.base("subscriptionStop")
                    .with("status", "Source reconfigured"),
            ));
            self.started = false;
        }
        self.program = Some(p);
        out
    }

    pub fn on_source_lost(&mut self, reason: &str) -> Vec<StreamOut> {
        tracing::info!(subscription = self.id, %reason, "source lost");
        let mut out = vec![StreamOut::Msg(
            self.base("subscriptionStatus")
                .with("status", "No source available")
                .with("subscriptionError", "badSignal"),
        )];
        if self.started {
            out.push(StreamOut::Msg(
                self.base("subscriptionStop")
                    .with("status", "No source available")
                    .with("subscriptionError", "badSignal"),
            ));
            self.started = false;
            self.stopped = true;
        }
        out
    }

    pub fn on_source_resumed(&mut self) -> Vec<StreamOut> {
        // The next keyframe brings a new subscriptionStart.
        Vec::new()
    }

    /// `signalStatus` (§8.4). Switchyard's inputs have no tuner to measure,
    /// so only `feStatus` is sent, in Tvheadend's words for a frontend
    /// status: `GOOD` while media flows, `NONE` once the input is lost (no
    /// invented SNR or strength figures). Anonymised users get `""`.
    pub fn signal_status(&self, receiving: bool) -> Msg {
        let status = match (self.source.anonymize, receiving) {
            (true, _) => "",
            (false, true) => "GOOD",
            (false, false) => "NONE",
        };
        self.base("signalStatus").with("feStatus", status)
    }

    /// Status to send when nothing could be started for a while.
    pub fn no_data_status(&self) -> Msg {
        self.base("subscriptionStatus")
            .with("status", "No A/V data received")
            .with("subscriptionError", "badSignal")
    }

    fn start_msg(&mut self, p: &Program) -> Msg {
        let mut metas = Vec::new();
        let mut streams = Vec::new();
        let tracks: Vec<Track> = p
            .tracks
            .iter()
            .filter(|t| Self::deliverable(t))
            .cloned()
            .collect();
        for t in &tracks {
            let Some(name) = codec_name(t.codec) else {
                continue;
            };
            let mut s = Msg::new()
                .with("index", self.index_of(t.pid))
                .with("type", name);
            if let Some(lang) = &t.language {
                s.add("language", lang.clone());
            }
            match &t.params {
                TrackParams::Video(v) => {
                    if v.width > 0 && v.height > 0 {
                        s.add("width", v.width).add("height", v.height);
                    }
                    if let Some((num, den)) = v.frame_rate.filter(|(n, d)| *n > 0 && *d > 0) {
                        let ticks = 90_000i64 * i64::from(den) / i64::from(num);
                        s.add("duration", self.to_timebase(ticks));
                    }
                    if v.width > 0 && v.height > 0 {
                        let (sn, sd) = v.aspect.filter(|(n, d)| *n > 0 && *d > 0).unwrap_or((1, 1));
                        let n = u64::from(v.width) * u64::from(sn);
                        let d = u64::from(v.height) * u64::from(sd);
                        let g = gcd(n, d);
                        s.add("aspect_num", n / g).add("aspect_den", d / g);
                    }
                    if !v.parameter_sets.is_empty() {
                        metas.push(v.parameter_sets.clone());
                    }
                }
                TrackParams::Audio(a) => {
                    s.add("audio_type", 0i64);
                    if t.codec == Codec::MpegAudio {
                        s.add("audio_version", 2i64);
                    }
                    if a.channels > 0 {
                        s.add("channels", u32::from(a.channels));
                    }
                    if let Some(r) = rate_index(a.sample_rate) {
                        s.add("rate", r);
                    }
                    s.add("rds_uecp", 0i64);
                    if !a.codec_config.is_empty() {
                        metas.push(a.codec_config.clone());
                    }
                }
                TrackParams::None => {
                    if t.codec.is_audio() {
                        s.add("audio_type", 0i64).add("rds_uecp", 0i64);
                    }
                }
            }
            streams.push(Value::Map(s));
        }
        let mut m = Msg::new();
        for meta in metas {
            m.add("meta", meta);
        }
        m.add("streams", streams);
        let mut si = Msg::new();
        if !self.source.anonymize {
            si.add("network_type", self.source.network_type.clone())
                .add("mux", self.source.mux.clone())
                .add("service", self.source.service.clone());
            if let Some(p) = &self.source.provider {
                si.add("provider", p.clone());
            }
        }
        m.add("sourceinfo", si);
        m.add("method", "subscriptionStart")
            .add("subscriptionId", self.id);
        m
    }

    pub fn on_frame(&mut self, f: &Frame) -> Vec<StreamOut> {
        let mut out = Vec::new();
        let Some(p) = self.program.clone() else {
            return out;
        };
        let Some(track) = p.track(f.pid) else {
            return out;
        };
        if !Self::deliverable(track) {
            return out;
        }
        let is_video = track.codec.is_video();
        let Some(dts_in) = f.dts.or(f.pts) else {
            return out;
        };
        if !self.started {
            let has_video = Self::first_video(&p).is_some();
            let can_start = Self::ready(&p)
                && if has_video {
                    is_video && f.is_key()
                } else {
                    track.codec.is_audio()
                };
            if !can_start {
                return out;
            }
            match self.reference {
                None => self.reference = Some(dts_in - START_BACKOFF),
                Some(r) => {
                    // Restart after an outage: continue the timeline just
                    // after what was already sent, whatever the input says.
                    let out_now = dts_in - r;
                    let resume_at = self.high_water + START_BACKOFF / 10;
                    if out_now < resume_at || out_now > resume_at + DISCONTINUITY {
                        self.reference = Some(dts_in - resume_at);
                    }
                    self.last_in.clear();
                }
            }
            let start = self.start_msg(&p);
            out.push(StreamOut::Msg(start));
            self.started = true;
            self.stopped = false;
        }
        let Some(mut reference) = self.reference else {
            return out;
        };
        // Discontinuity in this stream's input: re-anchor so output continues.
        if let Some(prev) = self.last_in.get(&f.pid)
            && (dts_in - prev).abs() > DISCONTINUITY
        {
            let prev_out = self
                .last_out
                .get(&f.pid)
                .copied()
                .unwrap_or(self.high_water);
            let step = i64::from(f.duration.unwrap_or(0));
            reference = dts_in - (prev_out + step);
            self.reference = Some(reference);
            tracing::debug!(
                subscription = self.id,
                "timestamp discontinuity; re-anchored"
            );
        }
        self.last_in.insert(f.pid, dts_in);
        let dts = dts_in - reference;
        let pts = f.pts.map(|p| p - reference);
        if dts < 0 || pts.is_some_and(|p| p < 0) {
            return out;
        }
        if self.last_out.get(&f.pid).is_some_and(|last| dts < *last) {
            return out;
        }
        self.last_out.insert(f.pid, dts);
        self.high_water = self.high_water.max(dts);
        let index = self.index_of(f.pid);
        if self.disabled.contains(&index) {
            return out;
        }
        let duration = f.duration.map(i64::from).or_else(|| {
            let TrackParams::Video(v) = &track.params else {
                return None;
            };
            v.frame_rate
                .filter(|(n, d)| *n > 0 && *d > 0)
                .map(|(n, d)| 90_000 * i64::from(d) / i64::from(n))
        });
        let mut m = self.base("muxpkt");
        let video = if is_video {
            let ft = match f.kind {
                FrameKind::Key => b'I',
                FrameKind::Bidirectional => b'B',
                _ => b'P',
            };
            m.add("frametype", i64::from(ft));
            Some(f.kind)
        } else {
            None
        };
        m.add("stream", index).add("com", 0i64);
        if let Some(pts) = pts {
            m.add("pts", self.to_timebase(pts));
        }
        let dts_tb = self.to_timebase(dts);
        m.add("dts", dts_tb)
            .add("duration", self.to_timebase(duration.unwrap_or(0)))
            .add("payload", Bytes::clone(&f.data));
        out.push(StreamOut::Packet(Packet {
            msg: m,
            video,
            payload_len: f.data.len(),
            dts: dts_tb,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::{AudioParams, VideoParams};

    fn program() -> Arc<Program> {
        Arc::new(Program {
            program_number: 1,
            pmt_pid: 4096,
            pcr_pid: 256,
            service_name: Some("One".into()),
            provider_name: None,
            tracks: vec![
                Track {
                    pid: 256,
                    stream_type: 0x1b,
                    codec: Codec::H264,
                    language: None,
                    params: TrackParams::Video(VideoParams {
                        width: 640,
                        height: 360,
                        frame_rate: Some((25, 1)),
                        aspect: Some((1, 1)),
                        parameter_sets: Bytes::from_static(&[
                            0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2,
                        ]),
                    }),
                },
                Track {
                    pid: 257,
                    stream_type: 0x0f,
                    codec: Codec::Aac,
                    language: Some("eng".into()),
                    params: TrackParams::Audio(AudioParams {
                        sample_rate: 48000,
                        channels: 2,
                        codec_config: Bytes::from_static(&[0x11, 0x90]),
                    }),
                },
            ],
        })
    }

    fn frame(pid: u16, dts: i64, kind: FrameKind) -> Frame {
        Frame {
            pid,
            pts: Some(dts + 3600),
            dts: Some(dts),
            duration: Some(if pid == 256 { 3600 } else { 1920 }),
            kind,
            data: Bytes::from_static(&[0, 0, 0, 1, 9, 0xf0]),
        }
    }

    fn packets(out: &[StreamOut]) -> Vec<&Packet> {
        out.iter()
            .filter_map(|o| match o {
                StreamOut::Packet(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn start_waits_for_keyframe_and_carries_streams() {
        let mut c = StreamConverter::new(7, false, SourceInfo::default());
        assert!(
            c.on_frame(&frame(256, 1_000_000, FrameKind::Key))
                .is_empty(),
            "no program yet"
        );
        c.on_program(program());
        assert!(
            c.on_frame(&frame(257, 1_000_000, FrameKind::Audio))
                .is_empty()
        );
        assert!(
            c.on_frame(&frame(256, 1_003_600, FrameKind::Predicted))
                .is_empty()
        );
        let out = c.on_frame(&frame(256, 1_007_200, FrameKind::Key));
        let StreamOut::Msg(start) = &out[0] else {
            panic!()
        };
        assert_eq!(
            start.get_str("method").as_deref(),
            Some("subscriptionStart")
        );
        assert_eq!(start.fields[0].0, "meta");
        assert_eq!(&start.get_bin("meta").unwrap()[..4], &[0, 0, 0, 1]);
        let streams = start.get_list("streams").unwrap();
        let Value::Map(v) = &streams[0] else { panic!() };
        assert_eq!(v.get_str("type").as_deref(), Some("H264"));
        assert_eq!(v.get_s64("width"), Some(640));
        assert_eq!(v.get_s64("height"), Some(360));
        assert_eq!(v.get_s64("duration"), Some(40000));
        assert_eq!(
            (v.get_s64("aspect_num"), v.get_s64("aspect_den")),
            (Some(16), Some(9))
        );
        let Value::Map(a) = &streams[1] else { panic!() };
        assert_eq!(a.get_str("type").as_deref(), Some("AAC"));
        assert_eq!(a.get_s64("rate"), Some(3));
        assert!(a.contains("audio_type") && a.contains("rds_uecp"));
        let p = packets(&out);
        assert_eq!(p[0].msg.get_s64("frametype"), Some(73));
        assert_eq!(
            p[0].msg.get_s64("dts"),
            Some(1_000_000),
            "1 s of back-off, in µs"
        );
        assert_eq!(p[0].msg.get_s64("duration"), Some(40000));
        // audio after the keyframe, slightly earlier in time, still fits
        let out = c.on_frame(&frame(257, 1_005_000, FrameKind::Audio));
        let p = packets(&out);
        assert!(!p[0].msg.contains("frametype"));
        assert!(p[0].msg.get_s64("dts").unwrap() >= 0);
    }

    #[test]
    fn ninety_khz_and_filtering() {
        let mut c = StreamConverter::new(1, true, SourceInfo::default());
        c.on_program(program());
        let out = c.on_frame(&frame(256, 500, FrameKind::Key));
        assert_eq!(packets(&out)[0].msg.get_s64("duration"), Some(3600));
        c.filter(&[], &[2]);
        assert!(packets(&c.on_frame(&frame(257, 600, FrameKind::Audio))).is_empty());
        c.filter(&[2], &[]);
        assert_eq!(
            packets(&c.on_frame(&frame(257, 2600, FrameKind::Audio))).len(),
            1
        );
    }

    #[test]
    fn outage_stops_and_restarts_on_a_continuous_timeline() {
        let mut c = StreamConverter::new(1, false, SourceInfo::default());
        c.on_program(program());
        c.on_frame(&frame(256, 9_000_000, FrameKind::Key));
        let last = packets(&c.on_frame(&frame(256, 9_003_600, FrameKind::Predicted)))[0].dts;
        let out = c.on_source_lost("gone");
        assert!(out.iter().any(|o| matches!(o, StreamOut::Msg(m) if m.get_str("method").as_deref() == Some("subscriptionStop"))));
        // the input restarts at a tiny timestamp
        assert!(
            c.on_frame(&frame(256, 100, FrameKind::Predicted))
                .is_empty()
        );
        let out = c.on_frame(&frame(256, 200, FrameKind::Key));
        assert!(
            matches!(&out[0], StreamOut::Msg(m) if m.get_str("method").as_deref() == Some("subscriptionStart"))
        );
        let d = packets(&out)[0].dts;
        assert!(d > last && d < last + 10_000_000, "{d} after {last}");
    }

    #[test]
    fn signal_status_names_the_state_and_hides_it_from_anonymised_users() {
        let src = SourceInfo {
            service: "One".into(),
            ..SourceInfo::default()
        };
        let c = StreamConverter::new(3, false, src.clone());
        let m = c.signal_status(true);
        assert_eq!(m.get_str("method").as_deref(), Some("signalStatus"));
        assert_eq!(m.get_u32("subscriptionId"), Some(3));
        assert_eq!(m.get_str("feStatus").as_deref(), Some("GOOD"));
        assert_eq!(m.fields.len(), 3, "no invented signal figures: {m:?}");
        assert_eq!(
            c.signal_status(false).get_str("feStatus").as_deref(),
            Some("NONE")
        );
        let anon = StreamConverter::new(
            3,
            false,
            SourceInfo {
                anonymize: true,
                ..src
            },
        );
        assert_eq!(
            anon.signal_status(true).get_str("feStatus").as_deref(),
            Some("")
        );
    }

    #[test]
    fn rate_indexes() {
        assert_eq!(rate_index(48000), Some(3));
        assert_eq!(rate_index(44100), Some(4));
        assert_eq!(rate_index(96000), None);
        assert_eq!(rate_index(12345), None);
    }
}
