//! One Galène connection as a state machine, without I/O.
//!
//! The server feeds it decoded client messages, room events, SFU happenings
//! and the results of the actions it asked for, always with an explicit
//! `now`; it answers with [`Output`]s: messages to send, a close, or an
//! [`Action`] for the server to perform on the room or the SFU. All of
//! Galène's rules about who may do what, which error text to send and when
//! to close live here, so they are tested with plain values.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use rtc::{Kind, Layer, StreamInfo};
use serde_json::{Map, Value};
use yard::room::{
    ChatMessage, ClearChat, FrontEnd, Participant, Permission, Permissions, RoomEvent, UserMessage,
};

use crate::groups::Credentials;
use crate::wire::{IceCandidate, Message, MessageType, PROTOCOL_VERSION, Status, WireError};

/// How long a new connection may take to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often liveness is checked.
pub const TICK: Duration = Duration::from_secs(10);
/// Silence after which the server pings.
pub const PING_AFTER: Duration = Duration::from_secs(20);
/// Silence after which the client is considered dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);

/// WebSocket close codes used by Galène.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;

/// What the session wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(Box<Message>),
    /// Send a close frame and end the connection.
    Close {
        code: u16,
        reason: String,
    },
    /// End the connection without a close frame (dead or silent peer).
    Drop,
    Action(Action),
}

/// Effects the server performs for the session, reporting back through the
/// session's `*_result`/`on_*` methods where there is a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Load the group, authenticate, enter the room; then call
    /// [`Session::join_succeeded`] or [`Session::join_failed`].
    Join {
        group: String,
        credentials: Credentials,
        data: Map<String, Value>,
    },
    /// Leave the room: close these publications and SFU subscriptions.
    Leave {
        publications: Vec<String>,
        subscriptions: Vec<String>,
    },
    Chat {
        kind: String,
        to: Option<String>,
        value: Value,
        noecho: bool,
        privileged: bool,
        username: String,
    },
    UserMessage {
        kind: String,
        from_self: bool,
        username: Option<String>,
        to: Option<String>,
        value: Value,
        noecho: bool,
        privileged: bool,
    },
    ChangePermissions {
        target: String,
        add: Vec<Permission>,
        remove: Vec<Permission>,
    },
    /// Merge into this client's own user data.
    SetUserData(Map<String, Value>),
    Kick {
        target: String,
        message: String,
    },
    ClearChat(ClearChat),
    Lock(Option<String>),
    Unlock,
    Record,
    Unrecord,
    /// Reply with [`Session::server_chat`] listing occupied subgroups.
    Subgroups,
    SetGroupData(Map<String, Value>),
    MakeToken(Value),
    EditToken(Value),
    ListTokens,
    /// Accept (or re-accept) an up stream; then call [`Session::published`].
    Publish {
        id: String,
        sdp: String,
        label: String,
        replace: Option<String>,
        /// The id is already published: renegotiate the same peer.
        renegotiate: bool,
    },
    /// End one of this client's publications.
    Unpublish {
        id: String,
    },
    /// Create a down stream for `stream`; then call [`Session::subscribed`].
    Subscribe {
        stream: String,
        audio: bool,
        video: Option<Layer>,
    },
    /// End an SFU subscription.
    Unsubscribe {
        subscription: String,
    },
    SetLayer {
        subscription: String,
        layer: Layer,
    },
    /// Apply a client's answer to a subscription's offer.
    /// Then call [`Session::answer_applied`].
    RemoteAnswer {
        stream: String,
        subscription: String,
        sdp: String,
    },
    /// Add a trickled candidate to a publication or subscription (SFU id).
    Candidate {
        sfu_id: String,
        candidate: IceCandidate,
    },
    /// New server offer with ICE restart; then call [`Session::reoffered`].
    IceRestart {
        stream: String,
        subscription: String,
    },
}

/// What the server learnt when a join succeeded.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub group: String,
    pub username: String,
    pub permissions: Permissions,
    pub status: Status,
    pub group_data: Map<String, Value>,
    pub rtc_configuration: Option<Value>,
    pub history: Vec<ChatMessage>,
    /// This client as the room knows it, then the others in order of arrival.
    pub me: Participant,
    pub others: Vec<Participant>,
    /// Ready publications of the room.
    pub streams: Vec<StreamInfo>,
    /// Whether `op` brings `record` (group `allow-recording`).
    pub allow_recording: bool,
}

/// Group-level facts the session needs to render a `joined` `change`.
#[derive(Debug, Clone, Default)]
pub struct GroupView {
    pub status: Status,
    pub data: Map<String, Value>,
    pub rtc_configuration: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHandshake,
    Ready,
    Joining,
    Joined,
    Closed,
}

/// What one down stream currently carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    audio: bool,
    video: Option<Layer>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        !self.audio && self.video.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DownState {
    /// Asked the SFU for a subscription, no offer sent yet.
    Subscribing,
    /// Offer sent, waiting for the answer.
    Offered,
    Open,
}

#[derive(Debug, Clone)]
struct Down {
    subscription: Option<String>,
    selection: Selection,
    state: DownState,
    /// A change arrived while negotiating: re-evaluate after the answer.
    dirty: bool,
    /// Per-stream override from `requestStream`.
    override_request: Option<Vec<String>>,
}

