//! What the MQTT session and the fleet core agree on about a broker
//! connection: how long one must last to count (the session's backoff
//! starts over, an outage ends), and the topic of the probes the session
//! sends itself through the broker. The session makes connections and
//! sends probes; the fleet core judges outages and waits for probes.

use std::time::Duration;

/// A connection that dies sooner than this after its CONNACK did not work:
/// the backoff keeps growing (a second client with our id, a packet the
/// broker refuses), and the outage is not over.
pub const YOUNG: Duration = Duration::from_secs(5);
/// Connections in a row that die this soon after their CONNACK look like
/// a clash (another client with our id) or a packet the broker refuses:
/// they do not end an outage.
pub const CLASH: Duration = Duration::from_secs(1);

/// The topic of the session's probes: messages it sends itself through
/// the broker, whose return proves that the broker was serving after
/// everything it delivered before them (`mqtt::Ask::Probe`).
pub fn probe_topic(client_id: &str) -> String {
    let level: String = client_id.chars().map(|c| if matches!(c, '+' | '#' | '/') { '_' } else { c }).collect();
    format!("willwatch/probe/{level}")
}
