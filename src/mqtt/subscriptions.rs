//! Subscribing at a pace the broker can deliver.
//!
//! A broker replays every retained message that matches a new subscription
//! at once, and a default mosquitto drops what exceeds a client's queue
//! (about a thousand messages). So filters go out in batches, one SUBSCRIBE
//! in flight at a time, the next only after the previous SUBACK and a short
//! pause. Re-reading the retained states of known devices (a resync) uses
//! the same queue with temporary exact-topic subscriptions, removed again a
//! batch later. Each SUBACK is matched to its batch so a refused filter can
//! be named.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS, SubscribeFilter, SubscribeReasonCode};

/// Filters per SUBSCRIBE packet: well under what a broker queues per client.
pub const BATCH: usize = 250;
/// Pause after a SUBACK before the next batch, so the replay can drain.
pub const PACE: Duration = Duration::from_millis(100);
/// A batch whose SUBACK has not come in this long is sent again (a SUBACK
/// lost or not matched to its batch must not stall the subscriptions).
pub const RESEND_AFTER: Duration = Duration::from_secs(5);

struct Batch {
    filters: Vec<String>,
    /// Unsubscribed again after its replay: a resync, not a watch.
    temporary: bool,
}

#[derive(Default)]
pub struct Subscriptions {
    waiting: VecDeque<Batch>,
    /// The batch whose SUBACK is awaited, with its packet id once sent.
    in_flight: Option<(Option<u16>, Batch)>,
    /// When the batch in flight was queued.
    in_flight_since: Option<Instant>,
    /// Temporary filters to drop with the next step.
    to_unsubscribe: Vec<String>,
    /// Topics waiting in temporary batches: a re-read asked for again
    /// before it went out is not queued twice (re-reads coalesce).
    rereads_waiting: HashSet<String>,
    next_at: Option<Instant>,
}

impl Subscriptions {
    /// Queues `filters` for subscription.
    pub fn subscribe(&mut self, filters: Vec<String>) {
        self.enqueue(filters, false);
    }

    /// Queues a re-read of `topics` (exact topics of known devices), except
    /// those among the permanent `filters`, which a plain re-subscribe covers.
    pub fn resync(&mut self, topics: Vec<String>, filters: &BTreeSet<String>) {
        let (permanent, temporary): (Vec<String>, Vec<String>) = topics.into_iter().partition(|t| filters.contains(t));
        let temporary: Vec<String> = temporary.into_iter().filter(|t| self.rereads_waiting.insert(t.clone())).collect();
        self.enqueue(permanent, false);
        self.enqueue(temporary, true);
    }

    fn enqueue(&mut self, filters: Vec<String>, temporary: bool) {
        for chunk in filters.chunks(BATCH) {
            self.waiting.push_back(Batch { filters: chunk.to_vec(), temporary });
        }
    }

