//! The generic webhook adapter: how any system that speaks CloudEvents over
//! HTTP joins govhub without an adapter of its own.
//!
//! - `deliver` POSTs the event to the configured `url` as a CloudEvent in
//!   HTTP binary mode (`ce-*` headers, `data` as the body).
//! - `ingest` reads a CloudEvent in binary mode (`ce-*` headers), structured
//!   mode (`application/cloudevents+json`) or a batch
//!   (`application/cloudevents-batch+json`).
//!
//! Config (manifest `[config]`):
//! - `url` (required for delivery): where to POST.
//! - `authorization` (optional): sent as the `authorization` header; take it
//!   from the environment with `authorization = { env = "NAME" }`.
//!
//! The module is generic: load it several times under different manifest
//! names (`webhook-grid-app`, `webhook-village`), each with its own `url`.

use govhub_sdk::{
    cloudevents, config, export_adapter, http, Adapter, AdapterError, Description, Event, Inbound,
    Outcome,
};

/// The webhook adapter.
pub struct Webhook;

impl Adapter for Webhook {
    fn describe() -> Description {
        Description::new(
            "webhook",
            env!("CARGO_PKG_VERSION"),
            "any system that sends or receives CloudEvents over HTTP",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        let invalid = |e: cloudevents::Error| AdapterError::InvalidInput(e.to_string());
        let headers = || {
            message
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
        };
        if cloudevents::is_binary(headers()) {
            return Ok(vec![
                cloudevents::from_binary(headers(), &message.body).map_err(invalid)?
            ]);
        }
        let content_type = message.content_type().unwrap_or_default();
        match content_type.as_str() {
            "application/cloudevents+json" => Ok(vec![
                cloudevents::from_slice(&message.body).map_err(invalid)?
            ]),
            "application/cloudevents-batch+json" => {
                cloudevents::batch_from_slice(&message.body).map_err(invalid)
            }
            other => Err(AdapterError::InvalidInput(format!(
                "not a CloudEvent: no ce-specversion header and content-type is `{other}` \
                 (expected application/cloudevents+json or application/cloudevents-batch+json)"
            ))),
        }
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let url = config::require("url")?;
        let (headers, body) = cloudevents::to_binary(&event);
        let mut request = http::Request::post(&url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(auth) = config::get("authorization") {
            request = request.header("authorization", &auth);
        }
        request.body = body;
        let response = request.send()?.error_for_status()?;
        Ok(Outcome::delivered().with_note(format!("{url} answered {}", response.status)))
    }
}

export_adapter!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use govhub_sdk::http::Response;
    use govhub_sdk::testing::Harness;
    use govhub_sdk::Severity;

    fn event() -> Event {
        Event::new("gov.incident.dispatched")
            .with_id("evt-1")
            .with_source("urn:govhub:hub")
            .with_case("case-1")
            .with_grid("yingfeng/yingyi/2")
            .with_severity(Severity::Major)
            .with_category("traffic.congestion")
            .with_extension("platform", "综合执法")
            .with_json(&serde_json::json!({"note": "西门拥堵"}))
    }

    #[test]
    fn deliver_posts_binary_mode_to_the_configured_url() {
        let h = Harness::new()
            .config("url", "http://127.0.0.1:9000/events")
            .config("authorization", "Bearer t")
            .respond(|_| Response::new(204, ""));
        h.deliver::<Webhook>(event()).unwrap();
        let sent = &h.requests()[0];
        assert_eq!(sent.url, "http://127.0.0.1:9000/events");
        assert_eq!(sent.header_value("ce-id"), Some("evt-1"));
        assert_eq!(sent.header_value("ce-severity"), Some("major"));
        assert_eq!(sent.header_value("content-type"), Some("application/json"));
        assert_eq!(sent.header_value("authorization"), Some("Bearer t"));
        let length = sent.body.len().to_string();
        assert_eq!(sent.header_value("content-length"), Some(length.as_str()));
        let back = cloudevents::from_binary(
            sent.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            &sent.body,
        )
        .unwrap();
        assert_eq!(back, event());
    }

    #[test]
    fn deliver_classifies_department_answers() {
        let h = Harness::new()
            .config("url", "http://127.0.0.1:9000/events")
            .respond(|_| Response::new(503, "busy"));
        assert!(matches!(
            h.deliver::<Webhook>(event()),
            Err(AdapterError::Unavailable(_))
        ));
        let h = Harness::new()
            .config("url", "http://127.0.0.1:9000/events")
            .respond(|_| Response::new(400, "no"));
        assert!(matches!(
            h.deliver::<Webhook>(event()),
            Err(AdapterError::Rejected(_))
        ));
        let h = Harness::new();
        assert!(
            matches!(h.deliver::<Webhook>(event()), Err(AdapterError::Unavailable(m)) if m.contains("`url`"))
        );
    }

    #[test]
    fn ingest_reads_all_three_modes() {
        let json = cloudevents::to_json(&event());
        let structured = Inbound::post(
            "application/cloudevents+json; charset=utf-8",
            json.to_string(),
        );
        let batch = Inbound::post(
            "application/cloudevents-batch+json",
            serde_json::json!([json, json]).to_string(),
        );
        let (headers, body) = cloudevents::to_binary(&event());
        let binary = headers.iter().fold(Inbound::post("", body), |m, (n, v)| {
            m.with_header(n, v.clone())
        });
        let h = Harness::new();
        assert_eq!(h.ingest::<Webhook>(structured).unwrap(), vec![event()]);
        assert_eq!(h.ingest::<Webhook>(batch).unwrap(), vec![event(), event()]);
        assert_eq!(h.ingest::<Webhook>(binary).unwrap(), vec![event()]);
    }

    #[test]
    fn ingest_names_the_bad_attribute() {
        let msg = Inbound::post(
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"noon"}"#,
        );
        match Harness::new().ingest::<Webhook>(msg) {
            Err(AdapterError::InvalidInput(m)) => assert!(m.contains("`time`"), "{m}"),
            other => panic!("{other:?}"),
        }
        let plain = Inbound::post_json("{}");
        assert!(matches!(
            Harness::new().ingest::<Webhook>(plain),
            Err(AdapterError::InvalidInput(m)) if m.contains("ce-specversion")
        ));
    }
}
