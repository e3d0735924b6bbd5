//! The `webhook` action: an HTTP POST per event (or per batch of events),
//! retried until delivered or out of attempts.
//!
//! Retries follow `retry.rs` (408, 429, 5xx, timeouts and network errors;
//! `Retry-After` honoured) within the action's budget (`actions::retry`),
//! with exponential backoff and jitter between them. Every attempt of one
//! delivery carries the same `webhook-id` (the event's id, or a batch id),
//! so receivers can deduplicate. A delivery out
//! of attempts is logged at error and written to the dead-letter file.
//! Deliveries run concurrently up to `concurrency`, but one device's events
//! always arrive in order (its online never overtakes its offline); past
//! that, events wait in the action's queue (and the queue, when full, drops
//! with a count).
//!
//! With `batch`, the first event opens a window of that length; everything
//! that arrives in it goes out as one request: an array of events, or one
//! Alertmanager group. An alert storm then costs one request, not thousands.
//!
//! The services a person reads (`actions/notify`) travel the same road with
//! their own requests; email the same road over SMTP (`smtp.rs`). With
//! `min_interval` (a chat's or a push service's rate limit) the first event
//! goes at once; what arrives before the next
//! request may go (up to `DIGEST_MAX` events) goes as one digest, and no
//! attempt, retries included, follows another sooner.

mod body;
mod retry;
mod signature;
mod smtp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use super::notify::{self, Request};
use super::{Context, Job};
use crate::backoff::Backoff;
use crate::config::{Email, Service, Webhook};
use crate::dead_letter::{self, Record};
use crate::event::{Event, derived_id};
use retry::Verdict;

/// One request to make, with everything its attempts share.
struct Delivery {
    /// Deliveries with the same key go out in order (one device's events;
    /// all batches share one key).
    key: String,
    id: String,
    events: Vec<Arc<Event>>,
    outgoing: Outgoing,
}

/// How an action reaches its service: HTTP, or a mail server.
#[derive(Clone)]
enum Road {
    Http(reqwest::Client),
    /// The mail's settings, and the SMTP transport (its connections
    /// pooled) or why it cannot be built.
    Mail(Arc<Email>, Result<Arc<smtp::Mailer>, String>),
}

impl Road {
    fn new(spec: &Webhook, http: &reqwest::Client) -> Road {
        match &spec.service {
            Service::Email(email) => {
                Road::Mail(Arc::new((**email).clone()), smtp::mailer(&spec.url, email, spec.timeout).map(Arc::new))
            }
            _ => Road::Http(http.clone()),
        }
    }
}

/// What one delivery sends, and the way it goes.
enum Outgoing {
    Http(reqwest::Client, Request),
    Mail(Arc<smtp::Mailer>, lettre::Message),
    /// It cannot be made: given up at once, with why.
    Unsendable(String),
}

/// What one attempt came to: the verdict, the wait the service asked
/// for, its answer in words (for logs and dead letters), and what else it
/// said (shown by `notify test`).
struct Answer {
    verdict: Verdict,
    retry_after: Option<Duration>,
    text: String,
    said: Option<String>,
}

impl Answer {
    fn new(verdict: Verdict, text: String) -> Answer {
        Answer { verdict, retry_after: None, text, said: None }
    }
}

/// The most events one digest holds: each is named in it.
const DIGEST_MAX: usize = 100;
/// The most bytes of device names one digest holds: escaped for the most
/// demanding form (HTML, five bytes for a `&`), they still fit the
/// smallest service's message (Slack's section, Pushover's message).
const DIGEST_NAMES: usize = 500;

/// Deliveries taken from the queue but not finished, per request slot:
/// they wait for their device's earlier delivery, then for a slot.
const WAITING_PER_SLOT: usize = 64;