    /// When `step` has something to do, if ever.
    pub fn due(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return self.in_flight_since.map(|at| at + RESEND_AFTER);
        }
        if self.waiting.is_empty() && self.to_unsubscribe.is_empty() {
            return None;
        }
        Some(self.next_at.unwrap_or_else(Instant::now))
    }

    /// Sends the next batch (and drops the previous temporary one). Never
    /// waits: a full request channel is logged and the batch retried later.
    pub fn step(&mut self, client: &AsyncClient) {
        if self.in_flight.is_some() {
            if self.in_flight_since.is_none_or(|at| at.elapsed() < RESEND_AFTER) {
                return;
            }
            let (_, batch) = self.in_flight.take().expect("checked above");
            tracing::warn!(filters = batch.filters.len(), after = ?RESEND_AFTER, "no SUBACK for a subscription; sending it again");
            self.waiting.push_front(batch);
        }
        if !self.to_unsubscribe.is_empty() {
            let gone = std::mem::take(&mut self.to_unsubscribe);
            for topic in gone {
                if let Err(e) = client.try_unsubscribe(topic.clone()) {
                    // Harmless but wasteful: the broker keeps a duplicate subscription.
                    tracing::warn!(topic = %topic, error = %e, "could not drop a re-read subscription");
                }
            }
        }
        let Some(batch) = self.waiting.pop_front() else { return };
        if batch.temporary {
            for topic in &batch.filters {
                self.rereads_waiting.remove(topic);
            }
        }
        let request = batch.filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        match client.try_subscribe_many(request) {
            Ok(()) => {
                self.in_flight = Some((None, batch));
                self.in_flight_since = Some(Instant::now());
            }
            Err(e) => {
                tracing::error!(filters = batch.filters.len(), error = %e, "could not queue subscribe; retrying");
                if batch.temporary {
                    self.rereads_waiting.extend(batch.filters.iter().cloned());
                }
                self.waiting.push_front(batch);
                self.next_at = Some(Instant::now() + PACE);
            }
        }
    }

    /// The SUBSCRIBE of the in-flight batch went out with `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some((id @ None, _)) = &mut self.in_flight {
            *id = Some(pkid);
        }
    }

    /// A SUBACK: the batch is done; returns the filters the broker refused.
    pub fn acknowledged(&mut self, pkid: u16, codes: &[SubscribeReasonCode], now: Instant) -> Vec<String> {
        // A SUBACK may be read before the event that names our SUBSCRIBE's
        // packet id (a reconnect's first batch): it is then ours.
        let Some((id, _)) = &self.in_flight else { return Vec::new() };
        if id.is_some_and(|id| id != pkid) {
            return Vec::new();
        }
        let (_, batch) = self.in_flight.take().expect("checked above");
        self.next_at = Some(now + PACE);
        let refused = batch
            .filters
            .iter()
            .zip(codes)
            .filter(|(_, c)| matches!(c, SubscribeReasonCode::Failure))
            .map(|(f, _)| f.clone())
            .collect();
        if batch.temporary {
            self.to_unsubscribe = batch.filters;
        }
        refused
    }

    /// Whether every queued subscription has been acknowledged.
    pub fn idle(&self) -> bool {
        self.in_flight.is_none() && self.waiting.is_empty()
    }

    /// Forgets everything: a new clean session starts from scratch.
    pub fn reset(&mut self) {
        *self = Subscriptions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::SubscribeReasonCode::{Failure, Success};

    /// A client whose requests queue up unsent (the event loop is never polled).
    fn client() -> (AsyncClient, rumqttc::EventLoop) {
        AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 1024)
    }

    #[test]
    fn one_batch_at_a_time_and_refusals_are_named() {
        let (client, _requests) = client();
        let mut subs = Subscriptions::default();
        let filters: Vec<String> = (0..BATCH + 1).map(|i| format!("t/{i}")).collect();
        subs.subscribe(filters);
        subs.step(&client);
        subs.step(&client);
        let due = subs.due().expect("a resend, should the SUBACK not come");
        assert!(
            due > Instant::now() + RESEND_AFTER - Duration::from_secs(1),
            "the second batch waits for the first SUBACK"
        );
        subs.sent(7);
        let mut codes = vec![Success(QoS::AtLeastOnce); BATCH];
        codes[1] = Failure;
        let now = Instant::now();
        assert_eq!(subs.acknowledged(7, &codes, now), vec!["t/1".to_string()]);
        assert_eq!(subs.due(), Some(now + PACE));
        subs.step(&client);
        subs.sent(8);
        assert!(subs.acknowledged(8, &[Success(QoS::AtLeastOnce)], now).is_empty());
        assert!(subs.due().is_none());
    }

    #[test]
    fn a_resync_subscribes_known_topics_for_a_while_only() {
        let (client, _requests) = client();
        let mut subs = Subscriptions::default();
        let permanent: BTreeSet<String> = ["plant/a/status".to_string()].into();
        subs.resync(vec!["plant/a/status".into(), "s/b/status".into()], &permanent);
        subs.step(&client);
        subs.sent(1);
        subs.acknowledged(1, &[Success(QoS::AtLeastOnce)], Instant::now());
        assert!(subs.to_unsubscribe.is_empty(), "a permanent filter is never dropped");
        subs.step(&client);
        subs.sent(2);
        subs.acknowledged(2, &[Success(QoS::AtLeastOnce)], Instant::now());
        assert_eq!(subs.to_unsubscribe, vec!["s/b/status".to_string()]);
        subs.step(&client);
        assert!(subs.to_unsubscribe.is_empty());
        assert!(subs.due().is_none());
    }

    #[test]
    fn a_reread_asked_for_again_before_it_went_out_is_queued_once() {
        let (client, _requests) = client();
        let mut subs = Subscriptions::default();
        let none = BTreeSet::new();
        subs.resync(vec!["a".into(), "b".into()], &none);
        subs.resync(vec!["b".into(), "c".into()], &none);
        let queued: Vec<String> = subs.waiting.iter().flat_map(|b| b.filters.clone()).collect();
        assert_eq!(queued, ["a", "b", "c"]);
        subs.step(&client);
        subs.resync(vec!["a".into()], &none);
        assert_eq!(subs.waiting.len(), 2, "once sent, a topic may be re-read again");
    }

    #[test]
    fn an_unknown_suback_changes_nothing() {
        let (client, _requests) = client();
        let mut subs = Subscriptions::default();
        subs.subscribe(vec!["a".into()]);
        subs.step(&client);
        subs.sent(3);
        assert!(subs.acknowledged(4, &[Failure], Instant::now()).is_empty());
        assert!(subs.in_flight.is_some());
    }

    #[test]
    fn a_batch_without_its_suback_is_sent_again() {
        let (client, _requests) = client();
        let mut subs = Subscriptions::default();
        subs.subscribe(vec!["a/+".into()]);
        subs.step(&client);
        subs.in_flight_since = Some(Instant::now() - RESEND_AFTER);
        subs.step(&client);
        assert!(subs.in_flight.as_ref().is_some_and(|(id, _)| id.is_none()), "sent again, its id to come");
        subs.sent(9);
        assert!(subs.acknowledged(9, &[Success(QoS::AtLeastOnce)], Instant::now()).is_empty());
        assert!(subs.idle());
    }
}
