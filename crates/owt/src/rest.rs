//! OWT's management REST API (`/v1/…`, `/v1.1/…`): rooms, tokens, participants, streams,
//! authenticated with the MAuth header, answering with OWT's error envelopes
//! (`{"error":{"code","message"}}`) and the CORS headers every OWT REST client relies on.
//!
//! Paths are dispatched by hand rather than with axum routes so that trailing slashes, both
//! API versions and OWT's own 404 body come out exactly as OWT clients expect.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::room::RoomConfig;
use crate::server::OwtState;
use crate::session::RestFailure;
use crate::token::{TokenRecord, random_hex, sign};

const REALM_MESSAGE: &str = "WWW-Authenticate: MAuth realm=\"http://marte3.dit.upm.es\"";

/// The parts of an `Authorization: MAuth …` header, keyed as OWT keys them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MAuth {
    pub params: HashMap<String, String>,
}

impl MAuth {
    /// Parse as OWT's mauthParser does: split on `,`, then on the first `=`; the key loses
    /// its first six characters (`MAuth realm` → `realm`, `mauth_serviceid` → `serviceid`).
    /// A space after a comma therefore spoils the key, as it does in OWT.
    pub fn parse(header: &str) -> MAuth {
        let mut params = HashMap::new();
        for part in header.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key: String = k.chars().skip(6).collect();
            params.insert(key, v.to_owned());
        }
        MAuth { params }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    /// The signed string: `timestamp,cnonce[,username,role]`.
    pub fn signed_text(&self) -> Option<String> {
        let ts = self.get("timestamp")?;
        let cnonce = self.get("cnonce")?;
        Some(match (self.get("username"), self.get("role")) {
            (Some(u), Some(r)) => format!("{ts},{cnonce},{u},{r}"),
            _ => format!("{ts},{cnonce}"),
        })
    }

    /// Check method, service and signature against the configured service.
    pub fn verify(&self, service_id: &str, service_key: &str) -> bool {
        if self.get("signature_method") != Some("HMAC_SHA256")
            || self.get("serviceid") != Some(service_id)
        {
            return false;
        }
        match (self.signed_text(), self.get("signature")) {
            (Some(text), Some(sig)) => {
                let expected = sign(service_key, &text);
                expected.len() == sig.len()
                    && expected
                        .bytes()
                        .zip(sig.bytes())
                        .fold(0u8, |a, (x, y)| a | (x ^ y))
                        == 0
            }
            _ => false,
        }
    }

    /// The overriding user name (`mauth_username` is base64 of UTF-8) and role.
    pub fn user_and_role(&self) -> Option<(String, String)> {
        let user = B64.decode(self.get("username")?).ok()?;
        Some((String::from_utf8(user).ok()?, self.get("role")?.to_owned()))
    }

    /// Build a header value, as an OWT REST client would (for tests and load generators).
    pub fn header(
        service_id: &str,
        service_key: &str,
        timestamp: u64,
        cnonce: &str,
        user_role: Option<(&str, &str)>,
    ) -> String {
        let mut h = format!(
            "MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid={service_id},mauth_cnonce={cnonce},mauth_timestamp={timestamp}"
        );
        let text = match user_role {
            Some((u, r)) => {
                let u = B64.encode(u);
                h.push_str(&format!(",mauth_username={u},mauth_role={r}"));
                format!("{timestamp},{cnonce},{u},{r}")
            }
            None => format!("{timestamp},{cnonce}"),
        };
        h.push_str(&format!(",mauth_signature={}", sign(service_key, &text)));
        h
    }
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, DELETE, PATCH"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("origin, authorization, content-type"),
    );
    r
}

/// OWT's error envelope.
pub fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    // OWT picks the code by what the message names.
    let code = if message.contains("Room") {
        1003
    } else if message.contains("Stream") {
        1004
    } else if message.contains("Participant") {
        1005
    } else if message.contains("ervice") {
        1002
    } else {
        1001
    };
    error(StatusCode::NOT_FOUND, code, message)
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, 1201, message)
}

fn failed() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, 1301, "Operation failed")
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn text_ok(s: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        s,
    )
        .into_response()
}

