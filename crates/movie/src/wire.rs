//! Bytes to typed packets and back, exactly as §3–§4 of the movie protocol
//! reference lay them out.
//!
//! The same type value means different packets on P0 and on Ps, and some
//! packets only ever travel one way, so decoding always takes the port
//! ([`decode_p0`], [`decode_ps`]) and the [`Direction`] the datagram travels:
//! a server decoding with [`Direction::ToServer`] treats a Stream End sent by
//! a client as an unknown type, as §12.1 requires.
//!
//! Checks run in the order of §12.1 (size, header, type, length, Seq, fields)
//! so that the discard counter named by [`DecodeError::discard`] is the one
//! the reference's table expects. No check reads a byte before the length has
//! been proven, and nothing a datagram says can make the decoder allocate
//! more than the datagram itself.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};

/// Largest datagram of the protocol (§3.2).
pub const MAX_DATAGRAM: usize = 1400;
/// Type plus Seq (§3.4).
pub const HEADER_LEN: usize = 9;
/// Largest chunk that still fits a Movie Data datagram.
pub const MAX_CHUNK_SIZE: u16 = (MAX_DATAGRAM - HEADER_LEN) as u16;
/// Movie ID meaning "none chosen" in a Session List entry.
pub const NO_MOVIE_ID: u16 = 0xFFFF;

pub const LEN_PORT_REQUEST: usize = 11;
pub const LEN_PORT_ALLOCATED: usize = 11;
pub const LEN_PORT_REPLY: usize = 12;
pub const LEN_ACK: usize = 9;
pub const LEN_SESSION_LIST_REQUEST: usize = MAX_DATAGRAM;
pub const LEN_REGISTRATION: usize = 13;
pub const LEN_MOVIE_CHOICE: usize = 11;
pub const LEN_STREAM_END: usize = 18;
pub const LEN_CONTROL: usize = 37;
const SESSION_LIST_FIXED: usize = 14;
const MOVIES_AVAILABLE_FIXED: usize = 12;
const STREAM_START_FIXED: usize = 35;

/// Which way a datagram travels; some types only exist in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// Why a datagram was discarded: the counters of §12.1, in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Discard {
    Oversized,
    Truncated,
    UnknownType,
    BadLength,
    BadField,
    Unauthorised,
    Duplicate,
    Stale,
    Unexpected,
    RateLimited,
}

impl Discard {
    pub const ALL: [Discard; 10] = [
        Discard::Oversized,
        Discard::Truncated,
        Discard::UnknownType,
        Discard::BadLength,
        Discard::BadField,
        Discard::Unauthorised,
        Discard::Duplicate,
        Discard::Stale,
        Discard::Unexpected,
        Discard::RateLimited,
    ];

    /// The counter name used in metrics labels and logs (§12.1, §14.10).
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::Oversized => "oversized",
            Discard::Truncated => "truncated",
            Discard::UnknownType => "unknown_type",
            Discard::BadLength => "bad_length",
            Discard::BadField => "bad_field",
            Discard::Unauthorised => "unauthorised",
            Discard::Duplicate => "duplicate",
            Discard::Stale => "stale",
            Discard::Unexpected => "unexpected",
            Discard::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is longer than 1400")]
    Oversized(usize),
    #[error("datagram of {0} bytes is shorter than the 9-byte header")]
    Truncated(usize),
    #[error("type 0x{0:02x} is not accepted here")]
    UnknownType(u8),
    #[error("{len} bytes is not the length a packet of type 0x{kind:02x} implies")]
    BadLength { kind: u8, len: usize },
    #[error("invalid field: {0}")]
    BadField(&'static str),
}

impl DecodeError {
    pub fn discard(&self) -> Discard {
        match self {
            DecodeError::Oversized(_) => Discard::Oversized,
            DecodeError::Truncated(_) => Discard::Truncated,
            DecodeError::UnknownType(_) => Discard::UnknownType,
            DecodeError::BadLength { .. } => Discard::BadLength,
            DecodeError::BadField(_) => Discard::BadField,
        }
    }
}

/// Session states as listed in Session List (§4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Registration = 1,
    Starting = 2,
    Streaming = 3,
    Paused = 4,
    Ending = 5,
}

