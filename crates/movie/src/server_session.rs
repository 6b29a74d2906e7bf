//! The server's protocol logic, sans-IO: [`Negotiator`] answers on P0 (§5,
//! §8.5) and one [`ServerSession`] runs each session on its Ps (§6–§8).
//!
//! Both are fed `(now, from, datagram)` and timer ticks
//! ([`ServerSession::handle_timeout`]) and are drained with `poll_transmit`
//! and `poll_timeout`, in the manner of str0m and quinn-proto: they never
//! read the clock and never touch a socket, so tests run them on a virtual
//! clock. The only outside resources are the port allocator the negotiator
//! is handed (binding is I/O) and the [`MovieReader`] a session reads
//! chunks from, which is memory in tests.
//!
//! Seqs the server originates come from a seeded generator (random start,
//! random steps, §3.6), which is what keeps a forged source address from
//! receiving Movie Data (§16).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Transmit;
use crate::bitrate;
use crate::config::{Config, ServerTimers};
use crate::library::{Movie, MovieReader};
use crate::wire::{
    self, Control, ControlOp, Direction, Discard, EndReason, MovieListing, P0Packet, PsPacket,
    SessionEntry, SessionState, StreamStart,
};

/// Discards per counter of §12.1, for one session or one P0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscardCounts {
    counts: [u64; 10],
    last_logged: [Option<Instant>; 10],
}

impl DiscardCounts {
    pub fn get(&self, d: Discard) -> u64 {
        self.counts[d as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Counts a discard, exports it, and logs it at most once per counter
    /// per 10 s so that a flood cannot flood the log.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        d: Discard,
        area: &'static str,
        what: &dyn std::fmt::Display,
    ) {
        let i = d as usize;
        self.counts[i] = self.counts[i].saturating_add(1);
        metrics::counter!("switchyard_movie_discarded_total", "where" => area, "reason" => d.as_str()).increment(1);
        let due = self.last_logged[i]
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10));
        if due {
            self.last_logged[i] = Some(now);
            tracing::debug!(reason = d.as_str(), area, "discarded datagram: {what}");
        }
    }
}

// ------------------------------------------------------------ replay window

/// The per-endpoint replay window of §3.8: the highest Seq seen and which of
/// the 63 below it were seen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    highest: u64,
    seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    New,
    Duplicate,
    Stale,
}

impl ReplayWindow {
    pub(crate) fn starting_at(seq: u64) -> Self {
        ReplayWindow {
            highest: seq,
            seen: 1,
        }
    }

    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    pub(crate) fn check(&self, seq: u64) -> Replay {
        if self.highest == 0 || seq > self.highest {
            return Replay::New;
        }
        let back = self.highest - seq;
        if back > 63 {
            Replay::Stale
        } else if self.seen & (1u64 << back) != 0 {
            Replay::Duplicate
        } else {
            Replay::New
        }
    }

    pub(crate) fn mark(&mut self, seq: u64) {
        if self.highest == 0 || seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            let back = self.highest - seq;
            if back <= 63 {
                self.seen |= 1u64 << back;
            }
        }
    }
}

/// The server's Seq counter: random start, random steps (§3.6).
#[derive(Debug)]
struct SeqGen {
    rng: StdRng,
    last: u64,
}

impl SeqGen {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let last = rng.random_range(1..=1u64 << 62);
        SeqGen { rng, last }
    }

    fn first(&mut self) -> u64 {
        self.last
    }

    fn next(&mut self) -> u64 {
        let step = self.rng.random_range(1..=1u64 << 32);
        self.last = self.last.saturating_add(step);
        self.last
    }
}

// ------------------------------------------------------------ negotiator (P0)

/// Binds session ports for the negotiator. The driver implements it with
/// real sockets; tests with a set of numbers.
pub trait PortAllocator {
    /// The requested port if it is ≥ 1024 and free (on every P0 address),
    /// else a fallback; `None` if nothing can be bound.
    fn allocate(&mut self, requested: u16) -> Option<u16>;
    /// Gives a port back (after a NOK, an expiry or a restart).
    fn release(&mut self, port: u16);
}

/// What P0 needs to know about the rest of the server when a datagram
/// arrives.
pub struct P0Context<'a> {
    pub ports: &'a mut dyn PortAllocator,
    pub has_movies: bool,
    /// Sessions past their handshake, for Session List.
    pub sessions: &'a dyn Fn() -> Vec<SessionEntry>,
}

/// A session the negotiator created; the driver starts its [`ServerSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub port: u16,
    pub leader: SocketAddr,
    /// Seq of the accepted Port OK; the leader's counter runs on from it.
    pub leader_seq: u64,
}

#[derive(Debug)]
struct PendingAlloc {
    client: SocketAddr,
    request_seq: u64,
    port: u16,
    expires: Instant,
}

#[derive(Debug)]
struct FinishedHandshake {
    client: SocketAddr,
    request_seq: u64,
    port: u16,
    /// Seq of the Port OK/NOK answered, if any (none after an expiry).
    reply_seq: Option<u64>,
    expires: Instant,
}

/// The handshake and Session List on P0.
#[derive(Debug)]
pub struct Negotiator {
    max_sessions: usize,
    max_pending_per_ip: usize,
    session_list: bool,
    timers: ServerTimers,
    pending: Vec<PendingAlloc>,
    finished: Vec<FinishedHandshake>,
    live: HashSet<u16>,
    list_rate: HashMap<IpAddr, (Instant, u32)>,
    out: VecDeque<Transmit>,
    created: VecDeque<NewSession>,
    pub discards: DiscardCounts,
}

impl Negotiator {
    pub fn new(config: &Config) -> Self {
        Negotiator {
            max_sessions: config.max_sessions,
            max_pending_per_ip: config.max_pending_per_ip,
            session_list: config.session_list,
            timers: config.timers,
            pending: Vec::new(),
            finished: Vec::new(),
            live: HashSet::new(),
            list_rate: HashMap::new(),
            out: VecDeque::new(),
            created: VecDeque::new(),
            discards: DiscardCounts::default(),
        }
    }

