//! The pages a person sees: `/` (transcribe a file or a recording, or
//! live from the microphone over `/v1/realtime`),
//! `/dashboard` (live activity from `/v1/stats`) and their assets, all
//! compiled into the binary so the service needs nothing beside it and the
//! pages work offline. The API reference (`/docs`, `/openapi.json`) is in
//! [`crate::api::docs`].
//!
//! With `WHISPER_SERVE_WEB_DIR` set, the same files are read from that
//! folder on every request instead: edit and reload while working on the
//! pages, no rebuild. Only the names below are served either way.

use std::borrow::Cow;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every asset: name, content type, embedded bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("assets/index.html")),
    ("dashboard.html", "text/html; charset=utf-8", include_bytes!("assets/dashboard.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("assets/app.js")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_bytes!("assets/dashboard.js")),
    ("live.js", "text/javascript; charset=utf-8", include_bytes!("assets/live.js")),
    ("pcm-worklet.js", "text/javascript; charset=utf-8", include_bytes!("assets/pcm-worklet.js")),
    ("common.js", "text/javascript; charset=utf-8", include_bytes!("assets/common.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("assets/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("assets/favicon.svg")),
];

/// The pages may talk to this origin only, run only their own scripts,
/// and play back the user's audio from blob: URLs; a page that tried to
/// reach another host would be stopped by the browser. `connect-src 'self'`
/// covers the live mode's WebSocket to this host (ws: or wss:, CSP Level 3),
/// and `script-src 'self'` its AudioWorklet module.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
    style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where the dev override reads from.
pub const DEV_DIR_ENV: &str = "WHISPER_SERVE_WEB_DIR";

fn lookup(name: &str) -> Option<(&'static str, Cow<'static, [u8]>)> {
    let (name, content_type, embedded) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    if let Some(dir) = std::env::var_os(DEV_DIR_ENV) {
        if let Ok(bytes) = std::fs::read(std::path::Path::new(&dir).join(name)) {
            return Some((content_type, Cow::Owned(bytes)));
        }
    }
    Some((content_type, Cow::Borrowed(embedded)))
}

fn serve(name: &str) -> Response {
    let Some((content_type, bytes)) = lookup(name) else {
        // Answered in the original API's JSON shape by error::shape_errors.
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small files that change with the binary: revalidate each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        bytes.into_owned(),
    )
        .into_response();
    if content_type.starts_with("text/html") {
        let h = resp.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // The microphone for this origin's recorder; nothing else.
        h.insert("permissions-policy", HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"));
    }
    resp
}

/// The transcribe page.
#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "The transcribe page", content_type = "text/html")))]
pub async fn index() -> Response {
    serve("index.html")
}

/// The live dashboard (reads `/v1/stats`).
#[utoipa::path(get, path = "/dashboard", tag = "pages",
    responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub async fn dashboard() -> Response {
    serve("dashboard.html")
}

/// The pages' scripts, stylesheet and icon.
#[utoipa::path(get, path = "/assets/{file}", tag = "pages",
    params(("file" = String, Path, description = "`app.js`, `live.js`, `pcm-worklet.js`, `dashboard.js`, `common.js`, `style.css`, `favicon.svg`")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such asset", body = crate::api::docs::OriginalErrorBody),
    ))]
pub async fn asset(Path(file): Path<String>) -> Response {
    // The HTML pages have their own routes.
    if file.ends_with(".html") {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_html_only_by_its_route() {
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
            assert!(lookup(name).is_some());
        }
        assert!(lookup("../Cargo.toml").is_none());
        assert!(lookup("secret.txt").is_none());
        assert!(crate::state::is_page("/assets/app.js") && crate::state::is_page("/") && !crate::state::is_page("/v1/stats"));
    }
}
