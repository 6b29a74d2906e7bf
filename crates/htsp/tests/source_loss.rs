//! An HTTP input that drops out and comes back: the subscription is told
//! (subscriptionStop with a reason), stays open, and restarts on its own.

mod htsp_client;

use std::time::Duration;

use htsp_client::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use yard::{InputConfig, SourcePolicy, TvConfig, Yard};

/// Serves the demo TS at about real time; the first client is cut off after
/// `first_for`, later ones get the stream (looped) until they leave.
async fn flaky_http(first_for: Duration) -> std::net::SocketAddr {
    let ts = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../demo/channel-1.ts"
    ))
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let ts = ts.clone();
            let limit = if n == 1 { Some(first_for) } else { None };
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = sock.read(&mut req).await;
                let _ = sock
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                    .await;
                let began = tokio::time::Instant::now();
                // 8 s of media per file pass; 20 KB every ~140 ms is real time.
                for chunk in ts.chunks(188 * 107).cycle() {
                    if limit.is_some_and(|l| began.elapsed() >= l) {
                        return;
                    }
                    if sock.write_all(chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(140)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_loss_stops_and_resumes_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let http = flaky_http(Duration::from_secs(3)).await;
    let yard = Yard::new(
        dir.path(),
        SourcePolicy {
            grace: Duration::from_millis(200),
            backoff_min: Duration::from_millis(300),
            backoff_max: Duration::from_secs(1),
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let errors = yard
        .load(&TvConfig {
            demo: false,
            inputs: vec![InputConfig {
                url: format!("http://{http}/live.ts"),
                name: Some("Flaky".into()),
                ..InputConfig::default()
            }],
            ..TvConfig::default()
        })
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    let id = yard.channels()[0].id;
    let s = start_with(yard, dir.path(), open_access()).await;
    let mut c = Client::connect(s.addr).await;
    c.hello(38).await;
    c.request(
        m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", id),
    )
    .await;

    let start = c
        .wait_for(Duration::from_secs(8), |m| {
            method_of(m) == "subscriptionStart"
        })
        .await;
    assert!(start.is_some(), "first start");
    let stop = c
        .wait_for(Duration::from_secs(10), |m| {
            method_of(m) == "subscriptionStop"
        })
        .await
        .expect("subscriptionStop when the input drops");
    assert!(stop.contains("status"));
    assert_eq!(
        stop.get_str("subscriptionError").as_deref(),
        Some("badSignal")
    );
    let last_dts = c
        .pending
        .iter()
        .filter(|m| method_of(m) == "muxpkt")
        .filter_map(|m| m.get_s64("dts"))
        .max()
        .unwrap_or(0);
    c.pending.clear();
    // the connection stays usable
    assert!(c.request(m("getSysTime")).await.contains("time"));
    let restart = c
        .wait_for(Duration::from_secs(10), |m| {
            method_of(m) == "subscriptionStart"
        })
        .await;
    assert!(
        restart.is_some(),
        "subscription resumes when the input is back"
    );
    let pkt = c
        .wait_for(Duration::from_secs(5), |m| method_of(m) == "muxpkt")
        .await
        .expect("packets again");
    assert_eq!(pkt.get_s64("frametype"), Some(73), "restart on a keyframe");
    assert!(pkt.get_s64("dts").unwrap() > last_dts, "timeline continues");
}
