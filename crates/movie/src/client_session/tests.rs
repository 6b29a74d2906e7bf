//! Clients and the server together on a virtual clock: the negotiator, the
//! sessions and any number of clients exchange datagrams through a
//! simulated network that can drop, duplicate and delay (reorder) each one.
//! The numbers in the test names are the checklist's.

use std::collections::HashMap;
use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::config::Config;
use crate::library::Movie;
use crate::server_session::{Negotiator, P0Context, PortAllocator, ServerSession, SessionParams};

const P0: &str = "127.0.0.1:31107";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    Duplicate,
    Delay(Duration),
}

type Rule = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> Fate>;

#[derive(Default)]
struct SimPorts {
    bound: std::collections::HashSet<u16>,
    busy: std::collections::HashSet<u16>,
}

impl PortAllocator for SimPorts {
    fn allocate(&mut self, requested: u16) -> Option<u16> {
        let free = |p: u16, s: &Self| {
            p >= 1024 && p != 31107 && !s.bound.contains(&p) && !s.busy.contains(&p)
        };
        let port = if free(requested, self) {
            requested
        } else {
            (40000..60000).find(|p| free(*p, self))?
        };
        self.bound.insert(port);
        Some(port)
    }
    fn release(&mut self, port: u16) {
        self.bound.remove(&port);
    }
}

struct Client {
    addr: SocketAddr,
    c: ClientSession,
    events: Vec<ClientEvent>,
    /// When each of `events` came out.
    event_at: Vec<Instant>,
    file: Vec<u8>,
}

struct World {
    now: Instant,
    config: Config,
    neg: Negotiator,
    ports: SimPorts,
    sessions: HashMap<u16, ServerSession>,
    movies: Vec<Movie>,
    clients: Vec<Client>,
    flights: Vec<(Instant, SocketAddr, SocketAddr, Bytes)>,
    rule: Rule,
    latency: Duration,
    seed: u64,
}

impl World {
    fn new(config: Config, movies: Vec<Movie>) -> World {
        World {
            now: Instant::now(),
            neg: Negotiator::new(&config),
            config,
            ports: SimPorts::default(),
            sessions: HashMap::new(),
            movies,
            clients: Vec::new(),
            flights: Vec::new(),
            rule: Box::new(|_, _, _| Fate::Deliver),
            latency: Duration::from_micros(300),
            seed: 1,
        }
    }

    fn add(&mut self, addr: &str, role: Role, interval_us: u32) -> usize {
        let params = ClientParams {
            role,
            interval_us,
            timers: ClientTimers::default(),
        };
        let c = ClientSession::new(params, self.now);
        self.clients.push(Client {
            addr: a(addr),
            c,
            events: Vec::new(),
            event_at: Vec::new(),
            file: Vec::new(),
        });
        self.pump();
        self.clients.len() - 1
    }

    fn leader(&mut self, addr: &str, movie: MovieSelector) -> usize {
        self.add(
            addr,
            Role::Leader {
                server: a(P0),
                requested_port: 40000,
                movie,
            },
            0,
        )
    }

    fn member(&mut self, addr: &str, port: u16) -> usize {
        self.add(
            addr,
            Role::Member {
                session: SocketAddr::new(a(P0).ip(), port),
            },
            0,
        )
    }

    fn emit(&mut self, from: SocketAddr, t: Transmit) {
        let fate = (self.rule)(from, t.to, &t.payload);
        let at = self.now + self.latency;
        match fate {
            Fate::Deliver => self.flights.push((at, from, t.to, t.payload)),
            Fate::Drop => {}
            Fate::Duplicate => {
                self.flights.push((at, from, t.to, t.payload.clone()));
                self.flights.push((at, from, t.to, t.payload));
            }
            Fate::Delay(d) => self.flights.push((at + d, from, t.to, t.payload)),
        }
    }