impl SessionState {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => SessionState::Registration,
            2 => SessionState::Starting,
            3 => SessionState::Streaming,
            4 => SessionState::Paused,
            5 => SessionState::Ending,
            _ => return None,
        })
    }
}

/// Stream End reasons (§4.3.2). Unknown values are kept so a client can
/// report them, and are treated as ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Complete,
    NoMovie,
    NoMembers,
    LeaderLeft,
    Full,
    Closed,
    Expired,
    Shutdown,
    Error,
    Other(u8),
}

impl EndReason {
    pub fn to_u8(self) -> u8 {
        match self {
            EndReason::Complete => 0,
            EndReason::NoMovie => 1,
            EndReason::NoMembers => 2,
            EndReason::LeaderLeft => 3,
            EndReason::Full => 4,
            EndReason::Closed => 5,
            EndReason::Expired => 6,
            EndReason::Shutdown => 7,
            EndReason::Error => 8,
            EndReason::Other(v) => v,
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => EndReason::Complete,
            1 => EndReason::NoMovie,
            2 => EndReason::NoMembers,
            3 => EndReason::LeaderLeft,
            4 => EndReason::Full,
            5 => EndReason::Closed,
            6 => EndReason::Expired,
            7 => EndReason::Shutdown,
            8 => EndReason::Error,
            other => EndReason::Other(other),
        }
    }

    /// Words for people, used by the client when it stops.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Complete => "the whole movie was sent",
            EndReason::NoMovie => "the registration window closed without a movie choice",
            EndReason::NoMembers => "no member was left when the window closed",
            EndReason::LeaderLeft => "the leader left before the stream started",
            EndReason::Full => "the session is full",
            EndReason::Closed => "the session does not take new members now",
            EndReason::Expired => "the server removed this client",
            EndReason::Shutdown => "the server is shutting down",
            EndReason::Error | EndReason::Other(_) => "the server could not go on",
        }
    }
}

/// Control operations (§4.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    Leave = 1,
    Pause = 2,
    Resume = 3,
    MemberJoined = 4,
    MemberLeft = 5,
    Paused = 6,
    Resumed = 7,
}

impl ControlOp {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ControlOp::Leave,
            2 => ControlOp::Pause,
            3 => ControlOp::Resume,
            4 => ControlOp::MemberJoined,
            5 => ControlOp::MemberLeft,
            6 => ControlOp::Paused,
            7 => ControlOp::Resumed,
            _ => return None,
        })
    }

    /// Ops 1–3 are requests from clients, 4–7 notices from the server.
    pub fn direction(self) -> Direction {
        if (self as u8) <= 3 {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }
}

/// MEMBER_LEFT reasons.
pub const LEFT_REASON_LEFT: u8 = 1;
pub const LEFT_REASON_TIMEOUT: u8 = 2;
pub const LEFT_REASON_UNCONFIRMED: u8 = 3;
/// RESUMED reasons.
pub const RESUMED_BY_LEADER: u8 = 0;
pub const RESUMED_PAUSE_LIMIT: u8 = 1;
pub const RESUMED_LEADER_GONE: u8 = 2;
/// LEAVE reasons (informative).
pub const LEAVE_USER: u8 = 0;
pub const LEAVE_STREAM_DEAD: u8 = 1;
pub const LEAVE_SHUTDOWN: u8 = 2;

/// One entry of a Session List (§4.1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub port: u16,
    pub state: SessionState,
    pub joinable: bool,
    pub members: u16,
    /// `None` is sent as `0xFFFF`.
    pub movie_id: Option<u16>,
    pub movie_name: String,
}

impl SessionEntry {
    fn encoded_len(&self) -> usize {
        9 + self.movie_name.len()
    }
}

/// One movie of a Movies Available page (§4.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovieListing {
    pub id: u16,
    pub name: String,
}

