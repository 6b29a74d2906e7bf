//! Media through the SFU: a str0m test peer publishes VP8 + Opus over /ws
//! signalling and a second client receives both tracks.

mod galene_client;

use std::time::Duration;

use galene_client::TestServer;
use rtc::testpeer::{Loss, TestPeer, TestPeerConfig};
use serde_json::json;

const OPEN: &str = r#"{"users": {"watcher": {"password": "w", "permissions": "observe"}},
    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#;

#[tokio::test]
async fn publish_and_subscribe_vp8_opus() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let mut p = s.joined("P", "open", "pub", "").await;
    let (publisher, offer) = TestPeer::publisher(TestPeerConfig::default())
        .await
        .unwrap();
    p.send(json!({"type":"offer","id":"S1","label":"camera","source":"P","username":"pub","kind":"","replace":null,"sdp":offer}))
        .await;
    let answer = p.recv_type("answer").await;
    assert_eq!(answer["id"], "S1");
    publisher
        .accept_answer(answer["sdp"].as_str().unwrap())
        .await
        .unwrap();

    // 32, 37
    let mut r = s.joined("R", "open", "watcher", "w").await;
    r.send(json!({"type":"request","request":{"":["audio","video"]}}))
        .await;
    let offer = r.recv_type("offer").await;
    assert_eq!(offer["id"], "S1");
    assert_eq!(offer["label"], "camera");
    assert_eq!(offer["source"], "P");
    assert_eq!(offer["username"], "pub");
    let sdp = offer["sdp"].as_str().unwrap();
    // 45
    assert!(sdp.contains("a=msid:"), "{sdp}");
    assert!(!sdp.contains("a=recvonly") && !sdp.contains("a=sendrecv"));
    let (receiver, answer) = TestPeer::receiver_answering(sdp, TestPeerConfig::default())
        .await
        .unwrap();
    r.send(json!({"type":"answer","id":"S1","sdp":answer}))
        .await;
    let got = receiver
        .wait_for(Duration::from_secs(15), |rep| {
            rep.audio_frames > 0 && rep.video_frames > 0
        })
        .await;
    assert!(got, "receiver report: {:?}", receiver.report());

    // 33: nothing wanted any more
    r.send(json!({"type":"request","request":{"":[]}})).await;
    let close = r.recv_type("close").await;
    assert_eq!(close["id"], "S1");
    // 41
    r.send(json!({"type":"abort","id":"S1"})).await;
    assert_eq!(r.recv_type("close").await["id"], "S1");

    // 36: no `present`
    r.send(json!({"type":"offer","id":"X1","sdp":"v=0\r\n"}))
        .await;
    let abort = r.recv().await;
    assert_eq!(
        (abort["type"].as_str(), abort["id"].as_str()),
        (Some("abort"), Some("X1"))
    );
    let err = r.recv().await;
    assert_eq!(err["value"], "not authorised");

    // bad SDP from a presenter: abort + error, connection stays
    p.send(json!({"type":"offer","id":"S2","sdp":"this is not sdp"}))
        .await;
    assert_eq!(p.recv_type("abort").await["id"], "S2");
    assert_eq!(p.recv_type("usermessage").await["kind"], "error");

    // 40: closing the up stream closes it for receivers
    r.send(json!({"type":"request","request":{"":["audio","video"]}}))
        .await;
    let offer = r.recv_type("offer").await;
    let (_receiver2, answer) =
        TestPeer::receiver_answering(offer["sdp"].as_str().unwrap(), TestPeerConfig::default())
            .await
            .unwrap();
    r.send(json!({"type":"answer","id":"S1","sdp":answer}))
        .await;
    // 43: renegotiate yields a fresh offer, same id, new ICE credentials
    r.send(json!({"type":"renegotiate","id":"S1"})).await;
    let again = r.recv_type("offer").await;
    assert_eq!(again["id"], "S1");
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    assert_ne!(
        ufrag(again["sdp"].as_str().unwrap()),
        ufrag(offer["sdp"].as_str().unwrap())
    );
    // (the offer stays unanswered: the close below must still come)
    // 35: switching to the low layer needs no renegotiation here (the SFU
    // switches inside the track); an unknown id is fatal
    r.send(json!({"type":"requestStream","id":"S1","request":["audio","video-low"]}))
        .await;
    assert!(r.quiet().await.iter().all(|m| m["type"] != "close"));

    p.send(json!({"type":"close","id":"S1"})).await;
    assert_eq!(r.recv_type("close").await["id"], "S1");
    drop(publisher);
}

