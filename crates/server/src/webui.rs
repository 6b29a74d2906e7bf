//! The browser client (`web/` in the repository), compiled into the binary so
//! a bare `switchyard` needs no files beside it and nothing from the network.
//!
//! * `/web/…` serves the client's files (HTML, CSS, JavaScript modules);
//!   `/web/` is the home page of rooms and TV channels.
//! * The group page `/group/NAME/` belongs to the Galène front end, which
//!   decides whether the group exists, redirects, and sets the page's
//!   Content-Security-Policy. [`group_page`] is a middleware that puts this
//!   client into the pages the Galène routes accept, so both rules hold: the
//!   protocol crate owns the URL space, this module owns the page.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../../web/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("group.html", "text/html; charset=utf-8"),
    asset!("home.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("galene.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// ETags are content hashes, computed once: the files can only change with
/// the binary.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{:016x}\"", fnv1a(a.body)))
        .collect()
});

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `/web/` (home page) and `/web/FILE`.
pub fn router() -> Router {
    Router::new()
        .route("/web", get(|| async { redirect("/web/") }))
        .route("/web/", get(index))
        .route(
            "/web/{*file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }),
        )
}

/// The home page (public rooms and TV channels), for a server that wants it
/// at `/`: `.route("/", get(webui::index))`.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let etag = ETAGS.get(i).map(String::as_str).unwrap_or("\"0\"");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.body,
    )
        .into_response()
}

/// The group page's HTML.
pub fn group_html() -> &'static [u8] {
    ASSETS
        .iter()
        .find(|a| a.name == "group.html")
        .map_or(&[][..], |a| a.body)
}

/// Whether `path` is a group page URL (`/group/NAME/`, NAME possibly with
/// slashes, no dot-component such as `.status`).
fn is_group_page(path: &str) -> bool {
    let Some(name) = path
        .strip_prefix("/group/")
        .and_then(|p| p.strip_suffix('/'))
    else {
        return false;
    };
    !name.is_empty()
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.'))
}

/// Middleware over the whole web router: when the Galène routes answer a
/// group page with HTML, the body becomes this client; status and headers
/// (redirects, the Content-Security-Policy) stay the front end's. A 404 for
/// a missing group keeps its status but gets the client too, which tells the
/// user in the page's own words and links back to the list of rooms.
/// Install with `.layer(axum::middleware::from_fn(webui::group_page))`.
pub async fn group_page(req: Request, next: Next) -> Response {
    let wanted = (req.method() == Method::GET || req.method() == Method::HEAD)
        && is_group_page(req.uri().path());
    let head = req.method() == Method::HEAD;
    let response = next.run(req).await;
    if !wanted || !matches!(response.status(), StatusCode::OK | StatusCode::NOT_FOUND) {
        return response;
    }
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let body = if head {
        Body::empty()
    } else {
        Body::from(group_html())
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn group_page_paths() {
        assert!(is_group_page("/group/lobby/"));
        assert!(is_group_page("/group/teaching/networking/"));
        assert!(!is_group_page("/group/lobby"));
        assert!(!is_group_page("/group/lobby/.status"));
        assert!(!is_group_page("/group//"));
        assert!(!is_group_page("/group/"));
        assert!(!is_group_page("/web/"));
    }

    async fn get_body(app: Router, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type() {
        for a in ASSETS {
            let (status, headers, body) = get_body(router(), &format!("/web/{}", a.name)).await;
            assert_eq!(status, StatusCode::OK, "{}", a.name);
            assert_eq!(headers[header::CONTENT_TYPE], a.content_type);
            assert_eq!(body, a.body);
        }
        let (status, _, body) = get_body(router(), "/web/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("<title>"));
        let (status, _, _) = get_body(router(), "/web/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn etag_revalidation_answers_304() {
        let (_, headers, _) = get_body(router(), "/web/app.js").await;
        let etag = headers[header::ETAG].clone();
        let resp = router()
            .oneshot(
                Request::get("/web/app.js")
                    .header(header::IF_NONE_MATCH, etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn group_page_keeps_the_front_ends_headers_and_errors() {
        let front = Router::new()
            .route(
                "/group/{*path}",
                get(|Path(p): Path<String>| async move {
                    match p.as_str() {
                        "lobby/" => (
                            [
                                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                                (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
                            ],
                            "placeholder",
                        )
                            .into_response(),
                        "lobby/.status" => (
                            [(header::CONTENT_TYPE, "text/html")],
                            "{\"name\":\"lobby\"}",
                        )
                            .into_response(),
                        _ => (
                            StatusCode::NOT_FOUND,
                            [(header::CONTENT_TYPE, "text/html")],
                            "nf",
                        )
                            .into_response(),
                    }
                }),
            )
            .merge(router())
            .layer(axum::middleware::from_fn(group_page));
        let (status, headers, body) = get_body(front.clone(), "/group/lobby/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        assert_eq!(body, group_html());
        let (status, _, body) = get_body(front.clone(), "/group/missing/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, group_html());
        let (status, _, body) = get_body(front.clone(), "/group/missing/.status").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, b"nf");
        let (_, _, body) = get_body(front, "/group/lobby/.status").await;
        assert_eq!(body, b"{\"name\":\"lobby\"}");
    }
}
