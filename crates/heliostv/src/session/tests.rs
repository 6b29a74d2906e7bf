//! The session rules driven with the reference's byte vectors (§15, §16).

use super::*;
use crate::wire::{Decoder, Limits as WireLimits, Origin};
use rand::SeedableRng;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const PREFIX: &str = "68 65 6c 69 6f 73 74 76 2e 65 72 72 6f 72 2e";

fn abort_bytes(e: ErrorUri) -> Vec<u8> {
    Message::abort(e).to_bytes()
}

struct FakeCatalog {
    channels: Vec<ChannelRef>,
}

impl FakeCatalog {
    fn demo() -> FakeCatalog {
        let ch = |id, number, name: &str| ChannelRef {
            id,
            number,
            name: name.into(),
        };
        FakeCatalog {
            channels: vec![
                ch(1, 1, "Channel1"),
                ch(2, 5, "Channel2"),
                ch(42, 0, "Radio One"),
                ch(7, 7, "Twin"),
                ch(8, 8, "twin"),
            ],
        }
    }
}

impl Catalog for FakeCatalog {
    fn channels(&self) -> Vec<ChannelRef> {
        self.channels.clone()
    }
    fn services(&self) -> Vec<ServiceInfo> {
        let mut s: Vec<ServiceInfo> = self
            .channels
            .iter()
            .map(|c| ServiceInfo {
                uri: canonical_uri(c, &self.channels),
                name: c.name.clone(),
                number: u64::from(c.number),
                provider: String::new(),
                tags: vec![],
                has_video: true,
                has_audio: true,
            })
            .collect();
        sort_services(&mut s);
        s
    }
}

fn registry() -> Registry {
    Registry::new(Limits::default(), StdRng::seed_from_u64(7))
}

/// One control connection fed with bytes, as the server would.
struct Control {
    session: ControlSession,
    decoder: Decoder,
    closed: bool,
    /// Non-send actions, in order.
    others: Vec<ControlAction>,
}

impl Control {
    fn new(reg: &mut Registry) -> Control {
        Control {
            session: ControlSession::new(reg.new_session_id()),
            decoder: Decoder::new(WireLimits::SERVER),
            closed: false,
            others: vec![],
        }
    }

    fn feed(
        &mut self,
        bytes: &[u8],
        reg: &mut Registry,
        cat: &FakeCatalog,
        now: Instant,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        self.decoder.push(bytes);
        loop {
            let actions = match self.decoder.next_object() {
                Ok(None) => break,
                Ok(Some(o)) => self
                    .session
                    .handle(o.into_message(Origin::Client), now, reg, cat),
                Err(e) => self.session.stream_error(e, reg),
            };
            let stop = self.apply(actions, &mut out);
            if stop {
                break;
            }
        }
        out
    }

    fn apply(&mut self, actions: Vec<ControlAction>, out: &mut Vec<u8>) -> bool {
        for a in actions {
            match a {
                ControlAction::Send(m) => m.encode(out),
                ControlAction::Close => {
                    self.closed = true;
                    self.others.push(a);
                    return true;
                }
                other => self.others.push(other),
            }
        }
        false
    }
}

fn hello(reg: &mut Registry, cat: &FakeCatalog, now: Instant, roles: &[&str]) -> Control {
    let mut c = Control::new(reg);
    let roles = roles.iter().map(|r| r.to_string()).collect();
    let out = c.feed(&Message::Hello { roles }.to_bytes(), reg, cat, now);
    assert_eq!(out, hex("91 02"));
    c
}

fn new_service(
    c: &mut Control,
    reg: &mut Registry,
    cat: &FakeCatalog,
    now: Instant,
    req: u64,
    uri: &str,
) -> Message {
    let out = c.feed(
        &Message::NewService {
            request: req,
            resource: uri.into(),
        }
        .to_bytes(),
        reg,
        cat,
        now,
    );
    let mut d = Decoder::new(WireLimits::CLIENT);
    d.push(&out);
    d.next_object()
        .unwrap()
        .unwrap()
        .into_message(Origin::Server)
        .unwrap()
}