fn rest_failure(f: RestFailure, what: &str) -> Response {
    match f {
        RestFailure::NotFound => not_found(&format!("{what} not found")),
        RestFailure::BadRequest => bad_request("Invalid request body"),
        RestFailure::Failed => failed(),
    }
}

/// The management API, to be merged into the web router.
pub fn router(state: OwtState) -> Router {
    Router::new()
        .route("/v1", any(dispatch))
        .route("/v1/", any(dispatch))
        .route("/v1/{*rest}", any(dispatch))
        .route("/v1.1", any(dispatch))
        .route("/v1.1/", any(dispatch))
        .route("/v1.1/{*rest}", any(dispatch))
        .with_state(state)
}

async fn dispatch(
    State(state): State<OwtState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::OPTIONS {
        return cors(StatusCode::OK.into_response());
    }
    let segments: Vec<&str> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(1)
        .collect();
    let response = handle(&state, &method, &segments, &query, &headers, &body).await;
    metrics::counter!("switchyard_owt_rest_requests_total", "status" => response.status().as_u16().to_string())
        .increment(1);
    cors(response)
}

async fn handle(
    state: &OwtState,
    method: &Method,
    segments: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if segments.first() != Some(&"rooms") {
        return not_found("Resource not found");
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(MAuth::parse);
    let (service_id, service_key) = state.service();
    let Some(auth) = auth.filter(|a| a.verify(&service_id, &service_key)) else {
        tracing::info!("owt rest: authentication failed");
        // OWT waits a random moment so failures can not be timed.
        let max = state.config().mauth_failure_delay_ms;
        if max > 0 {
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % max)).await;
        }
        return error(StatusCode::UNAUTHORIZED, 1101, REALM_MESSAGE);
    };
    let body = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return bad_request("Failed to parse JSON body"),
        }
    };
    match (segments, method.clone()) {
        (["rooms"], Method::GET) => list_rooms(state, query),
        (["rooms"], Method::POST) => create_room(state, &body),
        ([_, room, rest @ ..], m) => {
            let Some(config) = state.find_room(room) else {
                return not_found("Room not found");
            };
            room_resource(state, &config, rest, m, &body, &auth, headers).await
        }
        _ => not_found("Resource not found"),
    }
}

fn list_rooms(state: &OwtState, query: &HashMap<String, String>) -> Response {
    let all: Vec<Value> =
        state.with_portal(|p, _| p.rooms.list().map(RoomConfig::to_json).collect());
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p > 0);
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p > 0);
    let list = match (page, per_page) {
        (Some(page), Some(per)) => all
            .into_iter()
            .skip((page - 1).saturating_mul(per))
            .take(per)
            .collect(),
        _ => all,
    };
    json_ok(Value::Array(list))
}

fn create_room(state: &OwtState, body: &Value) -> Response {
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return bad_request("Invalid request body");
    };
    let mut room = RoomConfig::new(random_hex(24), name.to_owned());
    if let Some(options) = body.get("options") {
        if !options.is_object() {
            return bad_request("Invalid room option");
        }
        if room.apply(options).is_err() {
            return bad_request("Invalid room option");
        }
    }
    let v = room.to_json();
    state.with_portal(|p, _| p.rooms.insert(room));
    state.save_rooms();
    json_ok(v)
}