impl MovieListing {
    fn encoded_len(&self) -> usize {
        3 + self.name.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    pub seq: u64,
    pub movie_id: u16,
    pub interval_us: u32,
    pub chunk_size: u16,
    pub total_chunks: u64,
    pub start_seq: u64,
    pub paused: bool,
    pub movie_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub seq: u64,
    pub op: ControlOp,
    pub reason: u8,
    pub position: u64,
    /// `None` is sent as sixteen zero bytes and port 0.
    pub member: Option<SocketAddr>,
}

impl Control {
    /// A client request (LEAVE, PAUSE, RESUME): unused fields zero.
    pub fn request(seq: u64, op: ControlOp, reason: u8) -> Self {
        Control {
            seq,
            op,
            reason,
            position: 0,
            member: None,
        }
    }
}

/// Packets on the well-known port P0 (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum P0Packet {
    PortRequest {
        seq: u64,
        port: u16,
    },
    PortAllocated {
        seq: u64,
        port: u16,
    },
    /// Port OK (`ok`) or NOK.
    PortReply {
        seq: u64,
        port: u16,
        ok: bool,
    },
    Ack {
        seq: u64,
    },
    SessionListRequest {
        seq: u64,
        start: u16,
    },
    SessionList {
        seq: u64,
        total: u16,
        start: u16,
        entries: Vec<SessionEntry>,
    },
}

/// Packets on a session port Ps (§4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsPacket {
    RegistrationRequest {
        seq: u64,
        interval_us: u32,
    },
    MoviesAvailable {
        seq: u64,
        page: u8,
        pages: u8,
        entries: Vec<MovieListing>,
    },
    MovieChoice {
        seq: u64,
        movie_id: u16,
    },
    Ack {
        seq: u64,
    },
    StreamStart(StreamStart),
    MovieData {
        seq: u64,
        data: Bytes,
    },
    StreamEnd {
        seq: u64,
        last_seq: u64,
        reason: EndReason,
    },
    Control(Control),
}

impl PsPacket {
    pub fn seq(&self) -> u64 {
        match self {
            PsPacket::RegistrationRequest { seq, .. }
            | PsPacket::MoviesAvailable { seq, .. }
            | PsPacket::MovieChoice { seq, .. }
            | PsPacket::Ack { seq }
            | PsPacket::MovieData { seq, .. }
            | PsPacket::StreamEnd { seq, .. } => *seq,
            PsPacket::StreamStart(s) => s.seq,
            PsPacket::Control(c) => c.seq,
        }
    }
}

// ---------------------------------------------------------------- encoding

fn put_name(buf: &mut BytesMut, name: &str) {
    // Names longer than 255 bytes never reach the encoder (the library and
    // the pagination leave them out); truncating on a char boundary keeps the
    // packet valid should one slip through.
    let mut end = name.len().min(255);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u8(end as u8);
    buf.put_slice(&name.as_bytes()[..end]);
}

fn put_endpoint(buf: &mut BytesMut, addr: Option<SocketAddr>) {
    match addr {
        None => buf.put_bytes(0, 18),
        Some(a) => {
            let ip = match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            buf.put_slice(&ip.octets());
            buf.put_u16(a.port());
        }
    }
}

/// Turns the 16-byte address and port of §3.3 into an endpoint, mapping
/// `::ffff:a.b.c.d` back to IPv4; all zero means "no endpoint".
pub fn endpoint_from_wire(octets: [u8; 16], port: u16) -> Option<SocketAddr> {
    if octets == [0; 16] && port == 0 {
        return None;
    }
    let ip = Ipv6Addr::from(octets);
    Some(match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(v4.into(), port),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    })
}

impl P0Packet {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        match self {
            P0Packet::PortRequest { seq, port } => {
                b.put_u8(0x01);
                b.put_u64(*seq);
                b.put_u16(*port);
            }
            P0Packet::PortAllocated { seq, port } => {
                b.put_u8(0x02);
                b.put_u64(*seq);
                b.put_u16(*port);
            }
            P0Packet::PortReply { seq, port, ok } => {
                b.put_u8(0x04);
                b.put_u64(*seq);
                b.put_u16(*port);
                b.put_u8(u8::from(*ok));
            }
            P0Packet::Ack { seq } => {
                b.put_u8(0x08);
                b.put_u64(*seq);
            }
            P0Packet::SessionListRequest { seq, start } => {
                b.put_u8(0x10);
                b.put_u64(*seq);
                b.put_u16(*start);
                b.put_bytes(0, LEN_SESSION_LIST_REQUEST - 11);
            }
            P0Packet::SessionList {
                seq,
                total,
                start,
                entries,
            } => {
                b.put_u8(0x20);
                b.put_u64(*seq);
                b.put_u16(*total);
                b.put_u16(*start);
                b.put_u8(entries.len().min(255) as u8);
                for e in entries.iter().take(255) {
                    b.put_u16(e.port);
                    b.put_u8(e.state as u8);
                    b.put_u8(u8::from(e.joinable));
                    b.put_u16(e.members);
                    b.put_u16(e.movie_id.unwrap_or(NO_MOVIE_ID));
                    put_name(&mut b, &e.movie_name);
                }
            }
        }
        b.freeze()
    }
}