fn token_of(m: &Message) -> u32 {
    match m {
        Message::Result { args, .. } => crate::wire::as_integer(&args[0]).unwrap() as u32,
        other => panic!("not a RESULT: {other:?}"),
    }
}

fn authorize(reg: &mut Registry, now: Instant, bytes: &[u8]) -> Vec<DataAction> {
    let mut d = Decoder::new(WireLimits::SERVER);
    d.push(bytes);
    let msg = d
        .next_object()
        .unwrap()
        .unwrap()
        .into_message(Origin::Client);
    DataSession::new("192.0.2.1".parse().unwrap()).handle(msg, now, reg)
}

// ---- checklist 7: [1, ["player"]] is answered with exactly 91 02.
#[test]
fn hello_player_gets_welcome_bytes() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = Control::new(&mut reg);
    assert_eq!(
        c.feed(&hex("92 01 91 a6 70 6c 61 79 65 72"), &mut reg, &cat, now),
        hex("91 02")
    );
    assert!(!c.closed);
    assert_eq!(reg.session_count(), 1);
}

// ---- checklist 8.
#[test]
fn accepted_and_refused_role_lists() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let accepted: &[&[&str]] = &[
        &["player"],
        &["recorder"],
        &["section"],
        &["service_list"],
        &["player", "section"],
        &["recorder", "section"],
        &["player", "service_list"],
        &["recorder", "service_list"],
        &["section", "service_list"],
        &["player", "section", "service_list"],
        &["recorder", "section", "service_list"],
        &["player", "player"],
    ];
    for roles in accepted {
        hello(&mut reg, &cat, now, roles);
    }
    let refused: &[&[&str]] = &[
        &["player", "recorder"],
        &[],
        &["viewer"],
        &["Player"],
        &["section", "recorder", "player"],
    ];
    for roles in refused {
        let mut c = Control::new(&mut reg);
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let out = c.feed(
            &Message::Hello {
                roles: roles.clone(),
            }
            .to_bytes(),
            &mut reg,
            &cat,
            now,
        );
        assert_eq!(out, abort_bytes(ErrorUri::InvalidRole), "{roles:?}");
        assert!(c.closed);
    }
    // §15.1/§16.4 byte forms.
    let mut c = Control::new(&mut reg);
    let out = c.feed(
        &hex("92 01 92 a6 70 6c 61 79 65 72 a8 72 65 63 6f 72 64 65 72"),
        &mut reg,
        &cat,
        now,
    );
    assert_eq!(
        out,
        hex(&format!(
            "92 03 bb {PREFIX} 69 6e 76 61 6c 69 64 5f 72 6f 6c 65"
        ))
    );
    let mut c = Control::new(&mut reg);
    assert_eq!(
        c.feed(&hex("92 01 90"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::InvalidRole)
    );
}

// ---- checklist 9.
#[test]
fn role_list_with_a_non_string_is_malformed() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    for bytes in [
        "92 01 91 05",
        "92 01 a6 70 6c 61 79 65 72",
        "92 01 92 a6 70 6c 61 79 65 72 c0",
    ] {
        let mut c = Control::new(&mut reg);
        assert_eq!(
            c.feed(&hex(bytes), &mut reg, &cat, now),
            abort_bytes(ErrorUri::InvalidMessage),
            "{bytes}"
        );
        assert!(c.closed);
    }
}

// ---- checklist 10, §16.5, §15.10.
#[test]
fn anything_before_hello_is_refused() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let unexpected = [
        "93 07 01 b6 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31",
        "91 02",
        "92 09 05",
        "92 2a 0c",
        "93 05 03 ce 00 06 79 32",
    ];
    for bytes in unexpected {
        let mut c = Control::new(&mut reg);
        let out = c.feed(&hex(bytes), &mut reg, &cat, now);
        assert_eq!(
            out,
            hex(&format!(
                "92 03 d9 21 {PREFIX} 75 6e 65 78 70 65 63 74 65 64 5f 6d 65 73 73 61 67 65"
            )),
            "{bytes}"
        );
        assert!(c.closed);
    }
    // The 2015 implementation's [0] and a bare string: malformed.
    for bytes in ["91 00", "a5 68 65 6c 6c 6f"] {
        let mut c = Control::new(&mut reg);
        assert_eq!(
            c.feed(&hex(bytes), &mut reg, &cat, now),
            abort_bytes(ErrorUri::InvalidMessage)
        );
        assert!(c.closed);
    }
    assert_eq!(reg.session_count(), 0);
}

