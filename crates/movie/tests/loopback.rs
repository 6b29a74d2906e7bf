//! The server and clients over real UDP sockets on 127.0.0.1, with the
//! fault-injecting socket where loss, duplication or reordering is needed.
//! Timers are shortened through the configuration so that each scenario
//! takes a second or two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use movie::client::{self, Command, DatagramSocket, JoinArgs, LeadArgs};
use movie::client_session::{
    ClientEvent, ClientParams, ClientSession, ClientTimers, MovieSelector, Outcome, Role,
};
use movie::fault::{Fate, FaultySocket, Way};
use movie::wire::{self, EndReason};
use movie::{Config, MovieLibrary, server};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn movie_bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + i / 1316) as u8).wrapping_add(salt))
        .collect()
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), server::Error>>,
    _dir: tempfile::TempDir,
    movies: Vec<(String, Vec<u8>)>,
}

/// A server on 127.0.0.1 with two movies: `a.ts` in its folder and the
/// embedded `demo.bin`.
async fn start(config: Config) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let a = movie_bytes(400 * 1316 + 17, 1);
    let demo = movie_bytes(250 * 1316, 2);
    std::fs::write(dir.path().join("a.ts"), &a).unwrap();
    let mut library = MovieLibrary::with_folder(dir.path()).unwrap();
    library.add_embedded("demo.bin", Bytes::from(demo.clone()));
    let sockets = server::bind_listen(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server::serve_on(sockets, config, library, stop.clone()));
    Server {
        addr,
        stop,
        task,
        _dir: dir,
        movies: vec![("a.ts".into(), a), ("demo.bin".into(), demo)],
    }
}

fn quick() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        registration_window: Duration::from_millis(1_000),
        default_interval_us: 2_000,
        min_interval_us: 1_000,
        ..Config::default()
    }
}

struct Running {
    task: JoinHandle<ClientSession>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    commands: mpsc::UnboundedSender<Command>,
    file: Arc<std::sync::Mutex<Vec<u8>>>,
    addr: SocketAddr,
}

fn spawn<S: DatagramSocket + 'static>(sock: S, role: Role) -> Running {
    let addr = sock.local_addr().unwrap();
    let (etx, events) = mpsc::unbounded_channel();
    let (commands, mut crx) = mpsc::unbounded_channel();
    let file: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let sink = file.clone();
    let params = ClientParams {
        role,
        interval_us: 0,
        timers: ClientTimers::default(),
    };
    let task = tokio::spawn(async move {
        let session = ClientSession::new(params, tokio::time::Instant::now().into_std());
        client::drive(&sock, session, &mut crx, move |_, e| {
            if let ClientEvent::Data { offset, data, .. } = &e {
                let mut f = sink.lock().unwrap();
                let end = *offset as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*offset as usize..end].copy_from_slice(data);
            }
            let _ = etx.send(e);
        })
        .await
    });
    Running {
        task,
        events,
        commands,
        file,
        addr,
    }
}

async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn leader_role(server: SocketAddr, movie: MovieSelector) -> Role {
    Role::Leader {
        server,
        requested_port: 0,
        movie,
    }
}

/// Waits for an event matching `f`, returning it.
async fn wait_for<T>(r: &mut Running, mut f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = r
                .events
                .recv()
                .await
                .expect("client ended before the event");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    })
    .await
    .expect("event did not come in time")
}

async fn session_addr(r: &mut Running) -> SocketAddr {
    wait_for(r, |e| match e {
        ClientEvent::SessionReady(a) => Some(*a),
        _ => None,
    })
    .await
}

async fn finish(r: Running) -> (ClientSession, Vec<u8>) {
    let s = tokio::time::timeout(Duration::from_secs(30), r.task)
        .await
        .expect("client finished")
        .unwrap();
    let f = r.file.lock().unwrap().clone();
    (s, f)
}