    /// Collects everything every party wants to send, and their events.
    fn pump(&mut self) {
        let server_ip: IpAddr = a(P0).ip();
        while let Some(t) = self.neg.poll_transmit() {
            self.emit(a(P0), t);
        }
        while let Some(n) = self.neg.poll_new_session() {
            self.seed += 1;
            let params = SessionParams::new(&self.config, &n, self.movies.clone(), self.seed);
            self.sessions
                .insert(n.port, ServerSession::new(params, self.now));
        }
        let ports: Vec<u16> = self.sessions.keys().copied().collect();
        for port in ports {
            let mut out = Vec::new();
            let s = self.sessions.get_mut(&port).unwrap();
            while let Some(t) = s.poll_transmit() {
                out.push(t);
            }
            let closed = s.is_closed();
            for t in out {
                self.emit(SocketAddr::new(server_ip, port), t);
            }
            if closed {
                self.sessions.remove(&port);
                self.neg.session_closed(port);
                self.ports.release(port);
            }
        }
        let now = self.now;
        for i in 0..self.clients.len() {
            let mut out = Vec::new();
            let from = self.clients[i].addr;
            let cl = &mut self.clients[i];
            while let Some(t) = cl.c.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = cl.c.poll_event() {
                if let ClientEvent::Data { offset, data, .. } = &e {
                    let end = *offset as usize + data.len();
                    if cl.file.len() < end {
                        cl.file.resize(end, 0);
                    }
                    cl.file[*offset as usize..end].copy_from_slice(data);
                }
                cl.events.push(e);
                cl.event_at.push(now);
            }
            for t in out {
                self.emit(from, t);
            }
        }
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let now = self.now;
        if to == a(P0) {
            let sessions: Vec<_> = self.sessions.values().map(|s| s.summary()).collect();
            let list = move || sessions.clone();
            let has_movies = !self.movies.is_empty();
            self.neg.handle_datagram(
                now,
                from,
                payload,
                P0Context {
                    ports: &mut self.ports,
                    has_movies,
                    sessions: &list,
                },
            );
        } else if let Some(s) = (to.ip() == a(P0).ip())
            .then(|| self.sessions.get_mut(&to.port()))
            .flatten()
        {
            s.handle_datagram(now, from, payload);
        } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
            c.c.handle_datagram(now, from, payload);
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let flights = self.flights.iter().map(|f| f.0);
        let sessions = self.sessions.values().filter_map(|s| s.poll_timeout());
        let clients = self.clients.iter().filter_map(|c| c.c.poll_timeout());
        flights
            .chain(sessions)
            .chain(clients)
            .chain(self.neg.poll_timeout())
            .min()
    }

    /// Runs the world for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..5_000_000 {
            let Some(t) = self.next_time().filter(|t| *t <= end) else {
                break;
            };
            self.now = self.now.max(t);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flights)
                .into_iter()
                .partition(|f| f.0 <= now);
            self.flights = later;
            for (_, from, to, payload) in due {
                self.deliver(from, to, &payload);
            }
            self.neg.handle_timeout(now, &mut self.ports);
            for s in self.sessions.values_mut() {
                s.handle_timeout(now);
            }
            for c in &mut self.clients {
                c.c.handle_timeout(now);
            }
            self.pump();
        }
        self.now = end;
    }

    fn run_until_done(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end && self.clients.iter().any(|c| c.c.outcome().is_none()) {
            self.run(Duration::from_millis(100));
        }
    }

    fn session_port(&self, leader: usize) -> u16 {
        self.clients[leader]
            .c
            .session_addr()
            .expect("leader has a session")
            .port()
    }
}

fn movie_bytes(len: usize, salt: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| ((i * 7 + i / 1316) as u8).wrapping_add(salt))
            .collect::<Vec<_>>(),
    )
}

fn library() -> Vec<Movie> {
    vec![
        Movie::in_memory("big_buck_bunny.ts", movie_bytes(40 * 1316 + 5, 1)),
        Movie::in_memory("sintel.ts", movie_bytes(300 * 1316 + 676, 2)),
    ]
}

fn long_library() -> Vec<Movie> {
    vec![
        Movie::in_memory("a.ts", movie_bytes(1316, 1)),
        Movie::in_memory("long.ts", movie_bytes(2000 * 1316, 3)),
    ]
}

fn fast_config() -> Config {
    Config {
        registration_window: Duration::from_millis(2_000),
        default_interval_us: 10_000,
        ..Config::default()
    }
}

fn outcome(w: &World, i: usize) -> Option<Outcome> {
    w.clients[i].c.outcome().cloned()
}

fn is_movie_data(b: &[u8]) -> Option<u64> {
    wire::peek_movie_data(b).map(|(seq, _)| seq)
}

