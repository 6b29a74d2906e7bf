//! Byte-exact vectors from §14 of the reference, length edges (checklist 1,
//! 2, 4), the discard table of §14.10, and property tests.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddrV4};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn zeros_after(prefix: &str, total: usize) -> Vec<u8> {
    let mut v = hex(prefix);
    v.resize(total, 0);
    v
}

fn check_p0(p: P0Packet, dir: Direction, bytes: &[u8]) {
    assert_eq!(p.encode().as_ref(), bytes, "encoding of {p:?}");
    assert_eq!(decode_p0(bytes, dir).unwrap(), p);
}

fn check_ps(p: PsPacket, dir: Direction, bytes: &[u8]) {
    assert_eq!(p.encode().as_ref(), bytes, "encoding of {p:?}");
    assert_eq!(decode_ps(bytes, dir).unwrap(), p);
}

const SERVER_SEQ: u64 = 0x1a2b3c4d5e6f7081;

fn m_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 51000))
}

fn sintel_start(seq: u64, start_seq: u64) -> PsPacket {
    PsPacket::StreamStart(StreamStart {
        seq,
        movie_id: 1,
        interval_us: 20_000,
        chunk_size: 1316,
        total_chunks: 39_840,
        start_seq,
        paused: false,
        movie_name: "sintel.ts".into(),
    })
}

#[test]
fn handshake_vectors_14_1() {
    use Direction::*;
    check_p0(
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
        ToServer,
        &hex("01 0000000000000001 9c40"),
    );
    check_p0(
        P0Packet::PortAllocated {
            seq: 1,
            port: 40001,
        },
        ToClient,
        &hex("02 0000000000000001 9c41"),
    );
    check_p0(
        P0Packet::PortReply {
            seq: 2,
            port: 40001,
            ok: true,
        },
        ToServer,
        &hex("04 0000000000000002 9c41 01"),
    );
    check_p0(
        P0Packet::PortReply {
            seq: 2,
            port: 40001,
            ok: false,
        },
        ToServer,
        &hex("04 0000000000000002 9c41 00"),
    );
    check_p0(
        P0Packet::Ack { seq: 2 },
        ToClient,
        &hex("08 0000000000000002"),
    );
    check_p0(
        P0Packet::PortAllocated { seq: 1, port: 0 },
        ToClient,
        &hex("02 00 00 00 00 00 00 00 01 00 00"),
    );
}

#[test]
fn registration_vectors_14_2() {
    use Direction::*;
    check_ps(
        PsPacket::RegistrationRequest {
            seq: 3,
            interval_us: 0,
        },
        ToServer,
        &hex("01 0000000000000003 00000000"),
    );
    check_ps(
        PsPacket::Ack { seq: 3 },
        ToClient,
        &hex("08 00 00 00 00 00 00 00 03"),
    );
    let movies = hex(
        "02 1a2b3c4d5e6f7081 00 01 02 0000 11 62 69 67 5f 62 75 63 6b 5f 62 75 6e 6e 79 2e 74 73
         0001 09 73 69 6e 74 65 6c 2e 74 73",
    );
    assert_eq!(movies.len(), 44);
    check_ps(
        PsPacket::MoviesAvailable {
            seq: SERVER_SEQ,
            page: 0,
            pages: 1,
            entries: vec![
                MovieListing {
                    id: 0,
                    name: "big_buck_bunny.ts".into(),
                },
                MovieListing {
                    id: 1,
                    name: "sintel.ts".into(),
                },
            ],
        },
        ToClient,
        &movies,
    );
    check_ps(
        PsPacket::Ack { seq: SERVER_SEQ },
        ToServer,
        &hex("08 1a 2b 3c 4d 5e 6f 70 81"),
    );
    check_ps(
        PsPacket::RegistrationRequest {
            seq: 1,
            interval_us: 20_000,
        },
        ToServer,
        &hex("01 00 00 00 00 00 00 00 01 00 00 4e 20"),
    );
    let joined =
        hex("80 1a2b3c4d5e6f9c3a 04 00 0000000000000001 00000000000000000000ffffc6336407 c738");
    assert_eq!(joined.len(), 37);
    check_ps(
        PsPacket::Control(Control {
            seq: 0x1a2b3c4d5e6f9c3a,
            op: ControlOp::MemberJoined,
            reason: 0,
            position: 1,
            member: Some(m_addr()),
        }),
        ToClient,
        &joined,
    );
    check_ps(
        PsPacket::MovieChoice {
            seq: 4,
            movie_id: 1,
        },
        ToServer,
        &hex("04 0000000000000004 0001"),
    );
}

