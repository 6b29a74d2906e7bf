//! Galène's disk recorder: `groupaction record` adds a pseudo-member
//! `RECORDING` that taps every up stream of the group, present and future,
//! and writes one WebM file per stream (Matroska `.mkv` when the video is
//! H.264) into `<recordings>/<group>/`; `unrecord` finalises the files and
//! removes the member.
//!
//! [`StreamRecording`] is the sans-IO part (tap frames in, file bytes out);
//! the tasks below only move bytes to disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use media::webm::{DocType, MatroskaWriter, Patch, TrackCodec, TrackSpec};
use rtc::{Kind, StreamInfo, TapFrame};
use serde_json::Value;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use yard::room::{FrontEnd, JoinRules, Participant, Permission, Room, UserMessage};

/// The username of the recorder pseudo-member.
pub const RECORDER_USERNAME: &str = "RECORDING";
/// Frames a stream's tap may queue before the SFU drops (and counts) them.
const TAP_CAPACITY: usize = 1024;
/// Frame dimensions when a keyframe does not say (a decoder reads the real
/// ones from the bitstream anyway).
const FALLBACK_SIZE: (u32, u32) = (640, 480);

/// What a stream's tracks become in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub doc: DocType,
    /// Lower-case codec of the video track recorded, if any.
    pub video: Option<String>,
    /// Opus channels, if the audio track is recorded.
    pub audio: Option<u8>,
    /// Problems to tell operators ("Unknown codec, X, not recording").
    pub warnings: Vec<String>,
}

/// Decides what of `stream` can be recorded: VP8, VP9 and H.264 video,
/// Opus audio (AV1 and other audio codecs are not recorded, as in Galène).
pub fn plan(stream: &StreamInfo) -> Option<Plan> {
    let mut warnings = Vec::new();
    let mut video = None;
    let mut audio = None;
    let mut seen_audio = false;
    for t in &stream.tracks {
        match t.kind {
            Kind::Video if video.is_none() => match t.codec.as_str() {
                "vp8" | "vp9" | "h264" => video = Some(t.codec.clone()),
                other => warnings.push(format!("Unknown codec, {other}, not recording")),
            },
            Kind::Audio if !seen_audio => {
                seen_audio = true;
                if t.codec == "opus" {
                    audio = Some(t.channels.unwrap_or(2));
                } else {
                    warnings.push(format!("Unknown codec, {}, not recording", t.codec));
                }
            }
            Kind::Audio => warnings.push("Multiple audio tracks, recording just one".into()),
            Kind::Video => warnings.push("Multiple video tracks, recording just one".into()),
        }
    }
    if video.is_none() && audio.is_none() {
        return (!warnings.is_empty()).then_some(Plan {
            doc: DocType::Webm,
            video,
            audio,
            warnings,
        });
    }
    let doc = if video.as_deref() == Some("h264") {
        DocType::Matroska
    } else {
        DocType::Webm
    };
    Some(Plan {
        doc,
        video,
        audio,
        warnings,
    })
}

const VIDEO_TRACK: u8 = 1;
const AUDIO_TRACK: u8 = 2;

/// One stream's file as a state machine: feed [`TapFrame`]s with the time
/// they arrived (ms since recording began), write out what it returns.
///
/// Audio and video RTP clocks have unrelated origins, so each kind's clock is
/// anchored to the arrival time of its first frame. With video, the file
/// starts at the first video keyframe (a file must not begin with a picture
/// that can not be decoded) and earlier frames are dropped.
pub struct StreamRecording {
    plan: Plan,
    writer: Option<MatroskaWriter>,
    /// Per kind: (first RTP time, arrival ms) anchoring its clock.
    anchors: [Option<(u64, i64)>; 2],
    /// The file's time zero, in arrival ms.
    origin: Option<i64>,
}

impl StreamRecording {
    pub fn new(plan: Plan) -> Self {
        StreamRecording {
            plan,
            writer: None,
            anchors: [None, None],
            origin: None,
        }
    }

    pub fn doc_type(&self) -> DocType {
        self.plan.doc
    }

