//! The I/O around the sans-IO [`Portal`]: Socket.IO (socketioxide, EIO3 + EIO4) handlers,
//! the shared room and the SFU behind the [`Shared`] trait, the media command worker, the
//! room and SFU event watchers, the deadline ticker, and key files in the data folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, Method, header};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::Sid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::session::{
    JoinRefused, MediaCommand, MediaEvent, Member, Output, Portal, PortalConfig, Shared,
};
use crate::token::random_hex;
use crate::wire::{Ack, ProtocolVersion, Request, WireError};
use crate::{Config, Error};

/// The service id and keys, kept in the data folder so tokens and REST clients survive a
/// restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keys {
    pub service_id: String,
    pub service_key: String,
    pub token_key: String,
}

const KEYS_FILE: &str = "owt-keys.json";
const ROOMS_FILE: &str = "owt-rooms.json";

impl Keys {
    /// Keys from the configuration where given, else from `owt-keys.json`, else fresh ones
    /// written there (and printed once, so an operator can configure a REST client).
    pub fn load(config: &Config, data_dir: Option<&Path>) -> Result<Keys, Error> {
        let path = data_dir.map(|d| d.join(KEYS_FILE));
        let stored: Option<Keys> = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        let generated = stored.is_none();
        let mut keys = stored.unwrap_or_else(|| Keys {
            service_id: random_hex(24),
            service_key: random_hex(128),
            token_key: random_hex(128),
        });
        if generated && let Some(p) = &path {
            let text = serde_json::to_vec_pretty(&keys).unwrap_or_default();
            std::fs::write(p, text).map_err(|source| Error::DataDir {
                path: p.clone(),
                source,
            })?;
            println!(
                "OWT management API: service id {} key {} (stored in {})",
                keys.service_id,
                keys.service_key,
                p.display()
            );
        }
        if !config.service_id.is_empty() {
            keys.service_id = config.service_id.clone();
        }
        if !config.service_key.is_empty() {
            keys.service_key = config.service_key.clone();
        }
        Ok(keys)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Inner {
    config: Config,
    keys: Keys,
    portal: Mutex<Portal>,
    yard: yard::Yard,
    sfu: rtc::Sfu,
    io: SocketIo,
    data_dir: Option<PathBuf>,
    watched: Mutex<HashSet<String>>,
    media_tx: mpsc::UnboundedSender<MediaCommand>,
    shutdown: CancellationToken,
}

/// Everything the OWT front end shares between its Socket.IO handlers, REST handlers and
/// background tasks. Cheap to clone.
#[derive(Clone)]
pub struct OwtState {
    inner: Arc<Inner>,
}

/// [`Shared`] over the yard's rooms and the SFU.
struct YardShared<'a> {
    state: &'a OwtState,
}

fn member_of(p: &yard::room::Participant) -> Member {
    Member {
        id: p.id.clone(),
        user: p.username.clone(),
        role: crate::session::galene_role(p).to_owned(),
        permission: crate::session::galene_permission(p),
    }
}

impl Shared for YardShared<'_> {
    fn join(&mut self, room: &str, who: &Member, limit: usize) -> Result<(), JoinRefused> {
        let r = self.state.inner.yard.rooms().get_or_create(room);
        let mut p = yard::room::Participant::new(
            who.id.clone(),
            who.user.clone(),
            yard::room::FrontEnd::Owt,
        );
        if who.permission.publish.audio || who.permission.publish.video {
            p.permissions.insert(yard::room::Permission::Present);
        }
        p.permissions.insert(yard::room::Permission::Message);
        let rules = yard::room::JoinRules {
            exempt: false,
            max_participants: limit,
            require_operator: false,
        };
        match r.join(p, &rules, SystemTime::now()) {
            Ok(_joined) => {
                self.state.watch(room);
                Ok(())
            }
            Err(yard::room::JoinError::Full) => Err(JoinRefused::Full),
            Err(yard::room::JoinError::Locked { .. }) => {
                Err(JoinRefused::Other("Room is locked".into()))
            }
            Err(_) => Err(JoinRefused::Other("Joining room failed".into())),
        }
    }

