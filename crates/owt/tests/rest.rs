//! The management REST API over a real socket on 127.0.0.1: MAuth right and wrong, rooms,
//! tokens, error envelopes and CORS (reference checklist 34–37, 41, 42).

use std::time::Duration;

use owt::rest::MAuth;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Server {
    port: u16,
    id: String,
    key: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Server {
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let yard =
        yard::Yard::new(dir.path(), yard::SourcePolicy::default(), shutdown.clone()).unwrap();
    let sfu = rtc::Sfu::start(
        rtc::Config {
            port_base: 0,
            workers: 1,
            host_addresses: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        },
        shutdown.clone(),
    )
    .unwrap();
    let config = owt::Config {
        service_id: "svc".into(),
        service_key: "secret-key".into(),
        mauth_failure_delay_ms: 0,
        ..owt::Config::default()
    };
    let (router, state) = owt::build(config, yard, sfu, shutdown.clone()).unwrap();
    assert_eq!(state.service(), ("svc".into(), "secret-key".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    Server {
        port,
        id: "svc".into(),
        key: "secret-key".into(),
        shutdown,
        _dir: dir,
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn http(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    // Bodies are small; undo chunked encoding if the server chose it.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body,
    }
}

fn auth(s: &Server) -> String {
    MAuth::header(&s.id, &s.key, 1722430000000, "9f86d081884c7d65", None)
}

#[tokio::test]
async fn requests_without_or_with_wrong_mauth_get_401() {
    let s = start().await;
    let r = http(s.port, "GET", "/v1/rooms", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 1101, "message": "WWW-Authenticate: MAuth realm=\"http://marte3.dit.upm.es\""}})
    );
    let wrong_key = MAuth::header(&s.id, "not-the-key", 1, "c", None);
    assert_eq!(
        http(s.port, "GET", "/v1/rooms", Some(&wrong_key), None)
            .await
            .status,
        401
    );
    let wrong_service = MAuth::header("other", &s.key, 1, "c", None);
    assert_eq!(
        http(s.port, "GET", "/v1/rooms", Some(&wrong_service), None)
            .await
            .status,
        401
    );
    let spaced = auth(&s).replace(",mauth_cnonce", ", mauth_cnonce");
    assert_eq!(
        http(s.port, "GET", "/v1/rooms", Some(&spaced), None)
            .await
            .status,
        401
    );
    assert_eq!(
        http(s.port, "GET", "/v1/rooms", Some(&auth(&s)), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn room_lifecycle() {
    let s = start().await;
    let a = auth(&s);
    let r = http(
        s.port,
        "POST",
        "/v1/rooms",
        Some(&a),
        Some(r#"{"name":"x"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    let room = r.json();
    let id = room["_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 24);
    assert_eq!(room["id"], room["_id"]);
    assert_eq!(room["participantLimit"], -1);
    assert_eq!(room["inputLimit"], -1);
    assert_eq!(room["views"], json!([]));
    let roles: Vec<&str> = room["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "presenter",
            "viewer",
            "audio_only_presenter",
            "video_only_viewer",
            "sip"
        ]
    );
    let list = http(
        s.port,
        "GET",
        "/v1/rooms?page=1&per_page=100",
        Some(&a),
        None,
    )
    .await;
    assert!(
        list.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["_id"] == id.as_str())
    );
    let got = http(s.port, "GET", &format!("/v1/rooms/{id}/"), Some(&a), None).await;
    assert_eq!(got.json()["name"], "x");
    let put = http(
        s.port,
        "PUT",
        &format!("/v1/rooms/{id}"),
        Some(&a),
        Some(r#"{"participantLimit":"many"}"#),
    )
    .await;
    assert_eq!(put.status, 400);
    assert_eq!(put.json()["error"]["code"], 1201);
    let del = http(s.port, "DELETE", &format!("/v1/rooms/{id}"), Some(&a), None).await;
    assert_eq!((del.status, del.body.as_str()), (200, "Room deleted"));
    let gone = http(s.port, "GET", &format!("/v1/rooms/{id}"), Some(&a), None).await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.json(),
        json!({"error": {"code": 1003, "message": "Room not found"}})
    );
    let bad = http(
        s.port,
        "POST",
        "/v1/rooms",
        Some(&a),
        Some(r#"{"name":""}"#),
    )
    .await;
    assert_eq!(
        bad.json(),
        json!({"error": {"code": 1201, "message": "Invalid request body"}})
    );
    let bad = http(
        s.port,
        "POST",
        "/v1/rooms",
        Some(&a),
        Some(r#"{"name":"y","options":3}"#),
    )
    .await;
    assert_eq!(
        bad.json(),
        json!({"error": {"code": 1201, "message": "Invalid room option"}})
    );
}

#[tokio::test]
async fn tokens_verify_and_refuse_bad_roles() {
    let s = start().await;
    let a = auth(&s);
    let r = http(
        s.port,
        "POST",
        "/v1/rooms/public/tokens/",
        Some(&a),
        Some(r#"{"user":"u","role":"presenter"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    let t = owt::token::Token::decode(&r.body).unwrap();
    assert_eq!(t.host, format!("127.0.0.1:{}", s.port));
    assert!(t.secure);
    assert_eq!(t.token_id.len(), 24);
    assert_eq!(t.signature.len(), 88, "base64 of 64 hex characters");
    let r = http(
        s.port,
        "POST",
        "/v1/rooms/public/tokens",
        Some(&a),
        Some(r#"{"user":"u","role":"nope"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 1201, "message": "Name or role not valid"}})
    );
    let r = http(
        s.port,
        "POST",
        "/v1/rooms/nowhere/tokens",
        Some(&a),
        Some(r#"{"user":"u","role":"presenter"}"#),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], 1003);
    // mauth_username/mauth_role override the body.
    let with_user = MAuth::header(&s.id, &s.key, 5, "n", Some(("zoë", "nope")));
    let r = http(
        s.port,
        "POST",
        "/v1/rooms/public/tokens",
        Some(&with_user),
        Some(r#"{"user":"u","role":"presenter"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn cors_unknown_paths_and_malformed_bodies() {
    let s = start().await;
    let r = http(s.port, "OPTIONS", "/v1/rooms/anything/at/all", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers.contains("access-control-allow-origin: *"),
        "{}",
        r.headers
    );
    assert!(
        r.headers
            .contains("access-control-allow-methods: post, get, options, delete, patch")
    );
    let r = http(s.port, "GET", "/v1/nothing", Some(&auth(&s)), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 1001, "message": "Resource not found"}})
    );
    let r = http(
        s.port,
        "POST",
        "/v1/rooms",
        Some(&auth(&s)),
        Some("{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 1201, "message": "Failed to parse JSON body"}})
    );
    let r = http(
        s.port,
        "GET",
        "/v1.1/rooms/public/streams",
        Some(&auth(&s)),
        None,
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    let r = http(
        s.port,
        "GET",
        "/v1/rooms/public/participants/ghost",
        Some(&auth(&s)),
        None,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"error": {"code": 1005, "message": "Participant not found"}})
    );
}