#[test]
fn streaming_vectors_14_3() {
    let start = hex(
        "10 1a2b3c4d5e70120f 0001 00004e20 0524 0000000000009ba0 0000000000000001 00
         09 73 69 6e 74 65 6c 2e 74 73",
    );
    assert_eq!(start.len(), 44);
    check_ps(
        sintel_start(0x1a2b3c4d5e70120f, 1),
        Direction::ToClient,
        &start,
    );
    check_ps(
        PsPacket::Ack {
            seq: 0x1a2b3c4d5e70120f,
        },
        Direction::ToServer,
        &hex("08 1a 2b 3c 4d 5e 70 12 0f"),
    );
    let mut data = hex("20 0000000000000001");
    let chunk: Vec<u8> = (0..1316u32).map(|i| i as u8).collect();
    data.extend_from_slice(&chunk);
    assert_eq!(data.len(), 1325);
    check_ps(
        PsPacket::MovieData {
            seq: 1,
            data: Bytes::from(chunk),
        },
        Direction::ToClient,
        &data,
    );
    let mut last = hex("20 00 00 00 00 00 00 9b a0");
    last.extend(std::iter::repeat_n(7u8, 676));
    assert_eq!(last.len(), 685);
    check_ps(
        PsPacket::MovieData {
            seq: 39_840,
            data: Bytes::from(vec![7u8; 676]),
        },
        Direction::ToClient,
        &last,
    );
}

#[test]
fn pause_resume_vectors_14_4() {
    check_ps(
        PsPacket::Control(Control::request(65, ControlOp::Pause, 0)),
        Direction::ToServer,
        &zeros_after("80 0000000000000041 02 00", 37),
    );
    check_ps(
        PsPacket::Control(Control {
            seq: 0x1a2b3c4d5e70a001,
            op: ControlOp::Paused,
            reason: 0,
            position: 1501,
            member: None,
        }),
        Direction::ToClient,
        &zeros_after("80 1a2b3c4d5e70a001 06 00 00000000000005dd", 37),
    );
    check_ps(
        PsPacket::Control(Control::request(77, ControlOp::Resume, 0)),
        Direction::ToServer,
        &zeros_after("80 00 00 00 00 00 00 00 4d 03 00", 37),
    );
    check_ps(
        PsPacket::Control(Control {
            seq: 0x1a2b3c4d5e70d5e2,
            op: ControlOp::Resumed,
            reason: 0,
            position: 1501,
            member: None,
        }),
        Direction::ToClient,
        &zeros_after(
            "80 1a 2b 3c 4d 5e 70 d5 e2 07 00 00 00 00 00 00 00 05 dd",
            37,
        ),
    );
}

#[test]
fn late_join_vectors_14_5() {
    let start = hex(
        "10 1a2b3c4d5e7131c4 0001 00004e20 0524 0000000000009ba0 0000000000000803 00
         09 73 69 6e 74 65 6c 2e 74 73",
    );
    check_ps(
        sintel_start(0x1a2b3c4d5e7131c4, 2051),
        Direction::ToClient,
        &start,
    );
    let j: SocketAddr = "[2001:db8::5]:52000".parse().unwrap();
    check_ps(
        PsPacket::Control(Control {
            seq: 0x1a2b3c4d5e716a0b,
            op: ControlOp::MemberJoined,
            reason: 0,
            position: 2001,
            member: Some(j),
        }),
        Direction::ToClient,
        &hex("80 1a2b3c4d5e716a0b 04 00 00000000000007d1 20010db8000000000000000000000005 cb20"),
    );
}

