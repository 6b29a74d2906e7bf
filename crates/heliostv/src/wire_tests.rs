use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn decode_all(bytes: &[u8], origin: Origin) -> Vec<Result<Message, Malformed>> {
    let mut d = Decoder::new(Limits::SERVER);
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(o) = d.next_object().unwrap() {
        out.push(o.into_message(origin));
    }
    out
}

fn one(bytes: &[u8], origin: Origin) -> Result<Message, Malformed> {
    let mut all = decode_all(bytes, origin);
    assert_eq!(all.len(), 1, "expected exactly one message");
    all.remove(0)
}

const PREFIX: &str = "68 65 6c 69 6f 73 74 76 2e 65 72 72 6f 72 2e";

#[test]
fn hello_vectors_of_15_1() {
    let player = hex("92 01 91 a6 70 6c 61 79 65 72");
    let m = Message::Hello {
        roles: vec!["player".into()],
    };
    assert_eq!(m.to_bytes(), player);
    assert_eq!(one(&player, Origin::Client), Ok(m));

    let rec = hex("92 01 92 a8 72 65 63 6f 72 64 65 72 a7 73 65 63 74 69 6f 6e");
    let m = Message::Hello {
        roles: vec!["recorder".into(), "section".into()],
    };
    assert_eq!(m.to_bytes(), rec);
    assert_eq!(one(&rec, Origin::Client), Ok(m));

    let sl = hex("92 01 91 ac 73 65 72 76 69 63 65 5f 6c 69 73 74");
    assert_eq!(
        Message::Hello {
            roles: vec!["service_list".into()]
        }
        .to_bytes(),
        sl
    );
    assert_eq!(Message::Hello { roles: vec![] }.to_bytes(), hex("92 01 90"));
}

#[test]
fn welcome_and_abort_vectors_of_15_2_and_15_3() {
    assert_eq!(Message::Welcome.to_bytes(), hex("91 02"));
    let cases = [
        (
            ErrorUri::InvalidRole,
            format!("92 03 bb {PREFIX} 69 6e 76 61 6c 69 64 5f 72 6f 6c 65"),
            30,
        ),
        (
            ErrorUri::UnexpectedMessage,
            format!("92 03 d9 21 {PREFIX} 75 6e 65 78 70 65 63 74 65 64 5f 6d 65 73 73 61 67 65"),
            37,
        ),
        (
            ErrorUri::InvalidMessage,
            format!("92 03 be {PREFIX} 69 6e 76 61 6c 69 64 5f 6d 65 73 73 61 67 65"),
            33,
        ),
        (
            ErrorUri::Shutdown,
            format!("92 03 b7 {PREFIX} 73 68 75 74 64 6f 77 6e"),
            26,
        ),
    ];
    for (uri, bytes, len) in cases {
        let bytes = hex(&bytes);
        assert_eq!(bytes.len(), len);
        assert_eq!(Message::abort(uri).to_bytes(), bytes, "{uri}");
        assert_eq!(one(&bytes, Origin::Server), Ok(Message::abort(uri)));
    }
}

#[test]
fn new_service_vectors_of_15_4() {
    let b = hex("93 07 01 b6 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31");
    let m = Message::NewService {
        request: 1,
        resource: "sah-service://Channel1".into(),
    };
    assert_eq!(b.len(), 26);
    assert_eq!(m.to_bytes(), b);
    assert_eq!(one(&b, Origin::Client), Ok(m));

    let b = hex(
        "93 07 02 d9 24 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31 \
         3f 64 61 74 61 3d 73 65 63 74 69 6f 6e 73",
    );
    assert_eq!(b.len(), 41);
    let m = Message::NewService {
        request: 2,
        resource: "sah-service://Channel1?data=sections".into(),
    };
    assert_eq!(m.to_bytes(), b);

    let b = hex("93 07 02 af 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 35");
    assert_eq!(
        Message::NewService {
            request: 2,
            resource: "sah-service://5".into()
        }
        .to_bytes(),
        b
    );
}

#[test]
fn result_vectors_of_15_5() {
    let b = hex("93 04 01 91 ce 00 06 79 32");
    let m = Message::Result {
        request: 1,
        args: vec![Value::from(424242u64)],
    };
    assert_eq!(m.to_bytes(), b);
    assert_eq!(one(&b, Origin::Server), Ok(m));
    assert_eq!(
        Message::Result {
            request: 3,
            args: vec![]
        }
        .to_bytes(),
        hex("93 04 03 90")
    );
    assert_eq!(
        Message::Result {
            request: 4,
            args: vec![]
        }
        .to_bytes(),
        hex("93 04 04 90")
    );
    // The diagrams' form without Arguments, accepted by clients (§4.4).
    assert_eq!(
        one(&hex("92 04 03"), Origin::Server),
        Ok(Message::Result {
            request: 3,
            args: vec![]
        })
    );
}