// ---- checklist 11, §16.8.
#[test]
fn second_hello_aborts_and_deletes_entries() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    let t = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    assert!(reg.entry(t).is_some());
    let out = c.feed(&hex("92 01 91 a6 70 6c 61 79 65 72"), &mut reg, &cat, now);
    assert_eq!(out, abort_bytes(ErrorUri::UnexpectedMessage));
    assert!(c.closed);
    assert!(reg.entry(t).is_none());
    assert_eq!(reg.session_count(), 0);
}

// ---- checklist 12.
#[test]
fn server_messages_from_a_client_abort() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    for bytes in ["91 02", "93 04 01 90", "93 06 01 a1 78", "92 04 01"] {
        let mut c = hello(&mut reg, &cat, now, &["player"]);
        assert_eq!(
            c.feed(&hex(bytes), &mut reg, &cat, now),
            abort_bytes(ErrorUri::UnexpectedMessage),
            "{bytes}"
        );
        assert!(c.closed);
    }
}

// ---- checklist 13, 14, 15, §16.6, §16.7, §15.10.
#[test]
fn malformed_and_unknown_in_an_open_session() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    // [42, 12] → [6, 12, unknown_message], session stays open.
    let out = c.feed(&hex("92 2a 0c"), &mut reg, &cat, now);
    assert_eq!(
        out,
        hex(&format!(
            "93 06 0c be {PREFIX} 75 6e 6b 6e 6f 77 6e 5f 6d 65 73 73 61 67 65"
        ))
    );
    // [7, 7, 42] → [6, 7, invalid_message], still open.
    let out = c.feed(&hex("93 07 07 2a"), &mut reg, &cat, now);
    assert_eq!(
        out,
        hex(&format!(
            "93 06 07 be {PREFIX} 69 6e 76 61 6c 69 64 5f 6d 65 73 73 61 67 65"
        ))
    );
    // Other malformed requests with a readable id.
    for (bytes, req) in [
        ("93 08 03 c0", 3),
        ("92 08 04", 4),
        ("93 05 05 a1 78", 5),
        ("92 00 09", 9),
    ] {
        let out = c.feed(&hex(bytes), &mut reg, &cat, now);
        assert_eq!(
            out,
            Message::error(req, ErrorUri::InvalidMessage).to_bytes(),
            "{bytes}"
        );
    }
    // AUTHORIZE on the control connection.
    let out = c.feed(&hex("93 05 03 ce 00 06 79 32"), &mut reg, &cat, now);
    assert_eq!(
        out,
        Message::error(3, ErrorUri::UnexpectedMessage).to_bytes()
    );
    assert!(!c.closed);
    // The session still works.
    assert!(matches!(
        new_service(&mut c, &mut reg, &cat, now, 20, "sah-service://Channel1"),
        Message::Result { request: 20, .. }
    ));
    // [7] → ABORT invalid_message, close.
    assert_eq!(
        c.feed(&hex("91 07"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::InvalidMessage)
    );
    assert!(c.closed);
}

#[test]
fn unknown_type_without_request_id_aborts() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    assert_eq!(
        c.feed(&hex("91 2a"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::UnknownMessage)
    );
    assert!(c.closed);
}

// ---- checklist 17.
#[test]
fn abort_from_the_client_closes_silently() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let abort = abort_bytes(ErrorUri::Shutdown);
    let mut c = Control::new(&mut reg);
    assert_eq!(c.feed(&abort, &mut reg, &cat, now), Vec::<u8>::new());
    assert!(c.closed);
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    assert_eq!(c.feed(&abort, &mut reg, &cat, now), Vec::<u8>::new());
    assert!(c.closed);
    assert_eq!(reg.session_count(), 0);
}

