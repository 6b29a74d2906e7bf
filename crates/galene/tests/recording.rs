//! The disk recorder (reference §20, checklist 66–67): `groupaction record`
//! adds member RECORDING and writes one WebM per up stream, present and
//! future; `unrecord` finalises them; `/recordings/G/` lists, serves and
//! deletes them for users holding `record`.

mod galene_client;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use galene_client::{Client, TestServer};
use rtc::testpeer::{TestPeer, TestPeerConfig};
use serde_json::json;

const GROUP: &str = r#"{"allow-recording": true,
    "users": {"boss": {"password": "op", "permissions": "op"},
              "plain": {"password": "p", "permissions": "present"}},
    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#;

async fn publish(p: &mut Client, id: &str) -> TestPeer {
    let (peer, offer) = TestPeer::publisher(TestPeerConfig::default())
        .await
        .unwrap();
    p.send(json!({"type":"offer","id":id,"label":"camera","sdp":offer}))
        .await;
    let answer = p.recv_type("answer").await;
    assert_eq!(answer["id"], id);
    peer.accept_answer(answer["sdp"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        peer.wait_for(Duration::from_secs(10), |r| r.connected
            && r.frames_sent > 10)
            .await
    );
    peer
}

/// The next `user` message of `kind` that `matches` (others are skipped).
async fn user_event(
    c: &mut Client,
    kind: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..20 {
        let m = c.recv_type("user").await;
        if m["kind"] == kind && matches(&m) {
            return m;
        }
    }
    panic!("no user {kind}");
}

fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// (codec names, format duration in seconds)
fn probe(path: &Path) -> (Vec<String>, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-show_streams",
            "-show_format",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut codecs = Vec::new();
    let mut duration = 0.0;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("codec_name=") {
            codecs.push(c.to_owned());
        }
        if let Some(d) = line.strip_prefix("duration=") {
            duration = d.parse().unwrap_or(duration);
        }
    }
    (codecs, duration)
}

#[tokio::test]
async fn record_streams_then_browse_and_delete() {
    let s = TestServer::start(&[("rec", GROUP)]).await;
    let mut op = s.joined("OP", "rec", "boss", "op").await;
    let mut p = s.joined("P", "rec", "pub", "").await;
    let _old = publish(&mut p, "S1").await;

    // without `record`: refused
    p.send(json!({"type":"groupaction","kind":"record","source":"P","username":"pub"}))
        .await;
    assert_eq!(p.recv_type("usermessage").await["value"], "not authorised");

    let started = Instant::now();
    op.send(json!({"type":"groupaction","kind":"record","source":"OP","username":"boss"}))
        .await;
    let add = user_event(&mut op, "add", |m| m["username"] == "RECORDING").await;
    assert_eq!(add["permissions"], json!(["system"]));
    let recorder_id = add["id"].as_str().unwrap().to_owned();
    op.send(json!({"type":"groupaction","kind":"record","source":"OP","username":"boss"}))
        .await;
    let err = op.recv_type("usermessage").await;
    assert_eq!(
        (err["kind"].as_str(), err["value"].as_str()),
        (Some("error"), Some("already recording"))
    );

    // a stream published while recording is recorded too
    let _new = publish(&mut p, "S2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.send(json!({"type":"groupaction","kind":"unrecord","source":"OP","username":"boss"}))
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    user_event(&mut op, "delete", |m| m["id"] == recorder_id.as_str()).await;

    let dir = s.dir.path().join("recordings").join("rec");
    let files = recordings(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let mut durations = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with("-pub.webm") || name.ends_with("-pub-01.webm"),
            "{name}"
        );
        let (codecs, duration) = probe(f);
        assert_eq!(codecs, ["vp8", "opus"], "{name}");
        durations.push(duration);
    }
    // the stream that was there all along covers the whole recording
    let longest = durations.iter().cloned().fold(0.0, f64::max);
    assert!(
        (longest - elapsed).abs() < 1.0,
        "{durations:?} vs {elapsed}"
    );
    assert!(durations.iter().all(|d| *d > 1.5), "{durations:?}");

    // 67: the recordings browser
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(s.url("/recordings")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/recordings/");
    let r = http.get(s.url("/recordings/rec")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/recordings/rec/");
    let r = http.get(s.url("/recordings/rec/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "basic realm=\"recordings/rec\""
    );
    // a user without `record` is refused as well
    let r = http
        .get(s.url("/recordings/rec/"))
        .basic_auth("plain", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(s.url("/recordings/rec/"))
        .basic_auth("boss", Some("op"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let first = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(page.contains(&first), "{page}");
    assert!(page.contains("name=\"q\" value=\"delete\""));

    let url = s.url(&format!("/recordings/rec/{first}"));
    let r = http
        .get(&url)
        .basic_auth("boss", Some("op"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let body = r.bytes().await.unwrap();
    assert_eq!(
        body.len() as u64,
        std::fs::metadata(&files[0]).unwrap().len()
    );
    let r = http
        .get(&url)
        .basic_auth("boss", Some("op"))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], [0x1A, 0x45, 0xDF, 0xA3]);

    let r = http
        .post(s.url("/recordings/rec/"))
        .basic_auth("boss", Some("op"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("q=delete&filename=..%2Fx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(s.url("/recordings/rec/"))
        .basic_auth("boss", Some("op"))
        .form(&[("q", "delete"), ("filename", first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/recordings/rec/");
    assert_eq!(recordings(&dir).len(), 1);
    assert!(!files[0].exists());

    // unrecord when not recording
    op.send(json!({"type":"groupaction","kind":"unrecord","source":"OP","username":"boss"}))
        .await;
    assert_eq!(op.recv_type("usermessage").await["value"], "not recording");
}