#[test]
fn error_vectors_of_15_6() {
    let cases = [
        (
            1,
            ErrorUri::InvalidUri,
            format!("93 06 01 ba {PREFIX} 69 6e 76 61 6c 69 64 5f 75 72 69"),
            30,
        ),
        (
            3,
            ErrorUri::InvalidToken,
            format!("93 06 03 bc {PREFIX} 69 6e 76 61 6c 69 64 5f 74 6f 6b 65 6e"),
            32,
        ),
        (
            2,
            ErrorUri::InvalidRole,
            format!("93 06 02 bb {PREFIX} 69 6e 76 61 6c 69 64 5f 72 6f 6c 65"),
            31,
        ),
        (
            7,
            ErrorUri::InvalidMessage,
            format!("93 06 07 be {PREFIX} 69 6e 76 61 6c 69 64 5f 6d 65 73 73 61 67 65"),
            34,
        ),
        (
            12,
            ErrorUri::UnknownMessage,
            format!("93 06 0c be {PREFIX} 75 6e 6b 6e 6f 77 6e 5f 6d 65 73 73 61 67 65"),
            34,
        ),
        (
            2,
            ErrorUri::LimitExceeded,
            format!("93 06 02 bd {PREFIX} 6c 69 6d 69 74 5f 65 78 63 65 65 64 65 64"),
            33,
        ),
    ];
    for (req, uri, bytes, len) in cases {
        let bytes = hex(&bytes);
        assert_eq!(bytes.len(), len);
        assert_eq!(Message::error(req, uri).to_bytes(), bytes, "{uri}");
        assert_eq!(one(&bytes, Origin::Server), Ok(Message::error(req, uri)));
    }
}

#[test]
fn authorize_del_service_services_vectors_of_15_7_to_15_9() {
    let b = hex("93 05 03 ce 00 06 79 32");
    assert_eq!(
        one(&b, Origin::Client),
        Ok(Message::Authorize {
            request: 3,
            token: 424242
        })
    );
    assert_eq!(
        Message::Authorize {
            request: 3,
            token: 424242
        }
        .to_bytes(),
        b
    );
    let b = hex("93 08 04 ce 00 06 79 32");
    assert_eq!(
        one(&b, Origin::Client),
        Ok(Message::DelService {
            request: 4,
            token: 424242
        })
    );
    assert_eq!(
        Message::DelService {
            request: 4,
            token: 424242
        }
        .to_bytes(),
        b
    );
    assert_eq!(
        one(&hex("92 09 05"), Origin::Client),
        Ok(Message::Services { request: 5 })
    );
    assert_eq!(Message::Services { request: 5 }.to_bytes(), hex("92 09 05"));
}

#[test]
fn services_snapshot_vector_of_15_9() {
    let b = hex("93 04 05 91 87 a3 75 72 69 \
         b6 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31 \
         a4 6e 61 6d 65 a8 43 68 61 6e 6e 65 6c 31 \
         a6 6e 75 6d 62 65 72 01 \
         a8 70 72 6f 76 69 64 65 72 a3 4c 61 62 \
         a4 74 61 67 73 91 a4 4e 65 77 73 \
         a9 68 61 73 5f 76 69 64 65 6f c3 \
         a9 68 61 73 5f 61 75 64 69 6f c3");
    assert_eq!(b.len(), 100);
    let s = ServiceInfo {
        uri: "sah-service://Channel1".into(),
        name: "Channel1".into(),
        number: 1,
        provider: "Lab".into(),
        tags: vec!["News".into()],
        has_video: true,
        has_audio: true,
    };
    let m = Message::Result {
        request: 5,
        args: vec![s.to_value()],
    };
    assert_eq!(m.to_bytes(), b);
    let Ok(Message::Result { args, .. }) = one(&b, Origin::Server) else {
        panic!()
    };
    assert_eq!(ServiceInfo::from_value(&args[0]), Some(s));
}

