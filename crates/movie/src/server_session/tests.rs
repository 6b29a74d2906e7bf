//! The server's state machines on a virtual clock, one test per item of the
//! reference's conformance checklist that the server alone decides. The
//! numbers in the test names are the checklist's.

use super::*;
use crate::wire::*;

const L: &str = "192.0.2.10:50000";
const M: &str = "198.51.100.7:51000";
const J: &str = "[2001:db8::5]:52000";
const X: &str = "203.0.113.9:53000";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn movie_bytes(len: usize, salt: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect::<Vec<_>>(),
    )
}

fn movies() -> Vec<Movie> {
    vec![
        Movie::in_memory("big_buck_bunny.ts", movie_bytes(5 * 1316, 1)),
        Movie::in_memory("sintel.ts", movie_bytes(10 * 1316 + 676, 2)),
    ]
}

fn test_config() -> Config {
    Config {
        registration_window: Duration::from_millis(3_000),
        default_interval_us: 20_000,
        ..Config::default()
    }
}

type Out = Vec<(SocketAddr, PsPacket)>;

struct Rig {
    s: ServerSession,
    now: Instant,
    /// Output not yet looked at, handed out by the next `advance`.
    carry: Out,
}

impl Rig {
    fn new(config: Config, movies: Vec<Movie>) -> Rig {
        let now = Instant::now();
        let created = NewSession {
            port: 40001,
            leader: a(L),
            leader_seq: 2,
        };
        let s = ServerSession::new(SessionParams::new(&config, &created, movies, 7), now);
        Rig {
            s,
            now,
            carry: Vec::new(),
        }
    }

    fn drain(&mut self) -> Out {
        let mut out = Vec::new();
        while let Some(t) = self.s.poll_transmit() {
            assert!(t.payload.len() <= MAX_DATAGRAM);
            out.push((
                t.to,
                decode_ps(&t.payload, Direction::ToClient).expect("server sent a valid packet"),
            ));
        }
        out
    }

    fn send(&mut self, from: &str, p: PsPacket) -> Out {
        let bytes = p.encode();
        self.raw(from, &bytes)
    }

    fn raw(&mut self, from: &str, bytes: &[u8]) -> Out {
        self.s.handle_datagram(self.now, a(from), bytes);
        self.drain()
    }

    /// Runs the clock forward by `d`, waking the session at each deadline.
    fn advance(&mut self, d: Duration) -> Out {
        let target = self.now + d;
        let mut out = std::mem::take(&mut self.carry);
        for _ in 0..1_000_000 {
            match self.s.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.s.handle_timeout(self.now);
                    out.extend(self.drain());
                }
                _ => break,
            }
        }
        self.now = target;
        self.s.handle_timeout(self.now);
        out.extend(self.drain());
        out
    }

    fn register(&mut self, from: &str, seq: u64, interval_us: u32) -> Out {
        self.send(from, PsPacket::RegistrationRequest { seq, interval_us })
    }

    fn ack(&mut self, from: &str, seq: u64) -> Out {
        self.send(from, PsPacket::Ack { seq })
    }
}

fn to<'a>(out: &'a Out, who: &str) -> Vec<&'a PsPacket> {
    out.iter()
        .filter(|(t, _)| *t == a(who))
        .map(|(_, p)| p)
        .collect()
}