#[test]
fn refusal_leave_end_vectors_14_6_to_14_8() {
    check_ps(
        PsPacket::StreamEnd {
            seq: 0x1a2b3c4d5e71a0e5,
            last_seq: 0,
            reason: EndReason::Full,
        },
        Direction::ToClient,
        &hex("40 1a2b3c4d5e71a0e5 0000000000000000 04"),
    );
    check_ps(
        PsPacket::Control(Control::request(90, ControlOp::Leave, 0)),
        Direction::ToServer,
        &zeros_after("80 00 00 00 00 00 00 00 5a 01 00", 37),
    );
    check_ps(
        PsPacket::Control(Control {
            seq: 0x1a2b3c4d5e71f3d0,
            op: ControlOp::MemberLeft,
            reason: LEFT_REASON_LEFT,
            position: 2501,
            member: Some(m_addr()),
        }),
        Direction::ToClient,
        &hex("80 1a2b3c4d5e71f3d0 05 01 00000000000009c5 00000000000000000000ffffc6336407 c738"),
    );
    check_ps(
        PsPacket::StreamEnd {
            seq: 0x1a2b3c4d5e7240aa,
            last_seq: 39_840,
            reason: EndReason::Complete,
        },
        Direction::ToClient,
        &hex("40 1a2b3c4d5e7240aa 0000000000009ba0 00"),
    );
}

#[test]
fn session_list_vectors_14_9() {
    check_p0(
        P0Packet::SessionListRequest { seq: 1, start: 0 },
        Direction::ToServer,
        &zeros_after("10 00 00 00 00 00 00 00 01 00 00", 1400),
    );
    let list =
        hex("20 0000000000000001 0001 0000 01 9c41 03 01 0002 0001 09 73 69 6e 74 65 6c 2e 74 73");
    assert_eq!(list.len(), 32);
    check_p0(
        P0Packet::SessionList {
            seq: 1,
            total: 1,
            start: 0,
            entries: vec![SessionEntry {
                port: 40001,
                state: SessionState::Streaming,
                joinable: true,
                members: 2,
                movie_id: Some(1),
                movie_name: "sintel.ts".into(),
            }],
        },
        Direction::ToClient,
        &list,
    );
}

#[test]
fn discard_table_14_10() {
    use Direction::ToServer;
    let p0 = |s: &str| decode_p0(&hex(s), ToServer).unwrap_err().discard();
    let ps = |s: &str| decode_ps(&hex(s), ToServer).unwrap_err().discard();
    assert_eq!(p0("04 00 00 00 00 00 00 00 02 9c 41"), Discard::BadLength);
    assert_eq!(p0("04 00 00 00 00 00 00 00 02 9c 41 02"), Discard::BadField);
    assert_eq!(p0("01 00 00 00 00 00 00 00 00 00 00"), Discard::BadField);
    assert_eq!(p0("02 00 00 00 00 00 00 00 05 9c 41"), Discard::UnknownType);
    assert_eq!(
        ps("40 1a2b3c4d5e7240aa 0000000000009ba0 00"),
        Discard::UnknownType
    );
    assert_eq!(ps("11 00 00 00 00 00 00 00 01"), Discard::UnknownType);
    assert_eq!(p0("11 00 00 00 00 00 00 00 01"), Discard::UnknownType);
    assert_eq!(ps("01 00 00 00"), Discard::Truncated);
    assert_eq!(
        decode_ps(&[0x20; 1401], Direction::ToClient)
            .unwrap_err()
            .discard(),
        Discard::Oversized
    );
    assert_eq!(
        decode_p0(&[0x01; 1401], ToServer).unwrap_err().discard(),
        Discard::Oversized
    );
    assert_eq!(p0("10 00 00 00 00 00 00 00 01 00 00"), Discard::BadLength);
    // Control ops a client may not send, and ops that do not exist.
    assert_eq!(
        decode_ps(&zeros_after("80 0000000000000005 06", 37), ToServer)
            .unwrap_err()
            .discard(),
        Discard::BadField
    );
    assert_eq!(
        decode_ps(&zeros_after("80 0000000000000005 08", 37), ToServer)
            .unwrap_err()
            .discard(),
        Discard::BadField
    );
    assert_eq!(
        decode_ps(&zeros_after("80 0000000000000005 00", 37), ToServer)
            .unwrap_err()
            .discard(),
        Discard::BadField
    );
}

