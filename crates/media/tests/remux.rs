//! The single-programme remuxer: what a TS reader receives.

use media::psi::{Pat, Pmt, SectionAssembler};
use media::remux::{RemuxOptions, RemuxOutput, SptsRemuxer};
use media::ts::{Packet, PacketHeader, TsAligner, payload};
use media::{DemuxEvent, Demuxer, Frame};

const CH1: &[u8] = include_bytes!("../../../demo/channel-1.ts");
const TWO: &[u8] = include_bytes!("fixtures/two-programs.ts");

fn remux(input: &[u8], program: u16, opts: RemuxOptions) -> (RemuxOutput, SptsRemuxer) {
    let mut r = SptsRemuxer::with_options(program, opts);
    let mut out = RemuxOutput::new();
    let mut a = TsAligner::new();
    a.push(input, &mut |p: &Packet| r.push(p, &mut out));
    (out, r)
}

fn pids(data: &[u8]) -> Vec<u16> {
    data.chunks(188)
        .map(|p| PacketHeader::parse(p.try_into().unwrap()).pid)
        .collect()
}

fn pats(data: &[u8]) -> Vec<Pat> {
    let mut asm = SectionAssembler::new();
    let mut v = Vec::new();
    for p in data.chunks(188) {
        let p: &Packet = p.try_into().unwrap();
        let h = PacketHeader::parse(p);
        if h.pid == 0 {
            asm.push(h.payload_unit_start, payload(p), &mut |s: &[u8]| {
                v.push(Pat::parse(s).unwrap())
            });
        }
    }
    v
}

fn demux(data: &[u8]) -> (Vec<media::Program>, Vec<Frame>) {
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
    (programs, frames)
}

#[test]
fn single_program_input_passes_through_with_rewritten_pat() {
    let (out, r) = remux(CH1, 1, RemuxOptions::default());
    assert!(r.is_ready());
    let pats = pats(&out.data);
    assert!(!pats.is_empty());
    for p in &pats {
        assert_eq!(p.programs, vec![(1, 0x1000)]);
        assert_eq!(p.nit_pid, None);
    }
    let (programs, frames) = demux(&out.data);
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].service_name.as_deref(), Some("Switchyard One"));
    assert_eq!(frames.iter().filter(|f| f.pid == 256).count(), 200);
    assert_eq!(frames.iter().filter(|f| f.pid == 257).count(), 376);
    // Elementary stream packets are forwarded byte for byte.
    let es_in: Vec<&[u8]> = CH1
        .chunks(188)
        .filter(|p| matches!(pids(p)[0], 256 | 257))
        .collect();
    let es_out: Vec<&[u8]> = out
        .data
        .chunks(188)
        .filter(|p| matches!(pids(p)[0], 256 | 257))
        .collect();
    assert_eq!(es_in, es_out);
}

#[test]
fn random_access_points_are_pat_pmt_keyframe() {
    let (out, _) = remux(CH1, 1, RemuxOptions::default());
    assert_eq!(out.random_access.len(), 8, "one per GOP");
    // The first keyframe packet of the input.
    let first_key_in = CH1
        .chunks(188)
        .find(|p| {
            let h = PacketHeader::parse((*p).try_into().unwrap());
            h.pid == 256 && h.payload_unit_start
        })
        .unwrap();
    for &off in &out.random_access {
        let tail = &out.data[off..];
        let p = pids(&tail[..188 * 3]);
        assert_eq!(&p[..2], &[0, 0x1000]);
        assert_eq!(p[2], 256);
        let (programs, frames) = demux(tail);
        assert!(programs[0].is_ready());
        let first_video = frames.iter().find(|f| f.pid == 256).unwrap();
        assert!(first_video.is_key());
    }
    let off = out.random_access[0];
    assert_eq!(&out.data[off + 376..off + 564], first_key_in);
}

#[test]
fn psi_repeats_at_least_every_100ms() {
    let (out, _) = remux(
        CH1,
        1,
        RemuxOptions {
            psi_before_keyframe: false,
            ..Default::default()
        },
    );
    let n_pat = pids(&out.data).iter().filter(|&&p| p == 0).count();
    // 8 seconds of input: at least 80 repetitions.
    assert!(n_pat >= 80, "{n_pat}");
    let mut v = Vec::new();
    let mut r = SptsRemuxer::new(1);
    let mut o = RemuxOutput::new();
    TsAligner::new().push(CH1, &mut |p: &Packet| r.push(p, &mut o));
    r.psi_packets(&mut v);
    assert_eq!(pids(&v), vec![0, 0x1000]);
}

#[test]
fn multi_program_input_keeps_only_the_chosen_program() {
    let (out, _) = remux(
        TWO,
        20,
        RemuxOptions {
            collect_sections: true,
            ..Default::default()
        },
    );
    let pats = pats(&out.data);
    assert!(pats.iter().all(|p| p.programs == vec![(20, 0x1001)]));
    let used: std::collections::BTreeSet<u16> = pids(&out.data).into_iter().collect();
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        vec![0, 0x11, 0x102, 0x103, 0x1001]
    );
    let (programs, frames) = demux(&out.data);
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].program_number, 20);
    assert_eq!(programs[0].service_name.as_deref(), Some("Beta"));
    assert_eq!(frames.iter().filter(|f| f.pid == 0x102).count(), 32);
    assert_eq!(frames.iter().filter(|f| f.pid == 0x103).count(), 57);
    // Sections for the section role: our PAT, the PMT, the SDT.
    let tables: Vec<u8> = out.sections.iter().map(|s| s.table_id).collect();
    assert!(tables.contains(&0x00) && tables.contains(&0x02) && tables.contains(&0x42));
    let pmt = out.sections.iter().find(|s| s.table_id == 2).unwrap();
    assert_eq!(Pmt::parse(&pmt.data).unwrap().program_number, 20);
}

