//! The portal: every OWT connection's state, sans-IO.
//!
//! [`Portal`] is fed requests ([`Portal::handle`]), media results ([`Portal::media`]),
//! room events from the other front ends ([`Portal::room_event`]), socket closes and clock
//! ticks, each with an explicit `now`, and answers with a list of [`Output`]s for the server
//! to carry out in order: the request's ack, notifications to sockets, socket closes, and
//! commands for the SFU. It never reads the clock, opens a socket or awaits anything; what
//! it must know about the shared room (members from both front ends, ready streams in the
//! SFU) it reads synchronously through the [`Shared`] trait.
//!
//! Ordering promises that the SDK depends on are kept here: `participant join` to the
//! others before the newcomer's ack; the `publish`/`subscribe` ack before any `progress`
//! for its id; `progress ready` before `stream add` for one's own publication; queued
//! notifications after the `relogin` ack.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::room::{RoomConfig, RoomConfigs};
use crate::token::{Ticket, TicketError, TokenError, TokenStore};
use crate::wire::{
    Ack, AudioFormat, AudioInfo, AudioVideo, ControlRequest, ForwardInfo, LoginRequest,
    LoginResult, Notification, ParticipantAction, ParticipantInfo, Permission, ProgressStatus,
    ProtocolVersion, PublishRequest, Request, Resolution, RoomInfo, Signaling, SoacRequest,
    StreamEvent, StreamInfo, StreamMedia, SubscribeRequest, TrackStatus, VideoFormat, VideoInfo,
    VideoOriginal, VideoParameters,
};

/// A socket, by its Socket.IO id.
pub type ConnId = String;

/// A member of the shared room, from either front end.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub user: String,
    pub role: String,
    pub permission: Permission,
}

/// Why the shared room refused a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    Full,
    Other(String),
}

/// What the portal reads from (and tells) the shared room and the SFU, synchronously.
pub trait Shared {
    /// Enter the shared room `room` as `who`; `limit` 0 = no cap.
    fn join(&mut self, room: &str, who: &Member, limit: usize) -> Result<(), JoinRefused>;
    fn leave(&mut self, room: &str, id: &str);
    /// People in the room (both front ends), in order of arrival.
    fn members(&self, room: &str) -> Vec<Member>;
    /// Ready publications of the room (both front ends).
    fn streams(&self, room: &str) -> Vec<rtc::StreamInfo>;
    /// Post chat for the other front end; `to: None` = everybody.
    fn chat(&mut self, room: &str, from: &Member, to: Option<&str>, message: &Value);
    /// Remove a member of the other front end (REST drop).
    fn kick(&mut self, room: &str, id: &str) -> bool;
}

/// Work for the media plane; results come back through [`Portal::media`].
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    Publish {
        stream: String,
        room: String,
        owner: rtc::ParticipantRef,
        sdp: String,
        label: String,
        codecs: Vec<String>,
    },
    Subscribe {
        subscription: String,
        room: String,
        subscriber: rtc::ParticipantRef,
        sdp: String,
        audio_from: Option<String>,
        video_from: Option<String>,
        rid: Option<String>,
    },
    /// `peer` is the SFU's id: the stream id, or a subscription's SFU id.
    Candidate {
        peer: String,
        candidate: String,
    },
    Close {
        peer: String,
    },
    Pause {
        peer: String,
        kind: rtc::Kind,
        paused: bool,
    },
    SetLayer {
        peer: String,
        rid: String,
    },
    /// Forward another stream of the room on a subscription's `kind` track.
    SwitchSource {
        peer: String,
        kind: rtc::Kind,
        from: String,
    },
}

/// Results of [`MediaCommand`]s and the SFU's own events.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    PublishAnswer {
        stream: String,
        sdp: String,
    },
    PublishFailed {
        stream: String,
        reason: String,
    },
    SubscribeAnswer {
        subscription: String,
        peer: String,
        sdp: String,
    },
    SubscribeFailed {
        subscription: String,
        reason: String,
    },
    /// An event of the peer behind an OWT session (stream id or OWT subscription id).
    Peer {
        session: String,
        event: rtc::PeerEvent,
    },
    Sfu(rtc::SfuEvent),
}

/// What the server must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The ack callback's arguments for the request being handled.
    Ack(Vec<Value>),
    Send {
        conn: ConnId,
        event: &'static str,
        data: Value,
    },
    /// Disconnect the socket (after what was sent before).
    Close {
        conn: ConnId,
    },
    Media(MediaCommand),
}

/// Portal settings (see [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct PortalConfig {
    pub token_key: String,
    pub reconnection_key: String,
    pub text_limit: usize,
    pub login_timeout_ms: u64,
    pub reconnection_timeout_ms: u64,
    pub ticket_lifetime_ms: u64,
}

#[derive(Debug)]
enum ConnState {
    Fresh,
    Bound(String),
}

#[derive(Debug)]
struct Conn {
    connected_ms: u64,
    state: ConnState,
}

#[derive(Debug)]
struct Local {
    info: Member,
    room_id: String,
    room: String,
    protocol: ProtocolVersion,
    reconnect: bool,
    conn: Option<ConnId>,
    lost_ms: Option<u64>,
    queue: VecDeque<(&'static str, Value)>,
}

#[derive(Debug, PartialEq)]
enum PubState {
    Created,
    Negotiating,
    Answered,
}

#[derive(Debug)]
struct Publication {
    owner: String,
    room: String,
    source_audio: Option<String>,
    source_video: Option<String>,
    parameters: Option<VideoParameters>,
    attributes: Map<String, Value>,
    state: PubState,
    pending_candidates: Vec<String>,
    ready_sent: bool,
}

#[derive(Debug)]
struct Sub {
    owner: String,
    room: String,
    audio_from: Option<String>,
    video_from: Option<String>,
    rid: Option<String>,
    peer: Option<String>,
    offered: bool,
    pending_candidates: Vec<String>,
    ready_sent: bool,
}

/// Every OWT connection, participant, publication and subscription of this node.
pub struct Portal {
    cfg: PortalConfig,
    pub tokens: TokenStore,
    pub rooms: RoomConfigs,
    conns: HashMap<ConnId, Conn>,
    locals: HashMap<String, Local>,
    publications: HashMap<String, Publication>,
    subscriptions: HashMap<String, Sub>,
    /// Paused flags last announced per stream id, to turn SFU updates into `stream update`s.
    announced: HashMap<String, (bool, bool, usize)>,
}

fn ack(out: &mut Vec<Output>, a: Ack, protocol: ProtocolVersion) {
    out.push(Output::Ack(a.args(protocol)));
}

fn random_decimal() -> String {
    // 18 digits fit in u64 and in `[0-9a-zA-Z-]+`.
    format!(
        "{}",
        rand::random::<u64>() % 900_000_000_000_000_000 + 100_000_000_000_000_000
    )
}

impl Portal {
    pub fn new(cfg: PortalConfig) -> Self {
        Portal {
            cfg,
            tokens: TokenStore::default(),
            rooms: RoomConfigs::default(),
            conns: HashMap::new(),
            locals: HashMap::new(),
            publications: HashMap::new(),
            subscriptions: HashMap::new(),
            announced: HashMap::new(),
        }
    }

    pub fn config(&self) -> &PortalConfig {
        &self.cfg
    }

    /// A socket connected; it must log in within the login timeout.
    pub fn connected(&mut self, now_ms: u64, conn: &str) {
        self.conns.insert(
            conn.to_owned(),
            Conn {
                connected_ms: now_ms,
                state: ConnState::Fresh,
            },
        );
    }

    /// Number of logged-in OWT participants (for metrics and tests).
    pub fn participant_count(&self) -> usize {
        self.locals.len()
    }

    /// The participant a socket is logged in as.
    pub fn participant_of(&self, conn: &str) -> Option<&str> {
        match &self.conns.get(conn)?.state {
            ConnState::Bound(p) => Some(p),
            ConnState::Fresh => None,
        }
    }