/// One Galène connection.
pub struct Session {
    phase: Phase,
    client_id: Option<String>,
    username: Option<String>,
    group: Option<String>,
    permissions: Permissions,
    allow_recording: bool,
    members: HashMap<String, Participant>,
    /// `None`: no request yet (or cleared): nothing is sent.
    request: Option<HashMap<String, Vec<String>>>,
    up: HashMap<String, String>,
    down: HashMap<String, Down>,
    streams: HashMap<String, StreamInfo>,
    /// New stream id -> the down stream it replaces, until it is offered.
    replacing: HashMap<String, String>,
    group_view: GroupView,
    connected_at: Instant,
    last_read: Instant,
    next_tick: Instant,
    out: VecDeque<Output>,
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn permission_names(p: &Permissions) -> Option<Vec<String>> {
    Some(p.iter().map(|p| p.as_str().to_owned()).collect())
}

impl Session {
    pub fn new(now: Instant) -> Session {
        Session {
            phase: Phase::AwaitingHandshake,
            client_id: None,
            username: None,
            group: None,
            permissions: Permissions::new(),
            allow_recording: false,
            members: HashMap::new(),
            request: None,
            up: HashMap::new(),
            down: HashMap::new(),
            streams: HashMap::new(),
            replacing: HashMap::new(),
            group_view: GroupView::default(),
            connected_at: now,
            last_read: now,
            next_tick: now + TICK,
            out: VecDeque::new(),
        }
    }

    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }

    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or("")
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Ids of this client's up streams (to close them when it goes away).
    pub fn up_streams(&self) -> Vec<String> {
        self.up.keys().cloned().collect()
    }

