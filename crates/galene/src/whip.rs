//! WHIP ingest (reference §21, RFC 9725): `POST /group/NAME/.whip` with an
//! SDP offer publishes one up stream (label `""`) into the group as a member
//! named `whip` (or the token's username); `DELETE` on the returned
//! `Location` ends it; `PATCH` trickles candidates or restarts ICE.
//!
//! The publisher is a room member like any other, so Galène and OWT clients
//! see it join and get its stream offered through the usual SFU events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use yard::room::{FrontEnd, JoinRules, Participant, Permission, Room};

use crate::groups::{Credentials, GroupError};
use crate::server::{GaleneState, not_found, origin_allowed};

/// Largest SDP offer accepted.
const MAX_OFFER: usize = 1024 * 1024;
/// Largest trickle fragment accepted.
const MAX_FRAGMENT: usize = 64 * 1024;

/// One live WHIP publication.
pub(crate) struct WhipSession {
    group: String,
    room: Arc<Room>,
    participant: String,
    stream: String,
    token: Option<String>,
    etag: String,
    /// The client's offer, kept to build the re-offer of an ICE restart.
    offer: String,
    ufrag: String,
    pwd: String,
}

/// The parts of `/group/{path}` for WHIP: the group and the resource id.
fn parse_path(path: &str) -> Option<(&str, Option<&str>)> {
    if let Some(group) = path.strip_suffix("/.whip") {
        return Some((group, None));
    }
    let (rest, id) = path.rsplit_once('/')?;
    let group = rest.strip_suffix("/.whip")?;
    (!id.is_empty()).then_some((group, Some(id)))
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// `Link` headers announcing the ICE servers clients are told about.
fn link_headers(state: &GaleneState) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    for server in &state.inner.config.ice_servers {
        let urls: Vec<&str> = match server.get("urls") {
            Some(Value::String(u)) => vec![u.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let username = server.get("username").and_then(Value::as_str);
        let credential = server.get("credential").and_then(Value::as_str);
        for url in urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (username, credential)
                && (url.starts_with("turn:") || url.starts_with("turns:"))
            {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    u.replace('"', ""),
                    c.replace('"', "")
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                out.push(v);
            }
        }
    }
    out
}

fn cors(state: &GaleneState, req_headers: &HeaderMap, headers: &mut HeaderMap) {
    if let Some(origin) = req_headers.get(header::ORIGIN)
        && origin_allowed(&state.inner.config, req_headers)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn unsupported(accept: &'static str) -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        [(header::ACCEPT, accept)],
        "unsupported content type\n",
    )
        .into_response()
}

fn with_headers(
    mut response: Response,
    state: &GaleneState,
    req_headers: &HeaderMap,
    extra: &[(HeaderName, &str)],
) -> Response {
    let h = response.headers_mut();
    cors(state, req_headers, h);
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    response
}

/// Routes `/group/{path}` requests other than GET to WHIP.
pub(crate) async fn handle(
    State(state): State<GaleneState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let Some((group, id)) = parse_path(&path) else {
        return not_found();
    };
    let group = group.to_owned();
    let id = id.map(str::to_owned);
    match (req.method().clone(), id) {
        (Method::OPTIONS, None) => options(&state, req.headers(), "OPTIONS, POST"),
        (Method::OPTIONS, Some(_)) => options(&state, req.headers(), "OPTIONS, DELETE, PATCH"),
        (Method::POST, None) => post(state, group, req).await,
        (Method::DELETE, Some(id)) => delete(state, &group, &id, req.headers()).await,
        (Method::PATCH, Some(id)) => patch(state, &group, &id, req).await,
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn options(state: &GaleneState, req_headers: &HeaderMap, methods: &str) -> Response {
    let allow_headers = if methods.contains("PATCH") {
        "Authorization, Content-Type, If-Match, If-None-Match"
    } else {
        "Authorization, Content-Type"
    };
    let mut response = with_headers(
        StatusCode::NO_CONTENT.into_response(),
        state,
        req_headers,
        &[
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers),
            (header::ACCESS_CONTROL_EXPOSE_HEADERS, "Link"),
        ],
    );
    for link in link_headers(state) {
        response.headers_mut().append(header::LINK, link);
    }
    response
}

async fn post(state: GaleneState, group_name: String, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if !content_type_is(&headers, "application/sdp") {
        return unsupported("application/sdp");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_OFFER).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return (StatusCode::BAD_REQUEST, "the offer is not text\n").into_response();
    };
    let group = {
        let state = state.clone();
        let name = group_name.clone();
        tokio::task::spawn_blocking(move || state.inner.groups.get(&name)).await
    };
    let group = match group {
        Ok(Ok(g)) => g,
        Ok(Err(GroupError::NotFound | GroupError::IllegalName)) => return not_found(),
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let token = bearer(&headers);
    let creds = Credentials {
        username: Some("whip".to_owned()),
        password: token.is_none().then(String::new),
        token: token.clone(),
    };
    let identity = state.authenticate(&group, creds).await;
    let identity = match identity {
        Ok(i) => i,
        Err(e) => {
            tracing::info!(group = %group_name, error = %e, "WHIP publisher refused");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return with_headers(
                (StatusCode::UNAUTHORIZED, "not authorised\n").into_response(),
                &state,
                &headers,
                &[],
            );
        }
    };
    if !identity.permissions.has(Permission::Present) {
        return with_headers(
            (StatusCode::FORBIDDEN, "not authorised to present\n").into_response(),
            &state,
            &headers,
            &[],
        );
    }
    let room = state.inner.rooms.get_or_create(&group.name);
    let participant_id = yard::room::new_id();
    let mut me = Participant::new(
        participant_id.clone(),
        identity.username.clone(),
        FrontEnd::Whip,
    );
    me.permissions = identity.permissions.clone();
    let rules = JoinRules {
        exempt: identity.permissions.has(Permission::Op),
        max_participants: group.description.max_clients,
        require_operator: group.description.autokick,
    };
    if let Err(e) = room.join(me, &rules, SystemTime::now()) {
        return with_headers(
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response(),
            &state,
            &headers,
            &[],
        );
    }
    let owner = rtc::ParticipantRef {
        id: participant_id.clone(),
        username: identity.username.clone(),
    };
    let opts = rtc::PublishOptions {
        id: None,
        label: String::new(),
        codecs: group.codecs(),
    };
    let publication = match state
        .inner
        .sfu
        .publish(&group.name, owner, offer.clone(), opts)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            room.leave(&participant_id);
            tracing::info!(group = %group_name, error = %e, "WHIP offer refused");
            return with_headers(
                (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
                &state,
                &headers,
                &[],
            );
        }
    };
    let resource = random_hex(16);
    let etag = format!("\"{}\"", random_hex(8));
    let (ufrag, pwd) = ice_credentials(&offer);
    state.inner.whip.lock().insert(
        resource.clone(),
        WhipSession {
            group: group.name.clone(),
            room: room.clone(),
            participant: participant_id.clone(),
            stream: publication.id.clone(),
            token,
            etag: etag.clone(),
            offer,
            ufrag,
            pwd,
        },
    );
    tracing::info!(group = %group.name, stream = %publication.id, user = %identity.username, "WHIP publisher joined");
    // The session ends with its peer: ICE failure, the SFU closing it, or DELETE.
    let mut events = publication.events;
    let watcher = state.clone();
    let key = resource.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if matches!(event, rtc::PeerEvent::Failed(_) | rtc::PeerEvent::Closed(_)) {
                break;
            }
        }
        watcher.inner.whip.lock().remove(&key);
        room.leave(&participant_id);
    });
    let location = format!("/group/{}/.whip/{resource}", group.name);
    let mut response = with_headers(
        (StatusCode::CREATED, publication.answer_sdp).into_response(),
        &state,
        &headers,
        &[
            (header::CONTENT_TYPE, "application/sdp"),
            (header::LOCATION, &location),
            (header::ETAG, &etag),
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Location, Content-Type, Link, ETag",
            ),
        ],
    );
    for link in link_headers(&state) {
        response.headers_mut().append(header::LINK, link);
    }
    response
}

