//! The conformance checklist of the Galène reference, over real sockets.

mod galene_client;

use std::time::{Duration, Instant};

use galene_client::TestServer;
use serde_json::{Value, json};

const OPEN: &str = r#"{"public": true, "displayName": "Open",
    "users": {"boss": {"password": "bosspw", "permissions": "op"},
              "mute": {"password": "x", "permissions": "observe"}},
    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#;

async fn server() -> TestServer {
    TestServer::start(&[
        ("open", OPEN),
        ("private", r#"{"users": {"a": {"password": "pw", "permissions": "present"}}}"#),
        ("capped", r#"{"max-clients": 1, "users": {"boss": {"password": "b", "permissions": "op"}},
                       "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#),
        ("future", r#"{"not-before": "2999-01-01T00:00:00Z", "wildcard-user": {"password": {"type": "wildcard"}}}"#),
        ("past", r#"{"expires": "2000-01-01T00:00:00Z", "wildcard-user": {"password": {"type": "wildcard"}}}"#),
        ("broken", r#"{"public": true, "frobnicate": 1}"#),
        ("auto", r#"{"autokick": true, "users": {"boss": {"password": "b", "permissions": "op"}},
                     "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#),
        ("rec", r#"{"allow-recording": true, "users": {"boss": {"password": "b", "permissions": "op"}},
                    "wildcard-user": {"password": {"type": "wildcard"}, "permissions": "present"}}"#),
    ])
    .await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn http_status_pages_and_public_list() {
    let s = server().await;
    let c = http();
    // 1, 2: .status of a public group
    let r = c.get(s.url("/group/open/.status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["name"], "open");
    assert!(v["location"].as_str().unwrap().ends_with("/group/open/"));
    assert!(v["endpoint"].as_str().unwrap().starts_with("ws://"));
    assert!(v["endpoint"].as_str().unwrap().ends_with("/ws"));
    assert_eq!(v["clientCount"], 0);
    assert!(v.get("locked").is_none());
    let v: Value = c
        .get(s.url("/group/private/.status"))
        .send()
        .await
        .unwrap()
        .json_text()
        .await;
    assert!(v.get("clientCount").is_none() && v.get("locked").is_none());
    // 3
    let r = c
        .get(s.url("/group/open/.status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/group/open/.status");
    // 4
    let r = c.get(s.url("/group/open")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/group/open/");
    assert_eq!(
        c.get(s.url("/group/missing/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(s.url("/group/missing/.status"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // 5
    let r = c.get(s.url("/group/open/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src ws: wss: 'self'"), "{csp}");
    // 25: a file with an unknown field is an error page
    assert_eq!(
        c.get(s.url("/group/broken/.status"))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    // 6: exactly the public groups, sorted (lobby is the demo group)
    let v: Value = c
        .get(s.url("/public-groups.json"))
        .send()
        .await
        .unwrap()
        .json_text()
        .await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lobby", "open"]);
    // 7: foreign origin refused, none accepted
    let mut req = format!("ws://{}/ws", s.addr).into_client_request_for_test();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let mut _ok = s.client().await;
}

trait JsonText {
    async fn json_text(self) -> Value;
}

impl JsonText for reqwest::Response {
    async fn json_text(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

trait IntoReq {
    fn into_client_request_for_test(
        self,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request;
}

impl IntoReq for String {
    fn into_client_request_for_test(
        self,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        self.into_client_request().unwrap()
    }
}

#[tokio::test]
async fn handshake_rules() {
    let s = server().await;
    // 8
    let mut c = s.client().await;
    c.send(json!({"type":"join","kind":"join","group":"open","username":"x"}))
        .await;
    assert_eq!(c.closed().await, (1002, "you must handshake first".into()));
    // 10, 12
    let mut c = s.client().await;
    c.send_raw(r#"{"type":"handshake","version":["2"],"id":"A"}"#.into())
        .await;
    let first = c.ws.next_text().await;
    assert_eq!(first, r#"{"type":"handshake","version":["2"]}"#);
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));
    // 11
    for version in [json!(null), json!(["3"])] {
        let mut c = s.client().await;
        c.send(json!({"type":"handshake","version":version,"id":"B"}))
            .await;
        assert_eq!(c.recv().await["type"], "handshake");
        let w = c.recv().await;
        assert_eq!(w["type"], "usermessage");
        assert_eq!(w["kind"], "warning");
        assert_eq!(w["dest"], "B");
        assert_eq!(w["privileged"], true);
        assert!(c.quiet().await.is_empty());
    }
}

trait NextText {
    async fn next_text(&mut self) -> String;
}

impl NextText
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn next_text(&mut self) -> String {
        use futures::StreamExt;
        loop {
            match tokio::time::timeout(galene_client::WAIT, self.next())
                .await
                .unwrap()
            {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn join_order_membership_and_leave() {
    let s = server().await;
    let mut a = s.joined("A", "open", "alice", "").await;
    a.send(json!({"type":"chat","source":"A","username":"alice","value":"first"}))
        .await;
    assert_eq!(a.recv_type("chat").await["value"], "first");
    a.send(json!({"type":"chat","value":"second"})).await;
    a.recv_type("chat").await;
    // 14
    let mut b = s.ready("B").await;
    b.send(json!({"type":"join","kind":"join","group":"open","username":"bob","password":"x"}))
        .await;
    let j = b.recv().await;
    assert_eq!(j["type"], "joined");
    assert_eq!(j["kind"], "join");
    assert_eq!(j["group"], "open");
    assert_eq!(j["username"], "bob");
    assert_eq!(j["permissions"], json!(["present", "message"]));
    assert_eq!(j["status"]["name"], "open");
    assert!(j["status"].get("location").is_none() && j["status"].get("endpoint").is_none());
    assert!(j.get("rtcConfiguration").is_some());
    let h1 = b.recv().await;
    let h2 = b.recv().await;
    assert_eq!(
        (h1["type"].as_str(), h1["value"].as_str()),
        (Some("chathistory"), Some("first"))
    );
    assert_eq!(h2["value"], "second");
    assert!(h1["time"].as_str().unwrap().contains('T'));
    let me = b.recv().await;
    assert_eq!(
        (me["type"].as_str(), me["kind"].as_str(), me["id"].as_str()),
        (Some("user"), Some("add"), Some("B"))
    );
    let other = b.recv().await;
    assert_eq!(
        (other["kind"].as_str(), other["id"].as_str()),
        (Some("add"), Some("A"))
    );
    // 15
    let add = a.recv_type("user").await;
    assert_eq!(
        (
            add["kind"].as_str(),
            add["id"].as_str(),
            add["username"].as_str()
        ),
        (Some("add"), Some("B"), Some("bob"))
    );
    assert!(a.quiet().await.is_empty(), "exactly one add");
    // 19
    let mut c = s.joined("C", "open", "carol", "").await;
    c.send(json!({"type":"join","kind":"join","group":"open","username":"carol"}))
        .await;
    assert_eq!(
        c.closed().await,
        (1002, "cannot join multiple groups".into())
    );
    let del = a.recv_type("user").await;
    assert_eq!(del["kind"], "add");
    let del = a.recv_type("user").await;
    assert_eq!(
        del,
        json!({"type":"user","kind":"delete","id":"C","username":"carol"})
    );
    // 20
    b.send(json!({"type":"join","kind":"leave","group":"open"}))
        .await;
    assert_eq!(b.recv_type("joined").await["kind"], "leave");
    assert_eq!(
        a.recv_type("user").await,
        json!({"type":"user","kind":"delete","id":"B","username":"bob"})
    );
    b.send(json!({"type":"join","kind":"join","group":"open","username":"bob"}))
        .await;
    assert_eq!(b.recv_type("joined").await["kind"], "join");
    // 21
    b.send(json!({"type":"join","kind":"leave","group":"private"}))
        .await;
    let e = b.recv_type("usermessage").await;
    assert_eq!(
        (
            e["kind"].as_str(),
            e["value"].as_str(),
            e["privileged"].as_bool()
        ),
        (Some("error"), Some("you are not joined"), Some(true))
    );
    assert_eq!(b.closed().await.0, 1000);
}

#[tokio::test]
async fn join_failures() {
    let s = server().await;
    let mut c = s.ready("A").await;
    // 16
    let t0 = Instant::now();
    c.send(
        json!({"type":"join","kind":"join","group":"private","username":"a","password":"wrong"}),
    )
    .await;
    let f = c.recv().await;
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        (f["type"].as_str(), f["kind"].as_str(), f["value"].as_str()),
        (Some("joined"), Some("fail"), Some("not authorised"))
    );
    // 18
    c.send(json!({"type":"join","kind":"join","group":"nope","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "group does not exist");
    c.send(json!({"type":"join","kind":"join","group":"a/../b","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "illegal group name");
    c.send(json!({"type":"join","kind":"join","group":"/open","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "illegal group name");
    // 24
    c.send(json!({"type":"join","kind":"join","group":"future","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "this group is not open yet");
    c.send(json!({"type":"join","kind":"join","group":"past","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "this group is closed");
    // 25
    c.send(json!({"type":"join","kind":"join","group":"broken","username":"a"}))
        .await;
    assert_eq!(c.recv().await["value"], "internal server error");
    std::fs::write(
        s.dir.path().join("groups/broken.json"),
        r#"{"wildcard-user": {"password": "ok"}}"#,
    )
    .unwrap();
    c.send(json!({"type":"join","kind":"join","group":"broken","username":"a","password":"ok"}))
        .await;
    assert_eq!(c.recv().await["kind"], "join");
    // 23
    let mut d = s.ready("D").await;
    d.send(json!({"type":"join","kind":"join","group":"capped","username":"x"}))
        .await;
    assert_eq!(d.recv().await["kind"], "join");
    let mut e = s.ready("E").await;
    e.send(json!({"type":"join","kind":"join","group":"capped","username":"y"}))
        .await;
    assert_eq!(e.recv().await["value"], "too many users");
    e.send(json!({"type":"join","kind":"join","group":"capped","username":"boss","password":"b"}))
        .await;
    assert_eq!(e.recv().await["kind"], "join");
}

#[tokio::test]
async fn locking() {
    let s = server().await;
    let mut boss = s.joined("O", "open", "boss", "bosspw").await;
    let mut a = s.joined("A", "open", "alice", "").await;
    // 57, 22
    a.send(json!({"type":"groupaction","kind":"lock","value":"exam"}))
        .await;
    assert_eq!(a.recv_type("usermessage").await["value"], "not authorised");
    boss.send(json!({"type":"groupaction","kind":"lock","value":"exam in progress"}))
        .await;
    let ch = a.recv_type("joined").await;
    assert_eq!(
        (ch["kind"].as_str(), ch["status"]["locked"].as_bool()),
        (Some("change"), Some(true))
    );
    let mut n = s.ready("N").await;
    n.send(json!({"type":"join","kind":"join","group":"open","username":"newbie"}))
        .await;
    assert_eq!(n.recv().await["value"], "exam in progress");
    let st: Value = serde_json::from_str(
        &http()
            .get(s.url("/group/open/.status"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(st["locked"], true);
    let mut op2 = s.ready("P").await;
    op2.send(
        json!({"type":"join","kind":"join","group":"open","username":"boss","password":"bosspw"}),
    )
    .await;
    assert_eq!(op2.recv().await["kind"], "join");
    boss.send(json!({"type":"groupaction","kind":"unlock"}))
        .await;
    let ch = a.recv_type("joined").await;
    assert!(ch["status"].get("locked").is_none());
    n.send(json!({"type":"join","kind":"join","group":"open","username":"newbie"}))
        .await;
    assert_eq!(n.recv().await["kind"], "join");
}

#[tokio::test]
async fn protocol_errors_close_without_disturbing_others() {
    let s = server().await;
    let mut other = s.joined("Z", "open", "zed", "").await;
    // 29
    let mut a = s.joined("A", "open", "alice", "").await;
    a.send(json!({"type":"chat","source":"B","value":"hi"}))
        .await;
    assert_eq!(a.closed().await, (1002, "spoofed client id".into()));
    let mut a = s.joined("A2", "open", "alice", "").await;
    a.send(json!({"type":"chat","username":"mallory","value":"hi"}))
        .await;
    assert_eq!(a.closed().await, (1002, "spoofed username".into()));
    // 30
    let mut a = s.joined("A3", "open", "alice", "").await;
    a.send(json!({"type":"frobnicate"})).await;
    assert_eq!(a.closed().await, (1002, "unexpected message".into()));
    // 31
    let mut a = s.ready("A4").await;
    a.send(json!({"type":"request","request":{"":["audio"]}}))
        .await;
    assert_eq!(a.closed().await.0, 1011);
    // malformed JSON, bad request value
    let mut a = s.joined("A5", "open", "alice", "").await;
    a.send_raw("{not json".into()).await;
    assert_eq!(a.closed().await.0, 1011);
    let mut a = s.joined("A6", "open", "alice", "").await;
    a.send(json!({"type":"request","request":{"camera":true}}))
        .await;
    assert_eq!(a.closed().await.0, 1011);
    // oversized
    let mut a = s.joined("A7", "open", "alice", "").await;
    a.send_raw(format!(
        r#"{{"type":"chat","value":"{}"}}"#,
        "x".repeat(1_100_000)
    ))
    .await;
    assert_eq!(a.closed().await.0, 1009);
    // 42
    let mut a = s.joined("A8", "open", "alice", "").await;
    a.send(json!({"type":"ice","id":"S","candidate":null}))
        .await;
    assert_eq!(a.closed().await, (1002, "null candidate".into()));
    let mut a = s.joined("A9", "open", "alice", "").await;
    a.send(json!({"type":"ice","id":"unknown","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}})).await;
    a.send(json!({"type":"close"})).await;
    assert_eq!(a.closed().await, (1002, "empty id".into()));
    // 35: requestStream for an unknown stream
    let mut a = s.joined("A10", "open", "alice", "").await;
    a.send(json!({"type":"requestStream","id":"nope","request":["audio"]}))
        .await;
    assert_eq!(a.closed().await.0, 1011);
    // chat before joining is a recoverable error
    let mut a = s.ready("B1").await;
    a.send(json!({"type":"chat","value":"hi"})).await;
    assert_eq!(a.recv().await["value"], "join a group first");
    // the bystander saw only adds and deletes, and is still fine
    let seen = other.quiet().await;
    assert!(seen.iter().all(|m| m["type"] == "user"), "{seen:?}");
}

#[tokio::test]
async fn chat_and_user_messages() {
    let s = server().await;
    let mut boss = s.joined("O", "open", "boss", "bosspw").await;
    let mut a = s.joined("A", "open", "alice", "").await;
    let mut m = s.joined("M", "open", "mute", "x").await;
    let _ = boss.quiet().await;
    let _ = a.quiet().await;
    // 46
    a.send(json!({"type":"chat","kind":"","source":"A","username":"alice","dest":null,"value":"hello"})).await;
    for c in [&mut boss, &mut a, &mut m] {
        let msg = c.recv_type("chat").await;
        assert_eq!(msg["value"], "hello");
        assert_eq!(msg["source"], "A");
        assert_eq!(msg["username"], "alice");
        assert!(msg.get("privileged").is_none());
        assert_eq!(msg["id"].as_str().unwrap().len(), 11);
        assert!(chrono::DateTime::parse_from_rfc3339(msg["time"].as_str().unwrap()).is_ok());
    }
    boss.send(json!({"type":"chat","value":"from op","noecho":true}))
        .await;
    assert_eq!(a.recv_type("chat").await["privileged"], true);
    assert!(boss.quiet().await.is_empty(), "noecho");
    // 47
    a.send(json!({"type":"chat","dest":"O","value":"psst"}))
        .await;
    let p = boss.recv_type("chat").await;
    assert_eq!(
        (p["value"].as_str(), p["dest"].as_str()),
        (Some("psst"), Some("O"))
    );
    assert!(a.quiet().await.is_empty());
    assert!(m.quiet().await.iter().all(|x| x["value"] != "psst"));
    a.send(json!({"type":"chat","dest":"nobody","value":"x"}))
        .await;
    assert_eq!(a.recv().await["value"], "user unknown");
    // 48
    m.send(json!({"type":"chat","value":"can I?"})).await;
    assert_eq!(m.recv_type("usermessage").await["value"], "not authorised");
    a.send(json!({"type":"chat","kind":"caption","value":"sub"}))
        .await;
    assert_eq!(a.recv_type("usermessage").await["value"], "not authorised");
    // 50
    a.send(json!({"type":"usermessage","kind":"mute","dest":"O"}))
        .await;
    let u = boss.recv_type("usermessage").await;
    assert_eq!(
        (u["kind"].as_str(), u["source"].as_str()),
        (Some("mute"), Some("A"))
    );
    m.send(json!({"type":"usermessage","kind":"x","dest":"O"}))
        .await;
    assert_eq!(m.recv().await["value"], "not authorised");
    // 47, 50: history has the two broadcasts only
    let mut late = s.ready("L").await;
    late.send(json!({"type":"join","kind":"join","group":"open","username":"late"}))
        .await;
    late.recv_type("joined").await;
    let h1 = late.recv().await;
    let h2 = late.recv().await;
    assert_eq!(
        (h1["type"].as_str(), h1["value"].as_str()),
        (Some("chathistory"), Some("hello"))
    );
    assert_eq!(
        (h2["type"].as_str(), h2["value"].as_str()),
        (Some("chathistory"), Some("from op"))
    );
    assert_eq!(late.recv().await["type"], "user");
    // 58
    boss.send(json!({"type":"groupaction","kind":"clearchat","value":{"id":"x"}}))
        .await;
    assert_eq!(
        boss.recv_type("usermessage").await["value"],
        "bad value in clearchat"
    );
    boss.send(json!({"type":"groupaction","kind":"clearchat"}))
        .await;
    let cc = a.recv_type("usermessage").await;
    assert_eq!(
        (cc["kind"].as_str(), cc["privileged"].as_bool()),
        (Some("clearchat"), Some(true))
    );
    let mut later = s.ready("L2").await;
    later
        .send(json!({"type":"join","kind":"join","group":"open","username":"later"}))
        .await;
    later.recv_type("joined").await;
    assert_eq!(later.recv().await["type"], "user");
}

#[tokio::test]
async fn user_and_group_actions() {
    let s = server().await;
    let mut boss = s.joined("O", "rec", "boss", "b").await;
    let mut a = s.joined("A", "rec", "alice", "").await;
    let _ = boss.quiet().await;
    // 51
    a.send(json!({"type":"useraction","kind":"op","dest":"A"}))
        .await;
    assert_eq!(a.recv_type("usermessage").await["value"], "not authorised");
    boss.send(json!({"type":"useraction","kind":"op","dest":"A"}))
        .await;
    let ch = a.recv_type("joined").await;
    assert_eq!(ch["kind"], "change");
    assert_eq!(
        ch["permissions"],
        json!(["present", "message", "op", "record"])
    );
    let uc = boss.recv_type("user").await;
    assert_eq!(
        (uc["kind"].as_str(), uc["id"].as_str()),
        (Some("change"), Some("A"))
    );
    boss.send(json!({"type":"useraction","kind":"op","dest":"ghost"}))
        .await;
    assert_eq!(boss.recv_type("usermessage").await["value"], "no suck user");
    // 55
    a.send(json!({"type":"useraction","kind":"setdata","dest":"A","value":{"raisehand":true}}))
        .await;
    let uc = boss.recv_type("user").await;
    assert_eq!(uc["data"], json!({"raisehand": true}));
    a.send(json!({"type":"useraction","kind":"setdata","dest":"O","value":{}}))
        .await;
    assert_eq!(a.recv_type("usermessage").await["value"], "not authorised");
    // 54
    boss.send(json!({"type":"useraction","kind":"identify","dest":"A"}))
        .await;
    let info = boss.recv_type("usermessage").await;
    assert_eq!(info["kind"], "userinfo");
    assert_eq!(info["value"]["id"], "A");
    assert!(
        info["value"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let w = a.recv_type("usermessage").await;
    assert_eq!(
        w["value"],
        "Your IP address has been communicated to user boss."
    );
    // 59
    boss.send(json!({"type":"groupaction","kind":"setdata","value":{"topic":"week 3"}}))
        .await;
    assert_eq!(
        a.recv_type("joined").await["data"],
        json!({"topic":"week 3"})
    );
    // 60
    boss.send(json!({"type":"groupaction","kind":"subgroups"}))
        .await;
    let list = boss.recv_type("chat").await;
    assert_eq!(list["username"], "Server");
    // 53
    boss.send(json!({"type":"useraction","kind":"kick","dest":"A","value":"bye"}))
        .await;
    let k = a.recv_type("usermessage").await;
    assert_eq!(
        (
            k["kind"].as_str(),
            k["id"].as_str(),
            k["username"].as_str(),
            k["value"].as_str()
        ),
        (Some("kicked"), Some("O"), Some("boss"), Some("bye"))
    );
    assert_eq!(a.closed().await.0, 1000);
    assert_eq!(boss.recv_type("user").await["kind"], "delete");
    // 56
    boss.send(json!({"type":"useraction","kind":"setstatus","dest":"O"}))
        .await;
    assert_eq!(
        boss.recv_type("usermessage").await["value"],
        "unknown user action"
    );
    assert_eq!(boss.closed().await.0, 1000);
    let mut b2 = s.joined("O2", "rec", "boss", "b").await;
    b2.send(json!({"type":"groupaction","kind":"frobnicate"}))
        .await;
    assert_eq!(
        b2.recv_type("usermessage").await["value"],
        "unknown group action"
    );
    assert_eq!(b2.closed().await.0, 1000);
}

#[tokio::test]
async fn tokens() {
    use base64::Engine;
    let key = [7u8; 32];
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let jwt_group = format!(
        r#"{{"authKeys": [{{"kty": "oct", "alg": "HS256", "k": "{k}", "kid": "k1"}}],
            "users": {{"boss": {{"password": "b", "permissions": "op"}}}}}}"#
    );
    let s = TestServer::start(&[("t", &jwt_group), ("t/sub", &jwt_group)]).await;
    let exp = chrono::Utc::now().timestamp() + 3600;
    let sign = |claims: Value, kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&key)).unwrap()
    };
    // 64
    let good = sign(
        json!({"sub":"x","aud":"https://example.org/group/t/","exp":exp,"permissions":["present"]}),
        "k1",
    );
    let mut c = s.ready("J").await;
    c.send(json!({"type":"join","kind":"join","group":"t","token":good}))
        .await;
    let j = c.recv().await;
    assert_eq!(
        (j["kind"].as_str(), j["username"].as_str()),
        (Some("join"), Some("x"))
    );
    assert_eq!(j["permissions"], json!(["present"]));
    for bad in [
        sign(
            json!({"sub":"x","aud":"https://example.org/group/other/","exp":exp}),
            "k1",
        ),
        sign(
            json!({"sub":"x","aud":"https://example.org/group/t/"}),
            "k1",
        ),
        sign(
            json!({"sub":"x","aud":"https://example.org/group/t/","exp":exp}),
            "k2",
        ),
    ] {
        let mut c = s.ready("J2").await;
        c.send(json!({"type":"join","kind":"join","group":"t","token":bad}))
            .await;
        assert_eq!(c.recv().await["value"], "not authorised");
    }
    // 65
    let sub = sign(
        json!({"sub":"y","aud":"https://h/group/t/","exp":exp,"include-subgroups":true}),
        "k1",
    );
    let mut c = s.ready("J3").await;
    c.send(json!({"type":"join","kind":"join","group":"t/sub","token":sub}))
        .await;
    assert_eq!(c.recv().await["kind"], "join");
    let nosub = sign(
        json!({"sub":"y","aud":"https://h/group/t/","exp":exp}),
        "k1",
    );
    let mut c = s.ready("J4").await;
    c.send(json!({"type":"join","kind":"join","group":"t/sub","token":nosub}))
        .await;
    assert_eq!(c.recv().await["value"], "not authorised");
    // 61
    let mut boss = s.joined("O", "t", "boss", "b").await;
    boss.send(json!({"type":"groupaction","kind":"maketoken","value":{"group":"t","permissions":["present"],"expires":86400000}})).await;
    let t = boss.recv_type("usermessage").await;
    assert_eq!(t["kind"], "token", "{t}");
    let v = &t["value"];
    assert_eq!(
        (v["group"].as_str(), v["issuedBy"].as_str()),
        (Some("t"), Some("boss"))
    );
    assert!(v["expires"].is_string() && v["issuedAt"].is_string());
    let secret = v["token"].as_str().unwrap().to_owned();
    boss.send(json!({"type":"groupaction","kind":"maketoken","value":{"group":"t","permissions":["admin"],"expires":1000}})).await;
    assert_eq!(
        boss.recv_type("usermessage").await["error"],
        "not-authorised"
    );
    boss.send(
        json!({"type":"groupaction","kind":"maketoken","value":{"group":"t","permissions":[]}}),
    )
    .await;
    assert_eq!(
        boss.recv_type("usermessage").await["value"],
        "token doesn't expire"
    );
    // 62
    let mut c = s.ready("K").await;
    c.send(json!({"type":"join","kind":"join","group":"t","token":secret}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (f["error"].as_str(), f["value"].as_str()),
        (Some("need-username"), Some("username required"))
    );
    c.send(json!({"type":"join","kind":"join","group":"t","token":secret,"username":"boss"}))
        .await;
    assert_eq!(c.recv().await["error"], "duplicate-username");
    c.send(json!({"type":"join","kind":"join","group":"t","token":secret,"username":"guest"}))
        .await;
    let j = c.recv().await;
    assert_eq!(
        (j["kind"].as_str(), j["username"].as_str()),
        (Some("join"), Some("guest"))
    );
    // 63: revoke (expires one second ago)
    boss.send(
        json!({"type":"groupaction","kind":"edittoken","value":{"token":secret,"expires":-1000}}),
    )
    .await;
    assert_eq!(boss.recv_type("usermessage").await["kind"], "token");
    let mut c = s.ready("K2").await;
    c.send(json!({"type":"join","kind":"join","group":"t","token":secret,"username":"guest2"}))
        .await;
    assert_eq!(c.recv().await["value"], "not authorised");
}

#[tokio::test]
async fn autokick_without_operators() {
    let s = server().await;
    let mut n = s.ready("N").await;
    n.send(json!({"type":"join","kind":"join","group":"auto","username":"x"}))
        .await;
    assert_eq!(
        n.recv().await["value"],
        "there are no operators in this group"
    );
    let mut boss = s.joined("O", "auto", "boss", "b").await;
    n.send(json!({"type":"join","kind":"join","group":"auto","username":"x"}))
        .await;
    assert_eq!(n.recv().await["kind"], "join");
    boss.send(json!({"type":"join","kind":"leave","group":"auto"}))
        .await;
    let k = n.recv_type("usermessage").await;
    assert_eq!(
        (k["kind"].as_str(), k["value"].as_str()),
        (Some("kicked"), Some("there are no operators in this group"))
    );
    assert_eq!(n.closed().await.0, 1000);
}