/// 39: a publisher switching camera offers with `replace`; receivers get the
/// new stream with `replace` and no `close` for the old one.
#[tokio::test]
async fn replace_swaps_without_close() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let mut p = s.joined("P", "open", "pub", "").await;
    let mut r = s.joined("R", "open", "watcher", "w").await;
    r.send(json!({"type":"request","request":{"":["audio","video"]}}))
        .await;
    let mut peers = Vec::new();
    for (id, replace) in [("OLD", None), ("NEW", Some("OLD"))] {
        let (publisher, offer) = TestPeer::publisher(TestPeerConfig::default())
            .await
            .unwrap();
        p.send(json!({"type":"offer","id":id,"label":"camera","replace":replace,"sdp":offer}))
            .await;
        let answer = p.recv_type("answer").await;
        publisher
            .accept_answer(answer["sdp"].as_str().unwrap())
            .await
            .unwrap();
        let offer = r.recv_type("offer").await;
        assert_eq!(offer["id"], id);
        assert_eq!(offer.get("replace").and_then(|v| v.as_str()), replace);
        let (receiver, answer) =
            TestPeer::receiver_answering(offer["sdp"].as_str().unwrap(), TestPeerConfig::default())
                .await
                .unwrap();
        r.send(json!({"type":"answer","id":id,"sdp":answer})).await;
        peers.push((publisher, receiver));
    }
    let seen = r.quiet().await;
    assert!(seen.iter().all(|m| m["type"] != "close"), "{seen:?}");
}

const LIMIT: Duration = Duration::from_secs(15);

/// Publishes a test peer as `P` (label `camera`) and returns it once answered.
async fn publish_as_p(s: &TestServer, cfg: TestPeerConfig) -> (galene_client::Client, TestPeer) {
    let mut p = s.joined("P", "open", "pub", "").await;
    let (publisher, offer) = TestPeer::publisher(cfg).await.unwrap();
    p.send(json!({"type":"offer","id":"S1","label":"camera","sdp":offer}))
        .await;
    let answer = p.recv_type("answer").await;
    publisher
        .accept_answer(answer["sdp"].as_str().unwrap())
        .await
        .unwrap();
    (p, publisher)
}

/// Joins as `id`, asks for `request` and answers the offer for S1 with a
/// receiving test peer.
async fn receive_s1(
    s: &TestServer,
    id: &str,
    request: serde_json::Value,
    cfg: TestPeerConfig,
) -> (galene_client::Client, TestPeer) {
    let mut r = s.joined(id, "open", &id.to_lowercase(), "").await;
    r.send(json!({"type":"request","request":request})).await;
    let offer = r.recv_type("offer").await;
    assert_eq!(offer["id"], "S1");
    let (receiver, answer) = TestPeer::receiver_answering(offer["sdp"].as_str().unwrap(), cfg)
        .await
        .unwrap();
    r.send(json!({"type":"answer","id":"S1","sdp":answer}))
        .await;
    (r, receiver)
}

fn simulcast() -> TestPeerConfig {
    TestPeerConfig {
        simulcast: vec!["h".into(), "l".into()],
        video_bitrate: 600_000,
        ..TestPeerConfig::default()
    }
    .browser_keyframes()
}

/// Waits until `receiver` gets encoding `enc`, then checks that it stays.
async fn on_encoding(receiver: &TestPeer, enc: u8) -> bool {
    if !receiver
        .wait_for(LIMIT, |r| r.video_encoding == Some(enc))
        .await
    {
        return false;
    }
    let seen = receiver.report().video_frames;
    receiver
        .wait_for(LIMIT, |r| r.video_frames >= seen + 10)
        .await
        && receiver.report().video_encoding == Some(enc)
}

/// 34: with rids h then l, `video` is the h encoding and `video-low` the l one.
#[tokio::test]
async fn video_selects_the_high_encoding_and_video_low_the_low_one() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let (_p, _publisher) = publish_as_p(&s, simulcast()).await;
    let (_r1, high) = receive_s1(
        &s,
        "R1",
        json!({"":["audio","video"]}),
        TestPeerConfig::default(),
    )
    .await;
    let (_r2, low) = receive_s1(
        &s,
        "R2",
        json!({"":["audio","video-low"]}),
        TestPeerConfig::default(),
    )
    .await;
    assert!(on_encoding(&high, 0).await, "video: {:?}", high.report());
    assert!(on_encoding(&low, 1).await, "video-low: {:?}", low.report());
    assert!(high.report().audio_frames > 0 && low.report().audio_frames > 0);
}

