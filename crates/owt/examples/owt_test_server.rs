//! A standalone OWT portal for the Node conformance scripts in `tests/owt-node` and for
//! load generators: the OWT router on 127.0.0.1 (plain HTTP), a yard, an SFU on loopback,
//! plus test-only endpoints under `/test/` that stand in for what a browser and a Galène
//! client would do:
//!
//! * `POST /test/peers {"kind":"publisher"|"receiver","simulcast":["h","l"]}` → `{id, offer}`:
//!   a str0m WebRTC peer (synthetic VP8 + Opus) whose offer a script sends in `soac`;
//! * `POST /test/peers/{id}/answer {"sdp"}`, `GET /test/peers/{id}/report`;
//! * `POST /test/galene/join {room,id,user}`, `/test/galene/leave`, `/test/galene/chat
//!   {room,from,to?,message}`, `GET /test/galene/history?room=` and
//!   `POST /test/galene/publish {room,owner}` → `{id}`, `POST /test/galene/kick {room,id,by}`:
//!   a Galène member, its stream and its moderation in
//!   the shared room, without the Galène front end.
//!
//! Prints one JSON line `{"port","serviceId","serviceKey"}` on stdout when ready.
//! Environment: `OWT_LOGIN_TIMEOUT_S`, `OWT_RECONNECTION_TIMEOUT_S` shorten deadlines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use rtc::testpeer::{TestPeer, TestPeerConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct TestState {
    peers: Arc<Mutex<HashMap<String, Arc<TestPeer>>>>,
    yard: yard::Yard,
    sfu: rtc::Sfu,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn new_peer(State(st): State<TestState>, Json(body): Json<Value>) -> Json<Value> {
    let simulcast: Vec<String> = body
        .get("simulcast")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let cfg = TestPeerConfig {
        audio: body.get("audio").and_then(Value::as_bool).unwrap_or(true),
        video: body.get("video").and_then(Value::as_bool).unwrap_or(true),
        keyframe_every: 30,
        simulcast,
        ..TestPeerConfig::default()
    };
    let made = if body.get("kind").and_then(Value::as_str) == Some("receiver") {
        TestPeer::receiver_offering(cfg).await
    } else {
        TestPeer::publisher(cfg).await
    };
    match made {
        Ok((peer, offer)) => {
            let id = format!("peer{}", rand::random::<u32>());
            st.peers.lock().insert(id.clone(), Arc::new(peer));
            Json(json!({"id": id, "offer": offer}))
        }
        Err(e) => Json(json!({"error": e.to_string()})),
    }
}

async fn peer_answer(
    State(st): State<TestState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let peer = st.peers.lock().get(&id).cloned();
    let sdp = body
        .get("sdp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match peer {
        Some(p) => match p.accept_answer(&sdp).await {
            Ok(()) => Json(json!({"ok": true})),
            Err(e) => Json(json!({"error": e})),
        },
        None => Json(json!({"error": "no such peer"})),
    }
}

async fn peer_report(State(st): State<TestState>, Path(id): Path<String>) -> Json<Value> {
    let peer = st.peers.lock().get(&id).cloned();
    match peer {
        Some(p) => {
            let r = p.report();
            Json(json!({
                "connected": r.connected,
                "audioFrames": r.audio_frames,
                "videoFrames": r.video_frames,
                "videoEncoding": r.video_encoding,
                "framesSent": r.frames_sent,
            }))
        }
        None => Json(json!({"error": "no such peer"})),
    }
}

async fn galene_join(State(st): State<TestState>, Json(b): Json<Value>) -> Json<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let room = st.yard.rooms().get_or_create(&s("room"));
    let mut p = yard::room::Participant::new(s("id"), s("user"), yard::room::FrontEnd::Galene);
    p.permissions.insert(yard::room::Permission::Present);
    p.permissions.insert(yard::room::Permission::Message);
    match room.join(p, &yard::room::JoinRules::default(), SystemTime::now()) {
        Ok(_) => Json(json!({"ok": true})),
        Err(e) => Json(json!({"error": e.to_string()})),
    }
}

async fn galene_leave(State(st): State<TestState>, Json(b): Json<Value>) -> Json<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(r) = st.yard.rooms().get(&s("room")) {
        r.leave(&s("id"));
    }
    Json(json!({"ok": true}))
}