impl PsPacket {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(match self {
            PsPacket::MovieData { data, .. } => HEADER_LEN + data.len(),
            _ => 64,
        });
        match self {
            PsPacket::RegistrationRequest { seq, interval_us } => {
                b.put_u8(0x01);
                b.put_u64(*seq);
                b.put_u32(*interval_us);
            }
            PsPacket::MoviesAvailable {
                seq,
                page,
                pages,
                entries,
            } => {
                b.put_u8(0x02);
                b.put_u64(*seq);
                b.put_u8(*page);
                b.put_u8(*pages);
                b.put_u8(entries.len().min(255) as u8);
                for e in entries.iter().take(255) {
                    b.put_u16(e.id);
                    put_name(&mut b, &e.name);
                }
            }
            PsPacket::MovieChoice { seq, movie_id } => {
                b.put_u8(0x04);
                b.put_u64(*seq);
                b.put_u16(*movie_id);
            }
            PsPacket::Ack { seq } => {
                b.put_u8(0x08);
                b.put_u64(*seq);
            }
            PsPacket::StreamStart(s) => {
                b.put_u8(0x10);
                b.put_u64(s.seq);
                b.put_u16(s.movie_id);
                b.put_u32(s.interval_us);
                b.put_u16(s.chunk_size);
                b.put_u64(s.total_chunks);
                b.put_u64(s.start_seq);
                b.put_u8(u8::from(s.paused));
                put_name(&mut b, &s.movie_name);
            }
            PsPacket::MovieData { seq, data } => {
                b.put_u8(0x20);
                b.put_u64(*seq);
                b.put_slice(data);
            }
            PsPacket::StreamEnd {
                seq,
                last_seq,
                reason,
            } => {
                b.put_u8(0x40);
                b.put_u64(*seq);
                b.put_u64(*last_seq);
                b.put_u8(reason.to_u8());
            }
            PsPacket::Control(c) => {
                b.put_u8(0x80);
                b.put_u64(c.seq);
                b.put_u8(c.op as u8);
                b.put_u8(c.reason);
                b.put_u64(c.position);
                put_endpoint(&mut b, c.member);
            }
        }
        b.freeze()
    }
}

/// Splits a library listing into Movies Available pages, each filled as far
/// as 1400 bytes allow, at most 255 pages. Entries that do not fit are left
/// out; the caller logs it.
pub fn paginate_movies(listings: &[MovieListing]) -> Vec<Vec<MovieListing>> {
    let mut pages: Vec<Vec<MovieListing>> = Vec::new();
    let mut current: Vec<MovieListing> = Vec::new();
    let mut len = MOVIES_AVAILABLE_FIXED;
    for l in listings {
        let n = l.encoded_len();
        if MOVIES_AVAILABLE_FIXED + n > MAX_DATAGRAM {
            continue;
        }
        if len + n > MAX_DATAGRAM || current.len() == 255 {
            pages.push(std::mem::take(&mut current));
            len = MOVIES_AVAILABLE_FIXED;
            if pages.len() == 255 {
                return pages;
            }
        }
        len += n;
        current.push(l.clone());
    }
    if !current.is_empty() || pages.is_empty() {
        pages.push(current);
    }
    pages
}

/// How many of `entries` (from the first) fit one Session List datagram.
pub fn session_list_fit(entries: &[SessionEntry]) -> usize {
    let mut len = SESSION_LIST_FIXED;
    let mut count = 0;
    for e in entries.iter().take(255) {
        len += e.encoded_len();
        if len > MAX_DATAGRAM {
            break;
        }
        count += 1;
    }
    count
}

// ---------------------------------------------------------------- decoding

