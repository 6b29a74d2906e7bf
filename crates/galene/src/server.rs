//! The Galène HTTP surface and WebSocket driver: the only I/O of this crate.
//!
//! Each WebSocket connection is one task that owns a [`Session`], feeds it
//! frames, room events, SFU events and timer ticks, and carries out the
//! [`Action`]s it returns against the shared room and the SFU.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::Instrument;
use yard::room::{
    ChatMessage, FrontEnd, JoinError, JoinRules, Participant, Permission, Room, RoomEvent, Rooms,
    UserMessage, merge_map,
};

use crate::groups::{
    AuthContext, AuthError, Credentials, Group, GroupError, GroupStore, Identity, StoredToken,
    TokenStore, authenticate,
};
use crate::session::{Action, GroupView, JoinInfo, Output, Session};
use crate::whip::WhipSession;
use crate::wire::{self, MAX_MESSAGE_SIZE, Message, Status};
use crate::{recorder, recordings, whip};

/// Settings of the Galène front end, under `[galene]` in the server's TOML.
/// It is served on the web port, so it has no listen address of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub enabled: bool,
    /// Group files; empty = `<data dir>/groups`.
    pub groups_dir: PathBuf,
    /// Create the demo's open group `lobby` when no file defines it.
    pub demo_lobby: bool,
    /// Extra origins allowed to open `/ws` (besides same-host pages).
    pub allow_origins: Vec<String>,
    /// Public base URL when behind a reverse proxy (used in `.status`).
    pub proxy_url: Option<String>,
    /// When set, JWT audiences must name this host.
    pub canonical_host: Option<String>,
    /// Whether the web port speaks TLS (decides `ws://` or `wss://` in
    /// `.status`); the server sets it from its own configuration.
    pub tls: bool,
    /// `iceServers` entries handed to clients in `rtcConfiguration`.
    pub ice_servers: Vec<Value>,
    /// The browser client page served at `/group/NAME/`; empty = a
    /// placeholder page.
    pub client_page: PathBuf,
    /// Where the disk recorder writes (`<dir>/<group>/`); empty =
    /// `<data dir>/recordings`.
    pub recordings_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            groups_dir: PathBuf::new(),
            demo_lobby: true,
            allow_origins: Vec::new(),
            proxy_url: None,
            canonical_host: None,
            tls: true,
            ice_servers: Vec::new(),
            client_page: PathBuf::new(),
            recordings_dir: PathBuf::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("groups directory {path}: {source}")]
    GroupsDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

const LOBBY: &str = r#"{
    "displayName": "Lobby",
    "description": "The demo's open group: anybody may join and present.",
    "public": true,
    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}
}
"#;

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) rooms: Rooms,
    pub(crate) sfu: rtc::Sfu,
    pub(crate) groups: GroupStore,
    pub(crate) tokens: TokenStore,
    pub(crate) auth: AuthContext,
    /// One password hash per CPU at a time, so a login storm can not starve
    /// the runtime's blocking pool.
    pub(crate) hashing: tokio::sync::Semaphore,
    pub(crate) recordings_dir: PathBuf,
    /// Running disk recorders, by group name.
    pub(crate) recorders: parking_lot::Mutex<HashMap<String, recorder::Running>>,
    /// Live WHIP publications, by resource id.
    pub(crate) whip: parking_lot::Mutex<HashMap<String, WhipSession>>,
}

/// Everything the Galène routes need; cheap to clone.
#[derive(Clone)]
pub struct GaleneState {
    pub(crate) inner: Arc<Inner>,
}

impl GaleneState {
    /// Checks credentials against a group off the async threads: password
    /// hashes (pbkdf2, bcrypt) are slow on purpose, so at most one per core
    /// runs at a time.
    pub(crate) async fn authenticate(
        &self,
        group: &Arc<Group>,
        creds: Credentials,
    ) -> Result<Identity, AuthError> {
        let _permit = self.inner.hashing.acquire().await;
        let state = self.clone();
        let group = group.clone();
        tokio::task::spawn_blocking(move || {
            authenticate(
                &group,
                &creds,
                &state.inner.tokens,
                &state.inner.auth,
                SystemTime::now(),
            )
        })
        .await
        .unwrap_or(Err(AuthError::Internal))
    }

