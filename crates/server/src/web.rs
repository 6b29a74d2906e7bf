//! The web port: TV over HTTP (`/stream/…`, `/playlist`, `/xmltv`), the JSON
//! API, metrics, health, and the home page. Protocol front ends that live on
//! the web port (Galène, OWT) are merged into this router by `main`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use yard::access::Rights;
use yard::{ReaderEvent, ReaderOptions, Yard};

#[derive(Clone)]
pub struct WebState {
    pub yard: Yard,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub public_url: Option<String>,
    pub scheme: &'static str,
    /// HTSP's tickets and recordings, for `/dvrfile` and ticketed streams.
    pub htsp: htsp::HtspContext,
    pub access: Arc<yard::access::Access>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/stream/channel/{id}", get(stream_by_id_or_uuid))
        .route("/stream/channelid/{id}", get(stream_by_id))
        .route("/dvrfile/{id}", get(dvr_file))
        .route("/stream/channelnumber/{n}", get(stream_by_number))
        .route("/stream/channelname/{name}", get(stream_by_name))
        .route("/playlist", get(playlist))
        .route("/playlist/channels", get(playlist))
        .route("/playlist/channels.m3u", get(playlist))
        .route("/xmltv", get(xmltv))
        .route("/xmltv/channels", get(xmltv))
        .route("/api/channels", get(api_channels))
        .route("/api/epg", get(api_epg))
        .with_state(Arc::new(state))
}

type St = State<Arc<WebState>>;

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

#[derive(Deserialize, Default)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Who is asking: a valid ticket for this path, else HTTP Basic credentials,
/// else what the source address is granted (anonymous, or by network).
fn rights(
    s: &WebState,
    peer: SocketAddr,
    headers: &HeaderMap,
    uri: &Uri,
    ticket: Option<&str>,
) -> Rights {
    if let Some(r) = ticket.and_then(|t| s.htsp.check_ticket(t, uri.path())) {
        return r;
    }
    let by_address = s.access.for_address(peer.ip());
    if let Some((user, pass)) = basic_auth(headers)
        && let Some(r) = s.access.verify(&user, |stored| stored == pass)
    {
        return r.union(&by_address);
    }
    by_address
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"Switchyard\"")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The rights of whoever sent a request, for the TV routes.
struct Asker {
    rights: Rights,
}

impl axum::extract::FromRequestParts<Arc<WebState>> for Asker {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Arc<WebState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Asker {
            rights: rights_of(s, parts),
        })
    }
}

fn rights_of(s: &WebState, parts: &axum::http::request::Parts) -> Rights {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let ticket = Query::<TicketQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.ticket);
    rights(s, peer, &parts.headers, &parts.uri, ticket.as_deref())
}

/// Why `rights` may not watch `channel`, as the response to send; `None`
/// when they may. A channel hidden by its tags is as missing as an unknown one.
fn refusal(
    s: &WebState,
    rights: &Rights,
    channel: &yard::ChannelInfo,
    missing: impl FnOnce() -> String,
) -> Option<Response> {
    if !rights.streaming {
        return Some(unauthorized("streaming needs a login"));
    }
    let tag_names: Vec<String> = channel
        .tags
        .iter()
        .filter_map(|t| s.yard.tag(*t))
        .map(|t| t.name.clone())
        .collect();
    if !rights.may_see_channel(tag_names.iter().map(String::as_str)) {
        return Some(not_found(missing()));
    }
    None
}

/// The streaming rights of `/stream/...` for the browser's TV routes
/// (`/watch/{id}`, `/fmp4/channel/{id}`).
pub fn tv_guard(state: WebState) -> crate::tvweb::Guard {
    Arc::new(move |parts, channel| {
        let rights = rights_of(&state, parts);
        refusal(&state, &rights, channel, || {
            format!("no channel with id {}", channel.id)
        })
    })
}

async fn stream_by_id(State(s): St, Path(id): Path<u32>, who: Asker) -> Response {
    stream(&s, &who, s.yard.channel(id), || {
        format!("no channel with id {id}")
    })
}

/// Tvheadend's `/stream/channel/<uuid>` (the `channelIdStr` of HTSP and
/// the playlist's `tvg-id`); a number is taken as the channel id.
async fn stream_by_id_or_uuid(State(s): St, Path(id): Path<String>, who: Asker) -> Response {
    let channel = match id.parse::<u32>() {
        Ok(n) => s.yard.channel(n),
        Err(_) => s.yard.channels().into_iter().find(|c| c.uuid == id),
    };
    stream(&s, &who, channel, || format!("no channel {id}"))
}

