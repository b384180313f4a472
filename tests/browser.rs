//! The browser pages in a real browser: Debian's headless Chromium (`/usr/bin/chromium`,
//! or `CHROMIUM`) driven over the DevTools protocol with chromiumoxide, which never
//! downloads a browser. Each test records every request the page makes and checks that
//! all of them went to the service itself (exam centres have no internet), then uses the
//! page as a person would and saves a screenshot under `target/browser-screenshots/`.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams, EventRequestWillBeSent, EventWebSocketCreated, EventWebSocketFrameSent,
};
use chromiumoxide::cdp::js_protocol::runtime::EventExceptionThrown;
use chromiumoxide::page::{Page, ScreenshotParams};
use common::TestApp;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How long a page gets to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// A headless Chromium with a fresh profile, closed (and its profile removed) on drop.
struct Chromium {
    browser: Browser,
    handler: JoinHandle<()>,
    profile: PathBuf,
}

impl Chromium {
    async fn launch() -> Self {
        let executable = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&executable).exists(),
            "{executable} is missing: apt-get install chromium (or set CHROMIUM)"
        );
        let profile = std::env::temp_dir().join(common::unique("chromium-profile"));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(&executable)
            .disable_default_args()
            .args([
                "headless",
                "no-sandbox",
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "disable-default-apps",
                "disable-dev-shm-usage",
                "hide-scrollbars",
                "mute-audio",
            ])
            .user_data_dir(&profile)
            .window_size(1280, 860)
            .viewport(None)
            .launch_timeout(Duration::from_secs(30))
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        // The DevTools connection only makes progress while its handler is polled.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Self {
            browser,
            handler,
            profile,
        }
    }

    /// Opens `url` in a new tab that records every request, WebSocket frame sent, uncaught
    /// exception and Content-Security-Policy violation of the page.
    async fn open(&self, url: &str) -> Tab {
        let page = self.browser.new_page("about:blank").await.expect("new tab");
        page.execute(EnableParams::default())
            .await
            .expect("network events");
        page.evaluate_on_new_document(
            "window.cspViolations = [];
             document.addEventListener('securitypolicyviolation',
               (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));",
        )
        .await
        .expect("CSP recorder");
        let log = Log::default();
        let mut tasks = Vec::new();
        let mut requests = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .expect("request events");
        let seen = log.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = requests.next().await {
                seen.push(&seen.requests, event.request.url.clone());
            }
        }));
        let mut sockets = page
            .event_listener::<EventWebSocketCreated>()
            .await
            .expect("websocket events");
        let seen = log.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = sockets.next().await {
                seen.push(&seen.requests, event.url.clone());
            }
        }));
        let mut frames = page
            .event_listener::<EventWebSocketFrameSent>()
            .await
            .expect("frame events");
        let seen = log.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = frames.next().await {
                seen.push(&seen.frames_sent, event.response.payload_data.clone());
            }
        }));
        let mut exceptions = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("exception events");
        let seen = log.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = exceptions.next().await {
                let details = &event.exception_details;
                let text = details
                    .exception
                    .as_ref()
                    .and_then(|e| e.description.clone())
                    .unwrap_or_else(|| details.text.clone());
                seen.push(&seen.exceptions, text);
            }
        }));
        page.goto(url).await.expect("navigate");
        Tab { page, log, tasks }
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// What a tab did, recorded from DevTools events.
#[derive(Clone, Default)]
struct Log {
    /// URL of every request and WebSocket the page opened.
    requests: Arc<Mutex<Vec<String>>>,
    /// Text of every WebSocket frame the page sent.
    frames_sent: Arc<Mutex<Vec<String>>>,
    /// Uncaught exceptions.
    exceptions: Arc<Mutex<Vec<String>>>,
}

impl Log {
    fn push(&self, list: &Mutex<Vec<String>>, mut entry: String) {
        // data: URLs (inlined fonts) run to kilobytes; their scheme is all that matters.
        if entry.starts_with("data:") {
            entry.truncate(entry.find(',').unwrap_or(entry.len()).min(64));
        }
        list.lock().expect("log").push(entry);
    }

    fn get(list: &Mutex<Vec<String>>) -> Vec<String> {
        list.lock().expect("log").clone()
    }
}