    fn time_ms(&mut self, f: &TapFrame, arrival_ms: i64) -> i64 {
        let slot = usize::from(f.kind == Kind::Video);
        let (rtp0, ms0) = *self.anchors[slot].get_or_insert((f.rtp_time, arrival_ms));
        let rate = i128::from(f.clock_rate.max(1));
        let delta = (i128::from(f.rtp_time) - i128::from(rtp0)) * 1000 / rate;
        ms0.saturating_add(i64::try_from(delta).unwrap_or(0))
    }

    /// Bytes to append to the file (empty while waiting for a keyframe).
    pub fn push(&mut self, f: &TapFrame, arrival_ms: i64) -> Vec<u8> {
        let is_video = f.kind == Kind::Video;
        if (is_video && self.plan.video.is_none()) || (!is_video && self.plan.audio.is_none()) {
            return Vec::new();
        }
        let t = self.time_ms(f, arrival_ms);
        let mut out = Vec::new();
        if self.writer.is_none() {
            let starts = (!is_video && self.plan.video.is_none()) || (is_video && f.keyframe);
            if !starts {
                return out;
            }
            let Some(mut writer) = self.open(f) else {
                return out;
            };
            out = writer.header();
            self.writer = Some(writer);
            self.origin = Some(t);
        }
        let origin = self.origin.unwrap_or(t);
        let rel = t.saturating_sub(origin);
        if rel < 0 {
            return out;
        }
        let (track, data) = if is_video {
            let data = if self.plan.video.as_deref() == Some("h264") {
                media::fmp4::annexb_to_length_prefixed(&f.payload, true)
            } else {
                f.payload.to_vec()
            };
            (VIDEO_TRACK, data)
        } else {
            (AUDIO_TRACK, f.payload.to_vec())
        };
        if let Some(w) = self.writer.as_mut()
            && let Ok(bytes) = w.frame(track, rel, f.keyframe, &data)
        {
            out.extend(bytes);
        }
        out
    }

    /// The writer, with track parameters taken from the first frame.
    fn open(&self, first: &TapFrame) -> Option<MatroskaWriter> {
        let mut tracks = Vec::new();
        if let Some(codec) = &self.plan.video {
            let (codec, size) = match codec.as_str() {
                "vp8" => (
                    TrackCodec::Vp8,
                    media::webm::vp8_keyframe_size(&first.payload),
                ),
                "vp9" => (
                    TrackCodec::Vp9,
                    media::webm::vp9_keyframe_size(&first.payload),
                ),
                _ => {
                    let avcc = media::fmp4::avc_decoder_config(&first.payload)?;
                    let size = media::bits::AnnexB::new(&first.payload)
                        .find(|(_, nal)| nal.first().is_some_and(|h| h & 0x1f == 7))
                        .and_then(|(_, nal)| media::video::h264_sps(nal))
                        .map(|i| (i.width, i.height));
                    (TrackCodec::H264 { avcc }, size)
                }
            };
            let (w, h) = size
                .filter(|(w, h)| *w > 0 && *h > 0)
                .unwrap_or(FALLBACK_SIZE);
            tracks.push(TrackSpec::video(VIDEO_TRACK, codec, w, h));
        }
        if let Some(channels) = self.plan.audio {
            tracks.push(TrackSpec::opus(AUDIO_TRACK, 48000, channels));
        }
        MatroskaWriter::new(self.plan.doc, tracks).ok()
    }

    /// Whether anything was written.
    pub fn started(&self) -> bool {
        self.writer.is_some()
    }