/// A cursor that turns running out of bytes into `BadLength`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: u8,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        // The caller has checked the header is present.
        Cursor {
            buf,
            pos: HEADER_LEN,
            kind: buf.first().copied().unwrap_or(0),
        }
    }

    fn short(&self) -> DecodeError {
        DecodeError::BadLength {
            kind: self.kind,
            len: self.buf.len(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.short())?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.short())?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes(s.try_into().unwrap_or([0; 2])))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes(s.try_into().unwrap_or([0; 4])))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        Ok(u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
    }

    /// A name: structural problems are `BadLength`; bad UTF-8 is reported
    /// through `field` so that length errors win, as §12.1 orders them.
    fn name(&mut self, field: &mut Option<&'static str>) -> Result<String, DecodeError> {
        let n = self.u8()? as usize;
        let raw = self.take(n)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                field.get_or_insert("name is not UTF-8");
                Ok(String::new())
            }
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.short())
        }
    }
}

fn header(buf: &[u8]) -> Result<(u8, u64), DecodeError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(DecodeError::Oversized(buf.len()));
    }
    let head: [u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated(buf.len()))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[1..]);
    Ok((head[0], u64::from_be_bytes(seq)))
}

fn exact(buf: &[u8], kind: u8, len: usize) -> Result<(), DecodeError> {
    if buf.len() == len {
        Ok(())
    } else {
        Err(DecodeError::BadLength {
            kind,
            len: buf.len(),
        })
    }
}

fn check_seq(seq: u64) -> Result<(), DecodeError> {
    if seq == 0 {
        Err(DecodeError::BadField("Seq is 0"))
    } else {
        Ok(())
    }
}

fn fields(field: Option<&'static str>) -> Result<(), DecodeError> {
    match field {
        Some(f) => Err(DecodeError::BadField(f)),
        None => Ok(()),
    }
}

/// Decodes a datagram received on (or from) P0.
pub fn decode_p0(buf: &[u8], dir: Direction) -> Result<P0Packet, DecodeError> {
    let (kind, seq) = header(buf)?;
    let allowed = match dir {
        Direction::ToServer => matches!(kind, 0x01 | 0x04 | 0x10),
        Direction::ToClient => matches!(kind, 0x02 | 0x08 | 0x20),
    };
    if !allowed {
        return Err(DecodeError::UnknownType(kind));
    }
    let mut c = Cursor::new(buf);
    let mut field = None;
    let packet = match kind {
        0x01 | 0x02 => {
            exact(buf, kind, LEN_PORT_REQUEST)?;
            let port = c.u16()?;
            if kind == 0x01 {
                P0Packet::PortRequest { seq, port }
            } else {
                P0Packet::PortAllocated { seq, port }
            }
        }
        0x04 => {
            exact(buf, kind, LEN_PORT_REPLY)?;
            let port = c.u16()?;
            let flag = c.u8()?;
            if flag > 1 {
                field = Some("Flag is neither 0 nor 1");
            }
            P0Packet::PortReply {
                seq,
                port,
                ok: flag == 1,
            }
        }
        0x08 => {
            exact(buf, kind, LEN_ACK)?;
            P0Packet::Ack { seq }
        }
        0x10 => {
            exact(buf, kind, LEN_SESSION_LIST_REQUEST)?;
            let start = c.u16()?;
            // The padding's value is ignored (§4.1.5).
            c.pos = buf.len();
            P0Packet::SessionListRequest { seq, start }
        }
        _ => {
            let total = c.u16()?;
            let start = c.u16()?;
            let count = c.u8()?;
            let mut entries = Vec::with_capacity(usize::from(count).min(buf.len() / 9));
            for _ in 0..count {
                let port = c.u16()?;
                let state = c.u8()?;
                let flags = c.u8()?;
                let members = c.u16()?;
                let movie_id = c.u16()?;
                let movie_name = c.name(&mut field)?;
                let state = SessionState::from_u8(state).unwrap_or_else(|| {
                    field.get_or_insert("unknown session state");
                    SessionState::Registration
                });
                if flags & !1 != 0 {
                    field.get_or_insert("reserved flag bits set");
                }
                entries.push(SessionEntry {
                    port,
                    state,
                    joinable: flags & 1 == 1,
                    members,
                    movie_id: (movie_id != NO_MOVIE_ID).then_some(movie_id),
                    movie_name,
                });
            }
            c.finish()?;
            P0Packet::SessionList {
                seq,
                total,
                start,
                entries,
            }
        }
    };
    c.finish()?;
    check_seq(seq)?;
    fields(field)?;
    Ok(packet)
}

