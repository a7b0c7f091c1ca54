//! A real headless Chromium for the cockpit tests, driven over WebDriver
//! (chromedriver) with fantoccini: a maintained async WebDriver client on
//! the same hyper the hub uses, so the tests add no second HTTP stack.
//!
//! The tests take turns (a lock), so two cores never run two Chromiums.
//! Each starts its own chromedriver (a tenth of a second) and one session:
//! a statically shared driver would outlive the test binary, and a test
//! that fails cannot leave a wedged browser to the next one.
//! Every page's console errors are read back through chromedriver's log
//! endpoint, and every request the page made is listed from the page's
//! own resource timing, so a test can fail on either.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A chromedriver of this test's own, stopped when dropped (and with it
/// any browser it still runs).
pub struct Browser {
    url: String,
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port.
    pub fn start() -> Browser {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = super::free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {chromedriver} ({e}): the cockpit tests need Debian's chromium and \
                     chromium-driver (tests/run.sh installs them when run as root)"
                )
            });
        let browser = Browser {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        super::eventually(
            Duration::from_secs(30),
            || match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("chromedriver did not start on {port}: {e}")),
            },
        );
        browser
    }

    /// A Chromium session: headless, loopback only (every other host name
    /// resolves to nothing), a window of `width` × `height`.
    pub async fn session(&self, width: u32, height: u32) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({"browser": "ALL"}),
        );
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Waits for this test's turn at the browser.
pub fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `test` with a page of `width` × `height` in its own Chromium, one
/// test at a time; the browser is closed whatever happens, then a failure
/// goes on.
pub fn with_page<F, Fut>(width: u32, height: u32, test: F)
where
    F: FnOnce(fantoccini::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    let _turn = turn();
    let browser = Browser::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser.session(width, height).await;
        let outcome = std::panic::AssertUnwindSafe(test(c.clone()))
            .catch_unwind()
            .await;
        let _ = c.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The console's errors since the last call (script errors, failed
/// requests, CSP refusals).
pub async fn errors(c: &fantoccini::Client) -> Vec<String> {
    let log = c
        .issue_cmd(BrowserLog)
        .await
        .expect("chromedriver's browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every URL the page loaded (the page, its assets, fetches, the stream).
pub async fn requests(c: &fantoccini::Client) -> Vec<String> {
    let v = c
        .execute(
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
            vec![],
        )
        .await
        .unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect()
}

/// Runs `script` (a function body) in the page until it returns a truthy
/// value, polling every 50 ms; the value, or a panic naming `what` and the
/// last value after `timeout`.
pub async fn until(
    c: &fantoccini::Client,
    what: &str,
    timeout: Duration,
    script: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let v = c
            .execute(script, vec![])
            .await
            .unwrap_or(serde_json::Value::Null);
        let truthy = match &v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => false,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?} (last: {v})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` selects. The live cockpit redraws its lists
/// and map as events arrive, so an element found can be replaced before
/// the click reaches it: then it is found again, until `timeout`.
pub async fn click(c: &fantoccini::Client, css: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let clicked = match c.find(fantoccini::Locator::Css(css)).await {
            Ok(e) => e.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(w))
                if w.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
}
