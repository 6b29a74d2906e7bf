//! TV in the browser: a channel as live fragmented MP4, which a plain
//! `<video src>` plays with no script (`/fmp4/channel/{id}`), and a tiny
//! page that does just that (`/watch/{id}`).
//!
//! Each request is one frames reader of the channel: the response starts
//! with the init segment built from the channel's programme, then carries a
//! `moof`+`mdat` fragment per keyframe group or half second. A slow browser
//! loses frames by the yard's live drop policy, never stalls the channel.
//! Channels whose video is not H.264 are refused (browsers would not play
//! them); a programme change that the init segment can not describe ends
//! the response, and the browser's reconnect starts afresh.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use media::fmp4::Fmp4Muxer;
use yard::{ChannelInfo, Reader, ReaderEvent, ReaderOptions, Yard};

/// How long a new reader waits for the channel's programme (the source may
/// have to start first).
const PROGRAM_WAIT: Duration = Duration::from_secs(10);

/// Decides whether a request may watch a channel: `None` lets it through,
/// `Some(response)` answers instead (401, 404...). It sees the whole request
/// head (headers, URI with any ticket, the peer address in the extensions).
pub type Guard = Arc<dyn Fn(&Parts, &ChannelInfo) -> Option<Response> + Send + Sync>;

#[derive(Clone)]
struct TvWeb {
    yard: Yard,
    guard: Option<Guard>,
}

/// `/fmp4/channel/{id}` and `/watch/{id}`, with `guard` (if any) consulted
/// before a channel is served, so the streaming rights of `/stream/...`
/// apply here too.
pub fn router_guarded(yard: Yard, guard: Option<Guard>) -> Router {
    Router::new()
        .route("/fmp4/channel/{id}", get(fmp4_channel))
        .route("/watch/{id}", get(watch))
        .with_state(TvWeb { yard, guard })
}

fn not_found(text: String) -> Response {
    (StatusCode::NOT_FOUND, format!("{text}\n")).into_response()
}

fn channel(s: &TvWeb, id: u32, parts: &Parts) -> Result<Arc<ChannelInfo>, Box<Response>> {
    let Some(c) = s.yard.channel(id) else {
        return Err(Box::new(not_found(format!("no channel with id {id}"))));
    };
    if let Some(refusal) = s.guard.as_ref().and_then(|g| g(parts, &c)) {
        return Err(Box::new(refusal));
    }
    Ok(c)
}