fn acks(out: &Out, who: &str) -> Vec<u64> {
    to(out, who)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::Ack { seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn stream_starts(out: &Out, who: &str) -> Vec<StreamStart> {
    to(out, who)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::StreamStart(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn data(out: &Out, who: &str) -> Vec<(u64, Bytes)> {
    to(out, who)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::MovieData { seq, data } => Some((*seq, data.clone())),
            _ => None,
        })
        .collect()
}

fn controls(out: &Out, who: &str) -> Vec<Control> {
    to(out, who)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::Control(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn stream_ends(out: &Out, who: &str) -> Vec<(u64, u64, EndReason)> {
    to(out, who)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::StreamEnd {
                seq,
                last_seq,
                reason,
            } => Some((*seq, *last_seq, *reason)),
            _ => None,
        })
        .collect()
}

/// Leader registers and picks sintel (ID 1); M registers; the window closes;
/// both confirm. Returns the rig with both members active at position 1.
fn streaming(config: Config) -> Rig {
    streaming_with(config, movies())
}

fn long_movies() -> Vec<Movie> {
    vec![
        Movie::in_memory("big_buck_bunny.ts", movie_bytes(5 * 1316, 1)),
        Movie::in_memory("sintel.ts", movie_bytes(200 * 1316, 2)),
    ]
}

fn streaming_with(config: Config, movies: Vec<Movie>) -> Rig {
    let mut r = Rig::new(config, movies);
    let out = r.register(L, 3, 0);
    for (_, p) in &out {
        if let PsPacket::MoviesAvailable { seq, .. } = p {
            r.ack(L, *seq);
        }
    }
    r.send(
        L,
        PsPacket::MovieChoice {
            seq: 4,
            movie_id: 1,
        },
    );
    let out = r.register(M, 1, 0);
    for c in controls(&out, L) {
        r.ack(L, c.seq);
    }
    let out = r.advance(Duration::from_secs(3));
    for who in [L, M] {
        let starts = stream_starts(&out, who);
        assert_eq!(starts.len(), 1, "{who}: {out:?}");
        let out = r.ack(who, starts[0].seq);
        r.carry.extend(out);
    }
    assert_eq!(r.s.state(), SessionState::Streaming);
    r
}

// ------------------------------------------------------------- negotiator

#[derive(Default)]
struct FakePorts {
    busy: HashSet<u16>,
    bound: HashSet<u16>,
    released: Vec<u16>,
    next_fallback: u16,
}

impl PortAllocator for FakePorts {
    fn allocate(&mut self, requested: u16) -> Option<u16> {
        let port = if requested >= 1024
            && !self.busy.contains(&requested)
            && !self.bound.contains(&requested)
        {
            requested
        } else {
            self.next_fallback = self.next_fallback.max(45000) + 1;
            self.next_fallback
        };
        self.bound.insert(port);
        Some(port)
    }
    fn release(&mut self, port: u16) {
        self.bound.remove(&port);
        self.released.push(port);
    }
}

struct P0Rig {
    n: Negotiator,
    ports: FakePorts,
    now: Instant,
    has_movies: bool,
    sessions: Vec<SessionEntry>,
}

impl P0Rig {
    fn new(config: Config) -> Self {
        P0Rig {
            n: Negotiator::new(&config),
            ports: FakePorts::default(),
            now: Instant::now(),
            has_movies: true,
            sessions: vec![],
        }
    }

    fn send(&mut self, from: &str, bytes: &[u8]) -> Vec<P0Packet> {
        let sessions = self.sessions.clone();
        let list = move || sessions.clone();
        self.n.handle_datagram(
            self.now,
            a(from),
            bytes,
            P0Context {
                ports: &mut self.ports,
                has_movies: self.has_movies,
                sessions: &list,
            },
        );
        let mut out = vec![];
        while let Some(t) = self.n.poll_transmit() {
            assert_eq!(t.to, a(from));
            assert!(t.payload.len() <= bytes.len().max(12), "no amplification");
            out.push(decode_p0(&t.payload, Direction::ToClient).unwrap());
        }
        out
    }

    fn p(&mut self, from: &str, p: P0Packet) -> Vec<P0Packet> {
        self.send(from, &p.encode())
    }
}

#[test]
fn c05_free_port_is_allocated_with_the_request_seq() {
    let mut r = P0Rig::new(Config::default());
    let out = r.p(
        L,
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
    );
    assert_eq!(
        out,
        [P0Packet::PortAllocated {
            seq: 1,
            port: 40000
        }]
    );
}

#[test]
fn c06_busy_port_gets_another_port() {
    let mut r = P0Rig::new(Config::default());
    r.ports.busy.insert(40000);
    let out = r.p(
        L,
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
    );
    let [P0Packet::PortAllocated { seq: 1, port }] = out[..] else {
        panic!("{out:?}")
    };
    assert!(port != 40000 && port >= 1024 && r.ports.bound.contains(&port));
    // A port below 1024 is busy by definition.
    let out = r.p(M, P0Packet::PortRequest { seq: 1, port: 80 });
    let [P0Packet::PortAllocated { port, .. }] = out[..] else {
        panic!()
    };
    assert!(port >= 1024);
}

#[test]
fn c07_port_ok_opens_the_session_and_nok_releases_the_port() {
    let mut r = P0Rig::new(Config::default());
    r.p(
        L,
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
    );
    let out = r.p(
        L,
        P0Packet::PortReply {
            seq: 2,
            port: 40000,
            ok: true,
        },
    );
    assert_eq!(out, [P0Packet::Ack { seq: 2 }]);
    assert_eq!(
        r.n.poll_new_session(),
        Some(NewSession {
            port: 40000,
            leader: a(L),
            leader_seq: 2
        })
    );
    assert_eq!(r.n.live_sessions(), 1);

    r.p(
        M,
        P0Packet::PortRequest {
            seq: 1,
            port: 40010,
        },
    );
    let out = r.p(
        M,
        P0Packet::PortReply {
            seq: 2,
            port: 40010,
            ok: false,
        },
    );
    assert_eq!(out, [P0Packet::Ack { seq: 2 }]);
    assert_eq!(r.n.poll_new_session(), None);
    assert_eq!(r.ports.released, [40010]);
    // A reply from the same host but another socket is accepted (§3.7).
    r.p(
        X,
        P0Packet::PortRequest {
            seq: 1,
            port: 40020,
        },
    );
    let out = r.p(
        "203.0.113.9:53001",
        P0Packet::PortReply {
            seq: 2,
            port: 40020,
            ok: true,
        },
    );
    assert_eq!(out, [P0Packet::Ack { seq: 2 }]);
    assert_eq!(
        r.n.poll_new_session().unwrap().leader,
        a("203.0.113.9:53001")
    );
    // A reply naming no allocation is discarded.
    assert!(
        r.p(
            J,
            P0Packet::PortReply {
                seq: 2,
                port: 40030,
                ok: true
            }
        )
        .is_empty()
    );
    assert_eq!(r.n.discards.get(Discard::BadField), 1);
}

#[test]
fn c08_copies_get_the_same_answer_and_change_nothing() {
    let mut r = P0Rig::new(Config::default());
    let first = r.p(L, P0Packet::PortRequest { seq: 1, port: 0 });
    let again = r.p(L, P0Packet::PortRequest { seq: 1, port: 0 });
    assert_eq!(first, again);
    assert_eq!(r.ports.bound.len(), 1);
    let [P0Packet::PortAllocated { port, .. }] = first[..] else {
        panic!()
    };
    r.p(
        L,
        P0Packet::PortReply {
            seq: 2,
            port,
            ok: true,
        },
    );
    assert_eq!(
        r.p(
            L,
            P0Packet::PortReply {
                seq: 2,
                port,
                ok: true
            }
        ),
        [P0Packet::Ack { seq: 2 }]
    );
    assert_eq!(r.p(L, P0Packet::PortRequest { seq: 1, port: 0 }), first);
    assert!(r.n.poll_new_session().is_some());
    assert_eq!(r.n.poll_new_session(), None, "no second session");
    assert_eq!(r.ports.bound.len(), 1);
}

#[test]
fn c09_allocation_without_reply_is_released_after_5s() {
    let mut r = P0Rig::new(Config::default());
    r.p(
        L,
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
    );
    let deadline = r.n.poll_timeout().unwrap();
    assert_eq!(deadline - r.now, Duration::from_secs(5));
    r.n.handle_timeout(deadline - Duration::from_millis(1), &mut r.ports);
    assert!(r.ports.released.is_empty());
    r.now = deadline;
    r.n.handle_timeout(deadline, &mut r.ports);
    assert_eq!(r.ports.released, [40000]);
    assert_eq!(r.n.pending_allocations(), 0);
    assert!(
        r.p(
            L,
            P0Packet::PortReply {
                seq: 2,
                port: 40000,
                ok: true
            }
        )
        .is_empty()
    );
}

#[test]
fn c10_session_cap_and_empty_library_refuse_with_port_0() {
    let config = Config {
        max_sessions: 1,
        ..Config::default()
    };
    let mut r = P0Rig::new(config);
    r.p(
        L,
        P0Packet::PortRequest {
            seq: 1,
            port: 40000,
        },
    );
    let refusal = r.send(M, &hex_bytes("01 0000000000000001 9c40"));
    assert_eq!(refusal, [P0Packet::PortAllocated { seq: 1, port: 0 }]);
    assert_eq!(
        refusal[0].encode().as_ref(),
        hex_bytes("02 00 00 00 00 00 00 00 01 00 00")
    );
    // A copy of a refused request is refused again; no state was kept.
    assert_eq!(
        r.p(
            M,
            P0Packet::PortRequest {
                seq: 1,
                port: 40000
            }
        ),
        refusal
    );
    let mut r = P0Rig::new(Config::default());
    r.has_movies = false;
    assert_eq!(
        r.p(
            L,
            P0Packet::PortRequest {
                seq: 1,
                port: 40000
            }
        ),
        [P0Packet::PortAllocated { seq: 1, port: 0 }]
    );
    // Pending allocations per address are capped too.
    let mut r = P0Rig::new(Config {
        max_pending_per_ip: 1,
        ..Config::default()
    });
    r.p(L, P0Packet::PortRequest { seq: 1, port: 0 });
    let out = r.p(
        "192.0.2.10:50001",
        P0Packet::PortRequest { seq: 1, port: 0 },
    );
    assert_eq!(out, [P0Packet::PortAllocated { seq: 1, port: 0 }]);
}

fn hex_bytes(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    d.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn c29_session_list_padded_paged_and_rate_limited() {
    let mut r = P0Rig::new(Config::default());
    r.sessions = (0..3u16)
        .map(|i| SessionEntry {
            port: 40003 - i,
            state: SessionState::Streaming,
            joinable: true,
            members: 2,
            movie_id: Some(1),
            movie_name: "sintel.ts".into(),
        })
        .collect();
    let out = r.p(L, P0Packet::SessionListRequest { seq: 1, start: 1 });
    let [
        P0Packet::SessionList {
            seq: 1,
            total: 3,
            start: 1,
            entries,
        },
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        entries.iter().map(|e| e.port).collect::<Vec<_>>(),
        [40002, 40003]
    );
    // Unpadded: discarded.
    assert!(
        r.send(L, &hex_bytes("10 00 00 00 00 00 00 00 01 00 00"))
            .is_empty()
    );
    // 10 per second per address, the rest discarded.
    let mut answered = 1;
    for seq in 2..20 {
        answered += r.p(L, P0Packet::SessionListRequest { seq, start: 0 }).len();
    }
    assert_eq!(answered, 10);
    assert!(r.n.discards.get(Discard::RateLimited) >= 9);
    assert_eq!(
        r.p(M, P0Packet::SessionListRequest { seq: 1, start: 0 })
            .len(),
        1,
        "other addresses unaffected"
    );
    r.now += Duration::from_secs(1);
    assert_eq!(
        r.p(L, P0Packet::SessionListRequest { seq: 30, start: 0 })
            .len(),
        1
    );
}

// ------------------------------------------------------------- registration

#[test]
fn c12_registrations_during_the_window_are_acked_copies_included() {
    let mut r = Rig::new(test_config(), movies());
    let out = r.register(M, 1, 20_000);
    assert_eq!(acks(&out, M), [1]);
    assert_eq!(
        acks(&r.register(M, 1, 20_000), M),
        [1],
        "copy answered again"
    );
    assert_eq!(r.s.members(), 1);
    assert_eq!(acks(&r.register(X, 7, 0), X), [7]);
    assert_eq!(r.s.members(), 2);
    // The leader hears about each, once.
    let joined = controls(&out, L);
    assert_eq!(joined.len(), 1);
    assert_eq!(
        (joined[0].op, joined[0].position, joined[0].member),
        (ControlOp::MemberJoined, 1, Some(a(M)))
    );
}

#[test]
fn c13_movies_available_pages_list_every_movie_once_and_are_retransmitted_5_times() {
    let many: Vec<Movie> = (0..40)
        .map(|i| {
            Movie::in_memory(
                format!("{i:03}-{}", "n".repeat(100)),
                Bytes::from_static(b"x"),
            )
        })
        .collect();
    let mut r = Rig::new(
        Config {
            registration_window: Duration::from_millis(30_000),
            ..test_config()
        },
        many,
    );
    let out = r.register(L, 3, 0);
    assert_eq!(acks(&out, L), [3]);
    let pages: Vec<(u64, u8, u8, Vec<MovieListing>)> = to(&out, L)
        .into_iter()
        .filter_map(|p| match p {
            PsPacket::MoviesAvailable {
                seq,
                page,
                pages,
                entries,
            } => Some((*seq, *page, *pages, entries.clone())),
            _ => None,
        })
        .collect();
    assert!(pages.len() > 1);
    let ids: Vec<u16> = pages
        .iter()
        .flat_map(|p| p.3.iter().map(|e| e.id))
        .collect();
    assert_eq!(ids, (0..40).collect::<Vec<u16>>());
    assert!(
        pages
            .iter()
            .enumerate()
            .all(|(i, p)| usize::from(p.1) == i && usize::from(p.2) == pages.len())
    );
    // ACK the first page only: the others come 4 more times, 1 s apart.
    r.ack(L, pages[0].0);
    let mut resent = 0;
    for _ in 0..10 {
        let out = r.advance(Duration::from_secs(1));
        resent += to(&out, L)
            .iter()
            .filter(|p| matches!(p, PsPacket::MoviesAvailable { .. }))
            .count();
        r.register(L, 100 + resent as u64, 0);
    }
    assert_eq!(resent, (pages.len() - 1) * 4);
}

#[test]
fn c14_movie_choice_rules() {
    let mut r = Rig::new(test_config(), movies());
    r.register(L, 3, 0);
    r.register(M, 1, 0);
    // Not from the leader: no ACK.
    assert!(
        r.raw(M, &hex_bytes("04 00 00 00 00 00 00 00 07 00 01"))
            .is_empty()
    );
    assert_eq!(r.s.discards.get(Discard::Unauthorised), 1);
    // Not offered: no ACK.
    assert!(
        r.raw(L, &hex_bytes("04 00 00 00 00 00 00 00 07 00 07"))
            .is_empty()
    );
    assert_eq!(r.s.discards.get(Discard::BadField), 1);
    // Valid, then replaced by a later one; an older one is ACKed, not applied.
    assert_eq!(
        acks(
            &r.send(
                L,
                PsPacket::MovieChoice {
                    seq: 5,
                    movie_id: 0
                }
            ),
            L
        ),
        [5]
    );
    assert_eq!(
        acks(
            &r.send(
                L,
                PsPacket::MovieChoice {
                    seq: 8,
                    movie_id: 1
                }
            ),
            L
        ),
        [8]
    );
    assert_eq!(
        acks(
            &r.send(
                L,
                PsPacket::MovieChoice {
                    seq: 6,
                    movie_id: 0
                }
            ),
            L
        ),
        [6]
    );
    assert_eq!(r.s.summary().movie_name, "sintel.ts");
    let out = r.advance(Duration::from_secs(3));
    assert_eq!(stream_starts(&out, L)[0].movie_id, 1);
    // After the window: discarded without an ACK.
    assert!(
        acks(
            &r.send(
                L,
                PsPacket::MovieChoice {
                    seq: 9,
                    movie_id: 0
                }
            ),
            L
        )
        .is_empty()
    );
    assert_eq!(r.s.discards.get(Discard::Unexpected), 1);
}

#[test]
fn c15_interval_rule() {
    let (min, max) = (1_000, 1_000_000);
    assert_eq!(final_interval(10_000, [], min, max), 10_000);
    assert_eq!(final_interval(10_000, [0, 0], min, max), 10_000);
    assert_eq!(final_interval(10_000, [20_000, 0, 5_000], min, max), 20_000);
    assert_eq!(final_interval(10_000, [5_000], min, max), 10_000);
    assert_eq!(final_interval(10_000, [2_000_000], min, max), 1_000_000);
    assert_eq!(final_interval(500, [0], min, max), 1_000);
    assert_eq!(final_interval(500, [700], min, max), 1_000);
    assert_eq!(final_interval(0, [], min, max), 1_000);
    assert_eq!(final_interval(u32::MAX, [u32::MAX], min, max), 1_000_000);
    // Through a session: a refresh during the window replaces the request.
    let mut r = Rig::new(test_config(), movies());
    r.register(L, 3, 0);
    r.send(
        L,
        PsPacket::MovieChoice {
            seq: 4,
            movie_id: 0,
        },
    );
    r.register(M, 1, 90_000);
    r.register(M, 2, 30_000);
    r.register(M, 1, 500_000); // a late copy of the older request
    let out = r.advance(Duration::from_secs(3));
    assert_eq!(stream_starts(&out, M)[0].interval_us, 30_000);
}

/// The interval in M's Stream Start, for a session whose leader asks for
/// `leader_us`, M for `member_us`, and movie 0 is chosen.
fn interval_through_a_session(config: Config, movie: Movie, leader_us: u32, member_us: u32) -> u32 {
    let window = config.registration_window;
    let mut r = Rig::new(config, vec![movie]);
    r.register(L, 3, leader_us);
    r.send(
        L,
        PsPacket::MovieChoice {
            seq: 4,
            movie_id: 0,
        },
    );
    r.register(M, 1, member_us);
    let out = r.advance(window);
    let starts = stream_starts(&out, M);
    assert_eq!(starts.len(), 1, "{out:?}");
    assert_eq!(stream_starts(&out, L)[0].interval_us, starts[0].interval_us);
    starts[0].interval_us
}

#[test]
fn c15_thresholds_from_the_config_apply_through_a_session() {
    let config = Config {
        default_interval_us: 20_000,
        min_interval_us: 30_000,
        max_interval_us: 50_000,
        ..test_config()
    };
    let movie = || movies()[1].clone();
    let cases = [
        ((0, 0), 30_000, "D below MIN is raised"),
        ((0, 40_000), 40_000, "a request between the thresholds wins"),
        ((45_000, 35_000), 45_000, "the largest request wins"),
        ((0, 80_000), 50_000, "a request above MAX is capped"),
        ((29_000, 1), 30_000, "requests below MIN are raised"),
    ];
    for ((leader, member), want, why) in cases {
        assert_eq!(
            interval_through_a_session(config.clone(), movie(), leader, member),
            want,
            "{why}"
        );
    }
}

#[test]
fn c15_interval_from_bitrate_derives_d_from_the_movie() {
    // The demo movie: 490 282 bytes over 10 s (its mvhd), 392 225 bit/s, so
    // D = 1316 × 8 × 10^6 / 392 225 = 26 841 µs.
    let demo = Movie::in_memory(
        "switchyard-demo-movie.mp4",
        Bytes::from_static(include_bytes!("../../../../demo/demo-movie.mp4")),
    );
    let derived = Config {
        interval_from_bitrate: true,
        ..test_config()
    };
    assert_eq!(
        interval_through_a_session(derived.clone(), demo.clone(), 0, 0),
        26_841
    );
    // D then takes part in the rule like the configured default would.
    assert_eq!(
        interval_through_a_session(derived.clone(), demo.clone(), 0, 30_000),
        30_000
    );
    assert_eq!(
        interval_through_a_session(derived.clone(), demo.clone(), 20_000, 0),
        26_841
    );
    let narrow = Config {
        max_interval_us: 25_000,
        ..derived.clone()
    };
    assert_eq!(
        interval_through_a_session(narrow, demo.clone(), 0, 0),
        25_000
    );
    // Off (the default): the configured D, 20 000 µs here.
    assert_eq!(
        interval_through_a_session(test_config(), demo, 0, 0),
        20_000
    );
    // A movie whose bit rate cannot be read keeps the configured D.
    assert_eq!(
        interval_through_a_session(derived, movies()[1].clone(), 0, 0),
        20_000
    );
}

#[test]
fn c16_window_without_choice_ends_no_movie_and_leader_leaving_ends_leader_left() {
    let mut r = Rig::new(test_config(), movies());
    r.register(L, 3, 0);
    r.register(M, 1, 0);
    let out = r.advance(Duration::from_secs(3));
    assert_eq!(stream_ends(&out, L)[0].2, EndReason::NoMovie);
    assert_eq!(stream_ends(&out, M)[0].2, EndReason::NoMovie);
    assert_eq!(r.s.state(), SessionState::Ending);
    let (seq_l, seq_m) = (stream_ends(&out, L)[0].0, stream_ends(&out, M)[0].0);
    assert_eq!(seq_l, seq_m, "one Seq for all");
    r.ack(L, seq_l);
    r.ack(M, seq_m);
    assert!(r.s.is_closed());

    let mut r = Rig::new(test_config(), movies());
    r.register(L, 3, 0);
    r.register(M, 1, 0);
    let out = r.send(
        L,
        PsPacket::Control(Control::request(5, ControlOp::Leave, 0)),
    );
    assert_eq!(acks(&out, L), [5]);
    assert_eq!(stream_ends(&out, M)[0].2, EndReason::LeaderLeft);

    // A leader that never registers still gets the abort.
    let mut r = Rig::new(test_config(), movies());
    let out = r.advance(Duration::from_secs(3));
    assert_eq!(stream_ends(&out, L)[0].2, EndReason::NoMovie);

    // Movie chosen, nobody registered: NO_MEMBERS to the leader.
    let mut r = Rig::new(test_config(), movies());
    assert_eq!(
        acks(
            &r.send(
                L,
                PsPacket::MovieChoice {
                    seq: 3,
                    movie_id: 0
                }
            ),
            L
        ),
        [3]
    );
    let out = r.advance(Duration::from_secs(3));
    assert_eq!(stream_ends(&out, L)[0].2, EndReason::NoMembers);
}

// ------------------------------------------------------------- streaming

#[test]
fn c17_stream_start_per_member_and_no_data_before_its_ack() {
    let mut r = Rig::new(test_config(), movies());
    r.register(L, 3, 0);
    r.send(
        L,
        PsPacket::MovieChoice {
            seq: 4,
            movie_id: 1,
        },
    );
    r.register(M, 1, 0);
    r.register(X, 1, 0);
    let out = r.advance(Duration::from_secs(3));
    let (sl, sm, sx) = (
        stream_starts(&out, L),
        stream_starts(&out, M),
        stream_starts(&out, X),
    );
    assert_eq!(
        (sl[0].start_seq, sm[0].start_seq, sx[0].start_seq),
        (1, 1, 1)
    );
    assert!(
        sl[0].seq != sm[0].seq && sm[0].seq != sx[0].seq,
        "each member has its own Seq"
    );
    assert_eq!(
        (sl[0].total_chunks, sl[0].chunk_size, sl[0].paused),
        (11, 1316, false)
    );
    // L and M confirm; X never does. Nothing flows before everyone has
    // confirmed or been removed.
    r.ack(L, sl[0].seq);
    let out = r.ack(M, sm[0].seq);
    assert!(data(&out, L).is_empty());
    let out = r.advance(Duration::from_millis(999));
    assert_eq!(
        stream_starts(&out, X).len(),
        4,
        "retransmitted every 200 ms"
    );
    assert!(data(&out, L).is_empty() && data(&out, X).is_empty());
    let out = r.advance(Duration::from_millis(1));
    assert_eq!(stream_ends(&out, X)[0].2, EndReason::Expired);
    let left: Vec<Control> = controls(&out, L)
        .into_iter()
        .filter(|c| c.op == ControlOp::MemberLeft)
        .collect();
    assert_eq!(
        (left[0].reason, left[0].member),
        (LEFT_REASON_UNCONFIRMED, Some(a(X)))
    );
    assert_eq!(
        data(&out, L).first().map(|d| d.0),
        Some(1),
        "stream begins once X is removed"
    );
    let out = r.advance(Duration::from_secs(1));
    assert!(
        data(&out, X).is_empty(),
        "no data ever reaches the unconfirmed member"
    );
}

#[test]
fn c18_c20_every_chunk_once_in_order_then_stream_end_complete() {
    let mut r = streaming(test_config());
    let out = r.advance(Duration::from_millis(20 * 11 - 1));
    let got = data(&out, M);
    assert_eq!(
        got.iter().map(|d| d.0).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<u64>>()
    );
    assert_eq!(data(&out, L).len(), 11);
    let joined: Vec<u8> = got.iter().flat_map(|d| d.1.to_vec()).collect();
    assert_eq!(
        joined,
        movies()[1]
            .open()
            .unwrap()
            .read(0, 10 * 1316 + 676)
            .unwrap()
            .to_vec()
    );
    assert!(
        stream_ends(&out, M).is_empty(),
        "Stream End waits one interval"
    );
    let out = r.advance(Duration::from_millis(1));
    let end = stream_ends(&out, M);
    assert_eq!((end[0].1, end[0].2), (11, EndReason::Complete));
    let seq = end[0].0;
    r.ack(L, seq);
    // M never answers: 4 retransmissions 200 ms apart, then the session closes.
    let out = r.advance(Duration::from_millis(1000));
    assert_eq!(stream_ends(&out, M).len(), 4);
    assert!(stream_ends(&out, M).iter().all(|e| e.0 == seq));
    assert!(r.s.is_closed());
    assert!(r.s.poll_timeout().is_none());
}

#[test]
fn c19_pacing_follows_t0_plus_k_interval_without_drift() {
    let movies = vec![
        movies()[0].clone(),
        Movie::in_memory("sintel.ts", movie_bytes(3_000 * 1316, 2)),
    ];
    let mut r = streaming_with(
        Config {
            member_timeout: Duration::from_millis(3_600_000),
            ..test_config()
        },
        movies,
    );
    let t0 = r.now;
    // Wake the session late by a varying amount each time, as a busy
    // runtime would, with a 15 ms stall now and then: every chunk still
    // goes out at or after its due time, those held up by a stall go out
    // together as soon as it ends, and the error never accumulates.
    let mut sent_at = Vec::new();
    for i in 0..100_000u64 {
        let Some(due) = r.s.poll_timeout() else { break };
        let late = if i % 500 == 499 {
            15_000
        } else {
            i * 731 % 3_000
        };
        r.now = due + Duration::from_micros(late);
        r.s.handle_timeout(r.now);
        for (who, p) in r.drain() {
            if let (true, PsPacket::MovieData { seq, .. }) = (who == a(M), p) {
                sent_at.push((seq, r.now));
            }
        }
        if sent_at.last().is_some_and(|s| s.0 == 3_000) {
            break;
        }
    }
    assert_eq!(
        sent_at.len(),
        2_999,
        "chunks 2 to 3000 (1 went out at the start)"
    );
    for &(k, at) in &sent_at {
        let due = t0 + Duration::from_millis(20) * (k as u32 - 1);
        assert!(at >= due, "chunk {k} early");
        assert!(
            at - due <= Duration::from_millis(15),
            "chunk {k} at +{:?}",
            at - due
        );
    }
    let (k, at) = *sent_at.last().unwrap();
    let due = t0 + Duration::from_millis(20) * (k as u32 - 1);
    assert!(
        at - due < Duration::from_millis(3),
        "drift: the last chunk is {:?} late",
        at - due
    );
    let pacing = r.s.pacing();
    assert_eq!(pacing.chunks, 3_000);
    assert_eq!(pacing.max_late, Duration::from_millis(15));
    assert!(pacing.mean_late() < Duration::from_millis(2));
}

#[test]
fn c19_after_a_pause_chunks_are_due_at_t0_plus_k_interval_plus_the_pause() {
    let movies = vec![
        movies()[0].clone(),
        Movie::in_memory("sintel.ts", movie_bytes(1_000 * 1316, 2)),
    ];
    let mut r = streaming_with(
        Config {
            member_timeout: Duration::from_millis(3_600_000),
            ..test_config()
        },
        movies,
    );
    let t0 = r.now;
    let interval = Duration::from_millis(20);
    let due = |k: u64, paused: Duration| t0 + interval * (k as u32 - 1) + paused;
    // Wakes the session a little late each time, as a busy runtime would,
    // and notes when each chunk went out to M.
    let mut sent_at: Vec<(u64, Instant)> = vec![(1, t0)];
    let mut wake = 0u64;
    let mut run_until = |r: &mut Rig, until: Instant, sent_at: &mut Vec<(u64, Instant)>| {
        for _ in 0..100_000 {
            let Some(next) = r.s.poll_timeout() else {
                break;
            };
            wake += 1;
            let at = next + Duration::from_micros(wake * 731 % 2_000);
            if at > until {
                break;
            }
            r.now = at;
            r.s.handle_timeout(at);
            for (who, p) in r.drain() {
                if let (true, PsPacket::MovieData { seq, .. }) = (who == a(M), p) {
                    sent_at.push((seq, at));
                }
            }
        }
        r.now = until;
    };
    // PAUSE arrives 1 ms before chunk 301 is due, so the stream stands
    // still exactly from PAUSE to RESUME.
    run_until(
        &mut r,
        due(301, Duration::ZERO) - Duration::from_millis(1),
        &mut sent_at,
    );
    let pause_at = r.now;
    r.send(
        L,
        PsPacket::Control(Control::request(65, ControlOp::Pause, 0)),
    );
    assert_eq!(r.s.position(), 301);
    let paused = Duration::from_millis(3_717);
    let mut during = Vec::new();
    run_until(&mut r, pause_at + paused, &mut during);
    assert!(during.is_empty(), "nothing while paused: {during:?}");
    let out = r.send(
        L,
        PsPacket::Control(Control::request(66, ControlOp::Resume, 0)),
    );
    sent_at.extend(data(&out, M).iter().map(|d| (d.0, r.now)));
    let end = r.now + Duration::from_secs(20);
    run_until(&mut r, end, &mut sent_at);
    let seqs: Vec<u64> = sent_at.iter().map(|s| s.0).collect();
    assert_eq!(
        seqs,
        (1..=1_000).collect::<Vec<u64>>(),
        "every chunk once, in order"
    );
    for &(k, at) in &sent_at {
        let p = if k < 301 { Duration::ZERO } else { paused };
        let want = due(k, p);
        let error = if at >= want { at - want } else { want - at };
        assert!(
            error <= Duration::from_millis(3),
            "chunk {k} sent {error:?} away from T0 + (k − 1) × interval + P"
        );
    }
    // No drift: the last chunk is as close to its time as the first.
    let (k, at) = *sent_at.last().unwrap();
    assert!(at - due(k, paused) < Duration::from_millis(3));
}

#[test]
fn c22_leave_is_acked_and_the_leader_told_left() {
    let mut r = streaming(test_config());
    r.advance(Duration::from_millis(50));
    let position = r.s.position();
    let out = r.raw(
        M,
        &hex_bytes(
            "80 00000000000000 5a 01 00 0000000000000000 00000000000000000000000000000000 0000",
        ),
    );
    assert_eq!(acks(&out, M), [0x5a]);
    let left = controls(&out, L);
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].op, left[0].reason, left[0].position, left[0].member),
        (
            ControlOp::MemberLeft,
            LEFT_REASON_LEFT,
            position,
            Some(a(M))
        )
    );
    assert_eq!(r.s.members(), 1);
    // A copy of the LEAVE is ACKed again; a delayed refresh does not bring M back.
    assert_eq!(
        acks(
            &r.send(
                M,
                PsPacket::Control(Control::request(0x5a, ControlOp::Leave, 0))
            ),
            M
        ),
        [0x5a]
    );
    assert!(r.register(M, 0x59, 0).is_empty());
    assert_eq!(r.s.members(), 1);
    let out = r.advance(Duration::from_millis(40));
    assert!(data(&out, M).is_empty());
}

