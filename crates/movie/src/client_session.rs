//! The client's protocol logic, sans-IO: [`ClientSession`] is a leader or a
//! member (§10.4) and [`ListQuery`] asks P0 for its sessions (§8.5).
//!
//! Like the server side they are fed `(now, from, datagram)` and timer ticks
//! and drained with `poll_transmit`, `poll_event` and `poll_timeout`; they
//! keep the statistics of §11.1 and decide when the stream is dead (§11.2).
//! Movie Data is handed out as [`ClientEvent::Data`] with the file offset,
//! so the driver can write the movie where it belongs.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Transmit;
use crate::wire::{
    self, Control, ControlOp, Direction, EndReason, MovieListing, P0Packet, PsPacket, SessionEntry,
    StreamStart,
};

/// Client-side timers and limits of §9.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimers {
    pub rtx_handshake: Duration,
    pub rtx_stream: Duration,
    pub transmissions: u32,
    pub attempts: u32,
    pub refusal_backoff: Duration,
    pub refresh: Duration,
    pub dead: Duration,
    pub drain: Duration,
}

impl Default for ClientTimers {
    fn default() -> Self {
        ClientTimers {
            rtx_handshake: Duration::from_secs(1),
            rtx_stream: Duration::from_millis(200),
            transmissions: 5,
            attempts: 3,
            refusal_backoff: Duration::from_secs(1),
            refresh: Duration::from_secs(1),
            dead: Duration::from_secs(5),
            drain: Duration::from_millis(250),
        }
    }
}

/// How the leader picks the movie once the list is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovieSelector {
    /// The first movie offered.
    First,
    Id(u16),
    Name(String),
    /// Wait for [`ClientSession::choose`] (the driver asks the user).
    Ask,
}

impl std::str::FromStr for MovieSelector {
    type Err = std::convert::Infallible;

