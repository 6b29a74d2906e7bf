//! Inputs configured the way users configure them (a `[tv]` table loaded with
//! `Yard::load`), fed over real loopback sockets: an HTTP input whose server
//! goes away and comes back, UDP and RTP, damaged streams, a multi-programme
//! file, an M3U playlist and an XMLTV guide.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use media::{FrameKind, Program};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use yard::{ReaderEvent, ReaderOptions, SourcePolicy, TvConfig, Yard};

const DEMO: &[u8] = include_bytes!("../../../demo/channel-1.ts");

fn demo_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/channel-1.ts").to_string()
}

fn quick_policy() -> SourcePolicy {
    SourcePolicy {
        grace: Duration::from_millis(200),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    }
}

async fn yard_with(toml_text: &str) -> (Yard, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config: TvConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let yard = Yard::new(dir.path(), quick_policy(), CancellationToken::new()).unwrap();
    let warnings = yard.load(&config).await;
    (yard, warnings, dir)
}

/// A free port on loopback (bound and released; good enough on a test machine).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next event within `within`, or a panic naming what was awaited.
async fn next(reader: &mut yard::Reader, within: Duration, what: &str) -> ReaderEvent {
    match timeout(within, reader.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("reader closed while waiting for {what}"),
        Err(_) => panic!("nothing within {within:?} while waiting for {what}"),
    }
}

/// Read until `n` video frames arrived (at most `within`); returns the
/// programme seen and the video frames' kinds.
async fn video_frames(
    reader: &mut yard::Reader,
    n: usize,
    within: Duration,
) -> (Option<Arc<Program>>, Vec<FrameKind>) {
    let deadline = Instant::now() + within;
    let mut program: Option<Arc<Program>> = reader.program();
    let mut kinds = Vec::new();
    while kinds.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let what = format!("{n} video frames (got {})", kinds.len());
        match next(reader, left, &what).await {
            ReaderEvent::Program(p) => program = Some(p),
            ReaderEvent::Frame(f) => {
                let video = program
                    .as_ref()
                    .and_then(|p| p.track(f.pid))
                    .is_some_and(|t| t.codec.is_video());
                if video {
                    kinds.push(f.kind);
                }
            }
            ReaderEvent::SourceLost { reason } => panic!("source lost: {reason}"),
            _ => {}
        }
    }
    (program, kinds)
}