#[test]
fn c23_silent_member_is_removed_after_5s_and_the_leader_told_timeout() {
    let movies = vec![
        movies()[0].clone(),
        Movie::in_memory("sintel.ts", movie_bytes(1000 * 1316, 2)),
    ];
    let mut r = streaming_with(test_config(), movies);
    // L keeps refreshing; M says nothing more.
    let mut seq = 10;
    let mut out = Vec::new();
    for _ in 0..6 {
        out.extend(r.advance(Duration::from_secs(1)));
        seq += 1;
        r.register(L, seq, 0);
    }
    let left: Vec<Control> = controls(&out, L)
        .into_iter()
        .filter(|c| c.op == ControlOp::MemberLeft)
        .collect();
    assert_eq!(
        (left[0].reason, left[0].member),
        (LEFT_REASON_TIMEOUT, Some(a(M)))
    );
    assert_eq!(
        stream_ends(&out, M).iter().map(|e| e.2).collect::<Vec<_>>(),
        [EndReason::Expired]
    );
    assert_eq!(r.s.members(), 1);
}

#[test]
fn c23_silent_member_is_present_at_4_9_s_and_gone_at_5_s() {
    let movies = vec![
        movies()[0].clone(),
        Movie::in_memory("sintel.ts", movie_bytes(1000 * 1316, 2)),
    ];
    let mut r = streaming_with(test_config(), movies);
    r.advance(Duration::from_millis(100));
    // M's last packet: a refresh, now. L goes on refreshing every second.
    assert_eq!(acks(&r.register(M, 10, 0), M), [10]);
    let mut out = Vec::new();
    for (i, step) in [1_000, 1_000, 1_000, 1_000, 900].into_iter().enumerate() {
        out.extend(r.advance(Duration::from_millis(step)));
        r.register(L, 20 + i as u64, 0);
    }
    assert_eq!(
        r.s.members(),
        2,
        "still a member 4.9 s after its last packet"
    );
    assert!(
        controls(&out, L)
            .iter()
            .all(|c| c.op != ControlOp::MemberLeft)
    );
    assert!(stream_ends(&out, M).is_empty());
    assert!(!data(&out, M).is_empty(), "and still sent Movie Data");
    let out = r.advance(Duration::from_millis(100));
    assert_eq!(r.s.members(), 1, "gone 5 s after its last packet");
    let left: Vec<Control> = controls(&out, L)
        .into_iter()
        .filter(|c| c.op == ControlOp::MemberLeft)
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].reason, left[0].member),
        (LEFT_REASON_TIMEOUT, Some(a(M)))
    );
    assert_eq!(
        stream_ends(&out, M).iter().map(|e| e.2).collect::<Vec<_>>(),
        [EndReason::Expired]
    );
    let out = r.advance(Duration::from_millis(100));
    assert!(data(&out, M).is_empty(), "no Movie Data after removal");
}

