//! The page shell and its assets, and the routes that serve them.
//!
//! The shell is rendered once, when the hub starts: the grid map does not
//! change while it runs. maud checks the template at compile time and
//! escapes every value (grid names come from the deployment's GeoJSON).

use super::map::{self, Drawing};
use crate::auth::policy::Routes;
use crate::hub::Hub;
use crate::ingress::Problem;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use std::sync::Arc;

/// Nothing but the hub itself: no CDN, no tiles, no inline script or
/// style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

const ICON_SVG: &str = include_str!("assets/icon.svg");

/// Every asset the page loads: its path, its bytes (in the binary), its
/// content type.
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/cockpit/cockpit.js",
        include_str!("assets/cockpit.js"),
        "text/javascript",
    ),
    (
        "/cockpit/i18n.js",
        include_str!("assets/i18n.js"),
        "text/javascript",
    ),
    (
        "/cockpit/cockpit.css",
        include_str!("assets/cockpit.css"),
        "text/css",
    ),
    ("/cockpit/icon.svg", ICON_SVG, "image/svg+xml"),
    ("/favicon.ico", ICON_SVG, "image/svg+xml"),
];

struct Cockpit {
    hub: Arc<Hub>,
    page: String,
}

/// `GET /`, its assets, and `GET /v1/cockpit/snapshot`.
pub fn router(hub: Arc<Hub>) -> Routes {
    let drawing = hub.grid_map().map(map::draw);
    let page = shell(&hub, drawing.as_ref()).into_string();
    ASSETS
        .into_iter()
        .fold(Routes::new(), |r, (path, body, content_type)| {
            r.add("GET", path, move || asset(body, content_type))
        })
        .add("GET", "/", index)
        .add("GET", "/v1/cockpit/snapshot", snapshot)
        .with_state(Arc::new(Cockpit { hub, page }))
}

fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn index(State(c): State<Arc<Cockpit>>) -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            c.page.clone(),
        )
            .into_response(),
    )
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    secured(
        (
            [
                (
                    header::CONTENT_TYPE,
                    format!("{content_type}; charset=utf-8"),
                ),
                // The binary is the version: a new hub serves new assets.
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            body,
        )
            .into_response(),
    )
}

async fn snapshot(State(c): State<Arc<Cockpit>>) -> Result<Response, Problem> {
    let snap = super::snapshot::read(&c.hub)
        .await
        .map_err(|e| failed(&e.to_string()))?;
    Ok(axum::Json(snap).into_response())
}

fn failed(why: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal unavailable",
        format!("the snapshot could not be read: {why}"),
    )
    .with_kind("journal")
    .with_retry_after(5)
}