/// Checklist 2: every decoder rejects one byte less and one byte more.
#[test]
fn every_type_rejects_one_byte_short_and_long() {
    let samples: Vec<(Vec<u8>, bool, Direction)> = vec![
        (
            P0Packet::PortRequest { seq: 1, port: 5 }.encode().to_vec(),
            true,
            Direction::ToServer,
        ),
        (
            P0Packet::PortAllocated { seq: 1, port: 5 }
                .encode()
                .to_vec(),
            true,
            Direction::ToClient,
        ),
        (
            P0Packet::PortReply {
                seq: 1,
                port: 5,
                ok: true,
            }
            .encode()
            .to_vec(),
            true,
            Direction::ToServer,
        ),
        (
            P0Packet::Ack { seq: 1 }.encode().to_vec(),
            true,
            Direction::ToClient,
        ),
        (
            P0Packet::SessionListRequest { seq: 1, start: 0 }
                .encode()
                .to_vec(),
            true,
            Direction::ToServer,
        ),
        (
            hex(
                "20 0000000000000001 0001 0000 01 9c41 03 01 0002 0001 09 73 69 6e 74 65 6c 2e 74 73",
            ),
            true,
            Direction::ToClient,
        ),
        (
            P0Packet::SessionList {
                seq: 1,
                total: 0,
                start: 0,
                entries: vec![],
            }
            .encode()
            .to_vec(),
            true,
            Direction::ToClient,
        ),
        (
            PsPacket::RegistrationRequest {
                seq: 1,
                interval_us: 5,
            }
            .encode()
            .to_vec(),
            false,
            Direction::ToServer,
        ),
        (
            PsPacket::MoviesAvailable {
                seq: 1,
                page: 0,
                pages: 1,
                entries: vec![MovieListing {
                    id: 0,
                    name: "a".into(),
                }],
            }
            .encode()
            .to_vec(),
            false,
            Direction::ToClient,
        ),
        (
            PsPacket::MoviesAvailable {
                seq: 1,
                page: 0,
                pages: 1,
                entries: vec![],
            }
            .encode()
            .to_vec(),
            false,
            Direction::ToClient,
        ),
        (
            PsPacket::MovieChoice {
                seq: 1,
                movie_id: 0,
            }
            .encode()
            .to_vec(),
            false,
            Direction::ToServer,
        ),
        (
            PsPacket::Ack { seq: 1 }.encode().to_vec(),
            false,
            Direction::ToServer,
        ),
        (
            sintel_start(1, 1).encode().to_vec(),
            false,
            Direction::ToClient,
        ),
        (
            PsPacket::StreamEnd {
                seq: 1,
                last_seq: 0,
                reason: EndReason::Full,
            }
            .encode()
            .to_vec(),
            false,
            Direction::ToClient,
        ),
        (
            PsPacket::Control(Control::request(1, ControlOp::Leave, 0))
                .encode()
                .to_vec(),
            false,
            Direction::ToServer,
        ),
    ];
    for (bytes, on_p0, dir) in samples {
        let decode = |b: &[u8]| {
            if on_p0 {
                decode_p0(b, dir).map(|_| ())
            } else {
                decode_ps(b, dir).map(|_| ())
            }
        };
        decode(&bytes).unwrap_or_else(|e| panic!("{bytes:02x?} should decode: {e}"));
        let shorter = &bytes[..bytes.len() - 1];
        let err = decode(shorter).unwrap_err();
        assert!(
            matches!(err.discard(), Discard::BadLength | Discard::Truncated),
            "{shorter:02x?}: {err}"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode(&longer).unwrap_err();
        assert!(
            matches!(err.discard(), Discard::BadLength | Discard::Oversized),
            "{longer:02x?}: {err}"
        );
    }
    // Movie Data: 9 bytes (no data) is too short; 1401 too long.
    assert_eq!(
        decode_ps(&hex("20 0000000000000001"), Direction::ToClient)
            .unwrap_err()
            .discard(),
        Discard::BadLength
    );
    let mut big = hex("20 0000000000000001");
    big.resize(1400, 1);
    assert!(decode_ps(&big, Direction::ToClient).is_ok());
    big.push(1);
    assert_eq!(
        decode_ps(&big, Direction::ToClient).unwrap_err().discard(),
        Discard::Oversized
    );
}

/// Checklist 3: the largest pages the server can build stay within 1400.
#[test]
fn largest_pages_fit_1400() {
    let long = "x".repeat(255);
    let listings: Vec<MovieListing> = (0..300u16)
        .map(|id| MovieListing {
            id,
            name: long.clone(),
        })
        .collect();
    let pages = paginate_movies(&listings);
    assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), 300);
    let n = pages.len() as u8;
    for (i, p) in pages.iter().enumerate() {
        let bytes = PsPacket::MoviesAvailable {
            seq: 1,
            page: i as u8,
            pages: n,
            entries: p.clone(),
        }
        .encode();
        assert!(
            bytes.len() <= MAX_DATAGRAM,
            "page {i} is {} bytes",
            bytes.len()
        );
    }
    let entries: Vec<SessionEntry> = (0..40u16)
        .map(|i| SessionEntry {
            port: i,
            state: SessionState::Streaming,
            joinable: true,
            members: 1,
            movie_id: Some(i),
            movie_name: long.clone(),
        })
        .collect();
    let fit = session_list_fit(&entries);
    let list = P0Packet::SessionList {
        seq: 1,
        total: 40,
        start: 0,
        entries: entries[..fit].to_vec(),
    }
    .encode();
    assert!(
        list.len() <= MAX_DATAGRAM && fit >= 5,
        "{fit} entries, {} bytes",
        list.len()
    );
    let start = PsPacket::StreamStart(StreamStart {
        seq: 1,
        movie_id: 0,
        interval_us: 1,
        chunk_size: 1,
        total_chunks: 1,
        start_seq: 1,
        paused: false,
        movie_name: long,
    })
    .encode();
    assert_eq!(start.len(), 290);
}

