//! HeliosTv over real sockets on 127.0.0.1 against a yard with the demo
//! channels: the reference's sequences (§16) and its conformance checklist
//! (§19; item numbers in the test comments).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heliostv::client::{Client, ClientError, DataStream};
use heliostv::wire::{ChangeKind, Decoder, ErrorUri, Limits, Message, Origin, ServiceInfo};
use heliostv::{Config, serve};
use media::psi::{Pat, Pmt, crc32_mpeg2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use yard::Yard;

const ONE: &str = "sah-service://Switchyard%20One";
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    control: SocketAddr,
    data: SocketAddr,
    yard: Yard,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(config: Config) -> Server {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let yard = Yard::demo_for_tests(dir.path());
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (c, d) = (control.local_addr().unwrap(), data.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(control, data, yard.clone(), config, shutdown.clone()));
    Server {
        control: c,
        data: d,
        yard,
        shutdown,
        _dir: dir,
    }
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn bytes_of(m: Message) -> Vec<u8> {
    m.to_bytes()
}

/// A raw connection speaking bytes.
struct Raw {
    s: TcpStream,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s }
    }
    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }
    async fn expect(&mut self, want: &[u8]) {
        let mut got = vec![0; want.len()];
        timeout(WAIT, self.s.read_exact(&mut got))
            .await
            .expect("answer in time")
            .expect("answer");
        assert_eq!(got, want, "got {:02x?}", got);
    }
    async fn expect_msg(&mut self, m: Message) {
        self.expect(&m.to_bytes()).await;
    }
    /// The next message (the connection carries only messages).
    async fn message(&mut self) -> Message {
        let mut d = Decoder::new(Limits::CLIENT);
        let mut b = [0u8; 1];
        loop {
            if let Some(o) = d.next_object().unwrap() {
                return o.into_message(Origin::Server).unwrap();
            }
            let n = timeout(WAIT, self.s.read(&mut b)).await.unwrap().unwrap();
            assert!(n > 0, "closed before a whole message");
            d.push(&b);
        }
    }
    async fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match timeout(WAIT, self.s.read(&mut b))
            .await
            .expect("close in time")
        {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected close, got {:02x?}", &b[..n]),
        }
    }
    async fn hello(addr: SocketAddr, roles: &[&str]) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(&bytes_of(Message::Hello {
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }))
        .await;
        r.expect(&hex("91 02")).await;
        r
    }
    async fn new_service(&mut self, req: u64, uri: &str) -> Message {
        self.send(&bytes_of(Message::NewService {
            request: req,
            resource: uri.into(),
        }))
        .await;
        self.message().await
    }
}

fn token(m: &Message) -> u32 {
    match m {
        Message::Result { args, .. } => heliostv::wire::as_integer(&args[0]).unwrap() as u32,
        other => panic!("not a RESULT: {other:?}"),
    }
}

fn abort(e: ErrorUri) -> Vec<u8> {
    Message::abort(e).to_bytes()
}

// ------------------------------------------------------------ TS helpers

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}
fn pusi(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}
fn cc(p: &[u8]) -> u8 {
    p[3] & 0x0f
}
fn has_payload(p: &[u8]) -> bool {
    p[3] & 0x10 != 0
}
fn payload(p: &[u8]) -> &[u8] {
    match p[3] & 0x30 {
        0x10 => &p[4..],
        0x30 => &p[(5 + p[4] as usize).min(188)..],
        _ => &[],
    }
}
fn random_access(p: &[u8]) -> bool {
    p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x40 != 0
}
/// Whether the packet starts a PES whose payload holds an H.264 IDR or SPS.
fn starts_keyframe(p: &[u8]) -> bool {
    if random_access(p) {
        return true;
    }
    let pl = payload(p);
    pusi(p)
        && pl
            .windows(4)
            .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7))
}
/// The section starting in a PUSI packet (single-packet sections).
fn section(p: &[u8]) -> Vec<u8> {
    let pl = payload(p);
    let start = 1 + pl[0] as usize;
    let len = 3 + ((usize::from(pl[start + 1] & 0x0f) << 8) | usize::from(pl[start + 2]));
    pl[start..start + len].to_vec()
}

fn packets(data: &[u8]) -> Vec<&[u8]> {
    assert_eq!(data.len() % 188, 0, "stream not aligned on 188 bytes");
    let ps: Vec<&[u8]> = data.chunks_exact(188).collect();
    assert!(ps.iter().all(|p| p[0] == 0x47), "packet without sync byte");
    ps
}

/// Per PID, the positions where the continuity counter jumps.
fn cc_jumps(ps: &[&[u8]], watch: &[u16]) -> usize {
    let mut last: HashMap<u16, u8> = HashMap::new();
    let mut jumps = 0;
    for p in ps {
        let id = pid(p);
        if !watch.contains(&id) || !has_payload(p) {
            continue;
        }
        if let Some(l) = last.get(&id)
            && cc(p) != (l + 1) & 0x0f
        {
            jumps += 1;
        }
        last.insert(id, cc(p));
    }
    jumps
}

/// A data connection with a small receive buffer, so a client that stops
/// reading is felt by the server within seconds.
async fn authorize_small(data: SocketAddr, token: u32) -> DataStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let stream = socket.connect(data).await.unwrap();
    DataStream::authorize_on(stream, token).await.unwrap()
}

