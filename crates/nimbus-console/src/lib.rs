//! The web console: the static files of `/ui/` (HTML, CSS, plain JavaScript modules and the
//! vendored uPlot chart library), embedded in the binary at build time by `build.rs`, and the
//! router serving them. The console has no endpoint of its own: its pages call the same
//! SigV4-signed `/v1` and Lambda APIs as the CLI, signing in the browser with WebCrypto
//! (`assets/sigv4.js`).
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and connections
//! from this origin only, no inline script or style, no framing), `nosniff`, no referrer,
//! and a strong `ETag` (the SHA-256 of the file) with `Cache-Control: no-cache`, so a
//! browser revalidates with `If-None-Match` and gets `304` until the binary changes.
//! Files of 1 KiB or more are also embedded gzip-compressed (by `build.rs`, once) and
//! served so to a browser that accepts gzip (`Vary: Accept-Encoding`; that form has its own
//! `ETag`, the file's with `-gzip`).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Where the console lives.
pub const PREFIX: &str = "/ui";

/// The policy of every console answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One embedded file with its validators.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
    /// The file gzip-compressed and that form's validator, when worth serving.
    gzip: Option<(&'static [u8], HeaderValue)>,
    content_type: &'static str,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    embedded::FILES
        .iter()
        .map(|&(path, body, gz)| {
            let hash = &hex::encode(Sha256::digest(body))[..32];
            let etag = |suffix: &str| {
                HeaderValue::from_str(&format!("\"{hash}{suffix}\""))
                    .expect("hex is a valid header value")
            };
            Asset {
                path,
                body,
                etag: etag(""),
                gzip: gz.map(|gz| (gz, etag("-gzip"))),
                content_type: content_type(path),
            }
        })
        .collect()
});

/// Whether `Accept-Encoding` allows gzip (listed, or `*`, without `q=0`).
fn accepts_gzip(req: &HeaderMap) -> bool {
    req.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// The paths of every embedded file (relative to `/ui/`), sorted.
pub fn files() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// The router serving `/ui` (redirected to `/ui/`), `/ui/` (the index page) and every file.
/// Stateless: merge it into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PREFIX, get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/ui/{*path}",
            get(
                |axum::extract::Path(p): axum::extract::Path<String>, h: HeaderMap| async move {
                    serve(&p, &h)
                },
            ),
        )
}

fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// One file, `304` when the browser's copy is current, or a plain `404`.
fn serve(path: &str, req: &HeaderMap) -> Response {
    let mut resp = match ASSETS.iter().find(|a| a.path == path) {
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Some(a) => {
            let (body, etag, gzip) = match &a.gzip {
                Some((gz, etag)) if accepts_gzip(req) => (*gz, etag, true),
                _ => (a.body, &a.etag, false),
            };
            let fresh = req
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
            let mut r = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                ([(header::CONTENT_TYPE, a.content_type)], body).into_response()
            };
            let h = r.headers_mut();
            h.insert(header::ETAG, etag.clone());
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if a.gzip.is_some() {
                h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
            if gzip && !fresh {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
    };
    secure(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> Response {
        get_with(path, etag, None).await
    }

    async fn get_with(path: &str, etag: Option<&str>, encoding: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        if let Some(e) = encoding {
            req = req.header(header::ACCEPT_ENCODING, e);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn every_asset_is_embedded_with_its_licence() {
        let all: Vec<&str> = files().collect();
        for f in [
            "index.html",
            "app.js",
            "sigv4.js",
            "app.css",
            "vendor/uPlot.iife.min.js",
            "vendor/uPlot.min.css",
            "vendor/uPlot.LICENSE",
        ] {
            assert!(all.contains(&f), "{f} missing from {all:?}");
        }
    }

    #[tokio::test]
    async fn the_index_has_a_strict_policy_and_revalidates() {
        let r = get("/ui/", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        let again = get("/ui/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        let stale = get("/ui/", Some("\"0\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn scripts_have_their_type_and_unknown_files_are_404() {
        let r = get("/ui/vendor/uPlot.iife.min.js", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let missing = get("/ui/nope.js", None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let bare = get("/ui", None).await;
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(bare.headers()[header::LOCATION], "/ui/");
    }

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn a_browser_that_accepts_gzip_gets_the_compressed_file() {
        let plain = get("/ui/app.js", None).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        let plain_etag = plain.headers()[header::ETAG].clone();
        let plain = body(plain).await;

        let gz = get_with("/ui/app.js", None, Some("gzip, deflate, br, zstd")).await;
        assert_eq!(gz.status(), StatusCode::OK);
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let gz_etag = gz.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_ne!(gz_etag, plain_etag.to_str().unwrap());
        let gz = body(gz).await;
        assert!(
            gz.len() * 2 < plain.len(),
            "{} vs {}",
            gz.len(),
            plain.len()
        );
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain);

        // Each form revalidates against its own validator.
        let again = get_with("/ui/app.js", Some(&gz_etag), Some("gzip")).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.headers().get(header::CONTENT_ENCODING).is_none());
        let other = get_with("/ui/app.js", Some(&gz_etag), None).await;
        assert_eq!(other.status(), StatusCode::OK);

        // Refused with q=0: the file as it is.
        let refused = get_with("/ui/app.js", None, Some("gzip;q=0, identity")).await;
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