// ---- checklist 18.
#[test]
fn session_limit_refuses_hello() {
    let limits = Limits {
        max_sessions: 2,
        ..Limits::default()
    };
    let (mut reg, cat, now) = (
        Registry::new(limits, StdRng::seed_from_u64(1)),
        FakeCatalog::demo(),
        Instant::now(),
    );
    let _a = hello(&mut reg, &cat, now, &["player"]);
    let mut b = hello(&mut reg, &cat, now, &["player"]);
    let mut c = Control::new(&mut reg);
    // The role list is checked first.
    assert_eq!(
        c.feed(&hex("92 01 90"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::InvalidRole)
    );
    let mut c = Control::new(&mut reg);
    assert_eq!(
        c.feed(&hex("92 01 91 a6 70 6c 61 79 65 72"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::LimitExceeded)
    );
    // Closing one session frees its slot.
    b.feed(&abort_bytes(ErrorUri::Shutdown), &mut reg, &cat, now);
    hello(&mut reg, &cat, now, &["player"]);
}

#[test]
fn stream_errors_and_timeouts() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    // §16.16: oversized.
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    assert_eq!(
        c.feed(&hex("93 07 01 db 00 01 00 00"), &mut reg, &cat, now),
        abort_bytes(ErrorUri::InvalidMessage)
    );
    assert!(c.closed);
    // Hello timeout: silent close; nothing once open.
    let mut c = Control::new(&mut reg);
    assert_eq!(
        c.session.hello_timeout(&mut reg),
        vec![ControlAction::Close]
    );
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    assert_eq!(c.session.hello_timeout(&mut reg), vec![]);
    // Shutdown.
    let mut out = Vec::new();
    let actions = c.session.shutdown(&mut reg);
    c.apply(actions, &mut out);
    assert_eq!(
        out,
        hex(&format!("92 03 b7 {PREFIX} 73 68 75 74 64 6f 77 6e"))
    );
}

// ---- checklist 19, 20, 21, 22, §7.3 examples.
#[test]
fn new_service_resolution_and_errors() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player", "section"]);
    let out = c.feed(
        &hex("93 07 01 b6 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31"),
        &mut reg,
        &cat,
        now,
    );
    assert_eq!(&out[..4], &hex("93 04 01 91")[..]);
    let m = {
        let mut d = Decoder::new(WireLimits::CLIENT);
        d.push(&out);
        d.next_object()
            .unwrap()
            .unwrap()
            .into_message(Origin::Server)
            .unwrap()
    };
    let t = token_of(&m);
    assert!((1..=0x7fff_ffff).contains(&t));
    assert_eq!(reg.entry(t).unwrap().channel_id, 1);
    assert_eq!(reg.entry(t).unwrap().kind, DataKind::Ts(Mode::Player));

    let resolves = [
        ("sah-service://channel1", 1),
        ("SAH-SERVICE://Channel1/", 1),
        ("sah-service://5", 2),
        ("sah-service://id:42", 42),
        ("sah-service://Radio%20One", 42),
        ("sah-service://Radio One", 42),
        ("sah-service://Twin", 7),
        ("sah-service://twin", 8),
        ("sah-service://Channel1?", 1),
        ("sah-service://Channel1?data=ts", 1),
    ];
    for (i, (uri, id)) in resolves.iter().enumerate() {
        let m = new_service(&mut c, &mut reg, &cat, now, 100 + i as u64, uri);
        assert_eq!(reg.entry(token_of(&m)).unwrap().channel_id, *id, "{uri}");
        c.feed(
            &Message::DelService {
                request: 1,
                token: u64::from(token_of(&m)),
            }
            .to_bytes(),
            &mut reg,
            &cat,
            now,
        );
    }
    let sections = new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        2,
        "sah-service://Channel1?data=sections&tables=pmt,eit",
    );
    assert_eq!(
        reg.entry(token_of(&sections)).unwrap().kind,
        DataKind::Sections(Tables {
            pat: false,
            pmt: true,
            sdt: false,
            eit: true
        })
    );

    let invalid = [
        "sah-service://NoSuchChannel",
        "http://host/Channel1",
        "sah-service:Channel1",
        "sah-service://",
        "sah-service://Chan%2",
        "sah-service://Chan%zz",
        "sah-service://%ff",
        "sah-service://Channel1#x",
        "sah-service://Channel1?foo=bar",
        "sah-service://Channel1?data=video",
        "sah-service://Channel1?data=ts&data=ts",
        "sah-service://Channel1?data=sections&tables=",
        "sah-service://Channel1?data=sections&tables=pat,nit",
        "sah-service://Channel1?tables=pat",
        "sah-service://TWIN",
        "sah-service://0",
        "sah-service://id:",
        "sah-service://99999999999999999999",
    ];
    for (i, uri) in invalid.iter().enumerate() {
        let req = 200 + i as u64;
        assert_eq!(
            new_service(&mut c, &mut reg, &cat, now, req, uri),
            Message::error(req, ErrorUri::InvalidUri),
            "{uri}"
        );
    }
}

