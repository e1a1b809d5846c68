//! Requests to a [`TestApp`], whichever way it is reached (a socket, or its router).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use futures_util::Stream;
use serde_json::{Value, json};

use crate::app::TestApp;

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Legacy(&'a str, &'a str),
    Header(&'a str, &'a str),
}

/// A JSON answer.
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn codes(&self) -> Vec<u64> {
        self.body["errors"]
            .as_array()
            .map(|errs| errs.iter().filter_map(|e| e["code"].as_u64()).collect())
            .unwrap_or_default()
    }

    /// Asserts the Cloudflare failure envelope with this status and first error code.
    #[track_caller]
    pub fn assert_failure(&self, status: u16, code: u64) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["success"], json!(false), "body: {}", self.body);
        assert_eq!(self.body["result"], Value::Null);
        assert_eq!(self.body["messages"], json!([]));
        assert_eq!(
            self.codes().first().copied(),
            Some(code),
            "body: {}",
            self.body
        );
    }
}

/// Any answer, as received.
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the Cloudflare failure envelope with this status and first error code.
    #[track_caller]
    pub fn assert_failure(&self, status: u16, code: u64) {
        Response {
            status: self.status,
            body: self.json(),
        }
        .assert_failure(status, code)
    }
}

pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(axum::body::Body),
}

/// A request being built; `send` it.
pub struct TestRequest<'a> {
    pub(crate) app: &'a TestApp,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
}

impl<'a> TestRequest<'a> {
    pub(crate) fn new(app: &'a TestApp, method: Method, path: &str) -> Self {
        Self {
            app,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    pub fn auth(self, auth: Auth<'_>) -> Self {
        match auth {
            Auth::None => self,
            Auth::Bearer(t) => self.header("authorization", &format!("Bearer {t}")),
            Auth::Legacy(email, key) => {
                self.header("x-auth-email", email).header("x-auth-key", key)
            }
            Auth::Header(name, value) => self.header(name, value),
        }
    }

    pub fn bearer(self, token: &str) -> Self {
        self.auth(Auth::Bearer(token))
    }

    /// A JSON body, labelled `application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A body as given, with whatever Content-Type the test sets (or none).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// A streamed body of unknown length (sent chunked).
    pub fn stream<S>(mut self, chunks: S) -> Self
    where
        S: Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    {
        self.body = Body::Stream(axum::body::Body::from_stream(chunks));
        self
    }

    pub async fn send(self) -> RawResponse {
        let app = self.app;
        app.dispatch(self).await
    }
}
