//! The portal over a real EIO4 WebSocket on 127.0.0.1, driven with [`owt::client`] frames:
//! login, participants from both front ends, text, and a publication with a real WebRTC
//! peer (the SFU's str0m test peer) announced to another participant.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use owt::client::{CONNECT, Frame, PONG, decode_frame, encode_request};
use owt::wire::{
    Ack, LoginRequest, Notification, ParticipantAction, ProgressStatus, Request, StreamEvent,
    TextRequest,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Env {
    port: u16,
    state: owt::OwtState,
    yard: yard::Yard,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let yard =
        yard::Yard::new(dir.path(), yard::SourcePolicy::default(), shutdown.clone()).unwrap();
    let sfu = rtc::Sfu::start(
        rtc::Config {
            port_base: 0,
            workers: 1,
            host_addresses: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        },
        shutdown.clone(),
    )
    .unwrap();
    let config = owt::Config {
        persist: false,
        secure: false,
        ..owt::Config::default()
    };
    let (router, state) = owt::build(config, yard.clone(), sfu, shutdown.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    Env {
        port,
        state,
        yard,
        shutdown,
        _dir: dir,
    }
}

struct Client {
    ws: Ws,
    next_ack: u64,
    notifications: Vec<Notification>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut c = Client {
            ws,
            next_ack: 0,
            notifications: vec![],
        };
        assert!(matches!(c.frame().await, Frame::Open { .. }));
        c.ws.send(Message::text(CONNECT)).await.unwrap();
        assert!(matches!(c.frame().await, Frame::Connected { .. }));
        c
    }

    async fn frame(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                if std::env::var("OWT_TEST_TRACE").is_ok() {
                    eprintln!("<- {}", t.as_str().chars().take(120).collect::<String>());
                }
                let f = decode_frame(t.as_str());
                if f == Frame::Ping {
                    self.ws.send(Message::text(PONG)).await.unwrap();
                    continue;
                }
                return f;
            }
        }
    }

    async fn req(&mut self, r: Request) -> Ack {
        self.next_ack += 1;
        let id = self.next_ack;
        self.ws
            .send(Message::text(encode_request(id, &r)))
            .await
            .unwrap();
        loop {
            match self.frame().await {
                Frame::Ack { id: got, ack, .. } if got == id => return ack.unwrap(),
                Frame::Notification(n) => self.notifications.push(n),
                _ => {}
            }
        }
    }

    /// Waits for a notification matching `pred` (earlier ones count).
    async fn wait(&mut self, pred: impl Fn(&Notification) -> bool) -> Notification {
        if let Some(pos) = self.notifications.iter().position(&pred) {
            return self.notifications.remove(pos);
        }
        loop {
            if let Frame::Notification(n) = self.frame().await {
                if pred(&n) {
                    return n;
                }
                self.notifications.push(n);
            }
        }
    }

    async fn login(&mut self, env: &Env, user: &str, role: &str) -> Value {
        let token = env
            .state
            .create_token("public", user, role, &format!("127.0.0.1:{}", env.port))
            .unwrap();
        let ua = serde_json::from_value(json!({"sdk": {"type": "C++", "version": "4.3"},
            "runtime": {"name": "rust", "version": "1"}, "os": {"name": "Linux", "version": "6"}}))
        .unwrap();
        let ack = self
            .req(Request::Login(LoginRequest {
                token,
                user_agent: Some(ua),
                protocol: Some("1.1".into()),
            }))
            .await;
        match ack {
            Ack::Ok(Some(v)) => v,
            other => panic!("login: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_participants_and_text_over_eio4_websocket() {
    let env = start().await;
    let mut a = Client::connect(env.port).await;
    let ra = a.login(&env, "alice", "presenter").await;
    let a_id = ra["id"].as_str().unwrap().to_owned();
    assert_eq!(ra["room"]["views"], json!([]));
    // A Galène member of the same room appears as a participant.
    let room = env.yard.rooms().get("public").unwrap();
    let mut g = yard::room::Participant::new("gal", "galene-user", yard::room::FrontEnd::Galene);
    g.permissions.insert(yard::room::Permission::Present);
    let _joined = room
        .join(
            g,
            &yard::room::JoinRules::default(),
            std::time::SystemTime::now(),
        )
        .unwrap();
    let n = a
        .wait(
            |n| matches!(n, Notification::Participant(ParticipantAction::Join(p)) if p.id == "gal"),
        )
        .await;
    let Notification::Participant(ParticipantAction::Join(p)) = n else {
        unreachable!()
    };
    assert_eq!(
        (p.user.as_str(), p.role.as_str()),
        ("galene-user", "presenter")
    );

    let mut b = Client::connect(env.port).await;
    let rb = b.login(&env, "bob", "viewer").await;
    let ids: Vec<&str> = rb["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a_id.as_str())
            && ids.contains(&"gal")
            && ids.contains(&rb["id"].as_str().unwrap())
    );
    let text = Request::Text(TextRequest {
        to: json!("all"),
        message: json!("héllo"),
    });
    assert_eq!(b.req(text).await, Ack::ok());
    let n = a.wait(|n| matches!(n, Notification::Text { .. })).await;
    assert_eq!(
        n,
        Notification::Text {
            from: rb["id"].as_str().unwrap().into(),
            to: "all".into(),
            message: json!("héllo")
        }
    );
    // ... and it entered the shared chat history the Galène side reads.
    assert!(
        room.history(std::time::SystemTime::now())
            .iter()
            .any(|m| m.value == json!("héllo"))
    );
    assert_eq!(b.req(Request::Logout).await, Ack::ok());
    let n = a
        .wait(|n| matches!(n, Notification::Participant(ParticipantAction::Leave(_))))
        .await;
    assert_eq!(
        n,
        Notification::Participant(ParticipantAction::Leave(rb["id"].as_str().unwrap().into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_with_a_real_peer_is_announced() {
    let env = start().await;
    let mut a = Client::connect(env.port).await;
    let ra = a.login(&env, "alice", "presenter").await;
    let mut b = Client::connect(env.port).await;
    b.login(&env, "bob", "viewer").await;
    let publish = Request::decode(
        "publish",
        &json!({"media": {"audio": {"source": "mic"}, "video": {"source": "camera"}}, "attributes": {"label": "camera"}}),
    )
    .unwrap();
    let Ack::Ok(Some(v)) = a.req(publish).await else {
        panic!("publish refused")
    };
    let id = v["id"].as_str().unwrap().to_owned();
    let (peer, offer) =
        rtc::testpeer::TestPeer::publisher(rtc::testpeer::TestPeerConfig::default())
            .await
            .unwrap();
    let soac = Request::decode(
        "soac",
        &json!({"id": id, "signaling": {"type": "offer", "sdp": offer}}),
    )
    .unwrap();
    assert_eq!(a.req(soac).await, Ack::ok());
    let n = a
        .wait(|n| {
            matches!(
                n,
                Notification::Progress {
                    status: ProgressStatus::Soac(_),
                    ..
                }
            )
        })
        .await;
    let Notification::Progress {
        status: ProgressStatus::Soac(answer),
        ..
    } = n
    else {
        unreachable!()
    };
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=candidate"));
    peer.accept_answer(sdp).await.unwrap();
    a.wait(|n| matches!(n, Notification::Progress { status: ProgressStatus::Ready, id: i } if *i == id)).await;
    let n = b
        .wait(|n| {
            matches!(
                n,
                Notification::Stream {
                    event: StreamEvent::Add(_),
                    ..
                }
            )
        })
        .await;
    let Notification::Stream {
        id: sid,
        event: StreamEvent::Add(info),
    } = n
    else {
        unreachable!()
    };
    assert_eq!(sid, id);
    assert_eq!(info["info"]["owner"], ra["id"]);
    assert_eq!(
        info["media"]["video"]["original"][0]["format"]["codec"],
        "vp8"
    );
    assert_eq!(
        a.req(Request::decode("unpublish", &json!({"id": id})).unwrap())
            .await,
        Ack::ok()
    );
    b.wait(|n| matches!(n, Notification::Stream { event: StreamEvent::Remove, id: i } if *i == id))
        .await;
}
