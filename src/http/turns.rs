//! Turns at a scarce resource (a history query, a password check, a large
//! response in memory): `running` at once, at most `waiting` more in line
//! for at most `wait`; anyone past that is told to come back (503) at once.
//! A request in line holds its connection, so the line is short: a flood
//! of slow requests cannot fill the connection pool by waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Turns {
    running: Arc<Semaphore>,
    in_line: AtomicUsize,
    waiting: usize,
    wait: Duration,
    /// What a refused request is told it waited for.
    what: &'static str,
}

/// A turn: released when dropped.
pub type Turn = OwnedSemaphorePermit;

impl Turns {
    pub fn new(running: usize, waiting: usize, wait: Duration, what: &'static str) -> Turns {
        Turns { running: Arc::new(Semaphore::new(running)), in_line: AtomicUsize::new(0), waiting, wait, what }
    }

    /// A turn now, or after waiting in line; `Err` with the 503 to send
    /// when the line is full or the wait ran out.
    pub async fn take(&self) -> Result<Turn, Response> {
        if let Ok(turn) = Arc::clone(&self.running).try_acquire_owned() {
            return Ok(turn);
        }
        // Leaves the line when dropped: also when the request is (its
        // client went away while it waited).
        let place = InLine(&self.in_line);
        if self.in_line.fetch_add(1, Ordering::AcqRel) >= self.waiting {
            return Err(self.busy());
        }
        let turn = tokio::time::timeout(self.wait, Arc::clone(&self.running).acquire_owned()).await;
        drop(place);
        match turn {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(self.busy()),
        }
    }

    fn busy(&self) -> Response {
        let headers = [(header::RETRY_AFTER, "5")];
        (StatusCode::SERVICE_UNAVAILABLE, headers, format!("busy: too many {} at once; retry\n", self.what))
            .into_response()
    }
}

/// A place in line, given up when dropped.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A part of an answer handed to the connection at a time: the
/// connection takes the next only once it has room, so an answer its
/// client does not read stays here, holding its turn.
const PART: usize = 16 * 1024;

/// The JSON answer `json` with `turn` kept until its client has taken all
/// but the last parts (or the connection is dropped): an answer waiting in
/// memory for its client holds a turn. Each part is a copy, so what the
/// connection still holds keeps no more of the answer alive.
pub fn holding(json: Vec<u8>, turn: Turn) -> Response {
    let body = Body::new(Holding { json: Bytes::from(json), at: 0, _turn: turn });
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

struct Holding {
    json: Bytes,
    at: usize,
    _turn: Turn,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let (at, len) = (self.at, self.json.len());
        if at >= len {
            return Poll::Ready(None);
        }
        let end = (at + PART).min(len);
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&self.json[at..end])))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.json.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.json.len() - self.at) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn past_the_running_and_the_line_a_request_is_refused_at_once_and_the_line_waits_its_turn() {
        let turns = Arc::new(Turns::new(1, 1, Duration::from_secs(10), "tests"));
        let first = turns.take().await.expect("free");
        let second = tokio::spawn({
            let turns = Arc::clone(&turns);
            async move { turns.take().await.is_ok() }
        });
        tokio::task::yield_now().await;
        let third = turns.take().await.expect_err("the line is full");
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(third.headers()[header::RETRY_AFTER], "5");
        drop(first);
        assert!(second.await.unwrap(), "the one in line got the turn");
        // Nobody in line any more, and the turn was given back.
        assert!(turns.take().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_in_line_leaves_the_line() {
        let turns = Arc::new(Turns::new(1, 1, Duration::from_secs(10), "tests"));
        let held = turns.take().await.unwrap();
        let waiting = tokio::spawn({
            let turns = Arc::clone(&turns);
            async move { turns.take().await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert_eq!(turns.in_line.load(Ordering::Acquire), 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(turns.in_line.load(Ordering::Acquire), 0, "its place was given up");
        drop(held);
        assert!(turns.take().await.is_ok());
    }

    #[tokio::test]
    async fn an_answer_holds_its_turn_until_its_last_part_is_taken() {
        use http_body_util::BodyExt;
        let turns = Turns::new(1, 0, Duration::from_secs(1), "tests");
        let json = vec![b'x'; 3 * PART + 1];
        let answer = holding(json.clone(), turns.take().await.unwrap());
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
        let mut body = answer.into_body();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(json.len() as u64));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(body.frame().await.unwrap().unwrap().into_data().unwrap());
            assert!(turns.take().await.is_err(), "held while parts wait to be taken");
        }
        got.extend(body.frame().await.unwrap().unwrap().into_data().unwrap());
        assert!(body.frame().await.is_none());
        assert_eq!(got, json);
        drop(body);
        assert!(turns.take().await.is_ok());
        let dropped = holding(json, turns.take().await.unwrap());
        drop(dropped);
        assert!(turns.take().await.is_ok(), "a dropped answer gives its turn back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_its_deadline_is_refused() {
        let turns = Turns::new(1, 4, Duration::from_secs(10), "tests");
        let _held = turns.take().await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(turns.take().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(turns.in_line.load(Ordering::Acquire), 0, "left the line");
    }
}
