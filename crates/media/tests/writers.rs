//! The WebM/Matroska and fragmented MP4 writers: what they write parses back
//! into the boxes/elements they promise, and ffprobe reads the files with the
//! codecs, sizes and durations that went in.

use std::path::PathBuf;
use std::process::Command;

use media::fmp4::{self, Fmp4Muxer};
use media::webm::{DocType, MatroskaWriter, TrackCodec, TrackSpec};
use media::{DemuxEvent, Demuxer, Frame, Program};
use proptest::prelude::*;

const CH1: &[u8] = include_bytes!("../../../demo/channel-1.ts");

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-writers-{}-{name}", std::process::id()))
}

/// `ffprobe` output as `key=value` lines for streams and format.
fn ffprobe(path: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn values<'a>(probe: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    probe
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn duration(probe: &[(String, String)]) -> f64 {
    // the format's duration comes last
    values(probe, "duration")
        .last()
        .and_then(|d| d.parse().ok())
        .expect("a duration")
}

fn demo() -> (Program, Vec<Frame>) {
    let mut d = Demuxer::new();
    let mut events = Vec::new();
    d.push(CH1, &mut events);
    d.flush(&mut events);
    let mut program = None;
    let mut frames = Vec::new();
    for e in events {
        match e {
            DemuxEvent::Programs(p) => program = p.into_iter().next(),
            DemuxEvent::Frame { frame, .. } => frames.push(frame),
            _ => {}
        }
    }
    (program.expect("a programme"), frames)
}

/// (type, payload) of each box in `data`.
fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            len >= 8 && at + len <= data.len(),
            "box length {len} at {at}"
        );
        out.push((
            data[at + 4..at + 8].try_into().unwrap(),
            &data[at + 8..at + len],
        ));
        at += len;
    }
    assert_eq!(at, data.len(), "trailing bytes");
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    boxes(data)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(kind)))
}

#[test]
fn fmp4_of_the_demo_channel_parses_back_and_ffprobe_reads_it() {
    let (program, frames) = demo();
    let mut mux = Fmp4Muxer::new(&program).unwrap();
    assert!(mux.has_audio());
    let init = mux.init_segment();
    let mut file = init.clone();
    let mut fragments = Vec::new();
    for f in &frames {
        if let Some(frag) = mux.push(f) {
            fragments.push(frag);
        }
    }
    fragments.extend(mux.flush());
    assert!(fragments.len() >= 8, "{} fragments", fragments.len());

    // init: ftyp, moov with two traks, avc1/avcC and mp4a/esds
    let top = boxes(&init);
    let kinds: Vec<_> = top.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [*b"ftyp", *b"moov"]);
    let moov = child(&init, b"moov");
    let traks: Vec<_> = boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .collect();
    assert_eq!(traks.len(), 2);
    assert!(boxes(moov).iter().any(|(k, _)| k == b"mvex"));
    let stsd = |trak: &[u8]| {
        let mdia = child(trak, b"mdia");
        let minf = child(mdia, b"minf");
        let stbl = child(minf, b"stbl");
        child(stbl, b"stsd").to_vec()
    };
    let video_stsd = stsd(traks[0].1);
    assert_eq!(&video_stsd[12..16], b"avc1");
    let avc1 = &video_stsd[16..];
    let avcc = child(&avc1[78..], b"avcC");
    assert_eq!(avcc[0], 1);
    assert_eq!(avcc[4], 0xff);
    let audio_stsd = stsd(traks[1].1);
    assert_eq!(&audio_stsd[12..16], b"mp4a");

    // fragments: moof + mdat, sample sizes add up to the mdat, data offsets
    // point into it, sequence numbers count up
    let mut video_samples = 0;
    let mut audio_samples = 0;
    for (i, frag) in fragments.iter().enumerate() {
        let parts = boxes(frag);
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].0, b"moof");
        assert_eq!(&parts[1].0, b"mdat");
        let moof = parts[0].1;
        let mfhd = child(moof, b"mfhd");
        assert_eq!(
            u32::from_be_bytes(mfhd[4..8].try_into().unwrap()),
            i as u32 + 1
        );
        let mut total = 0usize;
        for (kind, traf) in boxes(moof) {
            if &kind != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd");
            let track = u32::from_be_bytes(tfhd[4..8].try_into().unwrap());
            let trun = child(traf, b"trun");
            let count = u32::from_be_bytes(trun[4..8].try_into().unwrap()) as usize;
            let offset = i32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
            assert_eq!(offset, moof.len() + 8 + 8 + total);
            for s in 0..count {
                let at = 12 + s * 16;
                let size = u32::from_be_bytes(trun[at + 4..at + 8].try_into().unwrap()) as usize;
                if track == 1 {
                    // length-prefixed NAL units filling the sample exactly
                    let sample = &parts[1].1[total..total + size];
                    let mut p = 0;
                    while p < sample.len() {
                        let n = u32::from_be_bytes(sample[p..p + 4].try_into().unwrap()) as usize;
                        p += 4 + n;
                    }
                    assert_eq!(p, sample.len());
                    video_samples += 1;
                } else {
                    audio_samples += 1;
                }
                total += size;
            }
        }
        assert_eq!(total, parts[1].1.len());
    }
    assert_eq!(video_samples, 200);
    assert!(audio_samples > 350, "{audio_samples}");

    for f in &fragments {
        file.extend_from_slice(f);
    }
    let path = temp_path("demo.mp4");
    std::fs::write(&path, &file).unwrap();
    let probe = ffprobe(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(values(&probe, "codec_name"), ["h264", "aac"]);
    assert_eq!(values(&probe, "width"), ["640"]);
    assert_eq!(values(&probe, "height"), ["360"]);
    let d = duration(&probe);
    assert!((d - 8.0).abs() < 0.5, "duration {d}");
}

