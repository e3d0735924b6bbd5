//! Rebirth requests to Sparkplug edge nodes, at a pace rumqttc's request
//! queue takes: a storm asks thousands of nodes at once.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, QoS};

/// Requests queued with rumqttc per step...
const BATCH: usize = 500;
/// ...and the pause between steps.
const PACE: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Rebirths {
    /// Command topics of the nodes to ask, each once.
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    next_at: Option<Instant>,
}

impl Rebirths {
    pub fn extend(&mut self, topics: Vec<String>) {
        for topic in topics {
            if self.queued.insert(topic.clone()) {
                self.waiting.push_back(topic);
            }
        }
    }

    /// When `step` has something to do, if ever.
    pub fn due(&self) -> Option<Instant> {
        (!self.waiting.is_empty()).then(|| self.next_at.unwrap_or_else(Instant::now))
    }

    /// Publishes the next batch (QoS 0, as Sparkplug sends commands). Never
    /// waits: what rumqttc's queue does not take is tried again next step.
    pub fn step(&mut self, client: &AsyncClient) {
        let payload = crate::sparkplug::payload::rebirth_request(crate::sparkplug::timestamp_ms(SystemTime::now()));
        for _ in 0..BATCH {
            let Some(topic) = self.waiting.pop_front() else { break };
            match client.try_publish(topic.clone(), QoS::AtMostOnce, false, payload.clone()) {
                Ok(()) => {
                    self.queued.remove(&topic);
                }
                Err(e) => {
                    tracing::debug!(topic = %topic, error = %e, "rebirth request not queued yet; retrying");
                    self.waiting.push_front(topic);
                    break;
                }
            }
        }
        self.next_at = Some(Instant::now() + PACE);
    }
}
