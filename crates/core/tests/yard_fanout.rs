//! The demo channels through the yard, on tokio's paused clock: what a reader
//! gets (programme, frames), how a slow reader loses data without costing a
//! fast one anything, and how sources start on demand and stop after the
//! grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use media::{Codec, Frame, FrameKind, Program, TrackParams};
use tokio::time::Instant;
use yard::{ReaderEvent, ReaderOptions, Yard};

const VIDEO_PID: u16 = 256;
const AUDIO_PID: u16 = 257;

fn demo_yard() -> (Yard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Yard::demo_for_tests(dir.path()), dir)
}

/// The next event, or a panic naming what was awaited (bounded by the paused clock).
async fn next(reader: &mut yard::Reader, what: &str) -> ReaderEvent {
    match tokio::time::timeout(Duration::from_secs(30), reader.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("reader closed while waiting for {what}"),
        Err(_) => panic!("no event within 30 s while waiting for {what}"),
    }
}

async fn first_program(reader: &mut yard::Reader) -> Arc<Program> {
    for _ in 0..10_000 {
        if let ReaderEvent::Program(p) = next(reader, "the programme").await {
            return p;
        }
    }
    panic!("no Program event");
}

/// NAL unit types of an Annex-B buffer, in order.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            out.push(data[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn frames_reader_of_demo_channel_gets_h264_and_aac() {
    let (yard, _dir) = demo_yard();
    let ch = yard.channel_by_number(1).expect("demo channel 1");
    assert_eq!(ch.name, "Switchyard One");
    let mut r = yard
        .subscribe(ch.id, ReaderOptions::frames("test"))
        .unwrap();

    let p = first_program(&mut r).await;
    assert_eq!(p.program_number, 1);
    assert_eq!(p.service_name.as_deref(), Some("Switchyard One"));
    let v = p.track(VIDEO_PID).expect("video track");
    assert_eq!(v.codec, Codec::H264);
    let TrackParams::Video(vp) = &v.params else {
        panic!("video without parameters: {v:?}")
    };
    assert_eq!((vp.width, vp.height), (640, 360));
    assert_eq!(vp.frame_rate, Some((25, 1)));
    let a = p.track(AUDIO_PID).expect("audio track");
    assert_eq!(a.codec, Codec::Aac);
    let TrackParams::Audio(ap) = &a.params else {
        panic!("audio without parameters: {a:?}")
    };
    assert_eq!((ap.sample_rate, ap.channels), (48000, 2));

    // Two seconds of media: 50 video frames starting on a keyframe with its
    // parameter sets, and AAC in ADTS.
    let mut video: Vec<Frame> = Vec::new();
    let mut audio: Vec<Frame> = Vec::new();
    while video.len() < 50 {
        match next(&mut r, "frames").await {
            ReaderEvent::Frame(f) if f.pid == VIDEO_PID => video.push(f),
            ReaderEvent::Frame(f) if f.pid == AUDIO_PID => audio.push(f),
            ReaderEvent::Frame(f) => panic!("frame of unknown pid {}", f.pid),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(video[0].kind, FrameKind::Key);
    let nals = nal_types(&video[0].data);
    let idr = nals.iter().position(|&t| t == 5).expect("IDR slice");
    assert!(
        nals[..idr].contains(&7) && nals[..idr].contains(&8),
        "SPS/PPS before the IDR: {nals:?}"
    );
    assert!(
        video.iter().filter(|f| f.kind == FrameKind::Key).count() >= 2,
        "GOP of 25"
    );
    assert!(
        audio.len() > 60,
        "about 47 AAC frames a second, got {}",
        audio.len()
    );
    assert!(
        audio
            .iter()
            .all(|f| f.data[0] == 0xff && f.kind == FrameKind::Audio)
    );
    assert_eq!(
        yard.program(ch.id).as_deref(),
        Some(&*p),
        "Yard::program without subscribing"
    );
}

/// Video DTS steps 3600 (25 fps), audio PTS 1920 (1024 samples at 48 kHz):
/// a gap would be a lost frame. `loop_slack`: at the loop of a file whose
/// audio outlasts its video, video may step once by up to that much more.
fn assert_consecutive(frames: &[Frame], loop_slack: i64) {
    for (pid, step, slack) in [(VIDEO_PID, 3600, loop_slack), (AUDIO_PID, 1920, 0)] {
        let ts: Vec<i64> = frames
            .iter()
            .filter(|f| f.pid == pid)
            .map(|f| f.dts.or(f.pts).unwrap())
            .collect();
        assert!(ts.len() > 10, "pid {pid}: {} frames", ts.len());
        let mut slack_used = 0;
        for (i, w) in ts.windows(2).enumerate() {
            let d = w[1] - w[0];
            if d != step && d > step && d <= step + slack && slack_used == 0 {
                slack_used += 1;
                continue;
            }
            assert_eq!(
                d, step,
                "pid {pid}: gap after frame {i} ({} -> {})",
                w[0], w[1]
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn slow_frames_reader_drops_video_by_policy_while_fast_reader_loses_nothing() {
    let (yard, _dir) = demo_yard();
    let id = yard.channel_by_number(1).unwrap().id;
    let mut fast = yard.subscribe(id, ReaderOptions::frames("fast")).unwrap();
    let mut slow = yard
        .subscribe(id, ReaderOptions::frames("slow").with_max_bytes(48 * 1024))
        .unwrap();

    // The fast reader reads 6 s of media (past the 8 s loop is covered below)
    // while the slow one sleeps for 3 s.
    let fast_task = tokio::spawn(async move {
        let mut frames = Vec::new();
        while frames
            .iter()
            .filter(|f: &&Frame| f.pid == VIDEO_PID)
            .count()
            < 150
        {
            match next(&mut fast, "fast frames").await {
                ReaderEvent::Frame(f) => frames.push(f),
                ReaderEvent::Program(_) => {}
                other => panic!("fast reader got {other:?}"),
            }
        }
        (fast, frames)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let s = slow.stats();
    assert!(s.dropped_bidir > 0, "B frames go first: {s:?}");
    assert!(s.dropped_predicted > 0, "then P frames: {s:?}");
    assert_eq!(s.dropped_audio, 0, "audio is never dropped: {s:?}");
    assert!(s.queued_bytes <= 4 * 48 * 1024, "bounded queue: {s:?}");

    // What the slow reader gets next still decodes: its first video frame is
    // a keyframe, and its audio has no gap.
    let mut slow_frames = Vec::new();
    while let Some(ev) = slow.try_recv() {
        if let ReaderEvent::Frame(f) = ev {
            slow_frames.push(f);
        }
    }
    let first_video = slow_frames.iter().find(|f| f.pid == VIDEO_PID);
    if let Some(f) = first_video {
        assert_eq!(
            f.kind,
            FrameKind::Key,
            "after drops, video resumes on a keyframe"
        );
    }
    let audio_ts: Vec<i64> = slow_frames
        .iter()
        .filter(|f| f.pid == AUDIO_PID)
        .map(|f| f.pts.unwrap())
        .collect();
    assert!(
        audio_ts.len() > 100,
        "3 s of audio kept: {}",
        audio_ts.len()
    );
    assert!(
        audio_ts.windows(2).all(|w| w[1] - w[0] == 1920),
        "audio of a slow reader is whole"
    );

    let (fast, frames) = fast_task.await.unwrap();
    let f = fast.stats();
    assert_eq!(
        (
            f.dropped_key,
            f.dropped_predicted,
            f.dropped_bidir,
            f.dropped_audio
        ),
        (0, 0, 0, 0),
        "{f:?}"
    );
    assert_eq!(
        frames.iter().find(|f| f.pid == VIDEO_PID).unwrap().kind,
        FrameKind::Key
    );
    assert_consecutive(&frames, 0);
}

#[tokio::test(start_paused = true)]
async fn looped_demo_is_one_continuous_stream() {
    let (yard, _dir) = demo_yard();
    let id = yard.channel_by_number(2).unwrap().id;
    let mut r = yard.subscribe(id, ReaderOptions::frames("loop")).unwrap();
    // 10 s of video crosses the 8 s loop of the file.
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f: &&Frame| f.pid == VIDEO_PID)
        .count()
        < 250
    {
        if let ReaderEvent::Frame(f) = next(&mut r, "frames across the loop").await {
            frames.push(f);
        }
    }
    // The demo's audio starts 1920 ticks before its video: one audio frame
    // of video hole per loop, and audio exactly continuous.
    assert_consecutive(&frames, 1920);
    assert_eq!(
        r.stats().dropped_key + r.stats().dropped_predicted + r.stats().dropped_bidir,
        0
    );
}

/// A TS packet's PID.
fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

#[tokio::test(start_paused = true)]
async fn slow_ts_reader_skips_to_a_keyframe_chunk_starting_with_pat() {
    let (yard, _dir) = demo_yard();
    let id = yard.channel_by_number(1).unwrap().id;
    let mut r = yard
        .subscribe(id, ReaderOptions::ts("slow-ts").with_max_bytes(64 * 1024))
        .unwrap();
    // The first chunk a TS reader gets starts with PAT + PMT + keyframe.
    let first = loop {
        if let ReaderEvent::Ts(b) = next(&mut r, "first TS chunk").await {
            break b;
        }
    };
    assert_eq!(first.len() % 188, 0);
    assert_eq!(pid(&first), 0, "first chunk starts with the PAT");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = r.stats();
    assert!(
        s.dropped_ts_bytes > 0,
        "a stalled TS reader loses bytes: {s:?}"
    );
    assert!(s.queued_bytes <= 4 * 64 * 1024, "{s:?}");

    // The next chunk is a fresh start: PAT, PMT, then a video PES with an IDR.
    let chunk = loop {
        if let ReaderEvent::Ts(b) = next(&mut r, "TS after the stall").await {
            break b;
        }
    };
    assert_eq!(chunk[0], 0x47);
    assert_eq!(pid(&chunk), 0, "after a drop the chunk starts with the PAT");
    let mut d = media::Demuxer::new();
    let mut events = Vec::new();
    d.push(&chunk, &mut events);
    let mut more = 0;
    // Collect a little more so the keyframe's PES is complete.
    while more < 20 {
        if let ReaderEvent::Ts(b) = next(&mut r, "TS").await {
            d.push(&b, &mut events);
            more += 1;
        }
    }
    let first_video = events.iter().find_map(|e| match e {
        media::DemuxEvent::Frame { frame, .. } if frame.pid == VIDEO_PID => Some(frame),
        _ => None,
    });
    let f = first_video.expect("video after the skip");
    assert_eq!(f.kind, FrameKind::Key);
    assert!(nal_types(&f.data).contains(&5), "IDR");
}

#[tokio::test(start_paused = true)]
async fn stalled_recorder_gets_overflow_then_end() {
    let (yard, _dir) = demo_yard();
    let id = yard.channel_by_number(1).unwrap().id;
    let mut rec = yard
        .subscribe(
            id,
            ReaderOptions::recorder("rec").with_max_bytes(128 * 1024),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut ts_bytes = 0usize;
    let mut saw_overflow = false;
    for _ in 0..100_000 {
        match next(&mut rec, "the recorder's queue").await {
            ReaderEvent::Ts(b) => {
                assert!(!saw_overflow, "nothing after Overflow");
                ts_bytes += b.len();
            }
            ReaderEvent::Overflow => {
                saw_overflow = true;
                break;
            }
            _ => {}
        }
    }
    assert!(saw_overflow, "a recorder that falls behind is told");
    assert!(
        ts_bytes > 0 && ts_bytes <= 128 * 1024,
        "what fit was kept, no more: {ts_bytes}"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), rec.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "recv returns None after Overflow: {end:?}"
    );
    assert_eq!(
        rec.stats().dropped_ts_bytes,
        0,
        "a recorder is never cut silently"
    );
}

/// Records the `switchyard_source_running` gauge; the yard's other metrics go nowhere.
#[derive(Default)]
struct RunningGauge(AtomicI64);

impl metrics::GaugeFn for RunningGauge {
    fn increment(&self, v: f64) {
        self.0.fetch_add(v as i64, Ordering::SeqCst);
    }
    fn decrement(&self, v: f64) {
        self.0.fetch_sub(v as i64, Ordering::SeqCst);
    }
    fn set(&self, v: f64) {
        self.0.store(v as i64, Ordering::SeqCst);
    }
}

struct SourceRecorder(Arc<RunningGauge>);

impl metrics::Recorder for SourceRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        if key.name() == "switchyard_source_running" {
            metrics::Gauge::from_arc(self.0.clone())
        } else {
            metrics::Gauge::noop()
        }
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn sources_start_on_demand_and_stop_after_the_grace_period() {
    // The runtime has one thread, so a thread-local recorder sees every task.
    let running = Arc::new(RunningGauge::default());
    let recorder = SourceRecorder(running.clone());
    let _guard = metrics::set_default_local_recorder(&recorder);
    let sources = || running.0.load(Ordering::SeqCst);

    let (yard, _dir) = demo_yard(); // grace 200 ms
    let id = yard.channel_by_number(1).unwrap().id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sources(), 0, "no reader, no source");

    let mut r = yard.subscribe(id, ReaderOptions::frames("a")).unwrap();
    first_program(&mut r).await;
    assert_eq!(
        sources(),
        1,
        "the first reader starts its channel's source (only)"
    );
    for _ in 0..20 {
        next(&mut r, "frames").await;
    }
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sources(), 1, "still running within the grace period");

    // Coming back within the grace period: the source never stopped, and the
    // cached GOP lets the reader start at once on a keyframe.
    let mut r = yard.subscribe(id, ReaderOptions::frames("b")).unwrap();
    let t0 = Instant::now();
    first_program(&mut r).await;
    let first_video = loop {
        if let ReaderEvent::Frame(f) = next(&mut r, "cached frames").await
            && f.pid == VIDEO_PID
        {
            break f;
        }
    };
    assert_eq!(first_video.kind, FrameKind::Key);
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "zapping back starts from the cached GOP"
    );
    drop(r);

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sources(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sources(),
        0,
        "stopped once the grace period passed with no reader"
    );

    // And it starts again for the next reader.
    let mut r = yard.subscribe(id, ReaderOptions::frames("c")).unwrap();
    first_program(&mut r).await;
    let mut saw_key = false;
    for _ in 0..200 {
        if let ReaderEvent::Frame(f) = next(&mut r, "frames after a restart").await {
            saw_key |= f.kind == FrameKind::Key;
        }
    }
    assert!(saw_key);
    assert_eq!(sources(), 1);
    drop(r);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sources(), 0);
}