    fn leave(&mut self, room: &str, id: &str) {
        if let Some(r) = self.state.inner.yard.rooms().get(room) {
            r.leave(id);
        }
    }

    fn members(&self, room: &str) -> Vec<Member> {
        self.state
            .inner
            .yard
            .rooms()
            .get(room)
            .map(|r| {
                r.participants()
                    .iter()
                    .filter(|p| p.front_end.is_person())
                    .map(member_of)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn streams(&self, room: &str) -> Vec<rtc::StreamInfo> {
        self.state.inner.sfu.streams(room)
    }

    fn chat(&mut self, room: &str, from: &Member, to: Option<&str>, message: &Value) {
        if let Some(r) = self.state.inner.yard.rooms().get(room) {
            r.chat(yard::room::ChatMessage {
                id: None,
                from: Some(from.id.clone()),
                username: Some(from.user.clone()),
                to: to.map(str::to_owned),
                kind: String::new(),
                value: message.clone(),
                time: SystemTime::now(),
                privileged: false,
                noecho: false,
            });
        }
    }

    fn kick(&mut self, room: &str, id: &str) -> bool {
        self.state
            .inner
            .yard
            .rooms()
            .get(room)
            .is_some_and(|r| r.kick(id, None, None, "removed by the management API".into()))
    }
}

impl OwtState {
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The configured (or generated) service id and key of the management API.
    pub fn service(&self) -> (String, String) {
        (
            self.inner.keys.service_id.clone(),
            self.inner.keys.service_key.clone(),
        )
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn token_key(&self) -> String {
        self.inner.keys.token_key.clone()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// The `host` written into tokens: the configured public host, else the Host header
    /// the REST request came with (the same web port serves Socket.IO).
    pub(crate) fn token_host(&self, headers: &HeaderMap) -> String {
        if !self.inner.config.public_host.is_empty() {
            return self.inner.config.public_host.clone();
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost:8443")
            .to_owned()
    }

    /// Lock the portal with the shared room at hand.
    pub fn with_portal<R>(&self, f: impl FnOnce(&mut Portal, &mut dyn Shared) -> R) -> R {
        let mut shared = YardShared { state: self };
        let mut portal = self.inner.portal.lock();
        f(&mut portal, &mut shared)
    }

    /// A room configuration by id or name; a yard room (Galène group) without one gets a
    /// default configuration named after it.
    pub fn find_room(&self, id_or_name: &str) -> Option<crate::room::RoomConfig> {
        let found = self.with_portal(|p, _| p.rooms.find(id_or_name).cloned());
        if found.is_some() {
            return found;
        }
        self.inner.yard.rooms().get(id_or_name)?;
        let r = self.with_portal(|p, _| p.rooms.get_or_create(id_or_name));
        self.save_rooms();
        Some(r)
    }

    pub(crate) fn save_rooms(&self) {
        let Some(dir) = &self.inner.data_dir else {
            return;
        };
        let json = self.with_portal(|p, _| p.rooms.to_json());
        let path = dir.join(ROOMS_FILE);
        if let Err(e) = std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot save OWT rooms");
        }
    }

    /// Carry out outputs that are not an ack (REST, media results, room events, ticks).
    pub fn execute(&self, outputs: Vec<Output>) {
        self.execute_with_ack(outputs, None);
    }

    fn execute_with_ack(&self, outputs: Vec<Output>, mut ack: Option<AckSender>) {
        for o in outputs {
            match o {
                Output::Ack(args) => {
                    if let Some(a) = ack.take() {
                        let r = match args.as_slice() {
                            [a0] => a.send(&(a0,)),
                            [a0, a1] => a.send(&(a0, a1)),
                            _ => a.send(&args),
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "owt ack not sent");
                        }
                    }
                }
                Output::Send { conn, event, data } => {
                    if let Some(s) = self.socket(&conn)
                        && let Err(e) = s.emit(event, &data)
                    {
                        tracing::debug!(conn, error = %e, "owt notification not sent");
                    }
                }
                Output::Close { conn } => {
                    if let Some(s) = self.socket(&conn) {
                        // Outside the portal lock: disconnect runs our disconnect handler.
                        tokio::spawn(async move {
                            let _ = s.disconnect();
                        });
                    }
                }
                Output::Media(cmd) => {
                    let _ = self.inner.media_tx.send(cmd);
                }
            }
        }
    }

    fn socket(&self, conn: &str) -> Option<SocketRef> {
        let sid: Sid = conn.parse().ok()?;
        self.inner.io.get_socket(sid)
    }

    fn media_event(&self, ev: MediaEvent) {
        let mut portal = self.inner.portal.lock();
        let out = portal.media(ev);
        self.execute_with_ack(out, None);
    }

    /// Watch a shared room's events (Galène members, chat, kicks) once it has OWT members.
    fn watch(&self, room: &str) {
        if !self.inner.watched.lock().insert(room.to_owned()) {
            return;
        }
        let Some(r) = self.inner.yard.rooms().get(room) else {
            return;
        };
        let mut rx = r.subscribe();
        let state = self.clone();
        let room = room.to_owned();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = state.inner.shutdown.cancelled() => break,
                    ev = rx.recv() => ev,
                };
                match ev {
                    Ok(ev) => {
                        let mut shared = YardShared { state: &state };
                        let mut portal = state.inner.portal.lock();
                        let out = portal.room_event(&room, &ev, &mut shared);
                        state.execute_with_ack(out, None);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(room, lost = n, "owt room watcher lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            state.inner.watched.lock().remove(&room);
        });
    }

    async fn run_media(self, mut rx: mpsc::UnboundedReceiver<MediaCommand>) {
        let sfu = self.inner.sfu.clone();
        loop {
            let cmd = tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd { Some(c) => c, None => break },
            };
            match cmd {
                MediaCommand::Publish {
                    stream,
                    room,
                    owner,
                    sdp,
                    label,
                    codecs,
                } => {
                    let opts = rtc::PublishOptions {
                        id: Some(stream.clone()),
                        label,
                        codecs,
                    };
                    match sfu.publish(&room, owner, sdp, opts).await {
                        Ok(p) => {
                            self.media_event(MediaEvent::PublishAnswer {
                                stream: stream.clone(),
                                sdp: p.answer_sdp,
                            });
                            self.forward_peer_events(stream, p.events);
                        }
                        Err(e) => {
                            tracing::info!(stream, error = %e, "owt publication refused by the SFU");
                            self.media_event(MediaEvent::PublishFailed {
                                stream,
                                reason: media_error(&e),
                            });
                        }
                    }
                }
                MediaCommand::Subscribe {
                    subscription,
                    room,
                    subscriber,
                    sdp,
                    audio_from,
                    video_from,
                    rid,
                } => {
                    let opts = rtc::SubscribeOptions {
                        audio_from,
                        video_from,
                        layer: rid.map_or(rtc::Layer::High, rtc::Layer::Rid),
                        codecs: vec![],
                    };
                    match sfu.subscribe_with_offer(&room, subscriber, sdp, opts).await {
                        Ok(s) => {
                            self.media_event(MediaEvent::SubscribeAnswer {
                                subscription: subscription.clone(),
                                peer: s.id,
                                sdp: s.sdp,
                            });
                            self.forward_peer_events(subscription, s.events);
                        }
                        Err(e) => {
                            tracing::info!(subscription, error = %e, "owt subscription refused by the SFU");
                            self.media_event(MediaEvent::SubscribeFailed {
                                subscription,
                                reason: media_error(&e),
                            });
                        }
                    }
                }
                MediaCommand::Candidate { peer, candidate } => {
                    if let Err(e) = sfu.add_ice_candidate(&peer, &candidate).await {
                        tracing::debug!(peer, error = %e, "owt candidate refused");
                    }
                }
                MediaCommand::Close { peer } => sfu.close(&peer).await,
                MediaCommand::Pause { peer, kind, paused } => {
                    if let Err(e) = sfu.set_paused(&peer, kind, paused).await {
                        tracing::debug!(peer, error = %e, "owt pause failed");
                    }
                }
                MediaCommand::SwitchSource { peer, kind, from } => {
                    if let Err(e) = sfu.switch_source(&peer, kind, &from).await {
                        tracing::warn!(peer, from, error = %e, "owt source switch failed");
                    }
                }
                MediaCommand::SetLayer { peer, rid } => {
                    if let Err(e) = sfu.set_layer(&peer, rtc::Layer::Rid(rid)).await {
                        tracing::debug!(peer, error = %e, "owt layer change failed");
                    }
                }
            }
        }
    }

    fn forward_peer_events(&self, session: String, mut events: rtc::PeerEvents) {
        let state = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                state.media_event(MediaEvent::Peer {
                    session: session.clone(),
                    event,
                });
            }
        });
    }