#[test]
fn c24_late_joiner_starts_at_position_plus_lead() {
    let mut r = streaming_with(
        Config {
            member_timeout: Duration::from_millis(3_600_000),
            ..test_config()
        },
        long_movies(),
    );
    r.advance(Duration::from_millis(20 * 30 + 5));
    let position = r.s.position();
    assert_eq!(position, 32);
    let out = r.register(J, 1, 999_999);
    assert_eq!(acks(&out, J), [1]);
    let start = &stream_starts(&out, J)[0];
    assert_eq!(start.start_seq, position + 50, "⌈1 s / 20 ms⌉ = 50");
    assert_eq!(
        start.interval_us, 20_000,
        "a late joiner's interval is ignored"
    );
    let joined = controls(&out, L);
    assert_eq!(
        (joined[0].op, joined[0].position, joined[0].member),
        (ControlOp::MemberJoined, position, Some(a(J)))
    );
    r.ack(J, start.seq);
    let out = r.advance(Duration::from_secs(5));
    let got: Vec<u64> = data(&out, J).iter().map(|d| d.0).collect();
    assert_eq!(got, (position + 50..=200).collect::<Vec<u64>>());
}

#[test]
fn c24_late_joiner_that_confirms_too_late_is_removed() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    r.s.p.timers.join_lead = Duration::from_millis(40);
    r.advance(Duration::from_millis(5));
    let out = r.register(J, 1, 0);
    let start = stream_starts(&out, J)[0].clone();
    let out = r.advance(Duration::from_millis(60));
    assert_eq!(stream_ends(&out, J)[0].2, EndReason::Expired);
    assert!(data(&out, J).is_empty());
    assert!(r.ack(J, start.seq).is_empty());
}