    /// Rooms (by name) that have OWT participants: the server watches their events.
    pub fn active_rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = self.locals.values().map(|l| l.room.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    // ----------------------------------------------------------------------------------
    // Delivery

    fn send_to(&mut self, out: &mut Vec<Output>, pid: &str, n: &Notification) {
        let Some(l) = self.locals.get_mut(pid) else {
            return;
        };
        let data = n.data();
        match &l.conn {
            Some(c) => out.push(Output::Send {
                conn: c.clone(),
                event: n.event(),
                data,
            }),
            None => l.queue.push_back((n.event(), data)),
        }
    }

    fn room_locals(&self, room: &str) -> Vec<String> {
        let mut v: Vec<(&String, &Local)> =
            self.locals.iter().filter(|(_, l)| l.room == room).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    fn broadcast(
        &mut self,
        out: &mut Vec<Output>,
        room: &str,
        except: Option<&str>,
        n: &Notification,
    ) {
        for pid in self.room_locals(room) {
            if Some(pid.as_str()) != except {
                self.send_to(out, &pid, n);
            }
        }
    }

    fn room_config(&self, room_name: &str) -> Option<&RoomConfig> {
        self.rooms.find(room_name)
    }

    fn notify_streams(&self, room: &str) -> bool {
        self.room_config(room)
            .is_none_or(RoomConfig::notify_streams)
    }

    fn notify_participants(&self, room: &str) -> bool {
        self.room_config(room)
            .is_none_or(RoomConfig::notify_participants)
    }

    /// Tell every OWT participant of `room` about a stream, each in its protocol's form.
    fn broadcast_stream_add(&mut self, out: &mut Vec<Output>, room: &str, info: &StreamInfo) {
        if !self.notify_streams(room) {
            return;
        }
        for pid in self.room_locals(room) {
            let protocol = self
                .locals
                .get(&pid)
                .map_or(ProtocolVersion::V1_1, |l| l.protocol);
            let n = Notification::Stream {
                id: info.id.clone(),
                event: StreamEvent::Add(info.to_wire(protocol)),
            };
            self.send_to(out, &pid, &n);
        }
    }

    // ----------------------------------------------------------------------------------
    // Requests

    /// Handle one request from socket `conn`. The outputs contain exactly one `Ack`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        conn: &str,
        req: Request,
        shared: &mut dyn Shared,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let bound = match self.conns.get(conn).map(|c| &c.state) {
            None => {
                // A socket we never saw connect (or already closed).
                ack(
                    &mut out,
                    Ack::error("Illegal request"),
                    ProtocolVersion::V1_1,
                );
                return out;
            }
            Some(ConnState::Fresh) => None,
            Some(ConnState::Bound(p)) => Some(p.clone()),
        };
        match (req, bound) {
            (Request::Login(_) | Request::Relogin(_), Some(p)) => {
                let protocol = self.protocol_of(&p);
                ack(&mut out, Ack::error("Connection is in service"), protocol);
            }
            (Request::Login(l), None) => self.login(now_ms, conn, l, shared, &mut out),
            (Request::Relogin(t), None) => self.relogin(now_ms, conn, &t, &mut out),
            (_, None) => ack(
                &mut out,
                Ack::error("Illegal request"),
                ProtocolVersion::V1_1,
            ),
            (req, Some(pid)) => {
                let protocol = self.protocol_of(&pid);
                let result = self.request(now_ms, &pid, req, shared, &mut out);
                match result {
                    Ok(Some(a)) => {
                        // Acks must precede what the request causes (progress, updates).
                        out.insert(0, Output::Ack(a.args(protocol)));
                    }
                    Ok(None) => {}
                    Err(e) => out.insert(0, Output::Ack(Ack::error(e).args(protocol))),
                }
            }
        }
        out
    }

    fn protocol_of(&self, pid: &str) -> ProtocolVersion {
        self.locals
            .get(pid)
            .map_or(ProtocolVersion::V1_1, |l| l.protocol)
    }

    fn refuse_login(&mut self, conn: &str, reason: &str, out: &mut Vec<Output>) {
        tracing::info!(conn, reason, "owt login refused");
        metrics::counter!("switchyard_owt_login_failures_total").increment(1);
        ack(out, Ack::error(reason), ProtocolVersion::V1_1);
        out.push(Output::Close {
            conn: conn.to_owned(),
        });
        self.conns.remove(conn);
    }

    fn login(
        &mut self,
        now_ms: u64,
        conn: &str,
        req: LoginRequest,
        shared: &mut dyn Shared,
        out: &mut Vec<Output>,
    ) {
        let protocol = match req.protocol.as_deref() {
            Some("1.1") => ProtocolVersion::V1_1,
            Some("1.0") => ProtocolVersion::V1_0,
            _ => return self.refuse_login(conn, "Unknown client protocol", out),
        };
        let ua = req.user_agent.unwrap_or_default();
        if ua.sdk.as_ref().and_then(|s| s.version.as_deref()) == Some("3.5") {
            return self.refuse_login(conn, "Deprecated client version", out);
        }
        if !ua.is_complete() {
            return self.refuse_login(conn, "User agent info is incorrect", out);
        }
        let record = match self.tokens.consume(&self.cfg.token_key, &req.token, now_ms) {
            Ok(r) => r,
            Err(e @ (TokenError::Signature | TokenError::Expired | TokenError::Unknown)) => {
                return self.refuse_login(conn, &e.to_string(), out);
            }
            Err(TokenError::Malformed) => return self.refuse_login(conn, "Invalid token", out),
        };
        let Some(config) = self.rooms.find(&record.room).cloned() else {
            return self.refuse_login(conn, "Joining room failed", out);
        };
        let Some(role) = config.role(&record.role) else {
            return self.refuse_login(conn, "Invalid role", out);
        };
        let me = Member {
            id: conn.to_owned(),
            user: record.user.clone(),
            role: role.role.clone(),
            permission: role.permission(),
        };
        let limit = usize::try_from(config.participant_limit).unwrap_or(0);
        match shared.join(&config.name, &me, limit) {
            Ok(()) => {}
            Err(JoinRefused::Full) => return self.refuse_login(conn, "Room is full", out),
            Err(JoinRefused::Other(reason)) => return self.refuse_login(conn, &reason, out),
        }
        let reconnect = ua.allows_reconnection();
        if let Some(c) = self.conns.get_mut(conn) {
            c.state = ConnState::Bound(conn.to_owned());
        }
        self.locals.insert(
            conn.to_owned(),
            Local {
                info: me.clone(),
                room_id: config.id.clone(),
                room: config.name.clone(),
                protocol,
                reconnect,
                conn: Some(conn.to_owned()),
                lost_ms: None,
                queue: VecDeque::new(),
            },
        );
        metrics::gauge!("switchyard_owt_participants").set(self.locals.len() as f64);
        tracing::info!(participant = conn, user = %me.user, room = %config.name, "owt login");
        if config.notify_participants() {
            let n = Notification::Participant(ParticipantAction::Join(ParticipantInfo {
                id: me.id.clone(),
                user: me.user.clone(),
                role: me.role.clone(),
            }));
            self.broadcast(out, &config.name, Some(conn), &n);
        }
        let streams = shared
            .streams(&config.name)
            .iter()
            .map(|s| self.stream_info(s).to_wire(protocol))
            .collect();
        let participants = self
            .members(&config.name, shared)
            .into_iter()
            .map(|m| ParticipantInfo {
                id: m.id,
                user: m.user,
                role: m.role,
            })
            .collect();
        let result = LoginResult {
            id: me.id.clone(),
            user: me.user,
            role: me.role,
            permission: me.permission,
            room: RoomInfo {
                id: config.id,
                views: vec![],
                streams,
                participants,
            },
            reconnection_ticket: reconnect.then(|| self.ticket(&me.id, now_ms)),
        };
        ack(
            out,
            Ack::ok_with(serde_json::to_value(result).unwrap_or(Value::Null)),
            protocol,
        );
    }

    fn ticket(&self, pid: &str, now_ms: u64) -> String {
        Ticket::issue(
            &self.cfg.reconnection_key,
            pid,
            now_ms,
            self.cfg.ticket_lifetime_ms,
        )
        .encode()
    }

    fn relogin(&mut self, now_ms: u64, conn: &str, ticket: &str, out: &mut Vec<Output>) {
        let t = match Ticket::verify(&self.cfg.reconnection_key, ticket, now_ms) {
            Ok(t) => t,
            Err(TicketError::Malformed) => {
                return self.refuse_login(conn, "Invalid reconnection ticket", out);
            }
            Err(e) => return self.refuse_login(conn, &e.to_string(), out),
        };
        let Some(local) = self.locals.get(&t.participant_id) else {
            return self.refuse_login(conn, "Client does NOT exist", out);
        };
        if !local.reconnect {
            return self.refuse_login(conn, "Reconnection is not allowed", out);
        }
        let pid = t.participant_id.clone();
        let protocol = local.protocol;
        let old = local.conn.clone();
        if let Some(old) = old {
            // The old socket no longer speaks for the participant.
            self.conns.remove(&old);
            out.push(Output::Close { conn: old });
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.state = ConnState::Bound(pid.clone());
        }
        let ticket = self.ticket(&pid, now_ms);
        ack(out, Ack::ok_with(Value::String(ticket)), protocol);
        if let Some(l) = self.locals.get_mut(&pid) {
            l.conn = Some(conn.to_owned());
            l.lost_ms = None;
            for (event, data) in l.queue.drain(..) {
                out.push(Output::Send {
                    conn: conn.to_owned(),
                    event,
                    data,
                });
            }
        }
        tracing::info!(participant = %pid, conn, "owt relogin");
    }

    fn request(
        &mut self,
        now_ms: u64,
        pid: &str,
        req: Request,
        shared: &mut dyn Shared,
        out: &mut Vec<Output>,
    ) -> Result<Option<Ack>, String> {
        match req {
            Request::Login(_) | Request::Relogin(_) => Err("Connection is in service".into()),
            Request::Logout => {
                let protocol = self.protocol_of(pid);
                ack(out, Ack::ok(), protocol);
                self.leave(pid, shared, out);
                Ok(None)
            }
            Request::RefreshReconnectionTicket => {
                let reconnect = self.locals.get(pid).is_some_and(|l| l.reconnect);
                if !reconnect {
                    return Err("Reconnection is not enabled.".into());
                }
                Ok(Some(Ack::ok_with(Value::String(self.ticket(pid, now_ms)))))
            }
            Request::Text(t) => self.text(pid, &t.to, t.message, shared, out),
            Request::Publish(p) => self.publish(pid, p, shared),
            Request::Unpublish(r) => {
                let p = self
                    .publications
                    .get(&r.id)
                    .ok_or("Stream does NOT exist")?;
                if p.owner != pid {
                    return Err("unauthorized".into());
                }
                self.publications.remove(&r.id);
                out.push(Output::Media(MediaCommand::Close { peer: r.id }));
                Ok(Some(Ack::ok()))
            }
            Request::StreamControl(c) => self.stream_control(pid, c, shared, out),
            Request::Subscribe(s) => self.subscribe(pid, s, shared),
            Request::Unsubscribe(r) => {
                let s = self
                    .subscriptions
                    .get(&r.id)
                    .ok_or("Subscription does NOT exist")?;
                if s.owner != pid {
                    return Err("unauthorized".into());
                }
                if let Some(s) = self.subscriptions.remove(&r.id)
                    && let Some(peer) = s.peer
                {
                    out.push(Output::Media(MediaCommand::Close { peer }));
                }
                Ok(Some(Ack::ok()))
            }
            Request::SubscriptionControl(c) => self.subscription_control(pid, c, shared, out),
            Request::Soac(s) => self.soac(pid, s, out),
        }
    }

    fn text(
        &mut self,
        pid: &str,
        to: &Value,
        message: Value,
        shared: &mut dyn Shared,
        out: &mut Vec<Output>,
    ) -> Result<Option<Ack>, String> {
        let to = to
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("Invalid receiver")?;
        let len = match &message {
            Value::String(s) => s.chars().count(),
            other => other.to_string().chars().count(),
        };
        if len > self.cfg.text_limit {
            return Err(format!(
                "Text message is too long (limit {} characters)",
                self.cfg.text_limit
            ));
        }
        let local = self.locals.get(pid).ok_or("Illegal request")?;
        let room = local.room.clone();
        let me = local.info.clone();
        if to == "all" {
            let n = Notification::Text {
                from: pid.to_owned(),
                to: "all".into(),
                message: message.clone(),
            };
            // Ack first so the sender sees its request settle before its own echo.
            out.push(Output::Ack(Ack::ok().args(self.protocol_of(pid))));
            self.broadcast(out, &room, None, &n);
            shared.chat(&room, &me, None, &message);
            return Ok(None);
        }
        if self.locals.get(to).is_some_and(|l| l.room == room) {
            out.push(Output::Ack(Ack::ok().args(self.protocol_of(pid))));
            let n = Notification::Text {
                from: pid.to_owned(),
                to: "me".into(),
                message,
            };
            self.send_to(out, to, &n);
            return Ok(None);
        }
        if shared.members(&room).iter().any(|m| m.id == to) {
            shared.chat(&room, &me, Some(to), &message);
            return Ok(Some(Ack::ok()));
        }
        Err(format!("Target participant does NOT exist: {to}"))
    }

    fn publish(
        &mut self,
        pid: &str,
        p: PublishRequest,
        shared: &mut dyn Shared,
    ) -> Result<Option<Ack>, String> {
        let local = self.locals.get(pid).ok_or("Illegal request")?;
        let perm = local.info.permission.publish;
        if (p.media.audio.is_some() && !perm.audio) || (p.media.video.is_some() && !perm.video) {
            return Err("unauthorized".into());
        }
        let room = local.room.clone();
        if let Some(config) = self.room_config(&room) {
            if p.media.audio.is_some() && !config.accepts("audio") {
                return Err("Audio is forbiden".into());
            }
            if p.media.video.is_some() && !config.accepts("video") {
                return Err("Video is forbiden".into());
            }
            if config.input_limit >= 0 {
                let connecting = self
                    .publications
                    .values()
                    .filter(|x| x.room == room && !x.ready_sent)
                    .count();
                let count = shared.streams(&room).len() + connecting;
                if count as i64 >= config.input_limit {
                    return Err("Too many inputs".into());
                }
            }
        }
        let id = random_decimal();
        if self.publications.contains_key(&id) {
            return Err("Stream exists".into());
        }
        let parameters = p
            .media
            .video
            .as_ref()
            .and_then(|v| v.parameters.as_ref())
            .map(|v| VideoParameters {
                resolution: v.resolution,
                framerate: v.framerate,
                bitrate: None,
                key_frame_interval: None,
            });
        self.publications.insert(
            id.clone(),
            Publication {
                owner: pid.to_owned(),
                room,
                source_audio: p.media.audio.map(|a| a.source),
                source_video: p.media.video.map(|v| v.source),
                parameters,
                attributes: p.attributes.unwrap_or_default(),
                state: PubState::Created,
                pending_candidates: vec![],
                ready_sent: false,
            },
        );
        metrics::counter!("switchyard_owt_publications_total").increment(1);
        Ok(Some(Ack::ok_with(json!({"id": id}))))
    }

    fn soac(
        &mut self,
        pid: &str,
        s: SoacRequest,
        out: &mut Vec<Output>,
    ) -> Result<Option<Ack>, String> {
        let no_session = || format!("Session {} does NOT exist", s.id);
        if let Some(p) = self.publications.get_mut(&s.id) {
            if p.owner != pid {
                return Err(no_session());
            }
            match s.signaling {
                Signaling::Offer { sdp } => {
                    if p.state != PubState::Created {
                        return Err("Renegotiation is not supported".into());
                    }
                    p.state = PubState::Negotiating;
                    let local = self.locals.get(pid).ok_or("Illegal request")?;
                    let label = p
                        .attributes
                        .get("label")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| match p.source_video.as_deref() {
                            Some("screen-cast") => "screenshare".into(),
                            _ => "camera".into(),
                        });
                    let codecs = self
                        .rooms
                        .find(&p.room)
                        .map(RoomConfig::codecs)
                        .unwrap_or_default();
                    out.push(Output::Media(MediaCommand::Publish {
                        stream: s.id.clone(),
                        room: p.room.clone(),
                        owner: rtc::ParticipantRef {
                            id: pid.to_owned(),
                            username: local.info.user.clone(),
                        },
                        sdp,
                        label,
                        codecs,
                    }));
                }
                Signaling::Candidate { candidate } => {
                    let c = candidate.attribute().to_owned();
                    if p.state == PubState::Answered {
                        out.push(Output::Media(MediaCommand::Candidate {
                            peer: s.id.clone(),
                            candidate: c,
                        }));
                    } else {
                        p.pending_candidates.push(c);
                    }
                }
                Signaling::Answer { .. } | Signaling::RemovedCandidates { .. } => {}
            }
            return Ok(Some(Ack::ok()));
        }
        if let Some(sub) = self.subscriptions.get_mut(&s.id) {
            if sub.owner != pid {
                return Err(no_session());
            }
            match s.signaling {
                Signaling::Offer { sdp } => {
                    if sub.offered {
                        return Err("Renegotiation is not supported".into());
                    }
                    sub.offered = true;
                    let user = self
                        .locals
                        .get(pid)
                        .map(|l| l.info.user.clone())
                        .unwrap_or_default();
                    out.push(Output::Media(MediaCommand::Subscribe {
                        subscription: s.id.clone(),
                        room: sub.room.clone(),
                        subscriber: rtc::ParticipantRef {
                            id: pid.to_owned(),
                            username: user,
                        },
                        sdp,
                        audio_from: sub.audio_from.clone(),
                        video_from: sub.video_from.clone(),
                        rid: sub.rid.clone(),
                    }));
                }
                Signaling::Candidate { candidate } => {
                    let c = candidate.attribute().to_owned();
                    match &sub.peer {
                        Some(peer) => out.push(Output::Media(MediaCommand::Candidate {
                            peer: peer.clone(),
                            candidate: c,
                        })),
                        None => sub.pending_candidates.push(c),
                    }
                }
                Signaling::Answer { .. } | Signaling::RemovedCandidates { .. } => {}
            }
            return Ok(Some(Ack::ok()));
        }
        Err(no_session())
    }