    /// The end of the file and the patches that make it seekable.
    pub fn finish(&mut self) -> Option<media::webm::Finish> {
        self.writer.as_mut().map(MatroskaWriter::finish)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmm-<username>` in local time, with `/` and `\`
/// spelled out so a username can not leave the directory.
pub fn file_stem(time: chrono::DateTime<chrono::Local>, username: &str) -> String {
    let mut stem = time.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    if !username.is_empty() {
        let safe = username
            .replace('/', "-slash-")
            .replace('\\', "-backslash-");
        stem.push('-');
        stem.push_str(&safe);
    }
    stem
}

/// A running recorder of one group.
pub(crate) struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops recording: every file is finalised and the member leaves before
    /// this returns.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            tracing::warn!("recorder took too long to stop");
        }
    }
}

/// Joins the recorder to `room` and starts recording its streams.
pub(crate) fn start(sfu: rtc::Sfu, room: Arc<Room>, dir: PathBuf) -> Running {
    let id = yard::room::new_id();
    let mut me = Participant::new(id.clone(), RECORDER_USERNAME, FrontEnd::Recorder);
    me.permissions.insert(Permission::System);
    let rules = JoinRules {
        exempt: true,
        ..JoinRules::default()
    };
    // The recorder does not read room events; its receiver is dropped.
    let joined = room.join(me, &rules, SystemTime::now()).is_ok();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let span = tracing::info_span!("recorder", group = %room.name());
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            run(sfu, room.clone(), dir, token).await;
            if joined {
                room.leave(&id);
            }
        },
        span,
    ));
    Running { stop, task }
}

async fn run(sfu: rtc::Sfu, room: Arc<Room>, dir: PathBuf, stop: CancellationToken) {
    let mut events = sfu.events();
    let mut streams: HashMap<String, JoinHandle<()>> = HashMap::new();
    let started = Instant::now();
    let add = |s: StreamInfo, streams: &mut HashMap<String, JoinHandle<()>>| {
        if streams.get(&s.id).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let task = tokio::spawn(record_stream(
            sfu.clone(),
            room.clone(),
            s.clone(),
            dir.clone(),
            stop.child_token(),
            started,
        ));
        streams.insert(s.id, task);
    };
    for s in sfu.streams(room.name()) {
        add(s, &mut streams);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => match event {
                Ok(rtc::SfuEvent::StreamAdded { room: r, stream }) if r == room.name() => {
                    add(stream, &mut streams);
                }
                Ok(rtc::SfuEvent::StreamRemoved { room: r, id }) if r == room.name() => {
                    // its tap ends by itself; forget the finished task
                    if streams.get(&id).is_some_and(JoinHandle::is_finished) {
                        streams.remove(&id);
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for s in sfu.streams(room.name()) {
                        add(s, &mut streams);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        streams.retain(|_, t| !t.is_finished());
    }
    stop.cancel();
    for (_, task) in streams {
        let _ = task.await;
    }
}

/// Privileged warnings go to operators only.
fn warn_ops(room: &Room, text: &str) {
    for p in room.participants() {
        if p.permissions.has(Permission::Op) && p.front_end.is_person() {
            room.user_message(UserMessage {
                from: None,
                username: None,
                to: Some(p.id.clone()),
                kind: "warning".into(),
                value: Value::String(text.to_owned()),
                time: SystemTime::now(),
                privileged: true,
                noecho: false,
            });
        }
    }
}

async fn record_stream(
    sfu: rtc::Sfu,
    room: Arc<Room>,
    stream: StreamInfo,
    dir: PathBuf,
    stop: CancellationToken,
    started: Instant,
) {
    let Some(plan) = plan(&stream) else {
        return;
    };
    for w in &plan.warnings {
        warn_ops(&room, w);
    }
    if plan.video.is_none() && plan.audio.is_none() {
        return;
    }
    let mut tap = match sfu.tap(&stream.id, TAP_CAPACITY).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(stream = %stream.id, error = %e, "cannot tap stream");
            return;
        }
    };
    let mut rec = StreamRecording::new(plan);
    let mut file: Option<(PathBuf, tokio::fs::File)> = None;
    let mut failed = false;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            f = tap.recv() => match f {
                Some(f) => f,
                None => break,
            },
        };
        let now_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let bytes = rec.push(&frame, now_ms);
        if bytes.is_empty() || failed {
            continue;
        }
        if file.is_none() {
            let ext = rec.doc_type().extension();
            match create_file(&dir, &stream.owner.username, ext).await {
                Ok(f) => {
                    tracing::info!(path = %f.0.display(), stream = %stream.id, "recording");
                    file = Some(f);
                }
                Err(e) => {
                    warn_ops(&room, &format!("Write to disk: {e}"));
                    failed = true;
                    continue;
                }
            }
        }
        if let Some((_, f)) = file.as_mut()
            && let Err(e) = f.write_all(&bytes).await
        {
            warn_ops(&room, &format!("Write to disk: {e}"));
            failed = true;
        }
    }
    let (Some((path, mut f)), false) = (file, failed) else {
        return;
    };
    if let Some(fin) = rec.finish()
        && let Err(e) = finalise(&mut f, fin.tail, fin.patches).await
    {
        warn_ops(&room, &format!("Write to disk: {e}"));
    }
    tracing::info!(path = %path.display(), "recording finished");
}

async fn finalise(
    f: &mut tokio::fs::File,
    tail: Vec<u8>,
    patches: Vec<Patch>,
) -> std::io::Result<()> {
    f.write_all(&tail).await?;
    for p in patches {
        f.seek(std::io::SeekFrom::Start(p.offset)).await?;
        f.write_all(&p.bytes).await?;
    }
    f.flush().await?;
    f.sync_all().await
}

/// A new file named after the time and the publisher, `-NN` added on a
/// collision; never overwrites.
async fn create_file(
    dir: &Path,
    username: &str,
    ext: &str,
) -> std::io::Result<(PathBuf, tokio::fs::File)> {
    tokio::fs::create_dir_all(dir).await?;
    let stem = file_stem(chrono::Local::now(), username);
    for n in 0..100u32 {
        let name = if n == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n:02}.{ext}")
        };
        let path = dir.join(name);
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "too many recordings with the same name",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn track(kind: Kind, codec: &str) -> rtc::TrackInfo {
        rtc::TrackInfo {
            kind,
            codec: codec.into(),
            profile: None,
            clock_rate: if kind == Kind::Audio { 48000 } else { 90000 },
            channels: (kind == Kind::Audio).then_some(2),
            mid: "0".into(),
            simulcast_rids: vec![],
        }
    }

    fn stream(tracks: Vec<rtc::TrackInfo>) -> StreamInfo {
        StreamInfo {
            id: "s".into(),
            room: "g".into(),
            owner: rtc::ParticipantRef::default(),
            label: "camera".into(),
            tracks,
            audio_paused: false,
            video_paused: false,
        }
    }

    #[test]
    fn containers_follow_the_codecs() {
        let p = plan(&stream(vec![
            track(Kind::Video, "vp8"),
            track(Kind::Audio, "opus"),
        ]))
        .unwrap();
        assert_eq!(
            (p.doc, p.video.as_deref(), p.audio),
            (DocType::Webm, Some("vp8"), Some(2))
        );
        let p = plan(&stream(vec![
            track(Kind::Video, "h264"),
            track(Kind::Audio, "opus"),
        ]))
        .unwrap();
        assert_eq!(p.doc, DocType::Matroska);
        let p = plan(&stream(vec![
            track(Kind::Video, "av1"),
            track(Kind::Audio, "pcmu"),
        ]))
        .unwrap();
        assert_eq!((p.video, p.audio), (None, None));
        assert_eq!(
            p.warnings,
            [
                "Unknown codec, av1, not recording",
                "Unknown codec, pcmu, not recording"
            ]
        );
    }

    #[test]
    fn file_names_keep_usernames_inside_the_directory() {
        let t = chrono::Local.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(
            file_stem(t, "a/b\\c"),
            "2026-03-04T05:06:07.000-a-slash-b-backslash-c"
        );
        assert_eq!(file_stem(t, ""), "2026-03-04T05:06:07.000");
    }

    #[test]
    fn file_starts_at_a_video_keyframe() {
        let plan = plan(&stream(vec![
            track(Kind::Video, "vp8"),
            track(Kind::Audio, "opus"),
        ]))
        .unwrap();
        let mut rec = StreamRecording::new(plan);
        let frame = |kind, rtp_time, keyframe, payload: &[u8]| TapFrame {
            kind,
            codec: String::new(),
            rid: None,
            rtp_time,
            clock_rate: if kind == Kind::Video { 90000 } else { 48000 },
            keyframe,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        assert!(
            rec.push(&frame(Kind::Audio, 1000, false, &[0xfc]), 0)
                .is_empty()
        );
        assert!(
            rec.push(&frame(Kind::Video, 5, false, &[0x11, 0, 0]), 1)
                .is_empty()
        );
        let key = [0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        let head = rec.push(&frame(Kind::Video, 3005, true, &key), 34);
        assert_eq!(&head[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        assert!(rec.started());
        rec.push(&frame(Kind::Audio, 1000 + 960 * 5, false, &[0xfc]), 100);
        let fin = rec.finish().unwrap();
        assert!(!fin.tail.is_empty());
        // audio anchored at 0 ms and 4800 ticks later is at 100 ms; the
        // keyframe (anchor 1 ms, 3000 ticks later) is time zero at 34 ms
        assert_eq!(fin.duration_ms, 66);
    }
}
