//! A raw HTSP client over loopback and a server on a demo yard, for the
//! conformance tests. Every frame the server sends is checked to use only
//! htsmsg field types 1–5 (what Kodi's decoder accepts).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use htsp::wire::{self, Msg, Value};
use htsp::{Config, HtspContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use yard::Yard;
use yard::access::{Access, AccessConfig, UserConfig};
use yard::dvr::Dvr;
use yard::store::Store;

pub struct Server {
    pub addr: SocketAddr,
    pub yard: Yard,
    pub dvr: Dvr,
    pub ctx: HtspContext,
    pub shutdown: CancellationToken,
}

pub fn users() -> AccessConfig {
    AccessConfig {
        anonymous: false,
        users: vec![UserConfig {
            name: "kodi".into(),
            password: "secret".into(),
            ..UserConfig::default()
        }],
        networks: vec![],
    }
}

pub fn open_access() -> AccessConfig {
    AccessConfig {
        anonymous: true,
        ..users()
    }
}

pub async fn start(dir: &Path, access: AccessConfig) -> Server {
    start_with(Yard::demo_for_tests(dir), dir, access).await
}

pub async fn start_with(yard: Yard, dir: &Path, access: AccessConfig) -> Server {
    let shutdown = CancellationToken::new();
    let store = Store::open_in(dir).unwrap();
    let dvr = Dvr::start(yard.clone(), store, shutdown.clone()).unwrap();
    let ctx = HtspContext::new(
        yard.clone(),
        Some(dvr.clone()),
        Arc::new(Access::new(&access).unwrap()),
        &Config::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(htsp::serve(listener, ctx.clone(), shutdown.clone()));
    Server {
        addr,
        yard,
        dvr,
        ctx,
        shutdown,
    }
}

pub fn m(method: &str) -> Msg {
    Msg::new().with("method", method)
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    seq: u32,
    pub pending: VecDeque<Msg>,
    pub challenge: Vec<u8>,
}

/// Field types 1–5 only, recursively.
pub fn assert_basic_types(mut b: &[u8]) {
    while b.len() > 5 {
        let ty = b[0];
        assert!((1..=5).contains(&ty), "server sent field type {ty}");
        let nl = b[1] as usize;
        let dl = u32::from_be_bytes([b[2], b[3], b[4], b[5]]) as usize;
        if ty == 1 || ty == 5 {
            assert_basic_types(&b[6 + nl..6 + nl + dl]);
        }
        b = &b[6 + nl + dl..];
    }
    assert!(b.is_empty());
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::with_stream(TcpStream::connect(addr).await.unwrap())
    }

    pub fn with_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: BytesMut::new(),
            seq: 0,
            pending: VecDeque::new(),
            challenge: Vec::new(),
        }
    }

    pub async fn send(&mut self, msg: &Msg) {
        self.stream
            .write_all(&wire::encode_frame(msg))
            .await
            .unwrap();
    }

    /// The next frame from the socket (ignoring `pending`), or `None` on
    /// timeout or close.
    pub async fn read(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + len {
                    assert_basic_types(&self.buf[4..4 + len]);
                    return wire::split_outbound_frame(&mut self.buf).unwrap();
                }
            }
            self.buf.reserve(65536);
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Sends with a fresh `seq` and returns the reply; other messages are
    /// kept in `pending`.
    pub async fn request(&mut self, msg: Msg) -> Msg {
        self.seq += 1;
        let seq = self.seq;
        self.send(&msg.with("seq", seq)).await;
        loop {
            let r = self.read(Duration::from_secs(10)).await.expect("reply");
            if r.get_s64("seq") == Some(i64::from(seq)) {
                assert!(!r.contains("method"), "reply with method: {r:?}");
                return r;
            }
            self.pending.push_back(r);
        }
    }

    /// The first message (pending first) satisfying `pred`, within `timeout`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Option<Msg> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.read(left).await?;
            if pred(&msg) {
                return Some(msg);
            }
            self.pending.push_back(msg);
        }
    }

    pub async fn hello(&mut self, version: i64) -> Msg {
        let r = self
            .request(
                m("hello")
                    .with("htspversion", version)
                    .with("clientname", "conformance"),
            )
            .await;
        self.challenge = r.get_bin("challenge").unwrap().to_vec();
        r
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Msg {
        let digest = htsp::session::digest(password, &self.challenge);
        self.request(
            m("authenticate")
                .with("username", user)
                .with("digest", digest.to_vec()),
        )
        .await
    }
}

pub fn method_of(m: &Msg) -> String {
    m.get_str("method").unwrap_or_default()
}

pub fn map(v: &Value) -> &Msg {
    match v {
        Value::Map(m) => m,
        other => panic!("not a map: {other:?}"),
    }
}