    fn discard(&mut self, now: Instant, d: Discard, what: &dyn std::fmt::Display) {
        self.discards.record(now, d, "p0", what);
    }

    fn send(&mut self, to: SocketAddr, p: P0Packet) {
        self.out.push_back(Transmit {
            to,
            payload: p.encode(),
        });
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
        ctx: P0Context<'_>,
    ) {
        self.handle_timeout(now, ctx.ports);
        let packet = match wire::decode_p0(buf, Direction::ToServer) {
            Ok(p) => p,
            Err(e) => return self.discard(now, e.discard(), &e),
        };
        match packet {
            P0Packet::PortRequest { seq, port } => self.port_request(now, from, seq, port, ctx),
            P0Packet::PortReply { seq, port, ok } => {
                self.port_reply(now, from, seq, port, ok, ctx.ports)
            }
            P0Packet::SessionListRequest { seq, start } => {
                if !self.session_list {
                    return self.discard(now, Discard::UnknownType, &"Session List is disabled");
                }
                self.session_list_request(now, from, seq, start, ctx.sessions)
            }
            // decode_p0 with ToServer yields only the three above.
            _ => self.discard(now, Discard::UnknownType, &"server-only packet"),
        }
    }

    fn port_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        seq: u64,
        port: u16,
        ctx: P0Context<'_>,
    ) {
        if let Some(f) = self
            .finished
            .iter()
            .find(|f| f.client == from && f.request_seq == seq)
        {
            let answer = P0Packet::PortAllocated { seq, port: f.port };
            self.discards.record(
                now,
                Discard::Duplicate,
                "p0",
                &"copy of a finished Port Request",
            );
            return self.send(from, answer);
        }
        if let Some(i) = self.pending.iter().position(|p| p.client == from) {
            let p = &self.pending[i];
            if seq == p.request_seq {
                let answer = P0Packet::PortAllocated { seq, port: p.port };
                self.discards
                    .record(now, Discard::Duplicate, "p0", &"copy of a Port Request");
                return self.send(from, answer);
            }
            if seq < p.request_seq {
                return self.discard(now, Discard::Stale, &"older Port Request");
            }
            // The client started over.
            let old = self.pending.remove(i);
            ctx.ports.release(old.port);
        }
        let per_ip = self
            .pending
            .iter()
            .filter(|p| p.client.ip() == from.ip())
            .count();
        let refuse = if !ctx.has_movies {
            Some("the library is empty")
        } else if self.live.len() + self.pending.len() >= self.max_sessions {
            Some("session cap reached")
        } else if per_ip >= self.max_pending_per_ip {
            Some("too many pending allocations for this address")
        } else {
            None
        };
        let allocated = match refuse {
            Some(_) => None,
            None => ctx.ports.allocate(port),
        };
        let Some(allocated) = allocated else {
            let why = refuse.unwrap_or("no port could be bound");
            tracing::info!(client = %from, why, "Port Request refused");
            metrics::counter!("switchyard_movie_refusals_total", "reason" => why).increment(1);
            return self.send(from, P0Packet::PortAllocated { seq, port: 0 });
        };
        tracing::debug!(client = %from, requested = port, allocated, "session port allocated");
        self.pending.push(PendingAlloc {
            client: from,
            request_seq: seq,
            port: allocated,
            expires: now + self.timers.alloc,
        });
        self.send(
            from,
            P0Packet::PortAllocated {
                seq,
                port: allocated,
            },
        );
    }

    fn port_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        seq: u64,
        port: u16,
        ok: bool,
        ports: &mut dyn PortAllocator,
    ) {
        let matching = self
            .pending
            .iter()
            .position(|p| p.port == port && p.client.ip() == from.ip() && seq > p.request_seq);
        if let Some(i) = matching {
            let p = self.pending.remove(i);
            self.send(from, P0Packet::Ack { seq });
            self.finished.push(FinishedHandshake {
                client: p.client,
                request_seq: p.request_seq,
                port: p.port,
                reply_seq: Some(seq),
                expires: now + self.timers.record,
            });
            if ok {
                self.live.insert(p.port);
                metrics::counter!("switchyard_movie_sessions_created_total").increment(1);
                self.created.push_back(NewSession {
                    port: p.port,
                    leader: from,
                    leader_seq: seq,
                });
            } else {
                ports.release(p.port);
            }
            return;
        }
        let copy = self
            .finished
            .iter()
            .any(|f| f.port == port && f.client.ip() == from.ip() && f.reply_seq == Some(seq));
        if copy {
            self.discards
                .record(now, Discard::Duplicate, "p0", &"copy of a Port OK/NOK");
            return self.send(from, P0Packet::Ack { seq });
        }
        self.discard(
            now,
            Discard::BadField,
            &format_args!("Port OK/NOK for port {port} matches no allocation"),
        );
    }

    fn session_list_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        seq: u64,
        start: u16,
        sessions: &dyn Fn() -> Vec<SessionEntry>,
    ) {
        let limit = self.timers.list_rate;
        let slot = self.list_rate.entry(from.ip()).or_insert((now, 0));
        if now.saturating_duration_since(slot.0) >= Duration::from_secs(1) {
            *slot = (now, 0);
        }
        if slot.1 >= limit {
            return self.discard(
                now,
                Discard::RateLimited,
                &"Session List Requests beyond the rate",
            );
        }
        slot.1 += 1;
        let mut all = sessions();
        all.sort_by_key(|e| e.port);
        let total = u16::try_from(all.len()).unwrap_or(u16::MAX);
        let from_index = usize::from(start).min(all.len());
        let rest = all.get(from_index..).unwrap_or_default();
        let fit = wire::session_list_fit(rest);
        let entries = rest.get(..fit).unwrap_or_default().to_vec();
        self.send(
            from,
            P0Packet::SessionList {
                seq,
                total,
                start,
                entries,
            },
        );
    }

    /// Releases expired allocations and forgets old handshakes.
    pub fn handle_timeout(&mut self, now: Instant, ports: &mut dyn PortAllocator) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].expires <= now {
                let p = self.pending.remove(i);
                tracing::debug!(port = p.port, client = %p.client, "allocation expired without Port OK/NOK");
                ports.release(p.port);
                self.finished.push(FinishedHandshake {
                    client: p.client,
                    request_seq: p.request_seq,
                    port: p.port,
                    reply_seq: None,
                    expires: now + self.timers.record,
                });
            } else {
                i += 1;
            }
        }
        self.finished.retain(|f| f.expires > now);
        self.list_rate
            .retain(|_, (t, _)| now.saturating_duration_since(*t) < Duration::from_secs(1));
    }

    /// The driver reports a session that ended, freeing its place under the
    /// session cap.
    pub fn session_closed(&mut self, port: u16) {
        self.live.remove(&port);
    }

    pub fn live_sessions(&self) -> usize {
        self.live.len()
    }

    pub fn pending_allocations(&self) -> usize {
        self.pending.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_new_session(&mut self) -> Option<NewSession> {
        self.created.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.expires);
        let finished = self.finished.iter().map(|f| f.expires);
        pending.chain(finished).min()
    }
}