    /// Prepares the groups directory (creating the demo `lobby` when asked
    /// and absent). `rooms` is the yard's registry (`yard.rooms().clone()`),
    /// `data_dir` the yard's data folder (tokens live in `var/`).
    pub fn new(
        config: Config,
        rooms: Rooms,
        sfu: rtc::Sfu,
        data_dir: &Path,
    ) -> Result<GaleneState, Error> {
        let dir = if config.groups_dir.as_os_str().is_empty() {
            data_dir.join("groups")
        } else {
            config.groups_dir.clone()
        };
        let io = |source| Error::GroupsDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let lobby = dir.join("lobby.json");
        if config.demo_lobby && !lobby.exists() {
            std::fs::write(&lobby, LOBBY).map_err(io)?;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let recordings_dir = if config.recordings_dir.as_os_str().is_empty() {
            data_dir.join("recordings")
        } else {
            config.recordings_dir.clone()
        };
        Ok(GaleneState {
            inner: Arc::new(Inner {
                recordings_dir,
                recorders: parking_lot::Mutex::new(HashMap::new()),
                whip: parking_lot::Mutex::new(HashMap::new()),
                auth: AuthContext {
                    canonical_host: config.canonical_host.clone(),
                },
                groups: GroupStore::new(dir),
                tokens: TokenStore::new(data_dir.join("var").join("tokens.jsonl")),
                config,
                rooms,
                sfu,
                hashing: tokio::sync::Semaphore::new(cpus),
            }),
        })
    }

    /// Where recordings live; group G's files are in `G/` below.
    pub fn recordings_dir(&self) -> &Path {
        &self.inner.recordings_dir
    }

    /// Whether the disk recorder is running in `group`.
    pub fn is_recording(&self, group: &str) -> bool {
        self.inner.recorders.lock().contains_key(group)
    }

    /// Starts the disk recorder of `room`; false if it is running already.
    fn start_recording(&self, room: &Arc<Room>) -> bool {
        let mut recorders = self.inner.recorders.lock();
        if recorders.contains_key(room.name()) {
            return false;
        }
        let dir = self.inner.recordings_dir.join(room.name());
        let running = recorder::start(self.inner.sfu.clone(), room.clone(), dir);
        recorders.insert(room.name().to_owned(), running);
        true
    }

    /// Stops the disk recorder of `group` once its files are finalised;
    /// false if it was not running.
    async fn stop_recording(&self, group: &str) -> bool {
        let running = self.inner.recorders.lock().remove(group);
        match running {
            Some(r) => {
                r.stop().await;
                true
            }
            None => false,
        }
    }

    fn rtc_configuration(&self) -> Option<Value> {
        Some(serde_json::json!({ "iceServers": self.inner.config.ice_servers }))
    }

    /// The status object of a group; `base` is `(scheme, host+prefix)` for
    /// HTTP requests, `None` inside `joined`.
    fn status(&self, group: &Group, base: Option<(&str, &str)>) -> Status {
        let d = &group.description;
        let mut s = Status {
            name: group.name.clone(),
            display_name: d.display_name.clone(),
            ..Status::default()
        };
        if let Some(redirect) = &d.redirect {
            s.redirect = Some(redirect.clone());
            s.description = d.description.clone();
            return s;
        }
        s.description = d.description.clone();
        s.auth_server = d.auth_server.clone();
        s.auth_portal = d.auth_portal.clone();
        let room = self.inner.rooms.get(&group.name);
        let count = room.as_ref().map_or(0, |r| r.len()) as u64;
        let locked = room.as_ref().is_some_and(|r| r.locked().is_some());
        match base {
            Some((scheme, host)) => {
                s.location = Some(format!("{scheme}://{host}/group/{}/", group.name));
                let ws = if scheme == "https" { "wss" } else { "ws" };
                s.endpoint = Some(format!("{ws}://{host}/ws"));
                if group.is_public() {
                    s.locked = locked;
                    s.client_count = Some(count);
                }
            }
            None => {
                s.locked = locked;
                s.client_count = Some(count);
            }
        }
        s
    }

    fn view(&self, group: &Group, room: &Room) -> GroupView {
        GroupView {
            status: self.status(group, None),
            data: room.data(),
            rtc_configuration: self.rtc_configuration(),
        }
    }

    /// `(scheme, host[/prefix])` of a request, overridden by `proxy_url`.
    fn base(&self, headers: &HeaderMap) -> (String, String) {
        if let Some(proxy) = &self.inner.config.proxy_url
            && let Some((scheme, rest)) = proxy.split_once("://")
        {
            return (scheme.to_owned(), rest.trim_end_matches('/').to_owned());
        }
        let scheme = if self.inner.config.tls {
            "https"
        } else {
            "http"
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        (scheme.to_owned(), host.to_owned())
    }
}

/// The routes: `/ws`, `/group/NAME/...` (`.status`, `.status.json`, the
/// client page, `.whip` ingest), `/public-groups.json`, `/recordings/...`.
/// Merge into the web router.
pub fn router(state: GaleneState) -> Router {
    Router::new()
        .route("/ws", get(ws_handler))
        .route("/public-groups.json", get(public_groups))
        .route(
            "/group/{*path}",
            get(group_path)
                .post(whip::handle)
                .patch(whip::handle)
                .delete(whip::handle)
                .options(whip::handle),
        )
        .route("/recordings", any(recordings::root))
        .route("/recordings/{*path}", any(recordings::handle))
        .with_state(state)
}

pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><title>Not found</title><p>Not found</p>\n",
    )
        .into_response()
}