/// A tiny live TS server: every client gets the demo file, looped, at about
/// real time (1.1 Mbit/s). `damage` cuts packets and adds junk.
struct TsServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TsServer {
    async fn start(port: u16, damage: bool) -> TsServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { break };
                        conns.spawn(serve_client(sock, damage));
                    }
                }
            }
            // Dropping the listener and aborting the connections: the server is gone.
            conns.shutdown().await;
        });
        TsServer { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve_client(mut sock: tokio::net::TcpStream, damage: bool) {
    let mut req = [0u8; 2048];
    let _ = sock.read(&mut req).await;
    if sock
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    // 15 packets every 20 ms is 141 kB/s; the demo is 139 kB/s.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, chunk) in DEMO.chunks(188 * 15).cycle().enumerate() {
        tick.tick().await;
        let mut out = chunk.to_vec();
        if damage && i % 10 == 5 {
            // Junk with fake sync bytes between packets.
            out.extend_from_slice(&[0x47, 0x1f, 0xff, 0x10, 0xde, 0xad, 0x47, 0x00, 0x00]);
        }
        if damage && i % 40 == 25 {
            // The middle of a packet lost.
            out.drain(188 * 3 + 50..188 * 3 + 150);
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_input_outage_is_reported_and_recovered_without_resubscribing() {
    let port = free_tcp_port();
    let server = TsServer::start(port, false).await;
    let (yard, warnings, _dir) = yard_with(&format!(
        "demo = false\n[[inputs]]\nurl = \"http://127.0.0.1:{port}/x.ts\"\nname = \"Loopback\"\n"
    ))
    .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let chans = yard.channels();
    assert_eq!(chans.len(), 1);
    assert_eq!(chans[0].name, "Loopback");
    let id = chans[0].id;
    let mut frames = yard.subscribe(id, ReaderOptions::frames("frames")).unwrap();
    let mut ts = yard.subscribe(id, ReaderOptions::ts("ts")).unwrap();

    let (program, kinds) = video_frames(&mut frames, 10, Duration::from_secs(10)).await;
    assert!(
        program.is_some_and(|p| p.is_ready()),
        "programme before frames"
    );
    assert_eq!(kinds[0], FrameKind::Key);

    server.stop().await;
    // Frames already sent may still come; then the loss is reported, once.
    let lost_at = Instant::now();
    let reason = loop {
        match next(&mut frames, Duration::from_secs(10), "SourceLost").await {
            ReaderEvent::SourceLost { reason } => break reason,
            ReaderEvent::SourceResumed => panic!("resumed before it was lost"),
            _ => {}
        }
    };
    assert!(!reason.is_empty());
    assert!(
        lost_at.elapsed() < Duration::from_secs(6),
        "a closed connection is noticed at once"
    );

    // Let a few reconnects fail (connection refused), then come back on the same port.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let server = TsServer::start(port, false).await;
    loop {
        match next(&mut frames, Duration::from_secs(10), "SourceResumed").await {
            ReaderEvent::SourceResumed => break,
            ReaderEvent::SourceLost { .. } => panic!("the outage is reported once, not per retry"),
            ReaderEvent::Frame(_) => panic!("frames before SourceResumed"),
            _ => {}
        }
    }
    let (_, kinds) = video_frames(&mut frames, 30, Duration::from_secs(10)).await;
    assert_eq!(
        kinds[0],
        FrameKind::Key,
        "after an outage, video resumes on a keyframe"
    );

    // The TS reader followed the same story and gets a fresh start with a PAT.
    let mut saw = (false, false);
    let mut after_resume = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while after_resume.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(&mut ts, left, "TS after the outage").await {
            ReaderEvent::SourceLost { .. } => saw.0 = true,
            ReaderEvent::SourceResumed => saw.1 = true,
            ReaderEvent::Ts(b) if saw.1 => after_resume = Some(b),
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
    let b = after_resume.unwrap();
    assert_eq!(
        (b[0], b[1] & 0x1f, b[2]),
        (0x47, 0, 0),
        "first TS after the outage starts with the PAT"
    );
    server.stop().await;
}

/// The demo file as UDP datagrams of 7 packets, twice real time, optionally
/// in RTP and optionally damaged, until `stop`.
async fn send_udp(port: u16, rtp: bool, damage: bool, stop: CancellationToken) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut seq: u16 = 0;
    for (i, chunk) in DEMO.chunks(188 * 7).cycle().enumerate() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut payload = chunk.to_vec();
        if damage && i % 12 == 7 {
            // A datagram of junk with fake sync bytes.
            let junk = [0x47, 0x00, 0x11, 0x1f, 0x47, 0x47, 0x00, 0xff, 0x12, 0x34];
            let _ = sock.send_to(&junk, ("127.0.0.1", port)).await;
        }
        if damage && i % 60 == 40 {
            // A packet cut short.
            payload.truncate(188 * 4 + 77);
        }
        let datagram = if rtp {
            let ts = (i as u32).wrapping_mul(900);
            let mut d = vec![0x80, 33];
            d.extend_from_slice(&seq.to_be_bytes());
            d.extend_from_slice(&ts.to_be_bytes());
            d.extend_from_slice(&0x5157_4954u32.to_be_bytes());
            d.extend_from_slice(&payload);
            d
        } else {
            payload
        };
        seq = seq.wrapping_add(1);
        let _ = sock.send_to(&datagram, ("127.0.0.1", port)).await;
    }
}

async fn udp_case(scheme: &str, rtp: bool, damage: bool) -> (Vec<FrameKind>, yard::ReaderStats) {
    let port = free_udp_port();
    let (yard, warnings, _dir) = yard_with(&format!(
        "demo = false\n[[inputs]]\nurl = \"{scheme}://127.0.0.1:{port}\"\nname = \"Over {scheme}\"\n"
    ))
    .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let id = yard.channels()[0].id;
    let mut r = yard.subscribe(id, ReaderOptions::frames(scheme)).unwrap();
    let stop = CancellationToken::new();
    let sender = tokio::spawn(send_udp(port, rtp, damage, stop.clone()));
    // The source binds the port as the first reader arrives; datagrams sent
    // before that are lost, so the reader may start at the second keyframe.
    let (program, kinds) = video_frames(&mut r, 60, Duration::from_secs(15)).await;
    stop.cancel();
    let _ = sender.await;
    let p = program.expect("programme");
    assert_eq!(p.program_number, 1);
    assert!(p.is_ready());
    (kinds, r.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_input_delivers_frames() {
    let (kinds, _) = udp_case("udp", false, false).await;
    assert_eq!(kinds[0], FrameKind::Key);
    assert!(kinds.iter().filter(|k| **k == FrameKind::Key).count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_input_delivers_frames() {
    let (kinds, _) = udp_case("rtp", true, false).await;
    assert_eq!(kinds[0], FrameKind::Key);
    assert!(kinds.iter().filter(|k| **k == FrameKind::Key).count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_udp_input_keeps_delivering_frames() {
    // Junk datagrams and packets cut short: 60 video frames (over two GOPs)
    // still come through, and the source is never "lost".
    let (kinds, _) = udp_case("udp", false, true).await;
    assert_eq!(kinds[0], FrameKind::Key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_http_input_keeps_delivering_frames() {
    let port = free_tcp_port();
    let server = TsServer::start(port, true).await;
    let (yard, warnings, _dir) = yard_with(&format!(
        "demo = false\n[[inputs]]\nurl = \"http://127.0.0.1:{port}/damaged.ts\"\n"
    ))
    .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut r = yard
        .subscribe(yard.channels()[0].id, ReaderOptions::frames("damaged"))
        .unwrap();
    // Two seconds of damaged stream in real time: frames keep coming.
    let (_, kinds) = video_frames(&mut r, 50, Duration::from_secs(10)).await;
    assert_eq!(kinds[0], FrameKind::Key);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_programme_file_becomes_one_channel_per_programme_named_from_the_sdt() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../media/tests/fixtures/two-programs.ts"
    );
    let (yard, warnings, _dir) = yard_with(&format!(
        "demo = false\n[[inputs]]\nurl = \"{path}\"\nprograms = \"all\"\nnumber = 10\n"
    ))
    .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let chans = yard.channels();
    let names: Vec<(&str, u32, u16)> = chans
        .iter()
        .map(|c| (c.name.as_str(), c.number, c.program_number))
        .collect();
    assert_eq!(names, vec![("Alpha", 10, 10), ("Beta", 11, 20)]);
    assert_ne!(chans[0].uuid, chans[1].uuid);

    // Each channel carries its own programme.
    for (c, number) in [(&chans[1], 20u16), (&chans[0], 10)] {
        let mut r = yard
            .subscribe(c.id, ReaderOptions::frames("multi"))
            .unwrap();
        let (p, kinds) = video_frames(&mut r, 5, Duration::from_secs(10)).await;
        assert_eq!(p.expect("programme").program_number, number);
        assert_eq!(kinds[0], FrameKind::Key);
        let mut ts = yard.subscribe(c.id, ReaderOptions::ts("multi-ts")).unwrap();
        let chunk = loop {
            if let ReaderEvent::Ts(b) = next(&mut ts, Duration::from_secs(10), "TS").await {
                break b;
            }
        };
        let pat = single_program_pat(&chunk);
        assert_eq!(
            pat,
            vec![number],
            "the channel's TS lists only its programme"
        );
    }
}

/// The programme numbers of the PAT at the start of a chunk.
fn single_program_pat(chunk: &Bytes) -> Vec<u16> {
    assert_eq!(
        (chunk[0], chunk[1] & 0x1f, chunk[2]),
        (0x47, 0, 0),
        "starts with the PAT"
    );
    let payload = &chunk[4..188];
    let section = &payload[1 + payload[0] as usize..];
    let len = 3 + (((section[1] & 0x0f) as usize) << 8 | section[2] as usize);
    let pat = media::psi::Pat::parse(&section[..len]).expect("a valid PAT");
    pat.programs.iter().map(|(n, _)| *n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3u_playlist_and_xmltv_guide_load_with_warnings_naming_lines() {
    let dir = tempfile::tempdir().unwrap();
    let m3u = dir.path().join("list.m3u");
    std::fs::write(
        &m3u,
        format!(
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"one.m3u\" tvg-name=\"Playlist One\" tvg-logo=\"http://img.example/one.png\" tvg-chno=\"7\" group-title=\"News;Local\",Playlist One\n\
             {}\n\
             #EXTINF:-1 tvg-id=\"broken\" tvg-name=\"Broken,Broken\n\
             http://127.0.0.1:9/broken.ts\n\
             #EXTINF:-1 tvg-id=\"two.m3u\",Second\n\
             udp://127.0.0.1:9\n",
            demo_path()
        ),
    )
    .unwrap();

    let now = chrono::Utc::now().timestamp();
    let t = |s: i64| media::xmltv::format_xmltv_time(s);
    let start = now - now.rem_euclid(3600);
    let xml = dir.path().join("guide.xml");
    std::fs::write(
        &xml,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<tv>
  <channel id="one.m3u"><display-name>Playlist One</display-name></channel>
  <channel id="two.m3u"><display-name>Second</display-name></channel>
  <programme start="{}" stop="{}" channel="one.m3u">
    <title>Loopback News</title>
    <desc>What happened on 127.0.0.1.</desc>
  </programme>
  <programme start="not a time" stop="{}" channel="one.m3u">
    <title>Broken</title>
  </programme>
  <programme start="{}" stop="{}" channel="two.m3u">
    <title>Second Show</title>
  </programme>
  <programme start="{}" stop="{}" channel="nobody.here">
    <title>Orphan</title>
  </programme>
</tv>
"#,
            t(start),
            t(start + 3600),
            t(start + 7200),
            t(start),
            t(start + 1800),
            t(start),
            t(start + 1800),
        ),
    )
    .unwrap();

    let (yard, warnings, _d) = yard_with(&format!(
        "demo = false\nxmltv = [\"{}\"]\n[[inputs]]\nurl = \"{}\"\ntags = [\"IPTV\"]\n",
        xml.display(),
        m3u.display()
    ))
    .await;

    // Exactly two warnings, each naming its file and line.
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    let m3u_warning = warnings
        .iter()
        .find(|w| w.contains("list.m3u"))
        .expect("playlist warning");
    assert!(m3u_warning.contains("line 4"), "{m3u_warning}");
    assert!(m3u_warning.contains("EXTINF"), "{m3u_warning}");
    let xml_warning = warnings
        .iter()
        .find(|w| w.contains("guide.xml"))
        .expect("guide warning");
    assert!(xml_warning.contains("line 9"), "{xml_warning}");
    assert!(xml_warning.contains("not a time"), "{xml_warning}");

    let chans = yard.channels();
    let names: Vec<&str> = chans.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["Playlist One", "Second"],
        "the malformed entry is skipped"
    );
    let one = &chans[0];
    assert_eq!(one.number, 7);
    assert_eq!(one.epg_id.as_deref(), Some("one.m3u"));
    assert_eq!(one.icon.as_deref(), Some("http://img.example/one.png"));
    let tags: Vec<String> = one
        .tags
        .iter()
        .map(|t| yard.tag(*t).unwrap().name.clone())
        .collect();
    assert_eq!(tags, vec!["IPTV", "News", "Local"]);

    let guide = yard.epg_events(one.id, start, start + 24 * 3600);
    let titles: Vec<&str> = guide.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(titles, vec!["Loopback News"]);
    assert_eq!(guide[0].stop - guide[0].start, 3600);
    assert_eq!(
        guide[0].description.as_deref(),
        Some("What happened on 127.0.0.1.")
    );
    let (now_ev, _) = yard.epg_now_next(one.id, now);
    assert_eq!(
        now_ev.map(|e| e.title.clone()).as_deref(),
        Some("Loopback News")
    );
    let second = yard.epg_events(chans[1].id, start, start + 24 * 3600);
    assert_eq!(
        second.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(),
        vec!["Second Show"]
    );

    // The playlist's file entry plays.
    let mut r = yard
        .subscribe(one.id, ReaderOptions::frames("m3u"))
        .unwrap();
    let (p, kinds) = video_frames(&mut r, 3, Duration::from_secs(10)).await;
    assert!(p.is_some());
    assert_eq!(kinds[0], FrameKind::Key);
}