#[test]
fn full_flow_two_members_receive_the_movie_byte_for_byte() {
    let mut w = World::new(fast_config(), library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Name("sintel.ts".into()));
    w.run(Duration::from_millis(100));
    let ready: Vec<&ClientEvent> = w.clients[l]
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::SessionReady(_)))
        .collect();
    // Checklist 28: the leader learns host:port to show to people.
    assert_eq!(ready, [&ClientEvent::SessionReady(a("127.0.0.1:40000"))]);
    let m = w.member("127.0.0.3:51000", 40000);
    w.run_until_done(Duration::from_secs(30));
    let expected = w.movies[1]
        .open()
        .unwrap()
        .read(0, w.movies[1].size as usize)
        .unwrap();
    for i in [l, m] {
        assert_eq!(outcome(&w, i), Some(Outcome::Complete));
        let st = w.clients[i].c.stats();
        assert_eq!(
            st.line(),
            "received=301 lost=0 out_of_order=0 duplicates=0 invalid=0"
        );
        assert!(w.clients[i].file == expected, "client {i} file differs");
    }
    let listed = w.clients[l].events.iter().find_map(|e| match e {
        ClientEvent::MoviesListed(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(listed.unwrap().len(), 2);
    assert!(w.clients[l].events.iter().any(|e| matches!(e, ClientEvent::MemberJoined { member: Some(x), .. } if *x == a("127.0.0.3:51000"))));
    assert!(w.sessions.is_empty(), "Ps closed after Stream End");
    assert_eq!(w.neg.live_sessions(), 0);
}

#[test]
fn c11_client_retransmits_1s_apart_gives_up_after_5_and_3_attempts() {
    let mut w = World::new(fast_config(), library());
    let sent = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = sent.clone();
    let start = w.now;
    w.rule = Box::new(move |_, to, b| {
        if to == a(P0) {
            log.borrow_mut().push(b.to_vec());
        }
        Fate::Drop
    });
    let l = w.leader("127.0.0.2:50000", MovieSelector::First);
    w.run_until_done(Duration::from_secs(60));
    assert_eq!(
        outcome(&w, l),
        Some(Outcome::Failed(ClientError::Handshake(3)))
    );
    let sent = sent.borrow();
    assert_eq!(sent.len(), 15, "5 transmissions × 3 attempts");
    let seqs: Vec<u8> = sent.iter().map(|b| b[8]).collect();
    assert_eq!(seqs, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
    // Finished 15 s after the start: 1 s between transmissions.
    assert!(w.now - start >= Duration::from_secs(15));

    // Refusals: three attempts with 1 s pauses, then an error.
    let mut w = World::new(fast_config(), vec![]);
    let l = w.leader("127.0.0.2:50000", MovieSelector::First);
    w.run(Duration::from_millis(1500));
    assert_eq!(outcome(&w, l), None, "still trying after the first refusal");
    w.run_until_done(Duration::from_secs(10));
    assert_eq!(
        outcome(&w, l),
        Some(Outcome::Failed(ClientError::Handshake(3)))
    );
}

/// What a client sent, decoded by where it went.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    P0(P0Packet),
    Ps(PsPacket),
}

/// Answers a scripted server gives to one datagram from the client.
type Script = Box<dyn FnMut(&Sent) -> Vec<(SocketAddr, Bytes)>>;

/// One client alone against a scripted server, on a virtual clock, with the
/// time of everything it sends and of every event.
struct Scripted {
    c: ClientSession,
    t0: Instant,
    now: Instant,
    sent: Vec<(Duration, Sent)>,
    events: Vec<(Duration, ClientEvent)>,
    server: Script,
}

const PS: &str = "127.0.0.1:40001";

impl Scripted {
    fn new(role: Role, server: Script) -> Scripted {
        let t0 = Instant::now();
        let params = ClientParams {
            role,
            interval_us: 0,
            timers: ClientTimers::default(),
        };
        let mut s = Scripted {
            c: ClientSession::new(params, t0),
            t0,
            now: t0,
            sent: Vec::new(),
            events: Vec::new(),
            server,
        };
        s.flush();
        s
    }

    fn leader(server: Script) -> Scripted {
        Scripted::new(
            Role::Leader {
                server: a(P0),
                requested_port: 40001,
                movie: MovieSelector::First,
            },
            server,
        )
    }

    /// Hands the client's datagrams to the script and its answers back,
    /// without delay, until both are quiet.
    fn flush(&mut self) {
        for _ in 0..1_000 {
            let mut replies = Vec::new();
            while let Some(t) = self.c.poll_transmit() {
                let sent = if t.to == a(P0) {
                    Sent::P0(wire::decode_p0(&t.payload, Direction::ToServer).unwrap())
                } else {
                    assert_eq!(t.to, a(PS));
                    Sent::Ps(wire::decode_ps(&t.payload, Direction::ToServer).unwrap())
                };
                replies.extend((self.server)(&sent));
                self.sent.push((self.now - self.t0, sent));
            }
            while let Some(e) = self.c.poll_event() {
                self.events.push((self.now - self.t0, e));
            }
            if replies.is_empty() {
                return;
            }
            for (from, payload) in replies {
                self.c.handle_datagram(self.now, from, &payload);
            }
        }
        panic!("the client and the script never went quiet");
    }

    /// Runs the clock to `at` (from the start), waking the client at each
    /// of its deadlines.
    fn run_to(&mut self, at: Duration) {
        let end = self.t0 + at;
        for _ in 0..100_000 {
            match self.c.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.c.handle_timeout(self.now);
                    self.flush();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Send times of the packets `pick` selects, with the Seq it returns.
    fn times(&self, pick: impl Fn(&Sent) -> Option<u64>) -> Vec<(u64, u64)> {
        self.sent
            .iter()
            .filter_map(|(t, s)| pick(s).map(|seq| (t.as_millis() as u64, seq)))
            .collect()
    }

    fn finished_at(&self) -> Option<(u64, Outcome)> {
        self.events.iter().find_map(|(t, e)| match e {
            ClientEvent::Finished(o) => Some((t.as_millis() as u64, o.clone())),
            _ => None,
        })
    }
}

fn port_requests(s: &Sent) -> Option<u64> {
    match s {
        Sent::P0(P0Packet::PortRequest { seq, .. }) => Some(*seq),
        _ => None,
    }
}

fn port_replies(s: &Sent) -> Option<u64> {
    match s {
        Sent::P0(P0Packet::PortReply { seq, .. }) => Some(*seq),
        _ => None,
    }
}

fn choices(s: &Sent) -> Option<u64> {
    match s {
        Sent::Ps(PsPacket::MovieChoice { seq, .. }) => Some(*seq),
        _ => None,
    }
}

fn requests_of(op: ControlOp) -> impl Fn(&Sent) -> Option<u64> {
    move |s| match s {
        Sent::Ps(PsPacket::Control(c)) if c.op == op => Some(c.seq),
        _ => None,
    }
}

/// `n` sends of one Seq, `every_ms` apart from `from_ms`.
fn schedule(from_ms: u64, every_ms: u64, n: u64, seq: u64) -> Vec<(u64, u64)> {
    (0..n).map(|i| (from_ms + i * every_ms, seq)).collect()
}

/// A server that answers the handshake and registrations, offers one
/// movie, and leaves Movie Choice and Control unanswered unless told.
fn helpful_server(ack_choice: bool) -> Script {
    let mut offered = false;
    Box::new(move |sent| {
        let ps = |p: PsPacket| vec![(a(PS), p.encode())];
        match sent {
            Sent::P0(P0Packet::PortRequest { seq, .. }) => vec![(
                a(P0),
                P0Packet::PortAllocated {
                    seq: *seq,
                    port: 40001,
                }
                .encode(),
            )],
            Sent::P0(P0Packet::PortReply { seq, .. }) => {
                vec![(a(P0), P0Packet::Ack { seq: *seq }.encode())]
            }
            Sent::Ps(PsPacket::RegistrationRequest { seq, .. }) => {
                let mut out = ps(PsPacket::Ack { seq: *seq });
                if !std::mem::replace(&mut offered, true) {
                    out.extend(ps(PsPacket::MoviesAvailable {
                        seq: 0x1a2b_3c4d,
                        page: 0,
                        pages: 1,
                        entries: vec![wire::MovieListing {
                            id: 0,
                            name: "sintel.ts".into(),
                        }],
                    }));
                }
                out
            }
            Sent::Ps(PsPacket::MovieChoice { seq, .. }) if ack_choice => {
                ps(PsPacket::Ack { seq: *seq })
            }
            _ => vec![],
        }
    })
}

#[test]
fn c11_every_confirmable_packet_is_retransmitted_on_schedule() {
    // Port Request: every 1 s, 5 sends per attempt, 3 attempts, then the
    // error at 15 s.
    let mut s = Scripted::leader(Box::new(|_| vec![]));
    s.run_to(Duration::from_secs(20));
    let want: Vec<(u64, u64)> = (1..=3)
        .flat_map(|attempt| schedule((attempt - 1) * 5_000, 1_000, 5, attempt))
        .collect();
    assert_eq!(s.times(port_requests), want);
    assert_eq!(
        s.finished_at(),
        Some((15_000, Outcome::Failed(ClientError::Handshake(3))))
    );

    // Port OK: answered Port Requests, unanswered Port OKs. Each attempt
    // sends its Port OK every 1 s, 5 times; then a new attempt.
    let mut s = Scripted::leader(Box::new(|sent| match sent {
        Sent::P0(P0Packet::PortRequest { seq, .. }) => vec![(
            a(P0),
            P0Packet::PortAllocated {
                seq: *seq,
                port: 40001,
            }
            .encode(),
        )],
        _ => vec![],
    }));
    s.run_to(Duration::from_secs(20));
    assert_eq!(
        s.times(port_requests),
        [(0, 1), (5_000, 3), (10_000, 5)],
        "one Port Request per attempt, each answered at once"
    );
    let want: Vec<(u64, u64)> = (0..3)
        .flat_map(|attempt| schedule(attempt * 5_000, 1_000, 5, 2 + attempt * 2))
        .collect();
    assert_eq!(s.times(port_replies), want);
    assert_eq!(
        s.finished_at(),
        Some((15_000, Outcome::Failed(ClientError::Handshake(3))))
    );

    // Registration Request (a member's first): every 1 s, 5 sends, then
    // the error at 5 s.
    let mut s = Scripted::new(Role::Member { session: a(PS) }, Box::new(|_| vec![]));
    s.run_to(Duration::from_secs(10));
    let registrations = s.times(|x| match x {
        Sent::Ps(PsPacket::RegistrationRequest { seq, .. }) => Some(*seq),
        _ => None,
    });
    assert_eq!(registrations, schedule(0, 1_000, 5, 1));
    assert_eq!(
        s.finished_at(),
        Some((5_000, Outcome::Failed(ClientError::Registration)))
    );

    // Movie Choice: the server answers everything else (refreshes
    // included), never the choice: every 1 s, 5 sends, then the error at
    // 5 s, with one LEAVE.
    let mut s = Scripted::leader(helpful_server(false));
    s.run_to(Duration::from_secs(10));
    assert_eq!(s.times(choices), schedule(0, 1_000, 5, 4));
    assert_eq!(
        s.finished_at(),
        Some((5_000, Outcome::Failed(ClientError::MovieChoice)))
    );
    assert_eq!(s.times(requests_of(ControlOp::Leave)).len(), 1);

    // Control: PAUSE, RESUME and LEAVE every 200 ms, 5 sends each; an
    // unanswered PAUSE or RESUME is reported at the 6th slot, LEAVE quits.
    let mut s = Scripted::leader(helpful_server(true));
    s.run_to(Duration::from_millis(2_000));
    assert_eq!(s.times(choices), [(0, 4)], "ACKed at once, sent once");
    s.c.set_paused(s.now, true);
    s.flush();
    s.run_to(Duration::from_millis(4_000));
    s.c.set_paused(s.now, false);
    s.flush();
    s.run_to(Duration::from_millis(6_000));
    s.c.quit(s.now);
    s.flush();
    s.run_to(Duration::from_secs(10));
    let pauses = s.times(requests_of(ControlOp::Pause));
    let resumes = s.times(requests_of(ControlOp::Resume));
    let leaves = s.times(requests_of(ControlOp::Leave));
    let seq_of = |v: &[(u64, u64)]| v.first().map(|x| x.1).unwrap();
    assert_eq!(pauses, schedule(2_000, 200, 5, seq_of(&pauses)));
    assert_eq!(resumes, schedule(4_000, 200, 5, seq_of(&resumes)));
    assert_eq!(leaves, schedule(6_000, 200, 5, seq_of(&leaves)));
    let unanswered: Vec<(u64, ControlOp)> = s
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            ClientEvent::ControlUnanswered(op) => Some((t.as_millis() as u64, *op)),
            _ => None,
        })
        .collect();
    assert_eq!(
        unanswered,
        [(3_000, ControlOp::Pause), (5_000, ControlOp::Resume)]
    );
    assert_eq!(s.finished_at(), Some((7_000, Outcome::Quit)));
    // Refreshes went on, one a second, all the while.
    let refreshes = s.times(|x| match x {
        Sent::Ps(PsPacket::RegistrationRequest { seq, .. }) => Some(*seq),
        _ => None,
    });
    let at: Vec<u64> = refreshes.iter().map(|r| r.0).collect();
    assert_eq!(at, [0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000]);
}

#[test]
fn requested_port_busy_falls_back_to_another() {
    let mut w = World::new(fast_config(), library());
    w.ports.busy.insert(40000);
    let l = w.leader("127.0.0.2:50000", MovieSelector::First);
    w.run(Duration::from_millis(100));
    assert_eq!(w.session_port(l), 40001);
}

#[test]
fn c30_statistics_count_drops_duplicates_and_reordering_exactly() {
    let mut w = World::new(fast_config(), library());
    let member = a("127.0.0.3:51000");
    w.rule = Box::new(move |_, to, b| match (to == member, is_movie_data(b)) {
        (true, Some(3 | 7 | 40)) => Fate::Drop,
        (true, Some(5 | 6)) => Fate::Duplicate,
        // 10 arrives after 11 and 12: out of order, not lost.
        (true, Some(10)) => Fate::Delay(Duration::from_millis(25)),
        _ => Fate::Deliver,
    });
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(0));
    w.run(Duration::from_millis(100));
    let m = w.member("127.0.0.3:51000", w.session_port(l));
    w.run_until_done(Duration::from_secs(30));
    assert_eq!(outcome(&w, m), Some(Outcome::Complete));
    let st = w.clients[m].c.stats();
    assert_eq!(
        (
            st.received,
            st.lost(),
            st.out_of_order,
            st.duplicates,
            st.invalid
        ),
        (38, 3, 1, 2, 0)
    );
    assert_eq!(
        st.line(),
        "received=38 lost=3 out_of_order=1 duplicates=2 invalid=0"
    );
    // Where the last chunk is lost and no Stream End arrives, End is the
    // highest Seq received.
    let mut s = Stats {
        start_seq: 1,
        ..Stats::default()
    };
    for seq in [1, 2, 4] {
        s.record(seq, 1);
    }
    assert_eq!(s.lost(), 1);
    s.end = Some(6);
    assert_eq!(s.lost(), 3);
    assert_eq!(Stats::default().lost(), 0);
}

#[test]
fn c31_stream_dead_after_silence_but_not_during_a_pause() {
    // The server vanishes while streaming.
    let mut w = World::new(fast_config(), long_library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_500));
    let cut_at = w.now;
    w.rule = Box::new(move |from, _, _| {
        if from.port() == 40000 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    w.run_until_done(Duration::from_secs(20));
    assert_eq!(
        outcome(&w, l),
        Some(Outcome::Failed(ClientError::StreamDead))
    );
    let took = w.now - cut_at;
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_millis(5_200),
        "{took:?}"
    );

    // Data stops for longer than max(20 × interval, 5 s) while ACKs still
    // come: dead as well.
    let mut w = World::new(fast_config(), long_library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_500));
    w.rule = Box::new(|_, _, b| {
        if is_movie_data(b).is_some() {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    w.run(Duration::from_millis(4_900));
    assert_eq!(outcome(&w, l), None);
    w.run(Duration::from_millis(300));
    assert_eq!(
        outcome(&w, l),
        Some(Outcome::Failed(ClientError::StreamDead))
    );

    // A long pause with the server answering refreshes is not death.
    let mut w = World::new(fast_config(), library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_500));
    let now = w.now;
    w.clients[l].c.set_paused(now, true);
    w.pump();
    w.run(Duration::from_secs(30));
    assert_eq!(outcome(&w, l), None);
    assert!(w.clients[l].c.is_paused());
    let now = w.now;
    w.clients[l].c.set_paused(now, false);
    w.pump();
    w.run_until_done(Duration::from_secs(30));
    assert_eq!(outcome(&w, l), Some(Outcome::Complete));
    assert_eq!(w.clients[l].c.stats().lost(), 0);
}

#[test]
fn c31_long_interval_data_gap_is_20_intervals_not_5_s() {
    // At 400 ms a chunk, max(20 × interval, 5 s) is 8 s. Only chunk 1
    // arrives; ACKs of the refreshes keep coming, so the 5 s silence rule
    // never applies and only the data rule can end the stream.
    let config = Config {
        default_interval_us: 400_000,
        ..fast_config()
    };
    let mut w = World::new(config, long_library());
    w.rule = Box::new(|_, _, b| match is_movie_data(b) {
        Some(seq) if seq > 1 => Fate::Drop,
        _ => Fate::Deliver,
    });
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_500));
    assert_eq!(w.clients[l].c.stream().unwrap().interval_us, 400_000);
    let data_at: Vec<Instant> = w.clients[l]
        .events
        .iter()
        .zip(&w.clients[l].event_at)
        .filter(|(e, _)| matches!(e, ClientEvent::Data { .. }))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(data_at.len(), 1, "chunk 1 only");
    let last_data = data_at[0];
    let start = w.now;
    w.run(last_data + Duration::from_millis(7_900) - start);
    assert_eq!(outcome(&w, l), None, "alive 7.9 s after the last data");
    w.run(Duration::from_millis(100));
    assert_eq!(
        outcome(&w, l),
        Some(Outcome::Failed(ClientError::StreamDead)),
        "dead 8 s after the last data"
    );
    let finished_at = w.clients[l]
        .events
        .iter()
        .zip(&w.clients[l].event_at)
        .find(|(e, _)| matches!(e, ClientEvent::Finished(_)))
        .map(|(_, t)| *t)
        .unwrap();
    assert_eq!(finished_at - last_data, Duration::from_secs(8));
}

