//! The digital cockpit in a real headless Chromium: it loads with no
//! script error and nothing leaving loopback, draws every grid, shows the
//! typhoon story as it happens, filters by grid (in the URL), reconnects
//! without losing or repeating an event, has a kiosk mode and an English
//! toggle; and `govhub demo --serve` makes the README's screenshot.

mod support;

use std::io::BufRead;
use std::time::{Duration, Instant};
use support::browser::{click, errors, requests, until, with_page};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the page's stream is live.
async fn live(c: &fantoccini::Client) {
    until(
        c,
        "the stream to be live",
        WAIT,
        "return document.querySelector('#conn').classList.contains('conn-live');",
    )
    .await;
}

/// Signs in on the cockpit's form with `token` and waits until the
/// stream is live.
async fn sign_in(c: &fantoccini::Client, token: &str) {
    until(
        c,
        "the sign-in form",
        WAIT,
        "return !document.querySelector('#signin').hidden && document.body.classList.contains('signed-out');",
    )
    .await;
    let input = c
        .find(fantoccini::Locator::Css("#signin-token"))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    c.find(fantoccini::Locator::Css("#signin-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Opens the Yingfeng cockpit signed in as the command room.
async fn open_signed_in(c: &fantoccini::Client, d: &Deployment, path: &str) {
    c.goto(&d.hub.url(path)).await.unwrap();
    sign_in(c, &d.hub.tokens["command-room"]).await;
    live(c).await;
}

/// The page's URL query (where the cockpit keeps its view).
async fn query(c: &fantoccini::Client) -> String {
    let url = c.current_url().await.unwrap();
    url.query().unwrap_or_default().to_string()
}

async fn no_errors(c: &fantoccini::Client) {
    let e = errors(c).await;
    assert!(e.is_empty(), "the page logged errors: {e:#?}");
}

fn river_detection(id: &str) -> serde_json::Value {
    serde_json::json!({
        "detection_id": id,
        "camera_id": "cam-qjd-17",
        "class": "person_on_water",
        "confidence": 0.93,
        "snapshot_url": "http://city-brain.example/snap/cam-qjd-17/140455.jpg",
        "time": "2025-08-01 14:04:55",
    })
}

#[test]
fn the_cockpit_loads_every_grid_with_no_script_error_and_nothing_off_loopback() {
    let d = Deployment::start();
    // The page and its assets carry the strict policy.
    let (status, headers) = head(&d.hub.url("/"));
    assert_eq!(status, 200);
    let csp = headers
        .get("content-security-policy")
        .cloned()
        .unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    with_page(1600, 1100, |c| async move {
        open_signed_in(&c, &d, "/").await;
        let shapes = c
            .execute(
                "return document.querySelectorAll('#map path.grid').length;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            shapes, 57,
            "the street, its 17 communities and 39 sub-grids"
        );
        let names = c
            .execute(
                "return [...document.querySelectorAll('#map text.label')].map(l => l.textContent);",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            names.to_string().contains("盈一村") && names.to_string().contains("丰北村"),
            "{names}"
        );
        // The adapters' health is there.
        until(
            &c,
            "the adapters table",
            WAIT,
            "return document.querySelectorAll('#adapters tbody tr').length >= 9;",
        )
        .await;
        let base = d.hub.base.clone();
        let off: Vec<String> = requests(&c)
            .await
            .into_iter()
            .filter(|u| !u.starts_with(&base))
            .collect();
        assert!(off.is_empty(), "requests off the hub: {off:?}");
        no_errors(&c).await;
    });
}

#[test]
fn the_typhoon_story_appears_within_two_seconds_counts_down_and_closes_with_seven_steps() {
    let d = Deployment::start();
    with_page(1600, 1100, |c| async move {
        open_signed_in(&c, &d, "/").await;
        let (status, _, body) = post(
            &d.hub.url("/v1/ingest/video-patrol"),
            &[("content-type", "application/json")],
            river_detection("vp-cockpit-1").to_string().as_bytes(),
        );
        let ingested = Instant::now();
        assert_eq!(status, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let case = v["accepted"][0]["caseid"].as_str().unwrap().to_string();
        until(
            &c,
            "the report in the feed",
            Duration::from_secs(2),
            "return document.querySelector('#feed li.item[data-id=\"vp-cockpit-1\"]');",
        )
        .await;
        until(&c, "its grid lit on the map", Duration::from_secs(2),
            "return document.querySelector('#map path[data-grid=\"yingfeng/yingyi/2\"]').classList.contains('st-open');").await;
        let shown = ingested.elapsed();
        assert!(
            shown < Duration::from_secs(2),
            "shown {shown:?} after ingest"
        );
        let countdown = format!("return document.querySelector('#cases li.case[data-case=\"{case}\"] .countdown .text')?.textContent;");
        let first = until(&c, "the case's countdown", WAIT, &countdown).await;
        assert!(first.as_str().unwrap().contains("剩余"), "{first}");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let later = c.execute(&countdown, vec![]).await.unwrap();
        assert_ne!(first, later, "the countdown does not move");
        // The escalation ladder stands on the sub-grid.
        let rung = c.execute(&format!("return document.querySelector('#cases li.case[data-case=\"{case}\"] .rung.now').dataset.level;"), vec![]).await.unwrap();
        assert_eq!(rung, "sub-grid");
        // The police and the grid worker report back, through their systems.
        d.mock.wait_received("police", &case);
        d.mock.wait_received("four-platforms", &case);
        for (dept, status) in [
            ("police", "accepted"),
            ("four-platforms", "accepted"),
            ("police", "on_scene"),
            ("four-platforms", "handled"),
            ("police", "resolved"),
        ] {
            d.mock.report(dept, &case, status);
        }
        until(
            &c,
            "the case shown closed",
            WAIT,
            &format!(
            "return document.querySelector('#cases li.case[data-case=\"{case}\"].band-closed');"),
        )
        .await;
        click(&c, &format!("#cases li.case[data-case=\"{case}\"]"), WAIT).await;
        let steps = until(&c, "its timeline", WAIT,
            "const n = document.querySelectorAll('#detail .timeline .step').length; return n >= 7 ? n : 0;").await;
        assert_eq!(
            steps, 7,
            "reported, accepted ×2, on scene, resolved ×2, closed"
        );
        // Each department's delivery is listed with its status, and
        // nothing absent is printed as a word.
        let deliveries = until(&c, "its deliveries", WAIT,
            "const rows = [...document.querySelectorAll('#detail .deliveries tr')].map((r) => r.cells[0].textContent + ':' + r.className); return rows.length >= 2 ? rows.sort().join(' ') : null;").await;
        assert_eq!(
            deliveries,
            "four-platforms:delivery-delivered police:delivery-delivered"
        );
        // What each received, from the flow records: the camera's
        // snapshot in the clear for the police only (PIPL Art. 26), and
        // dropped for the four platforms.
        let flows = until(&c, "what each department received", WAIT,
            "const rows = [...document.querySelectorAll('#detail table.flows tr')].filter((r) => r.cells.length > 1 && r.cells[1].textContent === 'vp-cockpit-1').map((r) => r.cells[0].textContent + ':' + r.className + ':' + [...r.querySelectorAll('.act')].filter((a) => a.title === '/snapshot_url').map((a) => a.className).join()); return rows.length >= 2 ? rows.sort().join(' ') : null;").await;
        assert_eq!(
            flows,
            "four-platforms:flow-delivered:act act-drop police:flow-delivered:act act-clear"
        );
        let dir = root().join("target/cockpit");
        std::fs::create_dir_all(&dir).unwrap();
        c.execute(
            "document.querySelector('#detail table.flows').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
        std::fs::write(dir.join("case.png"), c.screenshot().await.unwrap()).unwrap();
        let text = c
            .execute(
                "return document.querySelector('#detail').textContent;",
                vec![],
            )
            .await
            .unwrap();
        let text = text.as_str().unwrap();
        assert!(
            !text.contains("null") && !text.contains("undefined"),
            "{text}"
        );
        let q = query(&c).await;
        assert!(q.contains(&format!("case={case}")), "{q}");
        no_errors(&c).await;
    });
}

#[test]
fn a_click_on_a_grid_filters_the_feed_and_the_cases_and_a_reload_keeps_it() {
    let d = Deployment::start();
    for (id, grid) in [
        ("in-yingyi", "yingfeng/yingyi/2"),
        ("in-fengbei", "yingfeng/fengbei/1"),
    ] {
        let e = serde_json::json!({
            "specversion": "1.0", "id": id, "source": "urn:test:cockpit", "type": "gov.incident.reported",
            "category": "safety.public-order", "severity": "major", "grid": grid,
            "data": {"description": "测试"},
        });
        let (status, _, body) = send_event(&d.hub.base, &e).unwrap();
        assert_eq!(status, 202, "{body}");
    }
    with_page(1600, 1100, |c| async move {
        open_signed_in(&c, &d, "/").await;
        until(
            &c,
            "both cases",
            WAIT,
            "return document.querySelectorAll('#cases li.case').length >= 2;",
        )
        .await;
        click(&c, "#map path[data-grid=\"yingfeng/yingyi/2\"]", WAIT).await;
        let check = "const cases = [...document.querySelectorAll('#cases li.case')].map(l => l.dataset.grid);
            const feed = [...document.querySelectorAll('#feed li.item')].map(l => l.dataset.grid);
            return cases.length > 0 && feed.length > 0
                && cases.every(g => g.startsWith('yingfeng/yingyi/2')) && feed.every(g => g.startsWith('yingfeng/yingyi/2'))
                && !document.querySelector('#filters').hidden;";
        until(&c, "the view filtered to 盈一村第二网格", WAIT, check).await;
        let q = query(&c).await;
        assert!(q.contains("grid=yingfeng%2Fyingyi%2F2"), "{q}");
        c.refresh().await.unwrap();
        live(&c).await;
        until(&c, "the filter back after a reload", WAIT, check).await;
        let selected = c
            .execute(
                "return document.querySelector('#map path.selected')?.dataset.grid;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(selected, "yingfeng/yingyi/2");
        no_errors(&c).await;
    });
}

#[test]
fn after_the_hub_drops_every_stream_the_page_shows_the_gap_exactly_once() {
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = HubDir::new(&[], "");
    let env = [("GOVHUB__SERVER__LISTEN", listen.as_str())];
    let mut hub = dir.start_with_env(&env);
    let alert = |id: String| {
        serde_json::json!({
            "specversion": "1.0", "id": id, "source": "urn:test:cockpit", "type": "gov.alert.issued",
            "severity": "minor", "grid": "yingfeng/qianjiang/1", "data": {"text": "江面风浪预警"},
        })
    };
    let send = |base: &str, ids: std::ops::Range<usize>| {
        let events: Vec<_> = ids.map(|i| alert(format!("gap-{i}"))).collect();
        let (status, _, body) = send_batch(base, &events);
        assert_eq!(status, 202, "{body}");
    };
    with_page(1600, 1100, |c| async move {
        c.goto(&hub.url("/")).await.unwrap();
        live(&c).await;
        send(&hub.base, 0..5);
        until(
            &c,
            "the first five",
            WAIT,
            "return document.querySelectorAll('#feed li.item').length == 5;",
        )
        .await;
        // The hub goes down: every stream ends; the page says so.
        hub.terminate(Duration::from_secs(10));
        until(&c, "the page to show it is disconnected", WAIT,
            "return !document.querySelector('#conn').classList.contains('conn-live') && !document.querySelector('#stale').hidden;").await;
        // Back up on the same journal and port; events arrive before the
        // page has reconnected.
        hub = dir.start_with_env(&env);
        send(&hub.base, 5..25);
        live(&c).await;
        send(&hub.base, 25..30);
        let ids = until(&c, "all thirty", WAIT,
            "const ids = [...document.querySelectorAll('#feed li.item')].map(l => l.dataset.id); return ids.length >= 30 ? ids : null;").await;
        let ids: Vec<String> = serde_json::from_value(ids).unwrap();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            assert!(seen.insert(id.clone()), "{id} shown twice: {ids:?}");
        }
        for i in 0..30 {
            assert!(
                seen.contains(&format!("gap-{i}")),
                "gap-{i} missing: {ids:?}"
            );
        }
        assert_eq!(ids.len(), 30);
    });
}

#[test]
fn kiosk_mode_hides_the_controls_and_the_english_toggle_changes_the_labels() {
    let dir = HubDir::new(&[], "");
    let hub = dir.start();
    with_page(1600, 1100, |c| async move {
        c.goto(&hub.url("/?kiosk=1")).await.unwrap();
        live(&c).await;
        for control in ["#pause", "#lang", "#kiosk-link"] {
            let shown = c
                .find(fantoccini::Locator::Css(control))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap();
            assert!(!shown, "{control} shown in kiosk mode");
        }
        c.goto(&hub.url("/")).await.unwrap();
        live(&c).await;
        let heading = "return document.querySelector('#feed-h').textContent;";
        assert_eq!(c.execute(heading, vec![]).await.unwrap(), "实时事件");
        c.find(fantoccini::Locator::Css("#lang"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(c.execute(heading, vec![]).await.unwrap(), "Live events");
        assert_eq!(
            c.execute("return document.documentElement.lang;", vec![])
                .await
                .unwrap(),
            "en"
        );
        let q = query(&c).await;
        assert!(q.contains("lang=en"), "{q}");
        c.refresh().await.unwrap();
        live(&c).await;
        assert_eq!(
            c.execute(heading, vec![]).await.unwrap(),
            "Live events",
            "the language is in the URL"
        );
        no_errors(&c).await;
    });
}

#[test]
fn the_demo_serves_the_cockpit_and_makes_its_screenshot() {
    let port = support::free_port();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut demo = std::process::Command::new(govhub_bin())
        .args([
            "demo",
            "--serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--pace-ms",
            "60",
            "--wasm-dir",
        ])
        .arg(wasm_dir())
        .arg("--mock")
        .arg(env!("CARGO_BIN_EXE_mock-departments"))
        .env("GOVHUB_CACHE_DIR", cache_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = demo.stdout.take().unwrap();
    let _demo = Killed(demo);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("the demo never said `{needle}`"));
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the demo never said `{needle}`"),
            }
        }
    };
    let url = wait_line("cockpit: ");
    let url = url.split_whitespace().nth(1).unwrap().to_string();
    // The demo made the principals' tokens and says how to sign in.
    let signin = wait_line("sign in as command-room");
    let token = signin.rsplit(' ').next().unwrap().to_string();
    with_page(1600, 1000, |c| async move {
        // Opening the cockpit (and signing in) starts the stories.
        c.goto(&url).await.unwrap();
        sign_in(&c, &token).await;
        live(&c).await;
        wait_line("the hub keeps running");
        until(
            &c,
            "the day's cases",
            WAIT,
            "return document.querySelectorAll('#cases li.case').length >= 7;",
        )
        .await;
        let open = c.execute("return [...document.querySelectorAll('#cases li.case:not(.band-closed)')].map(l => l.querySelector('.rung.now').dataset.level);", vec![]).await.unwrap();
        assert_eq!(
            open,
            serde_json::json!(["street"]),
            "one dispute left, at the street's mediation centre"
        );
        // The whole board, not only the first screen.
        // The figures follow the last case.
        until(
            &c,
            "the street's figures",
            WAIT,
            "return document.querySelector('#figures dd')?.textContent === '7';",
        )
        .await;
        // The window's height less its inner height is what the browser
        // keeps for itself.
        let need = "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight;";
        let height = c
            .execute(need, vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(1000)
            .min(4000);
        c.set_window_size(1600, height as u32).await.unwrap();
        until(
            &c,
            "the whole board in the window",
            WAIT,
            "return document.documentElement.scrollHeight <= window.innerHeight + 1;",
        )
        .await;
        let png = c.screenshot().await.unwrap();
        let dir = root().join("target/cockpit");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("demo.png"), &png).unwrap();
        // The README's picture is this one when asked for.
        if let Some(path) = std::env::var_os("GOVHUB_README_SCREENSHOT") {
            std::fs::write(path, &png).unwrap();
        }
        // At 200% zoom (half the CSS width) nothing needs a sideways scroll.
        c.set_window_size(800, 1000).await.unwrap();
        let fits = until(
            &c,
            "the board to reflow",
            WAIT,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        )
        .await;
        assert_eq!(fits, true);
        std::fs::write(dir.join("demo-narrow.png"), c.screenshot().await.unwrap()).unwrap();
        no_errors(&c).await;
    });
}

#[test]
fn the_cockpit_asks_for_a_token_shows_who_is_signed_in_and_signs_out() {
    let d = Deployment::start();
    with_page(1400, 1000, |c| async move {
        c.goto(&d.hub.url("/")).await.unwrap();
        // A department's token is refused, with the reason.
        sign_in(&c, &d.hub.tokens["police"]).await;
        until(
            &c,
            "the refusal",
            WAIT,
            "const e = document.querySelector('#signin-error'); return !e.hidden && e.textContent.includes('部门');",
        )
        .await;
        // Nothing of the hub's data was asked for without a session.
        let asked: Vec<String> = requests(&c)
            .await
            .into_iter()
            .filter(|u| u.contains("/v1/cockpit/snapshot") || u.contains("/v1/stream"))
            .collect();
        assert!(asked.is_empty(), "{asked:?}");
        sign_in(&c, &d.hub.tokens["duty-officer"]).await;
        live(&c).await;
        let who = c
            .execute("return document.querySelector('#who').textContent;", vec![])
            .await
            .unwrap();
        assert!(who.to_string().contains("duty-officer"), "{who}");
        // A reload keeps the session (the cookie), and the page never
        // sees the cookie itself (HttpOnly).
        c.refresh().await.unwrap();
        live(&c).await;
        let cookie = c.execute("return document.cookie;", vec![]).await.unwrap();
        assert_eq!(cookie, "", "the session cookie is readable by scripts");
        c.find(fantoccini::Locator::Css("#signout"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "the sign-in form again",
            WAIT,
            "return !document.querySelector('#signin').hidden && document.querySelector('#who').hidden;",
        )
        .await;
        c.refresh().await.unwrap();
        until(
            &c,
            "still signed out after a reload",
            WAIT,
            "return !document.querySelector('#signin').hidden;",
        )
        .await;
        let e: Vec<String> = errors(&c)
            .await
            .into_iter()
            .filter(|e| !e.contains("status of 403"))
            .collect();
        assert!(e.is_empty(), "the page logged errors: {e:#?}");
    });
}