pub async fn run(name: String, spec: Webhook, context: Context, mut jobs: mpsc::Receiver<Job>) {
    let spec = Arc::new(spec);
    let road = Road::new(&spec, &context.http);
    let slots = Arc::new(Semaphore::new(spec.concurrency));
    let taken = Arc::new(Semaphore::new(spec.concurrency * WAITING_PER_SLOT));
    let mut running = JoinSet::new();
    // The completion signal of the last delivery per key (true: done;
    // dropped: left owed).
    let mut order: HashMap<String, oneshot::Receiver<bool>> = HashMap::new();
    let pace = Pace::new(spec.min_interval);
    // An event taken from the queue that the last digest had no room for.
    let mut carried: Option<Arc<Event>> = None;
    loop {
        let first = match carried.take() {
            Some(event) => event,
            None => match jobs.recv().await {
                Some(Job::Event(event)) => event,
                Some(Job::Reload(_)) => continue,
                None => break,
            },
        };
        while running.try_join_next().is_some() {}
        order.retain(|_, finished| matches!(finished.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        // A paced action's slot is taken here, before its digest is made:
        // what arrives while a delivery is out (retries included) waits in
        // the queue and goes as the next digest.
        let mut paced_slot = None;
        let (events, batched) = match (spec.batch, spec.min_interval) {
            (Some(window), _) => (collect(first, window, &mut jobs).await, true),
            (None, Some(_)) => {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
                paced_slot = Some(slot);
                pace.ready().await;
                let events = drain(first, &mut jobs, &mut carried);
                let digest = events.len() > 1;
                (events, digest)
            }
            (None, None) => (vec![first], false),
        };
        let delivery = Delivery::new(&name, &spec, &road, events, batched);
        let Ok(waiting) = Arc::clone(&taken).acquire_owned().await else { break };
        let (done, finished) = oneshot::channel::<bool>();
        let before = order.insert(delivery.key.clone(), finished);
        let (name, spec, context, slots, pace) =
            (name.clone(), Arc::clone(&spec), context.clone(), Arc::clone(&slots), pace.clone());
        running.spawn(async move {
            // A device's delivery goes only after its earlier one is done:
            // one left owed by a stop leaves the later ones owed too, so
            // they resume in order.
            if let Some(before) = before
                && before.await != Ok(true)
            {
                return;
            }
            // A slot only once it is this delivery's turn: a device whose
            // deliveries keep failing holds one slot, not all of them.
            let slot = match paced_slot {
                Some(slot) => slot,
                None => match slots.acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let Some(events) = deliver(&name, &spec, &context, &pace, delivery).await else { return };
            for event in &events {
                context.done(&name, event);
            }
            let _ = done.send(true);
            drop((slot, waiting));
        });
    }
    while running.join_next().await.is_some() {}
}

/// The events arriving within `window` of the first (the queue closing
/// ends the window early).
async fn collect(first: Arc<Event>, window: Duration, jobs: &mut mpsc::Receiver<Job>) -> Vec<Arc<Event>> {
    let mut events = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(deadline, jobs.recv()).await {
            Ok(Some(Job::Event(e))) => events.push(e),
            Ok(Some(Job::Reload(_))) => {}
            Ok(None) | Err(_) => return events,
        }
    }
}

/// The first event and what is already queued behind it, up to
/// `DIGEST_MAX` events and `DIGEST_NAMES` bytes of device names (so each
/// service's message names every one); one taken that has no room is left
/// in `carried` for the next digest.
fn drain(first: Arc<Event>, jobs: &mut mpsc::Receiver<Job>, carried: &mut Option<Arc<Event>>) -> Vec<Arc<Event>> {
    let mut names = first.device.len();
    let mut events = vec![first];
    while events.len() < DIGEST_MAX {
        match jobs.try_recv() {
            Ok(Job::Event(e)) if names + e.device.len() + 2 > DIGEST_NAMES => {
                *carried = Some(e);
                break;
            }
            Ok(Job::Event(e)) => {
                names += e.device.len() + 2;
                events.push(e);
            }
            Ok(Job::Reload(_)) => {}
            Err(_) => break,
        }
    }
    events
}

/// An action's pace: when its next attempt may go (`min_interval` after the
/// last one began), shared by its deliveries and their retries.
#[derive(Clone)]
struct Pace {
    gap: Option<Duration>,
    next: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl Pace {
    fn new(gap: Option<Duration>) -> Pace {
        Pace { gap, next: Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())) }
    }

    /// Waits until an attempt may go, without taking the turn.
    async fn ready(&self) {
        let next = *self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::time::sleep_until(next).await;
    }

    /// Waits for the turn and takes it.
    async fn take(&self) {
        let Some(gap) = self.gap else { return };
        loop {
            let at = {
                let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = tokio::time::Instant::now();
                if *next <= now {
                    *next = now + gap;
                    return;
                }
                *next
            };
            tokio::time::sleep_until(at).await;
        }
    }
}

impl Delivery {
    /// The request for `events`: one event's own, or a batch's. A batch's
    /// id follows from its events, so the same batch sent again (after a
    /// restart, or from the dead-letter file) carries the same id.
    fn new(name: &str, spec: &Webhook, road: &Road, events: Vec<Arc<Event>>, batched: bool) -> Delivery {
        let id = if batched { derived_id(events.iter().map(|e| e.id.as_str())) } else { events[0].id.clone() };
        let outgoing = match road {
            Road::Mail(_, Err(e)) => Outgoing::Unsendable(e.clone()),
            Road::Mail(email, Ok(mailer)) => {
                let message =
                    notify::text::message(&events, spec.external_url.as_ref(), spec.title.as_ref(), spec.body.as_ref());
                match notify::email::mail(email, &id, &events, &message) {
                    Ok(mail) => Outgoing::Mail(Arc::clone(mailer), mail),
                    Err(e) => Outgoing::Unsendable(format!("the mail cannot be written: {e}")),
                }
            }
            Road::Http(client) => {
                let request = notify::request(spec, &id, &events).unwrap_or_else(|| Request {
                    put: false,
                    url: spec.url.clone(),
                    headers: vec![("content-type", "application/json".into())],
                    body: body::render(spec, name, &events, batched),
                });
                Outgoing::Http(client.clone(), request)
            }
        };
        // Paced actions send one request at a time, in the order decided.
        let key = if batched || spec.min_interval.is_some() { String::new() } else { events[0].device.clone() };
        Delivery { key, id, events, outgoing }
    }
}

/// One attempt to send again what the dead-letter file kept of a delivery
/// of this action (`willwatch dead-letter replay`), with its original id.
pub async fn resend(
    name: &str,
    spec: &Webhook,
    http: &reqwest::Client,
    id: &str,
    events: Vec<Event>,
) -> Result<(), String> {
    let batched = events.len() > 1 || events.first().is_some_and(|e| e.id != id);
    let road = Road::new(spec, http);
    let events = events.into_iter().map(Arc::new).collect();
    let mut delivery = Delivery::new(name, spec, &road, events, batched);
    delivery.id = id.to_string();
    let answer = send_once(spec, &delivery).await;
    if answer.verdict == Verdict::Delivered { Ok(()) } else { Err(answer.text) }
}

/// One attempt to deliver a made-up offline of a device named
/// `willwatch-test` (`willwatch notify test`): the service's answer, `Ok`
/// when it accepted it.
pub async fn test(name: &str, spec: &Webhook, http: &reqwest::Client) -> Result<String, String> {
    let now = SystemTime::now();
    let event = Event {
        id: crate::event::new_id(),
        kind: crate::event::EventKind::Offline,
        device: "willwatch-test".into(),
        topic: "willwatch/test".into(),
        payload: "a test of this action: nothing is offline".into(),
        previous: "online",
        at: now,
        offline_since: Some(now),
        offline_for: None,
        attempts: None,
        severity: Some("info".into()),
        children_offline: None,
        seen_late: false,
        sparkplug: false,
        epoch: None,
        actions: Arc::from(vec![name.to_string()]),
    };
    let delivery = Delivery::new(name, spec, &Road::new(spec, http), vec![Arc::new(event)], false);
    let answer = send_once(spec, &delivery).await;
    let text = match answer.said {
        Some(said) => format!("{}: {said}", answer.text),
        None => answer.text,
    };
    if answer.verdict == Verdict::Delivered { Ok(text) } else { Err(text) }
}

/// Delivers, or gives up and dead-letters; returns the events, done either
/// way. `None`: a retry was due while the daemon stops; they stay owed.
async fn deliver(
    name: &str,
    spec: &Webhook,
    context: &Context,
    pace: &Pace,
    delivery: Delivery,
) -> Option<Vec<Arc<Event>>> {
    let mut backoff = Backoff::new(super::retry::FIRST, spec.retries.max_interval);
    let first = &delivery.events[0];
    let decided = delivery.events.iter().map(|e| e.at).min().unwrap_or(first.at);
    let mut last_error: String;
    let mut attempt = 0;
    loop {
        attempt += 1;
        pace.take().await;
        let answer = send_once(spec, &delivery).await;
        let (outcome, retry_after) = (answer.verdict, answer.retry_after);
        last_error = answer.text;
        match outcome {
            Verdict::Delivered => {
                context.metrics.action_run(name, "ok");
                tracing::debug!(action = %name, device = %first.device, event = %first.kind,
                    events = delivery.events.len(), webhook_id = %delivery.id, attempt, what = "webhook_delivered", "webhook delivered");
                return Some(delivery.events);
            }
            Verdict::GiveUp => break,
            Verdict::Retry => {
                let age = SystemTime::now().duration_since(decided).unwrap_or_default();
                let Some(wait) =
                    super::retry::next_attempt(&spec.retries, attempt, age, retry_after, backoff.next_delay())
                else {
                    break;
                };
                tracing::warn!(action = %name, device = %first.device, webhook_id = %delivery.id,
                    attempt, error = %last_error, retry_in = ?wait, what = "webhook_retry", "webhook delivery failed; will retry");
                if !crate::actions::retry::pause(wait, &context.stopping).await {
                    tracing::info!(action = %name, device = %first.device, webhook_id = %delivery.id, attempt,
                        "stopping: the retry is left owed; it resumes at the next start, same id");
                    return None;
                }
            }
        }
    }
    tracing::error!(action = %name, device = %first.device, event = %first.kind, events = delivery.events.len(),
        webhook_id = %delivery.id, attempts = attempt, error = %last_error, file = %context.state_dir.join(dead_letter::FILE_NAME).display(),
        what = "webhook_given_up", "webhook delivery given up; written to the dead-letter file");
    context.metrics.action_run(name, "failed");
    let events: Vec<&Event> = delivery.events.iter().map(|e| &**e).collect();
    let mut record = Record::new(name, &delivery.id, &events, &last_error);
    record.url = Some(match spec.service {
        // An SMTP server's URL holds no login (refused by the config).
        Service::Webhook(_) | Service::Email(_) => crate::redact::url(spec.url.as_str()),
        // A service's URL may hold its token in the path (Slack, Discord).
        _ => crate::redact::origin(spec.url.as_str()),
    });
    context.dead_letter(record);
    Some(delivery.events)
}

/// One attempt: the request, or the mail.
async fn send_once(spec: &Webhook, delivery: &Delivery) -> Answer {
    match &delivery.outgoing {
        Outgoing::Http(client, request) => attempt_http(spec, client, delivery, request).await,
        Outgoing::Mail(mailer, mail) => {
            let (verdict, text) = smtp::send(mailer, mail, spec.timeout).await;
            Answer::new(verdict, text)
        }
        Outgoing::Unsendable(why) => Answer::new(Verdict::GiveUp, why.clone()),
    }
}

/// One HTTP attempt: the status (with the start of the body, the words a
/// person reads), and the wait a 429 asks for.
async fn attempt_http(spec: &Webhook, http: &reqwest::Client, delivery: &Delivery, request: &Request) -> Answer {
    let response = match send_http(spec, http, delivery, request).await {
        Ok(response) => response,
        // Without the URL: its query may hold a token.
        Err(e) => return Answer::new(Verdict::Retry, error_chain(&e.without_url())),
    };
    let status = response.status();
    let header = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::retry_after(v, SystemTime::now()));
    let body = head(response, ANSWER_READ).await;
    let retry_after = match (header, status.as_u16()) {
        (None, 429) => retry::retry_after_in_body(&body),
        (header, _) => header,
    };
    let said = String::from_utf8_lossy(&body);
    let said = (!said.trim().is_empty()).then(|| notify::cut(said.trim(), 500));
    Answer { verdict: retry::verdict(status.as_u16()), retry_after, text: format!("HTTP {status}"), said }
}