    fn subscribe(
        &mut self,
        pid: &str,
        s: SubscribeRequest,
        shared: &mut dyn Shared,
    ) -> Result<Option<Ack>, String> {
        let local = self.locals.get(pid).ok_or("Illegal request")?;
        let (audio, video) = (s.media.audio, s.media.video);
        if audio.is_none() && video.is_none() {
            return Err("Bad subscription request".into());
        }
        let perm = local.info.permission.subscribe;
        if (audio.is_some() && !perm.audio) || (video.is_some() && !perm.video) {
            return Err("unauthorized".into());
        }
        let room = local.room.clone();
        let streams = shared.streams(&room);
        let find = |id: &str| streams.iter().find(|x| x.id == id);
        if let Some(a) = &audio {
            const E: &str = "Target audio stream does NOT satisfy:";
            let track = find(&a.from)
                .and_then(|x| x.track(rtc::Kind::Audio))
                .ok_or(format!("{E}Requested audio stream"))?;
            if let Some(f) = &a.format
                && !f.codec.eq_ignore_ascii_case(&track.codec)
            {
                return Err(format!("{E}Format is not acceptable"));
            }
        }
        if let Some(v) = &video {
            const E: &str = "Target video stream does NOT satisfy:";
            let stream = find(&v.from).ok_or(format!("{E}Requested video stream"))?;
            let track = stream
                .track(rtc::Kind::Video)
                .ok_or(format!("{E}Requested video stream"))?;
            if let Some(f) = &v.format
                && !f.codec.eq_ignore_ascii_case(&track.codec)
            {
                return Err(format!("{E}Format is not acceptable"));
            }
            if let Some(rid) = &v.simulcast_rid
                && !track.simulcast_rids.contains(rid)
            {
                return Err(format!("{E}Simulcast RID is not acceptable"));
            }
            if let Some(params) = &v.parameters {
                let known = self
                    .publications
                    .get(&v.from)
                    .and_then(|p| p.parameters.clone());
                if let Some(r) = params.resolution
                    && known
                        .as_ref()
                        .and_then(|k| k.resolution)
                        .is_some_and(|k: Resolution| k != r)
                {
                    return Err(format!("{E}Resolution is not acceptable"));
                }
                if let Some(f) = params.framerate
                    && known
                        .as_ref()
                        .and_then(|k| k.framerate)
                        .is_some_and(|k| (k - f).abs() > 0.5)
                {
                    return Err(format!("{E}Framerate is not acceptable"));
                }
                if params.bitrate.is_some() {
                    return Err(format!("{E}Bitrate is not acceptable"));
                }
                if params.key_frame_interval.is_some() {
                    return Err(format!("{E}KeyFrameInterval is not acceptable"));
                }
            }
        }
        let id = random_decimal();
        if self.subscriptions.contains_key(&id) {
            return Err("Subscription exists".into());
        }
        self.subscriptions.insert(
            id.clone(),
            Sub {
                owner: pid.to_owned(),
                room,
                audio_from: audio.map(|a| a.from),
                rid: video.as_ref().and_then(|v| v.simulcast_rid.clone()),
                video_from: video.map(|v| v.from),
                peer: None,
                offered: false,
                pending_candidates: vec![],
                ready_sent: false,
            },
        );
        metrics::counter!("switchyard_owt_subscriptions_total").increment(1);
        Ok(Some(Ack::ok_with(json!({"id": id}))))
    }