#[test]
fn multi_program_demux_lists_both() {
    let (programs, frames) = demux(TWO);
    assert_eq!(
        programs
            .iter()
            .map(|p| p.program_number)
            .collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(programs[0].service_name.as_deref(), Some("Alpha"));
    assert_eq!(programs[1].service_name.as_deref(), Some("Beta"));
    assert!(programs.iter().all(|p| p.is_ready()));
    for pid in [0x100, 0x102] {
        assert_eq!(frames.iter().filter(|f| f.pid == pid).count(), 32);
    }
    for pid in [0x101, 0x103] {
        assert_eq!(frames.iter().filter(|f| f.pid == pid).count(), 57);
    }
    // With a programme filter only that programme's frames come out.
    let mut d = Demuxer::new();
    d.set_program_filter(Some(10));
    let mut ev = Vec::new();
    d.push(TWO, &mut ev);
    d.flush(&mut ev);
    assert!(ev.iter().all(|e| !matches!(
        e,
        DemuxEvent::Frame {
            program_number: 20,
            ..
        }
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        DemuxEvent::Frame {
            program_number: 10,
            ..
        }
    )));
}

#[test]
fn psi_packets_continue_the_shared_stream_counters() {
    let mut r = SptsRemuxer::new(1);
    let mut out = RemuxOutput::new();
    TsAligner::new().push(&CH1[..188 * 2000], &mut |p: &Packet| r.push(p, &mut out));
    let last_cc = |pid: u16, data: &[u8]| {
        data.chunks(188)
            .map(|p| PacketHeader::parse(p.try_into().unwrap()))
            .rfind(|h| h.pid == pid)
            .map(|h| h.continuity_counter)
    };
    let mut prefix = Vec::new();
    r.psi_packets(&mut prefix);
    // A reader that starts with `prefix` and then gets the next shared
    // packets sees PAT/PMT counters that repeat once, then continue.
    assert_eq!(last_cc(0, &prefix), last_cc(0, &out.data));
    assert_eq!(last_cc(0x1000, &prefix), last_cc(0x1000, &out.data));
    out.clear();
    TsAligner::new().push(&CH1[188 * 2000..], &mut |p: &Packet| r.push(p, &mut out));
    let next_pat = out
        .data
        .chunks(188)
        .map(|p| PacketHeader::parse(p.try_into().unwrap()))
        .find(|h| h.pid == 0)
        .unwrap();
    assert_eq!(
        next_pat.continuity_counter,
        (last_cc(0, &prefix).unwrap() + 1) & 15
    );
}

#[test]
fn pmt_change_is_followed() {
    use media::psi::{PmtStream, packetize_section};
    // Program 1 first with one audio PID, then a new PMT version adds video.
    let pat = Pat {
        transport_stream_id: 9,
        version: 0,
        programs: vec![(1, 0x100)],
        nit_pid: None,
    }
    .build();
    let mut pmt = Pmt {
        program_number: 1,
        version: 0,
        pcr_pid: 0x101,
        program_info: vec![],
        streams: vec![PmtStream {
            stream_type: 0x0f,
            pid: 0x101,
            descriptors: vec![],
        }],
    };
    let mut input = Vec::new();
    let (mut c0, mut c1) = (0, 0);
    packetize_section(0, &pat, &mut c0, &mut input);
    packetize_section(0x100, &pmt.build(), &mut c1, &mut input);
    let es = |pid: u16, cc: u8| {
        let mut p = [0xffu8; 188];
        media::ts::write_header(&mut p, pid, false, cc);
        p
    };
    input.extend_from_slice(&es(0x101, 0));
    input.extend_from_slice(&es(0x102, 0));
    pmt.version = 1;
    pmt.streams.push(PmtStream {
        stream_type: 0x1b,
        pid: 0x102,
        descriptors: vec![],
    });
    packetize_section(0x100, &pmt.build(), &mut c1, &mut input);
    input.extend_from_slice(&es(0x102, 1));
    let (out, r) = remux(&input, 1, RemuxOptions::default());
    assert!(out.pmt_changed);
    assert_eq!(r.pmt().unwrap().version, 1);
    let p = pids(&out.data);
    // 0x102 is dropped before the PMT lists it, forwarded after.
    assert_eq!(p, vec![0, 0x100, 0x101, 0, 0x100, 0x102]);
    // The demuxer reports the new programme.
    let mut d = Demuxer::new();
    let mut ev = Vec::new();
    d.push(&input, &mut ev);
    let lists: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            DemuxEvent::Programs(p) => Some(p[0].tracks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![1, 2]);
}
