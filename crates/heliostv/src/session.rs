//! HeliosTv session rules (reference §6, §7, §8, §9.1, §12), sans-IO.
//!
//! Three pieces, all fed with decoded messages and an explicit `now`, and
//! answering with a list of actions for the I/O layer to carry out in order:
//!
//! * [`Registry`]: the server-wide state that sessions share (open sessions,
//!   service entries and their tokens, data-connection count, token-guessing
//!   throttle). The server keeps exactly one, behind a lock.
//! * [`ControlSession`]: the state machine of one control connection
//!   (AWAIT_HELLO → OPEN → CLOSED, §6.4).
//! * [`DataSession`]: the state machine of one data connection before it
//!   streams (AWAIT_AUTHORIZE → STREAMING, §9.1).
//!
//! Channels are seen through the [`Catalog`] trait, so these rules are tested
//! without a yard. Randomness for tokens comes from the registry's own
//! cryptographically secure generator, seeded by the caller.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rmpv::Value;

use crate::wire::{ErrorUri, Malformed, Message, ServiceInfo, StreamError};

// ------------------------------------------------------------------ roles

/// The roles a session declared in HELLO (§6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub player: bool,
    pub recorder: bool,
    pub section: bool,
    pub service_list: bool,
}

impl Roles {
    /// Applies the combination rules of §6.2.
    pub fn parse(roles: &[String]) -> Result<Roles, ErrorUri> {
        let mut r = Roles::default();
        for role in roles {
            match role.as_str() {
                "player" => r.player = true,
                "recorder" => r.recorder = true,
                "section" => r.section = true,
                "service_list" => r.service_list = true,
                _ => return Err(ErrorUri::InvalidRole),
            }
        }
        if roles.is_empty() || (r.player && r.recorder) {
            return Err(ErrorUri::InvalidRole);
        }
        Ok(r)
    }
}

// ------------------------------------------------------------ data kinds

/// How a `ts` entry behaves when its client falls behind (§10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Player,
    Recorder,
}

/// The section tables a `sections` entry carries (§7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tables {
    pub pat: bool,
    pub pmt: bool,
    pub sdt: bool,
    pub eit: bool,
}

impl Tables {
    pub const ALL: Tables = Tables {
        pat: true,
        pmt: true,
        sdt: true,
        eit: true,
    };
    const NONE: Tables = Tables {
        pat: false,
        pmt: false,
        sdt: false,
        eit: false,
    };
}

/// What a data connection carries (§7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Ts(Mode),
    Sections(Tables),
}

// ------------------------------------------------------------------ URIs

/// A syntactically valid service URI (§7.1, §7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUri {
    /// The decoded reference.
    pub reference: String,
    /// `data=`: `Some(true)` for `sections`, `Some(false)` for `ts`.
    pub sections: Option<bool>,
    pub tables: Option<Tables>,
}

impl ServiceUri {
    pub fn parse(uri: &str) -> Option<ServiceUri> {
        let (scheme, rest) = uri.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("sah-service") || rest.contains('#') {
            return None;
        }
        let (raw, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let raw = raw.strip_suffix('/').unwrap_or(raw);
        let reference = percent_decode(raw)?;
        if reference.is_empty() {
            return None;
        }
        let mut parsed = ServiceUri {
            reference,
            sections: None,
            tables: None,
        };
        if query.is_empty() {
            return Some(parsed);
        }
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=')?;
            match name {
                "data" if parsed.sections.is_none() => {
                    parsed.sections = Some(match value {
                        "ts" => false,
                        "sections" => true,
                        _ => return None,
                    })
                }
                "tables" if parsed.tables.is_none() => {
                    let mut t = Tables::NONE;
                    for table in value.split(',') {
                        match table {
                            "pat" => t.pat = true,
                            "pmt" => t.pmt = true,
                            "sdt" => t.sdt = true,
                            "eit" => t.eit = true,
                            _ => return None,
                        }
                    }
                    parsed.tables = Some(t);
                }
                _ => return None,
            }
        }
        Some(parsed)
    }