fn shell(hub: &Hub, drawing: Option<&Drawing>) -> Markup {
    let cockpit = &hub.config.cockpit;
    let street = drawing
        .and_then(|d| d.grids.iter().find(|g| g.depth == 1))
        .map(|g| (g.name.clone(), g.name_en.clone()))
        .unwrap_or_else(|| ("govhub".into(), "govhub".into()));
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (street.0) " · " (cockpit.title) }
                link rel="stylesheet" href="/cockpit/cockpit.css";
                link rel="icon" href="/cockpit/icon.svg" type="image/svg+xml";
                script type="module" src="/cockpit/cockpit.js" {}
            }
            body data-tz=(cockpit.time_zone) data-street=(street.0) data-street-en=(street.1) data-title=(cockpit.title) {
                header.top {
                    div.brand {
                        h1 { span #street-name { (street.0) } " " span #title { (cockpit.title) } }
                        p.sub { span data-i18n="subtitle" { "综合信息指挥室 · 小事不出格、大事不出网" } }
                    }
                    div.status {
                        span #conn .conn .conn-connecting role="status" aria-live="polite" {
                            span.icon aria-hidden="true" { "◌" } " " span.text data-i18n="connecting" { "连接中" }
                        }
                        span.clock {
                            span data-i18n="hub_time" { "枢纽时间" } " "
                            time #hub-clock { "—" }
                        }
                        span #who .who hidden {}
                        button #signout .control type="button" hidden data-i18n="sign_out" { "退出登录" }
                        button #lang .control type="button" aria-label="Language" { "English" }
                        a #kiosk-link .control href="?kiosk=1" data-i18n="kiosk" { "大屏模式" }
                    }
                }
                div #signin .signin hidden {
                    form #signin-form .panel aria-labelledby="signin-h" {
                        h2 #signin-h data-i18n="sign_in" { "登录驾驶舱" }
                        p.hint data-i18n="sign_in_hint" { "请输入您的令牌（管理员用 govhub auth token 生成）。" }
                        label for="signin-token" data-i18n="token" { "令牌" }
                        input #signin-token type="password" name="token" autocomplete="current-password" required;
                        button #signin-submit type="submit" data-i18n="sign_in_button" { "登录" }
                        p #signin-error .error role="alert" hidden {}
                    }
                }
                p #stale .stale-note role="alert" hidden {
                    span.icon aria-hidden="true" { "⚠ " } span data-i18n="stale" { "连接中断：以下数据可能已过时" }
                }
                div #filters .filters .control hidden {
                    span data-i18n="filtered_by" { "筛选" } ": "
                    span #filter-text {}
                    " "
                    button #clear-filter type="button" data-i18n="clear_filter" { "清除" }
                }
                main.board {
                    section #map-panel .panel aria-labelledby="map-h" {
                        h2 #map-h data-i18n="map" { "网格地图 1+17+39" }
                        @if let Some(d) = drawing {
                            (svg(d))
                        } @else {
                            p.empty data-i18n="no_map" { "未配置网格地图（[grids] map）" }
                        }
                        p #map-tip .tip aria-live="polite" {}
                        ul.legend {
                            li { span.swatch.st-quiet {} " " span data-i18n="legend_quiet" { "无待办" } }
                            li { span.swatch.st-open {} " " span data-i18n="legend_open" { "有待办案件" } }
                            li { span.swatch.st-overdue {} " " span data-i18n="legend_overdue" { "有超时案件" } }
                        }
                    }
                    section #cases-panel .panel aria-labelledby="cases-h" {
                        h2 #cases-h { span data-i18n="open_cases" { "待办案件" } " " span #cases-count .count {} }
                        ol #cases .cases {}
                    }
                    section #detail-panel .panel hidden aria-labelledby="detail-h" {
                        h2 #detail-h { span data-i18n="case_detail" { "案件详情" } " " span #detail-id .mono {} }
                        button #detail-close .control type="button" data-i18n="close" { "关闭" }
                        div #detail {}
                    }
                    section #feed-panel .panel aria-labelledby="feed-h" {
                        h2 #feed-h data-i18n="live_feed" { "实时事件" }
                        div.feed-controls.control {
                            button #pause type="button" data-i18n="pause" { "暂停" }
                            span #feed-new .count {}
                        }
                        ol #feed .feed aria-live="off" {}
                    }
                    section #adapters-panel .panel aria-labelledby="adapters-h" {
                        h2 #adapters-h data-i18n="adapters" { "接入系统" }
                        table #adapters {
                            thead { tr {
                                th data-i18n="adapter" { "适配器" }
                                th data-i18n="version" { "版本" }
                                th data-i18n="state" { "状态" }
                                th data-i18n="queue" { "队列" }
                                th data-i18n="error_rate" { "错误率" }
                                th data-i18n="last_error" { "最近错误" }
                            } }
                            tbody {}
                        }
                    }
                    section #dead-panel .panel aria-labelledby="dead-h" {
                        h2 #dead-h { span data-i18n="dead_letters" { "死信" } " " span #dead-count .count {} }
                        table #dead {
                            thead { tr {
                                th data-i18n="time" { "时间" }
                                th data-i18n="adapter" { "适配器" }
                                th data-i18n="event" { "事件" }
                                th data-i18n="error" { "错误" }
                                th.control {}
                            } }
                            tbody {}
                        }
                    }
                    section #figures-panel .panel aria-labelledby="figures-h" {
                        h2 #figures-h data-i18n="figures" { "街道指标" }
                        dl #figures .figures {}
                        table #grid-figures {
                            thead { tr {
                                th data-i18n="grid" { "网格" }
                                th data-i18n="open" { "待办" }
                                th data-i18n="closed" { "办结" }
                                th data-i18n="on_time" { "按时办结率" }
                                th data-i18n="in_grid" { "不出格率" }
                            } }
                            tbody {}
                        }
                    }
                }
                noscript { p { "驾驶舱需要 JavaScript。The cockpit needs JavaScript." } }
            }
        }
    }
}

fn svg(d: &Drawing) -> Markup {
    let layer = |depth: usize| d.grids.iter().filter(move |g| g.depth == depth);
    let class = |depth: usize| match depth {
        1 => "grid street",
        2 => "grid community",
        _ => "grid subgrid",
    };
    let view = format!("0 0 {:.0} {:.0}", d.width, d.height);
    html! {
        svg #map xmlns="http://www.w3.org/2000/svg" viewBox=(view) role="img" aria-labelledby="map-title" {
            title #map-title data-i18n="map" { "网格地图" }
            @for depth in [1, 2, 3] {
                g class={"layer layer-" (depth)} {
                    @for g in layer(depth) {
                        path class=(class(depth)) data-grid=(g.code) data-name=(g.name) data-name-en=(g.name_en) d=(g.path) tabindex="0" {
                            title { (g.name) }
                        }
                    }
                }
            }
            g.layer.outlines aria-hidden="true" {
                @for g in layer(2) {
                    path.outline data-grid=(g.code) data-name=(g.name) data-name-en=(g.name_en) d=(g.path) {}
                }
            }
            g.layer.labels {
                @for g in layer(2) {
                    text.label data-grid=(g.code) data-name=(g.name) data-name-en=(g.name_en) x=(format!("{:.1}", g.label.0)) y=(format!("{:.1}", g.label.1)) { (g.name) }
                }
            }
        }
    }
}