#[test]
fn roles_decide_the_data_kind() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut rec = hello(&mut reg, &cat, now, &["recorder"]);
    let m = new_service(&mut rec, &mut reg, &cat, now, 1, "sah-service://channel1");
    assert_eq!(
        reg.entry(token_of(&m)).unwrap().kind,
        DataKind::Ts(Mode::Recorder)
    );
    assert_eq!(
        new_service(
            &mut rec,
            &mut reg,
            &cat,
            now,
            2,
            "sah-service://Channel1?data=sections"
        ),
        Message::error(2, ErrorUri::InvalidRole)
    );

    let mut sec = hello(&mut reg, &cat, now, &["section"]);
    let m = new_service(&mut sec, &mut reg, &cat, now, 1, "sah-service://Channel1");
    assert_eq!(
        reg.entry(token_of(&m)).unwrap().kind,
        DataKind::Sections(Tables::ALL)
    );
    assert_eq!(
        new_service(
            &mut sec,
            &mut reg,
            &cat,
            now,
            3,
            "sah-service://Channel1?data=ts"
        ),
        Message::error(3, ErrorUri::InvalidRole)
    );

    // §16.9: service_list alone gets invalid_role for every NEW_SERVICE.
    let mut sl = hello(&mut reg, &cat, now, &["service_list"]);
    let out = sl.feed(
        &Message::NewService {
            request: 2,
            resource: "sah-service://Channel1".into(),
        }
        .to_bytes(),
        &mut reg,
        &cat,
        now,
    );
    assert_eq!(
        out,
        hex(&format!(
            "93 06 02 bb {PREFIX} 69 6e 76 61 6c 69 64 5f 72 6f 6c 65"
        ))
    );
    assert!(!sl.closed);
}

// ---- checklist 23.
#[test]
fn a_thousand_tokens_are_distinct_and_unrelated() {
    let limits = Limits {
        max_entries_per_session: 2000,
        ..Limits::default()
    };
    let (mut reg, cat, now) = (
        Registry::new(limits, StdRng::from_os_rng()),
        FakeCatalog::demo(),
        Instant::now(),
    );
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    let tokens: Vec<u32> = (0..1000)
        .map(|i| {
            token_of(&new_service(
                &mut c,
                &mut reg,
                &cat,
                now,
                i,
                "sah-service://Channel1",
            ))
        })
        .collect();
    let set: HashSet<u32> = tokens.iter().copied().collect();
    assert_eq!(set.len(), 1000);
    assert!(tokens.iter().all(|t| (1..=0x7fff_ffff).contains(t)));
    // No constant difference, no monotonic sequence.
    let diffs: HashSet<i64> = tokens
        .windows(2)
        .map(|w| i64::from(w[1]) - i64::from(w[0]))
        .collect();
    assert!(diffs.len() > 990);
    let ups = tokens.windows(2).filter(|w| w[1] > w[0]).count();
    assert!((300..700).contains(&ups), "{ups} increases of 999");
    // The high bit range is used: values spread over the 31-bit space.
    assert!(tokens.iter().any(|t| *t > 1 << 30));
}

