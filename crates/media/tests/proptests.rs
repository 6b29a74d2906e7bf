//! Property tests: no input makes a parser panic, and what we build parses
//! back to what we built.

use media::m3u::{M3uEntry, parse_m3u, write_m3u};
use media::psi::{Pat, Pmt, PmtStream, Sdt, SdtService, packetize_section};
use media::remux::{RemuxOptions, RemuxOutput, SptsRemuxer};
use media::ts::{Packet, TsAligner};
use media::xmltv::{XmltvChannel, XmltvProgramme, parse_xmltv, write_xmltv};
use media::{DemuxEvent, Demuxer};
use proptest::prelude::*;

const CH1: &[u8] = include_bytes!("../../../demo/channel-1.ts");
const TWO: &[u8] = include_bytes!("fixtures/two-programs.ts");

fn run_all(data: &[u8], chunk: usize) {
    let mut d = Demuxer::new();
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.push(c, &mut ev);
    }
    d.flush(&mut ev);
    let _ = d.stats();
    for program in [1u16, 10, 20] {
        let mut r = SptsRemuxer::with_options(
            program,
            RemuxOptions {
                collect_sections: true,
                ..Default::default()
            },
        );
        let mut out = RemuxOutput::new();
        let mut a = TsAligner::new();
        a.push(data, &mut |p: &Packet| r.push(p, &mut out));
        let mut v = Vec::new();
        r.psi_packets(&mut v);
        assert_eq!(out.data.len() % 188, 0);
        assert!(
            out.random_access
                .iter()
                .all(|&o| o % 188 == 0 && o < out.data.len())
        );
    }
}