#[test]
fn services_notification_vector_of_15_9() {
    let b = hex("93 09 05 91 82 a6 63 68 61 6e 67 65 a5 61 64 64 65 64 \
         a7 73 65 72 76 69 63 65 87 a3 75 72 69 \
         b9 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 52 61 64 69 6f 25 32 30 4f 6e 65 \
         a4 6e 61 6d 65 a9 52 61 64 69 6f 20 4f 6e 65 \
         a6 6e 75 6d 62 65 72 00 \
         a8 70 72 6f 76 69 64 65 72 a0 \
         a4 74 61 67 73 90 \
         a9 68 61 73 5f 76 69 64 65 6f c2 \
         a9 68 61 73 5f 61 75 64 69 6f c3");
    assert_eq!(b.len(), 118);
    let change = ServiceChange {
        kind: ChangeKind::Added,
        service: ServiceInfo {
            uri: "sah-service://Radio%20One".into(),
            name: "Radio One".into(),
            number: 0,
            provider: String::new(),
            tags: vec![],
            has_video: false,
            has_audio: true,
        },
    };
    let m = Message::ServicesChanged {
        request: 5,
        changes: vec![change.to_value()],
    };
    assert_eq!(m.to_bytes(), b);
    let Ok(Message::ServicesChanged {
        request: 5,
        changes,
    }) = one(&b, Origin::Server)
    else {
        panic!()
    };
    assert_eq!(ServiceChange::from_value(&changes[0]), Some(change));
    assert_eq!(ChangeKind::Updated.as_str(), "updated");
}

#[test]
fn wrong_input_of_15_10_is_classified() {
    // [0]: type 0, no request id.
    assert_eq!(
        one(&hex("91 00"), Origin::Client).unwrap_err().request,
        None
    );
    // "hello": not an array.
    let e = one(&hex("a5 68 65 6c 6c 6f"), Origin::Client).unwrap_err();
    assert_eq!((e.code, e.request), (None, None));
    // [7, 7, 42]: Resource not a string, request readable.
    let e = one(&hex("93 07 07 2a"), Origin::Client).unwrap_err();
    assert_eq!((e.code, e.request), (Some(7), Some(7)));
    // [7]: no request id.
    let e = one(&hex("91 07"), Origin::Client).unwrap_err();
    assert_eq!((e.code, e.request), (Some(7), None));
    // [42, 12]: unknown type.
    assert_eq!(
        one(&hex("92 2a 0c"), Origin::Client),
        Ok(Message::Unknown {
            code: 42,
            request: Some(12)
        })
    );
    // [2] from a client decodes as WELCOME; the session refuses it.
    assert_eq!(one(&hex("91 02"), Origin::Client), Ok(Message::Welcome));
    // Role list with a number; Token nil; empty array.
    assert!(one(&hex("92 01 91 05"), Origin::Client).is_err());
    assert_eq!(
        one(&hex("93 05 01 c0"), Origin::Client)
            .unwrap_err()
            .request,
        Some(1)
    );
    assert!(one(&hex("90"), Origin::Client).is_err());
}

#[test]
fn integers_in_every_format_are_ids() {
    let formats = [
        ("05", 5u64),
        ("cc 05", 5),
        ("cd 00 05", 5),
        ("ce 00 00 00 05", 5),
        ("cf 00 00 00 00 00 00 00 05", 5),
        ("d0 05", 5),
        ("d1 00 05", 5),
        ("d2 00 00 00 05", 5),
        ("d3 00 00 00 00 00 00 00 05", 5),
        ("cf ff ff ff ff ff ff ff ff", u64::MAX),
    ];
    for (f, v) in formats {
        let bytes = hex(&format!("93 08 {f} {f}"));
        assert_eq!(
            one(&bytes, Origin::Client),
            Ok(Message::DelService {
                request: v,
                token: v
            }),
            "{f}"
        );
    }
    // Negative ints, floats, nil are not integers.
    for f in ["ff", "d0 ff", "ca 00 00 00 00", "c0"] {
        let bytes = hex(&format!("93 08 01 {f}"));
        assert!(one(&bytes, Origin::Client).is_err(), "{f}");
    }
    // Echoed unchanged at 2^64-1.
    let m = Message::error(u64::MAX, ErrorUri::InvalidToken);
    assert_eq!(one(&m.to_bytes(), Origin::Server), Ok(m));
}

#[test]
fn extra_trailing_elements_are_ignored() {
    // [7, 1, "sah-service://5", {"x": [1.5]}, nil]
    let b = hex(
        "95 07 01 af 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 35 81 a1 78 91 ca 3f c0 00 00 c0",
    );
    assert_eq!(
        one(&b, Origin::Client),
        Ok(Message::NewService {
            request: 1,
            resource: "sah-service://5".into()
        })
    );
    // SERVICES from a client with a third element is still a request.
    assert_eq!(
        one(&hex("93 09 05 2a"), Origin::Client),
        Ok(Message::Services { request: 5 })
    );
}