// ---- checklist 24, §16.11.
#[test]
fn seventeenth_entry_exceeds_the_limit() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    for i in 1..=16 {
        assert!(matches!(
            new_service(&mut c, &mut reg, &cat, now, i, "sah-service://Channel1"),
            Message::Result { .. }
        ));
    }
    let out = c.feed(
        &Message::NewService {
            request: 17,
            resource: "sah-service://Channel1".into(),
        }
        .to_bytes(),
        &mut reg,
        &cat,
        now,
    );
    assert_eq!(
        out,
        hex(&format!(
            "93 06 11 bd {PREFIX} 6c 69 6d 69 74 5f 65 78 63 65 65 64 65 64"
        ))
    );
}

// ---- checklist 25, 26, §16.10.
#[test]
fn del_service_in_every_state() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    let mut other = hello(&mut reg, &cat, now, &["player"]);
    let pending = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    let active = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        2,
        "sah-service://Channel1",
    ));
    let ended = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        3,
        "sah-service://Channel1",
    ));
    let foreign = token_of(&new_service(
        &mut other,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    assert!(matches!(
        authorize(
            &mut reg,
            now,
            &Message::Authorize {
                request: 1,
                token: active.into()
            }
            .to_bytes()
        )[1],
        DataAction::Stream(_)
    ));
    assert!(matches!(
        authorize(
            &mut reg,
            now,
            &Message::Authorize {
                request: 1,
                token: ended.into()
            }
            .to_bytes()
        )[1],
        DataAction::Stream(_)
    ));
    reg.data_closed(ended);
    assert_eq!(reg.entry(ended).unwrap().state, EntryState::Ended);

    let del = |t: u32, r: u64| {
        Message::DelService {
            request: r,
            token: u64::from(t),
        }
        .to_bytes()
    };
    assert_eq!(
        c.feed(&del(pending, 4), &mut reg, &cat, now),
        hex("93 04 04 90")
    );
    c.others.clear();
    // ACTIVE: the data connection is closed before the RESULT is sent.
    let actions = c.session.handle(
        Ok(Message::DelService {
            request: 5,
            token: active.into(),
        }),
        now,
        &mut reg,
        &cat,
    );
    assert_eq!(
        actions,
        vec![
            ControlAction::CloseData(active),
            ControlAction::Send(Message::Result {
                request: 5,
                args: vec![]
            })
        ]
    );
    assert_eq!(
        c.feed(&del(ended, 6), &mut reg, &cat, now),
        hex("93 04 06 90")
    );
    // Twice, foreign, never issued, too large for a token.
    let invalid = |r: u64| Message::error(r, ErrorUri::InvalidToken).to_bytes();
    assert_eq!(c.feed(&del(pending, 7), &mut reg, &cat, now), invalid(7));
    assert_eq!(c.feed(&del(foreign, 8), &mut reg, &cat, now), invalid(8));
    assert_eq!(
        c.feed(&hex("93 08 04 cd 03 09"), &mut reg, &cat, now),
        hex(&format!(
            "93 06 04 bc {PREFIX} 69 6e 76 61 6c 69 64 5f 74 6f 6b 65 6e"
        ))
    );
    assert_eq!(
        c.feed(
            &hex("93 08 09 cf 00 00 00 01 00 00 00 00"),
            &mut reg,
            &cat,
            now
        ),
        invalid(9)
    );
    assert!(reg.entry(foreign).is_some());
}

// ---- checklist 27, §16.12.
#[test]
fn closing_the_control_connection_releases_everything() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["recorder"]);
    let a = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    let b = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        2,
        "sah-service://Channel2",
    ));
    authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 1,
            token: a.into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        c.session.connection_lost(&mut reg),
        vec![ControlAction::CloseData(a)]
    );
    assert!(reg.entry(a).is_none() && reg.entry(b).is_none());
    let actions = authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 3,
            token: b.into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        actions[0],
        DataAction::Send(Message::error(3, ErrorUri::InvalidToken))
    );
}