/// 70, at the protocol level (the browser suite drives the stock client): with
/// three members, a receiver switching its receive setting to "low quality"
/// (`{"":["audio","video-low"]}`, no renegotiation) gets the low encoding,
/// right after its subscription started; chat between members works.
#[tokio::test]
async fn low_quality_receive_setting_switches_to_the_low_encoding() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let (mut p, _publisher) = publish_as_p(&s, simulcast()).await;
    let (_third, _third_peer) = receive_s1(
        &s,
        "R2",
        json!({"":["audio","video"]}),
        TestPeerConfig::default(),
    )
    .await;
    let (mut r, receiver) = receive_s1(
        &s,
        "R1",
        json!({"":["audio","video"]}),
        TestPeerConfig::default(),
    )
    .await;
    assert!(
        receiver
            .wait_for(LIMIT, |rep| rep.video_encoding == Some(0))
            .await,
        "{:?}",
        receiver.report()
    );
    r.send(json!({"type":"request","request":{"":["audio","video-low"]}}))
        .await;
    assert!(
        r.quiet().await.iter().all(|m| m["type"] != "offer"),
        "a layer change needs no new offer"
    );
    assert!(on_encoding(&receiver, 1).await, "{:?}", receiver.report());
    r.send(json!({"type":"chat","source":"R1","username":"r1","value":"low is fine"}))
        .await;
    let chat = p.recv_type("chat").await;
    assert_eq!(chat["value"], "low is fine");
    assert_eq!(chat["source"], "R1");
}

/// 44: two changes while the offer is unanswered give one further offer, for
/// the last state, after the answer.
#[tokio::test]
async fn changes_during_an_unanswered_offer_give_one_offer_after_the_answer() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let (_p, _publisher) = publish_as_p(&s, TestPeerConfig::default()).await;
    let mut r = s.joined("R", "open", "watcher", "w").await;
    r.send(json!({"type":"request","request":{"":["audio","video"]}}))
        .await;
    let first = r.recv_type("offer").await;
    r.send(json!({"type":"request","request":{"":["audio"]}}))
        .await;
    r.send(json!({"type":"request","request":{"":["video"]}}))
        .await;
    let early = r.quiet().await;
    assert!(
        early.iter().all(|m| m["type"] != "offer"),
        "no offer before the answer: {early:?}"
    );
    let (_receiver, answer) =
        TestPeer::receiver_answering(first["sdp"].as_str().unwrap(), TestPeerConfig::default())
            .await
            .unwrap();
    r.send(json!({"type":"answer","id":"S1","sdp":answer}))
        .await;
    let again = r.recv_type("offer").await;
    assert_eq!(again["id"], "S1");
    let sdp = again["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("m=video") && !sdp.contains("m=audio"),
        "the last request wins: {sdp}"
    );
    let later = r.quiet().await;
    assert!(
        later.iter().all(|m| m["type"] != "offer"),
        "a single further offer: {later:?}"
    );
}

/// 71: a subscriber joining a running stream gets a keyframe within a second of
/// connecting, both while the publisher's last keyframe is recent (fast start)
/// and long after it (a keyframe request).
#[tokio::test]
async fn joining_subscriber_gets_a_keyframe_within_a_second() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let (_p, publisher) = publish_as_p(&s, TestPeerConfig::default()).await;
    for (id, wait) in [("R1", 0), ("R2", 2000)] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (_r, receiver) = receive_s1(
            &s,
            id,
            json!({"":["audio","video"]}),
            TestPeerConfig::default(),
        )
        .await;
        assert!(receiver.wait_for(LIMIT, |rep| rep.connected).await);
        assert!(
            receiver
                .wait_for(Duration::from_secs(1), |rep| rep.video_frames > 0)
                .await,
            "{id}: no video within a second of connecting: {:?}",
            receiver.report()
        );
        assert_eq!(receiver.report().first_video_keyframe, Some(true), "{id}");
    }
    assert!(
        publisher.report().keyframe_requests_received > 0,
        "the late joiner's keyframe was asked for"
    );
}

/// 72: packets a receiver NACKs are retransmitted to it, and its PLI reaches
/// the publisher as a keyframe request and comes back as a keyframe.
#[tokio::test]
async fn receiver_nack_is_answered_and_pli_brings_a_keyframe() {
    let s = TestServer::start(&[("open", OPEN)]).await;
    let (_p, publisher) = publish_as_p(&s, TestPeerConfig::default()).await;
    let lossy = TestPeerConfig {
        drop_incoming: Loss { every: 15, max: 40 },
        ..TestPeerConfig::default()
    };
    let (_r, receiver) = receive_s1(&s, "R", json!({"":["audio","video"]}), lossy).await;
    assert!(
        receiver
            .wait_for(LIMIT, |rep| rep.video_frames >= 90 && rep.rtp_dropped >= 10)
            .await,
        "{:?}",
        receiver.report()
    );
    let rep = receiver.report();
    assert!(rep.nacks > 0, "{rep:?}");
    assert_eq!(rep.video_frames_missing, 0, "every loss repaired: {rep:?}");

    // Past the SFU's keyframe rate limit for the join's request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let asked = publisher.report().keyframe_requests_received;
    let keys = receiver.report().video_keyframes;
    receiver.request_keyframe().await.unwrap();
    assert!(
        publisher
            .wait_for(LIMIT, |rep| rep.keyframe_requests_received > asked)
            .await,
        "the PLI was relayed"
    );
    assert!(
        receiver
            .wait_for(LIMIT, |rep| rep.video_keyframes > keys)
            .await,
        "a keyframe came back: {:?}",
        receiver.report()
    );
}