fn small_buffers() -> Config {
    Config {
        data_send_buffer: 16 * 1024,
        ..Config::default()
    }
}

async fn read_at_least(s: &mut DataStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        let k = timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("data in time")
            .unwrap();
        assert!(k > 0, "data connection closed early");
        out.extend_from_slice(&buf[..k]);
    }
    out
}

/// Whole packets only (a read may end inside one).
fn whole(mut data: Vec<u8>) -> Vec<u8> {
    data.truncate(data.len() - data.len() % 188);
    data
}

async fn read_to_end(s: &mut DataStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout(limit, s.read(&mut buf)).await.expect("end in time") {
            Ok(0) | Err(_) => return out,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
}

// ---------------------------------------------------- transport, framing

// 1: IPv4 and IPv6 listeners, both wildcards on one port (V6ONLY).
#[tokio::test]
async fn listeners_for_ipv4_and_ipv6_share_a_port() {
    let v6 = match heliostv::server::bind("[::1]:0".parse().unwrap()) {
        Ok(l) => l,
        Err(_) => return, // no IPv6 on this machine
    };
    let port = v6.local_addr().unwrap().port();
    let v4 = heliostv::server::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("v4 beside v6 on one port");
    let data = heliostv::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yard = Yard::demo_for_tests(dir.path());
    let shutdown = CancellationToken::new();
    tokio::spawn(heliostv::server::serve_listeners(
        vec![v6, v4],
        vec![data],
        yard,
        Config::default(),
        shutdown.clone(),
    ));
    for addr in [format!("[::1]:{port}"), format!("127.0.0.1:{port}")] {
        Raw::hello(addr.parse().unwrap(), &["player"]).await;
    }
    shutdown.cancel();
}

// 2, 7: one byte per segment, then the exact WELCOME.
#[tokio::test]
async fn one_byte_per_segment() {
    let srv = start(Config::default()).await;
    let mut r = Raw::connect(srv.control).await;
    let mut msgs = hex("92 01 91 a6 70 6c 61 79 65 72");
    msgs.extend(hex(
        "93 07 01 af 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 31",
    ));
    for b in msgs {
        r.send(&[b]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r.expect(&hex("91 02")).await;
    assert!(matches!(
        r.message().await,
        Message::Result { request: 1, .. }
    ));
}

// 3, 6, 5: several messages in one segment, answered in order; extra
// elements ignored; ids in every integer format echoed.
#[tokio::test]
async fn several_messages_in_one_segment() {
    let srv = start(Config::default()).await;
    let mut r = Raw::connect(srv.control).await;
    let mut b = hex("92 01 92 a6 70 6c 61 79 65 72 ac 73 65 72 76 69 63 65 5f 6c 69 73 74");
    // [7, 2 (as uint 16), "sah-service://1", "extra", [1.5]]
    b.extend(hex("95 07 cd 00 02 af 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 31 a5 65 78 74 72 61 91 ca 3f c0 00 00"));
    // [42, 2^64-1]
    b.extend(hex("92 2a cf ff ff ff ff ff ff ff ff"));
    // [9, 5 as int 64]
    b.extend(hex("92 09 d3 00 00 00 00 00 00 00 05"));
    r.send(&b).await;
    r.expect(&hex("91 02")).await;
    assert!(matches!(
        r.message().await,
        Message::Result { request: 2, .. }
    ));
    r.expect_msg(Message::error(u64::MAX, ErrorUri::UnknownMessage))
        .await;
    assert!(matches!(
        r.message().await,
        Message::Result { request: 5, .. }
    ));
}

// 4, §16.16.
#[tokio::test]
async fn oversized_messages_abort() {
    let srv = start(Config::default()).await;
    let mut r = Raw::hello(srv.control, &["player"]).await;
    r.send(&hex("93 07 01 db 00 01 00 00")).await;
    r.expect(&abort(ErrorUri::InvalidMessage)).await;
    r.expect_closed().await;

    // 64 KiB buffered without a complete object.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    let mut b = hex("dc ff fd");
    b.extend([0xcc, 0x01].repeat(40_000));
    let _ = r.s.write_all(&b).await;
    r.expect(&abort(ErrorUri::InvalidMessage)).await;
    r.expect_closed().await;
}

// 8, 9.
#[tokio::test]
async fn role_lists_over_the_wire() {
    let srv = start(Config::default()).await;
    Raw::hello(srv.control, &["recorder", "section", "service_list"]).await;
    for b in [
        "92 01 92 a6 70 6c 61 79 65 72 a8 72 65 63 6f 72 64 65 72",
        "92 01 90",
        "92 01 91 a6 76 69 65 77 65 72",
    ] {
        let mut r = Raw::connect(srv.control).await;
        r.send(&hex(b)).await;
        r.expect(&abort(ErrorUri::InvalidRole)).await;
        r.expect_closed().await;
    }
    let mut r = Raw::connect(srv.control).await;
    r.send(&hex("92 01 91 05")).await;
    r.expect(&abort(ErrorUri::InvalidMessage)).await;
    r.expect_closed().await;
}

// 10, 11, 12, 13, 14, 15, 17; §16.5–§16.8, §15.10.
#[tokio::test]
async fn wrong_messages_on_the_control_connection() {
    let srv = start(Config::default()).await;
    let unexpected = abort(ErrorUri::UnexpectedMessage);
    // Before HELLO.
    for b in [
        "93 07 01 af 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 31",
        "91 02",
    ] {
        let mut r = Raw::connect(srv.control).await;
        r.send(&hex(b)).await;
        r.expect(&unexpected).await;
        r.expect_closed().await;
    }
    let mut r = Raw::connect(srv.control).await;
    r.send(&hex("91 00")).await;
    r.expect(&abort(ErrorUri::InvalidMessage)).await;
    r.expect_closed().await;
    // Server messages from a client.
    for b in ["91 02", "93 04 01 90", "93 06 01 a1 78"] {
        let mut r = Raw::hello(srv.control, &["player"]).await;
        r.send(&hex(b)).await;
        r.expect(&unexpected).await;
        r.expect_closed().await;
    }
    // Errors that keep the session, then [7] that ends it.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    r.send(&hex("92 2a 0c")).await;
    r.expect_msg(Message::error(12, ErrorUri::UnknownMessage))
        .await;
    r.send(&hex("93 07 07 2a")).await;
    r.expect_msg(Message::error(7, ErrorUri::InvalidMessage))
        .await;
    r.send(&hex("93 05 03 01")).await;
    r.expect_msg(Message::error(3, ErrorUri::UnexpectedMessage))
        .await;
    let t = token(&r.new_service(8, ONE).await);
    r.send(&hex("91 07")).await;
    r.expect(&abort(ErrorUri::InvalidMessage)).await;
    r.expect_closed().await;
    // The session's entries are gone with it.
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 1,
        token: t.into(),
    }))
    .await;
    d.expect_msg(Message::error(1, ErrorUri::InvalidToken))
        .await;

    // Second HELLO deletes the session's entries.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    let t = token(&r.new_service(1, ONE).await);
    r.send(&hex("92 01 91 a6 70 6c 61 79 65 72")).await;
    r.expect(&unexpected).await;
    r.expect_closed().await;
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 2,
        token: t.into(),
    }))
    .await;
    d.expect_msg(Message::error(2, ErrorUri::InvalidToken))
        .await;

    // ABORT from the client: closed, nothing sent.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    r.send(&abort(ErrorUri::Shutdown)).await;
    r.expect_closed().await;
}