// ---- checklist 28, 29, 30, §16.3.
#[test]
fn authorize_success_and_every_invalid_token() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    let t = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    let actions = authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 3,
            token: t.into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        actions[0],
        DataAction::Send(Message::Result {
            request: 3,
            args: vec![]
        })
    );
    let DataAction::Send(m) = &actions[0] else {
        panic!()
    };
    assert_eq!(m.to_bytes(), hex("93 04 03 90"));
    assert_eq!(
        actions[1],
        DataAction::Stream(Grant {
            token: t,
            session: c.session.id(),
            channel_id: 1,
            kind: DataKind::Ts(Mode::Player)
        })
    );
    assert_eq!(reg.data_connection_count(), 1);

    let invalid = hex(&format!(
        "93 06 03 bc {PREFIX} 69 6e 76 61 6c 69 64 5f 74 6f 6b 65 6e"
    ));
    let expect_invalid = |actions: Vec<DataAction>| {
        let DataAction::Send(m) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(m.to_bytes(), invalid);
        assert_eq!(actions[1], DataAction::Close);
    };
    // Used once already.
    expect_invalid(authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 3,
            token: t.into(),
        }
        .to_bytes(),
    ));
    // Unknown.
    expect_invalid(authorize(&mut reg, now, &hex("93 05 03 ce 00 06 79 32")));
    // Older than 30 s: then DEL_SERVICE still answers RESULT (§16.3).
    let old = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        2,
        "sah-service://Channel1",
    ));
    let later = now + Duration::from_secs(31);
    expect_invalid(authorize(
        &mut reg,
        later,
        &Message::Authorize {
            request: 3,
            token: old.into(),
        }
        .to_bytes(),
    ));
    assert_eq!(reg.entry(old).unwrap().state, EntryState::Ended);
    assert_eq!(
        c.feed(
            &Message::DelService {
                request: 4,
                token: old.into()
            }
            .to_bytes(),
            &mut reg,
            &cat,
            later
        ),
        hex("93 04 04 90")
    );
    // Session ended.
    let gone = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        5,
        "sah-service://Channel1",
    ));
    c.session.connection_lost(&mut reg);
    expect_invalid(authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 3,
            token: gone.into(),
        }
        .to_bytes(),
    ));
}

#[test]
fn data_connection_first_message_rules() {
    let mut reg = registry();
    let now = Instant::now();
    let unexpected = Message::abort(ErrorUri::UnexpectedMessage);
    // The 2015 data request [1, token, "TF1"] (§14).
    let actions = authorize(&mut reg, now, &hex("93 01 ce 00 06 79 32 a3 54 46 31"));
    assert_eq!(
        actions,
        vec![DataAction::Send(unexpected.clone()), DataAction::Close]
    );
    for bytes in ["92 01 91 a6 70 6c 61 79 65 72", "92 2a 0c", "92 09 05"] {
        assert_eq!(
            authorize(&mut reg, now, &hex(bytes)),
            vec![DataAction::Send(unexpected.clone()), DataAction::Close]
        );
    }
    // Token not an integer, request readable.
    assert_eq!(
        authorize(&mut reg, now, &hex("93 05 03 a1 78")),
        vec![
            DataAction::Send(Message::error(3, ErrorUri::InvalidMessage)),
            DataAction::Close
        ]
    );
    assert_eq!(
        authorize(&mut reg, now, &hex("91 05")),
        vec![
            DataAction::Send(Message::abort(ErrorUri::InvalidMessage)),
            DataAction::Close
        ]
    );
    assert_eq!(
        authorize(&mut reg, now, &abort_bytes(ErrorUri::Shutdown)),
        vec![DataAction::Close]
    );
}

#[test]
fn data_connection_limit_keeps_the_entry_pending() {
    let limits = Limits {
        max_data_connections: 1,
        ..Limits::default()
    };
    let (mut reg, cat, now) = (
        Registry::new(limits, StdRng::seed_from_u64(3)),
        FakeCatalog::demo(),
        Instant::now(),
    );
    let mut c = hello(&mut reg, &cat, now, &["player"]);
    let a = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        1,
        "sah-service://Channel1",
    ));
    let b = token_of(&new_service(
        &mut c,
        &mut reg,
        &cat,
        now,
        2,
        "sah-service://Channel1",
    ));
    authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 1,
            token: a.into(),
        }
        .to_bytes(),
    );
    let actions = authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 2,
            token: b.into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        actions,
        vec![
            DataAction::Send(Message::error(2, ErrorUri::LimitExceeded)),
            DataAction::Close
        ]
    );
    assert!(matches!(
        reg.entry(b).unwrap().state,
        EntryState::Pending { .. }
    ));
    reg.data_closed(a);
    let actions = authorize(
        &mut reg,
        now,
        &Message::Authorize {
            request: 3,
            token: b.into(),
        }
        .to_bytes(),
    );
    assert!(matches!(actions[1], DataAction::Stream(_)));
}