#[test]
fn c25_pause_and_resume_by_the_leader_only() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    r.advance(Duration::from_millis(45));
    let position = r.s.position();
    assert_eq!(position, 4);
    // From M: discarded, nothing changes.
    assert!(
        r.send(
            M,
            PsPacket::Control(Control::request(9, ControlOp::Pause, 0))
        )
        .is_empty()
    );
    assert_eq!(r.s.state(), SessionState::Streaming);
    let out = r.send(
        L,
        PsPacket::Control(Control::request(65, ControlOp::Pause, 0)),
    );
    assert_eq!(acks(&out, L), [65]);
    for who in [L, M] {
        let c = controls(&out, who);
        assert_eq!((c[0].op, c[0].position), (ControlOp::Paused, position));
    }
    let out = r.advance(Duration::from_secs(10));
    assert!(data(&out, M).is_empty());
    // A delayed older PAUSE copy or second PAUSE changes nothing.
    assert_eq!(
        acks(
            &r.send(
                L,
                PsPacket::Control(Control::request(66, ControlOp::Pause, 0))
            ),
            L
        ),
        [66]
    );
    let out = r.send(
        L,
        PsPacket::Control(Control::request(77, ControlOp::Resume, 0)),
    );
    assert_eq!(acks(&out, L), [77]);
    let c = controls(&out, M);
    assert_eq!(
        (c[0].op, c[0].reason, c[0].position),
        (ControlOp::Resumed, RESUMED_BY_LEADER, position)
    );
    assert_eq!(
        data(&out, M).iter().map(|d| d.0).collect::<Vec<_>>(),
        [position],
        "next chunk at once"
    );
    let out = r.advance(Duration::from_millis(20 * 7));
    assert_eq!(
        data(&out, M).iter().map(|d| d.0).collect::<Vec<_>>(),
        (position + 1..=11).collect::<Vec<_>>()
    );
}