#[test]
fn invalid_utf8_and_bad_maps_are_malformed() {
    // Resource with invalid UTF-8.
    assert_eq!(
        one(&hex("93 07 01 a2 c3 28"), Origin::Client)
            .unwrap_err()
            .request,
        Some(1)
    );
    // Extra element: map with integer key; map with duplicate keys.
    assert!(one(&hex("94 07 01 a1 61 81 01 02"), Origin::Client).is_err());
    assert!(one(&hex("94 07 01 a1 61 82 a1 6b 01 a1 6b 02"), Origin::Client).is_err());
}

#[test]
fn byte_by_byte_equals_one_segment() {
    let mut stream = Vec::new();
    let msgs = vec![
        Message::Hello {
            roles: vec!["player".into(), "section".into()],
        },
        Message::NewService {
            request: 1,
            resource: "sah-service://Channel1".into(),
        },
        Message::DelService {
            request: 300,
            token: 424242,
        },
        Message::Services { request: u64::MAX },
    ];
    for m in &msgs {
        m.encode(&mut stream);
    }
    let whole: Vec<_> = decode_all(&stream, Origin::Client)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(whole, msgs);
    let mut d = Decoder::new(Limits::SERVER);
    let mut got = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some(o) = d.next_object().unwrap() {
            got.push(o.into_message(Origin::Client).unwrap());
        }
    }
    assert_eq!(got, msgs);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn header_announcing_an_oversized_string_fails_at_once() {
    // §16.16: NEW_SERVICE whose Resource is a str 32 announcing 65 536 bytes.
    let mut d = Decoder::new(Limits::SERVER);
    d.push(&hex("93 07 01 db 00 01 00 00"));
    assert_eq!(
        d.next_object(),
        Err(StreamError::TooLarge { limit: 65_536 })
    );
    // Exactly at the limit is fine: an array 16 of 65 533 - 2 fixints fills 65 536 bytes.
    let mut d = Decoder::new(Limits::SERVER);
    let n = 65_536 - 3;
    let mut b = vec![0xdc, (n >> 8) as u8, n as u8];
    b.extend(std::iter::repeat_n(1u8, n));
    d.push(&b);
    assert!(matches!(d.next_object(), Ok(Some(Object::Value(_)))));
    // An array announcing more children than bytes could fit.
    let mut d = Decoder::new(Limits::SERVER);
    d.push(&hex("dd 00 01 00 00"));
    assert_eq!(
        d.next_object(),
        Err(StreamError::TooLarge { limit: 65_536 })
    );
}

#[test]
fn incomplete_object_filling_the_limit_fails() {
    let mut d = Decoder::new(Limits::SERVER);
    // An array 16 of 65 533 elements: the header fits the limit, but its
    // elements are 2 bytes each, so the buffer fills before it completes.
    d.push(&hex("dc ff fd"));
    assert_eq!(d.next_object(), Ok(None));
    while d.room() > 0 {
        let chunk: Vec<u8> = [0xcc, 0x01]
            .repeat(2048)
            .into_iter()
            .take(d.room())
            .collect();
        d.push(&chunk);
        if d.room() > 0 {
            assert_eq!(d.next_object(), Ok(None));
        }
    }
    assert_eq!(d.buffered(), 65_536);
    assert_eq!(
        d.next_object(),
        Err(StreamError::TooLarge { limit: 65_536 })
    );
}

#[test]
fn reserved_marker_ends_the_stream() {
    let mut d = Decoder::new(Limits::SERVER);
    d.push(&hex("93 07 01 c1"));
    assert_eq!(d.next_object(), Err(StreamError::NotMessagePack));
}

fn nested(levels: usize) -> Vec<u8> {
    // [7, 1, "x", [[...[]...]]] with the message itself as level 1.
    let mut b = hex("94 07 01 a1 78");
    b.extend(std::iter::repeat_n(0x91u8, levels - 2));
    b.push(0x90);
    b
}

#[test]
fn nesting_limit_is_sixteen_levels() {
    let ok = decode_all(&nested(16), Origin::Client);
    assert!(ok[0].is_ok());
    let e = decode_all(&nested(17), Origin::Client)
        .remove(0)
        .unwrap_err();
    assert_eq!((e.code, e.request), (Some(7), Some(1)));
    // The stream goes on after an over-deep message.
    let mut b = nested(40);
    b.extend(hex("92 09 05"));
    let all = decode_all(&b, Origin::Client);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], Ok(Message::Services { request: 5 }));
}