/// A VP8 keyframe / delta frame as the test peer sends them (640x480).
fn vp8(key: bool, n: usize) -> Vec<u8> {
    let mut v = if key {
        vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
    } else {
        vec![0x11, 0, 0]
    };
    v.resize(n, 0xaa);
    v
}

fn write_file(path: &std::path::Path, w: &mut MatroskaWriter, body: Vec<u8>) -> Vec<u8> {
    let mut file = body;
    let fin = w.finish();
    file.extend(fin.tail);
    for p in fin.patches {
        let at = p.offset as usize;
        file[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
    }
    std::fs::write(path, &file).unwrap();
    file
}

/// (id, payload) of each EBML element in `data`.
fn elements(data: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let first = data[at];
        let id_len = first.leading_zeros() as usize + 1;
        let id = data[at..at + id_len]
            .iter()
            .fold(0u32, |a, b| (a << 8) | u32::from(*b));
        at += id_len;
        let s0 = data[at];
        let s_len = s0.leading_zeros() as usize + 1;
        let mut size = u64::from(s0) & ((1u64 << (8 - s_len)) - 1);
        for b in &data[at + 1..at + s_len] {
            size = (size << 8) | u64::from(*b);
        }
        at += s_len;
        let end = at + size as usize;
        assert!(end <= data.len(), "element {id:x} overruns");
        out.push((id, &data[at..end]));
        at = end;
    }
    out
}

#[test]
fn webm_vp8_opus_is_seekable_and_ffprobe_reads_it() {
    let tracks = vec![
        TrackSpec::video(1, TrackCodec::Vp8, 640, 480),
        TrackSpec::opus(2, 48000, 2),
    ];
    let mut w = MatroskaWriter::new(DocType::Webm, tracks).unwrap();
    let mut body = w.header();
    // 3 s: video at 30 fps with a keyframe every second, audio every 20 ms
    for ms in 0..3000i64 {
        if ms % 20 == 0 {
            body.extend(w.frame(2, ms, true, &[0xfc; 80]).unwrap());
        }
        if ms * 3 % 100 == 0 {
            let key = ms % 1000 == 0;
            body.extend(w.frame(1, ms, key, &vp8(key, 500)).unwrap());
        }
    }
    let path = temp_path("vp8.webm");
    let file = write_file(&path, &mut w, body);
    let probe = ffprobe(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(values(&probe, "codec_name"), ["vp8", "opus"]);
    assert_eq!(values(&probe, "format_name"), ["matroska,webm"]);
    let d = duration(&probe);
    assert!((d - 3.0).abs() < 0.2, "duration {d}");

    // structure: EBML header (DocType webm), one Segment of the right size
    // holding SeekHead, Info (with Duration), Tracks, Clusters and Cues
    let top = elements(&file);
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].0, 0x1A45_DFA3);
    assert!(
        elements(top[0].1)
            .iter()
            .any(|(id, v)| *id == 0x4282 && *v == b"webm")
    );
    assert_eq!(top[1].0, 0x1853_8067);
    // (the SeekHead's reserved space that it does not use stays a Void)
    let ids: Vec<u32> = elements(top[1].1)
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != 0xEC)
        .collect();
    assert_eq!(ids[..3], [0x114D_9B74, 0x1549_A966, 0x1654_AE6B]);
    assert_eq!(*ids.last().unwrap(), 0x1C53_BB6B);
    let clusters = ids.iter().filter(|id| **id == 0x1F43_B675).count();
    assert_eq!(clusters, 3);
    let info = elements(top[1].1)
        .into_iter()
        .find(|(id, _)| *id == 0x1549_A966)
        .unwrap()
        .1;
    let dur = elements(info)
        .into_iter()
        .find(|(id, _)| *id == 0x4489)
        .map(|(_, v)| f64::from_be_bytes(v.try_into().unwrap()))
        .unwrap();
    assert!((dur - 3000.0).abs() < 50.0, "{dur}");
}