async fn stream_by_number(State(s): St, Path(n): Path<u32>, who: Asker) -> Response {
    stream(&s, &who, s.yard.channel_by_number(n), || {
        format!("no channel with number {n}")
    })
}

async fn stream_by_name(State(s): St, Path(name): Path<String>, who: Asker) -> Response {
    stream(&s, &who, s.yard.channel_by_name(&name), || {
        format!("no channel named {name:?}")
    })
}

/// A recording, with byte ranges so players can seek.
async fn dvr_file(
    State(s): St,
    Path(id): Path<u32>,
    Asker { rights: who }: Asker,
    req: axum::extract::Request,
) -> Response {
    use tower::ServiceExt;
    match s.htsp.dvr_file(id, &who) {
        Ok(path) => match tower_http::services::ServeFile::new(&path)
            .oneshot(req)
            .await
        {
            Ok(r) => {
                let mut r = r.into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
                r
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        Err(htsp::DvrFileError::Forbidden) if who.username.is_none() => {
            unauthorized("this recording needs a login")
        }
        Err(htsp::DvrFileError::Forbidden) => {
            (StatusCode::FORBIDDEN, "no access to this recording\n").into_response()
        }
        Err(e) => not_found(format!("recording {id}: {e}")),
    }
}

/// A channel as an endless single-programme TS.
fn stream(
    s: &WebState,
    who: &Asker,
    channel: Option<Arc<yard::ChannelInfo>>,
    missing: impl FnOnce() -> String,
) -> Response {
    let Some(channel) = channel else {
        return not_found(missing());
    };
    if let Some(r) = refusal(s, &who.rights, &channel, missing) {
        return r;
    }
    let id = channel.id;
    let opts = ReaderOptions::ts("http").with_max_bytes(s.yard.reader_max_bytes());
    let reader = match s.yard.subscribe(id, opts) {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    metrics::counter!("switchyard_http_streams_total").increment(1);
    let body = futures::stream::unfold(reader, |mut reader| async move {
        loop {
            match reader.recv().await? {
                ReaderEvent::Ts(b) => return Some((Ok::<Bytes, std::io::Error>(b), reader)),
                ReaderEvent::Overflow => return None,
                _ => continue,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "video/mp2t")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The base URL clients reached us by.
fn base_url(s: &WebState, headers: &HeaderMap) -> String {
    if let Some(u) = &s.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("{}://{host}", s.scheme)
}

async fn playlist(State(s): St, headers: HeaderMap) -> Response {
    let base = base_url(&s, &headers);
    let entries: Vec<media::m3u::M3uEntry> = s
        .yard
        .channels()
        .iter()
        .map(|c| media::m3u::M3uEntry {
            name: c.name.clone(),
            // As Tvheadend: the channel's uuid (the XMLTV export's channel
            // id, HTSP's channelIdStr) and the stream by HTSP channel id.
            url: format!("{base}/stream/channelid/{}", c.id),
            tvg_id: Some(c.uuid.clone()),
            tvg_name: Some(c.name.clone()),
            tvg_logo: c.icon.clone(),
            tvg_chno: Some(match c.number_minor {
                Some(minor) => format!("{}.{minor}", c.number),
                None => c.number.to_string(),
            }),
            duration: -1,
            group_title: Some(
                c.tags
                    .iter()
                    .filter_map(|t| s.yard.tag(*t))
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>()
                    .join(";"),
            )
            .filter(|g| !g.is_empty()),
            ..Default::default()
        })
        .collect();
    let mut resp = media::m3u::write_m3u(&[], &entries).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("audio/x-mpegurl"),
    );
    resp
}

async fn xmltv(State(s): St) -> Response {
    let now = chrono::Utc::now().timestamp();
    let mut channels = Vec::new();
    let mut programmes = Vec::new();
    for c in s.yard.channels() {
        let cid = c.uuid.clone();
        channels.push(media::xmltv::XmltvChannel {
            id: cid.clone(),
            display_names: vec![c.name.clone()],
            icon: c.icon.clone(),
            ..Default::default()
        });
        for e in s.yard.epg_events(c.id, now - 6 * 3600, i64::MAX) {
            programmes.push(media::xmltv::XmltvProgramme {
                channel: cid.clone(),
                start: e.start,
                stop: Some(e.stop),
                title: e.title.clone(),
                sub_title: e.subtitle.clone(),
                desc: e.description.clone(),
                categories: e.categories.clone(),
                icon: e.image.clone(),
                season: e.season_number,
                episode: e.episode_number,
                episode_onscreen: e.episode.clone(),
                ..Default::default()
            });
        }
    }
    let mut resp = media::xmltv::write_xmltv("Switchyard", &channels, &programmes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}

#[derive(Serialize)]
struct ApiChannel {
    id: u32,
    number: u32,
    name: String,
    icon: Option<String>,
    tags: Vec<String>,
    epg_id: Option<String>,
    service_name: Option<String>,
    uuid: String,
    stream: String,
    now: Option<Arc<yard::EpgEvent>>,
    next: Option<Arc<yard::EpgEvent>>,
}

async fn api_channels(State(s): St) -> Response {
    let now = chrono::Utc::now().timestamp();
    let list: Vec<ApiChannel> = s
        .yard
        .channels()
        .iter()
        .map(|c| {
            let (n, nx) = s.yard.epg_now_next(c.id, now);
            ApiChannel {
                id: c.id,
                number: c.number,
                name: c.name.clone(),
                icon: c.icon.clone(),
                tags: c
                    .tags
                    .iter()
                    .filter_map(|t| s.yard.tag(*t))
                    .map(|t| t.name.clone())
                    .collect(),
                epg_id: c.epg_id.clone(),
                service_name: c.service_name.clone(),
                uuid: c.uuid.clone(),
                stream: format!("/stream/channel/{}", c.id),
                now: n,
                next: nx,
            }
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(Deserialize)]
struct EpgQuery {
    channel: Option<u32>,
    from: Option<i64>,
    to: Option<i64>,
    title: Option<String>,
}

async fn api_epg(State(s): St, Query(q): Query<EpgQuery>) -> Response {
    if let Some(t) = q.title {
        return axum::Json(s.yard.epg_search(&t)).into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let from = q.from.unwrap_or(now);
    let to = q.to.unwrap_or(from + 24 * 3600);
    let ids: Vec<u32> = match q.channel {
        Some(c) if s.yard.channel(c).is_none() => {
            return not_found(format!("no channel with id {c}"));
        }
        Some(c) => vec![c],
        None => s.yard.channels().iter().map(|c| c.id).collect(),
    };
    let events: Vec<_> = ids
        .iter()
        .flat_map(|c| s.yard.epg_events(*c, from, to))
        .collect();
    axum::Json(events).into_response()
}

async fn metrics(State(s): St) -> Response {
    match &s.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn home(State(s): St) -> Html<String> {
    let now = chrono::Utc::now().timestamp();
    let mut rows = String::new();
    for c in s.yard.channels() {
        let (cur, next) = s.yard.epg_now_next(c.id, now);
        let show = |e: &Option<Arc<yard::EpgEvent>>| {
            e.as_ref()
                .map(|e| {
                    let t = chrono::DateTime::from_timestamp(e.start, 0)
                        .map(|d| d.format("%H:%M").to_string())
                        .unwrap_or_default();
                    format!("<span class=t>{t}</span> {}", esc(&e.title))
                })
                .unwrap_or_else(|| "—".into())
        };
        rows.push_str(&format!(
            "<tr><td class=n>{}</td><td><b>{}</b></td><td>{}</td><td class=next>{}</td>\
             <td><a href=\"/watch/{id}\">watch</a> · <a href=\"/stream/channel/{id}\">stream</a></td></tr>\n",
            c.number,
            esc(&c.name),
            show(&cur),
            show(&next),
            id = c.id
        ));
    }
    Html(format!(
        r#"<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1">
<title>Switchyard</title>
<style>
body{{font:16px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}}
header{{background:#1d2330;color:#fff;padding:1rem 1.5rem}} h1{{margin:0;font-size:1.4rem}}
main{{padding:1rem 1.5rem;max-width:60rem}} table{{border-collapse:collapse;width:100%;background:#fff}}
td,th{{padding:.5rem;border-bottom:1px solid #e3e6eb;text-align:left}} .n{{width:3rem;color:#667}}
.t{{color:#667;font-variant-numeric:tabular-nums}} .next{{color:#556}} a{{color:#0b63ce}}
@media (max-width:40rem){{.next{{display:none}}}}
</style></head><body>
<header><h1>Switchyard</h1></header>
<main>
<h2>Live TV</h2>
<table><thead><tr><th>#</th><th>Channel</th><th>Now</th><th class=next>Next</th><th></th></tr></thead>
<tbody>
{rows}</tbody></table>
<h2>Meetings</h2>
<p><a href="/group/lobby/">Join the lobby</a> or see <a href="/web/">all public rooms</a>.</p>
<p>Watch a channel here in the browser, open its stream in VLC or ffplay, or the whole <a href="/playlist">playlist</a>. Guide: <a href="/xmltv">XMLTV</a>, <a href="/api/epg">JSON</a>.</p>
</main></body></html>"#
    ))
}
