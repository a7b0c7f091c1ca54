//! A small JSON-over-HTTP client for the CLI's own calls (the demo, the
//! admin commands).

use anyhow::Context;
use http_body_util::{BodyExt, Full};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
>;

/// JSON in, JSON (or text) out.
pub struct Http {
    client: Client,
    bearer: Option<String>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client without credentials.
    pub fn new() -> Http {
        Http {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
            bearer: None,
        }
    }

    /// Sends `authorization: Bearer <token>` on every request.
    pub fn with_bearer(mut self, token: impl Into<String>) -> Http {
        self.bearer = Some(token.into());
        self
    }

    /// One request; the status and the body (JSON, or the text as a JSON
    /// string).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.send_as(method, url, "application/json", body).await
    }

    /// [`Http::send`] with a body of another JSON media type.
    pub async fn send_as(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = http::Request::builder().method(method).uri(url);
        if let Some(token) = &self.bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", content_type);
                bytes::Bytes::from(b.to_string())
            }
            None => bytes::Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(bytes))?)
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status, value))
    }

    /// POST; a non-2xx answer is an error carrying the body.
    pub async fn post(
        &self,
        url: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.send("POST", url, Some(body)).await?;
        if !(200..300).contains(&status) {
            anyhow::bail!("POST {url} answered {status}: {v}");
        }
        Ok(v)
    }

    /// POST of a body of `content_type` (a CloudEvent, say); a non-2xx
    /// answer is an error carrying the body.
    pub async fn post_typed(
        &self,
        url: &str,
        content_type: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.send_as("POST", url, content_type, Some(body)).await?;
        if !(200..300).contains(&status) {
            anyhow::bail!("POST {url} answered {status}: {v}");
        }
        Ok(v)
    }

    /// GET; anything but 200 is an error carrying the body.
    pub async fn get(&self, url: &str) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.send("GET", url, None).await?;
        if status != 200 {
            anyhow::bail!("GET {url} answered {status}: {v}");
        }
        Ok(v)
    }
}