    /// The `from` changes an `update` asks for, checked against the room's
    /// streams: the new source must have the kind, in the codec the
    /// subscriber already receives (an SFU cannot transcode).
    fn source_switches(
        sub: &Sub,
        data: &Value,
        streams: &[rtc::StreamInfo],
    ) -> Result<Vec<(rtc::Kind, String)>, String> {
        let mut switches = Vec::new();
        for (kind, current) in [
            (rtc::Kind::Audio, &sub.audio_from),
            (rtc::Kind::Video, &sub.video_from),
        ] {
            let Some(from) = data.get(kind.as_str()).and_then(|k| k.get("from")) else {
                continue;
            };
            let name = kind.as_str();
            let unsatisfied =
                || format!("Target {name} stream does NOT satisfy:Requested {name} stream");
            let from = from.as_str().ok_or_else(unsatisfied)?;
            let Some(current) = current else {
                return Err(unsatisfied());
            };
            if from == current {
                continue;
            }
            let track_of = |id: &str| {
                streams
                    .iter()
                    .find(|s| s.id == id)
                    .and_then(|s| s.track(kind))
            };
            let target = track_of(from).ok_or_else(unsatisfied)?;
            if track_of(current).is_some_and(|t| t.codec != target.codec) {
                return Err(format!(
                    "Target {name} stream does NOT satisfy:Format is not acceptable"
                ));
            }
            switches.push((kind, from.to_owned()));
        }
        Ok(switches)
    }

    fn kinds(data: Option<&Value>) -> Result<Vec<rtc::Kind>, String> {
        match data.and_then(Value::as_str) {
            Some("audio") => Ok(vec![rtc::Kind::Audio]),
            Some("video") => Ok(vec![rtc::Kind::Video]),
            Some("av") => Ok(vec![rtc::Kind::Audio, rtc::Kind::Video]),
            _ => Err("request.data should be equal to one of the allowed values".into()),
        }
    }

    fn stream_control(
        &mut self,
        pid: &str,
        c: ControlRequest,
        shared: &mut dyn Shared,
        out: &mut Vec<Output>,
    ) -> Result<Option<Ack>, String> {
        let room = self
            .locals
            .get(pid)
            .map(|l| l.room.clone())
            .ok_or("Illegal request")?;
        let stream = shared.streams(&room).into_iter().find(|s| s.id == c.id);
        let owner = match (&stream, self.publications.get(&c.id)) {
            (_, Some(p)) => p.owner.clone(),
            (Some(s), None) => s.owner.id.clone(),
            (None, None) => return Err("Stream does NOT exist".into()),
        };
        if owner != pid {
            return Err("unauthorized".into());
        }
        match c.operation.as_str() {
            "pause" | "play" => {
                let kinds = Self::kinds(c.data.as_ref())?;
                let paused = c.operation == "pause";
                self.set_stream_status(&room, &c.id, stream.as_ref(), &kinds, paused, out)?;
                Ok(None)
            }
            _ => Err("Mixing is not supported: this room has no views".into()),
        }
    }

    /// Pause/play of a publication's kinds, from `stream-control` or REST: ack, SFU command,
    /// then `stream update` to all.
    fn set_stream_status(
        &mut self,
        room: &str,
        id: &str,
        stream: Option<&rtc::StreamInfo>,
        kinds: &[rtc::Kind],
        paused: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if let Some(s) = stream {
            for k in kinds {
                if s.track(*k).is_none() {
                    return Err(format!("Stream does NOT contain {} track", k.as_str()));
                }
            }
        }
        out.push(Output::Ack(Ack::ok().args(ProtocolVersion::V1_1)));
        let entry = self
            .announced
            .entry(id.to_owned())
            .or_insert((false, false, 0));
        let mut changed = vec![];
        for k in kinds {
            out.push(Output::Media(MediaCommand::Pause {
                peer: id.to_owned(),
                kind: *k,
                paused,
            }));
            let flag = match k {
                rtc::Kind::Audio => &mut entry.0,
                rtc::Kind::Video => &mut entry.1,
            };
            *flag = paused;
            changed.push(*k);
        }
        if stream.is_some() && self.notify_streams(room) {
            for k in changed {
                let n = Notification::Stream {
                    id: id.to_owned(),
                    event: StreamEvent::Update {
                        field: format!("{}.status", k.as_str()),
                        value: Value::from(if paused { "inactive" } else { "active" }),
                    },
                };
                self.broadcast(out, room, None, &n);
            }
        }
        Ok(())
    }