#[test]
fn token_guessing_is_throttled() {
    let mut reg = registry();
    let now = Instant::now();
    let peer: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..9 {
        authorize(&mut reg, now, &hex("93 05 03 01"));
    }
    assert!(!reg.is_blocked(peer, now));
    authorize(&mut reg, now, &hex("93 05 03 01"));
    assert!(reg.is_blocked(peer, now + Duration::from_secs(59)));
    assert!(!reg.is_blocked("192.0.2.2".parse().unwrap(), now));
    assert!(!reg.is_blocked(peer, now + Duration::from_secs(61)));
}

// ---- checklist 37, 38, §16.15.
#[test]
fn services_snapshot_and_role() {
    let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
    let mut p = hello(&mut reg, &cat, now, &["player"]);
    assert_eq!(
        p.feed(&hex("92 09 05"), &mut reg, &cat, now),
        Message::error(5, ErrorUri::InvalidRole).to_bytes()
    );

    let mut c = hello(&mut reg, &cat, now, &["player", "service_list"]);
    let out = c.feed(&hex("92 09 05"), &mut reg, &cat, now);
    assert!(
        matches!(&c.others[..], [ControlAction::Subscribe { request: 5, snapshot }] if snapshot.len() == 5)
    );
    let mut d = Decoder::new(WireLimits::CLIENT);
    d.push(&out);
    let Ok(Message::Result { request: 5, args }) = d
        .next_object()
        .unwrap()
        .unwrap()
        .into_message(Origin::Server)
    else {
        panic!()
    };
    let services: Vec<ServiceInfo> = args
        .iter()
        .map(|v| ServiceInfo::from_value(v).unwrap())
        .collect();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Channel1", "Channel2", "Twin", "twin", "Radio One"]);
    for (i, s) in services.iter().enumerate() {
        assert_eq!(args[i].as_map().unwrap().len(), 7);
        let m = new_service(&mut c, &mut reg, &cat, now, 10 + i as u64, &s.uri);
        let t = token_of(&m);
        let ch = cat.channels.iter().find(|ch| ch.name == s.name).unwrap();
        assert_eq!(reg.entry(t).unwrap().channel_id, ch.id, "{}", s.uri);
    }
    assert_eq!(services[4].uri, "sah-service://Radio%20One");
}

#[test]
fn canonical_uri_falls_back_to_the_id() {
    let ch = |id, name: &str| ChannelRef {
        id,
        number: 0,
        name: name.into(),
    };
    let all = vec![ch(1, "Dup"), ch(2, "Dup"), ch(3, "Ünï")];
    assert_eq!(canonical_uri(&all[0], &all), "sah-service://id:1");
    assert_eq!(canonical_uri(&all[2], &all), "sah-service://%C3%9Cn%C3%AF");
    assert_eq!(resolve("Ünï", &all), Some(3));
    assert_eq!(resolve("Dup", &all), None);
    assert_eq!(resolve("id:2", &all), Some(2));
}

proptest::proptest! {
    #[test]
    fn any_message_sequence_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let (mut reg, cat, now) = (registry(), FakeCatalog::demo(), Instant::now());
        let mut c = hello(&mut reg, &cat, now, &["player", "section", "service_list"]);
        c.feed(&bytes, &mut reg, &cat, now);
        let mut d = Decoder::new(WireLimits::SERVER);
        d.push(&bytes);
        let mut data = DataSession::new("192.0.2.1".parse().unwrap());
        match d.next_object() {
            Ok(Some(o)) => { data.handle(o.into_message(Origin::Client), now, &mut reg); }
            Ok(None) => {}
            Err(e) => { data.stream_error(e); }
        }
    }
}
