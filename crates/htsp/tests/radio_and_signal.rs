//! Over loopback: an audio-only input is announced as a radio channel
//! (checklist 19: `content = 2`) and streams without video; every running
//! subscription gets `signalStatus` with `feStatus` (§8.4) on the priority
//! queue, never before its `subscribe` reply.

mod htsp_client;

use std::time::Duration;

use htsp_client::*;
use tokio_util::sync::CancellationToken;
use yard::{InputConfig, SourcePolicy, TvConfig, Yard};

const T: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    format!("{}/../../demo/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A yard with the audio-only demo input and one TV input.
async fn radio_yard(dir: &std::path::Path) -> Yard {
    let policy = SourcePolicy {
        grace: Duration::from_millis(200),
        ..SourcePolicy::default()
    };
    let yard = Yard::new(dir.join("yard"), policy, CancellationToken::new()).unwrap();
    let input = |f: &str, n: u32| InputConfig {
        url: fixture(f),
        number: Some(n),
        ..Default::default()
    };
    let warnings = yard
        .load(&TvConfig {
            demo: false,
            inputs: vec![input("channel-1.ts", 1), input("radio.ts", 7)],
            ..Default::default()
        })
        .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    yard
}

fn first_service(ch: &htsp::wire::Msg) -> htsp::wire::Msg {
    map(&ch.get_list("services").expect("services")[0]).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_input_is_a_radio_channel_and_streams_audio() {
    let dir = tempfile::tempdir().unwrap();
    let yard = radio_yard(dir.path()).await;
    let s = start_with(yard, dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let r = c.request(m("enableAsyncMetadata")).await;
    assert!(!r.contains("error"), "{r:?}");
    c.wait_for(T, |m| method_of(m) == "initialSyncCompleted")
        .await
        .expect("initial sync");
    let adds: Vec<_> = c
        .pending
        .iter()
        .filter(|m| method_of(m) == "channelAdd")
        .cloned()
        .collect();
    assert_eq!(adds.len(), 2, "{adds:?}");
    let radio = adds
        .iter()
        .find(|a| a.get_s64("channelNumber") == Some(7))
        .expect("radio channel");
    let tv = adds
        .iter()
        .find(|a| a.get_s64("channelNumber") == Some(1))
        .expect("tv channel");
    let svc = first_service(radio);
    assert_eq!(svc.get_s64("content"), Some(2), "{radio:?}");
    assert_eq!(svc.get_str("type").as_deref(), Some("Radio"));
    assert_eq!(svc.get_str("name").as_deref(), Some("Switchyard Radio"));
    assert_eq!(first_service(tv).get_s64("content"), Some(1));
    let radio_id = radio.get_s64("channelId").unwrap();
    let got = c.request(m("getChannel").with("channelId", radio_id)).await;
    assert_eq!(first_service(&got).get_s64("content"), Some(2));

    // A radio subscription starts on audio: one AAC stream, no video.
    c.pending.clear();
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 5i64)
                .with("channelId", radio_id),
        )
        .await;
    assert_eq!(r.get_s64("normts"), Some(1), "{r:?}");
    let start = c
        .wait_for(T, |m| method_of(m) == "subscriptionStart")
        .await
        .expect("subscriptionStart for a radio channel");
    let streams = start.get_list("streams").unwrap();
    assert_eq!(streams.len(), 1, "{start:?}");
    let audio = map(&streams[0]);
    assert_eq!(audio.get_str("type").as_deref(), Some("AAC"));
    assert_eq!(audio.get_s64("rate"), Some(3), "48 kHz is index 3");
    let aidx = audio.get_s64("index").unwrap();
    let mut dts = Vec::new();
    while dts.len() < 20 {
        let p = c
            .wait_for(T, |m| method_of(m) == "muxpkt")
            .await
            .expect("audio packets");
        assert_eq!(p.get_s64("stream"), Some(aidx));
        assert!(!p.contains("frametype"), "audio has no frametype");
        let payload = p.get_bin("payload").unwrap();
        assert!(payload[0] == 0xff && payload[1] & 0xf0 == 0xf0, "ADTS");
        dts.push(p.get_s64("dts").unwrap());
    }
    assert!(
        (0..=3_000_000).contains(&dts[0]),
        "starts near 0: {}",
        dts[0]
    );
    assert!(dts.windows(2).all(|w| w[0] <= w[1]), "{dts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_get_signal_status_after_their_reply() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    let r = c
        .request(
            m("subscribe")
                .with("subscriptionId", 3i64)
                .with("channelId", 1i64),
        )
        .await;
    assert!(!r.contains("error"), "{r:?}");
    assert!(
        c.pending
            .iter()
            .all(|m| m.get_s64("subscriptionId") != Some(3)),
        "nothing of the subscription before its reply: {:?}",
        c.pending
    );
    // Two signalStatus a second or more apart: sent while media flows.
    let mut seen = Vec::new();
    let t0 = tokio::time::Instant::now();
    while seen.len() < 2 {
        let st = c
            .wait_for(T, |m| method_of(m) == "signalStatus")
            .await
            .expect("signalStatus while streaming");
        seen.push(tokio::time::Instant::now());
        assert_eq!(st.get_s64("subscriptionId"), Some(3));
        assert_eq!(st.get_str("feStatus").as_deref(), Some("GOOD"), "{st:?}");
        for absent in ["feSNR", "feSignal", "feBER", "feUNC", "seq"] {
            assert!(!st.contains(absent), "{absent} in {st:?}");
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(8));
    assert!(c.pending.iter().any(|m| method_of(m) == "muxpkt"));

    // After unsubscribing, none arrives any more.
    let r = c
        .request(m("unsubscribe").with("subscriptionId", 3i64))
        .await;
    assert!(!r.contains("error"));
    c.pending.clear();
    let late = c
        .wait_for(Duration::from_millis(2500), |m| {
            m.get_s64("subscriptionId") == Some(3) && method_of(m) != "subscriptionStop"
        })
        .await;
    assert!(late.is_none(), "after unsubscribe: {late:?}");
}