    async fn run_sfu_events(self) {
        let mut rx = self.inner.sfu.events();
        loop {
            let ev = tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(ev) => self.media_event(MediaEvent::Sfu(ev)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "owt lagged behind SFU events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    async fn run_ticker(self) {
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let mut shared = YardShared { state: &self };
            let mut portal = self.inner.portal.lock();
            let out = portal.tick(now_ms(), &mut shared);
            self.execute_with_ack(out, None);
        }
    }

    /// Issue a login token directly (tests, load generators): what `POST …/tokens` does.
    pub fn create_token(&self, room: &str, user: &str, role: &str, host: &str) -> Option<String> {
        let config = self.find_room(room)?;
        config.role(role)?;
        let key = self.token_key();
        let secure = self.inner.config.secure;
        Some(self.with_portal(|p, _| {
            p.tokens.create(
                &key,
                crate::token::TokenRecord {
                    user: user.to_owned(),
                    role: role.to_owned(),
                    room: config.id.clone(),
                    created_ms: now_ms(),
                    host: host.to_owned(),
                    secure,
                },
            )
        }))
    }
}

fn media_error(e: &rtc::Error) -> String {
    match e {
        rtc::Error::NoCodec => "No proper video codec".into(),
        rtc::Error::NoSuchStream(_) | rtc::Error::NoSuchTrack(..) => "Source stream loss".into(),
        other => other.to_string(),
    }
}

/// Events of protocol 1.1 a client may send.
const EVENTS: &[&str] = &[
    "login",
    "relogin",
    "logout",
    "refreshReconnectionTicket",
    "text",
    "publish",
    "unpublish",
    "stream-control",
    "subscribe",
    "unsubscribe",
    "subscription-control",
    "soac",
];

fn on_connect(socket: SocketRef, state: OwtState) {
    let conn = socket.id.to_string();
    let span = tracing::info_span!("owt", conn = %conn);
    let _g = span.enter();
    tracing::debug!(protocol = ?socket.protocol(), "owt socket connected");
    metrics::counter!("switchyard_owt_connections_total").increment(1);
    state.inner.portal.lock().connected(now_ms(), &conn);
    for &event in EVENTS {
        let state = state.clone();
        socket.on(
            event,
            move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                let state = state.clone();
                async move {
                    // `logout` and `refreshReconnectionTicket` carry no data at all.
                    let data = data.unwrap_or(Value::Null);
                    handle_event(&state, &s, event, &data, ack);
                }
            },
        );
    }
    let state2 = state.clone();
    socket.on_disconnect(move |s: SocketRef| {
        let state = state2.clone();
        async move {
            let conn = s.id.to_string();
            let mut shared = YardShared { state: &state };
            let mut portal = state.inner.portal.lock();
            let out = portal.disconnected(now_ms(), &conn, &mut shared);
            state.execute_with_ack(out, None);
        }
    });
}