fn name_strategy() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ._éß-]{0,40}").unwrap()
}

fn endpoint_strategy() -> impl Strategy<Value = Option<SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))),
        (any::<[u8; 16]>(), 1..=u16::MAX).prop_filter_map("not v4-mapped", |(ip, port)| {
            let ip = Ipv6Addr::from(ip);
            ip.to_ipv4_mapped()
                .is_none()
                .then(|| Some(SocketAddr::new(ip.into(), port)))
        }),
    ]
}

fn ps_strategy() -> impl Strategy<Value = (PsPacket, Direction)> {
    let seq = 1..=u64::MAX;
    prop_oneof![
        (seq.clone(), any::<u32>()).prop_map(|(seq, interval_us)| (
            PsPacket::RegistrationRequest { seq, interval_us },
            Direction::ToServer
        )),
        (
            seq.clone(),
            1..=255u8,
            proptest::collection::vec((any::<u16>(), name_strategy()), 0..20)
        )
            .prop_flat_map(|(seq, pages, e)| {
                (0..pages).prop_map(move |page| {
                    let entries = e
                        .iter()
                        .map(|(id, name)| MovieListing {
                            id: *id,
                            name: name.clone(),
                        })
                        .collect();
                    (
                        PsPacket::MoviesAvailable {
                            seq,
                            page,
                            pages,
                            entries,
                        },
                        Direction::ToClient,
                    )
                })
            }),
        (seq.clone(), any::<u16>()).prop_map(|(seq, movie_id)| (
            PsPacket::MovieChoice { seq, movie_id },
            Direction::ToServer
        )),
        seq.clone()
            .prop_map(|seq| (PsPacket::Ack { seq }, Direction::ToClient)),
        (
            seq.clone(),
            any::<u16>(),
            any::<u32>(),
            1..=MAX_CHUNK_SIZE,
            any::<u64>(),
            1..=u64::MAX,
            any::<bool>(),
            name_strategy()
        )
            .prop_map(
                |(
                    seq,
                    movie_id,
                    interval_us,
                    chunk_size,
                    total_chunks,
                    start_seq,
                    paused,
                    movie_name,
                )| {
                    (
                        PsPacket::StreamStart(StreamStart {
                            seq,
                            movie_id,
                            interval_us,
                            chunk_size,
                            total_chunks,
                            start_seq,
                            paused,
                            movie_name,
                        }),
                        Direction::ToClient,
                    )
                }
            ),
        (
            seq.clone(),
            proptest::collection::vec(any::<u8>(), 1..=1391)
        )
            .prop_map(|(seq, d)| (
                PsPacket::MovieData {
                    seq,
                    data: Bytes::from(d)
                },
                Direction::ToClient
            )),
        (seq.clone(), any::<u64>(), any::<u8>()).prop_map(|(seq, last_seq, r)| (
            PsPacket::StreamEnd {
                seq,
                last_seq,
                reason: EndReason::from_u8(r)
            },
            Direction::ToClient
        )),
        (seq, 1..=7u8, any::<u8>(), any::<u64>(), endpoint_strategy()).prop_map(
            |(seq, op, reason, position, member)| {
                let op = ControlOp::from_u8(op).unwrap();
                (
                    PsPacket::Control(Control {
                        seq,
                        op,
                        reason,
                        position,
                        member,
                    }),
                    op.direction(),
                )
            }
        ),
    ]
}

