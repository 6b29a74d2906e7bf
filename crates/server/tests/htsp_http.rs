//! The HTTP side of HTSP (reference §10) against the real binary, with HTSP
//! and the web port on loopback and no anonymous access: tickets from
//! `getTicket` (checklist 30: one path, reusable, expiring), the playlist and
//! XMLTV export keyed by the channels' `channelIdStr` (checklist 48), and
//! `/stream/channel/<uuid>`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use htsp::wire::{self, Msg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// A short ticket lifetime, so the expiry is seen within the test's time.
const TICKET_SECS: u64 = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    http: String,
    htsp: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (web, htsp) = (free_port(), free_port());
        let config = format!(
            "[web]\nlisten = \"127.0.0.1:{web}\"\n\n\
             [tv]\ngrace_secs = 0.3\n\n\
             [access]\nanonymous = false\n\
             [[access.users]]\nname = \"kodi\"\npassword = \"secret\"\n\n\
             [htsp]\nlisten = \"127.0.0.1:{htsp}\"\nticket_lifetime_secs = {TICKET_SECS}\n\n\
             [heliostv]\nenabled = false\n\n\
             [movie]\nenabled = false\n\n\
             [galene]\nenabled = false\n\n\
             [owt]\nenabled = false\n"
        );
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--http")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            http: format!("http://127.0.0.1:{web}"),
            htsp: format!("127.0.0.1:{htsp}").parse().unwrap(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let web_up = reqwest::get(server.url("/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200);
            if web_up && TcpStream::connect(server.htsp).await.is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up; its log:\n{}",
                log_of(server.dir.path())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Just enough HTSP: requests with `seq`, replies matched by it.
struct Htsp {
    s: TcpStream,
    buf: BytesMut,
    seq: i64,
    challenge: Vec<u8>,
}

impl Htsp {
    async fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> Htsp {
        let mut c = Htsp {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            seq: 0,
            challenge: Vec::new(),
        };
        let hello = c
            .request(
                Msg::new()
                    .with("method", "hello")
                    .with("htspversion", 38i64)
                    .with("clientname", "http test"),
            )
            .await;
        c.challenge = hello.get_bin("challenge").unwrap().to_vec();
        let digest = htsp::session::digest(password, &c.challenge);
        let auth = c
            .request(
                Msg::new()
                    .with("method", "authenticate")
                    .with("username", user)
                    .with("digest", digest.to_vec()),
            )
            .await;
        assert!(!auth.contains("noaccess"), "{auth:?}");
        c
    }

    async fn request(&mut self, msg: Msg) -> Msg {
        self.seq += 1;
        let seq = self.seq;
        self.s
            .write_all(&wire::encode_frame(&msg.with("seq", seq)))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while let Some(m) = wire::split_outbound_frame(&mut self.buf).unwrap() {
                if m.get_s64("seq") == Some(seq) {
                    return m;
                }
            }
            let n = timeout_at(deadline, self.s.read_buf(&mut self.buf))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    /// `channelAdd` messages of the initial sync.
    async fn channels(&mut self) -> Vec<Msg> {
        let r = self
            .request(Msg::new().with("method", "enableAsyncMetadata"))
            .await;
        assert!(!r.contains("error"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            while let Some(m) = wire::split_outbound_frame(&mut self.buf).unwrap() {
                match m.get_str("method").as_deref() {
                    Some("channelAdd") => out.push(m),
                    Some("initialSyncCompleted") => return out,
                    _ => {}
                }
            }
            let n = timeout_at(deadline, self.s.read_buf(&mut self.buf))
                .await
                .expect("initial sync in time")
                .unwrap();
            assert!(n > 0);
        }
    }
}

/// Status and the first bytes (up to `enough`, within 5 s) of a GET.
async fn get_some(url: &str, enough: usize) -> (u16, Vec<u8>) {
    let mut r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut body = Vec::new();
    while body.len() < enough {
        match timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(b))) => body.extend_from_slice(&b),
            _ => break,
        }
    }
    (status, body)
}

// Checklist 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_open_one_path_repeatedly_until_they_expire() {
    let server = Server::start().await;
    let mut c = Htsp::login(server.htsp, "kodi", "secret").await;
    let r = c
        .request(
            Msg::new()
                .with("method", "getTicket")
                .with("channelId", 1i64),
        )
        .await;
    assert_eq!(r.get_str("path").as_deref(), Some("/stream/channelid/1"));
    let ticket = r.get_str("ticket").unwrap();
    assert_eq!(ticket.len(), 40, "{ticket}");
    assert!(
        ticket
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{ticket}"
    );
    let issued = Instant::now();

    let (status, _) = get_some(&server.url("/stream/channelid/1"), 0).await;
    assert_eq!(status, 401, "no credentials, no ticket");
    let with_ticket = server.url(&format!("/stream/channelid/1?ticket={ticket}"));
    for attempt in 0..2 {
        let (status, ts) = get_some(&with_ticket, 188 * 10).await;
        assert_eq!(status, 200, "use {attempt} of the ticket");
        assert!(ts.len() >= 188 * 10, "use {attempt}: {} bytes", ts.len());
        assert_eq!(ts[0], 0x47);
    }
    assert!(
        issued.elapsed() < Duration::from_secs(TICKET_SECS),
        "the machine is too slow for this test's lifetime"
    );
    let (status, _) = get_some(
        &server.url(&format!("/stream/channelid/2?ticket={ticket}")),
        0,
    )
    .await;
    assert_eq!(status, 401, "a ticket is for one path only");
    let (status, _) = get_some(&server.url(&format!("/dvrfile/1?ticket={ticket}")), 0).await;
    assert_ne!(status, 200, "nor for recordings");
    let (status, _) = get_some(
        &server.url(&format!("/stream/channelid/1?ticket={}", "0".repeat(40))),
        0,
    )
    .await;
    assert_eq!(status, 401, "an unknown ticket");

    // Expired: refused, and Basic credentials still work.
    let expiry = issued + Duration::from_secs(TICKET_SECS) + Duration::from_millis(300);
    tokio::time::sleep_until(expiry).await;
    let (status, _) = get_some(&with_ticket, 0).await;
    assert_eq!(status, 401, "after the ticket's lifetime");
    let r = reqwest::Client::new()
        .get(server.url("/stream/channelid/1"))
        .basic_auth("kodi", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A new ticket works again.
    let r = c
        .request(
            Msg::new()
                .with("method", "getTicket")
                .with("channelId", 1i64),
        )
        .await;
    let fresh = r.get_str("ticket").unwrap();
    assert_ne!(fresh, ticket);
    let (status, _) = get_some(
        &server.url(&format!("/stream/channelid/1?ticket={fresh}")),
        188,
    )
    .await;
    assert_eq!(status, 200);
}

// Checklist 48, and `/stream/channel/<uuid>` (§10.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_and_xmltv_use_the_htsp_channel_uuids() {
    let server = Server::start().await;
    let mut c = Htsp::login(server.htsp, "kodi", "secret").await;
    let adds = c.channels().await;
    assert_eq!(adds.len(), 2);
    let uuids: Vec<(i64, String)> = adds
        .iter()
        .map(|a| {
            (
                a.get_s64("channelId").unwrap(),
                a.get_str("channelIdStr").unwrap(),
            )
        })
        .collect();

    let r = reqwest::Client::new()
        .get(server.url("/playlist/channels"))
        .basic_auth("kodi", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/x-mpegurl");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("#EXTM3U"), "{body}");
    let lines: Vec<&str> = body.lines().collect();
    let extinf: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("#EXTINF"))
        .collect();
    assert_eq!(extinf.len(), 2, "one #EXTINF per channel: {body}");
    for (i, (id, uuid)) in extinf.iter().zip(&uuids) {
        assert!(
            lines[*i].contains(&format!("tvg-id=\"{uuid}\"")),
            "{}",
            lines[*i]
        );
        let url = lines[i + 1];
        assert!(
            url.starts_with(&server.url(&format!("/stream/channelid/{id}"))),
            "{url}"
        );
    }

    let r = reqwest::Client::new()
        .get(server.url("/xmltv/channels"))
        .basic_auth("kodi", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let guide = media::xmltv::parse_xmltv(body.as_bytes());
    let ids: Vec<&str> = guide.channels.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<&str> = uuids.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(ids, want);
    assert!(
        guide
            .programmes
            .iter()
            .all(|p| want.contains(&p.channel.as_str()))
    );
    assert!(!guide.programmes.is_empty());

    // The same channel by its uuid.
    let r = reqwest::Client::new()
        .get(server.url(&format!("/stream/channel/{}", uuids[1].1)))
        .basic_auth("kodi", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(server.url(&format!("/stream/channel/{}", "f".repeat(32))))
        .basic_auth("kodi", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