    /// SFU subscription ids of this client's down streams.
    pub fn subscriptions(&self) -> Vec<String> {
        self.down
            .values()
            .filter_map(|d| d.subscription.clone())
            .collect()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Instant {
        if self.phase == Phase::AwaitingHandshake {
            self.connected_at + HANDSHAKE_TIMEOUT
        } else {
            self.next_tick
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::AwaitingHandshake {
            if now >= self.connected_at + HANDSHAKE_TIMEOUT {
                tracing::debug!("no handshake in time");
                self.drop_connection();
            }
            return;
        }
        if now < self.next_tick {
            return;
        }
        while self.next_tick <= now {
            self.next_tick += TICK;
        }
        let silent = now.saturating_duration_since(self.last_read);
        if silent > DEAD_AFTER {
            tracing::info!("client is dead");
            self.drop_connection();
        } else if silent > PING_AFTER {
            self.send(Message::new(MessageType::Ping));
        }
    }

    /// Queues a message built elsewhere (token replies, subgroup lists).
    pub fn send(&mut self, m: Message) {
        if self.phase != Phase::Closed {
            self.out.push_back(Output::Send(Box::new(m)));
        }
    }

    fn act(&mut self, a: Action) {
        if self.phase != Phase::Closed {
            self.out.push_back(Output::Action(a));
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.phase != Phase::Closed {
            self.leave_room_silently();
            self.out.push_back(Output::Close {
                code,
                reason: reason.to_owned(),
            });
            self.phase = Phase::Closed;
        }
    }

    fn drop_connection(&mut self) {
        if self.phase != Phase::Closed {
            self.leave_room_silently();
            self.out.push_back(Output::Drop);
            self.phase = Phase::Closed;
        }
    }

    /// Recoverable user error.
    fn user_error(&mut self, text: &str) {
        let dest = self.client_id().to_owned();
        self.send(Message::error(&dest, text));
    }

    /// Fatal user error: the error message, then close 1000.
    fn fatal_user_error(&mut self, text: &str) {
        self.user_error(text);
        self.close(CLOSE_NORMAL, text);
    }

    fn protocol_error(&mut self, text: &str) {
        tracing::info!(error = text, "protocol error");
        metrics::counter!("switchyard_galene_protocol_errors_total").increment(1);
        self.user_error(text);
        self.close(CLOSE_PROTOCOL, text);
    }

    fn internal_error(&mut self, why: &str) {
        tracing::info!(error = why, "closing connection");
        self.close(CLOSE_INTERNAL, "");
    }

    /// The socket went away: leave the room, emit nothing to the client.
    pub fn handle_disconnect(&mut self) {
        if self.phase != Phase::Closed {
            self.leave_room_silently();
            self.phase = Phase::Closed;
        }
    }

    /// A frame that could not be decoded: fatal, as in Galène.
    pub fn handle_decode_error(&mut self, now: Instant, err: &WireError) {
        self.last_read = now;
        tracing::info!(error = %err, "undecodable message");
        match err {
            WireError::TooLarge(_) => self.close(CLOSE_TOO_BIG, "message too big"),
            WireError::Json(_) => self.internal_error("malformed message"),
        }
    }

    /// A decoded client message.
    pub fn handle_message(&mut self, now: Instant, m: Message) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_read = now;
        let t = m.message_type();
        if self.phase == Phase::AwaitingHandshake {
            if t != MessageType::Handshake {
                self.close(CLOSE_PROTOCOL, "you must handshake first");
                return;
            }
            self.handshake(m);
            return;
        }
        if let Some(source) = &m.source
            && Some(source) != self.client_id.as_ref()
        {
            self.protocol_error("spoofed client id");
            return;
        }
        if t != MessageType::Join
            && let Some(u) = &m.username
            && u.as_str() != self.username()
        {
            self.protocol_error("spoofed username");
            return;
        }
        match t {
            MessageType::Handshake => {}
            MessageType::Ping => self.send(Message::new(MessageType::Pong)),
            MessageType::Pong => {}
            MessageType::Join => self.join(m),
            MessageType::Request => self.request(m),
            MessageType::RequestStream => self.request_stream(m),
            MessageType::Offer => self.offer(m),
            MessageType::Answer => self.answer(m),
            MessageType::Ice => self.ice(m),
            MessageType::Renegotiate => self.renegotiate(m),
            MessageType::Close => self.client_close(m),
            MessageType::Abort => self.abort(m),
            MessageType::Chat => self.chat(m),
            MessageType::UserMessage => self.usermessage(m),
            MessageType::UserAction => self.useraction(m),
            MessageType::GroupAction => self.groupaction(m),
            MessageType::Joined
            | MessageType::User
            | MessageType::ChatHistory
            | MessageType::Unknown => self.protocol_error("unexpected message"),
        }
    }

    fn handshake(&mut self, m: Message) {
        self.client_id = m.id.clone();
        self.phase = Phase::Ready;
        self.send(Message::handshake());
        let speaks_v2 = m
            .version
            .as_ref()
            .is_some_and(|v| v.iter().any(|v| v == PROTOCOL_VERSION));
        if !speaks_v2 {
            let dest = self.client_id().to_owned();
            self.send(Message::server_usermessage(
                "warning",
                &dest,
                Value::String(
                    "This client is using an unknown protocol version.\nPerhaps it needs upgrading?\nTrying to continue, things may break."
                        .into(),
                ),
            ));
        }
    }

    // ---- joining and leaving ----

    fn join(&mut self, m: Message) {
        match m.kind_str() {
            "join" => {}
            "leave" => {
                let group = m.group.clone().unwrap_or_default();
                if self.phase != Phase::Joined || self.group.as_deref() != Some(group.as_str()) {
                    self.fatal_user_error("you are not joined");
                    return;
                }
                self.leave();
                return;
            }
            _ => {
                self.protocol_error("unknown kind");
                return;
            }
        }
        if matches!(self.phase, Phase::Joined | Phase::Joining) {
            self.protocol_error("cannot join multiple groups");
            return;
        }
        self.phase = Phase::Joining;
        self.act(Action::Join {
            group: m.group.unwrap_or_default(),
            credentials: Credentials {
                username: m.username,
                password: m.password,
                token: m.token,
            },
            data: m.data.unwrap_or_default(),
        });
    }

    fn leave(&mut self) {
        let group = self.group.clone();
        self.leave_room_silently();
        self.send(Message {
            group,
            username: Some(self.username().to_owned()),
            permissions: None,
            status: Some(self.group_view.status.clone()),
            rtc_configuration: self.group_view.rtc_configuration.clone(),
            ..Message::new(MessageType::Joined).with_kind("leave")
        });
        self.username = None;
        self.group = None;
    }

    /// Forgets room state and asks the server to leave the room.
    fn leave_room_silently(&mut self) {
        if matches!(self.phase, Phase::Joined | Phase::Joining) {
            let publications = self.up_streams();
            let subscriptions = self.subscriptions();
            self.out.push_back(Output::Action(Action::Leave {
                publications,
                subscriptions,
            }));
            self.phase = Phase::Ready;
        }
        self.permissions = Permissions::new();
        self.members.clear();
        self.request = None;
        self.up.clear();
        self.down.clear();
        self.streams.clear();
        self.replacing.clear();
    }

    pub fn join_failed(&mut self, group: &str, error: Option<&str>, text: &str) {
        if self.phase != Phase::Joining {
            return;
        }
        self.phase = Phase::Ready;
        self.send(Message {
            group: Some(group.to_owned()),
            username: Some(self.username().to_owned()),
            error: error.map(str::to_owned),
            value: Some(Value::String(text.to_owned())),
            ..Message::new(MessageType::Joined).with_kind("fail")
        });
    }

    /// The group now redirects: tell the client, which navigates away.
    pub fn join_redirected(&mut self, group: &str, username: &str, url: &str) {
        if self.phase != Phase::Joining {
            return;
        }
        self.phase = Phase::Ready;
        self.send(Message {
            group: Some(group.to_owned()),
            username: Some(username.to_owned()),
            value: Some(Value::String(url.to_owned())),
            ..Message::new(MessageType::Joined).with_kind("redirect")
        });
    }

    pub fn join_succeeded(&mut self, info: JoinInfo) {
        if self.phase != Phase::Joining {
            return;
        }
        self.phase = Phase::Joined;
        self.group = Some(info.group.clone());
        self.username = Some(info.username.clone());
        self.permissions = info.permissions.clone();
        self.allow_recording = info.allow_recording;
        self.group_view = GroupView {
            status: info.status.clone(),
            data: info.group_data.clone(),
            rtc_configuration: info.rtc_configuration.clone(),
        };
        self.send(Message {
            group: Some(info.group.clone()),
            username: Some(info.username.clone()),
            permissions: permission_names(&info.permissions),
            status: Some(info.status),
            data: Some(info.group_data),
            rtc_configuration: info.rtc_configuration,
            ..Message::new(MessageType::Joined).with_kind("join")
        });
        for entry in &info.history {
            self.send(Message {
                id: entry.id.clone(),
                source: entry.from.clone(),
                username: entry.username.clone(),
                time: Some(rfc3339(entry.time)),
                value: Some(entry.value.clone()),
                ..Message::new(MessageType::ChatHistory).with_kind(&entry.kind)
            });
        }
        self.send(user_message("add", &info.me));
        self.members.insert(info.me.id.clone(), info.me);
        for p in info.others {
            self.send(user_message("add", &p));
            self.members.insert(p.id.clone(), p);
        }
        for s in info.streams {
            self.streams.insert(s.id.clone(), s);
        }
    }

    // ---- room events ----

    /// An event of the room this client is in. `view` is the group's state
    /// after the event.
    pub fn handle_room_event(&mut self, event: &RoomEvent, view: &GroupView) {
        if self.phase != Phase::Joined {
            return;
        }
        let me = self.client_id().to_owned();
        match event {
            RoomEvent::ParticipantJoined(p) => {
                if p.id != me {
                    self.send(user_message("add", p));
                    self.members.insert(p.id.clone(), p.clone());
                }
            }
            RoomEvent::ParticipantLeft { id, username, .. } => {
                if *id != me && self.members.remove(id).is_some() {
                    self.send(Message {
                        id: Some(id.clone()),
                        username: Some(username.clone()),
                        ..Message::new(MessageType::User).with_kind("delete")
                    });
                }
            }
            RoomEvent::ParticipantChanged(p) => {
                self.members.insert(p.id.clone(), p.clone());
                if p.id == me && p.permissions != self.permissions {
                    let lost_present = self.permissions.has(Permission::Present)
                        && !p.permissions.has(Permission::Present);
                    self.permissions = p.permissions.clone();
                    self.group_view = view.clone();
                    self.send(Message {
                        group: self.group.clone(),
                        username: Some(self.username().to_owned()),
                        permissions: permission_names(&self.permissions),
                        status: Some(view.status.clone()),
                        rtc_configuration: view.rtc_configuration.clone(),
                        ..Message::new(MessageType::Joined).with_kind("change")
                    });
                    if lost_present {
                        let mut ids: Vec<String> = self.up.keys().cloned().collect();
                        ids.sort();
                        for id in ids {
                            self.up.remove(&id);
                            self.send(Message::new(MessageType::Abort).with_id(&id));
                            self.act(Action::Unpublish { id });
                        }
                        self.user_error("permission denied");
                    }
                }
                self.send(user_message("change", p));
            }
            RoomEvent::Chat(c) => {
                if c.is_for(&me) {
                    self.send(Message {
                        id: c.id.clone(),
                        source: c.from.clone(),
                        dest: c.to.clone(),
                        username: c.username.clone(),
                        privileged: c.privileged,
                        noecho: c.noecho,
                        time: Some(rfc3339(c.time)),
                        value: Some(c.value.clone()),
                        ..Message::new(MessageType::Chat).with_kind(&c.kind)
                    });
                }
            }
            RoomEvent::UserMessage(u) => {
                if u.is_for(&me) {
                    self.send(usermessage_from(u));
                }
            }
            RoomEvent::Locked { .. } | RoomEvent::Unlocked | RoomEvent::DataChanged(_) => {
                self.group_view = view.clone();
                let with_data = matches!(event, RoomEvent::DataChanged(_));
                self.send(Message {
                    group: self.group.clone(),
                    username: Some(self.username().to_owned()),
                    permissions: permission_names(&self.permissions),
                    status: Some(view.status.clone()),
                    data: Some(view.data.clone()),
                    rtc_configuration: view.rtc_configuration.clone(),
                    ..Message::new(MessageType::Joined).with_kind("change")
                });
                let _ = with_data;
            }
            RoomEvent::ClearChat(what) => {
                let value = match what {
                    ClearChat::All => None,
                    ClearChat::From(from) => Some(serde_json::json!({ "userId": from })),
                    ClearChat::Message { id, from } => {
                        Some(serde_json::json!({ "id": id, "userId": from }))
                    }
                };
                self.send(Message {
                    privileged: true,
                    value,
                    ..Message::new(MessageType::UserMessage).with_kind("clearchat")
                });
            }
            RoomEvent::Kicked {
                id,
                by,
                by_username,
                message,
            } => {
                if *id == me {
                    self.send(Message {
                        id: by.clone(),
                        username: by_username.clone(),
                        dest: Some(me.clone()),
                        privileged: true,
                        value: Some(Value::String(message.clone())),
                        ..Message::new(MessageType::UserMessage).with_kind("kicked")
                    });
                    let reason = format!(
                        "kicked out ({message}) by {}",
                        by_username.as_deref().unwrap_or("the server")
                    );
                    // the room has removed us already
                    self.phase = Phase::Ready;
                    self.close(CLOSE_NORMAL, &reason);
                }
            }
        }
    }

    // ---- chat and messages ----

    fn require_joined(&mut self) -> bool {
        if self.phase != Phase::Joined {
            self.user_error("join a group first");
            return false;
        }
        true
    }

    fn check_dest(&mut self, dest: &Option<String>) -> bool {
        if let Some(d) = dest {
            match self.members.get(d) {
                None => {
                    self.user_error("user unknown");
                    return false;
                }
                Some(p) if !p.front_end.is_person() => {
                    self.user_error("this user doesn't chat");
                    return false;
                }
                Some(_) => {}
            }
        }
        true
    }

    fn chat(&mut self, m: Message) {
        if !self.require_joined() {
            return;
        }
        let needed = if m.kind_str() == "caption" {
            Permission::Caption
        } else {
            Permission::Message
        };
        if !self.permissions.has(needed) {
            self.user_error("not authorised");
            return;
        }
        if !self.check_dest(&m.dest) {
            return;
        }
        self.act(Action::Chat {
            kind: m.kind_str().to_owned(),
            to: m.dest,
            value: m.value.unwrap_or(Value::Null),
            noecho: m.noecho,
            privileged: self.permissions.has(Permission::Op),
            username: self.username().to_owned(),
        });
    }

    fn usermessage(&mut self, m: Message) {
        if !self.require_joined() {
            return;
        }
        if !self.permissions.has(Permission::Message) {
            self.user_error("not authorised");
            return;
        }
        if !self.check_dest(&m.dest) {
            return;
        }
        self.act(Action::UserMessage {
            kind: m.kind_str().to_owned(),
            from_self: true,
            username: Some(self.username().to_owned()),
            to: m.dest,
            value: m.value.unwrap_or(Value::Null),
            noecho: m.noecho,
            privileged: self.permissions.has(Permission::Op),
        });
    }

    /// A server-originated chat line to this client only (`subgroups`).
    pub fn server_chat(&mut self, now: SystemTime, text: &str) {
        self.send(Message {
            dest: self.client_id.clone(),
            username: Some("Server".into()),
            privileged: true,
            time: Some(rfc3339(now)),
            value: Some(Value::String(text.to_owned())),
            ..Message::new(MessageType::Chat)
        });
    }

    // ---- user actions ----

    fn useraction(&mut self, m: Message) {
        if !self.require_joined() {
            return;
        }
        let kind = m.kind_str().to_owned();
        let permission_change = match kind.as_str() {
            "op" => Some((vec![Permission::Op], vec![])),
            "unop" => Some((vec![], vec![Permission::Op, Permission::Record])),
            "present" => Some((vec![Permission::Present], vec![])),
            "unpresent" => Some((vec![], vec![Permission::Present])),
            "shutup" => Some((vec![], vec![Permission::Message])),
            "unshutup" => Some((vec![Permission::Message], vec![])),
            "identify" | "kick" | "setdata" => None,
            _ => {
                self.fatal_user_error("unknown user action");
                return;
            }
        };
        if kind == "setdata" {
            if m.dest.as_deref() != Some(self.client_id()) {
                self.user_error("not authorised");
                return;
            }
            match m.value {
                Some(Value::Object(map)) => self.act(Action::SetUserData(map)),
                _ => self.user_error("Bad value in setdata"),
            }
            return;
        }
        if !self.permissions.has(Permission::Op) {
            self.user_error("not authorised");
            return;
        }
        let dest = m.dest.clone().unwrap_or_default();
        let target = self.members.get(&dest).cloned();
        if let Some((mut add, remove)) = permission_change {
            let Some(target) = target else {
                self.user_error("no suck user");
                return;
            };
            if !target.front_end.is_person() {
                self.user_error("this is not a real user");
                return;
            }
            if kind == "op" && self.allow_recording {
                add.push(Permission::Record);
            }
            self.act(Action::ChangePermissions {
                target: dest,
                add,
                remove,
            });
            return;
        }
        if kind == "identify" {
            let Some(target) = target else {
                self.user_error("client not found");
                return;
            };
            let mut info = Map::new();
            info.insert("id".into(), Value::String(target.id.clone()));
            if !target.username.is_empty() {
                info.insert("username".into(), Value::String(target.username.clone()));
            }
            if let Some(addr) = target.address {
                info.insert("address".into(), Value::String(addr.to_string()));
            }
            let me = self.client_id().to_owned();
            self.send(Message::server_usermessage(
                "userinfo",
                &me,
                Value::Object(info),
            ));
            self.act(Action::UserMessage {
                kind: "warning".into(),
                from_self: false,
                username: None,
                to: Some(target.id),
                value: Value::String(format!(
                    "Your IP address has been communicated to user {}.",
                    self.username()
                )),
                noecho: false,
                privileged: true,
            });
            return;
        }
        // kick
        if target.is_none() {
            self.user_error("no such user");
            return;
        }
        let message = match m.value {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "you have been kicked out".to_owned(),
        };
        self.act(Action::Kick {
            target: dest,
            message,
        });
    }

    // ---- group actions ----

    fn groupaction(&mut self, m: Message) {
        if !self.require_joined() {
            return;
        }
        let kind = m.kind_str().to_owned();
        let needs = match kind.as_str() {
            "clearchat" | "lock" | "unlock" | "subgroups" | "setdata" => vec![Permission::Op],
            "record" | "unrecord" => vec![Permission::Record],
            "maketoken" => vec![],
            "edittoken" | "listtokens" => vec![Permission::Op, Permission::Token],
            _ => {
                self.fatal_user_error("unknown group action");
                return;
            }
        };
        if !needs.iter().all(|p| self.permissions.has(*p)) {
            self.user_error("not authorised");
            return;
        }
        match kind.as_str() {
            "clearchat" => match clear_chat_filter(m.value.as_ref()) {
                Some(what) => self.act(Action::ClearChat(what)),
                None => self.user_error("bad value in clearchat"),
            },
            "lock" => {
                let message = match m.value {
                    Some(Value::String(s)) if !s.is_empty() => Some(s),
                    _ => None,
                };
                self.act(Action::Lock(message));
            }
            "unlock" => self.act(Action::Unlock),
            "record" => self.act(Action::Record),
            "unrecord" => self.act(Action::Unrecord),
            "subgroups" => self.act(Action::Subgroups),
            "setdata" => match m.value {
                Some(Value::Object(map)) => self.act(Action::SetGroupData(map)),
                _ => self.user_error("Bad value in setdata"),
            },
            "maketoken" => self.act(Action::MakeToken(m.value.unwrap_or(Value::Null))),
            "edittoken" => self.act(Action::EditToken(m.value.unwrap_or(Value::Null))),
            _ => self.act(Action::ListTokens),
        }
    }

    // ---- streams ----

    fn request(&mut self, m: Message) {
        if self.phase != Phase::Joined {
            self.internal_error("request before join");
            return;
        }
        let request = match m.request {
            None => None,
            Some(Value::Object(map)) => {
                let mut parsed = HashMap::new();
                for (label, v) in map {
                    let Some(list) = string_list(&v) else {
                        self.internal_error("bad request value");
                        return;
                    };
                    parsed.insert(label, list);
                }
                Some(parsed)
            }
            Some(_) => {
                self.internal_error("bad request");
                return;
            }
        };
        self.request = request;
        let mut ids: Vec<String> = self.streams.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.evaluate(&id);
        }
    }

    fn request_stream(&mut self, m: Message) {
        let id = m.id.unwrap_or_default();
        let list = match &m.request {
            None => None,
            Some(v) => match string_list(v) {
                Some(l) => Some(l),
                None => {
                    self.internal_error("bad requestStream value");
                    return;
                }
            },
        };
        let Some(down) = self.down.get_mut(&id) else {
            self.internal_error("requestStream for unknown stream");
            return;
        };
        down.override_request = list;
        self.evaluate(&id);
    }

    /// What the client wants of `stream`.
    fn select(&self, stream: &StreamInfo, override_request: Option<&Vec<String>>) -> Selection {
        let wanted: Vec<String> = match override_request {
            Some(l) => l.clone(),
            None => match &self.request {
                None => Vec::new(),
                Some(r) => r
                    .get(&stream.label)
                    .or_else(|| r.get(""))
                    .cloned()
                    .unwrap_or_default(),
            },
        };
        let has = |k: Kind| stream.tracks.iter().any(|t| t.kind == k);
        let audio = wanted.iter().any(|w| w == "audio") && has(Kind::Audio);
        let video = if !has(Kind::Video) {
            None
        } else if wanted.iter().any(|w| w == "video") {
            Some(Layer::High)
        } else if wanted.iter().any(|w| w == "video-low") {
            Some(Layer::Low)
        } else {
            None
        };
        Selection { audio, video }
    }

    /// Brings the down stream of `id` in line with the request.
    fn evaluate(&mut self, id: &str) {
        let Some(stream) = self.streams.get(id).cloned() else {
            return;
        };
        if stream.owner.id == self.client_id() || self.up.contains_key(id) {
            return;
        }
        let override_request = self.down.get(id).and_then(|d| d.override_request.clone());
        let selection = self.select(&stream, override_request.as_ref());
        match self.down.get_mut(id) {
            None => {
                if selection.is_empty() {
                    return;
                }
                let (audio, video) = (selection.audio, selection.video.clone());
                self.down.insert(
                    id.to_owned(),
                    Down {
                        subscription: None,
                        selection,
                        state: DownState::Subscribing,
                        dirty: false,
                        override_request: None,
                    },
                );
                self.act(Action::Subscribe {
                    stream: id.to_owned(),
                    audio,
                    video,
                });
            }
            Some(down) => {
                if down.selection == selection {
                    return;
                }
                if down.state != DownState::Open {
                    down.dirty = true;
                    return;
                }
                let layer_only = down.selection.audio == selection.audio
                    && down.selection.video.is_some()
                    && selection.video.is_some();
                let subscription = down.subscription.clone();
                if layer_only {
                    let layer = selection.video.clone();
                    down.selection = selection;
                    if let (Some(subscription), Some(layer)) = (subscription, layer) {
                        self.act(Action::SetLayer {
                            subscription,
                            layer,
                        });
                    }
                    return;
                }
                // A different set of tracks needs a new peer connection: the
                // browser client can not take a new DTLS identity on an
                // existing one, so close and offer afresh under the same id.
                let keep = down.override_request.clone();
                self.down.remove(id);
                if let Some(subscription) = subscription {
                    self.act(Action::Unsubscribe { subscription });
                }
                self.send(Message::new(MessageType::Close).with_id(id));
                if !selection.is_empty() {
                    let (audio, video) = (selection.audio, selection.video.clone());
                    self.down.insert(
                        id.to_owned(),
                        Down {
                            subscription: None,
                            selection,
                            state: DownState::Subscribing,
                            dirty: false,
                            override_request: keep,
                        },
                    );
                    self.act(Action::Subscribe {
                        stream: id.to_owned(),
                        audio,
                        video,
                    });
                }
            }
        }
    }

    /// A publication of the room became ready (or changed).
    pub fn stream_added(&mut self, stream: StreamInfo) {
        if self.phase != Phase::Joined {
            return;
        }
        let id = stream.id.clone();
        self.streams.insert(id.clone(), stream);
        self.evaluate(&id);
    }

    /// A publication of the room ended; `replaced_by` names the publication
    /// that replaces it, whose offer will then carry `replace` instead of a
    /// `close` being sent now.
    pub fn stream_removed(&mut self, id: &str, replaced_by: Option<&str>) {
        self.streams.remove(id);
        if let Some(down) = self.down.remove(id) {
            if let Some(subscription) = down.subscription {
                self.act(Action::Unsubscribe { subscription });
            }
            match replaced_by {
                Some(new) => {
                    self.replacing.insert(new.to_owned(), id.to_owned());
                }
                None => self.send(Message::new(MessageType::Close).with_id(id)),
            }
        }
    }

    /// Result of [`Action::Subscribe`].
    pub fn subscribed(&mut self, stream: &str, result: Result<(String, String), String>) {
        let info = self.streams.get(stream).cloned();
        match (result, self.down.get_mut(stream), info) {
            (Ok((subscription, sdp)), Some(down), Some(info))
                if down.state == DownState::Subscribing && down.subscription.is_none() =>
            {
                down.subscription = Some(subscription);
                down.state = DownState::Offered;
                let replace = self.replacing.remove(stream);
                self.send(Message {
                    id: Some(stream.to_owned()),
                    replace,
                    label: Some(info.label.clone()),
                    source: Some(info.owner.id.clone()),
                    username: Some(info.owner.username.clone()),
                    sdp: Some(sdp),
                    ..Message::new(MessageType::Offer)
                });
            }
            (Ok((subscription, _)), _, _) => {
                // nobody wants it any more
                self.act(Action::Unsubscribe { subscription });
            }
            (Err(e), _, _) => {
                tracing::info!(stream, error = %e, "subscription failed");
                if self.down.remove(stream).is_some() {
                    self.send(Message::new(MessageType::Close).with_id(stream));
                    self.user_error(&e);
                }
            }
        }
    }

    /// Result of [`Action::IceRestart`].
    pub fn reoffered(&mut self, stream: &str, result: Result<String, String>) {
        let Some(info) = self.streams.get(stream).cloned() else {
            return;
        };
        let Some(down) = self.down.get_mut(stream) else {
            return;
        };
        match result {
            Ok(sdp) => {
                down.state = DownState::Offered;
                self.send(Message {
                    id: Some(stream.to_owned()),
                    label: Some(info.label),
                    source: Some(info.owner.id),
                    username: Some(info.owner.username),
                    sdp: Some(sdp),
                    ..Message::new(MessageType::Offer)
                });
            }
            Err(e) => tracing::info!(stream, error = %e, "ICE restart failed"),
        }
    }

    /// Result of [`Action::RemoteAnswer`].
    pub fn answer_applied(&mut self, stream: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                let dirty = match self.down.get_mut(stream) {
                    Some(d) => {
                        d.state = DownState::Open;
                        std::mem::take(&mut d.dirty)
                    }
                    None => false,
                };
                if dirty {
                    self.evaluate(stream);
                }
            }
            Err(e) => {
                if let Some(down) = self.down.remove(stream)
                    && let Some(subscription) = down.subscription
                {
                    self.act(Action::Unsubscribe { subscription });
                }
                self.send(Message::new(MessageType::Close).with_id(stream));
                self.user_error(&e);
            }
        }
    }

    /// Result of [`Action::Publish`].
    pub fn published(&mut self, id: &str, result: Result<String, String>) {
        if !self.up.contains_key(id) {
            return;
        }
        match result {
            Ok(sdp) => self.send(Message {
                id: Some(id.to_owned()),
                sdp: Some(sdp),
                ..Message::new(MessageType::Answer)
            }),
            Err(e) => {
                self.up.remove(id);
                self.send(Message::new(MessageType::Abort).with_id(id));
                self.user_error(&e);
            }
        }
    }

    fn require_id(&mut self, m: &Message) -> Option<String> {
        match &m.id {
            Some(id) => Some(id.clone()),
            None => {
                self.protocol_error("empty id");
                None
            }
        }
    }

    fn offer(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        if !self.permissions.has(Permission::Present) || self.phase != Phase::Joined {
            if let Some(old) = &m.replace
                && self.up.remove(old).is_some()
            {
                self.act(Action::Unpublish { id: old.clone() });
            }
            self.send(Message::new(MessageType::Abort).with_id(&id));
            self.user_error("not authorised");
            return;
        }
        if self.down.contains_key(&id)
            || self
                .streams
                .get(&id)
                .is_some_and(|s| s.owner.id != self.client_id())
        {
            self.send(Message::new(MessageType::Abort).with_id(&id));
            self.user_error("this id is already in use");
            return;
        }
        let Some(sdp) = m.sdp else {
            self.send(Message::new(MessageType::Abort).with_id(&id));
            self.user_error("offer without SDP");
            return;
        };
        let label = m.label.unwrap_or_default();
        if let Some(old) = &m.replace {
            self.up.remove(old);
        }
        let renegotiate = self.up.insert(id.clone(), label.clone()).is_some();
        self.act(Action::Publish {
            id,
            sdp,
            label,
            replace: m.replace,
            renegotiate,
        });
    }

    fn answer(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        let subscription = match self.down.get(&id) {
            Some(Down {
                subscription: Some(s),
                state: DownState::Offered,
                ..
            }) => s.clone(),
            _ => {
                self.send(Message::new(MessageType::Close).with_id(&id));
                return;
            }
        };
        match m.sdp {
            Some(sdp) => self.act(Action::RemoteAnswer {
                stream: id,
                subscription,
                sdp,
            }),
            None => self.answer_applied(&id, Err("answer without SDP".into())),
        }
    }

    /// Which SFU id a stream id of this connection maps to.
    fn sfu_id(&self, id: &str) -> Option<String> {
        if self.up.contains_key(id) {
            return Some(id.to_owned());
        }
        self.down.get(id).and_then(|d| d.subscription.clone())
    }

    fn ice(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        let Some(candidate) = m.candidate else {
            self.protocol_error("null candidate");
            return;
        };
        if let Some(sfu_id) = self.sfu_id(&id) {
            self.act(Action::Candidate { sfu_id, candidate });
        }
    }

    fn renegotiate(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        if let Some(Down {
            subscription: Some(subscription),
            ..
        }) = self.down.get(&id)
        {
            let subscription = subscription.clone();
            self.act(Action::IceRestart {
                stream: id,
                subscription,
            });
        }
    }

    fn client_close(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        if self.up.remove(&id).is_some() {
            self.act(Action::Unpublish { id });
        }
    }

    fn abort(&mut self, m: Message) {
        let Some(id) = self.require_id(&m) else {
            return;
        };
        if let Some(down) = self.down.remove(&id)
            && let Some(subscription) = down.subscription
        {
            self.act(Action::Unsubscribe { subscription });
        }
        self.send(Message::new(MessageType::Close).with_id(&id));
    }
}