/// One open page.
struct Tab {
    page: Page,
    log: Log,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tab {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Tab {
    /// The value of a JavaScript expression (null when it has none).
    async fn eval(&self, js: &str) -> Value {
        match self.page.evaluate(js).await {
            Ok(result) => result.into_value().unwrap_or(Value::Null),
            Err(e) => json!({"evaluationError": e.to_string()}),
        }
    }

    /// Polls `js` until `done` accepts its value; panics after [`PATIENCE`] with the last
    /// value and what the page logged.
    async fn eventually(&self, what: &str, js: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(js).await;
            if done(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last value: {value}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the page did and shows, for a failure message.
    async fn diagnostics(&self) -> String {
        let text = self.eval("document.body.innerText.slice(0, 3000)").await;
        format!(
            "requests: {:#?}\nframes sent: {:#?}\nexceptions: {:#?}\npage text: {}",
            Log::get(&self.log.requests),
            Log::get(&self.log.frames_sent),
            Log::get(&self.log.exceptions),
            text.as_str().unwrap_or_default()
        )
    }

    /// Waits until the page has sent a WebSocket frame containing `needle`; returns it.
    async fn frame_sent(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(frame) = Log::get(&self.log.frames_sent)
                .into_iter()
                .find(|f| f.contains(needle))
            {
                return frame;
            }
            if Instant::now() > deadline {
                panic!(
                    "no WebSocket frame with {needle}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that every request of the page went to `app` (http or ws on its address),
    /// that the page broke no Content-Security-Policy rule and threw nothing.
    async fn assert_offline_and_clean(&self, app: &TestApp) {
        let requests = Log::get(&self.log.requests);
        assert!(!requests.is_empty(), "no request recorded");
        for request in &requests {
            // data: URLs (GraphiQL's inlined fonts, the empty favicon) never leave the page.
            if request.starts_with("data:") || request == "about:blank" {
                continue;
            }
            let url = url::Url::parse(request).expect("request URL");
            assert!(
                matches!(url.scheme(), "http" | "ws")
                    && url.host_str() == Some("127.0.0.1")
                    && url.port() == Some(app.addr.port()),
                "the page requested {request}, outside {}; all requests: {requests:#?}",
                app.addr
            );
        }
        let violations = self.eval("window.cspViolations").await;
        assert_eq!(violations, json!([]), "Content-Security-Policy violations");
        let exceptions = Log::get(&self.log.exceptions);
        assert!(exceptions.is_empty(), "uncaught exceptions: {exceptions:?}");
    }

    /// Saves a full-page screenshot as `target/browser-screenshots/{name}` and prints where.
    async fn screenshot(&self, name: &str) {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(name);
        self.page
            .save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
            .await
            .expect("screenshot");
        println!("screenshot: {}", path.display());
    }
}

/// `<target dir>/browser-screenshots`, from this test binary's path
/// (`<target dir>/debug/deps/browser-…`), so that a shared `CARGO_TARGET_DIR` works too.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("browser-screenshots"))
        .unwrap_or_else(|| PathBuf::from("target/browser-screenshots"))
}

/// GraphiQL's CodeMirror editor whose wrapper matches `selector`, as a JS expression.
fn editor(selector: &str) -> String {
    format!("document.querySelector('{selector} .CodeMirror').CodeMirror")
}

const QUERY_EDITOR: &str = ".graphiql-query-editor";
const RESPONSE_EDITOR: &str = ".result-window";

/// Replaces the query in GraphiQL's editor and presses its run button (a real click).
async fn run_in_graphiql(tab: &Tab, query: &str) {
    let set = format!(
        "{}.setValue({})",
        editor(QUERY_EDITOR),
        serde_json::to_string(query).expect("json")
    );
    tab.eval(&set).await;
    // GraphiQL parses the editor's text a moment after each change, and picks the
    // transport (HTTP or WebSocket) from that parse: wait for it, as a person would.
    let parsed = format!(
        "(() => {{ const e = {}; return !!e.documentAST && e.documentAST.loc.source.body === e.getValue(); }})()",
        editor(QUERY_EDITOR)
    );
    tab.eventually("GraphiQL to parse the new query", &parsed, |done| {
        *done == json!(true)
    })
    .await;
    tab.page
        .find_element(".graphiql-execute-button")
        .await
        .expect("run button")
        .click()
        .await
        .expect("click run");
}

/// The text of GraphiQL's response pane.
fn response_text() -> String {
    format!(
        "(() => {{ const e = document.querySelector('{RESPONSE_EDITOR} .CodeMirror'); \
         return e ? e.CodeMirror.getValue() : null; }})()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_renders_and_runs_a_query_and_a_subscription_with_no_network() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&common::bank_params(20)).await;
    let assessment =
        common::create_assessment(&app, &bank, json!({"maxItems": 5}), json!({})).await;
    let student = app.student("alice");
    let (exam, started) = common::start_assessment(&app, &student, &assessment).await;
    let admin = app.admin();

    let chromium = Chromium::launch().await;
    let tab = chromium
        .open(&app.url(&format!("/graphql#token={admin}")))
        .await;

    // Rendered, with the token from the fragment in the Headers tab.
    let bearer = format!("Bearer {admin}");
    tab.eventually(
        "GraphiQL's editors with the token in the headers",
        "[...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror.getValue())",
        |editors| {
            editors.as_array().is_some_and(|all| {
                all.iter()
                    .any(|e| e.as_str().unwrap_or("").contains(&bearer))
            })
        },
    )
    .await;

    run_in_graphiql(&tab, "{ assessments { id name status } }").await;
    let result = tab
        .eventually("the query's result", &response_text(), |text| {
            text.as_str().is_some_and(|t| t.contains("\"assessments\""))
        })
        .await;
    let result: Value = serde_json::from_str(result.as_str().unwrap_or("")).expect("JSON result");
    assert_eq!(
        result["data"]["assessments"][0]["id"], assessment,
        "{result}"
    );

    // A subscription over /graphql/ws, authenticated with the same token. With
    // includeCurrent, its first event (the state now) also says the server is listening.
    run_in_graphiql(
        &tab,
        &format!(
            "subscription {{\n  thetaUpdates(examSessionId: \"{exam}\", includeCurrent: true) \
             {{\n    itemsCompleted\n    theta\n  }}\n}}"
        ),
    )
    .await;
    let init = tab.frame_sent("connection_init").await;
    let init: Value = serde_json::from_str(&init).expect("connection_init JSON");
    assert_eq!(init["payload"], json!({"authorization": bearer}), "{init}");
    tab.frame_sent("thetaUpdates").await;
    tab.eventually("the current state", &response_text(), |text| {
        text.as_str()
            .is_some_and(|t| t.contains("\"itemsCompleted\": 0"))
    })
    .await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    common::answer(&app, &student, &exam, item, true).await;
    let event = tab
        .eventually(
            "the answer's thetaUpdates event",
            &response_text(),
            |text| {
                // The pane shows the current state until the next event replaces it.
                text.as_str().is_some_and(|t| {
                    t.contains("\"thetaUpdates\"") && !t.contains("\"itemsCompleted\": 0")
                })
            },
        )
        .await;
    let event: Value = serde_json::from_str(event.as_str().unwrap_or("")).expect("JSON event");
    assert_eq!(
        event["data"]["thetaUpdates"]["itemsCompleted"], 1,
        "{event}"
    );
    assert!(event["data"]["thetaUpdates"]["theta"].is_f64(), "{event}");

    tab.screenshot("graphiql.png").await;
    tab.assert_offline_and_clean(&app).await;
    drop(tab);
    chromium.close().await;
}

/// The rows of the monitor's table, as `[{student, status, items, theta, se, at}]`.
const MONITOR_ROWS: &str =
    "[...document.querySelectorAll('#exams tr[data-exam-id]')].map((tr) => ({
    exam: tr.dataset.examId, student: tr.cells[0].textContent, status: tr.cells[2].textContent,
    items: Number(tr.cells[3].textContent), theta: tr.cells[4].textContent,
    se: tr.cells[5].textContent, at: tr.cells[6].textContent }))";

/// The row of `student` in [`MONITOR_ROWS`] output.
fn row<'a>(rows: &'a Value, student: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["student"] == student)
}

/// Whether `student`'s row shows `status` after `items` items, with numbers for theta/SE.
fn shows(rows: &Value, student: &str, status: &str, items: u64) -> bool {
    row(rows, student).is_some_and(|r| {
        r["status"] == status
            && r["items"] == items
            && r["theta"]
                .as_str()
                .is_some_and(|t| t.parse::<f64>().is_ok())
            && r["se"].as_str().is_some_and(|t| t.parse::<f64>().is_ok())
    })
}

/// Answers `count` items of `exam` (correctly), starting from `item`; returns the payload
/// of the last answer.
async fn answer_items(app: &TestApp, token: &str, exam: &str, item: &str, count: usize) -> Value {
    let mut item = item.to_owned();
    let mut last = Value::Null;
    for _ in 0..count {
        last = common::answer(app, token, exam, &item, true).await;
        if let Some(next) = last["nextItem"]["itemId"].as_str() {
            item = next.to_owned();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_page_shows_live_progress() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&common::bank_params(20)).await;
    let other = common::create_assessment(&app, &bank, json!({"maxItems": 5}), json!({})).await;
    let assessment =
        common::create_assessment(&app, &bank, json!({"maxItems": 3}), json!({})).await;
    // Alice is one item in before the proctor opens the page: her row comes from the
    // exams query, Bob's from the subscription.
    let alice = app.student("alice");
    let (alice_exam, alice_start) = common::start_assessment(&app, &alice, &assessment).await;
    let item = alice_start["nextItem"]["itemId"].as_str().expect("item");
    let after_one = answer_items(&app, &alice, &alice_exam, item, 1).await;
    // Another assessment's exam, which the page must not show.
    let carol = app.student("carol");
    common::start_assessment(&app, &carol, &other).await;

    let chromium = Chromium::launch().await;
    let proctor = app.proctor("room-12");
    let tab = chromium
        .open(&app.url(&format!("/monitor#token={proctor}")))
        .await;
    tab.eventually(
        "the assessments in the picker",
        "[...document.querySelectorAll('#assessment option')].map((o) => o.value)",
        |values| {
            values
                .as_array()
                .is_some_and(|v| v.contains(&json!(assessment)) && v.contains(&json!(other)))
        },
    )
    .await;
    tab.eval(&format!(
        "(() => {{ const s = document.getElementById('assessment'); s.value = '{assessment}';
           s.dispatchEvent(new Event('change')); }})()"
    ))
    .await;
    tab.eventually(
        "the live connection",
        "document.getElementById('connection').dataset.state",
        |state| state == "live",
    )
    .await;
    let init = tab.frame_sent("connection_init").await;
    assert!(
        init.contains(&format!("\"authorization\":\"Bearer {proctor}\"")),
        "{init}"
    );
    tab.frame_sent("examActivity").await;
    tab.eventually("Alice's running exam", MONITOR_ROWS, |rows| {
        shows(rows, "alice", "ACTIVE", 1)
    })
    .await;
    // The subscription is registered right after `subscribe` is read; nothing acknowledges
    // it (see the GraphiQL test).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let bob = app.student("bob");
    let (bob_exam, bob_start) = common::start_assessment(&app, &bob, &assessment).await;
    tab.eventually("Bob's new exam", MONITOR_ROWS, |rows| {
        shows(rows, "bob", "ACTIVE", 0)
    })
    .await;
    let item = bob_start["nextItem"]["itemId"].as_str().expect("item");
    answer_items(&app, &bob, &bob_exam, item, 2).await;
    let item = after_one["nextItem"]["itemId"].as_str().expect("item");
    let last = answer_items(&app, &alice, &alice_exam, item, 2).await;
    assert_eq!(last["completed"], true, "{last}");

