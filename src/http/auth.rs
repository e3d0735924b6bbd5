//! HTTP basic authentication against `[http] users_file`, for every route
//! but `/healthz` (probes). Without a users file, everyone who reaches the
//! endpoint reads it (`check` warns when that is beyond this machine).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::Shared;

pub async fn require(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(users) = shared.sources.users.clone() else {
        return next.run(request).await;
    };
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) {
        let (user, password) = (user.to_string(), password.to_string());
        // bcrypt takes tens of milliseconds, on purpose: not on the runtime.
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password)).await.unwrap_or(false);
        if ok {
            return next.run(request).await;
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"willwatch\", charset=\"UTF-8\"")],
        "who are you?\n",
    )
        .into_response()
}