#[test]
fn c25_pause_and_resume_on_the_wire_from_a_member_change_nothing() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    r.advance(Duration::from_millis(45));
    // PAUSE (Op 2) and RESUME (Op 3) as M would put them on the wire, and
    // the same from another port of the leader's host.
    let pause = hex_bytes(
        "80 0000000000000041 02 00 0000000000000000 00000000000000000000000000000000 0000",
    );
    let resume = hex_bytes(
        "80 000000000000004d 03 00 0000000000000000 00000000000000000000000000000000 0000",
    );
    let leaders_host = "192.0.2.10:50001";
    let unauthorised = r.s.discards.get(Discard::Unauthorised);
    let mut tried = 0;
    for from in [M, leaders_host] {
        for bytes in [&pause, &resume] {
            let position = r.s.position();
            assert!(r.raw(from, bytes).is_empty(), "no ACK, no notice");
            tried += 1;
            assert_eq!(
                r.s.discards.get(Discard::Unauthorised),
                unauthorised + tried
            );
            assert_eq!(r.s.state(), SessionState::Streaming);
            assert_eq!(r.s.position(), position);
            let out = r.advance(Duration::from_millis(20));
            assert_eq!(data(&out, M).len(), 1, "the stream goes on");
            assert!(controls(&out, M).is_empty());
        }
    }
    // While paused by the leader, a member's RESUME does not resume.
    let out = r.send(
        L,
        PsPacket::Control(Control::request(0x50, ControlOp::Pause, 0)),
    );
    assert_eq!(acks(&out, L), [0x50]);
    let position = r.s.position();
    let resume = hex_bytes(
        "80 0000000000000060 03 00 0000000000000000 00000000000000000000000000000000 0000",
    );
    assert!(r.raw(M, &resume).is_empty());
    assert_eq!(
        r.s.discards.get(Discard::Unauthorised),
        unauthorised + tried + 1
    );
    let out = r.advance(Duration::from_millis(500));
    assert_eq!(r.s.state(), SessionState::Paused);
    assert_eq!(r.s.position(), position);
    assert!(data(&out, M).is_empty());
    assert!(controls(&out, M).iter().all(|c| c.op != ControlOp::Resumed));
}