    /// The data kind this URI asks for in a session with `roles` (§7.3).
    pub fn kind(&self, roles: Roles) -> Result<DataKind, ErrorUri> {
        let stream_role = roles.player || roles.recorder;
        let sections = self.sections.unwrap_or(!stream_role);
        let kind = if sections {
            if !roles.section {
                return Err(ErrorUri::InvalidRole);
            }
            DataKind::Sections(self.tables.unwrap_or(Tables::ALL))
        } else {
            if !stream_role {
                return Err(ErrorUri::InvalidRole);
            }
            if self.tables.is_some() {
                return Err(ErrorUri::InvalidUri);
            }
            DataKind::Ts(if roles.player {
                Mode::Player
            } else {
                Mode::Recorder
            })
        };
        Ok(kind)
    }
}

fn percent_decode(raw: &str) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What resolution needs to know of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRef {
    pub id: u32,
    /// 0 when the channel has no number.
    pub number: u32,
    pub name: String,
}

/// The rules of §7.2, in order; a rule that matches several channels
/// identifies none.
pub fn resolve(reference: &str, channels: &[ChannelRef]) -> Option<u32> {
    let unique = |mut it: Box<dyn Iterator<Item = &ChannelRef> + '_>| -> Option<u32> {
        let first = it.next()?;
        if it.next().is_some() {
            None
        } else {
            Some(first.id)
        }
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    unique(Box::new(channels.iter().filter(|c| c.name == reference)))
        .or_else(|| {
            unique(Box::new(
                channels
                    .iter()
                    .filter(|c| c.name.eq_ignore_ascii_case(reference)),
            ))
        })
        .or_else(|| {
            let n: u32 = reference.parse().ok().filter(|_| all_digits(reference))?;
            unique(Box::new(
                channels.iter().filter(move |c| n != 0 && c.number == n),
            ))
        })
        .or_else(|| {
            let digits = reference.strip_prefix("id:").filter(|d| all_digits(d))?;
            let id: u32 = digits.parse().ok()?;
            unique(Box::new(channels.iter().filter(move |c| c.id == id)))
        })
}

/// The canonical URI of a channel (§7.2).
pub fn canonical_uri(channel: &ChannelRef, channels: &[ChannelRef]) -> String {
    let by_name = channels.iter().filter(|c| c.name == channel.name).count() == 1;
    if by_name && !channel.name.is_empty() {
        let mut uri = String::from("sah-service://");
        for b in channel.name.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri
    } else {
        format!("sah-service://id:{}", channel.id)
    }
}

/// Orders services as §11.1 asks: by number, numberless last, then by name.
pub fn sort_services(services: &mut [ServiceInfo]) {
    services.sort_by(|a, b| {
        let key = |s: &ServiceInfo| (s.number == 0, s.number);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
}

/// The channels published over HeliosTv, as the session needs them.
pub trait Catalog {
    fn channels(&self) -> Vec<ChannelRef>;
    /// The SERVICES snapshot, already in the order of §11.1.
    fn services(&self) -> Vec<ServiceInfo>;
}

// -------------------------------------------------------------- registry

/// Limits of §17 that the session rules enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_entries_per_session: usize,
    pub max_data_connections: usize,
    pub token_lifetime: Duration,
    pub max_sent_message: usize,
    /// Invalid tokens from one address within `bad_token_window` before it is blocked.
    pub bad_token_count: usize,
    pub bad_token_window: Duration,
    pub bad_token_block: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 256,
            max_entries_per_session: 16,
            max_data_connections: 512,
            token_lifetime: Duration::from_secs(30),
            max_sent_message: crate::wire::MAX_SENT_MESSAGE,
            bad_token_count: 10,
            bad_token_window: Duration::from_secs(60),
            bad_token_block: Duration::from_secs(60),
        }
    }
}

/// Identifies a control connection's session within one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// State of a service entry (§8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Claimable until the instant given.
    Pending {
        until: Instant,
    },
    Active,
    Ended,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub session: SessionId,
    pub channel_id: u32,
    pub kind: DataKind,
    pub state: EntryState,
}

/// What a data connection gets when its AUTHORIZE succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub token: u32,
    pub session: SessionId,
    pub channel_id: u32,
    pub kind: DataKind,
}

/// How long an issued token is kept out of reuse (§8.2: SHOULD, 24 hours),
/// and how many such tokens are remembered at most.
const TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);
const TOKEN_MEMORY_MAX: usize = 1 << 20;

/// Server-wide session state.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    rng: StdRng,
    next_session: u64,
    open_sessions: HashSet<SessionId>,
    entries: HashMap<u32, Entry>,
    recent_tokens: HashSet<u32>,
    recent_order: VecDeque<(Instant, u32)>,
    data_connections: usize,
    bad_tokens: HashMap<IpAddr, BadTokens>,
}

