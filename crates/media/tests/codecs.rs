//! HEVC, MPEG-2 video, AC-3, E-AC-3 and MPEG audio through the demuxer,
//! against what ffprobe reports for small fixtures made with:
//!
//! ```sh
//! ffmpeg -f lavfi -i testsrc2=size=352x288:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 1 \
//!   -c:v libx265 -preset ultrafast -x265-params keyint=10 -b:v 150k -c:a ac3 -b:a 96k -ac 2 \
//!   -f mpegts -mpegts_service_id 3 -metadata service_name="HEVC AC3" hevc-ac3.ts
//! ffmpeg -f lavfi -i testsrc2=size=352x288:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 -t 1 \
//!   -c:v mpeg2video -g 10 -bf 2 -b:v 100k -maxrate 100k -bufsize 200k -aspect 4:3 -c:a mp2 -b:a 64k -ac 1 \
//!   -f mpegts mpeg2-mp2.ts
//! ffmpeg -f lavfi -i sine=frequency=440:sample_rate=48000 -t 1 -c:a eac3 -b:a 96k -ac 2 \
//!   -f mpegts -mpegts_flags system_b eac3.ts
//! ```

use media::{Codec, DemuxEvent, Demuxer, Frame, FrameKind, Program, TrackParams};

fn demux(data: &[u8]) -> (Vec<Program>, Vec<Frame>) {
    let mut d = Demuxer::new();
    let mut ev = Vec::new();
    d.push(data, &mut ev);
    d.flush(&mut ev);
    let mut programs = vec![];
    let mut frames = vec![];
    for e in ev {
        match e {
            DemuxEvent::Programs(p) => programs = p,
            DemuxEvent::Frame { frame, .. } => frames.push(frame),
            _ => {}
        }
    }
    assert_eq!(d.stats().truncated_pes + d.stats().continuity_errors, 0);
    (programs, frames)
}

fn video_params(p: &Program) -> (Codec, media::VideoParams) {
    let t = p.tracks.iter().find(|t| t.codec.is_video()).unwrap();
    let TrackParams::Video(v) = &t.params else {
        panic!("no video params")
    };
    (t.codec, v.clone())
}

fn audio_params(p: &Program) -> (Codec, media::AudioParams) {
    let t = p.tracks.iter().find(|t| t.codec.is_audio()).unwrap();
    let TrackParams::Audio(a) = &t.params else {
        panic!("no audio params")
    };
    (t.codec, a.clone())
}

fn count(frames: &[Frame], pid: u16) -> (usize, usize) {
    let f: Vec<&Frame> = frames.iter().filter(|f| f.pid == pid).collect();
    (
        f.len(),
        f.iter().filter(|f| f.kind == FrameKind::Key).count(),
    )
}

#[test]
fn hevc_and_ac3() {
    let (programs, frames) = demux(include_bytes!("fixtures/hevc-ac3.ts"));
    let p = &programs[0];
    assert_eq!(p.program_number, 3);
    assert_eq!(p.service_name.as_deref(), Some("HEVC AC3"));
    assert!(p.is_ready());
    let (codec, v) = video_params(p);
    assert_eq!(codec, Codec::Hevc);
    assert_eq!((v.width, v.height), (352, 288));
    assert_eq!(v.frame_rate, Some((25, 1)));
    // VPS, SPS, PPS in Annex-B form.
    assert_eq!(
        v.parameter_sets
            .windows(4)
            .filter(|w| *w == [0, 0, 0, 1])
            .count(),
        3
    );
    let (codec, a) = audio_params(p);
    assert_eq!(codec, Codec::Ac3);
    assert_eq!((a.sample_rate, a.channels), (48000, 2));
    assert_eq!(count(&frames, 256), (25, 3));
    assert_eq!(count(&frames, 257).0, 32);
    // x265 sends VPS/SPS/PPS once; every keyframe gets them in front.
    for k in frames.iter().filter(|f| f.pid == 256 && f.is_key()) {
        assert!(
            k.data.windows(5).any(|w| w == [0, 0, 1, 0x40, 0x01]),
            "VPS before keyframe"
        );
    }
    assert_eq!(
        remux_random_access(include_bytes!("fixtures/hevc-ac3.ts"), 3),
        3
    );
    let ac3: Vec<&Frame> = frames.iter().filter(|f| f.pid == 257).collect();
    assert!(
        ac3.iter()
            .all(|f| f.duration == Some(2880) && f.data.starts_with(&[0x0b, 0x77]))
    );
}

#[test]
fn mpeg2_video_and_mp2() {
    let (programs, frames) = demux(include_bytes!("fixtures/mpeg2-mp2.ts"));
    let p = &programs[0];
    let (codec, v) = video_params(p);
    assert_eq!(codec, Codec::Mpeg2Video);
    assert_eq!((v.width, v.height), (352, 288));
    assert_eq!(v.frame_rate, Some((25, 1)));
    assert_eq!(v.aspect, Some((12, 11)));
    let (codec, a) = audio_params(p);
    assert_eq!(codec, Codec::MpegAudio);
    assert_eq!((a.sample_rate, a.channels), (44100, 1));
    assert_eq!(count(&frames, 256), (25, 3));
    let video: Vec<&Frame> = frames.iter().filter(|f| f.pid == 256).collect();
    assert!(video.iter().any(|f| f.kind == FrameKind::Bidirectional));
    assert!(video.iter().all(|f| f.duration == Some(3600)));
    // Every I picture carries a sequence header in front.
    for k in video.iter().filter(|f| f.is_key()) {
        assert!(k.data.starts_with(&[0, 0, 1, 0xb3]));
    }
    assert_eq!(count(&frames, 257).0, 39);
    assert_eq!(
        remux_random_access(include_bytes!("fixtures/mpeg2-mp2.ts"), 1),
        3
    );
}

#[test]
fn eac3_in_private_pes() {
    let (programs, frames) = demux(include_bytes!("fixtures/eac3.ts"));
    let p = &programs[0];
    let t = &p.tracks[0];
    assert_eq!(t.stream_type, 0x06, "system B signalling");
    let (codec, a) = audio_params(p);
    assert_eq!(codec, Codec::Eac3);
    assert_eq!((a.sample_rate, a.channels), (48000, 2));
    assert_eq!(frames.len(), 32);
    assert!(
        frames
            .iter()
            .all(|f| f.kind == FrameKind::Audio && f.duration == Some(2880))
    );
    // Without video every audio PES start is a place to begin.
    let data: &[u8] = include_bytes!("fixtures/eac3.ts");
    let pes_starts = data
        .chunks(188)
        .filter(|p| p[1] & 0x40 != 0 && (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == t.pid)
        .count();
    assert!(pes_starts > 1);
    assert_eq!(remux_random_access(data, 1), pes_starts);
}

fn remux_random_access(data: &[u8], program: u16) -> usize {
    use media::remux::{RemuxOutput, SptsRemuxer};
    use media::ts::{Packet, TsAligner};
    let mut r = SptsRemuxer::new(program);
    let mut out = RemuxOutput::new();
    TsAligner::new().push(data, &mut |p: &Packet| r.push(p, &mut out));
    out.random_access.len()
}
