//! Exactly once, checked from outside: a publisher of numbered retained
//! device states (as births and wills would be), and what a webhook
//! receiver got, checked against each device's true final state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;

use super::receiver::Received;

/// What the receiver saw, once per id (the webhook-id receivers
/// deduplicate by), in the order each id first arrived.
pub fn distinct(received: &[Received]) -> Vec<Value> {
    let mut seen = HashSet::new();
    received.iter().filter(|r| seen.insert(r.header("webhook-id").to_string())).map(Received::json).collect()
}

/// Checks the exactly-once invariants over what the receiver saw, given
/// each device's true final state; returns the number of transitions.
///
/// A transition is known by the message that caused it: its payload (the
/// fault test numbers every message it publishes) and `offline_since`. The
/// same message decided again under a new id (a decision forgotten by a
/// crash) is two ids for one transition; two real outages are two
/// transitions even when they begin in the same millisecond.
pub fn check_exactly_once(received: &[Received], last: &BTreeMap<String, bool>, context: &str) -> usize {
    for r in received {
        assert_eq!(r.header("webhook-id"), r.json()["id"], "{context}: webhook-id is the event id");
    }
    let events = distinct(received);
    let mut ids_per_transition: HashMap<(String, String, String), HashSet<String>> = HashMap::new();
    let mut sequence: HashMap<String, Vec<String>> = HashMap::new();
    for e in &events {
        let device = e["device"].as_str().unwrap().to_string();
        let kind = e["event"].as_str().unwrap().to_string();
        let since = e["offline_since"].as_str().unwrap_or_default();
        let cause = format!("{} since {since}", e["payload"].as_str().unwrap_or_default());
        ids_per_transition
            .entry((device.clone(), kind.clone(), cause))
            .or_default()
            .insert(e["id"].as_str().unwrap().to_string());
        sequence.entry(device).or_default().push(kind);
    }
    for (transition, ids) in &ids_per_transition {
        let history = || -> Vec<String> {
            events
                .iter()
                .filter(|e| e["device"] == transition.0.as_str())
                .map(|e| format!("{} {} at {} since {}", e["id"], e["event"], e["at"], e["offline_since"]))
                .collect()
        };
        assert_eq!(
            ids.len(),
            1,
            "{context}: {transition:?} notified under {} ids: {ids:?}\n{:#?}",
            ids.len(),
            history()
        );
    }
    for (device, kinds) in &sequence {
        for (i, kind) in kinds.iter().enumerate() {
            let expected = if i % 2 == 0 { "offline" } else { "online" };
            let history: Vec<String> = events
                .iter()
                .filter(|e| e["device"] == device.as_str())
                .map(|e| {
                    format!(
                        "{} {} {} since {} epoch {}",
                        e["id"], e["event"], e["payload"], e["offline_since"], e["epoch"]
                    )
                })
                .collect();
            assert_eq!(kind, expected, "{context}: {device} notified {kinds:?}\n{history:#?}");
        }
    }
    // Nothing that did not happen: each notification says what its
    // message said, and a device's messages cause its notifications in
    // the order they were sent, each at most one (a message decided again
    // after a failover, as a false recovery and a second outage, is not).
    let mut causes: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for e in &events {
        let Ok(message) = serde_json::from_str::<Value>(e["payload"].as_str().unwrap_or_default()) else { continue };
        let (Some(n), Some(said)) = (message["n"].as_u64(), message["s"].as_str()) else { continue };
        let device = e["device"].as_str().unwrap();
        let kind = e["event"].as_str().unwrap();
        assert_eq!(kind, said, "{context}: {device} notified {kind} for a message that said {said}: {e}");
        causes.entry(device).or_default().push((n, kind));
    }
    for (device, caused) in &causes {
        assert!(
            caused.windows(2).all(|w| w[0].0 < w[1].0),
            "{context}: {device}'s notifications do not follow its messages (message number, event): {caused:?}"
        );
    }
    for (device, online) in last {
        let notified = sequence.get(device).and_then(|k| k.last()).map_or("online", String::as_str);
        let truth = if *online { "online" } else { "offline" };
        assert_eq!(notified, truth, "{context}: {device} is {truth} but its last notification says {notified}");
    }
    events.len()
}

/// What an on-call service (PagerDuty's Events API) made of `received`,
/// given each device's true final state: the number of incidents, or what
/// is wrong. An incident is a `dedup_key`; a request sent again (a retry,
/// a restart) repeats the one before it and counts for nothing. Each
/// device's incidents must alternate trigger and resolve, the resolve by
/// the key its trigger opened, each key opened once, and the last request
/// must match the device's state.
pub fn check_incidents(received: &[Received], last: &BTreeMap<String, bool>) -> Result<usize, String> {
    let mut device_of: HashMap<String, String> = HashMap::new();
    let mut requests: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in received {
        let body = r.json();
        let key = body["dedup_key"].as_str().ok_or("a request without a dedup_key")?.to_string();
        let action = body["event_action"].as_str().unwrap_or_default().to_string();
        if let Some(source) = body["payload"]["source"].as_str() {
            device_of.insert(key.clone(), source.to_string());
        }
        let device = device_of.get(&key).ok_or_else(|| format!("a {action} of {key}, which nothing triggered"))?;
        let seen = requests.entry(device.clone()).or_default();
        if seen.last() != Some(&(action.clone(), key.clone())) {
            seen.push((action, key));
        }
    }
    let mut opened = HashSet::new();
    for (device, seen) in &requests {
        for (i, (action, key)) in seen.iter().enumerate() {
            let expected = if i % 2 == 0 { "trigger" } else { "resolve" };
            if action != expected {
                return Err(format!("{device}: {action} where a {expected} was due: {seen:?}"));
            }
            if action == "trigger" && !opened.insert(key.clone()) {
                return Err(format!("{device}: incident {key} opened twice: {seen:?}"));
            }
            if action == "resolve" && seen[i - 1].1 != *key {
                return Err(format!("{device}: resolved {key}, not the incident it opened: {seen:?}"));
            }
        }
    }
    for (device, online) in last {
        let state = requests.get(device).and_then(|s| s.last()).map_or("resolve", |(a, _)| a.as_str());
        if (state == "resolve") != *online {
            return Err(format!(
                "{device} is {} but its incident is left {state}d",
                if *online { "online" } else { "offline" }
            ));
        }
    }
    Ok(opened.len())
}

/// One client publishing devices' retained states, as their births and
/// wills would be.
pub struct Fleet {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    /// Numbers every message, so a notification names its cause.
    sent: std::sync::atomic::AtomicU64,
}

impl Fleet {
    pub async fn connect(port: u16) -> Fleet {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("fleet-sim", "127.0.0.1", port), 1024);
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Fleet { client, task, sent: std::sync::atomic::AtomicU64::new(0) }
    }

    pub async fn say(&self, device: &str, online: bool) {
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let payload = format!("{{\"s\":\"{}\",\"n\":{n}}}", if online { "online" } else { "offline" });
        self.client.publish(format!("fleet/{device}/status"), QoS::AtLeastOnce, true, payload).await.unwrap();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}