async fn room_resource(
    state: &OwtState,
    config: &RoomConfig,
    rest: &[&str],
    method: Method,
    body: &Value,
    auth: &MAuth,
    headers: &HeaderMap,
) -> Response {
    let room = config.name.as_str();
    match (rest, method) {
        ([], Method::GET) => json_ok(config.to_json()),
        ([], Method::PUT) => {
            let mut updated = config.clone();
            if updated.apply(body).is_err() {
                return bad_request("Bad room configuration");
            }
            let v = updated.to_json();
            state.with_portal(|p, _| p.rooms.insert(updated));
            state.save_rooms();
            json_ok(v)
        }
        ([], Method::DELETE) => {
            state.with_portal(|p, _| p.rooms.remove(&config.id));
            state.save_rooms();
            text_ok("Room deleted".into())
        }
        ([], _) => error(StatusCode::INTERNAL_SERVER_ERROR, 2001, "Not implemented"),
        (["tokens"], Method::POST) => {
            let (user, role) = match auth.user_and_role() {
                Some(ur) => ur,
                None => (
                    body.get("user")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    body.get("role")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                ),
            };
            if user.is_empty() || config.role(&role).is_none() {
                return bad_request("Name or role not valid");
            }
            let host = state.token_host(headers);
            let secure = state.config().secure;
            let key = state.token_key();
            let now = state.now_ms();
            let token = state.with_portal(|p, _| {
                p.tokens.create(
                    &key,
                    TokenRecord {
                        user,
                        role,
                        room: config.id.clone(),
                        created_ms: now,
                        host,
                        secure,
                    },
                )
            });
            text_ok(token)
        }
        (["participants"], Method::GET) => json_ok(Value::Array(
            state.with_portal(|p, shared| p.rest_participants(room, shared)),
        )),
        (["participants", id], Method::GET) => {
            let list = state.with_portal(|p, shared| p.rest_participants(room, shared));
            match list
                .into_iter()
                .find(|p| p.get("id").and_then(Value::as_str) == Some(*id))
            {
                Some(p) => json_ok(p),
                None => not_found("Participant not found"),
            }
        }
        (["participants", id], Method::PATCH) => {
            match state.with_portal(|p, _| p.rest_patch_participant(room, id, body)) {
                Ok(v) => json_ok(v),
                Err(f) => rest_failure(f, "Participant"),
            }
        }
        (["participants", id], Method::DELETE) => {
            match state.with_portal(|p, shared| p.rest_drop_participant(room, id, shared)) {
                Ok(out) => {
                    state.execute(out);
                    StatusCode::OK.into_response()
                }
                Err(f) => rest_failure(f, "Participant"),
            }
        }
        (["streams"], Method::GET) => json_ok(Value::Array(
            state.with_portal(|p, shared| p.rest_streams(room, shared)),
        )),
        (["streams", id], Method::GET) => {
            let list = state.with_portal(|p, shared| p.rest_streams(room, shared));
            match list
                .into_iter()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(*id))
            {
                Some(s) => json_ok(s),
                None => not_found("Stream not found"),
            }
        }
        (["streams", id], Method::PATCH) => {
            match state.with_portal(|p, shared| p.rest_patch_stream(room, id, body, shared)) {
                Ok((v, out)) => {
                    state.execute(out);
                    json_ok(v)
                }
                Err(f) => rest_failure(f, "Stream"),
            }
        }
        (["streams", id], Method::DELETE) => {
            match state.with_portal(|p, shared| p.rest_delete_stream(room, id, shared)) {
                Ok(out) => {
                    state.execute(out);
                    StatusCode::OK.into_response()
                }
                Err(f) => rest_failure(f, "Stream"),
            }
        }
        _ => not_found("Resource not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mauth_signature_vector() {
        // Checklist 35: base64(hex(HMAC-SHA256(key, "T,C"))).
        let h = MAuth::header("svc", "K", 1722430000000, "9f86d081884c7d65", None);
        let a = MAuth::parse(&h);
        assert_eq!(a.get("realm"), Some("http://marte3.dit.upm.es"));
        assert_eq!(
            a.get("signature"),
            Some(sign("K", "1722430000000,9f86d081884c7d65").as_str())
        );
        assert!(a.verify("svc", "K"));
        assert!(!a.verify("svc", "other"));
        assert!(!a.verify("other", "K"));
    }

    #[test]
    fn mauth_with_user_signs_username_as_sent() {
        let h = MAuth::header("svc", "K", 1, "c", Some(("zoë", "viewer")));
        let a = MAuth::parse(&h);
        let u = B64.encode("zoë");
        assert_eq!(a.signed_text().unwrap(), format!("1,c,{u},viewer"));
        assert!(a.verify("svc", "K"));
        assert_eq!(a.user_and_role(), Some(("zoë".into(), "viewer".into())));
    }

    #[test]
    fn mauth_space_after_comma_fails() {
        let h = MAuth::header("svc", "K", 1, "c", None)
            .replace(",mauth_serviceid", ", mauth_serviceid");
        assert!(!MAuth::parse(&h).verify("svc", "K"));
    }

    #[test]
    fn base64_padding_survives() {
        let a = MAuth::parse("MAuth realm=x,mauth_signature=YWJj==");
        assert_eq!(a.get("signature"), Some("YWJj=="));
    }
}