#[tokio::test]
async fn full_flow_two_members_over_the_cli_functions_gives_byte_exact_files() {
    let srv = start(Config {
        registration_window: Duration::from_millis(1_500),
        ..quick()
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let lead_args = LeadArgs {
        server: srv.addr.to_string(),
        movie: Some("a.ts".parse().unwrap()),
        interval: Some(Duration::from_micros(1_500)),
        port: 0,
        output: Some(out.path().join("lead.ts")),
        progress: false,
    };
    let stop = CancellationToken::new();
    let leader = tokio::spawn(client::lead(lead_args, stop.clone()));
    // Find the session with the Session List, as a person would with `list`.
    let sock = udp().await;
    let mut port = None;
    for _ in 0..50 {
        let entries = client::query_sessions(&sock, srv.addr, ClientTimers::default())
            .await
            .unwrap();
        if let Some(e) = entries.first() {
            port = Some(e.port);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let session = format!("127.0.0.1:{}", port.expect("session listed"));
    let join_args = JoinArgs {
        session,
        interval: None,
        output: Some(out.path().join("member.ts")),
        progress: false,
    };
    let member = tokio::spawn(client::join(join_args, stop.clone()));
    let (lr, mr) = (
        leader.await.unwrap().unwrap(),
        member.await.unwrap().unwrap(),
    );
    for r in [&lr, &mr] {
        assert_eq!(r.outcome, Outcome::Complete);
        assert_eq!(r.exit_code(), 0, "{}", r.stats.line());
        assert_eq!(
            r.stats.line(),
            "received=401 lost=0 out_of_order=0 duplicates=0 invalid=0"
        );
        assert_eq!(r.movie.as_deref(), Some("a.ts"));
        let written = std::fs::read(r.output.as_ref().unwrap()).unwrap();
        assert!(written == srv.movies[0].1, "file differs from the movie");
    }
    srv.stop.cancel();
    srv.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn requested_port_busy_gets_another_bound_port() {
    let srv = start(quick()).await;
    let squatter = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let busy = squatter.local_addr().unwrap().port();
    let role = Role::Leader {
        server: srv.addr,
        requested_port: busy,
        movie: MovieSelector::First,
    };
    let mut l = spawn(udp().await, role);
    let addr = session_addr(&mut l).await;
    assert_ne!(addr.port(), busy);
    assert!(addr.port() >= 1024);
    // The port really is the server's: the session goes on there.
    let (s, _) = finish(l).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    // And a free requested port is granted as asked.
    let free = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut l = spawn(
        udp().await,
        Role::Leader {
            server: srv.addr,
            requested_port: free,
            movie: MovieSelector::First,
        },
    );
    assert_eq!(session_addr(&mut l).await.port(), free);
}

#[tokio::test]
async fn retransmission_recovers_lost_handshake_and_registration_packets() {
    let srv = start(Config {
        registration_window: Duration::from_millis(2_500),
        ..quick()
    })
    .await;
    // Lose the first copy of the Port Request, of the Port OK and of the
    // first ACK the server sends on P0.
    let mut seen = std::collections::HashSet::new();
    let sock = FaultySocket::new(udp().await, move |way, _, b| {
        let key = (
            way == Way::Sent,
            b.first().copied(),
            b.get(1..9).map(<[u8]>::to_vec),
        );
        let control = wire::peek_movie_data(b).is_none();
        if control && b.len() <= 13 && seen.insert(key) && seen.len() <= 3 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let mut l = spawn(
        sock,
        leader_role(srv.addr, MovieSelector::Name("demo.bin".into())),
    );
    session_addr(&mut l).await;
    let (s, file) = finish(l).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    assert!(file == srv.movies[1].1);
}

#[tokio::test]
async fn two_sessions_stream_different_movies_at_once() {
    let srv = start(quick()).await;
    let mut l1 = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(0)));
    let mut l2 = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(1)));
    let (a1, a2) = (session_addr(&mut l1).await, session_addr(&mut l2).await);
    assert_ne!(a1, a2);
    let m1 = spawn(udp().await, Role::Member { session: a1 });
    let m2 = spawn(udp().await, Role::Member { session: a2 });
    for (r, movie) in [(l1, 0), (m1, 0), (l2, 1), (m2, 1)] {
        let (s, file) = finish(r).await;
        assert_eq!(s.outcome(), Some(&Outcome::Complete));
        assert_eq!(s.stats().lost(), 0);
        assert!(file == srv.movies[movie].1, "wrong movie");
    }
}

#[tokio::test]
async fn late_join_into_a_long_movie_receives_every_chunk_from_start_seq() {
    let mut config = quick();
    config.default_interval_us = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let long = movie_bytes(2_500 * 200, 9);
    std::fs::write(dir.path().join("long.bin"), &long).unwrap();
    config.chunk_size = 200;
    let library = MovieLibrary::with_folder(dir.path()).unwrap();
    let sockets = server::bind_listen(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_on(sockets, config, library, stop.clone()));
    let mut l = spawn(udp().await, leader_role(addr, MovieSelector::First));
    let session = session_addr(&mut l).await;
    wait_for(&mut l, |e| {
        matches!(e, ClientEvent::StreamStarted(_)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let j = spawn(udp().await, Role::Member { session });
    let (s, file) = finish(j).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    let st = s.stats();
    let start = st.start_seq;
    assert!(start > 1_000, "position + 1000 chunks of lead: {start}");
    assert_eq!((st.received, st.lost()), (2_500 - start + 1, 0));
    let from = ((start - 1) * 200) as usize;
    assert!(file[from..] == long[from..]);
    stop.cancel();
}

#[tokio::test]
async fn leave_and_timeout_reach_the_leader() {
    let srv = start(Config {
        member_timeout: Duration::from_millis(2_500),
        default_interval_us: 10_000,
        ..quick()
    })
    .await;
    let mut l = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(0)));
    let addr = session_addr(&mut l).await;
    let m = spawn(udp().await, Role::Member { session: addr });
    let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mute = silent.clone();
    let x_sock = FaultySocket::new(udp().await, move |way, _, _| {
        if way == Way::Sent && mute.load(std::sync::atomic::Ordering::SeqCst) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let x = spawn(x_sock, Role::Member { session: addr });
    wait_for(&mut l, |e| {
        matches!(e, ClientEvent::StreamStarted(_)).then_some(())
    })
    .await;
    m.commands.send(Command::Quit).unwrap();
    let left = wait_for(&mut l, |e| match e {
        ClientEvent::MemberLeft { member, reason, .. } => Some((*member, *reason)),
        _ => None,
    })
    .await;
    assert_eq!(left, (Some(m.addr), wire::LEFT_REASON_LEFT));
    let (ms, _) = finish(m).await;
    assert_eq!(ms.outcome(), Some(&Outcome::Quit));
    silent.store(true, std::sync::atomic::Ordering::SeqCst);
    let left = wait_for(&mut l, |e| match e {
        ClientEvent::MemberLeft { member, reason, .. } => Some((*member, *reason)),
        _ => None,
    })
    .await;
    assert_eq!(left, (Some(x.addr), wire::LEFT_REASON_TIMEOUT));
    let (xs, _) = finish(x).await;
    assert_eq!(xs.outcome(), Some(&Outcome::Ended(EndReason::Expired)));
}

#[tokio::test]
async fn pause_and_resume_by_the_leader() {
    let srv = start(Config {
        default_interval_us: 5_000,
        ..quick()
    })
    .await;
    let mut l = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(1)));
    let addr = session_addr(&mut l).await;
    let mut m = spawn(udp().await, Role::Member { session: addr });
    wait_for(&mut m, |e| {
        matches!(e, ClientEvent::Data { seq: 20, .. }).then_some(())
    })
    .await;
    l.commands.send(Command::Pause).unwrap();
    let at = wait_for(&mut m, |e| match e {
        ClientEvent::Paused { position } => Some(*position),
        _ => None,
    })
    .await;
    // Drain what was in flight, then nothing may come for a while.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while m.events.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !std::iter::from_fn(|| m.events.try_recv().ok())
            .any(|e| matches!(e, ClientEvent::Data { .. }))
    );
    l.commands.send(Command::Resume).unwrap();
    let resumed = wait_for(&mut m, |e| match e {
        ClientEvent::Resumed { position, reason } => Some((*position, *reason)),
        _ => None,
    })
    .await;
    assert_eq!(resumed, (at, 0));
    let (s, file) = finish(m).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    assert_eq!(s.stats().lost(), 0, "no chunk skipped");
    assert!(file == srv.movies[1].1);
}

#[tokio::test]
async fn statistics_under_injected_drop_duplicate_and_reorder() {
    let srv = start(quick()).await;
    let mut l = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(1)));
    let addr = session_addr(&mut l).await;
    let sock = FaultySocket::new(udp().await, |way, _, b| {
        match (way, wire::peek_movie_data(b).map(|d| d.0)) {
            (Way::Received, Some(3 | 7 | 100)) => Fate::Drop,
            (Way::Received, Some(5 | 6 | 50)) => Fate::Duplicate,
            (Way::Received, Some(10)) => Fate::HoldFor(2),
            _ => Fate::Deliver,
        }
    });
    let m = spawn(sock, Role::Member { session: addr });
    let (s, file) = finish(m).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    assert_eq!(
        s.stats().line(),
        "received=247 lost=3 out_of_order=1 duplicates=3 invalid=0"
    );
    // Everything that arrived is in place.
    let chunk = 1316;
    for k in [1usize, 2, 4, 10, 250] {
        assert_eq!(
            file[(k - 1) * chunk..k * chunk],
            srv.movies[1].1[(k - 1) * chunk..k * chunk]
        );
    }
}

#[tokio::test]
async fn garbage_on_p0_and_ps_is_discarded_without_disturbing_a_stream() {
    let srv = start(quick()).await;
    let mut l = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(0)));
    let addr = session_addr(&mut l).await;
    let attacker = udp().await;
    let mut seed = 0x1234_5678u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut replies = 0;
    for i in 0..600 {
        let len = (next() % 2001) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && !bytes.is_empty() {
            // Valid-looking types, to get past the first checks.
            bytes[0] = [0x01u8, 0x04, 0x08, 0x10, 0x80][i % 5];
        }
        let to = if i % 2 == 0 { srv.addr } else { addr };
        let _ = attacker.send_to(&bytes, to).await;
        let mut buf = [0u8; 1500];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_micros(200), attacker.recv_from(&mut buf)).await
        {
            replies += 1;
        }
    }
    let (s, file) = finish(l).await;
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    assert_eq!(s.stats().lost(), 0);
    assert!(file == srv.movies[0].1);
    // Only well-formed requests can be answered (a random Registration
    // Request is a valid packet); noise gets nothing.
    assert!(replies < 30, "{replies} replies to noise");
}