#[test]
fn take_remaining_returns_data_after_the_answer() {
    let mut d = Decoder::new(Limits::CLIENT);
    let mut b = hex("93 04 03 90");
    b.extend([0x47, 0x40, 0x00, 0x10]);
    d.push(&b);
    assert_eq!(
        d.next_object()
            .unwrap()
            .unwrap()
            .into_message(Origin::Server),
        Ok(Message::Result {
            request: 3,
            args: vec![]
        })
    );
    assert_eq!(d.take_remaining(), vec![0x47, 0x40, 0x00, 0x10]);
}

#[test]
fn section_bin_encoding_of_9_4() {
    let pat = hex("00 b0 0d 00 01 c1 00 00 00 01 f0 00 2a b1 04 b2");
    let mut out = Vec::new();
    encode_section(&pat, &mut out);
    assert_eq!(out[..2], [0xc4, 0x10]);
    assert_eq!(&out[2..], &pat[..]);
}

#[test]
fn error_uris_parse_back() {
    for e in ErrorUri::ALL {
        assert_eq!(ErrorUri::parse(e.as_str()), Some(e));
    }
    assert_eq!(ErrorUri::parse("heliostv.error.other"), None);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,12}".prop_map(|s: String| Value::from(s)),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Binary),
        Just(Value::Nil),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| {
                Value::Map(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

fn arb_message() -> impl Strategy<Value = (Message, Origin)> {
    let s = || ".{0,40}".prop_map(|s: String| s);
    prop_oneof![
        proptest::collection::vec(s(), 0..5)
            .prop_map(|roles| (Message::Hello { roles }, Origin::Client)),
        Just((Message::Welcome, Origin::Server)),
        s().prop_map(|reason| (Message::Abort { reason }, Origin::Client)),
        (any::<u64>(), proptest::collection::vec(arb_value(), 0..4))
            .prop_map(|(request, args)| (Message::Result { request, args }, Origin::Server)),
        (any::<u64>(), any::<u64>())
            .prop_map(|(request, token)| (Message::Authorize { request, token }, Origin::Client)),
        (any::<u64>(), s())
            .prop_map(|(request, error)| (Message::Error { request, error }, Origin::Server)),
        (any::<u64>(), s()).prop_map(|(request, resource)| (
            Message::NewService { request, resource },
            Origin::Client
        )),
        (any::<u64>(), any::<u64>())
            .prop_map(|(request, token)| (Message::DelService { request, token }, Origin::Client)),
        any::<u64>().prop_map(|request| (Message::Services { request }, Origin::Client)),
        (any::<u64>(), proptest::collection::vec(arb_value(), 0..3)).prop_map(
            |(request, changes)| (
                Message::ServicesChanged { request, changes },
                Origin::Server
            )
        ),
        (10u64.., proptest::option::of(any::<u64>()))
            .prop_map(|(code, request)| (Message::Unknown { code, request }, Origin::Client)),
    ]
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity((m, origin) in arb_message()) {
        prop_assert_eq!(one(&m.to_bytes(), origin), Ok(m));
    }

    #[test]
    fn split_points_do_not_matter((m, origin) in arb_message(), split in any::<prop::sample::Index>()) {
        let bytes = m.to_bytes();
        let at = split.index(bytes.len() + 1);
        let mut d = Decoder::new(Limits::SERVER);
        d.push(&bytes[..at]);
        let first = d.next_object().unwrap();
        d.push(&bytes[at..]);
        let got = match first { Some(o) => o, None => d.next_object().unwrap().unwrap() };
        prop_assert_eq!(got.into_message(origin), Ok(m));
    }

    #[test]
    fn fuzz_body_holds_on_random_input(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzz_stream(&bytes);
    }

    #[test]
    fn fuzz_body_holds_on_valid_messages((m, _) in arb_message(), split in 1u8..20) {
        let mut data = vec![split];
        data.extend(m.to_bytes());
        data.extend(m.to_bytes());
        fuzz_stream(&data);
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        for origin in [Origin::Client, Origin::Server] {
            let mut d = Decoder::new(Limits { max_message: 256, max_nesting: 4 });
            'feed: for c in bytes.chunks(chunk) {
                d.push(c);
                loop {
                    match d.next_object() {
                        Ok(Some(o)) => { let _ = o.into_message(origin); }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
            prop_assert!(d.buffered() <= 256 + chunk);
        }
    }
}
