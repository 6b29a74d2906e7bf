//! The demuxer against the demo channels, compared with what ffprobe reports
//! (demo/expect.json).

use media::{Codec, DemuxEvent, Demuxer, Frame, FrameKind, Program, TrackParams};

const CH1: &[u8] = include_bytes!("../../../demo/channel-1.ts");
const CH2: &[u8] = include_bytes!("../../../demo/channel-2.ts");

struct Outcome {
    programs: Vec<Program>,
    frames: Vec<Frame>,
    program_numbers: Vec<u16>,
    pcrs: usize,
}

fn demux_chunks(data: &[u8], sizes: &mut dyn FnMut() -> usize) -> (Outcome, media::DemuxStats) {
    let mut d = Demuxer::new();
    let mut events = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        let (a, b) = rest.split_at(n);
        d.push(a, &mut events);
        rest = b;
    }
    d.flush(&mut events);
    let mut o = Outcome {
        programs: vec![],
        frames: vec![],
        program_numbers: vec![],
        pcrs: 0,
    };
    for e in events {
        match e {
            DemuxEvent::Programs(p) => o.programs = p,
            DemuxEvent::Frame {
                program_number,
                frame,
            } => {
                o.program_numbers.push(program_number);
                o.frames.push(frame)
            }
            DemuxEvent::Pcr { .. } => o.pcrs += 1,
            DemuxEvent::Eit(_) => {}
        }
    }
    (o, d.stats())
}

fn check_channel(o: &Outcome, number: u16, name: &str) {
    assert_eq!(o.programs.len(), 1);
    let p = &o.programs[0];
    assert_eq!(p.program_number, number);
    assert_eq!(p.service_name.as_deref(), Some(name));
    assert_eq!(p.provider_name.as_deref(), Some("Switchyard"));
    assert!(p.is_ready());
    let v = p.track(256).expect("video track");
    assert_eq!(v.codec, Codec::H264);
    let TrackParams::Video(vp) = &v.params else {
        panic!("video params")
    };
    assert_eq!((vp.width, vp.height), (640, 360));
    assert_eq!(vp.frame_rate, Some((25, 1)));
    assert_eq!(vp.aspect, Some((1, 1)));
    assert!(vp.parameter_sets.starts_with(&[0, 0, 0, 1, 0x67]));
    let a = p.track(257).expect("audio track");
    assert_eq!(a.codec, Codec::Aac);
    let TrackParams::Audio(ap) = &a.params else {
        panic!("audio params")
    };
    assert_eq!((ap.sample_rate, ap.channels), (48000, 2));
    assert_eq!(ap.codec_config.as_ref(), &[0x11, 0x90]);
    let video: Vec<&Frame> = o.frames.iter().filter(|f| f.pid == 256).collect();
    let audio: Vec<&Frame> = o.frames.iter().filter(|f| f.pid == 257).collect();
    assert_eq!(video.len(), 200);
    assert_eq!(audio.len(), 376);
    assert!(o.program_numbers.iter().all(|&n| n == number));
    // GOP of 25 frames: 8 keyframes, each starting with parameter sets.
    let keys: Vec<&&Frame> = video.iter().filter(|f| f.is_key()).collect();
    assert_eq!(keys.len(), 8);
    assert!(video[0].is_key());
    for k in keys {
        let has_sps = k
            .data
            .windows(5)
            .any(|w| w[..4] == [0, 0, 1, 0x67] || w == [0, 0, 0, 1, 0x67]);
        assert!(has_sps);
    }
    assert!(video.iter().any(|f| f.kind == FrameKind::Bidirectional));
    assert!(video.iter().all(|f| f.duration == Some(3600)));
    // Audio: consecutive frames 1920 ticks apart, ADTS data.
    for w in audio.windows(2) {
        assert_eq!(w[1].pts.unwrap() - w[0].pts.unwrap(), 1920);
    }
    assert!(
        audio
            .iter()
            .all(|f| f.data[0] == 0xff && f.duration == Some(1920))
    );
    // DTS never decreases for video.
    for w in video.windows(2) {
        assert!(w[1].dts.unwrap() > w[0].dts.unwrap());
    }
    assert!(o.pcrs > 0);
}

#[test]
fn channel_1_matches_ffprobe() {
    let (o, stats) = demux_chunks(CH1, &mut || usize::MAX);
    check_channel(&o, 1, "Switchyard One");
    assert_eq!(stats.packets, (CH1.len() / 188) as u64);
    assert_eq!(
        stats.continuity_errors + stats.resyncs + stats.truncated_pes + stats.crc_errors,
        0
    );
    // first video pts as ffprobe reports start_pts
    let first_video = o.frames.iter().find(|f| f.pid == 256).unwrap();
    assert_eq!(first_video.pts, Some(133_200));
}

#[test]
fn channel_2_matches_ffprobe() {
    let (o, stats) = demux_chunks(CH2, &mut || usize::MAX);
    check_channel(&o, 2, "Switchyard Two");
    assert_eq!(stats.dropped_bytes, 0);
}

#[test]
fn any_chunking_gives_the_same_frames() {
    let (whole, _) = demux_chunks(CH1, &mut || usize::MAX);
    let mut seed = 0x1234_5678u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 1500) as usize + 1
    };
    let (split, stats) = demux_chunks(CH1, &mut rnd);
    assert_eq!(split.frames, whole.frames);
    assert_eq!(split.programs, whole.programs);
    assert_eq!(stats.resyncs, 0);
    let (bytewise, _) = demux_chunks(&CH2[..CH2.len() / 4], &mut || 1);
    let (whole2, _) = demux_chunks(&CH2[..CH2.len() / 4], &mut || usize::MAX);
    assert_eq!(bytewise.frames, whole2.frames);
}

#[test]
fn garbage_and_lost_packets_resync_and_count() {
    let mut data = Vec::new();
    let packets: Vec<&[u8]> = CH1.chunks(188).collect();
    for (i, p) in packets.iter().enumerate() {
        if i % 500 == 250 {
            // lose a packet
            continue;
        }
        if i % 700 == 350 {
            data.extend_from_slice(&[0x47, 0x00, 0x13, 0x47, 0xde, 0xad]);
        }
        data.extend_from_slice(p);
    }
    let (o, stats) = demux_chunks(&data, &mut || 4096);
    let removed = packets.len().div_ceil(500) as u64;
    let inserted = (0..packets.len())
        .filter(|i| i % 700 == 350 && i % 500 != 250)
        .count() as u64;
    assert_eq!(stats.resyncs, inserted);
    assert_eq!(stats.dropped_bytes, inserted * 6);
    assert!(stats.continuity_errors >= removed - 1, "{stats:?}");
    assert!(stats.truncated_pes >= 1);
    // Most frames still come through.
    let video = o.frames.iter().filter(|f| f.pid == 256).count();
    assert!(video > 180 && video < 200, "{video}");
    assert!(o.programs[0].is_ready());
}
