//! HTTP basic authentication against `[http] users_file`, for every route
//! but `/healthz` (probes). Without a users file, everyone who reaches the
//! endpoint reads it (`check` warns when that is beyond this machine).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::Shared;

/// Passwords checked at once (each a bcrypt run on a thread of its own, not
/// in the endpoint's line of answers and history reads).
pub const VERIFYING: usize = 2;
/// How long a login waits for its turn before it is told to come back.
pub const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn require(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(users) = shared.sources.users.clone() else {
        return next.run(request).await;
    };
    let credentials =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(basic_credentials);
    if let Some((user, password)) = credentials {
        // A password verified before passes at once, whatever waits.
        if users.remembered(&user, &password) {
            return next.run(request).await;
        }
        // bcrypt takes tens of milliseconds, on purpose: not on the runtime,
        // and at most `VERIFYING` at once, so a flood of guesses costs at
        // most that many cores' worth of the endpoint's (lowered) priority.
        let turn = match shared.logins.take().await {
            Ok(turn) => turn,
            Err(busy) => return busy,
        };
        let ok = verify_apart(users, user, password).await;
        drop(turn);
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

/// Checks a password on a thread of its own (started from the endpoint's,
/// so at its priority): large answers waiting for the endpoint's working
/// threads never hold a login up.
async fn verify_apart(users: std::sync::Arc<crate::config::Users>, user: String, password: String) -> bool {
    let (done, result) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new().name("http-login".into()).spawn(move || {
        let _ = done.send(users.verify(&user, &password));
    });
    match started {
        Ok(_) => result.await.unwrap_or(false),
        Err(e) => {
            tracing::error!(error = %e, what = "http_login_unchecked",
                "cannot start a thread to check a password; the login is refused");
            false
        }
    }
}

/// The user and password of an `Authorization` value of the `Basic`
/// scheme, whose name is case-insensitive (RFC 7617, RFC 9110 11.1).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_scheme_is_read_whatever_its_case_and_nothing_else_is() {
        let ops = Some(("ops".to_string(), "s3:cret".to_string()));
        let token = base64::engine::general_purpose::STANDARD.encode("ops:s3:cret");
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            assert_eq!(basic_credentials(&format!("{scheme} {token}")), ops, "{scheme}");
        }
        assert_eq!(basic_credentials(&format!("Basic  {token} ")), ops, "spaces around the token");
        assert_eq!(basic_credentials(&format!("Bearer {token}")), None);
        assert_eq!(basic_credentials(&format!("Basic{token}")), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("ops");
        assert_eq!(basic_credentials(&format!("Basic {no_colon}")), None);
    }
}