#[test]
fn c25_pause_resume_from_the_leaders_client_skips_no_chunk() {
    let mut w = World::new(fast_config(), library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(100));
    let m = w.member("127.0.0.3:51000", w.session_port(l));
    w.run(Duration::from_millis(2_500));
    let now = w.now;
    w.clients[l].c.set_paused(now, true);
    w.pump();
    w.run(Duration::from_millis(100));
    let got = w.clients[m].c.stats().received;
    assert!(w.clients[m].c.is_paused());
    w.run(Duration::from_secs(3));
    assert_eq!(w.clients[m].c.stats().received, got, "nothing while paused");
    // A member cannot resume.
    let now = w.now;
    w.clients[m].c.set_paused(now, false);
    w.pump();
    w.run(Duration::from_millis(200));
    assert!(w.clients[m].c.is_paused());
    let now = w.now;
    w.clients[l].c.set_paused(now, false);
    w.pump();
    w.run_until_done(Duration::from_secs(30));
    for i in [l, m] {
        assert_eq!(outcome(&w, i), Some(Outcome::Complete));
        assert_eq!(w.clients[i].c.stats().lost(), 0);
        assert!(
            w.clients[i]
                .events
                .iter()
                .any(|e| matches!(e, ClientEvent::Paused { .. }))
        );
        assert!(
            w.clients[i]
                .events
                .iter()
                .any(|e| matches!(e, ClientEvent::Resumed { reason: 0, .. }))
        );
    }
}

