//! `mock-departments`: stand-ins for the department systems of the Yingfeng
//! deployment, on one loopback port. They speak each department's own
//! protocol, record everything they receive, and, when told, report back
//! to the hub the way the real system would.
//!
//! | path prefix | department | protocol |
//! |---|---|---|
//! | `/police` | police CAD | `POST /dispatch` JSON; reports back to `/v1/ingest/police` |
//! | `/traffic` | traffic enforcement squad | `POST /tasks` JSON; reports to `/v1/ingest/traffic` |
//! | `/fire` | online fire station | `POST /incidents` JSON; reports to `/v1/ingest/fire` |
//! | `/four-platforms` | the four platforms | `POST /platforms/{p}/tasks`, `/escalations`, `/alerts`; callbacks to `/v1/ingest/four-platforms` |
//! | `/city` | city management, Open311 GeoReport v2 | `POST /requests.{json,xml}` (form), `GET /requests.{json,xml}` (polled) |
//! | `/village`, `/street-command`, `/community` | CloudEvents webhooks | binary-mode CloudEvents; the village reports back as CloudEvents to `/v1/ingest/village` |
//!
//! Control (for the demo and the tests):
//! - `GET /_records`: everything received, in order;
//! - `POST /_control/report` `{"department", "case_id", "status", "note"}`:
//!   the department reports on the case it received (for the city: the
//!   Open311 request's status changes and the hub finds it when it polls);
//! - `POST /_control/hub` `{"url", "tokens"?}`: where reports go (instead
//!   of `--hub`), and each department's token for the hub, by the adapter
//!   it reports through (`{"police": "govhub_…"}`), sent as a bearer token.
//!
//! `mock-departments --hub http://127.0.0.1:8080 [--listen 127.0.0.1:0]`
//! prints `mock-departments: listening on http://ADDR` when ready.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One request a department received.
#[derive(Clone, Serialize)]
struct Record {
    department: String,
    method: String,
    path: String,
    at_ms: i64,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An Open311 service request held by the mock city.
#[derive(Clone, Serialize)]
struct ServiceRequest {
    service_request_id: String,
    status: String,
    status_notes: Option<String>,
    service_code: String,
    description: String,
    requested_datetime: String,
    updated_datetime: String,
    case_id: Option<String>,
}

#[derive(Default)]
struct Mock {
    hub: Mutex<String>,
    /// Each department's token for the hub, by the adapter it reports
    /// through (the hub's principals): sent as `authorization: Bearer`.
    tokens: Mutex<std::collections::HashMap<String, String>>,
    records: Mutex<Vec<Record>>,
    city: Mutex<Vec<ServiceRequest>>,
}

type Shared = Arc<Mock>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn record(
    mock: &Mock,
    department: &str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    if let Ok(mut r) = mock.records.lock() {
        r.push(Record {
            department: department.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            at_ms: now_ms(),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
}

async fn police(State(m): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record(&m, "police", "POST", "/police/dispatch", &headers, &body);
    let n = m.records.lock().map(|r| r.len()).unwrap_or(0);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "dispatch_no": format!("钱江-D-{n:04}") })),
    )
        .into_response()
}

async fn traffic(State(m): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record(&m, "traffic", "POST", "/traffic/tasks", &headers, &body);
    let n = m.records.lock().map(|r| r.len()).unwrap_or(0);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "task_no": format!("JX-{n:04}") })),
    )
        .into_response()
}

async fn fire(State(m): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record(&m, "fire", "POST", "/fire/incidents", &headers, &body);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "accepted": true })),
    )
        .into_response()
}

async fn platform_task(
    State(m): State<Shared>,
    Path(platform): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &m,
        "four-platforms",
        "POST",
        &format!("/four-platforms/platforms/{platform}/tasks"),
        &headers,
        &body,
    );
    StatusCode::CREATED.into_response()
}

async fn platform_other(
    State(m): State<Shared>,
    Path(what): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &m,
        "four-platforms",
        "POST",
        &format!("/four-platforms/{what}"),
        &headers,
        &body,
    );
    StatusCode::CREATED.into_response()
}

async fn webhook(
    State(m): State<Shared>,
    Path(department): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &m,
        &department,
        "POST",
        &format!("/{department}/events"),
        &headers,
        &body,
    );
    StatusCode::NO_CONTENT.into_response()
}