// 16.
#[tokio::test]
async fn silence_closes_connections() {
    let config = Config {
        hello_timeout_ms: 300,
        authorize_timeout_ms: 300,
        ..Config::default()
    };
    let srv = start(config).await;
    let mut c = Raw::connect(srv.control).await;
    c.send(&hex("92 01")).await; // incomplete
    c.expect_closed().await;
    let mut d = Raw::connect(srv.data).await;
    d.expect_closed().await;
    // Once open, a session may stay idle.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        r.new_service(1, ONE).await,
        Message::Result { .. }
    ));
}

// 18.
#[tokio::test]
async fn session_limit() {
    let srv = start(Config {
        max_sessions: 1,
        ..Config::default()
    })
    .await;
    let mut first = Raw::hello(srv.control, &["player"]).await;
    let mut r = Raw::connect(srv.control).await;
    r.send(&hex("92 01 91 a6 70 6c 61 79 65 72")).await;
    r.expect(&abort(ErrorUri::LimitExceeded)).await;
    r.expect_closed().await;
    first.send(&abort(ErrorUri::Shutdown)).await;
    first.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Raw::hello(srv.control, &["player"]).await;
}

// 19, 20, 21, 22, 24; §16.2, §16.9, §16.11.
#[tokio::test]
async fn new_service_answers() {
    let srv = start(Config::default()).await;
    let mut r = Raw::hello(srv.control, &["player"]).await;
    r.send(&hex(
        "93 07 01 b6 73 61 68 2d 73 65 72 76 69 63 65 3a 2f 2f 43 68 61 6e 6e 65 6c 31",
    ))
    .await;
    r.expect_msg(Message::error(1, ErrorUri::InvalidUri)).await; // no Channel1 in the demo
    for (i, uri) in [
        ONE,
        "sah-service://switchyard%20one",
        "sah-service://1",
        "sah-service://id:1",
    ]
    .iter()
    .enumerate()
    {
        let t = token(&r.new_service(10 + i as u64, uri).await);
        assert!((1..=0x7fff_ffff).contains(&t));
    }
    for uri in [
        "http://host/Channel1",
        "sah-service://Switchyard%2",
        "sah-service://1#x",
        "sah-service://1?x=1",
    ] {
        assert_eq!(
            r.new_service(20, uri).await,
            Message::error(20, ErrorUri::InvalidUri),
            "{uri}"
        );
    }
    assert_eq!(
        r.new_service(21, "sah-service://1?data=sections").await,
        Message::error(21, ErrorUri::InvalidRole)
    );
    for i in 5..=16 {
        assert!(matches!(
            r.new_service(30 + i, ONE).await,
            Message::Result { .. }
        ));
    }
    r.send(&bytes_of(Message::NewService {
        request: 17,
        resource: ONE.into(),
    }))
    .await;
    r.expect(&hex("93 06 11 bd 68 65 6c 69 6f 73 74 76 2e 65 72 72 6f 72 2e 6c 69 6d 69 74 5f 65 78 63 65 65 64 65 64"))
        .await;

    let mut sl = Raw::hello(srv.control, &["service_list"]).await;
    assert_eq!(
        sl.new_service(2, ONE).await,
        Message::error(2, ErrorUri::InvalidRole)
    );
}