#[derive(Debug, Default)]
struct BadTokens {
    times: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Registry {
    /// `rng` must be cryptographically secure (`StdRng::from_os_rng()`);
    /// tests seed it.
    pub fn new(limits: Limits, rng: StdRng) -> Registry {
        Registry {
            limits,
            rng,
            next_session: 1,
            open_sessions: HashSet::new(),
            entries: HashMap::new(),
            recent_tokens: HashSet::new(),
            recent_order: VecDeque::new(),
            data_connections: 0,
            bad_tokens: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh id for a control connection (its session opens with HELLO).
    pub fn new_session_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session = self.next_session.wrapping_add(1);
        id
    }

    pub fn session_count(&self) -> usize {
        self.open_sessions.len()
    }

    pub fn data_connection_count(&self) -> usize {
        self.data_connections
    }

    pub fn entry(&self, token: u32) -> Option<&Entry> {
        self.entries.get(&token)
    }

    fn open_session(&mut self, id: SessionId) -> Result<(), ErrorUri> {
        if self.open_sessions.len() >= self.limits.max_sessions {
            return Err(ErrorUri::LimitExceeded);
        }
        self.open_sessions.insert(id);
        Ok(())
    }

    /// Ends a session: deletes its entries and returns the tokens whose data
    /// connections are open and must be closed (§8.4).
    pub fn close_session(&mut self, id: SessionId) -> Vec<u32> {
        self.open_sessions.remove(&id);
        let mine: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.session == id)
            .map(|(t, _)| *t)
            .collect();
        let mut active = Vec::new();
        for token in mine {
            if self
                .entries
                .remove(&token)
                .is_some_and(|e| e.state == EntryState::Active)
            {
                active.push(token);
            }
        }
        active.sort_unstable();
        active
    }

    fn entries_of(&self, id: SessionId) -> usize {
        self.entries.values().filter(|e| e.session == id).count()
    }

    /// A uniformly drawn token in 1..=2^31-1, different from every valid
    /// token and from every token issued in the last 24 hours (§8.2).
    fn issue_token(&mut self, now: Instant) -> u32 {
        while let Some(&(at, token)) = self.recent_order.front() {
            let expired = now
                .checked_duration_since(at)
                .is_some_and(|age| age > TOKEN_MEMORY);
            if !expired && self.recent_order.len() < TOKEN_MEMORY_MAX {
                break;
            }
            self.recent_order.pop_front();
            self.recent_tokens.remove(&token);
        }
        loop {
            let token: u32 = self.rng.random_range(1..=0x7fff_ffff);
            if !self.entries.contains_key(&token) && !self.recent_tokens.contains(&token) {
                self.recent_tokens.insert(token);
                self.recent_order.push_back((now, token));
                return token;
            }
        }
    }

    fn create_entry(
        &mut self,
        session: SessionId,
        channel_id: u32,
        kind: DataKind,
        now: Instant,
    ) -> Result<u32, ErrorUri> {
        if self.entries_of(session) >= self.limits.max_entries_per_session {
            return Err(ErrorUri::LimitExceeded);
        }
        let token = self.issue_token(now);
        let until = now.checked_add(self.limits.token_lifetime).unwrap_or(now);
        self.entries.insert(
            token,
            Entry {
                session,
                channel_id,
                kind,
                state: EntryState::Pending { until },
            },
        );
        Ok(token)
    }

    /// DEL_SERVICE: deletes an entry of `session`. `Ok(Some(token))` when its
    /// data connection is open and must be closed (before the RESULT is sent).
    fn delete_entry(&mut self, session: SessionId, token: u64) -> Result<Option<u32>, ErrorUri> {
        let token = u32::try_from(token).map_err(|_| ErrorUri::InvalidToken)?;
        match self.entries.get(&token) {
            Some(e) if e.session == session => {
                let active = e.state == EntryState::Active;
                self.entries.remove(&token);
                Ok(active.then_some(token))
            }
            _ => Err(ErrorUri::InvalidToken),
        }
    }

    /// Whether new data connections from `peer` are refused for now (§9.1).
    pub fn is_blocked(&mut self, peer: IpAddr, now: Instant) -> bool {
        match self.bad_tokens.get(&peer).and_then(|b| b.blocked_until) {
            Some(until) if now < until => true,
            Some(_) => {
                self.bad_tokens.remove(&peer);
                false
            }
            None => false,
        }
    }

    fn note_bad_token(&mut self, peer: IpAddr, now: Instant) {
        let window = self.limits.bad_token_window;
        if self.bad_tokens.len() > 4096 {
            // Bound the memory an address-rotating guesser can take.
            self.bad_tokens.retain(|_, b| {
                b.blocked_until.is_some_and(|u| now < u)
                    || b.times
                        .back()
                        .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
        let b = self.bad_tokens.entry(peer).or_default();
        b.times.push_back(now);
        while let Some(t) = b.times.front() {
            if now.saturating_duration_since(*t) >= window {
                b.times.pop_front();
            } else {
                break;
            }
        }
        if b.times.len() >= self.limits.bad_token_count {
            b.blocked_until = now.checked_add(self.limits.bad_token_block);
            b.times.clear();
        }
    }

    fn authorize(&mut self, token: u64, now: Instant) -> Result<Grant, ErrorUri> {
        let token = u32::try_from(token).map_err(|_| ErrorUri::InvalidToken)?;
        let Some(entry) = self.entries.get_mut(&token) else {
            return Err(ErrorUri::InvalidToken);
        };
        match entry.state {
            EntryState::Pending { until } if now < until => {}
            EntryState::Pending { .. } => {
                entry.state = EntryState::Ended;
                return Err(ErrorUri::InvalidToken);
            }
            EntryState::Active | EntryState::Ended => return Err(ErrorUri::InvalidToken),
        }
        if self.data_connections >= self.limits.max_data_connections {
            // The entry stays PENDING (§9.1).
            return Err(ErrorUri::LimitExceeded);
        }
        entry.state = EntryState::Active;
        self.data_connections += 1;
        Ok(Grant {
            token,
            session: entry.session,
            channel_id: entry.channel_id,
            kind: entry.kind,
        })
    }

    /// A data connection that was granted has closed, for any reason: its
    /// entry (if not deleted meanwhile) becomes ENDED (§8.3).
    pub fn data_closed(&mut self, token: u32) {
        self.data_connections = self.data_connections.saturating_sub(1);
        if let Some(e) = self.entries.get_mut(&token) {
            e.state = EntryState::Ended;
        }
    }
}

// ------------------------------------------------------- control session

/// What the I/O layer must do for a control connection, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlAction {
    Send(Message),
    /// Close the data connection of this token and wait until it is closed
    /// before carrying out the next action (§8.4).
    CloseData(u32),
    /// From now on, send SERVICES notifications with this request id,
    /// relative to `snapshot` (replaces any earlier subscription, §11.3).
    /// The snapshot's RESULT was the action just before.
    Subscribe {
        request: u64,
        snapshot: Vec<ServiceInfo>,
    },
    /// Close the connection after what was sent before.
    Close,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ControlState {
    AwaitHello,
    Open { roles: Roles },
    Closed,
}

/// One control connection (§6.4).
#[derive(Debug)]
pub struct ControlSession {
    id: SessionId,
    state: ControlState,
}

impl ControlSession {
    pub fn new(id: SessionId) -> ControlSession {
        ControlSession {
            id,
            state: ControlState::AwaitHello,
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn roles(&self) -> Option<Roles> {
        match self.state {
            ControlState::Open { roles } => Some(roles),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == ControlState::Closed
    }

    /// Handles one decoded message.
    pub fn handle(
        &mut self,
        incoming: Result<Message, Malformed>,
        now: Instant,
        registry: &mut Registry,
        catalog: &dyn Catalog,
    ) -> Vec<ControlAction> {
        match (&self.state, incoming) {
            (ControlState::Closed, _) => Vec::new(),
            (_, Ok(Message::Abort { .. })) => self.close(registry, None),
            (
                _,
                Err(Malformed {
                    code: Some(crate::wire::code::ABORT),
                    ..
                }),
            ) => self.close(registry, None),
            (ControlState::AwaitHello, Ok(Message::Hello { roles })) => {
                match Roles::parse(&roles) {
                    Err(e) => self.close(registry, Some(e)),
                    Ok(roles) => match registry.open_session(self.id) {
                        Err(e) => self.close(registry, Some(e)),
                        Ok(()) => {
                            self.state = ControlState::Open { roles };
                            vec![ControlAction::Send(Message::Welcome)]
                        }
                    },
                }
            }
            (ControlState::AwaitHello, Ok(_)) => {
                self.close(registry, Some(ErrorUri::UnexpectedMessage))
            }
            (ControlState::AwaitHello, Err(_)) => {
                self.close(registry, Some(ErrorUri::InvalidMessage))
            }
            (ControlState::Open { roles }, incoming) => {
                let roles = *roles;
                self.handle_open(roles, incoming, now, registry, catalog)
            }
        }
    }

    fn handle_open(
        &mut self,
        roles: Roles,
        incoming: Result<Message, Malformed>,
        now: Instant,
        registry: &mut Registry,
        catalog: &dyn Catalog,
    ) -> Vec<ControlAction> {
        use crate::wire::code;
        let send = |m: Message| vec![ControlAction::Send(m)];
        match incoming {
            Ok(
                Message::Hello { .. }
                | Message::Welcome
                | Message::Result { .. }
                | Message::Error { .. },
            ) => self.close(registry, Some(ErrorUri::UnexpectedMessage)),
            Ok(Message::ServicesChanged { .. }) => {
                self.close(registry, Some(ErrorUri::UnexpectedMessage))
            }
            Ok(Message::Abort { .. }) => self.close(registry, None),
            Ok(Message::Authorize { request, .. }) => {
                send(Message::error(request, ErrorUri::UnexpectedMessage))
            }
            Ok(Message::Unknown {
                request: Some(request),
                ..
            }) => send(Message::error(request, ErrorUri::UnknownMessage)),
            Ok(Message::Unknown { request: None, .. }) => {
                self.close(registry, Some(ErrorUri::UnknownMessage))
            }
            Ok(Message::NewService { request, resource }) => {
                let answer = match self.new_service(roles, &resource, now, registry, catalog) {
                    Ok(token) => Message::Result {
                        request,
                        args: vec![Value::from(token)],
                    },
                    Err(e) => Message::error(request, e),
                };
                send(answer)
            }
            Ok(Message::DelService { request, token }) => {
                match registry.delete_entry(self.id, token) {
                    Ok(Some(active)) => vec![
                        ControlAction::CloseData(active),
                        ControlAction::Send(Message::Result {
                            request,
                            args: vec![],
                        }),
                    ],
                    Ok(None) => send(Message::Result {
                        request,
                        args: vec![],
                    }),
                    Err(e) => send(Message::error(request, e)),
                }
            }
            Ok(Message::Services { request }) => {
                if !roles.service_list {
                    return send(Message::error(request, ErrorUri::InvalidRole));
                }
                let services = catalog.services();
                let answer = Message::Result {
                    request,
                    args: services.iter().map(ServiceInfo::to_value).collect(),
                };
                if answer.to_bytes().len() > registry.limits.max_sent_message {
                    return send(Message::error(request, ErrorUri::LimitExceeded));
                }
                vec![
                    ControlAction::Send(answer),
                    ControlAction::Subscribe {
                        request,
                        snapshot: services,
                    },
                ]
            }
            Err(m) => match (m.code, m.request) {
                // HELLO and the server's own messages are out of place however
                // they are shaped.
                (Some(code::HELLO | code::WELCOME | code::RESULT | code::ERROR), _) => {
                    self.close(registry, Some(ErrorUri::UnexpectedMessage))
                }
                (_, Some(request)) => send(Message::error(request, ErrorUri::InvalidMessage)),
                (_, None) => self.close(registry, Some(ErrorUri::InvalidMessage)),
            },
        }
    }

    fn new_service(
        &mut self,
        roles: Roles,
        resource: &str,
        now: Instant,
        registry: &mut Registry,
        catalog: &dyn Catalog,
    ) -> Result<u32, ErrorUri> {
        let uri = ServiceUri::parse(resource).ok_or(ErrorUri::InvalidUri)?;
        let channel_id =
            resolve(&uri.reference, &catalog.channels()).ok_or(ErrorUri::InvalidUri)?;
        let kind = uri.kind(roles)?;
        registry.create_entry(self.id, channel_id, kind, now)
    }

    /// The byte stream failed (§4.3: oversized or not MessagePack).
    pub fn stream_error(
        &mut self,
        _error: StreamError,
        registry: &mut Registry,
    ) -> Vec<ControlAction> {
        if self.is_closed() {
            return Vec::new();
        }
        self.close(registry, Some(ErrorUri::InvalidMessage))
    }

    /// No complete message within the HELLO timeout (§6.3): close silently.
    /// Returns nothing to do once the session is open.
    pub fn hello_timeout(&mut self, registry: &mut Registry) -> Vec<ControlAction> {
        match self.state {
            ControlState::AwaitHello => self.close(registry, None),
            _ => Vec::new(),
        }
    }

    /// The server is shutting down.
    pub fn shutdown(&mut self, registry: &mut Registry) -> Vec<ControlAction> {
        if self.is_closed() {
            return Vec::new();
        }
        self.close(registry, Some(ErrorUri::Shutdown))
    }

    /// The client closed or reset the connection. Returns the data
    /// connections to close.
    pub fn connection_lost(&mut self, registry: &mut Registry) -> Vec<ControlAction> {
        if self.is_closed() {
            return Vec::new();
        }
        let mut actions = self.close(registry, None);
        actions.retain(|a| !matches!(a, ControlAction::Close));
        actions
    }

    /// Enters CLOSED: an optional ABORT, the session's data connections
    /// closed, then the connection itself.
    fn close(&mut self, registry: &mut Registry, reason: Option<ErrorUri>) -> Vec<ControlAction> {
        let was_open = matches!(self.state, ControlState::Open { .. });
        self.state = ControlState::Closed;
        let mut actions = Vec::new();
        if let Some(reason) = reason {
            actions.push(ControlAction::Send(Message::abort(reason)));
        }
        if was_open {
            actions.extend(
                registry
                    .close_session(self.id)
                    .into_iter()
                    .map(ControlAction::CloseData),
            );
        }
        actions.push(ControlAction::Close);
        actions
    }
}

// ---------------------------------------------------------- data session

/// What the I/O layer must do for a data connection before it streams.
#[derive(Clone, Debug, PartialEq)]
pub enum DataAction {
    Send(Message),
    /// Start streaming for this grant, right after what was sent before.
    Stream(Grant),
    Close,
}

/// One data connection awaiting its AUTHORIZE (§9.1).
#[derive(Debug)]
pub struct DataSession {
    peer: IpAddr,
    done: bool,
}

impl DataSession {
    pub fn new(peer: IpAddr) -> DataSession {
        DataSession { peer, done: false }
    }

    /// Handles the first message of the connection. Every outcome ends the
    /// AWAIT_AUTHORIZE state: either a [`DataAction::Stream`] or a close.
    pub fn handle(
        &mut self,
        incoming: Result<Message, Malformed>,
        now: Instant,
        registry: &mut Registry,
    ) -> Vec<DataAction> {
        use crate::wire::code;
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let abort = |e: ErrorUri| vec![DataAction::Send(Message::abort(e)), DataAction::Close];
        let error =
            |r: u64, e: ErrorUri| vec![DataAction::Send(Message::error(r, e)), DataAction::Close];
        match incoming {
            Ok(Message::Authorize { request, token }) => match registry.authorize(token, now) {
                Ok(grant) => vec![
                    DataAction::Send(Message::Result {
                        request,
                        args: vec![],
                    }),
                    DataAction::Stream(grant),
                ],
                Err(e) => {
                    if e == ErrorUri::InvalidToken {
                        registry.note_bad_token(self.peer, now);
                    }
                    error(request, e)
                }
            },
            Ok(Message::Abort { .. })
            | Err(Malformed {
                code: Some(code::ABORT),
                ..
            }) => vec![DataAction::Close],
            Ok(_) => abort(ErrorUri::UnexpectedMessage),
            // A message of another type is out of place however it is shaped:
            // the 2015 data request `[1, token, "TF1"]` is a broken HELLO, and
            // §14 answers it as unexpected.
            Err(Malformed { code: Some(c), .. }) if c != code::AUTHORIZE => {
                abort(ErrorUri::UnexpectedMessage)
            }
            Err(Malformed {
                request: Some(request),
                ..
            }) => error(request, ErrorUri::InvalidMessage),
            Err(Malformed { request: None, .. }) => abort(ErrorUri::InvalidMessage),
        }
    }

    /// Oversized or not MessagePack.
    pub fn stream_error(&mut self, _error: StreamError) -> Vec<DataAction> {
        self.done = true;
        vec![
            DataAction::Send(Message::abort(ErrorUri::InvalidMessage)),
            DataAction::Close,
        ]
    }
}

#[cfg(test)]
mod tests;