/// Decodes a datagram received on (or from) a session port Ps.
pub fn decode_ps(buf: &[u8], dir: Direction) -> Result<PsPacket, DecodeError> {
    let (kind, seq) = header(buf)?;
    let allowed = match dir {
        Direction::ToServer => matches!(kind, 0x01 | 0x04 | 0x08 | 0x80),
        Direction::ToClient => matches!(kind, 0x02 | 0x08 | 0x10 | 0x20 | 0x40 | 0x80),
    };
    if !allowed {
        return Err(DecodeError::UnknownType(kind));
    }
    let mut c = Cursor::new(buf);
    let mut field = None;
    let packet = match kind {
        0x01 => {
            exact(buf, kind, LEN_REGISTRATION)?;
            PsPacket::RegistrationRequest {
                seq,
                interval_us: c.u32()?,
            }
        }
        0x02 => {
            let page = c.u8()?;
            let pages = c.u8()?;
            let count = c.u8()?;
            let mut entries = Vec::with_capacity(usize::from(count).min(buf.len() / 3));
            for _ in 0..count {
                let id = c.u16()?;
                let name = c.name(&mut field)?;
                entries.push(MovieListing { id, name });
            }
            c.finish()?;
            if pages == 0 || page >= pages {
                field.get_or_insert("Page is not below Pages");
            }
            PsPacket::MoviesAvailable {
                seq,
                page,
                pages,
                entries,
            }
        }
        0x04 => {
            exact(buf, kind, LEN_MOVIE_CHOICE)?;
            PsPacket::MovieChoice {
                seq,
                movie_id: c.u16()?,
            }
        }
        0x08 => {
            exact(buf, kind, LEN_ACK)?;
            PsPacket::Ack { seq }
        }
        0x10 => {
            if buf.len() < STREAM_START_FIXED {
                return Err(c.short());
            }
            let movie_id = c.u16()?;
            let interval_us = c.u32()?;
            let chunk_size = c.u16()?;
            let total_chunks = c.u64()?;
            let start_seq = c.u64()?;
            let paused = c.u8()?;
            let movie_name = c.name(&mut field)?;
            c.finish()?;
            if paused > 1 {
                field.get_or_insert("Paused is neither 0 nor 1");
            }
            if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
                field.get_or_insert("Chunk size out of range");
            }
            if start_seq == 0 {
                field.get_or_insert("Start Seq is 0");
            }
            PsPacket::StreamStart(StreamStart {
                seq,
                movie_id,
                interval_us,
                chunk_size,
                total_chunks,
                start_seq,
                paused: paused == 1,
                movie_name,
            })
        }
        0x20 => {
            let data = buf.get(HEADER_LEN..).unwrap_or_default();
            if data.is_empty() {
                return Err(c.short());
            }
            c.pos = buf.len();
            PsPacket::MovieData {
                seq,
                data: Bytes::copy_from_slice(data),
            }
        }
        0x40 => {
            exact(buf, kind, LEN_STREAM_END)?;
            let last_seq = c.u64()?;
            let reason = EndReason::from_u8(c.u8()?);
            PsPacket::StreamEnd {
                seq,
                last_seq,
                reason,
            }
        }
        _ => {
            exact(buf, kind, LEN_CONTROL)?;
            let op = c.u8()?;
            let reason = c.u8()?;
            let position = c.u64()?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(c.take(16)?);
            let port = c.u16()?;
            let op = match ControlOp::from_u8(op) {
                Some(op) if op.direction() == dir => op,
                Some(_) => {
                    field.get_or_insert("Op not valid in this direction");
                    ControlOp::Leave
                }
                None => {
                    field.get_or_insert("Op not 1 to 7");
                    ControlOp::Leave
                }
            };
            PsPacket::Control(Control {
                seq,
                op,
                reason,
                position,
                member: endpoint_from_wire(octets, port),
            })
        }
    };
    c.finish()?;
    check_seq(seq)?;
    fields(field)?;
    Ok(packet)
}

/// Reads only the header of a Movie Data datagram, without copying, for
/// receivers that handle many of them (the load generator).
pub fn peek_movie_data(buf: &[u8]) -> Option<(u64, &[u8])> {
    let (kind, seq) = header(buf).ok()?;
    let data = buf.get(HEADER_LEN..)?;
    (kind == 0x20 && seq != 0 && !data.is_empty()).then_some((seq, data))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