#[tokio::test]
async fn shutdown_ends_sessions_with_stream_end_shutdown() {
    let srv = start(Config {
        default_interval_us: 20_000,
        ..quick()
    })
    .await;
    let mut l = spawn(udp().await, leader_role(srv.addr, MovieSelector::Id(0)));
    let addr = session_addr(&mut l).await;
    let m = spawn(udp().await, Role::Member { session: addr });
    wait_for(&mut l, |e| {
        matches!(e, ClientEvent::StreamStarted(_)).then_some(())
    })
    .await;
    srv.stop.cancel();
    let (s, _) = finish(m).await;
    assert_eq!(s.outcome(), Some(&Outcome::Ended(EndReason::Shutdown)));
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn list_shows_sessions_and_the_leader_prints_its_address() {
    let srv = start(Config {
        registration_window: Duration::from_millis(5_000),
        ..quick()
    })
    .await;
    let mut l = spawn(
        udp().await,
        leader_role(srv.addr, MovieSelector::Name("demo.bin".into())),
    );
    let addr = session_addr(&mut l).await;
    // The leader's line is `session host:port` with the server's address.
    assert_eq!(addr.ip(), srv.addr.ip());
    assert_eq!(
        format!("session {addr}"),
        format!("session 127.0.0.1:{}", addr.port())
    );
    let _m = spawn(udp().await, Role::Member { session: addr });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entries = client::list(client::ListArgs {
        server: srv.addr.to_string(),
    })
    .await
    .unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.port, e.members, e.joinable, e.movie_name.as_str()),
        (addr.port(), 2, true, "demo.bin")
    );
    assert_eq!(e.state, wire::SessionState::Registration);
}