async fn fmp4_channel(State(s): State<TvWeb>, Path(id): Path<u32>, parts: Parts) -> Response {
    let channel = match channel(&s, id, &parts) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let opts = ReaderOptions::frames("fmp4").with_max_bytes(s.yard.reader_max_bytes());
    let mut reader = match s.yard.subscribe(channel.id, opts) {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let program = tokio::time::timeout(PROGRAM_WAIT, async {
        loop {
            match reader.recv().await? {
                ReaderEvent::Program(p) if p.is_ready() => return Some(p),
                ReaderEvent::Overflow => return None,
                _ => continue,
            }
        }
    })
    .await;
    let Ok(Some(program)) = program else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the channel sends nothing at the moment\n",
        )
            .into_response();
    };
    let mux = match Fmp4Muxer::new(&program) {
        Ok(m) => m,
        Err(e) => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("channel {}: {e}\n", channel.name),
            )
                .into_response();
        }
    };
    metrics::counter!("switchyard_http_fmp4_streams_total").increment(1);
    let init = Bytes::from(mux.init_segment());
    let state = Live {
        reader,
        mux,
        program,
        init: Some(init),
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One browser's live stream.
struct Live {
    reader: Reader,
    mux: Fmp4Muxer,
    program: Arc<media::Program>,
    init: Option<Bytes>,
}

impl Live {
    /// The next bytes of the response; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(init) = self.init.take() {
            return Some(init);
        }
        loop {
            match self.reader.recv().await? {
                ReaderEvent::Frame(f) => {
                    if let Some(fragment) = self.mux.push(&f) {
                        return Some(Bytes::from(fragment));
                    }
                }
                ReaderEvent::Program(p) => {
                    // Same tracks and parameters: the init segment still holds.
                    if p.tracks != self.program.tracks {
                        tracing::info!("programme changed; ending the fmp4 stream");
                        return None;
                    }
                }
                ReaderEvent::Overflow => return None,
                ReaderEvent::Ts(_)
                | ReaderEvent::SourceLost { .. }
                | ReaderEvent::SourceResumed => {}
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn watch(State(s): State<TvWeb>, Path(id): Path<u32>, parts: Parts) -> Response {
    let channel = match channel(&s, id, &parts) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let name = escape(&channel.name);
    // The response ends when the programme changes (or the browser fell too
    // far behind): the script starts a fresh stream then, as a player would.
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{number} {name} — Switchyard</title>\
         <style>html,body{{margin:0;height:100%;background:#000;color:#ddd;font:15px system-ui,sans-serif}}\
         header{{position:fixed;top:0;left:0;right:0;padding:8px 12px;background:rgba(0,0,0,.55);z-index:1}}\
         a{{color:#8ab4ff}}video{{width:100vw;height:100vh;display:block}}#status{{margin-left:1em;color:#aaa}}</style></head>\n\
         <body><header><a href=\"/web/\">Switchyard</a> · <b>{number} {name}</b><span id=\"status\" role=\"status\"></span></header>\n\
         <video id=\"tv\" autoplay muted controls playsinline src=\"/fmp4/channel/{id}\"></video>\n\
         <script>\n\
         (function () {{\n\
           var v = document.getElementById('tv'), s = document.getElementById('status'), tries = 0;\n\
           function again() {{\n\
             if (tries >= 5) {{ s.textContent = 'The channel can not be played right now.'; return; }}\n\
             tries += 1; s.textContent = 'reconnecting…';\n\
             setTimeout(function () {{ v.src = '/fmp4/channel/{id}?' + Date.now(); v.play().catch(function () {{}}); }}, 1000 * tries);\n\
           }}\n\
           v.addEventListener('playing', function () {{ tries = 0; s.textContent = ''; }});\n\
           v.addEventListener('error', again);\n\
           v.addEventListener('ended', again);\n\
         }})();\n\
         </script></body></html>\n",
        id = channel.id,
        number = channel.number,
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(app: Router, uri: &str) -> Response {
        let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn watch_page_and_stream_start() {
        let dir = tempfile::tempdir().unwrap();
        let yard = Yard::demo_for_tests(dir.path());
        let app = router_guarded(yard.clone(), None);
        let page = get(app.clone(), "/watch/1").await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = axum::body::to_bytes(page.into_body(), 1 << 16)
            .await
            .unwrap();
        let html = String::from_utf8_lossy(&html);
        assert!(
            html.contains("<video id=\"tv\" autoplay muted controls"),
            "{html}"
        );
        assert!(html.contains("src=\"/fmp4/channel/1\""));
        assert_eq!(
            get(app.clone(), "/watch/99").await.status(),
            StatusCode::NOT_FOUND
        );

        let live = get(app.clone(), "/fmp4/channel/1").await;
        assert_eq!(live.status(), StatusCode::OK);
        assert_eq!(live.headers()[header::CONTENT_TYPE], "video/mp4");
        let mut body = live.into_body().into_data_stream();
        use futures::StreamExt;
        let init = body.next().await.unwrap().unwrap();
        assert_eq!(&init[4..8], b"ftyp");
        let fragment = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&fragment[4..8], b"moof");
    }

    #[tokio::test]
    async fn guard_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let yard = Yard::demo_for_tests(dir.path());
        let guard: Guard = Arc::new(|_, _| Some(StatusCode::UNAUTHORIZED.into_response()));
        let app = router_guarded(yard, Some(guard));
        assert_eq!(
            get(app.clone(), "/fmp4/channel/1").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app, "/watch/1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