#[test]
fn c26_pause_limit_and_leader_leaving_resume_the_stream() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        pause_max: Duration::from_millis(2_000),
        ..test_config()
    });
    r.send(
        L,
        PsPacket::Control(Control::request(65, ControlOp::Pause, 0)),
    );
    let out = r.advance(Duration::from_millis(2_001));
    let resumed: Vec<Control> = controls(&out, M)
        .into_iter()
        .filter(|c| c.op == ControlOp::Resumed)
        .collect();
    assert_eq!(resumed[0].reason, RESUMED_PAUSE_LIMIT);

    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    r.send(
        L,
        PsPacket::Control(Control::request(65, ControlOp::Pause, 0)),
    );
    let out = r.send(
        L,
        PsPacket::Control(Control::request(66, ControlOp::Leave, 0)),
    );
    let resumed: Vec<Control> = controls(&out, M)
        .into_iter()
        .filter(|c| c.op == ControlOp::Resumed)
        .collect();
    assert_eq!(resumed[0].reason, RESUMED_LEADER_GONE);
    let out = r.advance(Duration::from_millis(100));
    assert!(
        !data(&out, M).is_empty(),
        "the stream goes on for the others"
    );
}

#[test]
fn c27_full_and_closed_refusals_leave_no_state() {
    let config = Config {
        max_members: 3,
        ..test_config()
    };
    let mut r = Rig::new(config.clone(), movies());
    r.register(L, 3, 0);
    r.register(M, 1, 0);
    r.register(J, 1, 0);
    let out = r.raw(X, &hex_bytes("01 00 00 00 00 00 00 00 01 00 00 00 00"));
    assert_eq!(out.len(), 1, "once");
    assert_eq!(stream_ends(&out, X)[0].1..=stream_ends(&out, X)[0].1, 0..=0);
    assert_eq!(stream_ends(&out, X)[0].2, EndReason::Full);
    assert_eq!(r.s.members(), 3);
    assert_eq!(
        stream_ends(&r.register(X, 1, 0), X)[0].2,
        EndReason::Full,
        "a copy is refused again"
    );
    // Its ACK of the refusal is ignored.
    assert!(r.ack(X, 1).is_empty());

    let mut r = streaming(Config {
        late_join: false,
        ..test_config()
    });
    let out = r.register(X, 1, 0);
    assert_eq!(stream_ends(&out, X)[0].2, EndReason::Closed);
    assert_eq!(r.s.members(), 2);
    // Too close to the end: 11 chunks, lead 50.
    let mut r = streaming(test_config());
    assert_eq!(stream_ends(&r.register(X, 1, 0), X)[0].2, EndReason::Closed);
    assert!(!r.s.summary().joinable);
}

#[test]
fn c32_discarded_datagrams_change_nothing_and_get_no_reply() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    let before = r.advance(Duration::from_millis(30));
    assert!(!before.is_empty());
    let cases: Vec<(&str, Vec<u8>, Discard)> = vec![
        (
            M,
            hex_bytes("04 00 00 00 00 00 00 00 07 00 01"),
            Discard::Unauthorised,
        ),
        (
            L,
            hex_bytes("04 00 00 00 00 00 00 00 07 00 07"),
            Discard::BadField,
        ),
        (
            M,
            PsPacket::Control(Control::request(99, ControlOp::Pause, 0))
                .encode()
                .to_vec(),
            Discard::Unauthorised,
        ),
        (
            M,
            hex_bytes("40 1a2b3c4d5e7240aa 0000000000009ba0 00"),
            Discard::UnknownType,
        ),
        (
            M,
            hex_bytes("11 00 00 00 00 00 00 00 01"),
            Discard::UnknownType,
        ),
        (M, hex_bytes("01 00 00 00"), Discard::Truncated),
        (M, vec![1u8; 1401], Discard::Oversized),
        (
            X,
            PsPacket::Control(Control::request(1, ControlOp::Leave, 0))
                .encode()
                .to_vec(),
            Discard::Unauthorised,
        ),
        (
            X,
            PsPacket::Ack { seq: 5 }.encode().to_vec(),
            Discard::Unauthorised,
        ),
        (
            M,
            PsPacket::Ack { seq: 5 }.encode().to_vec(),
            Discard::Unexpected,
        ),
    ];
    for (from, bytes, counter) in cases {
        let before = r.s.discards.get(counter);
        assert!(r.raw(from, &bytes).is_empty(), "{bytes:02x?} got a reply");
        assert_eq!(
            r.s.discards.get(counter),
            before + 1,
            "{bytes:02x?} not counted as {counter:?}"
        );
    }
    // Random datagrams from a stranger and from members: the stream goes on.
    let mut rng = StdRng::seed_from_u64(1);
    for i in 0..2000 {
        let len = rng.random_range(0..2000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let from = if i % 2 == 0 { X } else { M };
        for (to, p) in r.raw(from, &bytes) {
            assert!(
                matches!(
                    p,
                    PsPacket::Ack { .. } | PsPacket::StreamEnd { .. } | PsPacket::StreamStart(_)
                ),
                "{to} got {p:?}"
            );
        }
    }
    let out = r.advance(Duration::from_millis(200));
    let seqs: Vec<u64> = data(&out, L).iter().map(|d| d.0).collect();
    assert_eq!(seqs.last(), Some(&11));
}