    fn subscription_control(
        &mut self,
        pid: &str,
        c: ControlRequest,
        shared: &mut dyn Shared,
        out: &mut Vec<Output>,
    ) -> Result<Option<Ack>, String> {
        let sub = self
            .subscriptions
            .get_mut(&c.id)
            .ok_or("Subscription does NOT exist")?;
        if sub.owner != pid {
            return Err("unauthorized".into());
        }
        match c.operation.as_str() {
            "pause" | "play" => {
                let kinds = Self::kinds(c.data.as_ref())?;
                if let Some(peer) = &sub.peer {
                    for kind in kinds {
                        out.push(Output::Media(MediaCommand::Pause {
                            peer: peer.clone(),
                            kind,
                            paused: c.operation == "pause",
                        }));
                    }
                }
                Ok(Some(Ack::ok()))
            }
            _ => {
                // update: an SFU can switch sources (same codec) and simulcast
                // layers, not re-encode.
                let data = c.data.unwrap_or(Value::Null);
                let switches = Self::source_switches(sub, &data, &shared.streams(&sub.room))?;
                let video = data.get("video");
                if video
                    .and_then(|v| v.get("parameters"))
                    .is_some_and(|p| p.as_object().is_some_and(|o| !o.is_empty()))
                {
                    return Err(
                        "Target video stream does NOT satisfy:Resolution is not acceptable".into(),
                    );
                }
                if let Some(rid) = video
                    .and_then(|v| v.get("simulcastRid"))
                    .and_then(Value::as_str)
                {
                    let room = sub.room.clone();
                    let from = sub.video_from.clone().unwrap_or_default();
                    let ok = shared
                        .streams(&room)
                        .iter()
                        .find(|s| s.id == from)
                        .and_then(|s| s.track(rtc::Kind::Video))
                        .is_some_and(|t| t.simulcast_rids.iter().any(|r| r == rid));
                    if !ok {
                        return Err(
                            "Target video stream does NOT satisfy:Simulcast RID is not acceptable"
                                .into(),
                        );
                    }
                    if let Some(sub) = self.subscriptions.get_mut(&c.id) {
                        sub.rid = Some(rid.to_owned());
                        if let Some(peer) = &sub.peer {
                            out.push(Output::Media(MediaCommand::SetLayer {
                                peer: peer.clone(),
                                rid: rid.to_owned(),
                            }));
                        }
                    }
                }
                if let Some(sub) = self.subscriptions.get_mut(&c.id) {
                    for (kind, from) in switches {
                        match kind {
                            rtc::Kind::Audio => sub.audio_from = Some(from.clone()),
                            rtc::Kind::Video => sub.video_from = Some(from.clone()),
                        }
                        if let Some(peer) = &sub.peer {
                            out.push(Output::Media(MediaCommand::SwitchSource {
                                peer: peer.clone(),
                                kind,
                                from,
                            }));
                        }
                    }
                }
                Ok(Some(Ack::ok()))
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Leaving

    /// Remove an OWT participant: others get `leave`; its sessions are closed.
    fn leave(&mut self, pid: &str, shared: &mut dyn Shared, out: &mut Vec<Output>) {
        let Some(l) = self.locals.remove(pid) else {
            return;
        };
        if let Some(c) = &l.conn {
            self.conns.remove(c);
        }
        shared.leave(&l.room, pid);
        metrics::gauge!("switchyard_owt_participants").set(self.locals.len() as f64);
        tracing::info!(participant = pid, room = %l.room, "owt participant left");
        if self.notify_participants(&l.room) {
            let n = Notification::Participant(ParticipantAction::Leave(pid.to_owned()));
            self.broadcast(out, &l.room, None, &n);
        }
        let pubs: Vec<String> = self
            .publications
            .iter()
            .filter(|(_, p)| p.owner == pid)
            .map(|(k, _)| k.clone())
            .collect();
        for id in pubs {
            self.publications.remove(&id);
            out.push(Output::Media(MediaCommand::Close { peer: id }));
        }
        let subs: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.owner == pid)
            .map(|(k, _)| k.clone())
            .collect();
        for id in subs {
            if let Some(peer) = self.subscriptions.remove(&id).and_then(|s| s.peer) {
                out.push(Output::Media(MediaCommand::Close { peer }));
            }
        }
    }

    /// The socket closed (transport loss, client close, or after our own `Close`).
    pub fn disconnected(
        &mut self,
        now_ms: u64,
        conn: &str,
        shared: &mut dyn Shared,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(c) = self.conns.remove(conn) else {
            return out;
        };
        let ConnState::Bound(pid) = c.state else {
            return out;
        };
        let Some(l) = self.locals.get_mut(&pid) else {
            return out;
        };
        if l.conn.as_deref() != Some(conn) {
            return out;
        }
        if l.reconnect {
            l.conn = None;
            l.lost_ms = Some(now_ms);
            tracing::info!(participant = %pid, "owt transport lost, waiting for relogin");
        } else {
            self.leave(&pid, shared, &mut out);
        }
        out
    }

    /// Deadlines: unauthenticated sockets, expired reconnection windows.
    pub fn tick(&mut self, now_ms: u64, shared: &mut dyn Shared) -> Vec<Output> {
        let mut out = Vec::new();
        let late: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, ConnState::Fresh)
                    && now_ms.saturating_sub(c.connected_ms) >= self.cfg.login_timeout_ms
            })
            .map(|(k, _)| k.clone())
            .collect();
        for conn in late {
            tracing::info!(conn = %conn, "owt connection did not log in in time");
            self.conns.remove(&conn);
            out.push(Output::Close { conn });
        }
        let gone: Vec<String> = self
            .locals
            .iter()
            .filter(|(_, l)| {
                l.lost_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.cfg.reconnection_timeout_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for pid in gone {
            self.leave(&pid, shared, &mut out);
        }
        out
    }

    // ----------------------------------------------------------------------------------
    // Media

    /// Results of media commands and events from the SFU.
    pub fn media(&mut self, ev: MediaEvent) -> Vec<Output> {
        let mut out = Vec::new();
        match ev {
            MediaEvent::PublishAnswer { stream, sdp } => {
                let Some(p) = self.publications.get_mut(&stream) else {
                    // Unpublished while the SFU was answering.
                    out.push(Output::Media(MediaCommand::Close { peer: stream }));
                    return out;
                };
                p.state = PubState::Answered;
                let owner = p.owner.clone();
                let pending = std::mem::take(&mut p.pending_candidates);
                let n = Notification::Progress {
                    id: stream.clone(),
                    status: ProgressStatus::Soac(json!({"type": "answer", "sdp": sdp})),
                };
                self.send_to(&mut out, &owner, &n);
                for candidate in pending {
                    out.push(Output::Media(MediaCommand::Candidate {
                        peer: stream.clone(),
                        candidate,
                    }));
                }
            }
            MediaEvent::PublishFailed { stream, reason } => {
                if let Some(p) = self.publications.remove(&stream) {
                    let n = Notification::Progress {
                        id: stream,
                        status: ProgressStatus::Error(reason),
                    };
                    self.send_to(&mut out, &p.owner, &n);
                }
            }
            MediaEvent::SubscribeAnswer {
                subscription,
                peer,
                sdp,
            } => {
                let Some(s) = self.subscriptions.get_mut(&subscription) else {
                    out.push(Output::Media(MediaCommand::Close { peer }));
                    return out;
                };
                s.peer = Some(peer.clone());
                let owner = s.owner.clone();
                let pending = std::mem::take(&mut s.pending_candidates);
                let n = Notification::Progress {
                    id: subscription.clone(),
                    status: ProgressStatus::Soac(json!({"type": "answer", "sdp": sdp})),
                };
                self.send_to(&mut out, &owner, &n);
                for candidate in pending {
                    out.push(Output::Media(MediaCommand::Candidate {
                        peer: peer.clone(),
                        candidate,
                    }));
                }
            }
            MediaEvent::SubscribeFailed {
                subscription,
                reason,
            } => {
                if let Some(s) = self.subscriptions.remove(&subscription) {
                    let n = Notification::Progress {
                        id: subscription,
                        status: ProgressStatus::Error(reason),
                    };
                    self.send_to(&mut out, &s.owner, &n);
                }
            }
            MediaEvent::Peer { session, event } => self.peer_event(&session, event, &mut out),
            MediaEvent::Sfu(e) => self.sfu_event(e, &mut out),
        }
        out
    }

    fn publication_ready(&mut self, id: &str, out: &mut Vec<Output>) {
        let Some(p) = self.publications.get_mut(id) else {
            return;
        };
        if p.ready_sent {
            return;
        }
        p.ready_sent = true;
        let owner = p.owner.clone();
        let n = Notification::Progress {
            id: id.to_owned(),
            status: ProgressStatus::Ready,
        };
        self.send_to(out, &owner, &n);
    }

    fn peer_event(&mut self, session: &str, event: rtc::PeerEvent, out: &mut Vec<Output>) {
        if self.publications.contains_key(session) {
            match event {
                rtc::PeerEvent::Connected => {}
                rtc::PeerEvent::Ready => self.publication_ready(session, out),
                rtc::PeerEvent::Failed(reason) => {
                    if let Some(p) = self.publications.remove(session) {
                        let n = Notification::Progress {
                            id: session.to_owned(),
                            status: ProgressStatus::Error(reason),
                        };
                        self.send_to(out, &p.owner, &n);
                    }
                }
                rtc::PeerEvent::Closed(_) => {
                    self.publications.remove(session);
                }
            }
            return;
        }
        let Some(s) = self.subscriptions.get_mut(session) else {
            return;
        };
        match event {
            rtc::PeerEvent::Connected | rtc::PeerEvent::Ready => {
                if !s.ready_sent {
                    s.ready_sent = true;
                    let owner = s.owner.clone();
                    let n = Notification::Progress {
                        id: session.to_owned(),
                        status: ProgressStatus::Ready,
                    };
                    self.send_to(out, &owner, &n);
                }
            }
            rtc::PeerEvent::Failed(reason) | rtc::PeerEvent::Closed(reason) => {
                if let Some(s) = self.subscriptions.remove(session) {
                    let reason = if reason.eq_ignore_ascii_case("source stream loss") {
                        "Source stream loss".to_owned()
                    } else {
                        reason
                    };
                    let n = Notification::Progress {
                        id: session.to_owned(),
                        status: ProgressStatus::Error(reason),
                    };
                    self.send_to(out, &s.owner, &n);
                }
            }
        }
    }

    fn sfu_event(&mut self, e: rtc::SfuEvent, out: &mut Vec<Output>) {
        match e {
            rtc::SfuEvent::StreamAdded { room, stream } => {
                self.publication_ready(&stream.id, out);
                let rids = stream
                    .track(rtc::Kind::Video)
                    .map_or(0, |t| t.simulcast_rids.len());
                self.announced.insert(
                    stream.id.clone(),
                    (stream.audio_paused, stream.video_paused, rids),
                );
                let info = self.stream_info(&stream);
                self.broadcast_stream_add(out, &room, &info);
            }
            rtc::SfuEvent::StreamUpdated { room, stream } => {
                let rids = stream
                    .track(rtc::Kind::Video)
                    .map_or(0, |t| t.simulcast_rids.len());
                let prev = self.announced.insert(
                    stream.id.clone(),
                    (stream.audio_paused, stream.video_paused, rids),
                );
                let Some((a, v, r)) = prev else { return };
                if !self.notify_streams(&room) {
                    return;
                }
                let status = |p: bool| Value::from(if p { "inactive" } else { "active" });
                let mut updates = vec![];
                if a != stream.audio_paused {
                    updates.push(("audio.status".to_owned(), status(stream.audio_paused)));
                }
                if v != stream.video_paused {
                    updates.push(("video.status".to_owned(), status(stream.video_paused)));
                }
                if r != rids {
                    let info = self.stream_info(&stream);
                    updates.push((
                        ".".to_owned(),
                        serde_json::to_value(info).unwrap_or(Value::Null),
                    ));
                }
                for (field, value) in updates {
                    let n = Notification::Stream {
                        id: stream.id.clone(),
                        event: StreamEvent::Update { field, value },
                    };
                    self.broadcast(out, &room, None, &n);
                }
            }
            rtc::SfuEvent::StreamRemoved { room, id } => {
                let was_announced = self.announced.remove(&id).is_some();
                self.publications.remove(&id);
                if was_announced && self.notify_streams(&room) {
                    let n = Notification::Stream {
                        id: id.clone(),
                        event: StreamEvent::Remove,
                    };
                    self.broadcast(out, &room, None, &n);
                }
                let fed: Vec<String> = self
                    .subscriptions
                    .iter()
                    .filter(|(_, s)| {
                        s.audio_from.as_deref() == Some(id.as_str())
                            || s.video_from.as_deref() == Some(id.as_str())
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for sid in fed {
                    if let Some(s) = self.subscriptions.remove(&sid) {
                        let n = Notification::Progress {
                            id: sid.clone(),
                            status: ProgressStatus::Error("Source stream loss".into()),
                        };
                        self.send_to(out, &s.owner, &n);
                        if let Some(peer) = s.peer {
                            out.push(Output::Media(MediaCommand::Close { peer }));
                        }
                    }
                }
            }
            rtc::SfuEvent::PeerConnected { .. } | rtc::SfuEvent::PeerFailed { .. } => {}
        }
    }

    /// OWT's StreamInfo for an SFU publication of either front end.
    pub fn stream_info(&self, s: &rtc::StreamInfo) -> StreamInfo {
        let local = self.publications.get(&s.id);
        let status = |p: bool| {
            if p {
                TrackStatus::Inactive
            } else {
                TrackStatus::Active
            }
        };
        let audio = s.track(rtc::Kind::Audio).map(|t| AudioInfo {
            status: status(s.audio_paused),
            source: local
                .and_then(|p| p.source_audio.clone())
                .unwrap_or_else(|| "mic".into()),
            format: audio_format(t),
        });
        let video = s.track(rtc::Kind::Video).map(|t| {
            let format = video_format(t);
            let parameters = local.and_then(|p| p.parameters.clone());
            let original = if t.simulcast_rids.is_empty() {
                vec![VideoOriginal {
                    format,
                    parameters,
                    simulcast_rid: None,
                }]
            } else {
                t.simulcast_rids
                    .iter()
                    .enumerate()
                    .map(|(i, rid)| VideoOriginal {
                        format: format.clone(),
                        parameters: if i == 0 { parameters.clone() } else { None },
                        simulcast_rid: Some(rid.clone()),
                    })
                    .collect()
            };
            VideoInfo {
                status: status(s.video_paused),
                source: local
                    .and_then(|p| p.source_video.clone())
                    .unwrap_or_else(|| {
                        if s.label == "screenshare" {
                            "screen-cast".into()
                        } else {
                            "camera".into()
                        }
                    }),
                original,
            }
        });
        let attributes = match local {
            Some(p) => p.attributes.clone(),
            None if !s.label.is_empty() => {
                let mut m = Map::new();
                m.insert("label".into(), Value::from(s.label.as_str()));
                m
            }
            None => Map::new(),
        };
        StreamInfo {
            id: s.id.clone(),
            kind: "forward".into(),
            media: StreamMedia { audio, video },
            info: ForwardInfo {
                owner: s.owner.id.clone(),
                kind: "webrtc".into(),
                in_views: vec![],
                attributes,
            },
        }
    }

    // ----------------------------------------------------------------------------------
    // The other front end

    /// An event of the shared room. Events caused by OWT participants were already
    /// delivered to OWT clients by the portal itself and are skipped.
    pub fn room_event(
        &mut self,
        room: &str,
        e: &yard::room::RoomEvent,
        shared: &mut dyn Shared,
    ) -> Vec<Output> {
        use yard::room::RoomEvent as E;
        let mut out = Vec::new();
        match e {
            E::ParticipantJoined(p)
                if p.front_end != yard::room::FrontEnd::Owt
                    && p.front_end.is_person()
                    && self.notify_participants(room) =>
            {
                let n = Notification::Participant(ParticipantAction::Join(ParticipantInfo {
                    id: p.id.clone(),
                    user: p.username.clone(),
                    role: galene_role(p).into(),
                }));
                self.broadcast(&mut out, room, None, &n);
            }
            E::ParticipantLeft { id, front_end, .. }
                if *front_end != yard::room::FrontEnd::Owt
                    && front_end.is_person()
                    && self.notify_participants(room) =>
            {
                let n = Notification::Participant(ParticipantAction::Leave(id.clone()));
                self.broadcast(&mut out, room, None, &n);
            }
            E::Chat(m) => {
                let from = m.from.clone().unwrap_or_default();
                if self.locals.contains_key(&from) || m.kind == "caption" {
                    return out;
                }
                let message = Value::String(m.text());
                match &m.to {
                    None => {
                        let n = Notification::Text {
                            from,
                            to: "all".into(),
                            message,
                        };
                        self.broadcast(&mut out, room, None, &n);
                    }
                    Some(to) if self.locals.get(to).is_some_and(|l| l.room == room) => {
                        let n = Notification::Text {
                            from,
                            to: "me".into(),
                            message,
                        };
                        self.send_to(&mut out, &to.clone(), &n);
                    }
                    Some(_) => {}
                }
            }
            E::Kicked { id, .. } if self.locals.contains_key(id) => {
                self.drop_participant(id, shared, &mut out);
            }
            E::ParticipantChanged(p) if p.front_end == yard::room::FrontEnd::Owt => {
                // Galène moderation: present/unpresent toggles publishing.
                if let Some(l) = self.locals.get_mut(&p.id) {
                    let can = p.permissions.has(yard::room::Permission::Present);
                    l.info.permission.publish = AudioVideo {
                        audio: can,
                        video: can,
                    };
                }
            }
            _ => {}
        }
        out
    }

    /// `drop`, leave, close: REST delete and moderation.
    fn drop_participant(&mut self, pid: &str, shared: &mut dyn Shared, out: &mut Vec<Output>) {
        let conn = self.locals.get(pid).and_then(|l| l.conn.clone());
        if let Some(c) = &conn {
            out.push(Output::Send {
                conn: c.clone(),
                event: "drop",
                data: Value::Null,
            });
        }
        self.leave(pid, shared, out);
        if let Some(c) = conn {
            out.push(Output::Close { conn: c });
        }
    }

    // ----------------------------------------------------------------------------------
    // Management API

    /// Participants of a room (both front ends) with permissions, REST form.
    pub fn rest_participants(&self, room: &str, shared: &dyn Shared) -> Vec<Value> {
        self.members(room, shared)
            .into_iter()
            .map(
                |m| json!({"id": m.id, "user": m.user, "role": m.role, "permission": m.permission}),
            )
            .collect()
    }

    /// Members of the shared room; OWT participants with their OWT role and permission,
    /// which the neutral room does not carry.
    fn members(&self, room: &str, shared: &dyn Shared) -> Vec<Member> {
        shared
            .members(room)
            .into_iter()
            .map(|m| self.locals.get(&m.id).map_or(m, |l| l.info.clone()))
            .collect()
    }

    /// REST `PATCH …/participants/{id}`: only OWT participants carry OWT permissions.
    pub fn rest_patch_participant(
        &mut self,
        room: &str,
        id: &str,
        ops: &Value,
    ) -> Result<Value, RestFailure> {
        let l = self
            .locals
            .get_mut(id)
            .filter(|l| l.room == room)
            .ok_or(RestFailure::NotFound)?;
        let ops = ops.as_array().ok_or(RestFailure::BadRequest)?;
        let mut perm = l.info.permission;
        for op in ops {
            let path = op
                .get("path")
                .and_then(Value::as_str)
                .ok_or(RestFailure::BadRequest)?;
            let value = op.get("value").ok_or(RestFailure::BadRequest)?;
            if op.get("op").and_then(Value::as_str) != Some("replace") {
                return Err(RestFailure::BadRequest);
            }
            let target = match path.split('/').nth(2) {
                Some("publish") => &mut perm.publish,
                Some("subscribe") => &mut perm.subscribe,
                _ => return Err(RestFailure::BadRequest),
            };
            match path.split('/').nth(3) {
                None => {
                    *target = serde_json::from_value(value.clone())
                        .map_err(|_| RestFailure::BadRequest)?
                }
                Some("audio") => target.audio = value.as_bool().ok_or(RestFailure::BadRequest)?,
                Some("video") => target.video = value.as_bool().ok_or(RestFailure::BadRequest)?,
                Some(_) => return Err(RestFailure::BadRequest),
            }
        }
        l.info.permission = perm;
        Ok(json!({"id": l.info.id, "user": l.info.user, "role": l.info.role, "permission": perm}))
    }

    /// REST `DELETE …/participants/{id}`.
    pub fn rest_drop_participant(
        &mut self,
        room: &str,
        id: &str,
        shared: &mut dyn Shared,
    ) -> Result<Vec<Output>, RestFailure> {
        let mut out = Vec::new();
        if self.locals.get(id).is_some_and(|l| l.room == room) {
            self.drop_participant(id, shared, &mut out);
            return Ok(out);
        }
        if shared.kick(room, id) {
            Ok(out)
        } else {
            Err(RestFailure::NotFound)
        }
    }

    pub fn rest_streams(&self, room: &str, shared: &dyn Shared) -> Vec<Value> {
        shared
            .streams(room)
            .iter()
            .map(|s| serde_json::to_value(self.stream_info(s)).unwrap_or(Value::Null))
            .collect()
    }

    /// REST `PATCH …/streams/{id}`: status changes work, mixing does not.
    pub fn rest_patch_stream(
        &mut self,
        room: &str,
        id: &str,
        ops: &Value,
        shared: &mut dyn Shared,
    ) -> Result<(Value, Vec<Output>), RestFailure> {
        let stream = shared
            .streams(room)
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(RestFailure::NotFound)?;
        let ops = ops.as_array().ok_or(RestFailure::BadRequest)?;
        let mut out = Vec::new();
        let mut current = stream.clone();
        for op in ops {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let kind = match path {
                "/media/audio/status" => rtc::Kind::Audio,
                "/media/video/status" => rtc::Kind::Video,
                _ => return Err(RestFailure::Failed),
            };
            let paused = match op.get("value").and_then(Value::as_str) {
                Some("inactive") => true,
                Some("active") => false,
                _ => return Err(RestFailure::BadRequest),
            };
            self.set_stream_status(room, id, Some(&stream), &[kind], paused, &mut out)
                .map_err(|_| RestFailure::Failed)?;
            match kind {
                rtc::Kind::Audio => current.audio_paused = paused,
                rtc::Kind::Video => current.video_paused = paused,
            }
        }
        // set_stream_status acks for stream-control; REST has no ack.
        out.retain(|o| !matches!(o, Output::Ack(_)));
        Ok((
            serde_json::to_value(self.stream_info(&current)).unwrap_or(Value::Null),
            out,
        ))
    }

    /// REST `DELETE …/streams/{id}`: like the owner's unpublish, without a progress error.
    pub fn rest_delete_stream(
        &mut self,
        room: &str,
        id: &str,
        shared: &dyn Shared,
    ) -> Result<Vec<Output>, RestFailure> {
        let exists = shared.streams(room).iter().any(|s| s.id == id)
            || self.publications.get(id).is_some_and(|p| p.room == room);
        if !exists {
            return Err(RestFailure::NotFound);
        }
        self.publications.remove(id);
        Ok(vec![Output::Media(MediaCommand::Close {
            peer: id.to_owned(),
        })])
    }

    pub fn rest_participant_count(&self, room: &str) -> usize {
        self.locals.values().filter(|l| l.room == room).count()
    }

    /// The room's OWT config id of a participant (for logs).
    pub fn room_id_of(&self, pid: &str) -> Option<&str> {
        self.locals.get(pid).map(|l| l.room_id.as_str())
    }
}

/// REST failures the portal reports; rest.rs maps them to OWT's error envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFailure {
    NotFound,
    BadRequest,
    Failed,
}

/// A Galène member's OWT role: Switchyard's choice, by its permission to present.
pub fn galene_role(p: &yard::room::Participant) -> &'static str {
    if p.permissions.has(yard::room::Permission::Present) {
        "presenter"
    } else {
        "viewer"
    }
}

/// A Galène member's OWT permission.
pub fn galene_permission(p: &yard::room::Participant) -> Permission {
    let present = p.permissions.has(yard::room::Permission::Present);
    Permission {
        publish: AudioVideo {
            audio: present,
            video: present,
        },
        subscribe: AudioVideo {
            audio: true,
            video: true,
        },
    }
}

fn audio_format(t: &rtc::TrackInfo) -> AudioFormat {
    let codec = t.codec.to_ascii_lowercase();
    match codec.as_str() {
        "opus" => AudioFormat {
            codec,
            sample_rate: Some(48000),
            channel_num: Some(2),
        },
        "pcmu" | "pcma" => AudioFormat {
            codec,
            sample_rate: None,
            channel_num: None,
        },
        _ => AudioFormat {
            codec,
            sample_rate: Some(t.clock_rate),
            channel_num: t.channels.map(u32::from),
        },
    }
}

fn video_format(t: &rtc::TrackInfo) -> VideoFormat {
    let codec = t.codec.to_ascii_lowercase();
    let profile = if codec == "h264" {
        Some(h264_profile(t.profile.as_deref().unwrap_or("42e01f")).to_owned())
    } else {
        None
    };
    VideoFormat { codec, profile }
}

/// OWT's profile letters from an H.264 `profile-level-id`.
fn h264_profile(profile_level_id: &str) -> &'static str {
    let id = profile_level_id.to_ascii_lowercase();
    let (idc, iop) = match (id.get(0..2), id.get(2..4)) {
        (Some(a), Some(b)) => (a.to_owned(), u8::from_str_radix(b, 16).unwrap_or(0)),
        _ => return "CB",
    };
    match idc.as_str() {
        "42" if iop & 0x40 != 0 => "CB",
        "42" => "B",
        "4d" => "M",
        "58" => "E",
        "64" => "H",
        _ => "CB",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenRecord;
    use crate::wire::{LoginRequest, NameVersion, Sdk, TextRequest, UserAgent};

    #[derive(Default)]
    struct Fake {
        members: Vec<(String, Member)>,
        streams: Vec<rtc::StreamInfo>,
        chats: Vec<(String, Option<String>, Value)>,
    }

    impl Shared for Fake {
        fn join(&mut self, room: &str, who: &Member, limit: usize) -> Result<(), JoinRefused> {
            if limit > 0 && self.members.iter().filter(|(r, _)| r == room).count() >= limit {
                return Err(JoinRefused::Full);
            }
            self.members.push((room.into(), who.clone()));
            Ok(())
        }
        fn leave(&mut self, room: &str, id: &str) {
            self.members.retain(|(r, m)| !(r == room && m.id == id));
        }
        fn members(&self, room: &str) -> Vec<Member> {
            self.members
                .iter()
                .filter(|(r, _)| r == room)
                .map(|(_, m)| m.clone())
                .collect()
        }
        fn streams(&self, room: &str) -> Vec<rtc::StreamInfo> {
            self.streams
                .iter()
                .filter(|s| s.room == room)
                .cloned()
                .collect()
        }
        fn chat(&mut self, _room: &str, from: &Member, to: Option<&str>, message: &Value) {
            self.chats
                .push((from.id.clone(), to.map(str::to_owned), message.clone()));
        }
        fn kick(&mut self, _room: &str, _id: &str) -> bool {
            false
        }
    }

    fn stream(id: &str, video_codec: &str) -> rtc::StreamInfo {
        let track = |kind, codec: &str| rtc::TrackInfo {
            kind,
            codec: codec.into(),
            profile: None,
            clock_rate: if kind == rtc::Kind::Audio {
                48000
            } else {
                90000
            },
            channels: None,
            mid: String::new(),
            simulcast_rids: Vec::new(),
        };
        rtc::StreamInfo {
            id: id.into(),
            room: "r".into(),
            owner: rtc::ParticipantRef::default(),
            label: "camera".into(),
            tracks: vec![
                track(rtc::Kind::Audio, "opus"),
                track(rtc::Kind::Video, video_codec),
            ],
            audio_paused: false,
            video_paused: false,
        }
    }

    #[test]
    fn update_from_needs_the_kind_in_the_same_codec() {
        let sub = Sub {
            owner: "p".into(),
            room: "r".into(),
            audio_from: Some("a".into()),
            video_from: Some("a".into()),
            rid: None,
            peer: None,
            offered: false,
            pending_candidates: Vec::new(),
            ready_sent: false,
        };
        let streams = [stream("a", "vp8"), stream("b", "vp8"), stream("h", "h264")];
        let switch = |data: Value| Portal::source_switches(&sub, &data, &streams);
        assert_eq!(
            switch(json!({"audio": {"from": "b"}, "video": {"from": "b"}})),
            Ok(vec![
                (rtc::Kind::Audio, "b".into()),
                (rtc::Kind::Video, "b".into())
            ])
        );
        assert_eq!(switch(json!({"video": {"from": "a"}})), Ok(vec![]));
        assert_eq!(
            switch(json!({"video": {"from": "h"}})),
            Err("Target video stream does NOT satisfy:Format is not acceptable".into())
        );
        assert_eq!(
            switch(json!({"audio": {"from": "h"}})),
            Ok(vec![(rtc::Kind::Audio, "h".into())])
        );
        assert_eq!(
            switch(json!({"video": {"from": 7}})),
            Err("Target video stream does NOT satisfy:Requested video stream".into())
        );
        let audio_only = Sub {
            video_from: None,
            ..sub
        };
        assert_eq!(
            Portal::source_switches(&audio_only, &json!({"video": {"from": "b"}}), &streams),
            Err("Target video stream does NOT satisfy:Requested video stream".into())
        );
    }

    fn portal() -> Portal {
        let mut p = Portal::new(PortalConfig {
            token_key: "tk".into(),
            reconnection_key: "rk".into(),
            text_limit: 10,
            login_timeout_ms: 180_000,
            reconnection_timeout_ms: 60_000,
            ticket_lifetime_ms: 600_000,
        });
        p.rooms.get_or_create("r");
        p
    }

    fn login(p: &mut Portal, f: &mut Fake, conn: &str, role: &str, now: u64) -> Vec<Output> {
        p.connected(now, conn);
        let token = p.tokens.create(
            "tk",
            TokenRecord {
                user: format!("user-{conn}"),
                role: role.into(),
                room: "r".into(),
                created_ms: now,
                host: "h:1".into(),
                secure: false,
            },
        );
        let ua = UserAgent {
            sdk: Some(Sdk {
                kind: Some("JavaScript".into()),
                version: Some("4.3.1".into()),
            }),
            runtime: Some(NameVersion {
                name: Some("Chrome".into()),
                version: Some("1".into()),
            }),
            os: Some(NameVersion {
                name: Some("Linux".into()),
                version: Some("Unknown".into()),
            }),
        };
        let req = Request::Login(LoginRequest {
            token,
            user_agent: Some(ua),
            protocol: Some("1.1".into()),
        });
        p.handle(now, conn, req, f)
    }

    fn acks(out: &[Output]) -> Vec<&Vec<Value>> {
        out.iter()
            .filter_map(|o| {
                if let Output::Ack(a) = o {
                    Some(a)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn join_reaches_others_before_the_newcomers_ack() {
        let (mut p, mut f) = (portal(), Fake::default());
        login(&mut p, &mut f, "A", "presenter", 0);
        let out = login(&mut p, &mut f, "B", "viewer", 1);
        let join = out.iter().position(
            |o| matches!(o, Output::Send { conn, event: "participant", .. } if conn == "A"),
        );
        let ack = out.iter().position(|o| matches!(o, Output::Ack(_)));
        assert!(join.unwrap() < ack.unwrap());
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Send { conn, .. } if conn == "B"))
        );
        let Output::Ack(args) = &out[ack.unwrap()] else {
            panic!()
        };
        assert_eq!(args[0], "ok");
        let ids: Vec<&str> = args[1]["room"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["A", "B"]);
    }

    #[test]
    fn publish_is_acked_before_anything_else() {
        let (mut p, mut f) = (portal(), Fake::default());
        login(&mut p, &mut f, "A", "presenter", 0);
        let req = Request::decode(
            "publish",
            &json!({"media": {"audio": {"source": "mic"}, "video": false}}),
        )
        .unwrap();
        let out = p.handle(1, "A", req, &mut f);
        assert_eq!(acks(&out).len(), 1);
        let Output::Ack(a) = &out[0] else {
            panic!("ack first")
        };
        let id = a[1]["id"].as_str().unwrap().to_owned();
        assert!(crate::wire::is_valid_id(&id));
        let soac = Request::decode(
            "soac",
            &json!({"id": id, "signaling": {"type": "offer", "sdp": "v=0"}}),
        )
        .unwrap();
        let out = p.handle(2, "A", soac, &mut f);
        assert!(matches!(out[0], Output::Ack(_)));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Media(MediaCommand::Publish { .. })))
        );
        let out = p.media(MediaEvent::PublishAnswer {
            stream: id.clone(),
            sdp: "answer".into(),
        });
        assert!(
            matches!(&out[0], Output::Send { event: "progress", data, .. } if data["data"]["type"] == "answer")
        );
    }