// 28, 31, 32, 33; §16.1 (start of a player stream).
#[tokio::test]
async fn player_stream_starts_with_pat_pmt_and_a_keyframe() {
    let srv = start(Config::default()).await;
    let mut r = Raw::hello(srv.control, &["player"]).await;
    let t = token(&r.new_service(1, ONE).await);
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 3,
        token: t.into(),
    }))
    .await;
    d.expect(&hex("93 04 03 90")).await;
    let mut data = vec![0u8; 188 * 600];
    timeout(Duration::from_secs(10), d.s.read_exact(&mut data))
        .await
        .unwrap()
        .unwrap();
    let ps = packets(&data);

    // The rewritten PAT first: one program, the input's TSID, a good CRC.
    assert_eq!(pid(ps[0]), 0);
    let pat_section = section(ps[0]);
    assert_eq!(crc32_mpeg2(&pat_section), 0);
    let pat = Pat::parse(&pat_section).unwrap();
    assert_eq!(pat.programs.len(), 1);
    assert_eq!(pat.transport_stream_id, 1);
    let (program, pmt_pid) = pat.programs[0];
    assert_eq!((program, pmt_pid), (1, 0x1000));
    // Then the PMT, then a random access point.
    assert_eq!(pid(ps[1]), pmt_pid);
    let pmt = Pmt::parse(&section(ps[1])).unwrap();
    let es: Vec<u16> = pmt.streams.iter().map(|s| s.pid).collect();
    let video = pmt
        .streams
        .iter()
        .find(|s| s.stream_type == 0x1b)
        .unwrap()
        .pid;
    let first_media = ps
        .iter()
        .skip(2)
        .find(|p| pid(p) != 0 && pid(p) != pmt_pid)
        .unwrap();
    assert_eq!(pid(first_media), video);
    assert!(
        starts_keyframe(first_media),
        "stream does not start at a keyframe"
    );

    // Only PID 0, the PMT, the PCR and the elementary streams.
    let allowed: HashSet<u16> = [0, pmt_pid, pmt.pcr_pid]
        .into_iter()
        .chain(es.iter().copied())
        .collect();
    assert!(
        ps.iter().all(|p| allowed.contains(&pid(p))),
        "unexpected PID"
    );
    // Media packets are the input's, byte for byte (the first loop).
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../demo/channel-1.ts"
    ))
    .unwrap();
    let input: HashSet<&[u8]> = input.chunks_exact(188).collect();
    let media: Vec<&&[u8]> = ps.iter().filter(|p| es.contains(&pid(p))).collect();
    assert!(media.len() > 400);
    assert!(
        media.iter().all(|p| input.contains(**p)),
        "a media packet differs from the input"
    );
}

// 29, 30; §16.3, §14.
#[tokio::test]
async fn invalid_tokens_and_wrong_first_messages_on_the_data_port() {
    let srv = start(Config {
        token_lifetime_ms: 300,
        ..Config::default()
    })
    .await;
    let invalid = Message::error(3, ErrorUri::InvalidToken);
    // Unknown.
    let mut d = Raw::connect(srv.data).await;
    d.send(&hex("93 05 03 ce 00 06 79 32")).await;
    d.expect(&hex(
        "93 06 03 bc 68 65 6c 69 6f 73 74 76 2e 65 72 72 6f 72 2e 69 6e 76 61 6c 69 64 5f 74 6f 6b 65 6e",
    ))
    .await;
    d.expect_closed().await;
    // Used once already.
    let mut r = Raw::hello(srv.control, &["player"]).await;
    let t = token(&r.new_service(1, ONE).await);
    let _first = DataStream::authorize(srv.data, t).await.unwrap();
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 3,
        token: t.into(),
    }))
    .await;
    d.expect_msg(invalid.clone()).await;
    d.expect_closed().await;
    // Expired; DEL_SERVICE still answers RESULT.
    let t = token(&r.new_service(2, ONE).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 3,
        token: t.into(),
    }))
    .await;
    d.expect_msg(invalid.clone()).await;
    r.send(&bytes_of(Message::DelService {
        request: 4,
        token: t.into(),
    }))
    .await;
    r.expect(&hex("93 04 04 90")).await;
    // Another session's token is unknown to DEL_SERVICE (§16.10).
    let mut other = Raw::hello(srv.control, &["player"]).await;
    let foreign = token(&other.new_service(1, ONE).await);
    r.send(&bytes_of(Message::DelService {
        request: 4,
        token: foreign.into(),
    }))
    .await;
    r.expect_msg(Message::error(4, ErrorUri::InvalidToken))
        .await;
    // Session ended.
    other.send(&abort(ErrorUri::Shutdown)).await;
    other.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = Raw::connect(srv.data).await;
    d.send(&bytes_of(Message::Authorize {
        request: 3,
        token: foreign.into(),
    }))
    .await;
    d.expect_msg(invalid).await;

    // Not AUTHORIZE first: the 2015 data request, and a HELLO.
    for b in [
        "93 01 ce 00 06 79 32 a3 54 46 31",
        "92 01 91 a6 70 6c 61 79 65 72",
    ] {
        let mut d = Raw::connect(srv.data).await;
        d.send(&hex(b)).await;
        d.expect(&abort(ErrorUri::UnexpectedMessage)).await;
        d.expect_closed().await;
    }
}