/// The session `id` of `group` if the request may act on it.
fn authorise(
    state: &GaleneState,
    group: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(), Box<Response>> {
    let sessions = state.inner.whip.lock();
    let Some(s) = sessions.get(id).filter(|s| s.group == group) else {
        return Err(Box::new(not_found()));
    };
    if let Some(token) = &s.token
        && bearer(headers).as_ref() != Some(token)
    {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "not authorised\n").into_response(),
        ));
    }
    Ok(())
}

async fn delete(state: GaleneState, group: &str, id: &str, headers: &HeaderMap) -> Response {
    if let Err(r) = authorise(&state, group, id, headers) {
        return with_headers(*r, &state, headers, &[]);
    }
    let session = {
        let mut sessions = state.inner.whip.lock();
        if let Some(s) = sessions.get(id)
            && let Some(want) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
            && want.trim() != "*"
            && want.trim() != s.etag
        {
            return StatusCode::PRECONDITION_FAILED.into_response();
        }
        sessions.remove(id)
    };
    let Some(session) = session else {
        return not_found();
    };
    state.inner.sfu.close(&session.stream).await;
    session.room.leave(&session.participant);
    tracing::info!(group, stream = %session.stream, "WHIP publisher left");
    with_headers(StatusCode::OK.into_response(), &state, headers, &[])
}