    #[test]
    fn text_limit_and_targets() {
        let (mut p, mut f) = (portal(), Fake::default());
        login(&mut p, &mut f, "A", "presenter", 0);
        let text = |to: &str, m: &str| {
            Request::Text(TextRequest {
                to: json!(to),
                message: json!(m),
            })
        };
        let out = p.handle(1, "A", text("all", "01234567890"), &mut f);
        assert_eq!(acks(&out)[0][0], "error");
        let out = p.handle(1, "A", text("ghost", "hi"), &mut f);
        assert_eq!(acks(&out)[0][1], "Target participant does NOT exist: ghost");
        let out = p.handle(1, "A", text("all", "hi"), &mut f);
        assert_eq!(acks(&out)[0], &vec![json!("ok")]);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Send { conn, event: "text", .. } if conn == "A"))
        );
        assert_eq!(f.chats.len(), 1);
    }

    #[test]
    fn lost_transport_waits_for_relogin_then_leaves() {
        let (mut p, mut f) = (portal(), Fake::default());
        login(&mut p, &mut f, "A", "presenter", 0);
        login(&mut p, &mut f, "B", "presenter", 0);
        assert!(p.disconnected(1000, "B", &mut f).is_empty());
        assert!(p.tick(60_000, &mut f).is_empty());
        let out = p.tick(61_000, &mut f);
        assert!(out.iter().any(|o| matches!(o, Output::Send { conn, event: "participant", data } if conn == "A" && data["action"] == "leave")));
        assert_eq!(p.participant_count(), 1);
    }

    #[test]
    fn fresh_connections_must_log_in_in_time() {
        let (mut p, mut f) = (portal(), Fake::default());
        p.connected(0, "X");
        assert!(p.tick(179_999, &mut f).is_empty());
        assert_eq!(
            p.tick(180_000, &mut f),
            vec![Output::Close { conn: "X".into() }]
        );
    }

    #[test]
    fn participant_limit_is_enforced() {
        let (mut p, mut f) = (portal(), Fake::default());
        p.rooms.find_mut("r").unwrap().participant_limit = 1;
        login(&mut p, &mut f, "A", "presenter", 0);
        let out = login(&mut p, &mut f, "B", "presenter", 0);
        assert_eq!(acks(&out)[0][1], "Room is full");
        assert!(out.contains(&Output::Close { conn: "B".into() }));
    }
}