#[test]
fn c24_late_joiner_receives_everything_from_its_start_seq_without_loss() {
    let mut w = World::new(fast_config(), library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_600));
    let j = w.member("[::1]:52000", w.session_port(l));
    // The member is IPv6 and the server address IPv4 here; the simulated
    // network does not care, it routes by address.
    w.clients[j].c = ClientSession::new(
        ClientParams {
            role: Role::Member {
                session: a("127.0.0.1:40000"),
            },
            interval_us: 0,
            timers: ClientTimers::default(),
        },
        w.now,
    );
    w.pump();
    w.run_until_done(Duration::from_secs(30));
    assert_eq!(outcome(&w, j), Some(Outcome::Complete));
    let start = w.clients[j].c.stream().unwrap().start_seq;
    assert!(start > 50, "joined late: Start Seq {start}");
    let st = w.clients[j].c.stats();
    assert_eq!((st.received, st.lost()), (301 - start + 1, 0));
    assert!(w.clients[l].events.iter().any(
        |e| matches!(e, ClientEvent::MemberJoined { member: Some(x), .. } if *x == a("[::1]:52000"))
    ));
}

#[test]
fn c22_c23_leave_and_timeout_are_reported_to_the_leader() {
    let mut w = World::new(fast_config(), long_library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(100));
    let port = w.session_port(l);
    let m = w.member("127.0.0.3:51000", port);
    let x = w.member("127.0.0.4:51000", port);
    w.run(Duration::from_millis(2_200));
    let now = w.now;
    w.clients[m].c.quit(now);
    w.pump();
    w.run(Duration::from_millis(100));
    assert_eq!(outcome(&w, m), Some(Outcome::Quit));
    // X goes silent: its packets no longer reach the server.
    w.rule = Box::new(|from, _, _| {
        if from == a("127.0.0.4:51000") {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    w.run(Duration::from_millis(5_200));
    let left: Vec<(Option<SocketAddr>, u8)> = w.clients[l]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MemberLeft { member, reason, .. } => Some((*member, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        left,
        [
            (Some(a("127.0.0.3:51000")), wire::LEFT_REASON_LEFT),
            (Some(a("127.0.0.4:51000")), wire::LEFT_REASON_TIMEOUT)
        ]
    );
    assert_eq!(outcome(&w, x), Some(Outcome::Ended(EndReason::Expired)));
}

#[test]
fn c27_refused_client_reports_full() {
    let config = Config {
        max_members: 2,
        ..fast_config()
    };
    let mut w = World::new(config, library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(100));
    let port = w.session_port(l);
    w.member("127.0.0.3:51000", port);
    let x = w.member("127.0.0.4:51000", port);
    w.run(Duration::from_millis(100));
    assert_eq!(outcome(&w, x), Some(Outcome::Refused(EndReason::Full)));
}

#[test]
fn c21_two_sessions_stream_different_movies_side_by_side() {
    let mut w = World::new(fast_config(), library());
    let l1 = w.leader("127.0.0.2:50000", MovieSelector::Id(0));
    let l2 = w.leader("127.0.0.5:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(100));
    let (p1, p2) = (w.session_port(l1), w.session_port(l2));
    assert_ne!(p1, p2);
    let m1 = w.member("127.0.0.3:51000", p1);
    let m2 = w.member("127.0.0.6:51000", p2);
    w.run_until_done(Duration::from_secs(30));
    for (i, movie) in [(l1, 0), (m1, 0), (l2, 1), (m2, 1)] {
        assert_eq!(outcome(&w, i), Some(Outcome::Complete));
        let expected = w.movies[movie]
            .open()
            .unwrap()
            .read(0, w.movies[movie].size as usize)
            .unwrap();
        assert!(w.clients[i].file == expected, "client {i}");
    }
}

#[test]
fn c33_twenty_percent_loss_both_ways_still_completes() {
    for seed in 0..3u64 {
        let mut w = World::new(
            Config {
                registration_window: Duration::from_millis(10_000),
                ..fast_config()
            },
            library(),
        );
        let mut rng = StdRng::seed_from_u64(seed);
        w.rule = Box::new(move |_, _, _| {
            if rng.random_bool(0.2) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let l = w.leader("127.0.0.2:50000", MovieSelector::Id(0));
        for _ in 0..300 {
            if w.clients[l]
                .events
                .iter()
                .any(|e| matches!(e, ClientEvent::SessionReady(_)))
            {
                break;
            }
            w.run(Duration::from_millis(100));
        }
        let port = w.session_port(l);
        let m = w.member("127.0.0.3:51000", port);
        let x = w.member("127.0.0.4:51000", port);
        w.run_until_done(Duration::from_secs(60));
        for i in [l, m, x] {
            assert_eq!(
                outcome(&w, i),
                Some(Outcome::Complete),
                "seed {seed} client {i}: {:?}",
                w.clients[i].events.last()
            );
            let st = w.clients[i].c.stats();
            assert!(
                st.lost() > 0 && st.received + st.lost() == 41,
                "seed {seed}: {}",
                st.line()
            );
        }
    }
}

#[test]
fn client_discards_foreign_and_malformed_packets() {
    let mut w = World::new(fast_config(), library());
    let l = w.leader("127.0.0.2:50000", MovieSelector::Id(1));
    w.run(Duration::from_millis(2_500));
    let now = w.now;
    let c = &mut w.clients[l].c;
    let before = c.discarded;
    // From another port of the server's host, and garbage from the session.
    c.handle_datagram(
        now,
        a("127.0.0.1:40999"),
        &PsPacket::StreamEnd {
            seq: 9,
            last_seq: 0,
            reason: EndReason::Error,
        }
        .encode(),
    );
    c.handle_datagram(now, a("127.0.0.1:40000"), &[0x40, 0, 0]);
    c.handle_datagram(
        now,
        a("127.0.0.1:40000"),
        &PsPacket::Ack { seq: 12345 }.encode(),
    );
    assert_eq!(c.discarded, before + 3);
    // Movie Data of the wrong length or beyond Total chunks counts invalid.
    c.handle_datagram(
        now,
        a("127.0.0.1:40000"),
        &PsPacket::MovieData {
            seq: 2,
            data: Bytes::from_static(b"short"),
        }
        .encode(),
    );
    c.handle_datagram(
        now,
        a("127.0.0.1:40000"),
        &PsPacket::MovieData {
            seq: 400,
            data: Bytes::from(vec![0; 1316]),
        }
        .encode(),
    );
    c.handle_datagram(
        now,
        a("127.0.0.1:40000"),
        &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert_eq!(c.stats().invalid, 3);
    w.pump();
    w.run_until_done(Duration::from_secs(30));
    assert_eq!(outcome(&w, l), Some(Outcome::Complete));
}

#[test]
fn list_query_pages_through_every_session() {
    let mut w = World::new(
        Config {
            registration_window: Duration::from_millis(60_000),
            ..fast_config()
        },
        library(),
    );
    let long = "x".repeat(200);
    w.movies
        .push(Movie::in_memory(long, Bytes::from_static(b"m")));
    let mut leaders = Vec::new();
    for i in 0..9 {
        let l = w.leader(&format!("127.0.1.{i}:50000"), MovieSelector::Id(2));
        leaders.push(l);
    }
    w.run(Duration::from_millis(200));
    let mut q = ListQuery::new(a(P0), ClientTimers::default(), w.now);
    for _ in 0..10 {
        while let Some(t) = q.poll_transmit() {
            let from = a("127.0.0.9:1234");
            w.deliver(from, t.to, &t.payload);
            while let Some(t) = w.neg.poll_transmit() {
                q.handle_datagram(w.now, a(P0), &t.payload);
            }
        }
    }
    let entries = q.result().unwrap().unwrap();
    assert_eq!(entries.len(), 9);
    assert!(entries.windows(2).all(|p| p[0].port < p[1].port));
    assert!(
        entries
            .iter()
            .all(|e| e.state == wire::SessionState::Registration
                && e.movie_id == Some(2)
                && e.joinable)
    );
}