fn user_message(kind: &str, p: &Participant) -> Message {
    Message {
        id: Some(p.id.clone()),
        username: Some(p.username.clone()),
        permissions: permission_names(&p.permissions),
        data: Some(p.status.clone()),
        ..Message::new(MessageType::User).with_kind(kind)
    }
}

fn usermessage_from(u: &UserMessage) -> Message {
    Message {
        source: u.from.clone(),
        dest: u.to.clone(),
        username: u.username.clone(),
        privileged: u.privileged,
        noecho: u.noecho,
        time: Some(rfc3339(u.time)),
        value: Some(u.value.clone()),
        ..Message::new(MessageType::UserMessage).with_kind(&u.kind)
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn clear_chat_filter(value: Option<&Value>) -> Option<ClearChat> {
    match value {
        None => Some(ClearChat::All),
        Some(Value::Object(map)) => {
            let id = map
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let user = map
                .get("userId")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            match (id, user) {
                (None, None) => Some(ClearChat::All),
                (None, Some(u)) => Some(ClearChat::From(u.to_owned())),
                (Some(i), Some(u)) => Some(ClearChat::Message {
                    id: i.to_owned(),
                    from: u.to_owned(),
                }),
                (Some(_), None) => None,
            }
        }
        Some(_) => None,
    }
}

/// Whether `p` is a member a Galène client sees as a real user.
pub fn is_person(p: &Participant) -> bool {
    p.front_end != FrontEnd::Recorder && p.front_end != FrontEnd::Whip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode;

    fn msg(json: &str) -> Message {
        decode(json.as_bytes()).unwrap()
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn joined_session(t0: Instant) -> Session {
        let mut s = Session::new(t0);
        s.handle_message(t0, msg(r#"{"type":"handshake","version":["2"],"id":"A"}"#));
        s.handle_message(
            t0,
            msg(r#"{"type":"join","kind":"join","group":"g","username":"a"}"#),
        );
        drain(&mut s);
        let mut me = Participant::new("A", "a", FrontEnd::Galene);
        me.permissions = [Permission::Present, Permission::Message]
            .into_iter()
            .collect();
        s.join_succeeded(JoinInfo {
            group: "g".into(),
            username: "a".into(),
            permissions: me.permissions.clone(),
            status: Status::default(),
            group_data: Map::new(),
            rtc_configuration: None,
            history: Vec::new(),
            me,
            others: Vec::new(),
            streams: Vec::new(),
            allow_recording: false,
        });
        drain(&mut s);
        s
    }

    #[test]
    fn silent_connection_is_dropped_after_15_s() {
        let t0 = Instant::now();
        let mut s = Session::new(t0);
        assert_eq!(s.poll_timeout(), t0 + HANDSHAKE_TIMEOUT);
        s.handle_timeout(t0 + Duration::from_secs(14));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(t0 + HANDSHAKE_TIMEOUT);
        assert_eq!(drain(&mut s), vec![Output::Drop]);
    }

    #[test]
    fn keepalive_pings_then_drops_silent_clients() {
        let t0 = Instant::now();
        let mut s = joined_session(t0);
        let mut pinged_at = None;
        let mut dropped_at = None;
        // tick as the server would, never answering
        for _ in 0..20 {
            let at = s.poll_timeout();
            s.handle_timeout(at);
            for o in drain(&mut s) {
                match o {
                    Output::Send(m) if m.message_type() == MessageType::Ping => {
                        pinged_at.get_or_insert(at - t0);
                    }
                    Output::Drop => dropped_at = Some(at - t0),
                    Output::Action(Action::Leave { .. }) => {}
                    other => panic!("{other:?}"),
                }
            }
            if dropped_at.is_some() {
                break;
            }
        }
        let pinged = pinged_at.unwrap();
        assert!(pinged > PING_AFTER && pinged <= Duration::from_secs(30));
        let dropped = dropped_at.unwrap();
        assert!(dropped > DEAD_AFTER && dropped <= Duration::from_secs(55));
    }

    #[test]
    fn answering_pings_keeps_the_connection() {
        let t0 = Instant::now();
        let mut s = joined_session(t0);
        let mut now = t0;
        for _ in 0..100 {
            now = s.poll_timeout();
            s.handle_timeout(now);
            for o in drain(&mut s) {
                match o {
                    Output::Send(m) if m.message_type() == MessageType::Ping => {
                        s.handle_message(now, msg(r#"{"type":"pong"}"#));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(now - t0 > Duration::from_secs(900));
        assert!(!s.is_closed());
    }

    #[test]
    fn losing_present_aborts_up_streams() {
        let t0 = Instant::now();
        let mut s = joined_session(t0);
        s.handle_message(
            t0,
            msg(r#"{"type":"offer","id":"S1","label":"camera","sdp":"v=0"}"#),
        );
        assert!(matches!(
            drain(&mut s).as_slice(),
            [Output::Action(Action::Publish { .. })]
        ));
        s.published("S1", Ok("answer".into()));
        drain(&mut s);
        let mut me = Participant::new("A", "a", FrontEnd::Galene);
        me.permissions = [Permission::Message].into_iter().collect();
        s.handle_room_event(&RoomEvent::ParticipantChanged(me), &GroupView::default());
        let out = drain(&mut s);
        let kinds: Vec<String> = out
            .iter()
            .map(|o| match o {
                Output::Send(m) => format!("{}:{}", m.r#type, m.kind_str()),
                Output::Action(Action::Unpublish { id }) => format!("unpublish:{id}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "joined:change",
                "abort:",
                "unpublish:S1",
                "usermessage:error",
                "user:change"
            ]
        );
    }

    #[test]
    fn join_request_carries_credentials() {
        let t0 = Instant::now();
        let mut s = Session::new(t0);
        s.handle_message(t0, msg(r#"{"type":"handshake","version":["2"],"id":"A"}"#));
        drain(&mut s);
        s.handle_message(
            t0,
            msg(r#"{"type":"join","kind":"join","group":"g","token":"T","data":{"raisehand":true}}"#),
        );
        match drain(&mut s).as_slice() {
            [
                Output::Action(Action::Join {
                    group,
                    credentials,
                    data,
                }),
            ] => {
                assert_eq!(group, "g");
                assert_eq!(credentials.token.as_deref(), Some("T"));
                assert_eq!(credentials.username, None);
                assert_eq!(data.get("raisehand"), Some(&Value::Bool(true)));
            }
            other => panic!("{other:?}"),
        }
    }
}