/// Synthetic packets on the PIDs the demuxer cares about, with random
/// payloads: reaches section and PES code that random bytes never do.
fn packet_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0u16, 0x11, 0x12, 0x100, 0x101, 0x1000, 0x1fff]),
        any::<bool>(),
        0u8..4,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 184),
    )
        .prop_map(|(pid, pusi, afc, cc, body)| {
            let mut p = vec![
                0x47,
                (u8::from(pusi) << 6) | (pid >> 8) as u8,
                pid as u8,
                (afc << 4) | (cc & 15),
            ];
            p.extend_from_slice(&body);
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn demuxer_survives_any_bytes(data in prop::collection::vec(any::<u8>(), 0..4000), chunk in 1usize..500) {
        run_all(&data, chunk);
    }

    #[test]
    fn demuxer_survives_corrupted_demo(
        start in 0usize..1000,
        flips in prop::collection::vec((0usize..60_000, any::<u8>()), 1..200),
        chunk in 1usize..3000,
        multi in any::<bool>(),
    ) {
        let src = if multi { TWO } else { CH1 };
        let s = (start * 188).min(src.len());
        let mut data = src[s..(s + 60_000).min(src.len())].to_vec();
        let n = data.len();
        for (i, v) in flips {
            if n > 0 {
                data[i % n] = v;
            }
        }
        run_all(&data, chunk);
    }

    #[test]
    fn demuxer_survives_synthetic_packets(packets in prop::collection::vec(packet_strategy(), 1..200)) {
        // Start from a valid PAT/PMT so the PES paths are taken.
        let mut data = Vec::new();
        let mut cc = 0;
        packetize_section(0, &Pat { transport_stream_id: 1, version: 0, programs: vec![(1, 0x1000)], nit_pid: None }.build(), &mut cc, &mut data);
        let pmt = Pmt { program_number: 1, version: 0, pcr_pid: 0x100, program_info: vec![], streams: vec![
            PmtStream { stream_type: 0x1b, pid: 0x100, descriptors: vec![] },
            PmtStream { stream_type: 0x0f, pid: 0x101, descriptors: vec![0x0a, 4, b'd', b'e', b'u', 0] },
        ]};
        let mut cc = 0;
        packetize_section(0x1000, &pmt.build(), &mut cc, &mut data);
        for p in packets {
            data.extend_from_slice(&p);
        }
        run_all(&data, 188);
    }

    #[test]
    fn pat_round_trips(ts_id: u16, version in 0u8..32, programs in prop::collection::vec((1u16.., 0x10u16..0x1fff), 0..20), nit in prop::option::of(0x10u16..0x1fff)) {
        let pat = Pat { transport_stream_id: ts_id, version, programs, nit_pid: nit };
        prop_assert_eq!(Pat::parse(&pat.build()).unwrap(), pat);
    }

    #[test]
    fn pmt_round_trips(
        program_number: u16, version in 0u8..32, pcr_pid in 0u16..0x2000,
        program_info in prop::collection::vec(any::<u8>(), 0..40),
        streams in prop::collection::vec((any::<u8>(), 0u16..0x2000, prop::collection::vec(any::<u8>(), 0..30)), 0..10),
    ) {
        let pmt = Pmt {
            program_number, version, pcr_pid, program_info,
            streams: streams.into_iter().map(|(stream_type, pid, descriptors)| PmtStream { stream_type, pid, descriptors }).collect(),
        };
        prop_assert_eq!(Pmt::parse(&pmt.build()).unwrap(), pmt);
    }

    #[test]
    fn sdt_round_trips(
        ts_id: u16, onid: u16, version in 0u8..32,
        services in prop::collection::vec((any::<u16>(), any::<bool>(), any::<bool>(), 0u8..8, any::<bool>(), 1u8.., "[a-zA-Z0-9 äöüéß€]{0,30}", "[a-zA-Z0-9 .-]{0,30}"), 0..5),
    ) {
        let sdt = Sdt {
            transport_stream_id: ts_id, original_network_id: onid, version, section_number: 0, last_section_number: 0,
            services: services.into_iter().map(|(service_id, eit_schedule, eit_present_following, running_status, free_ca, service_type, name, provider)| SdtService {
                service_id, eit_schedule, eit_present_following, running_status, free_ca, service_type,
                provider_name: Some(provider), service_name: Some(name),
            }).collect(),
        };
        prop_assert_eq!(Sdt::parse(&sdt.build()).unwrap(), sdt);
    }

    #[test]
    fn m3u_survives_any_text(s in "(#EXTINF:|#EXTM3U|tvg-id=|\"|,|\r?\n|[a-z ]|http://x/|\u{feff}){0,80}") {
        let pl = parse_m3u(s.as_bytes());
        prop_assert!(pl.warnings.iter().all(|w| w.line >= 1));
    }

    #[test]
    fn m3u_survives_any_bytes(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_m3u(&data);
    }

    #[test]
    fn m3u_write_parse_round_trips(entries in prop::collection::vec(("[a-zA-Z0-9 ,äé]{1,20}", "[a-z0-9]{1,10}", prop::option::of("[a-zA-Z0-9 ,]{0,10}"), prop::option::of("[0-9]{1,3}")), 0..10)) {
        let entries: Vec<M3uEntry> = entries.into_iter().map(|(name, path, group, chno)| M3uEntry {
            name: name.trim().to_string(),
            url: format!("http://h/{path}"),
            duration: -1,
            group_title: group.filter(|g| !g.is_empty()),
            tvg_chno: chno,
            ..Default::default()
        }).filter(|e| !e.name.is_empty()).collect();
        let pl = parse_m3u(write_m3u(&[], &entries).as_bytes());
        prop_assert!(pl.warnings.is_empty());
        prop_assert_eq!(pl.entries.len(), entries.len());
        for (a, b) in pl.entries.iter().zip(&entries) {
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(&a.url, &b.url);
            prop_assert_eq!(&a.group_title, &b.group_title);
            prop_assert_eq!(&a.tvg_chno, &b.tvg_chno);
        }
    }

    #[test]
    fn xmltv_survives_any_bytes(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_xmltv(&data);
    }

    #[test]
    fn xmltv_survives_tag_soup(s in "(<tv>|</tv>|<programme start=\"20260101000000 \\+0100\" channel=\"a\">|</programme>|<title>|</title>|<channel id=\"a\">|</channel>|<display-name>|</display-name>|<icon src=\"x\"/>|&amp;|&#x41;|&bogus;|<!\\[CDATA\\[x\\]\\]>|[a-z <>\"&;]|\n){0,60}") {
        let _ = parse_xmltv(s.as_bytes());
    }

    #[test]
    fn xmltv_write_parse_round_trips(
        progs in prop::collection::vec(("[a-zA-Z0-9 <>&\"'äé]{1,20}", 0i64..4_000_000_000, 1i64..100_000, prop::option::of("[a-zA-Z0-9 <&]{1,30}")), 0..10)
    ) {
        let channels = vec![XmltvChannel { id: "c&1".into(), display_names: vec!["C <1>".into()], icon: None, line: 0 }];
        let programmes: Vec<XmltvProgramme> = progs.into_iter().map(|(title, start, len, desc)| XmltvProgramme {
            channel: "c&1".into(), start, stop: Some(start + len), title: title.trim().to_string(),
            desc: desc.map(|d| d.trim().to_string()).filter(|d| !d.is_empty()),
            ..Default::default()
        }).filter(|p| !p.title.is_empty()).collect();
        let g = parse_xmltv(write_xmltv("t", &channels, &programmes).as_bytes());
        prop_assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        prop_assert_eq!(&g.channels[0].display_names, &channels[0].display_names);
        prop_assert_eq!(g.programmes.len(), programmes.len());
        for (a, b) in g.programmes.iter().zip(&programmes) {
            prop_assert_eq!((&a.channel, &a.title, a.start, a.stop, &a.desc), (&b.channel, &b.title, b.start, b.stop, &b.desc));
        }
    }
}

#[test]
fn eit_events_reach_the_demuxer() {
    use media::psi::{SectionHeader, build_long_section, unix_to_mjd_bcd};
    // An EIT p/f actual section for service 1 with one event.
    let mut body = vec![0, 1, 0, 1, 0, 0x4e];
    let mut desc = vec![0x4d, 0];
    desc.extend_from_slice(b"deu");
    desc.push(5);
    desc.extend_from_slice(b"Hello");
    desc.push(3);
    desc.extend_from_slice(b"abc");
    desc[1] = (desc.len() - 2) as u8;
    body.extend_from_slice(&0x1234u16.to_be_bytes());
    body.extend_from_slice(&unix_to_mjd_bcd(1_795_000_000));
    body.extend_from_slice(&[0x01, 0x30, 0x00]);
    body.push(0x80 | ((desc.len() >> 8) as u8));
    body.push(desc.len() as u8);
    body.extend_from_slice(&desc);
    let sec = build_long_section(
        &SectionHeader {
            table_id: 0x4e,
            table_id_extension: 1,
            version: 0,
            current_next: true,
            section_number: 0,
            last_section_number: 0,
        },
        true,
        &body,
    );
    let mut data = Vec::new();
    let mut cc = 0;
    packetize_section(0x12, &sec, &mut cc, &mut data);
    packetize_section(0x12, &sec, &mut cc, &mut data);
    let mut d = Demuxer::new();
    let mut ev = Vec::new();
    d.push(&data, &mut ev);
    let eits: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            DemuxEvent::Eit(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(eits.len(), 1, "repetition not reported again");
    let e = &eits[0].events[0];
    assert_eq!(e.event_id, 0x1234);
    assert_eq!(e.start, Some(1_795_000_000));
    assert_eq!(e.duration, 90 * 60);
    assert_eq!(e.title.as_deref(), Some("Hello"));
    assert_eq!(e.short_text.as_deref(), Some("abc"));
    assert_eq!(e.language.as_deref(), Some("deu"));
}