pub(crate) fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn group_error(e: GroupError) -> Response {
    match e {
        GroupError::Invalid { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => not_found(),
    }
}

async fn group_path(
    State(state): State<GaleneState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    // `.status` and friends are the last component; everything before is
    // the group name.
    let (name, last) = match path.rsplit_once('/') {
        Some((name, last)) => (name.to_owned(), last.to_owned()),
        None => (path.clone(), String::new()),
    };
    if last.starts_with('.') {
        let group = match state.inner.groups.get(&name) {
            Ok(g) => g,
            Err(e) => return group_error(e),
        };
        return match last.as_str() {
            ".status" => {
                let (scheme, host) = state.base(&headers);
                json_response(&state.status(&group, Some((&scheme, &host))))
            }
            ".status.json" => redirect(&format!("/group/{name}/.status")),
            _ => not_found(),
        };
    }
    let name = path.trim_end_matches('/');
    let group = match state.inner.groups.get(name) {
        Ok(g) => g,
        Err(e) => return group_error(e),
    };
    if path != format!("{name}/") {
        return redirect(&format!("/group/{name}/"));
    }
    if let Some(to) = &group.description.redirect {
        return redirect(to);
    }
    client_page(&state, &group).await
}

async fn client_page(state: &GaleneState, group: &Group) -> Response {
    let auth = group
        .description
        .auth_server
        .as_deref()
        .map(|a| format!("{a} "))
        .unwrap_or_default();
    let csp = format!(
        "connect-src {auth}ws: wss: 'self'; img-src 'self'; media-src blob: 'self'; script-src 'unsafe-eval' 'self'; default-src 'self'"
    );
    let page = &state.inner.config.client_page;
    let body = if page.as_os_str().is_empty() {
        None
    } else {
        tokio::fs::read(page).await.ok()
    };
    let body = body.unwrap_or_else(|| {
        b"<!DOCTYPE html><title>Galene group</title><p>The web client is not installed.</p>\n"
            .to_vec()
    });
    let csp = HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'self'"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn public_groups(State(state): State<GaleneState>, headers: HeaderMap) -> Response {
    let (scheme, host) = state.base(&headers);
    let groups = tokio::task::spawn_blocking({
        let state = state.clone();
        move || state.inner.groups.all()
    })
    .await
    .unwrap_or_default();
    let list: Vec<Status> = groups
        .iter()
        .filter(|g| g.is_public())
        .map(|g| state.status(g, Some((&scheme, &host))))
        .collect();
    json_response(&list)
}

pub(crate) fn origin_allowed(config: &Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host.eq_ignore_ascii_case(host)
        || config
            .allow_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
}

async fn ws_handler(State(state): State<GaleneState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !origin_allowed(&state.inner.config, req.headers()) {
        tracing::info!(?peer, "websocket from a foreign origin refused");
        return StatusCode::FORBIDDEN.into_response();
    }
    let ws = match WebSocketUpgrade::from_request(req, &state).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // The transport accepts a little more than the protocol's cap so that an
    // oversized message gets Galène's answer rather than a transport error.
    ws.max_message_size(MAX_MESSAGE_SIZE.saturating_mul(2))
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("galene", peer = ?peer);
            connection(socket, state, peer).instrument(span)
        })
}