fn p0_strategy() -> impl Strategy<Value = (P0Packet, Direction)> {
    let seq = 1..=u64::MAX;
    let entry = (
        any::<u16>(),
        1..=5u8,
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(0..NO_MOVIE_ID),
        name_strategy(),
    )
        .prop_map(
            |(port, state, joinable, members, movie_id, movie_name)| SessionEntry {
                port,
                state: SessionState::from_u8(state).unwrap(),
                joinable,
                members,
                movie_id,
                movie_name,
            },
        );
    prop_oneof![
        (seq.clone(), any::<u16>())
            .prop_map(|(seq, port)| (P0Packet::PortRequest { seq, port }, Direction::ToServer)),
        (seq.clone(), any::<u16>())
            .prop_map(|(seq, port)| (P0Packet::PortAllocated { seq, port }, Direction::ToClient)),
        (seq.clone(), any::<u16>(), any::<bool>()).prop_map(|(seq, port, ok)| (
            P0Packet::PortReply { seq, port, ok },
            Direction::ToServer
        )),
        seq.clone()
            .prop_map(|seq| (P0Packet::Ack { seq }, Direction::ToClient)),
        (seq.clone(), any::<u16>()).prop_map(|(seq, start)| (
            P0Packet::SessionListRequest { seq, start },
            Direction::ToServer
        )),
        (
            seq,
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(entry, 0..20)
        )
            .prop_map(|(seq, total, start, entries)| {
                (
                    P0Packet::SessionList {
                        seq,
                        total,
                        start,
                        entries,
                    },
                    Direction::ToClient,
                )
            }),
    ]
}

proptest! {
    #[test]
    fn ps_round_trip((p, dir) in ps_strategy()) {
        let bytes = p.encode();
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        prop_assert_eq!(decode_ps(&bytes, dir).unwrap(), p);
    }

    #[test]
    fn p0_round_trip((p, dir) in p0_strategy()) {
        let bytes = p.encode();
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        prop_assert_eq!(decode_p0(&bytes, dir).unwrap(), p);
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        for dir in [Direction::ToServer, Direction::ToClient] {
            let _ = decode_p0(&bytes, dir);
            let _ = decode_ps(&bytes, dir);
        }
        let _ = peek_movie_data(&bytes);
    }

    #[test]
    fn any_body_after_valid_type_never_panics(kind in prop::sample::select(vec![1u8, 2, 4, 8, 0x10, 0x20, 0x40, 0x80]), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = vec![kind];
        bytes.extend(body);
        for dir in [Direction::ToServer, Direction::ToClient] {
            let _ = decode_p0(&bytes, dir);
            let _ = decode_ps(&bytes, dir);
        }
    }
}

/// The body of `fuzz/fuzz_targets/movie_packet.rs`, so that its
/// re-encoding assertion is known to hold before anyone fuzzes.
fn fuzz_body(data: &[u8]) {
    for dir in [Direction::ToServer, Direction::ToClient] {
        if let Ok(p) = decode_p0(data, dir) {
            assert_eq!(p.encode().len(), data.len());
        }
        if let Ok(p) = decode_ps(data, dir) {
            assert_eq!(p.encode().as_ref(), data);
        }
    }
    let _ = peek_movie_data(data);
}

proptest! {
    #[test]
    fn fuzz_target_body_holds(kind in prop::sample::select(vec![1u8, 2, 4, 8, 0x10, 0x20, 0x40, 0x80]), body in proptest::collection::vec(any::<u8>(), 8..60)) {
        let mut bytes = vec![kind];
        bytes.extend(body);
        fuzz_body(&bytes);
    }

    #[test]
    fn fuzz_target_body_holds_on_valid_packets((p, _) in ps_strategy()) {
        fuzz_body(&p.encode());
    }

    #[test]
    fn fuzz_target_body_holds_on_valid_p0_packets((p, _) in p0_strategy()) {
        fuzz_body(&p.encode());
    }
}
