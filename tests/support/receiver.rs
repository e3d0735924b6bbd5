//! A real HTTP server that receives webhooks, records every request with
//! its arrival time, and misbehaves on demand: fails the first N requests,
//! answers 429 with Retry-After, or hangs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::wait::eventually;

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// 200 to everything.
    Accept,
    /// `status` to the first `n` requests, then 200.
    FailFirst { n: usize, status: u16 },
    /// 429 with `Retry-After: secs` to the first `n` requests, then 200.
    TooManyFirst { n: usize, retry_after_secs: u64 },
    /// Never answers.
    Hang,
    /// 500 to every request about this device, 200 to the rest.
    FailDevice(&'static str),
    /// A chat service's limit: a request sooner than this after the last
    /// one accepted gets 429 with a `Retry-After` header.
    OnePer(Duration),
    /// 429 to the first `n` requests with the wait in a JSON body only, as
    /// Telegram answers (`parameters.retry_after`), then 200.
    TooManyInBody { n: usize, retry_after_secs: u64 },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Clone)]
struct Shared {
    behaviour: Behaviour,
    received: Arc<Mutex<Vec<Received>>>,
    /// When the last request `OnePer` accepted arrived.
    accepted: Arc<Mutex<Option<Instant>>>,
}

pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { behaviour, received: Arc::clone(&received), accepted: Arc::default() };
        let app = Router::new().fallback(handle).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let what = format!("{n} webhook request(s)");
        eventually(&what, timeout, || {
            let all = self.received();
            (all.len() >= n).then_some(all)
        })
        .await
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let count = {
        let mut received = shared.received.lock().unwrap();
        let method = method.to_string();
        received.push(Received {
            method,
            path: uri.path().to_string(),
            headers,
            body: body.to_vec(),
            at: Instant::now(),
        });
        received.len()
    };
    match shared.behaviour {
        Behaviour::Accept => StatusCode::OK.into_response(),
        Behaviour::FailFirst { n, status } if count <= n => StatusCode::from_u16(status).unwrap().into_response(),
        Behaviour::TooManyFirst { n, retry_after_secs } if count <= n => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after_secs.to_string())]).into_response()
        }
        Behaviour::Hang => std::future::pending().await,
        Behaviour::OnePer(gap) => {
            let mut accepted = shared.accepted.lock().unwrap();
            let now = Instant::now();
            if accepted.is_some_and(|last| now < last + gap) {
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
            }
            *accepted = Some(now);
            StatusCode::OK.into_response()
        }
        Behaviour::TooManyInBody { n, retry_after_secs } if count <= n => {
            let body = serde_json::json!({"ok": false, "error_code": 429,
                "description": "Too Many Requests", "parameters": {"retry_after": retry_after_secs}});
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
        }
        Behaviour::FailDevice(device) => {
            let about = serde_json::from_slice::<Value>(&shared.received.lock().unwrap()[count - 1].body)
                .is_ok_and(|v| v["device"] == device);
            if about { StatusCode::INTERNAL_SERVER_ERROR.into_response() } else { StatusCode::OK.into_response() }
        }
        _ => StatusCode::OK.into_response(),
    }
}