    /// A number is an ID, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<u16>() {
            Ok(id) => MovieSelector::Id(id),
            Err(_) => MovieSelector::Name(s.to_owned()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Negotiates a session with the server's P0, then registers on it.
    Leader {
        server: SocketAddr,
        requested_port: u16,
        movie: MovieSelector,
    },
    /// Registers on a known session address (`host:Ps`).
    Member { session: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientParams {
    pub role: Role,
    /// Interval asked for in Registration Requests, µs; 0 for none.
    pub interval_us: u32,
    pub timers: ClientTimers,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the server did not give a session port after {0} attempts")]
    Handshake(u32),
    #[error("the server did not answer the registration")]
    Registration,
    #[error("the server did not accept the movie choice")]
    MovieChoice,
    #[error("no movie {wanted} on this server; offered: {offered}")]
    NoSuchMovie { wanted: String, offered: String },
    #[error("the server offers no movie")]
    EmptyList,
    #[error("the stream is dead: nothing heard from the server")]
    StreamDead,
}

/// How a client's participation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stream End COMPLETE arrived.
    Complete,
    /// Stream End with another reason after the client was a member.
    Ended(EndReason),
    /// Registration refused (FULL, CLOSED, …).
    Refused(EndReason),
    /// The user quit.
    Quit,
    Failed(ClientError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The leader's session exists; people join it at this address.
    SessionReady(SocketAddr),
    Registered,
    /// The complete movie list (leader).
    MoviesListed(Vec<MovieListing>),
    MovieChosen(MovieListing),
    StreamStarted(StreamStart),
    Data {
        seq: u64,
        offset: u64,
        data: Bytes,
    },
    Paused {
        position: u64,
    },
    Resumed {
        position: u64,
        reason: u8,
    },
    MemberJoined {
        member: Option<SocketAddr>,
        position: u64,
    },
    MemberLeft {
        member: Option<SocketAddr>,
        reason: u8,
        position: u64,
    },
    /// A PAUSE or RESUME went unanswered.
    ControlUnanswered(ControlOp),
    Finished(Outcome),
}

/// The counters of §11.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub invalid: u64,
    pub bytes: u64,
    /// Start Seq from the Stream Start; 0 before it.
    pub start_seq: u64,
    pub total_chunks: u64,
    /// Highest data Seq received.
    pub highest: u64,
    /// Last Seq of the Stream End, once one arrived.
    pub end: Option<u64>,
    seen: Vec<u64>,
}

/// Chunks a client tracks at most (about 176 GB at the default chunk size);
/// beyond that a Total chunks value is not believed.
const MAX_TRACKED: u64 = 1 << 27;

impl Stats {
    pub fn lost(&self) -> u64 {
        if self.start_seq == 0 {
            return 0;
        }
        let end = match (self.end, self.received) {
            (Some(e), _) => e,
            (None, 0) => return 0,
            (None, _) => self.highest,
        };
        if end < self.start_seq {
            return 0;
        }
        (end - self.start_seq + 1).saturating_sub(self.received)
    }

    /// Records a valid Movie Data; false for a duplicate.
    fn record(&mut self, seq: u64, len: usize) -> bool {
        let index = seq - self.start_seq;
        let (word, bit) = ((index / 64) as usize, index % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[word] |= 1 << bit;
        if seq < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(seq);
        self.received += 1;
        self.bytes += len as u64;
        true
    }

    /// The one-line summary of §11.1.
    pub fn line(&self) -> String {
        format!(
            "received={} lost={} out_of_order={} duplicates={} invalid={}",
            self.received,
            self.lost(),
            self.out_of_order,
            self.duplicates,
            self.invalid
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PortRequest,
    PortReply,
    Registration,
    MovieChoice,
    Control(ControlOp),
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    to: SocketAddr,
    payload: Bytes,
    sent: u32,
    next: Instant,
    every: Duration,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AllocWait,
    Backoff { until: Instant },
    AckWait,
    RegWait,
    Registered,
    Streaming,
    Paused,
    Leaving,
    Draining { until: Instant },
    Done,
}

/// A leader or member, from the first packet to the statistics.
#[derive(Debug)]
pub struct ClientSession {
    p: ClientParams,
    phase: Phase,
    server: Option<SocketAddr>,
    session: Option<SocketAddr>,
    seq: u64,
    attempt: u32,
    pending: Vec<Pending>,
    next_refresh: Option<Instant>,
    refreshes: VecDeque<u64>,
    last_heard: Instant,
    last_data_or_start: Instant,
    pages: Vec<Option<Vec<MovieListing>>>,
    listed: bool,
    chosen: bool,
    start: Option<StreamStart>,
    notice_seq: u64,
    notices_seen: HashSet<u64>,
    end_reason: Option<EndReason>,
    outcome: Option<Outcome>,
    stats: Stats,
    out: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    /// Datagrams discarded for a wrong source, type, length or state.
    pub discarded: u64,
}

impl ClientSession {
    pub fn new(params: ClientParams, now: Instant) -> Self {
        let mut c = ClientSession {
            phase: Phase::AllocWait,
            server: None,
            session: None,
            seq: 0,
            attempt: 0,
            pending: Vec::new(),
            next_refresh: None,
            refreshes: VecDeque::new(),
            last_heard: now,
            last_data_or_start: now,
            pages: Vec::new(),
            listed: false,
            chosen: false,
            start: None,
            notice_seq: 0,
            notices_seen: HashSet::new(),
            end_reason: None,
            outcome: None,
            stats: Stats::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            discarded: 0,
            p: params,
        };
        match c.p.role.clone() {
            Role::Leader { server, .. } => {
                c.server = Some(server);
                c.start_attempt(now);
            }
            Role::Member { session } => {
                c.session = Some(session);
                c.register(now);
            }
        }
        c
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn stream(&self) -> Option<&StreamStart> {
        self.start.as_ref()
    }

    pub fn session_addr(&self) -> Option<SocketAddr> {
        self.session
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    pub fn is_paused(&self) -> bool {
        self.phase == Phase::Paused
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.p.role, Role::Leader { .. })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn confirmable(&mut self, now: Instant, to: SocketAddr, packet: Bytes, seq: u64, kind: Kind) {
        let every = match kind {
            Kind::Control(_) => self.p.timers.rtx_stream,
            _ => self.p.timers.rtx_handshake,
        };
        self.out.push_back(Transmit {
            to,
            payload: packet.clone(),
        });
        self.pending.push(Pending {
            seq,
            to,
            payload: packet,
            sent: 1,
            next: now + every,
            every,
            kind,
        });
    }

    fn send(&mut self, to: SocketAddr, payload: Bytes) {
        self.out.push_back(Transmit { to, payload });
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        self.pending.clear();
        self.next_refresh = None;
        self.outcome = Some(outcome.clone());
        self.events.push_back(ClientEvent::Finished(outcome));
    }

    // -------------------------------------------------------------- handshake

    fn start_attempt(&mut self, now: Instant) {
        let (Some(server), Role::Leader { requested_port, .. }) = (self.server, &self.p.role)
        else {
            return;
        };
        let port = *requested_port;
        self.attempt += 1;
        if self.attempt > self.p.timers.attempts {
            return self.finish(Outcome::Failed(ClientError::Handshake(
                self.p.timers.attempts,
            )));
        }
        self.pending.clear();
        self.phase = Phase::AllocWait;
        let seq = self.next_seq();
        let packet = P0Packet::PortRequest { seq, port }.encode();
        self.confirmable(now, server, packet, seq, Kind::PortRequest);
    }

    fn attempt_failed(&mut self, now: Instant, backoff: bool) {
        self.pending.clear();
        if self.attempt >= self.p.timers.attempts {
            return self.finish(Outcome::Failed(ClientError::Handshake(self.attempt)));
        }
        if backoff {
            self.phase = Phase::Backoff {
                until: now + self.p.timers.refusal_backoff,
            };
        } else {
            self.start_attempt(now);
        }
    }

    fn on_p0(&mut self, now: Instant, packet: P0Packet) {
        match (self.phase, packet) {
            (Phase::AllocWait, P0Packet::PortAllocated { seq, port }) => {
                if !self
                    .pending
                    .iter()
                    .any(|p| p.kind == Kind::PortRequest && p.seq == seq)
                {
                    self.discarded += 1;
                    return;
                }
                if port == 0 {
                    tracing::info!(
                        attempt = self.attempt,
                        "server refused the session (Port 0)"
                    );
                    return self.attempt_failed(now, true);
                }
                let Some(server) = self.server else { return };
                self.pending.clear();
                self.session = Some(SocketAddr::new(server.ip(), port));
                self.phase = Phase::AckWait;
                let seq = self.next_seq();
                let packet = P0Packet::PortReply {
                    seq,
                    port,
                    ok: true,
                }
                .encode();
                self.confirmable(now, server, packet, seq, Kind::PortReply);
            }
            (Phase::AckWait, P0Packet::Ack { seq }) => {
                if !self
                    .pending
                    .iter()
                    .any(|p| p.kind == Kind::PortReply && p.seq == seq)
                {
                    self.discarded += 1;
                    return;
                }
                self.pending.clear();
                if let Some(addr) = self.session {
                    self.events.push_back(ClientEvent::SessionReady(addr));
                }
                self.last_heard = now;
                self.register(now);
            }
            _ => self.discarded += 1,
        }
    }

    // -------------------------------------------------------------- session

    fn register(&mut self, now: Instant) {
        let Some(to) = self.session else { return };
        self.phase = Phase::RegWait;
        self.last_heard = now;
        let seq = self.next_seq();
        let packet = PsPacket::RegistrationRequest {
            seq,
            interval_us: self.p.interval_us,
        }
        .encode();
        self.confirmable(now, to, packet, seq, Kind::Registration);
    }

    fn registered(&mut self, now: Instant) {
        if self.phase == Phase::RegWait {
            self.phase = Phase::Registered;
            self.pending.retain(|p| p.kind != Kind::Registration);
            self.next_refresh = Some(now + self.p.timers.refresh);
            self.events.push_back(ClientEvent::Registered);
        }
    }

    fn in_session(&self) -> bool {
        matches!(
            self.phase,
            Phase::Registered | Phase::Streaming | Phase::Paused | Phase::Leaving
        )
    }

    fn ack(&mut self, seq: u64) {
        if let Some(to) = self.session {
            self.send(to, PsPacket::Ack { seq }.encode());
        }
    }

    fn on_ps(&mut self, now: Instant, packet: PsPacket) {
        if matches!(
            self.phase,
            Phase::AllocWait | Phase::AckWait | Phase::Backoff { .. } | Phase::Done
        ) {
            self.discarded += 1;
            return;
        }
        self.last_heard = now;
        match packet {
            PsPacket::Ack { seq } => self.on_ack(now, seq),
            PsPacket::MoviesAvailable {
                seq,
                page,
                pages,
                entries,
            } => {
                if !self.is_leader() {
                    self.discarded += 1;
                    return;
                }
                self.registered(now);
                self.ack(seq);
                self.on_page(now, page, pages, entries);
            }
            PsPacket::StreamStart(s) => {
                self.ack(s.seq);
                self.registered(now);
                self.on_stream_start(now, s);
            }
            PsPacket::MovieData { seq, data } => self.on_data(now, seq, data),
            PsPacket::StreamEnd {
                seq,
                last_seq,
                reason,
            } => {
                self.ack(seq);
                self.on_stream_end(now, last_seq, reason);
            }
            PsPacket::Control(c) => {
                if !self.in_session() && !matches!(self.phase, Phase::Draining { .. }) {
                    self.discarded += 1;
                    return;
                }
                self.ack(c.seq);
                self.on_notice(c);
            }
            PsPacket::RegistrationRequest { .. } | PsPacket::MovieChoice { .. } => {
                self.discarded += 1
            }
        }
    }

    fn on_ack(&mut self, now: Instant, seq: u64) {
        if let Some(i) = self.pending.iter().position(|p| p.seq == seq) {
            let done = self.pending.remove(i);
            match done.kind {
                Kind::Registration => self.registered(now),
                Kind::Control(ControlOp::Leave) => self.finish(Outcome::Quit),
                _ => {}
            }
        } else if !self.refreshes.contains(&seq) {
            self.discarded += 1;
        }
    }

    fn on_page(&mut self, now: Instant, page: u8, pages: u8, entries: Vec<MovieListing>) {
        if self.listed {
            return;
        }
        if self.pages.len() != usize::from(pages) {
            self.pages = vec![None; usize::from(pages)];
        }
        if let Some(slot) = self.pages.get_mut(usize::from(page)) {
            *slot = Some(entries);
        }
        if self.pages.iter().all(Option::is_some) {
            self.listed = true;
            let list: Vec<MovieListing> = self.pages.iter().flatten().flatten().cloned().collect();
            self.events
                .push_back(ClientEvent::MoviesListed(list.clone()));
            let Role::Leader { movie, .. } = &self.p.role else {
                return;
            };
            let pick = match movie {
                MovieSelector::Ask => return,
                MovieSelector::First => list.first().cloned().ok_or(ClientError::EmptyList),
                MovieSelector::Id(id) => list
                    .iter()
                    .find(|m| m.id == *id)
                    .cloned()
                    .ok_or_else(|| no_such(id.to_string(), &list)),
                MovieSelector::Name(n) => list
                    .iter()
                    .find(|m| &m.name == n)
                    .cloned()
                    .ok_or_else(|| no_such(n.clone(), &list)),
            };
            match pick {
                Ok(m) => self.choose(now, m.id),
                Err(e) => {
                    self.leave_once(wire::LEAVE_USER);
                    self.finish(Outcome::Failed(e));
                }
            }
        }
    }

    /// The leader's choice (called by itself, or by the driver after
    /// [`ClientEvent::MoviesListed`] with [`MovieSelector::Ask`]). A later
    /// call replaces the choice while the window is open.
    pub fn choose(&mut self, now: Instant, movie_id: u16) {
        let Some(to) = self.session else { return };
        if !self.is_leader() || self.start.is_some() || self.phase == Phase::Done {
            return;
        }
        if let Some(m) = self
            .pages
            .iter()
            .flatten()
            .flatten()
            .find(|m| m.id == movie_id)
            .cloned()
        {
            self.events.push_back(ClientEvent::MovieChosen(m));
        }
        self.chosen = true;
        self.pending.retain(|p| p.kind != Kind::MovieChoice);
        let seq = self.next_seq();
        let packet = PsPacket::MovieChoice { seq, movie_id }.encode();
        self.confirmable(now, to, packet, seq, Kind::MovieChoice);
    }

    fn on_stream_start(&mut self, now: Instant, s: StreamStart) {
        if self.start.as_ref().is_some_and(|old| old.seq >= s.seq)
            || matches!(self.phase, Phase::Draining { .. } | Phase::Leaving)
        {
            return;
        }
        self.pending.retain(|p| p.kind != Kind::MovieChoice);
        if s.total_chunks.saturating_sub(s.start_seq) >= MAX_TRACKED {
            tracing::warn!(
                total = s.total_chunks,
                "Stream Start with an unbelievable size"
            );
        }
        self.stats.start_seq = s.start_seq;
        self.stats.total_chunks = s.total_chunks;
        self.phase = if s.paused {
            Phase::Paused
        } else {
            Phase::Streaming
        };
        self.last_data_or_start = now;
        self.events.push_back(ClientEvent::StreamStarted(s.clone()));
        self.start = Some(s);
    }

    fn on_data(&mut self, now: Instant, seq: u64, data: Bytes) {
        let Some(s) = &self.start else {
            self.stats.invalid += 1;
            return;
        };
        let chunk = usize::from(s.chunk_size);
        let in_range =
            seq >= s.start_seq && seq <= s.total_chunks && seq - s.start_seq < MAX_TRACKED;
        let right_len = if seq == s.total_chunks {
            data.len() <= chunk
        } else {
            data.len() == chunk
        };
        if !in_range || !right_len || self.phase == Phase::Done {
            self.stats.invalid += 1;
            return;
        }
        let offset = (seq - 1).saturating_mul(chunk as u64);
        self.last_data_or_start = now;
        if self.stats.record(seq, data.len()) {
            self.events
                .push_back(ClientEvent::Data { seq, offset, data });
        }
    }

    fn on_stream_end(&mut self, now: Instant, last_seq: u64, reason: EndReason) {
        match self.phase {
            Phase::RegWait => {
                // A refusal (§8.4): it carries no statistics.
                self.finish(Outcome::Refused(reason));
            }
            Phase::Draining { .. } | Phase::Done => {}
            _ => {
                self.end_reason = Some(reason);
                if self.start.is_some() {
                    self.stats.end = Some(last_seq);
                }
                self.pending.clear();
                self.next_refresh = None;
                self.phase = Phase::Draining {
                    until: now + self.p.timers.drain,
                };
            }
        }
    }

    fn on_notice(&mut self, c: Control) {
        match c.op {
            ControlOp::Paused | ControlOp::Resumed => {
                if c.seq <= self.notice_seq {
                    return;
                }
                self.notice_seq = c.seq;
                if c.op == ControlOp::Paused {
                    if self.phase == Phase::Streaming {
                        self.phase = Phase::Paused;
                    }
                    self.events.push_back(ClientEvent::Paused {
                        position: c.position,
                    });
                } else {
                    if self.phase == Phase::Paused {
                        self.phase = Phase::Streaming;
                        // The silence of the pause does not count (§11.2).
                        self.last_data_or_start = self.last_heard;
                    }
                    self.events.push_back(ClientEvent::Resumed {
                        position: c.position,
                        reason: c.reason,
                    });
                }
            }
            ControlOp::MemberJoined | ControlOp::MemberLeft => {
                if !self.notices_seen.insert(c.seq) {
                    return;
                }
                if self.notices_seen.len() > 4096 {
                    self.notices_seen.clear();
                    self.notices_seen.insert(c.seq);
                }
                self.events.push_back(if c.op == ControlOp::MemberJoined {
                    ClientEvent::MemberJoined {
                        member: c.member,
                        position: c.position,
                    }
                } else {
                    ClientEvent::MemberLeft {
                        member: c.member,
                        reason: c.reason,
                        position: c.position,
                    }
                });
            }
            ControlOp::Leave | ControlOp::Pause | ControlOp::Resume => {}
        }
    }

    fn leave_once(&mut self, reason: u8) {
        if let Some(to) = self.session {
            let seq = self.next_seq();
            self.send(
                to,
                PsPacket::Control(Control::request(seq, ControlOp::Leave, reason)).encode(),
            );
        }
    }

    // -------------------------------------------------------------- user actions

    /// The user quits: LEAVE until ACKed (at most 5 times), then done.
    pub fn quit(&mut self, now: Instant) {
        match self.phase {
            Phase::Registered | Phase::Streaming | Phase::Paused | Phase::RegWait => {
                let Some(to) = self.session else {
                    return self.finish(Outcome::Quit);
                };
                self.pending.clear();
                self.next_refresh = None;
                self.phase = Phase::Leaving;
                let seq = self.next_seq();
                let packet =
                    PsPacket::Control(Control::request(seq, ControlOp::Leave, wire::LEAVE_USER))
                        .encode();
                self.confirmable(now, to, packet, seq, Kind::Control(ControlOp::Leave));
            }
            Phase::Leaving | Phase::Done => {}
            _ => self.finish(Outcome::Quit),
        }
    }

    /// Leader only: asks the server to pause (`true`) or resume.
    pub fn set_paused(&mut self, now: Instant, paused: bool) {
        let Some(to) = self.session else { return };
        if !self.is_leader() || !self.in_session() || self.phase == Phase::Leaving {
            return;
        }
        let op = if paused {
            ControlOp::Pause
        } else {
            ControlOp::Resume
        };
        let seq = self.next_seq();
        let packet = PsPacket::Control(Control::request(seq, op, 0)).encode();
        self.confirmable(now, to, packet, seq, Kind::Control(op));
    }

    // -------------------------------------------------------------- input

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        let from_p0 =
            matches!(self.phase, Phase::AllocWait | Phase::AckWait) && Some(from) == self.server;
        if from_p0 {
            match wire::decode_p0(buf, Direction::ToClient) {
                Ok(p) => self.on_p0(now, p),
                Err(_) => self.discarded += 1,
            }
        } else if Some(from) == self.session {
            match wire::decode_ps(buf, Direction::ToClient) {
                Ok(p) => self.on_ps(now, p),
                Err(e) => {
                    if buf.first() == Some(&0x20) && self.start.is_some() {
                        self.stats.invalid += 1;
                    }
                    tracing::trace!(error = %e, "discarded datagram from the session");
                    self.discarded += 1;
                }
            }
        } else {
            self.discarded += 1;
        }
        self.handle_timeout(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        if let Phase::Backoff { until } = self.phase {
            if until <= now {
                self.start_attempt(now);
            }
            return;
        }
        if let Phase::Draining { until } = self.phase {
            if until <= now {
                let outcome = match self.end_reason {
                    Some(EndReason::Complete) => Outcome::Complete,
                    Some(r) => Outcome::Ended(r),
                    None => Outcome::Ended(EndReason::Error),
                };
                self.finish(outcome);
            }
            return;
        }
        self.retransmit(now);
        if self.phase == Phase::Done {
            return;
        }
        if let Some(t) = self.next_refresh
            && t <= now
            && let Some(to) = self.session
        {
            let seq = self.next_seq();
            self.send(
                to,
                PsPacket::RegistrationRequest {
                    seq,
                    interval_us: self.p.interval_us,
                }
                .encode(),
            );
            if self.refreshes.len() >= 16 {
                self.refreshes.pop_front();
            }
            self.refreshes.push_back(seq);
            self.next_refresh = Some(now + self.p.timers.refresh);
        }
        if let Some(deadline) = self.dead_deadline()
            && deadline <= now
        {
            tracing::warn!("stream dead");
            self.leave_once(wire::LEAVE_STREAM_DEAD);
            self.finish(Outcome::Failed(ClientError::StreamDead));
        }
    }

    fn dead_deadline(&self) -> Option<Instant> {
        if !matches!(
            self.phase,
            Phase::Registered | Phase::Streaming | Phase::Paused
        ) {
            return None;
        }
        let silent = self.last_heard + self.p.timers.dead;
        if self.phase != Phase::Streaming {
            return Some(silent);
        }
        let interval = self.start.as_ref().map_or(0, |s| u64::from(s.interval_us));
        let data_gap = Duration::from_micros(interval.saturating_mul(20)).max(self.p.timers.dead);
        Some(silent.min(self.last_data_or_start + data_gap))
    }

    fn retransmit(&mut self, now: Instant) {
        let limit = self.p.timers.transmissions;
        let mut exhausted = Vec::new();
        for p in self.pending.iter_mut().filter(|p| p.next <= now) {
            if p.sent >= limit {
                exhausted.push(p.kind);
                continue;
            }
            p.sent += 1;
            p.next = now + p.every;
            self.out.push_back(Transmit {
                to: p.to,
                payload: p.payload.clone(),
            });
        }
        self.pending.retain(|p| !(p.next <= now && p.sent >= limit));
        for kind in exhausted {
            match kind {
                Kind::PortRequest | Kind::PortReply => return self.attempt_failed(now, false),
                Kind::Registration => {
                    return self.finish(Outcome::Failed(ClientError::Registration));
                }
                Kind::MovieChoice => {
                    self.leave_once(wire::LEAVE_USER);
                    return self.finish(Outcome::Failed(ClientError::MovieChoice));
                }
                Kind::Control(ControlOp::Leave) => return self.finish(Outcome::Quit),
                Kind::Control(op) => self.events.push_back(ClientEvent::ControlUnanswered(op)),
            }
        }
    }

    // -------------------------------------------------------------- output

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match self.phase {
            Phase::Done => return None,
            Phase::Backoff { until } | Phase::Draining { until } => return Some(until),
            _ => {}
        }
        for p in &self.pending {
            consider(p.next);
        }
        if let Some(t) = self.next_refresh {
            consider(t);
        }
        if let Some(t) = self.dead_deadline() {
            consider(t);
        }
        next
    }
}

fn no_such(wanted: String, list: &[MovieListing]) -> ClientError {
    let offered = list
        .iter()
        .map(|m| format!("{} {}", m.id, m.name))
        .collect::<Vec<_>>()
        .join(", ");
    ClientError::NoSuchMovie { wanted, offered }
}

// ------------------------------------------------------------ session list

/// Session List Requests, page after page, until every entry is known.
#[derive(Debug)]
pub struct ListQuery {
    server: SocketAddr,
    timers: ClientTimers,
    seq: u64,
    start: u16,
    sent: u32,
    next: Instant,
    entries: Vec<SessionEntry>,
    done: Option<Result<(), ()>>,
    out: VecDeque<Transmit>,
}

impl ListQuery {
    pub fn new(server: SocketAddr, timers: ClientTimers, now: Instant) -> Self {
        let mut q = ListQuery {
            server,
            timers,
            seq: 0,
            start: 0,
            sent: 0,
            next: now,
            entries: Vec::new(),
            done: None,
            out: VecDeque::new(),
        };
        q.request(now);
        q
    }

    fn request(&mut self, now: Instant) {
        self.seq += 1;
        self.sent = 1;
        self.next = now + self.timers.rtx_handshake;
        let payload = P0Packet::SessionListRequest {
            seq: self.seq,
            start: self.start,
        }
        .encode();
        self.out.push_back(Transmit {
            to: self.server,
            payload,
        });
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        if from != self.server || self.done.is_some() {
            return;
        }
        let Ok(P0Packet::SessionList {
            seq,
            total,
            start,
            entries,
        }) = wire::decode_p0(buf, Direction::ToClient)
        else {
            return;
        };
        if seq != self.seq || start != self.start {
            return;
        }
        let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
        self.entries.extend(entries);
        let next_start = start.saturating_add(count);
        if count == 0 || next_start >= total {
            self.done = Some(Ok(()));
        } else {
            self.start = next_start;
            self.request(now);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done.is_some() || self.next > now {
            return;
        }
        if self.sent >= self.timers.transmissions {
            self.done = Some(Err(()));
            return;
        }
        self.sent += 1;
        self.next = now + self.timers.rtx_handshake;
        let payload = P0Packet::SessionListRequest {
            seq: self.seq,
            start: self.start,
        }
        .encode();
        self.out.push_back(Transmit {
            to: self.server,
            payload,
        });
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.done.is_none().then_some(self.next)
    }

    /// `Some(Ok(entries))` when complete, `Some(Err(()))` if the server never
    /// answered, `None` while asking.
    pub fn result(&self) -> Option<Result<&[SessionEntry], ()>> {
        self.done.map(|r| r.map(|()| self.entries.as_slice()))
    }
}

#[cfg(test)]
mod tests;