fn open311_answer(format: &str, requests: &[ServiceRequest], posted: bool) -> Response {
    if format == "xml" {
        let mut xml =
            String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<service_requests>\n");
        for r in requests {
            xml.push_str("  <request>\n");
            xml.push_str(&format!(
                "    <service_request_id>{}</service_request_id>\n",
                r.service_request_id
            ));
            if !posted {
                xml.push_str(&format!("    <status>{}</status>\n", r.status));
                xml.push_str(&format!(
                    "    <status_notes>{}</status_notes>\n",
                    r.status_notes.clone().unwrap_or_default()
                ));
                xml.push_str(&format!(
                    "    <service_code>{}</service_code>\n",
                    r.service_code
                ));
                xml.push_str(&format!(
                    "    <requested_datetime>{}</requested_datetime>\n",
                    r.requested_datetime
                ));
                xml.push_str(&format!(
                    "    <updated_datetime>{}</updated_datetime>\n",
                    r.updated_datetime
                ));
            } else {
                xml.push_str(
                    "    <service_notice>城管中队将在 2 小时内到场处理</service_notice>\n",
                );
            }
            xml.push_str("  </request>\n");
        }
        xml.push_str("</service_requests>\n");
        return ([("content-type", "text/xml; charset=utf-8")], xml).into_response();
    }
    let list: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            if posted {
                serde_json::json!({
                    "service_request_id": r.service_request_id,
                    "service_notice": "城管中队将在 2 小时内到场处理",
                    "account_id": null,
                })
            } else {
                serde_json::json!({
                    "service_request_id": r.service_request_id,
                    "status": r.status,
                    "status_notes": r.status_notes,
                    "service_code": r.service_code,
                    "description": r.description,
                    "requested_datetime": r.requested_datetime,
                    "updated_datetime": r.updated_datetime,
                })
            }
        })
        .collect();
    Json(list).into_response()
}

async fn city_post(
    State(m): State<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &m,
        "city",
        "POST",
        &format!("/city/{file}"),
        &headers,
        &body,
    );
    let format = if file.ends_with(".xml") {
        "xml"
    } else {
        "json"
    };
    let form: BTreeMap<String, String> = form_urlencoded_pairs(&body);
    let Some(code) = form.get("service_code").cloned() else {
        return (StatusCode::BAD_REQUEST, "service_code was not provided").into_response();
    };
    let now = now_rfc3339();
    let request = {
        let mut city = m.city.lock().unwrap_or_else(|p| p.into_inner());
        let r = ServiceRequest {
            service_request_id: format!("{}", 880_000 + city.len() + 1),
            status: "open".into(),
            status_notes: None,
            service_code: code,
            description: form.get("description").cloned().unwrap_or_default(),
            requested_datetime: now.clone(),
            updated_datetime: now,
            case_id: form.get("attribute[govhub_case]").cloned(),
        };
        city.push(r.clone());
        r
    };
    open311_answer(format, &[request], true)
}

#[derive(Deserialize)]
struct CityQuery {
    start_date: Option<String>,
}

async fn city_get(
    State(m): State<Shared>,
    Path(file): Path<String>,
    Query(q): Query<CityQuery>,
) -> Response {
    let format = if file.ends_with(".xml") {
        "xml"
    } else {
        "json"
    };
    let city = m.city.lock().map(|c| c.clone()).unwrap_or_default();
    // GeoReport v2: start_date bounds requested_datetime.
    let list: Vec<ServiceRequest> = city
        .into_iter()
        .filter(|r| {
            q.start_date
                .as_ref()
                .is_none_or(|s| &r.requested_datetime >= s)
        })
        .collect();
    open311_answer(format, &list, false)
}

fn form_urlencoded_pairs(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(k), decode(v)))
        })
        .collect()
}

#[derive(Deserialize)]
struct Report {
    department: String,
    case_id: String,
    status: String,
    #[serde(default)]
    note: Option<String>,
    /// When the department says it happened (a drill on the hub's manual
    /// clock passes it); default now.
    #[serde(default)]
    time: Option<String>,
}

/// The id the department knows the case's last delivery by.
fn reference(m: &Mock, department: &str, case_id: &str) -> Option<String> {
    let records = m.records.lock().ok()?;
    records.iter().rev().find_map(|r| {
        if r.department != department {
            return None;
        }
        if let Some(case) = r.headers.get("ce-caseid") {
            return (case == case_id)
                .then(|| r.headers.get("ce-id").cloned())
                .flatten();
        }
        let body: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        if body["case_id"] != case_id {
            return None;
        }
        ["dispatch_id", "task_id", "incident_id"]
            .iter()
            .find_map(|k| body[*k].as_str().map(str::to_string))
    })
}