// 25, 26; §16.1 end.
#[tokio::test]
async fn del_service_closes_the_data_connection_before_answering() {
    let srv = start(Config::default()).await;
    let mut client = Client::connect(srv.control, &["player"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut data = DataStream::authorize(srv.data, t).await.unwrap();
    read_at_least(&mut data, 188 * 10).await;
    client.del_service(t).await.unwrap();
    // Once RESULT is in, the data connection is closed: only bytes in flight remain.
    let rest = read_to_end(&mut data, Duration::from_secs(2)).await;
    assert!(rest.len() < 8 << 20);
    assert!(
        matches!(client.del_service(t).await, Err(ClientError::Refused(u)) if u == ErrorUri::InvalidToken.as_str())
    );
}

// 27; §16.12.
#[tokio::test]
async fn closing_the_control_connection_closes_its_data_connections() {
    let srv = start(Config::default()).await;
    let mut client = Client::connect(srv.control, &["player"]).await.unwrap();
    let a = client.new_service(ONE).await.unwrap();
    let b = client.new_service("sah-service://2").await.unwrap();
    let mut data = DataStream::authorize(srv.data, a).await.unwrap();
    read_at_least(&mut data, 188 * 10).await;
    drop(client);
    read_to_end(&mut data, Duration::from_secs(3)).await;
    assert!(matches!(
        DataStream::authorize(srv.data, b).await,
        Err(ClientError::Refused(_))
    ));
}

// 34.
#[tokio::test]
async fn sections_connection_carries_each_section_once() {
    let srv = start(Config::default()).await;
    let mut client = Client::connect(srv.control, &["section"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut s = DataStream::authorize(srv.data, t).await.unwrap();
    let mut seen: HashMap<(u8, u16, u8), Vec<u8>> = HashMap::new();
    let mut order = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(next) = tokio::time::timeout_at(deadline, s.next_section()).await {
        let sec = next.unwrap().expect("connection open");
        assert_eq!(crc32_mpeg2(&sec), 0, "bad CRC");
        let (h, _) = media::psi::parse_long_section(&sec).unwrap();
        assert!(matches!(
            h.table_id,
            0x00 | 0x02 | 0x42 | 0x4e | 0x50..=0x5f
        ));
        let key = (h.table_id, h.table_id_extension, h.section_number);
        assert_ne!(seen.get(&key), Some(&sec), "unchanged section repeated");
        seen.insert(key, sec);
        order.push(h.table_id);
    }
    assert_eq!(&order[..2], &[0x00, 0x02], "PAT then PMT first: {order:?}");
    assert!(order.contains(&0x42), "no SDT in {order:?}");
    let pat = Pat::parse(&seen[&(0, 1, 0)]).unwrap();
    assert_eq!(pat.programs.len(), 1);

    // tables=pmt only, through a section-only session's plain URI form.
    let t = client
        .new_service("sah-service://1?data=sections&tables=pmt")
        .await
        .unwrap();
    let mut s = DataStream::authorize(srv.data, t).await.unwrap();
    let first = timeout(WAIT, s.next_section())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first[0], 0x02);
    assert!(
        timeout(Duration::from_millis(1500), s.next_section())
            .await
            .is_err(),
        "PMT repeated or other table"
    );
}

// 35: a player that stops reading loses whole groups of pictures, and
// resumes with PAT, PMT and a keyframe, still aligned.
#[tokio::test]
async fn slow_player_skips_to_the_next_keyframe() {
    let config = Config {
        player_queue_limit: 64 * 1024,
        ..small_buffers()
    };
    let srv = start(config).await;
    let mut client = Client::connect(srv.control, &["player"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut data = authorize_small(srv.data, t).await;
    let head = read_at_least(&mut data, 188 * 50).await;
    let pmt_pid = Pat::parse(&section(&head[..188])).unwrap().programs[0].1;
    // Stop reading for a while: the socket buffers fill, then the yard's
    // queue, which then drops.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut all = head;
    all.extend(read_at_least(&mut data, 188 * 4000).await);
    let all = whole(all);
    let ps = packets(&all);
    assert!(cc_jumps(&ps, &[0x100, 0x101]) > 0, "nothing was dropped");
    // Every jump in the video is preceded by PAT and PMT and lands on a keyframe.
    let mut last_cc: Option<u8> = None;
    for (i, p) in ps.iter().enumerate() {
        if pid(p) != 0x100 || !has_payload(p) {
            continue;
        }
        if let Some(l) = last_cc
            && cc(p) != (l + 1) & 0x0f
        {
            assert!(
                starts_keyframe(p),
                "resumed without a keyframe at packet {i}"
            );
            let before: Vec<u16> = ps[..i].iter().rev().take(8).map(|p| pid(p)).collect();
            assert!(
                before.contains(&0) && before.contains(&pmt_pid),
                "no PAT/PMT before resuming: {before:?}"
            );
        }
        last_cc = Some(cc(p));
    }
}

/// Collects log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// 36: a recorder that stops reading gets a gap-free prefix, cut at a
// packet boundary, with a warning naming the reason.
#[tokio::test]
async fn slow_recorder_is_cut_loudly_never_with_a_hole() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let config = Config {
        recorder_queue_limit: 64 * 1024,
        ..small_buffers()
    };
    let srv = start(config).await;
    let mut client = Client::connect(srv.control, &["recorder"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut data = authorize_small(srv.data, t).await;
    let mut all = read_at_least(&mut data, 188 * 50).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    all.extend(read_to_end(&mut data, Duration::from_secs(10)).await);
    let ps = packets(&all);
    assert_eq!(
        cc_jumps(&ps, &[0x100, 0x101]),
        0,
        "the recording has a hole"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN") && text.contains("recorder cut"),
        "no warning logged:\n{text}"
    );
    // The entry is ENDED, not deleted.
    client.del_service(t).await.unwrap();
}

// Two players and a recorder on one service; the slow player drops, the
// recorder and the fast player lose nothing.
#[tokio::test]
async fn two_players_and_a_recorder_at_once() {
    let config = Config {
        player_queue_limit: 64 * 1024,
        ..small_buffers()
    };
    let srv = start(config).await;
    let mut players = Client::connect(srv.control, &["player"]).await.unwrap();
    let mut recorders = Client::connect(srv.control, &["recorder"]).await.unwrap();
    let fast = players.new_service(ONE).await.unwrap();
    let slow = players.new_service(ONE).await.unwrap();
    let rec = recorders.new_service(ONE).await.unwrap();
    let fast = DataStream::authorize(srv.data, fast).await.unwrap();
    let mut slow = authorize_small(srv.data, slow).await;
    let rec = DataStream::authorize(srv.data, rec).await.unwrap();
    let read_for = |mut s: DataStream, secs: u64| async move {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Ok(n)) = tokio::time::timeout_at(end, s.read(&mut buf)).await {
            assert!(n > 0, "closed");
            out.extend_from_slice(&buf[..n]);
        }
        out.truncate(out.len() - out.len() % 188);
        (out, s)
    };
    let fast_task = tokio::spawn(read_for(fast, 8));
    let rec_task = tokio::spawn(read_for(rec, 8));
    let head = read_at_least(&mut slow, 188 * 20).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut slow_all = head;
    slow_all.extend(read_at_least(&mut slow, 188 * 2000).await);
    let slow_all = whole(slow_all);
    let (fast_all, _f) = fast_task.await.unwrap();
    let (rec_all, _r) = rec_task.await.unwrap();
    assert_eq!(
        cc_jumps(&packets(&rec_all), &[0x100, 0x101]),
        0,
        "recorder lost data"
    );
    assert_eq!(
        cc_jumps(&packets(&fast_all), &[0x100, 0x101]),
        0,
        "fast player lost data"
    );
    assert!(
        cc_jumps(&packets(&slow_all), &[0x100, 0x101]) > 0,
        "slow player did not drop"
    );
    assert!(rec_all.len() > 188 * 3000);
}

// A recording of a demo service is a file ffprobe reads as one program
// with H.264 and AAC.
#[tokio::test]
async fn recorded_file_is_one_program_of_h264_and_aac() {
    let srv = start(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.ts");
    let summary = heliostv::client::record(
        srv.control,
        srv.data,
        ONE,
        &path,
        Some(Duration::from_secs(3)),
        false,
    )
    .await
    .unwrap();
    assert!(!summary.cut);
    assert!(summary.bytes > 100_000, "{summary}");
    assert_eq!(summary.bytes % 188, 0);
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_programs",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let programs = json["programs"].as_array().unwrap();
    assert_eq!(programs.len(), 1, "{json}");
    let codecs: Vec<&str> = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{codecs:?}"
    );
    assert_eq!(codecs.len(), 2);
}

// 37, 38, 39; §16.15.
#[tokio::test]
async fn services_snapshot_and_change_notifications() {
    let srv = start(Config::default()).await;
    let mut p = Raw::hello(srv.control, &["player"]).await;
    p.send(&hex("92 09 05")).await;
    p.expect_msg(Message::error(5, ErrorUri::InvalidRole)).await;

    let mut r = Raw::hello(srv.control, &["player", "service_list"]).await;
    r.send(&hex("92 09 05")).await;
    let Message::Result { request: 5, args } = r.message().await else {
        panic!()
    };
    assert_eq!(args.len(), 2);
    let mut services = Vec::new();
    for v in &args {
        let map = v.as_map().unwrap();
        assert_eq!(map.len(), 7);
        let s = ServiceInfo::from_value(v).unwrap();
        services.push(s);
    }
    assert_eq!(services[0].name, "Switchyard One");
    assert_eq!(services[0].uri, ONE);
    assert_eq!(services[0].number, 1);
    assert_eq!(services[1].uri, "sah-service://Switchyard%20Two");
    assert!(services[0].tags.contains(&"Demo".to_string()));
    for (i, s) in services.iter().enumerate() {
        assert!(
            matches!(
                r.new_service(10 + i as u64, &s.uri).await,
                Message::Result { .. }
            ),
            "{}",
            s.uri
        );
    }

    // A channel added at run time.
    let input = yard::InputConfig {
        url: concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/channel-2.ts").into(),
        name: Some("Radio One".into()),
        ..Default::default()
    };
    let tv = yard::TvConfig {
        demo: false,
        inputs: vec![input],
        ..Default::default()
    };
    let errors = srv.yard.load(&tv).await;
    assert!(errors.is_empty(), "{errors:?}");
    let change = loop {
        let m = timeout(WAIT, r.message()).await.unwrap();
        let Message::ServicesChanged {
            request: 5,
            changes,
        } = m
        else {
            panic!("{m:?}")
        };
        let changes: Vec<_> = changes
            .iter()
            .filter_map(heliostv::wire::ServiceChange::from_value)
            .collect();
        if let Some(c) = changes.into_iter().find(|c| c.service.name == "Radio One") {
            break c;
        }
    };
    assert_eq!(change.kind, ChangeKind::Added);
    assert_eq!(change.service.uri, "sah-service://Radio%20One");

    // A player learning a channel's streams shows as an update.
    let mut client = Client::connect(srv.control, &["player", "service_list"])
        .await
        .unwrap();
    let before = client.services().await.unwrap();
    let two = before.iter().find(|s| s.name == "Switchyard Two").unwrap();
    assert!(!two.has_video);
    let t = client.new_service(&two.uri).await.unwrap();
    let mut data = DataStream::authorize(srv.data, t).await.unwrap();
    read_at_least(&mut data, 188).await;
    let updated = loop {
        let changes = timeout(WAIT, client.next_changes()).await.unwrap().unwrap();
        if let Some(c) = changes
            .into_iter()
            .find(|c| c.service.name == "Switchyard Two" && c.service.has_video)
        {
            break c;
        }
    };
    assert_eq!(updated.kind, ChangeKind::Updated);
    assert!(updated.service.has_audio);
}

// 40: garbage on both listeners never disturbs another connection.
#[tokio::test]
async fn random_bytes_never_disturb_other_connections() {
    use rand::{Rng, SeedableRng};
    let srv = start(Config::default()).await;
    let mut good = Client::connect(srv.control, &["player"]).await.unwrap();
    let t = good.new_service(ONE).await.unwrap();
    let mut data = DataStream::authorize(srv.data, t).await.unwrap();
    read_at_least(&mut data, 188 * 10).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(40);
    for i in 0..60 {
        let addr = if i % 2 == 0 { srv.control } else { srv.data };
        let mut r = Raw::connect(addr).await;
        let len = rng.random_range(1..600);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 3 == 0 {
            // A valid HELLO first, so garbage reaches the open-session rules.
            let mut b = hex("92 01 91 a6 70 6c 61 79 65 72");
            b.append(&mut junk);
            junk = b;
        }
        let _ = r.s.write_all(&junk).await;
        drop(r);
    }
    // Truncated messages, then a hang-up.
    for b in ["93 07", "92 01 91 a6 70 6c", "93 05 03 ce 00"] {
        let mut r = Raw::connect(srv.data).await;
        r.send(&hex(b)).await;
    }
    assert!(good.new_service(ONE).await.is_ok());
    read_at_least(&mut data, 188 * 100).await;
}

// The people-facing `list` command.
#[tokio::test]
async fn list_command_prints_the_services() {
    let srv = start(Config::default()).await;
    let cli = heliostv::client::Cli {
        host: "127.0.0.1".into(),
        control_port: srv.control.port(),
        data_port: srv.data.port(),
        command: heliostv::client::Command::List { follow: false },
    };
    let mut out = Vec::new();
    heliostv::client::run_with_output(cli, &mut out, false)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Switchyard One") && text.contains(ONE),
        "{text}"
    );
    assert!(text.contains("Switchyard Two"));

    let cli = heliostv::client::Cli {
        host: "127.0.0.1".into(),
        control_port: srv.control.port(),
        data_port: srv.data.port(),
        command: heliostv::client::Command::Sections {
            service: "1".into(),
            tables: None,
            count: Some(2),
            hex: true,
        },
    };
    let mut out = Vec::new();
    heliostv::client::run_with_output(cli, &mut out, false)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("PAT"), "{text}");
    assert!(text.contains("PMT"));
}

// 36, the stall half: a recorder whose socket accepts nothing for the
// stall timeout is cut with a warning, and what it got has no hole.
#[tokio::test]
async fn stalled_recorder_is_cut_loudly() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let config = Config {
        recorder_stall_timeout_ms: 1000,
        ..small_buffers()
    };
    let srv = start(config).await;
    let mut client = Client::connect(srv.control, &["recorder"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut data = authorize_small(srv.data, t).await;
    let mut all = read_at_least(&mut data, 188 * 50).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    all.extend(read_to_end(&mut data, Duration::from_secs(10)).await);
    let all = whole(all);
    assert_eq!(
        cc_jumps(&packets(&all), &[0x100, 0x101]),
        0,
        "the recording has a hole"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN") && text.contains("recorder cut: stalled"),
        "no warning logged:\n{text}"
    );
}

// Shutting down ends every session with ABORT shutdown and closes streams.
#[tokio::test]
async fn shutdown_aborts_sessions() {
    let srv = start(Config::default()).await;
    let mut r = Raw::hello(srv.control, &["player"]).await;
    let mut client = Client::connect(srv.control, &["player"]).await.unwrap();
    let t = client.new_service(ONE).await.unwrap();
    let mut data = DataStream::authorize(srv.data, t).await.unwrap();
    read_at_least(&mut data, 188).await;
    srv.shutdown.cancel();
    r.expect(&hex(
        "92 03 b7 68 65 6c 69 6f 73 74 76 2e 65 72 72 6f 72 2e 73 68 75 74 64 6f 77 6e",
    ))
    .await;
    r.expect_closed().await;
    read_to_end(&mut data, Duration::from_secs(3)).await;
}

// A client that sends requests but never reads the answers is closed once
// the unsent answers pass the control queue limit (§6.4).
#[tokio::test]
async fn control_client_not_reading_is_closed() {
    let srv = start(Config {
        control_queue_limit: 16 * 1024,
        ..Config::default()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let mut s = socket.connect(srv.control).await.unwrap();
    s.write_all(&hex(
        "92 01 92 a6 70 6c 61 79 65 72 ac 73 65 72 76 69 63 65 5f 6c 69 73 74",
    ))
    .await
    .unwrap();
    let mut requests = Vec::new();
    for i in 0..5000u64 {
        Message::Services { request: i + 1 }.encode(&mut requests);
    }
    // The server may stop reading once it closes; a failed write is fine.
    let _ = timeout(WAIT, s.write_all(&requests)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout(WAIT, s.read(&mut buf))
            .await
            .expect("closed in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let mut probe = Raw::hello(srv.control, &["service_list"]).await;
    probe.send(&hex("92 09 01")).await;
    let one_answer = probe.message().await.to_bytes().len();
    assert!(
        got < 5000 * one_answer / 2,
        "the server queued every answer ({got} bytes)"
    );
}

/// Waits (bounded) for a notification with a change for service `name`.
async fn change_for(client: &mut Client, name: &str) -> heliostv::wire::ServiceChange {
    timeout(Duration::from_secs(10), async {
        loop {
            let changes = client.next_changes().await.unwrap();
            if let Some(c) = changes.into_iter().find(|c| c.service.name == name) {
                return c;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no change for {name}"))
}

// 37, 39; §11.2 (has_video/has_audio from the programme the yard knows,
// whoever read it), §11.3 (removed: the last description).
#[tokio::test]
async fn service_list_follows_programmes_additions_and_removals() {
    let srv = start(Config::default()).await;
    let mut client = Client::connect(srv.control, &["service_list"])
        .await
        .unwrap();
    let before = client.services().await.unwrap();
    let two = before
        .iter()
        .find(|s| s.name == "Switchyard Two")
        .unwrap()
        .clone();
    assert!(!two.has_video && !two.has_audio, "no PMT seen yet: {two:?}");

    // Another front end (here a plain yard reader) plays the channel: its
    // PMT shows up in the list although no HeliosTv reader saw it.
    let mut reader = srv
        .yard
        .subscribe(2, yard::ReaderOptions::frames("other front end"))
        .unwrap();
    let updated = change_for(&mut client, "Switchyard Two").await;
    assert_eq!(updated.kind, ChangeKind::Updated);
    assert!(updated.service.has_video && updated.service.has_audio);
    drop(reader.recv().await);

    // An audio-only input added at run time: probed, so its streams are
    // known in the `added` notification already.
    let tv = yard::TvConfig {
        demo: false,
        inputs: vec![yard::InputConfig {
            url: concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/radio.ts").into(),
            number: Some(7),
            ..Default::default()
        }],
        ..Default::default()
    };
    let errors = srv.yard.load(&tv).await;
    assert!(errors.is_empty(), "{errors:?}");
    let added = change_for(&mut client, "Switchyard Radio").await;
    assert_eq!(added.kind, ChangeKind::Added);
    assert!(
        added.service.has_audio && !added.service.has_video,
        "{added:?}"
    );
    assert_eq!(added.service.number, 7);
    assert_eq!(added.service.uri, "sah-service://Switchyard%20Radio");
    let now = client.services().await.unwrap();
    let radio = now.iter().find(|s| s.name == "Switchyard Radio").unwrap();
    assert!(radio.has_audio && !radio.has_video);

    // A player on channel Two, then the channel is removed: the player's
    // data connection ends and the list says `removed` with the last
    // description (matched by uri).
    let mut player = Client::connect(srv.control, &["player"]).await.unwrap();
    let t = player.new_service(&two.uri).await.unwrap();
    let mut data = DataStream::authorize(srv.data, t).await.unwrap();
    let first = read_at_least(&mut data, 188).await;
    drop(reader);
    assert!(srv.yard.remove_channel(2));
    let removed = change_for(&mut client, "Switchyard Two").await;
    assert_eq!(removed.kind, ChangeKind::Removed);
    assert_eq!(removed.service.uri, two.uri);
    assert!(
        removed.service.has_video,
        "the last description: {removed:?}"
    );
    let rest = read_to_end(&mut data, Duration::from_secs(5)).await;
    assert_eq!(
        (first.len() + rest.len()) % 188,
        0,
        "ends at a packet boundary"
    );
    let after = client.services().await.unwrap();
    assert!(
        after.iter().all(|s| s.name != "Switchyard Two"),
        "{after:?}"
    );
    assert_eq!(after.len(), 2);
    // The removed service can no longer be requested.
    let mut raw = Raw::hello(srv.control, &["player"]).await;
    assert_eq!(
        raw.new_service(3, &two.uri).await,
        Message::error(3, ErrorUri::InvalidUri)
    );
}
