//! One scenario per test: str0m test peers on 127.0.0.1 talking to a real Sfu.

use std::time::Duration;

use rtc::testpeer::{Loss, TestPeer, TestPeerConfig};
use rtc::{
    Config, Error, Kind, Layer, ParticipantRef, PeerEvent, PublishOptions, Sfu, SfuEvent,
    SubscribeOptions,
};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

fn sfu() -> (Sfu, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = Config {
        port_base: 0,
        workers: 1,
        host_addresses: vec!["127.0.0.1".parse().unwrap()],
        keyframe_interval_ms: 200,
        ..Config::default()
    };
    (Sfu::start(config, shutdown.clone()).unwrap(), shutdown)
}

fn who(id: &str) -> ParticipantRef {
    ParticipantRef {
        id: id.into(),
        username: id.into(),
    }
}

fn light() -> TestPeerConfig {
    TestPeerConfig {
        video_bitrate: 300_000,
        ..TestPeerConfig::default()
    }
}

/// Publishes and waits until the stream is announced; returns the publisher.
async fn publish(sfu: &Sfu, room: &str, cfg: TestPeerConfig) -> (TestPeer, rtc::Publication) {
    let mut events = sfu.events();
    let (peer, offer) = TestPeer::publisher(cfg).await.unwrap();
    let publication = sfu
        .publish(
            room,
            who("alice"),
            offer,
            PublishOptions {
                label: "camera".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    peer.accept_answer(&publication.answer_sdp).await.unwrap();
    let added = tokio::time::timeout(LIMIT, async {
        loop {
            match events.recv().await {
                Ok(SfuEvent::StreamAdded { stream, .. }) if stream.id == publication.id => {
                    return stream;
                }
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("stream announced");
    assert_eq!(added.label, "camera");
    assert_eq!(added.owner.id, "alice");
    (peer, publication)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galene_style_subscriber_gets_both_tracks_starting_with_a_keyframe() {
    let (sfu, _stop) = sfu();
    let (publisher, publication) = publish(&sfu, "room", light()).await;

    let streams = sfu.streams("room");
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert_eq!(s.track(Kind::Audio).unwrap().codec, "opus");
    assert_eq!(s.track(Kind::Video).unwrap().codec, "vp8");
    assert!(publication.answer_sdp.contains("a=candidate:"));
    assert!(publication.answer_sdp.contains("a=ice-lite"));

    // Let the publisher's first keyframe age past fast start (15 frames): the join
    // keyframe must be asked for.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let requests_before = publisher.report().keyframe_requests_received;

    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    assert!(
        sub.sdp.contains("a=sendonly"),
        "server offers send-only m-lines"
    );
    assert!(
        sub.sdp.contains("a=candidate:"),
        "host candidates inside the SDP"
    );
    assert!(sub.sdp.contains("VP8/90000") && sub.sdp.contains("opus/48000"));
    assert!(
        sub.sdp.contains("rtx/90000"),
        "RTX offered so NACKs can be served"
    );
    assert_eq!(sub.msid, publication.id);
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();

    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= 20 && r.audio_frames >= 20)
            .await,
        "receiver got {:?}",
        receiver.report()
    );
    let r = receiver.report();
    assert_eq!(
        r.first_video_keyframe,
        Some(true),
        "first forwarded frame is a keyframe"
    );
    assert!(publisher.report().keyframe_requests_received > requests_before);
    assert!(sfu.stats(&sub.id).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owt_style_subscriber_recovers_downstream_loss_with_nack() {
    let (sfu, _stop) = sfu();
    let (_publisher, publication) = publish(&sfu, "room", light()).await;

    let cfg = TestPeerConfig {
        drop_incoming: Loss { every: 15, max: 40 },
        ..light()
    };
    let (receiver, offer) = TestPeer::receiver_offering(cfg).await.unwrap();
    let sub = sfu
        .subscribe_with_offer(
            "room",
            who("bob"),
            offer,
            SubscribeOptions::both(&publication.id),
        )
        .await
        .unwrap();
    assert!(sub.sdp.contains("a=candidate:"));
    receiver.accept_answer(&sub.sdp).await.unwrap();

    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= 90 && r.rtp_dropped >= 10)
            .await,
        "receiver got {:?}",
        receiver.report()
    );
    let r = receiver.report();
    assert!(r.nacks > 0, "receiver NACKed: {r:?}");
    assert_eq!(
        r.video_frames_missing, 0,
        "every lost packet was retransmitted: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_loss_is_repaired_before_forwarding() {
    let (sfu, _stop) = sfu();
    let cfg = TestPeerConfig {
        drop_outgoing: Loss { every: 20, max: 30 },
        ..light()
    };
    let (publisher, publication) = publish(&sfu, "room", cfg).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames >= 90).await);
    assert!(publisher.report().rtp_dropped > 0);
    assert!(publisher.report().nacks > 0, "the SFU NACKed the publisher");
    assert_eq!(receiver.report().video_frames_missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_low_then_high() {
    let (sfu, _stop) = sfu();
    let cfg = TestPeerConfig {
        simulcast: vec!["h".into(), "l".into()],
        audio: false,
        ..light()
    };
    let (_publisher, publication) = publish(&sfu, "room", cfg).await;
    let info = sfu.stream("room", &publication.id).unwrap();
    assert_eq!(
        info.track(Kind::Video).unwrap().simulcast_rids,
        vec!["h", "l"]
    );

    let opts = SubscribeOptions {
        video_from: Some(publication.id.clone()),
        layer: Layer::Low,
        ..Default::default()
    };
    let sub = sfu.subscribe("room", who("bob"), opts).await.unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(
        &sub.sdp,
        TestPeerConfig {
            audio: false,
            ..light()
        },
    )
    .await
    .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= 10
                && r.video_encoding == Some(1))
            .await,
        "low layer: {:?}",
        receiver.report()
    );
    sfu.set_layer(&sub.id, Layer::High).await.unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_encoding == Some(0))
            .await,
        "high layer: {:?}",
        receiver.report()
    );
    let r = receiver.report();
    assert_eq!(r.video_gaps, 0, "switch happened on a keyframe: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_publication_ends_its_subscriptions() {
    let (sfu, _stop) = sfu();
    let (_publisher, publication) = publish(&sfu, "room", light()).await;
    let mut sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    let mut events = sfu.events();
    sfu.close(&publication.id).await;
    let ev = tokio::time::timeout(LIMIT, async {
        loop {
            match sub.events.recv().await {
                Some(PeerEvent::Failed(reason)) => return reason,
                Some(_) => {}
                None => panic!("events ended without failure"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, "source stream loss");
    let removed = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(SfuEvent::StreamRemoved { id, .. }) = events.recv().await {
                return id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(removed, publication.id);
    assert!(sfu.streams("room").is_empty());
    assert!(matches!(
        sfu.remote_answer(&sub.id, String::new()).await,
        Err(Error::NoSuchPeer(_))
    ));
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let (sfu, _stop) = sfu();
    let err = sfu
        .publish(
            "room",
            who("a"),
            "not sdp".into(),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Sdp(_)), "{err}");

    let (_peer, offer) = TestPeer::publisher(light()).await.unwrap();
    let err = sfu
        .publish(
            "room",
            who("a"),
            offer,
            PublishOptions {
                codecs: vec!["g722".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoCodec), "{err}");

    let err = sfu
        .subscribe("room", who("b"), SubscribeOptions::both("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stream nope does not exist");

    let err = sfu
        .add_ice_candidate("nope", "candidate:1 1 udp 1 1.2.3.4 5 typ host")
        .await;
    assert!(matches!(err, Err(Error::NoSuchPeer(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_tap_gets_whole_frames_and_a_keyframe() {
    let (sfu, _stop) = sfu();
    let (_publisher, publication) = publish(&sfu, "room", light()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tap = sfu.tap(&publication.id, 256).await.unwrap();
    let mut saw_key = false;
    let mut audio = 0;
    tokio::time::timeout(LIMIT, async {
        while !(saw_key && audio > 5) {
            let f = tap.recv().await.expect("tap open");
            match f.kind {
                Kind::Video => {
                    assert_eq!(f.codec, "vp8");
                    assert_eq!(f.clock_rate, 90_000);
                    saw_key |= f.keyframe;
                }
                Kind::Audio => {
                    assert_eq!(f.codec, "opus");
                    audio += 1;
                }
            }
        }
    })
    .await
    .expect("tap delivered a keyframe and audio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_video_stops_and_resumes_on_a_keyframe() {
    let (sfu, _stop) = sfu();
    let (_publisher, publication) = publish(&sfu, "room", light()).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames >= 10).await);

    sfu.set_paused(&publication.id, Kind::Video, true)
        .await
        .unwrap();
    assert!(sfu.stream("room", &publication.id).unwrap().video_paused);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = receiver.report();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = receiver.report();
    assert_eq!(
        during.video_frames, before.video_frames,
        "no video while paused"
    );
    assert!(
        during.audio_frames > before.audio_frames,
        "audio keeps flowing"
    );

    sfu.set_paused(&publication.id, Kind::Video, false)
        .await
        .unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_keyframes > during.video_keyframes
                && r.video_frames > during.video_frames + 5)
            .await
    );
    assert_eq!(receiver.report().video_gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_with_the_publishers_profile() {
    let (sfu, _stop) = sfu();
    let cfg = TestPeerConfig {
        h264: true,
        ..light()
    };
    let (_publisher, publication) = publish(&sfu, "room", cfg).await;
    let info = sfu.stream("room", &publication.id).unwrap();
    let video = info.track(Kind::Video).unwrap();
    assert_eq!(video.codec, "h264");
    let profile = video.profile.clone().expect("profile-level-id");

    let (receiver, offer) = TestPeer::receiver_offering(light()).await.unwrap();
    let sub = sfu
        .subscribe_with_offer(
            "room",
            who("bob"),
            offer,
            SubscribeOptions::both(&publication.id),
        )
        .await
        .unwrap();
    assert!(sub.sdp.contains("H264/90000"));
    assert!(
        !sub.sdp.contains("VP8/90000"),
        "only the publisher's codec is offered"
    );
    assert!(sub.sdp.contains(&format!("profile-level-id={profile}")));
    receiver.accept_answer(&sub.sdp).await.unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= 20 && r.audio_frames >= 20)
            .await,
        "{:?}",
        receiver.report()
    );
    let r = receiver.report();
    assert_eq!(r.first_video_keyframe, Some(true));
    assert_eq!(r.video_frames_missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_peer() {
    let (sfu, stop) = sfu();
    let (_publisher, mut publication) = publish(&sfu, "room", light()).await;
    stop.cancel();
    let ended = tokio::time::timeout(LIMIT, async {
        loop {
            match publication.events.recv().await {
                Some(PeerEvent::Closed(reason)) => return reason,
                Some(_) => {}
                None => panic!("no close event"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, "shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_start_replays_a_recent_keyframe_instead_of_asking() {
    let (sfu, _stop) = sfu();
    // 10 frames/s: the first keyframe stays within fast start for 1.5 s.
    let cfg = TestPeerConfig { fps: 10, ..light() };
    let (publisher, publication) = publish(&sfu, "room", cfg).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames >= 5).await);
    let r = receiver.report();
    assert_eq!(r.first_video_keyframe, Some(true));
    assert_eq!(r.video_frames_missing, 0, "{r:?}");
    assert_eq!(
        publisher.report().keyframe_requests_received,
        0,
        "no keyframe was needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_ice_restart_is_a_reoffer_on_the_same_id() {
    let (sfu, _stop) = sfu();
    let (publisher, publication) = publish(&sfu, "room", light()).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&publication.id))
        .await
        .unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames >= 10).await);

    let offer = publisher.ice_restart().await.unwrap();
    let answer = sfu.remote_offer(&publication.id, offer).await.unwrap();
    assert!(answer.contains("a=candidate:"));
    publisher.accept_answer(&answer).await.unwrap();
    let seen = receiver.report().video_frames;
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= seen + 30)
            .await,
        "media keeps flowing after the restart"
    );
    assert_eq!(sfu.streams("room").len(), 1, "still one stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_layer_drops_to_low_when_the_estimate_falls() {
    let (sfu, _stop) = sfu();
    let cfg = TestPeerConfig {
        simulcast: vec!["h".into(), "l".into()],
        audio: false,
        video_bitrate: 1_200_000,
        ..TestPeerConfig::default()
    };
    let (_publisher, publication) = publish(&sfu, "room", cfg).await;
    let opts = SubscribeOptions {
        video_from: Some(publication.id.clone()),
        layer: Layer::Auto,
        ..Default::default()
    };
    let sub = sfu.subscribe("room", who("bob"), opts).await.unwrap();
    // Heavy loss toward the subscriber: the loss-based estimate collapses.
    let rcfg = TestPeerConfig {
        audio: false,
        drop_incoming: Loss {
            every: 3,
            max: 1_000_000,
        },
        ..light()
    };
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, rcfg).await.unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_encoding == Some(0))
            .await,
        "starts on the high encoding"
    );
    let switched = receiver
        .wait_for(Duration::from_secs(15), |r| r.video_encoding == Some(1))
        .await;
    assert!(
        switched,
        "receiver {:?} stats {:?}",
        receiver.report(),
        sfu.stats(&sub.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_switches_to_another_stream_of_the_room() {
    let (sfu, _stop) = sfu();
    let (_first, a) = publish(&sfu, "room", light()).await;
    let (second, b) = publish(&sfu, "room", light()).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&a.id))
        .await
        .unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(
        receiver.wait_for(LIMIT, |r| r.video_frames >= 10).await,
        "receiver got {:?}",
        receiver.report()
    );

    // Same codec, same room: both kinds move to the second stream, whose
    // publisher is asked for a keyframe.
    let asked = second.report().keyframe_requests_received;
    sfu.switch_source(&sub.id, Kind::Video, &b.id)
        .await
        .unwrap();
    sfu.switch_source(&sub.id, Kind::Audio, &b.id)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    while second.report().keyframe_requests_received == asked {
        assert!(
            start.elapsed() < LIMIT,
            "no keyframe asked of the new source"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first stream going away no longer ends the subscription: it reads
    // the second one, on the same m-lines.
    sfu.close(&a.id).await;
    let before = receiver.report();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= before.video_frames + 30
                && r.audio_frames >= before.audio_frames + 30
                && r.video_keyframes > before.video_keyframes)
            .await,
        "after the switch the receiver got {:?} (before {before:?})",
        receiver.report()
    );
    assert!(
        sfu.stats(&sub.id).is_some(),
        "subscription ended with its old source"
    );

    // Unknown streams and kinds the subscription lacks are refused.
    let err = sfu
        .switch_source(&sub.id, Kind::Video, &a.id)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("stream {} does not exist", a.id));
    let err = sfu
        .switch_source("nope", Kind::Video, &b.id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchPeer(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_a_stream_of_another_codec_is_refused() {
    let (sfu, _stop) = sfu();
    let (_vp8, a) = publish(&sfu, "room", light()).await;
    let h264 = TestPeerConfig {
        h264: true,
        ..light()
    };
    let (_h264, b) = publish(&sfu, "room", h264).await;
    let sub = sfu
        .subscribe("room", who("bob"), SubscribeOptions::both(&a.id))
        .await
        .unwrap();
    let err = sfu
        .switch_source(&sub.id, Kind::Video, &b.id)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("stream {} uses another codec", b.id)
    );
    // Audio is Opus on both: that switch is fine.
    sfu.switch_source(&sub.id, Kind::Audio, &b.id)
        .await
        .unwrap();
}

/// A simulcast publisher that treats keyframe requests as Chromium does (drops
/// those within 300 ms of the last, one encoding per request), and a subscriber
/// on `layer` that has received its first frame of `expect`.
async fn browser_simulcast_subscription(
    sfu: &Sfu,
    layer: Layer,
    expect: u8,
) -> (TestPeer, TestPeer, String) {
    let cfg = TestPeerConfig {
        simulcast: vec!["h".into(), "l".into()],
        audio: false,
        ..light()
    }
    .browser_keyframes();
    simulcast_subscription(sfu, cfg, layer, expect).await
}

/// A simulcast publisher (1.2 Mbit/s first encoding, a quarter of it second)
/// and a Galène `video` subscriber (Layer::High) receiving the first encoding.
async fn galene_video_subscription(sfu: &Sfu) -> (TestPeer, TestPeer, String) {
    let cfg = TestPeerConfig {
        simulcast: vec!["h".into(), "l".into()],
        audio: false,
        video_bitrate: 1_200_000,
        ..TestPeerConfig::default()
    };
    simulcast_subscription(sfu, cfg, Layer::High, 0).await
}

/// Publishes with `cfg`, waits past fast start (so the join has to ask the
/// publisher for a keyframe), subscribes video on `layer` and waits for the
/// first frame of encoding `expect`.
async fn simulcast_subscription(
    sfu: &Sfu,
    cfg: TestPeerConfig,
    layer: Layer,
    expect: u8,
) -> (TestPeer, TestPeer, String) {
    let (publisher, publication) = publish(sfu, "room", cfg).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let opts = SubscribeOptions {
        video_from: Some(publication.id.clone()),
        layer,
        ..Default::default()
    };
    let sub = sfu.subscribe("room", who("bob"), opts).await.unwrap();
    let rcfg = TestPeerConfig {
        audio: false,
        ..light()
    };
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, rcfg).await.unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_encoding == Some(expect))
            .await,
        "first layer: {:?}",
        receiver.report()
    );
    (publisher, receiver, sub.id)
}

/// Waits (bounded) until the receiver gets `enc`, then checks it stays there.
async fn assert_switched(receiver: &TestPeer, publisher: &TestPeer, enc: u8, what: &str) {
    let switched = receiver
        .wait_for(Duration::from_secs(5), |r| r.video_encoding == Some(enc))
        .await;
    assert!(
        switched,
        "{what}: receiver {:?}, publisher ignored {} keyframe requests",
        receiver.report(),
        publisher.report().keyframe_requests_ignored
    );
    let seen = receiver.report().video_frames;
    assert!(
        receiver
            .wait_for(LIMIT, |r| r.video_frames >= seen + 10)
            .await
    );
    assert_eq!(receiver.report().video_encoding, Some(enc), "{what}: stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_switch_right_after_subscribing_takes_effect() {
    let (sfu, _stop) = sfu();
    let (publisher, receiver, sub) = browser_simulcast_subscription(&sfu, Layer::High, 0).await;
    // The join's keyframe request was a moment ago: the publisher drops the
    // switch's request, and the SFU must ask again.
    sfu.set_layer(&sub, Layer::Low).await.unwrap();
    assert_switched(&receiver, &publisher, 1, "to low").await;
    assert_eq!(receiver.report().video_gaps, 0, "switched on a keyframe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_successive_layer_switches_each_take_effect() {
    let (sfu, _stop) = sfu();
    let (publisher, receiver, sub) = browser_simulcast_subscription(&sfu, Layer::Low, 1).await;
    sfu.set_layer(&sub, Layer::High).await.unwrap();
    assert_switched(&receiver, &publisher, 0, "to high").await;
    sfu.set_layer(&sub, Layer::Low).await.unwrap();
    assert_switched(&receiver, &publisher, 1, "back to low").await;
    // Three requests within milliseconds: the last one wins.
    sfu.set_layer(&sub, Layer::High).await.unwrap();
    sfu.set_layer(&sub, Layer::Low).await.unwrap();
    sfu.set_layer(&sub, Layer::High).await.unwrap();
    assert_switched(&receiver, &publisher, 0, "high after a flurry").await;
    assert_eq!(receiver.report().video_gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_remb_below_the_high_rate_gets_the_low_layer() {
    let (sfu, _stop) = sfu();
    let (publisher, receiver, sub) = galene_video_subscription(&sfu).await;
    // 400 kbit/s: below the 1.2 Mbit/s encoding, above the 300 kbit/s one.
    receiver.send_remb(400_000).await.unwrap();
    assert_switched(&receiver, &publisher, 1, "REMB 400 kbit/s").await;
    // Statistics follow within their one-second refresh.
    let mut layer = None;
    for _ in 0..30 {
        layer = sfu.stats(&sub).and_then(|s| s.layer);
        if layer.as_deref() == Some("l") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(layer.as_deref(), Some("l"));
    receiver.send_remb(10_000_000).await.unwrap();
    assert_switched(&receiver, &publisher, 0, "REMB 10 Mbit/s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_loss_over_ten_percent_moves_to_the_low_layer_and_back() {
    let (sfu, _stop) = sfu();
    let (publisher, receiver, sub) = galene_video_subscription(&sfu).await;
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames > 30).await);
    // A quarter of the packets lost on the way to the receiver.
    receiver.set_incoming_loss(Loss {
        every: 4,
        max: u32::MAX,
    });
    let seen = std::cell::Cell::new(0.0f32);
    let switched = receiver
        .wait_for(Duration::from_secs(15), |r| {
            seen.set(seen.get().max(sfu.stats(&sub).map_or(0.0, |s| s.loss)));
            r.video_encoding == Some(1)
        })
        .await;
    let seen = seen.get();
    assert!(
        switched,
        "no switch down; loss seen {seen}, {:?}",
        receiver.report()
    );
    assert!(seen > 0.10, "the receiver's reports said {seen}");
    // Loss gone: back to the first encoding after a few clean seconds.
    receiver.set_incoming_loss(Loss::default());
    assert_switched(&receiver, &publisher, 0, "loss gone").await;
}

/// Waits (bounded) for the publisher to be sent a REMB within `range` (REMB
/// carries an 18-bit mantissa, so large values arrive rounded down).
async fn remb_heard(publisher: &TestPeer, range: std::ops::RangeInclusive<u64>) -> bool {
    publisher
        .wait_for(Duration::from_secs(5), |r| {
            r.remb_received.is_some_and(|b| range.contains(&b))
        })
        .await
}

/// Galène's upstream REMB (reference §23.4): once a second the publisher is
/// told what its receivers can take, 100 kbit/s for the audio plus the
/// smallest receiver allowance for the video; unwatched video gets the
/// 200 kbit/s floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_sent_a_remb_of_what_their_receivers_can_take() {
    let (sfu, _stop) = sfu();
    let (publisher, publication) = publish(&sfu, "room", light()).await;
    assert!(
        remb_heard(&publisher, 299_000..=300_000).await,
        "unwatched: {:?}",
        publisher.report().remb_received
    );
    let opts = SubscribeOptions {
        audio_from: Some(publication.id.clone()),
        video_from: Some(publication.id.clone()),
        layer: Layer::High,
        ..Default::default()
    };
    let sub = sfu.subscribe("room", who("bob"), opts).await.unwrap();
    let (receiver, answer) = TestPeer::receiver_answering(&sub.sdp, light())
        .await
        .unwrap();
    sfu.remote_answer(&sub.id, answer).await.unwrap();
    assert!(receiver.wait_for(LIMIT, |r| r.video_frames > 5).await);
    receiver.send_remb(300_000).await.unwrap();
    assert!(
        remb_heard(&publisher, 399_000..=400_000).await,
        "receiver at 300 kbit/s: {:?}",
        publisher.report().remb_received
    );
    // The receiver's statement lifts the cap; the loss-based allowance
    // (starting at 512 kbit/s) bounds it now.
    receiver.send_remb(2_000_000).await.unwrap();
    assert!(
        remb_heard(&publisher, 500_000..=2_100_000).await,
        "receiver at 2 Mbit/s: {:?}",
        publisher.report().remb_received
    );
    let stats = sfu.stats(&publication.id).expect("publication statistics");
    assert!(
        stats.upstream_remb.is_some_and(|b| b >= 500_000),
        "{stats:?}"
    );
}

/// A simulcast publisher's `l` encoding counts a fixed 100 kbit/s, whoever
/// watches it; the `h` encoding the smallest allowance among its receivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_low_simulcast_encoding_counts_100_kbits_in_the_upstream_remb() {
    let (sfu, _stop) = sfu();
    let (publisher, receiver, _sub) = galene_video_subscription(&sfu).await;
    receiver.send_remb(800_000).await.unwrap();
    // h: 800 kbit/s from its one receiver, l: 100 kbit/s, no audio.
    assert!(
        remb_heard(&publisher, 899_000..=900_000).await,
        "{:?}",
        publisher.report().remb_received
    );
}

/// A publisher whose offer does not ask for goog-remb is never sent one
/// (str0m would answer with it anyway; the SFU reads the offer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_remb_to_a_publisher_that_did_not_offer_it() {
    let (sfu, _stop) = sfu();
    let (publisher, offer) = TestPeer::publisher(light()).await.unwrap();
    let offer: String = offer
        .split_inclusive('\n')
        .filter(|l| !(l.starts_with("a=rtcp-fb:") && l.contains("goog-remb")))
        .collect();
    assert!(!offer.contains("goog-remb"));
    let publication = sfu
        .publish("room", who("alice"), offer, PublishOptions::default())
        .await
        .unwrap();
    publisher
        .accept_answer(&publication.answer_sdp)
        .await
        .unwrap();
    assert!(publisher.wait_for(LIMIT, |r| r.frames_sent > 60).await);
    assert_eq!(publisher.report().remb_received, None);
    let stats = sfu.stats(&publication.id).expect("publication statistics");
    assert_eq!(stats.upstream_remb, None);
}