/// Per-connection room membership kept by the driver.
struct Membership {
    group: Arc<Group>,
    room: Arc<Room>,
    events: broadcast::Receiver<RoomEvent>,
}

struct Connection {
    state: GaleneState,
    session: Session,
    peer: Option<SocketAddr>,
    membership: Option<Membership>,
}

/// How long one frame may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

async fn connection(socket: WebSocket, state: GaleneState, peer: Option<SocketAddr>) {
    metrics::gauge!("switchyard_galene_connections").increment(1.0);
    let (mut sink, mut stream) = socket.split();
    let mut sfu_events = state.inner.sfu.events();
    let mut conn = Connection {
        session: Session::new(Instant::now()),
        state,
        peer,
        membership: None,
    };
    'outer: loop {
        // Drain everything the session wants before waiting again.
        while let Some(out) = conn.session.poll_output() {
            match out {
                Output::Send(m) => {
                    let text = wire::encode(&m);
                    let sent = tokio::time::timeout(
                        WRITE_TIMEOUT,
                        sink.send(WsMessage::Text(text.into())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::info!("write failed or too slow");
                        conn.session.handle_disconnect();
                    }
                }
                Output::Close { code, reason } => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = tokio::time::timeout(
                        WRITE_TIMEOUT,
                        sink.send(WsMessage::Close(Some(frame))),
                    )
                    .await;
                }
                Output::Drop => {}
                Output::Action(a) => conn.perform(a).await,
            }
        }
        if conn.session.is_closed() {
            break;
        }
        let deadline = tokio::time::Instant::from_std(conn.session.poll_timeout());
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let now = Instant::now();
                    match wire::decode(text.as_bytes()) {
                        Ok(m) => conn.session.handle_message(now, m),
                        Err(e) => conn.session.handle_decode_error(now, &e),
                    }
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let now = Instant::now();
                    match wire::decode(&bytes) {
                        Ok(m) => conn.session.handle_message(now, m),
                        Err(e) => conn.session.handle_decode_error(now, &e),
                    }
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => conn.session.handle_disconnect(),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "read error");
                    if e.to_string().contains("too long") || e.to_string().contains("size") {
                        let _ = sink.send(WsMessage::Close(Some(CloseFrame { code: 1009, reason: "message too big".into() }))).await;
                    }
                    conn.session.handle_disconnect();
                }
            },
            event = async {
                match conn.membership.as_mut() {
                    Some(m) => m.events.recv().await,
                    None => std::future::pending().await,
                }
            } => match event {
                Ok(event) => conn.room_event(event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "fell behind the room's events");
                    conn.session.handle_disconnect();
                }
                Err(broadcast::error::RecvError::Closed) => conn.session.handle_disconnect(),
            },
            event = sfu_events.recv() => match event {
                Ok(event) => conn.sfu_event(event),
                Err(broadcast::error::RecvError::Lagged(_)) => conn.resync_streams(),
                Err(broadcast::error::RecvError::Closed) => {
                    conn.session.handle_disconnect();
                    continue 'outer;
                }
            },
            _ = tokio::time::sleep_until(deadline) => conn.session.handle_timeout(Instant::now()),
        }
    }
    // Whatever path led here, nothing of this client stays in the room.
    conn.session.handle_disconnect();
    while let Some(out) = conn.session.poll_output() {
        if let Output::Action(a) = out {
            conn.perform(a).await;
        }
    }
    metrics::gauge!("switchyard_galene_connections").decrement(1.0);
}

impl Connection {
    fn room_event(&mut self, event: RoomEvent) {
        let Some(m) = &self.membership else {
            return;
        };
        let view = self.state.view(&m.group, &m.room);
        let me = self.session.client_id().to_owned();
        let kicked = matches!(&event, RoomEvent::Kicked { id, .. } if *id == me);
        self.session.handle_room_event(&event, &view);
        if kicked {
            // the room removed us already: forget it without leaving twice
            self.membership = None;
        }
    }

    fn sfu_event(&mut self, event: rtc::SfuEvent) {
        let Some(m) = &self.membership else {
            return;
        };
        match event {
            rtc::SfuEvent::StreamAdded { room, stream }
            | rtc::SfuEvent::StreamUpdated { room, stream }
                if room == m.room.name() =>
            {
                self.session.stream_added(stream);
            }
            rtc::SfuEvent::StreamRemoved { room, id } if room == m.room.name() => {
                let replaced_by = m.room.replacement_of(&id);
                self.session.stream_removed(&id, replaced_by.as_deref());
            }
            _ => {}
        }
    }