async fn control_report(State(m): State<Shared>, Json(r): Json<Report>) -> Response {
    if r.department == "city" {
        let mut city = m.city.lock().unwrap_or_else(|p| p.into_inner());
        let Some(req) = city
            .iter_mut()
            .rev()
            .find(|s| s.case_id.as_deref() == Some(r.case_id.as_str()))
        else {
            return (
                StatusCode::NOT_FOUND,
                "the city has no request for that case",
            )
                .into_response();
        };
        req.status = r.status.clone();
        req.status_notes = r.note.clone();
        req.updated_datetime = r.time.clone().unwrap_or_else(now_rfc3339);
        return StatusCode::OK.into_response();
    }
    let Some(reference) = reference(&m, &r.department, &r.case_id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("{} received nothing of case {}", r.department, r.case_id),
        )
            .into_response();
    };
    let time = r.time.clone().unwrap_or_else(now_rfc3339);
    let token = m
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(&r.department).cloned());
    let client = reqwest_like::Client::new(token);
    let hub = m.hub.lock().map(|h| h.clone()).unwrap_or_default();
    let url = format!("{hub}/v1/ingest/{}", r.department);
    let result = match r.department.as_str() {
        "police" => client.post_json(&url, &serde_json::json!({
            "dispatch_id": reference, "case_id": r.case_id, "status": r.status, "time": time,
            "officer": "钱江派出所 值班民警", "note": r.note,
        })).await,
        "traffic" => client.post_json(&url, &serde_json::json!({
            "task_id": reference, "case_id": r.case_id, "status": r.status, "time": time,
            "squad": "交警三中队", "note": r.note,
        })).await,
        "fire" => client.post_json(&url, &serde_json::json!({
            "incident_id": reference, "case_id": r.case_id, "status": r.status, "time": time, "note": r.note,
        })).await,
        "four-platforms" => client.post_json(&url, &serde_json::json!({
            "callback": r.status, "task_id": reference, "case_id": r.case_id, "time": time,
            "worker": "网格员", "note": r.note,
        })).await,
        webhook => {
            let ty = match r.status.as_str() {
                "accepted" => "gov.incident.accepted",
                "on_scene" => "gov.incident.on-scene",
                _ => "gov.incident.resolved",
            };
            client
                .post_cloudevent(
                    &url,
                    &[
                        ("ce-specversion", "1.0".to_string()),
                        ("ce-id", format!("{webhook}-{reference}-{}", r.status)),
                        ("ce-source", format!("urn:mock:{webhook}")),
                        ("ce-type", ty.to_string()),
                        ("ce-caseid", r.case_id.clone()),
                        ("ce-time", time),
                    ],
                    serde_json::json!({ "note": r.note }).to_string(),
                )
                .await
        }
    };
    match result {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("cannot reach the hub: {e}"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct HubUrl {
    url: String,
    /// Each department's token, by the adapter it reports through.
    #[serde(default)]
    tokens: std::collections::HashMap<String, String>,
}

/// Where the callbacks go (when the hub started after the mock), and each
/// department's token for it.
async fn control_hub(State(m): State<Shared>, Json(h): Json<HubUrl>) -> Response {
    if let Ok(mut hub) = m.hub.lock() {
        *hub = h.url.trim_end_matches('/').to_string();
    }
    if let Ok(mut tokens) = m.tokens.lock() {
        tokens.extend(h.tokens);
    }
    StatusCode::OK.into_response()
}

async fn records(State(m): State<Shared>) -> Response {
    Json(m.records.lock().map(|r| r.clone()).unwrap_or_default()).into_response()
}

/// A tiny HTTP client on hyper, enough for the mock's callbacks.
mod reqwest_like {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::rt::TokioExecutor;

    pub struct Client(
        Hyper<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
        Option<String>,
    );

    impl Client {
        /// A client presenting `bearer` (the department's token), if any.
        pub fn new(bearer: Option<String>) -> Client {
            Client(Hyper::builder(TokioExecutor::new()).build_http(), bearer)
        }

        async fn send(
            &self,
            mut req: http::Request<Full<bytes::Bytes>>,
        ) -> Result<(u16, String), String> {
            if let Some(token) = &self.1 {
                let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| e.to_string())?;
                req.headers_mut().insert(http::header::AUTHORIZATION, value);
            }
            let resp = self.0.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }

        pub async fn post_json(
            &self,
            url: &str,
            body: &serde_json::Value,
        ) -> Result<(u16, String), String> {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?;
            self.send(req).await
        }

        pub async fn post_cloudevent(
            &self,
            url: &str,
            headers: &[(&str, String)],
            body: String,
        ) -> Result<(u16, String), String> {
            let mut req = http::Request::post(url).header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req
                .body(Full::new(bytes::Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            self.send(req).await
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let hub = arg("--hub").unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let mock = Arc::new(Mock {
        hub: Mutex::new(hub.trim_end_matches('/').to_string()),
        ..Mock::default()
    });
    let app = Router::new()
        .route("/police/dispatch", post(police))
        .route("/traffic/tasks", post(traffic))
        .route("/fire/incidents", post(fire))
        .route(
            "/four-platforms/platforms/{platform}/tasks",
            post(platform_task),
        )
        .route("/four-platforms/{what}", post(platform_other))
        .route("/city/{file}", post(city_post).get(city_get))
        .route("/{department}/events", post(webhook))
        .route("/_records", get(records))
        .route("/_control/report", post(control_report))
        .route("/_control/hub", post(control_hub))
        .with_state(mock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mock-departments: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        let addr = listener.local_addr().expect("bound address");
        println!("mock-departments: listening on http://{addr}");
        let _ = axum::serve(listener, app).await;
    });
}