fn handle_event(state: &OwtState, s: &SocketRef, event: &str, data: &Value, ack: AckSender) {
    let conn = s.id.to_string();
    let span = tracing::info_span!("owt", conn = %conn, event);
    let _entered = span.enter();
    metrics::counter!("switchyard_owt_requests_total", "event" => event.to_owned()).increment(1);
    let req = match Request::decode(event, data) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(conn, event, error = %e, "owt bad request");
            let msg = match e {
                WireError::UnknownEvent(_) => "Illegal request".to_owned(),
                WireError::Invalid(m) => m,
            };
            state.execute_with_ack(
                vec![Output::Ack(Ack::error(msg).args(ProtocolVersion::V1_1))],
                Some(ack),
            );
            return;
        }
    };
    let mut shared = YardShared { state };
    let mut portal = state.inner.portal.lock();
    let out = portal.handle(now_ms(), &conn, req, &mut shared);
    state.execute_with_ack(out, Some(ack));
}

/// Build the OWT front end: the router to merge into the web server (Socket.IO at
/// `/socket.io/` with credentialed CORS, the REST API at `/v1/…` and `/v1.1/…`) and the
/// state handle. Spawns its background tasks on the current tokio runtime; they stop with
/// `shutdown`.
pub fn build(
    config: Config,
    yard: yard::Yard,
    sfu: rtc::Sfu,
    shutdown: CancellationToken,
) -> Result<(Router, OwtState), Error> {
    let data_dir = config.persist.then(|| yard.data_dir().to_path_buf());
    let keys = Keys::load(&config, data_dir.as_deref())?;
    let mut portal = Portal::new(PortalConfig {
        token_key: keys.token_key.clone(),
        // A ticket only works on the process that issued it, as in OWT.
        reconnection_key: random_hex(64),
        text_limit: config.text_limit,
        login_timeout_ms: config.login_timeout_s.saturating_mul(1000),
        reconnection_timeout_ms: config.reconnection_timeout_s.saturating_mul(1000),
        ticket_lifetime_ms: config.ticket_lifetime_s.saturating_mul(1000),
    });
    if let Some(dir) = &data_dir
        && let Ok(bytes) = std::fs::read(dir.join(ROOMS_FILE))
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        portal.rooms = crate::room::RoomConfigs::from_json(&v);
    }
    for name in &config.rooms {
        portal.rooms.get_or_create(name);
    }
    let (svc, io) = SocketIo::builder()
        .ping_interval(Duration::from_secs(config.ping_interval_s.max(1)))
        .ping_timeout(Duration::from_secs(config.ping_timeout_s.max(1)))
        .build_svc();
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let state = OwtState {
        inner: Arc::new(Inner {
            config,
            keys,
            portal: Mutex::new(portal),
            yard,
            sfu,
            io: io.clone(),
            data_dir,
            watched: Mutex::new(HashSet::new()),
            media_tx,
            shutdown: shutdown.clone(),
        }),
    };
    let st = state.clone();
    // Handlers are registered in a connect middleware, which runs before the server sends
    // the namespace connect packet: a client that emits `login` the moment it is connected
    // (as the SDK does) must find them in place.
    let register = move |s: SocketRef| {
        let st = st.clone();
        async move {
            on_connect(s, st);
            Ok::<(), std::convert::Infallible>(())
        }
    };
    io.ns("/", { async || () }.with(register));
    tokio::spawn(state.clone().run_media(media_rx));
    tokio::spawn(state.clone().run_sfu_events());
    tokio::spawn(state.clone().run_ticker());
    let io_close = io.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        io_close.close().await;
    });
    // engine.io-client 3 polls with credentials: echo the Origin, never `*`.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request());
    let socket_io = Router::new()
        .route_service("/socket.io/", svc.clone())
        .route_service("/socket.io", svc)
        .layer(cors);
    let router = socket_io.merge(crate::rest::router(state.clone()));
    Ok((router, state))
}

/// Serve the OWT front end alone on `listener` (tests, load generators, a standalone
/// portal). Returns when `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    yard: yard::Yard,
    sfu: rtc::Sfu,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (router, _state) = build(config, yard, sfu, shutdown.clone())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(Error::Io)
}