    fn resync_streams(&mut self) {
        if let Some(m) = &self.membership {
            for s in self.state.inner.sfu.streams(m.room.name()) {
                self.session.stream_added(s);
            }
        }
    }

    fn me(&self) -> rtc::ParticipantRef {
        rtc::ParticipantRef {
            id: self.session.client_id().to_owned(),
            username: self.session.username().to_owned(),
        }
    }

    async fn perform(&mut self, action: Action) {
        let sfu = self.state.inner.sfu.clone();
        match action {
            Action::Join {
                group,
                credentials,
                data,
            } => self.join(group, credentials, data).await,
            Action::Leave {
                publications,
                subscriptions,
            } => {
                for id in publications.iter().chain(subscriptions.iter()) {
                    sfu.close(id).await;
                }
                if let Some(m) = self.membership.take() {
                    m.room.leave(self.session.client_id());
                    self.after_departure(&m);
                }
            }
            Action::Chat {
                kind,
                to,
                value,
                noecho,
                privileged,
                username,
            } => {
                if let Some(m) = &self.membership {
                    m.room.chat(ChatMessage {
                        id: None,
                        from: Some(self.session.client_id().to_owned()),
                        username: Some(username),
                        to,
                        kind,
                        value,
                        time: SystemTime::now(),
                        privileged,
                        noecho,
                    });
                }
            }
            Action::UserMessage {
                kind,
                from_self,
                username,
                to,
                value,
                noecho,
                privileged,
            } => {
                if let Some(m) = &self.membership {
                    m.room.user_message(UserMessage {
                        from: from_self.then(|| self.session.client_id().to_owned()),
                        username,
                        to,
                        kind,
                        value,
                        time: SystemTime::now(),
                        privileged,
                        noecho,
                    });
                }
            }
            Action::ChangePermissions {
                target,
                add,
                remove,
            } => {
                if let Some(m) = &self.membership {
                    m.room.update(&target, |p| {
                        for a in &add {
                            p.permissions.insert(*a);
                        }
                        for r in &remove {
                            p.permissions.remove(*r);
                        }
                    });
                }
            }
            Action::SetUserData(changes) => {
                if let Some(m) = &self.membership {
                    m.room.update(self.session.client_id(), |p| {
                        merge_map(&mut p.status, changes)
                    });
                }
            }
            Action::Kick { target, message } => {
                if let Some(m) = &self.membership {
                    m.room.kick(
                        &target,
                        Some(self.session.client_id().to_owned()),
                        Some(self.session.username().to_owned()),
                        message,
                    );
                }
            }
            Action::ClearChat(what) => {
                if let Some(m) = &self.membership {
                    m.room.clear_chat(what);
                }
            }
            Action::Lock(message) => {
                if let Some(m) = &self.membership {
                    m.room.lock(message);
                }
            }
            Action::Unlock => {
                if let Some(m) = &self.membership {
                    m.room.unlock();
                }
            }
            Action::Record => {
                if let Some(m) = &self.membership
                    && !self.state.start_recording(&m.room)
                {
                    let me = self.session.client_id().to_owned();
                    self.session.send(Message::error(&me, "already recording"));
                }
            }
            Action::Unrecord => {
                let Some(name) = self.membership.as_ref().map(|m| m.room.name().to_owned()) else {
                    return;
                };
                if !self.state.stop_recording(&name).await {
                    let me = self.session.client_id().to_owned();
                    self.session.send(Message::error(&me, "not recording"));
                }
            }
            Action::Subgroups => {
                if let Some(m) = &self.membership {
                    let prefix = format!("{}/", m.room.name());
                    let mut text = String::new();
                    for r in self.state.inner.rooms.list() {
                        let n = r.len();
                        if r.name().starts_with(&prefix) && n > 0 {
                            let plural = if n == 1 { "" } else { "s" };
                            text.push_str(&format!("{} ({n} client{plural})\n", r.name()));
                        }
                    }
                    self.session.server_chat(SystemTime::now(), &text);
                }
            }
            Action::SetGroupData(changes) => {
                if let Some(m) = &self.membership {
                    m.room.merge_data(changes);
                }
            }
            Action::MakeToken(value) => self.make_token(value),
            Action::EditToken(value) => self.edit_token(value),
            Action::ListTokens => {
                if let Some(m) = &self.membership {
                    let list = self.state.inner.tokens.list(m.room.name());
                    let value = serde_json::to_value(list).unwrap_or(Value::Null);
                    let me = self.session.client_id().to_owned();
                    self.session
                        .send(Message::server_usermessage("tokenlist", &me, value));
                }
            }
            Action::Publish {
                id,
                sdp,
                label,
                replace,
                renegotiate,
            } => {
                let Some(m) = &self.membership else {
                    self.session.published(&id, Err("not joined".into()));
                    return;
                };
                if let Some(old) = replace {
                    m.room.set_replacement(&old, &id);
                    sfu.close(&old).await;
                }
                if renegotiate {
                    // same peer connection on the client: keep the DTLS identity
                    let result = sfu.remote_offer(&id, sdp).await;
                    self.session
                        .published(&id, result.map_err(|e| e.to_string()));
                    return;
                }
                let opts = rtc::PublishOptions {
                    id: Some(id.clone()),
                    label,
                    codecs: m.group.codecs(),
                };
                let room = m.room.name().to_owned();
                let result = sfu.publish(&room, self.me(), sdp, opts).await;
                match result {
                    Ok(publication) => {
                        drain_peer_events(publication.events);
                        self.session.published(&id, Ok(publication.answer_sdp));
                    }
                    Err(e) => {
                        tracing::info!(stream = %id, error = %e, "publication refused");
                        self.session.published(&id, Err(e.to_string()));
                    }
                }
            }
            Action::Unpublish { id } => sfu.close(&id).await,
            Action::Subscribe {
                stream,
                audio,
                video,
            } => {
                let Some(m) = &self.membership else {
                    return;
                };
                let opts = rtc::SubscribeOptions {
                    audio_from: audio.then(|| stream.clone()),
                    video_from: video.as_ref().map(|_| stream.clone()),
                    layer: video.unwrap_or_default(),
                    codecs: Vec::new(),
                };
                let room = m.room.name().to_owned();
                let result = sfu.subscribe(&room, self.me(), opts).await;
                match result {
                    Ok(sub) => {
                        drain_peer_events(sub.events);
                        self.session.subscribed(&stream, Ok((sub.id, sub.sdp)));
                    }
                    Err(e) => self.session.subscribed(&stream, Err(e.to_string())),
                }
            }
            Action::Unsubscribe { subscription } => sfu.close(&subscription).await,
            Action::SetLayer {
                subscription,
                layer,
            } => {
                if let Err(e) = sfu.set_layer(&subscription, layer).await {
                    tracing::info!(error = %e, "layer change failed");
                }
            }
            Action::RemoteAnswer {
                stream,
                subscription,
                sdp,
            } => {
                let result = sfu.remote_answer(&subscription, sdp).await;
                self.session
                    .answer_applied(&stream, result.map_err(|e| e.to_string()));
            }
            Action::Candidate { sfu_id, candidate } => {
                let text = serde_json::to_string(&candidate).unwrap_or_default();
                if let Err(e) = sfu.add_ice_candidate(&sfu_id, &text).await {
                    tracing::debug!(error = %e, "candidate refused");
                }
            }
            Action::IceRestart {
                stream,
                subscription,
            } => {
                let result = sfu.ice_restart(&subscription).await;
                self.session
                    .reoffered(&stream, result.map_err(|e| e.to_string()));
            }
        }
    }

