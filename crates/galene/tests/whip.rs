//! WHIP ingest (reference §21, checklist 68–69): a str0m peer publishes over
//! HTTP; Galène clients see the `whip` member and get its stream offered.

mod galene_client;

use std::time::Duration;

use galene_client::TestServer;
use rtc::testpeer::{TestPeer, TestPeerConfig};
use serde_json::json;

const OPEN: &str = r#"{"users": {"watcher": {"password": "w", "permissions": "observe"}},
    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#;
const OBSERVE: &str =
    r#"{"wildcard-user": {"password": {"type": "wildcard"}, "permissions": "observe"}}"#;
const TOKENS: &str = r#"{"users": {"watcher": {"password": "w", "permissions": "observe"}}}"#;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn ufrag_pwd(sdp: &str) -> (String, String) {
    let find = |k: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_owned()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

#[tokio::test]
async fn whip_publisher_is_a_member_whose_stream_is_offered() {
    let s = TestServer::start(&[("open", OPEN), ("quiet", OBSERVE)]).await;
    let http = http();
    let whip = s.url("/group/open/.whip");

    // 68: wrong content type
    let r = http
        .post(&whip)
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["accept"], "application/sdp");
    // missing group
    let r = http
        .post(s.url("/group/nothere/.whip"))
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // 69: no `present`
    let (_p0, offer) = TestPeer::publisher(TestPeerConfig::default())
        .await
        .unwrap();
    let r = http
        .post(s.url("/group/quiet/.whip"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // CORS preflight
    let r = http
        .request(reqwest::Method::OPTIONS, &whip)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-methods"], "OPTIONS, POST");

    let mut rcv = s.joined("R", "open", "watcher", "w").await;
    rcv.send(json!({"type":"request","request":{"":["audio","video"]}}))
        .await;

    let (publisher, offer) = TestPeer::publisher(TestPeerConfig::default())
        .await
        .unwrap();
    let r = http
        .post(&whip)
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/group/open/.whip/"), "{location}");
    assert!(location.len() > "/group/open/.whip/".len() + 16);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Location")
    );
    let answer = r.text().await.unwrap();
    assert!(answer.contains("a=candidate:"), "{answer}");
    publisher.accept_answer(&answer).await.unwrap();

    // members see user `whip` and are offered its stream under label ""
    let add = rcv.recv_type("user").await;
    assert_eq!(
        (add["kind"].as_str(), add["username"].as_str()),
        (Some("add"), Some("whip"))
    );
    assert_eq!(add["permissions"], json!(["present", "message"]));
    let whip_id = add["id"].as_str().unwrap().to_owned();
    let down = rcv.recv_type("offer").await;
    // label "" (omitted when empty, as Galène's omitempty does)
    assert_eq!(down["label"].as_str().unwrap_or(""), "");
    assert_eq!(down["username"], "whip");
    assert_eq!(down["source"], whip_id.as_str());
    let stream = down["id"].as_str().unwrap().to_owned();
    let (receiver, answer) =
        TestPeer::receiver_answering(down["sdp"].as_str().unwrap(), TestPeerConfig::default())
            .await
            .unwrap();
    rcv.send(json!({"type":"answer","id":stream,"sdp":answer}))
        .await;
    assert!(
        receiver
            .wait_for(Duration::from_secs(15), |r| r.audio_frames > 0
                && r.video_frames > 0)
            .await,
        "{:?}",
        receiver.report()
    );

    // 69: trickle with the same credentials → 204; new ones → ICE restart
    let (ufrag, pwd) = ufrag_pwd(&offer);
    let resource = s.url(&location);
    let r = http
        .patch(&resource)
        .header("content-type", "application/sdp")
        .body("a=ice-ufrag:x\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http
        .patch(&resource)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body(format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .patch(&resource)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let frag = r.text().await.unwrap();
    assert!(
        frag.contains("a=ice-ufrag:") && frag.contains("a=ice-pwd:"),
        "{frag}"
    );

    // DELETE with a stale If-Match is refused; then ends the session
    let r = http
        .delete(&resource)
        .header("if-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http.delete(&resource).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // members get `close` for the stream and `user` `delete` (in either order)
    let (mut closed, mut left) = (false, false);
    for _ in 0..20 {
        let m = rcv.recv().await;
        closed |= m["type"] == "close" && m["id"] == stream.as_str();
        left |= m["type"] == "user" && m["kind"] == "delete" && m["id"] == whip_id.as_str();
        if closed && left {
            break;
        }
    }
    assert!(closed && left);
    assert_eq!(http.delete(&resource).send().await.unwrap().status(), 404);
    drop(publisher);
}

#[tokio::test]
async fn whip_with_a_bearer_token() {
    let s = TestServer::start(&[("tok", TOKENS)]).await;
    let var = s.dir.path().join("var");
    std::fs::create_dir_all(&var).unwrap();
    std::fs::write(
        var.join("tokens.jsonl"),
        r#"{"token":"s3cret","group":"tok","username":"camera-1","permissions":["present"],"expires":"2099-01-01T00:00:00Z"}"#
            .to_owned()
            + "\n",
    )
    .unwrap();
    let http = http();
    let whip = s.url("/group/tok/.whip");
    let mut rcv = s.joined("R", "tok", "watcher", "w").await;

    // no token: a password login as `whip`, which this group does not have
    let (_p0, offer) = TestPeer::publisher(TestPeerConfig::default())
        .await
        .unwrap();
    let r = http
        .post(&whip)
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&whip)
        .header("content-type", "application/sdp")
        .bearer_auth("wrong")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .post(&whip)
        .header("content-type", "application/sdp")
        .bearer_auth("s3cret")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let add = rcv.recv_type("user").await;
    assert_eq!(add["username"], "camera-1");
    assert_eq!(add["permissions"], json!(["present"]));

    // the resource needs the same token
    let resource = s.url(&location);
    assert_eq!(http.delete(&resource).send().await.unwrap().status(), 403);
    let r = http
        .delete(&resource)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let del = rcv.recv_type("user").await;
    assert_eq!(del["kind"], "delete");
}
