//! Media through the SFU: a str0m test peer publishes VP8 + Opus over /ws
//! signalling and a second client receives both tracks.

mod galene_client;

use std::time::Duration;

use galene_client::TestServer;
use rtc::testpeer::{TestPeer, TestPeerConfig};
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