    /// Galène's `autolock` and `autokick`: a group whose last operator left
    /// locks itself, or sends everybody away.
    fn after_departure(&self, m: &Membership) {
        let d = &m.group.description;
        if !(d.autolock || d.autokick) {
            return;
        }
        let members = m.room.participants();
        if members.iter().any(|p| p.permissions.has(Permission::Op)) {
            return;
        }
        if d.autolock && m.room.locked().is_none() {
            m.room.lock(None);
        }
        if d.autokick {
            for p in members {
                m.room.kick(
                    &p.id,
                    None,
                    None,
                    "there are no operators in this group".into(),
                );
            }
        }
    }

    async fn join(
        &mut self,
        name: String,
        credentials: crate::groups::Credentials,
        data: Map<String, Value>,
    ) {
        let state = self.state.clone();
        let group = {
            let state = state.clone();
            let name = name.clone();
            tokio::task::spawn_blocking(move || state.inner.groups.get(&name)).await
        };
        let group = match group {
            Ok(Ok(g)) => g,
            Ok(Err(GroupError::IllegalName)) => {
                return self.session.join_failed(&name, None, "illegal group name");
            }
            Ok(Err(GroupError::NotFound)) => {
                return self
                    .session
                    .join_failed(&name, None, "group does not exist");
            }
            _ => {
                return self
                    .session
                    .join_failed(&name, None, "internal server error");
            }
        };
        let identity = state.authenticate(&group, credentials).await;
        let identity = match identity {
            Ok(i) => i,
            Err(e) => {
                if e == AuthError::NotAuthorised {
                    // slows down password guessing
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tracing::info!(group = %name, error = %e, "join refused");
                return self
                    .session
                    .join_failed(&name, e.error_id(), &e.to_string());
            }
        };
        let is_op = identity.permissions.has(Permission::Op);
        let room = state.inner.rooms.get_or_create(&group.name);
        if let Some(to) = &group.description.redirect {
            return self.session.join_redirected(&name, &identity.username, to);
        }
        if !is_op {
            if let Some(message) = room.locked() {
                let text = if message.is_empty() {
                    "this group is locked".to_owned()
                } else {
                    message
                };
                return self.session.join_failed(&name, None, &text);
            }
            let now = Utc::now();
            if group.not_before.is_some_and(|t| now < t) {
                return self
                    .session
                    .join_failed(&name, None, "this group is not open yet");
            }
            if group.expires.is_some_and(|t| now > t) {
                return self
                    .session
                    .join_failed(&name, None, "this group is closed");
            }
        }
        room.set_history_limits(yard::room::DEFAULT_HISTORY_LEN, group.max_history_age());
        let me = Participant {
            id: self.session.client_id().to_owned(),
            username: identity.username.clone(),
            front_end: FrontEnd::Galene,
            permissions: identity.permissions.clone(),
            status: data,
            address: self.peer,
        };
        let rules = JoinRules {
            exempt: is_op,
            max_participants: group.description.max_clients,
            require_operator: group.description.autokick,
        };
        let joined = match room.join(me.clone(), &rules, SystemTime::now()) {
            Ok(j) => j,
            Err(e) => {
                let text = match e {
                    JoinError::Locked { message } => {
                        message.unwrap_or_else(|| "this group is locked".into())
                    }
                    JoinError::NoOperators => "there are no operators in this group".into(),
                    JoinError::Full => "too many users".into(),
                    JoinError::BadId => "internal server error".into(),
                };
                return self.session.join_failed(&name, None, &text);
            }
        };
        let status = state.status(&group, None);
        let info = JoinInfo {
            group: group.name.clone(),
            username: identity.username,
            permissions: identity.permissions,
            status,
            group_data: joined.data.clone(),
            rtc_configuration: state.rtc_configuration(),
            history: joined.history.clone(),
            me,
            others: joined.others.clone(),
            streams: state.inner.sfu.streams(&group.name),
            allow_recording: group.description.allow_recording,
        };
        tracing::info!(group = %group.name, user = %info.username, "joined");
        self.membership = Some(Membership {
            group,
            room,
            events: joined.events,
        });
        self.session.join_succeeded(info);
    }

    fn token_reply(&mut self, error: Option<&str>, value: Value) {
        let me = self.session.client_id().to_owned();
        let mut m = Message::server_usermessage("token", &me, value);
        m.error = error.map(str::to_owned);
        self.session.send(m);
    }

    fn make_token(&mut self, value: Value) {
        let Some(m) = &self.membership else {
            return;
        };
        let group_name = m.room.name().to_owned();
        let group = m.group.clone();
        let perms = self.session.permissions().clone();
        if !perms.has(Permission::Token) {
            return self.token_reply(
                Some("not-authorised"),
                Value::String("not authorised".into()),
            );
        }
        let Value::Object(template) = value else {
            return self.token_reply(Some("error"), Value::String("bad token value".into()));
        };
        if template.contains_key("token") {
            return self.token_reply(
                Some("error"),
                Value::String("client specified token".into()),
            );
        }
        let now = Utc::now();
        let mut token = StoredToken {
            token: yard::room::new_id(),
            group: group_name.clone(),
            ..StoredToken::default()
        };
        match template.get("group") {
            None | Some(Value::Null) => {}
            Some(Value::String(g)) if *g == group_name => {}
            Some(Value::String(_)) => {
                return self
                    .token_reply(Some("error"), Value::String("wrong group in token".into()));
            }
            Some(_) => {
                return self.token_reply(Some("error"), Value::String("bad string value".into()));
            }
        }
        match template.get("username") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) => {
                if group.description.users.contains_key(u) {
                    return self.token_reply(
                        Some("error"),
                        Value::String("that username is taken".into()),
                    );
                }
                token.username = Some(u.clone());
            }
            Some(_) => {
                return self.token_reply(Some("error"), Value::String("bad string value".into()));
            }
        }
        match template.get("permissions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for p in list {
                    let Some(name) = p.as_str() else {
                        return self
                            .token_reply(Some("error"), Value::String("bad string list".into()));
                    };
                    let granted = Permission::parse(name).is_some_and(|q| perms.has(q));
                    if !granted {
                        return self.token_reply(
                            Some("not-authorised"),
                            Value::String("not authorised".into()),
                        );
                    }
                    token.permissions.push(name.to_owned());
                }
            }
            Some(_) => {
                return self.token_reply(Some("error"), Value::String("bad string list".into()));
            }
        }
        for (field, slot) in [
            ("expires", &mut token.expires),
            ("not-before", &mut token.not_before),
        ] {
            match template.get(field) {
                None | Some(Value::Null) => {}
                Some(v) => match token_time(v, now) {
                    Some(t) => *slot = Some(t),
                    None => {
                        return self
                            .token_reply(Some("error"), Value::String("bad time value".into()));
                    }
                },
            }
        }
        if token.expires.is_none() {
            return self.token_reply(Some("error"), Value::String("token doesn't expire".into()));
        }
        let username = self.session.username();
        token.issued_by = (!username.is_empty()).then(|| username.to_owned());
        token.issued_at = Some(now.to_rfc3339_opts(SecondsFormat::Millis, true));
        if let Err(e) = self.state.inner.tokens.add(token.clone()) {
            tracing::warn!(error = %e, "cannot store token");
            return self.token_reply(Some("error"), Value::String("internal server error".into()));
        }
        let value = serde_json::to_value(&token).unwrap_or(Value::Null);
        self.token_reply(None, value);
    }

    fn edit_token(&mut self, value: Value) {
        let Value::Object(template) = value else {
            return self.token_reply(Some("error"), Value::String("bad token value".into()));
        };
        if let Some(field) = template
            .keys()
            .find(|k| !["token", "expires", "not-before"].contains(&k.as_str()))
        {
            let _ = field;
            return self.token_reply(
                Some("error"),
                Value::String("this field cannot be edited".into()),
            );
        }
        let Some(secret) = template.get("token").and_then(Value::as_str) else {
            return self.token_reply(Some("error"), Value::String("bad token value".into()));
        };
        let Some(mut token) = self.state.inner.tokens.find(secret) else {
            return self.token_reply(Some("error"), Value::String("unknown token".into()));
        };
        let now = Utc::now();
        for (field, slot) in [
            ("expires", &mut token.expires),
            ("not-before", &mut token.not_before),
        ] {
            if let Some(v) = template.get(field) {
                match token_time(v, now) {
                    Some(t) => *slot = Some(t),
                    None => {
                        return self
                            .token_reply(Some("error"), Value::String("bad time value".into()));
                    }
                }
            }
        }
        match self.state.inner.tokens.replace(token.clone()) {
            Ok(true) => {
                let value = serde_json::to_value(&token).unwrap_or(Value::Null);
                self.token_reply(None, value)
            }
            _ => self.token_reply(Some("error"), Value::String("unknown token".into())),
        }
    }
}

/// A token time: RFC 3339, or milliseconds from now.
fn token_time(v: &Value, now: DateTime<Utc>) -> Option<String> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|_| s.clone()),
        Value::Number(n) => {
            let ms = n.as_f64()?;
            if !ms.is_finite() || ms.abs() > 1e15 {
                return None;
            }
            let t = now.checked_add_signed(chrono::TimeDelta::milliseconds(ms as i64))?;
            Some(t.to_rfc3339_opts(SecondsFormat::Millis, true))
        }
        _ => None,
    }
}

/// Keeps a peer's event channel drained; the front end learns what matters
/// from the room-level SFU events.
fn drain_peer_events(mut events: rtc::PeerEvents) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            tracing::debug!(?event, "peer event");
        }
    });
}
