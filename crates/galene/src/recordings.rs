//! The recordings browser, `/recordings/NAME/` (reference §20.3): HTTP Basic
//! authentication by a user of group NAME holding `record`, an HTML table of
//! the group's files with a delete button each, `POST q=delete&filename=F`,
//! and the files themselves with range support.

use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tower::ServiceExt;
use yard::room::Permission;

use crate::groups::{self, Credentials, GroupError};
use crate::server::{GaleneState, not_found, redirect};

/// A file changed less than this long ago may still be growing.
const FRESH: Duration = Duration::from_secs(60);
/// The largest form a delete request may send.
const MAX_FORM: usize = 64 * 1024;

pub(crate) async fn root() -> Response {
    redirect("/recordings/")
}

pub(crate) async fn handle(
    State(state): State<GaleneState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let (group_name, file) = match path.strip_suffix('/') {
        Some(g) => (g.to_owned(), None),
        None => {
            let dir = state.recordings_dir().join(&path);
            let is_dir = tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir());
            if is_dir || state.inner.groups.get(&path).is_ok() {
                return redirect(&format!("/recordings/{path}/"));
            }
            match path.rsplit_once('/') {
                Some((g, f)) => (g.to_owned(), Some(f.to_owned())),
                None => return not_found(),
            }
        }
    };
    if !groups::valid_group_name(&group_name)
        || file
            .as_deref()
            .is_some_and(|f| f.is_empty() || f.starts_with('.') || f.contains('\\'))
    {
        return not_found();
    }
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
    if !authorised(&state, &group, req.headers()).await {
        return challenge(&group_name);
    }
    let dir = state.recordings_dir().join(&group_name);
    match (file, req.method().clone()) {
        (None, Method::GET | Method::HEAD) => listing(&group_name, &dir).await,
        (None, Method::POST) => delete(req, &group_name, &dir).await,
        (Some(f), Method::GET | Method::HEAD) => serve_file(dir.join(f), req).await,
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// Basic credentials of a group user whose permissions include `record`.
async fn authorised(
    state: &GaleneState,
    group: &std::sync::Arc<groups::Group>,
    headers: &HeaderMap,
) -> bool {
    let Some((username, password)) = basic_credentials(headers) else {
        return false;
    };
    let creds = Credentials {
        username: Some(username),
        password: Some(password),
        token: None,
    };
    let result = state.authenticate(group, creds).await;
    let ok = matches!(&result, Ok(id) if id.permissions.has(Permission::Record));
    if !ok {
        // slows down password guessing
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn challenge(group: &str) -> Response {
    let realm = format!("basic realm=\"recordings/{}\"", group.replace('"', ""));
    let realm = HeaderValue::from_str(&realm).unwrap_or(HeaderValue::from_static("basic"));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, realm)],
        "not authorised\n",
    )
        .into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a file name for use in a link.
fn href(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Files of the group's recordings directory, sorted by name, with sizes.
pub(crate) async fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(entry)) = rd.next_entry().await {
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if meta.is_file() && !name.starts_with('.') {
            out.push((name, meta.len()));
        }
    }
    out.sort();
    out
}

async fn listing(group: &str, dir: &std::path::Path) -> Response {
    let g = escape(group);
    let mut body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Recordings of {g}</title></head>\n<body><h1>Recordings of {g}</h1>\n<table>\n"
    );
    for (name, size) in files(dir).await {
        let n = escape(&name);
        body.push_str(&format!(
            "<tr><th style=\"text-align:left\"><a href=\"./{}\">{n}</a></th><td style=\"text-align:right\">{size}</td><td><form action=\"./\" method=\"post\"><input type=\"hidden\" name=\"q\" value=\"delete\"><input type=\"hidden\" name=\"filename\" value=\"{n}\"><button type=\"submit\">Delete</button></form></td></tr>\n",
            href(&name)
        ));
    }
    body.push_str("</table>\n</body></html>\n");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == key)
            .then(|| percent_decode(v))
            .flatten()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

async fn delete(req: Request, group: &str, dir: &std::path::Path) -> Response {
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_FORM).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let form = String::from_utf8_lossy(&body);
    if form_value(&form, "q").as_deref() != Some("delete") {
        return (StatusCode::BAD_REQUEST, "unknown query\n").into_response();
    }
    let Some(name) = form_value(&form, "filename") else {
        return (StatusCode::BAD_REQUEST, "no filename\n").into_response();
    };
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return (StatusCode::BAD_REQUEST, "bad filename\n").into_response();
    }
    match tokio::fs::remove_file(dir.join(&name)).await {
        Ok(()) => {
            tracing::info!(group, file = %name, "recording deleted");
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("/recordings/{group}/"))],
            )
                .into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(),
        Err(e) => {
            tracing::warn!(group, file = %name, error = %e, "cannot delete recording");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn serve_file(path: std::path::PathBuf, req: Request) -> Response {
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let fresh = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age < FRESH);
    let response = match tower_http::services::ServeFile::new(&path)
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => match e {},
    };
    let mut response = response;
    if fresh {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = "q=delete&filename=2026-01-01T10%3A00%3A00.000-a+b.webm";
        assert_eq!(form_value(f, "q").as_deref(), Some("delete"));
        assert_eq!(
            form_value(f, "filename").as_deref(),
            Some("2026-01-01T10:00:00.000-a b.webm")
        );
        assert_eq!(form_value("q=%zz", "q"), None);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
        assert_eq!(href("a b:c.webm"), "a%20b:c.webm");
    }
}
