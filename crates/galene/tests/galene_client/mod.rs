//! A Galène test server on 127.0.0.1:0 and a WebSocket test client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub rooms: yard::room::Rooms,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestServer {
    /// Starts a server whose groups directory holds `groups` (name, JSON).
    pub async fn start(groups: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let gdir = dir.path().join("groups");
        for (name, text) in groups {
            let path = gdir.join(format!("{name}.json"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let shutdown = CancellationToken::new();
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
        let rooms = yard::room::Rooms::new();
        let config = galene::Config {
            tls: false,
            ..Default::default()
        };
        let state = galene::GaleneState::new(config, rooms.clone(), sfu, dir.path()).unwrap();
        let app = galene::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        });
        TestServer {
            addr,
            dir,
            rooms,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn client(&self) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .unwrap();
        Client { ws }
    }

    /// A client that has done its handshake with id `id`.
    pub async fn ready(&self, id: &str) -> Client {
        let mut c = self.client().await;
        c.send(json!({"type":"handshake","version":["2"],"id":id}))
            .await;
        assert_eq!(c.recv().await["type"], "handshake");
        c
    }

    /// A client joined to `group` as `user`/`password`; returns it after its
    /// own `user` `add`.
    pub async fn joined(&self, id: &str, group: &str, user: &str, password: &str) -> Client {
        let mut c = self.ready(id).await;
        c.send(
            json!({"type":"join","kind":"join","group":group,"username":user,"password":password}),
        )
        .await;
        let j = c.recv_type("joined").await;
        assert_eq!(j["kind"], "join", "{j}");
        loop {
            let m = c.recv_type("user").await;
            if m["id"] == id {
                break;
            }
        }
        c
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub enum Next {
    Message(Value),
    Closed(Option<(u16, String)>),
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Ws::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: String) {
        self.ws.send(Ws::text(text)).await.unwrap();
    }

    pub async fn next(&mut self) -> Next {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            match frame {
                Some(Ok(Ws::Text(t))) => return Next::Message(serde_json::from_str(&t).unwrap()),
                Some(Ok(Ws::Close(c))) => {
                    return Next::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Message(v) => v,
            Next::Closed(c) => panic!("closed: {c:?}"),
        }
    }

    /// The next message of type `t`, skipping others (at most 100).
    pub async fn recv_type(&mut self, t: &str) -> Value {
        for _ in 0..100 {
            let m = self.recv().await;
            if m["type"] == t {
                return m;
            }
        }
        panic!("no {t} message");
    }

    /// Skips messages until the close frame; returns code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        for _ in 0..100 {
            if let Next::Closed(c) = self.next().await {
                return c.unwrap_or((0, String::new()));
            }
        }
        panic!("not closed");
    }

    /// Whether nothing arrives for a short while (after a ping round trip,
    /// so everything the server sent before is already here).
    pub async fn quiet(&mut self) -> Vec<Value> {
        self.send(json!({"type":"ping"})).await;
        let mut seen = Vec::new();
        for _ in 0..100 {
            let m = self.recv().await;
            if m["type"] == "pong" {
                return seen;
            }
            seen.push(m);
        }
        panic!("no pong");
    }
}