#[tokio::test]
async fn members_may_use_either_address_family() {
    // P0 on 127.0.0.1 and [::1] under one port number, as with the default
    // [::]:31107 plus 0.0.0.0:31107.
    let mut sockets = None;
    for _ in 0..20 {
        let v4 = server::bind_listen(&["127.0.0.1:0".parse().unwrap()])
            .unwrap()
            .pop()
            .unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Ok(mut v6) =
            server::bind_listen(&[SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))])
        {
            sockets = Some(vec![v4, v6.pop().unwrap()]);
            break;
        }
    }
    let sockets = sockets.expect("a port free on both families");
    let p0 = sockets[0].local_addr().unwrap();
    let mut library = MovieLibrary::new();
    let movie = movie_bytes(300 * 1316, 5);
    library.add_embedded("m.bin", Bytes::from(movie.clone()));
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_on(sockets, quick(), library, stop.clone()));
    let mut l = spawn(udp().await, leader_role(p0, MovieSelector::First));
    let v4 = session_addr(&mut l).await;
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v4.port()));
    let m = spawn(
        UdpSocket::bind("[::1]:0").await.unwrap(),
        Role::Member { session: v6 },
    );
    let joined = wait_for(&mut l, |e| match e {
        ClientEvent::MemberJoined { member, .. } => Some(*member),
        _ => None,
    })
    .await;
    assert_eq!(joined, Some(m.addr), "the leader sees the IPv6 endpoint");
    for r in [l, m] {
        let (s, file) = finish(r).await;
        assert_eq!(s.outcome(), Some(&Outcome::Complete));
        assert!(file == movie);
    }
    stop.cancel();
}

