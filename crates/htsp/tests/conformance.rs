//! The reference's conformance checklist (§14), spoken as raw HTSP over
//! loopback against a server on the demo yard.

mod htsp_client;

use std::time::{Duration, Instant};

use htsp::wire::{self, Msg, Value};
use htsp_client::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);

async fn closed_without_reply(c: &mut Client) {
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(T, c.stream.read(&mut b))
        .await
        .expect("server closes");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected close without reply, got {n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_before_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    assert!(c.read(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_frames_close_the_connection_without_reply() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let bodies: Vec<Vec<u8>> = vec![
        // valid seq followed by 2 stray bytes
        vec![2, 3, 0, 0, 0, 1, b's', b'e', b'q', 1, 0, 0],
        // field overruns its container
        vec![2, 3, 0, 0, 0, 0xff, b's', b'e', b'q'],
        // type 0, 6, 9
        vec![0, 1, 0, 0, 0, 0, b'x'],
        vec![6, 1, 0, 0, 0, 0, b'x'],
        vec![9, 1, 0, 0, 0, 0, b'x'],
        // UUID of 2 bytes
        vec![8, 1, 0, 0, 0, 2, b'u', 1, 2],
        // invalid nested map
        vec![1, 1, 0, 0, 0, 7, b'm', 2, 0, 0, 0, 0, 0, 0],
    ];
    for body in bodies {
        let mut c = Client::connect(s.addr).await;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(&body);
        c.stream.write_all(&frame).await.unwrap();
        closed_without_reply(&mut c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.stream
        .write_all(&1_048_577u32.to_be_bytes())
        .await
        .unwrap();
    closed_without_reply(&mut c).await;

    // Exactly 1 MiB is read (and, lacking a method, answered with an error).
    let mut c = Client::connect(s.addr).await;
    let big = Msg::new().with("x", vec![0u8; 1_048_576 - 7]);
    assert_eq!(wire::body_len(&big), 1_048_576);
    c.send(&big).await;
    let r = c.request(m("getSysTime")).await;
    assert!(r.contains("time"));
    let first = c
        .pending
        .pop_front()
        .expect("error reply for the big frame");
    assert!(
        first
            .get_str("error")
            .unwrap()
            .starts_with("Invalid arguments")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_echo_order_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&m("getSysTime").with("seq", "9")).await;
    let r = c.read(T).await.unwrap();
    assert_eq!(r.get("seq"), Some(&Value::S64(9)));
    assert!(!r.contains("method"));
    c.send(&m("getSysTime")).await;
    let r = c.read(T).await.unwrap();
    assert!(!r.contains("seq") && r.contains("time"));
    let offset = r.get_s64("gmtoffset").unwrap();
    if offset % 60 == 0 {
        assert_eq!(offset, -60 * r.get_s64("timezone").unwrap());
    }

    // pipelined
    let mut frames = Vec::new();
    for seq in 1..=3i64 {
        frames.extend(wire::encode_frame(&m("getDiskSpace").with("seq", seq)));
    }
    c.stream.write_all(&frames).await.unwrap();
    for seq in 1..=3 {
        let r = c.read(T).await.unwrap();
        assert_eq!(r.get_s64("seq"), Some(seq));
        for f in ["freediskspace", "useddiskspace", "totaldiskspace"] {
            assert!(r.contains(f), "{f}");
        }
    }

    c.send(&Msg::new().with("seq", 1i64)).await;
    let r = c.read(T).await.unwrap();
    assert!(r.contains("error"));
    assert_eq!(r.get_s64("seq"), Some(1));
    c.send(&m("nope").with("seq", 2i64)).await;
    let r = c.read(T).await.unwrap();
    assert_eq!(r.get_str("error").as_deref(), Some("Method not found"));
    assert_eq!(r.get_s64("seq"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), users()).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.request(m("hello").with("htspversion", 38i64)).await;
    assert!(r.contains("error"));
    let r = c.request(m("hello").with("clientname", "x")).await;
    assert!(r.contains("error"));
    let h1 = c.hello(38).await;
    assert_eq!(h1.get_s64("htspversion"), Some(44));
    assert!(h1.contains("servername") && h1.contains("serverversion"));
    assert_eq!(h1.get_bin("challenge").unwrap().len(), 32);
    assert!(h1.get_list("servercapability").is_some());
    let h2 = c.hello(38).await;
    assert_eq!(h1.get_bin("challenge"), h2.get_bin("challenge"));

    // wrong password: noaccess, and later requests are refused after 250 ms
    let r = c.login("kodi", "wrong").await;
    assert_eq!(r.get_s64("noaccess"), Some(1));
    let t0 = Instant::now();
    let r = c.request(m("getChannel").with("channelId", 1i64)).await;
    assert_eq!(r.get_s64("noaccess"), Some(1));
    assert!(t0.elapsed() >= Duration::from_millis(250));

    let r = c.login("kodi", "secret").await;
    for f in [
        "admin",
        "streaming",
        "dvr",
        "faileddvr",
        "anonymous",
        "limitall",
        "limitdvr",
        "limitstreaming",
        "uilevel",
        "uilanguage",
    ] {
        assert!(r.contains(f), "missing {f}");
    }
    assert_eq!(r.get_s64("streaming"), Some(1));
    let r = c.request(m("getChannel").with("channelId", 1i64)).await;
    assert_eq!(r.get_str("channelName").as_deref(), Some("Switchyard One"));

    // version 25: no rights fields
    let mut c = Client::connect(s.addr).await;
    c.hello(25).await;
    let r = c.login("kodi", "secret").await;
    assert!(r.fields.iter().all(|(n, _)| n == "seq"), "{r:?}");

    // credentials on a single request elevate it and later ones
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let digest = htsp::session::digest("secret", &c.challenge);
    let r = c
        .request(
            m("getChannel")
                .with("channelId", 2i64)
                .with("username", "kodi")
                .with("digest", digest.to_vec()),
        )
        .await;
    assert!(r.contains("channelName"), "{r:?}");
    assert!(
        c.request(m("getEvents").with("channelId", 1i64))
            .await
            .contains("events")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_rights_survive_empty_login() {
    let dir = tempfile::tempdir().unwrap();
    let mut access = users();
    access.networks.push(yard::access::NetworkConfig {
        cidr: "127.0.0.0/8".into(),
        ..Default::default()
    });
    let s = start(dir.path(), access).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let r = c.login("", "").await;
    assert_eq!(r.get_s64("streaming"), Some(1));
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 1i64)
                .with("channelId", 1i64),
        )
        .await;
    assert_eq!(r.get_s64("normts"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let r = c.request(m("enableAsyncMetadata").with("epg", 1i64)).await;
    assert!(r.fields.iter().all(|(n, _)| n == "seq"));
    assert!(c.pending.is_empty(), "reply precedes the dump");
    let mut dump = Vec::new();
    loop {
        let msg = c.read(T).await.expect("initial sync");
        let done = method_of(&msg) == "initialSyncCompleted";
        dump.push(msg);
        if done {
            break;
        }
    }
    let order = [
        "tagAdd",
        "channelAdd",
        "tagUpdate",
        "autorecEntryAdd",
        "timerecEntryAdd",
        "dvrEntryAdd",
        "eventAdd",
        "initialSyncCompleted",
    ];
    let rank = |m: &Msg| {
        order
            .iter()
            .position(|o| *o == method_of(m))
            .expect("known method")
    };
    assert!(dump.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
    for msg in &dump {
        assert!(!msg.contains("seq") && !msg.contains("subscriptionId"));
    }
    let channels: Vec<&Msg> = dump
        .iter()
        .filter(|m| method_of(m) == "channelAdd")
        .collect();
    assert_eq!(channels.len(), 2);
    for ch in &channels {
        let id = ch.get_s64("channelId").unwrap();
        assert!((1..=i64::from(i32::MAX)).contains(&id));
        let uuid = ch.get_str("channelIdStr").unwrap();
        assert!(
            uuid.len() == 32
                && uuid
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        for f in [
            "channelNumber",
            "channelName",
            "eventId",
            "nextEventId",
            "tags",
        ] {
            assert!(ch.contains(f), "{f}");
        }
        let svc = map(&ch.get_list("services").unwrap()[0]);
        assert!(svc.contains("name") && svc.contains("type") && svc.contains("content"));
        assert!(
            ch.get_s64("eventId").unwrap() > 0,
            "the demo guide covers now"
        );
    }
    assert!(dump.iter().any(|m| method_of(m) == "eventAdd"));
    for e in dump.iter().filter(|m| method_of(m) == "eventAdd") {
        for f in ["eventId", "channelId", "start", "stop"] {
            assert!(e.contains(f));
        }
    }
    let tag_adds: Vec<&Msg> = dump.iter().filter(|m| method_of(m) == "tagAdd").collect();
    assert!(!tag_adds.is_empty() && tag_adds.iter().all(|t| !t.contains("members")));

    // no second initialSyncCompleted
    c.request(m("enableAsyncMetadata").with("epg", 1i64)).await;
    assert!(
        c.wait_for(Duration::from_millis(300), |m| method_of(m)
            == "initialSyncCompleted")
            .await
            .is_none()
    );

    let now = chrono_now();
    let r = c
        .request(
            m("getEvents")
                .with("channelId", 1i64)
                .with("numFollowing", 3i64),
        )
        .await;
    let evs = r.get_list("events").unwrap();
    assert_eq!(evs.len(), 3);
    let first = map(&evs[0]);
    assert!(first.get_s64("start").unwrap() <= now && first.get_s64("stop").unwrap() > now);
    assert!(c.request(m("getEvents")).await.get_list("events").is_some());

    let r = c.request(m("epgQuery").with("query", "NEWS")).await;
    assert!(!r.get_list("eventIds").unwrap().is_empty());
    let r = c
        .request(m("epgQuery").with("query", "no such programme"))
        .await;
    assert!(!r.contains("eventIds") && !r.contains("events"));

    let r = c.request(m("getProfiles")).await;
    let p = map(&r.get_list("profiles").unwrap()[0]);
    assert_eq!(p.get_str("name").as_deref(), Some("htsp"));
    assert_eq!(p.get_str("uuid").unwrap().len(), 32);

    let r = c.request(m("getTicket").with("channelId", 1i64)).await;
    assert_eq!(r.get_str("path").as_deref(), Some("/stream/channelid/1"));
    let ticket = r.get_str("ticket").unwrap();
    assert_eq!(ticket.len(), 40);
    assert!(s.ctx.check_ticket(&ticket, "/stream/channelid/1").is_some());
    assert!(s.ctx.check_ticket(&ticket, "/stream/channelid/1").is_some());
    assert!(s.ctx.check_ticket(&ticket, "/stream/channelid/2").is_none());

    let r = c.request(m("api").with("path", "serverinfo")).await;
    assert_eq!(
        r.get_map("response").unwrap().get_s64("api_version"),
        Some(19)
    );
    let r = c.request(m("api").with("path", "no/such")).await;
    assert!(r.fields.iter().all(|(n, _)| n == "seq"));
    assert!(c.request(m("api")).await.contains("error"));

    for (req, text) in [
        (m("getChannel"), "Invalid arguments: missing channelId"),
        (
            m("getChannel").with("channelId", 999i64),
            "Channel does not exist",
        ),
        (
            m("getEvent").with("eventId", 99999i64),
            "Event does not exist",
        ),
        (
            m("subscribe")
                .with("subscriptionId", 1i64)
                .with("channelId", 999i64),
            "Channel does not exist",
        ),
        (
            m("subscriptionSpeed")
                .with("subscriptionId", 9i64)
                .with("speed", 100i64),
            "Subscription does not exist",
        ),
        (
            m("subscriptionChangeWeight").with("subscriptionId", 9i64),
            "Subscription does not exist",
        ),
        (
            m("subscriptionSkip")
                .with("subscriptionId", 9i64)
                .with("time", 1i64),
            "Subscription does not exist",
        ),
        (
            m("subscriptionFilterStream").with("subscriptionId", 9i64),
            "Subscription does not exist",
        ),
        (
            m("fileRead").with("id", 9i64).with("size", 10i64),
            "Invalid file",
        ),
    ] {
        let r = c.request(req).await;
        assert_eq!(r.get_str("error").as_deref(), Some(text));
    }
    assert!(
        c.request(m("unsubscribe").with("subscriptionId", 9i64))
            .await
            .fields
            .len()
            == 1
    );
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Subscribes and collects messages of that subscription until `until`
/// says stop (bounded by `timeout`).
async fn collect(
    c: &mut Client,
    id: i64,
    timeout: Duration,
    until: impl Fn(&[Msg]) -> bool,
) -> Vec<Msg> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(msg) = c
            .wait_for(left, |m| m.get_s64("subscriptionId") == Some(id))
            .await
        else {
            break;
        };
        got.push(msg);
    }
    got
}

fn has_video_and_audio(msgs: &[Msg]) -> bool {
    let pk: Vec<&Msg> = msgs.iter().filter(|m| method_of(m) == "muxpkt").collect();
    pk.iter().any(|p| p.contains("frametype"))
        && pk.iter().filter(|p| !p.contains("frametype")).count() >= 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 1i64)
                .with("channelId", 1i64)
                .with("profile", "htsp"),
        )
        .await;
    assert_eq!(r.get_s64("normts"), Some(1));
    assert!(!r.contains("90khz"));
    assert!(
        c.pending
            .iter()
            .all(|m| m.get_s64("subscriptionId") != Some(1)),
        "reply first"
    );
    let t0 = Instant::now();
    let msgs = collect(&mut c, 1, T, |g| {
        has_video_and_audio(g) && g.iter().filter(|m| method_of(m) == "muxpkt").count() > 60
    })
    .await;
    assert!(t0.elapsed() < T, "keyframe and audio within 5 s");
    let start = msgs
        .iter()
        .find(|m| method_of(m) == "subscriptionStart")
        .expect("subscriptionStart");
    let streams = start.get_list("streams").unwrap();
    let video = streams
        .iter()
        .map(map)
        .find(|s| s.get_str("type").as_deref() == Some("H264"))
        .expect("H264 stream");
    assert_eq!(video.get_s64("width"), Some(640));
    assert_eq!(video.get_s64("height"), Some(360));
    let audio = streams
        .iter()
        .map(map)
        .find(|s| s.get_str("type").as_deref() == Some("AAC"))
        .expect("AAC stream");
    assert_eq!(audio.get_s64("rate"), Some(3));
    assert!(audio.contains("audio_type") && audio.contains("rds_uecp"));
    for s in streams.iter().map(map) {
        assert!(s.contains("index") && s.contains("type"));
    }
    assert_eq!(
        &start.get_bin("meta").expect("top-level meta")[..4],
        &[0, 0, 0, 1]
    );
    let vidx = video.get_s64("index").unwrap();
    let aidx = audio.get_s64("index").unwrap();

    let pkts: Vec<&Msg> = msgs.iter().filter(|m| method_of(m) == "muxpkt").collect();
    let first_video = pkts
        .iter()
        .find(|p| p.get_s64("stream") == Some(vidx))
        .unwrap();
    assert_eq!(first_video.get_s64("frametype"), Some(73));
    let first_dts = pkts.iter().filter_map(|p| p.get_s64("dts")).next().unwrap();
    assert!(
        (0..=3_000_000).contains(&first_dts),
        "first dts {first_dts}"
    );
    let mut last = std::collections::HashMap::new();
    for p in &pkts {
        for f in ["subscriptionId", "stream", "com", "duration", "payload"] {
            assert!(p.contains(f), "{f}");
        }
        let stream = p.get_s64("stream").unwrap();
        let payload = p.get_bin("payload").unwrap();
        let dts = p.get_s64("dts").unwrap();
        assert!(dts >= 0 && p.get_s64("pts").unwrap_or(0) >= 0);
        if let Some(prev) = last.insert(stream, dts) {
            assert!(dts >= prev, "dts goes back on stream {stream}");
        }
        if stream == vidx {
            assert!([73, 80, 66].contains(&p.get_s64("frametype").unwrap()));
            assert!(payload.starts_with(&[0, 0, 1]) || payload.starts_with(&[0, 0, 0, 1]));
            assert_eq!(p.get_s64("duration"), Some(40000));
        } else {
            assert_eq!(stream, aidx);
            assert!(!p.contains("frametype"));
            assert!(payload[0] == 0xff && payload[1] & 0xf0 == 0xf0, "ADTS");
        }
    }

    // 90 kHz on a second subscription, with its own timeline near 0
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 2i64)
                .with("channelId", 1i64)
                .with("90khz", 1i64),
        )
        .await;
    assert_eq!(r.get_s64("90khz"), Some(1));
    let msgs2 = collect(&mut c, 2, T, |g| {
        g.iter().filter(|m| m.contains("frametype")).count() > 3
    })
    .await;
    let v2: Vec<&Msg> = msgs2.iter().filter(|m| m.contains("frametype")).collect();
    assert!(v2.len() > 3);
    assert!(v2.iter().all(|p| p.get_s64("duration") == Some(3600)));
    assert!((0..=270_000).contains(&v2[0].get_s64("dts").unwrap()));

    // filter out audio of subscription 1, then enable it again
    let r = c
        .request(
            m("subscriptionFilterStream")
                .with("subscriptionId", 1i64)
                .with("disable", vec![Value::S64(aidx)]),
        )
        .await;
    assert!(!r.contains("error"));
    c.pending.retain(|m| m.get_s64("subscriptionId") != Some(1));
    let msgs = collect(&mut c, 1, Duration::from_millis(800), |_| false).await;
    assert!(
        msgs.iter()
            .filter(|m| method_of(m) == "muxpkt")
            .all(|m| m.get_s64("stream") != Some(aidx))
    );
    c.request(
        m("subscriptionFilterStream")
            .with("subscriptionId", 1i64)
            .with("enable", vec![Value::S64(aidx)]),
    )
    .await;
    let msgs = collect(&mut c, 1, T, |g| {
        g.iter().any(|m| m.get_s64("stream") == Some(aidx))
    })
    .await;
    assert!(msgs.iter().any(|m| m.get_s64("stream") == Some(aidx)));

    // timeshift requests without timeshift
    let r = c
        .request(
            m("subscriptionSeek")
                .with("subscriptionId", 1i64)
                .with("time", 0i64)
                .with("absolute", 1i64),
        )
        .await;
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Timeshift not available")
    );
    let r = c
        .request(
            m("subscriptionSpeed")
                .with("subscriptionId", 1i64)
                .with("speed", 0i64),
        )
        .await;
    assert!(r.contains("error"));
    let r = c
        .request(
            m("subscriptionSpeed")
                .with("subscriptionId", 1i64)
                .with("speed", 100i64),
        )
        .await;
    assert!(!r.contains("error"));
    let sp = c
        .wait_for(T, |m| method_of(m) == "subscriptionSpeed")
        .await
        .unwrap();
    assert_eq!(sp.get_s64("speed"), Some(100));
    let r = c
        .request(
            m("subscriptionChangeWeight")
                .with("subscriptionId", 1i64)
                .with("weight", 40i64),
        )
        .await;
    assert!(!r.contains("error"));
    // and playback continues
    c.pending.retain(|m| m.get_s64("subscriptionId") != Some(1));
    assert!(
        !collect(&mut c, 1, T, |g| g.iter().any(|m| method_of(m) == "muxpkt"))
            .await
            .is_empty()
    );

    // after the unsubscribe reply, no muxpkt of that subscription
    c.request(m("unsubscribe").with("subscriptionId", 1i64))
        .await;
    c.pending.retain(|m| m.get_s64("subscriptionId") != Some(1));
    let after = collect(&mut c, 1, Duration::from_millis(700), |_| false).await;
    assert!(
        after.iter().all(|m| method_of(m) != "muxpkt"),
        "{:?}",
        after.len()
    );
    // subscription 2 still flows
    assert!(
        !collect(&mut c, 2, T, |g| g.iter().any(|m| method_of(m) == "muxpkt"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_drops_video_by_type_never_audio() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.addr).await.unwrap();
    let mut c = Client::with_stream(stream);
    c.hello(38).await;
    c.request(
        m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", 1i64)
            .with("queueDepth", 20_000i64),
    )
    .await;
    // Stop reading for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let msgs = collect(&mut c, 1, Duration::from_secs(8), |g| {
        g.iter()
            .any(|m| method_of(m) == "queueStatus" && m.get_s64("Idrops").unwrap_or(0) > 0)
    })
    .await;
    let statuses: Vec<&Msg> = msgs
        .iter()
        .filter(|m| method_of(m) == "queueStatus")
        .collect();
    assert!(!statuses.is_empty());
    for st in &statuses {
        for f in ["packets", "bytes", "delay", "Bdrops", "Pdrops", "Idrops"] {
            assert!(st.contains(f), "{f}");
        }
    }
    eprintln!(
        "statuses: {:?}",
        statuses
            .iter()
            .map(|s| (
                s.get_s64("bytes"),
                s.get_s64("Bdrops"),
                s.get_s64("Pdrops"),
                s.get_s64("Idrops")
            ))
            .collect::<Vec<_>>()
    );
    let first_with = |f: &str| statuses.iter().position(|s| s.get_s64(f).unwrap_or(0) > 0);
    let b = first_with("Bdrops").expect("B-frames dropped");
    let p = first_with("Pdrops").expect("P-frames dropped");
    let i = first_with("Idrops").expect("I-frames dropped");
    assert!(b <= p && p <= i, "B {b} P {p} I {i}");
    // audio continuity: consecutive AAC frames are one frame (1024 samples) apart
    let audio: Vec<i64> = msgs
        .iter()
        .filter(|m| method_of(m) == "muxpkt" && !m.contains("frametype"))
        .filter_map(|m| m.get_s64("dts"))
        .collect();
    assert!(audio.len() > 10);
    // The demo input loops every 8 s; its loop point may shift the timeline
    // once, but a gap of whole frames would be dropped audio.
    let mut odd = 0;
    for w in audio.windows(2) {
        let d = w[1] - w[0];
        if (21_332..=21_334).contains(&d) {
            continue;
        }
        let frames = (d as f64 / 21_333.33).round() as i64;
        assert!(
            !(frames >= 2 && (d - frames * 21_333).abs() <= frames),
            "audio frames missing: gap {d} µs"
        );
        odd += 1;
    }
    assert!(odd <= 2, "{odd} irregular audio steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscriptions_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    c.request(
        m("subscribe")
            .with("subscriptionId", 5i64)
            .with("channelId", 1i64),
    )
    .await;
    c.request(
        m("subscribe")
            .with("subscriptionId", 6i64)
            .with("channelId", 2i64),
    )
    .await;
    for id in [5, 6] {
        let msgs = collect(&mut c, id, T, |g| {
            g.iter().any(|m| method_of(m) == "muxpkt")
        })
        .await;
        let first = msgs
            .iter()
            .find(|m| method_of(m) == "muxpkt")
            .expect("packets");
        assert!((0..=3_000_000).contains(&first.get_s64("dts").unwrap()));
    }
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 5i64)
                .with("channelId", 2i64),
        )
        .await;
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Subscription already exists")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_changes_reach_async_clients() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    c.request(m("enableAsyncMetadata").with("epg", 1i64)).await;
    c.wait_for(T, |m| method_of(m) == "initialSyncCompleted")
        .await
        .unwrap();
    c.pending.clear();
    let old = s.yard.epg_events(1, 0, i64::MAX);
    let now = chrono_now();
    s.yard.set_schedule(
        1,
        vec![yard::EpgEntry {
            start: now + 60,
            stop: now + 120,
            title: "Brand new".into(),
            ..Default::default()
        }],
    );
    let add = c
        .wait_for(T, |m| {
            method_of(m) == "eventAdd" && m.get_str("title").as_deref() == Some("Brand new")
        })
        .await
        .expect("eventAdd for the new programme");
    assert_eq!(add.get_s64("channelId"), Some(1));
    let gone = old.iter().find(|e| e.title != "Brand new").unwrap().id;
    c.wait_for(T, |m| {
        method_of(m) == "eventDelete" && m.get_s64("eventId") == Some(i64::from(gone))
    })
    .await
    .expect("eventDelete for a removed programme");
}