async fn galene_kick(State(st): State<TestState>, Json(b): Json<Value>) -> Json<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let kicked = st
        .yard
        .rooms()
        .get(&s("room"))
        .is_some_and(|r| r.kick(&s("id"), Some(s("by")), Some(s("by")), "kicked".into()));
    Json(json!({"ok": kicked}))
}

async fn galene_chat(State(st): State<TestState>, Json(b): Json<Value>) -> Json<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_owned);
    let room = st
        .yard
        .rooms()
        .get_or_create(&s("room").unwrap_or_default());
    room.chat(yard::room::ChatMessage {
        id: None,
        from: s("from"),
        username: s("from"),
        to: s("to"),
        kind: String::new(),
        value: b.get("message").cloned().unwrap_or(Value::Null),
        time: SystemTime::now(),
        privileged: false,
        noecho: false,
    });
    Json(json!({"ok": true}))
}

async fn galene_history(
    State(st): State<TestState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let room = st
        .yard
        .rooms()
        .get_or_create(q.get("room").map(String::as_str).unwrap_or(""));
    let list: Vec<Value> = room
        .history(SystemTime::now())
        .into_iter()
        .map(|m| json!({"from": m.from, "username": m.username, "value": m.value}))
        .collect();
    Json(Value::Array(list))
}

async fn galene_publish(State(st): State<TestState>, Json(b): Json<Value>) -> Json<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (peer, offer) = match TestPeer::publisher(TestPeerConfig {
        keyframe_every: 30,
        ..Default::default()
    })
    .await
    {
        Ok(x) => x,
        Err(e) => return Json(json!({"error": e.to_string()})),
    };
    let owner = rtc::ParticipantRef {
        id: s("owner"),
        username: s("owner"),
    };
    let opts = rtc::PublishOptions {
        id: None,
        label: "camera".into(),
        codecs: vec![],
    };
    match st.sfu.publish(&s("room"), owner, offer, opts).await {
        Ok(p) => {
            if let Err(e) = peer.accept_answer(&p.answer_sdp).await {
                return Json(json!({"error": e}));
            }
            let id = p.id.clone();
            // Keep the events receiver alive with the peer.
            let mut events = p.events;
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            st.peers.lock().insert(id.clone(), Arc::new(peer));
            Json(json!({"id": id}))
        }
        Err(e) => Json(json!({"error": e.to_string()})),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber_init();
    }
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir()?;
    let yard = yard::Yard::new(dir.path(), yard::SourcePolicy::default(), shutdown.clone())?;
    let sfu = rtc::Sfu::start(
        rtc::Config {
            port_base: 0,
            workers: 1,
            host_addresses: vec!["127.0.0.1".parse()?],
            ..rtc::Config::default()
        },
        shutdown.clone(),
    )?;
    let config = owt::Config {
        secure: false,
        mauth_failure_delay_ms: 0,
        login_timeout_s: env_u64("OWT_LOGIN_TIMEOUT_S", 180),
        reconnection_timeout_s: env_u64("OWT_RECONNECTION_TIMEOUT_S", 60),
        ping_interval_s: 2,
        ping_timeout_s: 2,
        persist: false,
        ..owt::Config::default()
    };
    let (router, state) = owt::build(config, yard.clone(), sfu.clone(), shutdown.clone())?;
    let test = TestState {
        peers: Arc::default(),
        yard,
        sfu,
    };
    let test_routes = Router::new()
        .route("/test/peers", post(new_peer))
        .route("/test/peers/{id}/answer", post(peer_answer))
        .route("/test/peers/{id}/report", get(peer_report))
        .route("/test/galene/join", post(galene_join))
        .route("/test/galene/leave", post(galene_leave))
        .route("/test/galene/chat", post(galene_chat))
        .route("/test/galene/kick", post(galene_kick))
        .route("/test/galene/history", get(galene_history))
        .route("/test/galene/publish", post(galene_publish))
        .with_state(test);
    let app = router.merge(test_routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let keys = state.keys();
    println!(
        "{}",
        json!({"port": port, "serviceId": keys.service_id, "serviceKey": keys.service_key})
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        // The parent script closes our stdin when done; also stop on Ctrl-C.
        let mut buf = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut buf)).await;
        stop.cancel();
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn tracing_subscriber_init() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}