/// `a=ice-ufrag` and `a=ice-pwd` of an SDP or SDP fragment (first ones).
fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

/// The client's offer with its ICE credentials replaced (an ICE restart).
fn with_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let l = line.trim_end();
        if l.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}"));
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}"));
        } else if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(l);
        }
        out.push_str("\r\n");
    }
    out
}

async fn patch(state: GaleneState, group: &str, id: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if let Err(r) = authorise(&state, group, id, &headers) {
        return with_headers(*r, &state, &headers, &[]);
    }
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return unsupported("application/trickle-ice-sdpfrag");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_FRAGMENT).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let fragment = String::from_utf8_lossy(&body).into_owned();
    let (ufrag, pwd) = ice_credentials(&fragment);
    let (stream, restart_offer) = {
        let sessions = state.inner.whip.lock();
        let Some(s) = sessions.get(id) else {
            return not_found();
        };
        let restart = (!ufrag.is_empty() && !pwd.is_empty()) && (ufrag != s.ufrag || pwd != s.pwd);
        (
            s.stream.clone(),
            restart.then(|| with_credentials(&s.offer, &ufrag, &pwd)),
        )
    };
    let sfu = &state.inner.sfu;
    let Some(offer) = restart_offer else {
        for line in fragment.lines() {
            let line = line.trim();
            if line.starts_with("a=candidate:")
                && let Err(e) = sfu.add_ice_candidate(&stream, line).await
            {
                tracing::debug!(error = %e, "trickled candidate refused");
            }
        }
        return with_headers(
            StatusCode::NO_CONTENT.into_response(),
            &state,
            &headers,
            &[],
        );
    };
    let answer = match sfu.remote_offer(&stream, offer.clone()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "WHIP ICE restart failed");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    for line in fragment.lines() {
        let line = line.trim();
        if line.starts_with("a=candidate:") {
            let _ = sfu.add_ice_candidate(&stream, line).await;
        }
    }
    let etag = format!("\"{}\"", random_hex(8));
    if let Some(s) = state.inner.whip.lock().get_mut(id) {
        s.offer = offer;
        s.ufrag = ufrag;
        s.pwd = pwd;
        s.etag = etag.clone();
    }
    let (server_ufrag, server_pwd) = ice_credentials(&answer);
    let mut frag = format!("a=ice-ufrag:{server_ufrag}\r\na=ice-pwd:{server_pwd}\r\n");
    for line in answer.lines() {
        let line = line.trim();
        if line.starts_with("a=candidate:") {
            frag.push_str(line);
            frag.push_str("\r\n");
        }
    }
    with_headers(
        (StatusCode::OK, frag).into_response(),
        &state,
        &headers,
        &[
            (header::CONTENT_TYPE, "application/trickle-ice-sdpfrag"),
            (header::ETAG, &etag),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("a/b/.whip"), Some(("a/b", None)));
        assert_eq!(parse_path("a/.whip/xyz"), Some(("a", Some("xyz"))));
        assert_eq!(parse_path("a/.whip/"), None);
        assert_eq!(parse_path("a/.status"), None);
        assert_eq!(parse_path("a/"), None);
    }

    #[test]
    fn credentials_are_replaced_and_candidates_dropped() {
        let offer = "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\nm=audio\r\n";
        let new = with_credentials(offer, "u2", "p2");
        assert_eq!(new, "v=0\r\na=ice-ufrag:u2\r\na=ice-pwd:p2\r\nm=audio\r\n");
        assert_eq!(ice_credentials(&new), ("u2".into(), "p2".into()));
    }
}