/// The most of an answer's body read: enough for a 429's wait and the
/// words `notify test` shows; a receiver's endless answer costs no more.
const ANSWER_READ: usize = 16 << 10;

/// The first `max` bytes of `response`'s body (fewer when it ends or
/// breaks off sooner).
async fn head(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(max - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

async fn send_http(
    spec: &Webhook,
    http: &reqwest::Client,
    delivery: &Delivery,
    outgoing: &Request,
) -> reqwest::Result<reqwest::Response> {
    let method = if outgoing.put { reqwest::Method::PUT } else { reqwest::Method::POST };
    let mut request = http.request(method, outgoing.url.clone()).timeout(spec.timeout).body(outgoing.body.clone());
    for (header, value) in &outgoing.headers {
        request = request.header(*header, value);
    }
    for (header, value) in &spec.headers {
        // An id or topic may hold a line break: escaped, it can neither
        // start another header nor make the request one that is never sent.
        request = request.header(header, crate::logging::escape(&value.render(&delivery.events[0])).into_owned());
    }
    if let Service::Webhook(_) = spec.service {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        request = request.header("webhook-id", &delivery.id).header("webhook-timestamp", now);
        if let Some(secret) = &spec.secret {
            let signature = signature::sign(secret, &delivery.id, now, &outgoing.body);
            request = request.header("webhook-signature", signature);
        }
    }
    request.send().await
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Guards the bound on what is read of an answer: a receiver that
    /// answers without end costs `ANSWER_READ` bytes, not all memory.
    #[tokio::test]
    async fn an_endless_answer_is_read_only_as_far_as_its_head() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n\r\n").await;
            let chunk = vec![b'x'; 64 << 10];
            while socket.write_all(&chunk).await.is_ok() {}
        });
        let response = reqwest::get(&url).await.unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), head(response, ANSWER_READ)).await.unwrap();
        assert_eq!(body.len(), ANSWER_READ);
    }
}