#[tokio::test]
async fn session_ports_stay_in_the_configured_range() {
    let free = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let srv = start(Config {
        session_ports: Some([free, free]),
        ..quick()
    })
    .await;
    // Asking for a port outside the range gets the one port of the range.
    let mut l = spawn(
        udp().await,
        Role::Leader {
            server: srv.addr,
            requested_port: 2000,
            movie: MovieSelector::First,
        },
    );
    assert_eq!(session_addr(&mut l).await.port(), free);
    // The range is used up: the next Port Request is refused with Port 0.
    let raw = udp().await;
    raw.send_to(
        &wire::P0Packet::PortRequest { seq: 1, port: 0 }.encode(),
        srv.addr,
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), raw.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = wire::decode_p0(&buf[..n], wire::Direction::ToClient).unwrap();
    assert_eq!(answer, wire::P0Packet::PortAllocated { seq: 1, port: 0 });
}

#[tokio::test]
async fn the_demo_movie_arrives_byte_for_byte() {
    let demo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../demo/demo-movie.mp4"
    ))
    .unwrap();
    let config = quick();
    let library = server::library_from_config(
        &config,
        vec![("demo-movie.mp4".into(), Bytes::from(demo.clone()))],
    )
    .unwrap();
    let sockets = server::bind_listen(&config.listen).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_on(sockets, config, library, stop.clone()));
    let mut l = spawn(
        udp().await,
        leader_role(addr, MovieSelector::Name("demo-movie.mp4".into())),
    );
    let session = session_addr(&mut l).await;
    let m = spawn(udp().await, Role::Member { session });
    for r in [l, m] {
        let (s, file) = finish(r).await;
        assert_eq!(s.outcome(), Some(&Outcome::Complete));
        assert_eq!(s.stats().received, demo.len().div_ceil(1316) as u64);
        assert!(file == demo);
    }
    stop.cancel();
}