    let rows = tab
        .eventually(
            "Alice COMPLETED and Bob two items in",
            MONITOR_ROWS,
            |rows| shows(rows, "alice", "COMPLETED", 3) && shows(rows, "bob", "ACTIVE", 2),
        )
        .await;
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(2),
        "only this assessment: {rows}"
    );
    let summary = tab
        .eval("document.getElementById('summary').textContent")
        .await;
    assert_eq!(
        summary, "2 exam(s): 1 active, 1 completed, 0 abandoned.",
        "{summary}"
    );

    tab.screenshot("monitor.png").await;
    tab.assert_offline_and_clean(&app).await;
    drop(tab);
    chromium.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_and_their_assets_are_served_with_types_and_cache_headers() {
    let app = TestApp::spawn().await;
    let get = |path: &str| app.http.get(app.url(path)).send();
    for page in ["/graphql", "/monitor"] {
        let response = get(page).await.expect("page");
        assert_eq!(response.status(), 200, "{page}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-type"], "text/html; charset=utf-8",
            "{page}"
        );
        assert_eq!(headers["cache-control"], "no-cache", "{page}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .is_ok_and(|csp| csp.starts_with("default-src 'self'")),
            "{page}: {headers:?}"
        );
        let html = response.text().await.expect("html");
        assert!(
            !html.contains("//cdn") && !html.contains("https:"),
            "{page}: {html}"
        );
        // Every script and stylesheet the page names is served, with its type.
        let assets: Vec<&str> = html
            .split(['"', '\''])
            .filter(|s| s.starts_with("/assets/"))
            .collect();
        assert!(!assets.is_empty(), "{page}");
        for asset in assets {
            let response = get(asset).await.expect("asset");
            assert_eq!(response.status(), 200, "{asset}");
            let kind = if asset.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(response.headers()["content-type"], kind, "{asset}");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            let versioned = asset.split('/').filter(|s| !s.is_empty()).count() == 4;
            let cache = if versioned {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            assert_eq!(response.headers()["cache-control"], cache, "{asset}");
        }
    }
    // GraphQL itself still answers on the same path as GraphiQL.
    let data = app
        .ok(&app.admin(), "{ assessments { id } }", json!({}))
        .await;
    assert_eq!(data, json!({"assessments": []}));
}