#[test]
fn matroska_h264_from_the_demo_channel() {
    let (program, frames) = demo();
    let video = program.tracks.iter().find(|t| t.pid == 256).unwrap();
    let media::TrackParams::Video(params) = &video.params else {
        panic!()
    };
    let avcc = fmp4::avc_decoder_config(&params.parameter_sets).unwrap();
    let tracks = vec![TrackSpec::video(1, TrackCodec::H264 { avcc }, 640, 360)];
    let mut w = MatroskaWriter::new(DocType::Matroska, tracks).unwrap();
    let mut body = w.header();
    let first = frames
        .iter()
        .find_map(|f| f.dts.filter(|_| f.pid == 256))
        .unwrap();
    for f in frames.iter().filter(|f| f.pid == 256) {
        let ms = (f.pts.unwrap() - first) / 90;
        let data = fmp4::annexb_to_length_prefixed(&f.data, false);
        body.extend(w.frame(1, ms, f.is_key(), &data).unwrap());
    }
    let path = temp_path("h264.mkv");
    write_file(&path, &mut w, body);
    let probe = ffprobe(&path);
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(values(&probe, "codec_name"), ["h264"]);
    assert_eq!(values(&probe, "width"), ["640"]);
    assert!(
        decoded.status.success() && decoded.stderr.is_empty(),
        "{decoded:?}"
    );
    let d = duration(&probe);
    assert!((d - 8.0).abs() < 0.5, "duration {d}");
}

proptest! {
    /// Whatever frames a remote publisher sends, the writer neither panics nor
    /// writes a cluster it can not size.
    #[test]
    fn webm_writer_never_panics(frames in proptest::collection::vec(
        (1u8..=3, any::<i64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40)) {
        let tracks = vec![
            TrackSpec::video(1, TrackCodec::Vp9, 1, 1),
            TrackSpec::opus(2, 48000, 1),
        ];
        let mut w = MatroskaWriter::new(DocType::Webm, tracks).unwrap();
        for (t, ms, key, data) in frames {
            let _ = w.frame(t, ms, key, &data);
        }
        let _ = w.finish();
    }

    #[test]
    fn fmp4_muxer_never_panics(frames in proptest::collection::vec(
        (any::<bool>(), proptest::option::of(any::<i64>()), proptest::option::of(any::<i64>()),
         any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40)) {
        let (program, _) = demo_program();
        let mut mux = Fmp4Muxer::new(&program).unwrap();
        for (video, pts, dts, key, data) in frames {
            let f = Frame {
                pid: if video { 256 } else { 257 },
                pts,
                dts,
                duration: None,
                kind: if key { media::FrameKind::Key } else { media::FrameKind::Predicted },
                data: data.into(),
            };
            let _ = mux.push(&f);
        }
        let _ = mux.flush();
    }
}

fn demo_program() -> (Program, ()) {
    use std::sync::OnceLock;
    static P: OnceLock<Program> = OnceLock::new();
    (P.get_or_init(|| demo().0).clone(), ())
}
