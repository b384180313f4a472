//! The browser pages the binary serves itself, so that they work where there is no
//! internet (an exam centre): GraphiQL on `GET /graphql` and the proctors' live progress
//! page on `GET /monitor`, with every script and stylesheet they load under `/assets/`.
//!
//! Owns the embedded files (`assets/web/`: ours; `assets/vendor/`: GraphiQL and React
//! builds pinned from npm, see `assets/vendor/README.md`), their URLs, content types and
//! cache headers. Must not reference any URL outside this service (the pages'
//! `Content-Security-Policy` makes the browser refuse one too), nor know anything of the
//! API: the pages are ordinary clients of `POST /graphql` and `/graphql/ws`, and tokens
//! reach them in the URL fragment, which browsers never send to the server.
//!
//! | route | what | cache |
//! | --- | --- | --- |
//! | `GET /graphql` | GraphiQL (`#token=<JWT>` fills its Authorization header) | revalidate |
//! | `GET /monitor` | live exams of an assessment (`#token=<JWT>[&assessment=<id>]`) | revalidate |
//! | `GET /assets/graphiql.js`, `/assets/monitor.js` | the pages' own scripts | revalidate |
//! | `GET /assets/{package}/{version}/{file}` | vendored builds; the version is in the URL | a year, immutable |

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;

/// Cache policy of a URL that changes whenever its content does (the version is in it).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache policy of a URL whose content changes with the binary: revalidate every time.
const REVALIDATE: &str = "no-cache";

/// What the pages may load and connect to: this origin only. Styles may be inline because
/// GraphiQL's components inject `<style>` elements; `ws:`/`wss:` because browsers that
/// predate CSP level 3 do not count the page's own WebSocket URL as `'self'`. Fonts and
/// the (empty) favicon are `data:` URLs, which go nowhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; font-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file and how it is served.
struct Asset {
    /// Its URL path.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its `Cache-Control`.
    cache: &'static str,
    /// An HTML page: it gets the Content-Security-Policy and no referrer.
    page: bool,
    /// The file itself, compiled into the binary.
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the binary serves. The vendored URLs carry the version that
/// `assets/vendor/refresh.sh` pins; a new version is a new URL, so browsers may keep a
/// file for a year.
static ASSETS: [Asset; 8] = [
    Asset {
        path: "/graphql",
        content_type: HTML,
        cache: REVALIDATE,
        page: true,
        body: include_bytes!("../assets/web/graphiql.html"),
    },
    Asset {
        path: "/monitor",
        content_type: HTML,
        cache: REVALIDATE,
        page: true,
        body: include_bytes!("../assets/web/monitor.html"),
    },
    Asset {
        path: "/assets/monitor.js",
        content_type: JAVASCRIPT,
        cache: REVALIDATE,
        page: false,
        body: include_bytes!("../assets/web/monitor.js"),
    },
    Asset {
        path: "/assets/graphiql.js",
        content_type: JAVASCRIPT,
        cache: REVALIDATE,
        page: false,
        body: include_bytes!("../assets/web/graphiql.js"),
    },
    Asset {
        path: "/assets/graphiql/3.8.3/graphiql.min.js",
        content_type: JAVASCRIPT,
        cache: IMMUTABLE,
        page: false,
        body: include_bytes!("../assets/vendor/graphiql/graphiql.min.js"),
    },
    Asset {
        path: "/assets/graphiql/3.8.3/graphiql.min.css",
        content_type: CSS,
        cache: IMMUTABLE,
        page: false,
        body: include_bytes!("../assets/vendor/graphiql/graphiql.min.css"),
    },
    Asset {
        path: "/assets/react/18.3.1/react.production.min.js",
        content_type: JAVASCRIPT,
        cache: IMMUTABLE,
        page: false,
        body: include_bytes!("../assets/vendor/react/react.production.min.js"),
    },
    Asset {
        path: "/assets/react-dom/18.3.1/react-dom.production.min.js",
        content_type: JAVASCRIPT,
        cache: IMMUTABLE,
        page: false,
        body: include_bytes!("../assets/vendor/react-dom/react-dom.production.min.js"),
    },
];

impl Asset {
    fn respond(&'static self) -> Response {
        let headers = [
            (header::CONTENT_TYPE, self.content_type),
            (header::CACHE_CONTROL, self.cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ];
        if self.page {
            let page = [
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::REFERRER_POLICY, "no-referrer"),
            ];
            (headers, page, self.body).into_response()
        } else {
            (headers, self.body).into_response()
        }
    }
}

/// The routes of the pages and their assets. `GET /graphql` (GraphiQL) shares its path
/// with the server's `POST /graphql`: axum merges the two methods into one route.
pub fn routes() -> Router<App> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { asset.respond() }))
    })
}