#[test]
fn c32_p0_rows_of_14_10_get_no_reply_and_count_once() {
    let rows: Vec<(Vec<u8>, Discard)> = vec![
        (
            hex_bytes("04 00 00 00 00 00 00 00 02 9c 41"),
            Discard::BadLength,
        ),
        (
            hex_bytes("04 00 00 00 00 00 00 00 02 9c 41 02"),
            Discard::BadField,
        ),
        (
            hex_bytes("01 00 00 00 00 00 00 00 00 00 00"),
            Discard::BadField,
        ),
        (
            hex_bytes("02 00 00 00 00 00 00 00 05 9c 41"),
            Discard::UnknownType,
        ),
        (
            hex_bytes("11 00 00 00 00 00 00 00 01"),
            Discard::UnknownType,
        ),
        (hex_bytes("01 00 00 00"), Discard::Truncated),
        (vec![0x01; 1401], Discard::Oversized),
        (vec![0x10; 2000], Discard::Oversized),
        (
            hex_bytes("10 00 00 00 00 00 00 00 01 00 00"),
            Discard::BadLength,
        ),
    ];
    let mut r = P0Rig::new(Config::default());
    // A pending allocation, so that a Port OK for its port would be valid.
    assert_eq!(
        r.p(
            L,
            P0Packet::PortRequest {
                seq: 1,
                port: 40001
            }
        ),
        [P0Packet::PortAllocated {
            seq: 1,
            port: 40001
        }]
    );
    for (bytes, counter) in rows {
        let before: Vec<u64> = Discard::ALL.iter().map(|d| r.n.discards.get(*d)).collect();
        assert!(r.send(L, &bytes).is_empty(), "{bytes:02x?} got a reply");
        for (d, was) in Discard::ALL.iter().zip(before) {
            let want = if *d == counter { was + 1 } else { was };
            assert_eq!(
                r.n.discards.get(*d),
                want,
                "{bytes:02x?}: {d:?} (expected {counter:?} up by 1)"
            );
        }
    }
    // The pending allocation is untouched: the real Port OK still works.
    assert_eq!(
        r.p(
            L,
            P0Packet::PortReply {
                seq: 2,
                port: 40001,
                ok: true
            }
        ),
        [P0Packet::Ack { seq: 2 }]
    );
}

/// The counter §12.1 names for a datagram sent to Ps, when its size, header,
/// type or length alone decide; `None` when the fields would have to be
/// read.
fn ps_discard_by_shape(bytes: &[u8]) -> Option<Discard> {
    if bytes.len() > 1400 {
        return Some(Discard::Oversized);
    }
    if bytes.len() < 9 {
        return Some(Discard::Truncated);
    }
    let expected_len = match bytes[0] {
        0x01 => 13,
        0x04 => 11,
        0x08 => 9,
        0x80 => 37,
        _ => return Some(Discard::UnknownType),
    };
    (bytes.len() != expected_len).then_some(Discard::BadLength)
}

#[test]
fn c32_random_datagrams_on_ps_are_counted_by_the_rule_they_break() {
    let mut r = streaming(Config {
        member_timeout: Duration::from_millis(3_600_000),
        ..test_config()
    });
    r.advance(Duration::from_millis(30));
    let mut rng = StdRng::seed_from_u64(11);
    let mut expected = [0u64; 10];
    let before: Vec<u64> = Discard::ALL.iter().map(|d| r.s.discards.get(*d)).collect();
    let mut unshaped = 0;
    for i in 0..3_000 {
        // Every fifth one short, so that the header check is reached often.
        let len = rng.random_range(0..if i % 5 == 0 { 12 } else { 2000 });
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half of them carry a type Ps knows, so that the length check is
        // reached often.
        if i % 2 == 0
            && let Some(b) = bytes.first_mut()
        {
            *b = [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80][rng.random_range(0..8)];
        }
        let from = [X, M, L][i % 3];
        let total = r.s.discards.total();
        let out = r.raw(from, &bytes);
        match ps_discard_by_shape(&bytes) {
            Some(d) => {
                assert!(out.is_empty(), "{bytes:02x?} got {out:?}");
                expected[d as usize] += 1;
            }
            None => unshaped += 1,
        }
        if out.is_empty() {
            assert_eq!(r.s.discards.total(), total + 1, "{bytes:02x?} not counted");
        }
    }
    for (i, d) in Discard::ALL.iter().enumerate().take(4) {
        assert_eq!(
            r.s.discards.get(*d) - before[i],
            expected[i],
            "{d:?} miscounted"
        );
        assert!(expected[i] > 50, "{d:?} hardly exercised");
    }
    assert!(unshaped < 30, "{unshaped}");
    assert_eq!(r.s.members(), 2);
    let out = r.advance(Duration::from_millis(200));
    assert!(!data(&out, M).is_empty(), "the stream goes on");
}

#[test]
fn shutdown_sends_stream_end_shutdown_and_closes() {
    let mut r = streaming(test_config());
    r.s.shutdown(r.now);
    let out = r.drain();
    assert_eq!(stream_ends(&out, L)[0].2, EndReason::Shutdown);
    let out = r.advance(Duration::from_secs(1));
    assert!(stream_ends(&out, M).len() == 4 && r.s.is_closed());
}

#[test]
fn replay_window_follows_section_3_8() {
    let mut w = ReplayWindow::starting_at(100);
    assert_eq!(w.check(100), Replay::Duplicate);
    assert_eq!(w.check(99), Replay::New);
    w.mark(99);
    assert_eq!(w.check(99), Replay::Duplicate);
    assert_eq!(w.check(37), Replay::New);
    assert_eq!(w.check(36), Replay::Stale);
    w.mark(300);
    assert_eq!(w.check(100), Replay::Stale);
    assert_eq!(w.check(250), Replay::New);
    assert_eq!(w.check(300), Replay::Duplicate);
}

#[test]
fn c32_random_datagrams_on_p0_never_crash_and_are_counted() {
    let mut r = P0Rig::new(Config::default());
    let mut rng = StdRng::seed_from_u64(3);
    let mut answered = 0;
    for _ in 0..3000 {
        let len = rng.random_range(0..2000);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(b) = bytes.first_mut() {
            *b = [0x01u8, 0x04, 0x10, 0x02, 0x08, 0x20, 0x40, 0x80][rng.random_range(0..8)];
        }
        answered += r.send(X, &bytes).len();
    }
    // Only an 11-byte Port Request can be answered, by chance.
    assert!(answered < 10, "{answered}");
    assert!(r.n.discards.total() > 2900);
    for d in [
        Discard::Oversized,
        Discard::Truncated,
        Discard::UnknownType,
        Discard::BadLength,
    ] {
        assert!(r.n.discards.get(d) > 0, "{d:?} never counted");
    }
}