// ------------------------------------------------------------ session (Ps)

/// Everything a session is created with.
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub port: u16,
    pub leader: SocketAddr,
    pub leader_seq: u64,
    /// The library at creation; positions are Movie IDs (§6.3).
    pub movies: Vec<Movie>,
    pub chunk_size: u16,
    pub default_interval_us: u32,
    /// D is derived from the chosen movie's bit rate where it can be read.
    pub interval_from_bitrate: bool,
    pub min_interval_us: u32,
    pub max_interval_us: u32,
    pub window: Duration,
    pub max_members: usize,
    pub late_join: bool,
    pub member_timeout: Duration,
    pub pause_max: Duration,
    pub timers: ServerTimers,
    /// Seeds the server's Seq generator.
    pub seed: u64,
}

impl SessionParams {
    pub fn new(config: &Config, created: &NewSession, movies: Vec<Movie>, seed: u64) -> Self {
        SessionParams {
            port: created.port,
            leader: created.leader,
            leader_seq: created.leader_seq,
            movies,
            chunk_size: config.chunk_size,
            default_interval_us: config.default_interval_us,
            interval_from_bitrate: config.interval_from_bitrate,
            min_interval_us: config.min_interval_us,
            max_interval_us: config.max_interval_us,
            window: config.registration_window,
            max_members: config.max_members,
            late_join: config.late_join,
            member_timeout: config.member_timeout,
            pause_max: config.pause_max,
            timers: config.timers,
            seed,
        }
    }
}

/// The interval rule of §6.4.
pub fn final_interval(
    default_us: u32,
    requests: impl IntoIterator<Item = u32>,
    min_us: u32,
    max_us: u32,
) -> u32 {
    let wanted = requests
        .into_iter()
        .filter(|&r| r != 0)
        .fold(default_us, u32::max);
    wanted.clamp(min_us.min(max_us), max_us)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registration { closes: Instant },
    Starting,
    Streaming,
    Paused { since: Instant },
    Ending,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// The leader before it registers.
    LeaderOnly,
    Registered,
    Joining,
    Active,
    /// Stream End sent, awaiting its ACK.
    Leaving,
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    state: PeerState,
    replay: ReplayWindow,
    last_heard: Instant,
    interval_us: u32,
    interval_seq: u64,
    start_seq: u64,
}

impl Peer {
    fn is_member(&self) -> bool {
        matches!(
            self.state,
            PeerState::Registered | PeerState::Joining | PeerState::Active
        )
    }
}

#[derive(Debug)]
struct Gone {
    addr: SocketAddr,
    highest: u64,
    leave_seq: Option<u64>,
    until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutKind {
    MoviesPage,
    StreamStart,
    StreamEnd,
    Notice,
}

#[derive(Debug)]
struct Outstanding {
    to: SocketAddr,
    seq: u64,
    payload: Bytes,
    sent: u32,
    next: Instant,
    every: Duration,
    kind: OutKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Left { leave_seq: u64 },
    Timeout,
    Unconfirmed,
}

/// What the session did, for the driver's logs and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    MemberJoined(SocketAddr),
    MemberLeft {
        member: SocketAddr,
        reason: u8,
    },
    StreamStarted {
        movie: String,
        interval_us: u32,
        total_chunks: u64,
    },
    Paused {
        position: u64,
    },
    Resumed {
        position: u64,
        reason: u8,
    },
    Ending(EndReason),
    Closed,
}

#[derive(Debug)]
struct Stream {
    movie_id: u16,
    name: String,
    interval: Duration,
    interval_us: u32,
    total: u64,
    size: u64,
    reader: MovieReader,
    t0: Instant,
    paused_total: Duration,
}

impl Stream {
    fn due(&self, k: u64) -> Instant {
        let steps = u32::try_from(k.saturating_sub(1)).unwrap_or(u32::MAX);
        self.t0 + self.interval.saturating_mul(steps) + self.paused_total
    }
}

/// One session on its own port.
#[derive(Debug)]
pub struct ServerSession {
    p: SessionParams,
    listings: Vec<MovieListing>,
    pages: Vec<Vec<MovieListing>>,
    phase: Phase,
    seqs: SeqGen,
    leader: SocketAddr,
    leader_present: bool,
    peers: Vec<Peer>,
    gone: Vec<Gone>,
    outstanding: Vec<Outstanding>,
    recently_acked: VecDeque<(SocketAddr, u64)>,
    choice: Option<(u16, u64)>,
    pause_seq: u64,
    position: u64,
    stream: Option<Stream>,
    out: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    pub discards: DiscardCounts,
    chunks_sent: u64,
    pacing: Pacing,
}

/// How late chunks went out compared with their due times (§7.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pacing {
    pub chunks: u64,
    pub max_late: Duration,
    pub total_late: Duration,
}

impl Pacing {
    pub fn mean_late(&self) -> Duration {
        match u32::try_from(self.chunks) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_late / n,
            Err(_) => Duration::ZERO,
        }
    }
}

impl ServerSession {
    pub fn new(params: SessionParams, now: Instant) -> Self {
        let listings: Vec<MovieListing> = params
            .movies
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                Some(MovieListing {
                    id: u16::try_from(i)
                        .ok()
                        .filter(|&id| id != wire::NO_MOVIE_ID)?,
                    name: m.name.clone(),
                })
            })
            .collect();
        let pages = wire::paginate_movies(&listings);
        let offered: usize = pages.iter().map(Vec::len).sum();
        if offered < listings.len() {
            tracing::warn!(
                offered,
                listed = listings.len(),
                "movies that do not fit 255 pages are left out"
            );
        }
        let listings = listings.into_iter().take(offered).collect();
        let mut seqs = SeqGen::new(params.seed);
        seqs.first();
        let leader = params.leader;
        let closes = now + params.window;
        let leader_peer = Peer {
            addr: leader,
            state: PeerState::LeaderOnly,
            replay: ReplayWindow::starting_at(params.leader_seq),
            last_heard: now,
            interval_us: 0,
            interval_seq: 0,
            start_seq: 1,
        };
        ServerSession {
            p: params,
            listings,
            pages,
            phase: Phase::Registration { closes },
            seqs,
            leader,
            leader_present: true,
            peers: vec![leader_peer],
            gone: Vec::new(),
            outstanding: Vec::new(),
            recently_acked: VecDeque::new(),
            choice: None,
            pause_seq: 0,
            position: 1,
            stream: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            discards: DiscardCounts::default(),
            chunks_sent: 0,
            pacing: Pacing::default(),
        }
    }

    pub fn port(&self) -> u16 {
        self.p.port
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub fn state(&self) -> SessionState {
        match self.phase {
            Phase::Registration { .. } => SessionState::Registration,
            Phase::Starting => SessionState::Starting,
            Phase::Streaming => SessionState::Streaming,
            Phase::Paused { .. } => SessionState::Paused,
            Phase::Ending | Phase::Closed => SessionState::Ending,
        }
    }

    /// The next data Seq the server will send.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn members(&self) -> usize {
        self.peers.iter().filter(|p| p.is_member()).count()
    }

    /// How late chunks were sent, so far.
    pub fn pacing(&self) -> Pacing {
        self.pacing
    }

    /// Movie Data datagrams handed out (one per member per chunk).
    pub fn data_packets_sent(&self) -> u64 {
        self.chunks_sent
    }

    fn has_room(&self) -> bool {
        self.members() < self.p.max_members
    }

    fn join_lead_chunks(&self) -> u64 {
        let Some(s) = &self.stream else { return 0 };
        let lead = self.p.timers.join_lead.as_micros();
        let iv = u128::from(s.interval_us.max(1));
        u64::try_from(lead.div_ceil(iv)).unwrap_or(u64::MAX)
    }

    fn late_join_open(&self) -> bool {
        let Some(s) = &self.stream else { return false };
        let remaining = s.total.saturating_add(1).saturating_sub(self.position);
        self.p.late_join && remaining >= self.join_lead_chunks().saturating_add(1)
    }

    /// This session's Session List entry (§4.1.6).
    pub fn summary(&self) -> SessionEntry {
        let joinable = self.has_room()
            && match self.phase {
                Phase::Registration { .. } => true,
                Phase::Streaming | Phase::Paused { .. } => self.late_join_open(),
                _ => false,
            };
        let (movie_id, movie_name) = match (&self.stream, self.choice) {
            (Some(s), _) => (Some(s.movie_id), s.name.clone()),
            (None, Some((id, _))) => (
                Some(id),
                self.p
                    .movies
                    .get(usize::from(id))
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            ),
            (None, None) => (None, String::new()),
        };
        SessionEntry {
            port: self.p.port,
            state: self.state(),
            joinable,
            members: u16::try_from(self.members()).unwrap_or(u16::MAX),
            movie_id,
            movie_name,
        }
    }

    fn discard(&mut self, now: Instant, d: Discard, what: &dyn std::fmt::Display) {
        self.discards.record(now, d, "session", what);
    }

    fn send(&mut self, to: SocketAddr, p: &PsPacket) {
        self.out.push_back(Transmit {
            to,
            payload: p.encode(),
        });
    }

    fn ack(&mut self, to: SocketAddr, seq: u64) {
        self.send(to, &PsPacket::Ack { seq });
    }

    fn confirmable(&mut self, now: Instant, to: SocketAddr, packet: &PsPacket, kind: OutKind) {
        let every = match kind {
            OutKind::MoviesPage => self.p.timers.rtx_handshake,
            _ => self.p.timers.rtx_stream,
        };
        let payload = packet.encode();
        self.out.push_back(Transmit {
            to,
            payload: payload.clone(),
        });
        self.outstanding.push(Outstanding {
            to,
            seq: packet.seq(),
            payload,
            sent: 1,
            next: now + every,
            every,
            kind,
        });
    }

    fn peer_index(&self, addr: SocketAddr) -> Option<usize> {
        self.peers.iter().position(|p| p.addr == addr)
    }

    // -------------------------------------------------------------- input

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        let packet = match wire::decode_ps(buf, Direction::ToServer) {
            Ok(p) => p,
            Err(e) => return self.discard(now, e.discard(), &e),
        };
        match packet {
            PsPacket::Ack { seq } => self.on_ack(now, from, seq),
            PsPacket::RegistrationRequest { seq, interval_us } => {
                self.on_registration(now, from, seq, interval_us)
            }
            PsPacket::MovieChoice { seq, movie_id } => self.on_choice(now, from, seq, movie_id),
            PsPacket::Control(c) => self.on_control(now, from, c),
            _ => self.discard(now, Discard::UnknownType, &"server-only packet"),
        }
        self.handle_timeout(now);
    }

    fn on_registration(&mut self, now: Instant, from: SocketAddr, seq: u64, interval_us: u32) {
        if let Some(i) = self.peer_index(from) {
            let peer = &self.peers[i];
            match peer.replay.check(seq) {
                Replay::Stale => {
                    return self.discard(now, Discard::Stale, &"old Registration Request");
                }
                Replay::Duplicate => {
                    self.discards.record(
                        now,
                        Discard::Duplicate,
                        "session",
                        &"copy of a Registration Request",
                    );
                    if peer.is_member() || peer.state == PeerState::Leaving {
                        self.ack(from, seq);
                    }
                    return;
                }
                Replay::New => {}
            }
            if peer.state == PeerState::LeaderOnly {
                return self.register_new(now, from, seq, interval_us);
            }
            let in_window = matches!(self.phase, Phase::Registration { .. });
            let peer = &mut self.peers[i];
            peer.replay.mark(seq);
            peer.last_heard = now;
            if in_window && seq > peer.interval_seq {
                peer.interval_us = interval_us;
                peer.interval_seq = seq;
            }
            return self.ack(from, seq);
        }
        if self.gone.iter().any(|g| g.addr == from && seq <= g.highest) {
            return self.discard(now, Discard::Stale, &"refresh from a removed member");
        }
        self.register_new(now, from, seq, interval_us);
    }

    /// A Registration Request from an endpoint that is not yet a member
    /// (possibly the leader's first).
    fn register_new(&mut self, now: Instant, from: SocketAddr, seq: u64, interval_us: u32) {
        let is_leader = from == self.leader && self.leader_present;
        match self.phase {
            Phase::Registration { .. } => {
                if !self.has_room() {
                    return self.refuse(from, EndReason::Full);
                }
                self.gone.retain(|g| g.addr != from);
                self.upsert_member(now, from, seq, PeerState::Registered, 1);
                let peer = self.peers.iter_mut().find(|p| p.addr == from);
                if let Some(peer) = peer {
                    peer.interval_us = interval_us;
                    peer.interval_seq = seq;
                }
                self.ack(from, seq);
                if is_leader {
                    self.send_movie_pages(now);
                } else {
                    self.member_notice(now, ControlOp::MemberJoined, 0, from);
                }
                self.events.push_back(SessionEvent::MemberJoined(from));
            }
            Phase::Starting => {
                self.discard(now, Discard::Unexpected, &"new registration while starting")
            }
            Phase::Streaming | Phase::Paused { .. } => {
                if !self.late_join_open() {
                    return self.refuse(from, EndReason::Closed);
                }
                if !self.has_room() {
                    return self.refuse(from, EndReason::Full);
                }
                self.gone.retain(|g| g.addr != from);
                let start_seq = self.position.saturating_add(self.join_lead_chunks());
                self.upsert_member(now, from, seq, PeerState::Joining, start_seq);
                self.ack(from, seq);
                self.send_stream_start(now, from, start_seq);
                if !is_leader {
                    self.member_notice(now, ControlOp::MemberJoined, 0, from);
                }
                self.events.push_back(SessionEvent::MemberJoined(from));
            }
            Phase::Ending => self.refuse(from, EndReason::Closed),
            Phase::Closed => {}
        }
    }

    fn upsert_member(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        seq: u64,
        state: PeerState,
        start_seq: u64,
    ) {
        match self.peers.iter_mut().find(|p| p.addr == addr) {
            Some(p) => {
                p.state = state;
                p.replay.mark(seq);
                p.last_heard = now;
                p.start_seq = start_seq;
            }
            None => self.peers.push(Peer {
                addr,
                state,
                replay: ReplayWindow::starting_at(seq),
                last_heard: now,
                interval_us: 0,
                interval_seq: 0,
                start_seq,
            }),
        }
    }

    /// Refusals are answers, sent once, leaving no state (§8.4).
    fn refuse(&mut self, to: SocketAddr, reason: EndReason) {
        let seq = self.seqs.next();
        tracing::info!(client = %to, ?reason, "registration refused");
        self.send(
            to,
            &PsPacket::StreamEnd {
                seq,
                last_seq: 0,
                reason,
            },
        );
    }

    fn send_movie_pages(&mut self, now: Instant) {
        let pages = self.pages.clone();
        let count = u8::try_from(pages.len()).unwrap_or(u8::MAX);
        for (i, entries) in pages.into_iter().enumerate() {
            let seq = self.seqs.next();
            let page = PsPacket::MoviesAvailable {
                seq,
                page: u8::try_from(i).unwrap_or(u8::MAX),
                pages: count,
                entries,
            };
            self.confirmable(now, self.leader, &page, OutKind::MoviesPage);
        }
    }

    fn send_stream_start(&mut self, now: Instant, to: SocketAddr, start_seq: u64) {
        let Some(s) = &self.stream else { return };
        let packet = PsPacket::StreamStart(StreamStart {
            seq: self.seqs.next(),
            movie_id: s.movie_id,
            interval_us: s.interval_us,
            chunk_size: self.p.chunk_size,
            total_chunks: s.total,
            start_seq,
            paused: matches!(self.phase, Phase::Paused { .. }),
            movie_name: s.name.clone(),
        });
        self.confirmable(now, to, &packet, OutKind::StreamStart);
    }

    /// MEMBER_JOINED / MEMBER_LEFT to the leader, while it is there.
    fn member_notice(&mut self, now: Instant, op: ControlOp, reason: u8, member: SocketAddr) {
        if !self.leader_present || member == self.leader {
            return;
        }
        let c = Control {
            seq: self.seqs.next(),
            op,
            reason,
            position: self.position,
            member: Some(member),
        };
        self.confirmable(now, self.leader, &PsPacket::Control(c), OutKind::Notice);
    }

    /// PAUSED / RESUMED to every member that is (or is about to be) fed.
    fn stream_notice(&mut self, now: Instant, op: ControlOp, reason: u8) {
        let c = PsPacket::Control(Control {
            seq: self.seqs.next(),
            op,
            reason,
            position: self.position,
            member: None,
        });
        let to: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|p| matches!(p.state, PeerState::Joining | PeerState::Active))
            .map(|p| p.addr)
            .collect();
        for addr in to {
            self.confirmable(now, addr, &c, OutKind::Notice);
        }
    }

    fn on_choice(&mut self, now: Instant, from: SocketAddr, seq: u64, movie_id: u16) {
        if usize::from(movie_id) >= self.listings.len() {
            return self.discard(
                now,
                Discard::BadField,
                &format_args!("Movie ID {movie_id} was not offered"),
            );
        }
        let Some(i) = self
            .peer_index(from)
            .filter(|_| from == self.leader && self.leader_present)
        else {
            return self.discard(
                now,
                Discard::Unauthorised,
                &"Movie Choice not from the leader",
            );
        };
        match self.peers[i].replay.check(seq) {
            Replay::Stale => return self.discard(now, Discard::Stale, &"old Movie Choice"),
            Replay::Duplicate => {
                self.discards.record(
                    now,
                    Discard::Duplicate,
                    "session",
                    &"copy of a Movie Choice",
                );
                return self.ack(from, seq);
            }
            Replay::New => {}
        }
        if !matches!(self.phase, Phase::Registration { .. }) {
            return self.discard(now, Discard::Unexpected, &"Movie Choice after the window");
        }
        let peer = &mut self.peers[i];
        peer.replay.mark(seq);
        peer.last_heard = now;
        self.ack(from, seq);
        if self.choice.is_none_or(|(_, s)| seq > s) {
            self.choice = Some((movie_id, seq));
        }
    }

    fn on_control(&mut self, now: Instant, from: SocketAddr, c: Control) {
        let seq = c.seq;
        let Some(i) = self.peer_index(from) else {
            if c.op == ControlOp::Leave
                && self
                    .gone
                    .iter()
                    .any(|g| g.addr == from && g.leave_seq == Some(seq))
            {
                self.discards
                    .record(now, Discard::Duplicate, "session", &"copy of a LEAVE");
                return self.ack(from, seq);
            }
            return self.discard(
                now,
                Discard::Unauthorised,
                &"Control from an endpoint that is not a member",
            );
        };
        let is_leader = from == self.leader && self.leader_present;
        if matches!(c.op, ControlOp::Pause | ControlOp::Resume) && !is_leader {
            return self.discard(
                now,
                Discard::Unauthorised,
                &"PAUSE or RESUME not from the leader",
            );
        }
        match self.peers[i].replay.check(seq) {
            Replay::Stale => return self.discard(now, Discard::Stale, &"old Control"),
            Replay::Duplicate => {
                self.discards
                    .record(now, Discard::Duplicate, "session", &"copy of a Control");
                return self.ack(from, seq);
            }
            Replay::New => {}
        }
        let peer = &mut self.peers[i];
        peer.replay.mark(seq);
        peer.last_heard = now;
        self.ack(from, seq);
        match c.op {
            ControlOp::Leave => self.remove_peer(now, from, Removal::Left { leave_seq: seq }),
            ControlOp::Pause | ControlOp::Resume => {
                if seq <= self.pause_seq {
                    return;
                }
                self.pause_seq = seq;
                match (c.op, self.phase) {
                    (ControlOp::Pause, Phase::Streaming) => self.pause(now),
                    (ControlOp::Resume, Phase::Paused { .. }) => {
                        self.resume(now, wire::RESUMED_BY_LEADER)
                    }
                    _ => {}
                }
            }
            // Ops 4–7 never decode in this direction.
            _ => {}
        }
    }

    fn on_ack(&mut self, now: Instant, from: SocketAddr, seq: u64) {
        let Some(i) = self.peer_index(from) else {
            return self.discard(
                now,
                Discard::Unauthorised,
                &"ACK from an endpoint that is not a member",
            );
        };
        self.peers[i].last_heard = now;
        let Some(o) = self
            .outstanding
            .iter()
            .position(|o| o.to == from && o.seq == seq)
        else {
            if self.recently_acked.contains(&(from, seq)) {
                return self
                    .discards
                    .record(now, Discard::Duplicate, "session", &"copy of an ACK");
            }
            return self.discard(
                now,
                Discard::Unexpected,
                &"ACK matching nothing outstanding",
            );
        };
        let done = self.outstanding.remove(o);
        if self.recently_acked.len() >= 64 {
            self.recently_acked.pop_front();
        }
        self.recently_acked.push_back((from, seq));
        match done.kind {
            OutKind::StreamStart => {
                let peer = &mut self.peers[i];
                if peer.state != PeerState::Joining {
                    return;
                }
                let started = matches!(self.phase, Phase::Streaming | Phase::Paused { .. });
                if started && peer.start_seq < self.position {
                    // Chunk Start Seq has gone out: the lead was wasted.
                    return self.remove_peer(now, from, Removal::Unconfirmed);
                }
                peer.state = PeerState::Active;
                self.maybe_begin(now);
            }
            OutKind::StreamEnd => {
                self.forget_peer(now, from);
                self.maybe_close();
            }
            OutKind::MoviesPage | OutKind::Notice => {}
        }
    }

    // -------------------------------------------------------------- membership

    fn forget_peer(&mut self, now: Instant, addr: SocketAddr) {
        if let Some(i) = self.peer_index(addr) {
            let p = self.peers.remove(i);
            self.remember_gone(now, p.addr, p.replay.highest(), None);
        }
    }

    fn remember_gone(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        highest: u64,
        leave_seq: Option<u64>,
    ) {
        self.gone.retain(|g| g.addr != addr);
        self.gone.push(Gone {
            addr,
            highest,
            leave_seq,
            until: now + self.p.member_timeout,
        });
    }

    /// Removes a member (or the unregistered leader) for `why`, telling it
    /// and the leader as §8.1 and §7.1 require.
    fn remove_peer(&mut self, now: Instant, addr: SocketAddr, why: Removal) {
        let Some(i) = self.peer_index(addr) else {
            return;
        };
        let peer = self.peers.remove(i);
        self.outstanding.retain(|o| o.to != addr);
        let leave_seq = match why {
            Removal::Left { leave_seq } => Some(leave_seq),
            Removal::Timeout | Removal::Unconfirmed => {
                if peer.is_member() || peer.state == PeerState::LeaderOnly {
                    let seq = self.seqs.next();
                    let last_seq = self.position.saturating_sub(1);
                    self.send(
                        addr,
                        &PsPacket::StreamEnd {
                            seq,
                            last_seq,
                            reason: EndReason::Expired,
                        },
                    );
                }
                None
            }
        };
        self.remember_gone(now, addr, peer.replay.highest(), leave_seq);
        let reason = match why {
            Removal::Left { .. } => wire::LEFT_REASON_LEFT,
            Removal::Timeout => wire::LEFT_REASON_TIMEOUT,
            Removal::Unconfirmed => wire::LEFT_REASON_UNCONFIRMED,
        };
        tracing::info!(member = %addr, reason, "member removed");
        metrics::counter!("switchyard_movie_members_removed_total", "reason" => match why {
            Removal::Left { .. } => "left",
            Removal::Timeout => "timeout",
            Removal::Unconfirmed => "unconfirmed",
        })
        .increment(1);
        if addr == self.leader && self.leader_present {
            self.leader_gone(now);
        } else if peer.is_member() {
            self.member_notice(now, ControlOp::MemberLeft, reason, addr);
        }
        if peer.is_member() {
            self.events.push_back(SessionEvent::MemberLeft {
                member: addr,
                reason,
            });
        }
        match self.phase {
            Phase::Starting => self.maybe_begin(now),
            Phase::Streaming | Phase::Paused { .. } => {
                if self.members() == 0 {
                    tracing::info!(port = self.p.port, "last member gone, closing");
                    self.close();
                }
            }
            Phase::Ending => self.maybe_close(),
            Phase::Registration { .. } | Phase::Closed => {}
        }
    }

    fn leader_gone(&mut self, now: Instant) {
        self.leader_present = false;
        self.outstanding
            .retain(|o| !(o.to == self.leader && o.kind == OutKind::Notice));
        match self.phase {
            Phase::Registration { .. } => self.start_ending(now, EndReason::LeaderLeft),
            Phase::Paused { .. } => self.resume(now, wire::RESUMED_LEADER_GONE),
            _ => {}
        }
    }

    // -------------------------------------------------------------- phases

    fn close_window(&mut self, now: Instant) {
        let Some((movie_id, _)) = self.choice else {
            return self.start_ending(now, EndReason::NoMovie);
        };
        if self.members() == 0 {
            return self.start_ending(now, EndReason::NoMembers);
        }
        let Some(movie) = self.p.movies.get(usize::from(movie_id)).cloned() else {
            return self.start_ending(now, EndReason::Error);
        };
        let mut reader = match movie.open() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(movie = %movie.name, error = %e, "cannot open the movie");
                return self.start_ending(now, EndReason::Error);
            }
        };
        let requests: Vec<u32> = self
            .peers
            .iter()
            .filter(|p| p.is_member())
            .map(|p| p.interval_us)
            .collect();
        let default_us = if self.p.interval_from_bitrate {
            self.movie_default_interval(&movie, &mut reader)
        } else {
            self.p.default_interval_us
        };
        let interval_us = final_interval(
            default_us,
            requests,
            self.p.min_interval_us,
            self.p.max_interval_us,
        )
        .max(1);
        let chunk = u64::from(self.p.chunk_size.max(1));
        self.stream = Some(Stream {
            movie_id,
            name: movie.name.clone(),
            interval: Duration::from_micros(u64::from(interval_us)),
            interval_us,
            total: movie.size.div_ceil(chunk),
            size: movie.size,
            reader,
            t0: now,
            paused_total: Duration::ZERO,
        });
        self.phase = Phase::Starting;
        // Movies Available pages still unanswered no longer matter.
        self.outstanding.retain(|o| o.kind != OutKind::MoviesPage);
        tracing::info!(port = self.p.port, movie = %movie.name, interval_us, "window closed, starting");
        let members: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|p| p.is_member())
            .map(|p| p.addr)
            .collect();
        for addr in members {
            if let Some(p) = self.peers.iter_mut().find(|p| p.addr == addr) {
                p.state = PeerState::Joining;
                p.start_seq = 1;
            }
            self.send_stream_start(now, addr, 1);
        }
    }

    /// In STARTING, begins the stream once nobody is left unconfirmed.
    fn maybe_begin(&mut self, now: Instant) {
        if self.phase != Phase::Starting {
            return;
        }
        if self.peers.iter().any(|p| p.state == PeerState::Joining) {
            return;
        }
        if !self.peers.iter().any(|p| p.state == PeerState::Active) {
            tracing::info!(
                port = self.p.port,
                "no member confirmed Stream Start, closing"
            );
            return self.close();
        }
        let Some(s) = &mut self.stream else {
            return self.close();
        };
        s.t0 = now;
        s.paused_total = Duration::ZERO;
        self.phase = Phase::Streaming;
        self.events.push_back(SessionEvent::StreamStarted {
            movie: s.name.clone(),
            interval_us: s.interval_us,
            total_chunks: s.total,
        });
    }

    /// D for `movie` when it is to stream in real time (§6.4).
    fn movie_default_interval(&self, movie: &Movie, reader: &mut MovieReader) -> u32 {
        let derived = bitrate::bit_rate(reader, movie.size)
            .and_then(|bps| Some((bps, bitrate::interval_for(self.p.chunk_size, bps)?)));
        match derived {
            Some((bps, us)) => {
                tracing::info!(port = self.p.port, movie = %movie.name, bit_rate = bps, interval_us = us, "default interval from the bit rate");
                us
            }
            None => {
                tracing::info!(port = self.p.port, movie = %movie.name, interval_us = self.p.default_interval_us, "bit rate unknown, default interval kept");
                self.p.default_interval_us
            }
        }
    }

    fn pause(&mut self, now: Instant) {
        self.phase = Phase::Paused { since: now };
        tracing::info!(port = self.p.port, position = self.position, "paused");
        self.stream_notice(now, ControlOp::Paused, 0);
        self.events.push_back(SessionEvent::Paused {
            position: self.position,
        });
    }

    fn resume(&mut self, now: Instant, reason: u8) {
        let position = self.position;
        if let Some(s) = &mut self.stream {
            // Chosen so that the next chunk is due now (§8.3: "at once").
            let steps = u32::try_from(position.saturating_sub(1)).unwrap_or(u32::MAX);
            let elapsed = now.saturating_duration_since(s.t0);
            s.paused_total = s
                .paused_total
                .max(elapsed.saturating_sub(s.interval.saturating_mul(steps)));
        }
        self.phase = Phase::Streaming;
        tracing::info!(port = self.p.port, position, reason, "resumed");
        self.stream_notice(now, ControlOp::Resumed, reason);
        self.events
            .push_back(SessionEvent::Resumed { position, reason });
    }

    /// Enters ENDING: Stream End with one Seq to every member, and to the
    /// leader endpoint if it is not one (§6.5, §7.3).
    fn start_ending(&mut self, now: Instant, reason: EndReason) {
        if matches!(self.phase, Phase::Ending | Phase::Closed) {
            return;
        }
        self.phase = Phase::Ending;
        self.outstanding.clear();
        self.events.push_back(SessionEvent::Ending(reason));
        tracing::info!(port = self.p.port, ?reason, "session ending");
        let packet = PsPacket::StreamEnd {
            seq: self.seqs.next(),
            last_seq: self.position.saturating_sub(1),
            reason,
        };
        let leader_only = self.leader_present;
        let to: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|p| p.is_member() || (leader_only && p.state == PeerState::LeaderOnly))
            .map(|p| p.addr)
            .collect();
        for addr in to {
            if let Some(p) = self.peers.iter_mut().find(|p| p.addr == addr) {
                p.state = PeerState::Leaving;
            }
            self.confirmable(now, addr, &packet, OutKind::StreamEnd);
        }
        self.maybe_close();
    }

    fn maybe_close(&mut self) {
        if self.phase == Phase::Ending && !self.peers.iter().any(|p| p.state == PeerState::Leaving)
        {
            self.close();
        }
    }

    fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.outstanding.clear();
            self.events.push_back(SessionEvent::Closed);
        }
    }

    /// The server is shutting down: Stream End SHUTDOWN to all (§10.2).
    pub fn shutdown(&mut self, now: Instant) {
        self.start_ending(now, EndReason::Shutdown);
    }

    // -------------------------------------------------------------- timers

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.gone.retain(|g| g.until > now);
        self.retransmit(now);
        self.expire_members(now);
        match self.phase {
            Phase::Registration { closes } if closes <= now => self.close_window(now),
            Phase::Paused { since } if now.saturating_duration_since(since) >= self.p.pause_max => {
                self.resume(now, wire::RESUMED_PAUSE_LIMIT)
            }
            _ => {}
        }
        if self.phase == Phase::Streaming {
            self.send_due_chunks(now);
        }
    }

    fn retransmit(&mut self, now: Instant) {
        let limit = self.p.timers.transmissions;
        let mut exhausted = Vec::new();
        for o in self.outstanding.iter_mut().filter(|o| o.next <= now) {
            if o.sent >= limit {
                exhausted.push((o.to, o.seq, o.kind));
                continue;
            }
            o.sent += 1;
            o.next = now + o.every;
            self.out.push_back(Transmit {
                to: o.to,
                payload: o.payload.clone(),
            });
        }
        for (to, seq, kind) in exhausted {
            self.outstanding.retain(|o| !(o.to == to && o.seq == seq));
            match kind {
                OutKind::StreamStart => self.remove_peer(now, to, Removal::Unconfirmed),
                OutKind::StreamEnd => {
                    self.forget_peer(now, to);
                    self.maybe_close();
                }
                OutKind::MoviesPage | OutKind::Notice => {}
            }
        }
    }

    fn expire_members(&mut self, now: Instant) {
        let timeout = self.p.member_timeout;
        let silent: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|p| {
                p.state != PeerState::Leaving
                    && now.saturating_duration_since(p.last_heard) >= timeout
            })
            .map(|p| p.addr)
            .collect();
        for addr in silent {
            self.remove_peer(now, addr, Removal::Timeout);
        }
    }

    fn send_due_chunks(&mut self, now: Instant) {
        loop {
            let Some(s) = &self.stream else { return };
            let k = self.position;
            if s.due(k) > now {
                return;
            }
            if k > s.total {
                // One interval after the last chunk (§7.3).
                return self.start_ending(now, EndReason::Complete);
            }
            // Late joiners whose first chunk is due now and who have not
            // confirmed are too late (§8.2).
            let late: Vec<SocketAddr> = self
                .peers
                .iter()
                .filter(|p| p.state == PeerState::Joining && p.start_seq <= k)
                .map(|p| p.addr)
                .collect();
            for addr in late {
                self.remove_peer(now, addr, Removal::Unconfirmed);
            }
            if self.phase != Phase::Streaming {
                return;
            }
            let chunk = u64::from(self.p.chunk_size.max(1));
            let Some(s) = &mut self.stream else { return };
            let offset = (k - 1).saturating_mul(chunk);
            let len = usize::try_from(s.size.saturating_sub(offset).min(chunk)).unwrap_or(0);
            let data = match s.reader.read(offset, len) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(port = self.p.port, chunk = k, error = %e, "movie unreadable");
                    return self.start_ending(now, EndReason::Error);
                }
            };
            let late = now.saturating_duration_since(s.due(k));
            self.pacing.chunks += 1;
            self.pacing.max_late = self.pacing.max_late.max(late);
            self.pacing.total_late = self.pacing.total_late.saturating_add(late);
            metrics::histogram!("switchyard_movie_pacing_lateness_seconds")
                .record(late.as_secs_f64());
            let payload = PsPacket::MovieData { seq: k, data }.encode();
            let mut n = 0u64;
            for p in self
                .peers
                .iter()
                .filter(|p| p.state == PeerState::Active && p.start_seq <= k)
            {
                self.out.push_back(Transmit {
                    to: p.addr,
                    payload: payload.clone(),
                });
                n += 1;
            }
            self.chunks_sent += n;
            metrics::counter!("switchyard_movie_data_packets_total").increment(n);
            self.position = k + 1;
        }
    }

    // -------------------------------------------------------------- output

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`ServerSession::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for o in &self.outstanding {
            consider(o.next);
        }
        for p in self.peers.iter().filter(|p| p.state != PeerState::Leaving) {
            consider(p.last_heard + self.p.member_timeout);
        }
        match self.phase {
            Phase::Registration { closes } => consider(closes),
            Phase::Paused { since } => consider(since + self.p.pause_max),
            Phase::Streaming => {
                if let Some(s) = &self.stream {
                    consider(s.due(self.position));
                }
            }
            _ => {}
        }
        next
    }
}

#[cfg(test)]
mod tests;
